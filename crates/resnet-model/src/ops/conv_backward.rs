//! Fused backward of a stride-1 convolution whose input gradient is a transposed
//! convolution (see [`super::conv_util::transposed`]): one im2col of `dy` per chunk feeds both
//! GEMMs, the input gradient `dx = conv(dy, W')` and the weight gradient
//! `dW'[ci, (co, kh', kw')] = Σ_pixels x[ci] · col(dy)[(co, kh', kw')]`, where `W'` is the
//! weight transposed over channels and flipped, so `dW[co, ci, kh, kw] = dW'[ci, co, K-1-kh,
//! K-1-kw]`. This saves the second im2col (of `x`) that a separate weight gradient needs.
//! Weight-gradient partials are summed in chunk order, independent of the thread count.

use rayon::prelude::*;

use super::conv_direct::{self, Direct};
use super::conv_util::{as_slots, sum_partials, transpose_into, transposed, zeroed};
use super::gemm::{sgemm, MatMut, MatRef};
use super::im2col::{im2col, ConvGeom};
use super::storage::{with_scratch, Uninit};

pub(crate) use super::conv_winograd_wgrad::backward_images;

/// Whether [`backward`] runs `g` image by image, through [`backward_images`] (which then
/// takes it).
pub(crate) fn images_apply(g: &ConvGeom) -> bool {
    !super::winograd::applies(g) && super::conv_winograd_wgrad::applies(g)
}

/// `(dx, dW)` for the convolution `g`, or `None` when `g` has no transposed form.
pub(crate) fn backward(
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    w: &[f32],
) -> Option<(Vec<f32>, Vec<f32>)> {
    if super::winograd::applies(g) {
        return Some(super::winograd::backward(g, x, dy, w));
    }
    if super::conv_winograd_wgrad::applies(g) {
        return Some(super::conv_winograd_wgrad::backward(g, x, dy, w));
    }
    if super::conv_same::applies_backward(g) {
        return super::conv_same::backward(g, x, dy, w);
    }
    let (gt, wt) = transposed(g, w)?;
    // gt reads dy ([n, cout, ho, wo]) and writes dx ([n, cin, h, w]); its pixels are x's.
    let (p, ckk, nb) = (gt.p(), gt.ckk(), gt.chunk());
    let (cin, k) = (g.cin, g.k);
    let wlen = cin * ckk;
    let n_chunks = g.n.div_ceil(nb);
    let mut dx = Uninit::new(g.n * g.in_img());
    let mut partial = Uninit::new(n_chunks * wlen);
    // dx by the direct kernel where it applies, else by a GEMM over the im2col of dy
    let direct = conv_direct::applies(&gt).then(|| Direct::new(&gt, &wt));
    // W'^T [ckk x cin]
    let wtm = MatRef {
        data: &wt,
        rows: ckk,
        cols: cin,
        rs: 1,
        cs: ckk,
    };
    dx.slots()
        .par_chunks_mut(nb * g.in_img())
        .zip(dy.par_chunks(nb * g.out_img()))
        .zip(
            x.par_chunks(nb * g.in_img())
                .zip(partial.slots().par_chunks_mut(wlen)),
        )
        .for_each(|((dxc, dyc), (xc, dwp))| {
            let dwp = zeroed(dwp);
            let nb = dxc.len() / g.in_img();
            let (m, ld) = (nb * p, gt.col_ld(nb));
            // x^T [m x cin] for the weight gradient, and dx^T [m x cin] when nb > 1
            let tmp_len = if nb == 1 { cin * m } else { cin * (ld + m) };
            with_scratch(ckk * ld, tmp_len, |col, tmp| {
                // SAFETY: plain f32 storage viewed as slots, only written with values.
                im2col(&gt, dyc, nb, unsafe { as_slots(col) });
                let lhs = MatRef {
                    data: col,
                    rows: m,
                    cols: ckk,
                    rs: 1,
                    cs: ld,
                };
                let xt = if let Some(d) = &direct {
                    // dx image by image by the direct kernel; x^T for the weight gradient
                    let xt = &mut tmp[..cin * m];
                    for (b, ((dxb, dyb), xb)) in dxc
                        .chunks_mut(g.in_img())
                        .zip(dyc.chunks(g.out_img()))
                        .zip(xc.chunks(g.in_img()))
                        .enumerate()
                    {
                        d.image(dyb, dxb);
                        transpose_into(xb, cin, p, &mut xt[b * p * cin..]);
                    }
                    &*xt
                } else if nb == 1 {
                    // dx^T [p x cin] = col^T [p x ckk] · W'^T [ckk x cin]
                    sgemm(MatMut::uninit(dxc, p, cin, 1, p), false, lhs, wtm);
                    transpose_into(xc, cin, p, tmp);
                    &*tmp
                } else {
                    let (dxt, xt) = tmp.split_at_mut(cin * ld);
                    sgemm(MatMut::new(dxt, m, cin, 1, ld), false, lhs, wtm);
                    for (b, (dxb, xb)) in dxc
                        .chunks_mut(g.in_img())
                        .zip(xc.chunks(g.in_img()))
                        .enumerate()
                    {
                        for ci in 0..cin {
                            let src = &dxt[ci * ld + b * p..][..p];
                            for (d, &v) in dxb[ci * p..(ci + 1) * p].iter_mut().zip(src) {
                                d.write(v);
                            }
                        }
                        transpose_into(xb, cin, p, &mut xt[b * p * cin..]);
                    }
                    &*xt
                };
                // dW'^T-layout partial [ckk][cin]: dst (cin x ckk) = x [cin x m] · col^T [m x
                // ckk], x read from its transpose (unit row stride: the GEMM does not repack it)
                let xm = MatRef {
                    data: xt,
                    rows: cin,
                    cols: m,
                    rs: 1,
                    cs: cin,
                };
                let colt = MatRef {
                    data: col,
                    rows: m,
                    cols: ckk,
                    rs: 1,
                    cs: ld,
                };
                sgemm(MatMut::new(dwp, cin, ckk, 1, cin), false, xm, colt);
            });
        });
    // SAFETY: every chunk's partial was zero-filled by its task (`zeroed`).
    let first = sum_partials(&unsafe { partial.assume_init() }, wlen);
    // first[((co*K + kh')*K + kw')*cin + ci] -> dW[co, ci, K-1-kh', K-1-kw']
    let kk = k * k;
    let mut dw = vec![0f32; g.cout * cin * kk];
    for co in 0..g.cout {
        for t in 0..kk {
            for ci in 0..cin {
                dw[(co * cin + ci) * kk + (kk - 1 - t)] = first[(co * kk + t) * cin + ci];
            }
        }
    }
    // SAFETY: every chunk of dx was written by a GEMM or the scatter above.
    Some((unsafe { dx.assume_init() }, dw))
}
