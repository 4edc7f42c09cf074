//! GPU matmul and 2-D convolutions through one tiled GEMM kernel (`kernels/gemm.wgsl`);
//! convolutions are implicit GEMMs that gather B on the fly instead of building im2col.

use super::device::Context;
use super::runtime::grid;
use super::source::{files, specialise};
use super::storage::GpuStorage;
use crate::layout::Coalesced;
use crate::ops::ConvShape;
use crate::{DType, Error, Layout, Result, Shape, Storage, Tensor};

/// Which kernel runs a matmul. Ops use `Auto`; benchmarks compare the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// A tile size by shape and device limits (see `choose`).
    Auto,
    /// One thread per output, operands read from global memory: the baseline.
    Naive,
    /// 64 x 64 outputs per workgroup, 4 x 4 per thread.
    Tile64,
    /// 128 x 128 outputs per workgroup, 8 x 8 per thread.
    Tile128,
}

/// A workgroup tile: BM x BN outputs from BK-deep slices of A and B staged in workgroup
/// memory; each of the `THREADS` threads holds TM x TN accumulators.
#[derive(Clone, Copy, Debug)]
struct Tile {
    bm: usize,
    bn: usize,
    bk: usize,
    tm: usize,
    tn: usize,
}

/// Threads per workgroup: WebGPU guarantees 256 invocations everywhere.
const THREADS: usize = 256;
/// 8 KiB of workgroup memory, half WebGPU's guaranteed 16 KiB.
const TILE64: Tile = Tile {
    bm: 64,
    bn: 64,
    bk: 16,
    tm: 4,
    tn: 4,
};
/// Twice the reuse per staged element (8 + 8 reads per 64 FMAs), also 8 KiB.
const TILE128: Tile = Tile {
    bm: 128,
    bn: 128,
    bk: 8,
    tm: 8,
    tn: 8,
};
/// `Auto` takes the 128-wide tile only for matrices at least `TILE128_MIN_SIDE` on both
/// sides (edge tiles mostly full) and at least `TILE128_MIN_GROUPS` workgroups: with fewer
/// a large GPU (100+ cores) would sit partly idle, and 64-wide tiles give four times as many.
const TILE128_MIN_SIDE: usize = 256;
const TILE128_MIN_GROUPS: usize = 128;
/// Batch axes the kernel walks; operands with more (after coalescing) are copied first.
const MAX_BATCH: usize = 6;

impl Tile {
    fn fits(self, l: &wgpu::Limits) -> bool {
        let bytes = (self.bm + self.bn) * self.bk * 4;
        bytes <= l.max_compute_workgroup_storage_size as usize
            && THREADS <= l.max_compute_invocations_per_workgroup as usize
            && THREADS <= l.max_compute_workgroup_size_x as usize
    }

    fn subs(self) -> Vec<(&'static str, String)> {
        vec![
            ("WG", THREADS.to_string()),
            ("BM", self.bm.to_string()),
            ("BN", self.bn.to_string()),
            ("BK", self.bk.to_string()),
            ("TM", self.tm.to_string()),
            ("TN", self.tn.to_string()),
            ("AS_LEN", (self.bk * self.bm / 4).to_string()),
            ("BS_LEN", (self.bk * self.bn / 4).to_string()),
            ("FMAS", self.fmas()),
            ("STORES", self.stores()),
        ]
    }

    /// The inner step on the thread's (TM / 4) x (TN / 4) vec4 slots, written out so
    /// each accumulator index is a constant (see gemm.wgsl).
    fn fmas(self) -> String {
        let (rm, rn) = (self.tm / 4, self.tn / 4);
        let mut s = String::new();
        for j in 0..rn {
            s += &format!("            let b{j} = Bs[k * BN4 + tx + {j}u * TX];\n");
        }
        for i in 0..rm {
            s += &format!("            let a{i} = As[k * BM4 + ty + {i}u * TY];\n");
            for (e, lane) in ["x", "y", "z", "w"].iter().enumerate() {
                for j in 0..rn {
                    let r = (4 * i + e) * rn + j;
                    s += &format!(
                        "            acc[{r}] = fma(vec4<f32>(a{i}.{lane}), b{j}, acc[{r}]);\n"
                    );
                }
            }
        }
        s
    }

