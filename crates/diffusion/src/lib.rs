//! Text-to-image Stable Diffusion in-process, on candle.
//!
//! [`StableDiffusion::load`] reads a diffusers-layout directory (what `save_pretrained`
//! writes and what SD 1.5 and SD-Turbo ship as): `tokenizer/` (CLIP BPE, [`tokenizer`]),
//! `text_encoder/` (CLIP, [`clip`]), `unet/` and `vae/` (candle-transformers' Stable Diffusion
//! UNet and KL autoencoder, configured by [`config`]) and `scheduler/` ([`scheduler`]).
//! Generation is the standard pipeline: the prompt (and, with classifier-free guidance, the
//! negative prompt) encoded once; seeded latent noise denoised step by step, the UNet run on
//! the unconditional and conditional sides in one batch and mixed by the guidance scale; the
//! VAE decodes the result; PNG out.
//!
//! Every random number comes from the request's seed through [`basalt_image::noise`], so an
//! image is a pure function of (weights, prompt, negative prompt, seed, size, steps,
//! guidance). This crate must never draw from an unseeded generator.
//!
//! It runs on the calling thread (candle spreads the arithmetic over its own pool): callers
//! keep it off async runtimes.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod clip;
pub mod config;
pub mod scheduler;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use basalt_image::{ImageError, ImageGenerator, ImageJob, Step};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::{unet_2d::UNet2DConditionModel, vae};

pub use clip::{ClipTextEncoder, TextEncoderConfig};
pub use config::{UnetConfig, VaeConfig};
pub use scheduler::SchedulerConfig;
pub use tokenizer::ClipTokenizer;

#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    /// The model directory is missing something or describes something unsupported.
    #[error("diffusion model: {0}")]
    Model(String),
    /// The request asks for something the model cannot do; `param` names the field.
    #[error("{message}")]
    Input {
        param: &'static str,
        message: String,
    },
    #[error("diffusion model: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("generation cancelled")]
    Cancelled,
}

impl From<DiffusionError> for ImageError {
    fn from(e: DiffusionError) -> Self {
        match e {
            DiffusionError::Input { param, message } => ImageError::Input { param, message },
            DiffusionError::Cancelled => ImageError::Cancelled,
            other => ImageError::Model(other.to_string()),
        }
    }
}

/// Most denoising steps a request may ask for.
pub const MAX_STEPS: u32 = 150;
/// Largest classifier-free guidance scale accepted.
pub const MAX_GUIDANCE: f32 = 30.0;

/// The weights file of `component` inside `dir`: the canonical name, else its `fp16`
/// variant.
pub fn weights_file(dir: &Path, component: &str, canonical: &str) -> Option<PathBuf> {
    let folder = dir.join(component);
    let fp16 = canonical.replace(".safetensors", ".fp16.safetensors");
    [folder.join(canonical), folder.join(fp16)]
        .into_iter()
        .find(|p| p.is_file())
}

fn read_text(dir: &Path, name: &str) -> Result<String, DiffusionError> {
    std::fs::read_to_string(dir.join(name))
        .map_err(|e| DiffusionError::Model(format!("{name}: {e}")))
}

/// Defaults a request falls back to.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub steps: u32,
    pub guidance: f32,
}

impl Default for Defaults {
    /// diffusers' defaults for the SD 1.x/2.x pipelines.
    fn default() -> Self {
        Self {
            steps: 30,
            guidance: 7.5,
        }
    }
}

pub struct StableDiffusion {
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextEncoder,
    unet: UNet2DConditionModel,
    autoencoder: vae::AutoEncoderKL,
    scheduler: SchedulerConfig,
    latent_channels: usize,
    /// Latents are divided by this before decoding.
    vae_scaling: f64,
    /// Image pixels per latent pixel.
    vae_scale: u32,
    /// Width and height must be multiples of this.
    size_multiple: u32,
    native: (u32, u32),
    defaults: Defaults,
    device: Device,
}

/// Memory-maps one safetensors file for a component.
fn var_builder(path: &Path, device: &Device) -> Result<VarBuilder<'static>, DiffusionError> {
    // SAFETY: the mapped files are Basalt's own copies in its model store, written once at
    // import and never modified in place while a model is loaded. The safetensors reader
    // validates the header and every tensor's byte range before any tensor is read.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device) }
        .map_err(|e| DiffusionError::Model(format!("{}: {e}", path.display())))
}

