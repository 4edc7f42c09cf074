//! Datasets of (image, caption) pairs and the deterministic, resumable batch order
//! training reads them in.
//!
//! A data spec names a dataset: `shapes` (built in, the default), `mnist:DIR`,
//! `fashion-mnist:DIR` or `folder:DIR`. Batches come from a stream that is the
//! concatenation of one seeded permutation per epoch, so a position in it is just
//! (epoch, offset): a checkpoint stores those two numbers and training resumes at the
//! exact next sample.

pub mod folder;
pub mod idx;
pub mod shapes;

pub use folder::FolderDataset;
pub use idx::{IdxDataset, IdxKind};
pub use shapes::{ShapesDataset, DEFAULT_PAIRS_PERMILLE};

use crate::image::ImageError;
use kuosan_tensor::{philox4x32_10, Device, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors of the data layer. File errors name the file (and the line, for text files)
/// and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory that is missing, unreadable or malformed.
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },

    /// A bad line in a text file (1-based line number, as editors show it).
    #[error("{path}:{line}: {msg}")]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },

    /// A data spec that does not parse.
    #[error("data spec {spec:?}: {msg}")]
    Spec { spec: String, msg: String },

    /// A bad argument: an index past the end, a zero batch size, ...
    #[error("{0}")]
    Arg(String),

    #[error(transparent)]
    Image(#[from] ImageError),

    #[error(transparent)]
    Tensor(#[from] kuosan_tensor::Error),
}

pub type Result<T> = std::result::Result<T, DataError>;

pub(crate) fn file_err(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::File {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// One dataset item: the image as [C, H, W] f32 values in [-1, 1], and its caption.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub image: Vec<f32>,
    pub caption: String,
    /// How many objects the picture shows, where the data set knows (shapes: 1 or 2;
    /// None for MNIST, Fashion-MNIST and folders). The timestep bias's scope reads it.
    pub objects: Option<usize>,
}

/// A finite, indexable set of square images with captions. `get(i)` must depend only
/// on `i` (and the dataset's construction arguments), which is what makes batches
/// reproducible and resumable.
pub trait Dataset: Send + Sync {
    /// Number of items.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image channels: 1 (gray) or 3 (RGB).
    fn channels(&self) -> usize;

    /// Image side: every image is `size` x `size`.
    fn size(&self) -> usize;

    /// Item `i` (0 <= i < len).
    fn get(&self, i: usize) -> Result<Sample>;

    /// A short description for logs ("mnist train (200 images) from DIR").
    fn describe(&self) -> String;
}

/// A directory a dataset is read from: says whether it is missing or not a directory.
pub(crate) fn check_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Err(file_err(dir, "no such directory"));
    }
    if !dir.is_dir() {
        return Err(file_err(dir, "not a directory"));
    }
    Ok(())
}

pub(crate) fn check_index(i: usize, len: usize, what: &str) -> Result<()> {
    if i >= len {
        return Err(DataError::Arg(format!(
            "{what}: index {i} out of range (0..{len})"
        )));
    }
    Ok(())
}

/// Which split of a dataset with train and test files to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Split {
    #[default]
    Train,
    Test,
}

/// Settings a data spec does not carry.
#[derive(Clone, Debug)]
pub struct DataOptions {
    /// The model's image side; every dataset delivers `size` x `size` images.
    pub size: usize,
    /// Train or test files (MNIST / Fashion-MNIST).
    pub split: Split,
    /// Seed of the generated `shapes` data.
    pub shapes_seed: u64,
    /// Number of items of the `shapes` data (it could be endless; a length gives
    /// epochs the same meaning as for the file datasets).
    pub shapes_len: usize,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions {
            size: 32,
            split: Split::Train,
            shapes_seed: 0,
            shapes_len: 50_000,
        }
    }
}

/// A parsed data spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSpec {
    /// The generated shapes; `pairs_permille` / 1000 of the items are pairs
    /// (`shapes:pairs=0.67`; half by default).
    Shapes {
        pairs_permille: u32,
    },
    Mnist(PathBuf),
    FashionMnist(PathBuf),
    Folder(PathBuf),
}

impl DataSpec {
    pub const HELP: &'static str =
        "expected `shapes`, `mnist:DIR`, `fashion-mnist:DIR` or `folder:DIR`";

    /// The default `shapes`: half pairs.
    pub fn shapes() -> DataSpec {
        DataSpec::Shapes {
            pairs_permille: DEFAULT_PAIRS_PERMILLE,
        }
    }

