//! Turning logits into the next token: penalties, truncation (top-k, top-p, min-p),
//! temperature and a seeded random draw; plus log-probabilities for the API.
//!
//! Determinism: the random stream depends only on the seed, and every step consumes exactly
//! one draw, so the same seed and inputs give the same tokens.

use std::collections::HashMap;

use basalt_types::SamplingParams;

/// How far back the repetition penalty looks (llama.cpp's default).
const REPETITION_WINDOW: usize = 64;

/// xoshiro256** seeded through splitmix64: small, fast, and stable across platforms.
#[derive(Debug, Clone)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A seed for requests that did not ask for one.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Counts of generated tokens, for frequency and presence penalties.
    counts: HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = Rng::new(params.seed.unwrap_or_else(random_seed));
        Self {
            params,
            rng,
            counts: HashMap::new(),
        }
    }

    /// Applies penalties to `logits` in place. `context` is every token so far (prompt and
    /// generated).
    pub fn apply_penalties(&self, logits: &mut [f32], context: &[u32]) {
        for &(token, bias) in &self.params.logit_bias {
            if let Some(l) = logits.get_mut(token as usize) {
                *l += bias;
            }
        }
        let p = &self.params;
        if p.repetition_penalty != 1.0 && p.repetition_penalty > 0.0 {
            let start = context.len().saturating_sub(REPETITION_WINDOW);
            let mut seen: Vec<u32> = context[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            for (&t, &c) in &self.counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= c as f32 * p.frequency_penalty + p.presence_penalty;
                }
            }
        }
    }

    /// Chooses the next token from penalised logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        // One draw per step whatever the path, so a seeded stream stays aligned.
        let draw = self.rng.next_f32();
        let token = if p.temperature <= 0.0 {
            argmax(logits)
        } else {
            let mut cand: Vec<(u32, f32)> = logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l))
                .collect();
            let k = if p.top_k > 0 {
                p.top_k.min(cand.len())
            } else {
                cand.len()
            };
            if k < cand.len() {
                cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
                cand.truncate(k);
            }
            cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let max = cand.first().map_or(0.0, |c| c.1);
            let mut probs: Vec<f32> = cand
                .iter()
                .map(|c| ((c.1 - max) / p.temperature).exp())
                .collect();
            let total: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|v| *v /= total);
            let mut keep = probs.len();
            if p.top_p < 1.0 {
                let mut cum = 0.0;
                for (i, pr) in probs.iter().enumerate() {
                    cum += pr;
                    if cum >= p.top_p {
                        keep = i + 1;
                        break;
                    }
                }
            }
            if p.min_p > 0.0 {
                let floor = probs[0] * p.min_p;
                keep = keep.min(probs.iter().take_while(|&&pr| pr >= floor).count().max(1));
            }
            let total: f32 = probs[..keep].iter().sum();
            let mut target = draw * total;
            let mut chosen = cand[keep - 1].0;
            for (c, pr) in cand.iter().zip(&probs[..keep]) {
                if target < *pr {
                    chosen = c.0;
                    break;
                }
                target -= pr;
            }
            chosen
        };
        *self.counts.entry(token).or_insert(0) += 1;
        token
    }
}

/// The index of the largest logit, the first one on a tie; NaNs never win (0 if all are).
///
/// Greedy decoding runs this once per sequence per step over the whole vocabulary (262,144
/// logits for Gemma), serially between forward passes. A loop that carries the best index
/// compares one logit at a time; this one takes the maximum of each chunk in SIMD lanes,
/// then looks for the first logit equal to the overall maximum inside the first chunk that
/// has it.
pub fn argmax(logits: &[f32]) -> u32 {
    const CHUNK: usize = 1024;
    const LANES: usize = 16;
    let chunk_max = |chunk: &[f32]| {
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let mut groups = chunk.chunks_exact(LANES);
        for group in &mut groups {
            for (m, &l) in lanes.iter_mut().zip(group) {
                // `>` is false for NaN, so a NaN never replaces a lane's maximum.
                *m = if l > *m { l } else { *m };
            }
        }
        let tail = groups.remainder().iter().copied();
        lanes
            .into_iter()
            .chain(tail)
            .fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a })
    };
    let mut best: Option<(usize, f32)> = None;
    for (c, chunk) in logits.chunks(CHUNK).enumerate() {
        let m = chunk_max(chunk);
        // A chunk of NaNs also has the maximum -inf, but no logit to offer: it must not be
        // the first chunk to count when later chunks hold real -inf logits.
        let has_logit = m > f32::NEG_INFINITY || chunk.contains(&f32::NEG_INFINITY);
        if has_logit && best.is_none_or(|(_, b)| m > b) {
            best = Some((c, m));
        }
    }
    let Some((c, max)) = best else { return 0 };
    let start = c * CHUNK;
    logits[start..]
        .iter()
        .take(CHUNK)
        .position(|&l| l == max)
        .map_or(0, |i| (start + i) as u32)
}

