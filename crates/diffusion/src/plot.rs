//! A small line chart rasteriser for the training curves (loss, and later eval metrics):
//! axes, a log-scaled y when the values span decades, and one polyline per series. Kept
//! here instead of a plotting crate because a PNG of a few curves needs little.

use crate::image::Image;

const W: usize = 640;
const H: usize = 360;
const MARGIN: usize = 40;

/// Draws `series` on one chart; y is log10-scaled when
/// `log_y`. Returns an RGB image.
/// One curve: its points (x, y) and RGB colour.
pub struct Series {
    pub points: Vec<(f64, f64)>,
    pub color: [u8; 3],
}

pub fn line_chart(series: &[Series], log_y: bool) -> Image {
    let mut img = Image::new(W, H, 3, 255);
    let ty = |y: f64| if log_y { y.max(1e-12).log10() } else { y };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(x, y)| (x, ty(y))))
        .filter(|p| p.1.is_finite())
        .collect();
    // Axes.
    for x in MARGIN..W - 10 {
        set(&mut img, x, H - MARGIN, [0, 0, 0]);
    }
    for y in 10..H - MARGIN {
        set(&mut img, MARGIN, y, [0, 0, 0]);
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
    let sx = |x: f64| MARGIN as f64 + (x - x0) / (x1 - x0).max(1e-12) * (W - MARGIN - 10) as f64;
    let sy =
        |y: f64| (H - MARGIN) as f64 - (y - y0) / (y1 - y0).max(1e-12) * (H - MARGIN - 10) as f64;
    for Series { points, color } in series {
        let mapped: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| ty(p.1).is_finite())
            .map(|&(x, y)| (sx(x), sy(ty(y))))
            .collect();
        for w in mapped.windows(2) {
            line(&mut img, w[0], w[1], *color);
        }
    }
    img
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
