//! Helpers shared by the convolution kernels (`conv`, `conv_backward`, `conv_same`): the
//! transposed form of a stride-1 convolution, slot views of buffers, zero-filling, the
//! thread-count-independent sum of weight-gradient partials, and matrix transposes. No kernel module imports
//! another's helpers; they all import these.

use rayon::prelude::*;

use super::im2col::ConvGeom;
use super::storage::assume_init_mut;

/// Views initialised f32 storage as `MaybeUninit` slots for writers that take slots.
///
/// # Safety
/// The caller must only write initialised values through the returned slice.
pub(crate) unsafe fn as_slots(s: &mut [f32]) -> &mut [std::mem::MaybeUninit<f32>] {
    // SAFETY: identical layout; writers only store initialised values (caller's promise).
    unsafe { &mut *(s as *mut [f32] as *mut [std::mem::MaybeUninit<f32>]) }
}

/// For a stride-1 convolution with `pad < k`, the input gradient is itself a stride-1
/// convolution of `dy` (padding `k - 1 - pad`) with the weight transposed over channels and
/// flipped spatially. Computing it that way runs one GEMM with depth `cout * k * k` instead
/// of one with depth `cout` followed by a col2im scatter. Returns that convolution's geometry
/// and weight, or `None` when it does not apply.
pub(crate) fn transposed(g: &ConvGeom, w: &[f32]) -> Option<(ConvGeom, Vec<f32>)> {
    if g.stride != 1 || g.pad >= g.k || g.is_pointwise() {
        return None;
    }
    let gt = ConvGeom {
        n: g.n,
        cin: g.cout,
        h: g.ho,
        w: g.wo,
        cout: g.cin,
        k: g.k,
        stride: 1,
        pad: g.k - 1 - g.pad,
        ho: g.h,
        wo: g.w,
    };
    let kk = g.k * g.k;
    let mut wt = vec![0f32; w.len()];
    for co in 0..g.cout {
        for ci in 0..g.cin {
            let src = &w[(co * g.cin + ci) * kk..][..kk];
            let dst = &mut wt[(ci * g.cout + co) * kk..][..kk];
            for (d, &v) in dst.iter_mut().zip(src.iter().rev()) {
                *d = v;
            }
        }
    }
    Some((gt, wt))
}

/// Zero-fills uninitialised slots and returns them as plain floats.
pub(crate) fn zeroed(s: &mut [std::mem::MaybeUninit<f32>]) -> &mut [f32] {
    s.fill(std::mem::MaybeUninit::new(0.0));
    // SAFETY: just written.
    unsafe { assume_init_mut(s) }
}

/// `Σ_i partials[i]` over the consecutive `wlen`-element partials, each element summed in
/// partial order (so the result does not depend on the thread count), in parallel over
/// blocks of elements.
pub(crate) fn sum_partials(partials: &[f32], wlen: usize) -> Vec<f32> {
    const BLOCK: usize = 4096;
    let mut out = partials[..wlen].to_vec();
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(i, o)| {
        for part in partials.chunks_exact(wlen).skip(1) {
            for (a, &b) in o.iter_mut().zip(&part[i * BLOCK..]) {
                *a += b;
            }
        }
    });
    out
}

/// The transpose of the row-major `rows x cols` matrix `a`.
pub(crate) fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for (i, row) in a.chunks_exact(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            t[j * rows + i] = v;
        }
    }
    t
}

