//! The AVX2 twin of [`super::conv_direct`]'s kernel: direct 3x3 stride-1 "same" convolutions
//! with AVX2+FMA register blocking, for CPUs without AVX-512 (and builds without the
//! `avx512` feature).
//!
//! AVX2 has 16 vector registers of 8 lanes and no mask registers, so the kernel differs from
//! the AVX-512 one in two ways: each image's input is first copied into zero-padded planes
//! (`(h + 2) x (w + 2)`, see [`pad`]) so that every shifted input vector is a plain
//! unaligned load, and an output block is `PB` = 3 vectors of 8 pixels times [`CB`] output
//! channels (`PB * CB` = 12 accumulators, `PB` input vectors and one broadcast weight: all 16
//! registers). A vector never crosses an output row (`w` a multiple of 8), so a vector's
//! input for every tap is one contiguous run of the padded row above, at or below it.
//!
//! The fused multiply-adds per output element are the same chain as the AVX-512 kernel's and
//! the scalar twin's (`(ci, kh, kw)` in order, from zero, a padding tap adding `0 * w`), so
//! all three give the same bits.

use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Output channels per register block.
pub(super) const CB: usize = 4;
/// Lanes per vector.
pub(super) const L: usize = 8;

/// `true` when this CPU runs the kernel (x86-64 with AVX2 and FMA); also for
/// [`super::conv_wgrad`]'s AVX2 kernel.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `true` when the kernel takes planes of width `w` and `cout` output channels (on a CPU
/// where it is [`available`]).
pub(super) fn takes(w: usize, cout: usize) -> bool {
    w > 0 && w.is_multiple_of(L) && cout.is_multiple_of(CB)
}

