//! The per-model scheduler: a dedicated OS thread that owns every running sequence.
//!
//! Each sequence is a list of tokens and a count of how many of them are already in its KV
//! cache (`computed`). A step brings the running sequences forward in one batched forward
//! pass, under a token budget: a chunk of prompt for a sequence whose `computed` lags
//! behind, one new token for one that has caught up (vLLM's continuous batching: there is no
//! separate prefill phase). New sequences join and finished or cancelled ones leave between
//! steps. When KV memory runs out, the most recently admitted sequence is preempted (its
//! cache dropped, its tokens kept) and recomputed later.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Instant;

use basalt_types::{
    BasaltError, ErrorKind, FinishReason, GenerateEvent, TokenLogprob, TopLogprob, Usage,
};
use tokio::sync::{mpsc, oneshot};

use crate::kernels::ActScratch;
use crate::kv::{KvBudget, SeqKv};
use crate::model::{BatchSeq, Transformer};
use crate::prefix_cache::{Chain, PrefixCache};
use crate::sampling::{logprobs, Sampler};
use crate::text::{StopMatcher, StopOutcome, Utf8Stream};
use crate::tokenizer::Tokenizer;
use crate::tools::{self, OutputParser};
use crate::{Accounting, EngineConfig, EventReceiver, Outcome, PreparedRequest, TenantLane};
use basalt_grammar::TokenConstraint;

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

    pub fn enqueue(&self, prepared: PreparedRequest) -> Result<EventReceiver, BasaltError> {
        if self.counters.waiting.load(Ordering::Relaxed) >= self.max_waiting {
            return Err(BasaltError::new(
                ErrorKind::Overloaded,
                "The model's request queue is full; retry shortly.",
            ));
        }
        let (events, rx) = mpsc::unbounded_channel();
        let seq = Sequence::new(prepared, events);
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

struct Sequence {
    /// Prompt followed by every generated token.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// How many of `tokens` are in `kv`.
    computed: usize,
    kv: Option<SeqKv>,
    max_tokens: usize,
    /// `max_tokens` is the room left in the context window, not the caller's limit.
    limited_by_context: bool,
    stop_on_eog: bool,
    sampler: Sampler,
    utf8: Utf8Stream,
    stops: StopMatcher,
    logprobs: Option<u8>,
    pending_logprobs: Vec<TokenLogprob>,
    /// The grammar the output must follow, if any.
    constraint: Option<TokenConstraint>,
    /// The request parameter the constraint came from, for errors.
    constraint_param: &'static str,
    /// Splits the answer into text and tool calls.
    output: OutputParser,
    events: mpsc::UnboundedSender<GenerateEvent>,
    /// Fair-admission lane (tenant) and this request's arrival order.
    lane: Option<TenantLane>,
    arrival: u64,
    /// Recomputing after preemption: admitted ahead of new work (unless it yielded).
    preempted: bool,
    /// Preempted to give its slot to a tenant below its fair share: it waits its lane's
    /// turn like new work instead of taking the slot straight back.
    yielded: bool,
    /// Prompt tokens whose KV came from the prefix cache.
    cached: usize,
    /// How many of this sequence's KV blocks the prefix cache knows.
    chain: Chain,
    first_token: Option<Instant>,
    outcome: Option<Outcome>,
    accounting: Option<oneshot::Sender<Accounting>>,
}

impl Drop for Sequence {
    /// Every sequence reports what it cost exactly once, however it ends: a client that
    /// disconnects is billed the tokens computed until then.
    fn drop(&mut self) {
        if let Some(tx) = self.accounting.take() {
            let _ = tx.send(Accounting {
                usage: self.usage(),
                first_token: self.first_token,
                outcome: self.outcome.unwrap_or(Outcome::Cancelled),
            });
        }
    }
}

impl Sequence {
    fn new(p: PreparedRequest, events: mpsc::UnboundedSender<GenerateEvent>) -> Self {
        let prompt_len = p.prompt_tokens.len();
        // Stop sequences could cut a tool call or a JSON answer short of its grammar, so
        // they apply to free text only.
        let stop = if p.request.constraints.is_free_text() {
            p.request.stop
        } else {
            Vec::new()
        };
        let output = OutputParser::new(&p.request.constraints, tools::new_call_id());
        static ARRIVALS: AtomicU64 = AtomicU64::new(0);
        Self {
            tokens: p.prompt_tokens,
            prompt_len,
            computed: 0,
            kv: None,
            max_tokens: p.max_tokens,
            limited_by_context: p.limited_by_context,
            stop_on_eog: true,
            sampler: Sampler::new(p.request.sampling),
            utf8: Utf8Stream::default(),
            stops: StopMatcher::new(stop),
            logprobs: p.request.logprobs,
            pending_logprobs: Vec::new(),
            constraint: p.constraint,
            constraint_param: tools::constraint_param(&p.request.constraints),
            output,
            events,
            lane: p.tenant,
            arrival: ARRIVALS.fetch_add(1, Ordering::Relaxed),
            preempted: false,
            yielded: false,
            cached: 0,
            chain: Chain::default(),
            first_token: None,
            outcome: None,
            accounting: p.accounting,
        }
    }

    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_len as u32,
            output_tokens: self.generated() as u32,
            cached_input_tokens: self.cached as u32,
        }
    }

    fn cancelled(&self) -> bool {
        self.events.is_closed()
    }

    /// Ends the sequence with an error. Its KV memory is released before the client hears
    /// of it, so "finished" always means "memory returned".
    fn fail(mut self, error: BasaltError) {
        self.kv = None;
        self.outcome = Some(Outcome::Failed(error.kind));
        let usage = self.usage();
        let _ = self.events.send(GenerateEvent::Failed { error, usage });
    }
}

