//! Image I/O and pixel plumbing: PNG read/write, resize and centre-crop to the model's
//! square size, u8 HWC images <-> f32 CHW tensors in [-1, 1], and sample grids.
//!
//! Only PNG: the `png` crate is already a dependency and covers everything kuosan writes.
//! JPEG would need a new decoder crate, so a `.jpg` file gets an error saying so rather
//! than a confusing "not a PNG".

use kuosan_tensor::{DType, Device, Tensor};
use std::fs;
use std::io::{BufReader, BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Errors of image I/O. A file error always names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file that cannot be read or written, or whose contents are not a usable image.
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },

    /// A bad argument: a shape that is not an image batch, zero rows, ...
    #[error("{0}")]
    Arg(String),

    #[error(transparent)]
    Tensor(#[from] kuosan_tensor::Error),
}

pub type Result<T> = std::result::Result<T, ImageError>;

fn file_err(path: &Path, msg: impl Into<String>) -> ImageError {
    ImageError::File {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// An 8-bit image, row-major [H, W, C] (the layout of PNG rows), C = 1 (gray), 3 (RGB)
/// or 4 (RGBA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Image {
    /// An image filled with `value`.
    pub fn new(width: usize, height: usize, channels: usize, value: u8) -> Image {
        Image {
            width,
            height,
            channels,
            data: vec![value; width * height * channels],
        }
    }

    /// Wraps `data` ([H, W, C] row-major), checking its length.
    pub fn from_vec(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Result<Image> {
        if !(1..=4).contains(&channels) || data.len() != width * height * channels {
            return Err(ImageError::Arg(format!(
                "image {width}x{height}x{channels}: {} bytes do not fit (need {}, channels 1-4)",
                data.len(),
                width * height * channels
            )));
        }
        Ok(Image {
            width,
            height,
            channels,
            data,
        })
    }

    /// Pixel (x, y), channel c.
    #[inline]
    pub fn at(&self, x: usize, y: usize, c: usize) -> u8 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    /// The same picture with `channels` channels: gray -> RGB repeats the value, RGB ->
    /// gray uses ITU-R 601 luma (what PIL's `convert("L")` does), and alpha is dropped
    /// (PIL's `convert("RGB")`), since the models take no alpha.
    pub fn to_channels(&self, channels: usize) -> Result<Image> {
        if channels != 1 && channels != 3 {
            return Err(ImageError::Arg(format!(
                "to_channels: {channels} channels; models take 1 (gray) or 3 (RGB)"
            )));
        }
        if channels == self.channels {
            return Ok(self.clone());
        }
        let n = self.width * self.height;
        let mut data = Vec::with_capacity(n * channels);
        for px in self.data.chunks_exact(self.channels) {
            let (r, g, b) = match self.channels {
                1 | 2 => (px[0], px[0], px[0]),
                _ => (px[0], px[1], px[2]),
            };
            if channels == 1 {
                let y = (299 * r as u32 + 587 * g as u32 + 114 * b as u32 + 500) / 1000;
                data.push(y as u8);
            } else {
                data.extend_from_slice(&[r, g, b]);
            }
        }
        Image::from_vec(self.width, self.height, channels, data)
    }

    /// The largest centred square (the model's images are square; cropping keeps the
    /// subject's aspect ratio, where stretching would not).
    pub fn center_crop_square(&self) -> Image {
        let s = self.width.min(self.height);
        self.crop((self.width - s) / 2, (self.height - s) / 2, s, s)
    }

    /// The `w` x `h` window whose top-left pixel is (x0, y0). Panics if it is outside.
    pub fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> Image {
        assert!(
            x0 + w <= self.width && y0 + h <= self.height,
            "crop outside image"
        );
        let c = self.channels;
        let mut data = Vec::with_capacity(w * h * c);
        for y in y0..y0 + h {
            let row = (y * self.width + x0) * c;
            data.extend_from_slice(&self.data[row..row + w * c]);
        }
        Image {
            width: w,
            height: h,
            channels: c,
            data,
        }
    }

    /// Resized to `w` x `h`, each axis separately: area averaging where it shrinks (every
    /// source pixel counts by the fraction of it inside the target pixel, so thin strokes
    /// do not alias away) and bilinear interpolation with half-pixel centres where it
    /// grows (what PIL and torchvision do for those directions).
    pub fn resize(&self, w: usize, h: usize) -> Image {
        assert!(w > 0 && h > 0, "resize to an empty image");
        if w == self.width && h == self.height {
            return self.clone();
        }
        let c = self.channels;
        let src: Vec<f32> = self.data.iter().map(|&v| v as f32).collect();
        // Horizontal pass: [H, W, C] -> [H, w, C].
        let wx = axis_weights(self.width, w);
        let mut mid = vec![0f32; self.height * w * c];
        for y in 0..self.height {
            for (ox, taps) in wx.iter().enumerate() {
                for &(ix, wt) in taps {
                    for ch in 0..c {
                        mid[(y * w + ox) * c + ch] += wt * src[(y * self.width + ix) * c + ch];
                    }
                }
            }
        }
        // Vertical pass: [H, w, C] -> [h, w, C].
        let wy = axis_weights(self.height, h);
        let mut out = vec![0f32; h * w * c];
        for (oy, taps) in wy.iter().enumerate() {
            for &(iy, wt) in taps {
                let (dst, srow) = (oy * w * c, iy * w * c);
                for k in 0..w * c {
                    out[dst + k] += wt * mid[srow + k];
                }
            }
        }
        Image {
            width: w,
            height: h,
            channels: c,
            data: out
                .into_iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
        }
    }

    /// Centre-cropped to a square, then resized to `size` x `size`: how every dataset
    /// image reaches the model's square input.
    pub fn fit_square(&self, size: usize) -> Image {
        self.center_crop_square().resize(size, size)
    }

    /// [C, H, W] f32 values in [-1, 1] (v / 127.5 - 1), the model's pixel range.
    pub fn to_chw(&self) -> Vec<f32> {
        let (c, n) = (self.channels, self.width * self.height);
        let mut out = vec![0f32; c * n];
        for (p, px) in self.data.chunks_exact(c).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                out[ch * n + p] = v as f32 / 127.5 - 1.0;
            }
        }
        out
    }

    /// From [C, H, W] values in [-1, 1]; values outside are clamped (a sampler's output
    /// overshoots a little) and NaN becomes 0 (black), so a bad sample still saves.
    pub fn from_chw(values: &[f32], channels: usize, height: usize, width: usize) -> Result<Image> {
        let n = width * height;
        if values.len() != channels * n {
            return Err(ImageError::Arg(format!(
                "from_chw: {} values do not fill [{channels}, {height}, {width}]",
                values.len()
            )));
        }
        let mut data = vec![0u8; channels * n];
        for ch in 0..channels {
            for p in 0..n {
                data[p * channels + ch] = to_u8(values[ch * n + p]);
            }
        }
        Image::from_vec(width, height, channels, data)
    }

    /// A [C, H, W] f32 tensor in [-1, 1] on `device`.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.to_chw(),
            [self.channels, self.height, self.width],
            device,
        )?)
    }

    /// From a [C, H, W] tensor in [-1, 1] (any float dtype and device).
    pub fn from_tensor(t: &Tensor) -> Result<Image> {
        let &[c, h, w] = t.dims() else {
            return Err(ImageError::Arg(format!(
                "from_tensor: shape {} is not an image [C, H, W]",
                t.shape()
            )));
        };
        Image::from_chw(&host_f32(t)?, c, h, w)
    }
}

