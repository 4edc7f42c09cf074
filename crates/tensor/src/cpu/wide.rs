//! Runs a kernel's loops with AVX-512 enabled where the CPU has it. The build targets
//! x86-64-v3 (AVX2), so the compiler vectorises 8 floats at a time; the per-element
//! kernels (exp in SiLU, GroupNorm + SiLU, softmax) are bound by the length of their
//! arithmetic chains, not by memory, and compiled for AVX-512 they run ~2x faster
//! (measured on the benchmark machine's Zen 4: SiLU 1.4 -> 2.9 G elements/s per core).
//!
//! Not everything gains: AdamW's loop (a square root and a division per element) ran at
//! half the speed in its AVX-512 form on that machine, so it stays AVX2.
//!
//! The same source is compiled twice and picked at run time, like the GEMM kernels
//! (`KUOSAN_GEMM_KERNEL=avx2` turns this off too). Results are bitwise the same on both:
//! the loops are elementwise or keep explicit accumulator lanes, and IEEE arithmetic
//! (with `mul_add` an exact fused operation on both) rounds the same at any width.

use super::gemm::Kernel;

/// Calls `f`, compiled with AVX-512F when [`Kernel::selected`] is AVX-512. Call it inside
/// each rayon task (target features do not cross into the closures rayon runs), around
/// the loops, with the kernel's scalar code inlined into `f`: mark the closure
/// `#[inline(always)]`, since a large closure left to LLVM's inlining heuristics is
/// compiled as a function of its own, without AVX-512 (the GroupNorm backward's was, and
/// ran in AVX2).
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if Kernel::selected() == Kernel::Avx512 {
        // SAFETY: `selected` returns Avx512 only when the CPU reports avx512f.
        return unsafe { with_avx512(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::super::elementwise::unary;
    use crate::ops::UnaryOp;
    use crate::Layout;

    /// The unary kernels (AVX-512 loops on a CPU that has it, AVX2 otherwise) give the
    /// same bits as the op's scalar definition applied one element at a time.
    #[test]
    fn vector_kernels_match_the_scalar_definition_bitwise() {
        let x: Vec<f32> = (0..1001)
            .map(|i| ((i * 7919) % 4001) as f32 / 100.0 - 20.0)
            .collect();
        let l = Layout::contiguous([x.len()]);
        for &op in UnaryOp::ALL {
            for d in [false, true] {
                let got: Vec<u32> = unary(&x, &l, op, d).iter().map(|v| v.to_bits()).collect();
                let want: Vec<u32> = x.iter().map(|&v| op.eval(d, v).to_bits()).collect();
                assert_eq!(got, want, "{} (derivative {d})", op.name());
            }
        }
    }
}
