//! Workspace tests for kuosan: the fast CPU kernels against the f64 reference
//! (`cpu_vs_reference`), finite-difference gradient checks in f64 (`gradcheck`),
//! thread-count determinism, shape errors, the GPU kernels against the CPU (`gpu_vs_cpu`),
//! the nn layer, the models against diffusers/transformers (`golden`), and the diffusion
//! crate's datasets (`diffusion_data`, on the small fixtures in `tests/fixtures/`). One test
//! binary, so the suite builds once.
//!
//! Tolerances (|got - want| <= atol + rtol |want|, f32 kernels vs the f64 reference, with
//! inputs of magnitude ~1) are documented beside each test in `cpu_vs_reference.rs`.

pub mod harness;

#[cfg(test)]
mod cpu_vs_reference;
#[cfg(test)]
mod determinism;
#[cfg(test)]
mod diffusion_data;
#[cfg(test)]
mod diffusion_schedulers;
#[cfg(test)]
mod diffusion_text_pretrain;
#[cfg(test)]
mod diffusion_train;
#[cfg(test)]
mod diffusion_unet;
#[cfg(test)]
mod errors;
#[cfg(test)]
mod eval;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod gpu_vs_cpu;
#[cfg(test)]
mod gradcheck;
#[cfg(test)]
mod nn;
