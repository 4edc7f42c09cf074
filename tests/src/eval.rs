//! Evaluation: the `shapes` reader scores the generator's own pictures (clean and
//! noisy and blurred) >= 99% per attribute and catches wrong attributes.

use kuosan_diffusion::data::shapes::{Color, Layout, Relation, Scene, ShapesDataset};
use kuosan_diffusion::eval::shapes_check::{detect, score, score_with, ShapeRule, ATTRIBUTES};
use kuosan_diffusion::eval::Tally;
use kuosan_diffusion::image::Image;
use kuosan_tensor::Philox;

fn tally(ds: &ShapesDataset, n: usize, noise: f32, seed: u64) -> Tally {
    let mut rng = Philox::new(seed);
    let mut t = Tally::default();
    for i in 0..n {
        let mut img = ds.image(i);
        if noise > 0.0 {
            let z = rng.normal_f32(img.data.len());
            for (p, z) in img.data.iter_mut().zip(z) {
                *p = (*p as f32 + noise * z).round().clamp(0.0, 255.0) as u8;
            }
        }
        t.add(score(&img, &ds.scene(i)).judged());
    }
    t
}

fn assert_at_least(t: &Tally, floor: f64, what: &str) {
    for name in ATTRIBUTES {
        if let Some(acc) = t.accuracy(name) {
            assert!(acc >= floor, "{what}: {name} read back {acc:.4} < {floor}");
        }
    }
    assert!(
        t.all_accuracy() >= floor,
        "{what}: all attributes {:.4} < {floor}",
        t.all_accuracy()
    );
}

#[test]
fn shapes_checker_reads_the_generator() {
    let ds = ShapesDataset::new(11, 1500, 32);
    let t = tally(&ds, 1500, 0.0, 0);
    assert_at_least(&t, 0.99, "clean 32x32");
    // Every attribute was judged: singles state size and position, pairs the relation.
    assert_eq!(t.attributes.len(), ATTRIBUTES.len(), "{t:?}");
    // Sampler output is never this clean: Gaussian pixel noise of 20 levels.
    assert_at_least(&tally(&ds, 800, 20.0, 1), 0.99, "noisy 32x32");
    // The geometry is defined on the canvas, so other sizes read the same.
    let big = ShapesDataset::new(11, 300, 64);
    assert_at_least(&tally(&big, 300, 0.0, 0), 0.99, "clean 64x64");
}

/// The pairs prompt set: thirty different two-object scenes, each of two different
/// shapes, every order of square / circle / triangle but triangle-square under both
/// relations, and the reader reads their drawn pictures right.
#[test]
fn pair_prompt_set_covers_the_shape_orders() {
    use kuosan_diffusion::data::shapes::ShapeKind::*;
    let scenes = pair_scenes();
    assert_eq!(scenes.len(), 30);
    for (i, s) in scenes.iter().enumerate() {
        assert!(matches!(s.layout, Layout::Pair(_)) && s.objects.len() == 2);
        assert_ne!(s.objects[0].shape, s.objects[1].shape, "{s:?}");
        assert!(!scenes[..i].contains(s), "scene {i} repeats");
        let mut t = Tally::default();
        t.add(score(&s.render(32), s).judged());
        assert_eq!(t.all_accuracy(), 1.0, "{s:?}");
    }
    for rel in [Relation::Above, Relation::LeftOf] {
        for order in [(Square, Circle), (Circle, Square), (Square, Triangle)] {
            let n = scenes
                .iter()
                .filter(|s| {
                    s.layout == Layout::Pair(rel)
                        && (s.objects[0].shape, s.objects[1].shape) == order
                })
                .count();
            assert_eq!(n, 3, "{order:?} {rel:?}: one per colour pair");
        }
    }
    let prompts = eval_prompts(&DataSpec::shapes(), PromptSet::Pairs).unwrap();
    assert_eq!(prompts.len(), 60, "English and Chinese");
    assert_eq!(PromptSet::parse("pairs").unwrap(), PromptSet::Pairs);
    assert!(PromptSet::parse("pair")
        .unwrap_err()
        .to_string()
        .contains("standard or pairs"));
}

