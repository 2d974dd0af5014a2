//! A BERT encoder (the architecture of sentence-transformers' MiniLM, MPNet-free BERT
//! checkpoints), configured from `config.json`, in f32.
//!
//! Sequences of a batch are packed end to end rather than padded: the dense layers see
//! all tokens of all sequences as one matrix (so weights are read once per batch), and
//! attention runs within each sequence. There is no padding to mask and no work wasted on
//! it.

use rayon::prelude::*;

use crate::safetensors::SafeTensors;
use crate::EmbedError;

#[derive(Debug, Clone)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
}

impl BertConfig {
    pub fn from_json(v: &serde_json::Value) -> Result<Self, EmbedError> {
        let n = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| EmbedError::Model(format!("config.json: missing `{k}`")))
        };
        let act = v
            .get("hidden_act")
            .and_then(|a| a.as_str())
            .unwrap_or("gelu");
        if act != "gelu" {
            return Err(EmbedError::Model(format!(
                "config.json: activation `{act}` is not supported (gelu only)"
            )));
        }
        let c = Self {
            vocab_size: n("vocab_size")?,
            hidden: n("hidden_size")?,
            layers: n("num_hidden_layers")?,
            heads: n("num_attention_heads")?,
            intermediate: n("intermediate_size")?,
            max_positions: n("max_position_embeddings")?,
            type_vocab: n("type_vocab_size").unwrap_or(2),
            eps: v
                .get("layer_norm_eps")
                .and_then(|x| x.as_f64())
                .unwrap_or(1e-12) as f32,
        };
        if c.heads == 0 || !c.hidden.is_multiple_of(c.heads) || c.hidden == 0 || c.layers == 0 {
            return Err(EmbedError::Model(
                "config.json: hidden size must be a multiple of the head count".into(),
            ));
        }
        if c.hidden > 8192 || c.layers > 256 || c.intermediate > 65_536 || c.max_positions > 65_536
        {
            return Err(EmbedError::Model("config.json: implausible sizes".into()));
        }
        Ok(c)
    }
}

struct Linear {
    /// `[out, in]`, row-major, as PyTorch stores it.
    w: Vec<f32>,
    b: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

pub struct Bert {
    pub config: BertConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
}

fn linear(
    st: &SafeTensors,
    name: &str,
    outputs: usize,
    inputs: usize,
) -> Result<Linear, EmbedError> {
    Ok(Linear {
        w: st.tensor(&format!("{name}.weight"), &[outputs, inputs])?,
        b: st.tensor(&format!("{name}.bias"), &[outputs])?,
        inputs,
        outputs,
    })
}

fn norm(st: &SafeTensors, name: &str, size: usize) -> Result<Norm, EmbedError> {
    Ok(Norm {
        w: st.tensor(&format!("{name}.weight"), &[size])?,
        b: st.tensor(&format!("{name}.bias"), &[size])?,
    })
}

impl Bert {
    pub fn load(st: &SafeTensors, config: BertConfig) -> Result<Self, EmbedError> {
        let h = config.hidden;
        // Full BertModel checkpoints prefix every name with `bert.`; sentence-transformers'
        // exports do not.
        let p = if st.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let l = format!("{p}encoder.layer.{i}");
            let q = linear(st, &format!("{l}.attention.self.query"), h, h)?;
            let k = linear(st, &format!("{l}.attention.self.key"), h, h)?;
            let v = linear(st, &format!("{l}.attention.self.value"), h, h)?;
            // One [3h, h] product instead of three.
            let qkv = Linear {
                w: [q.w, k.w, v.w].concat(),
                b: [q.b, k.b, v.b].concat(),
                inputs: h,
                outputs: 3 * h,
            };
            layers.push(Layer {
                qkv,
                attn_out: linear(st, &format!("{l}.attention.output.dense"), h, h)?,
                attn_norm: norm(st, &format!("{l}.attention.output.LayerNorm"), h)?,
                up: linear(
                    st,
                    &format!("{l}.intermediate.dense"),
                    config.intermediate,
                    h,
                )?,
                down: linear(st, &format!("{l}.output.dense"), h, config.intermediate)?,
                out_norm: norm(st, &format!("{l}.output.LayerNorm"), h)?,
            });
        }
        Ok(Self {
            word: st.tensor(
                &format!("{p}embeddings.word_embeddings.weight"),
                &[config.vocab_size, h],
            )?,
            position: st.tensor(
                &format!("{p}embeddings.position_embeddings.weight"),
                &[config.max_positions, h],
            )?,
            token_type: st.tensor(
                &format!("{p}embeddings.token_type_embeddings.weight"),
                &[config.type_vocab, h],
            )?,
            emb_norm: norm(st, &format!("{p}embeddings.LayerNorm"), h)?,
            layers,
            config,
        })
    }

