//! kuosan's diffusion model: DDPM noise schedules and schedulers (diffusers' split of
//! schedulers from models, one file each), the text-conditioned U-Net, datasets, the
//! trainer and the sampler.

pub mod data;
pub mod image;
pub mod unet;
