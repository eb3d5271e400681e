//! The weight gradient of a "same" convolution ([`super::conv_same`]) with AVX-512 register
//! blocking, where the `gemm` crate's micro-kernels are short of registers.
//!
//! Per image and tap row `kh'`, the fused backward needs
//! `partial[kh'][(co, kw')][ci] = Σ_p x[ci, p] · z[(co, kw'), kh' * w + p]` (`z`: the
//! kw-shifted, row-padded copies of `dy`, see [`super::conv_same`]). As a GEMM this has
//! `Cin` rows: 16 at ResNet-20's first stage, one AVX-512 register, for which the `gemm`
//! crate runs its `x1x6` micro-kernel: six accumulators (too few to hide the FMA latency)
//! and seven loads per six FMAs. Here the kernel keeps 24 accumulators: `V` (1 or 2) vectors of 16
//! input channels times `24 / V` columns `(co, kw', kh')` (the three `kh'` of a `z` row are
//! the same row read `w` apart), and for every pixel loads `V` vectors of `x^T` and
//! broadcasts 24 / V values of `z`.
//!
//! Every element is one chain of fused multiply-adds over the pixels in order, so the result
//! does not depend on the number of threads (work is split by image); it differs from the
//! GEMM's by rounding.

use std::mem::MaybeUninit;

use super::im2col::ConvGeom;

/// Accumulator registers per block.
const ACC: usize = 24;

/// The number of 16-channel vectors per block for `g`, or `None` when the kernel does not
/// take `g` (no AVX-512 here, or `Cin` not 16, 32 or 64, or `Cout * K` not a multiple of the
/// block's `z` rows).
pub(crate) fn vectors(g: &ConvGeom) -> Option<usize> {
    if !super::conv_direct::available() || g.k != 3 {
        return None;
    }
    // the plane sizes the kernel is compiled for (its `z` offsets are constants)
    let v = match (g.cin, g.h, g.w) {
        (16, 32, 32) => 1,
        (32, 16, 16) => 2,
        _ => return None,
    };
    let rows = ACC / (v * 3);
    (g.cout * g.k).is_multiple_of(rows).then_some(v)
}

/// Writes one image's whole `partial` (`[kh'][(co, kw')][ci]`, `3 * cout * 3 * cin`
/// elements) from `xt` (`x` transposed, `[p][cin]`) and `z` (`[(co, kw')][z_rows][w]`,
/// `ld = z_rows * w` apart). `g` must satisfy [`vectors`].
pub(crate) fn image(
    g: &ConvGeom,
    xt: &[f32],
    z: &[f32],
    ld: usize,
    partial: &mut [MaybeUninit<f32>],
) {
    let v = vectors(g).expect("conv_wgrad::image: the kernel does not take this convolution");
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
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    // SAFETY: AVX-512F is available (`vectors` checked it); the buffer sizes were checked
    // above and every block stays inside them (see `avx512::image`).
    unsafe {
        let args = (g, xt.as_ptr(), z.as_ptr(), ld, partial.as_mut_ptr().cast());
        match v {
            1 => avx512::image::<1, 8, 32, { 34 * 32 }>(args),
            _ => avx512::image::<2, 4, 16, { 18 * 16 }>(args),
        }
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
    unreachable!("conv_wgrad::vectors is None without AVX-512 ({v})")
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

#[cfg(test)]
mod tests {
    use super::super::gemm::{sgemm, MatMut, MatRef};
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u64 + 1) * (seed + 7) * 2654435761 % 2001) as f32 - 1000.0) / 1000.0)
            .collect()
    }

    /// The shapes the kernel takes: `(cin, hw, cout)`.
    const SHAPES: [(usize, usize, usize); 3] = [(16, 32, 16), (32, 16, 32), (16, 32, 8)];

    /// Bit for bit against the scalar twin: one chain of fused multiply-adds over the pixels
    /// in order per element.
    #[test]
    fn image_matches_scalar_twin() {
        for (i, (cin, hw, cout)) in SHAPES.into_iter().enumerate() {
            let g = ConvGeom::new(&[1, cin, hw, hw], &[cout, cin, 3, 3], 1, 1).unwrap();
            if vectors(&g).is_none() {
                eprintln!("no AVX-512F here: the weight-gradient kernel is not tested");
                return;
            }
            let (p, ck, ld) = (hw * hw, cout * 3, (hw + 2) * hw);
            let xt = values(cin * p, 2 * i as u64);
            let z = values(ck * ld, 2 * i as u64 + 1);
            let mut dst = vec![MaybeUninit::new(f32::NAN); 3 * ck * cin];
            image(&g, &xt, &z, ld, &mut dst);
            for kh in 0..3 {
                for j in 0..ck {
                    for ci in 0..cin {
                        let mut acc = 0f32;
                        for q in 0..p {
                            acc = xt[q * cin + ci].mul_add(z[j * ld + kh * hw + q], acc);
                        }
                        // SAFETY: written whole by `image`.
                        let got = unsafe { dst[(kh * ck + j) * cin + ci].assume_init() };
                        assert_eq!(
                            got.to_bits(),
                            acc.to_bits(),
                            "{cin} {hw} {cout}: {kh} {j} {ci}"
                        );
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
            assert_eq!(vectors(&g), None, "{cin} {h} {w} {cout}");
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
            if vectors(&g).is_none() {
                return;
            }
            let (p, ck, ld) = (hw * hw, cout * 3, (hw + 2) * hw);
            let (xt, z) = (values(cin * p, 1), values(ck * ld, 2));
            let mut dst = vec![MaybeUninit::new(0f32); 3 * ck * cin];
            let reps = 2000;
            let flops = 2.0 * (cin * ck * 3 * p) as f64 * reps as f64;
            for round in 0..3 {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    image(&g, std::hint::black_box(&xt), &z, ld, &mut dst);
                }
                let kernel = flops / t.elapsed().as_secs_f64() / 1e9;
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
                println!("{cin}->{cout} at {hw}x{hw}, round {round}: kernel {kernel:.1} GFLOP/s, gemm {gemm:.1}");
            }
        }
    }
}
