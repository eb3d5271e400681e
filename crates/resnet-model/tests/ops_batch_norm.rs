//! The fused BatchNorm (train and eval, with and without ReLU) against the plain-candle
//! reference (outputs, statistics and all gradients), against f64 finite differences, and
//! for bit-identical results with 1 and 2 threads.

mod ops_util;

use candle_core::{DType, Device, Tensor};
use ops_util::*;
use resnet_model::ops;

const SHAPES: &[[usize; 4]] = &[
    [1, 3, 5, 5],
    [2, 4, 7, 3],
    [3, 16, 8, 8],
    [4, 5, 9, 11],
    [3, 2, 1, 1],
];

struct Train {
    y: Tensor,
    mean: Tensor,
    var: Tensor,
    dx: Tensor,
    dgamma: Tensor,
    dbeta: Tensor,
}

fn train(dims: &[usize], relu: bool, seed: u64, fast: bool) -> Train {
    let mut r = rng(seed);
    // a large mean relative to the spread checks the variance for cancellation
    let x = randn_var(&mut r, dims, 3.0, 2.0);
    let gamma = randn_var(&mut r, &dims[1..2], 1.0, 0.5);
    let beta = randn_var(&mut r, &dims[1..2], 0.0, 0.5);
    let out = if fast {
        ops::batch_norm_train(&x, &gamma, &beta, 1e-5, relu).unwrap()
    } else {
        ops::batch_norm_train_slow(&x, &gamma, &beta, 1e-5, relu).unwrap()
    };
    let probe = randn(&mut r, dims, 0.0, 1.0);
    let g = grads(&out.y, &probe, &[&x, &gamma, &beta]);
    Train {
        y: out.y,
        mean: out.mean,
        var: out.var,
        dx: g[0].clone(),
        dgamma: g[1].clone(),
        dbeta: g[2].clone(),
    }
}

#[test]
fn train_matches_reference() {
    for (i, dims) in SHAPES.iter().enumerate() {
        for relu in [false, true] {
            let f = train(dims, relu, i as u64, true);
            let s = train(dims, relu, i as u64, false);
            let what = |t: &str| format!("{dims:?} relu={relu} {t}");
            assert_close(&what("y"), &f.y, &s.y, 1e-5);
            assert_close(&what("mean"), &f.mean, &s.mean, 1e-6);
            assert_close(&what("var"), &f.var, &s.var, 1e-5);
            assert_close(&what("dx"), &f.dx, &s.dx, 1e-4);
            assert_close(&what("dgamma"), &f.dgamma, &s.dgamma, 1e-5);
            assert_close(&what("dbeta"), &f.dbeta, &s.dbeta, 1e-5);
            assert!(!f.mean.track_op() && !f.var.track_op());
        }
    }
}

#[test]
fn train_gradients_match_f64_finite_differences() {
    for (i, relu) in [false, true].into_iter().enumerate() {
        let dims = [2, 3, 3, 4];
        let mut r = rng(50 + i as u64);
        let x = randn_var(&mut r, &dims, 1.0, 1.5);
        let gamma = randn_var(&mut r, &[3], 1.0, 0.3);
        let beta = randn_var(&mut r, &[3], 0.2, 0.5);
        let y = ops::batch_norm_train(&x, &gamma, &beta, 1e-5, relu)
            .unwrap()
            .y;
        let probe = randn(&mut r, &dims, 0.0, 1.0);
        let g = grads(&y, &probe, &[&x, &gamma, &beta]);
        let probe64 = probe.to_dtype(DType::F64).unwrap();
        let f = |a: &[Tensor]| {
            functional(
                &ops::batch_norm_train_slow(&a[0], &a[1], &a[2], 1e-5, relu)?.y,
                &probe64,
            )
        };
        let inputs = [
            x.as_tensor().clone(),
            gamma.as_tensor().clone(),
            beta.as_tensor().clone(),
        ];
        for (j, name) in ["dx", "dgamma", "dbeta"].iter().enumerate() {
            let num = numeric_grad(&inputs, j, 1e-6, f);
            assert_close(&format!("relu={relu} {name}"), &g[j], &num, 1e-4);
        }
    }
}

fn eval(dims: &[usize], relu: bool, seed: u64, fast: bool) -> [Tensor; 4] {
    let mut r = rng(seed);
    let x = randn_var(&mut r, dims, 0.5, 2.0);
    let c = &dims[1..2];
    let gamma = randn_var(&mut r, c, 1.0, 0.5);
    let beta = randn_var(&mut r, c, 0.0, 0.5);
    let rm = randn(&mut r, c, 0.5, 1.0);
    let rv = randn(&mut r, c, 0.0, 1.0)
        .abs()
        .unwrap()
        .affine(1.0, 0.1)
        .unwrap();
    let f = if fast {
        ops::batch_norm_eval
    } else {
        ops::batch_norm_eval_slow
    };
    let y = f(&x, &gamma, &beta, &rm, &rv, 1e-5, relu).unwrap();
    let probe = randn(&mut r, dims, 0.0, 1.0);
    let g = grads(&y, &probe, &[&x, &gamma, &beta]);
    [y, g[0].clone(), g[1].clone(), g[2].clone()]
}

#[test]
fn eval_matches_reference() {
    for (i, dims) in SHAPES.iter().enumerate() {
        for relu in [false, true] {
            let f = eval(dims, relu, 10 + i as u64, true);
            let s = eval(dims, relu, 10 + i as u64, false);
            for (j, name) in ["y", "dx", "dgamma", "dbeta"].iter().enumerate() {
                assert_close(&format!("{dims:?} relu={relu} {name}"), &f[j], &s[j], 1e-5);
            }
        }
    }
}

#[test]
fn bit_identical_with_one_and_two_threads() {
    for relu in [false, true] {
        let dims = [9, 16, 12, 12];
        let one = with_threads(1, || train(&dims, relu, 3, true));
        let two = with_threads(2, || train(&dims, relu, 3, true));
        for (name, a, b) in [
            ("y", &one.y, &two.y),
            ("mean", &one.mean, &two.mean),
            ("var", &one.var, &two.var),
            ("dx", &one.dx, &two.dx),
            ("dgamma", &one.dgamma, &two.dgamma),
            ("dbeta", &one.dbeta, &two.dbeta),
        ] {
            assert_bits_eq(&format!("relu={relu} {name}"), a, b);
        }
    }
}

#[test]
fn bad_parameter_shapes_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev).unwrap();
    let ok = Tensor::ones(3, DType::F32, &dev).unwrap();
    let bad = Tensor::ones(4, DType::F32, &dev).unwrap();
    let err = ops::batch_norm_train(&x, &bad, &ok, 1e-5, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[3]"), "{err}");
    assert!(ops::batch_norm_eval(&x, &ok, &ok, &bad, &ok, 1e-5, true).is_err());
    let x3 = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
    assert!(ops::batch_norm_train(&x3, &ok, &ok, 1e-5, false).is_err());
}