/// `img` blurred by a Gaussian of `sigma` pixels (separable, edges clamped, 8-bit out).
fn blur(img: &Image, sigma: f32) -> Image {
    let r = (3.0 * sigma).ceil() as i64;
    let k: Vec<f32> = (-r..=r)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let ks: f32 = k.iter().sum();
    let (w, h, c) = (img.width as i64, img.height as i64, img.channels);
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0.0; src.len()];
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let mut acc = 0.0;
                    for (j, d) in (-r..=r).enumerate() {
                        let (sx, sy) = if horizontal {
                            ((x + d).clamp(0, w - 1), y)
                        } else {
                            (x, (y + d).clamp(0, h - 1))
                        };
                        acc += k[j] * src[((sy * w + sx) as usize) * c + ch];
                    }
                    out[((y * w + x) as usize) * c + ch] = acc / ks;
                }
            }
        }
        out
    };
    let src: Vec<f32> = img.data.iter().map(|&p| p as f32).collect();
    let out = pass(&pass(&src, true), false);
    let mut b = img.clone();
    for (p, v) in b.data.iter_mut().zip(out) {
        *p = v.round().clamp(0.0, 255.0) as u8;
    }
    b
}

#[test]
fn shapes_checker_reads_blurred_outlines() {
    // A sampler draws soft edges: a triangle's apex and base corners fall below half
    // coverage first, so its box shrinks and fills more (0.67 at 0.8 px for a small
    // one). The outline rule still reads it from the top / bottom balance; the old
    // fill-only rule reads many as circles, which is why it was replaced.
    let ds = ShapesDataset::new(5, 600, 32);
    for sigma in [0.8f32, 1.0] {
        let (mut outline, mut fill) = (Tally::default(), Tally::default());
        for i in 0..600 {
            let (img, scene) = (blur(&ds.image(i), sigma), ds.scene(i));
            outline.add(score(&img, &scene).judged());
            fill.add(score_with(&img, &scene, ShapeRule::FillOnly).judged());
        }
        assert_at_least(&outline, 0.99, &format!("blurred by {sigma} px"));
        let by_fill = fill.accuracy("shape").unwrap();
        assert!(
            by_fill < 0.95,
            "fill-only rule at {sigma} px: shape {by_fill}"
        );
    }
    // Unblurred, the two rules agree on the generator's pictures.
    for i in 0..300 {
        let (img, scene) = (ds.image(i), ds.scene(i));
        assert_eq!(
            score(&img, &scene),
            score_with(&img, &scene, ShapeRule::FillOnly),
            "item {i}"
        );
    }
    // The balance itself: a triangle (apex up) holds ~1/3 of its bottom half's pixels
    // in its top half, circles and squares half and half.
    for i in 0..300 {
        for d in detect(&ds.image(i)) {
            let want = if d.shape == kuosan_diffusion::data::shapes::ShapeKind::Triangle {
                0.3..0.5
            } else {
                0.9..1.1
            };
            assert!(want.contains(&d.balance), "item {i}: {d:?}");
        }
    }
}

#[test]
fn shapes_checker_catches_wrong_attributes() {
    let ds = ShapesDataset::new(3, 400, 32);
    let mut wrong_color = Tally::default();
    let mut swapped = Tally::default();
    for i in 0..400 {
        let (img, mut scene) = (ds.image(i), ds.scene(i));
        // Another colour for the first object: the colour must read as wrong.
        let c = scene.objects[0].color;
        scene.objects[0].color =
            Color::ALL[(Color::ALL.iter().position(|&x| x == c).unwrap() + 1) % 5];
        wrong_color.add(score(&img, &scene).judged());
        // A pair described the other way round: the relation must read as wrong.
        let mut scene = ds.scene(i);
        if let Layout::Pair(r) = scene.layout {
            scene.objects.swap(0, 1);
            scene.layout = Layout::Pair(r);
            swapped.add(score(&img, &scene).judged());
        }
    }
    assert_eq!(wrong_color.attributes["color"].0, 0, "{wrong_color:?}");
    assert_eq!(wrong_color.all, 0);
    assert!(swapped.n > 100);
    assert_eq!(swapped.attributes["relation"].0, 0, "{swapped:?}");
    // A blank picture has nothing right.
    let blank = Image::new(32, 32, 3, 0);
    assert!(detect(&blank).is_empty());
    let s = score(&blank, &ds.scene(0));
    assert!(!s.all && s.attributes[0] == Some(false));
    let pair = Scene::pair(
        (
            kuosan_diffusion::data::shapes::ShapeKind::Circle,
            Color::Red,
        ),
        (
            kuosan_diffusion::data::shapes::ShapeKind::Square,
            Color::Blue,
        ),
        Relation::Above,
        [0.0; 4],
    );
    assert!(score(&pair.render(32), &pair).all);
    assert_eq!(score(&blank, &pair).attributes[5], Some(false));
}

