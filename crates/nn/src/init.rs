//! Parameter initialisers, with PyTorch's defaults for its layers.

/// How a new parameter is filled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Const(f64),
    Uniform { lo: f64, hi: f64 },
    Normal { std: f64 },
}

impl Init {
    /// PyTorch's default for Linear and Conv weights and biases:
    /// kaiming_uniform(a = sqrt 5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    pub fn torch_default(fan_in: usize) -> Init {
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        Init::Uniform {
            lo: -bound,
            hi: bound,
        }
    }
}
