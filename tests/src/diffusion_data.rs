//! Datasets and image I/O of the diffusion crate: the generated `shapes` data (determinism,
//! captions against attributes, attributes read back from pixels), the IDX loaders on the
//! small fixtures in `tests/fixtures/` (never the full sets in ../shared), the image
//! folder, deterministic and resumable batches, and PNG read/write, grids and resizing.
//! Every error test checks that the message names the file (and line) and the fault.

use kuosan_diffusion::data::folder::{FolderDataset, METADATA};
use kuosan_diffusion::data::idx::{self, IdxDataset, IdxKind};
use kuosan_diffusion::data::shapes::{
    self, Color, Lang, Layout, Position, Relation, Scene, ShapeKind, ShapesDataset, Size,
};
use kuosan_diffusion::data::{
    epoch_order, parse_spec, DataOptions, DataPos, DataSpec, Dataset, Loader, Split,
};
use kuosan_diffusion::image::{self, grid_size, read_png, save_grid, write_png, Image};
use kuosan_tensor::{Device, Tensor};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kuosan-data-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[track_caller]
fn assert_err_contains<T, E: std::fmt::Display>(r: Result<T, E>, parts: &[&str]) -> String {
    let msg = match r {
        Ok(_) => panic!("expected an error containing {parts:?}, got Ok"),
        Err(e) => e.to_string(),
    };
    for p in parts {
        assert!(msg.contains(p), "error {msg:?} does not contain {p:?}");
    }
    msg
}

// ---- shapes -------------------------------------------------------------------------

#[test]
fn shapes_deterministic_per_seed() {
    let a = ShapesDataset::new(7, 100, 32);
    let b = ShapesDataset::new(7, 100, 32);
    let c = ShapesDataset::new(8, 100, 32);
    let mut differs = 0;
    for i in 0..100 {
        let (sa, sb) = (a.get(i).unwrap(), b.get(i).unwrap());
        assert_eq!(sa, sb, "item {i}");
        if sa != c.get(i).unwrap() {
            differs += 1;
        }
    }
    assert!(
        differs > 90,
        "seed 8 repeats seed 7 on {} items",
        100 - differs
    );
    // Item i does not depend on the dataset's length or on other items.
    let long = ShapesDataset::new(7, 10_000, 32);
    assert_eq!(long.get(42).unwrap(), a.get(42).unwrap());
}

#[test]
fn shapes_pair_share() {
    let is_pair = |d: &ShapesDataset, i| matches!(d.scene(i).layout, Layout::Pair(_));
    let share = |d: &ShapesDataset| (0..4000).filter(|&i| is_pair(d, i)).count() as f64 / 4000.0;
    let half = ShapesDataset::new(3, 4000, 32);
    let more = ShapesDataset::with_pairs(3, 4000, 32, 750);
    assert!((share(&half) - 0.5).abs() < 0.03, "{}", share(&half));
    assert!((share(&more) - 0.75).abs() < 0.03, "{}", share(&more));
    assert_eq!(share(&ShapesDataset::with_pairs(3, 4000, 32, 0)), 0.0);
    assert_eq!(share(&ShapesDataset::with_pairs(3, 4000, 32, 1000)), 1.0);
    // Each item says how many objects it shows (the timestep bias's multi_object scope
    // reads it), and the loader hands the counts on beside the captions.
    for i in 0..200 {
        let want = if is_pair(&half, i) { 2 } else { 1 };
        assert_eq!(half.get(i).unwrap().objects, Some(want), "item {i}");
    }
    let mut loader = Loader::new(Arc::new(ShapesDataset::new(3, 4000, 32)), 9, 16).unwrap();
    let batch = loader.next_batch(&Device::Cpu).unwrap();
    assert_eq!(batch.objects.len(), 16);
    for (k, &i) in batch.indices.iter().enumerate() {
        assert_eq!(batch.objects[k], half.get(i).unwrap().objects);
    }
    assert!(batch.objects.contains(&Some(1)) && batch.objects.contains(&Some(2)));
    // One threshold on the same word: raising the share only turns singles into pairs,
    // and an item that stays what it was is the same item.
    for i in 0..4000 {
        if is_pair(&half, i) {
            assert!(is_pair(&more, i), "item {i}");
            assert_eq!(half.get(i).unwrap(), more.get(i).unwrap(), "item {i}");
        }
    }
    // The spec carries the share; bad ones say what is allowed.
    assert_eq!(
        DataSpec::parse("shapes:pairs=0.75").unwrap(),
        DataSpec::Shapes {
            pairs_permille: 750
        }
    );
    assert_eq!(
        DataSpec::parse("shapes:pairs=0.5").unwrap(),
        DataSpec::shapes()
    );
    let opts = DataOptions {
        shapes_len: 10,
        ..DataOptions::default()
    };
    for bad in [
        "shapes:pairs=1.5",
        "shapes:pairs=-0.1",
        "shapes:pairs=x",
        "shapes:0.7",
    ] {
        assert_err_contains(parse_spec(bad, &opts), &["pairs=F", "[0, 1]"]);
    }
}

