//! `Shape` (the dims of a tensor), NumPy broadcasting, and `Dim` for axis arguments that
//! may count from the end (-1 is the last axis, as in PyTorch).

use crate::{Error, Result};
use std::fmt;

/// The sizes of a tensor's axes, outermost first: `[B, C, H, W]`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// The number of elements (1 for a scalar of rank 0).
    pub fn elem_count(&self) -> usize {
        self.0.iter().product()
    }
    /// Row-major (C order) strides for this shape.
    pub fn contiguous_strides(&self) -> Vec<usize> {
        let mut strides = vec![0; self.0.len()];
        let mut acc = 1;
        for (s, &d) in strides.iter_mut().zip(&self.0).rev() {
            *s = acc;
            acc *= d;
        }
        strides
    }
    /// The size of axis `d`, which the caller has already checked.
    pub fn dim(&self, d: usize) -> usize {
        self.0[d]
    }

    /// The shape two operands broadcast to, by NumPy's rule: align trailing axes; each
    /// pair must be equal or contain a 1.
    pub fn broadcast(op: &'static str, a: &Shape, b: &Shape) -> Result<Shape> {
        let rank = a.rank().max(b.rank());
        let mut out = vec![0; rank];
        for (i, o) in out.iter_mut().enumerate() {
            let da = if i < rank - a.rank() {
                1
            } else {
                a.0[i - (rank - a.rank())]
            };
            let db = if i < rank - b.rank() {
                1
            } else {
                b.0[i - (rank - b.rank())]
            };
            *o = match (da, db) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => {
                    return Err(Error::shapes(
                        op,
                        a,
                        b,
                        &format!("cannot broadcast: axis {i} has sizes {da} and {db}"),
                    ))
                }
            };
        }
        Ok(Shape(out))
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}
impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}
impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape(vec![])
    }
}

/// An axis argument: a `usize` counts from the front, a negative `i32`/`i64` from the
/// back (-1 = last), as in PyTorch.
pub trait Dim: Copy {
    /// The axis as an index into a shape of rank `rank`, or an error naming `op`.
    fn index(self, rank: usize, op: &'static str) -> Result<usize>;
}

impl Dim for usize {
    fn index(self, rank: usize, op: &'static str) -> Result<usize> {
        if self < rank {
            Ok(self)
        } else {
            Err(Error::arg(
                op,
                format!("axis {self} is out of range for a tensor of rank {rank}"),
            ))
        }
    }
}

macro_rules! signed_dim {
    ($t:ty) => {
        impl Dim for $t {
            fn index(self, rank: usize, op: &'static str) -> Result<usize> {
                let r = rank as i64;
                let d = self as i64;
                let i = if d < 0 { d + r } else { d };
                if (0..r).contains(&i) {
                    Ok(i as usize)
                } else {
                    Err(Error::arg(
                        op,
                        format!("axis {d} is out of range for a tensor of rank {rank}"),
                    ))
                }
            }
        }
    };
}
signed_dim!(i32);
signed_dim!(i64);
signed_dim!(isize);

/// Resolves a list of axes, sorted, rejecting repeats.
pub(crate) fn resolve_dims<D: Dim>(
    dims: &[D],
    rank: usize,
    op: &'static str,
) -> Result<Vec<usize>> {
    let mut out = dims
        .iter()
        .map(|d| d.index(rank, op))
        .collect::<Result<Vec<_>>>()?;
    out.sort_unstable();
    if out.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::arg(
            op,
            format!("axis list {out:?} names an axis twice"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        let s = |v: &[usize]| Shape::from(v);
        assert_eq!(
            Shape::broadcast("t", &s(&[3, 1, 5]), &s(&[4, 1])).unwrap(),
            s(&[3, 4, 5])
        );
        assert_eq!(
            Shape::broadcast("t", &s(&[]), &s(&[2, 3])).unwrap(),
            s(&[2, 3])
        );
        assert!(Shape::broadcast("t", &s(&[3, 2]), &s(&[3])).is_err());
    }

    #[test]
    fn negative_dims_count_from_the_back() {
        assert_eq!((-1i32).index(4, "t").unwrap(), 3);
        assert_eq!(0usize.index(1, "t").unwrap(), 0);
        assert!((-5i32).index(4, "t").is_err());
        assert!(4usize.index(4, "t").is_err());
        assert!(resolve_dims(&[1, -3], 4, "t").is_err());
    }
}
