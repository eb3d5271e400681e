//! The fused `add_relu` and the option-A shortcut `subsample_pad` against their references,
//! forward and backward.

mod ops_util;

use candle_core::{DType, Device, Tensor};
use ops_util::*;
use resnet_model::ops;

#[test]
fn add_relu_matches_reference() {
    for (i, dims) in [[1, 3, 5, 5], [4, 16, 9, 7], [2, 1, 1, 1], [3, 64, 33, 17]]
        .iter()
        .enumerate()
    {
        let run = |fast: bool| {
            let mut r = rng(i as u64);
            let a = randn_var(&mut r, dims, 0.0, 1.0);
            let b = randn_var(&mut r, dims, 0.0, 1.0);
            let z = if fast {
                ops::add_relu(&a, &b)
            } else {
                ops::add_relu_slow(&a, &b)
            }
            .unwrap();
            let probe = randn(&mut r, dims, 0.0, 1.0);
            let g = grads(&z, &probe, &[&a, &b]);
            [z, g[0].clone(), g[1].clone()]
        };
        let (f, s) = (run(true), run(false));
        for (j, name) in ["z", "da", "db"].iter().enumerate() {
            assert_bits_eq(&format!("{dims:?} {name}"), &f[j], &s[j]);
        }
    }
    let dev = Device::Cpu;
    let a = Tensor::zeros((1, 2, 3, 3), DType::F32, &dev).unwrap();
    let b = Tensor::zeros((1, 2, 3, 4), DType::F32, &dev).unwrap();
    assert!(ops::add_relu(&a, &b).is_err());
}

#[test]
fn subsample_pad_matches_reference() {
    for (i, (dims, co)) in [
        ([2, 16, 32, 32], 32),
        ([3, 4, 7, 5], 8),
        ([1, 3, 1, 1], 3),
        ([2, 2, 6, 9], 6),
    ]
    .iter()
    .enumerate()
    {
        let run = |fast: bool| {
            let mut r = rng(20 + i as u64);
            let x = randn_var(&mut r, dims, 0.0, 1.0);
            let f = if fast {
                ops::subsample_pad
            } else {
                ops::subsample_pad_slow
            };
            let y = f(&x, *co).unwrap();
            let probe = randn(&mut r, y.dims(), 0.0, 1.0);
            let g = grads(&y, &probe, &[&x]);
            [y, g[0].clone()]
        };
        let (f, s) = (run(true), run(false));
        assert_bits_eq(&format!("{dims:?} y"), &f[0], &s[0]);
        assert_bits_eq(&format!("{dims:?} dx"), &f[1], &s[1]);
    }
    let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let err = ops::subsample_pad(&x, 4).unwrap_err().to_string();
    assert!(err.contains("cannot pad 3 channels to 4"), "{err}");
    assert!(ops::subsample_pad(&x, 2).is_err());
}

#[test]
fn reference_mode_switches_to_the_slow_ops_on_this_thread() {
    let mut r = rng(40);
    let x = randn(&mut r, &[2, 3, 6, 6], 0.0, 1.0);
    let w = randn(&mut r, &[4, 3, 3, 3], 0.0, 1.0);
    let slow = ops::conv2d_slow(&x, &w, 1, 1).unwrap();
    let in_ref = ops::with_reference_ops(|| ops::conv2d(&x, &w, 1, 1)).unwrap();
    assert_bits_eq("reference mode", &in_ref, &slow);
    // Restored afterwards, nested calls restore the outer mode, and a panic inside restores
    // it too. (Comparing outputs cannot tell: fast and slow agree to 1e-5.)
    assert!(!ops::reference_ops_active());
    ops::with_reference_ops(|| {
        assert!(ops::reference_ops_active());
        ops::with_reference_ops(|| assert!(ops::reference_ops_active()));
        assert!(
            ops::reference_ops_active(),
            "the inner exit keeps the outer mode"
        );
    });
    assert!(!ops::reference_ops_active(), "restored afterwards");
    let caught = std::panic::catch_unwind(|| ops::with_reference_ops(|| panic!("inside")));
    assert!(caught.is_err());
    assert!(!ops::reference_ops_active(), "restored after a panic");
    let fast = ops::conv2d(&x, &w, 1, 1).unwrap();
    assert_close("fast after reference mode", &fast, &slow, 1e-5);
}
