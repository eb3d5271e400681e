//! Bounds-checked single-threaded SGEMM on strided matrices, on top of the `gemm` crate
//! (the engine candle itself uses). The callers parallelise across images with rayon, so
//! each GEMM runs with `Parallelism::None`, which also keeps results independent of the
//! thread count.

use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

/// A mutable strided matrix view over possibly uninitialised memory: element `(i, j)` is at
/// offset `i * rs + j * cs`.
pub(crate) struct MatMut<'a> {
    ptr: *mut f32,
    len: usize,
    init: bool,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

impl<'a> MatMut<'a> {
    /// A view over initialised memory (may be accumulated into).
    pub(crate) fn new(data: &'a mut [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        let (ptr, len) = (data.as_mut_ptr(), data.len());
        Self {
            ptr,
            len,
            init: true,
            rows,
            cols,
            rs,
            cs,
            _borrow: PhantomData,
        }
    }

    /// A view over uninitialised memory (may only be overwritten).
    pub(crate) fn uninit(
        data: &'a mut [MaybeUninit<f32>],
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Self {
        let (ptr, len) = (data.as_mut_ptr().cast(), data.len());
        Self {
            ptr,
            len,
            init: false,
            rows,
            cols,
            rs,
            cs,
            _borrow: PhantomData,
        }
    }
}

fn max_offset(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// `dst = lhs · rhs` (or `dst += lhs · rhs` when `accumulate`).
///
/// Panics if the shapes disagree or a view reaches outside its slice; both are programming
/// errors in this module, never a consequence of user input (shapes are validated before).
pub(crate) fn sgemm(dst: MatMut<'_>, accumulate: bool, lhs: MatRef<'_>, rhs: MatRef<'_>) {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    assert!(
        lhs.rows == m && rhs.rows == k && rhs.cols == n,
        "sgemm shape mismatch"
    );
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst.init || !accumulate,
        "sgemm cannot accumulate into uninitialised memory"
    );
    assert!(
        max_offset(m, n, dst.rs, dst.cs) < dst.len,
        "sgemm dst out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: in bounds (checked above), exclusively borrowed.
                    unsafe { dst.ptr.add(i * dst.rs + j * dst.cs).write(0.0) };
                }
            }
        }
        return;
    }
    assert!(
        max_offset(m, k, lhs.rs, lhs.cs) < lhs.data.len(),
        "sgemm lhs out of bounds"
    );
    assert!(
        max_offset(k, n, rhs.rs, rhs.cs) < rhs.data.len(),
        "sgemm rhs out of bounds"
    );
    // SAFETY: all three views were bounds-checked above; `dst` is exclusively borrowed and
    // cannot alias the shared `lhs`/`rhs` borrows; with `accumulate == false` the GEMM only
    // writes `dst`, so uninitialised memory is fine there.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The micro-kernels the `gemm` crate runs on this CPU in this build: `"avx512f"` (the
/// `avx512` feature, default, on a CPU with AVX-512F), `"avx2+fma"`, `"neon"` (aarch64) or
/// `"scalar"`. The crate makes the same choice, once, from the same facts.
pub(crate) fn kernels() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        #[cfg(feature = "avx512")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        return "neon";
    }
    "scalar"
}
