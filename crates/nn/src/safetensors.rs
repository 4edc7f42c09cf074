//! Reading and writing named tensors as safetensors files (the format diffusers and
//! transformers load), in f32, f16 or bf16. Writes are atomic: the data goes to a
//! temporary file in the same directory, is flushed to disk, and is renamed over the
//! target, so a crash never leaves a half-written checkpoint.

use crate::{Error, Result};
use half::{bf16, f16};
use kuosan_tensor::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// One tensor's bytes, ready to serialise.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Little-endian bytes of `t` stored as `dtype`.
fn to_raw(t: &Tensor, dtype: DType) -> Result<Raw> {
    let t = t.to_dtype(dtype)?;
    let (st, data): (Dtype, Vec<u8>) = match dtype {
        DType::F32 => (
            Dtype::F32,
            t.to_vec::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            Dtype::F64,
            t.to_vec::<f64>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::F16 => (
            Dtype::F16,
            t.to_vec::<f16>()?
                .iter()
                .flat_map(|v| v.to_bits().to_le_bytes())
                .collect(),
        ),
        DType::BF16 => (
            Dtype::BF16,
            t.to_vec::<bf16>()?
                .iter()
                .flat_map(|v| v.to_bits().to_le_bytes())
                .collect(),
        ),
        DType::U32 => (
            Dtype::U32,
            t.to_vec::<u32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
    };
    Ok(Raw {
        dtype: st,
        shape: t.dims().to_vec(),
        data,
    })
}

/// Writes `tensors` to `path` in `dtype` (u32 tensors stay u32), with optional string
/// metadata, atomically.
pub fn save(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    dtype: DType,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let raws: Vec<(String, Raw)> = tensors
        .iter()
        .map(|(n, t)| {
            Ok((
                n.clone(),
                to_raw(
                    t,
                    if t.dtype() == DType::U32 {
                        DType::U32
                    } else {
                        dtype
                    },
                )?,
            ))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(raws.iter().map(|(n, r)| (n.as_str(), r)), metadata)
        .map_err(|e| Error::file(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::file(dir, format!("cannot create the directory: {e}")))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::file(path, format!("cannot write: {e}"))
    })
}

/// Every tensor in a safetensors file, on `device`: f32, f16, bf16 and f64 as f32 (the
/// compute dtype), u32 as u32; other dtypes are an error naming the tensor.
pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    Ok(load_with_metadata(path, device)?.0)
}

/// `load`, plus the file's string metadata.
pub fn load_with_metadata(
    path: impl AsRef<Path>,
    device: &Device,
) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        Error::file(
            path,
            format!("is not a safetensors file ({e}); was the write interrupted?"),
        )
    })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::file(path, format!("is corrupt: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let (shape, data) = (view.shape().to_vec(), view.data());
        let le4 = || data.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
        let le2 = || {
            data.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
        };
        let t = match view.dtype() {
            Dtype::F32 => Tensor::from_vec(le4().map(f32::from_le_bytes).collect(), shape, device),
            Dtype::U32 => Tensor::from_vec(le4().map(u32::from_le_bytes).collect(), shape, device),
            // Signed ids (PyTorch's int64 and int32) become u32 ids when none is negative.
            Dtype::I32 | Dtype::I64 => {
                let wide: Vec<i64> = if view.dtype() == Dtype::I32 {
                    le4().map(|b| i64::from(i32::from_le_bytes(b))).collect()
                } else {
                    data.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect()
                };
                match wide
                    .iter()
                    .map(|&v| u32::try_from(v))
                    .collect::<std::result::Result<Vec<u32>, _>>()
                {
                    Ok(ids) => Tensor::from_vec(ids, shape, device),
                    Err(_) => {
                        return Err(Error::file(
                            path,
                            format!("tensor {name:?} holds values that are not u32 ids"),
                        ))
                    }
                }
            }
            Dtype::F16 => {
                Tensor::from_vec(le2().map(f16::from_bits).collect(), shape, &Device::Cpu)
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.to_device(device))
            }
            Dtype::BF16 => {
                Tensor::from_vec(le2().map(bf16::from_bits).collect(), shape, &Device::Cpu)
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.to_device(device))
            }
            Dtype::F64 => {
                let v: Vec<f64> = data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                Tensor::from_vec(v, shape, &Device::Cpu)
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.to_device(device))
            }
            other => {
                return Err(Error::file(
                    path,
                    format!("tensor {name:?} has dtype {other:?}, which kuosan does not read"),
                ))
            }
        }
        .map_err(|e| Error::file(path, format!("tensor {name:?}: {e}")))?;
        out.insert(name, t);
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}
