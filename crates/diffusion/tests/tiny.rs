//! End to end on a tiny Stable Diffusion the test writes itself: diffusers-layout configs,
//! a CLIP vocabulary, and random weights (seeded, so every run writes the same model) for
//! the text encoder, UNet and VAE, saved as safetensors and loaded back through the same
//! path a user's SD 1.5 directory takes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use basalt_diffusion::{
    ClipTextEncoder, Defaults, StableDiffusion, TextEncoderConfig, UnetConfig, VaeConfig,
};
use basalt_image::{ImageError, ImageGenerator, ImageJob, Step};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::stable_diffusion::{unet_2d::UNet2DConditionModel, vae};

const TEXT_ENCODER: &str = r#"{"vocab_size": 600, "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 16,
  "hidden_act": "quick_gelu"}"#;
const UNET: &str = r#"{"block_out_channels": [32, 64],
  "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
  "layers_per_block": 1, "attention_head_dim": 4, "cross_attention_dim": 32,
  "norm_num_groups": 32, "sample_size": 16, "in_channels": 4, "out_channels": 4}"#;
const VAE: &str = r#"{"block_out_channels": [32, 32], "layers_per_block": 1,
  "latent_channels": 4, "norm_num_groups": 32, "scaling_factor": 0.18215}"#;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("basalt-diffusion-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces every variable with seeded values of a sensible scale: weights ~ N(0, 1/fan_in),
