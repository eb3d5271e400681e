//! Stride-1 "same" convolutions (odd `K`, padding `K / 2`) without a full im2col.
//!
//! im2col writes `K * K` shifted copies of every input plane. Here each image is copied only
//! `K` times, once per horizontal tap `kw`, into `z[(ci, kw)]`: the plane padded with `pad`
//! zero rows above and below and shifted left by `kw - pad` (zeros where it leaves the
//! plane). The column-matrix row `(ci, kh, kw)` is then the contiguous slice of `z[(ci, kw)]`
//! that starts at row `kh`, so for a fixed `kh` the rows `(ci, kw)` form a strided matrix
//! that the GEMM reads in place: the convolution becomes `K` GEMMs of depth `Cin * K` per
//! image, accumulated into the output, and the copy is a third of im2col's for 3x3 kernels.
//! The input gradient is the same kind of convolution (see [`super::conv_util::transposed`]); the
//! weight gradient reads the same `z` of `dy`.
//!
//! Used where an image has enough pixels for one GEMM per image to be efficient
//! ([`applies`]); smaller planes keep the chunked im2col path. Work is parallel over images;
//! weight-gradient partials are per image and summed in image order, so results do not
//! depend on the number of threads.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::channel::PlaneMoments;
use super::conv::{per_image, Epilogue};
use super::conv_direct::{self, Direct};
use super::conv_util::{sum_partials, transpose_into, transposed};
use super::conv_wgrad;
use super::gemm::{sgemm, MatMut, MatRef};
use super::im2col::ConvGeom;
use super::storage::{assume_init_mut, with_scratch, Uninit};

/// Output pixels per image from which one GEMM per image and tap row beats a chunked
/// im2col (ResNet-20's 32x32 and 16x16 stages use this path, its 8x8 stage does not).
const MIN_PIXELS: usize = 256;
/// Input channels below which the GEMM depth `Cin * K` is too shallow (the 3-channel stem).
const MIN_CHANNELS: usize = 8;

/// Input channels from which the fused backward also takes this path. Its weight gradient
/// runs three GEMMs of `Cin` rows per image (one per tap row) instead of one over the
/// im2col; with `x` handed over transposed (unit row stride, see
/// [`super::conv_util::transpose_into`]) those run at the GEMM's full speed from 16
/// channels on (stage 1 at 32x32: ~110 GFLOP/s per core against ~60 when the `gemm` crate
/// repacked the row-major `x` itself, which had made this path ~10% slower there).
const MIN_BACKWARD_CHANNELS: usize = 16;

/// `true` when the fused backward of `g` should take this path (see [`backward`]).
pub(crate) fn applies_backward(g: &ConvGeom) -> bool {
    applies(g) && g.cin >= MIN_BACKWARD_CHANNELS
}

/// `true` when `g` is a stride-1 "same" convolution with enough pixels and channels.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    g.stride == 1
        && g.k % 2 == 1
        && g.k > 1
        && g.pad == g.k / 2
        && g.pad < g.h.min(g.w)
        && g.p() >= MIN_PIXELS
        && g.cin >= MIN_CHANNELS
}

/// Rows of one `z` plane: the input's rows plus `pad` zero rows above and below.
fn z_rows(g: &ConvGeom) -> usize {
    g.h + g.k - 1
}

/// Elements of `z` for one image.
fn z_len(g: &ConvGeom) -> usize {
    g.cin * g.k * z_rows(g) * g.w
}

/// Writes `z` for the image `x` (`[cin, h, w]`), overwriting every element.
fn build_z(g: &ConvGeom, x: &[f32], z: &mut [f32]) {
    let (h, w, k, pad) = (g.h, g.w, g.k, g.pad);
    let (hw, plane_len) = (h * w, z_rows(g) * w);
    for ci in 0..g.cin {
        let src = &x[ci * hw..][..hw];
        for kw in 0..k {
            let plane = &mut z[(ci * k + kw) * plane_len..][..plane_len];
            let (top, rest) = plane.split_at_mut(pad * w);
            let (body, bottom) = rest.split_at_mut(hw);
            top.fill(0.0);
            bottom.fill(0.0);
            // body[r * w + c] = src[r * w + c + kw - pad] where that column exists: copy the
            // whole block shifted, then clear the columns that wrapped into the next row.
            if kw >= pad {
                let s = kw - pad;
                body[..hw - s].copy_from_slice(&src[s..]);
                body[hw - s..].fill(0.0);
                for c in w - s..w {
                    for v in body[c..].iter_mut().step_by(w) {
                        *v = 0.0;
                    }
                }
            } else {
                let s = pad - kw;
                body[s..].copy_from_slice(&src[..hw - s]);
                body[..s].fill(0.0);
                for c in 0..s {
                    for v in body[c..].iter_mut().step_by(w) {
                        *v = 0.0;
                    }
                }
            }
        }
    }
}

