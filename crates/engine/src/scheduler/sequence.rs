//! One sequence as the scheduler holds it: its tokens and how many are in its KV cache, its
//! sampler, grammar, stop strings and output parser, the channel its events go to, and the
//! accounting it owes when it ends, however it ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use basalt_grammar::TokenConstraint;
use basalt_types::{BasaltError, GenerateEvent, TokenLogprob, Usage};
use tokio::sync::{mpsc, oneshot};

use crate::kv::{SeqKv, BLOCK_TOKENS};
use crate::prefix_cache::Chain;
use crate::reasoning::ReasoningSplitter;
use crate::sampling::Sampler;
use crate::text::{StopMatcher, Utf8Stream};
use crate::tools::{self, OutputParser};
use crate::{Accounting, Admission, Outcome, PreparedRequest, Priority, TenantLane};

pub(super) struct Sequence {
    /// Prompt followed by every generated token.
    pub(super) tokens: Vec<u32>,
    pub(super) prompt_len: usize,
    /// How many of `tokens` are in `kv`.
    pub(super) computed: usize,
    pub(super) kv: Option<SeqKv>,
    pub(super) max_tokens: usize,
    /// `max_tokens` is the room left in the context window, not the caller's limit.
    pub(super) limited_by_context: bool,
    pub(super) stop_on_eog: bool,
    pub(super) sampler: Sampler,
    pub(super) utf8: Utf8Stream,
    pub(super) stops: StopMatcher,
    pub(super) logprobs: Option<u8>,
    pub(super) pending_logprobs: Vec<TokenLogprob>,
    /// The grammar the output must follow, if any.
    pub(super) constraint: Option<TokenConstraint>,
    /// The request parameter the constraint came from, for errors.
    pub(super) constraint_param: &'static str,
    /// Splits a thinking model's output into reasoning and answer, before `output`.
    pub(super) reasoning: Option<ReasoningSplitter>,
    /// Generated tokens spent reasoning.
    pub(super) reasoning_tokens: usize,
    /// Splits the answer into text and tool calls.
    pub(super) output: OutputParser,
    pub(super) events: mpsc::UnboundedSender<GenerateEvent>,
    /// Fair-admission lane (tenant) and this request's arrival order.
    pub(super) lane: Option<TenantLane>,
    pub(super) priority: Priority,
    pub(super) arrival: u64,
    /// Recomputing after preemption: admitted ahead of new work (unless it yielded).
    pub(super) preempted: bool,
    /// Preempted to give its slot to a tenant below its fair share: it waits its lane's
    /// turn like new work instead of taking the slot straight back.
    pub(super) yielded: bool,
    /// Prompt tokens whose KV came from the prefix cache.
    pub(super) cached: usize,
    /// How many of this sequence's KV blocks the prefix cache knows.
    pub(super) chain: Chain,
    /// The prompt tokens the caller's cache point covers, and how long to keep them.
    pub(super) cache_until: usize,
    pub(super) cache_ttl: Duration,
    /// The blocks up to the cache point are registered and pinned.
    pub(super) cache_pinned: bool,
    pub(super) first_token: Option<Instant>,
    pub(super) outcome: Option<Outcome>,
    pub(super) accounting: Option<oneshot::Sender<Accounting>>,
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
    pub(super) fn new(
        p: PreparedRequest,
        admission: Admission,
        events: mpsc::UnboundedSender<GenerateEvent>,
    ) -> Self {
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
            reasoning: p.reasoning.map(ReasoningSplitter::new),
            reasoning_tokens: 0,
            output,
            events,
            lane: admission.tenant,
            priority: admission.priority,
            arrival: ARRIVALS.fetch_add(1, Ordering::Relaxed),
            preempted: false,
            yielded: false,
            cached: 0,
            chain: Chain::default(),
            cache_until: p.cache_until,
            cache_ttl: p.cache_ttl,
            cache_pinned: false,
            first_token: None,
            outcome: None,
            accounting: admission.accounting,
        }
    }

    pub(super) fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    pub(super) fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_len as u32,
            output_tokens: self.generated() as u32,
            cached_input_tokens: self.cached as u32,
            cache_write_input_tokens: self.cache_written() as u32,
            reasoning_tokens: self.reasoning_tokens as u32,
        }
    }

    /// Tokens up to the cache point this sequence computed itself (those before were read
    /// from the cache); whole blocks only, as the cache keeps them.
    fn cache_written(&self) -> usize {
        if !self.cache_pinned {
            return 0;
        }
        let point = self.cache_until / BLOCK_TOKENS * BLOCK_TOKENS;
        point.saturating_sub(self.cached)
    }

    pub(super) fn cancelled(&self) -> bool {
        self.events.is_closed()
    }

    /// Ends the sequence with an error. Its KV memory is released before the client hears
    /// of it, so "finished" always means "memory returned".
    pub(super) fn fail(mut self, error: BasaltError) {
        self.kv = None;
        self.outcome = Some(Outcome::Failed(error.kind));
        let usage = self.usage();
        let _ = self.events.send(GenerateEvent::Failed { error, usage });
    }
}
