//! Convolution geometry and the im2col / col2im transforms on NCHW data.
//!
//! For a chunk of `nb` images, the column matrix has one row per `(ci, kh, kw)` (in that
//! order, matching the `[Cout, Cin, K, K]` weight layout) and one column per
//! `(b, oh, ow)`: `col[r * nb*P + b*P + oh*Wo + ow]` with `P = Ho * Wo`.

use std::mem::MaybeUninit;

use candle_core::{bail, Result};

use super::storage::multiversion;

/// Shapes of one convolution: input `[n, cin, h, w]`, weight `[cout, cin, k, k]`,
/// output `[n, cout, ho, wo]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub(crate) n: usize,
    pub(crate) cin: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) cout: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
}

impl ConvGeom {
    /// Validates the shapes of a convolution and derives its output size.
    pub(crate) fn new(x: &[usize], w: &[usize], stride: usize, pad: usize) -> Result<Self> {
        let (&[n, cin, h, wd], &[cout, wcin, k, k2]) = (x, w) else {
            bail!("conv2d: expected a 4-d input and a 4-d weight, got {x:?} and {w:?}")
        };
        if wcin != cin || k != k2 || k == 0 {
            bail!("conv2d: weight {w:?} does not fit input {x:?} (need [Cout, {cin}, K, K])")
        }
        if cin == 0 || cout == 0 {
            bail!("conv2d: zero channels (input {x:?}, weight {w:?})")
        }
        if stride == 0 {
            bail!("conv2d: stride must be at least 1")
        }
        if h + 2 * pad < k || wd + 2 * pad < k {
            bail!("conv2d: kernel {k} larger than padded input {x:?} (padding {pad})")
        }
        let ho = (h + 2 * pad - k) / stride + 1;
        let wo = (wd + 2 * pad - k) / stride + 1;
        Ok(Self {
            n,
            cin,
            h,
            w: wd,
            cout,
            k,
            stride,
            pad,
            ho,
            wo,
        })
    }

    /// Output pixels per image.
    pub(crate) fn p(&self) -> usize {
        self.ho * self.wo
    }
    /// Rows of the column matrix (`Cin * K * K`).
    pub(crate) fn ckk(&self) -> usize {
        self.cin * self.k * self.k
    }
    /// Elements per input image.
    pub(crate) fn in_img(&self) -> usize {
        self.cin * self.h * self.w
    }
    /// Elements per output image.
    pub(crate) fn out_img(&self) -> usize {
        self.cout * self.p()
    }
    /// `true` when the column matrix of one image is the image itself.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Images per work chunk: as many as keep a chunk's column matrix around
    /// `COL_BUDGET` elements (at least one). Depends only on the shapes, never on the thread
    /// count, so chunked reductions are reproducible.
    pub(crate) fn chunk(&self) -> usize {
        const COL_BUDGET: usize = 160 * 1024;
        (COL_BUDGET / (self.ckk() * self.p()).max(1)).clamp(1, self.n.max(1))
    }

    /// Row stride of the column matrix of `nb` images (its rows hold `nb * p` values):
    /// `nb * p`, plus 16 when that is a multiple of 256 elements. Without the padding the
    /// rows of a 32x32 plane's column matrix start exactly 4 KiB apart, so the GEMM, which
    /// reads the matrix in place, finds one micro-panel's values all in the same L1 sets:
    /// the `gemm` crate's AVX2 kernels ran at half speed there (bench/README.md, "4 KiB
    /// strides"). The padding slots are never read or written.
    pub(crate) fn col_ld(&self, nb: usize) -> usize {
        let m = nb * self.p();
        if m.is_multiple_of(256) {
            m + 16
        } else {
            m
        }
    }

    /// Range `lo..hi` of output columns `ow` whose input column `ow*s + kw - pad` lies inside
    /// `0..len` (the same formula serves rows).
    fn valid(&self, kw: usize, len: usize, out: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = if self.pad > kw {
            (self.pad - kw).div_ceil(s)
        } else {
            0
        };
        let hi = if len + self.pad > kw {
            (len + self.pad - kw - 1) / s + 1
        } else {
            0
        };
        (lo.min(out), hi.min(out).max(lo.min(out)))
    }
}

