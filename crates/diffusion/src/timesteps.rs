//! Which training timesteps a batch draws: uniform (DDPM, Ho et al. 2020, alg. 1), or
//! biased towards the noisy or the clean end, as diffusers' SDXL training script offers
//! (`--timestep_bias_strategy earlier|later`, `--timestep_bias_multiplier`,
//! `--timestep_bias_portion`).
//!
//! Why bias: a prompt decides what the picture shows (which colour, shape, place) only at
//! the noisiest steps, where the noisy input says nothing about it; at the others the
//! picture itself is visible through the noise. Drawing those steps more often gives the
//! conditioning more of the training signal.

/// Where a bias puts its extra weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasStrategy {
    /// Uniform timesteps.
    None,
    /// The first `portion` of the timesteps (least noise).
    Earlier,
    /// The last `portion` of the timesteps (most noise).
    Later,
}

impl BiasStrategy {
    pub fn name(self) -> &'static str {
        match self {
            BiasStrategy::None => "none",
            BiasStrategy::Earlier => "earlier",
            BiasStrategy::Later => "later",
        }
    }

    pub fn parse(s: &str) -> Option<BiasStrategy> {
        [
            BiasStrategy::None,
            BiasStrategy::Earlier,
            BiasStrategy::Later,
        ]
        .into_iter()
        .find(|b| b.name() == s)
    }
}

/// How training timesteps are drawn: a timestep in the biased range is `multiplier`
/// times as likely as one outside it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimestepBias {
    pub strategy: BiasStrategy,
    pub multiplier: f64,
    /// The fraction of the timesteps in the biased range, in (0, 1].
    pub portion: f64,
}

impl Default for TimestepBias {
    /// Uniform; diffusers' defaults for the other two.
    fn default() -> Self {
        TimestepBias {
            strategy: BiasStrategy::None,
            multiplier: 1.0,
            portion: 0.25,
        }
    }
}

impl TimestepBias {
    /// Checks the numbers; the message names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.multiplier > 0.0 && self.multiplier.is_finite()) {
            return Err(format!(
                "timestep_bias_multiplier must be a finite number > 0, got {}",
                self.multiplier
            ));
        }
        if !(self.portion > 0.0 && self.portion <= 1.0) {
            return Err(format!(
                "timestep_bias_portion must be in (0, 1], got {}",
                self.portion
            ));
        }
        Ok(())
    }

    /// The timestep in 0..n for a uniform draw u in [0, 1): the inverse of the biased
    /// distribution's CDF. Without a bias it is floor(u n), the plain uniform draw.
    pub fn sample(&self, u: f32, n: usize) -> usize {
        let u = u as f64;
        if self.strategy == BiasStrategy::None || n == 0 {
            return ((u * n as f64) as usize).min(n.saturating_sub(1));
        }
        // The biased range holds nb timesteps of weight m, the rest n - nb of weight 1.
        let nb = ((self.portion * n as f64).round() as usize).clamp(1, n);
        let m = self.multiplier;
        let (heavy, light) = (nb as f64 * m, (n - nb) as f64);
        let mass = u * (heavy + light);
        // Lay the masses out in timestep order: light then heavy for Later, heavy then
        // light for Earlier.
        let t = match self.strategy {
            BiasStrategy::Later if mass < light => mass as usize,
            BiasStrategy::Later => n - nb + ((mass - light) / m) as usize,
            BiasStrategy::Earlier if mass < heavy => (mass / m) as usize,
            BiasStrategy::Earlier => nb + (mass - heavy) as usize,
            BiasStrategy::None => unreachable!("handled above"),
        };
        t.min(n - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(b: &TimestepBias, n: usize) -> Vec<usize> {
        let k = 100_000;
        (0..k)
            .map(|i| b.sample((i as f32 + 0.5) / k as f32, n))
            .collect()
    }

    #[test]
    fn no_bias_is_the_plain_uniform_draw() {
        let b = TimestepBias::default();
        for &u in &[0.0f32, 0.1234, 0.5, 0.999_999_9] {
            assert_eq!(b.sample(u, 1000), ((u as f64 * 1000.0) as usize).min(999));
        }
        let h = draws(&b, 10);
        for t in 0..10 {
            assert_eq!(h.iter().filter(|&&x| x == t).count(), 10_000);
        }
    }

    #[test]
    fn later_and_earlier_weight_their_range() {
        let n = 1000;
        for (strategy, in_range) in [
            (BiasStrategy::Later, 750..1000),
            (BiasStrategy::Earlier, 0..250),
        ] {
            let b = TimestepBias {
                strategy,
                multiplier: 3.0,
                portion: 0.25,
            };
            let h = draws(&b, n);
            assert!(h.iter().all(|&t| t < n));
            // 250 x 3 against 750 x 1: half the draws land in the range.
            let frac = h.iter().filter(|t| in_range.contains(*t)).count() as f64 / h.len() as f64;
            assert!((frac - 0.5).abs() < 0.01, "{strategy:?}: {frac}");
            // Inside and outside, every timestep is about equally likely.
            let count = |t: usize| h.iter().filter(|&&x| x == t).count() as f64;
            let (a, b_) = (count(in_range.start + 7), count(in_range.start + 200));
            assert!((a / b_ - 1.0).abs() < 0.05, "{a} vs {b_}");
            let outside = if strategy == BiasStrategy::Later {
                100
            } else {
                900
            };
            assert!((count(in_range.start + 7) / count(outside) - 3.0).abs() < 0.2);
        }
    }

    #[test]
    fn extremes_stay_in_range_and_bad_numbers_are_named() {
        let b = TimestepBias {
            strategy: BiasStrategy::Later,
            multiplier: 5.0,
            portion: 1.0,
        };
        assert_eq!(b.sample(0.0, 1000), 0);
        assert_eq!(b.sample(0.999_999_9, 1000), 999);
        assert_eq!(b.sample(0.5, 1), 0);
        let bad = TimestepBias {
            multiplier: 0.0,
            ..b
        };
        assert!(bad.validate().unwrap_err().contains("multiplier"));
        let bad = TimestepBias { portion: 1.5, ..b };
        assert!(bad.validate().unwrap_err().contains("portion"));
        assert_eq!(BiasStrategy::parse("later"), Some(BiasStrategy::Later));
        assert_eq!(BiasStrategy::parse("range"), None);
    }
}
