//! The weight gradient of a "same" convolution ([`super::conv_same`]) with AVX-512 (or,
//! without it, AVX2) register blocking, where the `gemm` crate's micro-kernels are short of
//! registers.
//!
//! Per image and tap row `kh'`, the fused backward needs
//! `partial[kh'][(co, kw')][ci] = Σ_p x[ci, p] · z[(co, kw'), kh' * w + p]` (`z`: the
//! kw-shifted, row-padded copies of `dy`, see [`super::conv_same`]). As a GEMM this has
//! `Cin` rows: 16 at ResNet-20's first stage, one AVX-512 register, for which the `gemm`
//! crate runs its `x1x6` micro-kernel: six accumulators (too few to hide the FMA latency)
//! and seven loads per six FMAs. Here the kernel keeps 24 accumulators: `V` (1 or 2) vectors of 16
//! input channels times `24 / V` columns `(co, kw', kh')` (the three `kh'` of a `z` row are
//! the same row read `w` apart), and for every pixel loads `V` vectors of `x^T` and
//! broadcasts 24 / V values of `z`. The AVX2 twin (16 registers of 8 lanes) keeps 12: two
//! vectors of 8 input channels times two `z` rows times three `kh'`.
//!
//! Every element is one chain of fused multiply-adds over the pixels in order, so the result
//! does not depend on the number of threads (work is split by image); it differs from the
//! GEMM's by rounding.

use std::mem::MaybeUninit;

use super::im2col::ConvGeom;

/// Accumulator registers per block of the AVX-512 kernel (the AVX2 one has 12: two vectors
/// of 8 input channels times two `z` rows times three `kh'`).
const ACC: usize = 24;

/// The kernel that takes a convolution, and its blocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// `v` vectors of 16 input channels per block.
    Avx512 { v: usize },
    /// Two vectors of 8 input channels, two `z` rows per block.
    Avx2,
}

impl Kernel {
    /// Whether this kernel runs on this CPU and its blocking fits `ck = cout * 3` columns.
    fn runs_with(self, ck: usize) -> bool {
        match self {
            Kernel::Avx512 { v } => {
                super::conv_direct::avx512_available() && ck.is_multiple_of(ACC / (v * 3))
            }
            Kernel::Avx2 => super::conv_direct_avx2::available() && ck.is_multiple_of(2),
        }
    }
}

/// The kernel for `g` on this CPU: AVX-512 where it runs and its blocking fits, else AVX2
/// (`None` without either, or when `g` is not a 3x3 convolution at 32x32 with 16 input
/// channels or 16x16 with 32, or `Cout * K` is not a multiple of the block's `z` rows).
fn kernel(g: &ConvGeom) -> Option<Kernel> {
    if g.k != 3 {
        return None;
    }
    // the plane sizes the kernels are compiled for (their `z` offsets are constants)
    let v = match (g.cin, g.h, g.w) {
        (16, 32, 32) => 1,
        (32, 16, 16) => 2,
        _ => return None,
    };
    let ck = g.cout * g.k;
    [Kernel::Avx512 { v }, Kernel::Avx2]
        .into_iter()
        .find(|k| k.runs_with(ck))
}

/// `true` when a kernel here takes `g`'s weight gradient.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    kernel(g).is_some()
}

/// The name of the kernel that takes `g`'s weight gradient here
/// ([`super::conv3x3_wgrad_kernels`]), `None` where none does.
pub(crate) fn kernel_name(g: &ConvGeom) -> Option<&'static str> {
    kernel(g).map(|k| match k {
        Kernel::Avx512 { .. } => "avx512-direct",
        Kernel::Avx2 => "avx2-direct",
    })
}

/// Writes one image's whole `partial` (`[kh'][(co, kw')][ci]`, `3 * cout * 3 * cin`
/// elements) from `xt` (`x` transposed, `[p][cin]`) and `z` (`[(co, kw')][z_rows][w]`,
/// `ld = z_rows * w` apart). `g` must satisfy [`applies`].
pub(crate) fn image(
    g: &ConvGeom,
    xt: &[f32],
    z: &[f32],
    ld: usize,
    partial: &mut [MaybeUninit<f32>],
) {
    let k = kernel(g).expect("conv_wgrad::image: no kernel takes this convolution");
    image_with(k, g, xt, z, ld, partial);
}

