//! `GpuStorage`: a tensor's elements in a pooled device buffer, and its moves to and
//! from the host. The GPU computes in f32, holds u32 ids and masks, and stores f16 where
//! the adapter has SHADER_F16 (checkpoints in half precision, cast to f32 to compute);
//! f64 and bf16 stay on the CPU.

use super::device::GpuDevice;
use super::runtime::GpuBuffer;
use crate::cpu::CpuStorage;
use crate::{DType, Error, Layout, Result};
use half::f16;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Elements on a GPU device.
#[derive(Clone)]
pub struct GpuStorage {
    pub(crate) buf: Arc<GpuBuffer>,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
    pub(crate) device: GpuDevice,
}

impl fmt::Debug for GpuStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GpuStorage({} x {} on {:?})",
            self.len, self.dtype, self.device
        )
    }
}

/// The WGSL type of a dtype on `device`, or an error saying where it can live instead.
pub(crate) fn wgsl_type(
    op: &'static str,
    dtype: DType,
    device: &GpuDevice,
) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::U32 => Ok("u32"),
        DType::F16 if device.has_f16() => Ok("f16"),
        DType::F16 => Err(Error::dtype(
            op,
            format!("{} has no SHADER_F16: keep f16 tensors on the CPU, or cast them to f32 first", device.name()),
        )),
        other => Err(Error::dtype(
            op,
            format!("{other} tensors do not live on the GPU (it computes in f32): cast on the CPU first"),
        )),
    }
}

impl GpuStorage {
    /// A fresh output of `len` elements of `dtype`.
    pub(crate) fn alloc(
        device: &GpuDevice,
        len: usize,
        dtype: DType,
        op: &'static str,
    ) -> Result<GpuStorage> {
        wgsl_type(op, dtype, device)?;
        let buf = device
            .0
            .runtime
            .alloc(&device.0, (len * dtype.size_in_bytes()) as u64, op)?;
        Ok(GpuStorage {
            buf: Arc::new(buf),
            dtype,
            len,
            device: device.clone(),
        })
    }

    /// Copies host data to the device.
    pub fn from_cpu(cpu: &CpuStorage, device: &GpuDevice) -> Result<GpuStorage> {
        let dtype = crate::backend::BackendStorage::dtype(cpu);
        wgsl_type("to_device", dtype, device)?;
        let bytes: &[u8] = match cpu {
            CpuStorage::F32(v) => bytemuck::cast_slice(v),
            CpuStorage::U32(v) => bytemuck::cast_slice(v),
            CpuStorage::F16(v) => bytemuck::cast_slice(v),
            _ => unreachable!("wgsl_type admits only f32, u32 and f16"),
        };
        let buf = device.0.runtime.upload(&device.0, bytes, "to_device")?;
        Ok(GpuStorage {
            buf: Arc::new(buf),
            dtype,
            len: cpu.len(),
            device: device.clone(),
        })
    }

    /// Copies the elements back to the host (waits for the device).
    pub fn to_cpu(&self) -> Result<CpuStorage> {
        let n = (self.len * self.dtype.size_in_bytes()) as u64;
        let bytes = self.device.0.runtime.read(&self.device.0, &self.buf, n)?;
        self.device.check()?;
        Ok(match self.dtype {
            DType::F32 => CpuStorage::F32(bytemuck::pod_collect_to_vec(&bytes)),
            DType::U32 => CpuStorage::U32(bytemuck::pod_collect_to_vec(&bytes)),
            DType::F16 => CpuStorage::F16(bytemuck::pod_collect_to_vec::<u8, f16>(&bytes)),
            other => unreachable!("no {other} storage on the GPU"),
        })
    }

    /// The view `l` as a buffer that starts at element 0 in row-major order: itself when
    /// it already is one, else a copy. Fused kernels index from 0.
    pub(crate) fn dense(&self, l: &Layout) -> Result<Cow<'_, GpuStorage>> {
        if l.is_contiguous() && l.offset() == 0 {
            Ok(Cow::Borrowed(self))
        } else {
            Ok(Cow::Owned(super::elementwise::map(
                self, l, self.dtype, "x", "copy",
            )?))
        }
    }

    /// `len` elements equal to `value`.
    pub(crate) fn full(
        device: &GpuDevice,
        value: f64,
        len: usize,
        dtype: DType,
    ) -> Result<GpuStorage> {
        let s = GpuStorage::alloc(device, len, dtype, "full")?;
        // The fill kernel writes 32-bit words: an f16 value is repeated in both halves.
        let (bits, words) = match dtype {
            DType::U32 => (value as u32, len),
            DType::F16 => {
                let h = u32::from(f16::from_f64(value).to_bits());
                (h << 16 | h, len.div_ceil(2))
            }
            _ => ((value as f32).to_bits(), len),
        };
        super::fill::fill_words(&device.0, &s.buf, words as u32, bits)?;
        Ok(s)
    }
}