enum StepResult {
    Continue,
    Done,
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
}

fn lane_key(lane: &Option<TenantLane>) -> &str {
    lane.as_ref().map_or("", |l| l.id.as_str())
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

    fn admit(&mut self) {
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
    fn plan(&mut self) -> Vec<(usize, usize)> {
        let chunk = self.shared.config.prefill_chunk.max(1);
        let mut budget = self.shared.config.max_batch_tokens.max(1);
        let mut plan = Vec::new();
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let seq = &mut self.running[i];
            let n = (seq.tokens.len() - seq.computed).min(chunk).min(budget);
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
    fn yield_slot_to(&mut self, candidate: usize) -> Option<usize> {
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

    /// The waiting sequence to admit next: a preempted one first (it was admitted before);
    /// otherwise weighted fair queuing between tenant lanes: the lane that has received the
    /// least service per unit of weight goes next, oldest request first within a lane. A
    /// lane that was idle restarts at the current virtual time, so idling earns no credit.
    fn next_to_admit(&self) -> Option<usize> {
        if let Some(i) = self.waiting.iter().position(|s| s.preempted && !s.yielded) {
            return Some(i);
        }
        let mut best: Option<(f64, u64, usize)> = None;
        for (i, s) in self.waiting.iter().enumerate() {
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
    fn reuse_prefix(&mut self, seq: &mut Sequence) {
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

    fn publish_cache(&self) {
        self.shared
            .cached_bytes
            .store(self.cache.reclaimable_bytes(), Ordering::Release);
    }

    /// Charges one admission to the sequence's lane.
    fn charge(&mut self, lane: &Option<TenantLane>) {
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

/// Samples one token for `seq` from `logits`, streams its text, and decides whether the
/// sequence is finished.
fn emit_next_token(
    shared: &Shared,
    cache: &PrefixCache,
    seq: &mut Sequence,
    logits: &mut [f32],
) -> StepResult {
    let tok = &shared.tokenizer;
    if let Some(c) = &mut seq.constraint {
        if let Err(e) = c.mask(logits) {
            return fail_in_place(shared, cache, seq, e);
        }
    }
    seq.sampler.apply_penalties(logits, &seq.tokens);
    let token = seq.sampler.sample(logits);
    seq.first_token.get_or_insert_with(Instant::now);
    if let Some(top) = seq.logprobs {
        let (lp, alternatives) = logprobs(logits, token, top as usize);
        let entry = |id: u32, logprob: f32| {
            let bytes = tok.token_bytes(id);
            TopLogprob {
                token: String::from_utf8_lossy(&bytes).into_owned(),
                bytes,
                logprob,
            }
        };
        let chosen = entry(token, lp);
        seq.pending_logprobs.push(TokenLogprob {
            token: chosen.token,
            bytes: chosen.bytes,
            logprob: chosen.logprob,
            top: alternatives
                .into_iter()
                .map(|(id, l)| entry(id, l))
                .collect(),
        });
    }
    let end_of_generation = seq.stop_on_eog && tok.is_end_of_generation(token);
    if let (Some(c), false) = (&mut seq.constraint, end_of_generation) {
        if let Err(e) = c.commit(token) {
            return fail_in_place(shared, cache, seq, e);
        }
    }
    // An end token is produced (and counted) like any other, but is not part of the text.
    seq.tokens.push(token);
    let mut text = if end_of_generation {
        seq.utf8.finish()
    } else {
        seq.utf8.push(&tok.token_bytes(token))
    };

    let reason = if end_of_generation {
        Some(FinishReason::EndOfTurn)
    } else if seq.generated() >= seq.max_tokens {
        text.push_str(&seq.utf8.finish());
        Some(if seq.limited_by_context {
            FinishReason::ContextWindow
        } else {
            FinishReason::MaxTokens
        })
    } else {
        None
    };
    let (text, reason, stop_sequence) = match seq.stops.push(&text) {
        StopOutcome::Stopped { text, sequence } => {
            (text, Some(FinishReason::StopSequence), Some(sequence))
        }
        StopOutcome::Continue(mut t) => {
            if reason.is_some() {
                t.push_str(&seq.stops.finish());
            }
            (t, reason, None)
        }
    };
    let mut events = seq.output.push(&text);
    if reason.is_some() {
        events.extend(seq.output.finish());
    }
    // Log-probabilities ride on the text they produced; tokens of a tool call have none.
    let mut logprobs = std::mem::take(&mut seq.pending_logprobs);
    match events
        .iter_mut()
        .find(|e| matches!(e, GenerateEvent::Text { .. }))
    {
        Some(GenerateEvent::Text { logprobs: l, .. }) => *l = std::mem::take(&mut logprobs),
        _ if reason.is_some() && !logprobs.is_empty() && seq.output.is_text() => {
            events.push(GenerateEvent::Text {
                text: String::new(),
                logprobs: std::mem::take(&mut logprobs),
            })
        }
        _ => {}
    }
    if !logprobs.is_empty() {
        // Not yet attached to any text (a character still incomplete): keep for later.
        seq.pending_logprobs = logprobs;
    }
    for event in events {
        if seq.events.send(event).is_err() {
            return StepResult::Done;
        }
    }
    match reason {
        Some(reason) => {
            let reason = if seq.output.called() && reason == FinishReason::EndOfTurn {
                FinishReason::ToolUse
            } else {
                reason
            };
            // Its memory is released before the client hears "finished"; the blocks the
            // prefix cache knows stay there, reclaimable by any request (and counted so).
            seq.kv = None;
            shared
                .cached_bytes
                .store(cache.reclaimable_bytes(), Ordering::Release);
            seq.outcome = Some(Outcome::Finished(reason));
            let _ = seq.events.send(GenerateEvent::Finished {
                reason,
                usage: seq.usage(),
                stop_sequence,
            });
            StepResult::Done
        }
        None => StepResult::Continue,
    }
}

/// Ends a sequence whose constraint broke down, reporting the tokens it did generate.
///
/// The grammar came from the client's schema, and the ways it breaks down mid-generation
/// (no finite output left, such as a required recursive `$ref`; a lexer or parser budget
/// spent, such as a pattern of a billion characters) are the schema's, so the client gets a
/// 400 naming the parameter. The grammar engine's own words go to the log, not the client.
fn fail_in_place(
    shared: &Shared,
    cache: &PrefixCache,
    seq: &mut Sequence,
    why: basalt_grammar::GrammarError,
) -> StepResult {
    seq.kv = None;
    shared
        .cached_bytes
        .store(cache.reclaimable_bytes(), Ordering::Release);
    tracing::warn!(param = seq.constraint_param, error = %why, "constrained decoding stopped");
    let error = BasaltError::invalid(
        seq.constraint_param,
        "The output cannot be constrained any further: the schema admits no finite output \
         from here, or is too complex to enforce. Simplify the schema.",
    );
    seq.outcome = Some(Outcome::Failed(error.kind));
    let _ = seq.events.send(GenerateEvent::Failed {
        error,
        usage: seq.usage(),
    });
    StepResult::Done
}

#[cfg(test)]
mod tests {
    //! The scheduler against a fake model: no weights, deterministic logits, a real KV
    //! budget. What is tested is scheduling: completion, preemption, failure, cancellation.

    use std::collections::BTreeMap;

    use basalt_gguf::{Array, Header, Value};
    use basalt_types::{GenerateRequest, Prompt, SamplingParams};

    use super::*;
    use crate::kv::{KvShape, BLOCK_TOKENS};

    const VOCAB: usize = 8;
    const EOS: u32 = 7;

    /// Always predicts `(last token + 1) % 7`, so it never emits EOS on its own. Each step
    /// takes a millisecond, like a (very small) real model, so queues can fill up.
    struct CountingModel;

    impl Transformer for CountingModel {
        fn vocab_size(&self) -> usize {
            VOCAB
        }
        fn context_length(&self) -> usize {
            4096
        }
        fn kv_shape(&self) -> KvShape {
            KvShape {
                layers: 1,
                kv_dim: 4,
            }
        }
        fn run_batch(&self, batch: &mut [BatchSeq<'_>], _: &mut ActScratch, logits: &mut [f32]) {
            std::thread::sleep(std::time::Duration::from_millis(1));
            for (i, seq) in batch.iter_mut().enumerate() {
                seq.kv.advance(seq.tokens.len());
                let row = &mut logits[i * VOCAB..(i + 1) * VOCAB];
                row.fill(0.0);
                let last = seq.tokens.last().copied().unwrap_or(0);
                row[((last + 1) % 7) as usize] = 10.0;
            }
        }
    }

    fn tokenizer() -> Tokenizer {
        let mut metadata = BTreeMap::new();
        let tokens = ["a", "b", "c", "d", "e", "f", "g", "<eos>"]
            .map(String::from)
            .to_vec();
        metadata.insert("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
        metadata.insert(
            "tokenizer.ggml.tokens".into(),
            Value::Array(Array::Strings(tokens)),
        );
        metadata.insert(
            "tokenizer.ggml.token_type".into(),
            Value::Array(Array::Ints(vec![1, 1, 1, 1, 1, 1, 1, 3])),
        );
        metadata.insert(
            "tokenizer.ggml.merges".into(),
            Value::Array(Array::Strings(vec![])),
        );
        metadata.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(EOS));
        Tokenizer::from_gguf(&Header {
            version: 3,
            metadata,
            tensors: vec![],
            data_offset: 0,
        })
        .unwrap()
    }

    /// 16 bytes of KV per token, grown 64 tokens (1 KiB) at a time.
    /// KV memory held by live sequences: the budget's use minus what the prefix cache
    /// keeps (which any request can reclaim).
    fn live_bytes(shared: &Shared) -> usize {
        shared.budget.used_bytes() - shared.cached_bytes.load(Ordering::Acquire)
    }

    fn scheduler(budget_bytes: usize, max_running: usize) -> (Handle, Arc<Shared>) {
        scheduler_with_queue(budget_bytes, max_running, 8)
    }

    fn scheduler_with_queue(
        budget_bytes: usize,
        max_running: usize,
        max_waiting: usize,
    ) -> (Handle, Arc<Shared>) {
        let config = EngineConfig {
            kv_budget_bytes: budget_bytes,
            max_running,
            max_waiting,
            prefill_chunk: 16,
            max_batch_tokens: 64,
            prefix_caching: true,
            admission_window: std::time::Duration::ZERO,
            ..EngineConfig::default()
        };
        scheduler_with(Box::new(CountingModel), config)
    }

    fn scheduler_with(
        transformer: Box<dyn Transformer>,
        config: EngineConfig,
    ) -> (Handle, Arc<Shared>) {
        let shared = Arc::new(Shared {
            transformer,
            tokenizer: tokenizer(),
            budget: KvBudget::new(config.kv_budget_bytes),
            config,
            cached_bytes: Default::default(),
        });
        (start(Arc::clone(&shared)).unwrap(), shared)
    }

    /// [`CountingModel`] that also records how many sequences each forward pass carried.
    struct RecordingModel(Arc<std::sync::Mutex<Vec<usize>>>);

    impl Transformer for RecordingModel {
        fn vocab_size(&self) -> usize {
            CountingModel.vocab_size()
        }
        fn context_length(&self) -> usize {
            CountingModel.context_length()
        }
        fn kv_shape(&self) -> KvShape {
            CountingModel.kv_shape()
        }
        fn run_batch(&self, batch: &mut [BatchSeq<'_>], s: &mut ActScratch, logits: &mut [f32]) {
            if let Ok(mut sizes) = self.0.lock() {
                sizes.push(batch.len());
            }
            CountingModel.run_batch(batch, s, logits);
        }
    }

    #[test]
    fn requests_arriving_together_at_an_idle_scheduler_share_its_first_step() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        // A generous window, so that the test does not depend on how fast it submits.
        let config = EngineConfig {
            kv_budget_bytes: 1 << 20,
            prefill_chunk: 16,
            max_batch_tokens: 64,
            admission_window: std::time::Duration::from_millis(300),
            ..Default::default()
        };
        let (handle, _) = scheduler_with(Box::new(RecordingModel(Arc::clone(&sizes))), config);
        let rxs: Vec<_> = (0..3)
            .map(|_| handle.enqueue(request(2)).unwrap())
            .collect();
        for rx in rxs {
            drain(rx);
        }
        let sizes = sizes.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(sizes.first(), Some(&3), "forward passes: {sizes:?}");
    }

    fn request(max_tokens: usize) -> PreparedRequest {
        PreparedRequest {
            prompt_tokens: vec![0, 1, 2, 3],
            max_tokens,
            limited_by_context: false,
            request: GenerateRequest {
                prompt: Prompt::Text("abcd".into()),
                sampling: SamplingParams {
                    temperature: 0.0,
                    ..Default::default()
                },
                max_tokens: Some(max_tokens as u32),
                stop: vec![],
                logprobs: None,
                constraints: Default::default(),
            },
            constraint: None,
            tenant: None,
            accounting: None,
        }
    }

    /// Collects a request's text and final event.
    fn drain(mut rx: EventReceiver) -> (String, GenerateEvent) {
        let mut text = String::new();
        while let Some(ev) = rx.blocking_recv() {
            match ev {
                GenerateEvent::Text { text: t, .. } => text.push_str(&t),
                end => return (text, end),
            }
        }
        panic!("stream ended without a final event");
    }

    #[test]
    fn sequences_complete_and_release_memory() {
        let (handle, shared) = scheduler(1 << 20, 4);
        let rxs: Vec<_> = (0..3)
            .map(|_| handle.enqueue(request(10)).unwrap())
            .collect();
        for rx in rxs {
            let (text, end) = drain(rx);
            assert_eq!(text, "efgabcdefg");
            assert!(
                matches!(end, GenerateEvent::Finished { reason: FinishReason::MaxTokens, usage, .. } if usage.output_tokens == 10 && usage.input_tokens == 4)
            );
        }
        assert_eq!(live_bytes(&shared), 0);
    }

    #[test]
    fn preempted_sequences_are_recomputed_and_finish_identically() {
        // 2 KiB: room for two sequences of up to 64 tokens, or one of up to 128.
        let (handle, shared) = scheduler(2048, 2);
        let a = handle.enqueue(request(100)).unwrap();
        let b = handle.enqueue(request(100)).unwrap();
        let (ta, ea) = drain(a);
        let (tb, eb) = drain(b);
        assert_eq!(ta, tb, "preemption must not change the output");
        assert_eq!(ta.len(), 100);
        for end in [ea, eb] {
            assert!(
                matches!(end, GenerateEvent::Finished { usage, .. } if usage.output_tokens == 100)
            );
        }
        assert_eq!(live_bytes(&shared), 0);
    }

    #[test]
    fn a_sequence_larger_than_the_budget_fails_cleanly() {
        let (handle, shared) = scheduler(1024, 2);
        let (_, end) = drain(handle.enqueue(request(200)).unwrap());
        assert!(
            matches!(end, GenerateEvent::Failed { ref error, .. } if error.kind == ErrorKind::Overloaded),
            "{end:?}"
        );
        assert_eq!(live_bytes(&shared), 0);
        // The scheduler keeps serving.
        let (text, _) = drain(handle.enqueue(request(3)).unwrap());
        assert_eq!(text, "efg");
    }

    #[test]
    fn dropping_the_receiver_cancels_and_frees_memory() {
        let (handle, shared) = scheduler(1 << 20, 2);
        let mut rx = handle.enqueue(request(3000)).unwrap();
        assert!(matches!(
            rx.blocking_recv(),
            Some(GenerateEvent::Text { .. })
        ));
        drop(rx);
        let mut idle = false;
        for _ in 0..1000 {
            if shared.budget.used_bytes() == 0 && handle.stats().running == 0 {
                idle = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(
            idle,
            "a cancelled sequence must leave the scheduler and free its KV memory"
        );
    }

    #[test]
    fn a_full_queue_is_overloaded_not_a_hang() {
        let (handle, _shared) = scheduler(1 << 20, 1);
        // Hold the single running slot and fill the queue.
        let mut held = vec![handle.enqueue(request(3000)).unwrap()];
        let mut refused = None;
        for _ in 0..64 {
            match handle.enqueue(request(3000)) {
                Ok(rx) => held.push(rx),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let e = refused.expect("the queue must refuse work beyond max_waiting");
        assert_eq!(e.status(), 429);
    }

    fn for_tenant(mut p: PreparedRequest, tenant: &str, weight: u32) -> PreparedRequest {
        p.tenant = Some(TenantLane {
            id: tenant.into(),
            weight,
        });
        p
    }

    #[test]
    fn a_burst_from_one_tenant_does_not_hold_back_another() {
        let (handle, _shared) = scheduler_with_queue(1 << 20, 2, 128);
        // Two long requests hold both slots while the queue fills, so what follows depends
        // on admission order alone, not on timing.
        let blockers = [
            handle.enqueue(request(40)).unwrap(),
            handle.enqueue(request(40)).unwrap(),
        ];
        // Tenant A's burst of a hundred arrives first...
        let mut waiting: Vec<(String, EventReceiver)> = (0..100)
            .map(|i| {
                let rx = handle.enqueue(for_tenant(request(6), "a", 1)).unwrap();
                (format!("a{i}"), rx)
            })
            .collect();
        // ...then B's single request.
        waiting.push((
            "b".into(),
            handle.enqueue(for_tenant(request(6), "b", 1)).unwrap(),
        ));
        let (done_tx, done_rx) = std_mpsc::channel();
        let threads: Vec<_> = waiting
            .into_iter()
            .map(|(name, rx)| {
                let tx = done_tx.clone();
                std::thread::spawn(move || {
                    drain(rx);
                    let _ = tx.send(name);
                })
            })
            .collect();
        drop(done_tx);
        for b in blockers {
            drain(b);
        }
        let order: Vec<String> = done_rx.iter().collect();
        let b_at = order.iter().position(|n| n == "b").unwrap();
        // B is admitted with the first pair that follows the blockers.
        assert!(b_at <= 2, "B finished {b_at}th: {order:?}");
        for t in threads {
            t.join().unwrap();
        }
    }

    /// One request can bring dozens of sequences (prompts times `n`): when they hold every
    /// slot, a tenant that arrives after them is given one at once (the newest of them is
    /// preempted), not after they finish; and the preempted ones still finish, unchanged.
    #[test]
    fn a_tenant_holding_every_slot_gives_one_to_a_newcomer() {
        let (handle, _shared) = scheduler_with_queue(1 << 20, 4, 64);
        let heavy: Vec<EventReceiver> = (0..12)
            .map(|_| handle.enqueue(for_tenant(request(300), "a", 1)).unwrap())
            .collect();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while handle.stats().running < 4 {
            assert!(
                Instant::now() < deadline,
                "A's sequences were never admitted"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let b = handle.enqueue(for_tenant(request(6), "b", 1)).unwrap();
        let (done_tx, done_rx) = std_mpsc::channel();
        let threads: Vec<_> = heavy
            .into_iter()
            .map(|rx| ("a", rx))
            .chain([("b", b)])
            .map(|(name, rx)| {
                let tx = done_tx.clone();
                std::thread::spawn(move || {
                    let (text, end) = drain(rx);
                    let _ = tx.send((name, text, end));
                })
            })
            .collect();
        drop(done_tx);
        let order: Vec<(&str, String, GenerateEvent)> = done_rx.iter().collect();
        assert_eq!(order[0].0, "b", "B waited for A's sequences to finish");
        let a_texts: Vec<&String> = order
            .iter()
            .filter(|(n, _, _)| *n == "a")
            .map(|(_, t, _)| t)
            .collect();
        assert_eq!(a_texts.len(), 12);
        assert!(a_texts.iter().all(|t| *t == a_texts[0] && t.len() == 300));
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn weights_share_admissions_in_proportion() {
        let (handle, _shared) = scheduler_with_queue(1 << 20, 1, 64);
        // Hold the only slot so both tenants queue up behind it, then release it.
        let blocker = handle.enqueue(request(40)).unwrap();
        let mut rxs = Vec::new();
        for i in 0..12 {
            rxs.push((
                "a",
                handle.enqueue(for_tenant(request(2), "a", 1)).unwrap(),
                i,
            ));
            rxs.push((
                "b",
                handle.enqueue(for_tenant(request(2), "b", 3)).unwrap(),
                i,
            ));
        }
        drain(blocker);
        let (tx, rx) = std_mpsc::channel();
        let threads: Vec<_> = rxs
            .into_iter()
            .map(|(t, r, _)| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    drain(r);
                    let _ = tx.send(t);
                })
            })
            .collect();
        drop(tx);
        let order: Vec<&str> = rx.iter().collect();
        // With weight 3 against 1, B gets about three of the first four admissions.
        let b_first_8 = order[..8].iter().filter(|t| **t == "b").count();
        assert!((5..=7).contains(&b_first_8), "{order:?}");
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn accounting_arrives_for_finished_and_cancelled_sequences() {
        let (handle, _shared) = scheduler(1 << 20, 2);
        let (tx, acc) = oneshot::channel();
        let mut p = request(5);
        p.accounting = Some(tx);
        drain(handle.enqueue(p).unwrap());
        let a = acc.blocking_recv().unwrap();
        assert_eq!(a.outcome, Outcome::Finished(FinishReason::MaxTokens));
        assert_eq!((a.usage.input_tokens, a.usage.output_tokens), (4, 5));
        assert!(a.first_token.is_some());

        let (tx, acc) = oneshot::channel();
        let mut p = request(100_000);
        p.accounting = Some(tx);
        let mut rx = handle.enqueue(p).unwrap();
        // Read a few tokens, then walk away.
        for _ in 0..3 {
            rx.blocking_recv().unwrap();
        }
        drop(rx);
        let a = acc.blocking_recv().unwrap();
        assert_eq!(a.outcome, Outcome::Cancelled);
        assert!(a.usage.output_tokens >= 3, "{a:?}");
    }

    fn long_prompt(max_tokens: usize) -> PreparedRequest {
        let mut p = request(max_tokens);
        p.prompt_tokens = (0..40).map(|i| (i % 6) as u32).collect();
        p
    }

    #[test]
    fn repeated_prompts_reuse_cached_prefixes() {
        let (handle, shared) = scheduler(1 << 20, 2);
        let (first, end1) = drain(handle.enqueue(long_prompt(8)).unwrap());
        let (second, end2) = drain(handle.enqueue(long_prompt(8)).unwrap());
        assert_eq!(first, second, "a cached prefix must not change the output");
        let cached = |e: &GenerateEvent| match e {
            GenerateEvent::Finished { usage, .. } => usage.cached_input_tokens,
            other => panic!("{other:?}"),
        };
        assert_eq!(cached(&end1), 0);
        // Whole blocks, leaving the last prompt token (whose logits start the answer).
        assert_eq!(cached(&end2) as usize, 39 / BLOCK_TOKENS * BLOCK_TOKENS);
        assert_eq!(live_bytes(&shared), 0);
        assert!(shared.cached_bytes.load(Ordering::Acquire) > 0);
    }

    #[test]
    fn cached_prefixes_give_memory_back_before_anyone_is_preempted() {
        // 2 KiB: 128 tokens at 16 bytes each. Fill the cache, then ask for all of it.
        let (handle, shared) = scheduler(2048, 2);
        drain(handle.enqueue(long_prompt(20)).unwrap());
        assert!(shared.cached_bytes.load(Ordering::Acquire) > 0);
        let mut big = request(120);
        big.prompt_tokens = vec![5; 4];
        let (text, end) = drain(handle.enqueue(big).unwrap());
        assert!(matches!(end, GenerateEvent::Finished { .. }), "{end:?}");
        assert_eq!(text.len(), 120);
    }

    /// Requests running at the same time share the blocks of their common prefix: the one
    /// admitted later finds the blocks the first has already filled, and the memory held is
    /// less than two private copies.
    #[test]
    fn concurrent_requests_share_prefix_blocks() {
        let (handle, shared) = scheduler(1 << 20, 2);
        let rx1 = handle.enqueue(long_prompt(200)).unwrap();
        // Wait until the first is decoding (its prompt blocks are registered).
        let mut rx1 = rx1;
        assert!(matches!(
            rx1.blocking_recv(),
            Some(GenerateEvent::Text { .. })
        ));
        let (second, end2) = drain(handle.enqueue(long_prompt(8)).unwrap());
        let cached = match end2 {
            GenerateEvent::Finished { usage, .. } => usage.cached_input_tokens as usize,
            other => panic!("{other:?}"),
        };
        assert_eq!(cached, 39 / BLOCK_TOKENS * BLOCK_TOKENS);
        let (first, _) = drain(rx1);
        assert!(first.len() >= 190 && second.len() == 8, "{first} {second}");
        assert_eq!(live_bytes(&shared), 0);
    }

    /// Two sequences sharing prompt blocks outgrow the budget: one is preempted, resumes
    /// from whatever of its blocks is still cached, and both outputs are unchanged.
    #[test]
    fn preemption_with_shared_blocks_keeps_outputs_identical() {
        let unconstrained = {
            let (handle, _shared) = scheduler(1 << 20, 2);
            drain(handle.enqueue(long_prompt(60)).unwrap()).0
        };
        // 16 bytes a token: 2560 bytes hold 160 tokens, so two 100-token sequences collide.
        let (handle, shared) = scheduler(2560, 2);
        let a = handle.enqueue(long_prompt(60)).unwrap();
        let b = handle.enqueue(long_prompt(60)).unwrap();
        let (text_a, _) = drain(a);
        let (text_b, _) = drain(b);
        assert_eq!(text_a, unconstrained);
        assert_eq!(text_b, unconstrained);
        assert_eq!(live_bytes(&shared), 0);
    }
}
