//! AdamW (Loshchilov & Hutter 2019) over named parameters with the fused update kernel,
//! and gradient-norm clipping computed on the device (no host read-back).

use crate::{Error, Result};
use kuosan_tensor::ops::{adamw_step, AdamWStep};
use kuosan_tensor::{no_grad, Tensor};

/// AdamW's constants; the learning rate comes with each step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// torch.optim.AdamW's defaults.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW state: the parameters, their first and second moments, and the step count.
pub struct AdamW {
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Per-parameter multiplier of the learning rate (torch's parameter groups).
    lr_scales: Vec<f64>,
    pub step: u64,
    pub config: AdamWConfig,
}

impl AdamW {
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Result<AdamW> {
        let zeros = |p: &Tensor| p.zeros_like();
        let m = params
            .iter()
            .map(|(_, p)| zeros(p))
            .collect::<kuosan_tensor::Result<_>>()?;
        let v = params
            .iter()
            .map(|(_, p)| zeros(p))
            .collect::<kuosan_tensor::Result<_>>()?;
        let lr_scales = vec![1.0; params.len()];
        Ok(AdamW {
            params,
            m,
            v,
            lr_scales,
            step: 0,
            config,
        })
    }

    /// Parameters whose names start with `prefix` learn at `scale` x the rate given to
    /// `step` (as a torch parameter group with its own lr).
    pub fn set_lr_scale(&mut self, prefix: &str, scale: f64) {
        for ((name, _), s) in self.params.iter().zip(&mut self.lr_scales) {
            if name.starts_with(prefix) {
                *s = scale;
            }
        }
    }

    /// One update at learning rate `lr` of every parameter that has a gradient, then
    /// clears the gradients.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let h = AdamWStep {
            lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            step: self.step,
        };
        let _guard = no_grad();
        let params = self.params.iter().zip(&self.lr_scales);
        for (((_, p), scale), (m, v)) in params.zip(self.m.iter().zip(&self.v)) {
            if let Some(g) = p.grad() {
                let h = AdamWStep {
                    lr: lr * scale,
                    ..h
                };
                adamw_step(p, &g, m, v, &h)?;
                p.zero_grad();
            }
        }
        Ok(())
    }

    /// Clears every gradient.
    pub fn zero_grad(&self) {
        self.params.iter().for_each(|(_, p)| p.zero_grad());
    }

    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// The moments as named tensors (`m.<name>`, `v.<name>`), for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let named = |prefix: &str, ts: &[Tensor]| -> Vec<(String, Tensor)> {
            self.params
                .iter()
                .zip(ts)
                .map(|((n, _), t)| (format!("{prefix}.{n}"), t.clone()))
                .collect()
        };
        [named("m", &self.m), named("v", &self.v)].concat()
    }

    /// Restores the moments saved by `state` (and the step count).
    pub fn load_state(
        &mut self,
        state: &std::collections::BTreeMap<String, Tensor>,
        step: u64,
    ) -> Result<()> {
        for (i, (name, _)) in self.params.iter().enumerate() {
            for (prefix, dst) in [("m", &self.m[i]), ("v", &self.v[i])] {
                let key = format!("{prefix}.{name}");
                let src = state
                    .get(&key)
                    .ok_or_else(|| Error::Arg(format!("optimizer state has no {key:?}")))?;
                dst.assign(&src.to_dtype(dst.dtype())?.to_device(dst.device())?)?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Scales the gradients of `params` so their global L2 norm is at most `max_norm`
/// (torch.nn.utils.clip_grad_norm_), on the device; returns the norm before clipping as
/// a scalar tensor (read it back only when logging).
pub fn clip_grad_norm(params: &[(String, Tensor)], max_norm: f64) -> Result<Tensor> {
    let _guard = no_grad();
    let grads: Vec<Tensor> = params.iter().filter_map(|(_, p)| p.grad()).collect();
    let Some(first) = grads.first() else {
        return Err(Error::Arg(
            "clip_grad_norm: no parameter has a gradient (call backward first)".into(),
        ));
    };
    let mut sq = Tensor::zeros((), first.dtype(), first.device())?;
    for g in &grads {
        sq = sq.add(&g.sqr()?.sum_all()?)?;
    }
    let norm = sq.sqrt()?;
    // coef = min(1, max_norm / (norm + 1e-6)), a scalar on the device.
    let coef = norm
        .add_scalar(1e-6)?
        .recip()?
        .mul_scalar(max_norm)?
        .minimum(&Tensor::ones((), first.dtype(), first.device())?)?;
    for g in &grads {
        g.assign(&g.mul(&coef)?)?;
    }
    Ok(norm)
}