/// [-1, 1] -> 0..=255, rounding to nearest.
#[inline]
fn to_u8(v: f32) -> u8 {
    let v = if v.is_nan() { 0.0 } else { v.clamp(-1.0, 1.0) };
    ((v + 1.0) * 127.5).round() as u8
}

/// A tensor's values as host f32, whatever its dtype or device.
fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    let t = if t.dtype() == DType::F32 {
        t.clone()
    } else {
        t.to_dtype(DType::F32)?
    };
    Ok(t.to_vec::<f32>()?)
}

/// Per output index along one axis, the (input index, weight) taps; weights sum to 1.
fn axis_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            if n_out < n_in {
                // Area: target pixel o covers source interval [o*scale, (o+1)*scale).
                let (lo, hi) = (o as f64 * scale, (o + 1) as f64 * scale);
                let mut taps = Vec::new();
                let mut i = lo.floor() as usize;
                while (i as f64) < hi && i < n_in {
                    let cover = (hi.min(i as f64 + 1.0) - lo.max(i as f64)) / scale;
                    if cover > 0.0 {
                        taps.push((i, cover as f32));
                    }
                    i += 1;
                }
                taps
            } else {
                // Bilinear, half-pixel centres, edges clamped.
                let x = ((o as f64 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f64);
                let i0 = x.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                let f = (x - i0 as f64) as f32;
                if i1 == i0 || f == 0.0 {
                    vec![(i0, 1.0)]
                } else {
                    vec![(i0, 1.0 - f), (i1, f)]
                }
            }
        })
        .collect()
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// What a non-PNG file is, from its first bytes or its extension, for the error message.
fn unsupported_format(path: &Path, head: &[u8]) -> Option<&'static str> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) || matches!(ext.as_deref(), Some("jpg" | "jpeg")) {
        return Some("JPEG");
    }
    if head.starts_with(b"GIF8") {
        return Some("GIF");
    }
    if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        return Some("WebP");
    }
    if head.starts_with(b"BM") {
        return Some("BMP");
    }
    None
}

