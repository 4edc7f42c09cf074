//! The out-of-process peers of `bench cpu`: `peer_kernels.py` (embedded) times the same
//! cases with OpenBLAS through numpy (GEMM) and PyTorch (conv2d, memory-bound kernels).
//! It runs right before and right after our child process for each thread count, and the
//! better of its two results is kept: the ratio errs in the peer's favour.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::{conv, memory, sgemm, Options};
use crate::report::Report;

/// What one run of the script printed.
#[derive(Clone, Debug, Deserialize)]
pub struct PeerRun {
    pub peers: Names,
    pub threads: usize,
    pub rows: Vec<PeerRow>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Names {
    pub blas: Option<String>,
    pub torch: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PeerRow {
    pub section: String,
    pub case: String,
    pub value: f64,
}

/// The cases of the chosen sections, as the script reads them.
fn cases(opts: &Options) -> Vec<serde_json::Value> {
    let want = |s: &str| opts.sections.iter().any(|x| x == s);
    let mut v = vec![];
    if want("sgemm") {
        v.extend(sgemm::peer_cases(opts.quick));
    }
    if want("conv") {
        v.extend(conv::peer_cases(opts.quick));
    }
    if want("memory") {
        v.extend(memory::peer_cases(memory::NAME));
    }
    v
}

/// Runs the script once at `threads` threads with `python`.
pub fn run(python: &Path, threads: usize, opts: &Options) -> Result<PeerRun, String> {
    // Named per process, so two benchmarks at once do not write over each other's.
    let script =
        std::env::temp_dir().join(format!("kuosan_peer_kernels_{}.py", std::process::id()));
    std::fs::write(&script, include_str!("../peer_kernels.py"))
        .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    let t = threads.to_string();
    let mut child = Command::new(python)
        .arg(&script)
        .args(["--threads", &t, "--reps", &opts.reps.to_string()])
        // OpenBLAS picks its kernels at load time; the default on these machines is the
        // AVX2 one, half the speed of SkylakeX's AVX-512 (../shared/peers/README.md).
        .env("OPENBLAS_CORETYPE", "SkylakeX")
        .env("OPENBLAS_NUM_THREADS", &t)
        .env("OMP_NUM_THREADS", &t)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let input = serde_json::to_vec(&cases(opts)).map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&input)
        .map_err(|e| format!("cannot feed the peer script: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("peer script failed: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the peer script ({} {}) failed: {}; it needs numpy (and torch for conv2d)",
            python.display(),
            script.display(),
            out.status
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the peer script printed no result: {e}"))
}

/// Writes the peers' best value per case into the matching rows (same section, case and
/// thread count) and names the peer of each section that got one.
pub fn attach(report: &mut Report, runs: &[PeerRun]) {
    for s in &mut report.sections {
        for r in &mut s.rows {
            let best = runs
                .iter()
                .filter(|p| p.threads == r.threads)
                .flat_map(|p| &p.rows)
                .filter(|p| p.section == s.name && p.case == r.case)
                .map(|p| p.value)
                .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
            if let Some(v) = best {
                r.ext = Some(v);
                r.ext_ratio = Some(r.ours_gflops / v);
                let names = &runs[0].peers;
                s.ext_peer = if s.name == sgemm::NAME {
                    names.blas.clone()
                } else {
                    names.torch.clone()
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Row, Section};

    fn run(threads: usize, value: f64) -> PeerRun {
        PeerRun {
            peers: Names {
                blas: Some("OpenBLAS".into()),
                torch: Some("torch".into()),
            },
            threads,
            rows: vec![PeerRow {
                section: "sgemm".into(),
                case: "256³".into(),
                value,
            }],
        }
    }

    #[test]
    fn attach_keeps_the_peers_better_run_per_thread_count() {
        let row = |threads| Row {
            case: "256³".into(),
            threads,
            flop: 1.0,
            ours_gflops: 100.0,
            peer_gflops: 90.0,
            ratio: 100.0 / 90.0,
            frac_peak: 0.9,
            reps: 5,
            ext: None,
            ext_ratio: None,
        };
        let mut report = Report {
            sections: vec![Section {
                name: "sgemm".into(),
                unit: "GFLOP/s".into(),
                peer: "matrixmultiply".into(),
                ext_peer: None,
                rows: vec![row(1), row(2)],
            }],
            ..Report::default()
        };
        attach(&mut report, &[run(1, 80.0), run(1, 125.0), run(2, 50.0)]);
        let s = &report.sections[0];
        assert_eq!(s.ext_peer.as_deref(), Some("OpenBLAS"));
        assert_eq!(
            (s.rows[0].ext, s.rows[0].ext_ratio),
            (Some(125.0), Some(0.8))
        );
        assert_eq!(
            (s.rows[1].ext, s.rows[1].ext_ratio),
            (Some(50.0), Some(2.0))
        );
        assert!(report
            .to_markdown()
            .contains("| 256³ | 1 | 100.0 | 90.0 | 1.11x | 125.0 | 0.80x | 90% |"));
    }
}
