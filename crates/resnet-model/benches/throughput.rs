//! ResNet CPU throughput: training steps and inference, with peak memory.
//!
//! ```text
//! cargo bench -p resnet-model --bench throughput                 # train + infer, separate processes
//! cargo bench -p resnet-model --bench throughput -- --mode train --iters 20
//! RAYON_NUM_THREADS=1 cargo bench -p resnet-model --bench throughput
//! cargo bench -p resnet-model --features cuda --bench throughput -- --device cuda
//! RESNET_WINOGRAD=1 cargo bench -p resnet-model --bench throughput   # Winograd F(2x2, 3x3) on
//! RESNET_BENCH_GEMM_PACK=lhs cargo bench -p resnet-model --bench throughput   # see gemm_packing
//! ```
//!
//! - `train`: forward (training mode, batch statistics), cross-entropy, backward and an SGD
//!   step with PyTorch semantics (lr 0.1, momentum 0.9, weight decay 1e-4, written inline
//!   over `ResNetModel::parameters()`) at batch 128;
//! - `infer`: eval-mode forward at batch 512.
//!
//! Each mode runs in its own process (the binary re-executes itself) so that the peak
//! resident memory (`VmHWM`) is that of one workload. One line per mode, the same format as
//! `bench/pytorch/bench_resnet.py`:
//! `RESULT impl=... mode=train batch=128 threads=2 gemm=avx512f winograd=0 conv3x3=avx512-direct/avx512-winograd/avx512-winograd wgrad=avx512-winograd/avx512-winograd/avx512-winograd images_per_s=...
//! gflops=... step_ms=... cpu_ms_per_step=... peak_rss_mib=...` (`gemm`: the SGEMM
//! micro-kernels in use, see `ops::gemm_kernels`; `gflops`: useful convolution and linear
//! FLOPs per second, see `flops_per_image`; compare with the ops bench's `gemm peak` line).
//! With `--profile`, a train run also prints the median forward / backward / update times;
//! `--no-tuning` skips `tune_process()` (resnet-cli's `src/tune.rs`: allocator thresholds,
//! `CANDLE_NUM_THREADS=1`).
//!
//! `--device cuda` (a build with the `cuda` feature) runs on CUDA device 0: each timed step
//! ends with `Device::synchronize`, so a step's time includes its GPU work, and the RESULT
//! line adds `device=cuda` (its peak RSS is the host process's; the GPU's memory is not
//! measured).

// The process tuning `resnet-cli` applies, from the same file, so the benchmark measures
// what users run.
#[path = "../../resnet-cli/src/tune.rs"]
mod tune;

use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use resnet_model::{ResNetConfig, ResNetModel};

struct Args {
    mode: String,
    depth: usize,
    train_batch: usize,
    infer_batch: usize,
    warmup: usize,
    iters: usize,
    profile: bool,
    device: String,
    /// What `gemm_packing` set, for the RESULT line.
    gemm_pack: String,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut a = Args {
        mode: "both".into(),
        depth: 20,
        train_batch: 128,
        infer_batch: 512,
        warmup: 3,
        iters: 10,
        profile: false,
        device: "cpu".into(),
        gemm_pack: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> std::result::Result<usize, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|e| format!("{name} {v}: {e}"))
        };
        match flag.as_str() {
            "--mode" => a.mode = it.next().ok_or("--mode needs train, infer or both")?,
            "--depth" => a.depth = num("--depth")?,
            "--train-batch" => a.train_batch = num("--train-batch")?,
            "--infer-batch" => a.infer_batch = num("--infer-batch")?,
            "--warmup" => a.warmup = num("--warmup")?,
            "--iters" => a.iters = num("--iters")?,
            "--profile" => a.profile = true,
            "--device" => a.device = it.next().ok_or("--device needs cpu or cuda")?,
            // skip `tune_process()` (to measure what it does)
            "--no-tuning" => {}
            // passed by `cargo bench`
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !["train", "infer", "both"].contains(&a.mode.as_str()) {
        return Err(format!("--mode {}: expected train, infer or both", a.mode));
    }
    if !["cpu", "cuda"].contains(&a.device.as_str()) {
        return Err(format!("--device {}: expected cpu or cuda", a.device));
    }
    if a.iters == 0 {
        return Err("--iters must be at least 1".into());
    }
    Ok(a)
}

