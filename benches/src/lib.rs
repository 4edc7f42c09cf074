//! kuosan's kernel microbenchmarks, each side by side with a peer measured in the same run.
//!
//! `cpu::run` produces a [`report::Report`]: the machine's measured FMA peak plus one
//! [`report::Section`] per kernel family (sgemm today; conv2d and others slot in as further
//! sections). `gpu::run` measures every WGSL kernel family on the adapter found. `xtask`
//! prints the reports as tables or writes them as JSON.

pub mod cpu;
pub mod gpu;
pub mod model;
pub mod report;
pub mod timing;
