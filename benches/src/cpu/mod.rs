//! `bench cpu`: FMA peak and CPU kernels vs peers, one child process per thread count.
//!
//! matrixmultiply reads MATMUL_NUM_THREADS once per process, so each thread count runs in a
//! fresh copy of the current executable (`current_exe() CHILD_COMMAND --threads N`) with that
//! variable set; the child measures everything at N threads and prints its partial report as
//! JSON on stdout, and the parent merges the parts.

pub mod conv;
pub mod memory;
pub mod peak;
pub mod peers;
pub mod sgemm;

use std::process::{Command, Stdio};

use crate::report::Report;

/// Hidden subcommand the benchmark binary must route to [`run_child`] (xtask does).
pub const CHILD_COMMAND: &str = "bench-cpu-child";

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// Thread counts, each measured in its own child process.
    pub threads: Vec<usize>,
    /// Timed repetitions per case (after warm-up); the median is reported.
    pub reps: usize,
    /// Skip the largest sizes (smoke runs).
    pub quick: bool,
    /// Which sections to run: any of [`SECTIONS`].
    pub sections: Vec<String>,
    /// A Python with numpy (and torch) for the out-of-process peers; None: in-process
    /// peers only.
    pub python: Option<std::path::PathBuf>,
}

/// Every section, in the order they run.
pub const SECTIONS: [&str; 3] = ["sgemm", "conv", "memory"];

impl Default for Options {
    fn default() -> Self {
        Self {
            threads: vec![1, 2],
            reps: 7,
            quick: false,
            sections: SECTIONS.iter().map(|s| s.to_string()).collect(),
            python: None,
        }
    }
}

/// Runs the whole CPU benchmark: one child process per thread count, merged in order.
pub fn run(opts: &Options) -> Result<Report, String> {
    if let Some(bad) = opts
        .sections
        .iter()
        .find(|s| !SECTIONS.contains(&s.as_str()))
    {
        return Err(format!(
            "unknown bench cpu section {bad:?}: use any of {}",
            SECTIONS.join(", ")
        ));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let mut report = Report::default();
    let mut python = opts.python.clone();
    let mut peer_runs = vec![];
    // The out-of-process peer before and after ours (see `peers`); a failure only warns.
    let mut run_peer = |python: &mut Option<std::path::PathBuf>, t: usize| {
        if let Some(py) = python.as_deref() {
            eprintln!("bench cpu: {t} thread(s), peers in {}", py.display());
            match peers::run(py, t, opts) {
                Ok(r) => peer_runs.push(r),
                Err(e) => {
                    eprintln!("warning: {e}; going on without the out-of-process peers");
                    *python = None;
                }
            }
        }
    };
    for &t in &opts.threads {
        run_peer(&mut python, t);
        eprintln!("bench cpu: {t} thread(s)");
        let mut cmd = Command::new(&exe);
        cmd.args([
            CHILD_COMMAND,
            "--threads",
            &t.to_string(),
            "--reps",
            &opts.reps.to_string(),
        ]);
        if opts.quick {
            cmd.arg("--quick");
        }
        cmd.args(["--sections", &opts.sections.join(",")]);
        let out = cmd
            .env("MATMUL_NUM_THREADS", t.to_string())
            .env("RAYON_NUM_THREADS", t.to_string())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if !out.status.success() {
            return Err(format!(
                "benchmark child for {t} thread(s) failed: {}",
                out.status
            ));
        }
        let part: Report = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("benchmark child for {t} thread(s) printed no report: {e}"))?;
        report.merge(part);
        run_peer(&mut python, t);
    }
    peers::attach(&mut report, &peer_runs);
    Ok(report)
}

/// The child's work: everything at `threads` threads, in this process. Expects
/// MATMUL_NUM_THREADS = `threads` in the environment (set by [`run`]).
pub fn run_child(threads: usize, opts: &Options) -> Result<Report, String> {
    let env = std::env::var("MATMUL_NUM_THREADS").ok();
    if env.as_deref() != Some(threads.to_string().as_str()) {
        return Err(format!(
            "MATMUL_NUM_THREADS is {env:?}, expected {threads}: run this through `bench cpu`"
        ));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| format!("cannot build a {threads}-thread pool: {e}"))?;
    let peak = peak::measure(threads, opts.reps);
    let want = |s: &str| opts.sections.iter().any(|x| x == s);
    let sections = pool.install(|| {
        let mut v = vec![];
        if want("sgemm") {
            v.push(sgemm::run(threads, opts.reps, opts.quick, peak.gflops));
        }
        if want("conv") {
            v.push(conv::run(threads, opts.reps, opts.quick, peak.gflops));
        }
        if want("memory") {
            v.push(memory::run(threads, opts.reps));
        }
        v
    });
    Ok(Report {
        cpu: cpu_model(),
        kernel: kuosan_tensor::cpu::gemm::Kernel::selected().name().into(),
        peak: vec![peak],
        sections,
    })
}

/// The CPU model from /proc/cpuinfo (Linux), or "unknown".
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
