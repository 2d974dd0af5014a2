//! Admission: which waiting sequence runs next. Interactive work before batch work (a batch
//! sequence gives its slot to a waiting interactive one); weighted fair queuing between tenant lanes
//! (oldest first within one), preempted sequences ahead of new work, a slot given back by a
//! tenant above its share when one below it waits, and admission only where the first chunk
//! fits the KV budget (cached prefixes evicted first). Prefix-cache reuse on admission.

use std::collections::HashMap;
use std::sync::Arc;

use super::sequence::Sequence;
use super::Scheduler;
use crate::kv::SeqKv;
use crate::{Priority, TenantLane};

pub(super) fn lane_key(lane: &Option<TenantLane>) -> &str {
    lane.as_ref().map_or("", |l| l.id.as_str())
}

impl Scheduler {
    pub(super) fn admit(&mut self) {
        let per_token = self.shared.transformer.kv_shape().bytes_per_token();
        let budget = Arc::clone(&self.shared.budget);
        while let Some(mut index) = self.next_to_admit() {
            if self.running.len() >= self.shared.config.max_running {
                match self.yield_slot_to(index) {
                    Some(moved) => index = moved,
                    None => break,
                }
            }
            let Some(candidate) = self.waiting.get(index) else {
                break;
            };
            // Admit only if the first chunk of the sequence fits next to what is held. With
            // nothing running the candidate is always admitted: if it cannot fit even alone,
            // its first step fails it with a clear error instead of it waiting forever.
            let first_chunk = (candidate.tokens.len() - candidate.computed)
                .min(self.shared.config.prefill_chunk)
                + 1;
            let free = budget.limit_bytes().saturating_sub(budget.used_bytes());
            let needed = first_chunk * per_token;
            if !self.running.is_empty() && needed > free {
                // Cached prefixes give their memory back before anyone waits for it, when
                // that is enough to make room (otherwise the cache is kept: emptying it
                // could not admit the sequence anyway).
                if free + self.cache.reclaimable_bytes() >= needed && self.cache.evict_lru() {
                    continue;
                }
                break;
            }
            if let Some(mut seq) = self.waiting.remove(index) {
                if !seq.preempted {
                    self.charge(&seq.lane);
                }
                self.reuse_prefix(&mut seq);
                seq.preempted = false;
                seq.yielded = false;
                seq.kv.get_or_insert_with(|| {
                    SeqKv::new(self.shared.transformer.kv_shape(), Arc::clone(&budget))
                });
                self.running.push(seq);
            }
        }
    }

    /// With every slot taken, fairness between tenants holds only if a tenant that holds
    /// more than its share of the slots gives one back: one request can bring dozens of
    /// sequences, and without this a tenant arriving after it waits for them to finish.
    ///
    /// Each lane with work is entitled to `max_running * weight / total weight` slots (at
    /// least one). If the waiting sequence at `candidate` is from a lane below its share,
    /// the newest sequence of the lane furthest above its share is preempted (its full KV
    /// blocks stay in the prefix cache, so recomputing it is mostly a cache hit). Returns the
    /// candidate's index in `waiting` after the preempted sequence joined it, or `None`
    /// when nobody is owed a slot.
    pub(super) fn yield_slot_to(&mut self, candidate: usize) -> Option<usize> {
        // Batch work only fills idle capacity: its newest sequence makes way at once.
        if self.waiting.get(candidate)?.priority == Priority::Interactive {
            let newest_batch = self
                .running
                .iter()
                .enumerate()
                .filter(|(_, s)| s.priority == Priority::Batch)
                .max_by_key(|(_, s)| s.arrival)
                .map(|(i, _)| i);
            if let Some(i) = newest_batch {
                self.preempt(i);
                if let Some(seq) = self.waiting.front_mut() {
                    seq.yielded = true;
                }
                return Some(candidate + 1);
            }
        }
        let weight = |lane: &Option<TenantLane>| lane.as_ref().map_or(1, |l| l.weight.max(1));
        let mut lanes: HashMap<&str, (u32, usize)> = HashMap::new(); // weight, running
        for s in &self.waiting {
            lanes
                .entry(lane_key(&s.lane))
                .or_insert((weight(&s.lane), 0));
        }
        for s in &self.running {
            lanes
                .entry(lane_key(&s.lane))
                .or_insert((weight(&s.lane), 0))
                .1 += 1;
        }
        let total: u32 = lanes.values().map(|(w, _)| w).sum();
        let slots = self.shared.config.max_running as f64;
        let share = |w: u32| (slots * w as f64 / total.max(1) as f64).max(1.0);
        let wanting = self.waiting.get(candidate)?;
        let (w, held) = lanes.get(lane_key(&wanting.lane)).copied()?;
        if held as f64 + 1.0 > share(w) {
            return None;
        }
        let (over, _) = lanes
            .iter()
            .map(|(lane, &(w, held))| (*lane, held as f64 / share(w)))
            .filter(|&(_, ratio)| ratio > 1.0)
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        let over = over.to_string();
        let newest = self
            .running
            .iter()
            .enumerate()
            .filter(|(_, s)| lane_key(&s.lane) == over)
            .max_by_key(|(_, s)| s.arrival)
            .map(|(i, _)| i)?;
        self.preempt(newest);
        if let Some(seq) = self.waiting.front_mut() {
            seq.yielded = true;
        }
        Some(candidate + 1)
    }

