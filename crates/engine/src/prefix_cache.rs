//! Prefix caching: full KV blocks indexed by the tokens that produced them, so a new prompt
//! that starts with the same tokens (a system prompt, few-shot examples, the chat so far)
//! shares those blocks instead of computing them again. What Bedrock calls prompt caching;
//! the shared tokens are reported as cached input tokens.
//!
//! The index is a trie of blocks: a node is keyed by its parent node and the
//! [`BLOCK_TOKENS`] tokens of its block, so a match is exact (no hash can collide) and a
//! block is only found behind the very prefix it was computed after. Blocks are registered
//! as soon as a sequence fills them, so requests running at the same time share a prefix
//! too, not only later ones.
//!
//! A node holds a reference to its block; a block that only the cache still holds is
//! reclaimable. Whenever a live sequence needs memory, the scheduler evicts the least
//! recently used reclaimable leaf (leaves first, so no reachable node loses its parent)
//! before it preempts anyone. The cache never holds memory a live request could use.
//!
//! A caller's cache point (Bedrock's `cachePoint`) pins the blocks before it until its
//! time to live runs out: eviction takes every unpinned block first. A pin is a preference,
//! not a reservation, so the rule above holds for pinned blocks too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::kv::{KvBlock, SeqKv, BLOCK_TOKENS};

/// The node id standing for "no tokens yet".
const ROOT: u64 = 0;

type Key = (u64, [u32; BLOCK_TOKENS]);

struct Node {
    id: u64,
    block: Arc<KvBlock>,
    /// Cached nodes whose key names this one as parent.
    children: usize,
    last_used: u64,
    /// Kept ahead of unpinned blocks until then (a cache point's time to live).
    pinned_until: Option<Instant>,
}

/// How far a sequence's blocks are registered: the first `blocks` of them, the last one
/// under trie node `node`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Chain {
    blocks: usize,
    node: u64,
}

impl Chain {
    /// How many of the sequence's blocks are registered.
    pub fn blocks(&self) -> usize {
        self.blocks
    }
}

pub(crate) struct PrefixCache {
    nodes: HashMap<Key, Node>,
    /// Each node's key by id, to reach a parent from its child's key.
    key_of: HashMap<u64, Key>,
    enabled: bool,
    next_id: u64,
    clock: u64,
}

fn block_tokens(tokens: &[u32], index: usize) -> Option<[u32; BLOCK_TOKENS]> {
    tokens
        .get(index * BLOCK_TOKENS..(index + 1) * BLOCK_TOKENS)?
        .try_into()
        .ok()
}

impl PrefixCache {
    pub fn new(enabled: bool) -> Self {
        Self {
            nodes: HashMap::new(),
            key_of: HashMap::new(),
            enabled,
            next_id: ROOT + 1,
            clock: 0,
        }
    }

    /// KV bytes only the cache holds: what evicting everything would give back.
    pub fn reclaimable_bytes(&self) -> usize {
        self.nodes
            .values()
            .filter(|n| Arc::strong_count(&n.block) == 1)
            .map(|n| n.block.bytes())
            .sum()
    }

    /// The cached blocks that `prompt` starts with, in order, and the chain they form. At
    /// least one prompt token is always left to compute (its logits start the answer).
    pub fn lookup(&mut self, prompt: &[u32]) -> (Vec<Arc<KvBlock>>, Chain) {
        let mut blocks = Vec::new();
        let mut chain = Chain::default();
        if !self.enabled {
            return (blocks, chain);
        }
        self.clock += 1;
        let usable = prompt.len().saturating_sub(1) / BLOCK_TOKENS;
        for index in 0..usable {
            let Some(tokens) = block_tokens(prompt, index) else {
                break;
            };
            let Some(node) = self.nodes.get_mut(&(chain.node, tokens)) else {
                break;
            };
            node.last_used = self.clock;
            blocks.push(Arc::clone(&node.block));
            chain = Chain {
                blocks: index + 1,
                node: node.id,
            };
        }
        (blocks, chain)
    }

