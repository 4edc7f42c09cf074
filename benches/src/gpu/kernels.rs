//! The GPU benchmark cases: copy bandwidth first (the memory-bound yardstick), then
//! elementwise, group_norm + silu, softmax, matmul (tiled vs naive), conv 3x3 and
//! attention at U-Net and square sizes.

use super::{time, GpuRow};
use kuosan_tensor::{
    scaled_dot_product_attention, DType, Device, GpuDevice, Philox, Result, Tensor,
};

fn randn(dev: &Device, shape: &[usize], seed: u64) -> Result<Tensor> {
    Tensor::randn(shape, DType::F32, dev, &mut Philox::new(seed))
}

struct Bench<'a> {
    dev: &'a GpuDevice,
    reps: usize,
    rows: Vec<GpuRow>,
    copy_gbs: f64,
}

impl Bench<'_> {
    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        kernel: &str,
        case: String,
        unit: &str,
        amount: f64,
        secs: f64,
        versus: &str,
        baseline: f64,
    ) {
        let ours = amount / secs / 1e9;
        self.rows.push(GpuRow {
            kernel: kernel.into(),
            case,
            unit: unit.into(),
            ours,
            versus: versus.into(),
            baseline,
            ratio: ours / baseline,
            median_ms: secs * 1e3,
        });
    }

    /// A memory-bound kernel: GB/s of `bytes` moved, against the copy bandwidth.
    fn bandwidth(
        &mut self,
        kernel: &str,
        case: String,
        bytes: f64,
        f: impl FnMut() -> Result<Tensor>,
    ) -> Result<()> {
        let secs = time(self.dev, self.reps, f)?;
        let copy = self.copy_gbs;
        self.row(kernel, case, "GB/s", bytes, secs, "copy", copy);
        Ok(())
    }
}

