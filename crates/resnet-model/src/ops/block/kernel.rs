//! Basic residual blocks in training mode as one custom op: a chain of one or more
//! `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, each block's output the next one's
//! input.
//!
//! Composed from the per-layer ops, one block puts six activation-sized tensors through
//! candle's autograd, and for each of them the backward pass allocates a zero tensor and adds
//! the op's gradient into it, on the calling thread while the worker threads wait. As one op
//! the chain has a single activation-sized argument (its input `x`); the parameters of all its
//! blocks travel packed into two small tensors (per block `[conv1 | conv2 | shortcut conv]`
//! and `[bn1 γ | β | bn2 γ | β | shortcut γ | β]`), and the intermediate activations live
//! inside the op until its backward runs, where each block's input gradient is handed to the
//! block before it directly. It calls the same kernels in the same order as the composed ops,
//! so its results are the same numbers (candle's `0 + g` can only turn a `-0.0` into `0.0`).

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{bail, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::images::{self, BnInputGrad, BnOutput, Handoff, Sums};
use crate::ops::batch_norm::{
    masked, train_backward, train_backward_sums, train_forward_moments, train_stats_moments,
    BackwardCoef, Saved,
};
use crate::ops::channel::{self, affine, affine_add_relu, grad_sums, relu_mask_grad_sums, Planes};
use crate::ops::conv::{self, forward_stats, forward_stats_images, grad_input, grad_weight};
use crate::ops::conv_backward;
use crate::ops::conv_util::Stored;
use crate::ops::custom::{custom_op, with_all, CpuOp};
use crate::ops::elementwise::{subsample_pad, subsample_pad_backward, Dims, SubsamplePad};
use crate::ops::im2col::ConvGeom;

/// The shortcut branch of a fused block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Identity,
    SubsamplePad,
    Projection,
}

/// What the forward keeps for the backward (and for the running statistics).
pub(crate) struct BlockSaved {
    /// conv1's output (bn1's input).
    y1: Vec<f32>,
    /// relu(bn1(y1)) (conv2's input); empty where conv2 makes it from `y1` image by image.
    a1: Vec<f32>,
    /// conv2's output (bn2's input).
    y2: Vec<f32>,
    /// The block's output, the next block's input (empty for the chain's last block, whose
    /// output is the op's result).
    out: Vec<f32>,
    /// The projection's conv output (its BatchNorm's input); empty for other shortcuts.
    ys: Vec<f32>,
    /// Statistics of bn1, bn2 and, for a projection, the shortcut's BatchNorm.
    pub(crate) bn: Vec<Saved>,
}

/// One block of a chain: its output channels, stride, shortcut and BatchNorm epsilon.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockSpec {
    pub(crate) cout: usize,
    pub(crate) stride: usize,
    pub(crate) kind: Kind,
    pub(crate) eps: f64,
}

/// An optional stem in front of a chain: a 3x3 convolution (stride 1, padding 1, no bias),
/// then BatchNorm + ReLU; its output is the first block's input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StemSpec {
    pub(crate) cout: usize,
    pub(crate) eps: f64,
}

/// What the stem's forward keeps.
pub(crate) struct StemSaved {
    /// The convolution's output (the BatchNorm's input).
    y: Vec<f32>,
    /// relu(bn(y)): the first block's input.
    out: Vec<f32>,
    /// The BatchNorm's statistics.
    pub(crate) bn: Saved,
}

/// What a chain's forward keeps: the stem's, then one [`BlockSaved`] per block.
pub(crate) struct ChainSaved {
    pub(crate) stem: Option<StemSaved>,
    pub(crate) blocks: Vec<BlockSaved>,
}

/// The fused training-mode chain of blocks, optionally behind a stem, over `(x, packed conv
/// weights, packed BN parameters)` (the stem's first, then each block's).
pub(crate) struct BlockTrain {
    pub(crate) stem: Option<StemSpec>,
    pub(crate) blocks: Vec<BlockSpec>,
    pub(crate) saved: Arc<Mutex<Option<ChainSaved>>>,
}

