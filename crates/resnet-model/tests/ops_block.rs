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

impl Params {
    /// Random block parameters from `cin` to `cout` channels.
    fn random(r: &mut rand_chacha::ChaCha8Rng, cin: usize, cout: usize) -> Self {
        Params {
            w1: randn_var(r, &[cout, cin, 3, 3], 0.0, 0.2),
            g1: randn_var(r, &[cout], 1.0, 0.2),
            b1: randn_var(r, &[cout], 0.0, 0.2),
            w2: randn_var(r, &[cout, cout, 3, 3], 0.0, 0.2),
            g2: randn_var(r, &[cout], 1.0, 0.2),
            b2: randn_var(r, &[cout], 0.0, 0.2),
        }
    }
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
        let p = Params::random(&mut r, cin, cout);
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

/// Parameters of a block with an optional projection shortcut.
struct FusedCase {
    p: Params,
    proj: Option<(Var, Var, Var)>,
    stride: usize,
    pad_shortcut: bool,
}

impl FusedCase {
    fn vars<'a>(&'a self, x: &'a Var) -> Vec<&'a Var> {
        let p = &self.p;
        let mut v = vec![x, &p.w1, &p.g1, &p.b1, &p.w2, &p.g2, &p.b2];
        if let Some((w, g, b)) = &self.proj {
            v.extend([w, g, b]);
        }
        v
    }

    fn params(&self) -> ops::BasicBlockParams<'_> {
        let p = &self.p;
        let shortcut = match &self.proj {
            Some((w, g, b)) => ops::BlockShortcut::Projection {
                conv: w.as_tensor(),
                bn_weight: g.as_tensor(),
                bn_bias: b.as_tensor(),
            },
            None if self.pad_shortcut => ops::BlockShortcut::SubsamplePad,
            None => ops::BlockShortcut::Identity,
        };
        ops::BasicBlockParams {
            conv1: p.w1.as_tensor(),
            bn1_weight: p.g1.as_tensor(),
            bn1_bias: p.b1.as_tensor(),
            conv2: p.w2.as_tensor(),
            bn2_weight: p.g2.as_tensor(),
            bn2_bias: p.b2.as_tensor(),
            shortcut,
            stride: self.stride,
            eps: 1e-5,
        }
    }

    /// The block composed from the fast per-layer ops: output and the statistics of every
    /// BatchNorm, in order.
    fn composed(&self, x: &Tensor) -> (Tensor, Vec<Tensor>) {
        let p = &self.p;
        let cout = p.w1.dims()[0];
        let h1 = ops::batch_norm_train(
            &ops::conv2d(x, &p.w1, self.stride, 1).unwrap(),
            &p.g1,
            &p.b1,
            1e-5,
            true,
        )
        .unwrap();
        let h2 = ops::batch_norm_train(
            &ops::conv2d(&h1.y, &p.w2, 1, 1).unwrap(),
            &p.g2,
            &p.b2,
            1e-5,
            false,
        )
        .unwrap();
        let mut stats = vec![h1.mean, h1.var, h2.mean, h2.var];
        let s = match &self.proj {
            Some((w, g, b)) => {
                let o = ops::batch_norm_train(
                    &ops::conv2d(x, w, self.stride, 0).unwrap(),
                    g,
                    b,
                    1e-5,
                    false,
                )
                .unwrap();
                stats.extend([o.mean, o.var]);
                o.y
            }
            None if self.pad_shortcut => ops::subsample_pad(x, cout).unwrap(),
            None => x.clone(),
        };
        (ops::add_relu(&h2.y, &s).unwrap(), stats)
    }
}

fn block_stats(o: &ops::BasicBlockOutput) -> Vec<Tensor> {
    let mut v = vec![
        o.bn1.mean.clone(),
        o.bn1.var.clone(),
        o.bn2.mean.clone(),
        o.bn2.var.clone(),
    ];
    if let Some(s) = &o.shortcut_bn {
        v.extend([s.mean.clone(), s.var.clone()]);
    }
    v
}

/// Equal values (`-0.0 == 0.0`): candle's gradient accumulation adds into a zero tensor,
/// which can turn a `-0.0` into `0.0`.
fn assert_same(what: &str, a: &Tensor, b: &Tensor) {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len(), "{what}: length");
    if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
        panic!("{what}: element {i} differs: {:e} vs {:e}", a[i], b[i]);
    }
}