    /// Parses `shapes` | `shapes:pairs=F` | `mnist:DIR` | `fashion-mnist:DIR` | `folder:DIR`.
    pub fn parse(spec: &str) -> Result<DataSpec> {
        let err = |msg: String| DataError::Spec {
            spec: spec.to_string(),
            msg,
        };
        let (kind, dir) = match spec.split_once(':') {
            Some((k, d)) => (k, Some(d)),
            None => (spec, None),
        };
        let need_dir = |d: Option<&str>| match d {
            Some(d) if !d.is_empty() => Ok(PathBuf::from(d)),
            _ => Err(err(format!("`{kind}` needs a directory: `{kind}:DIR`"))),
        };
        match kind {
            "shapes" => match dir {
                None => Ok(DataSpec::shapes()),
                Some(opt) => Ok(DataSpec::Shapes {
                    pairs_permille: parse_pairs(opt).map_err(err)?,
                }),
            },
            "mnist" => Ok(DataSpec::Mnist(need_dir(dir)?)),
            "fashion-mnist" => Ok(DataSpec::FashionMnist(need_dir(dir)?)),
            "folder" => Ok(DataSpec::Folder(need_dir(dir)?)),
            "" => Err(err(format!("empty data spec; {}", Self::HELP))),
            other => Err(err(format!(
                "unknown dataset kind `{other}`; {}",
                Self::HELP
            ))),
        }
    }

    /// Builds the dataset, reading and checking its files.
    pub fn open(&self, opts: &DataOptions) -> Result<Arc<dyn Dataset>> {
        if opts.size == 0 {
            return Err(DataError::Arg("image size must be at least 1".into()));
        }
        Ok(match self {
            DataSpec::Shapes { pairs_permille } => Arc::new(ShapesDataset::with_pairs(
                opts.shapes_seed,
                opts.shapes_len,
                opts.size,
                *pairs_permille,
            )),
            DataSpec::Mnist(dir) => Arc::new(IdxDataset::open(
                dir,
                IdxKind::Mnist,
                opts.split,
                opts.size,
            )?),
            DataSpec::FashionMnist(dir) => Arc::new(IdxDataset::open(
                dir,
                IdxKind::FashionMnist,
                opts.split,
                opts.size,
            )?),
            DataSpec::Folder(dir) => Arc::new(FolderDataset::open(dir, opts.size)?),
        })
    }
}

/// The share of pairs in `shapes:pairs=F`: F in [0, 1], kept to a thousandth.
fn parse_pairs(opt: &str) -> std::result::Result<u32, String> {
    let bad = || {
        format!(
            "`shapes` takes no directory (it is generated), only `pairs=F`, the share of \
             pictures with two objects, F in [0, 1] (default 0.5); got `{opt}`"
        )
    };
    let f: f64 = opt
        .strip_prefix("pairs=")
        .ok_or_else(bad)?
        .trim()
        .parse()
        .map_err(|_| bad())?;
    if !(0.0..=1.0).contains(&f) {
        return Err(bad());
    }
    Ok((f * 1000.0).round() as u32)
}

/// Parses a data spec and builds the dataset.
pub fn parse_spec(spec: &str, opts: &DataOptions) -> Result<Arc<dyn Dataset>> {
    DataSpec::parse(spec)?.open(opts)
}

// ---- deterministic order ----------------------------------------------------------

/// Stream id in Philox's third counter word, so the shuffle's random numbers never
/// coincide with another use of the same seed (training noise, the shapes generator).
const SHUFFLE_STREAM: u32 = 0x5348_5546; // "SHUF"

/// The order of epoch `epoch`: a permutation of 0..n by Fisher-Yates, drawing from
/// Philox keyed by `seed` with the epoch in the counter. Pure in (seed, epoch, n).
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let key = [seed as u32, (seed >> 32) as u32];
    let mut words = [0u32; 4];
    for (k, i) in (1..n).rev().enumerate() {
        if k % 4 == 0 {
            let block = (k / 4) as u32;
            words = philox4x32_10(
                [block, epoch as u32, SHUFFLE_STREAM, (epoch >> 32) as u32],
                key,
            );
        }
        // Multiply-shift maps a 32-bit word to 0..=i; its bias (< (i+1) / 2^32) is far
        // below anything a training run could notice.
        let j = ((words[k % 4] as u64 * (i as u64 + 1)) >> 32) as usize;
        order.swap(i, j);
    }
    order
}

