//! Process-level tuning for CPU training: the allocator, and candle's own thread pool.
//! These settings belong to a program, not to a library: `resnet-cli`'s `main` calls
//! [`tune_process`] first thing; a program of your own built on `resnet-model`/`trainer`
//! can do the same (or not: results are the same bits either way, only speed differs).
//! Only `std` is used here, so the kernel benchmarks include this same file.
//!
//! A training step allocates and frees dozens of activation-sized buffers (several MB each).
//! glibc serves those with `mmap` and returns them with `munmap` (or trims the heap top), so
//! every step pays page faults and kernel zeroing for memory it had a moment ago; on the
//! 2-core reference machine that cost more than the BatchNorm kernels themselves. Raising
//! the mmap and trim thresholds keeps freed buffers in the heap for reuse.

/// Keeps large freed buffers in the process heap instead of returning them to the kernel
/// (glibc: `M_MMAP_THRESHOLD` = 32 MiB, its maximum, and `M_TRIM_THRESHOLD` = 1 GiB).
/// Call once at the start of a binary that trains or evaluates on the CPU. Returns `true`
/// when the settings were applied; elsewhere than Linux/glibc it does nothing and returns
/// `false`. Resident memory then stays near the peak of one step instead of shrinking
/// between steps.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: `mallopt` only changes allocator parameters; any value is accepted or
        // rejected with a zero return.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Process-level settings for CPU training and inference with `resnet-model`'s kernels; call it first
/// thing in `main`, before any other thread starts (it sets an environment variable).
///
/// - [`tune_allocator`];
/// - unless `CANDLE_NUM_THREADS` is already set, sets it to 1. The heavy kernels run on
///   rayon's pool; what candle still computes itself is mostly autograd's gradient
///   accumulation (a zero tensor plus an add per argument), memory-bound work whose
///   spin-waiting barrier pool competed with rayon's threads for the same cores. On the
///   2-core reference machine this saved ~15% CPU time per training step at equal or better
///   wall time.
///
/// Returns whether the allocator settings were applied.
pub fn tune_process() -> bool {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Called before other threads exist (documented precondition), so no concurrent
        // reader of the environment can observe the write.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    tune_allocator()
}
