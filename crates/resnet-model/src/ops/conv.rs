//! Fast CPU conv2d (forward, input gradient, weight gradient) as candle custom ops.
//!
//! All three use im2col / col2im on chunks of images plus a single-threaded GEMM per chunk;
//! rayon parallelises across chunks. Stride-1 "same" convolutions on large planes take the
//! cheaper copies of [`super::conv_same`] instead. The weight gradient sums one partial
//! product per chunk in chunk order, and chunks depend only on the shapes, so every result is
//! bit-identical whatever the number of threads.

use candle_core::{Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::channel::{image_moments, AffineEpilogue, PlaneMoments};
use super::conv_util::{
    as_slots, sum_partials, transpose, transpose_into, transposed, zeroed, Images, Stored,
};
use super::custom::{custom_op, with_all, CpuOp};
use super::gemm::{sgemm, MatMut, MatRef};
use super::im2col::{col2im, im2col, ConvGeom};
use super::storage::{assume_init_mut, with_scratch, Uninit};
use super::{conv_backward, conv_direct, conv_same, winograd};

/// Forward convolution, differentiable in both the input and the weight.
pub(crate) struct Conv2d {
    pub(crate) stride: usize,
    pub(crate) pad: usize,
}

custom_op!(Conv2d: CustomOp2);

impl CpuOp<2> for Conv2d {
    const NAME: &'static str = "resnet-conv2d";
    const OP: &'static str = "conv2d";

    fn forward(&self, [x, w]: [&[f32]; 2], [lx, lw]: [&Layout; 2]) -> Result<(Vec<f32>, Shape)> {
        let g = ConvGeom::new(lx.dims(), lw.dims(), self.stride, self.pad)?;
        Ok((forward(&g, x, w), (g.n, g.cout, g.ho, g.wo).into()))
    }

    fn backward(
        &self,
        [x, w]: [&Tensor; 2],
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<[Option<Tensor>; 2]> {
        let g = ConvGeom::new(x.dims(), w.dims(), self.stride, self.pad)?;
        let dy = dy.contiguous()?;
        if x.track_op() && w.track_op() {
            let fused = with_all("conv2d backward", [x, &dy, w], |[xs, gs, ws]| {
                conv_backward::backward(&g, xs, gs, ws)
            })?;
            if let Some((dx, dw)) = fused {
                return Ok([
                    Some(Tensor::from_vec(dx, x.shape(), x.device())?),
                    Some(Tensor::from_vec(dw, w.shape(), w.device())?),
                ]);
            }
        }
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(w, &Conv2dGradInput(g))?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&dy, &Conv2dGradWeight(g))?)
        } else {
            None
        };
        Ok([dx, dw])
    }
}

/// `y[b] = W · col(x[b])` for every image, chunk by chunk.
pub(crate) fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    forward_impl(g, x, w, Epilogue::None).0
}

/// What the forward does to each output image right after its GEMMs, while the image is
/// still in cache.
#[derive(Clone, Copy)]
pub(crate) enum Epilogue<'a> {
    /// Nothing.
    None,
    /// The moments of every output plane, for a training-mode BatchNorm ([`forward_stats`]).
    Moments,
    /// An eval-mode BatchNorm's affine map, then a residual add and/or a ReLU, in place
    /// ([`forward_affine`]).
    Affine(AffineEpilogue<'a>),
}

impl Epilogue<'_> {
    fn stats(&self) -> bool {
        matches!(self, Self::Moments)
    }

    /// Finishes output image `b` (`y`, `[cout, p]`); `mom` is its `cout` moments with
    /// [`Self::Moments`].
    pub(crate) fn finish(&self, g: &ConvGeom, y: &mut [f32], b: usize, mom: &mut [PlaneMoments]) {
        match self {
            Self::None => {}
            Self::Moments => image_moments(y, g.p(), mom),
            Self::Affine(a) => a.apply(y, b, g.p()),
        }
    }
}

