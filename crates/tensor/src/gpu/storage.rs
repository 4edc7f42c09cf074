//! `GpuStorage`: a tensor's elements in a pooled device buffer, and its moves to and
//! from the host. The GPU computes in f32 and holds u32 ids and masks; f64 stays on the
//! CPU, and f16/bf16 (storage dtypes) are cast on the CPU before moving.

use super::device::GpuDevice;
use super::runtime::GpuBuffer;
use crate::cpu::CpuStorage;
use crate::{DType, Error, Layout, Result};
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

/// The WGSL type of a GPU dtype.
pub(crate) fn wgsl_type(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::U32 => Ok("u32"),
        other => Err(Error::dtype(
            op,
            format!("{other} tensors do not live on the GPU (it computes in f32 and holds u32); cast on the CPU first"),
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
        wgsl_type(op, dtype)?;
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
        let (bytes, dtype): (&[u8], DType) = match cpu {
            CpuStorage::F32(v) => (bytemuck::cast_slice(v), DType::F32),
            CpuStorage::U32(v) => (bytemuck::cast_slice(v), DType::U32),
            other => {
                wgsl_type("to_device", crate::backend::BackendStorage::dtype(other))?;
                unreachable!("only f32 and u32 pass wgsl_type")
            }
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
        let bytes = self
            .device
            .0
            .runtime
            .read(&self.device.0, &self.buf, (self.len * 4) as u64)?;
        self.device.check()?;
        Ok(match self.dtype {
            DType::F32 => CpuStorage::F32(bytemuck::pod_collect_to_vec(&bytes)),
            DType::U32 => CpuStorage::U32(bytemuck::pod_collect_to_vec(&bytes)),
            other => unreachable!("no {other} storage on the GPU"),
        })
    }

    /// The view `l` as a buffer that starts at element 0 in row-major order: itself when
    /// it already is one, else a copy. Fused kernels index from 0.
    pub(crate) fn dense(&self, l: &Layout) -> Result<std::borrow::Cow<'_, GpuStorage>> {
        if l.is_contiguous() && l.offset() == 0 {
            Ok(std::borrow::Cow::Borrowed(self))
        } else {
            Ok(std::borrow::Cow::Owned(super::elementwise::map(
                self,
                l,
                self.dtype,
                "x",
                &[],
                "copy",
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
        let bits = match dtype {
            DType::U32 => value as u32,
            _ => (value as f32).to_bits(),
        };
        super::fill::fill_words(&device.0, &s.buf, len as u32, bits)?;
        Ok(s)
    }
}
