//! The results of a benchmark run: plain data, printable as a table and serialisable as JSON.

use serde::{Deserialize, Serialize};

/// A whole run: machine facts plus one section per kernel family.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// CPU model name, as the OS reports it.
    pub cpu: String,
    /// The GEMM micro-kernel kuosan selected on this CPU.
    pub kernel: String,
    /// Measured FMA peak, one entry per thread count.
    pub peak: Vec<Peak>,
    pub sections: Vec<Section>,
}

/// FMA throughput of a register-only loop: the ceiling any kernel can reach.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Peak {
    pub threads: usize,
    /// Instruction set of the loop ("avx512", "avx2" or "scalar").
    pub isa: String,
    pub gflops: f64,
}

/// One kernel family compared against one peer in-process and, where a script can run
/// one, a second peer in another process (OpenBLAS through numpy, PyTorch).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    /// "GFLOP/s" (compute-bound) or "GB/s" (memory-bound) for every rate in the rows.
    #[serde(default = "gflops_unit")]
    pub unit: String,
    /// Name of the in-process peer in the same rows.
    pub peer: String,
    /// Name of the out-of-process peer, when one was run.
    #[serde(default)]
    pub ext_peer: Option<String>,
    pub rows: Vec<Row>,
}

fn gflops_unit() -> String {
    "GFLOP/s".into()
}

/// One shape at one thread count: medians of interleaved repetitions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// What was run, e.g. "1024³" or "conv m64 n1024 k576".
    pub case: String,
    pub threads: usize,
    /// Floating-point operations per call (GB/s rows: bytes moved per call).
    pub flop: f64,
    /// Rates in the section's unit (the names predate GB/s rows; kept for old JSON).
    pub ours_gflops: f64,
    pub peer_gflops: f64,
    /// ours / peer.
    pub ratio: f64,
    /// ours / the machine's limit at the same thread count: the measured FMA peak, or for
    /// GB/s rows the measured copy bandwidth.
    pub frac_peak: f64,
    pub reps: usize,
    /// The out-of-process peer's rate on the same case (the section's unit).
    #[serde(default)]
    pub ext: Option<f64>,
    /// ours / `ext`.
    #[serde(default)]
    pub ext_ratio: Option<f64>,
}

impl Report {
    /// Folds another partial report (e.g. from a child process) into this one, merging
    /// sections of the same name.
    pub fn merge(&mut self, other: Report) {
        if self.kernel.is_empty() {
            self.kernel = other.kernel;
        }
        if self.cpu.is_empty() {
            self.cpu = other.cpu;
        }
        self.peak.extend(other.peak);
        for s in other.sections {
            match self.sections.iter_mut().find(|t| t.name == s.name) {
                Some(t) => t.rows.extend(s.rows),
                None => self.sections.push(s),
            }
        }
    }

    /// The measured peak at `threads`, if it was measured.
    pub fn peak_at(&self, threads: usize) -> Option<f64> {
        self.peak
            .iter()
            .find(|p| p.threads == threads)
            .map(|p| p.gflops)
    }

    /// The report as a human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        out += &format!("cpu: {}\nkuosan GEMM kernel: {}\n\n", self.cpu, self.kernel);
        out += "FMA peak (register-only loop)\n";
        out += &format!("{:>8} {:>8} {:>10}\n", "threads", "isa", "GFLOP/s");
        for p in &self.peak {
            out += &format!("{:>8} {:>8} {:>10.1}\n", p.threads, p.isa, p.gflops);
        }
        for s in &self.sections {
            let ext = s.ext_peer.as_deref();
            out += &format!(
                "\n{} (ours vs {}{}; median {})\n",
                s.name,
                s.peer,
                ext.map_or(String::new(), |e| format!(" and {e}")),
                s.unit
            );
            out += &format!(
                "{:<28} {:>7} {:>9} {:>9} {:>7} {:>7}",
                "case",
                "threads",
                "ours",
                short(&s.peer),
                "ratio",
                "%limit"
            );
            if let Some(e) = ext {
                out += &format!(" {:>9} {:>7}", short(e), "ratio");
            }
            out += "\n";
            for r in &s.rows {
                out += &format!(
                    "{:<28} {:>7} {:>9.1} {:>9.1} {:>6.2}x {:>6.1}%",
                    r.case,
                    r.threads,
                    r.ours_gflops,
                    r.peer_gflops,
                    r.ratio,
                    100.0 * r.frac_peak
                );
                if ext.is_some() {
                    match (r.ext, r.ext_ratio) {
                        (Some(v), Some(q)) => out += &format!(" {v:>9.1} {q:>6.2}x"),
                        _ => out += &format!(" {:>9} {:>7}", "-", "-"),
                    }
                }
                out += "\n";
            }
            out += &scaling_table(s);
        }
        out
    }
}

