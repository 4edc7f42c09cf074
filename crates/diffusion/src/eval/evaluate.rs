//! `evaluate`: samples n pictures for every evaluation prompt of a run's data set and
//! judges them: `shapes` by the rule-based reader (per attribute and all attributes),
//! MNIST / Fashion-MNIST by the classifier (accuracy against the prompted class) plus a
//! Frechet distance between the classifier's features of the samples and of the test
//! split.

use super::classifier::{CachedClassifier, Classifier};
use super::frechet::frechet_distance_of;
use super::prompts::{eval_prompts, unjudgeable, EvalPrompt, PromptSet, Target};
use super::shapes_check::{self, ShapeRule};
use crate::config::ModelConfig;
use crate::data::idx::{read_split, IdxKind, PADDED};
use crate::data::shapes::{Lang, DEFAULT_PAIRS_PERMILLE};
use crate::data::{DataSpec, Split};
use crate::guidance::Guidance;
use crate::image::Image;
use crate::models::Models;
use crate::sample::{sample, SampleOptions, SamplerKind};
use kuosan_nn::{Error, Result};
use kuosan_tensor::{Device, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Says what the Frechet distance is, in every report that has one.
pub const FRECHET_NOTE: &str = "Frechet distance between the eval classifier's 64-d features \
    of the samples and of the test split: comparable between kuosan runs on the same data, \
    not Inception FID";

/// Images per sampling call: bounds the memory of one batch (doubled by guidance).
const CHUNK: usize = 64;

/// How the pictures are sampled.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalOptions {
    /// Pictures per prompt.
    pub n: usize,
    pub guidance: Guidance,
    pub steps: usize,
    pub eta: f64,
    pub sampler: SamplerKind,
    pub seed: u64,
    pub prompts: PromptSet,
}

impl Default for EvalOptions {
    /// 64 pictures per prompt with `sample`'s settings, but 25 DDIM steps instead of 50:
    /// half the time, and on these models the scores barely move (README: results).
    fn default() -> Self {
        EvalOptions {
            n: 64,
            guidance: Guidance::scale(4.0),
            steps: 25,
            eta: 1.0,
            sampler: SamplerKind::Ddim,
            seed: 0,
            prompts: PromptSet::Standard,
        }
    }
}

/// What judges a data set's pictures.
pub enum Judge {
    /// The rule-based `shapes` reader.
    Shapes,
    /// A classifier for an IDX data set, with its features of the test split.
    Classifier {
        kind: IdxKind,
        cached: CachedClassifier,
        reference: Vec<Vec<f64>>,
    },
}

impl Judge {
    /// The judge for `spec`'s data; for MNIST / Fashion-MNIST it loads (or trains once
    /// and caches) the classifier, logging through `log`.
    pub fn for_data(spec: &DataSpec, device: &Device, log: impl FnMut(&str)) -> Result<Judge> {
        let idx = |dir: &PathBuf, kind: IdxKind, log| -> Result<Judge> {
            let cached = Classifier::load_or_train(dir, kind, device, log)?;
            let (test_x, _) =
                read_split(dir, Split::Test).map_err(|e| Error::Arg(e.to_string()))?;
            let reference = cached.classifier.features(&test_x)?;
            Ok(Judge::Classifier {
                kind,
                cached,
                reference,
            })
        };
        match spec {
            DataSpec::Shapes { .. } => Ok(Judge::Shapes),
            DataSpec::Mnist(dir) => idx(dir, IdxKind::Mnist, log),
            DataSpec::FashionMnist(dir) => idx(dir, IdxKind::FashionMnist, log),
            DataSpec::Folder(dir) => Err(Error::Arg(unjudgeable(dir).to_string())),
        }
    }
}

/// Running right / judged counts per attribute, and pictures right in all of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub attributes: BTreeMap<&'static str, (usize, usize)>,
    pub all: usize,
    pub n: usize,
}