/// The weight `[cout, cin, k, k]` regrouped per tap row `kh` as `[kh][cout][cin * k]`, so
/// that the GEMM of row `kh` reads it as a `(cin * k) x cout` matrix with unit row stride.
fn weight_by_row(g: &ConvGeom, w: &[f32]) -> Vec<f32> {
    let (k, ck) = (g.k, g.cin * g.k);
    let mut out = vec![0f32; w.len()];
    for kh in 0..k {
        for co in 0..g.cout {
            for ci in 0..g.cin {
                for kw in 0..k {
                    out[(kh * g.cout + co) * ck + ci * k + kw] =
                        w[((co * g.cin + ci) * k + kh) * k + kw];
                }
            }
        }
    }
    out
}

/// `y[b] = Σ_kh z_kh(x[b]) · W_kh` for every image, each image then finished by `ep` right
/// after its GEMMs (with [`Epilogue::Moments`] the moments of every output plane come back,
/// `[n][cout]`; empty otherwise).
pub(crate) fn forward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    ep: Epilogue<'_>,
) -> (Vec<f32>, Vec<PlaneMoments>) {
    let wr = weight_by_row(g, w);
    per_image(g, x, ep, |x, y| {
        with_scratch(z_len(g), 0, |z, _| {
            build_z(g, x, z);
            gemm_rows(g, z, &wr, y);
        })
    })
}

/// `y^T [p x cout] = Σ_kh z_kh^T [p x cin*k] · W_kh^T [cin*k x cout]` for one image.
fn gemm_rows(g: &ConvGeom, z: &[f32], wr: &[f32], y: &mut [MaybeUninit<f32>]) {
    let (p, ck, ld) = (g.p(), g.cin * g.k, z_rows(g) * g.w);
    let lhs = |kh: usize| MatRef {
        data: &z[kh * g.w..],
        rows: p,
        cols: ck,
        rs: 1,
        cs: ld,
    };
    let rhs = |kh: usize| MatRef {
        data: &wr[kh * g.cout * ck..][..g.cout * ck],
        rows: ck,
        cols: g.cout,
        rs: 1,
        cs: ck,
    };
    sgemm(MatMut::uninit(y, p, g.cout, 1, p), false, lhs(0), rhs(0));
    // SAFETY: fully written by the GEMM above.
    let y = unsafe { assume_init_mut(y) };
    for kh in 1..g.k {
        sgemm(MatMut::new(y, p, g.cout, 1, p), true, lhs(kh), rhs(kh));
    }
}

/// How [`backward`] computes `dx`: the direct kernel, or the GEMMs over `z` with the
/// transposed weight regrouped by [`weight_by_row`].
enum DxKernel {
    Direct(Direct),
    Gemm(Vec<f32>),
}