    /// Each accumulator to C, written out like `fmas`.
    fn stores(self) -> String {
        let (rm, rn) = (self.tm / 4, self.tn / 4);
        let mut s = String::new();
        for i in 0..rm {
            for e in 0..4 {
                for j in 0..rn {
                    let r = (4 * i + e) * rn + j;
                    s += &format!(
                        "    store_block(m0 + 4u * (ty + {i}u * TY) + {e}u, n0 + 4u * (tx + {j}u * TX), acc[{r}]);\n"
                    );
                }
            }
        }
        s
    }
}

/// The tile `kernel` asks for (None: the naive kernel) for `batches` M x N outputs,
/// checked against the device limits.
fn choose(
    ctx: &Context,
    kernel: GemmKernel,
    batches: usize,
    m: usize,
    n: usize,
) -> Result<Option<Tile>> {
    let l = &ctx.limits;
    let big = m.min(n) >= TILE128_MIN_SIDE
        && batches * m.div_ceil(128) * n.div_ceil(128) >= TILE128_MIN_GROUPS;
    match kernel {
        GemmKernel::Naive => Ok(None),
        GemmKernel::Auto if big && TILE128.fits(l) => Ok(Some(TILE128)),
        GemmKernel::Auto if TILE64.fits(l) => Ok(Some(TILE64)),
        GemmKernel::Auto => Ok(None),
        GemmKernel::Tile64 | GemmKernel::Tile128 => {
            let t = if kernel == GemmKernel::Tile64 {
                TILE64
            } else {
                TILE128
            };
            if t.fits(l) {
                Ok(Some(t))
            } else {
                Err(Error::device(
                    "matmul",
                    format!(
                        "{kernel:?} needs more workgroup memory or invocations than {} has",
                        ctx.info.name
                    ),
                ))
            }
        }
    }
}

/// One axis of an operand: index i sits at i * stride or, split (an implicit-GEMM axis
/// such as k = (image, pixel)), at (i / div) * outer + (i % div) * stride.
#[derive(Clone, Copy, Debug)]
struct Axis {
    len: usize,
    stride: usize,
    split: Option<(usize, usize)>,
}

impl Axis {
    /// A plain axis; a length-1 axis gets stride 0 (its stride is arbitrary in a view).
    fn new(len: usize, stride: usize) -> Axis {
        let stride = if len > 1 { stride } else { 0 };
        Axis {
            len,
            stride,
            split: None,
        }
    }

    /// An axis of `len / div` blocks `outer` apart, each `div` elements `stride` apart.
    fn split(len: usize, stride: usize, div: usize, outer: usize) -> Axis {
        if div >= len {
            return Axis::new(len, stride);
        }
        if div == 1 {
            return Axis::new(len, outer);
        }
        Axis {
            len,
            stride,
            split: Some((div, outer)),
        }
    }

    /// Every offset along this axis is a multiple of 4.
    fn aligned(&self) -> bool {
        self.stride.is_multiple_of(4) && self.split.is_none_or(|(_, outer)| outer.is_multiple_of(4))
    }

    /// Groups of 4 from a multiple of 4 are 4 consecutive elements (with `aligned` other
    /// strides: one 16-byte vec4), and never straddle the end.
    fn vec4(&self) -> bool {
        self.stride == 1
            && self.len.is_multiple_of(4)
            && self
                .split
                .is_none_or(|(div, outer)| div.is_multiple_of(4) && outer.is_multiple_of(4))
    }
}

/// A strided operand of rows x cols (A: M x K, B: K x N) with a stride per batch axis.
#[derive(Clone, Debug)]
struct Strided {
    offset: usize,
    rows: Axis,
    cols: Axis,
    batch: Vec<usize>,
}

/// Which axis an operand is read along as vec4s.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Vec4 {
    Rows,
    Cols,
}

impl Strided {
    fn vec4(&self) -> Option<Vec4> {
        let base = self.offset.is_multiple_of(4) && self.batch.iter().all(|s| s.is_multiple_of(4));
        if base && self.cols.vec4() && self.rows.aligned() {
            Some(Vec4::Cols)
        } else if base && self.rows.vec4() && self.cols.aligned() {
            Some(Vec4::Rows)
        } else {
            None
        }
    }

    /// Scalar staging walks the axis with the smaller stride across threads (coalesced).
    fn cols_fast(&self) -> bool {
        self.cols.stride < self.rows.stride
    }
}