/// A position in the sample stream: `offset` samples into epoch `epoch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DataPos {
    pub epoch: u64,
    pub offset: usize,
}

impl DataPos {
    /// The position after `samples` samples from the start, for a dataset of `len`.
    pub fn after(samples: u64, len: usize) -> DataPos {
        let len = len.max(1) as u64;
        DataPos {
            epoch: samples / len,
            offset: (samples % len) as usize,
        }
    }
}

/// A batch: images [B, C, H, W] in [-1, 1], their captions, which items they are, and
/// where the stream continues.
#[derive(Clone, Debug)]
pub struct Batch {
    pub images: Tensor,
    pub captions: Vec<String>,
    /// Each picture's [`Sample::objects`].
    pub objects: Vec<Option<usize>>,
    pub indices: Vec<usize>,
    /// Where this batch started.
    pub start: DataPos,
    /// Where the next batch starts.
    pub next: DataPos,
}

/// Reads batches in the seeded order. Every batch has `batch_size` items: a batch that
/// reaches an epoch's end continues into the next epoch's order, so no sample is dropped
/// and the batch shape never changes.
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    seed: u64,
    batch_size: usize,
    pos: DataPos,
    /// The current epoch's order, kept because recomputing it per batch would cost
    /// O(len) each time.
    order: Option<(u64, Vec<usize>)>,
}

impl Loader {
    pub fn new(dataset: Arc<dyn Dataset>, seed: u64, batch_size: usize) -> Result<Loader> {
        if batch_size == 0 {
            return Err(DataError::Arg("batch size must be at least 1".into()));
        }
        if dataset.is_empty() {
            return Err(DataError::Arg(format!(
                "{} has no items to batch",
                dataset.describe()
            )));
        }
        Ok(Loader {
            dataset,
            seed,
            batch_size,
            pos: DataPos::default(),
            order: None,
        })
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Where the next batch starts (what a checkpoint stores).
    pub fn position(&self) -> DataPos {
        self.pos
    }

    /// Continues from `pos` (read back from a checkpoint).
    pub fn seek(&mut self, pos: DataPos) -> Result<()> {
        let len = self.dataset.len();
        if pos.offset >= len {
            return Err(DataError::Arg(format!(
                "data position offset {} is past the dataset's {len} items (was the \
                 checkpoint made with another dataset?)",
                pos.offset
            )));
        }
        self.pos = pos;
        Ok(())
    }

    /// The item index at `pos`.
    fn index_at(&mut self, pos: DataPos) -> usize {
        let n = self.dataset.len();
        if self.order.as_ref().map(|(e, _)| *e) != Some(pos.epoch) {
            self.order = Some((pos.epoch, epoch_order(self.seed, pos.epoch, n)));
        }
        self.order.as_ref().expect("set above").1[pos.offset]
    }

    /// The next batch, on `device`; advances the position.
    pub fn next_batch(&mut self, device: &Device) -> Result<Batch> {
        let n = self.dataset.len();
        let (c, s) = (self.dataset.channels(), self.dataset.size());
        let start = self.pos;
        let mut pos = start;
        let mut images = Vec::with_capacity(self.batch_size * c * s * s);
        let mut captions = Vec::with_capacity(self.batch_size);
        let mut indices = Vec::with_capacity(self.batch_size);
        let mut objects = Vec::with_capacity(self.batch_size);
        for _ in 0..self.batch_size {
            let i = self.index_at(pos);
            let sample = self.dataset.get(i)?;
            if sample.image.len() != c * s * s {
                return Err(DataError::Arg(format!(
                    "{}: item {i} has {} values, not {c}x{s}x{s}",
                    self.dataset.describe(),
                    sample.image.len()
                )));
            }
            images.extend_from_slice(&sample.image);
            captions.push(sample.caption);
            objects.push(sample.objects);
            indices.push(i);
            pos.offset += 1;
            if pos.offset == n {
                pos = DataPos {
                    epoch: pos.epoch + 1,
                    offset: 0,
                };
            }
        }
        let images = Tensor::from_vec(images, [self.batch_size, c, s, s], device)?;
        self.pos = pos;
        Ok(Batch {
            images,
            captions,
            objects,
            indices,
            start,
            next: pos,
        })
    }
}

/// A well-mixed 64-bit hash (SplitMix64's finaliser), for choosing a caption template or
/// language per item without a generator.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
