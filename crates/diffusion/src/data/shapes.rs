//! The built-in `shapes` data: one or two flat-coloured shapes on black, with captions in
//! English and Chinese. Nothing to download, and every attribute a caption states can
//! be read back from the pixels by rules, so a sample's faithfulness can be measured.
//!
//! Geometry lives on a 32 x 32 canvas (scaled for other sizes). An object is a circle,
//! square or triangle with centre (cx, cy) and half-size `half`: the circle has radius
//! `half`, the square side 2 `half`, the triangle points up with its apex at
//! (cx, cy - half) and base from (cx - half, cy + half) to (cx + half, cy + half). So
//! every object's bounding box is centred on (cx, cy) and 2 `half` wide, and a checker
//! can read: colour from the mean of lit pixels, size from the box's width, position
//! from the box's centre, shape from how much of the box is filled (square 1, circle
//! pi/4, triangle 1/2).
//!
//! Item i depends only on (seed, i): its random numbers are Philox blocks keyed by the
//! seed with i in the counter.

use super::{check_index, Dataset, Result, Sample};
use crate::image::Image;
use kuosan_tensor::philox4x32_10;

/// Canvas side the geometry is defined on.
pub const CANVAS: f32 = 32.0;
/// Half-size of a small object (and of both objects of a pair).
pub const SMALL_HALF: f32 = 5.0;
/// Half-size of a large object.
pub const LARGE_HALF: f32 = 8.0;
/// Subsamples per pixel side: coverage is counted on a 4 x 4 grid, so edges get 17
/// exact antialiasing levels while flat interiors stay exactly the pure colour.
const SUPERSAMPLE: usize = 4;
/// Stream id in Philox's third counter word (keeps these draws apart from other users
/// of the same seed).
const SHAPES_STREAM: u32 = 0x5348_4150; // "SHAP"

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShapeKind {
    Circle,
    Square,
    Triangle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Color {
    Red,
    Green,
    Blue,
    Yellow,
    White,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    Small,
    Large,
}

/// Where a lone object sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Position {
    Left,
    Right,
    Top,
    Bottom,
    Centre,
}

/// How the first object of a pair sits relative to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Relation {
    LeftOf,
    Above,
}

/// A caption language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    En,
    Zh,
}

impl ShapeKind {
    pub const ALL: [ShapeKind; 3] = [ShapeKind::Circle, ShapeKind::Square, ShapeKind::Triangle];
    pub fn en(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circle",
            ShapeKind::Square => "square",
            ShapeKind::Triangle => "triangle",
        }
    }
    pub fn zh(self) -> &'static str {
        match self {
            ShapeKind::Circle => "圆形",
            ShapeKind::Square => "正方形",
            ShapeKind::Triangle => "三角形",
        }
    }
    /// The fraction of its bounding box the shape fills (for a checker).
    pub fn fill_ratio(self) -> f32 {
        match self {
            ShapeKind::Circle => std::f32::consts::FRAC_PI_4,
            ShapeKind::Square => 1.0,
            ShapeKind::Triangle => 0.5,
        }
    }
}

impl Color {
    pub const ALL: [Color; 5] = [
        Color::Red,
        Color::Green,
        Color::Blue,
        Color::Yellow,
        Color::White,
    ];
    pub fn en(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
            Color::Yellow => "yellow",
            Color::White => "white",
        }
    }
    pub fn zh(self) -> &'static str {
        match self {
            Color::Red => "红色",
            Color::Green => "绿色",
            Color::Blue => "蓝色",
            Color::Yellow => "黄色",
            Color::White => "白色",
        }
    }
    /// Pure, saturated values: each colour differs from every other in at least one
    /// channel by 255, so the nearest colour to a pixel mean is never ambiguous.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [255, 0, 0],
            Color::Green => [0, 255, 0],
            Color::Blue => [0, 0, 255],
            Color::Yellow => [255, 255, 0],
            Color::White => [255, 255, 255],
        }
    }
}

impl Size {
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];
    pub fn en(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
    pub fn zh(self) -> &'static str {
        match self {
            Size::Small => "小的",
            Size::Large => "大的",
        }
    }
    pub fn half(self) -> f32 {
        match self {
            Size::Small => SMALL_HALF,
            Size::Large => LARGE_HALF,
        }
    }
}

