//! Direct 3x3 stride-1 "same" convolutions (padding 1) with AVX-512 register blocking.
//!
//! The im2col / shifted-copy paths ([`super::conv_same`], [`super::im2col`]) first copy the
//! input into a column matrix and then run a GEMM whose depth is only `Cin * 3` or
//! `Cin * 9`, `K` times per image. Here the micro-kernel reads the input planes in place:
//! an output block of three vectors of 16 consecutive pixels times [`CB`] output channels
//! stays in 24 of the 32 `zmm` registers while the kernel walks every input channel and
//! tap, loading each shifted input vector once (a masked load: lanes whose source pixel lies
//! in the zero padding, above, below, left or right of the plane, read nothing) and
//! broadcasting each weight once. No copy, one pass over the output, no GEMM call overhead.
//!
//! Every output element is one chain of fused multiply-adds over `(ci, kh, kw)` in that
//! order, started from zero, so results do not depend on the number of threads (work is
//! split by image only) nor on the blocking. They differ from the GEMM paths' by rounding.
//!
//! Used for the forward and (as the convolution of `dy` with the transposed weight, see
//! [`super::conv_util::transposed`]) the input gradient where [`applies`]: a CPU with
//! AVX-512F in a build with the `avx512` feature, planes whose pixel count is a multiple of
//! 16 and output channels a multiple of [`CB`] (every 3x3 stride-1 convolution of the
//! CIFAR ResNets).

use std::mem::MaybeUninit;

use super::channel::PlaneMoments;
use super::conv::{per_image, Epilogue};
use super::im2col::ConvGeom;
#[cfg(test)]
use super::storage::assume_init_mut;

/// Output channels per register block.
const CB: usize = 8;
/// Lanes per vector.
const L: usize = 16;

/// `true` when `g` is a 3x3, stride-1, padding-1 convolution this kernel takes on this CPU.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    g.k == 3
        && g.stride == 1
        && g.pad == 1
        && g.p().is_multiple_of(L)
        && g.cout.is_multiple_of(CB)
        && available()
}

/// Whether the AVX-512 kernels can run here (`avx512` feature and AVX-512F); also for
/// [`super::conv_wgrad`].
pub(crate) fn available() -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
    {
        false
    }
}

/// A convolution prepared for [`Direct::image`]: the weight regrouped per block of [`CB`]
/// output channels and the load masks of every pixel vector and tap.
#[cfg_attr(
    not(all(target_arch = "x86_64", feature = "avx512")),
    allow(dead_code, reason = "read by the AVX-512 kernel only")
)]
pub(crate) struct Direct {
    cin: usize,
    cout: usize,
    p: usize,
    /// `wd[((cb * cin + ci) * 9 + t) * CB + c] = w[cb * CB + c, ci, t / 3, t % 3]`.
    wd: Vec<f32>,
    /// `masks[v * 9 + t]`: the lanes of pixel vector `v` whose source for tap `t` is inside
    /// the plane.
    masks: Vec<u16>,
    /// Offset of tap `t`'s source pixel from the output pixel.
    offs: [isize; 9],
}

impl Direct {
    /// Prepares the convolution `g` (which must satisfy [`applies`]) with weight `w`
    /// (`[cout, cin, 3, 3]`).
    pub(crate) fn new(g: &ConvGeom, w: &[f32]) -> Self {
        debug_assert!(applies(g));
        let (cin, cout, h, wd) = (g.cin, g.cout, g.h, g.w);
        let mut wr = vec![0f32; w.len()];
        for co in 0..cout {
            for ci in 0..cin {
                for t in 0..9 {
                    let (cb, c) = (co / CB, co % CB);
                    wr[((cb * cin + ci) * 9 + t) * CB + c] = w[(co * cin + ci) * 9 + t];
                }
            }
        }
        let p = h * wd;
        let mut masks = vec![0u16; p / L * 9];
        for (v, m) in masks.chunks_mut(9).enumerate() {
            for (t, m) in m.iter_mut().enumerate() {
                let (dh, dw) = ((t / 3) as isize - 1, (t % 3) as isize - 1);
                for lane in 0..L {
                    let q = v * L + lane;
                    let (r, c) = ((q / wd) as isize + dh, (q % wd) as isize + dw);
                    if r >= 0 && r < h as isize && c >= 0 && c < wd as isize {
                        *m |= 1 << lane;
                    }
                }
            }
        }
        let offs =
            std::array::from_fn(|t| ((t / 3) as isize - 1) * wd as isize + (t % 3) as isize - 1);
        Self {
            cin,
            cout,
            p,
            wd: wr,
            masks,
            offs,
        }
    }

