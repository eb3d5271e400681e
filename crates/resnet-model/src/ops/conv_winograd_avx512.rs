//! The AVX-512 twin of [`super::conv_winograd_avx2`]: fused Winograd F(2x2, 3x3) for the 3x3
//! stride-1 padding-1 convolutions with 16 tiles per vector and blocks of [`CB`] = 8 output
//! channels (`P` = 2 tile vectors x 8 channels = 16 of the 32 `zmm` registers accumulate).
//!
//! The split padded copy of each image, the transformed weights and the scalar twin are
//! [`super::conv_winograd_avx2`]'s. A vector holds 16 tiles: one run of a tile row where a row
//! has a multiple of 16 tiles (`w` a multiple of 32), else `R` = 2 or 4 whole tile rows of 8
//! or 4 tiles (`w` = 16 or 8), loaded as 256- or 128-bit pieces. Every output element is the
//! same sequence of additions and fused multiply-adds as in the AVX2 kernel and the scalar
//! twin, so all three give the same bits.

use std::mem::MaybeUninit;

use super::conv_winograd_avx2::{self as avx2, scratch_len, XI};

/// Output channels per register block.
pub(super) const CB: usize = 8;
/// Tiles per vector.
const L: usize = 16;
/// Tile vectors per block: `P * CB` accumulators.
const P: usize = 2;
/// Input channels below which the AVX-512 direct kernel is as fast: at 16 channels (stage 1,
/// 32x32) its transforms cost as much as the multiplications they save (one thread, `cargo
/// test --release -p resnet-model --lib conv_direct -- --ignored --nocapture`: 124-127
/// against the direct kernel's 133-135 GFLOP/s-equivalent; 171-174 against 133 at 32
/// channels, 221-231 against 129-132 at 64).
const MIN_CIN: usize = 32;

/// `true` when the kernel takes `cin` input planes of `h x w` and `cout` output channels (on a
/// CPU where [`super::conv_direct::avx512_available`]).
pub(super) fn takes(cin: usize, h: usize, w: usize, cout: usize) -> bool {
    let tw = w / 2;
    // tile rows per vector where a tile row is shorter than a vector
    let r = match tw {
        4 => 4,
        8 => 2,
        _ => 1,
    };
    let cols = w > 0 && w.is_multiple_of(2) && (tw.is_multiple_of(L) || r > 1);
    let rows = h > 0 && h.is_multiple_of(2 * r);
    cin >= MIN_CIN && avx2::takes_channels(cin, cout, CB) && cols && rows
}

