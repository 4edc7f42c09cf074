//! `cargo xtask`: kuosan's command line. Thin: parses arguments and calls the crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use kuosan_benches::{cpu, model};

mod eval;
mod guidance;
mod malloc;
mod sample;
mod train;

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "kuosan: train a text-to-image diffusion model, sample from it, measure it, benchmark kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a text-to-image model (default: the small config on the built-in shapes).
    Train(train::TrainArgs),
    /// Sample a grid of images from a trained run, one row per prompt.
    Sample(sample::SampleArgs),
    /// Measure a trained run: sample its data set's eval prompts and judge the pictures.
    Eval(eval::EvalArgs),
    /// Draw a run's loss (and eval) curves from its metrics.jsonl to PNG.
    Plot {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
    },
    /// Run microbenchmarks and print a table.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// Internal: our side of `bench train` / `bench sample`, in a child process (JSON on stdout).
    #[command(name = model::MODEL_CHILD_COMMAND, hide = true)]
    BenchModelChild {
        #[arg(long)]
        config: String,
        #[arg(long)]
        batch: usize,
        #[arg(long)]
        device: String,
        #[arg(long)]
        steps: usize,
        #[arg(long)]
        train: bool,
    },
    /// Internal: one thread count of `bench cpu`, run in a child process (JSON on stdout).
    #[command(name = cpu::CHILD_COMMAND, hide = true)]
    BenchCpuChild {
        #[arg(long)]
        threads: usize,
        #[command(flatten)]
        common: CpuArgs,
    },
}