impl StableDiffusion {
    /// Loads a diffusers directory.
    pub fn load(dir: &Path, defaults: Defaults) -> Result<Self, DiffusionError> {
        let device = Device::Cpu;
        let unet_cfg = UnetConfig::from_json(&read_text(dir, "unet/config.json")?)?;
        let vae_cfg = VaeConfig::from_json(&read_text(dir, "vae/config.json")?)?;
        let text_cfg: TextEncoderConfig =
            serde_json::from_str(&read_text(dir, "text_encoder/config.json")?)
                .map_err(|e| DiffusionError::Model(format!("text_encoder/config.json: {e}")))?;
        let scheduler =
            SchedulerConfig::from_json(&read_text(dir, "scheduler/scheduler_config.json")?)?;
        if unet_cfg.in_channels != vae_cfg.latent_channels {
            return Err(DiffusionError::Model(format!(
                "the UNet takes {} channels but the VAE makes {}-channel latents",
                unet_cfg.in_channels, vae_cfg.latent_channels
            )));
        }
        if unet_cfg.cross_attention_dim != text_cfg.hidden_size {
            return Err(DiffusionError::Model(format!(
                "the UNet attends to {}-wide text states but the text encoder makes {}",
                unet_cfg.cross_attention_dim, text_cfg.hidden_size
            )));
        }
        if vae_cfg.in_channels != 3 || vae_cfg.out_channels != 3 {
            return Err(DiffusionError::Model(
                "the VAE must encode and decode RGB (3 channels)".into(),
            ));
        }
        let tokenizer =
            ClipTokenizer::load(&dir.join("tokenizer"), text_cfg.max_position_embeddings)?;
        let weights = |component: &str, name: &str| {
            weights_file(dir, component, name)
                .ok_or_else(|| DiffusionError::Model(format!("{component}/{name} is missing")))
        };
        let text_encoder = ClipTextEncoder::new(
            var_builder(&weights("text_encoder", "model.safetensors")?, &device)?,
            &text_cfg,
        )?;
        let unet = UNet2DConditionModel::new(
            var_builder(
                &weights("unet", "diffusion_pytorch_model.safetensors")?,
                &device,
            )?,
            unet_cfg.in_channels,
            unet_cfg.out_channels,
            false,
            unet_cfg.candle.clone(),
        )?;
        let autoencoder = vae::AutoEncoderKL::new(
            var_builder(
                &weights("vae", "diffusion_pytorch_model.safetensors")?,
                &device,
            )?,
            3,
            3,
            vae_cfg.candle.clone(),
        )?;
        let vae_scale = vae_cfg.scale as u32;
        let side = (unet_cfg.sample_size * vae_cfg.scale) as u32;
        Ok(Self {
            tokenizer,
            text_encoder,
            unet,
            autoencoder,
            scheduler,
            latent_channels: vae_cfg.latent_channels,
            vae_scaling: vae_cfg.scaling_factor,
            vae_scale,
            size_multiple: vae_scale << unet_cfg.downsamples,
            native: (side, side),
            defaults,
            device,
        })
    }

