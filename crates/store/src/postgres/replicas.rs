//! What replicas sharing one database know of each other: the registry of live replicas
//! (each heartbeat an upsert, timed by the database's clock so replicas' clocks need not
//! agree), the sweep that marks a dead replica's unfinished requests interrupted, and the
//! watch that hears every change the triggers announce.

use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_postgres::{AsyncMessage, NoTls};

use super::migrations::CHANGES_CHANNEL;
use super::{backend, PostgresStore};
use crate::{
    ChangeListener, ReplicaStatus, StoreError, INTERRUPTED, IN_PROGRESS, REPLICA_TIMEOUT_MS,
};

/// The database's clock, in milliseconds since the epoch.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// A replica gone this long is dropped from the registry.
const FORGET_AFTER_MS: i64 = 3_600_000;

impl PostgresStore {
    /// Announces this replica, and marks interrupted the unfinished requests of replicas
    /// whose heartbeat stopped: a survivor's heartbeat is what meters a dead one's streams.
    pub(super) async fn heartbeat_row(&self, s: &ReplicaStatus) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO replicas (id, address, models, catalog, queued, running,
                        kv_bytes, heartbeat_at_ms)
                     VALUES ($1, $2, $3, $6, $4, $5, $7, {NOW_MS})
                     ON CONFLICT (id) DO UPDATE SET address = excluded.address,
                        models = excluded.models, catalog = excluded.catalog,
                        queued = excluded.queued, kv_bytes = excluded.kv_bytes,
                        running = excluded.running, heartbeat_at_ms = excluded.heartbeat_at_ms"
                ),
                &[
                    &self.replica_id,
                    &s.address,
                    &s.models,
                    &(s.queued.min(i64::MAX as u64) as i64),
                    &(s.running.min(i64::MAX as u64) as i64),
                    &s.catalog,
                    &(s.kv_bytes.min(i64::MAX as u64) as i64),
                ],
            )
            .await
            .map_err(backend)?;
        interrupt(&client, &self.replica_id, Whose::DeadReplicas).await?;
        client
            .execute(
                &format!("DELETE FROM replicas WHERE heartbeat_at_ms < {NOW_MS} - $1"),
                &[&FORGET_AFTER_MS],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub(super) async fn live_replicas(&self) -> Result<Vec<ReplicaStatus>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT id, address, models, queued, running, heartbeat_at_ms, catalog,
                        kv_bytes
                     FROM replicas
                     WHERE heartbeat_at_ms > {NOW_MS} - $1 ORDER BY id"
                ),
                &[&REPLICA_TIMEOUT_MS],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| ReplicaStatus {
                id: r.get(0),
                address: r.get(1),
                models: r.get(2),
                queued: r.get::<_, i64>(3).max(0) as u64,
                running: r.get::<_, i64>(4).max(0) as u64,
                heartbeat_at_ms: r.get(5),
                catalog: r.get(6),
                kv_bytes: r.get::<_, i64>(7).max(0) as u64,
            })
            .collect())
    }

    /// At start: this replica's own unfinished requests (from its previous life) and those
    /// of replicas that stopped heartbeating are interrupted; live replicas' are theirs.
    pub(super) async fn interrupt_orphaned_usage(&self) -> Result<usize, StoreError> {
        let client = self.client().await?;
        interrupt(&client, &self.replica_id, Whose::OwnAndDeadReplicas).await
    }
}

/// Whose unfinished usage records to mark interrupted.
enum Whose {
    /// Those of replicas whose heartbeat stopped (a survivor's heartbeat).
    DeadReplicas,
    /// This replica's own too (at its start, from its previous life).
    OwnAndDeadReplicas,
}

async fn interrupt(
    client: &deadpool_postgres::Client,
    replica_id: &str,
    whose: Whose,
) -> Result<usize, StoreError> {
    let own = match whose {
        Whose::DeadReplicas => "FALSE",
        Whose::OwnAndDeadReplicas => "replica_id = $3",
    };
    let n = client
        .execute(
            &format!(
                "UPDATE usage SET status = $1 WHERE status = $2 AND ({own} OR (replica_id <> $3
                   AND replica_id NOT IN
                     (SELECT id FROM replicas WHERE heartbeat_at_ms > {NOW_MS} - $4)))"
            ),
            &[&INTERRUPTED, &IN_PROGRESS, &replica_id, &REPLICA_TIMEOUT_MS],
        )
        .await
        .map_err(backend)?;
    Ok(n as usize)
}

/// Listens on the changes channel on a connection of its own, calling `on_change` for each
/// notification, and once after every (re)connection for what was missed while none was
/// listening. Runs until the runtime stops.
pub(super) fn watch_changes(
    config: tokio_postgres::Config,
    on_change: ChangeListener,
) -> Result<(), StoreError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        StoreError::Backend("watching the database for changes needs a tokio runtime".into())
    })?;
    runtime.spawn(async move {
        loop {
            if let Ok((client, mut connection)) = config.connect(NoTls).await {
                let (heard, mut notifications) = tokio::sync::mpsc::unbounded_channel();
                // The connection delivers notifications only while it is polled.
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if matches!(message, AsyncMessage::Notification(_))
                            && heard.send(()).is_err()
                        {
                            break;
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
                    .await
                    .is_ok()
                {
                    on_change();
                    while notifications.recv().await.is_some() {
                        on_change();
                    }
                }
                driver.abort();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(())
}
