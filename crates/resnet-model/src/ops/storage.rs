//! Raw access to f32 CPU storage for the fast kernels, output allocation and per-thread
//! scratch buffers.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, Layout, Result, Storage, Tensor};

thread_local! {
    static REFERENCE_OPS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static NO_GRAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static WINOGRAD: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with the Winograd convolutions on or off on the current thread (see
/// [`super::with_winograd`]).
pub(crate) fn with_winograd_set<R>(on: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            WINOGRAD.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(WINOGRAD.with(|c| c.replace(Some(on))));
    f()
}

/// Whether the Winograd convolutions are on for the current thread: the innermost
/// [`with_winograd_set`], else the process default from `RESNET_WINOGRAD` (`1` = on).
pub(crate) fn winograd_on() -> bool {
    static DEFAULT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    WINOGRAD.with(|c| c.get()).unwrap_or_else(|| {
        *DEFAULT.get_or_init(|| std::env::var("RESNET_WINOGRAD").is_ok_and(|v| v == "1"))
    })
}

/// Whether the AVX2 convolutions may use the fused Winograd kernel
/// ([`super::conv_winograd_avx2`]): on unless the process was started with
/// `RESNET_FUSED_WINOGRAD=0` (then the AVX2 direct kernel runs, as before).
pub(crate) fn fused_winograd_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("RESNET_FUSED_WINOGRAD").map_or(true, |v| v != "0"))
}

/// Runs `f` with gradient recording off for this module's ops on the current thread (see
/// [`super::no_grad`]).
pub(crate) fn with_no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_GRAD.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(NO_GRAD.with(|c| c.replace(true)));
    f()
}

/// `t` itself, or detached from the autograd graph inside [`with_no_grad`].
pub(crate) fn arg(t: &Tensor) -> Tensor {
    if NO_GRAD.with(|c| c.get()) {
        t.detach()
    } else {
        t.clone()
    }
}

/// Runs `f` with every op of this module replaced by its `_slow` reference twin on the
/// current thread (see [`super::with_reference_ops`]).
pub(crate) fn with_reference<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            REFERENCE_OPS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(REFERENCE_OPS.with(|c| c.replace(true)));
    f()
}

/// Whether the current thread is in reference mode.
pub(crate) fn reference_active() -> bool {
    REFERENCE_OPS.with(|c| c.get())
}

/// `true` when the fast CPU kernels apply to every tensor in `ts`: all on the CPU and f32,
/// and the current thread is not in reference mode.
pub(crate) fn fast_path(ts: &[&Tensor]) -> bool {
    !REFERENCE_OPS.with(|c| c.get())
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The contiguous f32 slice a `(storage, layout)` pair describes.
pub(crate) fn slice<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v.as_slice(),
        other => bail!("{op}: expected f32 storage, got {:?}", other.dtype()),
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => bail!(
            "{op}: expected a contiguous tensor, got strides {:?}",
            l.stride()
        ),
    }
}

/// Runs `f` on the contiguous f32 CPU data of `t` (made contiguous first if needed).
pub(crate) fn with_data<R>(op: &str, t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => Ok(f(slice(op, s, layout)?)),
        _ => bail!("{op}: expected a CPU tensor"),
    }
}

/// Copies a small tensor (per-channel parameters) into a `Vec<f32>`.
pub(crate) fn to_vec(op: &str, t: &Tensor) -> Result<Vec<f32>> {
    with_data(op, t, |d| d.to_vec())
}

/// An output buffer of `n` elements that the caller promises to overwrite completely before
/// reading it; skips the zero-fill of a fresh allocation.
pub(crate) struct Uninit(Vec<MaybeUninit<f32>>);

impl Uninit {
    /// Allocates `n` uninitialised elements.
    pub(crate) fn new(n: usize) -> Self {
        let mut v = Vec::with_capacity(n);
        // SAFETY: `MaybeUninit` needs no initialisation.
        unsafe { v.set_len(n) };
        Self(v)
    }

    /// The buffer as mutable uninitialised slots.
    pub(crate) fn slots(&mut self) -> &mut [MaybeUninit<f32>] {
        &mut self.0
    }

    /// # Safety
    /// Every element must have been written.
    pub(crate) unsafe fn assume_init(self) -> Vec<f32> {
        let mut v = std::mem::ManuallyDrop::new(self.0);
        // SAFETY: same allocation, layout-compatible element type, all elements initialised
        // (caller's promise).
        unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast(), v.len(), v.capacity()) }
    }
}

/// Reinterprets fully-written uninitialised slots as `f32`.
///
/// # Safety
/// Every element of `s` must have been written.
pub(crate) unsafe fn assume_init_mut(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: caller's promise; `MaybeUninit<f32>` has the layout of `f32`.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

thread_local! {
    static SCRATCH: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Runs `f` with two per-thread scratch buffers of at least `a` and `b` elements (contents
/// unspecified but initialised). Buffers are reused across calls on the same thread, so the
/// kernels do not allocate in their inner loops; a re-entrant call gets fresh buffers.
pub(crate) fn with_scratch<R>(
    a: usize,
    b: usize,
    f: impl FnOnce(&mut [f32], &mut [f32]) -> R,
) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let [x, y] = &mut *bufs;
            if x.len() < a {
                x.resize(a, 0.0);
            }
            if y.len() < b {
                y.resize(b, 0.0);
            }
            f(&mut x[..a], &mut y[..b])
        }
        Err(_) => f(&mut vec![0.0; a], &mut vec![0.0; b]),
    })
}

/// Defines a function whose body is compiled twice, for the baseline target and with AVX2
/// and FMA enabled, and picks the variant at run time. Rust never contracts `a * b + c`
/// into an FMA on its own, so both variants compute bit-identical results; AVX2 only makes
/// the auto-vectorised loops wider.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;
