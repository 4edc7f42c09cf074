//! `Tensor`: a cheap handle (Arc) to storage + layout + dtype + device + an optional
//! autograd node, with constructors and host read-back.

use crate::backend::BackendStorage;
use crate::cpu::CpuStorage;
use crate::gpu::GpuStorage;
use crate::op::Op;
use crate::{DType, Device, Element, Error, Layout, Result, Shape, Storage};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

/// A unique id per tensor handle, used by autograd to key gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// An n-dimensional array on a device. Cloning is cheap (the handle is shared); views
/// (reshape, permute, narrow, broadcast) share storage and change only the layout.
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

pub(crate) struct Inner {
    id: TensorId,
    storage: Arc<RwLock<Storage>>,
    layout: Layout,
    // Cached from the storage so reading them takes no lock; storage never changes either.
    dtype: DType,
    device: Device,
    /// How this tensor was made, when autograd records it (None: a leaf or untracked).
    op: Option<Op>,
    requires_grad: bool,
    /// The accumulated gradient of a leaf that requires grad.
    grad: Mutex<Option<Tensor>>,
}

impl Tensor {
    /// Wraps a fresh contiguous storage of shape `shape`; `op` records how it was made.
    pub(crate) fn from_storage(
        storage: Storage,
        shape: impl Into<Shape>,
        op: Option<Op>,
    ) -> Tensor {
        let layout = Layout::contiguous(shape);
        Tensor::with_layout(Arc::new(RwLock::new(storage)), layout, op, false)
    }

    /// A tensor over a new storage viewed through `layout` (a kernel that writes its
    /// output in another order than row-major).
    pub(crate) fn from_storage_layout(storage: Storage, layout: Layout, op: Option<Op>) -> Tensor {
        Tensor::with_layout(Arc::new(RwLock::new(storage)), layout, op, false)
    }

    fn with_layout(
        storage: Arc<RwLock<Storage>>,
        layout: Layout,
        op: Option<Op>,
        leaf_grad: bool,
    ) -> Tensor {
        let (dtype, device) = {
            let s = storage.read().unwrap_or_else(|e| e.into_inner());
            (s.dtype(), s.device())
        };
        let requires_grad = leaf_grad || op.is_some();
        Tensor(Arc::new(Inner {
            id: TensorId::next(),
            storage,
            layout,
            dtype,
            device,
            op,
            requires_grad,
            grad: Mutex::new(None),
        }))
    }

    /// A new handle on the same storage with another layout (a view).
    pub(crate) fn view(&self, layout: Layout, op: Option<Op>) -> Tensor {
        Tensor::with_layout(self.0.storage.clone(), layout, op, false)
    }

    /// Read access to the storage. A poisoned lock only means another thread panicked
    /// while holding it; the data itself is still whole, so we keep going.
    pub(crate) fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn storage_arc(&self) -> &Arc<RwLock<Storage>> {
        &self.0.storage
    }

    pub(crate) fn op(&self) -> Option<&Op> {
        self.0.op.as_ref()
    }

    // ---- constructors -------------------------------------------------------------

    /// A tensor holding `data` (row-major) with shape `shape`.
    pub fn from_vec<T: Element>(
        data: Vec<T>,
        shape: impl Into<Shape>,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.elem_count() {
            return Err(Error::shape(
                "from_vec",
                format!(
                    "{} values cannot fill shape {shape} ({} elements)",
                    data.len(),
                    shape.elem_count()
                ),
            ));
        }
        Ok(Tensor::from_storage(
            Tensor::upload(T::to_cpu_storage(data), device)?,
            shape,
            None,
        ))
    }

    /// A tensor copied from a slice.
    pub fn from_slice<T: Element>(
        data: &[T],
        shape: impl Into<Shape>,
        device: &Device,
    ) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// Every element equal to `value`.
    pub fn full(
        value: f64,
        shape: impl Into<Shape>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let storage = Tensor::full_storage(value, shape.elem_count(), dtype, device)?;
        Ok(Tensor::from_storage(storage, shape, None))
    }