impl Report {
    /// The report as Markdown tables (what the README shows), one per section: ours, the
    /// in-process peer, the out-of-process peer where one ran, ratios, and the fraction
    /// of the machine's limit.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("CPU: {}; GEMM kernel {}; FMA peak", self.cpu, self.kernel);
        for p in &self.peak {
            out += &format!(" {:.0} GFLOP/s at {} thread(s);", p.gflops, p.threads);
        }
        out.pop();
        out += ".\n";
        for s in &self.sections {
            let ext = s.ext_peer.as_deref();
            out += &format!(
                "\n{} ({}):\n\n| case | threads | kuosan | {} | ratio |",
                s.name, s.unit, s.peer
            );
            if let Some(e) = ext {
                out += &format!(" {e} | ratio |");
            }
            let limit = if s.unit == "GB/s" {
                "of copy"
            } else {
                "of FMA peak"
            };
            out += &format!(" {limit} |\n|---|---|---|---|---|");
            if ext.is_some() {
                out += "---|---|";
            }
            out += "---|\n";
            for r in &s.rows {
                out += &format!(
                    "| {} | {} | {:.1} | {:.1} | {:.2}x |",
                    r.case, r.threads, r.ours_gflops, r.peer_gflops, r.ratio
                );
                if ext.is_some() {
                    match (r.ext, r.ext_ratio) {
                        (Some(v), Some(q)) => out += &format!(" {v:.1} | {q:.2}x |"),
                        _ => out += " - | - |",
                    }
                }
                out += &format!(" {:.0}% |\n", 100.0 * r.frac_peak);
            }
        }
        out
    }
}

/// A peer's name cut to a column's width.
fn short(name: &str) -> &str {
    let end = name.char_indices().nth(9).map_or(name.len(), |(i, _)| i);
    &name[..end]
}

/// For each case measured on one thread and on more: ours at N threads / ours at 1 thread.
fn scaling_table(s: &Section) -> String {
    let mut out = String::new();
    for r in s.rows.iter().filter(|r| r.threads > 1) {
        let one = s.rows.iter().find(|o| o.case == r.case && o.threads == 1);
        if let Some(one) = one {
            if out.is_empty() {
                out += &format!("\n{} scaling (ours, N threads / 1 thread)\n", s.name);
            }
            out += &format!(
                "{:<24} {:>7} {:>8.2}x\n",
                r.case,
                r.threads,
                r.ours_gflops / one.ours_gflops
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(case: &str, threads: usize, ours: f64) -> Row {
        Row {
            case: case.into(),
            threads,
            flop: 1.0,
            ours_gflops: ours,
            peer_gflops: ours / 2.0,
            ratio: 2.0,
            frac_peak: 0.5,
            reps: 5,
            ext: None,
            ext_ratio: None,
        }
    }

    fn part(threads: usize, ours: f64) -> Report {
        Report {
            cpu: "cpu".into(),
            kernel: "k".into(),
            peak: vec![Peak {
                threads,
                isa: "avx512".into(),
                gflops: 2.0 * ours,
            }],
            sections: vec![Section {
                name: "sgemm".into(),
                unit: gflops_unit(),
                peer: "peer".into(),
                ext_peer: None,
                rows: vec![row("256³", threads, ours)],
            }],
        }
    }

    #[test]
    fn merge_joins_sections_by_name_and_the_table_shows_scaling() {
        let mut r = Report::default();
        r.merge(part(1, 100.0));
        r.merge(part(2, 180.0));
        assert_eq!(r.sections.len(), 1);
        assert_eq!(r.sections[0].rows.len(), 2);
        assert_eq!(r.peak_at(2), Some(360.0));
        let table = r.to_table();
        assert!(table.contains("1.80x"), "{table}");
        let json = serde_json::to_string(&r).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.sections[0].rows[1].threads, 2);
    }
}
