//! Training curves as PNG: the loss (loss.png) and, when the run evaluates itself, the
//! eval accuracies and Frechet distance (eval.png), from metrics.jsonl. A small line-chart
//! rasteriser with a built-in 3x5 pixel font for the title, axis values and legend: a PNG
//! of a few curves needs little, so no plotting crate (or font file) is pulled in.

use crate::image::{write_png, Image};
use kuosan_nn::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

const W: usize = 720;
const H: usize = 400;
/// Margins: left (y labels), right (legend), top (title), bottom (x labels).
const L: usize = 70;
const R: usize = 150;
const T: usize = 30;
const B: usize = 40;
/// Font pixels are drawn as SCALE x SCALE blocks.
const SCALE: usize = 2;

/// One curve: its name (legend), points (x, y) and RGB colour.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: [u8; 3],
}

/// Distinct colours for successive series.
const PALETTE: [[u8; 3]; 8] = [
    [200, 30, 30],
    [30, 100, 200],
    [30, 150, 60],
    [220, 140, 0],
    [140, 60, 180],
    [0, 160, 160],
    [120, 120, 120],
    [0, 0, 0],
];

/// Draws `series` on one chart with a title, the y range (log10-scaled when `log_y`),
/// the x range and a legend. Returns an RGB image.
pub fn line_chart(title: &str, series: &[Series], log_y: bool) -> Image {
    let mut img = Image::new(W, H, 3, 255);
    text(&mut img, L, 8, title, [0, 0, 0]);
    let ty = |y: f64| if log_y { y.max(1e-12).log10() } else { y };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(x, y)| (x, ty(y))))
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    for x in L..W - R {
        set(&mut img, x, H - B, [0, 0, 0]);
    }
    for y in T..H - B {
        set(&mut img, L, y, [0, 0, 0]);
    }
    if pts.is_empty() {
        return img;
    }
    let (x0, x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (y0, y1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    let sx = |x: f64| L as f64 + (x - x0) / (x1 - x0).max(1e-12) * (W - L - R) as f64;
    let sy = |y: f64| (H - B) as f64 - (y - y0) / (y1 - y0).max(1e-12) * (H - B - T) as f64;
    // Axis values: y at the bottom and top, x at both ends.
    let yval = |y: f64| number(if log_y { 10f64.powf(y) } else { y });
    text(&mut img, 4, H - B - 5, &yval(y0), [0, 0, 0]);
    text(&mut img, 4, T, &yval(y1), [0, 0, 0]);
    text(&mut img, L, H - B + 8, &number(x0), [0, 0, 0]);
    let last = number(x1);
    text(
        &mut img,
        W - R - 8 * last.len(),
        H - B + 8,
        &last,
        [0, 0, 0],
    );
    text(&mut img, (W - R) / 2, H - B + 24, "STEP", [0, 0, 0]);
    for (k, s) in series.iter().enumerate() {
        let mapped: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| ty(p.1).is_finite())
            .map(|&(x, y)| (sx(x), sy(ty(y))))
            .collect();
        for w in mapped.windows(2) {
            line(&mut img, w[0], w[1], s.color);
        }
        if let [p] = mapped[..] {
            line(&mut img, (p.0 - 2.0, p.1), (p.0 + 2.0, p.1), s.color);
        }
        // Legend: a swatch and the name.
        let ly = T + 16 * k;
        for dy in 0..4 {
            for dx in 0..14 {
                set(&mut img, W - R + 10 + dx, ly + 3 + dy, s.color);
            }
        }
        text(&mut img, W - R + 30, ly, &s.name, [0, 0, 0]);
    }
    img
}