    /// `(batch, tokens, hidden)` conditioning of the prompts.
    fn encode_prompts(&self, prompts: &[&str]) -> Result<Tensor, DiffusionError> {
        let rows = prompts
            .iter()
            .map(|p| {
                let ids = self.tokenizer.encode(p).ids;
                Tensor::new(ids.as_slice(), &self.device)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ids = Tensor::stack(&rows, 0)?;
        Ok(self.text_encoder.forward(&ids)?)
    }

    fn noise(
        &self,
        seed: u64,
        shape: (usize, usize, usize, usize),
    ) -> Result<Tensor, DiffusionError> {
        let (b, c, h, w) = shape;
        let values = basalt_image::noise(seed, b * c * h * w);
        Ok(Tensor::from_vec(values, shape, &self.device)?)
    }

    fn resolve(&self, job: &ImageJob) -> Result<(u32, u32, u32, f32), DiffusionError> {
        let width = job.width.unwrap_or(self.native.0);
        let height = job.height.unwrap_or(self.native.1);
        basalt_image::check_size(width, height, self.size_multiple).map_err(|e| {
            DiffusionError::Input {
                param: "size",
                message: e.to_string(),
            }
        })?;
        let steps = job.steps.unwrap_or(self.defaults.steps);
        if !(1..=MAX_STEPS).contains(&steps) {
            return Err(DiffusionError::Input {
                param: "steps",
                message: format!("steps must be between 1 and {MAX_STEPS}, got {steps}"),
            });
        }
        let guidance = job.guidance.unwrap_or(self.defaults.guidance);
        if !(0.0..=MAX_GUIDANCE).contains(&guidance) {
            return Err(DiffusionError::Input {
                param: "cfg_scale",
                message: format!(
                    "the guidance (cfg) scale must be between 0 and {MAX_GUIDANCE}, got {guidance}"
                ),
            });
        }
        Ok((width, height, steps, guidance))
    }

    /// Runs the pipeline; returns RGB planes in `[-1, 1]`. `progress` may stop it between
    /// steps.
    pub fn run(
        &self,
        job: &ImageJob,
        progress: &mut dyn FnMut(u32, u32) -> Step,
    ) -> Result<(u32, u32, Vec<Vec<f32>>), DiffusionError> {
        let (width, height, steps, guidance) = self.resolve(job)?;
        // Guidance at or below 1 is the conditional prediction alone (SD-Turbo runs so).
        let guided = guidance > 1.0;
        let context = if guided {
            let negative = job.negative_prompt.as_deref().unwrap_or("");
            self.encode_prompts(&[negative, &job.prompt])?
        } else {
            self.encode_prompts(&[&job.prompt])?
        };
        let plan = self.scheduler.plan(steps as usize)?;
        let latent_shape = (
            1,
            self.latent_channels,
            (height / self.vae_scale) as usize,
            (width / self.vae_scale) as usize,
        );
        let mut latents = (self.noise(job.seed, latent_shape)? * plan.init_noise_sigma())?;
        for (i, &t) in plan.timesteps().iter().enumerate() {
            let input = if guided {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let input = plan.scale_model_input(&input, i)?;
            let out = self.unet.forward(&input, t, &context)?;
            let predicted = if guided {
                let uncond = out.get(0)?.unsqueeze(0)?;
                let cond = out.get(1)?.unsqueeze(0)?;
                (&uncond + ((cond - &uncond)? * guidance as f64)?)?
            } else {
                out
            };
            let fresh = if plan.needs_noise() {
                // One independent draw per step, still a function of the request's seed.
                let step_seed = job.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                Some(self.noise(step_seed, latent_shape)?)
            } else {
                None
            };
            latents = plan.step(i, &predicted, &latents, fresh.as_ref())?;
            if progress(i as u32 + 1, steps) == Step::Stop {
                return Err(DiffusionError::Cancelled);
            }
        }
        let image = self
            .autoencoder
            .decode(&(latents / self.vae_scaling)?)?
            .clamp(-1f32, 1f32)?
            .squeeze(0)?;
        let planes = (0..3)
            .map(|c| image.get(c)?.flatten_all()?.to_vec1::<f32>())
            .collect::<candle_core::Result<Vec<_>>>()?;
        if planes.iter().flatten().any(|v| !v.is_finite()) {
            return Err(DiffusionError::Model(
                "the model produced non-finite pixels (broken weights?)".into(),
            ));
        }
        Ok((width, height, planes))
    }
}

impl ImageGenerator for StableDiffusion {
    fn reads_text(&self) -> bool {
        true
    }

    fn native_size(&self) -> (u32, u32) {
        self.native
    }

    fn check(&self, job: &ImageJob) -> Result<u32, ImageError> {
        Ok(self.resolve(job)?.2)
    }

    fn generate(
        &self,
        job: &ImageJob,
        progress: &mut dyn FnMut(u32, u32) -> Step,
    ) -> Result<Vec<u8>, ImageError> {
        let (width, height, planes) = self.run(job, progress)?;
        let rgb = basalt_image::planes_to_rgb(&planes, (width * height) as usize);
        Ok(basalt_image::png::encode_rgb(width, height, &rgb))
    }
}
