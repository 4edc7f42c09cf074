//! Keeps freed memory in the process. glibc's malloc hands large blocks back to the
//! kernel when they are freed (blocks above its mmap threshold are unmapped, and the
//! heap's top is trimmed), so every training step faulted its activations back in as
//! fresh zeroed pages: ~27k page faults a step at batch 64, ~100 MiB zeroed by the
//! kernel, measured with `perf stat -e page-faults`. With the mmap threshold at glibc's
//! maximum (32 MiB: every activation of the `small` model at batch 64 is below it) and
//! no trimming, the next step reuses the same pages (~400 faults a step). Peak RSS is
//! unchanged, as the peak live set is the same; this is what PyTorch users get from
//! jemalloc or tcmalloc.

/// Sets the two malloc parameters (glibc on Linux; elsewhere the allocator keeps its
/// defaults). Call first in main, before threads allocate.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // glibc's malloc.h: M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3.
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        // SAFETY: mallopt only sets allocator parameters; glibc accepts both values (it
        // rejects an mmap threshold above 32 MiB, which is why this one is 32 MiB).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        }
    }
}