pub(crate) fn all(dev: &GpuDevice, reps: usize, quick: bool) -> Result<Vec<GpuRow>> {
    let device = Device::Gpu(dev.clone());
    let mut b = Bench {
        dev,
        reps,
        rows: Vec::new(),
        copy_gbs: 0.0,
    };

    // Copy bandwidth: read + write of a large contiguous tensor (a strided-view copy
    // would measure the index math instead).
    let n = if quick { 1 << 20 } else { 1 << 26 };
    let x = randn(&device, &[n], 1)?;
    let secs = time(dev, reps, || x.affine(1.0, 0.0))?;
    b.copy_gbs = 8.0 * n as f64 / secs / 1e9;
    let copy = b.copy_gbs;
    b.row(
        "copy",
        format!("{n} f32"),
        "GB/s",
        8.0 * n as f64,
        secs,
        "itself",
        copy,
    );
    b.bandwidth("silu", format!("{n} f32"), 8.0 * n as f64, || x.silu())?;
    let y = randn(&device, &[n], 2)?;
    b.bandwidth("add", format!("{n} f32"), 12.0 * n as f64, || x.add(&y))?;

    // U-Net activations: group_norm then SiLU, [B, C, H, W], 32 groups.
    let (batch, c, hw) = if quick { (4, 64, 32) } else { (64, 128, 32) };
    let a = randn(&device, &[batch, c, hw, hw], 3)?;
    let (w, bias) = (randn(&device, &[c], 4)?, randn(&device, &[c], 5)?);
    // Bytes of the ideal pass, read x once and write y once: the ratio to copy bandwidth
    // is how close the kernel gets to memory speed.
    let bytes = 8.0 * a.elem_count() as f64;
    let case = format!("{batch}x{c}x{hw}x{hw} g32");
    b.bandwidth("group_norm", case.clone(), bytes, || {
        a.group_norm(32, Some(&w), Some(&bias), 1e-5)
    })?;
    b.bandwidth("group_norm_silu", case.clone(), bytes, || {
        a.group_norm_silu(32, Some(&w), Some(&bias), 1e-5)
    })?;
    b.bandwidth("group_norm, silu", case, bytes, || {
        a.group_norm(32, Some(&w), Some(&bias), 1e-5)?.silu()
    })?;
    let rows = if quick { 256 } else { 64 * 256 };
    let s = randn(&device, &[rows, 256], 6)?;
    b.bandwidth(
        "softmax",
        format!("{rows}x256"),
        8.0 * (rows * 256) as f64,
        || s.softmax(-1),
    )?;

    // Matmul: square sizes.
    let sizes: &[usize] = if quick {
        &[128, 256, 512]
    } else {
        &[256, 512, 1024, 2048, 4096]
    };
    for &m in sizes {
        let (p, q) = (randn(&device, &[m, m], 7)?, randn(&device, &[m, m], 8)?);
        let flop = 2.0 * (m * m * m) as f64;
        let secs = time(dev, b.reps, || p.matmul(&q))?;
        let naive = if m <= 1024 {
            Some(time(dev, b.reps, || {
                kuosan_tensor::gpu::matmul_with(&p, &q, kuosan_tensor::gpu::GemmKernel::Naive)
            })?)
        } else {
            None
        };
        let base = naive.map_or(f64::NAN, |t| flop / t / 1e9);
        b.row(
            "matmul",
            format!("{m}x{m}x{m}"),
            "GFLOP/s",
            flop,
            secs,
            "naive",
            base,
        );
    }

    // conv 3x3 at U-Net shapes, forward and both backward passes (through autograd).
    let shapes: &[(usize, usize, usize)] = if quick {
        &[(32, 16, 4)]
    } else {
        &[(128, 32, 64), (256, 16, 64)]
    };
    for &(ch, hw, batch) in shapes {
        let x = randn(&device, &[batch, ch, hw, hw], 9)?;
        let w = randn(&device, &[ch, ch, 3, 3], 10)?;
        let flop = 2.0 * (batch * ch * hw * hw * ch * 9) as f64;
        let case = format!("{batch}x{ch}->{ch} {hw}x{hw}");
        let fwd = time(dev, b.reps, || x.conv2d(&w, None, 1, 1))?;
        let gemm = {
            // The same multiply-adds as one plain GEMM, for the implicit-GEMM overhead.
            let (p, q) = (
                randn(&device, &[ch, ch * 9], 11)?,
                randn(&device, &[ch * 9, batch * hw * hw], 12)?,
            );
            flop / time(dev, b.reps, || p.matmul(&q))? / 1e9
        };
        b.row(
            "conv3x3 fwd",
            case.clone(),
            "GFLOP/s",
            flop,
            fwd,
            "equal GEMM",
            gemm,
        );
        let (xg, wg) = (x.with_grad(), w.with_grad());
        let both = time(dev, b.reps, || {
            let loss = xg.conv2d(&wg, None, 1, 1)?.sum_all()?;
            loss.backward()?;
            Ok(loss)
        })?;
        // fwd + sum + both backward passes: report the two backward passes' rate.
        b.row(
            "conv3x3 fwd+bwd",
            case,
            "GFLOP/s",
            3.0 * flop,
            both,
            "equal GEMM",
            gemm,
        );
    }

    // Attention, self-attention of one U-Net block: [B, heads, L, 64].
    let lens: &[usize] = if quick { &[64, 256] } else { &[256, 1024] };
    for &l in lens {
        let (batch, heads, d) = if quick { (1, 2, 32) } else { (16, 8, 64) };
        let q = randn(&device, &[batch, heads, l, d], 13)?;
        let k = randn(&device, &[batch, heads, l, d], 14)?;
        let v = randn(&device, &[batch, heads, l, d], 15)?;
        let flop = 4.0 * (batch * heads * l * l * d) as f64;
        let secs = time(dev, b.reps, || {
            scaled_dot_product_attention(&q, &k, &v, None, false, None)
        })?;
        let scores = {
            // Q K^T alone as a batched matmul: what the fused kernel's first half costs.
            let kt = k.transpose(2, 3)?.contiguous()?;
            2.0 * flop / 4.0 / time(dev, b.reps, || q.matmul(&kt))? / 1e9
        };
        b.row(
            "attention",
            format!("{batch}x{heads}x{l}x{d}"),
            "GFLOP/s",
            flop,
            secs,
            "QK^T matmul",
            scores,
        );
    }
    Ok(b.rows)
}
