//! Fused `relu(a + b)` and the option-A shortcut (`x[:, :, ::2, ::2]` + channel zero-padding)
//! as candle custom ops.

use candle_core::{bail, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::custom::{custom_op, with_all, CpuOp};
use super::storage::{multiversion, Uninit};

/// Elements per parallel task of the elementwise kernels.
const BLOCK: usize = 1 << 15;

multiversion! {
    fn add_relu_block(z: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32]) {
        for ((z, &a), &b) in z.iter_mut().zip(a).zip(b) {
            z.write((a + b).max(0.0));
        }
    }
}

multiversion! {
    /// `d = g` where `z > 0`, `+0.0` elsewhere: one block of [`relu_mask`].
    pub(crate) fn relu_mask_block(d: &mut [MaybeUninit<f32>], z: &[f32], g: &[f32]) {
        for ((d, &z), &g) in d.iter_mut().zip(z).zip(g) {
            d.write(if z > 0.0 { g } else { 0.0 });
        }
    }
}

multiversion! {
    /// [`relu_mask_block`] in place: `g` kept where `z > 0`, `+0.0` elsewhere.
    pub(crate) fn relu_mask_in_place(g: &mut [f32], z: &[f32]) {
        for (g, &z) in g.iter_mut().zip(z) {
            *g = if z > 0.0 { *g } else { 0.0 };
        }
    }
}

/// `relu(a + b)` elementwise (`a` and `b` of equal length).
pub(crate) fn add_relu(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut z = Uninit::new(a.len());
    z.slots()
        .par_chunks_mut(BLOCK)
        .zip(a.par_chunks(BLOCK).zip(b.par_chunks(BLOCK)))
        .for_each(|(z, (a, b))| add_relu_block(z, a, b));
    // SAFETY: every block was written.
    unsafe { z.assume_init() }
}

/// The gradient `g` where `z > 0`, zero elsewhere: the backward of a ReLU with output `z`.
pub(crate) fn relu_mask(z: &[f32], g: &[f32]) -> Vec<f32> {
    let mut d = Uninit::new(z.len());
    d.slots()
        .par_chunks_mut(BLOCK)
        .zip(z.par_chunks(BLOCK).zip(g.par_chunks(BLOCK)))
        .for_each(|(d, (z, g))| relu_mask_block(d, z, g));
    // SAFETY: every block was written.
    unsafe { d.assume_init() }
}

/// `relu(a + b)`, differentiable in both arguments.
pub(crate) struct AddRelu;

custom_op!(AddRelu: CustomOp2);

impl CpuOp<2> for AddRelu {
    const NAME: &'static str = "resnet-add-relu";
    const OP: &'static str = "add_relu";

    fn forward(&self, [a, b]: [&[f32]; 2], [la, lb]: [&Layout; 2]) -> Result<(Vec<f32>, Shape)> {
        if la.shape() != lb.shape() {
            bail!(
                "add_relu: shape mismatch {:?} vs {:?}",
                la.dims(),
                lb.dims()
            )
        }
        Ok((add_relu(a, b), la.shape().clone()))
    }

    fn backward(&self, _: [&Tensor; 2], z: &Tensor, dz: &Tensor) -> Result<[Option<Tensor>; 2]> {
        let g = with_all("add_relu backward", [z, dz], |[zs, gs]| relu_mask(zs, gs))?;
        let g = Tensor::from_vec(g, z.shape(), z.device())?;
        Ok([Some(g.clone()), Some(g)])
    }
}

/// Geometry of the option-A shortcut.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SubsamplePad {
    pub(crate) out_channels: usize,
}

pub(crate) struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    pub(crate) h2: usize,
    pub(crate) w2: usize,
    pad: usize,
    co: usize,
}

impl SubsamplePad {
    pub(crate) fn dims(&self, d: &[usize]) -> Result<Dims> {
        let &[n, c, h, w] = d else {
            bail!("subsample_pad: expected an [N, C, H, W] tensor, got shape {d:?}")
        };
        let co = self.out_channels;
        if co < c || !(co - c).is_multiple_of(2) {
            bail!("subsample_pad: cannot pad {c} channels to {co} symmetrically")
        }
        Ok(Dims {
            n,
            c,
            h,
            w,
            h2: h.div_ceil(2),
            w2: w.div_ceil(2),
            pad: (co - c) / 2,
            co,
        })
    }
}

impl Dims {
    /// Shape of the shortcut's output.
    pub(crate) fn out_shape(&self) -> (usize, usize, usize, usize) {
        (self.n, self.co, self.h2, self.w2)
    }
}

custom_op!(SubsamplePad: CustomOp1);

impl CpuOp<1> for SubsamplePad {
    const NAME: &'static str = "resnet-subsample-pad";
    const OP: &'static str = "subsample_pad";

    fn forward(&self, [x]: [&[f32]; 1], [l]: [&Layout; 1]) -> Result<(Vec<f32>, Shape)> {
        let d = self.dims(l.dims())?;
        Ok((subsample_pad(&d, x), d.out_shape().into()))
    }

    fn backward(
        &self,
        [x]: [&Tensor; 1],
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<[Option<Tensor>; 1]> {
        let d = self.dims(x.dims())?;
        let dx = with_all("subsample_pad backward", [dy], |[g]| {
            subsample_pad_backward(&d, g)
        })?;
        Ok([Some(Tensor::from_vec(dx, x.shape(), x.device())?)])
    }
}

/// Option-A shortcut forward on raw data: `[n, c, h, w]` -> `[n, co, h2, w2]`.
pub(crate) fn subsample_pad(d: &Dims, x: &[f32]) -> Vec<f32> {
    let (p2, img) = (d.h2 * d.w2, d.co * d.h2 * d.w2);
    let mut y = Uninit::new(d.n * img);
    if img > 0 {
        y.slots()
            .par_chunks_mut(img)
            .enumerate()
            .for_each(|(n, yi)| {
                for (co, plane) in yi.chunks_mut(p2).enumerate() {
                    if co < d.pad || co >= d.pad + d.c {
                        plane.fill(std::mem::MaybeUninit::new(0.0));
                        continue;
                    }
                    let src = &x[(n * d.c + co - d.pad) * d.h * d.w..][..d.h * d.w];
                    for (i, row) in plane.chunks_mut(d.w2).enumerate() {
                        let srow = &src[2 * i * d.w..][..d.w];
                        for (o, &v) in row.iter_mut().zip(srow.iter().step_by(2)) {
                            o.write(v);
                        }
                    }
                }
            });
    }
    // SAFETY: every plane was written.
    unsafe { y.assume_init() }
}

/// Option-A shortcut backward on raw data: the output gradient `g` `[n, co, h2, w2]` back to
/// the input's shape `[n, c, h, w]`.
pub(crate) fn subsample_pad_backward(d: &Dims, g: &[f32]) -> Vec<f32> {
    let (hw, img) = (d.h * d.w, d.c * d.h * d.w);
    let mut dx = vec![0f32; d.n * img];
    if img > 0 {
        dx.par_chunks_mut(img).enumerate().for_each(|(n, di)| {
            for (c, plane) in di.chunks_mut(hw).enumerate() {
                let src = &g[(n * d.co + c + d.pad) * d.h2 * d.w2..][..d.h2 * d.w2];
                for (i, srow) in src.chunks(d.w2).enumerate() {
                    let row = &mut plane[2 * i * d.w..][..d.w];
                    for (o, &v) in row.iter_mut().step_by(2).zip(srow) {
                        *o = v;
                    }
                }
            }
        });
    }
    dx
}
