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

/// Which pictures the bias applies to.
///
/// Why `MultiObject`: on the built-in shapes the noisy end's extra draws are what binds
/// each of two objects' words to its object (runs U, E3M2: without them a pair loses
/// its colours), while a single object, which has nothing to bind, gains from the
/// middle steps that uniform draws give it, where its outline is drawn (small squares
/// 58-59% -> 81-89% right, run PK). Drawing each picture from what it needs keeps both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasScope {
    /// Every picture (diffusers' behaviour).
    All,
    /// Captioned pictures of two or more objects. A picture the data set knows to show
    /// one object, or whose caption was dropped for guidance, draws uniformly; in data
    /// sets that do not count their objects (MNIST, Fashion-MNIST, folder) every picture
    /// draws from the bias, as with `All`.
    MultiObject,
}

impl BiasScope {
    pub fn name(self) -> &'static str {
        match self {
            BiasScope::All => "all",
            BiasScope::MultiObject => "multi_object",
        }
    }

    pub fn parse(s: &str) -> Option<BiasScope> {
        [BiasScope::All, BiasScope::MultiObject]
            .into_iter()
            .find(|b| b.name() == s)
    }
}

/// How training timesteps are drawn: a timestep in the biased range is `multiplier`
/// times as likely as one outside it, for the pictures `scope` names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimestepBias {
    pub strategy: BiasStrategy,
    pub multiplier: f64,
    /// The fraction of the timesteps in the biased range, in (0, 1].
    pub portion: f64,
    pub scope: BiasScope,
}

impl Default for TimestepBias {
    /// Uniform; diffusers' defaults for the other two; every picture.
    fn default() -> Self {
        TimestepBias {
            strategy: BiasStrategy::None,
            multiplier: 1.0,
            portion: 0.25,
            scope: BiasScope::All,
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

    /// Whether a picture of `objects` objects (None: the data set does not count them)
    /// whose caption was kept (`captioned`) draws from the bias.
    pub fn applies_to(&self, objects: Option<usize>, captioned: bool) -> bool {
        match (self.scope, objects) {
            (BiasScope::All, _) | (BiasScope::MultiObject, None) => true,
            (BiasScope::MultiObject, Some(k)) => k >= 2 && captioned,
        }
    }

    /// [`sample`](Self::sample) for one picture: the biased draw where
    /// [`applies_to`](Self::applies_to) says so, else the plain uniform one.
    pub fn sample_for(&self, u: f32, n: usize, objects: Option<usize>, captioned: bool) -> usize {
        if self.applies_to(objects, captioned) {
            self.sample(u, n)
        } else {
            uniform(u as f64, n)
        }
    }

    /// The timestep in 0..n for a uniform draw u in [0, 1): the inverse of the biased
    /// distribution's CDF. Without a bias it is floor(u n), the plain uniform draw.
    pub fn sample(&self, u: f32, n: usize) -> usize {
        let u = u as f64;
        if self.strategy == BiasStrategy::None || n == 0 {
            return uniform(u, n);
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

/// The batch's uniform draws from one: u_i = frac(u0 + i / B), the low-discrepancy
/// sampler of Kingma et al. 2021 (VDM, appendix I.2). Each u_i alone is uniform on [0, 1)
/// as an independent draw is, so every picture's timestep keeps its distribution (bias
/// and scope included), but the batch's draws are spread evenly over [0, 1) instead of
/// clumping, which lowers the variance of the batch's loss and of its gradient: a batch
/// of 16 drawn independently leaves a tenth of the timestep range empty more often than
/// not.
pub fn low_discrepancy(u0: f32, batch: usize) -> Vec<f32> {
    (0..batch)
        // Rounding to f32 could reach 1.0 from just below it: keep the draw in [0, 1).
        .map(|i| ((u0 as f64 + i as f64 / batch as f64).fract() as f32).min(ONE_BELOW))
        .collect()
}

/// The largest f32 below 1.
const ONE_BELOW: f32 = 1.0 - f32::EPSILON / 2.0;

/// floor(u n) for u in [0, 1), kept below n.
fn uniform(u: f64, n: usize) -> usize {
    ((u * n as f64) as usize).min(n.saturating_sub(1))
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
                scope: BiasScope::All,
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
            scope: BiasScope::All,
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

    #[test]
    fn low_discrepancy_draws_are_evenly_spaced_and_each_uniform() {
        for b in [1usize, 2, 7, 16] {
            for &u0 in &[0.0f32, 0.3, 0.999_999, ONE_BELOW] {
                let mut u = low_discrepancy(u0, b);
                assert_eq!(u[0], u0);
                assert!(u.iter().all(|x| (0.0..1.0).contains(x)), "{u:?}");
                // One per 1/B slice of [0, 1).
                u.sort_by(f32::total_cmp);
                for (i, x) in u.iter().enumerate() {
                    let slice = (*x as f64 * b as f64).floor() as usize;
                    assert_eq!(slice, i, "batch {b}, u0 {u0}: {u:?}");
                }
            }
        }
        // Each position is uniform over u0: the 4th of 16 lands in each tenth of [0, 1)
        // a tenth of the time.
        let k = 10_000;
        let mut tenths = [0usize; 10];
        for j in 0..k {
            let u = low_discrepancy((j as f32 + 0.5) / k as f32, 16)[3];
            tenths[(u * 10.0) as usize] += 1;
        }
        assert!(
            tenths.iter().all(|&c| c.abs_diff(k / 10) <= 2),
            "{tenths:?}"
        );
    }

    #[test]
    fn multi_object_scope_draws_single_objects_and_dropped_captions_uniformly() {
        let b = TimestepBias {
            strategy: BiasStrategy::Later,
            multiplier: 3.0,
            portion: 0.25,
            scope: BiasScope::MultiObject,
        };
        let all = TimestepBias {
            scope: BiasScope::All,
            ..b
        };
        let plain = TimestepBias::default();
        for &u in &[0.0f32, 0.3, 0.6, 0.8, 0.999] {
            // A captioned pair, and pictures the data set does not count: the bias.
            assert_eq!(b.sample_for(u, 1000, Some(2), true), all.sample(u, 1000));
            assert_eq!(b.sample_for(u, 1000, None, true), all.sample(u, 1000));
            assert_eq!(b.sample_for(u, 1000, None, false), all.sample(u, 1000));
            // A single object, or a pair trained on the empty prompt: uniform.
            assert_eq!(b.sample_for(u, 1000, Some(1), true), plain.sample(u, 1000));
            assert_eq!(b.sample_for(u, 1000, Some(2), false), plain.sample(u, 1000));
            // Scope all: every picture from the bias.
            assert_eq!(all.sample_for(u, 1000, Some(1), false), all.sample(u, 1000));
        }
        // The two draws differ, so the checks above can fail: u = 0.6 is t = 600
        // uniform, and t = 800 under the bias (mass 0.6 x 1500 = 900: the light 750
        // below t = 750, then 150 / 3 = 50 steps into the heavy range).
        assert_eq!(plain.sample(0.6, 1000), 600);
        assert_eq!(all.sample(0.6, 1000), 800);
        assert_eq!(
            BiasScope::parse("multi_object"),
            Some(BiasScope::MultiObject)
        );
        assert_eq!(BiasScope::parse("all"), Some(BiasScope::All));
        assert_eq!(BiasScope::parse("pairs"), None);
    }
}
