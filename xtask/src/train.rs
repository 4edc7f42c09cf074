//! `cargo xtask train`: parses the options, opens the data, and runs the trainer with a
//! progress bar.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kuosan_diffusion::config::ModelConfig;
use kuosan_diffusion::data::{DataOptions, DataSpec};
use kuosan_diffusion::eval::{EvalOptions, Judge};
use kuosan_diffusion::train::{train, PeriodicEval, Phase, TrainOptions};
use kuosan_tensor::Device;
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    /// shapes (built in), mnist:DIR, fashion-mnist:DIR or folder:DIR.
    #[arg(long, default_value = "shapes")]
    data: String,
    /// tiny, small, base, or a JSON config file.
    #[arg(long, default_value = "small")]
    config: String,
    /// Optimizer steps (default: the config's).
    #[arg(long)]
    steps: Option<u64>,
    /// Batch size (default: the config's).
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate (default: the config's).
    #[arg(long)]
    lr: Option<f64>,
    /// auto (a hardware GPU if there is one), cpu or gpu.
    #[arg(long, default_value = "auto")]
    device: String,
    /// The run folder.
    #[arg(long, default_value = "runs/shapes-small")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint, exactly.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Steps between sample grids (0: none).
    #[arg(long, default_value_t = 500)]
    sample_every: u64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Steps between evaluations of the EMA weights, logged in metrics.jsonl and drawn
    /// in eval.png (0: none; shapes, mnist and fashion-mnist only).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Pictures per prompt in each periodic eval.
    #[arg(long, default_value_t = 8)]
    eval_n: usize,
}

/// Fixed prompts of the grids: English and Chinese for the data set's captions.
fn grid_prompts(data: &DataSpec) -> Vec<String> {
    let p: &[&str] = match data {
        // In the captions' own forms (size and place always named for one object).
        DataSpec::Shapes { .. } => &[
            "a large red circle in the centre",
            "a small blue square on the left",
            "左边是一个大的黄色圆形",
            "a green triangle left of a white circle",
            "红色正方形在蓝色圆形的上边",
        ],
        DataSpec::Mnist(_) => &["the digit 3", "a handwritten seven", "数字零", "手写的八"],
        DataSpec::FashionMnist(_) => &[
            "an ankle boot",
            "a pair of trousers",
            "一件套头衫",
            "一个包",
        ],
        DataSpec::Folder(_) => &["a photo", "一张照片"],
    };
    p.iter().map(|s| s.to_string()).collect()
}

pub fn run(a: TrainArgs) -> Result<(), String> {
    let spec = DataSpec::parse(&a.data).map_err(|e| e.to_string())?;
    let dataset = spec
        .open(&DataOptions::default())
        .map_err(|e| e.to_string())?;
    let mut config = match a.config.as_str() {
        "tiny" | "small" | "base" => {
            ModelConfig::preset(&a.config, dataset.channels(), dataset.size())?
        }
        file => ModelConfig::load(std::path::Path::new(file))?,
    };
    if let Some(s) = a.steps {
        config.train.steps = s;
    }
    if let Some(b) = a.batch {
        config.train.batch = b;
    }
    if let Some(lr) = a.lr {
        config.train.lr = lr;
    }
    if config.train.steps == 0 || config.train.batch == 0 {
        return Err("--steps and --batch must be at least 1".into());
    }
    let device = Device::from_name(&a.device).map_err(|e| e.to_string())?;
    eprintln!(
        "training {} on {} ({} examples) on {device}, {} steps of {}",
        a.config,
        dataset.describe(),
        dataset.len(),
        config.train.steps,
        config.train.batch
    );
    let eval = if a.eval_every > 0 {
        let judge =
            Judge::for_data(&spec, &device, |l| eprintln!("{l}")).map_err(|e| e.to_string())?;
        let options = EvalOptions {
            n: a.eval_n.max(1),
            ..EvalOptions::default()
        };
        Some(PeriodicEval {
            every: a.eval_every,
            judge,
            options,
        })
    } else {
        None
    };
    let opts = TrainOptions {
        data_spec: a.data.clone(),
        dataset,
        config,
        device,
        out: a.out.clone(),
        resume: a.resume,
        seed: a.seed,
        sample_every: a.sample_every,
        checkpoint_every: a.checkpoint_every.max(1),
        log_every: 10,
        sample_prompts: grid_prompts(&spec),
        stop_after: None,
        eval,
    };
    let bar = ProgressBar::new(opts.config.train.steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} loss {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("a valid template"),
    );
    let pre = opts.config.train.text_pretrain.steps;
    let text_bar = (pre > 0 && !opts.resume).then(|| {
        let b = ProgressBar::new(pre);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} text pretraining, loss {msg} [{elapsed_precise}]",
            )
            .expect("a valid template"),
        );
        b
    });
    let report = train(&opts, |p| match p.phase {
        Phase::TextPretrain => {
            if let Some(b) = &text_bar {
                b.set_position(p.step);
                b.set_message(format!("{:.4}", p.loss));
                if p.step == p.steps {
                    b.finish();
                }
            }
        }
        Phase::Diffusion => {
            bar.set_position(p.step);
            bar.set_message(format!(
                "{:.4} lr {:.1e} {:.1} img/s",
                p.loss, p.lr, p.img_per_s
            ));
        }
    })
    .map_err(|e| e.to_string())?;
    bar.finish();
    println!(
        "trained to step {} in {:.0} s (last loss {:.4})",
        report.final_step, report.elapsed_s, report.last_loss
    );
    if let Some(g) = report.last_grid {
        println!("samples: {}", g.display());
    }
    println!("curves: {}", a.out.join("loss.png").display());
    println!(
        "run folder: {} (sample with: cargo xtask sample --run {} --prompt \"...\")",
        a.out.display(),
        a.out.display()
    );
    Ok(())
}
