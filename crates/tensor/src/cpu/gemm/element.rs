//! The element types the GEMM driver is generic over (f32, f64), with their reusable pack buffers.

use std::cell::Cell;
use std::ops::{Add, Mul};

/// Which per-thread pack buffer a caller wants: the packed A block is shared by all tasks of
/// one call (owned by the calling thread), the packed B chunk is private to each task.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot {
    A,
    B,
    /// A single partial A panel, packed by a task when A is otherwise read in place.
    Edge,
}

/// A float type the GEMM can work on. Sealed: implemented for f32 and f64 only.
pub(crate) trait Element:
    Copy + Send + Sync + PartialEq + std::fmt::Debug + Add<Output = Self> + Mul<Output = Self> + 'static
{
    const ZERO: Self;

    /// Takes this thread's cached buffer for `slot` (empty if none, or if an outer call on this
    /// thread holds it: rayon may run a nested GEMM on a thread that is waiting in a join, so a
    /// `RefCell` borrow could panic where take/put cannot).
    fn take_buf(slot: Slot) -> Vec<Self>;

    /// Gives a buffer back to this thread's cache, keeping the larger of the two if it is full.
    fn put_buf(slot: Slot, buf: Vec<Self>);
}

macro_rules! impl_element {
    ($t:ty, $a:ident, $b:ident, $e:ident) => {
        thread_local! {
            static $a: Cell<Vec<$t>> = const { Cell::new(Vec::new()) };
            static $b: Cell<Vec<$t>> = const { Cell::new(Vec::new()) };
            static $e: Cell<Vec<$t>> = const { Cell::new(Vec::new()) };
        }

        impl Element for $t {
            const ZERO: Self = 0.0;

            fn take_buf(slot: Slot) -> Vec<Self> {
                match slot {
                    Slot::A => $a.with(Cell::take),
                    Slot::B => $b.with(Cell::take),
                    Slot::Edge => $e.with(Cell::take),
                }
            }

            fn put_buf(slot: Slot, buf: Vec<Self>) {
                let cell = match slot {
                    Slot::A => &$a,
                    Slot::B => &$b,
                    Slot::Edge => &$e,
                };
                cell.with(|c| {
                    let old = c.take();
                    c.set(if old.capacity() > buf.capacity() {
                        old
                    } else {
                        buf
                    });
                });
            }
        }
    };
}

impl_element!(f32, F32_PACK_A, F32_PACK_B, F32_PACK_EDGE);
impl_element!(f64, F64_PACK_A, F64_PACK_B, F64_PACK_EDGE);
