//! `Device`: where a tensor's storage lives and its ops run.

use crate::gpu::GpuDevice;
use crate::{Error, Result};
use std::fmt;

/// Environment variable that overrides a device choice ("cpu", "gpu" or "auto").
pub const DEVICE_ENV: &str = "KUOSAN_DEVICE";

/// A compute device: the CPU, or a GPU through wgpu.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Gpu(GpuDevice),
}

impl Device {
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// The shared GPU device (any adapter, software ones included), or an error that
    /// says how to get one.
    pub fn gpu() -> Result<Device> {
        GpuDevice::shared().map(Device::Gpu)
    }

    /// A device by name, as `--device` takes it: "cpu", "gpu", or "auto" (a hardware GPU
    /// when there is one, else the CPU: software Vulkan is slower than the CPU kernels).
    /// `KUOSAN_DEVICE`, when set, overrides `name`.
    pub fn from_name(name: &str) -> Result<Device> {
        let name = std::env::var(DEVICE_ENV).unwrap_or_else(|_| name.to_string());
        match name.trim().to_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Device::gpu(),
            "auto" => Ok(match GpuDevice::shared() {
                Ok(g) if !g.is_software() => Device::Gpu(g),
                _ => Device::Cpu,
            }),
            other => Err(Error::arg(
                "device",
                format!("unknown device {other:?}: use cpu, gpu or auto"),
            )),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Gpu(g) => write!(f, "gpu ({})", g.name()),
        }
    }
}
