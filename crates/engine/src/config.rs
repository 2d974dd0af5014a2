//! Engine settings for one model: KV memory, concurrency, batching, prefix caching, and how
//! weights are held.

/// Engine settings for one model.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// KV cache memory for all of this model's sequences together.
    pub kv_budget_bytes: usize,
    /// Sequences decoded concurrently; more wait in the queue.
    pub max_running: usize,
    /// Requests allowed to wait; beyond this `submit` answers "overloaded".
    pub max_waiting: usize,
    /// Prompt tokens processed per sequence per scheduler step, so a long prompt cannot
    /// stall the streams already running.
    pub prefill_chunk: usize,
    /// Tokens (prompt chunks plus decoding sequences) in one batched forward pass.
    pub max_batch_tokens: usize,
    /// Keep full KV blocks indexed by the tokens before them, so prompts with the same
    /// beginning share them (prefix caching). Blocks no sequence holds are given back on
    /// demand.
    pub prefix_caching: bool,
    /// After idling, how long the scheduler waits for another request before its first
    /// step (again after each arrival): requests sent together start together. Zero
    /// starts at once.
    pub admission_window: std::time::Duration,
    /// Serve weights from the file's page-cache mapping rather than a private copy in huge
    /// pages (see [`open_weights`]): quicker to start and shared between processes, but
    /// slower per token.
    pub map_weights: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            kv_budget_bytes: 512 << 20,
            max_running: 16,
            max_waiting: 256,
            prefill_chunk: 256,
            max_batch_tokens: 1024,
            prefix_caching: true,
            admission_window: std::time::Duration::from_millis(2),
            map_weights: false,
        }
    }
}