/// Writes the transpose of the row-major `rows x cols` matrix `src` into `dst` (row-major
/// `cols x rows`): `dst[j * rows + i] = src[i * cols + j]`.
///
/// The weight gradients use it to hand the `gemm` crate their `[channels x pixels]` operand
/// with unit row stride: given the row-major original, the crate packs it with strided
/// (scalar) loads on every call, which halved the GEMM's speed at ResNet-20's stage-1
/// shapes (bench/README.md, "Weight gradients"). With AVX, whole 8 x 8 tiles are transposed
/// in registers (~30 GB/s here against ~11 for the scalar loop).
pub(crate) fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(
        src.len() >= rows * cols && dst.len() >= rows * cols,
        "transpose_into: {rows} x {cols} does not fit the buffers"
    );
    #[cfg(target_arch = "x86_64")]
    if rows.is_multiple_of(8)
        && cols.is_multiple_of(8)
        && std::arch::is_x86_feature_detected!("avx")
    {
        // SAFETY: the CPU has AVX (checked just above), both buffers hold `rows * cols`
        // elements (asserted above) and both sides are multiples of 8.
        unsafe { transpose_8x8_tiles(src, rows, cols, dst) };
        return;
    }
    // Eight columns at a time: one contiguous read per row, eight strided writes.
    let main = cols / 8 * 8;
    for c0 in (0..main).step_by(8) {
        for r in 0..rows {
            for (j, &v) in src[r * cols + c0..][..8].iter().enumerate() {
                dst[(c0 + j) * rows + r] = v;
            }
        }
    }
    for c in main..cols {
        for r in 0..rows {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// [`transpose_into`] for sides that are multiples of 8, one 8 x 8 tile at a time in AVX
/// registers (the usual unpack / shuffle / lane-permute sequence).
///
/// # Safety
/// The CPU must support AVX; `rows` and `cols` must be multiples of 8 and both slices hold
/// at least `rows * cols` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_8x8_tiles(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    use std::arch::x86_64::{
        _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_shuffle_ps, _mm256_storeu_ps,
        _mm256_unpackhi_ps, _mm256_unpacklo_ps,
    };
    for r0 in (0..rows).step_by(8) {
        for c0 in (0..cols).step_by(8) {
            // SAFETY: rows r0..r0+8 and columns c0..c0+8 lie inside both matrices (the
            // caller's promise on the sizes), unaligned loads and stores are allowed.
            unsafe {
                let s = src.as_ptr().add(r0 * cols + c0);
                let r: [_; 8] = std::array::from_fn(|i| _mm256_loadu_ps(s.add(i * cols)));
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let out = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                let d = dst.as_mut_ptr().add(c0 * rows + r0);
                for (i, v) in out.into_iter().enumerate() {
                    _mm256_storeu_ps(d.add(i * rows), v);
                }
            }
        }
    }
}

/// A batch of images that a kernel takes one at a time: stored, or computed per image
/// (a BatchNorm's output or input gradient, say) right where the kernel reads it.
pub(crate) trait Images: Sync {
    /// Image `b`: a stored slice, or computed into `buf` (one image's elements, contents
    /// unspecified) and returned.
    fn image<'a>(&'a self, b: usize, buf: &'a mut [f32]) -> &'a [f32];

    /// Whether [`Images::image`] writes into `buf` (else `buf` may be empty).
    fn computed(&self) -> bool {
        true
    }
}

/// Images held in memory, `len` elements each.
pub(crate) struct Stored<'a> {
    data: &'a [f32],
    len: usize,
}

impl<'a> Stored<'a> {
    /// `data` as images of `len` elements.
    pub(crate) fn new(data: &'a [f32], len: usize) -> Self {
        Self { data, len }
    }
}

impl Images for Stored<'_> {
    fn image<'a>(&'a self, b: usize, _: &'a mut [f32]) -> &'a [f32] {
        &self.data[b * self.len..][..self.len]
    }

    fn computed(&self) -> bool {
        false
    }
}

/// Deterministic pseudo-random values in [-1, 1) (for the kernels' unit tests).
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths (AVX tiles and the scalar loop) against the definition, on shapes with
    /// and without multiples of 8.
    #[test]
    fn transpose_into_matches_definition() {
        for (rows, cols) in [
            (16, 1024),
            (8, 8),
            (24, 40),
            (3, 5),
            (16, 13),
            (1, 9),
            (9, 1),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            transpose_into(&src, rows, cols, &mut dst);
            assert_eq!(dst, transpose(&src, rows, cols), "{rows} x {cols}");
        }
    }
}
