//! Image generation in-process, and the interface every image model serves through.
//!
//! [`ImageGenerator`] is what the server and the CLI call: a PNG from an [`ImageJob`]
//! (prompt, seed, size, steps, guidance), with progress reported per step. This crate holds
//! the DCGAN face generator ([`dcgan`]), read straight from its PyTorch checkpoint
//! ([`torch`]): [`ImageModel`] makes a PNG of the requested size from a seed (Lanczos-resampled
//! from the model's 64x64). That generator takes no text: a prompt only chooses the seed when
//! none is given ([`seed_for`]); the catalog and the API documentation say so. Text-to-image
//! diffusion lives in its own crate (`basalt-diffusion`), so this one never pulls in a tensor
//! library.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod dcgan;
pub mod png;
pub mod resize;
pub mod torch;

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image model: {0}")]
    Model(String),
    /// The progress callback asked to stop (the client went away).
    #[error("generation cancelled")]
    Cancelled,
    /// A request the model cannot serve; `param` names the request field at fault.
    #[error("{message}")]
    Input {
        param: &'static str,
        message: String,
    },
}

/// Largest side Basalt upscales to.
pub const MAX_SIDE: u32 = 1024;

/// The seed a prompt stands for when no seed is given: FNV-1a of its bytes, so the same
/// prompt gives the same image.
pub fn seed_for(prompt: &str) -> u64 {
    prompt.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Standard normal noise from a seed (SplitMix64 and Box-Muller). The same seed gives the
/// same noise on every machine, which is what makes a seeded image reproducible.
pub fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (next(), next());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

/// One image to make.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageJob {
    pub prompt: String,
    /// What the image should not show (classifier-free guidance's unconditional side).
    pub negative_prompt: Option<String>,
    pub seed: u64,
    /// `None`: the model's native size.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Denoising steps; `None`: the model's default. Ignored by one-shot generators.
    pub steps: Option<u32>,
    /// Classifier-free guidance scale; `None`: the model's default.
    pub guidance: Option<f32>,
}

impl ImageJob {
    pub fn new(prompt: impl Into<String>, seed: u64) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: None,
            seed,
            width: None,
            height: None,
            steps: None,
            guidance: None,
        }
    }
}

/// An image model as the server and the CLI see it.
pub trait ImageGenerator: Send + Sync {
    /// Whether the prompt shapes the image (false: it only seeds it).
    fn reads_text(&self) -> bool;

    /// The model's native `(width, height)`.
    fn native_size(&self) -> (u32, u32);

    /// Checks `job` without running it (size, steps, guidance) and returns the steps it
    /// will take: what one image is metered by, and the total progress counts to. Callers
    /// check before reserving quota, so a bad request is a validation error, not a 429.
    fn check(&self, job: &ImageJob) -> Result<u32, ImageError>;

    /// Makes one PNG. `progress(done, total)` is called after each step; returning
    /// [`Step::Stop`] abandons the image with [`ImageError::Cancelled`].
    fn generate(
        &self,
        job: &ImageJob,
        progress: &mut dyn FnMut(u32, u32) -> Step,
    ) -> Result<Vec<u8>, ImageError>;
}

/// A progress callback's answer: go on, or stop (the caller no longer wants the image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    Stop,
}

/// Checks a requested side against `MAX_SIDE` and a model's granularity.
pub fn check_size(width: u32, height: u32, multiple: u32) -> Result<(), ImageError> {
    if !(16..=MAX_SIDE).contains(&width) || !(16..=MAX_SIDE).contains(&height) {
        return Err(ImageError::Input {
            param: "size",
            message: format!(
                "width and height must be between 16 and {MAX_SIDE}, got {width}x{height}"
            ),
        });
    }
    if !width.is_multiple_of(multiple) || !height.is_multiple_of(multiple) {
        return Err(ImageError::Input {
            param: "size",
            message: format!(
                "width and height must be multiples of {multiple} for this model, got {width}x{height}"
            ),
        });
    }
    Ok(())
}

/// Converts planar RGB in `[-1, 1]` to interleaved 8-bit RGB.
pub fn planes_to_rgb(planes: &[Vec<f32>], pixels: usize) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(pixels * 3);
    for p in 0..pixels {
        for plane in planes {
            rgb.push(((plane[p] + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8);
        }
    }
    rgb
}

pub struct ImageModel {
    generator: dcgan::Dcgan,
}

impl ImageModel {
    pub fn load(checkpoint: &Path) -> Result<Self, ImageError> {
        Ok(Self {
            generator: dcgan::Dcgan::load(checkpoint)?,
        })
    }

    /// A PNG of `width` x `height` from `seed`.
    pub fn generate_seeded(
        &self,
        seed: u64,
        width: u32,
        height: u32,
    ) -> Result<Vec<u8>, ImageError> {
        check_size(width, height, 1)?;
        let z = noise(seed, self.generator.latent);
        let (size, chw) = self.generator.generate(&z)?;
        let pixels = size * size;
        let planes: Vec<Vec<f32>> = (0..3)
            .map(|c| {
                let plane = &chw[c * pixels..(c + 1) * pixels];
                if width as usize == size && height as usize == size {
                    plane.to_vec()
                } else {
                    resize::resize_plane(plane, size, width as usize, height as usize)
                }
            })
            .collect();
        // tanh output in [-1, 1].
        let rgb = planes_to_rgb(&planes, (width * height) as usize);
        Ok(png::encode_rgb(width, height, &rgb))
    }
}

impl ImageGenerator for ImageModel {
    fn reads_text(&self) -> bool {
        false
    }

    fn native_size(&self) -> (u32, u32) {
        (64, 64)
    }

    fn check(&self, job: &ImageJob) -> Result<u32, ImageError> {
        check_size(job.width.unwrap_or(64), job.height.unwrap_or(64), 1)?;
        Ok(1)
    }

    fn generate(
        &self,
        job: &ImageJob,
        progress: &mut dyn FnMut(u32, u32) -> Step,
    ) -> Result<Vec<u8>, ImageError> {
        let png =
            self.generate_seeded(job.seed, job.width.unwrap_or(64), job.height.unwrap_or(64))?;
        // One step: nothing is left to save by stopping now.
        let _ = progress(1, 1);
        Ok(png)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_standard_normal_and_seeded() {
        let a = noise(7, 10_000);
        let mean: f32 = a.iter().sum::<f32>() / a.len() as f32;
        let var: f32 = a.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        assert_eq!(noise(7, 5), noise(7, 5));
        assert_ne!(noise(7, 5), noise(8, 5));
        assert_eq!(seed_for("a face"), seed_for("a face"));
        assert_ne!(seed_for("a face"), seed_for("another face"));
    }

    #[test]
    fn png_structure() {
        let png = png::encode_rgb(2, 2, &[255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }
}
