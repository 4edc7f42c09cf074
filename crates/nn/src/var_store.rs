//! The named parameter store: every trainable tensor under a dotted name
//! (`down_blocks.0.resnets.1.conv1.weight`, the names diffusers and transformers use),
//! created on first use with a seeded initialiser, and loaded or saved as safetensors.

use crate::{Error, Init, Result};
use kuosan_tensor::{DType, Device, Philox, Tensor};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard};

/// All parameters of a model, by name. Cloning shares the store.
#[derive(Clone)]
pub struct VarStore(Arc<Mutex<Inner>>);

struct Inner {
    vars: BTreeMap<String, Tensor>,
    device: Device,
    dtype: DType,
    rng: Philox,
}

impl VarStore {
    /// An empty store whose parameters live on `device` in `dtype`, initialised from the
    /// Philox stream of `seed` in the order they are created.
    pub fn new(device: Device, dtype: DType, seed: u64) -> Self {
        VarStore(Arc::new(Mutex::new(Inner {
            vars: BTreeMap::new(),
            device,
            dtype,
            rng: Philox::new(seed),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The root path (no prefix).
    pub fn root(&self) -> Path {
        Path {
            store: self.clone(),
            prefix: String::new(),
        }
    }

    pub fn device(&self) -> Device {
        self.lock().device.clone()
    }

    pub fn dtype(&self) -> DType {
        self.lock().dtype
    }

    /// Every parameter, sorted by name.
    pub fn vars(&self) -> Vec<(String, Tensor)> {
        self.lock()
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<Tensor> {
        self.lock().vars.get(name).cloned()
    }

    /// The number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.lock().vars.values().map(Tensor::elem_count).sum()
    }

    /// Writes every parameter to a safetensors file (atomically) in `dtype`.
    pub fn save(&self, path: impl AsRef<std::path::Path>, dtype: DType) -> Result<()> {
        crate::safetensors::save(path, &self.vars(), dtype, None)
    }

    /// Overwrites every parameter from a safetensors file. Strict: a missing or extra
    /// name, or a shape that differs, is an error naming it (nothing is changed then).
    pub fn load(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        let device = self.device();
        let loaded = crate::safetensors::load(path, &device)?;
        let vars = self.vars();
        let extra: Vec<&String> = loaded
            .keys()
            .filter(|k| !vars.iter().any(|(n, _)| n == *k))
            .collect();
        if !extra.is_empty() {
            return Err(Error::file(
                path,
                format!("holds parameters this model does not have: {extra:?}"),
            ));
        }
        let mut ready = Vec::with_capacity(vars.len());
        for (name, var) in &vars {
            let t = loaded
                .get(name)
                .ok_or_else(|| Error::file(path, format!("has no parameter {name:?}")))?;
            if t.shape() != var.shape() {
                return Err(Error::file(
                    path,
                    format!(
                        "parameter {name:?} has shape {}, the model expects {}",
                        t.shape(),
                        var.shape()
                    ),
                ));
            }
            ready.push((var, t.to_dtype(var.dtype())?));
        }
        for (var, t) in ready {
            var.assign(&t)?;
        }
        Ok(())
    }
}

/// A prefix in the store: `path.pp("conv1").var("weight", ..)` names
/// `<prefix>.conv1.weight`.
#[derive(Clone)]
pub struct Path {
    store: VarStore,
    prefix: String,
}

impl Path {
    /// The sub-path `name` (a field name or an index).
    pub fn pp(&self, name: impl Display) -> Path {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Path {
            store: self.store.clone(),
            prefix,
        }
    }

    pub fn device(&self) -> Device {
        self.store.device()
    }

    pub fn store(&self) -> &VarStore {
        &self.store
    }

    /// The parameter `name` under this path: created with `init` the first time, the
    /// same tensor afterwards (the shape must then agree).
    pub fn var(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        let full = self.pp(name).prefix;
        let mut inner = self.store.lock();
        if let Some(v) = inner.vars.get(&full) {
            if v.dims() != shape {
                return Err(Error::Arg(format!(
                    "parameter {full:?} exists with shape {}, asked for {shape:?}",
                    v.shape()
                )));
            }
            return Ok(v.clone());
        }
        let (device, dtype) = (inner.device.clone(), inner.dtype);
        let t = match init {
            Init::Const(c) => Tensor::full(c, shape, dtype, &device)?,
            Init::Uniform { lo, hi } => {
                Tensor::rand(shape, dtype, &device, &mut inner.rng)?.affine(hi - lo, lo)?
            }
            Init::Normal { std } => {
                Tensor::randn(shape, dtype, &device, &mut inner.rng)?.affine(std, 0.0)?
            }
        };
        // A fresh leaf with its own storage (the affine above made a new tensor).
        let t = t.detach().with_grad();
        inner.vars.insert(full, t.clone());
        Ok(t)
    }
}