// ---- Frechet distance ---------------------------------------------------------------

use kuosan_diffusion::eval::frechet::{frechet_distance, frechet_distance_of, mean_cov, sqrt_psd};

fn random_rows(n: usize, d: usize, seed: u64, shift: f64, scale: f64) -> Vec<Vec<f64>> {
    let z = Philox::new(seed).normal_f32(n * d);
    z.chunks_exact(d)
        .map(|r| {
            // Correlated columns: x_j = scale (z_j + 0.5 z_{j-1}) + shift.
            (0..d)
                .map(|j| {
                    scale * (r[j] as f64 + if j > 0 { 0.5 * r[j - 1] as f64 } else { 0.0 }) + shift
                })
                .collect()
        })
        .collect()
}

#[test]
fn frechet_distance_matches_closed_forms() {
    let a = random_rows(400, 6, 1, 0.0, 1.0);
    // A set against itself: 0 (up to the square roots' rounding).
    assert!(frechet_distance_of(&a, &a).abs() < 1e-9);
    // A shift by c adds |c|^2 exactly: covariances are unchanged.
    let b: Vec<Vec<f64>> = a
        .iter()
        .map(|r| r.iter().map(|v| v + 0.5).collect())
        .collect();
    assert!((frechet_distance_of(&a, &b) - 6.0 * 0.25).abs() < 1e-9);
    // Scaling by s: S2 = s^2 S1, so d^2 = tr(S1) (1 - s)^2.
    let s = 1.7;
    let c: Vec<Vec<f64>> = a
        .iter()
        .map(|r| r.iter().map(|v| v * s).collect())
        .collect();
    let (m, cov) = mean_cov(&a);
    let trace: f64 = (0..6).map(|i| cov[i * 6 + i]).sum();
    let want = trace * (1.0 - s).powi(2) + m.iter().map(|v| (v * (s - 1.0)).powi(2)).sum::<f64>();
    assert!((frechet_distance_of(&a, &c) - want).abs() < 1e-8 * want.max(1.0));
    // Diagonal covariances: sum over axes of (mu1 - mu2)^2 + (sd1 - sd2)^2.
    let (mu1, mu2): ([f64; 3], [f64; 3]) = ([0.0, 1.0, -2.0], [0.5, 1.0, 0.0]);
    let (v1, v2): ([f64; 3], [f64; 3]) = ([1.0, 4.0, 0.25], [9.0, 1.0, 0.25]);
    let diag = |v: [f64; 3]| {
        (0..9)
            .map(|k| if k % 4 == 0 { v[k / 4] } else { 0.0 })
            .collect::<Vec<_>>()
    };
    let want: f64 = (0..3)
        .map(|i| (mu1[i] - mu2[i]).powi(2) + (v1[i].sqrt() - v2[i].sqrt()).powi(2))
        .sum();
    assert!((frechet_distance(&mu1, &diag(v1), &mu2, &diag(v2)) - want).abs() < 1e-10);
    // The square root squares back.
    let (_, cov) = mean_cov(&random_rows(300, 9, 4, 0.0, 2.0));
    let r = sqrt_psd(&cov, 9);
    for i in 0..9 {
        for j in 0..9 {
            let sq: f64 = (0..9).map(|k| r[i * 9 + k] * r[k * 9 + j]).sum();
            assert!((sq - cov[i * 9 + j]).abs() < 1e-9 * (1.0 + cov[i * 9 + j].abs()));
        }
    }
}

// ---- classifier and evaluate ----------------------------------------------------------

use kuosan_diffusion::config::ModelConfig;
use kuosan_diffusion::data::idx::{read_split, IdxKind};
use kuosan_diffusion::data::{DataSpec, Split};
use kuosan_diffusion::eval::classifier::{Classifier, ClassifierTraining};
use kuosan_diffusion::eval::{
    eval_prompts, evaluate, pair_scenes, EvalOptions, Judge, PromptSet, FRECHET_NOTE,
};
use kuosan_diffusion::models::Models;
use kuosan_tensor::Device;
use std::path::{Path, PathBuf};

