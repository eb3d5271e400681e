//! Fast CPU conv2d (forward, input gradient, weight gradient) as candle custom ops.
//!
//! All three use im2col / col2im on chunks of images plus a single-threaded GEMM per chunk;
//! rayon parallelises across chunks. The weight gradient sums one partial product per chunk
//! in chunk order, and chunks depend only on the shapes, so every result is bit-identical
//! whatever the number of threads.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{sgemm, MatMut, MatRef};
use super::im2col::{col2im, im2col, ConvGeom};
use super::storage::{assume_init_mut, output, slice, with_scratch, Uninit};

/// Forward convolution, differentiable in both the input and the weight.
pub(crate) struct Conv2d {
    pub(crate) stride: usize,
    pub(crate) pad: usize,
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "resnet-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeom::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let x = slice("conv2d", s1, l1)?;
        let w = slice("conv2d", s2, l2)?;
        Ok(output(forward(&g, x, w), (g.n, g.cout, g.ho, g.wo)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = ConvGeom::new(x.dims(), w.dims(), self.stride, self.pad)?;
        let dy = dy.contiguous()?;
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
        Ok((dx, dw))
    }
}

/// `y[b] = W · col(x[b])` for every image, chunk by chunk.
pub(crate) fn forward(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (p, ckk, nb) = (g.p(), g.ckk(), g.chunk());
    let mut out = Uninit::new(g.n * g.out_img());
    let wt = MatRef { data: w, rows: ckk, cols: g.cout, rs: 1, cs: ckk }; // W^T [ckk x cout]
    out.slots()
        .par_chunks_mut(nb * g.out_img())
        .zip(x.par_chunks(nb * g.in_img()))
        .for_each(|(y, x)| {
            let nb = y.len() / g.out_img();
            let gemm_into = |col: &[f32], ld: usize, y: &mut [_]| {
                for (b, yb) in y.chunks_mut(g.out_img()).enumerate() {
                    // y_b^T [p x cout] = col_b^T [p x ckk] · W^T [ckk x cout]
                    let lhs = MatRef { data: &col[b * p..], rows: p, cols: ckk, rs: 1, cs: ld };
                    sgemm(MatMut::uninit(yb, p, g.cout, 1, p), false, lhs, wt);
                }
            };
            if g.is_pointwise() {
                for (b, yb) in y.chunks_mut(g.out_img()).enumerate() {
                    gemm_into(&x[b * g.in_img()..][..g.in_img()], p, yb);
                }
            } else {
                with_scratch(ckk * nb * p, 0, |col, _| {
                    // SAFETY: a plain f32 slice viewed as (initialised) MaybeUninit slots.
                    let slots = unsafe { as_slots(col) };
                    im2col(g, x, nb, slots);
                    gemm_into(col, nb * p, y);
                });
            }
        });
    // SAFETY: every output image was written by one GEMM above.
    unsafe { out.assume_init() }
}

/// Views initialised f32 storage as `MaybeUninit` slots for writers that take slots.
///
/// # Safety
/// The caller must only write initialised values through the returned slice.
unsafe fn as_slots(s: &mut [f32]) -> &mut [std::mem::MaybeUninit<f32>] {
    // SAFETY: identical layout; writers only store initialised values (caller's promise).
    unsafe { &mut *(s as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) }
}

/// Gradient w.r.t. the input: `args = (dy, w)`, result shaped like `x`.
struct Conv2dGradInput(ConvGeom);

impl CustomOp2 for Conv2dGradInput {
    fn name(&self) -> &'static str {
        "resnet-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let dy = slice("conv2d backward", s1, l1)?;
        let w = slice("conv2d backward", s2, l2)?;
        Ok(output(grad_input(&g, dy, w), (g.n, g.cin, g.h, g.w)))
    }
}

