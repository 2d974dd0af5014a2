//! Memory planning: before a model loads, whether it fits.
//!
//! A served model takes three kinds of memory: its weights (a private copy in huge pages by
//! default, or the file's page-cache mapping), its KV cache (charged block by block up to
//! the budget, and kept full by the prefix cache, so the budget is what it comes to), and
//! its working buffers (activations and logits for the largest batch). Weights that do not
//! fit beside the rest are mapped instead of copied (the page cache serves what it can);
//! a KV budget and buffers that do not fit at all are refused before anything is
//! allocated, with the numbers, rather than the process being killed later by the kernel.
//!
//! Available memory is the system's `MemAvailable`, or the container's cgroup limit less
//! its usage where that is smaller, less the KV budgets of models already loaded in this
//! process that they have not yet filled (their lazily charged caches will still grow).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use basalt_gguf::Header;

use crate::error::EngineError;
use crate::EngineConfig;

/// Room left for the allocator, threads' stacks and the server itself.
const HEADROOM: u64 = 64 << 20;

/// KV bytes that models loaded in this process may still claim.
static PROMISED_KV: AtomicU64 = AtomicU64::new(0);

/// How one model would use memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    pub weights_bytes: u64,
    /// Weights copied into memory (false: served from the file's page-cache mapping).
    pub weights_resident: bool,
    pub kv_bytes: u64,
    /// Activations and logits for the largest batch, estimated from the model's shapes.
    pub buffers_bytes: u64,
    /// What the system can give, when it says.
    pub available: Option<u64>,
}

impl MemoryPlan {
    /// The plan for a GGUF file under `config`, against the memory available now.
    pub fn for_model(path: &Path, header: &Header, config: &EngineConfig) -> Self {
        let weights_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
        Self::new(weights_bytes, header, config, available_memory())
    }

    pub(crate) fn new(
        weights_bytes: u64,
        header: &Header,
        config: &EngineConfig,
        available: Option<u64>,
    ) -> Self {
        let kv_bytes = config.kv_budget_bytes as u64;
        let buffers_bytes = buffers_estimate(header, config);
        // Copy the weights only where they fit beside everything else.
        let weights_resident = !config.map_weights
            && available.is_none_or(|a| weights_bytes + kv_bytes + buffers_bytes + HEADROOM <= a);
        Self {
            weights_bytes,
            weights_resident,
            kv_bytes,
            buffers_bytes,
            available,
        }
    }

    /// Memory the model takes for itself (mapped weights are the page cache's).
    pub fn needed(&self) -> u64 {
        let weights = if self.weights_resident {
            self.weights_bytes
        } else {
            0
        };
        weights + self.kv_bytes + self.buffers_bytes
    }

    /// Refuses a plan that cannot fit: the KV budget and buffers alone exceed what is
    /// available.
    pub fn check(&self) -> Result<(), EngineError> {
        match self.available {
            Some(available) if self.needed() + HEADROOM > available => {
                Err(EngineError::OutOfMemory(format!(
                    "it needs {} ({} KV cache, {} working buffers{}) but {} is available; \
                     lower --kv-cache-mb or --max-running, or free memory",
                    mib(self.needed() + HEADROOM),
                    mib(self.kv_bytes),
                    mib(self.buffers_bytes),
                    if self.weights_resident {
                        format!(", {} weights", mib(self.weights_bytes))
                    } else {
                        String::new()
                    },
                    mib(available)
                )))
            }
            _ => Ok(()),
        }
    }

    /// One line for the log: what goes where.
    pub fn describe(&self) -> String {
        let weights = if self.weights_resident {
            format!("weights {} in memory", mib(self.weights_bytes))
        } else {
            format!("weights {} mapped from the file", mib(self.weights_bytes))
        };
        let available = self.available.map_or_else(
            || "available memory unknown".to_string(),
            |a| format!("{} available", mib(a)),
        );
        format!(
            "{weights}, KV cache up to {}, buffers about {}: {} of {available}",
            mib(self.kv_bytes),
            mib(self.buffers_bytes),
            mib(self.needed())
        )
    }
}

/// A loaded model's claim on KV memory it has not used yet; released when it is dropped.
#[derive(Debug)]
pub(crate) struct KvPromise(u64);

