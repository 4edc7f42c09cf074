//! Measuring what a model makes: a rule-based reader for `shapes` pictures, a digit /
//! clothing classifier trained with this engine, a Frechet distance between feature
//! sets, and `evaluate`, which samples every evaluation prompt of a data set and scores
//! the pictures.

pub mod classifier;
pub mod evaluate;
pub mod frechet;
pub mod prompts;
pub mod shapes_check;

pub use evaluate::{evaluate, Accuracy, EvalOptions, EvalReport, Judge, Tally, FRECHET_NOTE};
pub use prompts::{eval_prompts, pair_scenes, EvalPrompt, PromptSet, Target};
