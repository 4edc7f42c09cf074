//! Learning-rate schedules: linear warm-up, then cosine decay (Loshchilov & Hutter 2017,
//! SGDR) to a floor.

/// lr(step) = base * step / warmup during warm-up, then a cosine from base down to
/// base * min_ratio at `total` steps (and flat after).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub base: f64,
    pub warmup: u64,
    pub total: u64,
    pub min_ratio: f64,
}

impl LrSchedule {
    /// The rate for optimizer step `step` (counting from 1).
    pub fn at(&self, step: u64) -> f64 {
        if step <= self.warmup && self.warmup > 0 {
            return self.base * step as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step.saturating_sub(self.warmup)) as f64 / span).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        self.base * (self.min_ratio + (1.0 - self.min_ratio) * cos)
    }
}
