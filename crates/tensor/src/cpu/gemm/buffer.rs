//! A 64-byte-aligned view into a reused `Vec`, so packed panels start on a cache line.

use super::element::{Element, Slot};

/// Alignment of packed panels: one cache line, which is also one AVX-512 vector, so the
/// micro-kernels can use aligned loads.
pub(crate) const ALIGN_BYTES: usize = 64;

/// A pack buffer borrowed from this thread's cache for the duration of one use, returned on drop.
pub(crate) struct PackBuf<T: Element> {
    slot: Slot,
    vec: Vec<T>,
}

impl<T: Element> PackBuf<T> {
    pub(crate) fn take(slot: Slot) -> Self {
        Self {
            slot,
            vec: T::take_buf(slot),
        }
    }

    /// An aligned slice of `len` elements. Contents are unspecified (left from earlier use);
    /// packing overwrites every element the kernels read, zero padding included.
    pub(crate) fn slice(&mut self, len: usize) -> &mut [T] {
        let pad = ALIGN_BYTES / std::mem::size_of::<T>();
        if self.vec.len() < len + pad {
            self.vec.resize(len + pad, T::ZERO);
        }
        let off = self.vec.as_ptr().align_offset(ALIGN_BYTES);
        debug_assert!(off < pad);
        &mut self.vec[off..off + len]
    }
}

impl<T: Element> Drop for PackBuf<T> {
    fn drop(&mut self) {
        T::put_buf(self.slot, std::mem::take(&mut self.vec));
    }
}
