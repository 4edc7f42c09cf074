//! The machine's FMA peak, measured by a register-only FMA loop on each of N threads.

use std::hint::black_box;
use std::time::Instant;

use crate::report::Peak;
use crate::timing::median;

/// FMAs per thread per repetition: about 0.1 s at 100 GFLOP/s per core.
const ITERS: u64 = 20_000_000;

/// Measures the FMA peak of `threads` threads running at once (median of `reps`).
pub fn measure(threads: usize, reps: usize) -> Peak {
    let (isa, flop_per_iter, kernel) = best_loop();
    let mut gflops: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let start = std::sync::Barrier::new(threads);
            let t = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        start.wait();
                        black_box(kernel(black_box(ITERS)));
                    });
                }
            });
            let secs = t.elapsed().as_secs_f64();
            threads as f64 * ITERS as f64 * flop_per_iter / secs / 1e9
        })
        .collect();
    // A one-off start-up stall only lowers a sample; report the median anyway, like the rest.
    Peak {
        threads,
        isa: isa.to_string(),
        gflops: median(&mut gflops),
    }
}

/// The widest FMA loop this CPU runs: (name, flop per iteration, loop).
fn best_loop() -> (&'static str, f64, fn(u64) -> f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return ("avx512", x86::AVX512_FLOP, x86::avx512_loop);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return ("avx2", x86::AVX2_FLOP, x86::avx2_loop);
        }
    }
    ("scalar", SCALAR_FLOP, scalar_loop)
}

const SCALAR_ACC: usize = 16;
const SCALAR_FLOP: f64 = 2.0 * SCALAR_ACC as f64;

/// Portable stand-in: independent multiply-adds the compiler may vectorise.
fn scalar_loop(iters: u64) -> f32 {
    let mut acc = [0.0f32; SCALAR_ACC];
    let (x, y) = (black_box(0.999_999f32), black_box(1e-7f32));
    for _ in 0..iters {
        for r in &mut acc {
            *r = *r * x + y;
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// Independent accumulator chains: FMA latency (4 cycles) × 2 pipes needs 8; 20 leaves a
    /// margin for CPUs with longer latency or more pipes and still fits the 32 zmm registers.
    const ACC512: usize = 20;
    /// 12 chains for the 16 ymm registers.
    const ACC256: usize = 12;
    pub const AVX512_FLOP: f64 = (ACC512 * 16 * 2) as f64;
    pub const AVX2_FLOP: f64 = (ACC256 * 8 * 2) as f64;

    pub fn avx512_loop(iters: u64) -> f32 {
        assert!(std::arch::is_x86_feature_detected!("avx512f"));
        // SAFETY: AVX-512F support was just checked.
        unsafe { avx512(iters) }
    }

    pub fn avx2_loop(iters: u64) -> f32 {
        assert!(
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        );
        // SAFETY: AVX2 and FMA support were just checked.
        unsafe { avx2(iters) }
    }

    #[target_feature(enable = "avx512f")]
    fn avx512(iters: u64) -> f32 {
        let x = _mm512_set1_ps(black_box(0.999_999));
        let y = _mm512_set1_ps(black_box(1e-7));
        let mut acc = [_mm512_setzero_ps(); ACC512];
        for _ in 0..iters {
            for r in &mut acc {
                *r = _mm512_fmadd_ps(*r, x, y);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, &r| _mm512_add_ps(s, r));
        _mm512_reduce_add_ps(sum)
    }

    #[target_feature(enable = "avx2,fma")]
    fn avx2(iters: u64) -> f32 {
        let x = _mm256_set1_ps(black_box(0.999_999));
        let y = _mm256_set1_ps(black_box(1e-7));
        let mut acc = [_mm256_setzero_ps(); ACC256];
        for _ in 0..iters {
            for r in &mut acc {
                *r = _mm256_fmadd_ps(*r, x, y);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, &r| _mm256_add_ps(s, r));
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 floats; storeu has no alignment requirement.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum()
    }
}