    /// Registers the blocks of `kv` that have filled since `chain` (their tokens are the
    /// first `kv.len()` of `tokens`), so other sequences can share them. A block whose
    /// tokens the cache already has (another sequence computed them at the same time) is
    /// replaced in `kv` by the cached one, so the two share it and the chain stays held.
    pub fn register(&mut self, tokens: &[u32], kv: &mut SeqKv, chain: &mut Chain) {
        if !self.enabled {
            return;
        }
        let full = kv.len().min(tokens.len()) / BLOCK_TOKENS;
        while chain.blocks < full {
            let (Some(block_tokens), Some(block)) = (
                block_tokens(tokens, chain.blocks),
                kv.blocks().get(chain.blocks).cloned(),
            ) else {
                return;
            };
            self.clock += 1;
            let key = (chain.node, block_tokens);
            let id = match self.nodes.get_mut(&key) {
                // Computed by another sequence first: share that one, follow its chain.
                Some(node) => {
                    node.last_used = self.clock;
                    kv.share_block(chain.blocks, Arc::clone(&node.block));
                    node.id
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.nodes.insert(
                        key,
                        Node {
                            id,
                            block,
                            children: 0,
                            last_used: self.clock,
                            pinned_until: None,
                        },
                    );
                    self.key_of.insert(id, key);
                    if let Some(parent) = self.node_by_id(chain.node) {
                        parent.children += 1;
                    }
                    id
                }
            };
            *chain = Chain {
                blocks: chain.blocks + 1,
                node: id,
            };
        }
    }

    fn node_by_id(&mut self, id: u64) -> Option<&mut Node> {
        let key = self.key_of.get(&id)?;
        self.nodes.get_mut(key)
    }

    /// Pins the first `blocks` blocks of `chain` until `until` (a later pin extends an
    /// earlier one, never shortens it).
    pub fn pin(&mut self, chain: Chain, blocks: usize, until: Instant) {
        let mut depth = chain.blocks;
        let mut id = chain.node;
        while id != ROOT {
            let Some(&key) = self.key_of.get(&id) else {
                return;
            };
            if depth <= blocks {
                if let Some(node) = self.nodes.get_mut(&key) {
                    node.pinned_until = node.pinned_until.max(Some(until));
                }
            }
            id = key.0;
            depth = depth.saturating_sub(1);
        }
    }

