//! Keeps freed memory in the process. glibc's malloc hands large blocks back to the
//! kernel when they are freed (blocks above its mmap threshold are unmapped, and heaps
//! are trimmed), so every training step faulted its activations back in as fresh zeroed
//! pages: ~27k page faults a step at batch 64, ~100 MiB zeroed by the kernel (`perf stat
//! -e page-faults`). Three settings make the next step reuse the same pages instead:
//! the mmap threshold at glibc's maximum (32 MiB: every activation of the `small` model
//! at batch 64 is below it), no trimming, and one arena for all threads. The last one
//! matters: with per-thread arenas, blocks that rayon's workers allocate live in
//! secondary heaps, which glibc shrinks page by page (`MADV_DONTNEED`) as they are
//! freed whatever the trim threshold says, and SiLU and GroupNorm ran 5-8x slower than
//! with the defaults (4x the page faults). With one arena they run at the defaults'
//! speed or better, and a sampling step is ~4% faster. The lock this adds is not
//! contended: the kernels allocate once per op, not per element, and small blocks come
//! from glibc's per-thread caches. Peak RSS is unchanged, as the peak live set is the
//! same; this is what PyTorch users get from jemalloc or tcmalloc.

/// Sets the three malloc parameters (glibc on Linux; elsewhere the allocator keeps its
/// defaults). Call first in main, before threads allocate.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // glibc's malloc.h: M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3, M_ARENA_MAX -8.
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        const M_ARENA_MAX: c_int = -8;
        // SAFETY: mallopt only sets allocator parameters; glibc accepts these values (it
        // rejects an mmap threshold above 32 MiB, which is why this one is 32 MiB).
        unsafe {
            mallopt(M_ARENA_MAX, 1);
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        }
    }
}
