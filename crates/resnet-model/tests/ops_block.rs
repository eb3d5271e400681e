//! A residual basic block assembled from the fast ops against the same block from the
//! reference ops: output and every gradient, at the network's stage shapes.

mod ops_util;

use candle_core::{Result, Tensor, Var};
use ops_util::*;
use resnet_model::ops;

struct Params {
    w1: Var,
    g1: Var,
    b1: Var,
    w2: Var,
    g2: Var,
    b2: Var,
}

type ConvFn = fn(&Tensor, &Tensor, usize, usize) -> Result<Tensor>;
type BnFn = fn(&Tensor, &Tensor, &Tensor, f64, bool) -> Result<ops::BatchNormOutput>;
type AddFn = fn(&Tensor, &Tensor) -> Result<Tensor>;

fn block(x: &Tensor, p: &Params, stride: usize, fast: bool) -> Result<Tensor> {
    let cout = p.w1.dims()[0];
    let (conv, bn, add): (ConvFn, BnFn, AddFn) = if fast {
        (ops::conv2d, ops::batch_norm_train, ops::add_relu)
    } else {
        (
            ops::conv2d_slow,
            ops::batch_norm_train_slow,
            ops::add_relu_slow,
        )
    };
    let h = bn(&conv(x, &p.w1, stride, 1)?, &p.g1, &p.b1, 1e-5, true)?.y;
    let h = bn(&conv(&h, &p.w2, 1, 1)?, &p.g2, &p.b2, 1e-5, false)?.y;
    let s = if stride == 1 {
        x.clone()
    } else if fast {
        ops::subsample_pad(x, cout)?
    } else {
        ops::subsample_pad_slow(x, cout)?
    };
    add(&h, &s)
}

#[test]
fn residual_block_matches_reference() {
    for (i, &(n, cin, hw, cout, stride)) in [
        (8, 16, 32, 16, 1),
        (8, 16, 32, 32, 2),
        (4, 32, 16, 32, 1),
        (4, 64, 8, 64, 1),
    ]
    .iter()
    .enumerate()
    {
        let mut r = rng(200 + i as u64);
        let x = randn_var(&mut r, &[n, cin, hw, hw], 0.0, 1.0);
        let p = Params {
            w1: randn_var(&mut r, &[cout, cin, 3, 3], 0.0, 0.2),
            g1: randn_var(&mut r, &[cout], 1.0, 0.2),
            b1: randn_var(&mut r, &[cout], 0.0, 0.2),
            w2: randn_var(&mut r, &[cout, cout, 3, 3], 0.0, 0.2),
            g2: randn_var(&mut r, &[cout], 1.0, 0.2),
            b2: randn_var(&mut r, &[cout], 0.0, 0.2),
        };
        let vars = [&x, &p.w1, &p.g1, &p.b1, &p.w2, &p.g2, &p.b2];
        let names = ["x", "w1", "g1", "b1", "w2", "g2", "b2"];
        let yf = block(&x, &p, stride, true).unwrap();
        let ys = block(&x, &p, stride, false).unwrap();
        let probe = randn(&mut r, yf.dims(), 0.0, 1.0);
        assert_close(&format!("case {i} y"), &yf, &ys, 1e-5);
        let gf = grads(&yf, &probe, &vars);
        let gs = grads(&ys, &probe, &vars);
        for ((name, a), b) in names.iter().zip(&gf).zip(&gs) {
            assert_close(&format!("case {i} d{name}"), a, b, 1e-4);
        }
    }
}