    /// The last hidden state of every token of every sequence, packed: sequence `i`'s
    /// rows follow sequence `i - 1`'s.
    pub fn forward(&self, sequences: &[Vec<u32>]) -> Result<Vec<f32>, EmbedError> {
        let c = &self.config;
        let h = c.hidden;
        let total: usize = sequences.iter().map(Vec::len).sum();
        let mut x = vec![0f32; total * h];
        let mut row = 0;
        for seq in sequences {
            if seq.len() > c.max_positions {
                return Err(EmbedError::Input(format!(
                    "a sequence of {} tokens exceeds the model's {} positions",
                    seq.len(),
                    c.max_positions
                )));
            }
            for (pos, &id) in seq.iter().enumerate() {
                let id = id as usize;
                if id >= c.vocab_size {
                    return Err(EmbedError::Input(format!(
                        "token id {id} outside the vocabulary"
                    )));
                }
                let dst = &mut x[row * h..(row + 1) * h];
                let w = &self.word[id * h..(id + 1) * h];
                let p = &self.position[pos * h..(pos + 1) * h];
                let t = &self.token_type[..h];
                for j in 0..h {
                    dst[j] = w[j] + p[j] + t[j];
                }
                row += 1;
            }
        }
        layer_norm(&mut x, h, &self.emb_norm, c.eps);
        let spans: Vec<(usize, usize)> = sequences
            .iter()
            .scan(0, |start, s| {
                let span = (*start, s.len());
                *start += s.len();
                Some(span)
            })
            .collect();
        let mut qkv = vec![0f32; total * 3 * h];
        let mut ctx = vec![0f32; total * h];
        let mut tmp = vec![0f32; total * h];
        let mut up = vec![0f32; total * c.intermediate];
        for layer in &self.layers {
            matmul(&x, total, &layer.qkv, &mut qkv);
            attention(&qkv, &spans, h, c.heads, &mut ctx);
            matmul(&ctx, total, &layer.attn_out, &mut tmp);
            add_in_place(&mut tmp, &x);
            layer_norm(&mut tmp, h, &layer.attn_norm, c.eps);
            std::mem::swap(&mut x, &mut tmp);
            matmul(&x, total, &layer.up, &mut up);
            up.par_chunks_mut(4096).for_each(|chunk| {
                for v in chunk {
                    *v = gelu(*v);
                }
            });
            matmul(&up, total, &layer.down, &mut tmp);
            add_in_place(&mut tmp, &x);
            layer_norm(&mut tmp, h, &layer.out_norm, c.eps);
            std::mem::swap(&mut x, &mut tmp);
        }
        Ok(x)
    }
}

/// The exact (erf) GELU that BERT's `gelu` names.
fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}

fn add_in_place(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
}

fn layer_norm(x: &mut [f32], width: usize, n: &Norm, eps: f32) {
    x.par_chunks_mut(width).for_each(|row| {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
        let var = row
            .iter()
            .map(|&v| {
                let d = v as f64 - mean;
                d * d
            })
            .sum::<f64>()
            / width as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (j, v) in row.iter_mut().enumerate() {
            *v = ((*v as f64 - mean) * inv) as f32 * n.w[j] + n.b[j];
        }
    });
}

