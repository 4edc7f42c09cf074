//! `cargo xtask eval`: samples every evaluation prompt of a run's data set and prints
//! how many pictures show what was asked (and a Frechet distance for MNIST /
//! Fashion-MNIST), optionally as JSON.

use clap::Args;
use indicatif::ProgressBar;
use kuosan_diffusion::data::DataSpec;
use kuosan_diffusion::eval::{evaluate, EvalOptions, Judge, PromptSet};
use kuosan_diffusion::run::RunDir;
use kuosan_diffusion::sample::SamplerKind;
use kuosan_tensor::Device;
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// The run folder that `train` wrote.
    #[arg(long)]
    run: PathBuf,
    /// Pictures per prompt.
    #[arg(long, default_value_t = 64)]
    n: usize,
    #[command(flatten)]
    guidance: crate::guidance::GuidanceArgs,
    /// DDIM steps (25 by default: half `sample`'s 50, for about the same scores).
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// DDIM's eta.
    #[arg(long, default_value_t = 1.0)]
    eta: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The data set whose prompts to judge (default: the one the run was trained on;
    /// give it when the data has moved).
    #[arg(long)]
    data: Option<String>,
    /// The prompts: standard (the data set's own), or for shapes runs pairs (thirty
    /// two-object scenes in five orders of two shapes, for how shapes bind to objects).
    #[arg(long, default_value = "standard")]
    prompts: String,
    #[arg(long, default_value = "auto")]
    device: String,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: EvalArgs) -> Result<(), String> {
    let device = Device::from_name(&a.device).map_err(|e| e.to_string())?;
    let run = RunDir::new(&a.run);
    let state = run.state();
    let data = match (a.data, &state) {
        (Some(d), _) => d,
        (None, Ok(s)) => s.data.clone(),
        (None, Err(e)) => return Err(e.to_string()),
    };
    let spec = DataSpec::parse(&data).map_err(|e| e.to_string())?;
    let prompts = PromptSet::parse(&a.prompts).map_err(|e| e.to_string())?;
    let (cfg, models) = run.load_models(&device).map_err(|e| e.to_string())?;
    let judge =
        Judge::for_data(&spec, &device, |line| eprintln!("{line}")).map_err(|e| e.to_string())?;
    let opts = EvalOptions {
        n: a.n,
        guidance: a.guidance.to_guidance()?,
        steps: a.steps,
        eta: a.eta,
        sampler: SamplerKind::Ddim,
        seed: a.seed,
        prompts,
    };
    // A run still training has exported its latest checkpoint: say which one is judged.
    let steps = state.ok().map(|s| [s.step, cfg.train.steps]);
    if let Some([done, of]) = steps.filter(|[done, of]| done < of) {
        eprintln!(
            "note: {} is at step {done} of {of}: judging that checkpoint",
            a.run.display()
        );
    }
    let bar = ProgressBar::new(0);
    let mut report = evaluate(&models, &cfg, &spec, &judge, &opts, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    report.run_steps = steps;
    print!("{}", report.to_table());
    crate::write_json(a.json, &report)
}
