//! Timing helpers: calibrated repetitions, interleaving, medians, random inputs.

use std::time::{Duration, Instant};

/// Shortest sample: calls are batched until one sample takes at least this long, so timer
/// resolution and one-off hiccups weigh little.
pub const MIN_SAMPLE: Duration = Duration::from_millis(20);

/// How many calls of `f` make one sample of at least [`MIN_SAMPLE`] (also warms `f` up).
pub fn calibrate(f: &mut dyn FnMut()) -> usize {
    f(); // warm-up: page faults, pack buffers, thread pool start
    let mut calls = 1;
    loop {
        let t = Instant::now();
        for _ in 0..calls {
            f();
        }
        if t.elapsed() >= MIN_SAMPLE {
            return calls;
        }
        calls *= 2;
    }
}

/// Seconds per call of `f`, one sample of `calls` calls.
pub fn sample(f: &mut dyn FnMut(), calls: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..calls {
        f();
    }
    t.elapsed().as_secs_f64() / calls as f64
}

/// Median seconds per call of `ours` and `peer`, sampled alternately `reps` times after a
/// warm-up, so drifting machine load hits both alike.
pub fn interleaved(ours: &mut dyn FnMut(), peer: &mut dyn FnMut(), reps: usize) -> (f64, f64) {
    let (co, cp) = (calibrate(ours), calibrate(peer));
    let (mut to, mut tp) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for _ in 0..reps {
        to.push(sample(ours, co));
        tp.push(sample(peer, cp));
    }
    (median(&mut to), median(&mut tp))
}

/// Median of a non-empty sample.
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}

/// Pseudo-random values in [-1, 1) (xorshift64*): benchmarks never time on zeros.
pub fn random_f32(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let x = s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            x as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn random_data_is_in_range_and_not_zero() {
        let v = random_f32(10_000, 3);
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        assert!(v.iter().filter(|&&x| x == 0.0).count() < 10);
        assert_ne!(v, random_f32(10_000, 4));
    }
}
