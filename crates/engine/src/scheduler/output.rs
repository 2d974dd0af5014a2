//! Per-token output processing, after each forward pass and apart from the step loop (as
//! vLLM v1 separates its output processor): the grammar's mask, penalties and sampling,
//! logprobs, incremental UTF-8 decoding, stop strings across token boundaries, the tool-call
//! parser, and the events a sequence sends. Nothing here schedules.

use std::sync::atomic::Ordering;
use std::time::Instant;

use basalt_types::{BasaltError, FinishReason, GenerateEvent, TokenLogprob, TopLogprob};

use super::sequence::Sequence;
use super::Shared;
use crate::prefix_cache::PrefixCache;
use crate::sampling::logprobs;
use crate::text::StopOutcome;
use crate::Outcome;

pub(super) enum StepResult {
    Continue,
    Done,
}

/// Samples one token for `seq` from `logits`, streams its text, and decides whether the
/// sequence is finished.
pub(super) fn emit_next_token(
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
    let mut events = Vec::new();
    let answer = match &mut seq.reasoning {
        Some(splitter) => {
            let was_reasoning = splitter.in_reasoning();
            let mut split = splitter.push(&text);
            if reason.is_some() {
                let rest = splitter.finish();
                split.reasoning.push_str(&rest.reasoning);
                split.answer.push_str(&rest.answer);
            }
            // A token counts as reasoning if it was produced inside the block, or its text
            // went there (the one that opened it).
            if was_reasoning || splitter.in_reasoning() || !split.reasoning.is_empty() {
                seq.reasoning_tokens += 1;
            }
            if !split.reasoning.is_empty() {
                events.push(GenerateEvent::Reasoning {
                    text: split.reasoning,
                });
            }
            split.answer
        }
        None => text,
    };
    events.extend(seq.output.push(&answer));
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
    if !logprobs.is_empty() && !seq.reasoning.as_ref().is_some_and(|r| r.in_reasoning()) {
        // Not yet attached to any text (a character still incomplete): keep for later.
        // Log-probabilities describe the answer; those of reasoning tokens are dropped.
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
