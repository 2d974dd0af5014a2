//! diffusers' `unet/config.json` and `vae/config.json`, checked and turned into
//! candle-transformers' configurations.
//!
//! candle's UNet and VAE build the layout Stable Diffusion 1.x/2.x use (cross-attention
//! down blocks mirrored by up blocks, a cross-attention middle block, KL autoencoder).
//! Anything outside that layout (SDXL's added conditioning, inpainting's extra input
//! channels, other block types) is refused here with a message, instead of failing later
//! with a missing tensor name.

use candle_transformers::models::stable_diffusion::{unet_2d, vae};
use serde::Deserialize;

use crate::DiffusionError;

/// A number or one per block, as diffusers writes `attention_head_dim`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PerBlock {
    One(usize),
    Each(Vec<usize>),
}

impl PerBlock {
    fn get(&self, i: usize) -> Option<usize> {
        match self {
            PerBlock::One(v) => Some(*v),
            PerBlock::Each(v) => v.get(i).copied(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct UnetJson {
    #[serde(default = "four")]
    in_channels: usize,
    #[serde(default = "four")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    down_block_types: Vec<String>,
    #[serde(default)]
    up_block_types: Vec<String>,
    #[serde(default = "two")]
    layers_per_block: usize,
    #[serde(default = "eight")]
    attention_head_dim: PerBlock,
    transformer_layers_per_block: Option<PerBlock>,
    cross_attention_dim: usize,
    #[serde(default = "groups")]
    norm_num_groups: usize,
    #[serde(default = "eps")]
    norm_eps: f64,
    #[serde(default = "yes")]
    flip_sin_to_cos: bool,
    #[serde(default)]
    freq_shift: f64,
    #[serde(default = "one")]
    downsample_padding: usize,
    #[serde(default = "unit")]
    mid_block_scale_factor: f64,
    #[serde(default)]
    use_linear_projection: bool,
    #[serde(default)]
    center_input_sample: bool,
    #[serde(default = "sixty_four")]
    sample_size: usize,
    addition_embed_type: Option<String>,
    class_embed_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct VaeJson {
    #[serde(default = "three")]
    in_channels: usize,
    #[serde(default = "three")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    layers_per_block: usize,
    #[serde(default = "four")]
    latent_channels: usize,
    #[serde(default = "groups")]
    norm_num_groups: usize,
    #[serde(default = "sd_scaling")]
    scaling_factor: f64,
    #[serde(default = "yes")]
    use_quant_conv: bool,
    #[serde(default = "yes")]
    use_post_quant_conv: bool,
}

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn eight() -> PerBlock {
    PerBlock::One(8)
}
fn groups() -> usize {
    32
}
fn sixty_four() -> usize {
    64
}
fn eps() -> f64 {
    1e-5
}
fn unit() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn sd_scaling() -> f64 {
    0.18215
}

/// The UNet as candle builds it, plus what the pipeline needs to know about it.
pub struct UnetConfig {
    pub candle: unet_2d::UNet2DConditionModelConfig,
    pub in_channels: usize,
    pub out_channels: usize,
    pub cross_attention_dim: usize,
    /// Latent side the model was trained at.
    pub sample_size: usize,
    /// How many times the down path halves the latent.
    pub downsamples: usize,
}

pub struct VaeConfig {
    pub candle: vae::AutoEncoderKLConfig,
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    /// Latents are the encoder's output times this.
    pub scaling_factor: f64,
    /// Image pixels per latent pixel, per side.
    pub scale: usize,
}

/// Group-norm groups of every Stable Diffusion 1.x/2.x UNet and VAE.
const SD_GROUPS: usize = 32;

fn bad(file: &str, message: impl Into<String>) -> DiffusionError {
    DiffusionError::Model(format!("{file}: {}", message.into()))
}

impl UnetConfig {
    pub fn from_json(text: &str) -> Result<Self, DiffusionError> {
        const FILE: &str = "unet/config.json";
        let j: UnetJson = serde_json::from_str(text).map_err(|e| bad(FILE, e.to_string()))?;
        if let Some(kind) = j.addition_embed_type.or(j.class_embed_type) {
            return Err(bad(
                FILE,
                format!("added conditioning `{kind}` (SDXL-style) is not supported"),
            ));
        }
        // candle's plain down and up blocks always normalise in 32 groups, whatever the
        // config says; every Stable Diffusion 1.x/2.x UNet uses 32.
        if j.norm_num_groups != SD_GROUPS {
            return Err(bad(
                FILE,
                format!(
                    "norm_num_groups {} is not supported (Stable Diffusion uses {SD_GROUPS})",
                    j.norm_num_groups
                ),
            ));
        }
        let n = j.block_out_channels.len();
        if n == 0 || n != j.down_block_types.len() {
            return Err(bad(
                FILE,
                "block_out_channels and down_block_types must be non-empty and of equal length",
            ));
        }
        if j.in_channels != j.out_channels {
            return Err(bad(
                FILE,
                format!(
                    "{} input channels for {} output channels: inpainting and other conditioned UNets are not supported",
                    j.in_channels, j.out_channels
                ),
            ));
        }
        let mut blocks = Vec::with_capacity(n);
        for (i, (kind, &out_channels)) in j
            .down_block_types
            .iter()
            .zip(&j.block_out_channels)
            .enumerate()
        {
            let cross = match kind.as_str() {
                "CrossAttnDownBlock2D" => Some(
                    j.transformer_layers_per_block
                        .as_ref()
                        .map_or(Some(1), |t| t.get(i))
                        .ok_or_else(|| bad(FILE, "transformer_layers_per_block is too short"))?,
                ),
                "DownBlock2D" => None,
                other => return Err(bad(FILE, format!("down block `{other}` is not supported"))),
            };
            let heads = j
                .attention_head_dim
                .get(i)
                .ok_or_else(|| bad(FILE, "attention_head_dim is too short"))?;
            if heads == 0 || out_channels % heads != 0 || out_channels % j.norm_num_groups != 0 {
                return Err(bad(
                    FILE,
                    format!(
                        "block {i}: {out_channels} channels do not split into {heads} heads and {} groups",
                        j.norm_num_groups
                    ),
                ));
            }
            blocks.push(unet_2d::BlockConfig {
                out_channels,
                use_cross_attn: cross,
                attention_head_dim: heads,
            });
        }
        // candle builds the up path as the mirror image of the down path.
        if !j.up_block_types.is_empty() {
            let mirrored: Vec<String> = j
                .down_block_types
                .iter()
                .rev()
                .map(|d| d.replace("Down", "Up"))
                .collect();
            if mirrored != j.up_block_types {
                return Err(bad(
                    FILE,
                    "up_block_types must mirror down_block_types (the Stable Diffusion layout)",
                ));
            }
        }
        if j.layers_per_block == 0 || j.cross_attention_dim == 0 {
            return Err(bad(FILE, "zero-sized layers"));
        }
        Ok(Self {
            candle: unet_2d::UNet2DConditionModelConfig {
                center_input_sample: j.center_input_sample,
                flip_sin_to_cos: j.flip_sin_to_cos,
                freq_shift: j.freq_shift,
                blocks,
                layers_per_block: j.layers_per_block,
                downsample_padding: j.downsample_padding,
                mid_block_scale_factor: j.mid_block_scale_factor,
                norm_num_groups: j.norm_num_groups,
                norm_eps: j.norm_eps,
                cross_attention_dim: j.cross_attention_dim,
                sliced_attention_size: None,
                use_linear_projection: j.use_linear_projection,
            },
            in_channels: j.in_channels,
            out_channels: j.out_channels,
            cross_attention_dim: j.cross_attention_dim,
            sample_size: j.sample_size,
            downsamples: n - 1,
        })
    }
}

impl VaeConfig {
    pub fn from_json(text: &str) -> Result<Self, DiffusionError> {
        const FILE: &str = "vae/config.json";
        let j: VaeJson = serde_json::from_str(text).map_err(|e| bad(FILE, e.to_string()))?;
        let n = j.block_out_channels.len();
        if n == 0 || n > 6 {
            return Err(bad(FILE, "block_out_channels must have 1 to 6 entries"));
        }
        if j.norm_num_groups != SD_GROUPS
            || j.block_out_channels
                .iter()
                .any(|c| *c == 0 || c % j.norm_num_groups != 0)
        {
            return Err(bad(
                FILE,
                format!(
                    "block channels {:?} do not split into {} groups",
                    j.block_out_channels, j.norm_num_groups
                ),
            ));
        }
        if !(j.scaling_factor.is_finite() && j.scaling_factor > 0.0) {
            return Err(bad(FILE, "scaling_factor must be positive"));
        }
        Ok(Self {
            candle: vae::AutoEncoderKLConfig {
                block_out_channels: j.block_out_channels,
                layers_per_block: j.layers_per_block,
                latent_channels: j.latent_channels,
                norm_num_groups: j.norm_num_groups,
                use_quant_conv: j.use_quant_conv,
                use_post_quant_conv: j.use_post_quant_conv,
            },
            in_channels: j.in_channels,
            out_channels: j.out_channels,
            latent_channels: j.latent_channels,
            scaling_factor: j.scaling_factor,
            scale: 1 << (n - 1),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The UNet config of `stable-diffusion-v1-5` as diffusers publishes it (abridged to
    /// the fields that matter).
    const SD15_UNET: &str = r#"{
      "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
      "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
      "cross_attention_dim": 768,
      "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
      "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
      "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
      "out_channels": 4, "sample_size": 64,
      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    }"#;

    #[test]
    fn sd15_unet_maps_to_candles_layout() {
        let c = UnetConfig::from_json(SD15_UNET).unwrap();
        assert_eq!(c.downsamples, 3);
        assert_eq!(c.sample_size, 64);
        let blocks: Vec<_> = c
            .candle
            .blocks
            .iter()
            .map(|b| (b.out_channels, b.use_cross_attn, b.attention_head_dim))
            .collect();
        assert_eq!(
            blocks,
            [
                (320, Some(1), 8),
                (640, Some(1), 8),
                (1280, Some(1), 8),
                (1280, None, 8)
            ]
        );
    }

    #[test]
    fn layouts_candle_cannot_build_are_refused() {
        let sdxl = SD15_UNET.replace(
            r#""out_channels": 4"#,
            r#""out_channels": 4, "addition_embed_type": "text_time""#,
        );
        assert!(UnetConfig::from_json(&sdxl).is_err());
        let inpaint = SD15_UNET.replace(r#""in_channels": 4"#, r#""in_channels": 9"#);
        assert!(UnetConfig::from_json(&inpaint).is_err());
        let odd = SD15_UNET.replace(
            r#""UpBlock2D", "CrossAttnUpBlock2D""#,
            r#""CrossAttnUpBlock2D", "UpBlock2D""#,
        );
        assert!(UnetConfig::from_json(&odd).is_err());
        let heads = SD15_UNET.replace(
            r#""attention_head_dim": 8"#,
            r#""attention_head_dim": [5, 10]"#,
        );
        assert!(UnetConfig::from_json(&heads).is_err());
        assert!(VaeConfig::from_json(r#"{"block_out_channels": []}"#).is_err());
        assert!(
            VaeConfig::from_json(r#"{"block_out_channels": [30], "norm_num_groups": 32}"#).is_err()
        );
        assert!(
            VaeConfig::from_json(r#"{"block_out_channels": [32], "norm_num_groups": 8}"#).is_err()
        );
        let groups = SD15_UNET.replace(r#""norm_num_groups": 32"#, r#""norm_num_groups": 8"#);
        assert!(UnetConfig::from_json(&groups).is_err());
        let vae = VaeConfig::from_json(r#"{"block_out_channels": [128, 256, 512, 512]}"#).unwrap();
        assert_eq!(vae.scale, 8);
        assert_eq!(vae.scaling_factor, 0.18215);
    }
}