/// Shapes of one block for an input `[n, cin, h, w]`.
struct Geom {
    conv1: ConvGeom,
    conv2: ConvGeom,
    proj: Option<ConvGeom>,
    pad: Option<Dims>,
    /// The output planes `[n, cout, ho, wo]`.
    out: Planes,
}

impl BlockSpec {
    fn geom(&self, op: &str, x: &[usize]) -> Result<Geom> {
        let &[n, cin, h, w] = x else {
            bail!("{op}: expected an [N, C, H, W] input, got shape {x:?}")
        };
        let co = self.cout;
        let conv1 = ConvGeom::new(&[n, cin, h, w], &[co, cin, 3, 3], self.stride, 1)?;
        let conv2 = ConvGeom::new(&[n, co, conv1.ho, conv1.wo], &[co, co, 3, 3], 1, 1)?;
        let (mut proj, mut pad) = (None, None);
        match self.kind {
            Kind::Identity => {
                if cin != co || self.stride != 1 {
                    bail!("{op}: an identity shortcut needs stride 1 and {co} input channels, got {cin} with stride {}", self.stride)
                }
            }
            Kind::SubsamplePad => {
                let d = SubsamplePad { out_channels: co }.dims(x)?;
                if self.stride != 2 || (d.h2, d.w2) != (conv1.ho, conv1.wo) {
                    bail!(
                        "{op}: the option-A shortcut needs stride 2, got {}",
                        self.stride
                    )
                }
                pad = Some(d);
            }
            Kind::Projection => {
                proj = Some(ConvGeom::new(x, &[co, cin, 1, 1], self.stride, 0)?);
            }
        }
        let out = Planes {
            n,
            c: co,
            hw: conv1.ho * conv1.wo,
        };
        Ok(Geom {
            conv1,
            conv2,
            proj,
            pad,
            out,
        })
    }

    /// Lengths of the pieces of the packed weights: conv1, conv2, the shortcut's conv (0
    /// without a projection).
    fn weight_lens(&self, cin: usize) -> [usize; 3] {
        let co = self.cout;
        let proj = if self.kind == Kind::Projection {
            co * cin
        } else {
            0
        };
        [co * cin * 9, co * co * 9, proj]
    }

    /// Length of the packed BatchNorm parameters (γ and β of every BatchNorm).
    fn bn_len(&self) -> usize {
        self.cout * if self.kind == Kind::Projection { 6 } else { 4 }
    }
}

/// Splits `v` into consecutive pieces of the given lengths.
fn split<const K: usize>(v: &[f32], lens: [usize; K]) -> [&[f32]; K] {
    let pieces = split_all(v, lens.into_iter());
    std::array::from_fn(|i| pieces[i])
}

fn check_len(op: &str, what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        bail!("{op}: the packed {what} have {got} elements, expected {want}")
    }
    Ok(())
}

/// Adds `b` into `a` elementwise.
fn add_into(a: &mut [f32], b: &[f32]) {
    const BLOCK: usize = 1 << 15;
    a.par_chunks_mut(BLOCK)
        .zip(b.par_chunks(BLOCK))
        .for_each(|(a, b)| {
            for (a, &b) in a.iter_mut().zip(b) {
                *a += b;
            }
        });
}

/// `(dx, dW)` of a convolution, fused when it has a transposed form.
fn conv_grads(g: &ConvGeom, x: &[f32], dy: &[f32], w: &[f32]) -> (Vec<f32>, Vec<f32>) {
    conv_backward::backward(g, x, dy, w)
        .unwrap_or_else(|| (grad_input(g, dy, w), grad_weight(g, x, dy)))
}

