//! Blocking work off the async runtime: the platform database, the tokenizer. Every store
//! call the server makes goes through [`off_runtime`], which debug builds check
//! (`basalt_store::store_work`).

use basalt_types::BasaltError;

/// Runs `f`, which blocks (the platform database, the tokenizer), on tokio's blocking pool
/// as store work ([`basalt_store::store_work`]), never on a runtime worker.
pub(crate) async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BasaltError> {
    tokio::task::spawn_blocking(move || basalt_store::store_work(f))
        .await
        .map_err(|e| BasaltError::internal(format!("a blocking task failed: {e}")))
}
