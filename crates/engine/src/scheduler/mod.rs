//! The per-model scheduler: a dedicated OS thread that owns every running sequence.
//!
//! Each sequence is a list of tokens and a count of how many of them are already in its KV
//! cache (`computed`). A step brings the running sequences forward in one batched forward
//! pass, under a token budget: a chunk of prompt for a sequence whose `computed` lags
//! behind, one new token for one that has caught up (vLLM's continuous batching: there is no
//! separate prefill phase). New sequences join and finished or cancelled ones leave between
//! steps. When KV memory runs out, the most recently admitted sequence is preempted (its
//! cache dropped, its tokens kept) and recomputed later.

//!
//! The folder is split by concern: `sequence` (what one sequence holds), `admission` (who
//! runs next, fairness between tenants), `output` (per-token processing after each forward
//! pass), and this file's step loop.

mod admission;
mod output;
mod sequence;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_types::{BasaltError, ErrorKind};
use tokio::sync::mpsc;

use crate::kernels::ActScratch;
use crate::kv::{KvBudget, BLOCK_TOKENS};
use crate::model::{BatchSeq, Transformer};
use crate::prefix_cache::{Chain, PrefixCache};
use crate::tokenizer::Tokenizer;
use crate::{Admission, EngineConfig, EventReceiver, PreparedRequest, Priority};

/// Prompt tokens of batch sequences read in one step while interactive traffic is about
/// (see `Scheduler::plan`).
const BATCH_PREFILL_CONTENDED: usize = 16;
/// Batch sequences moved in one step while interactive traffic is about.
const BATCH_ROWS_CONTENDED: usize = 4;
/// How long after the last interactive sequence batch work stays in small steps.
const INTERACTIVE_GRACE: Duration = Duration::from_millis(500);
use output::{emit_next_token, StepResult};
use sequence::Sequence;

pub(crate) struct Shared {
    pub transformer: Box<dyn Transformer>,
    pub tokenizer: Tokenizer,
    pub budget: Arc<KvBudget>,
    pub config: EngineConfig,
    /// KV bytes the prefix cache holds (reclaimable; not "in use").
    pub cached_bytes: AtomicUsize,
}

/// Counters readable from any thread.
#[derive(Debug, Default)]
struct Counters {
    waiting: AtomicUsize,
    running: AtomicUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerStats {
    pub waiting: usize,
    pub running: usize,
}

pub(crate) struct Handle {
    tx: std_mpsc::Sender<Sequence>,
    counters: Arc<Counters>,
    max_waiting: usize,
}

impl Handle {
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            waiting: self.counters.waiting.load(Ordering::Relaxed),
            running: self.counters.running.load(Ordering::Relaxed),
        }
    }

    pub fn enqueue(
        &self,
        prepared: PreparedRequest,
        admission: Admission,
    ) -> Result<EventReceiver, BasaltError> {
        if self.counters.waiting.load(Ordering::Relaxed) >= self.max_waiting {
            return Err(BasaltError::new(
                ErrorKind::Overloaded,
                "The model's request queue is full; retry shortly.",
            ));
        }
        let (events, rx) = mpsc::unbounded_channel();
        let seq = Sequence::new(prepared, admission, events);
        self.counters.waiting.fetch_add(1, Ordering::Relaxed);
        self.tx.send(seq).map_err(|_| {
            self.counters.waiting.fetch_sub(1, Ordering::Relaxed);
            BasaltError::internal("the model's scheduler has stopped")
        })?;
        Ok(rx)
    }
}

pub(crate) fn start(shared: Arc<Shared>) -> std::io::Result<Handle> {
    let (tx, rx) = std_mpsc::channel();
    let counters = Arc::new(Counters::default());
    let max_waiting = shared.config.max_waiting;
    let thread_counters = Arc::clone(&counters);
    std::thread::Builder::new()
        .name("basalt-scheduler".into())
        .spawn(move || Scheduler::new(shared, rx, thread_counters).run())?;
    Ok(Handle {
        tx,
        counters,
        max_waiting,
    })
}

