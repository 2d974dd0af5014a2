//! This process as one replica among several sharing a database: it announces what it
//! serves and how loaded it is, every [`HEARTBEAT`], so the others know it is alive (and,
//! when it stops, mark its unfinished requests interrupted). With a store only this
//! process uses, the announcement costs nothing (the store keeps no registry).

use std::sync::Arc;
use std::time::Duration;

use basalt_store::ReplicaStatus;

use crate::AppState;

/// How often a replica announces itself: well inside the store's timeout, so one missed
/// beat (a slow database) does not make a live replica look dead.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// What this replica serves and its load now.
pub fn status(state: &AppState, id: &str, address: &str) -> ReplicaStatus {
    let mut manifests: Vec<&basalt_catalog::Manifest> =
        state.entries().map(|e| &e.manifest).collect();
    manifests.sort_by(|a, b| a.id.cmp(&b.id));
    let models = manifests.iter().map(|m| m.id.clone()).collect();
    let catalog = serde_json::to_string(&manifests).unwrap_or_else(|_| "[]".into());
    let (mut queued, mut running) = (0, 0);
    for m in state.models() {
        let stats = m.engine.stats();
        queued += stats.waiting as u64;
        running += stats.running as u64;
    }
    ReplicaStatus {
        id: id.to_string(),
        address: address.to_string(),
        models,
        catalog,
        queued,
        running,
        kv_bytes: state.kv_bytes_in_use() as u64,
        heartbeat_at_ms: 0,
    }
}

/// Announces this replica until the runtime stops. A failed beat is logged and retried at
/// the next: the store's timeout is several beats long.
pub async fn announce(state: Arc<AppState>, id: String, address: String) {
    let Some(platform) = state.platform.clone() else {
        return;
    };
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = platform
            .store
            .heartbeat(&status(&state, &id, &address))
            .await
        {
            tracing::warn!("replica heartbeat failed: {e}");
        }
        match platform.store.replicas().await {
            Ok(replicas) => state.peers.update(replicas),
            Err(e) => tracing::warn!("reading the replica registry failed: {e}"),
        }
    }
}
