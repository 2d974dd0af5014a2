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
    /// Repacked at load from PyTorch's `[out, in]` into panels of 32 outputs:
    /// `[out / 32][in][32]` (the last panel zero-padded), so the product kernel reads each
    /// panel front to back and one panel (48-192 KB) stays in cache while every row of a
    /// chunk goes through it.
    w: Vec<f32>,
    b: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Linear {
    /// From PyTorch's `[out, in]` layout.
    fn from_rows(w: Vec<f32>, b: Vec<f32>, inputs: usize, outputs: usize) -> Self {
        let panels = outputs.div_ceil(TILE_COLS);
        let mut packed = vec![0f32; panels * inputs * TILE_COLS];
        for o in 0..outputs {
            let (p, j) = (o / TILE_COLS, o % TILE_COLS);
            for i in 0..inputs {
                packed[(p * inputs + i) * TILE_COLS + j] = w[o * inputs + i];
            }
        }
        Self {
            w: packed,
            b,
            inputs,
            outputs,
        }
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.w[p * self.inputs * TILE_COLS..(p + 1) * self.inputs * TILE_COLS]
    }
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

/// `[out, in]` weight and bias, as stored.
fn linear_rows(
    st: &SafeTensors,
    name: &str,
    outputs: usize,
    inputs: usize,
) -> Result<(Vec<f32>, Vec<f32>), EmbedError> {
    Ok((
        st.tensor(&format!("{name}.weight"), &[outputs, inputs])?,
        st.tensor(&format!("{name}.bias"), &[outputs])?,
    ))
}

fn linear(
    st: &SafeTensors,
    name: &str,
    outputs: usize,
    inputs: usize,
) -> Result<Linear, EmbedError> {
    let (w, b) = linear_rows(st, name, outputs, inputs)?;
    Ok(Linear::from_rows(w, b, inputs, outputs))
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
            let (qw, qb) = linear_rows(st, &format!("{l}.attention.self.query"), h, h)?;
            let (kw, kb) = linear_rows(st, &format!("{l}.attention.self.key"), h, h)?;
            let (vw, vb) = linear_rows(st, &format!("{l}.attention.self.value"), h, h)?;
            // One [3h, h] product instead of three.
            let qkv = Linear::from_rows([qw, kw, vw].concat(), [qb, kb, vb].concat(), h, 3 * h);
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
            up.par_chunks_mut(4096).for_each(gelu_in_place);
            matmul(&up, total, &layer.down, &mut tmp);
            add_in_place(&mut tmp, &x);
            layer_norm(&mut tmp, h, &layer.out_norm, c.eps);
            std::mem::swap(&mut x, &mut tmp);
        }
        Ok(x)
    }
}

/// The exact (erf) GELU that BERT's `gelu` names; single-precision erf is accurate to
/// about an ulp, far inside what the fidelity test allows. The reference for
/// [`gelu_in_place`].
#[cfg(test)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The erf GELU over a slice, written without calls or branches so that it vectorises:
/// erf by Abramowitz and Stegun's 7.1.26 (absolute error at most 1.5e-7, an ulp or two of
/// `1 + erf`), its `exp(-z^2)` by a degree-7 polynomial after reducing by powers of two.
fn gelu_in_place(xs: &mut [f32]) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    for x in xs {
        let z = (*x * std::f32::consts::FRAC_1_SQRT_2).abs();
        let t = 1.0 / (1.0 + P * z);
        let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
        let erf_abs = 1.0 - poly * exp_neg(z * z);
        let erf = if *x < 0.0 { -erf_abs } else { erf_abs };
        *x = 0.5 * *x * (1.0 + erf);
    }
}

/// `exp(-y)` for `y >= 0`, to about an ulp, branch-free: `-y = n ln 2 + r` with
/// `|r| <= ln 2 / 2`, `exp(r)` by its Taylor series to degree 7, `2^n` built in the
/// exponent bits. Past `y = 87` it returns `exp(-87)` (about 1.6e-38), which vanishes next
/// to the 1 it is subtracted from.
#[inline(always)]
fn exp_neg(y: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let y = y.min(87.0);
    let n = (-y * std::f32::consts::LOG2_E).round();
    let r = (-y - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((n as i32 + 127).max(0) as u32) << 23);
    p * scale
}