struct Scheduler {
    shared: Arc<Shared>,
    inbox: std_mpsc::Receiver<Sequence>,
    counters: Arc<Counters>,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    scratch: ActScratch,
    logits: Vec<f32>,
    /// Weighted fair queuing: each lane's virtual finish time, and the clock.
    lane_service: HashMap<String, f64>,
    virtual_time: f64,
    cache: PrefixCache,
    /// When an interactive sequence was last waiting or running: while that is recent,
    /// batch work runs in small steps.
    last_interactive: Option<Instant>,
}

impl Scheduler {
    fn new(
        shared: Arc<Shared>,
        inbox: std_mpsc::Receiver<Sequence>,
        counters: Arc<Counters>,
    ) -> Self {
        let vocab = shared.transformer.vocab_size();
        let cache = PrefixCache::new(shared.config.prefix_caching);
        Self {
            shared,
            inbox,
            counters,
            waiting: VecDeque::new(),
            running: Vec::new(),
            scratch: ActScratch::default(),
            logits: vec![0.0; vocab],
            lane_service: HashMap::new(),
            virtual_time: 0.0,
            cache,
            last_interactive: None,
        }
    }

    fn run(mut self) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                // Idle: block until work arrives; a closed inbox means the model was unloaded.
                match self.inbox.recv() {
                    Ok(seq) => self.waiting.push_back(seq),
                    Err(_) => return,
                }
                self.gather_burst();
            }
            while let Ok(seq) = self.inbox.try_recv() {
                self.waiting.push_back(seq);
            }
            self.drop_cancelled();
            self.admit();
            self.step();
            self.publish_counters();
            self.publish_cache();
        }
    }

    /// Clients that start together send their requests over a few milliseconds. Started
    /// alone, the first request's step would make the others wait for all of it before
    /// their own prompts are read; so after idling, requests arriving within
    /// `admission_window` of each other join the first step.
    fn gather_burst(&mut self) {
        let window = self.shared.config.admission_window;
        if window.is_zero() {
            return;
        }
        while let Ok(seq) = self.inbox.recv_timeout(window) {
            self.waiting.push_back(seq);
        }
    }

    fn publish_counters(&self) {
        self.counters
            .waiting
            .store(self.waiting.len(), Ordering::Relaxed);
        self.counters
            .running
            .store(self.running.len(), Ordering::Relaxed);
    }

    fn drop_cancelled(&mut self) {
        // Dropping a sequence drops its KV cache, which returns the memory to the budget.
        self.running.retain(|s| !s.cancelled());
        self.waiting.retain(|s| !s.cancelled());
    }

    /// One scheduler step: every running sequence that fits the step's token budget moves
    /// forward in a single batched forward pass (a chunk of its prompt while `computed` lags
    /// behind, one new token once it has caught up), so the weights are read once per step
    /// for all of them.
    fn step(&mut self) {
        let plan = self.plan();
        if plan.is_empty() {
            return;
        }
        let vocab = self.shared.transformer.vocab_size();
        self.logits.resize(plan.len() * vocab, 0.0);
        let mut batch = Vec::with_capacity(plan.len());
        let mut next = plan.iter().peekable();
        for (i, seq) in self.running.iter_mut().enumerate() {
            if let Some(&&(planned, n)) = next.peek() {
                if planned == i {
                    next.next();
                    let Sequence {
                        tokens,
                        computed,
                        kv,
                        ..
                    } = seq;
                    if let Some(kv) = kv.as_mut() {
                        batch.push(BatchSeq {
                            tokens: &tokens[*computed..*computed + n],
                            kv,
                        });
                    }
                }
            }
        }
        self.shared
            .transformer
            .forward_batch(&mut batch, &mut self.scratch, &mut self.logits);
        drop(batch);

        let mut finished = Vec::new();
        for (row, &(i, n)) in plan.iter().enumerate() {
            let seq = &mut self.running[i];
            seq.computed += n;
            if let Some(kv) = &mut seq.kv {
                self.cache.register(&seq.tokens, kv, &mut seq.chain);
            }
            let point_blocks = seq.cache_until / BLOCK_TOKENS;
            if point_blocks > 0 && !seq.cache_pinned && seq.chain.blocks() >= point_blocks {
                self.cache
                    .pin(seq.chain, point_blocks, Instant::now() + seq.cache_ttl);
                seq.cache_pinned = true;
            }
            if seq.computed < seq.tokens.len() {
                continue; // more prompt to go
            }
            let logits = &mut self.logits[row * vocab..(row + 1) * vocab];
            let done = emit_next_token(&self.shared, &self.cache, seq, logits);
            if let StepResult::Done = done {
                finished.push(i);
            }
        }
        for i in finished.into_iter().rev() {
            self.running.remove(i);
        }
    }

    /// Chooses this step's work: `(index in running, tokens)` in running order, under the
    /// step's token budget, with KV room reserved. When memory runs out, the most recently
    /// admitted sequence is preempted (cache dropped, tokens kept, recomputed later); a
    /// sequence that cannot fit even alone fails.
    ///
    /// Batch sequences sit out the steps in which an interactive sequence reads its prompt:
    /// a step's time grows with every token in it, and an interactive request's first
    /// token waits for its prompt's steps alone. For the same reason, while interactive
    /// traffic is about (within [`INTERACTIVE_GRACE`]) batch prompts are read at most
    /// [`BATCH_PREFILL_CONTENDED`] tokens a step and at most [`BATCH_ROWS_CONTENDED`] batch
    /// rows move in a step: the step an interactive request arrives during, and waits for,
    /// is short. With no interactive traffic, batch work has the step, its prompts read one
    /// prefill chunk a step at most, so a request that arrives waits for no more than that.
    fn plan(&mut self) -> Vec<(usize, usize)> {
        let chunk = self.shared.config.prefill_chunk.max(1);
        let mut budget = self.shared.config.max_batch_tokens.max(1);
        let interactive = |s: &Sequence| s.priority == Priority::Interactive;
        if self.running.iter().chain(&self.waiting).any(interactive) {
            self.last_interactive = Some(Instant::now());
        }
        let contended = self
            .last_interactive
            .is_some_and(|t| t.elapsed() < INTERACTIVE_GRACE);
        let (mut batch_rows, mut batch_prefill) = if contended {
            (BATCH_ROWS_CONTENDED, BATCH_PREFILL_CONTENDED)
        } else {
            (usize::MAX, chunk)
        };
        let interactive_prefill = self
            .running
            .iter()
            .any(|s| s.priority == Priority::Interactive && s.computed < s.tokens.len());
        let mut plan = Vec::new();
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let seq = &mut self.running[i];
            if interactive_prefill && seq.priority == Priority::Batch {
                i += 1;
                continue;
            }
            let mut n = (seq.tokens.len() - seq.computed).min(chunk).min(budget);
            if seq.priority == Priority::Batch && n > 0 {
                if n > 1 {
                    n = n.min(batch_prefill);
                }
                if n == 0 || batch_rows == 0 {
                    i += 1;
                    continue;
                }
                batch_prefill -= n.min(batch_prefill);
                batch_rows -= 1;
            }
            let Some(kv) = seq.kv.as_mut() else {
                i += 1;
                continue;
            };
            if n == 0 || kv.reserve(n).is_ok() {
                if n > 0 {
                    plan.push((i, n));
                    budget -= n;
                }
                i += 1;
            } else if self.cache.evict_lru() {
                // and try this sequence again
            } else if self.running.len() - 1 > i {
                self.preempt(self.running.len() - 1);
            } else if i > 0 {
                self.preempt(i);
            } else {
                let mut seq = self.running.remove(i);
                // Its blocks become reclaimable before the client hears of the failure.
                seq.kv = None;
                self.publish_cache();
                seq.fail(BasaltError::new(
                    ErrorKind::Overloaded,
                    "The request ran out of KV-cache memory.",
                ));
            }
        }
        plan
    }

    fn preempt(&mut self, index: usize) {
        let mut seq = self.running.remove(index);
        seq.kv = None;
        seq.computed = 0;
        seq.chain = Chain::default();
        seq.preempted = true;
        self.waiting.push_front(seq);
    }

    fn publish_cache(&self) {
        self.shared
            .cached_bytes
            .store(self.cache.reclaimable_bytes(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests;
