//! Exponential moving average of weights (Polyak averaging), as diffusers' EMAModel:
//! shadow = d shadow + (1 - d) param, with the warm-up d = min(decay, (1 + t) / (10 + t)).

use crate::Result;
use kuosan_tensor::{no_grad, Tensor};

pub struct Ema {
    pub decay: f64,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// A shadow copy of `params`.
    pub fn new(params: &[(String, Tensor)], decay: f64) -> Result<Ema> {
        let _guard = no_grad();
        let shadow = params
            .iter()
            .map(|(n, p)| Ok((n.clone(), p.detach().copy()?)))
            .collect::<kuosan_tensor::Result<_>>()?;
        Ok(Ema { decay, shadow })
    }

    /// An average kept in `shadow`, tensors the caller owns (e.g. the parameters of a
    /// second model used for sampling); they are overwritten with `params` first.
    pub fn with_shadow(
        shadow: Vec<(String, Tensor)>,
        params: &[(String, Tensor)],
        decay: f64,
    ) -> Result<Ema> {
        let _guard = no_grad();
        for ((_, s), (_, p)) in shadow.iter().zip(params) {
            s.assign(p)?;
        }
        Ok(Ema { decay, shadow })
    }

    /// The decay used at optimizer step `step` (small at first, so early weights fade).
    pub fn decay_at(&self, step: u64) -> f64 {
        self.decay.min((1.0 + step as f64) / (10.0 + step as f64))
    }

    /// Moves the shadow toward `params` (same names and order as at `new`).
    pub fn update(&mut self, params: &[(String, Tensor)], step: u64) -> Result<()> {
        let d = self.decay_at(step);
        let _guard = no_grad();
        for ((_, s), (_, p)) in self.shadow.iter().zip(params) {
            s.assign(&s.affine(d, 0.0)?.add(&p.affine(1.0 - d, 0.0)?)?)?;
        }
        Ok(())
    }

    /// The averaged weights, by name.
    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.shadow
    }
}