multiversion! {
/// Writes the column matrix of the `nb` images in `x` (`[nb, cin, h, w]`) into `col`:
/// `ckk` rows of `nb * p` values, [`ConvGeom::col_ld`] slots apart (`ckk * col_ld` slots;
/// every slot of a row's `nb * p` is overwritten, the padding after it is not touched).
pub(crate) fn im2col(g: &ConvGeom, x: &[f32], nb: usize, col: &mut [MaybeUninit<f32>]) {
    let (p, hw, s) = (g.p(), g.h * g.w, g.stride);
    let ld = g.col_ld(nb);
    debug_assert!(x.len() >= nb * g.in_img() && col.len() >= g.ckk() * ld);
    let zero = MaybeUninit::new(0.0);
    for ci in 0..g.cin {
        for kh in 0..g.k {
            let (oh_lo, oh_hi) = g.valid(kh, g.h, g.ho);
            for kw in 0..g.k {
                let (ow_lo, ow_hi) = g.valid(kw, g.w, g.wo);
                let r = (ci * g.k + kh) * g.k + kw;
                let row = &mut col[r * ld..r * ld + nb * p];
                for b in 0..nb {
                    let src = &x[(b * g.cin + ci) * hw..][..hw];
                    let dst = &mut row[b * p..(b + 1) * p];
                    dst[..oh_lo * g.wo].fill(zero);
                    dst[oh_hi * g.wo..].fill(zero);
                    if oh_lo >= oh_hi {
                        continue; // every output row of this tap reads padding: all zeros
                    }
                    if s == 1 && g.wo == g.w {
                        // "same" stride-1 convolution: the valid rows are one shifted
                        // contiguous block of the input; copy it whole, then clear the
                        // columns that fell off the left/right edge.
                        let block = &mut dst[oh_lo * g.wo..oh_hi * g.wo];
                        let start = ((oh_lo + kh) * g.w + kw) as isize - (g.pad * (g.w + 1)) as isize;
                        let (lo, hi) = (start.max(0) as usize, (start + block.len() as isize).min(hw as isize) as usize);
                        let skip = (lo as isize - start) as usize;
                        block[..skip].fill(zero);
                        for (d, &v) in block[skip..skip + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                            *d = MaybeUninit::new(v);
                        }
                        block[skip + (hi - lo)..].fill(zero);
                        // Strided stores, one column at a time: a `fill` per output row
                        // would be a `memset` call per element here.
                        for j in (0..ow_lo).chain(ow_hi..g.wo) {
                            for v in block[j..].iter_mut().step_by(g.wo) {
                                *v = zero;
                            }
                        }
                        continue;
                    }
                    for oh in oh_lo..oh_hi {
                        let ih = oh * s + kh - g.pad;
                        let srow = &src[ih * g.w..(ih + 1) * g.w];
                        let d = &mut dst[oh * g.wo..(oh + 1) * g.wo];
                        d[..ow_lo].fill(zero);
                        d[ow_hi..].fill(zero);
                        if ow_lo < ow_hi {
                            let first = ow_lo * s + kw - g.pad;
                            let d = &mut d[ow_lo..ow_hi];
                            if s == 1 {
                                for (d, &v) in d.iter_mut().zip(&srow[first..]) {
                                    *d = MaybeUninit::new(v);
                                }
                            } else if s == 2 {
                                // pairs instead of `step_by(2)`, which does not vectorise
                                let n = d.len();
                                let src = &srow[first..];
                                let (head, last) = d.split_at_mut(n - 1);
                                for (d, pair) in head.iter_mut().zip(src.chunks_exact(2)) {
                                    *d = MaybeUninit::new(pair[0]);
                                }
                                last[0] = MaybeUninit::new(src[2 * (n - 1)]);
                            } else {
                                for (d, &v) in d.iter_mut().zip(srow[first..].iter().step_by(s)) {
                                    *d = MaybeUninit::new(v);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

}

multiversion! {
/// Adds the column matrix `col` (laid out as [`im2col`] writes it) back onto the `nb` images
/// of `dx` (`[nb, cin, h, w]`), the adjoint of [`im2col`]. Each element of `dx` receives its
/// contributions in a fixed order.
pub(crate) fn col2im(g: &ConvGeom, col: &[f32], nb: usize, dx: &mut [f32]) {
    let (p, hw, s) = (g.p(), g.h * g.w, g.stride);
    let ld = g.col_ld(nb);
    debug_assert!(dx.len() >= nb * g.in_img() && col.len() >= g.ckk() * ld);
    for b in 0..nb {
        for ci in 0..g.cin {
            let plane = &mut dx[(b * g.cin + ci) * hw..][..hw];
            for kh in 0..g.k {
                let (oh_lo, oh_hi) = g.valid(kh, g.h, g.ho);
                for kw in 0..g.k {
                    let (ow_lo, ow_hi) = g.valid(kw, g.w, g.wo);
                    if ow_lo >= ow_hi {
                        continue;
                    }
                    let r = (ci * g.k + kh) * g.k + kw;
                    let src = &col[r * ld + b * p..][..p];
                    let first = ow_lo * s + kw - g.pad;
                    for oh in oh_lo..oh_hi {
                        let ih = oh * s + kh - g.pad;
                        let drow = &mut plane[ih * g.w..(ih + 1) * g.w];
                        let srow = &src[oh * g.wo + ow_lo..oh * g.wo + ow_hi];
                        if s == 1 {
                            for (d, &v) in drow[first..].iter_mut().zip(srow) {
                                *d += v;
                            }
                        } else if s == 2 {
                            // pairs instead of `step_by(2)`, which does not vectorise
                            let n = srow.len();
                            let dst = &mut drow[first..];
                            for (pair, &v) in dst.chunks_exact_mut(2).zip(&srow[..n - 1]) {
                                pair[0] += v;
                            }
                            dst[2 * (n - 1)] += srow[n - 1];
                        } else {
                            for (d, &v) in drow[first..].iter_mut().step_by(s).zip(srow) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ranges_match_brute_force() {
        for (k, s, pad, len) in [
            (3, 1, 1, 5),
            (3, 2, 1, 7),
            (1, 2, 0, 6),
            (5, 3, 2, 9),
            (3, 2, 0, 4),
        ] {
            let g = ConvGeom::new(&[1, 1, len, len], &[1, 1, k, k], s, pad).unwrap();
            for kw in 0..k {
                let want: Vec<usize> = (0..g.wo)
                    .filter(|&o| {
                        let i = (o * s + kw) as isize - pad as isize;
                        i >= 0 && (i as usize) < len
                    })
                    .collect();
                let (lo, hi) = g.valid(kw, len, g.wo);
                assert_eq!(
                    (lo..hi).collect::<Vec<_>>(),
                    want,
                    "k{k} s{s} p{pad} len{len} kw{kw}"
                );
            }
        }
    }
}