impl Tally {
    /// One picture's (attribute, right) judgements.
    pub fn add(&mut self, judged: impl IntoIterator<Item = (&'static str, bool)>) {
        let mut all = true;
        for (name, right) in judged {
            let e = self.attributes.entry(name).or_default();
            e.0 += right as usize;
            e.1 += 1;
            all &= right;
        }
        self.all += all as usize;
        self.n += 1;
    }

    pub fn merge(&mut self, other: &Tally) {
        for (name, (r, n)) in &other.attributes {
            let e = self.attributes.entry(name).or_default();
            e.0 += r;
            e.1 += n;
        }
        self.all += other.all;
        self.n += other.n;
    }

    /// Accuracy of one attribute, None when no picture was judged on it.
    pub fn accuracy(&self, name: &str) -> Option<f64> {
        let &(r, n) = self.attributes.get(name)?;
        (n > 0).then(|| r as f64 / n as f64)
    }

    /// The fraction of pictures right in every attribute judged.
    pub fn all_accuracy(&self) -> f64 {
        self.all as f64 / self.n.max(1) as f64
    }

    pub fn summary(&self) -> Accuracy {
        Accuracy {
            n: self.n,
            accuracy: self.all_accuracy(),
            attributes: self
                .attributes
                .keys()
                .filter_map(|&k| Some((k.to_string(), self.accuracy(k)?)))
                .collect(),
        }
    }
}

/// Accuracy over a set of pictures.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Accuracy {
    pub n: usize,
    /// The fraction right in every attribute (for a classifier: of the right class).
    pub accuracy: f64,
    /// Per attribute (shapes: count, color, shape, size, position, relation;
    /// classifier: class).
    pub attributes: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PromptResult {
    pub prompt: String,
    pub lang: &'static str,
    #[serde(flatten)]
    pub result: Accuracy,
}

/// The classifier behind a report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassifierInfo {
    pub path: String,
    pub test_accuracy: f64,
}

/// Everything `eval` measured, as printed and as written to JSON.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EvalReport {
    pub data: String,
    /// The prompt set: "standard" or "pairs".
    pub prompt_set: &'static str,
    pub n_per_prompt: usize,
    pub sampler: &'static str,
    pub steps: usize,
    pub guidance: f64,
    /// `guidance_rescale` (Lin et al. 2023; 0: off).
    pub guidance_rescale: f64,
    /// The window of guided steps, [start, stop) as fractions of the steps.
    pub guidance_window: [f64; 2],
    pub eta: f64,
    pub seed: u64,
    pub prompts: Vec<PromptResult>,
    pub overall: Accuracy,
    pub english: Accuracy,
    pub chinese: Accuracy,
    pub frechet_distance: Option<f64>,
    pub frechet_note: Option<&'static str>,
    pub classifier: Option<ClassifierInfo>,
    /// `shapes`: the same pictures judged with the fill-only shape rule of the reader
    /// until 2026-12-02 (overall, English, Chinese), comparable with runs measured then.
    pub fill_rule: Option<[Accuracy; 3]>,
    /// [steps trained, steps configured] of the checkpoint judged, where the caller
    /// knows them (`cargo xtask eval` does): a run still training exports its latest
    /// checkpoint, and a figure for it is not the finished run's.
    pub run_steps: Option<[u64; 2]>,
    pub elapsed_s: f64,
}

fn lang_name(l: Lang) -> &'static str {
    match l {
        Lang::En => "en",
        Lang::Zh => "zh",
    }
}

