//! The fast conv2d against candle's own conv2d (outputs and both gradients), against
//! f64 finite differences, and for bit-identical results with 1 and 2 threads.

mod ops_util;

use candle_core::{DType, Device, Tensor};
use ops_util::*;
use resnet_model::ops;

/// `(n, cin, h, w, cout, k, stride, pad)`
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

const CASES: &[Case] = &[
    (1, 3, 8, 8, 4, 3, 1, 1),
    (2, 5, 7, 9, 6, 3, 2, 1),
    (3, 4, 6, 6, 8, 1, 2, 0),
    (4, 16, 10, 10, 16, 3, 1, 1),
    (2, 3, 11, 11, 5, 5, 3, 2),
    (2, 2, 5, 5, 3, 1, 1, 0),
    (3, 8, 9, 7, 4, 3, 2, 0),
    // several images per chunk, with a partial last chunk
    (9, 32, 8, 8, 64, 3, 1, 1),
    (5, 16, 9, 9, 32, 3, 2, 1),
    // stride 1 without "same" padding: the transposed path with another padding
    (2, 5, 9, 8, 3, 3, 1, 0),
    (2, 4, 7, 7, 6, 5, 1, 1),
    // 1- and 2-pixel inputs: taps whose output rows read only padding
    (2, 3, 1, 1, 4, 3, 1, 1),
    (2, 3, 2, 1, 4, 3, 1, 1),
    // the network's stage-1 shape: one image per chunk
    (3, 16, 32, 32, 16, 3, 1, 1),
    // "same" convolutions on planes of >= 256 pixels (the kw-shifted copies of
    // ops/conv_same.rs): forward and backward, a 5x5 kernel forward, both with odd widths
    (2, 32, 16, 16, 32, 3, 1, 1),
    (1, 32, 17, 19, 16, 3, 1, 1),
    (2, 8, 16, 17, 6, 5, 1, 2),
    (2, 32, 16, 18, 8, 5, 1, 2),
    // the "same" backward with 16 input channels on a plane that is not a multiple of 8
    // pixels (the weight gradient's transpose of x without whole 8 x 8 tiles)
    (2, 16, 17, 17, 8, 3, 1, 1),
    // Winograd F(2x2, 3x3) (ops/winograd.rs: 3x3, stride 1, padding 1, >= 8 channels):
    // odd and tiny planes (partial tiles), unequal channels, several images per chunk
    (2, 8, 1, 1, 8, 3, 1, 1),
    (2, 8, 3, 5, 9, 3, 1, 1),
    (3, 9, 7, 6, 8, 3, 1, 1),
    (40, 8, 2, 3, 12, 3, 1, 1),
    (2, 64, 8, 8, 64, 3, 1, 1),
    // the direct 3x3 kernel (ops/conv_direct.rs: pixels a multiple of 16, output channels of
    // 8): vectors across row ends, a plane of one vector, odd channel counts (the stem's 3)
    (2, 5, 4, 12, 8, 3, 1, 1),
    (3, 3, 2, 8, 16, 3, 1, 1),
    (2, 3, 16, 16, 8, 3, 1, 1),
];

fn run(case: Case, seed: u64, fast: bool) -> (Tensor, Tensor, Tensor) {
    let (n, cin, h, w, cout, k, s, p) = case;
    let mut r = rng(seed);
    let x = randn_var(&mut r, &[n, cin, h, w], 0.5, 1.0);
    let wt = randn_var(&mut r, &[cout, cin, k, k], 0.0, 0.3);
    let y = if fast {
        ops::conv2d(&x, &wt, s, p).unwrap()
    } else {
        ops::conv2d_slow(&x, &wt, s, p).unwrap()
    };
    let probe = randn(&mut r, y.dims(), 0.0, 1.0);
    let g = grads(&y, &probe, &[&x, &wt]);
    (y, g[0].clone(), g[1].clone())
}

#[test]
fn fast_matches_candle_conv2d() {
    // direct kernels (the default), then Winograd F(2x2, 3x3) where it applies
    for winograd in [false, true] {
        for (i, &case) in CASES.iter().enumerate() {
            let (y, dx, dw) = ops::with_winograd(winograd, || run(case, i as u64, true));
            let (ys, dxs, dws) = run(case, i as u64, false);
            let what = format!("{case:?} winograd {winograd}");
            assert_close(&format!("{what} y"), &y, &ys, 1e-5);
            assert_close(&format!("{what} dx"), &dx, &dxs, 1e-5);
            assert_close(&format!("{what} dw"), &dw, &dws, 1e-5);
        }
    }
}