/// Peak resident set size of this process in MiB (`VmHWM` from `/proc/self/status`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time (user + system, all threads) this process has used, in seconds, from
/// `/proc/self/stat` (clock ticks of 1/100 s); NaN where unavailable.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the ")" closing the command name: state is field 3, utime 14, stime 15
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    match (
        f.get(11).and_then(|v| v.parse::<f64>().ok()),
        f.get(12).and_then(|v| v.parse::<f64>().ok()),
    ) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn random_batch(rng: &mut ChaCha8Rng, batch: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let x: Vec<f32> = (0..batch * 3 * 32 * 32)
        .map(|_| rng.sample(StandardNormal))
        .collect();
    let y: Vec<u32> = (0..batch).map(|_| rng.random_range(0..10)).collect();
    Ok((
        Tensor::from_vec(x, (batch, 3, 32, 32), dev)?,
        Tensor::from_vec(y, batch, dev)?,
    ))
}

/// SGD with momentum and weight decay, PyTorch semantics: `d = g + wd * p`,
/// `buf = momentum * buf + d` (`buf = d` at the first step), `p -= lr * buf`.
struct Sgd {
    params: Vec<(String, Var)>,
    bufs: Vec<Option<Tensor>>,
}

impl Sgd {
    const LR: f64 = 0.1;
    const MOMENTUM: f64 = 0.9;
    const WD: f64 = 1e-4;

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        for ((name, p), buf) in self.params.iter().zip(self.bufs.iter_mut()) {
            let Some(g) = grads.get(p.as_tensor()) else {
                candle_core::bail!("no gradient for parameter {name}")
            };
            let d = (g + (p.as_tensor() * Self::WD)?)?;
            let b = match buf.take() {
                Some(b) => ((b * Self::MOMENTUM)? + d)?,
                None => d,
            };
            p.set(&(p.as_tensor() - (&b * Self::LR)?)?)?;
            *buf = Some(b);
        }
        Ok(())
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The device `--device` names (CUDA device 0 for `cuda`).
fn device(a: &Args) -> Result<Device> {
    match a.device.as_str() {
        "cuda" => Device::new_cuda(0),
        _ => Ok(Device::Cpu),
    }
}

/// Useful FLOPs per image of one step (two per multiply-accumulate of the convolutions and
/// the linear layer, from [`ResNetModel::summary`]): the forward for `infer`; for `train`
/// the forward, the input gradient and the weight gradient of every layer, less the stem's
/// input gradient (the images need none). BatchNorm, ReLU and the update are not counted.
fn flops_per_image(model: &ResNetModel, mode: &str) -> f64 {
    let s = model.summary();
    let fwd = s.total_macs as f64;
    let stem = s
        .rows
        .iter()
        .find(|r| r.layer == "conv1")
        .map_or(0, |r| r.macs) as f64;
    2.0 * if mode == "train" {
        3.0 * fwd - stem
    } else {
        fwd
    }
}

/// Prints the RESULT line; `cpu` is the CPU time of the measured steps (all threads).
fn report(dev: &Device, model: &ResNetModel, a: &Args, mode: &str, times: &[f64], cpu: f64) {
    let batch = if mode == "train" {
        a.train_batch
    } else {
        a.infer_batch
    };
    let gemm_pack = &a.gemm_pack;
    let total: f64 = times.iter().sum();
    let images_per_s = (batch * times.len()) as f64 / total;
    let gflops = images_per_s * flops_per_image(model, mode) / 1e9;
    let mut t = times.to_vec();
    let device = if dev.is_cuda() { " device=cuda" } else { "" };
    println!(
        "RESULT impl=candle-resnet-model{device} mode={mode} batch={batch} threads={} \
         gemm={} gemm_pack={} winograd={} conv3x3={} wgrad={} images_per_s={images_per_s:.1} gflops={gflops:.1} step_ms={:.1} \
         cpu_ms_per_step={:.0} peak_rss_mib={:.0}",
        rayon::current_num_threads(),
        resnet_model::ops::gemm_kernels(),
        gemm_pack,
        u8::from(resnet_model::ops::winograd_active()),
        resnet_model::ops::conv3x3_kernels(),
        resnet_model::ops::conv3x3_wgrad_kernels(),
        1000.0 * median(&mut t),
        1000.0 * cpu / times.len() as f64,
        peak_rss_mib()
    );
}

fn train(a: &Args) -> Result<()> {
    let dev = device(a)?;
    let cfg = ResNetConfig::with_depth(a.depth);
    let model = ResNetModel::new(&cfg, &dev, 0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (x, y) = random_batch(&mut rng, a.train_batch, &dev)?;
    let params = model.parameters();
    let mut sgd = Sgd {
        bufs: vec![None; params.len()],
        params,
    };
    let (mut times, mut fwd, mut bwd, mut upd) = (vec![], vec![], vec![], vec![]);
    let mut cpu0 = cpu_seconds();
    for i in 0..a.warmup + a.iters {
        if i == a.warmup {
            cpu0 = cpu_seconds();
        }
        let t0 = Instant::now();
        let logits = model.forward_t(&x, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        sgd.step(&grads)?;
        drop(grads);
        dev.synchronize()?;
        let t3 = Instant::now();
        if i >= a.warmup {
            times.push((t3 - t0).as_secs_f64());
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            upd.push((t3 - t2).as_secs_f64());
        }
        if !loss.to_scalar::<f32>()?.is_finite() {
            candle_core::bail!("loss is not finite at step {i}");
        }
    }
    report(&dev, &model, a, "train", &times, cpu_seconds() - cpu0);
    if a.profile {
        println!(
            "PROFILE forward_ms={:.1} backward_ms={:.1} update_ms={:.1}",
            1000.0 * median(&mut fwd),
            1000.0 * median(&mut bwd),
            1000.0 * median(&mut upd)
        );
    }
    Ok(())
}

fn infer(a: &Args) -> Result<()> {
    let dev = device(a)?;
    let model = ResNetModel::new(&ResNetConfig::with_depth(a.depth), &dev, 0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (x, _) = random_batch(&mut rng, a.infer_batch, &dev)?;
    let mut times = vec![];
    let mut cpu0 = cpu_seconds();
    for i in 0..a.warmup + a.iters {
        if i == a.warmup {
            cpu0 = cpu_seconds();
        }
        let t0 = Instant::now();
        let logits = model.predict(&x)?;
        let _ = logits.to_dtype(DType::F32)?;
        dev.synchronize()?;
        if i >= a.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    report(&dev, &model, a, "infer", &times, cpu_seconds() - cpu0);
    Ok(())
}

/// `RESNET_BENCH_GEMM_PACK=lhs|rhs|both`: make the `gemm` crate pack that operand of every
/// single-threaded GEMM (its heuristics pack the lhs only for `n > 8 * NR` and a column-major
/// rhs only for `m > 128 * MR`), an experiment on the packing's cost at our shapes. Called
/// once in `main`; returns the setting, for the RESULT line.
fn gemm_packing() -> String {
    let v = std::env::var("RESNET_BENCH_GEMM_PACK").unwrap_or_default();
    if v == "lhs" || v == "both" {
        gemm::set_lhs_packing_threshold_single_thread(0);
    }
    if v == "rhs" || v == "both" {
        gemm::set_rhs_packing_threshold(0);
    }
    if v.is_empty() {
        "default".into()
    } else {
        v
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--no-tuning") {
        tune::tune_process();
    }
    let gemm_pack = gemm_packing();
    let a = match parse_args() {
        Ok(a) => Args { gemm_pack, ..a },
        Err(e) => {
            eprintln!("throughput: {e}");
            std::process::exit(2);
        }
    };
    let res = match a.mode.as_str() {
        "train" => train(&a),
        "infer" => infer(&a),
        _ => {
            // one process per mode, so that each peak-memory figure is its own
            let exe = std::env::current_exe().expect("path of this executable");
            let rest: Vec<String> = std::env::args().skip(1).collect();
            for mode in ["train", "infer"] {
                let mut args = rest.clone();
                args.extend(["--mode".to_string(), mode.to_string()]);
                let status = Command::new(&exe)
                    .args(&args)
                    .status()
                    .expect("run benchmark");
                if !status.success() {
                    eprintln!("throughput: the {mode} run failed ({status})");
                    std::process::exit(1);
                }
            }
            Ok(())
        }
    };
    if let Err(e) = res {
        eprintln!("throughput: {e}");
        std::process::exit(1);
    }
}
