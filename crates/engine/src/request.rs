//! What the engine takes and gives back: a request prepared for the scheduler, the admission
//! the platform layer gives it (tenant lane, accounting), the event channel, and what a
//! sequence cost when it ended.

use basalt_grammar::TokenConstraint;
use basalt_types::{ErrorKind, FinishReason, GenerateEvent, GenerateRequest, Usage};
use tokio::sync::{mpsc, oneshot};

/// Receives a request's events; drop it to cancel the request.
pub type EventReceiver = mpsc::UnboundedReceiver<GenerateEvent>;

/// A request after template rendering and tokenisation, ready for the scheduler.
#[derive(Debug)]
pub struct PreparedRequest {
    pub prompt_tokens: Vec<u32>,
    /// For a thinking model's chat: split the answer into reasoning and text, starting
    /// inside a reasoning block if `Some(true)` (the prompt opened one).
    pub reasoning: Option<bool>,
    pub max_tokens: usize,
    /// The caller set no limit, so `max_tokens` is the room left in the context window.
    pub limited_by_context: bool,
    pub request: GenerateRequest,
    /// The grammar the output must follow (tool calls, JSON formats), compiled.
    pub constraint: Option<TokenConstraint>,
    /// The first `cache_until` prompt tokens are to be kept in the prefix cache for
    /// `cache_ttl` (the request's cache point; 0: none).
    pub cache_until: usize,
    pub cache_ttl: std::time::Duration,
}

/// What the platform layer says about a prepared request when it queues it: whose it is
/// and who hears what it cost.
#[derive(Debug, Default)]
pub struct Admission {
    /// Whose request this is, for fair admission between tenants; `None` shares one lane.
    pub tenant: Option<TenantLane>,
    /// Receives the final accounting when the sequence ends, however it ends (finished,
    /// failed, or cancelled by a client that went away): the tokens actually computed.
    pub accounting: Option<oneshot::Sender<Accounting>>,
    pub priority: Priority,
}

/// The class of work a request is. Batch work fills capacity interactive requests leave
/// idle: it is admitted only while no interactive request waits, and a running batch
/// sequence gives its slot to an interactive one that does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Priority {
    #[default]
    Interactive,
    Batch,
}

/// A tenant's lane in the admission queue: requests are admitted in weighted fair order
/// between lanes, first come first served within one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantLane {
    pub id: String,
    /// Share of admissions under contention (1 = normal).
    pub weight: u32,
}

/// How a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Finished(FinishReason),
    Failed(ErrorKind),
    /// The receiver was dropped before the end.
    Cancelled,
}

/// What a sequence cost, reported once when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accounting {
    pub usage: Usage,
    /// When its first generated token was sampled.
    pub first_token: Option<std::time::Instant>,
    pub outcome: Outcome,
}