impl Position {
    pub const ALL: [Position; 5] = [
        Position::Left,
        Position::Right,
        Position::Top,
        Position::Bottom,
        Position::Centre,
    ];
    pub fn en(self) -> &'static str {
        match self {
            Position::Left => "on the left",
            Position::Right => "on the right",
            Position::Top => "at the top",
            Position::Bottom => "at the bottom",
            Position::Centre => "in the centre",
        }
    }
    pub fn zh(self) -> &'static str {
        match self {
            Position::Left => "左边",
            Position::Right => "右边",
            Position::Top => "上边",
            Position::Bottom => "下边",
            Position::Centre => "中间",
        }
    }
    /// The nominal centre on the canvas for an object of half-size `half`: 1 px from the
    /// edge plus the half-size (so a large object still fits after a 1 px jitter).
    fn centre(self, half: f32) -> (f32, f32) {
        let near = half + 1.0;
        let far = CANVAS - near;
        let mid = CANVAS / 2.0;
        match self {
            Position::Left => (near, mid),
            Position::Right => (far, mid),
            Position::Top => (mid, near),
            Position::Bottom => (mid, far),
            Position::Centre => (mid, mid),
        }
    }
    /// The position a checker reads from a bounding-box centre (canvas units): within
    /// 3 px of the middle on both axes is the centre, else the axis further off decides.
    /// Every generated single object reads back as its own position.
    pub fn classify(cx: f32, cy: f32) -> Position {
        let (dx, dy) = (cx - CANVAS / 2.0, cy - CANVAS / 2.0);
        if dx.abs() <= 3.0 && dy.abs() <= 3.0 {
            Position::Centre
        } else if dx.abs() >= dy.abs() {
            if dx < 0.0 {
                Position::Left
            } else {
                Position::Right
            }
        } else if dy < 0.0 {
            Position::Top
        } else {
            Position::Bottom
        }
    }
}

impl Relation {
    pub const ALL: [Relation; 2] = [Relation::LeftOf, Relation::Above];
    pub fn en(self) -> &'static str {
        match self {
            Relation::LeftOf => "left of",
            Relation::Above => "above",
        }
    }
    pub fn zh(self) -> &'static str {
        match self {
            Relation::LeftOf => "左边",
            Relation::Above => "上边",
        }
    }
}

/// One object of a scene: its attributes and where it was drawn (canvas units).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Object {
    pub shape: ShapeKind,
    pub color: Color,
    pub size: Size,
    pub cx: f32,
    pub cy: f32,
    pub half: f32,
}

impl Object {
    /// Whether canvas point (u, v) is inside.
    fn contains(&self, u: f32, v: f32) -> bool {
        let (dx, dy, h) = (u - self.cx, v - self.cy, self.half);
        match self.shape {
            ShapeKind::Circle => dx * dx + dy * dy <= h * h,
            ShapeKind::Square => dx.abs() <= h && dy.abs() <= h,
            // Apex at dy = -h, base at dy = +h: half-width grows from 0 to h.
            ShapeKind::Triangle => dy <= h && dx.abs() <= (dy + h) / 2.0,
        }
    }
}

/// What a scene shows: one object at a position, or a pair in a relation (the first
/// object is left of / above the second).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    Single(Position),
    Pair(Relation),
}

/// The structured truth of one item: what its captions say and where it was drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct Scene {
    pub layout: Layout,
    /// One object for `Single`, two for `Pair` (in caption order).
    pub objects: Vec<Object>,
}

impl Scene {
    /// One object at `pos`, moved by `jitter` = (dx, dy) canvas pixels.
    pub fn single(
        shape: ShapeKind,
        color: Color,
        size: Size,
        pos: Position,
        jitter: (f32, f32),
    ) -> Scene {
        let (cx, cy) = pos.centre(size.half());
        Scene {
            layout: Layout::Single(pos),
            objects: vec![Object {
                shape,
                color,
                size,
                cx: cx + jitter.0,
                cy: cy + jitter.1,
                half: size.half(),
            }],
        }
    }

    /// Two small objects, (shape, colour) `a` left of / above `b`. Along the relation's
    /// axis they sit 4 px from the edges, across it near the middle; `jitter` moves a
    /// and b along the axis, then a and b across it.
    pub fn pair(
        a: (ShapeKind, Color),
        b: (ShapeKind, Color),
        rel: Relation,
        jitter: [f32; 4],
    ) -> Scene {
        let h = SMALL_HALF;
        let (near, far, mid) = (h + 4.0, CANVAS - h - 4.0, CANVAS / 2.0);
        let [ja, jb, jp, jq] = jitter;
        let (pa, pb) = match rel {
            Relation::LeftOf => ((near + ja, mid + jp), (far + jb, mid + jq)),
            Relation::Above => ((mid + jp, near + ja), (mid + jq, far + jb)),
        };
        let obj = |(shape, color): (ShapeKind, Color), (cx, cy): (f32, f32)| Object {
            shape,
            color,
            size: Size::Small,
            cx,
            cy,
            half: h,
        };
        Scene {
            layout: Layout::Pair(rel),
            objects: vec![obj(a, pa), obj(b, pb)],
        }
    }

