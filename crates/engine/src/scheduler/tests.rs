//! The scheduler against a fake model: no weights, deterministic logits, a real KV
//! budget. What is tested is scheduling: completion, preemption, failure, cancellation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use basalt_gguf::{Array, Header, Value};
use basalt_types::{FinishReason, GenerateEvent, GenerateRequest, Prompt, SamplingParams};
use tokio::sync::oneshot;

use super::*;
use crate::kv::{KvShape, BLOCK_TOKENS};
use crate::{Admission, Outcome, TenantLane};

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
        .map(|_| handle.enqueue(request(2), Admission::default()).unwrap())
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
        reasoning: None,
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
            cache_points: Vec::new(),
            thinking: None,
        },
        constraint: None,
        cache_until: 0,
        cache_ttl: Duration::ZERO,
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
        .map(|_| handle.enqueue(request(10), Admission::default()).unwrap())
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
    let a = handle.enqueue(request(100), Admission::default()).unwrap();
    let b = handle.enqueue(request(100), Admission::default()).unwrap();
    let (ta, ea) = drain(a);
    let (tb, eb) = drain(b);
    assert_eq!(ta, tb, "preemption must not change the output");
    assert_eq!(ta.len(), 100);
    for end in [ea, eb] {
        assert!(matches!(end, GenerateEvent::Finished { usage, .. } if usage.output_tokens == 100));
    }
    assert_eq!(live_bytes(&shared), 0);
}

#[test]
fn a_sequence_larger_than_the_budget_fails_cleanly() {
    let (handle, shared) = scheduler(1024, 2);
    let (_, end) = drain(handle.enqueue(request(200), Admission::default()).unwrap());
    assert!(
        matches!(end, GenerateEvent::Failed { ref error, .. } if error.kind == ErrorKind::Overloaded),
        "{end:?}"
    );
    assert_eq!(live_bytes(&shared), 0);
    // The scheduler keeps serving.
    let (text, _) = drain(handle.enqueue(request(3), Admission::default()).unwrap());
    assert_eq!(text, "efg");
}