/// How the kernel reads B.
#[derive(Clone, Debug)]
enum Source {
    Strided(Strided),
    /// A convolution gather (`GATHER_FWD`, ...) from the tensor at `offset`; `k_fast`:
    /// consecutive threads walk k, the axis that is contiguous in memory.
    Gather {
        flag: &'static str,
        offset: usize,
        k_fast: bool,
    },
}

/// One GEMM: C[batch.., M, N] = A[batch.., M, K] B[batch.., K, N] (+ bias[m]).
struct Gemm {
    op: &'static str,
    m: usize,
    n: usize,
    k: usize,
    /// Coalesced batch dims (at most `MAX_BATCH`); the operands carry their strides.
    batch: Vec<usize>,
    a: Strided,
    b: Source,
    /// C[m, n] lies at (n / plane) M plane + m plane + n % plane: N for a matmul
    /// (row-major), HO WO for a conv writing NCHW with n = (image, pixel).
    plane: usize,
    conv: Option<ConvShape>,
}

impl Gemm {
    /// Specialisation flags: how A and B are bound and indexed.
    fn flags(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        let a = &self.a;
        debug_assert!(a.rows.split.is_none(), "the kernel splits only A's k axis");
        f.extend(a.cols.split.map(|_| "SPLIT_AK"));
        f.extend(match a.vec4() {
            Some(Vec4::Cols) => &["A_VEC", "A_VEC_K"][..],
            Some(Vec4::Rows) => &["A_VEC", "A_VEC_M"],
            None => &[],
        });
        match &self.b {
            Source::Strided(b) => {
                f.extend(b.rows.split.map(|_| "SPLIT_BK"));
                f.extend(b.cols.split.map(|_| "SPLIT_BN"));
                f.extend(match b.vec4() {
                    Some(Vec4::Rows) => &["B_VEC", "B_VEC_K"][..],
                    Some(Vec4::Cols) => &["B_VEC", "B_VEC_N"],
                    None => &[],
                });
            }
            Source::Gather { flag, .. } => f.push(*flag),
        }
        f
    }

    /// The runtime choices (bits in gemm.wgsl): scalar staging walks each operand's
    /// contiguous axis across threads (coalesced reads); C rows are whole vec4s when each
    /// group of 4 columns from a multiple of 4 stays in one plane.
    fn bits(&self, bias: bool) -> usize {
        let b_k_fast = match &self.b {
            Source::Strided(b) => !b.cols_fast(),
            Source::Gather { k_fast, .. } => *k_fast,
        };
        usize::from(self.a.cols_fast())
            | usize::from(b_k_fast) << 1
            | usize::from(self.plane.is_multiple_of(4)) << 2
            | usize::from(bias) << 3
    }