/// Dot product with eight independent accumulators, so it vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for k in 0..8 {
            acc[k] += a[i * 8 + k] * b[i * 8 + k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// `out[r] = x[r] · Wᵀ + b` for every row, four rows at a time so each weight row loaded
/// from memory serves four tokens; rows are spread over the compute threads.
fn matmul(x: &[f32], rows: usize, l: &Linear, out: &mut [f32]) {
    let (n_in, n_out) = (l.inputs, l.outputs);
    out[..rows * n_out]
        .par_chunks_mut(4 * n_out)
        .enumerate()
        .for_each(|(block, dst)| {
            let r0 = block * 4;
            let count = dst.len() / n_out;
            let xr = |i: usize| &x[(r0 + i) * n_in..(r0 + i + 1) * n_in];
            for o in 0..n_out {
                let w = &l.w[o * n_in..(o + 1) * n_in];
                for i in 0..count {
                    dst[i * n_out + o] = dot(xr(i), w) + l.b[o];
                }
            }
        });
}

/// Scaled dot-product attention within each sequence, for every head.
fn attention(qkv: &[f32], spans: &[(usize, usize)], h: usize, heads: usize, ctx: &mut [f32]) {
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    // One task per (sequence, head); each writes its own columns of its own rows.
    let tasks: Vec<(usize, usize, usize)> = spans
        .iter()
        .flat_map(|&(start, len)| (0..heads).map(move |hd| (start, len, hd)))
        .collect();
    let results: Vec<(usize, usize, usize, Vec<f32>)> = tasks
        .par_iter()
        .map(|&(start, len, hd)| {
            let q = |t: usize| &qkv[(start + t) * 3 * h + hd * d..][..d];
            let k = |t: usize| &qkv[(start + t) * 3 * h + h + hd * d..][..d];
            let v = |t: usize| &qkv[(start + t) * 3 * h + 2 * h + hd * d..][..d];
            let mut out = vec![0f32; len * d];
            let mut scores = vec![0f32; len];
            for i in 0..len {
                let mut max = f32::NEG_INFINITY;
                for (j, s) in scores.iter_mut().enumerate() {
                    *s = dot(q(i), k(j)) * scale;
                    max = max.max(*s);
                }
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let o = &mut out[i * d..(i + 1) * d];
                for (j, s) in scores.iter().enumerate() {
                    let p = s / sum;
                    for (oc, vc) in o.iter_mut().zip(v(j)) {
                        *oc += p * vc;
                    }
                }
            }
            (start, len, hd, out)
        })
        .collect();
    for (start, len, hd, out) in results {
        for t in 0..len {
            ctx[(start + t) * h + hd * d..][..d].copy_from_slice(&out[t * d..(t + 1) * d]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_matches_known_values() {
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
        assert_eq!(gelu(0.0), 0.0);
    }

    #[test]
    fn matmul_matches_a_plain_loop() {
        let (rows, n_in, n_out) = (7, 13, 5);
        let x: Vec<f32> = (0..rows * n_in).map(|i| (i as f32 * 0.37).sin()).collect();
        let l = Linear {
            w: (0..n_out * n_in).map(|i| (i as f32 * 0.11).cos()).collect(),
            b: (0..n_out).map(|i| i as f32).collect(),
            inputs: n_in,
            outputs: n_out,
        };
        let mut out = vec![0f32; rows * n_out];
        matmul(&x, rows, &l, &mut out);
        for r in 0..rows {
            for o in 0..n_out {
                let want: f32 = (0..n_in)
                    .map(|i| x[r * n_in + i] * l.w[o * n_in + i])
                    .sum::<f32>()
                    + l.b[o];
                assert!((out[r * n_out + o] - want).abs() < 1e-4);
            }
        }
    }
}