impl BlockSpec {
    /// One block's forward on the input `x` (shape `g`'s): its output and what its
    /// backward needs.
    fn forward(&self, g: &Geom, x: &[f32], wp: &[f32], pp: &[f32]) -> (Vec<f32>, BlockSaved) {
        let co = self.cout;
        let [w1, w2, ws] = split(wp, self.weight_lens(g.conv1.cin));
        let bnp = |i: usize| &pp[i * co..(i + 1) * co];

        // each convolution hands its BatchNorm the moments of its output planes, computed
        // while they were in cache (the same bits as the BatchNorm's own statistics pass)
        let (y1, m1) = forward_stats(&g.conv1, x, w1);
        let s1 = train_stats_moments(g.out, &m1, bnp(0), bnp(1), self.eps);
        // conv2's input relu(bn1(y1)) made image by image where conv2 reads it, in the forward
        // and again in the backward, where both run per image; else kept for the backward
        let (a1, (y2, m2)) = if conv::images_apply(&g.conv2) && images::applies(&g.conv2) {
            let a1 = BnOutput::new(g.out, &y1, &s1, true);
            (Vec::new(), forward_stats_images(&g.conv2, &a1, w2))
        } else {
            let a1 = affine(g.out, &y1, &s1.scale, &s1.shift, true);
            let y2 = forward_stats(&g.conv2, &a1, w2);
            (a1, y2)
        };
        let mut bn = vec![
            s1,
            train_stats_moments(g.out, &m2, bnp(2), bnp(3), self.eps),
        ];
        let (ys, shortcut) = match (&g.pad, &g.proj) {
            (Some(d), _) => (Vec::new(), Some(subsample_pad(d, x))),
            (None, Some(gp)) => {
                let (ys, ms) = forward_stats(gp, x, ws);
                let (s, st) =
                    train_forward_moments(g.out, &ys, &ms, bnp(4), bnp(5), self.eps, false);
                bn.push(st);
                (ys, Some(s))
            }
            (None, None) => (Vec::new(), None),
        };
        let y = affine_add_relu(
            g.out,
            &y2,
            &bn[1].scale,
            &bn[1].shift,
            shortcut.as_deref().unwrap_or(x),
        );
        let saved = BlockSaved {
            y1,
            a1,
            y2,
            out: Vec::new(),
            ys,
            bn,
        };
        (y, saved)
    }

