//! BatchNorm's batch-statistics modes on one layer: `Groups` against a local BatchNorm per
//! chunk, `Synced` on a single process against the local BatchNorm and against f64 finite
//! differences, and the modes' input errors.

mod ops_util;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use ops_util::*;
use resnet_model::{ops, BatchNorm, BatchNormConfig, BatchStats, SingleProcess, StatsReducer};

/// A BatchNorm over `weight`/`bias` with its own copy of the running statistics `rs`.
fn layer(w: &Var, b: &Var, rs: &(Tensor, Tensor), relu: bool, stats: BatchStats) -> BatchNorm {
    let cfg = BatchNormConfig {
        relu,
        ..Default::default()
    };
    let (rm, rv) = (rs.0.copy().unwrap(), rs.1.copy().unwrap());
    let mut bn = BatchNorm::new(w.as_tensor().clone(), b.as_tensor().clone(), rm, rv, cfg).unwrap();
    bn.set_batch_stats(stats);
    bn
}

/// Random parameters and running statistics for `c` channels.
fn params(r: &mut rand_chacha::ChaCha8Rng, c: usize) -> (Var, Var, (Tensor, Tensor)) {
    let w = randn_var(r, &[c], 1.0, 0.5);
    let b = randn_var(r, &[c], 0.0, 0.5);
    let rm = randn(r, &[c], 0.5, 1.0);
    let rv = randn(r, &[c], 0.0, 1.0)
        .abs()
        .unwrap()
        .affine(1.0, 0.1)
        .unwrap();
    (w, b, (rm, rv))
}

#[test]
fn groups_match_a_local_batch_norm_per_chunk() {
    for (i, relu) in [false, true].into_iter().enumerate() {
        let dims = [8, 3, 5, 5];
        let mut r = rng(300 + i as u64);
        let (w, b, rs) = params(&mut r, 3);
        // a large mean relative to the spread checks the variance for cancellation
        let x = randn(&mut r, &dims, 3.0, 2.0);
        let probe = randn(&mut r, &dims, 0.0, 1.0);

        let grouped = layer(&w, &b, &rs, relu, BatchStats::Groups(2));
        let xv = Var::from_tensor(&x).unwrap();
        let y = grouped.forward_t(&xv, true).unwrap();
        let g = grads(&y, &probe, &[&xv, &w, &b]);

        let mut ys = Vec::new();
        let (mut dxs, mut dw, mut db) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rms, mut rvs) = (Vec::new(), Vec::new());
        for half in 0..2 {
            let bn = layer(&w, &b, &rs, relu, BatchStats::Local);
            let xh = Var::from_tensor(&x.narrow(0, 4 * half, 4).unwrap()).unwrap();
            let yh = bn.forward_t(&xh, true).unwrap();
            let gh = grads(&yh, &probe.narrow(0, 4 * half, 4).unwrap(), &[&xh, &w, &b]);
            ys.push(yh);
            dxs.push(gh[0].clone());
            dw.push(gh[1].clone());
            db.push(gh[2].clone());
            rms.push(bn.running_mean().clone());
            rvs.push(bn.running_var().clone());
        }
        let sum = |v: &[Tensor]| (&v[0] + &v[1]).unwrap();
        let avg = |v: &[Tensor]| (sum(v) * 0.5).unwrap();
        let what = |t: &str| format!("relu={relu} {t}");
        assert_close(&what("y"), &y, &Tensor::cat(&ys, 0).unwrap(), 1e-5);
        assert_close(&what("dx"), &g[0], &Tensor::cat(&dxs, 0).unwrap(), 1e-5);
        assert_close(&what("dweight"), &g[1], &sum(&dw), 1e-5);
        assert_close(&what("dbias"), &g[2], &sum(&db), 1e-5);
        assert_close(
            &what("running_mean"),
            grouped.running_mean(),
            &avg(&rms),
            1e-5,
        );
        assert_close(
            &what("running_var"),
            grouped.running_var(),
            &avg(&rvs),
            1e-5,
        );
    }
}

#[test]
fn groups_of_one_are_local_bit_for_bit() {
    let mut r = rng(310);
    let (w, b, rs) = params(&mut r, 4);
    let x = randn(&mut r, &[3, 4, 6, 6], 0.5, 1.0);
    let local = layer(&w, &b, &rs, true, BatchStats::Local);
    let one = layer(&w, &b, &rs, true, BatchStats::Groups(1));
    let (ya, yb) = (
        local.forward_t(&x, true).unwrap(),
        one.forward_t(&x, true).unwrap(),
    );
    assert_bits_eq("y", &ya, &yb);
    assert_bits_eq("running_mean", local.running_mean(), one.running_mean());
    assert_bits_eq("running_var", local.running_var(), one.running_var());
}

