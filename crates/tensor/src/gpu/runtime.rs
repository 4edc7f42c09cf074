//! The GPU runtime: a pipeline cache keyed by (kernel source, entry point,
//! specialisation), a buffer pool bucketed by size, and one open command encoder that
//! ops record into and that is submitted in batches. The host waits only to read back.
//!
//! Buffer reuse rule: a buffer freed while the open batch may still use it goes back to
//! the pool only when that batch is submitted, so a later upload (`write_buffer`, which
//! lands before the batch runs) can never overwrite data a recorded op still reads.

use super::device::Context;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Dispatches recorded before the batch is submitted: enough to amortise a submit,
/// few enough that the device starts working early.
const BATCH: usize = 64;
/// Smallest pool bucket, in bytes.
const MIN_BUCKET: u64 = 256;
/// Threads per workgroup of the one-dimensional kernels.
pub(crate) const WG: u32 = 256;

/// A compiled kernel and its bind group layout.
pub(crate) struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
pub(crate) struct Runtime {
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    pool: Mutex<Pool>,
    batch: Mutex<Batch>,
    staging: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    /// Fill every new op output with NaN first (tests: proves each element is written).
    pub(crate) poison: AtomicBool,
    /// Host read-backs so far (each one waits for the device).
    pub(crate) reads: AtomicU64,
}

#[derive(Default)]
struct Pool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    /// Freed while the open batch may use them: free again after the next submit.
    retired: Vec<(u64, wgpu::Buffer)>,
}

#[derive(Default)]
struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    dispatches: usize,
    /// Parameter buffers of recorded dispatches, kept until the batch is submitted.
    params: Vec<(u64, wgpu::Buffer)>,
}

/// A pooled device buffer; dropping it returns the buffer to the pool.
pub(crate) struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    cap: u64,
    ctx: Arc<Context>,
}

impl GpuBuffer {
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("present until drop")
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.ctx.runtime.retire(self.cap, b);
        }
    }
}

/// The pool bucket for a request: powers of two from 256 bytes, or the exact (aligned)
/// size when the power of two would pass the binding limit.
fn bucket(bytes: u64, max: u64) -> u64 {
    let p = bytes.max(MIN_BUCKET).next_power_of_two();
    if p <= max {
        p
    } else {
        bytes.div_ceil(MIN_BUCKET) * MIN_BUCKET
    }
}

impl Runtime {
    fn retire(&self, cap: u64, b: wgpu::Buffer) {
        let batch = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if batch.encoder.is_some() {
            pool.retired.push((cap, b));
        } else {
            pool.free.entry(cap).or_default().push(b);
        }
    }

    /// Submits the open batch, if any, and frees what it held.
    pub(crate) fn submit(&self, ctx: &Context) {
        let mut batch = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        let Some(encoder) = batch.encoder.take() else {
            return;
        };
        ctx.queue.submit([encoder.finish()]);
        batch.dispatches = 0;
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let params = std::mem::take(&mut batch.params);
        let retired = std::mem::take(&mut pool.retired);
        for (cap, b) in params.into_iter().chain(retired) {
            pool.free.entry(cap).or_default().push(b);
        }
    }

