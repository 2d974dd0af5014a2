//! Prefix caching: the KV entries of finished sequences, kept so that a new prompt that
//! starts with the same tokens (a system prompt, few-shot examples, the chat so far) copies
//! them instead of computing them again. What Bedrock calls prompt caching; the reused
//! tokens are reported as cached input tokens.
//!
//! Entries are whole sequences' caches, copied (not shared) into a new sequence, and they
//! stay charged to the model's KV budget: the scheduler evicts the least recently used
//! entry whenever a running or waiting sequence needs the memory, before preempting anyone.
//! The cache never holds memory a live request could use.

use crate::kv::SeqKv;

/// Shorter common prefixes are not worth a copy.
pub const MIN_PREFIX_TOKENS: usize = 32;

struct Entry {
    /// The tokens whose keys and values `kv` holds, position by position.
    tokens: Vec<u32>,
    kv: SeqKv,
    last_used: u64,
}

pub(crate) struct PrefixCache {
    entries: Vec<Entry>,
    max_entries: usize,
    clock: u64,
}

impl PrefixCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: Vec::new(),
            max_entries,
            clock: 0,
        }
    }

    /// KV bytes the cache holds.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.kv.charged_bytes()).sum()
    }

    /// Keeps a finished sequence's cache for `tokens` (its computed positions).
    pub fn insert(&mut self, mut tokens: Vec<u32>, kv: SeqKv) {
        tokens.truncate(kv.len());
        if self.max_entries == 0 || tokens.len() < MIN_PREFIX_TOKENS {
            return;
        }
        // Already covered by an entry that extends it: nothing new to keep.
        if self.entries.iter().any(|e| e.tokens.starts_with(&tokens)) {
            return;
        }
        // Entries this one extends are superseded.
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        self.clock += 1;
        self.entries.push(Entry {
            tokens,
            kv,
            last_used: self.clock,
        });
        while self.entries.len() > self.max_entries {
            self.evict_lru();
        }
    }

    /// The entry sharing the longest prefix with `prompt`, and that prefix's length. At
    /// least one prompt token is always left to compute (its logits start the answer).
    pub fn lookup(&mut self, prompt: &[u32]) -> Option<(&SeqKv, usize)> {
        let limit = prompt.len().saturating_sub(1);
        let (best, len) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let common = e
                    .tokens
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count();
                (i, common.min(limit))
            })
            .max_by_key(|&(_, len)| len)?;
        if len < MIN_PREFIX_TOKENS {
            return None;
        }
        self.clock += 1;
        let entry = &mut self.entries[best];
        entry.last_used = self.clock;
        Some((&entry.kv, len))
    }

    /// Drops the least recently used entry, returning its memory; false if empty.
    pub fn evict_lru(&mut self) -> bool {
        let Some(i) = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.last_used)
            .map(|(i, _)| i)
        else {
            return false;
        };
        self.entries.swap_remove(i);
        true
    }
}