    /// One block's backward: `(dx, packed dW, packed dγ/dβ, sums)` from its input `x`,
    /// output `res` and the output's gradient `dres`. Where the block hands its input
    /// gradient to the layer in front image by image (`prev`; see [`images::backward_add`]),
    /// `dx` comes back as `prev` left it, with `prev`'s sums.
    #[allow(
        clippy::too_many_arguments,
        reason = "the block's saved state and its neighbours"
    )]
    fn backward(
        &self,
        g: &Geom,
        s: &BlockSaved,
        x: &[f32],
        wp: &[f32],
        res: &[f32],
        dres: OutGrad<'_>,
        prev: Option<&Handoff<'_>>,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>, Option<Sums>) {
        let [w1, w2, ws] = split(wp, self.weight_lens(g.conv1.cin));
        // the final ReLU, then the two branches of the sum
        // (summing bn2's gradient as the mask writes it, image by image)
        let bn2 = &s.bn[1];
        let (dz, sums) = match dres {
            OutGrad::Raw(dres) => {
                relu_mask_grad_sums(g.out, &s.y2, res, dres, masked(bn2, false), &bn2.mean)
            }
            OutGrad::Masked(dz, sums) => (dz, sums),
        };
        let bn1 = &s.bn[0];
        let c2 = BackwardCoef::new(g.out, bn2, sums);
        // bn2's input gradient, then bn1's sums: image by image inside conv2's backward
        // where it runs per image, else as whole-batch passes
        let (da1, dw2, sums1) = if images::applies(&g.conv2) {
            let dy2 = BnInputGrad::new(g.out, &s.y2, &dz, bn2, false, &c2);
            let h = Handoff {
                z: None,
                p: g.out,
                y: &s.y1,
                mask: masked(bn1, true),
                center: &bn1.mean,
            };
            if s.a1.is_empty() {
                let a1 = BnOutput::new(g.out, &s.y1, bn1, true);
                images::backward_sums(&g.conv2, &a1, w2, &dy2, &h)
            } else {
                let a1 = Stored::new(&s.a1, g.conv2.in_img());
                images::backward_sums(&g.conv2, &a1, w2, &dy2, &h)
            }
        } else {
            let dy2 =
                channel::grad_input(g.out, &s.y2, &dz, masked(bn2, false), &c2.grad_coef(bn2));
            // (made again if the forward did not keep it: Winograd switched on in between)
            let a1 = if s.a1.is_empty() {
                Cow::Owned(affine(g.out, &s.y1, &bn1.scale, &bn1.shift, true))
            } else {
                Cow::Borrowed(&s.a1[..])
            };
            let (da1, dw2) = conv_grads(&g.conv2, &a1, &dy2, w2);
            let sums1 = grad_sums(g.out, &s.y1, &da1, masked(bn1, true), &bn1.mean);
            (da1, dw2, sums1)
        };
        let c1 = BackwardCoef::new(g.out, bn1, sums1);
        // bn1's input gradient inside conv1's backward, with the identity shortcut's gradient
        // and the layer in front's mask and sums
        let identity = g.pad.is_none() && g.proj.is_none();
        let (mut dx, dw1, prev_sums) = if identity && images::applies(&g.conv1) {
            let dy1 = BnInputGrad::new(g.out, &s.y1, &da1, bn1, true, &c1);
            let x = Stored::new(x, g.conv1.in_img());
            images::backward_add(&g.conv1, &x, w1, &dy1, &dz, prev)
        } else {
            let dy1 =
                channel::grad_input(g.out, &s.y1, &da1, masked(bn1, true), &c1.grad_coef(bn1));
            let (mut dx, dw1) = conv_grads(&g.conv1, x, &dy1, w1);
            if identity {
                add_into(&mut dx, &dz);
            }
            (dx, dw1, None)
        };
        drop(da1);
        let mut dw = [dw1, dw2].concat();
        let mut dp = [c1.dgamma, c1.dbeta, c2.dgamma, c2.dbeta].concat();
        match (&g.pad, &g.proj) {
            (Some(d), _) => add_into(&mut dx, &subsample_pad_backward(d, &dz)),
            (None, Some(gp)) => {
                let (dys, dgs, dbs) = train_backward(g.out, &s.ys, &dz, &s.bn[2], false);
                let (dxs, dws) = conv_grads(gp, x, &dys, ws);
                add_into(&mut dx, &dxs);
                dw.extend_from_slice(&dws);
                dp.extend_from_slice(&dgs);
                dp.extend_from_slice(&dbs);
            }
            (None, None) => {}
        }
        (dx, dw, dp, prev_sums)
    }
}

/// The gradient reaching a block's output: as it came, or already through the block's final
/// ReLU with bn2's sums (by the next block's [`Handoff`]).
enum OutGrad<'a> {
    Raw(&'a [f32]),
    Masked(Vec<f32>, Sums),
}

impl BlockTrain {
    /// The stem's and every block's shapes for the chain's input shape `x`, checked one
    /// after the other.
    fn geoms(&self, op: &str, x: &[usize]) -> Result<(Option<ConvGeom>, Vec<Geom>)> {
        let mut dims = x.to_vec();
        let stem = match self.stem {
            Some(st) => {
                let &[n, cin, h, w] = x else {
                    bail!("{op}: expected an [N, C, H, W] input, got shape {x:?}")
                };
                dims = vec![n, st.cout, h, w];
                Some(ConvGeom::new(x, &[st.cout, cin, 3, 3], 1, 1)?)
            }
            None => None,
        };
        let mut gs = Vec::with_capacity(self.blocks.len());
        let alone = self.blocks.len() == 1 && self.stem.is_none();
        for (i, b) in self.blocks.iter().enumerate() {
            let g = b.geom(op, &dims).map_err(|e| {
                if alone {
                    e
                } else {
                    candle_core::Error::msg(format!("block {i} of the chain: {e}"))
                }
            })?;
            dims = vec![g.out.n, g.out.c, g.conv1.ho, g.conv1.wo];
            gs.push(g);
        }
        if gs.is_empty() {
            bail!("{op}: a chain of no blocks")
        }
        Ok((stem, gs))
    }

