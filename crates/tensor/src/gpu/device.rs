//! `GpuDevice`: one wgpu adapter and device with kuosan's runtime (pipeline cache, buffer
//! pool, open command batch). Adapter choice prefers a discrete GPU, then integrated,
//! virtual, and last a software one (Mesa's lavapipe); `KUOSAN_ADAPTER=<name part>` picks
//! by name.

use super::runtime::Runtime;
use crate::{Error, Result};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Environment variable that picks an adapter by (part of) its name.
pub const ADAPTER_ENV: &str = "KUOSAN_ADAPTER";

/// What to tell a user with no usable adapter.
const HOW_TO_GET_ONE: &str = "install a GPU driver with Vulkan, Metal or DX12 support, or Mesa's \
     software Vulkan on Linux (`apt-get install -y mesa-vulkan-drivers`)";

/// A GPU (or software Vulkan) device. Cheap to clone; equal when it is the same device.
#[derive(Clone)]
pub struct GpuDevice(pub(crate) Arc<Context>);

pub(crate) struct Context {
    id: usize,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) limits: wgpu::Limits,
    pub(crate) features: wgpu::Features,
    pub(crate) runtime: Runtime,
    /// The first error the device reported outside an error scope; surfaced at the next
    /// read-back instead of panicking inside wgpu.
    pub(crate) lost: Arc<Mutex<Option<String>>>,
}

impl GpuDevice {
    /// Opens the preferred adapter (see the module docs) with its own limits.
    pub fn new() -> Result<GpuDevice> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        if let Ok(want) = std::env::var(ADAPTER_ENV) {
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            adapters.retain(|a| {
                a.get_info()
                    .name
                    .to_lowercase()
                    .contains(&want.to_lowercase())
            });
            if adapters.is_empty() {
                return Err(Error::device(
                    "gpu",
                    format!("{ADAPTER_ENV}={want:?} matches none of the adapters found: {names:?}"),
                ));
            }
        }
        adapters.sort_by_key(|a| rank(a.get_info().device_type));
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            Error::device("gpu", format!("no GPU adapter found: {HOW_TO_GET_ONE}"))
        })?;
        GpuDevice::open(adapter)
    }

    fn open(adapter: wgpu::Adapter) -> Result<GpuDevice> {
        let info = adapter.get_info();
        // Ask for the adapter's own limits (lavapipe allows 32 KiB of workgroup memory
        // where wgpu's defaults stop at 16) and the optional features we can use.
        let limits = adapter.limits();
        let wanted =
            wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP;
        let features = adapter.features() & wanted;
        let desc = wgpu::DeviceDescriptor {
            label: Some("kuosan"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::default(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::device(
                "gpu",
                format!("adapter {:?} refused a device: {e}", info.name),
            )
        })?;
        let lost = Arc::new(Mutex::new(None));
        let sink = lost.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        Ok(GpuDevice(Arc::new(Context {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            info,
            device,
            queue,
            limits,
            features,
            runtime: Runtime::default(),
            lost,
        })))
    }

    /// The process-wide default GPU device, opened on first use.
    pub fn shared() -> Result<GpuDevice> {
        static SHARED: OnceLock<std::result::Result<GpuDevice, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| GpuDevice::new().map_err(|e| e.to_string()))
            .clone()
            .map_err(|msg| Error::device("gpu", msg.trim_start_matches("gpu: ").to_string()))
    }

    /// The adapter's name ("NVIDIA H100 80GB HBM3", "llvmpipe (LLVM 15.0.6, 256 bits)").
    pub fn name(&self) -> &str {
        &self.0.info.name
    }

    /// Whether this is a software rasteriser on the CPU (lavapipe): correct, not fast.
    pub fn is_software(&self) -> bool {
        self.0.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether shaders may use f16 arithmetic.
    pub fn has_f16(&self) -> bool {
        self.0.features.contains(wgpu::Features::SHADER_F16)
    }

    /// The subgroup size range (min, max) when the adapter has subgroup operations
    /// (lavapipe: 8..8, NVIDIA 32..32). Reported only: the kernels reduce through
    /// workgroup memory, so they are correct at any subgroup size.
    pub fn subgroup_sizes(&self) -> Option<(u32, u32)> {
        let info = &self.0.info;
        self.0
            .features
            .contains(wgpu::Features::SUBGROUP)
            .then_some((info.subgroup_min_size, info.subgroup_max_size))
    }

    /// What the adapter offers kuosan, for logs and benchmark headers
    /// ("f16: yes, subgroups: 8..8").
    pub fn capabilities(&self) -> String {
        let sub = match self.subgroup_sizes() {
            Some((lo, hi)) => format!("{lo}..{hi}"),
            None => "no".into(),
        };
        let f16 = if self.has_f16() { "yes" } else { "no" };
        format!("f16: {f16}, subgroups: {sub}")
    }

    /// The largest buffer a single kernel binding may address, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.0
            .limits
            .max_storage_buffer_binding_size
            .min(self.0.limits.max_buffer_size)
    }

    /// Bytes of workgroup memory a kernel may use.
    pub fn workgroup_memory_bytes(&self) -> u32 {
        self.0.limits.max_compute_workgroup_storage_size
    }

    /// Fills every new op output with NaN before the op runs, so a kernel that leaves an
    /// element unwritten shows it (for tests; costs one extra pass per op).
    pub fn set_poison(&self, on: bool) {
        self.0
            .runtime
            .poison
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many times the host has read data back (and so waited for the device).
    /// A training step should add exactly one: the loss.
    pub fn readbacks(&self) -> u64 {
        self.0
            .runtime
            .reads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until every op recorded so far has run on the device (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.0.runtime.submit(&self.0);
        self.0
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::device("gpu", format!("waiting for the device failed: {e}")))?;
        self.check()
    }

    /// The error the device reported, if any, as an `Err`.
    pub(crate) fn check(&self) -> Result<()> {
        match self
            .0
            .lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(e) => Err(Error::device(
                "gpu",
                format!("the device reported an error: {e}"),
            )),
            None => Ok(()),
        }
    }
}

/// Adapter preference: lower is better.
fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

impl PartialEq for GpuDevice {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}
impl Eq for GpuDevice {}

impl fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gpu:{} ({}, {:?})",
            self.0.id, self.0.info.name, self.0.info.backend
        )
    }
}