    /// `n` elements equal to `value`, made on the device itself.
    pub(crate) fn full_storage(
        value: f64,
        n: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(CpuStorage::full(value, n, dtype)),
            Device::Gpu(g) => Storage::Gpu(GpuStorage::full(g, value, n, dtype)?),
        })
    }
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(0.0, shape, dtype, device)
    }
    pub fn ones(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(1.0, shape, dtype, device)
    }
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.dtype(), self.device())
    }
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape(), self.dtype(), self.device())
    }
    pub fn full_like(&self, value: f64) -> Result<Tensor> {
        Tensor::full(value, self.shape(), self.dtype(), self.device())
    }

    /// `start, start + step, ...` up to but excluding `end`, as PyTorch's arange.
    pub fn arange(
        start: f64,
        end: f64,
        step: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if step == 0.0 || !((end - start) / step).is_finite() {
            return Err(Error::arg(
                "arange",
                format!("cannot step from {start} to {end} by {step}"),
            ));
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        let values: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        let cpu = CpuStorage::from_f64(&values, dtype);
        Ok(Tensor::from_storage(
            Tensor::upload(cpu, device)?,
            [n],
            None,
        ))
    }

    /// Moves host data onto `device`.
    pub(crate) fn upload(cpu: CpuStorage, device: &Device) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(cpu)),
            Device::Gpu(g) => Ok(Storage::Gpu(GpuStorage::from_cpu(&cpu, g)?)),
        }
    }

    /// This tensor's values on `device` (a copy; `self` when already there). Gradients
    /// flow back across the move.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.clone());
        }
        let moved = Tensor::upload(self.to_cpu_storage()?, device)?;
        let rec = crate::autograd::record(&[self], || Op::ToDevice(self.clone()));
        Ok(Tensor::from_storage(moved, self.shape(), rec))
    }

    // ---- accessors ----------------------------------------------------------------

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn shape(&self) -> &Shape {
        self.0.layout.shape()
    }
    pub fn dims(&self) -> &[usize] {
        self.0.layout.dims()
    }
    pub fn rank(&self) -> usize {
        self.dims().len()
    }
    pub fn elem_count(&self) -> usize {
        self.0.layout.elem_count()
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn device(&self) -> &Device {
        &self.0.device
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// The size of axis `d` (negative counts from the end).
    pub fn dim(&self, d: impl crate::Dim) -> Result<usize> {
        Ok(self.dims()[d.index(self.rank(), "dim")?])
    }

    // ---- host read-back -----------------------------------------------------------

    /// The elements in row-major order. `T` must be the tensor's dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::dtype(
                "to_vec",
                format!(
                    "asked for {} but the tensor holds {}: cast with .to_dtype(DType::{:?}) first",
                    T::DTYPE,
                    self.dtype(),
                    T::DTYPE
                ),
            ));
        }
        let cpu = self.to_cpu_storage()?;
        Ok(T::from_cpu_storage(cpu).expect("dtype checked above"))
    }

    /// The single element of a tensor with one element (any shape).
    pub fn to_scalar<T: Element>(&self) -> Result<T> {
        if self.elem_count() != 1 {
            return Err(Error::shape(
                "to_scalar",
                format!(
                    "shape {} has {} elements, not 1",
                    self.shape(),
                    self.elem_count()
                ),
            ));
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// The elements as f64, whatever the dtype (for tests and printing).
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        Ok(self.to_cpu_storage()?.to_f64_vec())
    }

    /// A contiguous host copy of the elements.
    pub(crate) fn to_cpu_storage(&self) -> Result<CpuStorage> {
        let s = self.storage();
        match &*s {
            Storage::Cpu(c) => c.copy_strided(self.layout()),
            Storage::Gpu(g) => {
                if self.is_contiguous() && self.layout().offset() == 0 && g.len == self.elem_count()
                {
                    g.to_cpu()
                } else {
                    g.copy_strided(self.layout())?.to_cpu()
                }
            }
        }
    }

    // ---- autograd handles ---------------------------------------------------------

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// A leaf handle on the same storage whose gradient `backward` accumulates (a
    /// trainable parameter, or an input of a gradient check).
    pub fn with_grad(&self) -> Tensor {
        Tensor::with_layout(self.0.storage.clone(), self.layout().clone(), None, true)
    }

    /// A handle on the same storage cut from the graph: no gradient flows through it.
    pub fn detach(&self) -> Tensor {
        Tensor::with_layout(self.0.storage.clone(), self.layout().clone(), None, false)
    }

    /// The gradient accumulated by `backward` (leaves only).
    pub fn grad(&self) -> Option<Tensor> {
        self.0
            .grad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Clears the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Adds `g` to the accumulated gradient (used by backward).
    pub(crate) fn accumulate_grad(&self, g: Tensor) -> Result<()> {
        let mut slot = self.0.grad.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(match slot.take() {
            Some(old) => old.add(&g)?,
            None => g,
        });
        Ok(())
    }

    /// Overwrites this tensor's elements in place with `src` (same shape, dtype and
    /// device), as an optimizer updates its parameters. Views of the same storage see
    /// the change; a tensor already saved in a recorded graph would give stale gradients.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape()
            || src.dtype() != self.dtype()
            || src.device() != self.device()
        {
            return Err(Error::shape(
                "assign",
                format!(
                    "source {} {} on {} does not match destination {} {} on {}",
                    src.shape(),
                    src.dtype(),
                    src.device(),
                    self.shape(),
                    self.dtype(),
                    self.device()
                ),
            ));
        }
        // Reading and writing one storage at once would deadlock: copy the source out first.
        let src = if Arc::ptr_eq(self.storage_arc(), src.storage_arc()) {
            src.copy()?
        } else {
            src.clone()
        };
        let src_storage = src.storage();
        let mut dst = self.0.storage.write().unwrap_or_else(|e| e.into_inner());
        dst.copy_into(self.layout(), (&src_storage, src.layout()))
    }
}

