//! Finds notifications that no live task owns (their task panicked, or
//! exited on a path that did not end them) and restarts them from their
//! stored escalation state, or fails them when that keeps not working.
//! Without it such a row would stay `pending` or `running` forever, and
//! nobody would be paged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Service;
use crate::ivr::escalation::Escalation;

/// How often the store is scanned.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Restarts of one notification before it is failed instead: a task that
/// keeps dying must not leave the alert looking alive.
const MAX_RESTARTS: u32 = 3;

/// Scan until the service stops.
pub async fn run(svc: Arc<Service>, every: Duration) {
    let mut restarts: HashMap<String, u32> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = svc.shutdown.cancelled() => return,
        }
        if let Err(e) = sweep(&svc, &mut restarts).await {
            tracing::warn!(error = %e, "sweep for abandoned notifications failed");
        }
    }
}

/// One pass: every unfinished notification without a live task is
/// restarted or failed. Returns how many were found.
pub async fn sweep(
    svc: &Arc<Service>,
    restarts: &mut HashMap<String, u32>,
) -> Result<usize, crate::store::StoreError> {
    let mut found = 0;
    let rows = svc.store.unfinished().await?;
    // Forget counts of notifications that have ended.
    restarts.retain(|id, _| rows.iter().any(|r| &r.id == id));
    for row in rows {
        if svc.shutdown.is_cancelled() {
            break;
        }
        if svc.is_owned(&row.id) {
            continue;
        }
        // Read again after seeing it unowned: a task commits its final
        // state before it lets go, so a row that just ended shows it here.
        let Some(row) = svc
            .store
            .get_notification(&row.id)
            .await?
            .filter(|r| !crate::store::FINAL_STATES.contains(&r.state.as_str()))
        else {
            continue;
        };
        if svc.is_owned(&row.id) {
            continue;
        }
        found += 1;
        let n = restarts.entry(row.id.clone()).or_default();
        *n += 1;
        let plan = svc.registry.get(&row.contract);
        match plan {
            Some(plan) if *n <= MAX_RESTARTS => {
                tracing::error!(notification = %row.id, restart = *n, "no task runs this notification; restarting it");
                let resume = row
                    .escalation
                    .as_deref()
                    .and_then(|s| serde_json::from_str::<Escalation>(s).ok());
                svc.start(row, plan, resume);
            }
            Some(_) => {
                svc.fail_abandoned(
                    &row.id,
                    &format!(
                        "no task runs it, and {MAX_RESTARTS} restarts did not keep one running"
                    ),
                )
                .await;
            }
            None => {
                svc.fail_abandoned(
                    &row.id,
                    "no task runs it, and its contract no longer exists",
                )
                .await;
            }
        }
    }
    Ok(found)
}