#[derive(Subcommand)]
enum BenchTarget {
    /// WGSL kernels on the GPU adapter wgpu finds (GFLOP/s, GB/s; tiled vs naive matmul).
    Gpu {
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        #[command(flatten)]
        common: CpuArgs,
    },
    /// A training step and a sampling step of the whole model, beside PyTorch + diffusers
    /// on the same config (img/s, peak RSS, ratios).
    Train(ModelArgs),
    /// A sampling step (one U-Net forward without autograd) beside PyTorch's.
    Sample(ModelArgs),
    /// Print saved `--json` results (of bench cpu, train or sample) as Markdown tables,
    /// as the README shows them.
    Table {
        /// JSON files written by `bench ... --json`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// CPU kernels (sgemm, conv2d, memory-bound) vs peers: matrixmultiply and a copy
    /// in-process, OpenBLAS (numpy) and PyTorch in a Python script; with the FMA peak.
    Cpu {
        /// Python with numpy (and torch) for the out-of-process peers.
        #[arg(long, default_value = "python3")]
        python: std::path::PathBuf,
        /// Only the in-process peers.
        #[arg(long)]
        no_peer: bool,
        /// Thread counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        #[command(flatten)]
        common: CpuArgs,
    },
}

/// `bench train` / `bench sample`: the whole model beside PyTorch on the same config.
#[derive(Args)]
struct ModelArgs {
    /// Model config: tiny, small, base or a kuosan config file.
    #[arg(long, default_value = "small")]
    config: String,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Our side's device: auto, cpu or gpu (the peer runs on the CPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Rounds of ours then the peer; medians over rounds are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Timed steps per round and side, after a warm-up step.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Threads on both sides (rayon's pool; torch.set_num_threads).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The peer script (PyTorch + diffusers).
    #[arg(long, default_value = model::DEFAULT_PEER)]
    peer: PathBuf,
    /// The Python that runs it (needs torch, diffusers, transformers).
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Run ours alone.
    #[arg(long)]
    no_peer: bool,
    /// Where the config.json files both sides build from go.
    #[arg(long, default_value = "target/bench-model")]
    out: PathBuf,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl ModelArgs {
    fn options(self, train: bool) -> (model::Options, Option<PathBuf>) {
        let peer = (!self.no_peer).then_some(model::Peer {
            python: self.python,
            script: self.peer,
        });
        let opts = model::Options {
            config: self.config,
            batch: self.batch,
            device: self.device,
            train,
            rounds: self.rounds,
            steps: self.steps,
            threads: self.threads,
            out: self.out,
            peer,
        };
        (opts, self.json)
    }
}

#[derive(Args)]
struct CpuArgs {
    /// Timed repetitions per case after warm-up (the median is reported).
    #[arg(long, default_value_t = 7)]
    reps: usize,
    /// Skip the largest sizes.
    #[arg(long)]
    quick: bool,
    /// Sections of `bench cpu` to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sgemm,conv,memory")]
    sections: Vec<String>,
}

fn main() -> ExitCode {
    malloc::keep_freed_memory();
    quiet_mesa_device_select();
    let cli = Cli::parse();
    // The command runs on one of rayon's workers, so each parallel kernel it calls is
    // split by a worker's join, not handed across from an outside thread that then
    // sleeps until the pool is done: at batch 16 a training step makes hundreds of such
    // calls, and the wake-ups cost ~10% of the step. (RAYON_NUM_THREADS still sets the
    // size.)
    let result = match rayon::ThreadPoolBuilder::new().build() {
        Ok(pool) => pool.install(|| run(cli)),
        Err(e) => Err(format!("cannot start the thread pool: {e}")),
    };
    if kuosan_tensor::profile::enabled() {
        // KUOSAN_PROFILE_TOP=N shows N (op, shape) rows instead of 40.
        let top = std::env::var("KUOSAN_PROFILE_TOP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40);
        eprint!("{}", kuosan_tensor::profile::report(top));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Mesa's implicit Vulkan device-select layer asks the Wayland compositor which GPU
/// drives the display, and without one (no XDG_RUNTIME_DIR: servers, containers, CI)
/// prints "error: XDG_RUNTIME_DIR is invalid" twice while `--device auto` looks for a
/// GPU. There is no display to pick for, so the layer is switched off (users who set
/// NODEVICE_SELECT themselves keep their value). Runs first, before any thread exists.
fn quiet_mesa_device_select() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none()
        && std::env::var_os("NODEVICE_SELECT").is_none()
    {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

fn write_json<T: serde::Serialize + ?Sized>(
    json: Option<PathBuf>,
    report: &T,
) -> Result<(), String> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn bench_model(a: ModelArgs, train: bool) -> Result<(), String> {
    let (opts, json) = a.options(train);
    let report = model::run(&opts)?;
    print!("{}", report.to_table());
    write_json(json, &report)
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Cmd::Train(a) => train::run(a),
        Cmd::Sample(a) => sample::run(a),
        Cmd::Eval(a) => eval::run(a),
        Cmd::Plot { run } => {
            for p in kuosan_diffusion::plot::plot_run(&run).map_err(|e| e.to_string())? {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        Cmd::Bench {
            target: BenchTarget::Gpu { json, common },
        } => {
            if common.reps < 1 {
                return Err("--reps must be at least 1".into());
            }
            let report = kuosan_benches::gpu::run(common.reps, common.quick)?;
            print!("{}", report.to_table());
            write_json(json, &report)
        }
        Cmd::Bench {
            target:
                BenchTarget::Cpu {
                    python,
                    no_peer,
                    threads,
                    json,
                    common,
                },
        } => {
            if common.reps < 1 || threads.contains(&0) {
                return Err("--reps and every --threads value must be at least 1".into());
            }
            let opts = cpu::Options {
                threads,
                reps: common.reps,
                quick: common.quick,
                sections: common.sections,
                python: (!no_peer).then_some(python),
            };
            let report = cpu::run(&opts)?;
            print!("{}", report.to_table());
            write_json(json, &report)
        }
        Cmd::Bench {
            target: BenchTarget::Table { files },
        } => {
            for f in files {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
                if let Ok(r) = serde_json::from_str::<model::ModelReport>(&text) {
                    println!("{}", r.to_table());
                } else if let Ok(r) = serde_json::from_str::<kuosan_benches::report::Report>(&text)
                {
                    println!("{}", r.to_markdown());
                } else {
                    return Err(format!(
                        "{} is not a bench cpu / train / sample JSON result",
                        f.display()
                    ));
                }
            }
            Ok(())
        }
        Cmd::Bench {
            target: BenchTarget::Train(a),
        } => bench_model(a, true),
        Cmd::Bench {
            target: BenchTarget::Sample(a),
        } => bench_model(a, false),
        Cmd::BenchModelChild {
            config,
            batch,
            device,
            steps,
            train,
        } => {
            let r = model::run_child(&config, batch, &device, steps, train)?;
            println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
            Ok(())
        }
        Cmd::BenchCpuChild { threads, common } => {
            let opts = cpu::Options {
                threads: vec![threads],
                reps: common.reps,
                quick: common.quick,
                sections: common.sections,
                python: None,
            };
            let report = cpu::run_child(threads, &opts)?;
            println!(
                "{}",
                serde_json::to_string(&report).map_err(|e| e.to_string())?
            );
            Ok(())
        }
    }
}
