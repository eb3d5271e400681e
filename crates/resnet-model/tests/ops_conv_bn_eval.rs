//! The fused eval-mode convolution + BatchNorm (+ ReLU, or + residual + ReLU) against the
//! same ops run one after the other: the same bits on every convolution path (the "same"
//! copies, chunked im2col, stride 2, 1x1, the 3-channel stem, Winograd), with 1 and 2
//! threads; gradients where inputs track them; clear errors for mismatched shapes.

mod ops_util;

use candle_core::{DType, Device, Tensor, Var};
use ops_util::*;
use resnet_model::ops::{self, AfterBatchNorm, EvalBatchNorm};

/// `(n, cin, h, w, cout, k, stride, pad)`
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

const CASES: &[Case] = &[
    // ResNet-20's stem (3 channels: im2col), stage 1 ("same" copies), stage 2's stride-2
    // entry and 1x1 projection, stage 3 (chunks of several images, a partial last chunk)
    (3, 3, 32, 32, 16, 3, 1, 1),
    (3, 16, 32, 32, 16, 3, 1, 1),
    (5, 16, 32, 32, 32, 3, 2, 1),
    (5, 16, 32, 32, 32, 1, 2, 0),
    (9, 32, 8, 8, 64, 3, 1, 1),
    (2, 32, 16, 16, 32, 3, 1, 1),
    // odd planes, one image
    (1, 8, 17, 19, 8, 3, 1, 1),
    (2, 3, 1, 1, 4, 3, 1, 1),
];

struct Inputs {
    x: Tensor,
    w: Tensor,
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    var: Tensor,
    residual: Tensor,
}

fn inputs(case: Case, seed: u64) -> Inputs {
    let (n, cin, h, w, cout, k, s, p) = case;
    let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let mut r = rng(seed);
    Inputs {
        x: randn(&mut r, &[n, cin, h, w], 0.2, 1.0),
        w: randn(&mut r, &[cout, cin, k, k], 0.0, 0.3),
        gamma: randn(&mut r, &[cout], 1.0, 0.3),
        beta: randn(&mut r, &[cout], 0.0, 0.5),
        mean: randn(&mut r, &[cout], 0.0, 0.5),
        var: randn(&mut r, &[cout], 0.0, 1.0)
            .sqr()
            .unwrap()
            .affine(1.0, 0.1)
            .unwrap(),
        residual: randn(&mut r, &[n, cout, ho, wo], 0.0, 1.0),
    }
}

fn fused(i: &Inputs, case: Case, after: AfterBatchNorm<'_>) -> Tensor {
    let bn = EvalBatchNorm {
        weight: &i.gamma,
        bias: &i.beta,
        running_mean: &i.mean,
        running_var: &i.var,
        eps: 1e-5,
    };
    ops::conv2d_batch_norm_eval(&i.x, &i.w, case.6, case.7, &bn, after).unwrap()
}

fn composed(i: &Inputs, case: Case, after: AfterBatchNorm<'_>) -> Tensor {
    let y = ops::conv2d(&i.x, &i.w, case.6, case.7).unwrap();
    let relu = matches!(after, AfterBatchNorm::Relu);
    let y = ops::batch_norm_eval(&y, &i.gamma, &i.beta, &i.mean, &i.var, 1e-5, relu).unwrap();
    match after {
        AfterBatchNorm::AddRelu(r) => ops::add_relu(&y, r).unwrap(),
        _ => y,
    }
}

fn afters(i: &Inputs) -> [(&'static str, AfterBatchNorm<'_>); 3] {
    [
        ("nothing", AfterBatchNorm::Nothing),
        ("relu", AfterBatchNorm::Relu),
        ("add+relu", AfterBatchNorm::AddRelu(&i.residual)),
    ]
}

#[test]
fn same_bits_as_the_ops_one_after_the_other() {
    for winograd in [false, true] {
        for (c, &case) in CASES.iter().enumerate() {
            let i = inputs(case, c as u64);
            for (name, after) in afters(&i) {
                let (a, b) = ops::with_winograd(winograd, || {
                    (fused(&i, case, after), composed(&i, case, after))
                });
                assert_bits_eq(&format!("{case:?} {name} winograd {winograd}"), &a, &b);
                if name == "relu" {
                    // the ReLU did clip something, and not everything
                    let v = values(&a);
                    assert!(v.contains(&0.0) && v.iter().any(|&x| x > 0.0), "{case:?}");
                }
            }
        }
    }
}