    /// The caption in `lang`:
    /// - single, en: "a {size} {color} {shape} {position}" ("a large red circle on the left")
    /// - single, zh: "{position}是一个{size}{color}{shape}" ("左边是一个大的红色圆形")
    /// - pair, en: "a {color} {shape} {left of|above} a {color} {shape}"
    ///   ("a green triangle left of a white circle")
    /// - pair, zh: "{color}{shape}在{color}{shape}的{左边|上边}" ("绿色三角形在白色圆形的左边")
    ///
    /// Pair objects are always small, so their captions leave size out.
    pub fn caption(&self, lang: Lang) -> String {
        let o = &self.objects;
        match (self.layout, lang) {
            (Layout::Single(p), Lang::En) => format!(
                "a {} {} {} {}",
                o[0].size.en(),
                o[0].color.en(),
                o[0].shape.en(),
                p.en()
            ),
            (Layout::Single(p), Lang::Zh) => format!(
                "{}是一个{}{}{}",
                p.zh(),
                o[0].size.zh(),
                o[0].color.zh(),
                o[0].shape.zh()
            ),
            (Layout::Pair(r), Lang::En) => format!(
                "a {} {} {} a {} {}",
                o[0].color.en(),
                o[0].shape.en(),
                r.en(),
                o[1].color.en(),
                o[1].shape.en()
            ),
            (Layout::Pair(r), Lang::Zh) => format!(
                "{}{}在{}{}的{}",
                o[0].color.zh(),
                o[0].shape.zh(),
                o[1].color.zh(),
                o[1].shape.zh(),
                r.zh()
            ),
        }
    }

    /// Both captions: (English, Chinese).
    pub fn captions(&self) -> (String, String) {
        (self.caption(Lang::En), self.caption(Lang::Zh))
    }

    /// Draws the scene at `size` x `size` RGB on black. Pixel value = colour x the
    /// fraction of the pixel's 4 x 4 subsamples inside the object (objects never
    /// overlap, so a max combines them).
    pub fn render(&self, size: usize) -> Image {
        let mut img = Image::new(size, size, 3, 0);
        let scale = CANVAS / size as f32;
        let n = SUPERSAMPLE;
        for y in 0..size {
            for x in 0..size {
                for obj in &self.objects {
                    let mut hits = 0;
                    for sy in 0..n {
                        for sx in 0..n {
                            let u = (x as f32 + (sx as f32 + 0.5) / n as f32) * scale;
                            let v = (y as f32 + (sy as f32 + 0.5) / n as f32) * scale;
                            hits += obj.contains(u, v) as u32;
                        }
                    }
                    if hits == 0 {
                        continue;
                    }
                    let rgb = obj.color.rgb();
                    let px = &mut img.data[(y * size + x) * 3..(y * size + x) * 3 + 3];
                    for c in 0..3 {
                        let v = (rgb[c] as u32 * hits + (n * n) as u32 / 2) / (n * n) as u32;
                        px[c] = px[c].max(v as u8);
                    }
                }
            }
        }
        img
    }
}

/// The random words of item i: 12 words from 3 Philox blocks keyed by the seed.
struct Draws {
    words: [u32; 12],
    next: usize,
}

impl Draws {
    fn new(seed: u64, i: u64) -> Draws {
        let key = [seed as u32, (seed >> 32) as u32];
        let mut words = [0u32; 12];
        for b in 0..3u32 {
            let w = philox4x32_10([i as u32, (i >> 32) as u32, SHAPES_STREAM, b], key);
            words[b as usize * 4..b as usize * 4 + 4].copy_from_slice(&w);
        }
        Draws { words, next: 0 }
    }
    /// A value in 0..n (multiply-shift; n is tiny, so the bias is ~1e-9).
    fn pick(&mut self, n: usize) -> usize {
        let w = self.words[self.next];
        self.next += 1;
        ((w as u64 * n as u64) >> 32) as usize
    }
    /// True with probability `permille` / 1000 (multiply-shift of the next word, as `pick`).
    fn chance(&mut self, permille: u32) -> bool {
        let w = self.words[self.next];
        self.next += 1;
        (w as u64) >= ((1000 - permille.min(1000)) as u64) * (1u64 << 32) / 1000
    }
    /// -1, 0 or +1 pixels of jitter.
    fn jitter(&mut self) -> f32 {
        self.pick(3) as f32 - 1.0
    }
}