/// `dx[b] = col2im(W^T · dy[b])`, chunk by chunk.
pub(crate) fn grad_input(g: &ConvGeom, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let (p, ckk, nb) = (g.p(), g.ckk(), g.chunk());
    let mut dx = Uninit::new(g.n * g.in_img());
    let wm = MatRef { data: w, rows: g.cout, cols: ckk, rs: ckk, cs: 1 }; // W [cout x ckk]
    dx.slots()
        .par_chunks_mut(nb * g.in_img())
        .zip(dy.par_chunks(nb * g.out_img()))
        .for_each(|(dx, dy)| {
            let nb = dx.len() / g.in_img();
            if g.is_pointwise() {
                for (b, dxb) in dx.chunks_mut(g.in_img()).enumerate() {
                    let lhs = MatRef { data: &dy[b * g.out_img()..], rows: p, cols: g.cout, rs: 1, cs: p };
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
            with_scratch(ckk * nb * p, 0, |dcol, _| {
                let ld = nb * p;
                for b in 0..nb {
                    let lhs = MatRef { data: &dy[b * g.out_img()..], rows: p, cols: g.cout, rs: 1, cs: p };
                    // dcol_b^T [p x ckk] = dy_b^T [p x cout] · W [cout x ckk]
                    sgemm(MatMut::new(&mut dcol[b * p..], p, ckk, 1, ld), false, lhs, wm);
                }
                col2im(g, dcol, nb, dx);
            });
        });
    // SAFETY: every chunk was zero-filled then accumulated, or written by a GEMM.
    unsafe { dx.assume_init() }
}

/// Gradient w.r.t. the weight: `args = (x, dy)`, result shaped like `w`.
struct Conv2dGradWeight(ConvGeom);

impl CustomOp2 for Conv2dGradWeight {
    fn name(&self) -> &'static str {
        "resnet-conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = slice("conv2d backward", s1, l1)?;
        let dy = slice("conv2d backward", s2, l2)?;
        Ok(output(grad_weight(&g, x, dy), (g.cout, g.cin, g.k, g.k)))
    }
}

/// `dW = Σ_chunks dy_chunk · col(x_chunk)^T`, summed in chunk order.
pub(crate) fn grad_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (p, ckk, nb) = (g.p(), g.ckk(), g.chunk());
    let wlen = g.cout * ckk;
    let n_chunks = g.n.div_ceil(nb);
    let mut partial = vec![0f32; n_chunks * wlen];
    partial
        .par_chunks_mut(wlen)
        .zip(x.par_chunks(nb * g.in_img()))
        .zip(dy.par_chunks(nb * g.out_img()))
        .for_each(|((dw, x), dy)| {
            let nb = x.len() / g.in_img();
            if g.is_pointwise() {
                // col(x_b) is x_b itself: accumulate one GEMM per image, in image order.
                for b in 0..nb {
                    let lhs = MatRef { data: &x[b * g.in_img()..], rows: ckk, cols: p, rs: p, cs: 1 };
                    let rhs = MatRef { data: &dy[b * g.out_img()..], rows: p, cols: g.cout, rs: 1, cs: p };
                    sgemm(MatMut::new(dw, ckk, g.cout, 1, ckk), b > 0, lhs, rhs);
                }
                return;
            }
            let ld = nb * p;
            let dy_len = if nb == 1 { 0 } else { nb * g.out_img() };
            with_scratch(ckk * ld, dy_len, |col, dyt| {
                // SAFETY: plain f32 storage viewed as slots, only written with values.
                im2col(g, x, nb, unsafe { as_slots(col) });
                let dyc: &[f32] = if nb == 1 {
                    dy
                } else {
                    // [nb, cout, p] -> [cout, nb*p]
                    for b in 0..nb {
                        for co in 0..g.cout {
                            dyt[co * ld + b * p..][..p]
                                .copy_from_slice(&dy[(b * g.cout + co) * p..][..p]);
                        }
                    }
                    dyt
                };
                // dW^T [ckk x cout] = col [ckk x nb*p] · dy_chunk^T [nb*p x cout]
                let lhs = MatRef { data: col, rows: ckk, cols: ld, rs: ld, cs: 1 };
                let rhs = MatRef { data: dyc, rows: ld, cols: g.cout, rs: 1, cs: ld };
                sgemm(MatMut::new(dw, ckk, g.cout, 1, ckk), false, lhs, rhs);
            });
        });
    let mut dw = partial[..wlen].to_vec();
    for part in partial[wlen..].chunks(wlen) {
        for (a, &b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    dw
}