#[test]
fn shapes_images_in_range_on_black() {
    let ds = ShapesDataset::new(1, 64, 32);
    assert_eq!((ds.channels(), ds.size()), (3, 32));
    for i in 0..64 {
        let s = ds.get(i).unwrap();
        assert_eq!(s.image.len(), 3 * 32 * 32);
        assert!(s.image.iter().all(|v| (-1.0..=1.0).contains(v)));
        // Corners are background: exactly black.
        for &p in &[0, 31, 31 * 32, 32 * 32 - 1] {
            for c in 0..3 {
                assert_eq!(s.image[c * 1024 + p], -1.0, "item {i} corner {p}");
            }
        }
    }
}

#[test]
fn shapes_captions_match_attributes() {
    let ds = ShapesDataset::new(3, 400, 32);
    for i in 0..400 {
        let scene = ds.scene(i);
        let (en, zh) = ds.captions(i);
        let o = &scene.objects;
        match scene.layout {
            Layout::Single(p) => {
                assert_eq!(o.len(), 1);
                assert_eq!(
                    en,
                    format!(
                        "a {} {} {} {}",
                        o[0].size.en(),
                        o[0].color.en(),
                        o[0].shape.en(),
                        p.en()
                    )
                );
                assert_eq!(
                    zh,
                    format!(
                        "{}是一个{}{}{}",
                        p.zh(),
                        o[0].size.zh(),
                        o[0].color.zh(),
                        o[0].shape.zh()
                    )
                );
            }
            Layout::Pair(r) => {
                assert_eq!(o.len(), 2);
                assert!((o[0].shape, o[0].color) != (o[1].shape, o[1].color));
                assert_eq!(
                    en,
                    format!(
                        "a {} {} {} a {} {}",
                        o[0].color.en(),
                        o[0].shape.en(),
                        r.en(),
                        o[1].color.en(),
                        o[1].shape.en()
                    )
                );
                assert_eq!(
                    zh,
                    format!(
                        "{}{}在{}{}的{}",
                        o[0].color.zh(),
                        o[0].shape.zh(),
                        o[1].color.zh(),
                        o[1].shape.zh(),
                        r.zh()
                    )
                );
            }
        }
        let want = match ds.lang(i) {
            Lang::En => &en,
            Lang::Zh => &zh,
        };
        assert_eq!(&ds.get(i).unwrap().caption, want, "item {i}");
    }
    // The brief's examples, built by hand.
    let obj = |shape, color, size| shapes::Object {
        shape,
        color,
        size,
        cx: 16.0,
        cy: 16.0,
        half: 5.0,
    };
    let one = Scene {
        layout: Layout::Single(Position::Left),
        objects: vec![obj(ShapeKind::Circle, Color::Red, Size::Large)],
    };
    assert_eq!(
        one.captions(),
        (
            "a large red circle on the left".into(),
            "左边是一个大的红色圆形".into()
        )
    );
    let two = Scene {
        layout: Layout::Pair(Relation::LeftOf),
        objects: vec![
            obj(ShapeKind::Triangle, Color::Green, Size::Small),
            obj(ShapeKind::Circle, Color::White, Size::Small),
        ],
    };
    assert_eq!(
        two.captions(),
        (
            "a green triangle left of a white circle".into(),
            "绿色三角形在白色圆形的左边".into()
        )
    );
}

#[test]
fn shapes_all_attribute_values_occur() {
    let ds = ShapesDataset::new(11, 3000, 32);
    let (mut kinds, mut colors, mut sizes, mut positions, mut relations) = (
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
    );
    let (mut zh, mut pairs) = (0, 0);
    for i in 0..3000 {
        let s = ds.scene(i);
        for o in &s.objects {
            kinds.insert(o.shape);
            colors.insert(o.color);
            sizes.insert((o.size, matches!(s.layout, Layout::Single(_))));
        }
        match s.layout {
            Layout::Single(p) => {
                positions.insert(p);
            }
            Layout::Pair(r) => {
                relations.insert(r);
                pairs += 1;
            }
        }
        zh += (ds.lang(i) == Lang::Zh) as usize;
    }
    assert_eq!(kinds.len(), ShapeKind::ALL.len());
    assert_eq!(colors.len(), Color::ALL.len());
    // Singles come in both sizes; pairs are small.
    assert!(sizes.contains(&(Size::Small, true)) && sizes.contains(&(Size::Large, true)));
    assert!(!sizes.contains(&(Size::Large, false)));
    assert_eq!(positions.len(), Position::ALL.len());
    assert_eq!(relations.len(), Relation::ALL.len());
    assert!(
        (1300..1700).contains(&zh),
        "{zh} of 3000 captions in Chinese"
    );
    assert!(
        (1300..1700).contains(&pairs),
        "{pairs} of 3000 scenes are pairs"
    );
}

/// What a rule-based checker reads from one object's pixels: (colour, shape, size,
/// bounding-box centre).
fn read_object(
    img: &Image,
    lit: impl Fn(usize, usize) -> bool,
) -> (Color, ShapeKind, Size, f32, f32) {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    let (mut cover, mut sum, mut full) = (0f32, [0u32; 3], 0u32);
    for y in 0..img.height {
        for x in 0..img.width {
            let px = [img.at(x, y, 0), img.at(x, y, 1), img.at(x, y, 2)];
            let m = *px.iter().max().unwrap();
            if m == 0 || !lit(x, y) {
                continue;
            }
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            cover += m as f32 / 255.0;
            if m == 255 {
                full += 1;
                for c in 0..3 {
                    sum[c] += px[c] as u32;
                }
            }
        }
    }
    let mean = sum.map(|s| (s as f32 / full as f32).round() as u8);
    let color = *Color::ALL
        .iter()
        .find(|c| c.rgb() == mean)
        .expect("a pure colour");
    let (w, h) = ((x1 - x0 + 1) as f32, (y1 - y0 + 1) as f32);
    let fill = cover / (w * h);
    let shape = *ShapeKind::ALL
        .iter()
        .min_by(|a, b| {
            (a.fill_ratio() - fill)
                .abs()
                .total_cmp(&(b.fill_ratio() - fill).abs())
        })
        .unwrap();
    let size = if w > 13.0 { Size::Large } else { Size::Small };
    (
        color,
        shape,
        size,
        (x0 + x1 + 1) as f32 / 2.0,
        (y0 + y1 + 1) as f32 / 2.0,
    )
}

