//! Mutation fuzzing for Basalt's test suites.
//!
//! Hostile input mostly looks like valid input with something wrong in it, so every
//! generator here starts from valid seeds and mutates them: bytes flipped, cut, repeated or
//! replaced by boundary integers; JSON values swapped for other types, extremes, deep
//! nesting or huge collections. A run is deterministic for its seed and stops after a
//! number of cases or a deadline, whichever comes first, so it fits a normal `cargo test`.
//! `BASALT_FUZZ_SECS` stretches the deadline for a longer run by hand.
//!
//! The test decides what must hold for each case (no panic, a client error, a clean
//! refusal); this crate only produces cases.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// A small, fast, seeded generator (splitmix64): the same seed gives the same cases.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }
}

/// How long a run may take and how many cases it may try.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub cases: usize,
    pub time: Duration,
}

impl Budget {
    /// `cases` cases or `secs` seconds, whichever ends first; `BASALT_FUZZ_SECS` overrides
    /// the time (and lifts the case count) for a long run by hand.
    pub fn new(cases: usize, secs: u64) -> Self {
        match std::env::var("BASALT_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(long) => Self {
                cases: usize::MAX,
                time: Duration::from_secs(long),
            },
            None => Self {
                cases,
                time: Duration::from_secs(secs),
            },
        }
    }

    /// Calls `case(i, rng)` until the budget is spent; returns how many cases ran.
    pub fn run(self, seed: u64, mut case: impl FnMut(usize, &mut Rng)) -> usize {
        let start = Instant::now();
        let mut rng = Rng::new(seed);
        let mut done = 0;
        while done < self.cases && start.elapsed() < self.time {
            case(done, &mut rng);
            done += 1;
        }
        done
    }
}

/// Integers at the edges where parsers go wrong: zero, one, signed and unsigned maxima,
/// powers of two around allocation sizes.
pub const BOUNDARY_U64: &[u64] = &[
    0,
    1,
    2,
    0x7F,
    0xFF,
    0xFFFF,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    0x1_0000_0000,
    1 << 40,
    0x7FFF_FFFF_FFFF_FFFF,
    u64::MAX,
];

/// `seed` with one to four byte-level mutations.
pub fn mutate_bytes(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next_u64() as u8;
            }
            2 => out.truncate(rng.below(len + 1)),
            3 if len > 0 => {
                // Repeat a slice: lengths and counts that no longer match.
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let chunk = out[a..b].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, chunk);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                out.drain(a..b);
            }
            5 if len >= 8 => {
                // A boundary integer over whatever was there (little-endian, as the binary
                // formats here are).
                let value = rng.pick(BOUNDARY_U64).copied().unwrap_or(0);
                let width = [1, 2, 4, 8][rng.below(4)];
                let at = rng.below(len - width + 1);
                out[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            }
            _ => {
                let at = rng.below(len + 1);
                let junk: Vec<u8> = (0..1 + rng.below(16))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                out.splice(at..at, junk);
            }
        }
    }
    out
}

/// `seed` with one to three structural mutations somewhere inside it.
pub fn mutate_json(seed: &Value, rng: &mut Rng) -> Value {
    let mut out = seed.clone();
    for _ in 0..1 + rng.below(3) {
        let pointer = random_pointer(&out, rng);
        if let Some(target) = out.pointer_mut(&pointer) {
            *target = replacement(target, rng);
        }
    }
    out
}

/// The JSON pointer of a node reached by a random walk down from the root.
fn random_pointer(root: &Value, rng: &mut Rng) -> String {
    let mut pointer = String::new();
    let mut node = root;
    while !rng.chance(3) {
        let next = match node {
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                a.get(i).map(|child| (i.to_string(), child))
            }
            Value::Object(o) if !o.is_empty() => {
                let i = rng.below(o.len());
                o.iter().nth(i).map(|(k, child)| (k.clone(), child))
            }
            _ => None,
        };
        let Some((step, child)) = next else { break };
        pointer.push('/');
        pointer.push_str(&step.replace('~', "~0").replace('/', "~1"));
        node = child;
    }
    pointer
}

/// A case stays within a few megabytes: wide and deep replacements copy the old value only
/// when it is small.
const SMALL_JSON: usize = 256;

fn replacement(old: &Value, rng: &mut Rng) -> Value {
    let old = if old.to_string().len() <= SMALL_JSON {
        old.clone()
    } else {
        json!("x")
    };
    match rng.below(14) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(rng.pick(BOUNDARY_U64).copied().unwrap_or(0)),
        4 => json!(f64::MAX),
        5 => json!(-1e308),
        6 => json!(""),
        7 => Value::String("x".repeat(1 + rng.below(100_000))),
        8 => json!("\u{0}\u{202e}\u{fffd}😀\n\t\\\""),
        9 => json!([]),
        10 => json!({}),
        11 => {
            // Many copies of the old value: wide arrays.
            Value::Array(vec![old; 1 + rng.below(2_000)])
        }
        12 => {
            // Deep nesting around the old value.
            let mut v = old;
            for _ in 0..1 + rng.below(200) {
                v = if rng.chance(2) {
                    json!([v])
                } else {
                    json!({"a": v})
                };
            }
            v
        }
        _ => {
            // A wide object.
            let wide: Map<String, Value> = (0..1 + rng.below(2_000))
                .map(|i| (format!("k{i}"), old.clone()))
                .collect();
            Value::Object(wide)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_cases() {
        let seed = json!({"a": [1, 2, {"b": "c"}], "d": null});
        let run = |s| {
            let mut rng = Rng::new(s);
            (0..50)
                .map(|_| {
                    (
                        mutate_json(&seed, &mut rng),
                        mutate_bytes(b"abcdefgh", &mut rng),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn mutations_change_their_input() {
        let seed = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let mut rng = Rng::new(1);
        let changed = (0..100)
            .filter(|_| mutate_json(&seed, &mut rng) != seed)
            .count();
        assert!(changed > 80, "{changed} of 100 mutations changed the seed");
        let bytes = b"GGUF\x03\x00\x00\x00 and some more bytes";
        let changed = (0..100)
            .filter(|_| mutate_bytes(bytes, &mut rng) != bytes)
            .count();
        assert!(changed > 80, "{changed} of 100 mutations changed the seed");
    }

    #[test]
    fn a_budget_stops_at_its_case_count() {
        let n = Budget {
            cases: 10,
            time: Duration::from_secs(60),
        }
        .run(1, |_, _| {});
        assert_eq!(n, 10);
    }
}
