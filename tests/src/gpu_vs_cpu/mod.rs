//! Every WGSL kernel against the CPU path, forward and backward, over random shapes
//! (size 1, primes, one past a tile), non-contiguous GPU views and value ranges. The
//! device runs in poison mode, so an output element a kernel never writes is NaN and
//! fails the comparison. Without an adapter these tests fail, saying how to get one.
//!
//! Tolerance per op family, GPU f32 vs CPU f32, |gpu - cpu| <= atol + rtol |cpu|:
//! | op | atol | rtol | why |
//! |---|---|---|---|
//! | copies, casts, cat, where, comparisons, max/min, embedding, upsample | 0 | 0 | exact |
//! | add, sub, mul, div, affine | 1e-7 | 1e-6 | one rounding each side |
//! | transcendental unary ops, glu (fwd, bwd), powf | 1e-6 | 1e-4 | WGSL allows exp/log/pow/tanh a few ulp per unit of |x|, erf is A&S 7.1.26 (1.5e-7) |
//! | sum, mean | 1e-6 n | 1e-5 | tree order on the GPU vs lanes on the CPU |
//! | softmax, norms (fwd, bwd) | 1e-5 | 1e-4 | exp, rsqrt and group sums in another order |
//! | any op on f16 tensors | 1e-3 | 2e-3 | f32 results as above, each rounded once to f16 |

mod attention;
mod elementwise;
mod gemm;
mod half;
mod index;
mod norms;
mod random_optim;
mod reductions;
mod runtime;

use proptest::prelude::ProptestConfig;

/// Proptest settings for GPU tests: few cases, since lavapipe runs ~100x slower than
/// native code, and no persistence files.
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