#[test]
fn shapes_attributes_read_back_from_pixels() {
    let ds = ShapesDataset::new(5, 600, 32);
    for i in 0..600 {
        let (scene, img) = (ds.scene(i), ds.image(i));
        match scene.layout {
            Layout::Single(p) => {
                let o = scene.objects[0];
                let (color, shape, size, cx, cy) = read_object(&img, |_, _| true);
                assert_eq!((color, shape, size), (o.color, o.shape, o.size), "item {i}");
                assert_eq!((cx, cy), (o.cx, o.cy), "item {i}: box centre");
                assert_eq!(Position::classify(cx, cy), p, "item {i}");
            }
            Layout::Pair(r) => {
                // The first object lies wholly in the left (top) half, the second in the other.
                let first = |x: usize, y: usize| match r {
                    Relation::LeftOf => x < 16,
                    Relation::Above => y < 16,
                };
                for (k, o) in scene.objects.iter().enumerate() {
                    let (color, shape, _, cx, cy) =
                        read_object(&img, |x, y| first(x, y) == (k == 0));
                    assert_eq!((color, shape), (o.color, o.shape), "item {i} object {k}");
                    assert_eq!((cx, cy), (o.cx, o.cy), "item {i} object {k}");
                }
            }
        }
    }
}

#[test]
fn shapes_render_at_other_sizes() {
    let ds = ShapesDataset::new(2, 10, 64);
    let s = ds.get(3).unwrap();
    assert_eq!(s.image.len(), 3 * 64 * 64);
    assert_eq!(ds.scene(3), ShapesDataset::new(2, 10, 32).scene(3));
}

// ---- idx ----------------------------------------------------------------------------

fn check_idx_fixture(kind: IdxKind, dir: &str) {
    let dir = fixtures().join(dir);
    for (split, n) in [(Split::Train, 200), (Split::Test, 100)] {
        let ds = IdxDataset::open(&dir, kind, split, 32).unwrap();
        assert_eq!(ds.len(), n);
        assert_eq!((ds.channels(), ds.size()), (1, 32));
        let mut counts = [0usize; 10];
        for &l in ds.labels() {
            counts[l as usize] += 1;
        }
        assert_eq!(counts, [n / 10; 10], "{kind:?} {split:?}: stratified");
        let mut langs = HashSet::new();
        for i in 0..n {
            let s = ds.get(i).unwrap();
            assert_eq!(s.image.len(), 32 * 32);
            assert_eq!(s.objects, None, "digits and clothes are not counted");
            // 2 px of padding each side: rows 0, 1, 30, 31 and the same columns are black.
            for k in 0..32 {
                for e in [0, 1, 30, 31] {
                    assert_eq!(s.image[e * 32 + k], -1.0, "item {i} row {e}");
                    assert_eq!(s.image[k * 32 + e], -1.0, "item {i} col {e}");
                }
            }
            assert!(s.image.iter().any(|&v| v > 0.5), "item {i} is blank");
            let (en, zh) = idx::caption_templates(kind, ds.label(i));
            assert!(
                en.contains(&s.caption) || zh.contains(&s.caption),
                "{}",
                s.caption
            );
            langs.insert(en.contains(&s.caption));
        }
        assert_eq!(langs.len(), 2, "both languages occur");
    }
}

#[test]
fn idx_fixtures_load() {
    check_idx_fixture(IdxKind::Mnist, "mnist-mini");
    check_idx_fixture(IdxKind::FashionMnist, "fashion-mnist-mini");
}

#[test]
fn idx_caption_templates() {
    let (en, zh) = idx::caption_templates(IdxKind::Mnist, 7);
    assert!(en.contains(&"the digit 7".into()) && en.contains(&"a handwritten seven".into()));
    assert!(zh.contains(&"数字七".into()) && zh.contains(&"手写的七".into()));
    let (en, zh) = idx::caption_templates(IdxKind::FashionMnist, 9);
    assert!(
        en.contains(&"an ankle boot".into()) && en.contains(&"a photo of an ankle boot".into())
    );
    assert!(zh.contains(&"一只短靴".into()));
    // Every class's captions differ from every other class's.
    for kind in [IdxKind::Mnist, IdxKind::FashionMnist] {
        let mut seen = HashSet::new();
        for l in 0..10 {
            let (en, zh) = idx::caption_templates(kind, l);
            for c in en.into_iter().chain(zh) {
                assert!(seen.insert(c.clone()), "{kind:?}: {c:?} twice");
            }
        }
    }
}

/// Copies the mnist-mini fixture's train split into a scratch dir.
fn mnist_copy(name: &str) -> PathBuf {
    let dir = scratch(name);
    for f in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"] {
        fs::copy(fixtures().join("mnist-mini").join(f), dir.join(f)).unwrap();
    }
    dir
}