    /// The kernel's parameter words (layout in gemm.wgsl).
    fn params(&self, tiles_n: usize, tiles: usize, bias: bool) -> Result<Vec<u32>> {
        let a = &self.a;
        let batches: usize = self.batch.iter().product();
        let padded = |v: &[usize]| [v, &[0; MAX_BATCH][v.len()..]].concat();
        // An unsplit axis divides by 1 (never read: its flag is off).
        let split = |ax: &Axis| ax.split.unwrap_or((1, 0));
        let (b_off, b_rows, b_cols, b_batch) = match &self.b {
            Source::Strided(b) => (b.offset, b.rows, b.cols, &b.batch[..]),
            Source::Gather { offset, .. } => (*offset, Axis::new(1, 0), Axis::new(1, 0), &[][..]),
        };
        let mut p = vec![
            self.m,
            self.n,
            self.k,
            tiles_n,
            tiles,
            batches,
            self.plane,
            self.bits(bias),
            a.offset,
            a.rows.stride,
            a.cols.stride,
            split(&a.cols).0,
            split(&a.cols).1,
            b_off,
            b_rows.stride,
            b_cols.stride,
            split(&b_rows).0,
            split(&b_rows).1,
            split(&b_cols).0,
            split(&b_cols).1,
            self.batch.len(),
        ];
        p.extend(padded(&self.batch));
        p.extend(padded(&a.batch));
        p.extend(padded(b_batch));
        if let Some(s) = &self.conv {
            p.extend([s.c_in, s.h, s.w, s.c_out, s.kh, s.kw]);
            p.extend([s.stride.0, s.stride.1, s.padding.0, s.padding.1]);
            p.extend([s.h_out(), s.w_out()]);
        }
        p.into_iter()
            .map(u32::try_from)
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::shape(self.op, "sizes past u32 do not fit the GPU kernel"))
    }

    /// Runs into a fresh C [batch.., M, N] (its plane order), reading A from `a` and B
    /// from `b`.
    fn run(
        &self,
        a: &GpuStorage,
        b: &GpuStorage,
        bias: Option<&GpuStorage>,
        kernel: GemmKernel,
    ) -> Result<GpuStorage> {
        let batches: usize = self.batch.iter().product();
        let out = GpuStorage::alloc(&a.device, batches * self.m * self.n, DType::F32, self.op)?;
        if batches * self.m * self.n == 0 {
            return Ok(out);
        }
        let ctx = &a.device.0;
        let tile = choose(ctx, kernel, batches, self.m, self.n)?;
        let mut flags = self.flags();
        let (entry, t, p, groups) = match tile {
            Some(t) => {
                let tiles_n = self.n.div_ceil(t.bn);
                let tiles = self.m.div_ceil(t.bm) * tiles_n;
                let p = self.params(tiles_n, tiles, bias.is_some())?;
                ("main", t, p, grid(ctx, batches * tiles, 1))
            }
            None => {
                // The baseline reads scalars only; the tile constants just have to parse.
                flags.retain(|f| f.starts_with("SPLIT") || f.starts_with("GATHER"));
                flags.push("NAIVE");
                let p = self.params(0, 0, false)?;
                (
                    "naive",
                    TILE64,
                    p,
                    grid(ctx, batches * self.m * self.n, 256),
                )
            }
        };
        let key = format!(
            "gemm/{}x{}x{}/{}x{}/{}",
            t.bm,
            t.bn,
            t.bk,
            t.tm,
            t.tn,
            flags.join(",")
        );
        let k = ctx.runtime.kernel(ctx, &key, entry, || {
            let subs = t.subs();
            let subs: Vec<(&str, &str)> = subs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            specialise(files::GEMM, &flags, &subs)
        })?;
        // Without a bias, A stands in for it (the kernel never reads it).
        let bias = bias.unwrap_or(a);
        let bufs = [&*a.buf, &*b.buf, &*out.buf, &*bias.buf];
        ctx.runtime.dispatch(ctx, &k, &bufs, &p, groups)?;
        Ok(out)
    }
}

/// [batch.., M, K] x [batch.., K, N] with broadcast (stride-0) batch axes and any strides.
pub(crate) fn matmul(
    a: &GpuStorage,
    la: &Layout,
    b: &GpuStorage,
    lb: &Layout,
) -> Result<GpuStorage> {
    matmul_kernel(a, la, b, lb, GemmKernel::Auto)
}

fn matmul_kernel(
    a: &GpuStorage,
    la: &Layout,
    b: &GpuStorage,
    lb: &Layout,
    kernel: GemmKernel,
) -> Result<GpuStorage> {
    let r = la.dims().len();
    let (m, k, n) = (la.dims()[r - 2], la.dims()[r - 1], lb.dims()[r - 1]);
    let batch = &la.dims()[..r - 2];
    if batch.contains(&0) || m * n == 0 {
        return GpuStorage::alloc(&a.device, 0, DType::F32, "matmul");
    }
    // Merge batch axes that both operands step through as one (a contiguous [B, H, ..]
    // batch becomes one axis), so the kernel decodes few.
    let batch_of = |l: &Layout| Layout::new(batch, l.strides()[..r - 2].to_vec(), 0);
    let co = Coalesced::new([&batch_of(la), &batch_of(lb)]);
    if co.dims.len() > MAX_BATCH {
        let (a, b) = (a.dense(la)?, b.dense(lb)?);
        let (la, lb) = (Layout::contiguous(la.dims()), Layout::contiguous(lb.dims()));
        return matmul_kernel(&a, &la, &b, &lb, kernel);
    }
    let (sa, sb) = (la.strides(), lb.strides());
    let mut a_op = Strided {
        offset: la.offset(),
        rows: Axis::new(m, sa[r - 2]),
        cols: Axis::new(k, sa[r - 1]),
        batch: co.strides.iter().map(|s| s[0]).collect(),
    };
    let mut b_op = Strided {
        offset: lb.offset(),
        rows: Axis::new(k, sb[r - 2]),
        cols: Axis::new(n, sb[r - 1]),
        batch: co.strides.iter().map(|s| s[1]).collect(),
    };
    let mut dims = co.dims;
    // x [B, T, D] @ w [D, N]: when every batch entry shares B and A's batch axes continue
    // its rows, the batch is just more rows: one [B T, D] x [D, N] GEMM, fuller tiles.
    if !dims.is_empty() && b_op.batch.iter().all(|&s| s == 0) {
        let rows = [&dims[..], &[m]].concat();
        let strides = [&a_op.batch[..], &[a_op.rows.stride]].concat();
        let merged = Coalesced::new([&Layout::new(rows, strides, 0)]);
        if merged.dims.len() <= 1 {
            let stride = merged.strides.first().map_or(0, |s| s[0]);
            a_op.rows = Axis::new(dims.iter().product::<usize>() * m, stride);
            a_op.batch.clear();
            b_op.batch.clear();
            dims.clear();
        }
    }
    Gemm {
        op: "matmul",
        m: a_op.rows.len,
        n,
        k,
        batch: dims,
        a: a_op,
        b: Source::Strided(b_op),
        plane: n,
        conv: None,
    }
    .run(a, b, None, kernel)
}