#[test]
fn fused_block_equals_composed_ops_and_matches_reference() {
    // (n, cin, hw, cout, stride, shortcut: 0 identity, 1 option-A pad, 2 projection)
    for (i, &(n, cin, hw, cout, stride, sc)) in [
        (4, 16, 16, 16, 1, 0),
        (4, 16, 16, 32, 2, 1),
        (3, 16, 15, 32, 2, 2),
        (3, 8, 8, 8, 1, 2),
        // ResNet-20's real sizes: stage 1 (32x32 planes), the stage-1 -> 2 transition from
        // 32x32 (option A), and stage 2 (32 channels: the fused stride-1 backward path).
        (2, 16, 32, 16, 1, 0),
        (2, 16, 32, 32, 2, 1),
        (2, 32, 16, 32, 1, 0),
    ]
    .iter()
    .enumerate()
    {
        let mut r = rng(300 + i as u64);
        let x = randn_var(&mut r, &[n, cin, hw, hw], 0.0, 1.0);
        let p = Params::random(&mut r, cin, cout);
        let proj = (sc == 2).then(|| {
            (
                randn_var(&mut r, &[cout, cin, 1, 1], 0.0, 0.3),
                randn_var(&mut r, &[cout], 1.0, 0.2),
                randn_var(&mut r, &[cout], 0.0, 0.2),
            )
        });
        let case = FusedCase {
            p,
            proj,
            stride,
            pad_shortcut: sc == 1,
        };
        let vars = case.vars(&x);
        let fused = ops::basic_block_train(&x, &case.params()).unwrap();
        let slow = ops::basic_block_train_slow(&x, &case.params()).unwrap();
        let (composed, composed_stats) = case.composed(&x);
        let probe = randn(&mut r, fused.y.dims(), 0.0, 1.0);

        assert_same(&format!("case {i} y"), &fused.y, &composed);
        assert_close(&format!("case {i} y vs slow"), &fused.y, &slow.y, 1e-5);
        let (fs, ss) = (block_stats(&fused), block_stats(&slow));
        assert_eq!(
            fs.len(),
            composed_stats.len(),
            "case {i}: number of statistics"
        );
        for (k, ((a, b), c)) in fs.iter().zip(&composed_stats).zip(&ss).enumerate() {
            assert_same(&format!("case {i} stat {k}"), a, b);
            assert_close(&format!("case {i} stat {k} vs slow"), a, c, 1e-5);
        }

        let gf = grads(&fused.y, &probe, &vars);
        let gc = grads(&composed, &probe, &vars);
        let gs = grads(&slow.y, &probe, &vars);
        for (k, ((a, b), c)) in gf.iter().zip(&gc).zip(&gs).enumerate() {
            assert_same(&format!("case {i} grad {k}"), a, b);
            assert_close(&format!("case {i} grad {k} vs slow"), a, c, 1e-4);
        }

        // same bits with one and two threads
        let one = with_threads(1, || {
            let o = ops::basic_block_train(&x, &case.params()).unwrap();
            let g = grads(&o.y, &probe, &vars);
            (o.y, g)
        });
        assert_bits_eq(&format!("case {i} y 1 vs 2 threads"), &one.0, &fused.y);
        for (k, (a, b)) in one.1.iter().zip(&gf).enumerate() {
            assert_bits_eq(&format!("case {i} grad {k} 1 vs 2 threads"), a, b);
        }
    }
}

#[test]
fn fused_block_rejects_mismatched_parameters() {
    let mut r = rng(400);
    let x = randn_var(&mut r, &[2, 8, 8, 8], 0.0, 1.0);
    let p = Params {
        w1: randn_var(&mut r, &[8, 8, 3, 3], 0.0, 0.2),
        g1: randn_var(&mut r, &[8], 1.0, 0.2),
        b1: randn_var(&mut r, &[7], 0.0, 0.2),
        w2: randn_var(&mut r, &[8, 8, 3, 3], 0.0, 0.2),
        g2: randn_var(&mut r, &[8], 1.0, 0.2),
        b2: randn_var(&mut r, &[8], 0.0, 0.2),
    };
    let case = FusedCase {
        p,
        proj: None,
        stride: 1,
        pad_shortcut: false,
    };
    let err = ops::basic_block_train(&x, &case.params())
        .unwrap_err()
        .to_string();
    assert!(err.contains("bn1_bias") && err.contains("[7]"), "{err}");
    // an identity shortcut cannot change the shape
    let case = FusedCase { stride: 2, ..case };
    let mut p2 = case.params();
    p2.bn1_bias = case.p.g1.as_tensor();
    let err = ops::basic_block_train(&x, &p2).unwrap_err().to_string();
    assert!(err.contains("identity shortcut"), "{err}");
}

