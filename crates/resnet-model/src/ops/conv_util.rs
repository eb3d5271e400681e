//! Helpers shared by the convolution kernels (`conv`, `conv_backward`, `conv_same`): the
//! transposed form of a stride-1 convolution, slot views of buffers, zero-filling, and the
//! thread-count-independent sum of weight-gradient partials. No kernel module imports
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