impl Drop for Inner {
    /// Frees the graph behind this tensor with an explicit stack: the default recursive
    /// drop of a chain of a few hundred thousand recorded ops would overflow the stack.
    fn drop(&mut self) {
        let mut stack: Vec<Tensor> = self.op.take().map(Op::into_tensors).unwrap_or_default();
        while let Some(t) = stack.pop() {
            // Only a tensor we hold the last handle to frees its graph here; others are
            // still in use and keep theirs.
            if let Ok(mut inner) = Arc::try_unwrap(t.0) {
                stack.extend(inner.op.take().map(Op::into_tensors).unwrap_or_default());
            }
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor{} {} {}",
            self.shape(),
            self.dtype(),
            self.device()
        )?;
        if self.elem_count() <= 32 {
            if let Ok(v) = self.to_vec_f64() {
                write!(f, " {v:?}")?;
            }
        }
        Ok(())
    }
}

/// Read guards on the storages of several tensors, each lock taken once even when
/// tensors share storage (`x.mul(&x)`): a second read of a lock this thread already
/// holds may block behind a waiting writer.
pub(crate) struct StorageGuards<'a> {
    guards: Vec<RwLockReadGuard<'a, Storage>>,
    map: Vec<usize>,
}

impl StorageGuards<'_> {
    /// The storage of the i-th tensor passed to `read_storages`.
    pub(crate) fn get(&self, i: usize) -> &Storage {
        &self.guards[self.map[i]]
    }
}

pub(crate) fn read_storages<'a>(ts: &[&'a Tensor]) -> StorageGuards<'a> {
    let mut arcs: Vec<&Arc<RwLock<Storage>>> = Vec::new();
    let mut map = Vec::with_capacity(ts.len());
    for t in ts {
        let i = arcs
            .iter()
            .position(|a| Arc::ptr_eq(a, t.storage_arc()))
            .unwrap_or_else(|| {
                arcs.push(t.storage_arc());
                arcs.len() - 1
            });
        map.push(i);
    }
    let guards = arcs
        .iter()
        .map(|a| a.read().unwrap_or_else(|e| e.into_inner()))
        .collect();
    StorageGuards { guards, map }
}