/// A random chain case: blocks of `(cin, cout, stride, shortcut)` (shortcut 0 identity, 1
/// option-A pad, 2 projection).
fn chain_cases(
    r: &mut rand_chacha::ChaCha8Rng,
    blocks: &[(usize, usize, usize, u8)],
) -> Vec<FusedCase> {
    blocks
        .iter()
        .map(|&(cin, cout, stride, sc)| {
            let p = Params::random(r, cin, cout);
            let proj = (sc == 2).then(|| {
                (
                    randn_var(r, &[cout, cin, 1, 1], 0.0, 0.3),
                    randn_var(r, &[cout], 1.0, 0.2),
                    randn_var(r, &[cout], 0.0, 0.2),
                )
            });
            FusedCase {
                p,
                proj,
                stride,
                pad_shortcut: sc == 1,
            }
        })
        .collect()
}

#[test]
fn block_chain_equals_blocks_one_by_one() {
    // ResNet-20's own chain at a small batch (stage 1 at 32x32, option A into stages 2 and
    // 3), a chain with projections and odd planes, and identity blocks over more images than
    // the backward's chunks of 8 (the per-image kernels' image indices)
    let resnet = [
        (16, 16, 1, 0),
        (16, 16, 1, 0),
        (16, 32, 2, 1),
        (32, 32, 1, 0),
        (32, 64, 2, 1),
        (64, 64, 1, 0),
    ];
    let mixed = [(8, 8, 1, 2), (8, 16, 2, 2), (16, 16, 1, 0), (16, 32, 2, 1)];
    let identity = [(16, 16, 1, 0), (16, 16, 1, 0), (16, 16, 1, 0)];
    for (i, (n, cin, hw, blocks)) in [
        (2, 16, 32, &resnet[..]),
        (3, 8, 15, &mixed[..]),
        (19, 16, 8, &identity[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = rng(500 + i as u64);
        let x = randn_var(&mut r, &[n, cin, hw, hw], 0.0, 1.0);
        let cases = chain_cases(&mut r, blocks);
        let params: Vec<_> = cases.iter().map(FusedCase::params).collect();
        let mut vars = vec![&x];
        for c in &cases {
            vars.extend(c.vars(&x).into_iter().skip(1));
        }

        let chain = ops::basic_blocks_train(&x, &params).unwrap();
        let slow = ops::with_reference_ops(|| ops::basic_blocks_train(&x, &params).unwrap());
        let mut y = x.as_tensor().clone();
        let mut stats = vec![];
        for p in &params {
            let o = ops::basic_block_train(&y, p).unwrap();
            stats.push(o.clone());
            y = o.y;
        }
        assert_same(&format!("chain {i} y"), &chain.y, &y);
        assert_close(&format!("chain {i} y vs slow"), &chain.y, &slow.y, 1e-4);
        assert_eq!(chain.blocks.len(), blocks.len(), "chain {i}: blocks");
        for (k, ((c, o), s)) in chain
            .blocks
            .iter()
            .zip(&stats)
            .zip(&slow.blocks)
            .enumerate()
        {
            let (hw_out, _) = o.y.dims4().map(|d| (d.2 * d.3, d.0)).unwrap();
            assert_eq!(c.count, n * hw_out, "chain {i} block {k}: count");
            assert_eq!(s.count, c.count, "chain {i} block {k}: slow count");
            let to_vec = |b: &ops::BlockStats| {
                let mut v = vec![&b.bn1.mean, &b.bn1.var, &b.bn2.mean, &b.bn2.var];
                if let Some(s) = &b.shortcut_bn {
                    v.extend([&s.mean, &s.var]);
                }
                v.into_iter().cloned().collect::<Vec<_>>()
            };
            let (cs, ss, os) = (to_vec(c), to_vec(s), block_stats(o));
            assert_eq!(cs.len(), os.len(), "chain {i} block {k}: statistics");
            for (j, ((a, b), c)) in cs.iter().zip(&os).zip(&ss).enumerate() {
                assert_same(&format!("chain {i} block {k} stat {j}"), a, b);
                assert_close(&format!("chain {i} block {k} stat {j} vs slow"), a, c, 1e-4);
            }
        }

        let probe = randn(&mut r, chain.y.dims(), 0.0, 1.0);
        let gc = grads(&chain.y, &probe, &vars);
        let gb = grads(&y, &probe, &vars);
        let gs = grads(&slow.y, &probe, &vars);
        assert_eq!(gc.len(), vars.len());
        for (k, ((a, b), c)) in gc.iter().zip(&gb).zip(&gs).enumerate() {
            assert_same(&format!("chain {i} grad {k}"), a, b);
            assert_close(&format!("chain {i} grad {k} vs slow"), a, c, 1e-3);
        }

        // same bits with one and two threads
        let one = with_threads(1, || {
            let o = ops::basic_blocks_train(&x, &params).unwrap();
            grads(&o.y, &probe, &vars)
        });
        for (k, (a, b)) in one.iter().zip(&gc).enumerate() {
            assert_bits_eq(&format!("chain {i} grad {k} 1 vs 2 threads"), a, b);
        }
    }
}

#[test]
fn block_chain_rejects_bad_chains() {
    let mut r = rng(600);
    let x = randn_var(&mut r, &[2, 8, 8, 8], 0.0, 1.0);
    let err = ops::basic_blocks_train(&x, &[]).unwrap_err().to_string();
    assert!(err.contains("no blocks"), "{err}");
    // block 1 expects 16 input channels, block 0 gives 8
    let cases = chain_cases(&mut r, &[(8, 8, 1, 0), (16, 16, 1, 0)]);
    let params: Vec<_> = cases.iter().map(FusedCase::params).collect();
    let err = ops::basic_blocks_train(&x, &params)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("block 1") && err.contains("conv1") && err.contains("[16, 8, 3, 3]"),
        "{err}"
    );
}

#[test]
fn stem_and_blocks_equal_layers_one_by_one() {
    let blocks = [(16, 16, 1, 0), (16, 32, 2, 1), (32, 32, 1, 2)];
    let mut r = rng(700);
    let (n, hw) = (3, 12);
    let x = randn_var(&mut r, &[n, 3, hw, hw], 0.0, 1.0);
    let (sw, sg, sb) = (
        randn_var(&mut r, &[16, 3, 3, 3], 0.0, 0.3),
        randn_var(&mut r, &[16], 1.0, 0.2),
        randn_var(&mut r, &[16], 0.0, 0.2),
    );
    let stem = ops::StemParams {
        conv: sw.as_tensor(),
        bn_weight: sg.as_tensor(),
        bn_bias: sb.as_tensor(),
        eps: 1e-5,
    };
    let cases = chain_cases(&mut r, &blocks);
    let params: Vec<_> = cases.iter().map(FusedCase::params).collect();
    let mut vars = vec![&sw, &sg, &sb];
    for c in &cases {
        vars.extend(c.vars(&x).into_iter().skip(1));
    }

    // the images as a plain tensor (no input gradient) and as a variable (with one)
    for (k, input) in [x.as_tensor().detach(), x.as_tensor().clone()]
        .iter()
        .enumerate()
    {
        let fused = ops::stem_and_blocks_train(input, &stem, &params).unwrap();
        let slow =
            ops::with_reference_ops(|| ops::stem_and_blocks_train(input, &stem, &params).unwrap());
        let h = ops::batch_norm_train(
            &ops::conv2d(input, &sw, 1, 1).unwrap(),
            &sg,
            &sb,
            1e-5,
            true,
        )
        .unwrap();
        let layers = ops::basic_blocks_train(&h.y, &params).unwrap();
        assert_same(&format!("input {k}: y"), &fused.y, &layers.y);
        assert_close(&format!("input {k}: y vs slow"), &fused.y, &slow.y, 1e-4);
        let (fs, ss) = (fused.stem.as_ref().unwrap(), slow.stem.as_ref().unwrap());
        assert_same(&format!("input {k}: stem mean"), &fs.mean, &h.mean);
        assert_same(&format!("input {k}: stem var"), &fs.var, &h.var);
        assert_close(
            &format!("input {k}: stem var vs slow"),
            &fs.var,
            &ss.var,
            1e-5,
        );
        assert!(layers.stem.is_none());
        for (j, (a, b)) in fused.blocks.iter().zip(&layers.blocks).enumerate() {
            assert_eq!(a.count, b.count, "input {k} block {j}: count");
            assert_same(
                &format!("input {k} block {j}: bn2 var"),
                &a.bn2.var,
                &b.bn2.var,
            );
        }

        let probe = randn(&mut r, fused.y.dims(), 0.0, 1.0);
        let mut vs = vars.clone();
        if k == 1 {
            vs.push(&x);
        }
        let gf = grads(&fused.y, &probe, &vs);
        let gl = grads(&layers.y, &probe, &vs);
        let gs = grads(&slow.y, &probe, &vs);
        for (j, ((a, b), c)) in gf.iter().zip(&gl).zip(&gs).enumerate() {
            assert_same(&format!("input {k} grad {j}"), a, b);
            assert_close(&format!("input {k} grad {j} vs slow"), a, c, 1e-3);
        }
        if k == 0 {
            let g = (fused.y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert!(g.get(&x).is_none(), "the images got a gradient");
        }
    }

    // bad stem shapes name the tensor
    let short = sb.as_tensor().narrow(0, 0, 15).unwrap();
    let bad = ops::StemParams {
        bn_bias: &short,
        ..stem
    };
    let err = ops::stem_and_blocks_train(&x, &bad, &params)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stem bn_bias") && err.contains("[15]"),
        "{err}"
    );
}
