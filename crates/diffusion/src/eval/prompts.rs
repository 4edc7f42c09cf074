//! The prompts `eval` samples for each data set, with what a correct picture shows.
//!
//! `shapes`: nine scenes (six single objects, three pairs) that between them use every
//! colour, shape, size, position and relation, each prompted in English and in Chinese
//! (18 prompts). MNIST / Fashion-MNIST: every class with its first English and first
//! Chinese caption template ("the digit 7" / "数字七"; 20 prompts).

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

/// The evaluation prompts of the data set `spec` names; `folder:` data has no ground
/// truth to judge against, so it is an error.
pub fn eval_prompts(spec: &DataSpec) -> Result<Vec<EvalPrompt>, DataError> {
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
        DataSpec::Shapes { .. } => Ok(shapes_scenes()
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
