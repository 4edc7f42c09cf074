//! A folder of PNG images with captions in `metadata.jsonl`, one JSON object a line:
//! `{"file_name": "0001.png", "text": "a red circle"}` (the Hugging Face `imagefolder`
//! convention that diffusers' training scripts read). Images become RGB, centre-cropped
//! and resized to the model's square size.
//!
//! Everything is read and checked when the dataset is opened, so a bad line or a broken
//! image stops a run before training starts rather than hours in; the decoded images
//! are kept (size x size x 3 bytes each).

use super::{check_index, file_err, DataError, Dataset, Result, Sample};
use crate::image::{read_png, Image};
use std::path::{Path, PathBuf};

/// The captions file's name.
pub const METADATA: &str = "metadata.jsonl";

/// One line of `metadata.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub file_name: String,
    pub text: String,
    /// 1-based line number in `metadata.jsonl`.
    pub line: usize,
}

/// Parses `metadata.jsonl` text; `path` is only for messages. Blank lines are skipped;
/// other keys on a line are ignored (imagefolder allows extra columns).
pub fn parse_metadata(path: &Path, text: &str) -> Result<Vec<Entry>> {
    let line_err = |line: usize, msg: String| DataError::Line {
        path: path.to_path_buf(),
        line,
        msg,
    };
    let mut entries = Vec::new();
    for (k, raw) in text.lines().enumerate() {
        let line = k + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| line_err(line, format!("not valid JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| {
            line_err(
                line,
                r#"expected a JSON object like {"file_name": "a.png", "text": "a caption"}"#.into(),
            )
        })?;
        let field = |key: &str| -> Result<String> {
            match obj.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(line_err(
                    line,
                    format!("\"{key}\" must be a string, found {other}"),
                )),
                None => Err(line_err(line, format!("missing key \"{key}\""))),
            }
        };
        let file_name = field("file_name")?;
        let text = field("text")?;
        if file_name.is_empty() {
            return Err(line_err(line, "\"file_name\" is empty".into()));
        }
        entries.push(Entry {
            file_name,
            text,
            line,
        });
    }
    Ok(entries)
}

/// The images and captions of a folder, at `size` x `size` RGB.
#[derive(Clone, Debug)]
pub struct FolderDataset {
    dir: PathBuf,
    entries: Vec<Entry>,
    /// [N, size, size, 3] bytes.
    images: Vec<u8>,
    size: usize,
}

impl FolderDataset {
    /// Reads `dir/metadata.jsonl` and every image it lists.
    pub fn open(dir: &Path, size: usize) -> Result<FolderDataset> {
        super::check_dir(dir)?;
        let meta = dir.join(METADATA);
        if !meta.is_file() {
            return Err(file_err(
                dir,
                format!(
                    "no {METADATA}: a folder dataset needs one line per image, \
                     {{\"file_name\": \"0001.png\", \"text\": \"a caption\"}}"
                ),
            ));
        }
        let text = std::fs::read_to_string(&meta)
            .map_err(|e| file_err(&meta, format!("cannot read: {e}")))?;
        let entries = parse_metadata(&meta, &text)?;
        if entries.is_empty() {
            return Err(file_err(
                &meta,
                "lists no images (the folder dataset is empty)",
            ));
        }
        let mut images = Vec::with_capacity(entries.len() * size * size * 3);
        for e in &entries {
            let at = |msg: String| DataError::Line {
                path: meta.clone(),
                line: e.line,
                msg,
            };
            let file = dir.join(&e.file_name);
            if !file.is_file() {
                return Err(at(format!("image {} not found", file.display())));
            }
            // The image error names the image file; the line says who listed it.
            let img = read_png(&file).map_err(|err| at(err.to_string()))?;
            let img = img.to_channels(3).map_err(|err| at(err.to_string()))?;
            images.extend_from_slice(&img.fit_square(size).data);
        }
        Ok(FolderDataset {
            dir: dir.to_path_buf(),
            entries,
            images,
            size,
        })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Item i as an 8-bit RGB image.
    pub fn image(&self, i: usize) -> Image {
        let n = self.size * self.size * 3;
        Image {
            width: self.size,
            height: self.size,
            channels: 3,
            data: self.images[i * n..(i + 1) * n].to_vec(),
        }
    }
}

impl Dataset for FolderDataset {
    fn len(&self) -> usize {
        self.entries.len()
    }
    fn channels(&self) -> usize {
        3
    }
    fn size(&self) -> usize {
        self.size
    }
    fn get(&self, i: usize) -> Result<Sample> {
        check_index(i, self.len(), "folder")?;
        Ok(Sample {
            image: self.image(i).to_chw(),
            caption: self.entries[i].text.clone(),
            objects: None,
        })
    }
    fn describe(&self) -> String {
        format!(
            "folder {} ({} images, {}x{})",
            self.dir.display(),
            self.entries.len(),
            self.size,
            self.size
        )
    }
}