#[test]
fn dropping_the_receiver_cancels_and_frees_memory() {
    let (handle, shared) = scheduler(1 << 20, 2);
    let mut rx = handle.enqueue(request(3000), Admission::default()).unwrap();
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
    let mut held = vec![handle.enqueue(request(3000), Admission::default()).unwrap()];
    let mut refused = None;
    for _ in 0..64 {
        match handle.enqueue(request(3000), Admission::default()) {
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

fn lane(tenant: &str, weight: u32) -> Admission {
    Admission {
        tenant: Some(TenantLane {
            id: tenant.into(),
            weight,
        }),
        ..Admission::default()
    }
}

#[test]
fn a_burst_from_one_tenant_does_not_hold_back_another() {
    let (handle, _shared) = scheduler_with_queue(1 << 20, 2, 128);
    // Two long requests hold both slots while the queue fills, so what follows depends
    // on admission order alone, not on timing.
    let blockers = [
        handle.enqueue(request(40), Admission::default()).unwrap(),
        handle.enqueue(request(40), Admission::default()).unwrap(),
    ];
    // Tenant A's burst of a hundred arrives first...
    let mut waiting: Vec<(String, EventReceiver)> = (0..100)
        .map(|i| {
            let rx = handle.enqueue(request(6), lane("a", 1)).unwrap();
            (format!("a{i}"), rx)
        })
        .collect();
    // ...then B's single request.
    waiting.push((
        "b".into(),
        handle.enqueue(request(6), lane("b", 1)).unwrap(),
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
        .map(|_| handle.enqueue(request(300), lane("a", 1)).unwrap())
        .collect();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while handle.stats().running < 4 {
        assert!(
            Instant::now() < deadline,
            "A's sequences were never admitted"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let b = handle.enqueue(request(6), lane("b", 1)).unwrap();
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
fn batch_work_makes_way_for_interactive_requests() {
    let (handle, _shared) = scheduler_with_queue(1 << 20, 2, 64);
    let batch = || Admission {
        priority: crate::Priority::Batch,
        ..Admission::default()
    };
    // Batch sequences fill both slots, with more batch work queued behind them.
    let mut batches: Vec<_> = (0..4)
        .map(|_| handle.enqueue(request(200), batch()).unwrap())
        .collect();
    for rx in &mut batches[..2] {
        // The first token of each: both are running.
        rx.blocking_recv().unwrap();
    }
    let (tx, ends) = std_mpsc::channel();
    let threads: Vec<_> = batches
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let tx = tx.clone();
            let read = usize::from(i < 2);
            std::thread::spawn(move || {
                let (tokens, end) = drain(r);
                let finished = matches!(end, GenerateEvent::Finished { .. });
                let _ = tx.send((Instant::now(), read + tokens.len(), finished));
            })
        })
        .collect();
    drop(tx);
    // An interactive request takes a batch sequence's slot at once: it finishes (5 tokens)
    // before any batch sequence (200 each) does, though they all started before it.
    let (tokens, end) = drain(handle.enqueue(request(5), Admission::default()).unwrap());
    let interactive_done = Instant::now();
    assert_eq!(tokens.len(), 5);
    assert!(matches!(end, GenerateEvent::Finished { .. }));
    let ends: Vec<_> = ends.iter().collect();
    assert!(ends.iter().all(|(at, _, _)| *at > interactive_done));
    // And every batch sequence still finishes whole (the preempted one recomputed).
    assert_eq!(ends.len(), 4);
    assert!(ends.iter().all(|(_, n, finished)| *n == 200 && *finished));
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn weights_share_admissions_in_proportion() {
    let (handle, _shared) = scheduler_with_queue(1 << 20, 1, 64);
    // Hold the only slot so both tenants queue up behind it, then release it.
    let blocker = handle.enqueue(request(40), Admission::default()).unwrap();
    let mut rxs = Vec::new();
    for i in 0..12 {
        rxs.push(("a", handle.enqueue(request(2), lane("a", 1)).unwrap(), i));
        rxs.push(("b", handle.enqueue(request(2), lane("b", 3)).unwrap(), i));
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
    let billed = Admission {
        tenant: None,
        accounting: Some(tx),
        ..Admission::default()
    };
    drain(handle.enqueue(request(5), billed).unwrap());
    let a = acc.blocking_recv().unwrap();
    assert_eq!(a.outcome, Outcome::Finished(FinishReason::MaxTokens));
    assert_eq!((a.usage.input_tokens, a.usage.output_tokens), (4, 5));
    assert!(a.first_token.is_some());

    let (tx, acc) = oneshot::channel();
    let billed = Admission {
        tenant: None,
        accounting: Some(tx),
        ..Admission::default()
    };
    let mut rx = handle.enqueue(request(100_000), billed).unwrap();
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
    let (first, end1) = drain(
        handle
            .enqueue(long_prompt(8), Admission::default())
            .unwrap(),
    );
    let (second, end2) = drain(
        handle
            .enqueue(long_prompt(8), Admission::default())
            .unwrap(),
    );
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

/// A cache point: the first request computes the tokens before it and reports them as
/// written, the next reads them; a request without a point writes nothing.
#[test]
fn a_cache_point_reports_writes_then_reads() {
    let (handle, _) = scheduler(1 << 20, 2);
    let with_point = || {
        let mut p = long_prompt(4);
        p.cache_until = 35;
        p.cache_ttl = Duration::from_secs(300);
        p
    };
    let usage = |e: GenerateEvent| match e {
        GenerateEvent::Finished { usage, .. } => usage,
        other => panic!("{other:?}"),
    };
    let first = usage(drain(handle.enqueue(with_point(), Admission::default()).unwrap()).1);
    assert_eq!(
        (first.cached_input_tokens, first.cache_write_input_tokens),
        (0, 32),
        "whole blocks up to the point are written"
    );
    let second = usage(drain(handle.enqueue(with_point(), Admission::default()).unwrap()).1);
    assert_eq!(second.cache_write_input_tokens, 0);
    assert_eq!(
        second.cached_input_tokens as usize,
        39 / BLOCK_TOKENS * BLOCK_TOKENS
    );
    let plain = usage(drain(handle.enqueue(request(4), Admission::default()).unwrap()).1);
    assert_eq!(plain.cache_write_input_tokens, 0);
}

#[test]
fn cached_prefixes_give_memory_back_before_anyone_is_preempted() {
    // 2 KiB: 128 tokens at 16 bytes each. Fill the cache, then ask for all of it.
    let (handle, shared) = scheduler(2048, 2);
    drain(
        handle
            .enqueue(long_prompt(20), Admission::default())
            .unwrap(),
    );
    assert!(shared.cached_bytes.load(Ordering::Acquire) > 0);
    let mut big = request(120);
    big.prompt_tokens = vec![5; 4];
    let (text, end) = drain(handle.enqueue(big, Admission::default()).unwrap());
    assert!(matches!(end, GenerateEvent::Finished { .. }), "{end:?}");
    assert_eq!(text.len(), 120);
}

/// Requests running at the same time share the blocks of their common prefix: the one
/// admitted later finds the blocks the first has already filled, and the memory held is
/// less than two private copies.
#[test]
fn concurrent_requests_share_prefix_blocks() {
    let (handle, shared) = scheduler(1 << 20, 2);
    let rx1 = handle
        .enqueue(long_prompt(200), Admission::default())
        .unwrap();
    // Wait until the first is decoding (its prompt blocks are registered).
    let mut rx1 = rx1;
    assert!(matches!(
        rx1.blocking_recv(),
        Some(GenerateEvent::Text { .. })
    ));
    let (second, end2) = drain(
        handle
            .enqueue(long_prompt(8), Admission::default())
            .unwrap(),
    );
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
        drain(
            handle
                .enqueue(long_prompt(60), Admission::default())
                .unwrap(),
        )
        .0
    };
    // 16 bytes a token: 2560 bytes hold 160 tokens, so two 100-token sequences collide.
    let (handle, shared) = scheduler(2560, 2);
    let a = handle
        .enqueue(long_prompt(60), Admission::default())
        .unwrap();
    let b = handle
        .enqueue(long_prompt(60), Admission::default())
        .unwrap();
    let (text_a, _) = drain(a);
    let (text_b, _) = drain(b);
    assert_eq!(text_a, unconstrained);
    assert_eq!(text_b, unconstrained);
    assert_eq!(live_bytes(&shared), 0);
}