    /// The stem's `(conv weight, BatchNorm parameters)` lengths, `(0, 0)` without one.
    fn stem_lens(&self, g: Option<&ConvGeom>) -> (usize, usize) {
        g.map_or((0, 0), |g| (g.cout * g.cin * 9, 2 * g.cout))
    }

    /// Each block's `(packed conv weights, packed BatchNorm parameters)` lengths.
    fn lens(&self, gs: &[Geom]) -> Vec<(usize, usize)> {
        self.blocks
            .iter()
            .zip(gs)
            .map(|(b, g)| (b.weight_lens(g.conv1.cin).iter().sum(), b.bn_len()))
            .collect()
    }
}

/// Splits `v` into consecutive pieces of the given lengths.
fn split_all(mut v: &[f32], lens: impl Iterator<Item = usize>) -> Vec<&[f32]> {
    lens.map(|l| {
        let (a, b) = v.split_at(l);
        v = b;
        a
    })
    .collect()
}

custom_op!(BlockTrain: CustomOp3);

impl CpuOp<3> for BlockTrain {
    const NAME: &'static str = "resnet-basic-block-train";
    const OP: &'static str = "basic_block_train";

    fn forward(
        &self,
        [x, wp, pp]: [&[f32]; 3],
        [lx, _, _]: [&Layout; 3],
    ) -> Result<(Vec<f32>, Shape)> {
        const OP: &str = <BlockTrain as CpuOp<3>>::OP;
        let (sg, gs) = self.geoms(OP, lx.dims())?;
        let lens = self.lens(&gs);
        let (sw, sp) = self.stem_lens(sg.as_ref());
        let want_w = sw + lens.iter().map(|l| l.0).sum::<usize>();
        check_len(OP, "conv weights", wp.len(), want_w)?;
        let want_p = sp + lens.iter().map(|l| l.1).sum::<usize>();
        check_len(OP, "BatchNorm parameters", pp.len(), want_p)?;
        let ((swp, wp), (spp, pp)) = (wp.split_at(sw), pp.split_at(sp));
        let wps = split_all(wp, lens.iter().map(|l| l.0));
        let pps = split_all(pp, lens.iter().map(|l| l.1));
        let stem = match (self.stem, &sg) {
            (Some(st), Some(g)) => {
                // as the blocks' convolutions: the moments come with the output
                let (y, m) = forward_stats(g, x, swp);
                let (gamma, beta) = spp.split_at(g.cout);
                let (out, bn) = train_forward_moments(planes(g), &y, &m, gamma, beta, st.eps, true);
                Some(StemSaved { y, out, bn })
            }
            _ => None,
        };
        let x = stem.as_ref().map_or(x, |s| &s.out);
        let mut saved: Vec<BlockSaved> = Vec::with_capacity(gs.len());
        let mut y = Vec::new();
        for (i, (b, g)) in self.blocks.iter().zip(&gs).enumerate() {
            let (yi, si) = b.forward(g, if i == 0 { x } else { &y }, wps[i], pps[i]);
            match saved.last_mut() {
                // the previous block keeps its output (this block's input) for the backward
                Some(prev) => prev.out = std::mem::replace(&mut y, yi),
                None => y = yi,
            }
            saved.push(si);
        }
        let last = &gs[gs.len() - 1];
        let shape = (last.out.n, last.out.c, last.conv1.ho, last.conv1.wo).into();
        *self.saved.lock().unwrap_or_else(PoisonError::into_inner) = Some(ChainSaved {
            stem,
            blocks: saved,
        });
        Ok((y, shape))
    }