/// one-dimensional scales near 1, biases near 0.
fn seed_weights(varmap: &VarMap, seed: u64) {
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (i, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let z = basalt_image::noise(seed.wrapping_add(i as u64), n);
        let values: Vec<f32> = if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let s = 1.0 / (fan_in as f32).sqrt();
            z.iter().map(|v| v * s).collect()
        } else if name.ends_with("weight") {
            z.iter().map(|v| 1.0 + 0.1 * v).collect()
        } else {
            z.iter().map(|v| 0.02 * v).collect()
        };
        var.set(&Tensor::from_vec(values, dims.as_slice(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

fn save<F>(path: &Path, seed: u64, build: F)
where
    F: FnOnce(VarBuilder) -> candle_core::Result<()>,
{
    let varmap = VarMap::new();
    build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    seed_weights(&varmap, seed);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    varmap.save(path).unwrap();
}

/// CLIP-shaped vocabulary: every byte character alone and as a word end, a few merges,
/// the special tokens.
fn write_tokenizer(dir: &Path) {
    let printable: Vec<char> = (0u32..=255)
        .filter_map(|b| {
            let b = b as u8;
            matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF).then_some(char::from(b))
        })
        .chain((0..68).filter_map(|i| char::from_u32(256 + i)))
        .collect();
    let mut vocab: Vec<String> = printable.iter().map(|c| c.to_string()).collect();
    vocab.extend(printable.iter().map(|c| format!("{c}</w>")));
    vocab.extend(["ca", "cat</w>", "<|startoftext|>", "<|endoftext|>"].map(String::from));
    let json: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
        .collect();
    assert!(vocab.len() <= 600);
    let tok = dir.join("tokenizer");
    std::fs::create_dir_all(&tok).unwrap();
    std::fs::write(
        tok.join("vocab.json"),
        serde_json::to_string(&json).unwrap(),
    )
    .unwrap();
    std::fs::write(tok.join("merges.txt"), "#version: 0.2\nc a\nca t</w>\n").unwrap();
}

fn write_model(dir: &Path, scheduler: &str) {
    write_tokenizer(dir);
    for (component, config) in [("text_encoder", TEXT_ENCODER), ("unet", UNET), ("vae", VAE)] {
        std::fs::create_dir_all(dir.join(component)).unwrap();
        std::fs::write(dir.join(component).join("config.json"), config).unwrap();
    }
    std::fs::create_dir_all(dir.join("scheduler")).unwrap();
    std::fs::write(dir.join("scheduler/scheduler_config.json"), scheduler).unwrap();
    std::fs::write(
        dir.join("model_index.json"),
        r#"{"_class_name": "StableDiffusionPipeline"}"#,
    )
    .unwrap();

    let text: TextEncoderConfig = serde_json::from_str(TEXT_ENCODER).unwrap();
    save(&dir.join("text_encoder/model.safetensors"), 1, |vb| {
        ClipTextEncoder::new(vb, &text).map(drop)
    });
    let unet = UnetConfig::from_json(UNET).unwrap();
    save(
        &dir.join("unet/diffusion_pytorch_model.safetensors"),
        2,
        |vb| UNet2DConditionModel::new(vb, 4, 4, false, unet.candle.clone()).map(drop),
    );
    let vae_cfg = VaeConfig::from_json(VAE).unwrap();
    save(
        &dir.join("vae/diffusion_pytorch_model.safetensors"),
        3,
        |vb| vae::AutoEncoderKL::new(vb, 3, 3, vae_cfg.candle.clone()).map(drop),
    );
}

const DDIM: &str = r#"{"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
  "beta_schedule": "scaled_linear", "steps_offset": 1, "set_alpha_to_one": false}"#;
const EULER_A: &str = r#"{"_class_name": "EulerAncestralDiscreteScheduler",
  "timestep_spacing": "trailing"}"#;

fn decode_png(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

fn job(prompt: &str, seed: u64, steps: u32, guidance: f32) -> ImageJob {
    ImageJob {
        steps: Some(steps),
        guidance: Some(guidance),
        ..ImageJob::new(prompt, seed)
    }
}

#[test]
fn tiny_pipeline_is_deterministic_per_seed_and_follows_the_prompt() {
    let dir = temp_dir("ddim");
    write_model(&dir, DDIM);
    let model = StableDiffusion::load(&dir, Defaults::default()).unwrap();
    assert_eq!(model.native_size(), (32, 32));
    assert!(model.reads_text());

    let mut seen = Vec::new();
    let a = model
        .generate(&job("a cat", 7, 3, 7.5), &mut |done, total| {
            seen.push((done, total));
            Step::Continue
        })
        .unwrap();
    assert_eq!(seen, [(1, 3), (2, 3), (3, 3)]);

    // A caller that stops after the second step gets no image, and no third step runs.
    let mut steps = 0;
    let stopped = model.generate(&job("a cat", 7, 3, 7.5), &mut |done, _| {
        steps = done;
        if done == 2 {
            Step::Stop
        } else {
            Step::Continue
        }
    });
    assert!(matches!(stopped, Err(ImageError::Cancelled)));
    assert_eq!(steps, 2);
    assert_eq!(decode_png(&a), (32, 32));

    // Same everything: the same bytes, also from a second load of the same files.
    let again = StableDiffusion::load(&dir, Defaults::default()).unwrap();
    assert_eq!(
        a,
        again
            .generate(&job("a cat", 7, 3, 7.5), &mut |_, _| Step::Continue)
            .unwrap()
    );
    // Each input changes the picture.
    for other in [
        job("a cat", 8, 3, 7.5),
        job("a dog", 7, 3, 7.5),
        job("a cat", 7, 2, 7.5),
        job("a cat", 7, 3, 1.0),
        ImageJob {
            negative_prompt: Some("blurry".into()),
            ..job("a cat", 7, 3, 7.5)
        },
    ] {
        let image = model.generate(&other, &mut |_, _| Step::Continue).unwrap();
        assert_ne!(a, image, "{other:?} gave the same image");
    }

    // The decoded pixels are not one flat colour.
    let (w, h, planes) = model
        .run(&job("a cat", 7, 3, 7.5), &mut |_, _| Step::Continue)
        .unwrap();
    assert_eq!((w, h), (32, 32));
    let first = planes[0][0];
    assert!(planes.iter().flatten().any(|v| (v - first).abs() > 1e-3));

    // Other sizes, as long as they are multiples of the model's granularity (2 x 2).
    let wide = model
        .generate(
            &ImageJob {
                width: Some(48),
                height: Some(16),
                ..job("a cat", 7, 1, 0.0)
            },
            &mut |_, _| Step::Continue,
        )
        .unwrap();
    assert_eq!(decode_png(&wide), (48, 16));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ancestral_sampling_is_seeded_too() {
    let dir = temp_dir("euler-a");
    write_model(&dir, EULER_A);
    let model = StableDiffusion::load(
        &dir,
        Defaults {
            steps: 2,
            guidance: 0.0,
        },
    )
    .unwrap();
    let one = model
        .generate(&ImageJob::new("a cat", 3), &mut |_, _| Step::Continue)
        .unwrap();
    assert_eq!(
        one,
        model
            .generate(&ImageJob::new("a cat", 3), &mut |_, _| Step::Continue)
            .unwrap()
    );
    assert_ne!(
        one,
        model
            .generate(&ImageJob::new("a cat", 4), &mut |_, _| Step::Continue)
            .unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_requests_and_broken_models_are_errors() {
    let dir = temp_dir("bad");
    write_model(&dir, DDIM);
    let model = StableDiffusion::load(&dir, Defaults::default()).unwrap();
    for bad in [
        ImageJob {
            width: Some(30),
            ..job("x", 1, 1, 1.0)
        },
        ImageJob {
            width: Some(4096),
            ..job("x", 1, 1, 1.0)
        },
        job("x", 1, 0, 1.0),
        job("x", 1, 151, 1.0),
        job("x", 1, 1, -1.0),
        job("x", 1, 1, f32::NAN),
    ] {
        // Refused up front by `check` (before any quota is reserved), and by `generate`.
        assert!(
            matches!(model.check(&bad), Err(ImageError::Input { .. })),
            "{bad:?}"
        );
        let e = model
            .generate(&bad, &mut |_, _| Step::Continue)
            .unwrap_err();
        assert!(matches!(e, ImageError::Input { .. }), "{bad:?}: {e}");
    }
    assert_eq!(model.check(&job("x", 1, 7, 3.0)).unwrap(), 7);
    assert_eq!(model.check(&ImageJob::new("x", 1)).unwrap(), 30);
    // A prompt longer than the encoder's window is cut, not refused.
    let long = "cat ".repeat(100);
    model
        .generate(&job(&long, 1, 1, 1.0), &mut |_, _| Step::Continue)
        .unwrap();

    // Truncated weights, a missing file, a config that does not match the weights.
    let unet = dir.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&unet).unwrap();
    std::fs::write(&unet, &bytes[..bytes.len() / 2]).unwrap();
    assert!(StableDiffusion::load(&dir, Defaults::default()).is_err());
    std::fs::write(&unet, &bytes).unwrap();
    std::fs::write(
        dir.join("unet/config.json"),
        UNET.replace("[32, 64]", "[32, 48]"),
    )
    .unwrap();
    assert!(StableDiffusion::load(&dir, Defaults::default()).is_err());
    std::fs::write(dir.join("unet/config.json"), UNET).unwrap();
    std::fs::remove_file(dir.join("tokenizer/merges.txt")).unwrap();
    assert!(StableDiffusion::load(&dir, Defaults::default()).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
