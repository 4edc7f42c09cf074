//! `bench gpu`: every WGSL kernel family on the adapter wgpu finds, in GFLOP/s or GB/s,
//! with the tiled matmul beside the naive one and memory-bound kernels beside the
//! device's copy bandwidth measured in the same run. On a software adapter (lavapipe)
//! sizes shrink and the figures show only relative gains.

mod kernels;

use kuosan_tensor::{Device, GpuDevice, Result as TResult, Tensor};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// A GPU benchmark run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GpuReport {
    pub adapter: String,
    /// SHADER_F16 and subgroup support ("f16: yes, subgroups: 8..8").
    #[serde(default)]
    pub capabilities: String,
    pub software: bool,
    pub rows: Vec<GpuRow>,
}

/// One kernel at one size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GpuRow {
    pub kernel: String,
    pub case: String,
    /// "GFLOP/s" or "GB/s".
    pub unit: String,
    pub ours: f64,
    /// What `ours` is compared with ("naive matmul", "copy bandwidth") and its value.
    pub versus: String,
    pub baseline: f64,
    pub ratio: f64,
    pub median_ms: f64,
}

impl GpuReport {
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "adapter: {}{} ({})\n\n{:<18} {:<28} {:>9} {:>8} {:>10} {:>22} {:>7}\n",
            self.adapter,
            if self.software {
                " (software: relative figures only)"
            } else {
                ""
            },
            self.capabilities,
            "kernel",
            "case",
            "ours",
            "unit",
            "ms",
            "vs",
            "ratio"
        );
        for r in &self.rows {
            out += &format!(
                "{:<18} {:<28} {:>9.2} {:>8} {:>10.3} {:>22} {:>6.2}x\n",
                r.kernel,
                r.case,
                r.ours,
                r.unit,
                r.median_ms,
                format!("{} {:.2}", r.versus, r.baseline),
                r.ratio
            );
        }
        out
    }
}

/// Median seconds per call of `f` on `dev`, each sample a calibrated batch of calls
/// followed by a device sync (the host only records; time is what the device takes).
pub(crate) fn time(
    dev: &GpuDevice,
    reps: usize,
    mut f: impl FnMut() -> TResult<Tensor>,
) -> TResult<f64> {
    let _ = f()?;
    dev.synchronize()?;
    let mut calls = 1;
    loop {
        let t = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(f()?);
        }
        dev.synchronize()?;
        if t.elapsed().as_secs_f64() > 0.05 || calls >= 1 << 12 {
            break;
        }
        calls *= 2;
    }
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(f()?);
        }
        dev.synchronize()?;
        samples.push(t.elapsed().as_secs_f64() / calls as f64);
    }
    Ok(crate::timing::median(&mut samples))
}

/// Runs every GPU section on the shared adapter.
pub fn run(reps: usize, quick: bool) -> Result<GpuReport, String> {
    let dev = match Device::gpu().map_err(|e| e.to_string())? {
        Device::Gpu(g) => g,
        Device::Cpu => unreachable!("Device::gpu gives a GPU"),
    };
    let quick = quick || dev.is_software();
    let rows = kernels::all(&dev, reps, quick).map_err(|e| e.to_string())?;
    Ok(GpuReport {
        adapter: dev.name().to_string(),
        capabilities: dev.capabilities(),
        software: dev.is_software(),
        rows,
    })
}