    /// Drops the least recently used block that only the cache holds and that no cached
    /// block follows, unpinned ones first, returning its memory; false if there is none.
    pub fn evict_lru(&mut self) -> bool {
        let now = Instant::now();
        let victim = self
            .nodes
            .iter()
            .filter(|(_, n)| n.children == 0 && Arc::strong_count(&n.block) == 1)
            .min_by_key(|(_, n)| (n.pinned_until.is_some_and(|t| t > now), n.last_used))
            .map(|(key, n)| (*key, n.id));
        let Some((key, id)) = victim else {
            return false;
        };
        self.nodes.remove(&key);
        self.key_of.remove(&id);
        if let Some(parent) = self.node_by_id(key.0) {
            parent.children = parent.children.saturating_sub(1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvBudget, KvShape};

    const SHAPE: KvShape = KvShape {
        layers: 1,
        kv_dim: 4,
    };

    /// A sequence that has computed `tokens`, registered in `cache`.
    fn computed(cache: &mut PrefixCache, budget: &Arc<KvBudget>, tokens: &[u32]) -> SeqKv {
        let (shared, mut chain) = cache.lookup(tokens);
        let mut kv = SeqKv::from_prefix(SHAPE, Arc::clone(budget), shared);
        let rest = tokens.len() - kv.len();
        kv.reserve(rest).unwrap();
        kv.advance(rest);
        cache.register(tokens, &mut kv, &mut chain);
        kv
    }

    fn tokens(n: usize, salt: u32) -> Vec<u32> {
        (0..n as u32).map(|i| i * 7 + salt).collect()
    }

    #[test]
    fn a_shared_prefix_is_found_block_by_block_and_shared_not_copied() {
        let budget = KvBudget::new(1 << 20);
        let mut cache = PrefixCache::new(true);
        let a = computed(&mut cache, &budget, &tokens(3 * BLOCK_TOKENS + 3, 0));
        let used = budget.used_bytes();

        // Two full blocks in common, then a different third block.
        let mut other = tokens(2 * BLOCK_TOKENS, 0);
        other.extend(tokens(BLOCK_TOKENS + 1, 99));
        let (blocks, chain) = cache.lookup(&other);
        assert_eq!((blocks.len(), chain.blocks), (2, 2));
        assert!(Arc::ptr_eq(&blocks[0], &a.blocks()[0]));
        assert_eq!(budget.used_bytes(), used, "sharing allocates nothing");

        // A prompt equal to the cached tokens still leaves its last token to compute.
        let exact = tokens(3 * BLOCK_TOKENS, 0);
        assert_eq!(cache.lookup(&exact).0.len(), 2);
        // A different first block shares nothing, even if later blocks match.
        let mut shifted = tokens(BLOCK_TOKENS, 5);
        shifted.extend(&tokens(3 * BLOCK_TOKENS, 0)[BLOCK_TOKENS..]);
        assert!(cache.lookup(&shifted).0.is_empty());
    }

    #[test]
    fn eviction_takes_only_unheld_leaves_and_gives_all_memory_back() {
        let budget = KvBudget::new(1 << 20);
        let mut cache = PrefixCache::new(true);
        let a = computed(&mut cache, &budget, &tokens(2 * BLOCK_TOKENS, 0));
        // Held by a live sequence: nothing to reclaim.
        assert_eq!(cache.reclaimable_bytes(), 0);
        assert!(!cache.evict_lru());
        drop(a);
        assert_eq!(cache.reclaimable_bytes(), 2 * SHAPE.bytes_per_block());
        // The leaf goes first; its parent stays reachable until it is a leaf itself.
        assert!(cache.evict_lru());
        assert_eq!(cache.lookup(&tokens(2 * BLOCK_TOKENS + 1, 0)).0.len(), 1);
        assert!(cache.evict_lru());
        assert!(!cache.evict_lru());
        assert_eq!(budget.used_bytes(), 0);
    }

    #[test]
    fn pinned_blocks_are_evicted_last() {
        let budget = KvBudget::new(1 << 20);
        let mut cache = PrefixCache::new(true);
        let pinned = tokens(BLOCK_TOKENS + 1, 1);
        let other = tokens(BLOCK_TOKENS + 1, 2);
        let mut chains = Vec::new();
        for prompt in [&pinned, &other] {
            let mut kv = computed(&mut cache, &budget, prompt);
            let mut chain = Chain::default();
            cache.register(prompt, &mut kv, &mut chain);
            chains.push(chain);
        }
        // The pinned prompt's block is the older one: plain LRU would take it first.
        cache.pin(
            chains[0],
            1,
            Instant::now() + std::time::Duration::from_secs(60),
        );
        assert!(cache.evict_lru());
        assert_eq!(cache.lookup(&pinned).0.len(), 1, "the pinned block stays");
        assert_eq!(
            cache.lookup(&other).0.len(),
            0,
            "the unpinned one went first"
        );
        // A pin never keeps memory from a live request: it goes when nothing else is left.
        assert!(cache.evict_lru());
        assert_eq!(cache.lookup(&pinned).0.len(), 0);
    }

    #[test]
    fn concurrent_copies_of_a_block_follow_the_first_chain() {
        let budget = KvBudget::new(1 << 20);
        let mut cache = PrefixCache::new(true);
        let prompt = tokens(3 * BLOCK_TOKENS, 0);
        // Two sequences computed the same first block before either registered it.
        let mut first = SeqKv::new(SHAPE, budget.clone());
        let mut second = SeqKv::new(SHAPE, budget.clone());
        for kv in [&mut first, &mut second] {
            kv.reserve(BLOCK_TOKENS).unwrap();
            kv.advance(BLOCK_TOKENS);
        }
        let (mut c1, mut c2) = (Chain::default(), Chain::default());
        cache.register(&prompt, &mut first, &mut c1);
        assert_eq!(budget.used_bytes(), 2 * SHAPE.bytes_per_block());
        cache.register(&prompt, &mut second, &mut c2);
        // The second now shares the first's block; its own copy is gone.
        assert!(Arc::ptr_eq(&first.blocks()[0], &second.blocks()[0]));
        assert_eq!(budget.used_bytes(), SHAPE.bytes_per_block());
        // The second one's next block lands behind the first one's: found by a lookup.
        second.reserve(BLOCK_TOKENS).unwrap();
        second.advance(BLOCK_TOKENS);
        cache.register(&prompt, &mut second, &mut c2);
        let (blocks, _) = cache.lookup(&prompt);
        assert_eq!(blocks.len(), 2);
        assert!(Arc::ptr_eq(&blocks[0], &first.blocks()[0]));
        assert!(Arc::ptr_eq(&blocks[1], &second.blocks()[1]));
    }

    #[test]
    fn a_disabled_cache_keeps_nothing() {
        let budget = KvBudget::new(1 << 20);
        let mut cache = PrefixCache::new(false);
        let a = computed(&mut cache, &budget, &tokens(2 * BLOCK_TOKENS + 1, 0));
        drop(a);
        assert_eq!(budget.used_bytes(), 0);
        assert!(cache.lookup(&tokens(2 * BLOCK_TOKENS + 1, 0)).0.is_empty());
    }
}