/// Log-softmax of one token, and the `top` most likely tokens with theirs.
pub fn logprobs(logits: &[f32], token: u32, top: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
    let chosen = logits
        .get(token as usize)
        .map_or(f32::NEG_INFINITY, |l| l - lse);
    let mut best: Vec<(u32, f32)> = Vec::new();
    if top > 0 {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = top.min(idx.len());
        idx.select_nth_unstable_by(k - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
        idx.truncate(k);
        idx.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        best = idx
            .into_iter()
            .map(|i| (i, logits[i as usize] - lse))
            .collect();
    }
    (chosen, best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            seed: Some(seed),
            ..Default::default()
        }
    }

    /// The straightforward definition: the first index whose logit no later one exceeds.
    fn argmax_reference(logits: &[f32]) -> u32 {
        let mut best: Option<usize> = None;
        for (i, &l) in logits.iter().enumerate() {
            if !l.is_nan() && best.is_none_or(|b| l > logits[b]) {
                best = Some(i);
            }
        }
        best.unwrap_or(0) as u32
    }

    #[test]
    fn argmax_matches_the_reference_on_random_logits_ties_and_nans() {
        let mut rng = Rng::new(7);
        for len in [0, 1, 2, 15, 16, 17, 1023, 1024, 1025, 5000, 262_144] {
            for round in 0..4 {
                // Few distinct values, so ties are common; some all-negative vectors.
                let mut logits: Vec<f32> = (0..len)
                    .map(|_| (rng.next_u64() % 50) as f32 - if round == 1 { 100.0 } else { 25.0 })
                    .collect();
                if round == 2 {
                    for i in (0..len).step_by(3) {
                        logits[i] = f32::NAN;
                    }
                }
                if round == 3 && len > 0 {
                    logits[0] = f32::NAN;
                    logits[len - 1] = 1000.0;
                }
                assert_eq!(
                    argmax(&logits),
                    argmax_reference(&logits),
                    "len {len} round {round}"
                );
            }
        }
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        let mut nan_then_neg_inf = vec![f32::NAN; 1024];
        nan_then_neg_inf.extend([f32::NEG_INFINITY; 5]);
        assert_eq!(
            argmax(&nan_then_neg_inf),
            argmax_reference(&nan_then_neg_inf)
        );
        assert_eq!(argmax(&[-0.0, 0.0, 0.0]), 0);
    }

    #[test]
    fn greedy_picks_the_maximum() {
        let mut s = Sampler::new(params(0.0, 1));
        assert_eq!(s.sample(&[0.1, 3.0, 2.0]), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_different_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(1.0, seed));
            (0..40).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn top_k_one_and_min_p_behave_like_greedy() {
        let logits = [1.0, 5.0, 4.9, 0.0];
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            ..params(1.5, 9)
        });
        assert!((0..20).all(|_| s.sample(&logits) == 1));
        let mut s = Sampler::new(SamplingParams {
            min_p: 0.99,
            ..params(1.0, 9)
        });
        assert!((0..20).all(|_| s.sample(&logits) == 1));
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.01,
            ..params(1.0, 9)
        });
        assert!((0..20).all(|_| s.sample(&logits) == 1));
    }

    #[test]
    fn penalties_lower_repeated_tokens() {
        let s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..params(0.0, 1)
        });
        let mut logits = [2.0, -2.0, 1.0];
        s.apply_penalties(&mut logits, &[0, 1]);
        assert_eq!(logits, [1.0, -4.0, 1.0]);

        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: 1.0,
            presence_penalty: 0.5,
            ..params(0.0, 1)
        });
        s.sample(&[0.0, 9.0]);
        s.sample(&[0.0, 9.0]);
        let mut logits = [0.0, 9.0];
        s.apply_penalties(&mut logits, &[]);
        assert_eq!(logits, [0.0, 9.0 - 2.0 - 0.5]);
    }

    #[test]
    fn logprobs_are_normalised() {
        let (lp, top) = logprobs(&[0.0, 0.0], 1, 2);
        assert!((lp - 0.5f32.ln()).abs() < 1e-6);
        assert_eq!(top.len(), 2);
        let total: f32 = logprobs(&[1.0, 2.0, 3.0], 0, 3)
            .1
            .iter()
            .map(|(_, l)| l.exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-5);
    }
}