/// A writable copy of a fixture folder (the classifier caches itself beside the data,
/// which must not be the repository).
fn fixture_copy(name: &str, tag: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let dst = std::env::temp_dir().join(format!("kuosan-eval-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

#[test]
fn classifier_learns_the_fixture_digits() {
    let dir = fixture_copy("mnist-mini", "classifier");
    let (x, y) = read_split(&dir, Split::Train).unwrap();
    let (tx, ty) = read_split(&dir, Split::Test).unwrap();
    let mut losses = Vec::new();
    let t = ClassifierTraining {
        epochs: 12,
        batch: 16,
        ..ClassifierTraining::default()
    };
    let c = Classifier::train(&x, &y, &Device::Cpu, &t, |_, _, l| losses.push(l)).unwrap();
    assert!(losses[11] < 0.3 * losses[0], "training loss {losses:?}");
    // 200 training digits are few; the full MNIST run is in the README (>= 98%).
    let acc = c.accuracy(&tx, &ty).unwrap();
    println!("fixture classifier: test accuracy {acc}, losses {losses:?}");
    assert!(acc >= 0.7, "test accuracy {acc}");
    // Cached beside the data on the first call, read back on the second.
    let first = Classifier::load_or_train(&dir, IdxKind::Mnist, &Device::Cpu, |_| {}).unwrap();
    assert!(
        first.trained_now && first.path.starts_with(&dir),
        "{:?}",
        first.path
    );
    let again = Classifier::load_or_train(&dir, IdxKind::Mnist, &Device::Cpu, |_| {}).unwrap();
    assert!(!again.trained_now);
    assert_eq!(again.path, first.path);
    assert_eq!(again.test_accuracy, first.test_accuracy);
    assert_eq!(
        again.classifier.features(&tx[..784 * 5]).unwrap(),
        first.classifier.features(&tx[..784 * 5]).unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn evaluate_reports_every_prompt() {
    let o = EvalOptions {
        n: 2,
        steps: 2,
        ..EvalOptions::default()
    };
    // shapes: 18 prompts, every attribute judged, English and Chinese halves.
    let cfg = ModelConfig::preset("tiny", 3, 32).unwrap();
    let models = Models::new(&cfg, &Device::Cpu, 0).unwrap();
    let spec = DataSpec::shapes();
    let judge = Judge::for_data(&spec, &Device::Cpu, |_| {}).unwrap();
    let mut calls = 0;
    let r = evaluate(&models, &cfg, &spec, &judge, &o, |_, _| calls += 1).unwrap();
    assert_eq!(r.prompts.len(), 18);
    assert_eq!((r.overall.n, r.english.n, r.chinese.n), (36, 18, 18));
    assert_eq!(calls, 18);
    for a in ATTRIBUTES {
        assert!(r.overall.attributes.contains_key(a), "{a} missing: {r:?}");
    }
    assert!(r.frechet_distance.is_none());
    let table = r.to_table();
    assert!(
        table.contains("中间是一个大的红色圆形") && table.contains("overall"),
        "{table}"
    );
    // MNIST: 20 prompts judged by the classifier, with a Frechet distance that says what it is.
    let dir = fixture_copy("mnist-mini", "evaluate");
    let spec = DataSpec::Mnist(dir.clone());
    let cfg = ModelConfig::preset("tiny", 1, 32).unwrap();
    let models = Models::new(&cfg, &Device::Cpu, 0).unwrap();
    let judge = Judge::for_data(&spec, &Device::Cpu, |_| {}).unwrap();
    let r = evaluate(&models, &cfg, &spec, &judge, &o, |_, _| {}).unwrap();
    assert_eq!(r.prompts.len(), 20);
    assert_eq!(r.overall.attributes.keys().collect::<Vec<_>>(), ["class"]);
    let fd = r.frechet_distance.unwrap();
    assert!(fd.is_finite() && fd >= 0.0, "{fd}");
    assert_eq!(r.frechet_note, Some(FRECHET_NOTE));
    assert!(FRECHET_NOTE.contains("not Inception FID"));
    let json = serde_json::to_value(&r).unwrap();
    assert!(
        json["prompts"][0]["accuracy"].is_number()
            && json["classifier"]["test_accuracy"].is_number()
    );
    // A shapes judge cannot score digits, and image folders have no prompts to judge.
    assert!(evaluate(&models, &cfg, &spec, &Judge::Shapes, &o, |_, _| {}).is_err());
    let folder = DataSpec::parse("folder:/nowhere").unwrap();
    let e = eval_prompts(&folder, PromptSet::Standard)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no labels"), "{e}");
    let e = eval_prompts(
        &DataSpec::parse("mnist:/nowhere").unwrap(),
        PromptSet::Pairs,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("pairs") && e.contains("shapes"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