#[test]
fn idx_uncompressed_files_read() {
    let dir = scratch("idx-raw");
    let imgs: Vec<u8> = (0..3 * 28 * 28).map(|k| (k % 251) as u8).collect();
    idx::write_idx(
        &dir.join("t10k-images-idx3-ubyte"),
        &[3, 28, 28],
        &imgs,
        false,
    )
    .unwrap();
    idx::write_idx(&dir.join("t10k-labels-idx1-ubyte"), &[3], &[4, 0, 9], false).unwrap();
    let ds = IdxDataset::open(&dir, IdxKind::Mnist, Split::Test, 32).unwrap();
    assert_eq!(ds.labels(), [4, 0, 9]);
    // Pixel (x, y) of item 1 sits at (x + 2, y + 2).
    let img = ds.image(1);
    assert_eq!(img.at(2 + 5, 2 + 3, 0), imgs[28 * 28 + 3 * 28 + 5]);
}

#[test]
fn idx_errors_name_file_and_fault() {
    // Missing files.
    let dir = scratch("idx-missing");
    assert_err_contains(
        IdxDataset::open(&dir, IdxKind::Mnist, Split::Train, 32),
        &[dir.to_str().unwrap(), "train-images-idx3-ubyte.gz"],
    );
    assert_err_contains(
        IdxDataset::open(&dir.join("nope"), IdxKind::Mnist, Split::Train, 32),
        &["nope", "no such directory"],
    );

    // Truncated gzip stream.
    let dir = mnist_copy("idx-trunc-gz");
    let f = dir.join("train-images-idx3-ubyte.gz");
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    assert_err_contains(
        IdxDataset::open(&dir, IdxKind::Mnist, Split::Train, 32),
        &[f.to_str().unwrap(), "gzip"],
    );

    // Wrong magic: a labels file where the images belong.
    let dir = mnist_copy("idx-magic");
    let f = dir.join("train-images-idx3-ubyte.gz");
    fs::copy(dir.join("train-labels-idx1-ubyte.gz"), &f).unwrap();
    assert_err_contains(
        IdxDataset::open(&dir, IdxKind::Mnist, Split::Train, 32),
        &[
            f.to_str().unwrap(),
            "wrong magic number 0x00000801",
            "expected 0x00000803",
        ],
    );

    // Not IDX at all (uncompressed garbage).
    fs::write(&f, b"hello world, not idx").unwrap();
    assert_err_contains(
        IdxDataset::open(&dir, IdxKind::Mnist, Split::Train, 32),
        &[f.to_str().unwrap(), "wrong magic number"],
    );

    // Truncated data: the header promises more images than the file holds.
    let dir = scratch("idx-short");
    let f = dir.join("train-images-idx3-ubyte");
    let mut raw = idx::IMAGES_MAGIC.to_be_bytes().to_vec();
    for d in [10u32, 28, 28] {
        raw.extend_from_slice(&d.to_be_bytes());
    }
    raw.extend(vec![0u8; 5 * 28 * 28]);
    fs::write(&f, &raw).unwrap();
    idx::write_idx(&dir.join("train-labels-idx1-ubyte"), &[10], &[0; 10], false).unwrap();
    assert_err_contains(
        IdxDataset::open(&dir, IdxKind::Mnist, Split::Train, 32),
        &[f.to_str().unwrap(), "truncated", "7840 bytes", "has 3920"],
    );

    // Truncated header.
    fs::write(&f, &raw[..9]).unwrap();
    assert_err_contains(
        IdxDataset::open(&dir, IdxKind::Mnist, Split::Train, 32),
        &[f.to_str().unwrap(), "truncated header"],
    );

    // Counts that disagree, and a label that is no class.
    let dir = scratch("idx-count");
    idx::write_idx(
        &dir.join("train-images-idx3-ubyte"),
        &[2, 28, 28],
        &[0; 2 * 784],
        false,
    )
    .unwrap();
    let lf = dir.join("train-labels-idx1-ubyte");
    idx::write_idx(&lf, &[3], &[1, 2, 3], false).unwrap();
    assert_err_contains(
        IdxDataset::open(&dir, IdxKind::Mnist, Split::Train, 32),
        &[lf.to_str().unwrap(), "3 labels for 2 images"],
    );
    idx::write_idx(&lf, &[2], &[1, 12], false).unwrap();
    assert_err_contains(
        IdxDataset::open(&dir, IdxKind::Mnist, Split::Train, 32),
        &[lf.to_str().unwrap(), "label 12 at index 1"],
    );

    // Wrong image size.
    let dir = scratch("idx-size");
    idx::write_idx(
        &dir.join("train-images-idx3-ubyte"),
        &[1, 20, 20],
        &[0; 400],
        false,
    )
    .unwrap();
    idx::write_idx(&dir.join("train-labels-idx1-ubyte"), &[1], &[1], false).unwrap();
    assert_err_contains(
        IdxDataset::open(&dir, IdxKind::Mnist, Split::Train, 32),
        &["train-images-idx3-ubyte", "20x20, expected 28x28"],
    );
}

// ---- folder -------------------------------------------------------------------------