    /// The cached kernel `key`, compiling `source()` at `entry` on first use.
    pub(crate) fn kernel(
        &self,
        ctx: &Context,
        key: &str,
        entry: &str,
        source: impl FnOnce() -> String,
    ) -> Result<Arc<Kernel>> {
        let full_key = format!("{key}#{entry}");
        if let Some(k) = self
            .kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&full_key)
        {
            return Ok(k.clone());
        }
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = ctx
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(key),
                source: wgpu::ShaderSource::Wgsl(source().into()),
            });
        let pipeline = ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::device(
                "gpu",
                format!("kernel {full_key} failed to build: {e}"),
            ));
        }
        let layout = pipeline.get_bind_group_layout(0);
        let k = Arc::new(Kernel { pipeline, layout });
        self.kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(full_key, k.clone());
        Ok(k)
    }

    /// A buffer of at least `bytes` from the pool (never one the open batch uses).
    fn take(
        &self,
        ctx: &Arc<Context>,
        bytes: u64,
        op: &'static str,
    ) -> Result<(u64, wgpu::Buffer)> {
        let max = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size);
        if bytes > max {
            return Err(Error::device(
                op,
                format!(
                    "needs a buffer of {bytes} bytes but {} binds at most {max}: split the work (a smaller batch)",
                    ctx.info.name
                ),
            ));
        }
        let cap = bucket(bytes, max);
        if let Some(b) = self
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .free
            .get_mut(&cap)
            .and_then(Vec::pop)
        {
            return Ok((cap, b));
        }
        let b = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: cap,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok((cap, b))
    }

    /// An output buffer for `op` of at least `bytes` (NaN-filled first in poison mode).
    pub(crate) fn alloc(
        &self,
        ctx: &Arc<Context>,
        bytes: u64,
        op: &'static str,
    ) -> Result<GpuBuffer> {
        let (cap, b) = self.take(ctx, bytes, op)?;
        let buf = GpuBuffer {
            buffer: Some(b),
            cap,
            ctx: ctx.clone(),
        };
        if self.poison.load(Ordering::Relaxed) {
            // NaN as an f32 and as both of the f16s in each word.
            super::fill::fill_words(ctx, &buf, (cap / 4) as u32, 0x7FC0_7E00)?;
        }
        Ok(buf)
    }

    /// A buffer holding `data` (padded to 4 bytes).
    pub(crate) fn upload(
        &self,
        ctx: &Arc<Context>,
        data: &[u8],
        op: &'static str,
    ) -> Result<GpuBuffer> {
        let (cap, b) = self.take(ctx, data.len() as u64, op)?;
        let buf = GpuBuffer {
            buffer: Some(b),
            cap,
            ctx: ctx.clone(),
        };
        if data.len().is_multiple_of(4) {
            ctx.queue.write_buffer(buf.raw(), 0, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(data.len().next_multiple_of(4), 0);
            ctx.queue.write_buffer(buf.raw(), 0, &padded);
        }
        Ok(buf)
    }

    /// Records one dispatch of `k` over `groups` workgroups with `buffers` bound in order
    /// and `params` bound last.
    pub(crate) fn dispatch(
        &self,
        ctx: &Arc<Context>,
        k: &Kernel,
        buffers: &[&GpuBuffer],
        params: &[u32],
        groups: [u32; 3],
    ) -> Result<()> {
        let words: &[u32] = if params.is_empty() { &[0] } else { params };
        let (pcap, pbuf) = self.take(ctx, 4 * words.len() as u64, "gpu")?;
        ctx.queue
            .write_buffer(&pbuf, 0, bytemuck::cast_slice(words));
        let mut entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.raw().as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: buffers.len() as u32,
            resource: pbuf.as_entire_binding(),
        });
        let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &k.layout,
            entries: &entries,
        });
        let full = {
            let mut batch = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            let encoder = batch.encoder.get_or_insert_with(|| {
                ctx.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
            });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                pass.set_pipeline(&k.pipeline);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
            batch.params.push((pcap, pbuf));
            batch.dispatches += 1;
            batch.dispatches >= BATCH
        };
        if full {
            self.submit(ctx);
        }
        Ok(())
    }

    /// Copies the first `bytes` of `buf` to the host, after everything recorded so far.
    pub(crate) fn read(&self, ctx: &Arc<Context>, buf: &GpuBuffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        let size = bytes.next_multiple_of(4);
        let cap = size.max(MIN_BUCKET).next_power_of_two();
        let staging = self
            .staging
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&cap)
            .and_then(Vec::pop);
        let staging = staging.unwrap_or_else(|| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("read-back"),
                size: cap,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        {
            let mut batch = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            let encoder = batch.encoder.get_or_insert_with(|| {
                ctx.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
            });
            encoder.copy_buffer_to_buffer(buf.raw(), 0, &staging, 0, size);
        }
        self.submit(ctx);
        let slice = staging.slice(..size);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::device("gpu", format!("waiting for the device failed: {e}")))?;
        let mapped = rx
            .recv()
            .map_err(|_| Error::device("gpu", "read-back was never answered"))?;
        mapped.map_err(|e| Error::device("gpu", format!("read-back failed: {e}")))?;
        let out = slice
            .get_mapped_range()
            .map_err(|e| Error::device("gpu", format!("read-back failed: {e}")))?[..bytes as usize]
            .to_vec();
        staging.unmap();
        self.staging
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(cap)
            .or_default()
            .push(staging);
        Ok(out)
    }
}

/// Workgroup counts covering `n` threads in groups of `wg`, folded into a second
/// dimension past the per-dimension limit. Kernels rebuild the linear index as
/// `gid.x + gid.y * num_workgroups.x * wg`.
pub(crate) fn grid(ctx: &Context, n: usize, wg: u32) -> [u32; 3] {
    let groups = n.div_ceil(wg as usize).max(1) as u64;
    let max = u64::from(ctx.limits.max_compute_workgroups_per_dimension);
    let x = groups.min(max);
    [x as u32, groups.div_ceil(x) as u32, 1]
}