/// [`image`] with the kernel `k`, which must be one [`kernel`] could pick here.
fn image_with(
    k: Kernel,
    g: &ConvGeom,
    xt: &[f32],
    z: &[f32],
    ld: usize,
    partial: &mut [MaybeUninit<f32>],
) {
    let (p, ck) = (g.p(), g.cout * g.k);
    assert!(xt.len() >= p * g.cin, "conv_wgrad: x^T too short");
    assert!(
        ld >= p + 2 * g.w && z.len() >= (ck - 1) * ld + p + 2 * g.w,
        "conv_wgrad: z too short"
    );
    assert_eq!(
        partial.len(),
        g.k * ck * g.cin,
        "conv_wgrad: partial length"
    );
    let big = (g.cin, g.h, g.w) == (16, 32, 32);
    assert!(
        big || (g.cin, g.h, g.w) == (32, 16, 16),
        "conv_wgrad: not a shape the kernels are compiled for"
    );
    assert_eq!(
        ld,
        (g.h + 2) * g.w,
        "conv_wgrad: z rows apart (compiled in)"
    );
    match k {
        Kernel::Avx512 { .. } => {
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            {
                assert!(
                    k.runs_with(ck),
                    "conv_wgrad: AVX-512 kernel not available or blocking does not fit"
                );
                let args = (g, xt.as_ptr(), z.as_ptr(), ld, partial.as_mut_ptr().cast());
                // SAFETY: AVX-512F is available and the blocking fits (checked above); the
                // buffer sizes were checked above and every block stays inside them (see
                // `avx512::image`).
                unsafe {
                    match big {
                        true => avx512::image::<1, 8, 32, { 34 * 32 }>(args),
                        false => avx512::image::<2, 4, 16, { 18 * 16 }>(args),
                    }
                }
            }
            #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
            unreachable!("conv_wgrad: {k:?} without AVX-512")
        }
        Kernel::Avx2 => {
            assert!(
                k.runs_with(ck),
                "conv_wgrad: AVX2 kernel not available or blocking does not fit"
            );
            #[cfg(target_arch = "x86_64")]
            {
                let args = (g, xt.as_ptr(), z.as_ptr(), ld, partial.as_mut_ptr().cast());
                // SAFETY: AVX2 and FMA are available and the blocking fits (checked above);
                // the buffer sizes were checked above and every block stays inside them
                // (see `avx2::image`).
                unsafe {
                    match big {
                        true => avx2::image::<32, { 34 * 32 }>(args),
                        false => avx2::image::<16, { 18 * 16 }>(args),
                    }
                }
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
mod avx512 {
    use std::arch::x86_64::*;

    use super::ConvGeom;

    /// Lanes per vector.
    const L: usize = 16;

    /// Every block of one image: `V` vectors of input channels times `R` rows of `z`
    /// (`3 * R` columns).
    ///
    /// # Safety
    /// AVX-512F available; the buffers as checked by [`super::image`], `V * 16` dividing
    /// `cin`, `R` dividing `cout * 3`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image<const V: usize, const R: usize, const W: usize, const LD: usize>(
        (g, xt, z, ld, dst): (&ConvGeom, *const f32, *const f32, usize, *mut f32),
    ) {
        debug_assert!(g.w == W && ld == LD);
        let (p, cin, ck) = (g.p(), g.cin, g.cout * g.k);
        for ci0 in (0..cin).step_by(V * L) {
            for j0 in (0..ck).step_by(R) {
                let mut acc = [[_mm512_setzero_ps(); V]; R];
                let mut acc1 = [[_mm512_setzero_ps(); V]; R];
                let mut acc2 = [[_mm512_setzero_ps(); V]; R];
                // SAFETY: rows j0 .. j0 + R <= ck of `z` (R divides ck), each read at
                // q + {0, W, 2W} < p + 2W <= LD, and x^T rows q < p at channels
                // ci0 .. ci0 + V * 16 <= cin: all inside the buffers (see `super::image`).
                unsafe {
                    let zb = z.add(j0 * LD);
                    for q in 0..p {
                        let xq = xt.add(q * cin + ci0);
                        let xv: [__m512; V] =
                            std::array::from_fn(|u| _mm512_loadu_ps(xq.add(u * L)));
                        // one base pointer and constant offsets: no register per z stream
                        let zq = zb.add(q);
                        for r in 0..R {
                            let b0 = _mm512_set1_ps(*zq.add(r * LD));
                            let b1 = _mm512_set1_ps(*zq.add(r * LD + W));
                            let b2 = _mm512_set1_ps(*zq.add(r * LD + 2 * W));
                            for u in 0..V {
                                acc[r][u] = _mm512_fmadd_ps(xv[u], b0, acc[r][u]);
                                acc1[r][u] = _mm512_fmadd_ps(xv[u], b1, acc1[r][u]);
                                acc2[r][u] = _mm512_fmadd_ps(xv[u], b2, acc2[r][u]);
                            }
                        }
                    }
                }
                for (kh, acc) in [acc, acc1, acc2].iter().enumerate() {
                    for (r, acc) in acc.iter().enumerate() {
                        for (u, &a) in acc.iter().enumerate() {
                            let at = (kh * ck + j0 + r) * cin + ci0 + u * L;
                            // SAFETY: at + 16 <= 3 * ck * cin, the partial's length.
                            unsafe { _mm512_storeu_ps(dst.add(at), a) };
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::ConvGeom;

    /// Lanes per vector.
    const L: usize = 8;
    /// Vectors of input channels per block.
    const V: usize = 2;
    /// Rows of `z` per block (`3 * R` columns; `V * 3 * R` = 12 accumulators).
    const R: usize = 2;

    /// Every block of one image, as the AVX-512 kernel with 8-lane vectors.
    ///
    /// # Safety
    /// AVX2 and FMA available; the buffers as checked by [`super::image_with`], 16 dividing
    /// `cin`, 2 dividing `cout * 3`, `g.w == W`, `ld == LD`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn image<const W: usize, const LD: usize>(
        (g, xt, z, ld, dst): (&ConvGeom, *const f32, *const f32, usize, *mut f32),
    ) {
        debug_assert!(g.w == W && ld == LD);
        let (p, cin, ck) = (g.p(), g.cin, g.cout * g.k);
        for ci0 in (0..cin).step_by(V * L) {
            for j0 in (0..ck).step_by(R) {
                let mut acc = [[[_mm256_setzero_ps(); V]; R]; 3];
                // SAFETY: rows j0 .. j0 + R <= ck of `z`, each read at q + {0, W, 2W} <
                // p + 2W <= LD, and x^T rows q < p at channels ci0 .. ci0 + 16 <= cin: all
                // inside the buffers (see `super::image_with`).
                unsafe {
                    let zb = z.add(j0 * LD);
                    for q in 0..p {
                        let xq = xt.add(q * cin + ci0);
                        let xv: [__m256; V] =
                            std::array::from_fn(|u| _mm256_loadu_ps(xq.add(u * L)));
                        let zq = zb.add(q);
                        for r in 0..R {
                            for (kh, acc) in acc.iter_mut().enumerate() {
                                let b = _mm256_set1_ps(*zq.add(r * LD + kh * W));
                                for u in 0..V {
                                    acc[r][u] = _mm256_fmadd_ps(xv[u], b, acc[r][u]);
                                }
                            }
                        }
                    }
                }
                for (kh, acc) in acc.iter().enumerate() {
                    for (r, acc) in acc.iter().enumerate() {
                        for (u, &a) in acc.iter().enumerate() {
                            let at = (kh * ck + j0 + r) * cin + ci0 + u * L;
                            // SAFETY: at + 8 <= 3 * ck * cin, the partial's length.
                            unsafe { _mm256_storeu_ps(dst.add(at), a) };
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm::{sgemm, MatMut, MatRef};
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u64 + 1) * (seed + 7) * 2654435761 % 2001) as f32 - 1000.0) / 1000.0)
            .collect()
    }

    /// The shapes the kernels take: `(cin, hw, cout)` (with 2 output channels the AVX-512
    /// blocking does not fit, and only the AVX2 kernel takes them).
    const SHAPES: [(usize, usize, usize); 5] = [
        (16, 32, 16),
        (32, 16, 32),
        (16, 32, 8),
        (16, 32, 2),
        (32, 16, 2),
    ];

    /// The kernels this CPU runs for `g` (AVX-512 and AVX2 where both run).
    fn kernels_here(g: &ConvGeom) -> Vec<Kernel> {
        let mut ks = Vec::new();
        if let Some(k @ Kernel::Avx512 { .. }) = kernel(g) {
            ks.push(k);
        }
        if Kernel::Avx2.runs_with(g.cout * g.k) {
            ks.push(Kernel::Avx2);
        }
        ks
    }

    /// Bit for bit against the scalar twin, with every kernel this CPU runs: one chain of
    /// fused multiply-adds over the pixels in order per element.
    #[test]
    fn image_matches_scalar_twin() {
        for (i, (cin, hw, cout)) in SHAPES.into_iter().enumerate() {
            let g = ConvGeom::new(&[1, cin, hw, hw], &[cout, cin, 3, 3], 1, 1).unwrap();
            let ks = kernels_here(&g);
            if ks.is_empty() {
                eprintln!("neither AVX-512F nor AVX2: the weight-gradient kernels are not tested");
                return;
            }
            let (p, ck, ld) = (hw * hw, cout * 3, (hw + 2) * hw);
            let xt = values(cin * p, 2 * i as u64);
            let z = values(ck * ld, 2 * i as u64 + 1);
            for k in ks {
                let mut dst = vec![MaybeUninit::new(f32::NAN); 3 * ck * cin];
                image_with(k, &g, &xt, &z, ld, &mut dst);
                for kh in 0..3 {
                    for j in 0..ck {
                        for ci in 0..cin {
                            let mut acc = 0f32;
                            for q in 0..p {
                                acc = xt[q * cin + ci].mul_add(z[j * ld + kh * hw + q], acc);
                            }
                            // SAFETY: written whole by `image_with`.
                            let got = unsafe { dst[(kh * ck + j) * cin + ci].assume_init() };
                            assert_eq!(
                                got.to_bits(),
                                acc.to_bits(),
                                "{k:?} {cin} {hw} {cout}: {kh} {j} {ci}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The convolutions the kernel does not take.
    #[test]
    fn other_shapes_are_left_to_the_gemm() {
        for (cin, h, w, cout) in [
            (16, 32, 31, 16),
            (8, 32, 32, 16),
            (32, 16, 16, 3),
            (64, 8, 8, 64),
        ] {
            let g = ConvGeom::new(&[1, cin, h, w], &[cout, cin, 3, 3], 1, 1).unwrap();
            assert_eq!(kernel(&g), None, "{cin} {h} {w} {cout}");
        }
    }

    /// Single-thread rate of the kernel and of the `gemm` crate on the same products (not a
    /// test: `cargo test --release -p resnet-model --lib conv_wgrad -- --ignored
    /// --nocapture`).
    #[test]
    #[ignore]
    fn kernel_speed() {
        for (cin, hw, cout) in SHAPES {
            let g = ConvGeom::new(&[1, cin, hw, hw], &[cout, cin, 3, 3], 1, 1).unwrap();
            for k in kernels_here(&g) {
                let (p, ck, ld) = (hw * hw, cout * 3, (hw + 2) * hw);
                let (xt, z) = (values(cin * p, 1), values(ck * ld, 2));
                let mut dst = vec![MaybeUninit::new(0f32); 3 * ck * cin];
                let reps = 2000;
                let flops = 2.0 * (cin * ck * 3 * p) as f64 * reps as f64;
                for round in 0..3 {
                    let t = std::time::Instant::now();
                    for _ in 0..reps {
                        image_with(k, &g, std::hint::black_box(&xt), &z, ld, &mut dst);
                    }
                    let rate = flops / t.elapsed().as_secs_f64() / 1e9;
                    let t = std::time::Instant::now();
                    for _ in 0..reps {
                        let xm = MatRef {
                            data: &xt,
                            rows: cin,
                            cols: p,
                            rs: 1,
                            cs: cin,
                        };
                        for (kh, d) in dst.chunks_mut(ck * cin).enumerate() {
                            let zt = MatRef {
                                data: &z[kh * hw..],
                                rows: p,
                                cols: ck,
                                rs: 1,
                                cs: ld,
                            };
                            sgemm(MatMut::uninit(d, cin, ck, 1, cin), false, xm, zt);
                        }
                    }
                    let gemm = flops / t.elapsed().as_secs_f64() / 1e9;
                    println!("{k:?} {cin}->{cout} at {hw}x{hw}, round {round}: kernel {rate:.1} GFLOP/s, gemm {gemm:.1}");
                }
            }
        }
    }
}
