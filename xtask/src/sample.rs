//! `cargo xtask sample`: loads a run's EMA weights, samples a grid (one row per prompt)
//! with a progress bar, and writes it as PNG; with `--init-image` it edits a picture
//! (img2img with `--strength`, inpainting with `--mask`).

use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use kuosan_diffusion::run::RunDir;
use kuosan_diffusion::sample::{sample, InitImage, SampleOptions, SamplerKind};
use kuosan_tensor::Device;
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
enum Sampler {
    Ddim,
    Ddpm,
}

#[derive(Args)]
pub struct SampleArgs {
    /// The run folder that `train` wrote.
    #[arg(long)]
    run: PathBuf,
    /// A prompt (repeat for more rows).
    #[arg(long = "prompt", required = true)]
    prompts: Vec<String>,
    /// What the guidance steers away from (default: the empty prompt).
    #[arg(long)]
    negative_prompt: Option<String>,
    #[arg(long, value_enum, default_value = "ddim")]
    sampler: Sampler,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[command(flatten)]
    guidance: crate::guidance::GuidanceArgs,
    /// DDIM's eta: 0 deterministic, 1 as noisy as DDPM. The default is 1: fresh noise
    /// at each step washes out the residual error of small, briefly trained models,
    /// which deterministic DDIM leaves in the image as speckle (README: sampling).
    #[arg(long, default_value_t = 1.0)]
    eta: f64,
    /// Images per prompt.
    #[arg(long, default_value_t = 8)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, default_value = "grid.png")]
    out: PathBuf,
    /// Start from this PNG (the model's size) instead of pure noise: img2img (SDEdit).
    #[arg(long)]
    init_image: Option<PathBuf>,
    /// With --init-image: the fraction of the steps to run, from the picture noised that
    /// far (0 < S <= 1; small keeps the picture, 1 redraws it).
    #[arg(long)]
    strength: Option<f64>,
    /// With --init-image: a PNG mask of the same size, white where the prompt paints and
    /// black where the picture is kept (inpainting; strength defaults to 1).
    #[arg(long)]
    mask: Option<PathBuf>,
}

/// The picture and mask of an edit, read and checked against the model.
fn init_image(a: &SampleArgs, channels: usize, size: usize) -> Result<Option<InitImage>, String> {
    match &a.init_image {
        None if a.mask.is_some() || a.strength.is_some() => {
            Err("--mask and --strength edit a picture: give it with --init-image".into())
        }
        None => Ok(None),
        Some(path) => InitImage::from_files(path, a.mask.as_deref(), a.strength, channels, size)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

pub fn run(a: SampleArgs) -> Result<(), String> {
    let device = Device::from_name(&a.device).map_err(|e| e.to_string())?;
    let run = RunDir::new(&a.run);
    let (cfg, models) = run.load_models(&device).map_err(|e| e.to_string())?;
    let cap = models.tokenizer.capacity();
    for p in a.prompts.iter().chain(a.negative_prompt.iter()) {
        if p.trim().is_empty() {
            return Err("a prompt is empty: give some text (the empty prompt is what guidance steers away from)".into());
        }
        if p.len() > cap {
            return Err(format!("the prompt {p:?} is {} bytes; this model reads at most {cap} (UTF-8 bytes: a Chinese character is 3)", p.len()));
        }
    }
    if a.n == 0 || a.steps == 0 {
        return Err("--n and --steps must be at least 1".into());
    }
    let init = init_image(&a, cfg.image_channels(), cfg.unet.sample_size)?;
    let opts = SampleOptions {
        prompts: a.prompts.clone(),
        negative: a.negative_prompt.clone(),
        sampler: match a.sampler {
            Sampler::Ddim => SamplerKind::Ddim,
            Sampler::Ddpm => SamplerKind::Ddpm,
        },
        steps: a.steps,
        guidance: a.guidance.to_guidance()?,
        eta: a.eta,
        n: a.n,
        seed: a.seed,
        init,
    };
    let bar = ProgressBar::new(a.steps as u64);
    let images = sample(&models, &cfg, &opts, |i, total| {
        bar.set_length(total as u64);
        bar.set_position(i as u64);
    })
    .map_err(|e| e.to_string())?;
    bar.finish();
    kuosan_diffusion::image::save_grid(&a.out, &images, a.prompts.len())
        .map_err(|e| e.to_string())?;
    println!(
        "wrote {} ({} prompts x {} images)",
        a.out.display(),
        a.prompts.len(),
        a.n
    );
    Ok(())
}
