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
//! CIFAR ResNets). Elsewhere, on a CPU with AVX2 and FMA, its twin
//! [`super::conv_direct_avx2`] takes planes whose width is a multiple of 8 (the same
//! convolutions), with the same bits.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, PoisonError};

use super::channel::PlaneMoments;
use super::conv::{per_image, Epilogue};
use super::conv_direct_avx2 as avx2;
use super::conv_winograd_avx2 as wino;
use super::conv_winograd_avx512 as wino512;
use super::im2col::ConvGeom;
#[cfg(test)]
use super::storage::assume_init_mut;
use super::storage::fused_winograd_on;

/// Output channels per register block.
const CB: usize = 8;
/// Lanes per vector.
const L: usize = 16;

/// The kernel a [`Direct`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// 16-lane vectors, masked loads (this file).
    Avx512,
    /// 8-lane vectors on a zero-padded copy ([`super::conv_direct_avx2`]).
    Avx2,
    /// Fused Winograd F(2x2, 3x3), 16 tiles per vector ([`super::conv_winograd_avx512`]).
    Avx512Winograd,
    /// Fused Winograd F(2x2, 3x3), 8 tiles per vector ([`super::conv_winograd_avx2`]): not
    /// a direct convolution, the same interface.
    Avx2Winograd,
}

impl Isa {
    /// Output channels per register block.
    fn cb(self) -> usize {
        match self {
            Isa::Avx512 => CB,
            Isa::Avx2 => avx2::CB,
            Isa::Avx2Winograd => wino::CB,
            Isa::Avx512Winograd => wino512::CB,
        }
    }

    /// Whether this kernel runs here and takes the 3x3 stride-1 padding-1 convolution `g`.
    fn takes(self, g: &ConvGeom) -> bool {
        let same3 = g.k == 3 && g.stride == 1 && g.pad == 1;
        same3
            && match self {
                Isa::Avx512 => {
                    g.p().is_multiple_of(L) && g.cout.is_multiple_of(CB) && avx512_available()
                }
                Isa::Avx2 => avx2::takes(g.w, g.cout) && avx2::available(),
                Isa::Avx512Winograd => {
                    wino512::takes(g.cin, g.h, g.w, g.cout)
                        && avx512_available()
                        && fused_winograd_on()
                }
                Isa::Avx2Winograd => {
                    wino::takes(g.cin, g.h, g.w, g.cout) && avx2::available() && fused_winograd_on()
                }
            }
    }
}

/// The kernel for `g` on this CPU (AVX-512 where it runs, else AVX2; for each, Winograd where
/// it takes the shape, else direct), if any.
fn isa_for(g: &ConvGeom) -> Option<Isa> {
    [
        Isa::Avx512Winograd,
        Isa::Avx512,
        Isa::Avx2Winograd,
        Isa::Avx2,
    ]
    .into_iter()
    .find(|i| i.takes(g))
}

/// `true` when `g` is a 3x3, stride-1, padding-1 convolution a direct kernel takes on this
/// CPU.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    isa_for(g).is_some()
}

/// The name of the kernel that runs `g` here ([`super::conv3x3_kernels`]), `"gemm"` where none
/// does.
pub(crate) fn kernel_name(g: &ConvGeom) -> &'static str {
    match isa_for(g) {
        Some(Isa::Avx512Winograd) => "avx512-winograd",
        Some(Isa::Avx512) => "avx512-direct",
        Some(Isa::Avx2Winograd) => "avx2-winograd",
        Some(Isa::Avx2) => "avx2-direct",
        None => "gemm",
    }
}

/// Whether the AVX-512 kernels can run here (`avx512` feature and AVX-512F); also for
/// [`super::conv_wgrad`].
pub(crate) fn avx512_available() -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
    {
        false
    }
}

/// The AVX-512 kernel's load masks of an `h x w` plane (see [`Direct`]'s `masks`): built once
/// per plane size and shared, since `Direct::new` runs on the calling thread for every
/// convolution of a step while the workers wait.
fn load_masks(h: usize, w: usize) -> Arc<[u16]> {
    type Cache = Vec<((usize, usize), Arc<[u16]>)>;
    static CACHE: Mutex<Cache> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, m)) = cache.iter().find(|(k, _)| *k == (h, w)) {
        return Arc::clone(m);
    }
    let mut masks = vec![0u16; h * w / L * 9];
    for (v, m) in masks.chunks_mut(9).enumerate() {
        for (t, m) in m.iter_mut().enumerate() {
            let (dh, dw) = ((t / 3) as isize - 1, (t % 3) as isize - 1);
            for lane in 0..L {
                let q = v * L + lane;
                let (r, c) = ((q / w) as isize + dh, (q % w) as isize + dw);
                if r >= 0 && r < h as isize && c >= 0 && c < w as isize {
                    *m |= 1 << lane;
                }
            }
        }
    }
    let masks: Arc<[u16]> = masks.into();
    cache.push(((h, w), Arc::clone(&masks)));
    masks
}

