//! MNIST and Fashion-MNIST in the IDX format (LeCun's: a big-endian header, then the
//! bytes), gzip-compressed or not. Images are padded from 28 x 28 to 32 x 32 (2 black
//! pixels each side, so the U-Net can halve the side 5 times) and get a caption from
//! their label, in English or Chinese, from several templates per class.

use super::{check_index, file_err, mix64, Dataset, Result, Sample, Split};
use crate::image::Image;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Magic of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Side of the stored digits.
pub const SIDE: usize = 28;
/// Side after padding.
pub const PADDED: usize = 32;

/// Which of the two IDX datasets (they differ only in their captions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdxKind {
    Mnist,
    FashionMnist,
}

impl IdxKind {
    pub fn name(self) -> &'static str {
        match self {
            IdxKind::Mnist => "mnist",
            IdxKind::FashionMnist => "fashion-mnist",
        }
    }
}

/// An IDX array of unsigned bytes: its dimensions and row-major data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// The whole (decompressed) contents of a file; gzip is recognised by its magic bytes,
/// not the name, so a renamed file still reads.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| file_err(path, format!("corrupt or truncated gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads an IDX file of unsigned bytes and checks that its magic is `magic` and that
/// the data is exactly as long as the header says.
pub fn read_idx(path: &Path, magic: u32) -> Result<IdxArray> {
    let bytes = read_maybe_gz(path)?;
    let what = if magic == IMAGES_MAGIC {
        "images (idx3)"
    } else {
        "labels (idx1)"
    };
    if bytes.len() < 4 {
        return Err(file_err(
            path,
            format!("{} bytes: too short for an IDX header", bytes.len()),
        ));
    }
    let found = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if found != magic {
        let hint = match found {
            IMAGES_MAGIC => " (an images file where labels belong?)",
            LABELS_MAGIC => " (a labels file where images belong?)",
            _ => "",
        };
        return Err(file_err(
            path,
            format!(
                "wrong magic number 0x{found:08x}, expected 0x{magic:08x} for IDX {what}{hint}"
            ),
        ));
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(file_err(
            path,
            format!(
                "truncated header: {} bytes, an IDX file with {ndim} dimensions needs {header}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| {
            u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let want = dims.iter().product::<usize>();
    let have = bytes.len() - header;
    if have != want {
        let dims_s = dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" x ");
        let why = if have < want { "truncated" } else { "too long" };
        return Err(file_err(
            path,
            format!("{why}: the header says {dims_s} = {want} bytes of data, the file has {have}"),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Writes an IDX file of unsigned bytes (gzip-compressed if `gzip`), atomically. Used to
/// cut the test fixtures; kuosan itself only reads these files.
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8], gzip: bool) -> Result<()> {
    assert_eq!(
        dims.iter().product::<usize>(),
        data.len(),
        "IDX dims vs data"
    );
    let mut bytes = (0x0800u32 | dims.len() as u32).to_be_bytes().to_vec();
    for &d in dims {
        bytes.extend_from_slice(&(d as u32).to_be_bytes());
    }
    bytes.extend_from_slice(data);
    if gzip {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&bytes)
            .and_then(|_| enc.finish())
            .map(|b| bytes = b)
            .map_err(|e| file_err(path, format!("gzip: {e}")))?;
    }
    crate::image::write_atomic(path, &bytes)?;
    Ok(())
}

/// The files of `split` in `dir`: (images, labels), each the `.gz` file if present,
/// else the uncompressed one.
pub fn split_files(dir: &Path, split: Split) -> Result<(PathBuf, PathBuf)> {
    super::check_dir(dir)?;
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let find = |stem: String| {
        let gz = dir.join(format!("{stem}.gz"));
        let raw = dir.join(&stem);
        if gz.is_file() {
            Ok(gz)
        } else if raw.is_file() {
            Ok(raw)
        } else {
            Err(file_err(
                dir,
                format!(
                    "no {stem}.gz (or {stem}); an MNIST-style directory holds \
                     {{train,t10k}}-images-idx3-ubyte.gz and {{train,t10k}}-labels-idx1-ubyte.gz"
                ),
            ))
        }
    };
    Ok((
        find(format!("{prefix}-images-idx3-ubyte"))?,
        find(format!("{prefix}-labels-idx1-ubyte"))?,
    ))
}

/// Reads a split's images and labels and checks they agree: (images [N, 28, 28] as
/// one byte vector, labels [N]).
pub fn read_split(dir: &Path, split: Split) -> Result<(Vec<u8>, Vec<u8>)> {
    let (ip, lp) = split_files(dir, split)?;
    let images = read_idx(&ip, IMAGES_MAGIC)?;
    let labels = read_idx(&lp, LABELS_MAGIC)?;
    if images.dims[1..] != [SIDE, SIDE] {
        return Err(file_err(
            &ip,
            format!(
                "images are {}x{}, expected {SIDE}x{SIDE}",
                images.dims[1], images.dims[2]
            ),
        ));
    }
    if images.dims[0] != labels.dims[0] {
        return Err(file_err(
            &lp,
            format!(
                "{} labels for {} images in {}",
                labels.dims[0],
                images.dims[0],
                ip.display()
            ),
        ));
    }
    if images.dims[0] == 0 {
        return Err(file_err(&ip, "no images"));
    }
    if let Some(k) = labels.data.iter().position(|&l| l > 9) {
        return Err(file_err(
            &lp,
            format!("label {} at index {k} is not a class 0-9", labels.data[k]),
        ));
    }
    Ok((images.data, labels.data))
}

/// MNIST or Fashion-MNIST, one split, images padded to 32 x 32 (then resized if the
/// model's size differs), one channel.
#[derive(Clone, Debug)]
pub struct IdxDataset {
    kind: IdxKind,
    split: Split,
    dir: PathBuf,
    /// [N, 32, 32] padded images.
    images: Vec<u8>,
    labels: Vec<u8>,
    size: usize,
}

impl IdxDataset {
    /// Reads `split` of the IDX files in `dir`.
    pub fn open(dir: &Path, kind: IdxKind, split: Split, size: usize) -> Result<IdxDataset> {
        let (raw, labels) = read_split(dir, split)?;
        let n = labels.len();
        let pad = (PADDED - SIDE) / 2;
        let mut images = vec![0u8; n * PADDED * PADDED];
        for (k, img) in raw.chunks_exact(SIDE * SIDE).enumerate() {
            let dst = &mut images[k * PADDED * PADDED..(k + 1) * PADDED * PADDED];
            for (y, row) in img.chunks_exact(SIDE).enumerate() {
                let at = (y + pad) * PADDED + pad;
                dst[at..at + SIDE].copy_from_slice(row);
            }
        }
        Ok(IdxDataset {
            kind,
            split,
            dir: dir.to_path_buf(),
            images,
            labels,
            size,
        })
    }

    pub fn kind(&self) -> IdxKind {
        self.kind
    }

    /// Label of item i.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Item i as an 8-bit gray image at the dataset's size.
    pub fn image(&self, i: usize) -> Image {
        let px = PADDED * PADDED;
        let img = Image {
            width: PADDED,
            height: PADDED,
            channels: 1,
            data: self.images[i * px..(i + 1) * px].to_vec(),
        };
        img.resize(self.size, self.size)
    }

    /// Item i's caption: language and template chosen by a hash of i, so it is fixed per
    /// item and half the items are captioned in each language.
    pub fn caption(&self, i: usize) -> String {
        caption(self.kind, self.labels[i], i as u64)
    }
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn channels(&self) -> usize {
        1
    }
    fn size(&self) -> usize {
        self.size
    }
    fn get(&self, i: usize) -> Result<Sample> {
        check_index(i, self.len(), self.kind.name())?;
        Ok(Sample {
            image: self.image(i).to_chw(),
            caption: self.caption(i),
            objects: None,
        })
    }
    fn describe(&self) -> String {
        format!(
            "{} {} ({} images) from {}",
            self.kind.name(),
            match self.split {
                Split::Train => "train",
                Split::Test => "test",
            },
            self.labels.len(),
            self.dir.display()
        )
    }
}

// ---- captions ---------------------------------------------------------------------

const DIGITS_EN: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];
const DIGITS_ZH: [&str; 10] = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"];

/// Fashion-MNIST classes by label: (English noun phrase, Chinese noun phrase with its
/// measure word). Names follow the data README's class list.
pub const FASHION_CLASSES: [(&str, &str); 10] = [
    ("a t-shirt", "一件T恤"),
    ("a pair of trousers", "一条裤子"),
    ("a pullover", "一件套头衫"),
    ("a dress", "一条连衣裙"),
    ("a coat", "一件外套"),
    ("a sandal", "一只凉鞋"),
    ("a shirt", "一件衬衫"),
    ("a sneaker", "一只运动鞋"),
    ("a bag", "一个包"),
    ("an ankle boot", "一只短靴"),
];

/// Every caption of class `label`: (English templates, Chinese templates).
///
/// MNIST: "the digit 7", "a handwritten seven", "the number seven", "a handwritten
/// digit 7" / "数字七", "手写的七", "数字7", "一个手写的数字七".
/// Fashion-MNIST: "an ankle boot", "a photo of an ankle boot", "a black and white
/// photo of an ankle boot" / "一只短靴", "一只短靴的照片", "一张短靴的黑白照片".
pub fn caption_templates(kind: IdxKind, label: u8) -> (Vec<String>, Vec<String>) {
    let l = label as usize;
    match kind {
        IdxKind::Mnist => {
            let (en, zh) = (DIGITS_EN[l], DIGITS_ZH[l]);
            (
                vec![
                    format!("the digit {l}"),
                    format!("a handwritten {en}"),
                    format!("the number {en}"),
                    format!("a handwritten digit {l}"),
                ],
                vec![
                    format!("数字{zh}"),
                    format!("手写的{zh}"),
                    format!("数字{l}"),
                    format!("一个手写的数字{zh}"),
                ],
            )
        }
        IdxKind::FashionMnist => {
            let (en, zh) = FASHION_CLASSES[l];
            // The Chinese noun without its numeral + measure word ("一只短靴" -> "短靴"),
            // for "a photo of" phrasing, which takes its own measure word (一张).
            let bare: String = zh.chars().skip(2).collect();
            (
                vec![
                    en.to_string(),
                    format!("a photo of {en}"),
                    format!("a black and white photo of {en}"),
                ],
                vec![
                    zh.to_string(),
                    format!("{zh}的照片"),
                    format!("一张{bare}的黑白照片"),
                ],
            )
        }
    }
}

/// The caption of item `i` with label `label`: the low bit of a hash of i picks the
/// language, the rest the template.
pub fn caption(kind: IdxKind, label: u8, i: u64) -> String {
    let h = mix64(i ^ 0x4944_5843_4150_5430); // "IDXCAPT0": apart from other hashes of i
    let (en, zh) = caption_templates(kind, label);
    let list = if h & 1 == 0 { en } else { zh };
    list[((h >> 1) % list.len() as u64) as usize].clone()
}