/// A short label for an axis value.
fn number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Writes the run's charts from its metrics.jsonl: loss.png always, eval.png when the
/// run logged evaluations. Returns the files written.
pub fn plot_run(root: &Path) -> Result<Vec<PathBuf>> {
    let metrics = root.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).map_err(|e| {
        Error::file(
            &metrics,
            format!("cannot read: {e} (has the run logged a step yet?)"),
        )
    })?;
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let at = |v: &Value, path: &[&str]| -> Option<f64> {
        path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
    };
    let series = |path: &[&str]| -> Vec<(f64, f64)> {
        lines
            .iter()
            .filter_map(|v| Some((v.get("step")?.as_f64()?, at(v, path)?)))
            .collect()
    };
    let save = |name: &str, img: &Image| -> Result<PathBuf> {
        let path = root.join(name);
        write_png(&path, img).map_err(|e| Error::Arg(e.to_string()))?;
        Ok(path)
    };
    let loss = Series {
        name: "LOSS".into(),
        points: series(&["loss"]),
        color: PALETTE[0],
    };
    let mut out = vec![save(
        "loss.png",
        &line_chart("TRAINING LOSS (LOG)", &[loss], true),
    )?];
    let evals: Vec<&Value> = lines.iter().filter(|v| v.get("eval").is_some()).collect();
    if !evals.is_empty() {
        let mut names: Vec<String> = evals
            .iter()
            .filter_map(|v| v["eval"].get("attributes")?.as_object())
            .flat_map(|m| m.keys().cloned())
            .collect();
        names.sort_by_key(|n| {
            super::eval::shapes_check::ATTRIBUTES
                .iter()
                .position(|a| a == n)
        });
        names.dedup();
        // With one attribute (a classifier's class) "all" is the same curve: drawn once.
        let mut acc = Vec::new();
        if names.len() > 1 {
            acc.push(Series {
                name: "ALL".into(),
                points: series(&["eval", "accuracy"]),
                color: PALETTE[0],
            });
        }
        for (k, n) in names.iter().enumerate() {
            acc.push(Series {
                name: n.to_uppercase(),
                points: series(&["eval", "attributes", n]),
                color: PALETTE[(k + 1) % PALETTE.len()],
            });
        }
        let mut img = line_chart("EVAL ACCURACY", &acc, false);
        let fd = series(&["eval", "frechet_distance"]);
        if !fd.is_empty() {
            // The Frechet distance gets its own chart below the accuracies.
            let lower = line_chart(
                "FRECHET DISTANCE (CLASSIFIER FEATURES)",
                &[Series {
                    name: "FD".into(),
                    points: fd,
                    color: PALETTE[1],
                }],
                false,
            );
            let mut both = Image::new(W, 2 * H, 3, 255);
            both.data[..img.data.len()].copy_from_slice(&img.data);
            both.data[img.data.len()..].copy_from_slice(&lower.data);
            img = both;
        }
        out.push(save("eval.png", &img)?);
    }
    Ok(out)
}

fn set(img: &mut Image, x: usize, y: usize, c: [u8; 3]) {
    if x < img.width && y < img.height {
        for (k, &v) in c.iter().enumerate() {
            img.data[(y * img.width + x) * 3 + k] = v;
        }
    }
}

/// A straight segment, sampled densely enough to leave no gaps.
fn line(img: &mut Image, a: (f64, f64), b: (f64, f64), c: [u8; 3]) {
    let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        if x >= 0.0 && y >= 0.0 {
            set(img, x.round() as usize, y.round() as usize, c);
        }
    }
}

/// `s` in the 3x5 font at (x, y) (top left), upper-cased; characters without a glyph
/// are left blank.
fn text(img: &mut Image, x: usize, y: usize, s: &str, c: [u8; 3]) {
    for (i, ch) in s.chars().enumerate() {
        let rows = glyph(ch.to_ascii_uppercase());
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..3 {
                if bits >> (2 - col) & 1 == 1 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            let px = x + i * 4 * SCALE + col * SCALE + dx;
                            set(img, px, y + r * SCALE + dy, c);
                        }
                    }
                }
            }
        }
    }
}

/// Five rows of three bits (left = 4).
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        '%' => [5, 1, 2, 4, 5],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        ':' => [0, 2, 0, 2, 0],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        _ => [0; 5],
    }
}