/// `a.matmul(b)` on the GPU by a chosen kernel, not recorded for autograd: lets a
/// benchmark put the naive and tiled kernels side by side. f32 tensors on one GPU.
pub fn matmul_with(a: &Tensor, b: &Tensor, kernel: GemmKernel) -> Result<Tensor> {
    let (ra, rb) = (a.rank(), b.rank());
    if ra < 2 || rb < 2 || a.dims()[ra - 1] != b.dims()[rb - 2] {
        return Err(Error::shapes(
            "matmul_with",
            a.shape(),
            b.shape(),
            "expects [.., M, K] x [.., K, N]",
        ));
    }
    let (m, n) = (a.dims()[ra - 2], b.dims()[rb - 1]);
    let batch = Shape::broadcast(
        "matmul_with",
        &Shape::from(&a.dims()[..ra - 2]),
        &Shape::from(&b.dims()[..rb - 2]),
    )?;
    let with = |tail: [usize; 2]| Shape::from([batch.dims(), &tail].concat());
    let la = a.layout().broadcast_as(&with([m, a.dims()[ra - 1]]))?;
    let lb = b.layout().broadcast_as(&with([b.dims()[rb - 2], n]))?;
    let s = {
        let g = crate::tensor::read_storages(&[a, b]);
        match (g.get(0), g.get(1)) {
            (Storage::Gpu(sa), Storage::Gpu(sb))
                if sa.dtype == DType::F32 && sb.dtype == DType::F32 =>
            {
                matmul_kernel(sa, &la, sb, &lb, kernel)?
            }
            _ => {
                return Err(Error::device(
                    "matmul_with",
                    "both operands must be f32 tensors on one GPU device",
                ))
            }
        }
    };
    Ok(Tensor::from_storage(Storage::Gpu(s), with([m, n]), None))
}

/// Storage and element offset of a conv operand (the ops pass contiguous tensors, maybe
/// at an offset; anything else is copied to be safe).
fn contiguous<'a>(
    s: &'a GpuStorage,
    l: &Layout,
) -> Result<(std::borrow::Cow<'a, GpuStorage>, usize)> {
    if l.is_contiguous() {
        Ok((std::borrow::Cow::Borrowed(s), l.offset()))
    } else {
        Ok((s.dense(l)?, 0))
    }
}

/// 1x1 kernel, stride 1, no padding: the image already is the GEMM operand, no gather.
fn pointwise(s: &ConvShape) -> bool {
    s.kh == 1 && s.kw == 1 && s.stride == (1, 1) && s.padding == (0, 0)
}