#[test]
fn bit_identical_with_one_and_two_threads() {
    for (c, &case) in CASES.iter().enumerate() {
        let i = inputs(case, 50 + c as u64);
        let after = AfterBatchNorm::AddRelu(&i.residual);
        let one = with_threads(1, || fused(&i, case, after));
        let two = with_threads(2, || fused(&i, case, after));
        assert_bits_eq(&format!("{case:?}"), &one, &two);
    }
}

/// With inputs that track gradients the op runs the three ops (differentiable), and under
/// `no_grad` the same `Var`s take the fused kernel: same values either way.
#[test]
fn tracked_inputs_get_gradients_and_no_grad_the_fused_kernel() {
    let case = (3, 16, 32, 32, 16, 3, 1, 1);
    let i = inputs(case, 9);
    let (x, w, gamma) = (
        Var::from_tensor(&i.x).unwrap(),
        Var::from_tensor(&i.w).unwrap(),
        Var::from_tensor(&i.gamma).unwrap(),
    );
    let bn = EvalBatchNorm {
        weight: gamma.as_tensor(),
        bias: &i.beta,
        running_mean: &i.mean,
        running_var: &i.var,
        eps: 1e-5,
    };
    let after = AfterBatchNorm::AddRelu(&i.residual);
    let y = ops::conv2d_batch_norm_eval(&x, &w, 1, 1, &bn, after).unwrap();
    assert!(y.track_op());
    let y_ng = ops::no_grad(|| ops::conv2d_batch_norm_eval(&x, &w, 1, 1, &bn, after)).unwrap();
    assert!(!y_ng.track_op());
    assert_bits_eq("tracked vs no_grad", &y, &y_ng);
    assert_bits_eq("tracked vs composed", &y, &composed(&i, case, after));

    let mut r = rng(10);
    let probe = randn(&mut r, y.dims(), 0.0, 1.0);
    let g = grads(&y, &probe, &[&x, &w, &gamma]);
    let yc = {
        let h = ops::conv2d(&x, &w, 1, 1).unwrap();
        let h = ops::batch_norm_eval(&h, &gamma, &i.beta, &i.mean, &i.var, 1e-5, false).unwrap();
        ops::add_relu(&h, &i.residual).unwrap()
    };
    let gc = grads(&yc, &probe, &[&x, &w, &gamma]);
    for (name, (a, b)) in ["dx", "dw", "dgamma"].iter().zip(g.iter().zip(&gc)) {
        assert_bits_eq(name, a, b);
    }
}

#[test]
fn mismatched_shapes_are_errors_that_name_the_tensor() {
    let case = (2, 4, 8, 8, 6, 3, 1, 1);
    let i = inputs(case, 3);
    let short = Tensor::ones(5, DType::F32, &Device::Cpu).unwrap();
    let bn = EvalBatchNorm {
        weight: &i.gamma,
        bias: &i.beta,
        running_mean: &short,
        running_var: &i.var,
        eps: 1e-5,
    };
    let err = ops::conv2d_batch_norm_eval(&i.x, &i.w, 1, 1, &bn, AfterBatchNorm::Relu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("running_mean") && err.contains("[6]"), "{err}");

    let bn = EvalBatchNorm {
        running_mean: &i.mean,
        ..bn
    };
    let wrong = Tensor::zeros((2, 6, 4, 8), DType::F32, &Device::Cpu).unwrap();
    let err = ops::conv2d_batch_norm_eval(&i.x, &i.w, 1, 1, &bn, AfterBatchNorm::AddRelu(&wrong))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("residual") && err.contains("[2, 6, 8, 8]"),
        "{err}"
    );

    let w = Tensor::zeros((6, 3, 3, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(ops::conv2d_batch_norm_eval(&i.x, &w, 1, 1, &bn, AfterBatchNorm::Nothing).is_err());
}