/// Runs `kernel(x[b], y[b])` for every image in parallel, each output image then finished
/// by `ep` right after its kernel, while it is still in cache (with [`Epilogue::Moments`]
/// the moments of every output plane come back, `[n][cout]`; empty otherwise). `kernel`
/// must write its whole output image. The driver of the one-image-at-a-time forwards
/// ([`conv_same`], [`conv_direct`]).
pub(crate) fn per_image(
    g: &ConvGeom,
    x: &[f32],
    ep: Epilogue<'_>,
    kernel: impl Fn(&[f32], &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> (Vec<f32>, Vec<PlaneMoments>) {
    per_image_from(g, &Stored::new(x, g.in_img()), ep, kernel)
}

/// [`per_image`] with the input images taken from `x` (stored, or computed per image).
pub(crate) fn per_image_from(
    g: &ConvGeom,
    x: &impl Images,
    ep: Epilogue<'_>,
    kernel: impl Fn(&[f32], &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> (Vec<f32>, Vec<PlaneMoments>) {
    let stats = ep.stats();
    let mut out = Uninit::new(g.n * g.out_img());
    // with `stats` one entry per output plane, else one placeholder per image (unused)
    let per_image = if stats { g.cout } else { 1 };
    let mut moments = vec![PlaneMoments::default(); g.n * per_image];
    let x_len = if x.computed() { g.in_img() } else { 0 };
    out.slots()
        .par_chunks_mut(g.out_img())
        .zip(moments.par_chunks_mut(per_image))
        .enumerate()
        .for_each_init(
            || vec![0f32; x_len],
            |buf, (b, (y, mom))| {
                kernel(x.image(b, buf), y);
                // SAFETY: `kernel` writes the whole image (its contract).
                ep.finish(g, unsafe { assume_init_mut(y) }, b, mom);
            },
        );
    if !stats {
        moments = Vec::new();
    }
    // SAFETY: every image was written by `kernel`.
    (unsafe { out.assume_init() }, moments)
}

/// Whether [`forward_stats_images`] takes `g`.
pub(crate) fn images_apply(g: &ConvGeom) -> bool {
    !winograd::applies(g) && conv_direct::applies(g)
}

/// [`forward_stats`] of the input images `x`, which may be computed per image (a
/// BatchNorm's output, say: it then never goes through memory as a whole batch); `g` must
/// satisfy [`images_apply`]. The same bits as [`forward_stats`] on the same input.
pub(crate) fn forward_stats_images(
    g: &ConvGeom,
    x: &impl Images,
    w: &[f32],
) -> (Vec<f32>, Vec<PlaneMoments>) {
    assert!(
        images_apply(g),
        "conv::forward_stats_images: no per-image kernel takes {g:?}"
    );
    let d = conv_direct::Direct::new(g, w);
    per_image_from(g, x, Epilogue::Moments, |x, y| d.image(x, y))
}

/// [`forward`], then `a` applied in place to each output image right after its GEMMs: an
/// eval-mode BatchNorm (+ ReLU, or + residual + ReLU) without another pass over the output,
/// with the same bits as the separate passes.
pub(crate) fn forward_affine(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    a: AffineEpilogue<'_>,
) -> Vec<f32> {
    forward_impl(g, x, w, Epilogue::Affine(a)).0
}

/// [`forward`], plus the moments of every output plane (`[n][cout]`, see
/// [`PlaneMoments`]) for the BatchNorm that follows, computed right after each image's GEMM
/// while its output is still in cache: the same bits as `channel::mean_var` on the output
/// gives, without another pass over it.
pub(crate) fn forward_stats(g: &ConvGeom, x: &[f32], w: &[f32]) -> (Vec<f32>, Vec<PlaneMoments>) {
    forward_impl(g, x, w, Epilogue::Moments)
}

fn forward_impl(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    ep: Epilogue<'_>,
) -> (Vec<f32>, Vec<PlaneMoments>) {
    let stats = ep.stats();
    if winograd::applies(g) {
        let mut y = winograd::forward(g, x, w);
        let m = match ep {
            Epilogue::None => Vec::new(),
            Epilogue::Moments => all_moments(g, &y),
            Epilogue::Affine(a) => {
                if g.out_img() > 0 {
                    y.par_chunks_mut(g.out_img())
                        .enumerate()
                        .for_each(|(b, yb)| a.apply(yb, b, g.p()));
                }
                Vec::new()
            }
        };
        return (y, m);
    }
    if conv_direct::applies(g) {
        return conv_direct::forward(g, x, w, ep);
    }
    if conv_same::applies(g) {
        return conv_same::forward(g, x, w, ep);
    }
    let (p, ckk, nb) = (g.p(), g.ckk(), g.chunk());
    let mut out = Uninit::new(g.n * g.out_img());
    // with `stats` one entry per output plane, else one placeholder per chunk (unused)
    let mom_per_chunk = if stats { nb * g.cout } else { 1 };
    let mom_len = if stats {
        g.n * g.cout
    } else {
        g.n.div_ceil(nb)
    };
    let mut moments = vec![PlaneMoments::default(); mom_len];
    let wt = MatRef {
        data: w,
        rows: ckk,
        cols: g.cout,
        rs: 1,
        cs: ckk,
    }; // W^T [ckk x cout]
    out.slots()
        .par_chunks_mut(nb * g.out_img())
        .zip(x.par_chunks(nb * g.in_img()))
        .zip(moments.par_chunks_mut(mom_per_chunk))
        .enumerate()
        .for_each(|(chunk, ((y, x), mom))| {
            let first = chunk * nb; // the chunk's first image
            let nb = y.len() / g.out_img();
            let gemm_into = |col: &[f32], ld: usize, y: &mut [_]| {
                for (b, yb) in y.chunks_mut(g.out_img()).enumerate() {
                    // y_b^T [p x cout] = col_b^T [p x ckk] · W^T [ckk x cout]
                    let lhs = MatRef {
                        data: &col[b * p..],
                        rows: p,
                        cols: ckk,
                        rs: 1,
                        cs: ld,
                    };
                    sgemm(MatMut::uninit(yb, p, g.cout, 1, p), false, lhs, wt);
                }
            };
            if g.is_pointwise() {
                for (b, yb) in y.chunks_mut(g.out_img()).enumerate() {
                    gemm_into(&x[b * g.in_img()..][..g.in_img()], p, yb);
                }
            } else if nb == 1 {
                let ld = g.col_ld(1);
                with_scratch(ckk * ld, 0, |col, _| {
                    // SAFETY: a plain f32 slice viewed as (initialised) MaybeUninit slots.
                    im2col(g, x, 1, unsafe { as_slots(col) });
                    gemm_into(col, ld, y);
                });
            } else {
                // One GEMM over the whole chunk (m = nb * p) into [cout][nb * p] (rows `ld`
                // apart), then scatter each image's rows into NCHW.
                let (m, ld) = (nb * p, g.col_ld(nb));
                with_scratch(ckk * ld, g.cout * ld, |col, tmp| {
                    // SAFETY: a plain f32 slice viewed as (initialised) MaybeUninit slots.
                    im2col(g, x, nb, unsafe { as_slots(col) });
                    let lhs = MatRef {
                        data: col,
                        rows: m,
                        cols: ckk,
                        rs: 1,
                        cs: ld,
                    };
                    sgemm(MatMut::new(tmp, m, g.cout, 1, ld), false, lhs, wt);
                    for (b, yb) in y.chunks_mut(g.out_img()).enumerate() {
                        for (co, row) in yb.chunks_mut(p).enumerate() {
                            for (d, &v) in row.iter_mut().zip(&tmp[co * ld + b * p..][..p]) {
                                d.write(v);
                            }
                        }
                    }
                });
            }
            if !matches!(ep, Epilogue::None) {
                // SAFETY: the whole chunk was written above.
                let y = unsafe { assume_init_mut(y) };
                let per_image = if stats { g.cout } else { 0 };
                for (b, yb) in y.chunks_mut(g.out_img()).enumerate() {
                    let mb = &mut mom[b * per_image..][..per_image];
                    ep.finish(g, yb, first + b, mb);
                }
            }
        });
    if !stats {
        moments = Vec::new();
    }
    // SAFETY: every output image was written by one GEMM above.
    (unsafe { out.assume_init() }, moments)
}

/// The moments of every plane of the convolution output `y` (a separate pass).
fn all_moments(g: &ConvGeom, y: &[f32]) -> Vec<PlaneMoments> {
    let mut m = vec![PlaneMoments::default(); g.n * g.cout];
    if g.out_img() > 0 {
        m.par_chunks_mut(g.cout)
            .zip(y.par_chunks(g.out_img()))
            .for_each(|(mb, yb)| image_moments(yb, g.p(), mb));
    }
    m
}

/// Gradient w.r.t. the input: `args = (dy, w)`, result shaped like `x`.
struct Conv2dGradInput(ConvGeom);

custom_op!(Conv2dGradInput: CustomOp2);

impl CpuOp<2> for Conv2dGradInput {
    const NAME: &'static str = "resnet-conv2d-grad-input";
    const OP: &'static str = "conv2d backward";

    fn forward(&self, [dy, w]: [&[f32]; 2], _: [&Layout; 2]) -> Result<(Vec<f32>, Shape)> {
        let g = self.0;
        Ok((grad_input(&g, dy, w), (g.n, g.cin, g.h, g.w).into()))
    }
}

/// `dx[b] = col2im(W^T · dy[b])`, chunk by chunk.
pub(crate) fn grad_input(g: &ConvGeom, dy: &[f32], w: &[f32]) -> Vec<f32> {
    if let Some((gt, wt)) = transposed(g, w) {
        return forward(&gt, dy, &wt);
    }
    let (p, ckk, nb) = (g.p(), g.ckk(), g.chunk());
    let mut dx = Uninit::new(g.n * g.in_img());
    // W [cout x ckk] stored transposed, so that the GEMM reads it without repacking
    let w_t = transpose(w, g.cout, ckk);
    let wm = MatRef {
        data: &w_t,
        rows: g.cout,
        cols: ckk,
        rs: 1,
        cs: g.cout,
    };
    dx.slots()
        .par_chunks_mut(nb * g.in_img())
        .zip(dy.par_chunks(nb * g.out_img()))
        .for_each(|(dx, dy)| {
            let nb = dx.len() / g.in_img();
            if g.is_pointwise() {
                for (b, dxb) in dx.chunks_mut(g.in_img()).enumerate() {
                    let lhs = MatRef {
                        data: &dy[b * g.out_img()..],
                        rows: p,
                        cols: g.cout,
                        rs: 1,
                        cs: p,
                    };
                    // dx_b^T [p x cin] = dy_b^T [p x cout] · W [cout x cin]
                    sgemm(MatMut::uninit(dxb, p, ckk, 1, p), false, lhs, wm);
                }
                return;
            }
            for v in dx.iter_mut() {
                v.write(0.0);
            }
            // SAFETY: just zero-filled.
            let dx = unsafe { assume_init_mut(dx) };
            let ld = g.col_ld(nb);
            with_scratch(ckk * ld, 0, |dcol, _| {
                for b in 0..nb {
                    let lhs = MatRef {
                        data: &dy[b * g.out_img()..],
                        rows: p,
                        cols: g.cout,
                        rs: 1,
                        cs: p,
                    };
                    // dcol_b^T [p x ckk] = dy_b^T [p x cout] · W [cout x ckk]
                    sgemm(
                        MatMut::new(&mut dcol[b * p..], p, ckk, 1, ld),
                        false,
                        lhs,
                        wm,
                    );
                }
                col2im(g, dcol, nb, dx);
            });
        });
    // SAFETY: every chunk was zero-filled then accumulated, or written by a GEMM.
    unsafe { dx.assume_init() }
}

/// Gradient w.r.t. the weight: `args = (x, dy)`, result shaped like `w`.
struct Conv2dGradWeight(ConvGeom);

custom_op!(Conv2dGradWeight: CustomOp2);

impl CpuOp<2> for Conv2dGradWeight {
    const NAME: &'static str = "resnet-conv2d-grad-weight";
    const OP: &'static str = "conv2d backward";

    fn forward(&self, [x, dy]: [&[f32]; 2], _: [&Layout; 2]) -> Result<(Vec<f32>, Shape)> {
        let g = self.0;
        Ok((grad_weight(&g, x, dy), (g.cout, g.cin, g.k, g.k).into()))
    }
}

/// `dW = Σ_chunks dy_chunk · col(x_chunk)^T`, summed in chunk order.
pub(crate) fn grad_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (p, ckk, nb) = (g.p(), g.ckk(), g.chunk());
    let wlen = g.cout * ckk;
    let n_chunks = g.n.div_ceil(nb);
    // Partials are dW^T [ckk][cout]: the GEMM then has the small dy as its packed operand
    // (m = cout) and reads the large column matrix in place.
    let mut partial = Uninit::new(n_chunks * wlen);
    partial
        .slots()
        .par_chunks_mut(wlen)
        .zip(x.par_chunks(nb * g.in_img()))
        .zip(dy.par_chunks(nb * g.out_img()))
        .for_each(|((dw, x), dy)| {
            let dw = zeroed(dw);
            let nb = x.len() / g.in_img();
            if g.is_pointwise() {
                // col(x_b) is x_b itself: accumulate one GEMM per image, in image order.
                with_scratch(g.cout * p, 0, |dyt, _| {
                    for b in 0..nb {
                        // dW_b [cout x cin] = dy_b [cout x p] · x_b^T [p x cin], dy_b read
                        // from its transpose (unit row stride: the GEMM does not repack it)
                        transpose_into(&dy[b * g.out_img()..], g.cout, p, dyt);
                        let lhs = MatRef {
                            data: dyt,
                            rows: g.cout,
                            cols: p,
                            rs: 1,
                            cs: g.cout,
                        };
                        let rhs = MatRef {
                            data: &x[b * g.in_img()..],
                            rows: p,
                            cols: ckk,
                            rs: 1,
                            cs: p,
                        };
                        sgemm(MatMut::new(dw, g.cout, ckk, 1, g.cout), b > 0, lhs, rhs);
                    }
                });
                return;
            }
            let (m, ld) = (nb * p, g.col_ld(nb));
            with_scratch(ckk * ld, g.cout * m, |col, dyt| {
                // SAFETY: plain f32 storage viewed as slots, only written with values.
                im2col(g, x, nb, unsafe { as_slots(col) });
                // dy^T [nb*p x cout]: [nb, cout, p] -> [nb, p, cout], so that the GEMM reads
                // the chunk's dy with unit row stride instead of repacking it
                for b in 0..nb {
                    transpose_into(
                        &dy[b * g.out_img()..],
                        g.cout,
                        p,
                        &mut dyt[b * p * g.cout..],
                    );
                }
                // dW [cout x ckk] = dy_chunk [cout x nb*p] · col^T [nb*p x ckk]
                let lhs = MatRef {
                    data: dyt,
                    rows: g.cout,
                    cols: m,
                    rs: 1,
                    cs: g.cout,
                };
                let rhs = MatRef {
                    data: col,
                    rows: m,
                    cols: ckk,
                    rs: 1,
                    cs: ld,
                };
                sgemm(MatMut::new(dw, g.cout, ckk, 1, g.cout), false, lhs, rhs);
            });
        });
    // SAFETY: every chunk's partial was zero-filled by its task (`zeroed`).
    let partial = unsafe { partial.assume_init() };
    transpose(&sum_partials(&partial, wlen), ckk, g.cout)
}
