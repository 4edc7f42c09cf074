//! A small convolutional classifier for the 10-class IDX data sets (MNIST,
//! Fashion-MNIST), trained with this engine on the train split. `evaluate` uses its
//! predictions to check that a sample shows the prompted class, and its 64-d
//! penultimate features for a Frechet distance between generated and test images (the
//! role Inception-v3's pool features play in FID, on a network that knows digits).
//!
//! The trained weights are cached, keyed by a hash of the training data, beside the data
//! when that folder is writable and under the user cache folder otherwise, so the
//! classifier is trained once per data set.

use crate::data::idx::{read_split, IdxKind, PADDED, SIDE};
use crate::data::Split;
use kuosan_nn::{cross_entropy, AdamW, AdamWConfig, Conv2d, Linear, LrSchedule, Module, VarStore};
use kuosan_nn::{Error, Result};
use kuosan_tensor::{no_grad, philox4x32_10, DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Width of the features the Frechet distance compares.
pub const FEATURES: usize = 64;
/// Classes of both IDX data sets.
pub const CLASSES: usize = 10;
/// Bump when the architecture or training recipe changes: old caches are then ignored.
const RECIPE: u32 = 1;

/// conv 3x3 (1 -> 32) at 32x32, then three stride-2 convs (32 -> 64 -> 64 -> 64, down to
/// 4x4), SiLU after each; flatten -> Linear 1024 -> 64 -> SiLU (the features) ->
/// Linear 64 -> 10.
pub struct Classifier {
    vars: VarStore,
    convs: Vec<Conv2d>,
    fc: Linear,
    head: Linear,
}

/// How the classifier was trained.
#[derive(Clone, Debug)]
pub struct ClassifierTraining {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

impl Default for ClassifierTraining {
    fn default() -> Self {
        ClassifierTraining {
            epochs: 6,
            batch: 64,
            lr: 2e-3,
            seed: 0,
        }
    }
}

impl ClassifierTraining {
    /// The default recipe with about 120,000 image presentations, 1 to 6 epochs: six
    /// epochs of MNIST's 9,000 (98.8% on its test split), two of Fashion-MNIST's 60,000
    /// (minutes, not a quarter of an hour, on 2 cores).
    pub fn for_size(n: usize) -> ClassifierTraining {
        ClassifierTraining {
            epochs: (120_000 / n.max(1)).clamp(1, 6),
            ..ClassifierTraining::default()
        }
    }
}

/// A loaded or freshly trained classifier and where its weights live.
pub struct CachedClassifier {
    pub classifier: Classifier,
    pub path: PathBuf,
    /// Accuracy on the test split, measured after training.
    pub test_accuracy: f64,
    /// False when it was read from the cache.
    pub trained_now: bool,
}

impl Classifier {
    pub fn new(device: &Device, seed: u64) -> Result<Classifier> {
        let vars = VarStore::new(device.clone(), DType::F32, seed);
        let root = vars.root();
        let chans = [1, 32, 64, 64, 64];
        let convs = (0..4)
            .map(|i| {
                let stride = if i == 0 { 1 } else { 2 };
                Conv2d::new(
                    &root.pp(format!("conv{i}")),
                    chans[i],
                    chans[i + 1],
                    3,
                    stride,
                    1,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let fc = Linear::new(&root.pp("fc"), 64 * 4 * 4, FEATURES, true)?;
        let head = Linear::new(&root.pp("head"), FEATURES, CLASSES, true)?;
        Ok(Classifier {
            vars,
            convs,
            fc,
            head,
        })
    }

    pub fn device(&self) -> Device {
        self.vars.device()
    }

    /// x: [B, 1, 32, 32] in [-1, 1] -> (features [B, 64], logits [B, 10]).
    pub fn forward(&self, x: &Tensor) -> kuosan_tensor::Result<(Tensor, Tensor)> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1..] != [1, PADDED, PADDED] {
            return Err(kuosan_tensor::Error::Arg {
                op: "Classifier::forward",
                msg: format!(
                    "takes gray {PADDED}x{PADDED} images [B, 1, {PADDED}, {PADDED}], got {}",
                    x.shape()
                ),
            });
        }
        let mut h = x.clone();
        for c in &self.convs {
            h = c.forward(&h)?.silu()?;
        }
        let feats = self.fc.forward(&h.flatten_from(1)?)?.silu()?;
        let logits = self.head.forward(&feats)?;
        Ok((feats, logits))
    }

    /// (predicted class, features) of each image of x [B, 1, 32, 32].
    pub fn predict(&self, x: &Tensor) -> kuosan_tensor::Result<(Vec<usize>, Vec<Vec<f64>>)> {
        let _g = no_grad();
        let (feats, logits) = self.forward(x)?;
        let logits = logits.to_vec_f64()?;
        let pred = logits
            .chunks_exact(CLASSES)
            .map(|row| {
                (0..CLASSES)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .expect("ten classes")
            })
            .collect();
        let feats = feats
            .to_vec_f64()?
            .chunks_exact(FEATURES)
            .map(<[f64]>::to_vec)
            .collect();
        Ok((pred, feats))
    }

    /// Trains a fresh classifier on `images` ([N, 28, 28] bytes) and `labels`, with
    /// random shifts of up to 2 px inside the 32x32 padding as augmentation.
    /// `on_epoch(epoch, epochs, mean loss)` after each epoch.
    pub fn train(
        images: &[u8],
        labels: &[u8],
        device: &Device,
        t: &ClassifierTraining,
        mut on_epoch: impl FnMut(usize, usize, f64),
    ) -> Result<Classifier> {
        let model = Classifier::new(device, t.seed)?;
        let n = labels.len();
        if n == 0 || images.len() != n * SIDE * SIDE {
            return Err(Error::Arg(format!(
                "classifier training needs {n} images of {SIDE}x{SIDE} bytes, got {} bytes",
                images.len()
            )));
        }
        let steps_per_epoch = n.div_ceil(t.batch);
        let total = (steps_per_epoch * t.epochs) as u64;
        let lr = LrSchedule {
            base: t.lr,
            warmup: (total / 20).max(1),
            total,
            min_ratio: 0.02,
        };
        let mut opt = AdamW::new(model.vars.vars(), AdamWConfig::default())?;
        let mut step = 0u64;
        for epoch in 0..t.epochs {
            let order = crate::data::epoch_order(t.seed, epoch as u64, n);
            let mut sum = 0.0;
            for chunk in order.chunks(t.batch) {
                step += 1;
                let shifts: Vec<(i64, i64)> = chunk
                    .iter()
                    .map(|&i| {
                        // Stream "AUG1": apart from every other use of the seed.
                        let w = philox4x32_10(
                            [i as u32, epoch as u32, 0x4155_4731, 0],
                            [t.seed as u32, 0],
                        );
                        ((w[0] % 5) as i64 - 2, (w[1] % 5) as i64 - 2)
                    })
                    .collect();
                let x = batch_tensor(images, chunk, &shifts, device)?;
                let y: Vec<usize> = chunk.iter().map(|&i| labels[i] as usize).collect();
                let (_, logits) = model.forward(&x)?;
                let loss = cross_entropy(&logits, &y)?;
                loss.backward()?;
                opt.step(lr.at(step))?;
                sum += loss.to_vec_f64()?[0] * chunk.len() as f64;
            }
            on_epoch(epoch + 1, t.epochs, sum / n as f64);
        }
        Ok(model)
    }

    /// (predicted class, features) of every image of `images` ([N, 28, 28] bytes),
    /// unshifted, in batches of 256.
    pub fn predict_all(&self, images: &[u8]) -> Result<(Vec<usize>, Vec<Vec<f64>>)> {
        let n = images.len() / (SIDE * SIDE);
        let idx: Vec<usize> = (0..n).collect();
        let (mut pred, mut feats) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for chunk in idx.chunks(256) {
            let unshifted = vec![(0, 0); chunk.len()];
            let x = batch_tensor(images, chunk, &unshifted, &self.vars.device())?;
            let (p, f) = self.predict(&x)?;
            pred.extend(p);
            feats.extend(f);
        }
        Ok((pred, feats))
    }

    /// The fraction of `images` ([N, 28, 28] bytes) classified as their label.
    pub fn accuracy(&self, images: &[u8], labels: &[u8]) -> Result<f64> {
        let (pred, _) = self.predict_all(images)?;
        let right = pred
            .iter()
            .zip(labels)
            .filter(|&(&p, &l)| p == l as usize)
            .count();
        Ok(right as f64 / labels.len().max(1) as f64)
    }

    /// Features of `images` ([N, 28, 28] bytes), for the reference side of a Frechet
    /// distance.
    pub fn features(&self, images: &[u8]) -> Result<Vec<Vec<f64>>> {
        Ok(self.predict_all(images)?.1)
    }

    pub fn save(&self, path: &Path, test_accuracy: f64) -> Result<()> {
        let meta = HashMap::from([("test_accuracy".to_string(), test_accuracy.to_string())]);
        kuosan_nn::safetensors::save(path, &self.vars.vars(), DType::F32, Some(meta))
    }

    /// Weights and the recorded test accuracy from `path`.
    pub fn load(path: &Path, device: &Device) -> Result<(Classifier, f64)> {
        let model = Classifier::new(device, 0)?;
        let (tensors, meta) = kuosan_nn::safetensors::load_with_metadata(path, device)?;
        for (name, p) in model.vars.vars() {
            let t = tensors.get(&name).ok_or_else(|| {
                Error::file(
                    path,
                    format!("has no tensor {name:?}: delete it to retrain"),
                )
            })?;
            p.assign(t)?;
        }
        let acc = meta
            .get("test_accuracy")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Error::file(path, "has no test_accuracy metadata: delete it to retrain")
            })?;
        Ok((model, acc))
    }

    /// The classifier for the IDX data in `dir`: from the cache when one matches the
    /// training data, else trained (and cached). `log` gets progress lines.
    pub fn load_or_train(
        dir: &Path,
        kind: IdxKind,
        device: &Device,
        mut log: impl FnMut(&str),
    ) -> Result<CachedClassifier> {
        let data_err = |e: crate::data::DataError| Error::Arg(e.to_string());
        let (train_x, train_y) = read_split(dir, Split::Train).map_err(data_err)?;
        let key = data_key(&train_x, &train_y);
        let name = format!(
            "kuosan-classifier-{}-v{RECIPE}-{key:016x}.safetensors",
            kind.name()
        );
        let candidates = cache_candidates(dir, &name);
        if let Some(path) = candidates.iter().find(|p| p.exists()) {
            let (classifier, test_accuracy) = Classifier::load(path, device)?;
            return Ok(CachedClassifier {
                classifier,
                path: path.clone(),
                test_accuracy,
                trained_now: false,
            });
        }
        let (test_x, test_y) = read_split(dir, Split::Test).map_err(data_err)?;
        let t = ClassifierTraining::for_size(train_y.len());
        log(&format!(
            "training the {} classifier on {} images ({} epochs; once, then cached)",
            kind.name(),
            train_y.len(),
            t.epochs
        ));
        let classifier = Classifier::train(&train_x, &train_y, device, &t, |e, n, loss| {
            log(&format!("  epoch {e}/{n}: loss {loss:.4}"))
        })?;
        let test_accuracy = classifier.accuracy(&test_x, &test_y)?;
        log(&format!("  test accuracy {:.2}%", 100.0 * test_accuracy));
        let mut saved = None;
        for path in &candidates {
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if classifier.save(path, test_accuracy).is_ok() {
                saved = Some(path.clone());
                break;
            }
        }
        let path = saved.ok_or_else(|| {
            Error::Arg(format!(
                "cannot cache the classifier in any of {}",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        Ok(CachedClassifier {
            classifier,
            path,
            test_accuracy,
            trained_now: true,
        })
    }
}

/// Where a cached classifier may live, in order: beside the data, then the user cache
/// folder ($XDG_CACHE_HOME or ~/.cache, under kuosan/), then the system temp folder.
fn cache_candidates(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = vec![dir.join(name)];
    let user = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(u) = user {
        out.push(u.join("kuosan").join(name));
    }
    out.push(std::env::temp_dir().join("kuosan").join(name));
    out
}

/// A 64-bit hash of the training data (FNV-1a over labels then pixels), so a cache made
/// from other data is never used.
fn data_key(images: &[u8], labels: &[u8]) -> u64 {
    labels
        .iter()
        .chain(images)
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })
}

/// Images `idx` of `images` ([N, 28, 28] bytes) as [B, 1, 32, 32] in [-1, 1], each placed
/// in the 32x32 frame at offset (2 + dx, 2 + dy).
fn batch_tensor(
    images: &[u8],
    idx: &[usize],
    shifts: &[(i64, i64)],
    device: &Device,
) -> kuosan_tensor::Result<Tensor> {
    let px = PADDED * PADDED;
    let mut out = vec![-1f32; idx.len() * px];
    for (k, (&i, &(dx, dy))) in idx.iter().zip(shifts).enumerate() {
        let src = &images[i * SIDE * SIDE..(i + 1) * SIDE * SIDE];
        for y in 0..SIDE {
            let ty = (y as i64 + 2 + dy) as usize;
            for x in 0..SIDE {
                let tx = (x as i64 + 2 + dx) as usize;
                out[k * px + ty * PADDED + tx] = src[y * SIDE + x] as f32 / 127.5 - 1.0;
            }
        }
    }
    Tensor::from_vec(out, [idx.len(), 1, PADDED, PADDED], device)
}