    /// The waiting sequence to admit next, interactive before batch: a preempted one first
    /// (it was admitted before);
    /// otherwise weighted fair queuing between tenant lanes: the lane that has received the
    /// least service per unit of weight goes next, oldest request first within a lane. A
    /// lane that was idle restarts at the current virtual time, so idling earns no credit.
    pub(super) fn next_to_admit(&self) -> Option<usize> {
        // While interactive work waits, batch work does not start (nor restart).
        let interactive_waits = self
            .waiting
            .iter()
            .any(|s| s.priority == Priority::Interactive);
        let eligible = |s: &Sequence| !interactive_waits || s.priority == Priority::Interactive;
        if let Some(i) = self
            .waiting
            .iter()
            .position(|s| s.preempted && !s.yielded && eligible(s))
        {
            return Some(i);
        }
        let mut best: Option<(f64, u64, usize)> = None;
        for (i, s) in self.waiting.iter().enumerate() {
            if !eligible(s) {
                continue;
            }
            let key = lane_key(&s.lane);
            let served = self.lane_service.get(key).copied().unwrap_or(0.0);
            let vt = served.max(self.virtual_time);
            if best.is_none_or(|(bv, ba, _)| (vt, s.arrival) < (bv, ba)) {
                best = Some((vt, s.arrival, i));
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// Starts a sequence from the cached blocks its tokens begin with, if any: a new
    /// sequence from its prompt's prefix (reported as cached input tokens), a preempted one
    /// from what it had computed itself, as far as that is still cached.
    pub(super) fn reuse_prefix(&mut self, seq: &mut Sequence) {
        if seq.kv.is_some() || seq.computed > 0 {
            return;
        }
        let (blocks, chain) = self.cache.lookup(&seq.tokens);
        if blocks.is_empty() {
            return;
        }
        let kv = SeqKv::from_prefix(
            self.shared.transformer.kv_shape(),
            Arc::clone(&self.shared.budget),
            blocks,
        );
        seq.computed = kv.len();
        if !seq.preempted {
            seq.cached = kv.len();
        }
        seq.chain = chain;
        seq.kv = Some(kv);
    }

    /// Charges one admission to the sequence's lane.
    pub(super) fn charge(&mut self, lane: &Option<TenantLane>) {
        let weight = lane.as_ref().map_or(1, |l| l.weight.max(1)) as f64;
        let key = lane_key(lane).to_string();
        let start = self
            .lane_service
            .get(&key)
            .copied()
            .unwrap_or(0.0)
            .max(self.virtual_time);
        self.virtual_time = start;
        self.lane_service.insert(key, start + 1.0 / weight);
        // Forget lanes that have fallen behind the clock: they restart from it anyway.
        let now = self.virtual_time;
        self.lane_service.retain(|_, v| *v > now);
    }
}
