//! Image-generation bodies: OpenAI's `POST /v1/images/generations`, and the Bedrock
//! `InvokeModel` bodies of Amazon Titan Image Generator (`TEXT_IMAGE`) and Stability AI
//! (`text_prompts`). All convert to one [`ImageRequest`]; the outputs are PNGs, base64.

use basalt_types::BasaltError;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// Most images per request.
pub const MAX_IMAGES: u32 = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct ImageRequest {
    pub prompt: String,
    /// What the image should not show (Titan's `negativeText`, Stability's negative-weight
    /// prompts, OpenAI's `negative_prompt` extension).
    pub negative_prompt: Option<String>,
    pub n: u32,
    /// `None`: the model's native size.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The first image's seed; image `i` uses `seed + i`. `None`: derived from the prompt.
    pub seed: Option<u64>,
    /// Denoising steps; `None`: the model's default. Models without steps ignore it.
    pub steps: Option<u32>,
    /// Classifier-free guidance scale; `None`: the model's default.
    pub cfg_scale: Option<f32>,
}

fn b64(png: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(png)
}

fn check_count(n: u32, param: &str, max: u32) -> Result<u32, BasaltError> {
    if (1..=max).contains(&n) {
        Ok(n)
    } else {
        Err(BasaltError::invalid(
            param,
            format!("`{param}` must be between 1 and {max}, got {n}"),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiImagesRequest {
    pub prompt: String,
    pub model: Option<String>,
    pub n: Option<u32>,
    pub size: Option<String>,
    pub response_format: Option<String>,
    pub quality: Option<String>,
    pub style: Option<String>,
    pub user: Option<String>,
    /// Extension: the seed of the first image.
    pub seed: Option<u64>,
    /// Extension: denoising steps (diffusion models).
    pub steps: Option<u32>,
    /// Extension: classifier-free guidance scale (diffusion models).
    pub guidance_scale: Option<f32>,
    /// Extension: what the image should not show (diffusion models).
    pub negative_prompt: Option<String>,
}

impl OpenAiImagesRequest {
    pub fn into_request(self, default_model: &str) -> Result<(String, ImageRequest), BasaltError> {
        if let Some(f) = self.response_format.as_deref().filter(|f| *f != "b64_json") {
            return Err(BasaltError::invalid(
                "response_format",
                format!("`{f}` is not available: Basalt returns images inline (b64_json)"),
            ));
        }
        let (width, height) = match self.size.as_deref() {
            None => (None, None),
            Some(s) => {
                let parsed = s
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
                let (w, h) = parsed.ok_or_else(|| {
                    BasaltError::invalid(
                        "size",
                        format!("`size` must look like 256x256, got `{s}`"),
                    )
                })?;
                (Some(w), Some(h))
            }
        };
        Ok((
            self.model.unwrap_or_else(|| default_model.to_string()),
            ImageRequest {
                prompt: self.prompt,
                negative_prompt: self.negative_prompt,
                n: check_count(self.n.unwrap_or(1), "n", MAX_IMAGES)?,
                width,
                height,
                seed: self.seed,
                steps: self.steps,
                cfg_scale: self.guidance_scale,
            },
        ))
    }
}

pub fn openai_response(created: u64, pngs: &[Vec<u8>]) -> Value {
    let data: Vec<Value> = pngs.iter().map(|p| json!({"b64_json": b64(p)})).collect();
    json!({"created": created, "data": data})
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TitanImageRequest {
    pub task_type: String,
    pub text_to_image_params: Option<TitanTextToImage>,
    #[serde(default)]
    pub image_generation_config: TitanConfig,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TitanTextToImage {
    pub text: String,
    pub negative_text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TitanConfig {
    pub number_of_images: Option<u32>,
    pub height: Option<u32>,
    pub width: Option<u32>,
    pub cfg_scale: Option<f32>,
    pub seed: Option<u64>,
    pub quality: Option<String>,
}

impl TitanImageRequest {
    pub fn into_request(self) -> Result<ImageRequest, BasaltError> {
        if self.task_type != "TEXT_IMAGE" {
            return Err(BasaltError::invalid(
                "taskType",
                format!(
                    "task `{}` is not supported (TEXT_IMAGE only)",
                    self.task_type
                ),
            ));
        }
        let params = self.text_to_image_params.ok_or_else(|| {
            BasaltError::invalid(
                "textToImageParams",
                "`textToImageParams` is required for TEXT_IMAGE",
            )
        })?;
        if params.text.is_empty() {
            return Err(BasaltError::invalid(
                "textToImageParams.text",
                "`text` must not be empty",
            ));
        }
        let c = self.image_generation_config;
        Ok(ImageRequest {
            prompt: params.text,
            negative_prompt: params.negative_text.filter(|t| !t.is_empty()),
            // Titan allows up to 5 images per request.
            n: check_count(
                c.number_of_images.unwrap_or(1),
                "imageGenerationConfig.numberOfImages",
                5,
            )?,
            width: c.width,
            height: c.height,
            seed: c.seed,
            steps: None,
            cfg_scale: c.cfg_scale,
        })
    }
}

pub fn titan_response(pngs: &[Vec<u8>]) -> Value {
    json!({"images": pngs.iter().map(|p| b64(p)).collect::<Vec<_>>(), "error": null})
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StabilityRequest {
    pub text_prompts: Vec<StabilityPrompt>,
    pub cfg_scale: Option<f32>,
    pub seed: Option<u64>,
    pub steps: Option<u32>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub samples: Option<u32>,
    pub style_preset: Option<String>,
    pub sampler: Option<String>,
    pub clip_guidance_preset: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StabilityPrompt {
    pub text: String,
    pub weight: Option<f32>,
}

impl StabilityRequest {
    pub fn into_request(self) -> Result<ImageRequest, BasaltError> {
        // Positive prompts (weight > 0) make the prompt, negative ones the negative prompt.
        let joined = |positive: bool| -> Vec<&str> {
            self.text_prompts
                .iter()
                .filter(|p| (p.weight.unwrap_or(1.0) > 0.0) == positive)
                .map(|p| p.text.as_str())
                .collect()
        };
        let (prompt, negative) = (joined(true), joined(false));
        if prompt.is_empty() {
            return Err(BasaltError::invalid(
                "text_prompts",
                "at least one positive text prompt is required",
            ));
        }
        Ok(ImageRequest {
            prompt: prompt.join(" "),
            negative_prompt: (!negative.is_empty()).then(|| negative.join(" ")),
            n: check_count(self.samples.unwrap_or(1), "samples", MAX_IMAGES)?,
            width: self.width,
            height: self.height,
            seed: self.seed,
            steps: self.steps,
            cfg_scale: self.cfg_scale,
        })
    }
}

pub fn stability_response(images: &[(u64, Vec<u8>)]) -> Value {
    let artifacts: Vec<Value> = images
        .iter()
        .map(|(seed, png)| json!({"seed": seed, "base64": b64(png), "finishReason": "SUCCESS"}))
        .collect();
    json!({"result": "success", "artifacts": artifacts})
}

/// Which native image body an `InvokeModel` call sent.
pub enum NativeImageBody {
    Titan(TitanImageRequest),
    Stability(StabilityRequest),
}

pub fn parse_native(body: &[u8]) -> Result<NativeImageBody, BasaltError> {
    let v: Value = crate::parse_json(body)?;
    if v.get("taskType").is_some() {
        Ok(NativeImageBody::Titan(crate::from_value(v)?))
    } else if v.get("text_prompts").is_some() {
        Ok(NativeImageBody::Stability(crate::from_value(v)?))
    } else {
        Err(BasaltError::invalid(
            "body",
            "an image model takes the Titan body (`taskType`) or the Stability body (`text_prompts`)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_json;

    #[test]
    fn bodies_convert_and_validate() {
        let (m, r) = parse_json::<OpenAiImagesRequest>(
            br#"{"prompt":"a face","n":2,"size":"128x96","seed":5}"#,
        )
        .unwrap()
        .into_request("d")
        .unwrap();
        assert_eq!(
            (m.as_str(), r.n, r.width, r.height, r.seed),
            ("d", 2, Some(128), Some(96), Some(5))
        );
        for (body, param) in [
            (&br#"{"prompt":"x","n":0}"#[..], "n"),
            (br#"{"prompt":"x","size":"big"}"#, "size"),
            (
                br#"{"prompt":"x","response_format":"url"}"#,
                "response_format",
            ),
        ] {
            let e = parse_json::<OpenAiImagesRequest>(body)
                .and_then(|r| r.into_request("d"))
                .unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param));
        }
        let NativeImageBody::Titan(t) = parse_native(
            br#"{"taskType":"TEXT_IMAGE","textToImageParams":{"text":"a face"},
                 "imageGenerationConfig":{"numberOfImages":2,"width":128,"height":128,"seed":3,"cfgScale":8}}"#,
        )
        .unwrap() else {
            panic!()
        };
        let r = t.into_request().unwrap();
        assert_eq!(
            (r.n, r.width, r.seed, r.cfg_scale),
            (2, Some(128), Some(3), Some(8.0))
        );
        let NativeImageBody::Stability(s) = parse_native(
            br#"{"text_prompts":[{"text":"a face","weight":1},{"text":"blurry","weight":-1}],"seed":9,"steps":30,"cfg_scale":7}"#,
        )
        .unwrap() else {
            panic!()
        };
        let r = s.into_request().unwrap();
        assert_eq!((r.prompt.as_str(), r.seed), ("a face", Some(9)));
        assert_eq!(r.negative_prompt.as_deref(), Some("blurry"));
        assert_eq!((r.steps, r.cfg_scale), (Some(30), Some(7.0)));
        assert!(parse_native(br#"{"prompt":"x"}"#).is_err());
        let v = stability_response(&[(9, vec![1, 2])]);
        assert_eq!(v["artifacts"][0]["seed"], 9);
    }
}