#[test]
fn folder_fixture_loads() {
    let dir = fixtures().join("folder-mini");
    let ds = FolderDataset::open(&dir, 32).unwrap();
    assert_eq!((ds.len(), ds.channels(), ds.size()), (4, 3, 32));
    let meta = fs::read_to_string(dir.join(METADATA)).unwrap();
    for (i, line) in meta.lines().enumerate() {
        let s = ds.get(i).unwrap();
        assert_eq!(s.image.len(), 3 * 32 * 32);
        assert_eq!(s.objects, None);
        assert!(s.image.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert!(line.contains(&format!("\"{}\"", s.caption)), "{line}");
    }
    // Every item has something drawn on it (cropping kept the subject).
    for i in 0..4 {
        assert!(ds.image(i).data.iter().any(|&v| v > 0), "item {i}");
    }
    // The same through a spec.
    let spec = format!("folder:{}", dir.display());
    let ds = parse_spec(&spec, &DataOptions::default()).unwrap();
    assert_eq!(ds.len(), 4);
}

/// A scratch copy of the folder fixture with `metadata` as its metadata.jsonl.
fn folder_with(name: &str, metadata: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    for e in fs::read_dir(fixtures().join("folder-mini")).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    let meta = dir.join(METADATA);
    fs::write(&meta, metadata).unwrap();
    (dir, meta)
}

#[test]
fn folder_errors_name_file_and_line() {
    let good = r#"{"file_name": "0001.png", "text": "one"}"#;
    let m = |path: &PathBuf, line: usize| format!("{}:{line}:", path.display());

    let (dir, meta) = folder_with(
        "folder-json",
        &format!("{good}\n\n{{\"file_name\": \"0002.png\",\n"),
    );
    assert_err_contains(
        FolderDataset::open(&dir, 32),
        &[&m(&meta, 3), "not valid JSON"],
    );

    let (dir, meta) = folder_with(
        "folder-missing",
        &format!("{good}\n{{\"file_name\": \"nothere.png\", \"text\": \"x\"}}\n"),
    );
    assert_err_contains(
        FolderDataset::open(&dir, 32),
        &[&m(&meta, 2), "nothere.png", "not found"],
    );

    let (dir, meta) = folder_with(
        "folder-key",
        &format!("{good}\n{{\"file_name\": \"0002.png\"}}\n"),
    );
    assert_err_contains(
        FolderDataset::open(&dir, 32),
        &[&m(&meta, 2), "missing key \"text\""],
    );

    let (dir, meta) = folder_with("folder-type", "{\"file_name\": 3, \"text\": \"x\"}\n");
    assert_err_contains(
        FolderDataset::open(&dir, 32),
        &[&m(&meta, 1), "\"file_name\" must be a string"],
    );

    let (dir, meta) = folder_with("folder-empty-meta", "\n\n");
    assert_err_contains(
        FolderDataset::open(&dir, 32),
        &[meta.to_str().unwrap(), "no images"],
    );

    // A JPEG listed: the line, the image file, and why.
    let (dir, meta) = folder_with(
        "folder-jpg",
        "{\"file_name\": \"x.jpg\", \"text\": \"x\"}\n",
    );
    fs::write(dir.join("x.jpg"), [0xFF, 0xD8, 0xFF, 0xE0, 0, 16]).unwrap();
    assert_err_contains(
        FolderDataset::open(&dir, 32),
        &[&m(&meta, 1), "x.jpg", "JPEG"],
    );

    // A broken PNG.
    let (dir, meta) = folder_with(
        "folder-badpng",
        "{\"file_name\": \"0001.png\", \"text\": \"x\"}\n",
    );
    let png = fs::read(dir.join("0001.png")).unwrap();
    fs::write(dir.join("0001.png"), &png[..40]).unwrap();
    assert_err_contains(
        FolderDataset::open(&dir, 32),
        &[&m(&meta, 1), "0001.png", "PNG"],
    );

    assert_err_contains(
        FolderDataset::open(&meta, 32),
        &[meta.to_str().unwrap(), "not a directory"],
    );

    // An empty folder.
    let dir = scratch("folder-none");
    assert_err_contains(
        FolderDataset::open(&dir, 32),
        &[dir.to_str().unwrap(), "no metadata.jsonl"],
    );
}

// ---- specs --------------------------------------------------------------------------

#[test]
fn data_specs() {
    let opts = DataOptions {
        shapes_len: 10,
        ..DataOptions::default()
    };
    assert_eq!(DataSpec::parse("shapes").unwrap(), DataSpec::shapes());
    assert_eq!(
        DataSpec::parse("mnist:/x/y").unwrap(),
        DataSpec::Mnist(PathBuf::from("/x/y"))
    );
    let ds = parse_spec("shapes", &opts).unwrap();
    assert_eq!((ds.len(), ds.channels(), ds.size()), (10, 3, 32));
    let mnist = format!("mnist:{}", fixtures().join("mnist-mini").display());
    assert_eq!(parse_spec(&mnist, &opts).unwrap().len(), 200);
    let test = DataOptions {
        split: Split::Test,
        ..opts.clone()
    };
    let fashion = format!(
        "fashion-mnist:{}",
        fixtures().join("fashion-mnist-mini").display()
    );
    assert_eq!(parse_spec(&fashion, &test).unwrap().len(), 100);

    assert_err_contains(
        parse_spec("cifar:/data", &opts),
        &["cifar", "unknown dataset kind"],
    );
    assert_err_contains(parse_spec("mnist", &opts), &["needs a directory"]);
    assert_err_contains(parse_spec("mnist:", &opts), &["needs a directory"]);
    assert_err_contains(parse_spec("shapes:/x", &opts), &["takes no directory"]);
    assert_err_contains(parse_spec("", &opts), &["empty data spec"]);
    // A directory without the expected files names the file it wanted.
    let folder = fixtures().join("folder-mini");
    assert_err_contains(
        parse_spec(&format!("mnist:{}", folder.display()), &opts),
        &["folder-mini", "train-images-idx3-ubyte.gz"],
    );
    assert_err_contains(
        parse_spec(
            &format!("folder:{}", fixtures().join("mnist-mini").display()),
            &opts,
        ),
        &["mnist-mini", "no metadata.jsonl"],
    );
}

// ---- batches ------------------------------------------------------------------------

fn shapes(len: usize) -> Arc<dyn Dataset> {
    Arc::new(ShapesDataset::new(4, len, 32))
}

#[test]
fn epoch_orders_are_seeded_permutations() {
    let n = 101;
    let e0 = epoch_order(9, 0, n);
    let mut sorted = e0.clone();
    sorted.sort();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    assert_eq!(e0, epoch_order(9, 0, n));
    assert_ne!(e0, epoch_order(9, 1, n), "epochs shuffle differently");
    assert_ne!(e0, epoch_order(10, 0, n), "seeds shuffle differently");
    assert_ne!(e0, (0..n).collect::<Vec<_>>());
    assert_eq!(epoch_order(1, 0, 1), [0]);
    assert!(epoch_order(1, 0, 0).is_empty());
}

#[test]
fn batches_deterministic_and_resumable() {
    let dev = Device::Cpu;
    let ds = shapes(23);
    // Same seed and position: the same batch.
    let mut a = Loader::new(ds.clone(), 5, 4).unwrap();
    let mut b = Loader::new(ds.clone(), 5, 4).unwrap();
    let mut run = Vec::new();
    for _ in 0..15 {
        let (x, y) = (a.next_batch(&dev).unwrap(), b.next_batch(&dev).unwrap());
        assert_eq!(x.images.dims(), [4, 3, 32, 32]);
        assert_eq!(
            x.images.to_vec::<f32>().unwrap(),
            y.images.to_vec::<f32>().unwrap()
        );
        assert_eq!((&x.captions, &x.indices), (&y.captions, &y.indices));
        for (k, &i) in x.indices.iter().enumerate() {
            assert_eq!(x.captions[k], ds.get(i).unwrap().caption);
        }
        run.push(x);
    }
    // 15 batches of 4 = 60 samples: epochs 0 and 1 whole, 14 of epoch 2.
    assert_eq!(
        a.position(),
        DataPos {
            epoch: 2,
            offset: 14
        }
    );
    assert_eq!(a.position(), DataPos::after(60, 23));
    let stream: Vec<usize> = run.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(stream[..23], epoch_order(5, 0, 23)[..]);
    assert_eq!(stream[23..46], epoch_order(5, 1, 23)[..]);
    assert_eq!(stream[46..], epoch_order(5, 2, 23)[..14]);
    assert_ne!(stream[..23], stream[23..46], "epochs differ");

    // Resume: a fresh loader seeked to where batch 7 started continues exactly.
    let mut c = Loader::new(ds.clone(), 5, 4).unwrap();
    c.seek(run[7].start).unwrap();
    assert_eq!(run[7].start, DataPos::after(28, 23));
    for want in &run[7..] {
        let got = c.next_batch(&dev).unwrap();
        assert_eq!(got.indices, want.indices);
        assert_eq!(
            got.images.to_vec::<f32>().unwrap(),
            want.images.to_vec::<f32>().unwrap()
        );
        assert_eq!((got.start, got.next), (want.start, want.next));
    }
    // A different seed orders differently.
    let mut d = Loader::new(ds.clone(), 6, 4).unwrap();
    let other: Vec<usize> = (0..6)
        .flat_map(|_| d.next_batch(&dev).unwrap().indices)
        .collect();
    assert_ne!(other[..23], stream[..23]);

    assert_err_contains(
        c.seek(DataPos {
            epoch: 0,
            offset: 23,
        }),
        &["past the dataset's 23 items"],
    );
    assert_err_contains(Loader::new(ds.clone(), 5, 0), &["batch size"]);
    assert_err_contains(Loader::new(shapes(0), 5, 2), &["no items"]);
}

#[test]
fn batches_from_idx_fixture() {
    let ds: Arc<dyn Dataset> = Arc::new(
        IdxDataset::open(
            &fixtures().join("mnist-mini"),
            IdxKind::Mnist,
            Split::Test,
            32,
        )
        .unwrap(),
    );
    let mut l = Loader::new(ds, 1, 16).unwrap();
    let b = l.next_batch(&Device::Cpu).unwrap();
    assert_eq!(b.images.dims(), [16, 1, 32, 32]);
    assert_eq!(b.captions.len(), 16);
}

// ---- image --------------------------------------------------------------------------

fn pattern(w: usize, h: usize, c: usize) -> Image {
    let data = (0..w * h * c).map(|k| (k * 37 % 256) as u8).collect();
    Image::from_vec(w, h, c, data).unwrap()
}

#[test]
fn png_round_trip() {
    let dir = scratch("png");
    for c in [1, 3, 4] {
        let img = pattern(7, 5, c);
        let p = dir.join(format!("x{c}.png"));
        write_png(&p, &img).unwrap();
        assert_eq!(read_png(&p).unwrap(), img, "{c} channels");
        assert_eq!(image::png_dimensions(&p).unwrap(), (7, 5));
    }
    // RGBA -> RGB drops alpha; RGB -> gray is luma.
    let rgba = Image::from_vec(1, 1, 4, vec![255, 0, 0, 7]).unwrap();
    assert_eq!(rgba.to_channels(3).unwrap().data, [255, 0, 0]);
    assert_eq!(rgba.to_channels(1).unwrap().data, [76]);
    // No temporary files left beside the outputs.
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn png_read_errors() {
    let dir = scratch("png-err");
    let jpg = dir.join("photo.jpg");
    fs::write(
        &jpg,
        [0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F'],
    )
    .unwrap();
    assert_err_contains(
        read_png(&jpg),
        &["photo.jpg", "unsupported format JPEG", "PNG only"],
    );
    // A JPEG by content whatever its name.
    let renamed = dir.join("photo.png");
    fs::copy(&jpg, &renamed).unwrap();
    assert_err_contains(read_png(&renamed), &["photo.png", "JPEG"]);
    let text = dir.join("notes.png");
    fs::write(&text, "hello").unwrap();
    assert_err_contains(read_png(&text), &["notes.png", "not a PNG"]);
    assert_err_contains(
        read_png(dir.join("absent.png")),
        &["absent.png", "cannot read"],
    );
    let good = dir.join("good.png");
    write_png(&good, &pattern(9, 9, 3)).unwrap();
    let bytes = fs::read(&good).unwrap();
    fs::write(&good, &bytes[..bytes.len() - 30]).unwrap();
    assert_err_contains(read_png(&good), &["good.png", "corrupt PNG"]);
}

#[test]
fn chw_conversion_round_trips() {
    let img = pattern(6, 4, 3);
    let chw = img.to_chw();
    assert_eq!(chw.len(), 72);
    assert_eq!(chw[0], img.at(0, 0, 0) as f32 / 127.5 - 1.0);
    assert_eq!(chw[24 + 5], img.at(5, 0, 1) as f32 / 127.5 - 1.0); // channel 1, pixel (5, 0)
    assert_eq!(Image::from_chw(&chw, 3, 4, 6).unwrap(), img);
    let t = img.to_tensor(&Device::Cpu).unwrap();
    assert_eq!(t.dims(), [3, 4, 6]);
    assert_eq!(Image::from_tensor(&t).unwrap(), img);
    // Out of range and NaN clamp instead of wrapping.
    let odd = Image::from_chw(&[-3.0, 2.0, f32::NAN, 0.0], 1, 2, 2).unwrap();
    assert_eq!(odd.data, [0, 255, 128, 128]);
}

#[test]
fn resize_and_crop() {
    let img = pattern(48, 30, 3);
    let sq = img.center_crop_square();
    assert_eq!((sq.width, sq.height), (30, 30));
    assert_eq!(
        sq.at(0, 0, 0),
        img.at(9, 0, 0),
        "centred: 9 px cut each side"
    );
    let tall = pattern(20, 50, 1).center_crop_square();
    assert_eq!((tall.width, tall.height), (20, 20));
    for (w, h) in [(32, 32), (17, 9), (64, 64), (1, 1)] {
        let r = img.resize(w, h);
        assert_eq!(
            (r.width, r.height, r.channels, r.data.len()),
            (w, h, 3, w * h * 3)
        );
    }
    assert_eq!(img.fit_square(32).width, 32);
    // A flat image stays flat either way.
    let flat = Image::new(10, 7, 1, 77);
    assert!(flat.resize(3, 3).data.iter().all(|&v| v == 77));
    assert!(flat.resize(31, 29).data.iter().all(|&v| v == 77));
    // Halving by area averages 2x2 blocks exactly.
    let checker = Image::from_vec(4, 2, 1, vec![0, 100, 10, 30, 200, 40, 50, 70]).unwrap();
    assert_eq!(checker.resize(2, 1).data, [85, 40]);
}

#[test]
fn grid_layout() {
    let dir = scratch("grid");
    let (n, c, h, w) = (5, 3, 8, 6);
    let vals: Vec<f32> = (0..n * c * h * w)
        .map(|k| (k / (c * h * w)) as f32 / 4.0 - 0.5)
        .collect();
    let t = Tensor::from_vec(vals, [n, c, h, w], &Device::Cpu).unwrap();
    let path = dir.join("grid.png");
    save_grid(&path, &t, 2).unwrap();
    // 3 columns, 2 rows, 2 px borders around and between.
    let (gw, gh) = (3 * w + 4 * 2, 2 * h + 3 * 2);
    assert_eq!(grid_size(n, 2, w, h), (gw, gh));
    let g = read_png(&path).unwrap();
    assert_eq!((g.width, g.height, g.channels), (gw, gh, 3));
    let border = image::GRID_BORDER_VALUE;
    assert_eq!(g.at(0, 0, 0), border);
    assert_eq!(g.at(1, 5, 0), border);
    assert_eq!(g.at(2 + w, 2, 0), border, "between columns");
    // Image k at column k % 3, row k / 3; its value (k / 4 - 0.5 in [-1, 1]).
    for k in 0..n {
        let (x0, y0) = (2 + (k % 3) * (w + 2), 2 + (k / 3) * (h + 2));
        let want = ((k as f32 / 4.0 - 0.5 + 1.0) * 127.5).round() as u8;
        assert_eq!(g.at(x0, y0, 1), want, "image {k}");
        assert_eq!(g.at(x0 + w - 1, y0 + h - 1, 2), want, "image {k}");
    }
    // The sixth cell is empty: border colour.
    assert_eq!(g.at(2 + 2 * (w + 2), 2 + h + 2, 0), border);
    // Bad arguments name the file.
    assert_err_contains(save_grid(&path, &t, 0), &["grid.png", "rows"]);
    assert_err_contains(save_grid(&path, &t, 6), &["grid.png", "rows"]);
    let flat = Tensor::from_vec(vec![0f32; 4], [4], &Device::Cpu).unwrap();
    assert_err_contains(save_grid(&path, &flat, 1), &["grid.png", "[N, C, H, W]"]);
    let missing = dir.join("no/such/dir/grid.png");
    assert_err_contains(
        save_grid(&missing, &t, 1),
        &["no/such/dir/grid.png", "cannot write"],
    );
}

// ---- fixture maker --------------------------------------------------------------------

/// Cuts the fixtures in `tests/fixtures/` from the full data in ../shared/data (or
/// $KUOSAN_DATA). Not part of the suite; run by hand:
/// `cargo test -p kuosan-tests make_fixtures -- --ignored`. See tests/fixtures/README.md.
#[test]
#[ignore = "writes tests/fixtures from ../shared/data; run by hand"]
fn make_fixtures() {
    let shared = std::env::var_os("KUOSAN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    for (src, dst) in [
        ("mnist-10k", "mnist-mini"),
        ("fashion-mnist", "fashion-mnist-mini"),
    ] {
        let out = fixtures().join(dst);
        fs::create_dir_all(&out).unwrap();
        for (split, prefix, per_class) in [(Split::Train, "train", 20), (Split::Test, "t10k", 10)] {
            let (images, labels) = idx::read_split(&shared.join(src), split).unwrap();
            // The first `per_class` items of each label, in file order.
            let mut taken = [0usize; 10];
            let mut keep = Vec::new();
            for (k, &l) in labels.iter().enumerate() {
                if taken[l as usize] < per_class {
                    taken[l as usize] += 1;
                    keep.push(k);
                }
            }
            assert_eq!(keep.len(), 10 * per_class, "{src}: too few of some class");
            let px = 28 * 28;
            let imgs: Vec<u8> = keep
                .iter()
                .flat_map(|&k| images[k * px..(k + 1) * px].to_vec())
                .collect();
            let labs: Vec<u8> = keep.iter().map(|&k| labels[k]).collect();
            let n = keep.len();
            idx::write_idx(
                &out.join(format!("{prefix}-images-idx3-ubyte.gz")),
                &[n, 28, 28],
                &imgs,
                true,
            )
            .unwrap();
            idx::write_idx(
                &out.join(format!("{prefix}-labels-idx1-ubyte.gz")),
                &[n],
                &labs,
                true,
            )
            .unwrap();
        }
    }

    // The folder fixture: shapes scenes saved in the formats a folder may hold.
    let out = fixtures().join("folder-mini");
    fs::create_dir_all(&out).unwrap();
    let ds = ShapesDataset::new(0, 16, 32);
    let scene = |i| ds.scene(i);
    // 1: plain 32x32 RGB.
    write_png(out.join("0001.png"), &scene(0).render(32)).unwrap();
    // 2: RGBA at 40x40 (alpha is dropped on load).
    let rgb = scene(1).render(40);
    let mut rgba = Vec::new();
    for px in rgb.data.chunks(3) {
        rgba.extend_from_slice(&[px[0], px[1], px[2], 255]);
    }
    write_png(
        out.join("0002.png"),
        &Image::from_vec(40, 40, 4, rgba).unwrap(),
    )
    .unwrap();
    // 3: grayscale, 48x32 (not square: centre-cropped on load), the scene in the middle.
    let gray = scene(2).render(32).to_channels(1).unwrap();
    let mut wide = Image::new(48, 32, 1, 0);
    for y in 0..32 {
        wide.data[y * 48 + 8..y * 48 + 40].copy_from_slice(&gray.data[y * 32..y * 32 + 32]);
    }
    write_png(out.join("0003.png"), &wide).unwrap();
    // 4: RGB at 64x64 (downscaled on load).
    write_png(out.join("0004.png"), &scene(3).render(64)).unwrap();
    let caps = [
        scene(0).caption(Lang::En),
        scene(1).caption(Lang::Zh),
        // Stored gray, so its caption cannot say yellow.
        "a large light gray circle at the bottom".to_string(),
        scene(3).caption(Lang::En),
    ];
    let mut meta = String::new();
    for (k, cap) in caps.iter().enumerate() {
        let line = serde_json_line(&format!("{:04}.png", k + 1), cap);
        meta.push_str(&line);
        meta.push('\n');
    }
    fs::write(out.join(METADATA), meta).unwrap();
}

/// One metadata.jsonl line (the captions need no escaping: no quotes or backslashes).
fn serde_json_line(file: &str, text: &str) -> String {
    assert!(!text.contains(['"', '\\']));
    format!("{{\"file_name\": \"{file}\", \"text\": \"{text}\"}}")
}