/// Reads a PNG as 8-bit gray, gray+alpha, RGB or RGBA (palette and low-bit images are
/// expanded, 16-bit ones reduced to 8 bits).
pub fn read_png(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    if !bytes.starts_with(PNG_MAGIC) {
        return Err(file_err(
            path,
            match unsupported_format(path, &bytes) {
                Some(kind) => format!(
                    "unsupported format {kind}: kuosan reads PNG only (a {kind} decoder would be \
                     a new dependency); convert it, e.g. `convert in.jpg out.png`"
                ),
                None => "not a PNG file (bad signature); kuosan reads PNG only".to_string(),
            },
        ));
    }
    decode_png(&bytes).map_err(|msg| file_err(path, msg))
}

fn decode_png(bytes: &[u8]) -> std::result::Result<Image, String> {
    let mut dec = png::Decoder::new(Cursor::new(bytes));
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec
        .read_info()
        .map_err(|e| format!("corrupt PNG header: {e}"))?;
    let size = reader
        .output_buffer_size()
        .ok_or("PNG too large to decode")?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("corrupt PNG data: {e}"))?;
    if info.bit_depth != png::BitDepth::Eight {
        return Err(format!("unsupported bit depth {:?}", info.bit_depth));
    }
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("palette was not expanded".into()),
    };
    let (w, h) = (info.width as usize, info.height as usize);
    if w == 0 || h == 0 {
        return Err("empty image (0 pixels)".into());
    }
    // Rows may be padded to `line_size`; copy out exactly w * channels bytes each.
    let mut data = Vec::with_capacity(w * h * channels);
    for row in buf.chunks(info.line_size).take(h) {
        data.extend_from_slice(&row[..w * channels]);
    }
    Ok(Image {
        width: w,
        height: h,
        channels,
        data,
    })
}

