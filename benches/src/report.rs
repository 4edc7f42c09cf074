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

/// One kernel family compared against one peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    /// Name of the peer implementation in the same rows.
    pub peer: String,
    pub rows: Vec<Row>,
}

/// One shape at one thread count: medians of interleaved repetitions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// What was run, e.g. "1024³" or "conv m64 n1024 k576".
    pub case: String,
    pub threads: usize,
    /// Floating-point operations per call.
    pub flop: f64,
    pub ours_gflops: f64,
    pub peer_gflops: f64,
    /// ours / peer.
    pub ratio: f64,
    /// ours / the measured FMA peak at the same thread count.
    pub frac_peak: f64,
    pub reps: usize,
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
            out += &format!("\n{} (ours vs {}; median GFLOP/s)\n", s.name, s.peer);
            out += &format!(
                "{:<24} {:>7} {:>9} {:>9} {:>7} {:>7}\n",
                "case",
                "threads",
                "ours",
                &s.peer[..s.peer.len().min(9)],
                "ratio",
                "%peak"
            );
            for r in &s.rows {
                out += &format!(
                    "{:<24} {:>7} {:>9.1} {:>9.1} {:>6.2}x {:>6.1}%\n",
                    r.case,
                    r.threads,
                    r.ours_gflops,
                    r.peer_gflops,
                    r.ratio,
                    100.0 * r.frac_peak
                );
            }
            out += &scaling_table(s);
        }
        out
    }
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
                peer: "peer".into(),
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