/// Writes the output image `y` (`[cout, h * w]`) of the input image `x` (`[cin, h * w]`)
/// with the transformed weight `u` from [`avx2::weights`] with blocks of [`CB`].
///
/// # Panics
/// If AVX-512F is not available, the kernel does not [`takes`] the shape, or a length is
/// wrong.
pub(super) fn image(
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    u: &[f32],
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    assert!(
        super::conv_direct::avx512_available() && takes(cin, h, w, cout),
        "conv_winograd_avx512: not for this CPU or shape"
    );
    assert_eq!(x.len(), cin * h * w, "conv_winograd_avx512: input length");
    assert_eq!(y.len(), cout * h * w, "conv_winograd_avx512: output length");
    assert_eq!(
        u.len(),
        XI * cout * cin,
        "conv_winograd_avx512: weight length"
    );
    avx2::with_scratch(
        x,
        (cin, h, w),
        scratch_len(cin, P * L),
        scratch_len(cout, P * L),
        |xp, v, m| {
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            // SAFETY: AVX-512F is available, the shape is taken and every length was checked
            // above; the scratch buffers have the sizes the kernel indexes.
            unsafe {
                let (xp, v, m) = (xp.as_ptr(), v.as_mut_ptr(), m.as_mut_ptr());
                kernel::image(cin, cout, h, w, u, xp, v, m, y.as_mut_ptr().cast())
            };
            #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
            let _ = (u, xp, v, m, y);
        },
    );
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
mod kernel {
    use std::arch::x86_64::*;

    use super::super::conv_winograd_avx2::SKEW;
    use super::{CB, L, P, XI};

    /// The shape of one call.
    #[derive(Clone, Copy)]
    struct Shape {
        cin: usize,
        cout: usize,
        w: usize,
        /// Tiles per tile row.
        tw: usize,
        /// Elements per output plane.
        p: usize,
        /// Elements per row (`2 * (tw + 1)`) and per plane of the split padded input.
        rp: usize,
        pp: usize,
    }

    impl Shape {
        /// Where the `R` pieces of tile vector `v` (`L / R` tiles each) start: in a split
        /// padded plane (element `(0, 0)` of their windows) and in an output plane.
        fn offsets<const R: usize>(&self, v: usize) -> ([usize; R], [usize; R]) {
            let per = L / R;
            let at = |q: usize| {
                let t = v * L + q * per;
                let (ty, tx) = (t / self.tw, t % self.tw);
                (2 * ty * self.rp + tx, 2 * ty * self.w + 2 * tx)
            };
            (
                std::array::from_fn(|q| at(q).0),
                std::array::from_fn(|q| at(q).1),
            )
        }
    }

    /// Every block of one image.
    ///
    /// # Safety
    /// AVX-512F available; `xp` holds the `cin` split padded planes, `v`
    /// `scratch_len(cin, P * L)` elements, `m` `scratch_len(cout, P * L)`, `y` `cout * h * w`, `u` `XI * cout * cin`; the
    /// shape satisfies [`super::takes`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image(
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        u: &[f32],
        xp: *const f32,
        v: *mut f32,
        m: *mut f32,
        y: *mut f32,
    ) {
        let tw = w / 2;
        let rp = 2 * (tw + 1);
        let s = Shape {
            cin,
            cout,
            w,
            tw,
            p: h * w,
            rp,
            pp: (h + 2) * rp,
        };
        let nv = h / 2 * tw / L;
        let mut v0 = 0;
        while v0 < nv {
            let n = (nv - v0).min(P);
            // SAFETY: forwarded from the caller; v0 + n <= nv.
            unsafe {
                match (tw, n) {
                    (4, P) => block::<4, P>(&s, u, xp, v, m, y, v0),
                    (4, _) => block::<4, 1>(&s, u, xp, v, m, y, v0),
                    (8, P) => block::<2, P>(&s, u, xp, v, m, y, v0),
                    (8, _) => block::<2, 1>(&s, u, xp, v, m, y, v0),
                    (_, P) => block::<1, P>(&s, u, xp, v, m, y, v0),
                    (_, _) => block::<1, 1>(&s, u, xp, v, m, y, v0),
                }
            }
            v0 += n;
        }
    }

    /// 16 tiles' window element: `R` pieces of `L / R` lanes at `plane + offs[q] + at`.
    ///
    /// # Safety
    /// AVX-512F available; every piece lies inside the plane.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load<const R: usize>(plane: *const f32, offs: &[usize; R], at: usize) -> __m512 {
        // SAFETY: the caller's pieces are readable.
        unsafe {
            match R {
                1 => _mm512_loadu_ps(plane.add(offs[0] + at)),
                2 => {
                    let lo = _mm256_castps_pd(_mm256_loadu_ps(plane.add(offs[0] + at)));
                    let hi = _mm256_castps_pd(_mm256_loadu_ps(plane.add(offs[1] + at)));
                    _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(lo), hi))
                }
                _ => {
                    let q = |i: usize| _mm_loadu_ps(plane.add(offs[i] + at));
                    let v = _mm512_castps128_ps512(q(0));
                    let v = _mm512_insertf32x4::<1>(v, q(1));
                    let v = _mm512_insertf32x4::<2>(v, q(2));
                    _mm512_insertf32x4::<3>(v, q(3))
                }
            }
        }
    }

    /// Stores the 32 output pixels of 16 tiles' row `a`: `lo` holds tiles 0..8 interleaved
    /// (`b = 0, 1` of each), `hi` tiles 8..16, in pieces of `2 L / R` pixels at `offs[q]`.
    ///
    /// # Safety
    /// AVX-512F available; every piece lies inside the plane.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store<const R: usize>(yp: *mut f32, offs: &[usize; R], lo: __m512, hi: __m512) {
        // SAFETY: the caller's pieces are writable.
        unsafe {
            match R {
                1 => {
                    _mm512_storeu_ps(yp.add(offs[0]), lo);
                    _mm512_storeu_ps(yp.add(offs[0] + L), hi);
                }
                2 => {
                    _mm512_storeu_ps(yp.add(offs[0]), lo);
                    _mm512_storeu_ps(yp.add(offs[1]), hi);
                }
                _ => {
                    let half = |v: __m512, i: usize| {
                        let d = _mm512_castps_pd(v);
                        _mm256_castpd_ps(if i == 0 {
                            _mm512_castpd512_pd256(d)
                        } else {
                            _mm512_extractf64x4_pd::<1>(d)
                        })
                    };
                    _mm256_storeu_ps(yp.add(offs[0]), half(lo, 0));
                    _mm256_storeu_ps(yp.add(offs[1]), half(lo, 1));
                    _mm256_storeu_ps(yp.add(offs[2]), half(hi, 0));
                    _mm256_storeu_ps(yp.add(offs[3]), half(hi, 1));
                }
            }
        }
    }

    /// Tile vectors `v0 .. v0 + N` (`N <= P`) of `R` pieces each: input transform, the 16
    /// channel sums, output transform (the same operations as the AVX2 kernel's).
    ///
    /// # Safety
    /// As [`image`], and `v0 + N <= h / 2 * tw / L`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const R: usize, const N: usize>(
        s: &Shape,
        u: &[f32],
        xp: *const f32,
        v: *mut f32,
        m: *mut f32,
        y: *mut f32,
        v0: usize,
    ) {
        let offs: [([usize; R], [usize; R]); N] = std::array::from_fn(|j| s.offsets::<R>(v0 + j));
        let odd = s.tw + 1;
        // elements per Winograd position in `v` and `m` (see [`SKEW`])
        let (vs, ms) = (s.cin * N * L + SKEW, s.cout * N * L + SKEW);
        for ci in 0..s.cin {
            // SAFETY: ci < cin, so the plane lies inside `xp`.
            let plane = unsafe { xp.add(ci * s.pp) };
            for (j, (inp, _)) in offs.iter().enumerate() {
                let mut d = [[_mm512_setzero_ps(); 4]; 4];
                for (i, d) in d.iter_mut().enumerate() {
                    for (k, d) in d.iter_mut().enumerate() {
                        let at = i * s.rp + (k % 2) * odd + k / 2;
                        // SAFETY: each piece's window rows and columns stay inside the plane.
                        *d = unsafe { load::<R>(plane, inp, at) };
                    }
                }
                let mut t = [[_mm512_setzero_ps(); 4]; 4];
                for k in 0..4 {
                    t[0][k] = _mm512_sub_ps(d[0][k], d[2][k]);
                    t[1][k] = _mm512_add_ps(d[1][k], d[2][k]);
                    t[2][k] = _mm512_sub_ps(d[2][k], d[1][k]);
                    t[3][k] = _mm512_sub_ps(d[1][k], d[3][k]);
                }
                for (i, t) in t.iter().enumerate() {
                    let row = [
                        _mm512_sub_ps(t[0], t[2]),
                        _mm512_add_ps(t[1], t[2]),
                        _mm512_sub_ps(t[2], t[1]),
                        _mm512_sub_ps(t[1], t[3]),
                    ];
                    for (k, r) in row.into_iter().enumerate() {
                        let xi = i * 4 + k;
                        // SAFETY: xi < XI, ci < cin, j < N <= P: inside `v`.
                        unsafe { _mm512_storeu_ps(v.add(xi * vs + (ci * N + j) * L), r) };
                    }
                }
            }
        }
        let ncb = s.cout / CB;
        for xi in 0..XI {
            // SAFETY: inside `v` (see above).
            let vx = unsafe { v.add(xi * vs) };
            for cb in 0..ncb {
                let ub = &u[(xi * ncb + cb) * s.cin * CB..][..s.cin * CB];
                let mut acc = [[_mm512_setzero_ps(); CB]; N];
                for (ci, uc) in ub.chunks_exact(CB).enumerate() {
                    let xv: [__m512; N] = std::array::from_fn(|j| {
                        // SAFETY: ci < cin, j < N.
                        unsafe { _mm512_loadu_ps(vx.add((ci * N + j) * L)) }
                    });
                    for (c, &uw) in uc.iter().enumerate() {
                        let wv = _mm512_set1_ps(uw);
                        for j in 0..N {
                            acc[j][c] = _mm512_fmadd_ps(xv[j], wv, acc[j][c]);
                        }
                    }
                }
                for (j, acc) in acc.iter().enumerate() {
                    for (c, &a) in acc.iter().enumerate() {
                        let co = cb * CB + c;
                        // SAFETY: xi < XI, co < cout, j < N <= P: inside `m`.
                        unsafe { _mm512_storeu_ps(m.add(xi * ms + (co * N + j) * L), a) };
                    }
                }
            }
        }
        // lanes 0..8 of y0 and y1 interleaved, and lanes 8..16
        let idx_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let idx_hi =
            _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        for co in 0..s.cout {
            // SAFETY: co < cout: the plane lies inside `y`.
            let yp = unsafe { y.add(co * s.p) };
            for (j, (_, out)) in offs.iter().enumerate() {
                // SAFETY: inside `m` (see above).
                let mm = |xi: usize| unsafe { _mm512_loadu_ps(m.add(xi * ms + (co * N + j) * L)) };
                let cols: [[__m512; 2]; 4] = std::array::from_fn(|k| {
                    let (m0, m1, m2, m3) = (mm(k), mm(4 + k), mm(8 + k), mm(12 + k));
                    [
                        _mm512_add_ps(_mm512_add_ps(m0, m1), m2),
                        _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3),
                    ]
                });
                let sr: [[__m512; 4]; 2] = std::array::from_fn(|a| cols.map(|c| c[a]));
                for (a, r) in sr.iter().enumerate() {
                    let y0 = _mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]);
                    let y1 = _mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]);
                    let lo = _mm512_permutex2var_ps(y0, idx_lo, y1);
                    let hi = _mm512_permutex2var_ps(y0, idx_hi, y1);
                    let rows: [usize; R] = out.map(|o| o + a * s.w);
                    // SAFETY: output row 2 ty + a < h of each piece's tiles, whose pixels stay
                    // on that row of this plane.
                    unsafe { store::<R>(yp, &rows, lo, hi) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv_winograd_avx2::test_util::{exact, twin};
    use super::*;
    use crate::ops::conv_util::test_values as values;

    /// Bit for bit against the scalar twin (the network's shapes, 1, 2 and 4 tile rows per
    /// vector, blocks of 1 and 2 vectors), and within f32 rounding of the exact convolution.
    #[test]
    fn image_matches_scalar_twin_and_the_convolution() {
        if !super::super::conv_direct::avx512_available() {
            eprintln!(
                "no AVX-512F (or no `avx512` feature): the AVX-512 Winograd kernel is not tested"
            );
            return;
        }
        for (i, &(cin, h, w, cout)) in [
            (32, 32, 32, 16),
            (32, 16, 16, 32),
            (64, 8, 8, 64),
            (32, 2, 32, 8),
            (33, 4, 16, 8),
            (32, 8, 8, 16),
            (40, 6, 64, 24),
            (32, 6, 32, 8),
            (34, 12, 16, 8),
        ]
        .iter()
        .enumerate()
        {
            assert!(takes(cin, h, w, cout), "{cin} {h} {w} {cout}");
            let x = values(cin * h * w, 3 * i as u64);
            let wt = values(cout * cin * 9, 3 * i as u64 + 1);
            let mut y = vec![MaybeUninit::new(f32::NAN); cout * h * w];
            image(
                cin,
                cout,
                h,
                w,
                &avx2::weights(&wt, cin, cout, CB),
                &x,
                &mut y,
            );
            // SAFETY: written whole by `image` (NaN would show otherwise).
            let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
            let want = twin(cin, cout, h, w, &wt, &x);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&want), "cin {cin} h {h} w {w} cout {cout}");
            let ex = exact(cin, cout, h, w, &wt, &x);
            let max = ex.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (&a, &b) in y.iter().zip(&ex) {
                assert!((a as f64 - b).abs() <= 1e-5 * max, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn takes_the_resnet_planes_only() {
        assert!(takes(32, 16, 16, 32) && takes(64, 8, 8, 64) && takes(32, 32, 32, 16));
        assert!(!takes(3, 32, 32, 16), "the stem's 3 channels");
        assert!(
            !takes(16, 32, 32, 16),
            "stage 1: the direct kernel is as fast"
        );
        assert!(!takes(32, 32, 32, 4), "cout not a multiple of 8");
        assert!(!takes(32, 2, 16, 16), "16 wide needs pairs of tile rows");
        assert!(!takes(32, 4, 8, 16), "8 wide needs 4 tile rows at a time");
        assert!(!takes(32, 4, 48, 16), "24 tiles per row");
        assert!(!takes(32, 5, 32, 16), "odd height");
    }
}