/// Samples `o.n` pictures for every evaluation prompt of `spec` and judges them;
/// `on_progress(done, total)` counts pictures.
pub fn evaluate(
    models: &Models,
    cfg: &ModelConfig,
    spec: &DataSpec,
    judge: &Judge,
    o: &EvalOptions,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<EvalReport> {
    let started = Instant::now();
    let prompts = eval_prompts(spec, o.prompts).map_err(|e| Error::Arg(e.to_string()))?;
    if o.n == 0 || o.steps == 0 {
        return Err(Error::Arg("eval needs n >= 1 and steps >= 1".into()));
    }
    let total = prompts.len() * o.n;
    let (mut results, mut by_lang) = (Vec::new(), [Tally::default(), Tally::default()]);
    let mut overall = Tally::default();
    let mut fill_rule = [Tally::default(), Tally::default(), Tally::default()];
    let mut features = Vec::new();
    for (p, prompt) in prompts.iter().enumerate() {
        let mut tally = Tally::default();
        let mut by_fill = Tally::default();
        let mut done = 0;
        while done < o.n {
            let k = CHUNK.min(o.n - done);
            let so = SampleOptions {
                prompts: vec![prompt.text.clone()],
                negative: None,
                sampler: o.sampler,
                steps: o.steps,
                guidance: o.guidance,
                eta: o.eta,
                n: k,
                // Fresh noise for every prompt and chunk, the same on every run.
                seed: o.seed ^ ((p as u64) << 32 | done as u64),
                init: None,
            };
            let images = to_images(&sample(models, cfg, &so, |_, _| {})?)?;
            judge_images(
                judge,
                prompt,
                &images,
                &mut tally,
                &mut by_fill,
                &mut features,
            )?;
            done += k;
            on_progress(p * o.n + done, total);
        }
        overall.merge(&tally);
        fill_rule[0].merge(&by_fill);
        fill_rule[1 + (prompt.lang == Lang::Zh) as usize].merge(&by_fill);
        by_lang[(prompt.lang == Lang::Zh) as usize].merge(&tally);
        results.push(PromptResult {
            prompt: prompt.text.clone(),
            lang: lang_name(prompt.lang),
            result: tally.summary(),
        });
    }
    let (frechet_distance, classifier) = match judge {
        Judge::Shapes => (None, None),
        Judge::Classifier {
            cached, reference, ..
        } => (
            Some(frechet_distance_of(&features, reference)),
            Some(ClassifierInfo {
                path: cached.path.display().to_string(),
                test_accuracy: cached.test_accuracy,
            }),
        ),
    };
    Ok(EvalReport {
        data: describe(spec),
        prompt_set: o.prompts.name(),
        n_per_prompt: o.n,
        sampler: match o.sampler {
            SamplerKind::Ddim => "ddim",
            SamplerKind::Ddpm => "ddpm",
        },
        steps: o.steps,
        guidance: o.guidance.scale,
        guidance_rescale: o.guidance.rescale,
        guidance_window: [o.guidance.start, o.guidance.stop],
        eta: o.eta,
        seed: o.seed,
        prompts: results,
        overall: overall.summary(),
        english: by_lang[0].summary(),
        chinese: by_lang[1].summary(),
        frechet_note: frechet_distance.map(|_| FRECHET_NOTE),
        frechet_distance,
        classifier,
        fill_rule: matches!(judge, Judge::Shapes).then(|| fill_rule.map(|t| t.summary())),
        run_steps: None,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Terminal columns of `s`: CJK characters and full-width forms take two.
fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| match c as u32 {
            0x1100..=0x115F | 0x2E80..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF => 2,
            0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 => 2,
            _ => 1,
        })
        .sum()
}

fn describe(spec: &DataSpec) -> String {
    match spec {
        DataSpec::Shapes { pairs_permille } if *pairs_permille == DEFAULT_PAIRS_PERMILLE => {
            "shapes".into()
        }
        DataSpec::Shapes { pairs_permille } => {
            format!("shapes:pairs={}", *pairs_permille as f64 / 1000.0)
        }
        DataSpec::Mnist(d) => format!("mnist:{}", d.display()),
        DataSpec::FashionMnist(d) => format!("fashion-mnist:{}", d.display()),
        DataSpec::Folder(d) => format!("folder:{}", d.display()),
    }
}

/// A sampled batch [N, C, H, W] in [-1, 1] as 8-bit pictures: judged as a user would
/// see them in a PNG.
fn to_images(batch: &Tensor) -> Result<Vec<Image>> {
    let &[n, c, h, w] = batch.dims() else {
        return Err(Error::Arg(format!("samples of shape {}", batch.shape())));
    };
    let values = batch.to_vec::<f32>()?;
    values
        .chunks_exact(c * h * w)
        .take(n)
        .map(|v| Image::from_chw(v, c, h, w).map_err(|e| Error::Arg(e.to_string())))
        .collect()
}

fn judge_images(
    judge: &Judge,
    prompt: &EvalPrompt,
    images: &[Image],
    tally: &mut Tally,
    by_fill: &mut Tally,
    features: &mut Vec<Vec<f64>>,
) -> Result<()> {
    match (judge, &prompt.target) {
        (Judge::Shapes, Target::Scene(scene)) => {
            for img in images {
                tally.add(shapes_check::score(img, scene).judged());
                by_fill.add(shapes_check::score_with(img, scene, ShapeRule::FillOnly).judged());
            }
        }
        (Judge::Classifier { cached, .. }, &Target::Label(label)) => {
            let device = cached.classifier.device();
            let px = PADDED * PADDED;
            let mut x = Vec::with_capacity(images.len() * px);
            for img in images {
                if (img.width, img.height, img.channels) != (PADDED, PADDED, 1) {
                    return Err(Error::Arg(format!(
                        "the classifier judges gray {PADDED}x{PADDED} pictures; the model made {}x{}x{}",
                        img.width, img.height, img.channels
                    )));
                }
                x.extend(img.data.iter().map(|&v| v as f32 / 127.5 - 1.0));
            }
            let x = Tensor::from_vec(x, [images.len(), 1, PADDED, PADDED], &device)?;
            let (pred, feats) = cached.classifier.predict(&x)?;
            for p in pred {
                tally.add([("class", p == label as usize)]);
            }
            features.extend(feats);
        }
        _ => {
            return Err(Error::Arg(
                "this judge does not fit the run's data set (shapes needs the shapes reader, \
                 mnist / fashion-mnist a classifier)"
                    .into(),
            ))
        }
    }
    Ok(())
}

impl EvalReport {
    /// The report as a text table: one row per prompt, then English, Chinese, overall.
    pub fn to_table(&self) -> String {
        // Attributes in the reader's order (count, color, shape, ...), not alphabetical.
        let rank = |n: &String| {
            shapes_check::ATTRIBUTES
                .iter()
                .position(|a| a == n)
                .unwrap_or(usize::MAX)
        };
        let mut names: Vec<String> = self.overall.attributes.keys().cloned().collect();
        names.sort_by_key(rank);
        let mut guidance = format!("guidance {}", self.guidance);
        if self.guidance_rescale != 0.0 {
            guidance += &format!(" (rescale {})", self.guidance_rescale);
        }
        if self.guidance_window != [0.0, 1.0] {
            let [lo, hi] = self.guidance_window;
            guidance += &format!(" from {lo} to {hi} of the steps");
        }
        let mut s = format!(
            "eval of {} ({} prompts): {} pictures per prompt, {} {} steps, {guidance}, eta {}, seed {}\n",
            self.data,
            self.prompt_set,
            self.n_per_prompt,
            self.sampler,
            self.steps,
            self.eta,
            self.seed
        );
        let width = self
            .prompts
            .iter()
            .map(|p| display_width(&p.prompt))
            .max()
            .unwrap_or(6)
            .max(8);
        let head: Vec<String> = names.iter().map(|n| format!("{n:>8}")).collect();
        s += &format!(
            "{:<width$}  {:>5}  {:>8}  {}\n",
            "prompt",
            "n",
            "all",
            head.join("  ")
        );
        let row = |label: &str, a: &Accuracy| {
            let cells: Vec<String> = names
                .iter()
                .map(|n| match a.attributes.get(n) {
                    Some(v) => format!("{:>7.1}%", 100.0 * v),
                    None => format!("{:>8}", "-"),
                })
                .collect();
            let pad = width - display_width(label).min(width);
            format!(
                "{label}{}  {:>5}  {:>7.1}%  {}\n",
                " ".repeat(pad),
                a.n,
                100.0 * a.accuracy,
                cells.join("  ")
            )
        };
        for p in &self.prompts {
            s += &row(&p.prompt, &p.result);
        }
        s += &row("English", &self.english);
        s += &row("Chinese", &self.chinese);
        s += &row("overall", &self.overall);
        if let Some([all, en, zh]) = &self.fill_rule {
            s += &format!(
                "all attributes with the fill-only shape rule (the reader until 2026-12-02): \
                 {:.1}% (English {:.1}%, Chinese {:.1}%; shape {:.1}%)\n",
                100.0 * all.accuracy,
                100.0 * en.accuracy,
                100.0 * zh.accuracy,
                100.0 * all.attributes.get("shape").copied().unwrap_or(0.0)
            );
        }
        if let Some(c) = &self.classifier {
            s += &format!(
                "classifier: {} (test accuracy {:.2}%)\n",
                c.path,
                100.0 * c.test_accuracy
            );
        }
        if let (Some(fd), Some(note)) = (self.frechet_distance, self.frechet_note) {
            s += &format!("Frechet distance {fd:.3} ({note})\n");
        }
        if let Some([done, of]) = self.run_steps {
            s += &format!("the run's checkpoint: step {done} of {of}");
            s += if done < of {
                " (still training, or stopped early: not the finished run's figures)\n"
            } else {
                "\n"
            };
        }
        s += &format!("took {:.1} s\n", self.elapsed_s);
        s
    }
}