/// A convolution prepared for [`Direct::image`]: the weight regrouped per block of output
/// channels and, for AVX-512, the load masks of every pixel vector and tap.
pub(crate) struct Direct {
    isa: Isa,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    /// `wd[((cb * cin + ci) * 9 + t) * B + c] = w[cb * B + c, ci, t / 3, t % 3]`, `B` =
    /// `isa.cb()`; for [`Isa::Avx2Winograd`] and [`Isa::Avx512Winograd`] the transformed weight of
    /// [`super::conv_winograd_avx2::weights`].
    wd: Vec<f32>,
    /// AVX-512 only: `masks[v * 9 + t]`, the lanes of pixel vector `v` whose source for tap
    /// `t` is inside the plane.
    #[cfg_attr(
        not(all(target_arch = "x86_64", feature = "avx512")),
        allow(dead_code, reason = "read by the AVX-512 kernel only")
    )]
    masks: Arc<[u16]>,
    /// Offset of tap `t`'s source pixel from the output pixel.
    #[cfg_attr(
        not(all(target_arch = "x86_64", feature = "avx512")),
        allow(dead_code, reason = "read by the AVX-512 kernel only")
    )]
    offs: [isize; 9],
}

impl Direct {
    /// Prepares the convolution `g` (which must satisfy [`applies`]) with weight `w`
    /// (`[cout, cin, 3, 3]`) for this CPU's kernel.
    pub(crate) fn new(g: &ConvGeom, w: &[f32]) -> Self {
        let isa = isa_for(g).expect("conv_direct::Direct::new: no direct kernel for this");
        Self::with_isa(g, w, isa)
    }

    /// As [`Direct::new`] with the kernel `isa`, which must take `g`.
    pub(crate) fn with_isa(g: &ConvGeom, w: &[f32], isa: Isa) -> Self {
        assert!(
            isa.takes(g),
            "conv_direct: the {isa:?} kernel does not take {g:?}"
        );
        let (cin, cout, h, wd) = (g.cin, g.cout, g.h, g.w);
        let wr = match isa {
            Isa::Avx2Winograd | Isa::Avx512Winograd => wino::weights(w, cin, cout, isa.cb()),
            Isa::Avx512 | Isa::Avx2 => {
                let b = isa.cb();
                let mut wr = vec![0f32; w.len()];
                for co in 0..cout {
                    for ci in 0..cin {
                        for t in 0..9 {
                            let (cb, c) = (co / b, co % b);
                            wr[((cb * cin + ci) * 9 + t) * b + c] = w[(co * cin + ci) * 9 + t];
                        }
                    }
                }
                wr
            }
        };
        let masks = if isa == Isa::Avx512 {
            load_masks(h, wd)
        } else {
            Arc::from([])
        };
        let offs =
            std::array::from_fn(|t| ((t / 3) as isize - 1) * wd as isize + (t % 3) as isize - 1);
        Self {
            isa,
            cin,
            cout,
            h,
            w: wd,
            wd: wr,
            masks,
            offs,
        }
    }