/// Writes an 8-bit PNG (gray, gray+alpha, RGB or RGBA by the channel count), atomically.
pub fn write_png(path: impl AsRef<Path>, img: &Image) -> Result<()> {
    let path = path.as_ref();
    let color = match img.channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        c => return Err(file_err(path, format!("cannot write {c} channels as PNG"))),
    };
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, img.width as u32, img.height as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| file_err(path, format!("PNG encode: {e}")))?;
        w.write_image_data(&img.data)
            .map_err(|e| file_err(path, format!("PNG encode: {e}")))?;
        w.finish()
            .map_err(|e| file_err(path, format!("PNG encode: {e}")))?;
    }
    write_atomic(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over
/// `path`: a reader (or a crash) sees the old file or the whole new one, never half.
/// The temporary lives in the same directory because rename is atomic only within one
/// file system.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| file_err(path, "not a file path"))?
        .to_string_lossy();
    // pid + a counter: two writers (processes or threads) never share a temporary.
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp{}-{serial}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = BufWriter::new(fs::File::create(&tmp)?);
        f.write_all(bytes)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        file_err(path, format!("cannot write: {e}"))
    })
}

/// Border width around and between grid cells, in pixels (torchvision's `make_grid`
/// default padding).
pub const GRID_BORDER: usize = 2;
/// Border colour: mid gray, not torchvision's black, because the built-in shapes and
/// MNIST have black backgrounds and black borders would run the cells together.
pub const GRID_BORDER_VALUE: u8 = 128;

/// Size (width, height) of a grid of `n` images of `w` x `h` in `rows` rows.
pub fn grid_size(n: usize, rows: usize, w: usize, h: usize) -> (usize, usize) {
    let cols = n.div_ceil(rows.max(1));
    (
        cols * w + (cols + 1) * GRID_BORDER,
        rows * h + (rows + 1) * GRID_BORDER,
    )
}

/// Lays `images` [N, C, H, W] (values in [-1, 1]) out in `rows` rows, filled row by
/// row, with a `GRID_BORDER`-pixel border around and between cells.
pub fn make_grid(images: &Tensor, rows: usize) -> Result<Image> {
    let &[n, c, h, w] = images.dims() else {
        return Err(ImageError::Arg(format!(
            "grid: shape {} is not an image batch [N, C, H, W]",
            images.shape()
        )));
    };
    if n == 0 || rows == 0 || rows > n {
        return Err(ImageError::Arg(format!(
            "grid: {n} images in {rows} rows (need 1 <= rows <= images)"
        )));
    }
    if c != 1 && c != 3 {
        return Err(ImageError::Arg(format!(
            "grid: {c} channels; images are 1 (gray) or 3 (RGB)"
        )));
    }
    let values = host_f32(images)?;
    let cols = n.div_ceil(rows);
    let (gw, gh) = grid_size(n, rows, w, h);
    let mut grid = Image::new(gw, gh, c, GRID_BORDER_VALUE);
    let per = c * h * w;
    for (k, vals) in values.chunks_exact(per).enumerate() {
        let tile = Image::from_chw(vals, c, h, w)?;
        let x0 = GRID_BORDER + (k % cols) * (w + GRID_BORDER);
        let y0 = GRID_BORDER + (k / cols) * (h + GRID_BORDER);
        for y in 0..h {
            let dst = ((y0 + y) * gw + x0) * c;
            grid.data[dst..dst + w * c].copy_from_slice(&tile.data[y * w * c..(y + 1) * w * c]);
        }
    }
    Ok(grid)
}

/// Writes `images` [N, C, H, W] in [-1, 1] as one PNG grid of `rows` rows, atomically.
pub fn save_grid(path: impl AsRef<Path>, images: &Tensor, rows: usize) -> Result<()> {
    let path = path.as_ref();
    let grid = make_grid(images, rows).map_err(|e| match e {
        ImageError::Arg(msg) => file_err(path, msg),
        e => e,
    })?;
    write_png(path, &grid)
}

/// Reads only a PNG's header: (width, height). For checks that need no pixels.
pub fn png_dimensions(path: impl AsRef<Path>) -> Result<(usize, usize)> {
    let path = path.as_ref();
    let f = fs::File::open(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let dec = png::Decoder::new(BufReader::new(f));
    let reader = dec
        .read_info()
        .map_err(|e| file_err(path, format!("not a readable PNG: {e}")))?;
    let info = reader.info();
    Ok((info.width as usize, info.height as usize))
}
