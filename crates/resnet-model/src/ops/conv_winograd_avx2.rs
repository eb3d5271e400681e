//! Fused Winograd F(2x2, 3x3) for AVX2+FMA: 3x3 stride-1 padding-1 convolutions with 2.25x
//! fewer multiplications than [`super::conv_direct_avx2`], for CPUs without AVX-512.
//!
//! With the transforms of Lavin & Gray (2016) (see [`super::winograd`]), a 2x2 output tile is
//! `A^T [Σ_ci U[co, ci] ⊙ V[ci]] A`, `U = G g G^T` per channel pair (once per call, see
//! [`weights`]) and `V = B^T d B` per input channel and 4x4 input window `d`. Unlike
//! [`super::winograd`], which runs the 16 channel sums as GEMMs over whole chunks of images
//! (and loses to the direct kernels: shallow GEMMs and extra memory passes), everything here
//! happens per image and per block of 16 tiles, in L1/L2:
//! 1. the image is copied once into zero-padded planes split into even and odd columns
//!    ([`pad`]), so that the window element `(i, j)` of 8 horizontally adjacent tiles is one
//!    plain 8-lane load (lanes = tiles);
//! 2. per block of up to `P` = 2 tile vectors: the input transform of every input channel
//!    (32 additions per window), then for each of the 16 Winograd positions a register-blocked
//!    channel sum (`P` tile vectors x [`CB`] = 4 output channels = 8 accumulators, one chain
//!    of fused multiply-adds over `ci` from zero), then the output transform (24 additions
//!    per tile) straight into the output planes, interleaved back into pixel order.
//!
//! Shapes: a row of tiles must fill whole vectors (`w` a multiple of 16), or be half a vector
//! (`w` = 8, two tile rows per vector, `h` a multiple of 4); `h` even; `cout` a multiple of 4;
//! at least 8 input channels. That is every 3x3 stride-1 convolution of the CIFAR ResNets
//! (32x32, 16x16, 8x8 planes) but the 3-channel stem.
//!
//! The arithmetic of every output element is fixed by the shapes (transforms in a fixed order,
//! the channel sums over `ci` in order), so results do not depend on the number of threads;
//! the scalar twin (`test_util::twin`, for the tests) and the AVX-512 kernel give the same
//! bits. They differ from the direct kernels' by rounding (the transforms' coefficients are 0,
//! ±1 and ±1/2; the error stays inside the tolerance of the convolution tests and the PyTorch
//! fixtures).

use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Output channels per register block.
pub(super) const CB: usize = 4;
/// Tiles per vector.
const L: usize = 8;
/// Positions of the 4x4 Winograd domain.
pub(super) const XI: usize = 16;
/// Extra elements between the `V` (and `M`) rows of consecutive Winograd positions: without
/// them a row is a multiple of 4 KiB at some shapes (32 channels x 2 vectors of 16 tiles),
/// and the 16 stores of a transform alias in L1 and in the store-to-load forwarding checks.
pub(super) const SKEW: usize = 16;

/// The length of a `V` or `M` scratch buffer for `ch` channels of `tiles` tiles.
pub(super) fn scratch_len(ch: usize, tiles: usize) -> usize {
    XI * (ch * tiles + SKEW)
}

/// Tile vectors per block: `P * CB` accumulators (with 3 x 4, the 16th register made LLVM
/// spill an accumulator in the channel sum's loop, 30% slower).
const P: usize = 2;

/// Input channels below which the direct kernel is as fast (the transforms are paid per
/// input and output channel, the saving per pair: the 3-channel stem stays direct).
const MIN_CIN: usize = 8;

/// `true` when the kernel takes `cin` input planes of `h x w` and `cout` output channels (on a
/// CPU with AVX2 and FMA, [`super::conv_direct_avx2::available`]).
pub(super) fn takes(cin: usize, h: usize, w: usize, cout: usize) -> bool {
    let rows = h > 0 && h.is_multiple_of(2);
    let cols = (w > 0 && w.is_multiple_of(2 * L)) || (w == L && h.is_multiple_of(4));
    takes_channels(cin, cout, CB) && rows && cols
}

/// The channel condition of this kernel and its AVX-512 twin (blocks of `b` output channels).
pub(super) fn takes_channels(cin: usize, cout: usize, b: usize) -> bool {
    cin >= MIN_CIN && cout.is_multiple_of(b)
}