/// Winograd really runs where it applies (the results differ from the direct kernels' by
/// rounding; on a 1x1 plane they may coincide) and not where it does not (same bits).
#[test]
fn winograd_takes_the_3x3_stride_1_convolutions() {
    let bits = |t: &Tensor| -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    };
    for (i, &case) in CASES.iter().enumerate() {
        let direct = ops::with_winograd(false, || run(case, i as u64, true));
        let wino = ops::with_winograd(true, || run(case, i as u64, true));
        let (_, cin, h, w, cout, k, s, p) = case;
        let applies = k == 3 && s == 1 && p == 1 && cin >= 8 && cout >= 8;
        let same = [
            bits(&direct.0) == bits(&wino.0),
            bits(&direct.1) == bits(&wino.1),
            bits(&direct.2) == bits(&wino.2),
        ];
        if !applies {
            assert_eq!(same, [true; 3], "{case:?}: Winograd does not apply here");
        } else if h >= 2 && w >= 2 {
            assert!(same.contains(&false), "{case:?}: Winograd did not run");
        }
    }
}

#[test]
fn gradients_match_f64_finite_differences() {
    for (i, &(n, cin, h, w, cout, k, s, p)) in [
        (2, 3, 5, 5, 4, 3, 1, 1),
        (2, 3, 6, 7, 4, 3, 2, 1),
        (2, 4, 6, 6, 5, 1, 2, 0),
        // stride 2 on a 1x2 input (candle's own conv2d backward gets its shape wrong)
        (2, 3, 1, 2, 3, 3, 2, 1),
        (1, 2, 1, 1, 3, 3, 1, 1),
        // Winograd F(2x2, 3x3), odd plane
        (2, 8, 3, 5, 8, 3, 1, 1),
    ]
    .iter()
    .enumerate()
    {
        for winograd in [false, true] {
            let mut r = rng(100 + i as u64);
            let x = randn_var(&mut r, &[n, cin, h, w], 0.0, 1.0);
            let wt = randn_var(&mut r, &[cout, cin, k, k], 0.0, 0.5);
            let (g, probe) = ops::with_winograd(winograd, || {
                let y = ops::conv2d(&x, &wt, s, p).unwrap();
                let probe = randn(&mut r, y.dims(), 0.0, 1.0);
                (grads(&y, &probe, &[&x, &wt]), probe)
            });
            let probe64 = probe.to_dtype(DType::F64).unwrap();
            let f = |a: &[Tensor]| functional(&ops::conv2d_slow(&a[0], &a[1], s, p)?, &probe64);
            let inputs = [x.as_tensor().clone(), wt.as_tensor().clone()];
            for (j, name) in ["dx", "dw"].iter().enumerate() {
                let num = numeric_grad(&inputs, j, 1e-3, f);
                assert_close(
                    &format!("case {i} winograd {winograd} {name}"),
                    &g[j],
                    &num,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn bit_identical_with_one_and_two_threads() {
    for (&case, winograd) in CASES[7..].iter().flat_map(|c| [(c, false), (c, true)]) {
        let one = with_threads(1, || ops::with_winograd(winograd, || run(case, 7, true)));
        let two = with_threads(2, || ops::with_winograd(winograd, || run(case, 7, true)));
        assert_bits_eq(&format!("{case:?} y"), &one.0, &two.0);
        assert_bits_eq(&format!("{case:?} dx"), &one.1, &two.1);
        assert_bits_eq(&format!("{case:?} dw"), &one.2, &two.2);
    }
}

#[test]
fn non_contiguous_input_and_f64_fallback() {
    let mut r = rng(5);
    let x = randn(&mut r, &[3, 2, 6, 6], 0.0, 1.0)
        .transpose(2, 3)
        .unwrap();
    let w = randn(&mut r, &[4, 2, 3, 3], 0.0, 1.0);
    let y = ops::conv2d(&x, &w, 2, 1).unwrap();
    assert_close(
        "strided x",
        &y,
        &ops::conv2d_slow(&x, &w, 2, 1).unwrap(),
        1e-5,
    );
    let (x64, w64) = (
        x.to_dtype(DType::F64).unwrap(),
        w.to_dtype(DType::F64).unwrap(),
    );
    let y64 = ops::conv2d(&x64, &w64, 2, 1).unwrap();
    assert_eq!(y64.dtype(), DType::F64);
    assert_close("f64 fallback", &y64.to_dtype(DType::F32).unwrap(), &y, 1e-5);
}

#[test]
fn bad_shapes_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 3, 8, 8), DType::F32, &dev).unwrap();
    let w = Tensor::zeros((4, 2, 3, 3), DType::F32, &dev).unwrap();
    let err = ops::conv2d(&x, &w, 1, 1).unwrap_err().to_string();
    assert!(err.contains("does not fit input"), "{err}");
    let w = Tensor::zeros((4, 3, 9, 9), DType::F32, &dev).unwrap();
    assert!(ops::conv2d(&x, &w, 1, 0).is_err());
    let w = Tensor::zeros((4, 3, 3, 3), DType::F32, &dev).unwrap();
    assert!(ops::conv2d(&x, &w, 0, 1).is_err());
    let w0 = Tensor::zeros((0, 3, 3, 3), DType::F32, &dev).unwrap();
    assert!(ops::conv2d(&x, &w0, 1, 1).is_err());
    // an empty batch is fine
    let x0 = Tensor::zeros((0, 3, 8, 8), DType::F32, &dev).unwrap();
    assert_eq!(ops::conv2d(&x0, &w, 1, 1).unwrap().dims(), &[0, 4, 8, 8]);
}
