//! The prompts `eval` samples for each data set, with what a correct picture shows.
//!
//! `shapes`: nine scenes (six single objects, three pairs) that between them use every
//! colour, shape, size, position and relation, each prompted in English and in Chinese
//! (18 prompts); or, with the `pairs` prompt set, thirty pairs that probe how each
//! object's shape is bound to it (60 prompts). MNIST / Fashion-MNIST: every class with
//! its first English and first Chinese caption template ("the digit 7" / "数字七"; 20
//! prompts).

use crate::data::idx::{caption_templates, IdxKind};
use crate::data::shapes::{Color, Lang, Position, Relation, Scene, ShapeKind, Size};
use crate::data::{DataError, DataSpec};
use std::path::Path;

/// What a picture for a prompt must show.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A `shapes` scene, judged by the rule-based reader.
    Scene(Scene),
    /// A class of an IDX data set, judged by the classifier.
    Label(u8),
}

#[derive(Clone, Debug, PartialEq)]
pub struct EvalPrompt {
    pub text: String,
    pub lang: Lang,
    pub target: Target,
}

/// Which prompts `eval` samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PromptSet {
    /// The data set's own: nine shapes scenes, or every class of an IDX set.
    #[default]
    Standard,
    /// `shapes` only: [`pair_scenes`].
    Pairs,
}

impl PromptSet {
    pub fn parse(name: &str) -> Result<PromptSet, DataError> {
        match name {
            "standard" => Ok(PromptSet::Standard),
            "pairs" => Ok(PromptSet::Pairs),
            other => Err(DataError::Arg(format!(
                "unknown prompt set {other:?}: use standard or pairs (shapes only)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PromptSet::Standard => "standard",
            PromptSet::Pairs => "pairs",
        }
    }
}

/// Thirty two-object scenes for the binding of shape words to objects: three colour
/// pairs x {above, left of} x five orders of two different shapes (square-circle,
/// circle-square, triangle-circle, circle-triangle, square-triangle). The standard set
/// has one square-circle pair, too few to tell a model that swaps or copies shapes
/// between the two objects from one that misdraws one prompt.
pub fn pair_scenes() -> Vec<Scene> {
    use Color::*;
    use ShapeKind::*;
    let mut v = Vec::with_capacity(30);
    for (ca, cb) in [(Red, Blue), (Green, Yellow), (White, Red)] {
        for r in [Relation::Above, Relation::LeftOf] {
            for (sa, sb) in [
                (Square, Circle),
                (Circle, Square),
                (Triangle, Circle),
                (Circle, Triangle),
                (Square, Triangle),
            ] {
                v.push(Scene::pair((sa, ca), (sb, cb), r, [0.0; 4]));
            }
        }
    }
    v
}

/// The nine `shapes` scenes of the evaluation, at their nominal places.
pub fn shapes_scenes() -> Vec<Scene> {
    use Color::*;
    use ShapeKind::*;
    let one = |s, c, z, p| Scene::single(s, c, z, p, (0.0, 0.0));
    let two = |a, b, r| Scene::pair(a, b, r, [0.0; 4]);
    vec![
        one(Circle, Red, Size::Large, Position::Centre),
        one(Square, Blue, Size::Small, Position::Left),
        one(Triangle, White, Size::Large, Position::Bottom),
        one(Circle, Yellow, Size::Small, Position::Top),
        one(Square, Green, Size::Large, Position::Right),
        one(Triangle, Red, Size::Small, Position::Centre),
        two((Triangle, Green), (Circle, White), Relation::LeftOf),
        two((Square, Red), (Circle, Blue), Relation::Above),
        two((Circle, Yellow), (Triangle, Blue), Relation::LeftOf),
    ]
}

/// The evaluation prompts of the data set `spec` names, from the prompt set `set`;
/// `folder:` data has no ground truth to judge against, so it is an error, as is the
/// pairs set for anything but shapes.
pub fn eval_prompts(spec: &DataSpec, set: PromptSet) -> Result<Vec<EvalPrompt>, DataError> {
    if set == PromptSet::Pairs && !matches!(spec, DataSpec::Shapes { .. }) {
        return Err(DataError::Arg(
            "the pairs prompt set is made of shapes scenes: use it on runs trained on shapes"
                .into(),
        ));
    }
    let idx = |kind: IdxKind| -> Vec<EvalPrompt> {
        (0..10u8)
            .flat_map(|l| {
                let (en, zh) = caption_templates(kind, l);
                [(en[0].clone(), Lang::En), (zh[0].clone(), Lang::Zh)].map(|(text, lang)| {
                    EvalPrompt {
                        text,
                        lang,
                        target: Target::Label(l),
                    }
                })
            })
            .collect()
    };
    match spec {
        DataSpec::Shapes { .. } => Ok(match set {
            PromptSet::Standard => shapes_scenes(),
            PromptSet::Pairs => pair_scenes(),
        }
        .into_iter()
        .flat_map(|s| {
            [Lang::En, Lang::Zh].map(|lang| EvalPrompt {
                text: s.caption(lang),
                lang,
                target: Target::Scene(s.clone()),
            })
        })
        .collect()),
        DataSpec::Mnist(_) => Ok(idx(IdxKind::Mnist)),
        DataSpec::FashionMnist(_) => Ok(idx(IdxKind::FashionMnist)),
        DataSpec::Folder(dir) => Err(unjudgeable(dir)),
    }
}

/// Why an image folder cannot be evaluated.
pub fn unjudgeable(dir: &Path) -> DataError {
    DataError::Arg(format!(
        "eval judges shapes, mnist and fashion-mnist runs; this run was trained on \
         folder:{}, whose pictures have no labels to check",
        dir.display()
    ))
}