    /// Writes the whole output image `y` (`[cout, p]`) of the input image `x` (`[cin, p]`).
    pub(crate) fn image(&self, x: &[f32], y: &mut [MaybeUninit<f32>]) {
        assert_eq!(
            x.len(),
            self.cin * self.p,
            "conv_direct: input image length"
        );
        assert_eq!(
            y.len(),
            self.cout * self.p,
            "conv_direct: output image length"
        );
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        {
            assert!(available(), "conv_direct: AVX-512F not available");
            // SAFETY: AVX-512F is available (checked above); the lengths were checked.
            unsafe { avx512::image(self, x.as_ptr(), y.as_mut_ptr().cast()) }
        }
        #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
        unreachable!("conv_direct::applies is false without AVX-512")
    }
}

/// The convolution `g` (which must satisfy [`applies`]) of every image, each then finished
/// by `ep` right after its kernel (with [`Epilogue::Moments`] the moments of every output
/// plane come back, `[n][cout]`; empty otherwise).
pub(crate) fn forward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    ep: Epilogue<'_>,
) -> (Vec<f32>, Vec<PlaneMoments>) {
    let d = Direct::new(g, w);
    per_image(g, x, ep, |x, y| d.image(x, y))
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Direct, CB, L};

    /// Pixel vectors (16 pixels each) per register block: `PB * CB` accumulators.
    const PB: usize = 3;

    /// Every output block of one image, pixel blocks outer (the input rows they read stay in
    /// L1 while every block of output channels passes over them).
    ///
    /// # Safety
    /// AVX-512F available; `x` holds `cin * p` and `y` `cout * p` elements.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image(d: &Direct, x: *const f32, y: *mut f32) {
        let nv = d.p / L;
        let full = nv / PB * PB;
        for v0 in (0..full).step_by(PB) {
            for cb in 0..d.cout / CB {
                // SAFETY: forwarded from the caller; v0 + PB <= nv.
                unsafe { block::<PB>(d, x, y, v0, cb) };
            }
        }
        for v0 in full..nv {
            for cb in 0..d.cout / CB {
                // SAFETY: as above; v0 < nv.
                unsafe { block::<1>(d, x, y, v0, cb) };
            }
        }
    }

    /// Output channels `cb * CB ..` at pixel vectors `v0 .. v0 + P`: `P * CB` accumulators.
    ///
    /// # Safety
    /// As [`image`], and `v0 + P <= p / L`, `cb < cout / CB`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const P: usize>(d: &Direct, x: *const f32, y: *mut f32, v0: usize, cb: usize) {
        let mut acc = [[_mm512_setzero_ps(); CB]; P];
        let masks = &d.masks[v0 * 9..][..P * 9];
        let wb = &d.wd[cb * d.cin * 9 * CB..][..d.cin * 9 * CB];
        for ci in 0..d.cin {
            // SAFETY: ci < cin, so the plane lies inside `x`.
            let plane = unsafe { x.add(ci * d.p) };
            let wc = &wb[ci * 9 * CB..][..9 * CB];
            for t in 0..9 {
                let mut xv = [_mm512_setzero_ps(); P];
                for (j, xv) in xv.iter_mut().enumerate() {
                    let at = plane.wrapping_offset(((v0 + j) * L) as isize + d.offs[t]);
                    // SAFETY: the lanes set in the mask read pixels inside this plane (their
                    // source row and column exist); masked-off lanes are not accessed.
                    *xv = unsafe { _mm512_maskz_loadu_ps(masks[j * 9 + t], at) };
                }
                for c in 0..CB {
                    let wv = _mm512_set1_ps(wc[t * CB + c]);
                    for j in 0..P {
                        acc[j][c] = _mm512_fmadd_ps(xv[j], wv, acc[j][c]);
                    }
                }
            }
        }
        for c in 0..CB {
            for (j, acc) in acc.iter().enumerate() {
                // SAFETY: channel cb * CB + c < cout and pixel vector v0 + j < p / L.
                unsafe { _mm512_storeu_ps(y.add((cb * CB + c) * d.p + (v0 + j) * L), acc[c]) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The scalar twin: the same chain of fused multiply-adds per output element (`(ci, kh,
    /// kw)` in order, a zero for a tap in the padding), so the same bits.
    fn slow(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
        let (h, wd, p) = (g.h as isize, g.w as isize, g.p());
        let mut y = vec![0f32; g.cout * p];
        for co in 0..g.cout {
            for q in 0..p {
                let (r, c) = ((q / g.w) as isize, (q % g.w) as isize);
                let mut acc = 0f32;
                for ci in 0..g.cin {
                    for t in 0..9 {
                        let (sr, sc) = (r + t as isize / 3 - 1, c + t as isize % 3 - 1);
                        let v = if sr >= 0 && sr < h && sc >= 0 && sc < wd {
                            x[ci * p + (sr * wd + sc) as usize]
                        } else {
                            0.0
                        };
                        acc = v.mul_add(w[(co * g.cin + ci) * 9 + t], acc);
                    }
                }
                y[co * p + q] = acc;
            }
        }
        y
    }

    /// Bit for bit against the scalar twin: the network's shapes, rows shorter and longer
    /// than a vector (vectors across row ends, planes of one vector), the stem's 3 channels.
    #[test]
    fn image_matches_scalar_twin() {
        for (i, &(cin, h, w, cout)) in [
            (3, 32, 32, 16),
            (16, 32, 32, 16),
            (32, 16, 16, 32),
            (64, 8, 8, 64),
            (5, 4, 12, 8),
            (4, 2, 8, 16),
            (7, 1, 16, 8),
            (2, 3, 48, 24),
        ]
        .iter()
        .enumerate()
        {
            let g = ConvGeom::new(&[1, cin, h, w], &[cout, cin, 3, 3], 1, 1).unwrap();
            if !applies(&g) {
                eprintln!("no AVX-512F here: the direct kernel is not tested");
                return;
            }
            let x = values(cin * h * w, 2 * i as u64);
            let wt = values(cout * cin * 9, 2 * i as u64 + 1);
            let mut y = vec![MaybeUninit::new(f32::NAN); cout * h * w];
            Direct::new(&g, &wt).image(&x, &mut y);
            // SAFETY: written whole by `image`.
            let y = unsafe { assume_init_mut(&mut y) };
            let want = slow(&g, &x, &wt);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(y), bits(&want), "cin {cin} h {h} w {w} cout {cout}");
        }
    }

    /// Single-thread rate of the kernel at ResNet-20's shapes (not a test: `cargo test
    /// --release -p resnet-model --lib conv_direct -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn kernel_speed() {
        for (cin, hw, cout) in [(3, 32, 16), (16, 32, 16), (32, 16, 32), (64, 8, 64)] {
            let g = ConvGeom::new(&[1, cin, hw, hw], &[cout, cin, 3, 3], 1, 1).unwrap();
            if !applies(&g) {
                return;
            }
            let (x, w) = (values(cin * hw * hw, 1), values(cout * cin * 9, 2));
            let d = Direct::new(&g, &w);
            let mut y = vec![MaybeUninit::new(0f32); cout * hw * hw];
            let reps = 2000;
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    d.image(std::hint::black_box(&x), &mut y);
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            let flops = 2.0 * (cin * cout * 9 * hw * hw) as f64 * reps as f64;
            println!(
                "{cin}->{cout} at {hw}x{hw}: {:.1} GFLOP/s",
                flops / best / 1e9
            );
        }
    }
}