thread_local! {
    /// Each worker's zero-padded copy of the image it convolves (reused across calls).
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Copies the `cin` planes of `x` (`h x w` each) into `out` as `(h + 2) x (w + 2)` planes
/// with a zero border.
fn pad(x: &[f32], cin: usize, h: usize, w: usize, out: &mut Vec<f32>) {
    let wp = w + 2;
    out.clear();
    out.reserve(cin * (h + 2) * wp);
    for plane in x.chunks_exact(h * w).take(cin) {
        out.resize(out.len() + wp + 1, 0.0);
        for row in plane.chunks_exact(w) {
            out.extend_from_slice(row);
            out.extend_from_slice(&[0.0, 0.0]);
        }
        out.resize(out.len() + wp - 1, 0.0);
    }
}

/// Writes the output image `y` (`[cout, h * w]`) of the input image `x` (`[cin, h * w]`)
/// with the weight `wd` regrouped per block of [`CB`] output channels
/// (`wd[((cb * cin + ci) * 9 + t) * CB + c] = w[cb * CB + c, ci, t / 3, t % 3]`).
///
/// # Panics
/// If the kernel is not [`available`], does not [`takes`] the shape, or a length is wrong.
pub(super) fn image(
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    wd: &[f32],
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    assert!(
        available() && takes(w, cout),
        "conv_direct_avx2: not for this CPU or shape"
    );
    assert_eq!(x.len(), cin * h * w, "conv_direct_avx2: input image length");
    assert_eq!(
        y.len(),
        cout * h * w,
        "conv_direct_avx2: output image length"
    );
    assert_eq!(wd.len(), cout * cin * 9, "conv_direct_avx2: weight length");
    PADDED.with_borrow_mut(|xp| {
        pad(x, cin, h, w, xp);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA are available and every length was checked above.
        unsafe {
            kernel::image(cin, cout, h, w, wd, xp.as_ptr(), y.as_mut_ptr().cast())
        };
    });
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use super::{CB, L};

    /// Pixel vectors (8 pixels each) per register block: `PB * CB` accumulators.
    pub(super) const PB: usize = 3;

    /// The shape of one call.
    #[derive(Clone, Copy)]
    struct Shape {
        cin: usize,
        cout: usize,
        w: usize,
        /// Pixels per output plane.
        p: usize,
        /// Elements per padded input plane.
        pp: usize,
        /// Offset of tap `t`'s source in the padded plane from the output pixel's centre.
        offs: [isize; 9],
    }

    /// Every output block of one image, pixel blocks outer (the padded input rows they read
    /// stay in L1 while every block of output channels passes over them).
    ///
    /// # Safety
    /// AVX2 and FMA available; `xp` holds `cin` padded planes, `y` `cout * h * w` elements,
    /// `wd` `cout * cin * 9`; `w` a multiple of [`L`], `cout` of [`CB`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn image(
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        wd: &[f32],
        xp: *const f32,
        y: *mut f32,
    ) {
        let wp = (w + 2) as isize;
        let s = Shape {
            cin,
            cout,
            w,
            p: h * w,
            pp: (h + 2) * (w + 2),
            offs: std::array::from_fn(|t| ((t / 3) as isize - 1) * wp + (t % 3) as isize - 1),
        };
        let nv = s.p / L;
        let full = nv / PB * PB;
        for v0 in (0..full).step_by(PB) {
            for cb in 0..cout / CB {
                // SAFETY: forwarded from the caller; v0 + PB <= nv.
                unsafe { block::<PB>(&s, wd, xp, y, v0, cb) };
            }
        }
        for v0 in full..nv {
            for cb in 0..cout / CB {
                // SAFETY: as above; v0 < nv.
                unsafe { block::<1>(&s, wd, xp, y, v0, cb) };
            }
        }
    }

    /// Output channels `cb * CB ..` at pixel vectors `v0 .. v0 + P`: `P * CB` accumulators.
    ///
    /// # Safety
    /// As [`image`], and `v0 + P <= p / L`, `cb < cout / CB`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const P: usize>(
        s: &Shape,
        wd: &[f32],
        xp: *const f32,
        y: *mut f32,
        v0: usize,
        cb: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); CB]; P];
        // the centre of each vector's first pixel in the padded plane
        let base: [usize; P] = std::array::from_fn(|j| {
            let q = (v0 + j) * L;
            (q / s.w + 1) * (s.w + 2) + q % s.w + 1
        });
        let wb = &wd[cb * s.cin * 9 * CB..][..s.cin * 9 * CB];
        for ci in 0..s.cin {
            // SAFETY: ci < cin, so the padded plane lies inside `xp`.
            let plane = unsafe { xp.add(ci * s.pp) };
            let wc = &wb[ci * 9 * CB..][..9 * CB];
            for t in 0..9 {
                let xv: [__m256; P] = std::array::from_fn(|j| {
                    // SAFETY: a vector's pixels lie on one output row, so its source for any
                    // tap is 8 consecutive elements of one padded row of this plane.
                    unsafe { _mm256_loadu_ps(plane.add(base[j]).offset(s.offs[t])) }
                });
                for c in 0..CB {
                    let wv = _mm256_set1_ps(wc[t * CB + c]);
                    for j in 0..P {
                        acc[j][c] = _mm256_fmadd_ps(xv[j], wv, acc[j][c]);
                    }
                }
            }
        }
        for c in 0..CB {
            for (j, acc) in acc.iter().enumerate() {
                // SAFETY: channel cb * CB + c < cout and pixel vector v0 + j < p / L.
                unsafe { _mm256_storeu_ps(y.add((cb * CB + c) * s.p + (v0 + j) * L), acc[c]) };
            }
        }
        debug_assert!(cb < s.cout / CB);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_puts_a_zero_border_around_every_plane() {
        let x: Vec<f32> = (1..=12).map(|v| v as f32).collect(); // 2 planes of 2 x 3
        let mut out = vec![7.0; 3];
        pad(&x, 2, 2, 3, &mut out);
        #[rustfmt::skip]
        let want = [
            0., 0., 0., 0., 0.,
            0., 1., 2., 3., 0.,
            0., 4., 5., 6., 0.,
            0., 0., 0., 0., 0.,
            0., 0., 0., 0., 0.,
            0., 7., 8., 9., 0.,
            0., 10., 11., 12., 0.,
            0., 0., 0., 0., 0.,
        ];
        assert_eq!(out, want);
    }
}
