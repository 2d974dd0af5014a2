//! Blocking work off the async runtime: the tokenizer, and anything else that holds a
//! thread for more than a moment. (The platform store keeps its own blocking calls off the
//! runtime: its futures can be awaited anywhere.)

use basalt_types::BasaltError;

/// Runs `f`, which blocks, on tokio's blocking pool, never on a runtime worker.
pub(crate) async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BasaltError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BasaltError::internal(format!("a blocking task failed: {e}")))
}
