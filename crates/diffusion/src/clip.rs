//! CLIP's text transformer (Hugging Face `CLIPTextModel` weight names), as Stable
//! Diffusion uses it: token and position embeddings, pre-norm transformer layers with a
//! causal mask, a final layer norm; the prompt's conditioning is the last hidden state.
//!
//! Configured from `text_encoder/config.json`, so SD 1.x (OpenAI CLIP ViT-L, `quick_gelu`)
//! and SD 2.x / SD-Turbo (OpenCLIP ViT-H, `gelu`) both load.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct TextEncoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_act() -> String {
    "quick_gelu".into()
}

fn default_eps() -> f64 {
    1e-5
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    QuickGelu,
    Gelu,
}

impl Activation {
    fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Activation::Gelu => xs.gelu_erf(),
        }
    }
}

struct Layer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct ClipTextEncoder {
    tokens: Embedding,
    positions: Embedding,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    heads: usize,
    act: Activation,
    max_len: usize,
}

impl ClipTextEncoder {
    /// Builds the encoder from `vb`, rooted at the weights file. transformers 4 nests every
    /// tensor under `text_model.` (SD 1.5's files); transformers 5 writes them unprefixed.
    pub fn new(vb: VarBuilder, c: &TextEncoderConfig) -> candle_core::Result<Self> {
        let act = match c.hidden_act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => candle_core::bail!("text encoder activation `{other}` is not supported"),
        };
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!(
                "hidden size {} does not split into {} heads",
                c.hidden_size,
                c.num_attention_heads
            );
        }
        let vb = if vb.contains_tensor("text_model.embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb
        };
        let emb = vb.pp("embeddings");
        let d = c.hidden_size;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layers.{i}"));
                let attn = l.pp("self_attn");
                Ok(Layer {
                    norm1: layer_norm(d, c.layer_norm_eps, l.pp("layer_norm1"))?,
                    q: linear(d, d, attn.pp("q_proj"))?,
                    k: linear(d, d, attn.pp("k_proj"))?,
                    v: linear(d, d, attn.pp("v_proj"))?,
                    out: linear(d, d, attn.pp("out_proj"))?,
                    norm2: layer_norm(d, c.layer_norm_eps, l.pp("layer_norm2"))?,
                    fc1: linear(d, c.intermediate_size, l.pp("mlp.fc1"))?,
                    fc2: linear(c.intermediate_size, d, l.pp("mlp.fc2"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            tokens: embedding(c.vocab_size, d, emb.pp("token_embedding"))?,
            positions: embedding(c.max_position_embeddings, d, emb.pp("position_embedding"))?,
            layers,
            final_norm: layer_norm(d, c.layer_norm_eps, vb.pp("final_layer_norm"))?,
            heads: c.num_attention_heads,
            act,
            max_len: c.max_position_embeddings,
        })
    }

    /// The longest prompt, in tokens, start and end markers included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    fn attention(&self, layer: &Layer, xs: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, d) = xs.dims3()?;
        let head = d / self.heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, n, self.heads, head))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((layer.q.forward(xs)? * (head as f64).powf(-0.5))?)?;
        let k = split(layer.k.forward(xs)?)?;
        let v = split(layer.v.forward(xs)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, n, d))?;
        layer.out.forward(&ctx)
    }

    /// `(batch, tokens)` ids to `(batch, tokens, hidden)` conditioning.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (_, n) = ids.dims2()?;
        if n > self.max_len {
            candle_core::bail!("{n} tokens exceed the text encoder's {}", self.max_len);
        }
        let device = ids.device();
        let positions = Tensor::arange(0u32, n as u32, device)?;
        let mut xs = self
            .tokens
            .forward(ids)?
            .broadcast_add(&self.positions.forward(&positions)?)?;
        let mask = causal_mask(n, device)?;
        for layer in &self.layers {
            let attended = self.attention(layer, &layer.norm1.forward(&xs)?, &mask)?;
            xs = (xs + attended)?;
            let hidden = self
                .act
                .apply(&layer.fc1.forward(&layer.norm2.forward(&xs)?)?)?;
            xs = (xs + layer.fc2.forward(&hidden)?)?;
        }
        self.final_norm.forward(&xs)
    }
}

/// `(n, n)`: 0 where a token may look (itself and earlier), a large negative value after.
fn causal_mask(n: usize, device: &Device) -> candle_core::Result<Tensor> {
    let values: Vec<f32> = (0..n)
        .flat_map(|i| (0..n).map(move |j| if j > i { f32::MIN } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (n, n), device)?.to_dtype(DType::F32)
}
