//! 2-D convolution, NCHW input and OIHW weight (PyTorch's conv2d, groups = 1), with
//! stride, zero padding and bias; its two backward ops (grad-input, grad-weight).

use crate::autograd::record;
use crate::backend::BackendStorage;
use crate::op::Op;
use crate::ops::binary::same_dtype_device;
use crate::{Error, Result, Tensor};

/// Everything a conv kernel needs: x [n, c_in, h, w], w [c_out, c_in, kh, kw],
/// y [n, c_out, h_out, w_out].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl ConvShape {
    /// Output height: (h + 2 pad - kh) / stride + 1.
    pub fn h_out(&self) -> usize {
        (self.h + 2 * self.padding.0 - self.kh) / self.stride.0 + 1
    }
    pub fn w_out(&self) -> usize {
        (self.w + 2 * self.padding.1 - self.kw) / self.stride.1 + 1
    }
    pub fn x_dims(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }
    pub fn w_dims(&self) -> [usize; 4] {
        [self.c_out, self.c_in, self.kh, self.kw]
    }
    pub fn y_dims(&self) -> [usize; 4] {
        [self.n, self.c_out, self.h_out(), self.w_out()]
    }
    /// Multiply-adds of the forward pass (each backward costs the same).
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.c_out * self.h_out() * self.w_out() * self.c_in * self.kh * self.kw)
            as f64
    }
}

/// A per-axis (height, width) pair; a single number means both.
pub trait IntoPair {
    fn pair(self) -> (usize, usize);
}
impl IntoPair for usize {
    fn pair(self) -> (usize, usize) {
        (self, self)
    }
}
impl IntoPair for (usize, usize) {
    fn pair(self) -> (usize, usize) {
        self
    }
}

impl Tensor {
    /// conv2d(x: [N, Cin, H, W], w: [Cout, Cin, KH, KW], bias: [Cout]) -> [N, Cout, HO, WO].
    pub fn conv2d(
        &self,
        w: &Tensor,
        bias: Option<&Tensor>,
        stride: impl IntoPair,
        padding: impl IntoPair,
    ) -> Result<Tensor> {
        let shape = conv_shape(self, w, bias, stride.pair(), padding.pair())?;
        let (x, w) = (self.contiguous()?, w.contiguous()?);
        let bias = bias.map(|b| b.contiguous()).transpose()?;
        let mut ts = vec![&x, &w];
        ts.extend(bias.as_ref());
        let s = {
            let g = crate::tensor::read_storages(&ts);
            let b = bias.as_ref().map(|b| (g.get(2), b.layout()));
            g.get(0)
                .conv2d(x.layout(), (g.get(1), w.layout()), b, &shape)?
        };
        let rec = record(&ts, || Op::Conv2d {
            x: x.clone(),
            w: w.clone(),
            bias: bias.clone(),
            shape,
        });
        Ok(Tensor::from_storage(s, shape.y_dims(), rec))
    }
}

fn conv_shape(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<ConvShape> {
    let mut ts = vec![x, w];
    ts.extend(bias);
    same_dtype_device("conv2d", &ts)?;
    let (&[n, c_in, h, wd], &[c_out, c_in2, kh, kw]) = (x.dims(), w.dims()) else {
        return Err(Error::shapes(
            "conv2d",
            x.shape(),
            w.shape(),
            "expects x [N, Cin, H, W] and weight [Cout, Cin, KH, KW]",
        ));
    };
    if c_in != c_in2 {
        return Err(Error::shapes(
            "conv2d",
            x.shape(),
            w.shape(),
            &format!("x has {c_in} channels, the weight expects {c_in2}"),
        ));
    }
    if let Some(b) = bias {
        if b.dims() != [c_out] {
            return Err(Error::shape(
                "conv2d",
                format!("bias has shape {}, expected [{c_out}]", b.shape()),
            ));
        }
    }
    if stride.0 == 0 || stride.1 == 0 {
        return Err(Error::arg(
            "conv2d",
            format!("stride {stride:?} must be positive"),
        ));
    }
    if h + 2 * padding.0 < kh || wd + 2 * padding.1 < kw || kh == 0 || kw == 0 {
        return Err(Error::shapes(
            "conv2d",
            x.shape(),
            w.shape(),
            &format!("a {kh}x{kw} kernel does not fit the {h}x{wd} input padded by {padding:?}"),
        ));
    }
    Ok(ConvShape {
        n,
        c_in,
        h,
        w: wd,
        c_out,
        kh,
        kw,
        stride,
        padding,
    })
}

/// dL/dx of conv2d from dL/dy (untracked; the backward rule calls it), as
/// torch.nn.grad.conv2d_input.
pub fn conv2d_backward_input(dy: &Tensor, w: &Tensor, shape: &ConvShape) -> Result<Tensor> {
    check_dims(
        "conv2d_backward_input",
        &[(dy, shape.y_dims(), "dy"), (w, shape.w_dims(), "weight")],
    )?;
    let (dy, w) = (dy.contiguous()?, w.contiguous()?);
    let w = &w;
    let s = {
        let g = crate::tensor::read_storages(&[&dy, w]);
        g.get(0)
            .conv2d_backward_input(dy.layout(), (g.get(1), w.layout()), shape)?
    };
    Ok(Tensor::from_storage(s, shape.x_dims(), None))
}

/// dL/dw of conv2d from the input and dL/dy (untracked), as torch.nn.grad.conv2d_weight.
pub fn conv2d_backward_weight(x: &Tensor, dy: &Tensor, shape: &ConvShape) -> Result<Tensor> {
    check_dims(
        "conv2d_backward_weight",
        &[(x, shape.x_dims(), "x"), (dy, shape.y_dims(), "dy")],
    )?;
    let (x, dy) = (x.contiguous()?, dy.contiguous()?);
    let x = &x;
    let s = {
        let g = crate::tensor::read_storages(&[x, &dy]);
        g.get(0)
            .conv2d_backward_weight(x.layout(), (g.get(1), dy.layout()), shape)?
    };
    Ok(Tensor::from_storage(s, shape.w_dims(), None))
}

/// Checks that each operand has the dims `shape` implies (and one dtype and device).
fn check_dims(op: &'static str, operands: &[(&Tensor, [usize; 4], &str)]) -> Result<()> {
    same_dtype_device(op, &operands.iter().map(|o| o.0).collect::<Vec<_>>())?;
    for (t, want, name) in operands {
        if t.dims() != want {
            return Err(Error::shape(
                op,
                format!(
                    "{name} has shape {}, the conv shape implies {want:?}",
                    t.shape()
                ),
            ));
        }
    }
    Ok(())
}
