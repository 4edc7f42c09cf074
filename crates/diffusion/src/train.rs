//! The trainer (DDPM, Ho et al. 2020, Algorithm 1, with classifier-free guidance's prompt
//! dropout, Ho & Salimans 2022): batches of (image, caption) -> text context; q_sample
//! with a random step per image; U-Net; MSE to the noise (or v) -> backward -> clip ->
//! AdamW -> EMA. Every K steps: an atomic checkpoint, a grid of fixed prompts from fixed
//! noise, a metrics line and the loss curve. Everything random comes from one Philox
//! stream and a seeded data order, so a resumed run continues bit for bit (on the CPU).

use crate::config::ModelConfig;
use crate::data::{DataPos, DataSpec, Dataset, Loader};
use crate::eval::{evaluate, EvalOptions, Judge};
use crate::guidance::Guidance;
use crate::models::Models;
use crate::run::{RunDir, TrainState};
use crate::sample::{sample, SampleOptions, SamplerKind};
use crate::text_pretrain::pretrain_text;
use crate::{diffusion_loss_weighted, q_sample, LossConfig, NoiseSchedule};
use kuosan_nn::{clip_grad_norm, AdamW, AdamWConfig, Ema, Error, LrSchedule, Result};
use kuosan_tensor::{no_grad, Device, Philox, Tensor};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// What `train` needs beyond the model config.
pub struct TrainOptions {
    pub data_spec: String,
    pub dataset: Arc<dyn Dataset>,
    pub config: ModelConfig,
    pub device: Device,
    pub out: PathBuf,
    pub resume: bool,
    pub seed: u64,
    /// Steps between sample grids (0: none).
    pub sample_every: u64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    /// Prompts of the sample grids (one row each).
    pub sample_prompts: Vec<String>,
    /// Stop (with a checkpoint) after this step although the schedule runs to
    /// `config.train.steps`: an interrupted run, which `resume` continues exactly.
    pub stop_after: Option<u64>,
    /// Evaluate the EMA weights every so many steps (None: never).
    pub eval: Option<PeriodicEval>,
}

/// An eval of the EMA weights every `every` steps (and after the last), logged in
/// metrics.jsonl as `{"step", "eval": {...}}` and drawn in eval.png.
pub struct PeriodicEval {
    pub every: u64,
    /// The training data's judge (`Judge::for_data`).
    pub judge: Judge,
    pub options: EvalOptions,
}

/// Which part of training a step belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Caption pretraining of the text encoder (`text_pretrain`), before step 1.
    TextPretrain,
    Diffusion,
}

/// One step's report to the caller (for a progress bar).
pub struct Progress {
    pub phase: Phase,
    pub step: u64,
    pub steps: u64,
    pub loss: f64,
    pub lr: f64,
    pub img_per_s: f64,
}

/// What a finished (or stopped) run leaves.
pub struct TrainReport {
    pub final_step: u64,
    pub last_loss: f64,
    pub elapsed_s: f64,
    pub last_grid: Option<PathBuf>,
}

