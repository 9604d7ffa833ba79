//! Trunk up/down shared by the nodes on one PostgreSQL: every second each
//! node publishes what its own OPTIONS keepalive found (`trunk_health`,
//! one row per trunk, address and node, valid for a few keepalive
//! intervals so a dead node's word fades) and takes the most recent
//! change of any node as the verdict for every address. A trunk one node
//! finds down is down for all; when any node finds it answering again,
//! it is up for all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::service::Service;

/// How often the verdicts are exchanged.
const SYNC: Duration = Duration::from_secs(1);

/// Run the exchange until shutdown (clustered on PostgreSQL, with at
/// least one trunk keepalive).
pub fn spawn(svc: &Arc<Service>, node: &str) {
    let longest = svc
        .config
        .trunks
        .values()
        .filter_map(|t| t.keepalive.as_deref())
        .filter_map(|k| crate::util::parse_duration(k).ok())
        .max();
    let Some(longest) = longest else { return };
    // A verdict lives three intervals (a node's probes run at that pace),
    // and never less than 5 s of exchanges.
    let ttl_ms = (longest.as_millis() as i64 * 3).max(5_000);
    let (svc, node) = (svc.clone(), node.to_string());
    tokio::spawn(async move {
        loop {
            let mine: Vec<(String, String, bool)> = svc
                .trunk_health
                .own_verdicts()
                .into_iter()
                .map(|(t, a, d)| (t, a.to_string(), d))
                .collect();
            match tokio::time::timeout(
                Duration::from_secs(3),
                svc.store.trunk_health_sync(&node, &mine, ttl_ms),
            )
            .await
            {
                Ok(Ok(all)) => {
                    let parsed: Vec<(String, SocketAddr, bool)> = all
                        .into_iter()
                        .filter_map(|(t, a, d)| Some((t, a.parse().ok()?, d)))
                        .collect();
                    svc.trunk_health.set_cluster(&parsed);
                }
                // Our own probes stand while the database is away.
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "trunk health exchange failed");
                    svc.trunk_health.set_cluster(&[]);
                }
                Err(_) => svc.trunk_health.set_cluster(&[]),
            }
            tokio::select! {
                _ = svc.shutdown.cancelled() => return,
                _ = tokio::time::sleep(SYNC) => {}
            }
        }
    });
}
