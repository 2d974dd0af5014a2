//! The dense helpers a transformer layer needs around its matrix products: norms, softmax,
//! activations, the gated feed-forward unit, rotary position embeddings.

use std::sync::OnceLock;

use half::f16;

use super::pool::*;

/// `gate[i] = activation(gate[i]) * up[i]`, the gated unit of a feed-forward block, split
/// across the compute pool when large (a prefill chunk); each element computed the same
/// way either way.
pub fn gated_in_place(gate: &mut [f32], up: &[f32], activation: impl Fn(f32) -> f32 + Sync) {
    const CHUNK: usize = 4096;
    let n = gate.len().min(up.len());
    // A lookup or an exponential per element: about eight multiply-adds' worth.
    for_each_chunk(&mut gate[..n], CHUNK, n * 8, |i, g| {
        for (g, u) in g.iter_mut().zip(&up[i * CHUNK..]) {
            *g = activation(*g) * u;
        }
    });
}

/// RMS normalisation in place: `x * w / sqrt(mean(x^2) + eps)`, row by row.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        // Summed in f64 as ggml does: long rows of large activations lose bits in f32.
        let mean = (row.iter().map(|&v| (v * v) as f64).sum::<f64>() / w.len() as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, g) in row.iter_mut().zip(w) {
            *v = *v * scale * g;
        }
    }
}

pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (the form Gemma uses).
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

/// GELU as llama.cpp computes it on CPUs: through an f16 lookup table (input and output
/// rounded to f16) inside (-10, 10), exact outside. Matching it matters for fidelity: the
/// rounding is visible in Gemma's logits.
///
/// Every f16 input has its answer precomputed once (65,536 entries, 128 KiB), so the
/// activation costs a lookup instead of a `tanh` (which was 6% of Gemma's prefill).
pub fn gelu_f16_table(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let table = GELU_F16.get_or_init(|| {
            (0..=u16::MAX)
                .map(|bits| f16::from_f32(gelu_tanh(f16::from_bits(bits).to_f32())))
                .collect()
        });
        table
            .get(f16::from_f32(x).to_bits() as usize)
            .map_or(0.0, |v| v.to_f32())
    }
}

pub(super) static GELU_F16: OnceLock<Vec<f16>> = OnceLock::new();

/// Rotary position embedding tables for one head dimension and frequency base.
#[derive(Debug, Clone)]
pub struct Rope {
    /// How many leading dimensions of each head rotate (all of them but in Phi-4-mini-style
    /// partial rotary embeddings); the rest pass through.
    rotary_dims: usize,
    theta_scale: f32,
    /// `true`: rotate the two halves of the head (GPT-NeoX style, Gemma); `false`: rotate
    /// adjacent pairs (the original LLaMA layout, which GGUF llama weights are permuted for).
    neox: bool,
    /// Per-frequency divisors of the angle (one per pair), as Llama 3.1 and later scale
    /// their long-context frequencies: GGUF files carry them as the `rope_freqs` tensor.
    factors: Option<Vec<f32>>,
    /// Multiplies the rotation's cosine and sine (Phi 3's long-rope magnitude correction).
    magnitude: f32,
}

impl Rope {
    /// Rotation of the first `rotary_dims` dimensions of each head.
    pub fn new(rotary_dims: usize, base: f32, neox: bool) -> Self {
        Self {
            rotary_dims,
            theta_scale: base.powf(-2.0 / rotary_dims as f32),
            neox,
            factors: None,
            magnitude: 1.0,
        }
    }

    /// Divides frequency `i`'s angle by `factors[i]` (`rotary_dims / 2` of them).
    pub fn with_factors(mut self, factors: Vec<f32>) -> Self {
        self.factors = Some(factors);
        self
    }

    /// Scales the rotated dimensions by `magnitude`.
    pub fn with_magnitude(mut self, magnitude: f32) -> Self {
        self.magnitude = magnitude;
        self
    }

    /// Rotates every head in `heads` (each `head_dim` long) for position `pos`.
    pub fn apply(&self, heads: &mut [f32], head_dim: usize, pos: usize) {
        let half = self.rotary_dims.min(head_dim) / 2;
        // The angle is advanced by repeated multiplication, as ggml does, rather than by
        // `powf` per frequency: the rounding then matches llama.cpp's.
        let mut theta = pos as f32;
        let mut cos_sin = [(0f32, 0f32); 256];
        let cos_sin = &mut cos_sin[..half.min(256)];
        for (i, cs) in cos_sin.iter_mut().enumerate() {
            // The divided angle is not carried forward: ggml divides each frequency's own.
            let angle = match self.factors.as_ref().and_then(|f| f.get(i)) {
                Some(&factor) => theta / factor,
                None => theta,
            };
            *cs = (angle.cos() * self.magnitude, angle.sin() * self.magnitude);
            theta *= self.theta_scale;
        }
        for head in heads.chunks_exact_mut(head_dim) {
            for (i, &(cos, sin)) in cos_sin.iter().enumerate() {
                let (a, b) = if self.neox {
                    (i, i + half)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }
}