/// `(dx, dW)` of the convolution `g` (which must satisfy [`applies`]): `dx` as the
/// convolution of `dy` with the transposed weight, and `dW` from the same `z` of `dy`.
/// Chosen by [`applies_backward`]; `None` when `g` has no transposed form.
pub(crate) fn backward(
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    w: &[f32],
) -> Option<(Vec<f32>, Vec<f32>)> {
    let (gt, wt) = transposed(g, w)?;
    // gt reads dy ([n, cout, h, w]) and writes dx ([n, cin, h, w]); its pixels are x's.
    // dx by the direct kernel where it applies, else by the GEMMs over z
    let dx_kernel = if conv_direct::applies(&gt) {
        DxKernel::Direct(Direct::new(&gt, &wt))
    } else {
        DxKernel::Gemm(weight_by_row(&gt, &wt))
    };
    let wgrad_kernel = conv_wgrad::applies(g);
    let (k, p, cin, cout) = (g.k, g.p(), g.cin, g.cout);
    let (ck, ld) = (cout * k, z_rows(&gt) * gt.w);
    let wlen = cin * cout * k * k;
    let mut dx = Uninit::new(g.n * g.in_img());
    let mut partial = Uninit::new(g.n * wlen);
    dx.slots()
        .par_chunks_mut(g.in_img())
        .zip(dy.par_chunks(g.out_img()))
        .zip(
            x.par_chunks(g.in_img())
                .zip(partial.slots().par_chunks_mut(wlen)),
        )
        .for_each(|((dxb, dyb), (xb, dwp))| {
            with_scratch(z_len(&gt), cin * p, |z, xt| {
                build_z(&gt, dyb, z);
                match &dx_kernel {
                    DxKernel::Direct(d) => d.image(dyb, dxb),
                    DxKernel::Gemm(wr) => gemm_rows(&gt, z, wr, dxb),
                }
                // partial[kh'][(co, kw')][ci] = Σ_p x[ci, p] · z_kh'(dy)[(co, kw'), p], with x
                // transposed once so that the three GEMMs read it with unit row stride
                transpose_into(xb, cin, p, xt);
                if wgrad_kernel {
                    conv_wgrad::image(g, xt, z, ld, dwp);
                    return;
                }
                let xm = MatRef {
                    data: xt,
                    rows: cin,
                    cols: p,
                    rs: 1,
                    cs: cin,
                };
                for (kh, dst) in dwp.chunks_mut(ck * cin).enumerate() {
                    let zt = MatRef {
                        data: &z[kh * gt.w..],
                        rows: p,
                        cols: ck,
                        rs: 1,
                        cs: ld,
                    };
                    // overwrites its whole chunk: the k chunks cover the partial
                    sgemm(MatMut::uninit(dst, cin, ck, 1, cin), false, xm, zt);
                }
            });
        });
    // SAFETY: every image's partial was written by its `k` GEMMs (`k` chunks of `ck * cin`
    // elements: `cin * cout * k * k = wlen`).
    let sum = sum_partials(&unsafe { partial.assume_init() }, wlen);
    // sum[((kh' * cout + co) * k + kw') * cin + ci] -> dW[co, ci, K-1-kh', K-1-kw']
    let mut dw = vec![0f32; wlen];
    for kh in 0..k {
        for co in 0..cout {
            for kw in 0..k {
                for ci in 0..cin {
                    dw[((co * cin + ci) * k + (k - 1 - kh)) * k + (k - 1 - kw)] =
                        sum[((kh * cout + co) * k + kw) * cin + ci];
                }
            }
        }
    }
    // SAFETY: every image of dx was written by its first GEMM.
    Some((unsafe { dx.assume_init() }, dw))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `z` against its definition, on a plane whose values encode their position.
    #[test]
    fn z_matches_definition() {
        for (k, h, w) in [(3, 4, 5), (5, 6, 7), (3, 1, 3)] {
            let g = ConvGeom::new(&[1, 2, h, w], &[1, 2, k, k], 1, k / 2).unwrap();
            let x: Vec<f32> = (0..2 * h * w).map(|i| i as f32 + 1.0).collect();
            let mut z = vec![f32::NAN; z_len(&g)];
            build_z(&g, &x, &mut z);
            let rows = z_rows(&g);
            for ci in 0..2 {
                for kw in 0..k {
                    for r in 0..rows {
                        for c in 0..w {
                            let (ih, iw) = (
                                r as isize - g.pad as isize,
                                (c + kw) as isize - g.pad as isize,
                            );
                            let want =
                                if ih >= 0 && (ih as usize) < h && iw >= 0 && (iw as usize) < w {
                                    x[ci * h * w + ih as usize * w + iw as usize]
                                } else {
                                    0.0
                                };
                            let got = z[((ci * k + kw) * rows + r) * w + c];
                            assert_eq!(got, want, "k{k} h{h} w{w} ci{ci} kw{kw} r{r} c{c}");
                        }
                    }
                }
            }
        }
    }
}
