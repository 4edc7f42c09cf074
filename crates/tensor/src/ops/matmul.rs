//! Matrix multiplication: 2-D and batched, with broadcast batch axes (torch.matmul for
//! operands of rank >= 2).

use crate::autograd::record;
use crate::backend::BackendStorage;
use crate::op::Op;
use crate::ops::binary::same_dtype_device;
use crate::{Error, Result, Shape, Tensor};

impl Tensor {
    /// [.., M, K] x [.., K, N] -> [.., M, N]; the batch axes broadcast.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        same_dtype_device("matmul", &[self, rhs])?;
        let (ra, rb) = (self.rank(), rhs.rank());
        if ra < 2 || rb < 2 {
            return Err(Error::shapes(
                "matmul",
                self.shape(),
                rhs.shape(),
                "both operands need rank >= 2",
            ));
        }
        let (m, k) = (self.dims()[ra - 2], self.dims()[ra - 1]);
        let (k2, n) = (rhs.dims()[rb - 2], rhs.dims()[rb - 1]);
        if k != k2 {
            return Err(Error::shapes(
                "matmul",
                self.shape(),
                rhs.shape(),
                &format!("inner sizes {k} and {k2} differ"),
            ));
        }
        // [batch.., M, K] x [K, N]: the batch folds into M (when A's rows are evenly
        // spaced, as a contiguous A's are), so that a linear layer is one GEMM, with its
        // weight packed once per task rather than once per batch entry, and so that the
        // weight's gradient is one GEMM over all B M rows rather than B products summed.
        if rb == 2 && ra > 2 {
            let rows = self.dims()[..ra - 1].iter().product::<usize>();
            let flat = Shape::from([rows, k]);
            if self.layout().reshape(&flat).is_some() {
                let mut dims = self.dims().to_vec();
                dims[ra - 1] = n;
                return self.reshape(flat)?.matmul(rhs)?.reshape(dims);
            }
        }
        let batch = Shape::broadcast(
            "matmul",
            &Shape::from(&self.dims()[..ra - 2]),
            &Shape::from(&rhs.dims()[..rb - 2]),
        )?;
        let with = |tail: [usize; 2]| Shape::from([batch.dims(), &tail].concat());
        let l = self.layout().broadcast_as(&with([m, k]))?;
        let r = rhs.layout().broadcast_as(&with([k, n]))?;
        let s = {
            let g = crate::tensor::read_storages(&[self, rhs]);
            g.get(0).matmul(&l, (g.get(1), &r))?
        };
        let rec = record(&[self, rhs], || Op::Matmul(self.clone(), rhs.clone()));
        Ok(Tensor::from_storage(s, with([m, n]), rec))
    }
}