    fn backward(
        &self,
        [x, wp, pp]: [&Tensor; 3],
        res: &Tensor,
        dres: &Tensor,
    ) -> Result<[Option<Tensor>; 3]> {
        const OP: &str = "basic_block_train backward";
        let guard = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ChainSaved {
            stem,
            blocks: saved,
        }) = guard.as_ref()
        else {
            bail!("{OP}: nothing saved (the forward did not run on the CPU)")
        };
        let (sg, gs) = self.geoms(OP, x.dims())?;
        if saved.len() != gs.len() || stem.is_some() != sg.is_some() {
            bail!("{OP}: the forward saved another chain than this one")
        }
        let lens = self.lens(&gs);
        let (sw, _) = self.stem_lens(sg.as_ref());
        // a stem's input is usually the images, which need no gradient
        let want_dx = sg.is_none() || x.track_op();
        let grads = with_all(OP, [x, wp, res, dres], |[x_in, wp, res, dres]| {
            let (swp, wp) = wp.split_at(sw);
            let x = stem.as_ref().map_or(x_in, |s| &s.out);
            let wps = split_all(wp, lens.iter().map(|l| l.0));
            let n = gs.len();
            let (mut dws, mut dps) = (vec![Vec::new(); n], vec![Vec::new(); n]);
            let (mut d, mut sums) = (Vec::new(), None);
            for i in (0..n).rev() {
                let xi = if i == 0 { x } else { &saved[i - 1].out };
                let yi = if i == n - 1 { res } else { &saved[i].out };
                let di = match sums.take() {
                    _ if i == n - 1 => OutGrad::Raw(dres),
                    Some(s) => OutGrad::Masked(std::mem::take(&mut d), s),
                    None => OutGrad::Raw(&d),
                };
                // the layer in front: the previous block's final ReLU and bn2, or the stem's
                // BatchNorm + ReLU
                let prev = match (i, stem, &sg) {
                    (0, Some(s), Some(g)) => Some(Handoff {
                        z: None,
                        p: planes(g),
                        y: &s.y,
                        mask: masked(&s.bn, true),
                        center: &s.bn.mean,
                    }),
                    (0, ..) => None,
                    _ => Some(Handoff {
                        z: Some(xi),
                        p: gs[i - 1].out,
                        y: &saved[i - 1].y2,
                        mask: masked(&saved[i - 1].bn[1], false),
                        center: &saved[i - 1].bn[1].mean,
                    }),
                };
                let (dx, dw, dp, s) =
                    self.blocks[i].backward(&gs[i], &saved[i], xi, wps[i], yi, di, prev.as_ref());
                (d, dws[i], dps[i], sums) = (dx, dw, dp, s);
            }
            let (Some(s), Some(g)) = (stem, &sg) else {
                return (Some(d), dws.concat(), dps.concat());
            };
            let (dy, dgamma, dbeta) = match sums {
                Some(sums) => train_backward_sums(planes(g), &s.y, &d, &s.bn, true, sums),
                None => train_backward(planes(g), &s.y, &d, &s.bn, true),
            };
            drop(d);
            let (dx, dw) = if want_dx {
                let (dx, dw) = conv_grads(g, x_in, &dy, swp);
                (Some(dx), dw)
            } else {
                (None, grad_weight(g, x_in, &dy))
            };
            let dw = [dw, dws.concat()].concat();
            let dp = [dgamma, dbeta, dps.concat()].concat();
            (dx, dw, dp)
        })?;
        let (dx, dw, dp) = grads;
        let dev = x.device();
        Ok([
            dx.map(|dx| Tensor::from_vec(dx, x.shape(), dev))
                .transpose()?,
            Some(Tensor::from_vec(dw, wp.shape(), dev)?),
            Some(Tensor::from_vec(dp, pp.shape(), dev)?),
        ])
    }
}

/// The output planes of the convolution `g`.
fn planes(g: &ConvGeom) -> Planes {
    Planes {
        n: g.n,
        c: g.cout,
        hw: g.ho * g.wo,
    }
}
