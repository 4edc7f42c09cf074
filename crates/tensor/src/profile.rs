//! Per-op wall-clock profile (`KUOSAN_PROFILE=1`), in the spirit of `torch.profiler`'s
//! table: every call of a storage op (the backend trait, so forward and backward kernels
//! alike) is timed and summed by op and shape; [`report`] prints the table.
//!
//! Off unless the environment variable is set when the first op runs: a disabled span is
//! one relaxed atomic load. GPU ops are timed as submitted (their kernels run
//! asynchronously), so on a GPU the table shows where the host waits, not the kernels.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The environment variable that turns the profile on (any value but "0").
pub const PROFILE_ENV: &str = "KUOSAN_PROFILE";

/// 0: not yet read, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);

/// (op, shape) -> (calls, total time).
type Table = HashMap<(&'static str, String), (u64, Duration)>;

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

thread_local! {
    /// Spans open on this thread: only the outermost is recorded (an f16 op widens its
    /// operands and calls the f32 op, which must not count twice).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether ops are being timed.
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var(PROFILE_ENV).is_ok_and(|v| v != "0" && !v.is_empty());
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        s => s == 2,
    }
}

/// Turns the profile on or off from code (benchmarks, tests), whatever the environment.
pub fn set_enabled(on: bool) {
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// A running op; records its time when dropped.
pub(crate) struct Span {
    /// Whether this span raised the thread's depth (and so must lower it).
    open: bool,
    key: Option<(&'static str, String, Instant)>,
}

/// Starts timing `op`; `shape` describes the call and is only evaluated when enabled.
pub(crate) fn span(op: &'static str, shape: impl FnOnce() -> String) -> Span {
    if !enabled() {
        return Span {
            open: false,
            key: None,
        };
    }
    let outer = DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get() == 1
    });
    Span {
        open: true,
        key: outer.then(|| (op, shape(), Instant::now())),
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        if let Some((op, shape, t0)) = self.key.take() {
            let dt = t0.elapsed();
            let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
            let e = table
                .get_or_insert_with(HashMap::new)
                .entry((op, shape))
                .or_default();
            e.0 += 1;
            e.1 += dt;
        }
    }
}

/// One row of the profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub op: &'static str,
    pub shape: String,
    pub calls: u64,
    pub total: Duration,
}

/// The rows so far, longest total first.
pub fn rows() -> Vec<Row> {
    let table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<Row> = table
        .iter()
        .flatten()
        .map(|((op, shape), (calls, total))| Row {
            op,
            shape: shape.clone(),
            calls: *calls,
            total: *total,
        })
        .collect();
    rows.sort_by(|a, b| b.total.cmp(&a.total).then(a.op.cmp(b.op)));
    rows
}

/// Forgets the rows so far (e.g. after a warm-up).
pub fn reset() {
    *TABLE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The profile as a table: per op (all shapes), then the `top` costliest (op, shape) rows.
pub fn report(top: usize) -> String {
    let rows = rows();
    let all: Duration = rows.iter().map(|r| r.total).sum();
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / all.as_secs_f64().max(1e-12);
    let mut per_op: HashMap<&str, (u64, Duration)> = HashMap::new();
    for r in &rows {
        let e = per_op.entry(r.op).or_default();
        e.0 += r.calls;
        e.1 += r.total;
    }
    let mut per_op: Vec<_> = per_op.into_iter().collect();
    per_op.sort_by_key(|&(_, (_, total))| std::cmp::Reverse(total));
    let mut out = format!(
        "op profile ({PROFILE_ENV}): {:.3} s in ops\n{:<24} {:>9} {:>10} {:>6}\n",
        all.as_secs_f64(),
        "op",
        "calls",
        "ms",
        "%"
    );
    for (op, (calls, total)) in &per_op {
        out += &format!(
            "{op:<24} {calls:>9} {:>10.1} {:>6.1}\n",
            total.as_secs_f64() * 1e3,
            pct(*total)
        );
    }
    out += &format!(
        "\n{:<24} {:<34} {:>7} {:>10} {:>6}\n",
        "op", "shape", "calls", "ms", "%"
    );
    for r in rows.iter().take(top) {
        out += &format!(
            "{:<24} {:<34} {:>7} {:>10.1} {:>6.1}\n",
            r.op,
            r.shape,
            r.calls,
            r.total.as_secs_f64() * 1e3,
            pct(r.total)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_spans_count_once_and_rows_sum_by_key() {
        set_enabled(true);
        reset();
        {
            let _outer = span("outer_op", || "[2, 3]".into());
            let _inner = span("inner_op", || "[2, 3]".into());
        }
        {
            let _again = span("outer_op", || "[2, 3]".into());
        }
        let rows = rows();
        set_enabled(false);
        let mine: Vec<_> = rows.iter().filter(|r| r.op.ends_with("_op")).collect();
        assert_eq!(mine.len(), 1, "{rows:?}");
        assert_eq!(mine[0].calls, 2);
        assert!(report(5).contains("outer_op"));
    }
}