    /// Writes the whole output image `y` (`[cout, p]`) of the input image `x` (`[cin, p]`).
    pub(crate) fn image(&self, x: &[f32], y: &mut [MaybeUninit<f32>]) {
        let p = self.h * self.w;
        assert_eq!(x.len(), self.cin * p, "conv_direct: input image length");
        assert_eq!(y.len(), self.cout * p, "conv_direct: output image length");
        match self.isa {
            Isa::Avx2 => avx2::image(self.cin, self.cout, self.h, self.w, &self.wd, x, y),
            Isa::Avx2Winograd => wino::image(self.cin, self.cout, self.h, self.w, &self.wd, x, y),
            Isa::Avx512Winograd => {
                wino512::image(self.cin, self.cout, self.h, self.w, &self.wd, x, y)
            }
            Isa::Avx512 => {
                #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
                {
                    assert!(avx512_available(), "conv_direct: AVX-512F not available");
                    // SAFETY: AVX-512F is available (checked above); the lengths were checked.
                    unsafe { avx512::image(self, x.as_ptr(), y.as_mut_ptr().cast()) }
                }
                #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
                unreachable!("conv_direct: Isa::Avx512 is never chosen without AVX-512")
            }
        }
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
        let nv = d.h * d.w / L;
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
        let p = d.h * d.w;
        let masks = &d.masks[v0 * 9..][..P * 9];
        let wb = &d.wd[cb * d.cin * 9 * CB..][..d.cin * 9 * CB];
        for ci in 0..d.cin {
            // SAFETY: ci < cin, so the plane lies inside `x`.
            let plane = unsafe { x.add(ci * p) };
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
                unsafe { _mm512_storeu_ps(y.add((cb * CB + c) * p + (v0 + j) * L), acc[c]) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ops::conv_util::test_values as values;

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

    /// Bit for bit against the scalar twin, with every kernel this CPU runs: the network's
    /// shapes, rows shorter and longer than a vector (vectors across row ends, planes of one
    /// vector), the stem's 3 channels, blocks left over at the end of the plane.
    #[test]
    fn image_matches_scalar_twin() {
        let mut tested = 0;
        for isa in [Isa::Avx512, Isa::Avx2] {
            for (i, &(cin, h, w, cout)) in [
                (3, 32, 32, 16),
                (16, 32, 32, 16),
                (32, 16, 16, 32),
                (64, 8, 8, 64),
                (5, 4, 12, 8),
                (4, 2, 8, 16),
                (7, 1, 16, 8),
                (2, 3, 48, 24),
                (3, 5, 8, 4),
                (6, 7, 24, 12),
            ]
            .iter()
            .enumerate()
            {
                let g = ConvGeom::new(&[1, cin, h, w], &[cout, cin, 3, 3], 1, 1).unwrap();
                if !isa.takes(&g) {
                    continue;
                }
                let x = values(cin * h * w, 2 * i as u64);
                let wt = values(cout * cin * 9, 2 * i as u64 + 1);
                let mut y = vec![MaybeUninit::new(f32::NAN); cout * h * w];
                Direct::with_isa(&g, &wt, isa).image(&x, &mut y);
                // SAFETY: written whole by `image`.
                let y = unsafe { assume_init_mut(&mut y) };
                let want = slow(&g, &x, &wt);
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(y),
                    bits(&want),
                    "{isa:?}: cin {cin} h {h} w {w} cout {cout}"
                );
                tested += 1;
            }
        }
        if tested == 0 {
            eprintln!("neither AVX-512F nor AVX2: the direct kernels are not tested");
        }
    }

    /// A width that is not a multiple of 8 is for the AVX-512 kernel (when its pixel count
    /// is a multiple of 16) or the GEMM paths, never the AVX2 kernel.
    #[test]
    fn avx2_kernel_needs_whole_vectors_per_row() {
        let g = ConvGeom::new(&[1, 5, 4, 12], &[8, 5, 3, 3], 1, 1).unwrap();
        assert!(!Isa::Avx2.takes(&g));
        let g = ConvGeom::new(&[1, 5, 4, 16], &[6, 5, 3, 3], 1, 1).unwrap();
        assert!(!Isa::Avx2.takes(&g), "cout not a multiple of 4");
        let g = ConvGeom::new(&[1, 5, 4, 16], &[8, 5, 3, 3], 2, 1).unwrap();
        assert!(!Isa::Avx2.takes(&g) && !Isa::Avx512.takes(&g), "stride 2");
    }

    /// Single-thread rate of each kernel at ResNet-20's shapes (not a test: `cargo test
    /// --release -p resnet-model --lib conv_direct -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn kernel_speed() {
        for isa in [
            Isa::Avx512,
            Isa::Avx512Winograd,
            Isa::Avx2,
            Isa::Avx2Winograd,
        ] {
            for (cin, hw, cout) in [(3, 32, 16), (16, 32, 16), (32, 16, 32), (64, 8, 64)] {
                let g = ConvGeom::new(&[1, cin, hw, hw], &[cout, cin, 3, 3], 1, 1).unwrap();
                if !isa.takes(&g) {
                    continue;
                }
                let (x, w) = (values(cin * hw * hw, 1), values(cout * cin * 9, 2));
                let d = Direct::with_isa(&g, &w, isa);
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
                    "{isa:?} {cin}->{cout} at {hw}x{hw}: {:.1} GFLOP/s",
                    flops / best / 1e9
                );
            }
        }
    }
}
