//! A rule-based reader for `shapes` images: finds the objects in a picture and reads
//! each one's colour, shape, size and position back out, then scores a picture against
//! the scene its prompt described.
//!
//! The rules follow the generator's geometry (`data/shapes.rs`): objects are flat
//! colours on black whose bounding box is centred on the object and 2 `half` wide, so
//! - lit pixels (brightest channel >= 128, i.e. at least half covered) grouped into
//!   8-connected components are the objects (tiny components are noise and dropped);
//! - colour is the palette colour nearest the component's mean RGB;
//! - size is large when the box's longer side is nearer 2 x 8 than 2 x 5 canvas units;
//! - shape is read from the outline's two cues: how the lit pixels split between the
//!   box's top and bottom halves (a triangle, apex up, holds 1/4 of its area in the top
//!   half: ratio 1/3; a circle or square 1) and how much of the box is lit (square 1,
//!   circle pi/4). The balance tells a triangle whose apex and corners are blurred off
//!   from a circle, where the fill alone (triangle 1/2) no longer does: a generator
//!   triangle blurred by a Gaussian of 0.8 px fills 0.67 of its box, past the old
//!   fill-only rule's 0.64 ([`ShapeRule`]);
//! - position is the box centre through `Position::classify`, and a pair's relation is
//!   which axis separates the two centres more.

use crate::data::shapes::{
    Color, Layout, Position, Relation, Scene, ShapeKind, Size, CANVAS, LARGE_HALF, SMALL_HALF,
};
use crate::image::Image;

/// Components smaller than this many canvas pixels (32 x 32 units) are noise: the
/// smallest object, a small triangle, covers ~50.
const MIN_AREA: f32 = 12.0;

/// How a shape is read from a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeRule {
    /// The fill of the box and the top / bottom balance (the reader since 2026-12-03).
    Outline,
    /// The fill of the box alone (the reader until 2026-12-02), kept so that eval can
    /// still report the figure earlier runs were measured with.
    FillOnly,
}

/// One object as read from the pixels (canvas units).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detected {
    pub color: Color,
    /// The shape by the outline rule.
    pub shape: ShapeKind,
    /// The shape by the fill alone.
    pub shape_by_fill: ShapeKind,
    /// Lit pixels in the box's top half over those in its bottom half (the middle row,
    /// if any, split between them).
    pub balance: f32,
    pub size: Size,
    pub position: Position,
    /// Bounding-box centre.
    pub cx: f32,
    pub cy: f32,
    /// Lit pixels, in canvas pixels.
    pub area: f32,
}

/// Reads the objects of an RGB image, largest first.
pub fn detect(img: &Image) -> Vec<Detected> {
    let (w, h) = (img.width, img.height);
    let rgb = |x: usize, y: usize| -> [f32; 3] {
        let c = |k: usize| img.at(x, y, k.min(img.channels - 1)) as f32;
        [c(0), c(1), c(2)]
    };
    let lit: Vec<bool> = (0..w * h)
        .map(|i| rgb(i % w, i / w).iter().cloned().fold(0.0, f32::max) >= 128.0)
        .collect();
    let (sx, sy) = (CANVAS / w as f32, CANVAS / h as f32);
    let mut seen = vec![false; w * h];
    let mut found = Vec::new();
    for start in 0..w * h {
        if !lit[start] || seen[start] {
            continue;
        }
        // Flood fill one 8-connected component.
        let mut stack = vec![start];
        seen[start] = true;
        let (mut n, mut sum) = (0usize, [0f32; 3]);
        let mut rows = Vec::new();
        let (mut x0, mut x1, mut y0, mut y1) = (w, 0, h, 0);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            n += 1;
            rows.push(y);
            let p = rgb(x, y);
            (0..3).for_each(|k| sum[k] += p[k]);
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if lit[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        let area = n as f32 * sx * sy;
        if area < MIN_AREA {
            continue;
        }
        let mean = sum.map(|s| s / n as f32);
        let (bw, bh) = ((x1 - x0 + 1) as f32, (y1 - y0 + 1) as f32);
        let fill = n as f32 / (bw * bh);
        // Rows are compared in doubled units so the middle row is exact: 2y vs y0 + y1.
        let top: f32 = rows
            .iter()
            .map(|&y| match (2 * y).cmp(&(y0 + y1)) {
                std::cmp::Ordering::Less => 1.0,
                std::cmp::Ordering::Equal => 0.5,
                std::cmp::Ordering::Greater => 0.0,
            })
            .sum();
        let balance = top / (n as f32 - top).max(0.5);
        let side = (bw * sx).max(bh * sy);
        let (cx, cy) = (
            (x0 + x1 + 1) as f32 / 2.0 * sx,
            (y0 + y1 + 1) as f32 / 2.0 * sy,
        );
        found.push(Detected {
            color: nearest_color(mean),
            shape: shape_from_outline(fill, balance),
            shape_by_fill: shape_from_fill(fill),
            balance,
            size: if side > SMALL_HALF + LARGE_HALF {
                Size::Large
            } else {
                Size::Small
            },
            position: Position::classify(cx, cy),
            cx,
            cy,
            area,
        });
    }
    found.sort_by(|a, b| b.area.total_cmp(&a.area));
    found
}

fn nearest_color(mean: [f32; 3]) -> Color {
    let dist = |c: Color| {
        let p = c.rgb();
        (0..3).map(|k| (mean[k] - p[k] as f32).powi(2)).sum::<f32>()
    };
    Color::ALL
        .into_iter()
        .min_by(|a, b| dist(*a).total_cmp(&dist(*b)))
        .expect("the palette is not empty")
}

/// A triangle when the top half holds less than the midpoint between a triangle's
/// balance (1/3) and a circle's or square's (1), unless the box is as full as a square's;
/// otherwise circle or square by the fill's midpoint (pi/4 | 1). Both thresholds are
/// midpoints of the ideal shapes' values, not fitted to any model's pictures.
fn shape_from_outline(fill: f32, balance: f32) -> ShapeKind {
    let square_fill = (ShapeKind::Circle.fill_ratio() + ShapeKind::Square.fill_ratio()) / 2.0;
    if balance < (1.0 / 3.0 + 1.0) / 2.0 && fill < square_fill {
        ShapeKind::Triangle
    } else if fill < square_fill {
        ShapeKind::Circle
    } else {
        ShapeKind::Square
    }
}

/// Midpoints between the fill ratios: triangle 0.5 | circle 0.785 | square 1.
fn shape_from_fill(fill: f32) -> ShapeKind {
    let circle = ShapeKind::Circle.fill_ratio();
    if fill < (ShapeKind::Triangle.fill_ratio() + circle) / 2.0 {
        ShapeKind::Triangle
    } else if fill < (circle + ShapeKind::Square.fill_ratio()) / 2.0 {
        ShapeKind::Circle
    } else {
        ShapeKind::Square
    }
}

/// The attributes a score reports, in table order.
pub const ATTRIBUTES: [&str; 6] = ["count", "color", "shape", "size", "position", "relation"];

/// How one picture matches its scene: `Some(right)` per attribute of [`ATTRIBUTES`] that
/// the scene states (size and position for one object, relation for a pair; count,
/// colour and shape always), and whether all of them are right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Score {
    pub attributes: [Option<bool>; 6],
    pub all: bool,
}