/// The share of pairs among the items, in thousandths, unless the data spec says
/// otherwise (`shapes:pairs=0.67`): half.
pub const DEFAULT_PAIRS_PERMILLE: u32 = 500;

/// Item i's scene and caption language, pure in (seed, i): a pair with probability
/// `pairs_permille` / 1000 (half by default), else a single object; half the captions
/// English and half Chinese.
pub fn generate(seed: u64, i: u64, pairs_permille: u32) -> (Scene, Lang) {
    let mut d = Draws::new(seed, i);
    // The first word against a threshold: at 500 this is `pick(2) == 1`, so the default
    // data is the same item for item as before the share could be set.
    let pair = d.chance(pairs_permille);
    let lang = [Lang::En, Lang::Zh][d.pick(2)];
    let scene = if !pair {
        let shape = ShapeKind::ALL[d.pick(3)];
        let color = Color::ALL[d.pick(5)];
        let size = Size::ALL[d.pick(2)];
        let pos = Position::ALL[d.pick(5)];
        let jitter = (d.jitter(), d.jitter());
        Scene::single(shape, color, size, pos, jitter)
    } else {
        // Two different (shape, colour) combinations, so each caption names each object
        // unambiguously: b is drawn from the 14 combinations other than a's.
        let a = d.pick(15);
        let mut b = d.pick(14);
        if b >= a {
            b += 1;
        }
        let rel = Relation::ALL[d.pick(2)];
        let jitter = [d.jitter(), d.jitter(), d.jitter(), d.jitter()];
        let combo = |c: usize| (ShapeKind::ALL[c / 5], Color::ALL[c % 5]);
        Scene::pair(combo(a), combo(b), rel, jitter)
    };
    (scene, lang)
}

/// The `shapes` dataset: `len` generated items of `size` x `size` RGB.
#[derive(Clone, Debug)]
pub struct ShapesDataset {
    pub seed: u64,
    len: usize,
    size: usize,
    pairs_permille: u32,
}

impl ShapesDataset {
    /// Half pairs, half single objects.
    pub fn new(seed: u64, len: usize, size: usize) -> ShapesDataset {
        Self::with_pairs(seed, len, size, DEFAULT_PAIRS_PERMILLE)
    }

    /// A share of `pairs_permille` / 1000 pairs.
    pub fn with_pairs(seed: u64, len: usize, size: usize, pairs_permille: u32) -> ShapesDataset {
        ShapesDataset {
            seed,
            len,
            size,
            pairs_permille: pairs_permille.min(1000),
        }
    }

    /// Item i's scene (the attributes behind its image and captions).
    pub fn scene(&self, i: usize) -> Scene {
        generate(self.seed, i as u64, self.pairs_permille).0
    }

    /// The language item i's caption is in.
    pub fn lang(&self, i: usize) -> Lang {
        generate(self.seed, i as u64, self.pairs_permille).1
    }

    /// Both captions of item i: (English, Chinese).
    pub fn captions(&self, i: usize) -> (String, String) {
        self.scene(i).captions()
    }

    /// Item i's picture as 8-bit RGB.
    pub fn image(&self, i: usize) -> Image {
        self.scene(i).render(self.size)
    }
}

impl Dataset for ShapesDataset {
    fn len(&self) -> usize {
        self.len
    }
    fn channels(&self) -> usize {
        3
    }
    fn size(&self) -> usize {
        self.size
    }
    fn get(&self, i: usize) -> Result<Sample> {
        check_index(i, self.len, "shapes")?;
        let (scene, lang) = generate(self.seed, i as u64, self.pairs_permille);
        Ok(Sample {
            image: scene.render(self.size).to_chw(),
            caption: scene.caption(lang),
            objects: Some(scene.objects.len()),
        })
    }
    fn describe(&self) -> String {
        format!(
            "shapes (seed {}, {} items, {}x{}, {:.1}% pairs)",
            self.seed,
            self.len,
            self.size,
            self.size,
            self.pairs_permille as f64 / 10.0
        )
    }
}