#[test]
fn synced_on_one_process_matches_local() {
    for (i, relu) in [false, true].into_iter().enumerate() {
        let dims = [4, 5, 7, 3];
        let mut r = rng(320 + i as u64);
        let (w, b, rs) = params(&mut r, 5);
        let x = randn_var(&mut r, &dims, 3.0, 2.0);
        let probe = randn(&mut r, &dims, 0.0, 1.0);
        let local = layer(&w, &b, &rs, relu, BatchStats::Local);
        let synced = layer(&w, &b, &rs, relu, BatchStats::synced(SingleProcess));
        let yl = local.forward_t(&x, true).unwrap();
        let ys = synced.forward_t(&x, true).unwrap();
        let what = |t: &str| format!("relu={relu} {t}");
        assert_close(&what("y"), &ys, &yl, 1e-5);
        let gl = grads(&yl, &probe, &[&x, &w, &b]);
        let gs = grads(&ys, &probe, &[&x, &w, &b]);
        for (j, name) in ["dx", "dweight", "dbias"].iter().enumerate() {
            assert_close(&what(name), &gs[j], &gl[j], 1e-5);
        }
        assert_close(
            &what("running_mean"),
            synced.running_mean(),
            local.running_mean(),
            1e-5,
        );
        assert_close(
            &what("running_var"),
            synced.running_var(),
            local.running_var(),
            1e-5,
        );

        // the op's statistics against the local op's
        let reducer: Arc<dyn StatsReducer> = Arc::new(SingleProcess);
        let out = ops::batch_norm_train_synced(&x, &w, &b, 1e-5, relu, &reducer).unwrap();
        let reference = ops::batch_norm_train(&x, &w, &b, 1e-5, relu).unwrap();
        assert_eq!(out.count, 4 * 7 * 3);
        assert_close(&what("mean"), &out.mean, &reference.mean, 1e-6);
        assert_close(&what("var"), &out.var, &reference.var, 1e-5);
        assert!(!out.mean.track_op() && !out.var.track_op());
    }
}

#[test]
fn synced_gradients_match_f64_finite_differences() {
    let reducer: Arc<dyn StatsReducer> = Arc::new(SingleProcess);
    for (i, relu) in [false, true].into_iter().enumerate() {
        let dims = [2, 3, 3, 4];
        let mut r = rng(330 + i as u64);
        let x = randn_var(&mut r, &dims, 1.0, 1.5);
        let gamma = randn_var(&mut r, &[3], 1.0, 0.3);
        let beta = randn_var(&mut r, &[3], 0.2, 0.5);
        let y = ops::batch_norm_train_synced(&x, &gamma, &beta, 1e-5, relu, &reducer)
            .unwrap()
            .y;
        let probe = randn(&mut r, &dims, 0.0, 1.0);
        let g = grads(&y, &probe, &[&x, &gamma, &beta]);
        // on one process synchronized BatchNorm is the plain one: differentiate that in f64
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

#[test]
fn groups_that_do_not_divide_the_batch_are_errors() {
    let mut r = rng(340);
    let (w, b, rs) = params(&mut r, 3);
    let x = randn(&mut r, &[8, 3, 5, 5], 0.0, 1.0);
    let before = layer(&w, &b, &rs, false, BatchStats::Local);
    for g in [3, 0, 16] {
        let bn = layer(&w, &b, &rs, false, BatchStats::Groups(g));
        let err = bn.forward_t(&x, true).unwrap_err().to_string();
        assert!(err.contains(&format!("Groups({g})")), "{err}");
        assert!(err.contains("[8, 3, 5, 5]"), "{err}");
        assert_bits_eq("running_mean", bn.running_mean(), before.running_mean());
        // eval mode ignores the mode
        bn.forward_t(&x, false).unwrap();
    }
}

#[test]
fn synced_rejects_other_dtypes() {
    let dev = Device::Cpu;
    let x = Tensor::ones((2, 3, 4, 4), DType::F64, &dev).unwrap();
    let p = Tensor::ones(3, DType::F64, &dev).unwrap();
    let reducer: Arc<dyn StatsReducer> = Arc::new(SingleProcess);
    let err = ops::batch_norm_train_synced(&x, &p, &p, 1e-5, false, &reducer)
        .unwrap_err()
        .to_string();
    assert!(err.contains("f32"), "{err}");
}