impl KvPromise {
    pub(crate) fn new(bytes: u64) -> Self {
        PROMISED_KV.fetch_add(bytes, Ordering::AcqRel);
        Self(bytes)
    }
}

impl Drop for KvPromise {
    fn drop(&mut self) {
        PROMISED_KV.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// Activations for `max_batch_tokens` tokens through the widest layer, and logits over
/// the vocabulary for each running sequence and prompt chunk, as f32; the exact figure
/// depends on the kernels, so this errs high.
fn buffers_estimate(header: &Header, config: &EngineConfig) -> u64 {
    let arch = header.architecture().unwrap_or("llama");
    let get = |key: &str| header.u64(&format!("{arch}.{key}")).unwrap_or(0);
    let embd = get("embedding_length");
    let ff = get("feed_forward_length").max(get("expert_feed_forward_length"));
    let vocab = header
        .array("tokenizer.ggml.tokens")
        .map_or(0, |a| a.len() as u64);
    let batch = config.max_batch_tokens as u64;
    let sequences = config.max_running as u64;
    let activations = batch * (8 * embd + 3 * ff) * 4;
    let logits = (sequences + batch / config.prefill_chunk.max(1) as u64 + 1) * vocab * 4;
    activations + logits
}

/// What this process can still use: `MemAvailable`, or the cgroup's room where smaller,
/// less the KV memory already promised to loaded models.
pub fn available_memory() -> Option<u64> {
    let system = meminfo_available();
    let cgroup = cgroup_room();
    let available = match (system, cgroup) {
        (Some(s), Some(c)) => s.min(c),
        (s, c) => s.or(c)?,
    };
    Some(available.saturating_sub(PROMISED_KV.load(Ordering::Acquire)))
}

fn meminfo_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// cgroup v2: `memory.max` less `memory.current`, when there is a limit.
fn cgroup_room() -> Option<u64> {
    let max = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?;
    let max: u64 = max.trim().parse().ok()?; // "max" (no limit) does not parse
    let current: u64 = std::fs::read_to_string("/sys/fs/cgroup/memory.current")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(max.saturating_sub(current))
}

fn mib(bytes: u64) -> String {
    if bytes >= 10 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes.div_ceil(1 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        let bytes = basalt_gguf::write::Writer::new()
            .string("general.architecture", "llama")
            .u32("llama.embedding_length", 1024)
            .u32("llama.feed_forward_length", 4096)
            .strings("tokenizer.ggml.tokens", &vec!["t"; 32_000])
            .to_bytes();
        basalt_gguf::parse_header(&bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    fn config(kv_mb: usize) -> EngineConfig {
        EngineConfig {
            kv_budget_bytes: kv_mb << 20,
            ..EngineConfig::default()
        }
    }

    #[test]
    fn weights_are_copied_only_where_everything_fits() {
        let plan = MemoryPlan::new(1 << 30, &header(), &config(512), Some(8 << 30));
        assert!(plan.weights_resident);
        assert!(plan.check().is_ok());
        // 2 GiB free: the weights would not fit beside the KV cache, so they are mapped.
        let plan = MemoryPlan::new(2 << 30, &header(), &config(512), Some(2 << 30));
        assert!(!plan.weights_resident);
        assert!(plan.check().is_ok());
        assert_eq!(plan.needed(), plan.kv_bytes + plan.buffers_bytes);
    }

    #[test]
    fn a_kv_budget_larger_than_memory_is_refused_with_the_numbers() {
        let plan = MemoryPlan::new(1 << 20, &header(), &config(64 << 10), Some(8 << 30));
        let e = plan.check().unwrap_err().to_string();
        assert!(
            e.contains("64.0 GiB KV cache") && e.contains("--kv-cache-mb"),
            "{e}"
        );
        // Unknown memory: nothing to refuse on.
        assert!(MemoryPlan::new(1 << 20, &header(), &config(64 << 10), None)
            .check()
            .is_ok());
    }

    #[test]
    fn buffers_grow_with_the_batch_and_the_vocabulary() {
        let small = buffers_estimate(&header(), &EngineConfig::default());
        let big = buffers_estimate(
            &header(),
            &EngineConfig {
                max_batch_tokens: 4096,
                ..EngineConfig::default()
            },
        );
        assert!(big > small && small > 32_000 * 4 * 16);
    }
}