fn add_in_place(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
}

fn layer_norm(x: &mut [f32], width: usize, n: &Norm, eps: f32) {
    x.par_chunks_mut(width * 32).for_each(|rows| {
        rows.chunks_mut(width)
            .for_each(|row| norm_row(row, width, n, eps))
    });
}

/// Sum with sixteen independent lanes, so it vectorises (as PyTorch's f32 reductions do).
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn norm_row(row: &mut [f32], width: usize, n: &Norm, eps: f32) {
    let mean = lane_sum(row, |x| x) / width as f32;
    let var = lane_sum(row, |x| (x - mean) * (x - mean)) / width as f32;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, w), b) in row.iter_mut().zip(&n.w).zip(&n.b) {
        *v = (*v - mean) * inv * w + b;
    }
}

/// Rows per micro-kernel tile, and outputs per tile.
const TILE_ROWS: usize = 8;
const TILE_COLS: usize = 32;

/// Most rows one task takes: a panel of weights is reused across all of them while in
/// cache. Fewer rows are split so that every compute thread gets a share.
const MAX_ROW_CHUNK: usize = 64;

/// `out[r] = x[r] · W + b` for every row. Rows go to the compute threads in chunks; within
/// a chunk, each 32-output weight panel is applied to every 8-row tile before the next
/// panel is touched. A tile is accumulated in registers over all inputs: per input, one
/// broadcast of `x[r][k]` per row and the panel's 32 weights feed the fused multiply-adds
/// (with AVX-512, sixteen 16-lane accumulators; elsewhere a portable loop the compiler
/// vectorises).
fn matmul(x: &[f32], rows: usize, l: &Linear, out: &mut [f32]) {
    let (n_in, n_out) = (l.inputs, l.outputs);
    let wide = simd::available();
    let threads = rayon::current_num_threads().max(1);
    let row_chunk = rows
        .div_ceil(threads)
        .next_multiple_of(TILE_ROWS)
        .clamp(TILE_ROWS, MAX_ROW_CHUNK);
    out[..rows * n_out]
        .par_chunks_mut(row_chunk * n_out)
        .enumerate()
        .for_each(|(chunk, dst)| {
            let chunk_rows = dst.len() / n_out;
            for p in 0..n_out.div_ceil(TILE_COLS) {
                let panel = l.panel(p);
                let o0 = p * TILE_COLS;
                let width = TILE_COLS.min(n_out - o0);
                let mut r = 0;
                while r < chunk_rows {
                    let count = TILE_ROWS.min(chunk_rows - r);
                    let row0 = chunk * row_chunk + r;
                    let mut acc = [[0f32; TILE_COLS]; TILE_ROWS];
                    let done = if !wide {
                        false
                    } else if count == TILE_ROWS {
                        simd::tile(x, row0, n_in, panel, &mut acc)
                    } else {
                        // A last, partial tile: zero-padded to full height, so it too runs
                        // on the vector kernel.
                        let mut padded = vec![0f32; TILE_ROWS * n_in];
                        padded[..count * n_in]
                            .copy_from_slice(&x[row0 * n_in..(row0 + count) * n_in]);
                        simd::tile(&padded, 0, n_in, panel, &mut acc)
                    };
                    if !done {
                        for (i, acc_i) in acc.iter_mut().enumerate().take(count) {
                            let xr = &x[(row0 + i) * n_in..(row0 + i + 1) * n_in];
                            for (k, &xv) in xr.iter().enumerate() {
                                let w = &panel[k * TILE_COLS..(k + 1) * TILE_COLS];
                                for (a, wv) in acc_i.iter_mut().zip(w) {
                                    *a += xv * wv;
                                }
                            }
                        }
                    }
                    for (i, acc_i) in acc.iter().enumerate().take(count) {
                        let d = &mut dst[(r + i) * n_out + o0..(r + i) * n_out + o0 + width];
                        for (j, v) in d.iter_mut().enumerate() {
                            *v = acc_i[j] + l.b[o0 + j];
                        }
                    }
                    r += count;
                }
            }
        });
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{TILE_COLS, TILE_ROWS};

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// One full 8×32 tile against a packed `[in][32]` panel; `false` (nothing written)
    /// if the slices are too short for it.
    pub fn tile(
        x: &[f32],
        r0: usize,
        n_in: usize,
        panel: &[f32],
        acc: &mut [[f32; TILE_COLS]; TILE_ROWS],
    ) -> bool {
        let x_ok = (r0 + TILE_ROWS) * n_in <= x.len();
        let w_ok = n_in * TILE_COLS <= panel.len();
        if !(x_ok && w_ok && available()) {
            return false;
        }
        // SAFETY: AVX-512F is present (checked above) and every load below stays inside
        // `x` and `panel` (the bounds were checked against their lengths above).
        unsafe { tile_avx512(x.as_ptr(), r0, n_in, panel.as_ptr(), acc) };
        true
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile_avx512(
        x: *const f32,
        r0: usize,
        n_in: usize,
        w: *const f32,
        acc: &mut [[f32; TILE_COLS]; TILE_ROWS],
    ) {
        let mut a = [[_mm512_setzero_ps(); 2]; TILE_ROWS];
        for k in 0..n_in {
            // SAFETY: the caller checked that `panel[k * 32 .. + 32]` and
            // `x[(r0 + r) * n_in + k]` for r < 8 are in bounds.
            unsafe {
                let wp = w.add(k * TILE_COLS);
                let w0 = _mm512_loadu_ps(wp);
                let w1 = _mm512_loadu_ps(wp.add(16));
                for (r, ar) in a.iter_mut().enumerate() {
                    let xv = _mm512_set1_ps(*x.add((r0 + r) * n_in + k));
                    ar[0] = _mm512_fmadd_ps(xv, w0, ar[0]);
                    ar[1] = _mm512_fmadd_ps(xv, w1, ar[1]);
                }
            }
        }
        for (r, ar) in a.iter().enumerate() {
            // SAFETY: `acc[r]` holds 32 f32s, written as two 16-lane stores.
            unsafe {
                _mm512_storeu_ps(acc[r].as_mut_ptr(), ar[0]);
                _mm512_storeu_ps(acc[r].as_mut_ptr().add(16), ar[1]);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    use super::{TILE_COLS, TILE_ROWS};

    pub fn available() -> bool {
        false
    }

    pub fn tile(
        _: &[f32],
        _: usize,
        _: usize,
        _: &[f32],
        _: &mut [[f32; TILE_COLS]; TILE_ROWS],
    ) -> bool {
        false
    }
}

/// Keys scored per block: sixty-four running sums stay in registers across the head's
/// dimensions.
const KEY_BLOCK: usize = 64;

/// `scores[j] = scale * q . k_j` from the head's transposed keys (`q.len()` rows of
/// `scores.len()`).
fn query_scores(q: &[f32], scale: f32, keys_t: &[f32], scores: &mut [f32]) {
    let len = scores.len();
    let mut j0 = 0;
    for block in scores.chunks_mut(KEY_BLOCK) {
        let mut acc = [0f32; KEY_BLOCK];
        let acc = &mut acc[..block.len()];
        for (c, &qc) in q.iter().enumerate() {
            let qc = qc * scale;
            let keys = &keys_t[c * len + j0..][..block.len()];
            for (a, &kv) in acc.iter_mut().zip(keys) {
                *a += qc * kv;
            }
        }
        block.copy_from_slice(acc);
        j0 += block.len();
    }
}

/// `out += sum_j weights[j] * v_j` for heads of `D` dimensions, the sum held in registers.
fn weighted_values<const D: usize>(weights: &[f32], values: &[f32], out: &mut [f32]) {
    let mut acc = [0f32; D];
    for (&p, v) in weights.iter().zip(values.chunks_exact(D)) {
        for (a, &vc) in acc.iter_mut().zip(v) {
            *a += p * vc;
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o += a;
    }
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
            let row = |t: usize, part: usize| &qkv[(start + t) * 3 * h + part * h + hd * d..][..d];
            // The head's keys transposed (`d` rows of `len`) and its values gathered
            // (`len` rows of `d`): a query's scores are then `d` passes of multiply-adds
            // along all keys at once, and its output a pass per key along its value, both
            // contiguous and vectorised, with no horizontal sum per (query, key) pair.
            let mut keys_t = vec![0f32; d * len];
            let mut values = vec![0f32; len * d];
            for t in 0..len {
                for (c, &kv) in row(t, 1).iter().enumerate() {
                    keys_t[c * len + t] = kv;
                }
                values[t * d..(t + 1) * d].copy_from_slice(row(t, 2));
            }
            let mut out = vec![0f32; len * d];
            let mut scores = vec![0f32; len];
            for (i, o) in out.chunks_exact_mut(d).enumerate() {
                query_scores(row(i, 0), scale, &keys_t, &mut scores);
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                match d {
                    32 => weighted_values::<32>(&scores, &values, o),
                    64 => weighted_values::<64>(&scores, &values, o),
                    _ => {
                        for (&p, v) in scores.iter().zip(values.chunks_exact(d)) {
                            for (oc, &vc) in o.iter_mut().zip(v) {
                                *oc += p * vc;
                            }
                        }
                    }
                }
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|x| *x *= inv);
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
    fn vectorised_gelu_follows_the_erf_definition() {
        // Every 1/64 from -12 to 12, and the extremes: within 3e-7 of the libm version
        // (absolute, and relative to |x|: two or three ulps), and exactly 0 in the far
        // negative tail.
        let mut xs: Vec<f32> = (-768..=768).map(|i| i as f32 / 64.0).collect();
        xs.extend([-1e4, -100.0, -20.0, 20.0, 100.0, 1e4, 1e-30, -1e-30]);
        let mut got = xs.clone();
        gelu_in_place(&mut got);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = gelu(x);
            assert!(
                (g - want).abs() <= 3e-7 * x.abs().max(1.0),
                "gelu({x}) = {g}, want {want}"
            );
        }
        assert_eq!(got[xs.len() - 6], 0.0);
        assert!(!got.iter().any(|g| g.is_nan()));
    }

    #[test]
    fn exp_neg_is_close_to_exp() {
        for i in 0..=1740 {
            let y = i as f32 * 0.05;
            let (got, want) = (exp_neg(y), (-y).exp());
            assert!(
                (got - want).abs() <= 2e-7 * want + 1e-38,
                "exp(-{y}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn matmul_matches_a_plain_loop() {
        // Shapes that exercise full tiles and both kinds of edge.
        for (rows, n_in, n_out) in [(7, 13, 5), (8, 40, 64), (17, 33, 40), (16, 384, 96)] {
            check(rows, n_in, n_out);
        }
    }

    fn check(rows: usize, n_in: usize, n_out: usize) {
        let x: Vec<f32> = (0..rows * n_in).map(|i| (i as f32 * 0.37).sin()).collect();
        let rows_w: Vec<f32> = (0..n_out * n_in).map(|i| (i as f32 * 0.11).cos()).collect();
        let b: Vec<f32> = (0..n_out).map(|i| i as f32).collect();
        let l = Linear::from_rows(rows_w.clone(), b.clone(), n_in, n_out);
        let mut out = vec![0f32; rows * n_out];
        matmul(&x, rows, &l, &mut out);
        for r in 0..rows {
            for o in 0..n_out {
                let want: f32 = (0..n_in)
                    .map(|i| x[r * n_in + i] * rows_w[o * n_in + i])
                    .sum::<f32>()
                    + b[o];
                assert!(
                    (out[r * n_out + o] - want).abs() < 1e-3,
                    "{rows}x{n_in}x{n_out} at {r},{o}"
                );
            }
        }
    }
}