/// y = conv2d(x, w) + bias, NCHW / OIHW, as the implicit GEMM
/// y[Cout, (N, HO, WO)] = w[Cout, (Cin, KH, KW)] x patches[(Cin, KH, KW), (N, HO, WO)].
pub(crate) fn conv2d(
    x: &GpuStorage,
    xl: &Layout,
    w: &GpuStorage,
    wl: &Layout,
    bias: Option<(&GpuStorage, &Layout)>,
    s: &ConvShape,
) -> Result<GpuStorage> {
    let ((x, xo), (w, wo)) = (contiguous(x, xl)?, contiguous(w, wl)?);
    let bias = bias.map(|(b, l)| b.dense(l)).transpose()?;
    let (hw, pix) = (s.h * s.w, s.h_out() * s.w_out());
    let k = s.c_in * s.kh * s.kw;
    let b = if pointwise(s) {
        // B(ch, (img, q)) = x[img, ch, q]
        Source::Strided(Strided {
            offset: xo,
            rows: Axis::new(s.c_in, hw),
            cols: Axis::split(s.n * hw, 1, hw, s.c_in * hw),
            batch: vec![],
        })
    } else {
        Source::Gather {
            flag: "GATHER_FWD",
            offset: xo,
            k_fast: false,
        }
    };
    Gemm {
        op: "conv2d",
        m: s.c_out,
        n: s.n * pix,
        k,
        batch: vec![],
        a: Strided {
            offset: wo,
            rows: Axis::new(s.c_out, k),
            cols: Axis::new(k, 1),
            batch: vec![],
        },
        b,
        plane: pix,
        conv: Some(*s),
    }
    .run(&w, &x, bias.as_deref(), GemmKernel::Auto)
}

/// dx from dy [N, Cout, HO, WO] and w, as the implicit GEMM
/// dx[Cin, (N, H, W)] = w^T[Cin, (Cout, KH, KW)] x dy-taps[(Cout, KH, KW), (N, H, W)],
/// where tap (i, j) of pixel (ih, iw) is the output pixel that read it, if any.
pub(crate) fn conv2d_backward_input(
    dy: &GpuStorage,
    dl: &Layout,
    w: &GpuStorage,
    wl: &Layout,
    s: &ConvShape,
) -> Result<GpuStorage> {
    let ((dy, dyo), (w, wo)) = (contiguous(dy, dl)?, contiguous(w, wl)?);
    let (hw, taps) = (s.h * s.w, s.kh * s.kw);
    let b = if pointwise(s) {
        // B(o, (img, q)) = dy[img, o, q]
        Source::Strided(Strided {
            offset: dyo,
            rows: Axis::new(s.c_out, hw),
            cols: Axis::split(s.n * hw, 1, hw, s.c_out * hw),
            batch: vec![],
        })
    } else {
        Source::Gather {
            flag: "GATHER_DGRAD",
            offset: dyo,
            k_fast: false,
        }
    };
    Gemm {
        op: "conv2d_backward_input",
        m: s.c_in,
        n: s.n * hw,
        k: s.c_out * taps,
        batch: vec![],
        // A(ch, (o, t)) = w[o, ch, t]
        a: Strided {
            offset: wo,
            rows: Axis::new(s.c_in, taps),
            cols: Axis::split(s.c_out * taps, 1, taps, s.c_in * taps),
            batch: vec![],
        },
        b,
        plane: hw,
        conv: Some(*s),
    }
    .run(&w, &dy, None, GemmKernel::Auto)
}

/// dw from x and dy, as the implicit GEMM
/// dw[Cout, (Cin, KH, KW)] = dy[Cout, (N, HO, WO)] x patches^T[(N, HO, WO), (Cin, KH, KW)].
pub(crate) fn conv2d_backward_weight(
    x: &GpuStorage,
    xl: &Layout,
    dy: &GpuStorage,
    dl: &Layout,
    s: &ConvShape,
) -> Result<GpuStorage> {
    let ((x, xo), (dy, dyo)) = (contiguous(x, xl)?, contiguous(dy, dl)?);
    let (hw, pix, taps) = (s.h * s.w, s.h_out() * s.w_out(), s.kh * s.kw);
    let b = if pointwise(s) {
        // B((img, q), ch) = x[img, ch, q]
        Source::Strided(Strided {
            offset: xo,
            rows: Axis::split(s.n * hw, 1, hw, s.c_in * hw),
            cols: Axis::new(s.c_in, hw),
            batch: vec![],
        })
    } else {
        Source::Gather {
            flag: "GATHER_WGRAD",
            offset: xo,
            k_fast: true,
        }
    };
    Gemm {
        op: "conv2d_backward_weight",
        m: s.c_out,
        n: s.c_in * taps,
        k: s.n * pix,
        batch: vec![],
        // A(o, (img, q)) = dy[img, o, q]
        a: Strided {
            offset: dyo,
            rows: Axis::new(s.c_out, pix),
            cols: Axis::split(s.n * pix, 1, pix, s.c_out * pix),
            batch: vec![],
        },
        b,
        plane: s.c_in * taps,
        conv: Some(*s),
    }
    .run(&dy, &x, None, GemmKernel::Auto)
}