/// Trains (or resumes) the run in `opts.out`, calling `on_step` after every step.
pub fn train(opts: &TrainOptions, mut on_step: impl FnMut(&Progress)) -> Result<TrainReport> {
    let cfg = &opts.config;
    let t = &cfg.train;
    let run = RunDir::new(&opts.out);
    let ds = opts.dataset.as_ref();
    if ds.is_empty() {
        return Err(Error::Arg(format!("dataset {} is empty", opts.data_spec)));
    }
    if (ds.channels(), ds.size()) != (cfg.image_channels(), cfg.unet.sample_size) {
        return Err(Error::Arg(format!(
            "the dataset gives {}-channel {}x{} images but the model takes {}-channel {}x{}",
            ds.channels(),
            ds.size(),
            ds.size(),
            cfg.image_channels(),
            cfg.unet.sample_size,
            cfg.unet.sample_size
        )));
    }
    let schedule =
        NoiseSchedule::new(cfg.beta_schedule, cfg.num_train_timesteps).map_err(Error::Tensor)?;
    let models = Models::new(cfg, &opts.device, opts.seed)?;
    let ema_models = Models::new(cfg, &opts.device, opts.seed)?;
    // Caption pretraining of a fresh run's text encoder, before the EMA copies it. A
    // resumed run's checkpoint holds its result.
    let pretrained = if !opts.resume && t.text_pretrain.steps > 0 {
        Some(pretrain_text(
            &models,
            opts.dataset.clone(),
            &t.text_pretrain,
            opts.seed,
            |step, steps, loss| {
                on_step(&Progress {
                    phase: Phase::TextPretrain,
                    step,
                    steps,
                    loss,
                    lr: 0.0,
                    img_per_s: 0.0,
                })
            },
        )?)
    } else {
        None
    };
    let params = models.params();
    let mut opt = AdamW::new(
        params.clone(),
        AdamWConfig {
            weight_decay: t.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    opt.set_lr_scale("text_encoder.", t.text_lr_scale);
    let mut ema = Ema::with_shadow(ema_models.params(), &params, t.ema_decay)?;
    let mut state = TrainState {
        step: 0,
        seed: opts.seed,
        rng_offset: 0,
        data_epoch: 0,
        data_index: 0,
        data: opts.data_spec.clone(),
        elapsed_s: 0.0,
    };
    if opts.resume {
        let saved = run.config()?;
        if saved != *cfg {
            return Err(Error::Arg(format!(
                "{} was trained with another config; resume it with the same --config",
                run.root.display()
            )));
        }
        let (s, raw, ema_t, optim) = run.load_checkpoint(&opts.device)?;
        if s.data != opts.data_spec || s.seed != opts.seed {
            return Err(Error::Arg(format!(
                "the checkpoint was trained on {:?} with seed {}; resume with the same --data and --seed",
                s.data, s.seed
            )));
        }
        models.load_params(&raw)?;
        ema_models.load_params(&ema_t)?;
        opt.load_state(&optim, s.step)?;
        state = s;
    } else {
        run.export(cfg, &ema_models)?;
        let _ = std::fs::remove_file(run.metrics());
        if let Some(p) = &pretrained {
            // Its time counts as training time.
            state.elapsed_s = p.elapsed_s;
            let line = serde_json::json!({"step": 0, "text_pretrain": {
                "steps": t.text_pretrain.steps, "first_loss": p.first_loss,
                "last_loss": p.last_loss, "elapsed_s": p.elapsed_s}});
            append_line(&run.metrics(), &line.to_string())?;
        }
    }
    let data_err = |e: crate::data::DataError| Error::Arg(e.to_string());
    let mut loader = Loader::new(opts.dataset.clone(), opts.seed, t.batch).map_err(data_err)?;
    let eval_spec = DataSpec::parse(&opts.data_spec).map_err(data_err)?;
    loader
        .seek(DataPos {
            epoch: state.data_epoch,
            offset: state.data_index,
        })
        .map_err(data_err)?;
    let rule = StepRule {
        schedule,
        loss: LossConfig {
            prediction: cfg.prediction,
            min_snr_gamma: t.min_snr_gamma,
            snr_floor: t.snr_floor,
            edge_weight: t.edge_weight,
        },
        grad_clip: t.grad_clip,
        train_text: t.text_lr_scale > 0.0,
    };
    let lr_at = LrSchedule {
        base: t.lr,
        warmup: t.warmup,
        total: t.steps,
        min_ratio: 0.1,
    };
    let mut rng = Philox {
        seed: opts.seed,
        offset: state.rng_offset,
    };
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut last_grid = None;
    let mut last_loss = f64::NAN;
    let mut window = (Instant::now(), 0usize);
    let stop = opts.stop_after.unwrap_or(t.steps).min(t.steps);
    while state.step < stop {
        let step = state.step + 1;
        let batch = loader.next_batch(&opts.device).map_err(data_err)?;
        let (x0, mut captions) = (batch.images, batch.captions);
        let pos = loader.position();
        (state.data_epoch, state.data_index) = (pos.epoch, pos.offset);
        // Classifier-free guidance: train on the empty prompt cond_drop of the time.
        let drops = rng.uniform_f32(t.batch);
        for (c, u) in captions.iter_mut().zip(drops) {
            if (u as f64) < t.cond_drop {
                c.clear();
            }
        }
        // Each picture's step, from the bias where its scope covers the picture. The
        // low-discrepancy draws take the same numbers from the generator (one used), so
        // the noise that follows is the same either way.
        let mut draws = rng.uniform_f32(t.batch);
        if t.timestep_low_discrepancy {
            draws = crate::timesteps::low_discrepancy(draws[0], t.batch);
        }
        let steps_t: Vec<usize> = draws
            .iter()
            .zip(captions.iter().zip(&batch.objects))
            .map(|(&u, (c, &objects))| {
                t.timestep_bias
                    .sample_for(u, cfg.num_train_timesteps, objects, !c.is_empty())
            })
            .collect();
        let noise = Tensor::randn(x0.dims(), x0.dtype(), &opts.device, &mut rng)?;
        let noisy = NoisyBatch {
            x0,
            captions,
            t: steps_t,
            noise,
        };
        let lr = lr_at.at(step);
        let both =
            train_step(&models, &mut opt, &mut ema, &rule, &noisy, lr, step)?.to_vec::<f32>()?;
        let (l, g) = (both[0] as f64, both[1] as f64);
        if !l.is_finite() {
            let last = run
                .find_checkpoint()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| "none yet".into());
            return Err(Error::Arg(format!("the loss became {l} at step {step}; stopped (last good checkpoint: {last}); lower --lr")));
        }
        state.step = step;
        state.rng_offset = rng.offset;
        last_loss = l;
        window.1 += t.batch;
        let img_per_s = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
        on_step(&Progress {
            phase: Phase::Diffusion,
            step,
            steps: t.steps,
            loss: l,
            lr,
            img_per_s,
        });
        state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
        if step.is_multiple_of(opts.log_every) || step == t.steps {
            let line = serde_json::json!({"step": step, "loss": l, "lr": lr, "grad_norm": g, "img_per_s": img_per_s, "elapsed_s": state.elapsed_s});
            append_line(&run.metrics(), &line.to_string())?;
            window = (Instant::now(), 0);
        }
        let last = step == stop;
        if step.is_multiple_of(opts.checkpoint_every) || last {
            run.export(cfg, &ema_models)?;
            run.save_checkpoint(&state, &models.params(), &ema_models.params(), &opt.state())?;
            // A checkpoint can come before the first logged step: no curve to draw yet.
            if run.metrics().exists() {
                crate::plot::plot_run(&run.root)?;
            }
        }
        if let Some(pe) = &opts.eval {
            if pe.every > 0 && (step.is_multiple_of(pe.every) || last) {
                let r = evaluate(
                    &ema_models,
                    cfg,
                    &eval_spec,
                    &pe.judge,
                    &pe.options,
                    |_, _| {},
                )?;
                let line = serde_json::json!({"step": step, "eval": {
                    "accuracy": r.overall.accuracy, "attributes": r.overall.attributes,
                    "english": r.english.accuracy, "chinese": r.chinese.accuracy,
                    "frechet_distance": r.frechet_distance, "n": r.overall.n,
                    "elapsed_s": r.elapsed_s}});
                append_line(&run.metrics(), &line.to_string())?;
                crate::plot::plot_run(&run.root)?;
            }
        }
        if opts.sample_every > 0 && (step.is_multiple_of(opts.sample_every) || last) {
            let dir = run.samples_dir();
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::file(&dir, format!("cannot create: {e}")))?;
            let grid = dir.join(format!("step_{step:06}.png"));
            // Fixed prompts from fixed noise, so grids of successive steps compare.
            let so = SampleOptions {
                prompts: opts.sample_prompts.clone(),
                negative: None,
                // DDIM with eta = 1 (ancestral): as `sample`'s default, see there.
                sampler: SamplerKind::Ddim,
                steps: 50,
                guidance: Guidance::scale(3.0),
                eta: 1.0,
                n: 4,
                seed: 0,
                init: None,
            };
            let images = sample(&ema_models, cfg, &so, |_, _| {})?;
            crate::image::save_grid(&grid, &images, so.prompts.len())
                .map_err(|e| Error::Arg(e.to_string()))?;
            last_grid = Some(grid);
        }
    }
    Ok(TrainReport {
        final_step: state.step,
        last_loss,
        elapsed_s: state.elapsed_s,
        last_grid,
    })
}

