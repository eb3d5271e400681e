//! Per-op CPU timings of the fast kernels at the shapes of ResNet-20 (batch 128 by default),
//! forward and backward, next to candle's own ops where that is quick enough.
//!
//! ```text
//! cargo bench -p resnet-model --bench ops
//! cargo bench -p resnet-model --bench ops -- --batch 64 --iters 20 --slow
//! cargo bench -p resnet-model --bench ops -- --only "conv stage1"   # names containing it
//! cargo bench -p resnet-model --bench ops -- --only "gemm peak"
//! cargo bench -p resnet-model --bench ops -- --only gemm      # + the GEMMs at our shapes
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

/// GFLOP/s of single-threaded `gemm` SGEMMs `[m x k] · [k x n]` (all column-major, as our
/// convolutions call them: `m` = output pixels, `n` = output channels, `k` = the reduction),
/// on one thread alone or on every thread of the pool at once (each on its own matrices, as
/// our kernels run): the best of five timed batches of at least ~0.2 GFLOP each.
///
/// `pad_a` / `pad_c` add that many elements to the column stride of the lhs / the output
/// (`m` otherwise): at `m = 1024` every column starts 4 KiB after the previous one.
fn gemm_gflops(m: usize, n: usize, k: usize, all_threads: bool) -> f64 {
    gemm_gflops_ld(m, n, k, 0, 0, false, all_threads)
}

/// `lhs_rows`: the lhs is row-major instead (rows `k` elements apart, unit column stride),
/// as a weight gradient's `[channels x pixels]` operand is in NCHW memory.
fn gemm_gflops_ld(
    m: usize,
    n: usize,
    k: usize,
    pad_a: usize,
    pad_c: usize,
    lhs_rows: bool,
    all_threads: bool,
) -> f64 {
    let reps = (2e8 / (2 * m * n * k) as f64).ceil() as usize;
    let (lda, ldc) = (if lhs_rows { k } else { m } + pad_a, m + pad_c);
    let (lhs_cs, lhs_rs) = if lhs_rows { (1, lda) } else { (lda, 1) };
    let run = || -> f64 {
        let a = vec![1.0f32; lda * if lhs_rows { m } else { k }];
        let b = vec![0.5f32; k * n];
        let mut c = vec![0.0f32; ldc * n];
        let mut best = f64::INFINITY;
        for round in 0..6 {
            let t0 = Instant::now();
            for _ in 0..reps {
                // SAFETY: three distinct column-major buffers of m x k, k x n and m x n
                // elements with unit row stride.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        ldc as isize,
                        1,
                        false,
                        a.as_ptr(),
                        lhs_cs as isize,
                        lhs_rs as isize,
                        b.as_ptr(),
                        k as isize,
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
        assert!(c[0] == 0.5 * k as f32, "gemm: wrong product");
        best
    };
    let flops = 2.0 * (m * n * k * reps) as f64;
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
            gemm_gflops(512, 512, 512, false),
            rayon::current_num_threads(),
            gemm_gflops(512, 512, 512, true)
        );
    }
    // One image's im2col GEMM of each stage's 3x3 convolution (m = pixels, n = Cout,
    // k = Cin * 9), on one thread (steadier than all threads at once on a shared VM, whose
    // other vCPU the host takes away now and then): how far from the 1-thread peak our shapes
    // run, with the
    // `gemm` crate's packing heuristics (lhs packed for n > 8 * NR, rhs for m > 128 * MR when
    // it is column-major) and with each operand always packed (thresholds set to 0).
    for (name, m, n, k) in [
        ("stage1 1024x16x144", 1024, 16, 144),
        // the shape of conv_same's GEMMs at stage 1 (one per kernel row, depth Cin * 3; its
        // real lhs columns are z planes, 1,088 elements apart)
        ("stage1 same 1024x16x48", 1024, 16, 48),
        ("stage2 256x32x288", 256, 32, 288),
        ("stage3 64x64x576", 64, 64, 576),
        ("stage3 x8 images 512x64x576", 512, 64, 576),
    ] {
        if only
            .as_deref()
            .is_some_and(|o| format!("gemm {name}").contains(o))
        {
            let packed = |lhs: usize, rhs: usize| {
                gemm::set_lhs_packing_threshold_single_thread(lhs);
                gemm::set_rhs_packing_threshold(rhs);
                let r = gemm_gflops(m, n, k, false);
                gemm::set_lhs_packing_threshold_single_thread(
                    gemm::DEFAULT_LHS_PACKING_THRESHOLD_SINGLE_THREAD,
                );
                gemm::set_rhs_packing_threshold(gemm::DEFAULT_RHS_PACKING_THRESHOLD);
                r
            };
            let default = gemm_gflops(m, n, k, false);
            println!(
                "gemm {name:<28} GFLOP/s (1 thread): default {default:6.1}  \
                 pack lhs {:6.1}  pack rhs {:6.1}  pack both {:6.1}",
                packed(0, gemm::DEFAULT_RHS_PACKING_THRESHOLD),
                packed(gemm::DEFAULT_LHS_PACKING_THRESHOLD_SINGLE_THREAD, 0),
                packed(0, 0),
            );
            // columns exactly 4 KiB apart: the same GEMM with the lhs's or the output's
            // columns 16 elements further apart (bench/README.md, "4 KiB strides")
            if m == 1024 {
                println!(
                    "gemm {name:<28} GFLOP/s (1 thread): lhs ld +16 {:6.1}  \
                     output ld +16 {:6.1}  both {:6.1}",
                    gemm_gflops_ld(m, n, k, 16, 0, false, false),
                    gemm_gflops_ld(m, n, k, 0, 16, false, false),
                    gemm_gflops_ld(m, n, k, 16, 16, false, false),
                );
            }
        }
    }
    // Weight-gradient GEMMs: dW [channels x taps] = [channels x pixels] · [pixels x taps],
    // reduced over pixels. In NCHW memory the [channels x pixels] operand is row-major; the
    // kernels hand it over transposed (ops/conv_util.rs, `transpose_into`), which the `gemm`
    // crate reads in place instead of repacking it with strided loads.
    for (name, m, n, k) in [
        ("wgrad stage1 same 16x48x1024", 16, 48, 1024),
        ("wgrad stage1 im2col 16x144x1024", 16, 144, 1024),
        ("wgrad stage2 same 32x96x256", 32, 96, 256),
        ("wgrad stage2 s2 32x144x1024", 32, 144, 1024),
        ("wgrad stage3 64x576x256", 64, 576, 256),
        ("wgrad stage3 s2 64x288x512", 64, 288, 512),
    ] {
        if only
            .as_deref()
            .is_some_and(|o| format!("gemm {name}").contains(o))
        {
            println!(
                "gemm {name:<31} GFLOP/s (1 thread): lhs row-major {:6.1}  transposed {:6.1}",
                gemm_gflops_ld(m, n, k, 0, 0, true, false),
                gemm_gflops_ld(m, n, k, 0, 0, false, false),
            );
        }
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
