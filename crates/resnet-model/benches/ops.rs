//! Per-op CPU timings of the fast kernels at the shapes of ResNet-20 (batch 128 by default),
//! forward and backward, next to candle's own ops where that is quick enough.
//!
//! ```text
//! cargo bench -p resnet-model --bench ops
//! cargo bench -p resnet-model --bench ops -- --batch 64 --iters 20 --slow
//! cargo bench -p resnet-model --bench ops -- --only "conv stage1"   # names containing it
//! cargo bench -p resnet-model --bench ops -- --only "gemm peak"
//! ```
//!
//! The first line, "gemm peak", is the machine's SGEMM rate through the same `gemm` crate
//! kernels the convolutions use (see `gemm_peak`): the yardstick for the throughput bench's
//! `gflops`.
//!
//! "bwd" times `y.backward()` with `dy = 1`, which includes candle's gradient bookkeeping
//! (a zero tensor plus an add per argument), as in a real training step.

// The process tuning `resnet-cli` applies, from the same file, so the benchmark measures
// what users run.
#[path = "../../resnet-cli/src/tune.rs"]
mod tune;

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use resnet_model::ops;

fn randn(rng: &mut ChaCha8Rng, dims: &[usize]) -> Result<Tensor> {
    let n = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
}

/// Median milliseconds of `f` over `iters` runs after one warm-up.
fn time(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        f()?;
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// GFLOP/s of single-threaded `gemm` SGEMMs at `m = n = k = 512` (square, L2-sized, as deep
/// as any GEMM of ours: the crate's best case), running on one thread alone, then on every
/// thread of the pool at once (each on its own matrices, as our kernels run): the best of
/// five timed batches of `reps` products each.
fn gemm_peak(all_threads: bool) -> f64 {
    const N: usize = 512;
    let reps = 10;
    let run = || -> f64 {
        let a = vec![1.0f32; N * N];
        let b = vec![0.5f32; N * N];
        let mut c = vec![0.0f32; N * N];
        let mut best = f64::INFINITY;
        for round in 0..6 {
            let t0 = Instant::now();
            for _ in 0..reps {
                // SAFETY: three distinct N x N column-major buffers with unit row stride.
                unsafe {
                    gemm::gemm(
                        N,
                        N,
                        N,
                        c.as_mut_ptr(),
                        N as isize,
                        1,
                        false,
                        a.as_ptr(),
                        N as isize,
                        1,
                        b.as_ptr(),
                        N as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            }
            if round > 0 {
                best = best.min(t0.elapsed().as_secs_f64());
            }
        }
        assert!(c[0] == 0.5 * N as f32, "gemm peak: wrong product");
        best
    };
    let flops = 2.0 * (N * N * N * reps) as f64;
    if all_threads {
        let t = rayon::broadcast(|_| run());
        t.len() as f64 * flops / t.iter().copied().fold(0.0, f64::max) / 1e9
    } else {
        flops / run() / 1e9
    }
}

fn main() -> Result<()> {
    tune::tune_process();
    let (mut batch, mut iters, mut slow) = (128usize, 10usize, false);
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--batch" => batch = args.next().and_then(|v| v.parse().ok()).expect("--batch N"),
            "--iters" => iters = args.next().and_then(|v| v.parse().ok()).expect("--iters N"),
            "--slow" => slow = true,
            "--only" => only = Some(args.next().expect("--only SUBSTRING")),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    println!(
        "threads={} batch={batch} (median ms)",
        rayon::current_num_threads()
    );
    if only.as_deref().is_none_or(|o| "gemm peak".contains(o)) {
        println!(
            "gemm peak ({} kernels, 512^3 SGEMM per thread): 1 thread {:.1} GFLOP/s, \
             {} threads at once {:.1} GFLOP/s",
            ops::gemm_kernels(),
            gemm_peak(false),
            rayon::current_num_threads(),
            gemm_peak(true)
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // (name, cin, hw, cout, k, stride, pad)
    let convs = [
        ("stem 3->16 3x3 s1", 3, 32, 16, 3, 1, 1),
        ("stage1 16->16 3x3 s1", 16, 32, 16, 3, 1, 1),
        ("stage2 16->32 3x3 s2", 16, 32, 32, 3, 2, 1),
        ("stage2 32->32 3x3 s1", 32, 16, 32, 3, 1, 1),
        ("stage3 32->64 3x3 s2", 32, 16, 64, 3, 2, 1),
        ("stage3 64->64 3x3 s1", 64, 8, 64, 3, 1, 1),
        ("proj 16->32 1x1 s2", 16, 32, 32, 1, 2, 0),
    ];
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    for (name, cin, hw, cout, k, s, p) in convs {
        if !wanted(&format!("conv {name}")) {
            continue;
        }
        let x = Var::from_tensor(&randn(&mut rng, &[batch, cin, hw, hw])?)?;
        let w = Var::from_tensor(&(randn(&mut rng, &[cout, cin, k, k])? * 0.1)?)?;
        // the default (direct) kernels, then Winograd F(2x2, 3x3) where it applies
        let timed = |winograd: bool| {
            ops::with_winograd(winograd, || -> Result<(f64, f64)> {
                let fwd = time(iters, || ops::conv2d(&x, &w, s, p).map(drop))?;
                let y = ops::conv2d(&x, &w, s, p)?;
                Ok((fwd, time(iters, || y.backward().map(drop))?))
            })
        };
        let (fwd, bwd) = timed(false)?;
        let mut line = format!("conv {name:<24} fwd {fwd:7.2}  bwd {bwd:7.2}");
        if k == 3 && s == 1 && p == 1 && cin >= 8 {
            let (fd, bd) = timed(true)?;
            line += &format!("   | winograd fwd {fd:7.2}  bwd {bd:7.2}");
        }
        if slow {
            let fs = time(iters.min(3), || ops::conv2d_slow(&x, &w, s, p).map(drop))?;
            let ys = ops::conv2d_slow(&x, &w, s, p)?;
            let bs = time(iters.min(3), || ys.backward().map(drop))?;
            line += &format!("   | candle fwd {fs:7.2}  bwd {bs:7.2}");
        }
        println!("{line}");
    }
    for (name, c, hw) in [("stage1", 16, 32), ("stage2", 32, 16), ("stage3", 64, 8)] {
        if !wanted(&format!("bn+relu {name}")) {
            continue;
        }
        let x = Var::from_tensor(&randn(&mut rng, &[batch, c, hw, hw])?)?;
        let g = Var::from_tensor(&randn(&mut rng, &[c])?)?;
        let b = Var::from_tensor(&randn(&mut rng, &[c])?)?;
        let fwd = time(iters, || {
            ops::batch_norm_train(&x, &g, &b, 1e-5, true).map(drop)
        })?;
        let y = ops::batch_norm_train(&x, &g, &b, 1e-5, true)?.y;
        let bwd = time(iters, || y.backward().map(drop))?;
        let a = Var::from_tensor(&randn(&mut rng, &[batch, c, hw, hw])?)?;
        let afwd = time(iters, || ops::add_relu(&x, &a).map(drop))?;
        let z = ops::add_relu(&x, &a)?;
        let abwd = time(iters, || z.backward().map(drop))?;
        let mut line = format!(
            "bn+relu {name:<20} fwd {fwd:7.2}  bwd {bwd:7.2}   add_relu fwd {afwd:7.2}  bwd {abwd:7.2}"
        );
        if slow {
            let fs = time(iters.min(3), || {
                ops::batch_norm_train_slow(&x, &g, &b, 1e-5, true).map(drop)
            })?;
            let ys = ops::batch_norm_train_slow(&x, &g, &b, 1e-5, true)?.y;
            let bs = time(iters.min(3), || ys.backward().map(drop))?;
            line += &format!("   | candle bn fwd {fs:7.2}  bwd {bs:7.2}");
        }
        println!("{line}");
    }
    if only.is_some() {
        return Ok(());
    }
    // candle's gradient bookkeeping per argument, for scale: zeros + add at stage-1 size
    let t = randn(&mut rng, &[batch, 16, 32, 32])?;
    let acc = time(iters, || t.zeros_like()?.add(&t).map(drop))?;
    println!("candle grad accumulation (zeros_like + add) at stage-1 size: {acc:7.2}");
    Ok(())
}