/// The transformed weight `U = G g G^T` of `w` (`[cout, cin, 3, 3]`), grouped for a kernel
/// with blocks of `b` output channels (this file's [`CB`], or
/// [`super::conv_winograd_avx512`]'s): `u[((xi * (cout / b) + cb) * cin + ci) * b + c]` is
/// position `xi` of `U[cb * b + c, ci]`.
pub(super) fn weights(w: &[f32], cin: usize, cout: usize, b: usize) -> Vec<f32> {
    assert_eq!(w.len(), cout * cin * 9, "conv_winograd: weight length");
    assert!(cout.is_multiple_of(b), "conv_winograd: cout % {b}");
    let ncb = cout / b;
    let mut u = vec![0f32; XI * cout * cin];
    for co in 0..cout {
        for ci in 0..cin {
            let t = super::winograd::kernel_transform(&w[(co * cin + ci) * 9..][..9]);
            let (cb, c) = (co / b, co % b);
            for (xi, v) in t.into_iter().enumerate() {
                u[((xi * ncb + cb) * cin + ci) * b + c] = v;
            }
        }
    }
    u
}

/// Each worker's scratch (reused across calls): the split padded image, one block's
/// transformed input `V` and channel sums `M`.
#[derive(Default)]
struct Scratch {
    xp: Vec<f32>,
    v: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f(xp, v, m)` on this thread's scratch: `xp` the split padded copy of the image `x`
/// ([`pad`]), `v` and `m` buffers of `v_len` and `m_len` elements (contents unspecified).
pub(super) fn with_scratch<R>(
    x: &[f32],
    (cin, h, w): (usize, usize, usize),
    v_len: usize,
    m_len: usize,
    f: impl FnOnce(&[f32], &mut [f32], &mut [f32]) -> R,
) -> R {
    SCRATCH.with_borrow_mut(|s| {
        pad(x, cin, h, w, &mut s.xp);
        s.v.resize(v_len, 0.0);
        s.m.resize(m_len, 0.0);
        f(&s.xp, &mut s.v[..v_len], &mut s.m[..m_len])
    })
}

/// Copies the `cin` planes of `x` (`h x w` each) into `out` as zero-padded planes of
/// `(h + 2)` rows, each row its even padded columns then its odd ones (`w / 2 + 1` each):
/// with `P` the zero-padded plane, row `r` holds `P[r][0], P[r][2], .., P[r][w]`, then
/// `P[r][1], P[r][3], .., P[r][w + 1]`.
fn pad(x: &[f32], cin: usize, h: usize, w: usize, out: &mut Vec<f32>) {
    assert!(w.is_multiple_of(2), "conv_winograd_avx2: odd width {w}");
    assert_eq!(
        x.len(),
        cin * h * w,
        "conv_winograd_avx2: input image length"
    );
    let half = w / 2 + 1;
    let rp = 2 * half;
    let pp = (h + 2) * rp;
    out.resize(cin * pp, 0.0);
    for (plane, dst) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(pp)) {
        dst[..rp].fill(0.0);
        dst[(h + 1) * rp..].fill(0.0);
        for (row, dst) in plane.chunks_exact(w).zip(dst[rp..].chunks_exact_mut(rp)) {
            let (even, odd) = dst.split_at_mut(half);
            even[0] = 0.0;
            odd[half - 1] = 0.0;
            // padded column 2k + 1 is x column 2k, padded column 2k is x column 2k - 1
            split(row, &mut odd[..half - 1], &mut even[1..]);
        }
    }
}

/// `evens[k] = row[2k]`, `odds[k] = row[2k + 1]`.
fn split(row: &[f32], evens: &mut [f32], odds: &mut [f32]) {
    assert!(row.len() == 2 * evens.len() && evens.len() == odds.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::conv_direct_avx2::available() {
        // SAFETY: AVX2 is available; the lengths were checked above.
        done = unsafe { kernel::split(row, evens, odds) };
    }
    for k in done..evens.len() {
        evens[k] = row[2 * k];
        odds[k] = row[2 * k + 1];
    }
}

/// Writes the output image `y` (`[cout, h * w]`) of the input image `x` (`[cin, h * w]`)
/// with the transformed weight `u` from [`weights`].
///
/// # Panics
/// If AVX2+FMA are not available, the kernel does not [`takes`] the shape, or a length is
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
        super::conv_direct_avx2::available() && takes(cin, h, w, cout),
        "conv_winograd_avx2: not for this CPU or shape"
    );
    assert_eq!(
        x.len(),
        cin * h * w,
        "conv_winograd_avx2: input image length"
    );
    assert_eq!(
        y.len(),
        cout * h * w,
        "conv_winograd_avx2: output image length"
    );
    assert_eq!(
        u.len(),
        XI * cout * cin,
        "conv_winograd_avx2: weight length"
    );
    with_scratch(
        x,
        (cin, h, w),
        scratch_len(cin, P * L),
        scratch_len(cout, P * L),
        |xp, v, m| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA are available, the shape is taken and every length was checked
            // above; the scratch buffers have the sizes the kernel indexes.
            unsafe {
                kernel::image(
                    cin,
                    cout,
                    h,
                    w,
                    u,
                    xp.as_ptr(),
                    v.as_mut_ptr(),
                    m.as_mut_ptr(),
                    y.as_mut_ptr().cast(),
                )
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (u, xp, v, m, y);
        },
    );
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use super::{CB, L, P, SKEW, XI};

    /// Splits the first multiple of 16 elements of `row` into `evens` and `odds` (see
    /// [`super::split`]) and returns how many pairs it did.
    ///
    /// # Safety
    /// AVX2 available; `row.len() == 2 * evens.len() == 2 * odds.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn split(row: &[f32], evens: &mut [f32], odds: &mut [f32]) -> usize {
        let n = row.len() / 16;
        for k in 0..n {
            // SAFETY: 16 k + 16 <= row.len() and 8 k + 8 <= evens.len() = odds.len().
            unsafe {
                let a = _mm256_loadu_ps(row.as_ptr().add(16 * k));
                let b = _mm256_loadu_ps(row.as_ptr().add(16 * k + 8));
                // a0 a2 b0 b2 | a4 a6 b4 b6, then 64-bit lanes 0 2 1 3
                let e = _mm256_shuffle_ps::<0x88>(a, b);
                let o = _mm256_shuffle_ps::<0xdd>(a, b);
                let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xd8>(_mm256_castps_pd(e)));
                let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xd8>(_mm256_castps_pd(o)));
                _mm256_storeu_ps(evens.as_mut_ptr().add(8 * k), e);
                _mm256_storeu_ps(odds.as_mut_ptr().add(8 * k), o);
            }
        }
        8 * n
    }

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
        /// Offsets of the low and high 4 lanes of tile vector `v`: in a split padded plane
        /// (element `(0, 0)` of their windows) and in an output plane (their first pixel).
        fn offsets(&self, v: usize) -> ([usize; 2], [usize; 2]) {
            if self.tw >= L {
                let t = v * L;
                let (ty, tx) = (t / self.tw, t % self.tw);
                let i = 2 * ty * self.rp + tx;
                let o = 2 * ty * self.w + 2 * tx;
                ([i, i + L / 2], [o, o + L])
            } else {
                // w = 8: tile rows 2v and 2v + 1
                let (i, o) = (4 * v * self.rp, 4 * v * self.w);
                ([i, i + 2 * self.rp], [o, o + 2 * self.w])
            }
        }
    }

    /// Every block of one image.
    ///
    /// # Safety
    /// AVX2 and FMA available; `xp` holds the `cin` split padded planes of [`super::pad`],
    /// `v` `scratch_len(cin, P * L)` elements, `m` `scratch_len(cout, P * L)`, `y` `cout * h * w`, `u`
    /// `XI * cout * cin`; the shape satisfies [`super::takes`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
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
                match (tw >= L, n) {
                    (true, P) => block::<false, P>(&s, u, xp, v, m, y, v0),
                    (true, _) => block::<false, 1>(&s, u, xp, v, m, y, v0),
                    (false, P) => block::<true, P>(&s, u, xp, v, m, y, v0),
                    (false, _) => block::<true, 1>(&s, u, xp, v, m, y, v0),
                }
            }
            v0 += n;
        }
    }

    /// Eight tiles' window element at `lo` (lanes 0..4) and `hi` (lanes 4..8): one load when
    /// they are adjacent (`!SPLIT`, `hi = lo + 4`), else two halves.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load<const SPLIT: bool>(lo: *const f32, hi: *const f32) -> __m256 {
        if SPLIT {
            // SAFETY: the caller's pointers are valid for 4 reads each.
            unsafe { _mm256_loadu2_m128(hi, lo) }
        } else {
            // SAFETY: the caller's `lo` is valid for 8 reads.
            unsafe { _mm256_loadu_ps(lo) }
        }
    }

    /// Tile vectors `v0 .. v0 + N` (`N <= P`): input transform, the 16 channel sums, output
    /// transform.
    ///
    /// # Safety
    /// As [`image`], and `v0 + N <= h / 2 * tw / L`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const SPLIT: bool, const N: usize>(
        s: &Shape,
        u: &[f32],
        xp: *const f32,
        v: *mut f32,
        m: *mut f32,
        y: *mut f32,
        v0: usize,
    ) {
        let offs: [([usize; 2], [usize; 2]); N] = std::array::from_fn(|j| s.offsets(v0 + j));
        let odd = s.tw + 1;
        // elements per Winograd position in `v` and `m` (see [`SKEW`])
        let (vs, ms) = (s.cin * N * L + SKEW, s.cout * N * L + SKEW);
        // V[((xi * cin + ci) * N + j) * L + lane]
        for ci in 0..s.cin {
            // SAFETY: ci < cin, so the plane lies inside `xp`.
            let plane = unsafe { xp.add(ci * s.pp) };
            for (j, &([lo, hi], _)) in offs.iter().enumerate() {
                let mut d = [[_mm256_setzero_ps(); 4]; 4];
                for (i, d) in d.iter_mut().enumerate() {
                    for (k, d) in d.iter_mut().enumerate() {
                        // window column k: even padded columns for k = 0, 2, odd for 1, 3
                        let at = i * s.rp + (k % 2) * odd + k / 2;
                        // SAFETY: rows 2 ty + i <= h + 1 and columns tx + k / 2 + (lanes) <= tw
                        // stay inside the plane's row of `tw + 1` evens and `tw + 1` odds.
                        *d = unsafe { load::<SPLIT>(plane.add(lo + at), plane.add(hi + at)) };
                    }
                }
                // B^T d: over rows, column by column
                let mut t = [[_mm256_setzero_ps(); 4]; 4];
                for k in 0..4 {
                    t[0][k] = _mm256_sub_ps(d[0][k], d[2][k]);
                    t[1][k] = _mm256_add_ps(d[1][k], d[2][k]);
                    t[2][k] = _mm256_sub_ps(d[2][k], d[1][k]);
                    t[3][k] = _mm256_sub_ps(d[1][k], d[3][k]);
                }
                // (B^T d) B: over columns, row by row
                for (i, t) in t.iter().enumerate() {
                    let row = [
                        _mm256_sub_ps(t[0], t[2]),
                        _mm256_add_ps(t[1], t[2]),
                        _mm256_sub_ps(t[2], t[1]),
                        _mm256_sub_ps(t[1], t[3]),
                    ];
                    for (k, r) in row.into_iter().enumerate() {
                        let xi = i * 4 + k;
                        // SAFETY: xi < XI, ci < cin, j < N <= P: inside `v`.
                        unsafe { _mm256_storeu_ps(v.add(xi * vs + (ci * N + j) * L), r) };
                    }
                }
            }
        }
        // M[((xi * cout + co) * N + j) * L + lane] = Σ_ci U[co, ci][xi] V[xi][ci]
        let ncb = s.cout / CB;
        for xi in 0..XI {
            // SAFETY: inside `v` (see above).
            let vx = unsafe { v.add(xi * vs) };
            for cb in 0..ncb {
                let ub = &u[(xi * ncb + cb) * s.cin * CB..][..s.cin * CB];
                let mut acc = [[_mm256_setzero_ps(); CB]; N];
                for (ci, uc) in ub.chunks_exact(CB).enumerate() {
                    let xv: [__m256; N] = std::array::from_fn(|j| {
                        // SAFETY: ci < cin, j < N.
                        unsafe { _mm256_loadu_ps(vx.add((ci * N + j) * L)) }
                    });
                    for (c, &uw) in uc.iter().enumerate() {
                        let wv = _mm256_set1_ps(uw);
                        for j in 0..N {
                            acc[j][c] = _mm256_fmadd_ps(xv[j], wv, acc[j][c]);
                        }
                    }
                }
                for (j, acc) in acc.iter().enumerate() {
                    for (c, &a) in acc.iter().enumerate() {
                        let co = cb * CB + c;
                        // SAFETY: xi < XI, co < cout, j < N <= P: inside `m`.
                        unsafe { _mm256_storeu_ps(m.add(xi * ms + (co * N + j) * L), a) };
                    }
                }
            }
        }
        // y = A^T M A per tile, interleaved back into pixel order
        for co in 0..s.cout {
            // SAFETY: co < cout: the plane lies inside `y`.
            let yp = unsafe { y.add(co * s.p) };
            for (j, &(_, [lo, hi])) in offs.iter().enumerate() {
                // SAFETY: inside `m` (see above).
                let mm = |xi: usize| unsafe { _mm256_loadu_ps(m.add(xi * ms + (co * N + j) * L)) };
                // A^T M: over rows, column by column
                let cols: [[__m256; 2]; 4] = std::array::from_fn(|k| {
                    let (m0, m1, m2, m3) = (mm(k), mm(4 + k), mm(8 + k), mm(12 + k));
                    [
                        _mm256_add_ps(_mm256_add_ps(m0, m1), m2),
                        _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3),
                    ]
                });
                let sr: [[__m256; 4]; 2] = std::array::from_fn(|a| cols.map(|c| c[a]));
                for (a, r) in sr.iter().enumerate() {
                    let y0 = _mm256_add_ps(_mm256_add_ps(r[0], r[1]), r[2]);
                    let y1 = _mm256_sub_ps(_mm256_sub_ps(r[1], r[2]), r[3]);
                    let (ul, uh) = (_mm256_unpacklo_ps(y0, y1), _mm256_unpackhi_ps(y0, y1));
                    // SAFETY: output row 2 ty + a < h, and 8 pixels from `lo` / `hi` stay on
                    // that row (or, split, on row 2 ty + 2 + a) of this plane.
                    unsafe {
                        _mm256_storeu_ps(
                            yp.add(lo + a * s.w),
                            _mm256_permute2f128_ps::<0x20>(ul, uh),
                        );
                        _mm256_storeu_ps(
                            yp.add(hi + a * s.w),
                            _mm256_permute2f128_ps::<0x31>(ul, uh),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! The scalar twin and the exact convolution, for this file's and
    //! [`super::super::conv_winograd_avx512`]'s tests.

    use super::{weights, XI};

    /// The scalar twin: per tile the same transforms in the same order and the same chain of
    /// fused multiply-adds over `ci`, so the same bits.
    pub(crate) fn twin(
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        wt: &[f32],
        x: &[f32],
    ) -> Vec<f32> {
        let u = weights(wt, cin, cout, 1);
        let at = |ci: usize, r: isize, c: isize| {
            if r >= 0 && r < h as isize && c >= 0 && c < w as isize {
                x[ci * h * w + r as usize * w + c as usize]
            } else {
                0.0
            }
        };
        let mut y = vec![0f32; cout * h * w];
        for ty in 0..h / 2 {
            for tx in 0..w / 2 {
                let mut vt = vec![[0f32; XI]; cin];
                for (ci, vt) in vt.iter_mut().enumerate() {
                    let d: [[f32; 4]; 4] = std::array::from_fn(|i| {
                        std::array::from_fn(|k| {
                            at(ci, (2 * ty + i) as isize - 1, (2 * tx + k) as isize - 1)
                        })
                    });
                    let mut t = [[0f32; 4]; 4];
                    for k in 0..4 {
                        t[0][k] = d[0][k] - d[2][k];
                        t[1][k] = d[1][k] + d[2][k];
                        t[2][k] = d[2][k] - d[1][k];
                        t[3][k] = d[1][k] - d[3][k];
                    }
                    for (i, t) in t.iter().enumerate() {
                        vt[i * 4] = t[0] - t[2];
                        vt[i * 4 + 1] = t[1] + t[2];
                        vt[i * 4 + 2] = t[2] - t[1];
                        vt[i * 4 + 3] = t[1] - t[3];
                    }
                }
                for co in 0..cout {
                    let mm: [f32; XI] = std::array::from_fn(|xi| {
                        (0..cin).fold(0f32, |acc, ci| {
                            vt[ci][xi].mul_add(u[(xi * cout + co) * cin + ci], acc)
                        })
                    });
                    for a in 0..2 {
                        let r: [f32; 4] = std::array::from_fn(|k| {
                            let (m0, m1, m2, m3) = (mm[k], mm[4 + k], mm[8 + k], mm[12 + k]);
                            if a == 0 {
                                m0 + m1 + m2
                            } else {
                                m1 - m2 - m3
                            }
                        });
                        let row = &mut y[co * h * w + (2 * ty + a) * w + 2 * tx..][..2];
                        row[0] = r[0] + r[1] + r[2];
                        row[1] = r[1] - r[2] - r[3];
                    }
                }
            }
        }
        y
    }

    /// The direct convolution in f64 (`[cout, h * w]`).
    pub(crate) fn exact(
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        wt: &[f32],
        x: &[f32],
    ) -> Vec<f64> {
        let mut y = vec![0f64; cout * h * w];
        for co in 0..cout {
            for r in 0..h as isize {
                for c in 0..w as isize {
                    let mut acc = 0f64;
                    for ci in 0..cin {
                        for t in 0..9 {
                            let (sr, sc) = (r + t / 3 - 1, c + t % 3 - 1);
                            if sr >= 0 && sr < h as isize && sc >= 0 && sc < w as isize {
                                let xv = x[ci * h * w + (sr * w as isize + sc) as usize];
                                let wv = wt[(co * cin + ci) * 9 + t as usize];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[co * h * w + (r * w as isize + c) as usize] = acc;
                }
            }
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{exact, twin};
    use super::*;
    use crate::ops::conv_util::test_values as values;

    const SHAPES: [(usize, usize, usize, usize); 7] = [
        (16, 32, 32, 16),
        (32, 16, 16, 32),
        (64, 8, 8, 64),
        (8, 2, 16, 8),
        (11, 4, 8, 4),
        (8, 6, 48, 12),
        (9, 12, 8, 20),
    ];

    /// Bit for bit against the scalar twin (the network's shapes, blocks of 1, 2 and 3 tile
    /// vectors, split 8-wide planes), and within f32 rounding of the exact convolution.
    #[test]
    fn image_matches_scalar_twin_and_the_convolution() {
        if !crate::ops::conv_direct_avx2::available() {
            eprintln!("no AVX2+FMA: the Winograd kernel is not tested");
            return;
        }
        for (i, &(cin, h, w, cout)) in SHAPES.iter().enumerate() {
            assert!(takes(cin, h, w, cout), "{cin} {h} {w} {cout}");
            let x = values(cin * h * w, 2 * i as u64);
            let wt = values(cout * cin * 9, 2 * i as u64 + 1);
            let mut y = vec![MaybeUninit::new(f32::NAN); cout * h * w];
            image(cin, cout, h, w, &weights(&wt, cin, cout, CB), &x, &mut y);
            // SAFETY: written whole by `image` (NaN would show otherwise).
            let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
            let want = twin(cin, cout, h, w, &wt, &x);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&want), "cin {cin} h {h} w {w} cout {cout}");
            let ex = exact(cin, cout, h, w, &wt, &x);
            let max = ex.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (k, (&a, &b)) in y.iter().zip(&ex).enumerate() {
                assert!(
                    (a as f64 - b).abs() <= 1e-5 * max,
                    "cin {cin} h {h} w {w} cout {cout} at {k}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn takes_the_resnet_planes_only() {
        assert!(takes(16, 32, 32, 16) && takes(32, 16, 16, 32) && takes(64, 8, 8, 64));
        assert!(!takes(3, 32, 32, 16), "the stem's 3 channels");
        assert!(!takes(8, 7, 16, 8), "odd height");
        assert!(!takes(8, 6, 8, 8), "8 wide needs pairs of tile rows");
        assert!(!takes(8, 4, 24, 8), "12 tiles per row");
        assert!(!takes(8, 4, 16, 6), "cout");
    }

    #[test]
    fn pad_splits_even_and_odd_padded_columns() {
        // 1 plane of 2 x 4: padded rows of 6, split into 3 evens and 3 odds
        let x: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let mut out = vec![7.0; 5];
        pad(&x, 1, 2, 4, &mut out);
        #[rustfmt::skip]
        let want = [
            0., 0., 0., 0., 0., 0.,
            0., 2., 4., 1., 3., 0.,
            0., 6., 8., 5., 7., 0.,
            0., 0., 0., 0., 0., 0.,
        ];
        assert_eq!(out, want);
        // a longer, dirty buffer; rows long enough for the vector split (48 = 3 x 16)
        for (cin, h, w) in [(1, 2, 4), (3, 5, 48), (2, 4, 8)] {
            let x = values(cin * h * w, 9);
            let mut out = vec![f32::NAN; 10_000];
            pad(&x, cin, h, w, &mut out);
            let half = w / 2 + 1;
            let mut want = vec![0f32; cin * (h + 2) * 2 * half];
            for ci in 0..cin {
                for r in 0..h {
                    for c in 0..w {
                        let pc = c + 1; // padded column
                        let at = (ci * (h + 2) + r + 1) * 2 * half + (pc % 2) * half + pc / 2;
                        want[at] = x[(ci * h + r) * w + c];
                    }
                }
            }
            assert_eq!(out, want, "cin {cin} h {h} w {w}");
        }
    }
}