/// How every update of a run is made: the noise schedule, the loss and the gradient-norm
/// clip.
pub struct StepRule {
    pub schedule: NoiseSchedule,
    pub loss: LossConfig,
    pub grad_clip: f64,
    /// Whether the text encoder learns. A frozen one (`text_lr_scale` 0, as Stable
    /// Diffusion keeps CLIP's) runs without autograd: no gradients, no backward through
    /// it, and its parameters out of the gradient norm.
    pub train_text: bool,
}

/// One training batch and its noise: clean pictures x0 [B, C, H, W], captions (empty
/// ones dropped for guidance), a timestep per picture and the noise [B, C, H, W].
pub struct NoisyBatch {
    pub x0: Tensor,
    pub captions: Vec<String>,
    pub t: Vec<usize>,
    pub noise: Tensor,
}

/// One update, Algorithm 1's body: encode the captions, q_sample, predict, loss,
/// backward, clip, AdamW at `lr`, EMA. Returns [loss, grad norm] as one tensor [2], so
/// the caller reads both back at once. `train` loops over it; `bench train` times it.
pub fn train_step(
    models: &Models,
    opt: &mut AdamW,
    ema: &mut Ema,
    rule: &StepRule,
    batch: &NoisyBatch,
    lr: f64,
    step: u64,
) -> Result<Tensor> {
    let x_t = q_sample(&batch.x0, &batch.t, &batch.noise, &rule.schedule)?;
    // Before the forward: on a GPU the edge weights read x0 back to the host.
    let pixel_weights = rule.loss.pixel_weights(&batch.x0)?;
    let ctx = if rule.train_text {
        models.encode(&batch.captions)?
    } else {
        let _frozen = no_grad();
        models.encode(&batch.captions)?
    };
    let tf: Vec<f64> = batch.t.iter().map(|&s| s as f64).collect();
    let out = models.predict(&x_t, &tf, &ctx)?;
    let loss = diffusion_loss_weighted(
        &out,
        &batch.x0,
        &batch.noise,
        &batch.t,
        &rule.schedule,
        &rule.loss,
        pixel_weights.as_ref(),
    )?;
    loss.backward()?;
    let gnorm = clip_grad_norm(opt.params(), rule.grad_clip)?;
    opt.step(lr)?;
    ema.update(opt.params(), step)?;
    Ok(Tensor::cat(
        &[&loss.reshape([1])?, &gnorm.reshape([1])?],
        0,
    )?)
}

fn append_line(path: &std::path::Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::file(path, format!("cannot append: {e}")))?;
    writeln!(f, "{line}").map_err(|e| Error::file(path, format!("cannot append: {e}")))
}