/// Scores `img` against `scene`. The count is right when exactly the scene's number of
/// objects is found; the other attributes are judged on the largest object(s) found, so
/// a stray extra blob costs the count (and so `all`) but not the colour. For a pair the
/// found objects are matched to the caption's in the order that agrees on more colours
/// and shapes; colour (shape) is right when both objects' colours (shapes) are, and the
/// relation when, in that order, the first is left of / above the second.
pub fn score(img: &Image, scene: &Scene) -> Score {
    score_with(img, scene, ShapeRule::Outline)
}

/// [`score`] with the shapes read by `rule`.
pub fn score_with(img: &Image, scene: &Scene, rule: ShapeRule) -> Score {
    let mut found = detect(img);
    if rule == ShapeRule::FillOnly {
        found.iter_mut().for_each(|d| d.shape = d.shape_by_fill);
    }
    let want = &scene.objects;
    let mut a = [None; 6];
    a[0] = Some(found.len() == want.len());
    match scene.layout {
        Layout::Single(pos) => {
            let o = &want[0];
            let d = found.first();
            a[1] = Some(d.is_some_and(|d| d.color == o.color));
            a[2] = Some(d.is_some_and(|d| d.shape == o.shape));
            a[3] = Some(d.is_some_and(|d| d.size == o.size));
            a[4] = Some(d.is_some_and(|d| d.position == pos));
        }
        Layout::Pair(rel) => {
            if found.len() < 2 {
                a[1] = Some(false);
                a[2] = Some(false);
                a[5] = Some(false);
            } else {
                let agree = |d: &Detected, i: usize| {
                    (d.color == want[i].color) as u32 + (d.shape == want[i].shape) as u32
                };
                let (p, q) = if agree(&found[0], 0) + agree(&found[1], 1)
                    >= agree(&found[1], 0) + agree(&found[0], 1)
                {
                    (&found[0], &found[1])
                } else {
                    (&found[1], &found[0])
                };
                a[1] = Some(p.color == want[0].color && q.color == want[1].color);
                a[2] = Some(p.shape == want[0].shape && q.shape == want[1].shape);
                let (dx, dy) = (q.cx - p.cx, q.cy - p.cy);
                a[5] = Some(match rel {
                    Relation::LeftOf => dx > 0.0 && dx.abs() >= dy.abs(),
                    Relation::Above => dy > 0.0 && dy.abs() >= dx.abs(),
                });
            }
        }
    }
    Score {
        attributes: a,
        all: a.iter().all(|x| x.unwrap_or(true)),
    }
}

impl Score {
    /// (attribute, right) for each attribute the scene states.
    pub fn judged(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        ATTRIBUTES
            .iter()
            .zip(self.attributes)
            .filter_map(|(&name, a)| a.map(|r| (name, r)))
    }
}
