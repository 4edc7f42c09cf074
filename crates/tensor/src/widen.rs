//! Half-precision storage (f16, bf16) computes in f32, as PyTorch's CPU kernels and
//! autocast do for norms, softmax and reductions: operands are widened to f32, the f32
//! kernel runs, and the result is rounded back once. The GPU's elementwise kernels do
//! this inside the kernel (read widened, write rounded, no f32 copy); every other op on
//! either device goes through here, so one rule gives f16 the same numbers everywhere.

use crate::backend::{BackendStorage, Operand};
use crate::storage::Storage;
use crate::{DType, Layout, Result};
use std::borrow::Cow;

/// The dtype of a half-precision operand, which computes through f32.
pub(crate) fn half(s: &Storage) -> Option<DType> {
    matches!(s.dtype(), DType::F16 | DType::BF16).then(|| s.dtype())
}

/// An operand as f32: a contiguous f32 copy of a half-precision one, else itself.
pub(crate) struct Wide<'a>(Cow<'a, Storage>, Cow<'a, Layout>);

impl<'a> Wide<'a> {
    pub(crate) fn new((s, l): Operand<'a, Storage>) -> Result<Wide<'a>> {
        Ok(if half(s).is_some() {
            let f = s.to_dtype(l, DType::F32)?;
            Wide(
                Cow::Owned(f),
                Cow::Owned(Layout::contiguous(l.shape().clone())),
            )
        } else {
            Wide(Cow::Borrowed(s), Cow::Borrowed(l))
        })
    }

    pub(crate) fn opt(o: Option<Operand<'a, Storage>>) -> Result<Option<Wide<'a>>> {
        o.map(Wide::new).transpose()
    }

    pub(crate) fn op(&self) -> Operand<'_, Storage> {
        (&self.0, &self.1)
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.0
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.1
    }
}

/// An f32 result (contiguous, as every op returns) rounded to `dtype`.
pub(crate) fn narrow(s: Storage, dtype: DType) -> Result<Storage> {
    let n = s.len();
    s.to_dtype(&Layout::contiguous([n]), dtype)
}
