//! Group commit for the intake: the alerts of requests that arrive while
//! a commit is under way are written together in the next transaction
//! (one fsync for all of them), and each request hears back only once the
//! commit holding its alerts returned. Durable before the answer, as
//! before; under load the fsyncs are shared instead of queued one by one
//! behind the single SQLite connection.
//!
//! No timer: a group is whatever queued during the previous commit, so a
//! lone request is written at once. If a group's transaction fails, each
//! request of it is written on its own and gets its own result, so one
//! request cannot fail another.
//!
//! SQLite only: PostgreSQL's pool has several connections and the server
//! groups concurrent commits itself, so one writer there would only
//! serialise them; its requests write directly.

use tokio::sync::{mpsc, oneshot};

use super::alert::Alert;
use crate::store::{Store, StoreError};

/// Most alerts put in one transaction.
const MAX_GROUP: usize = 5_000;

struct Job {
    alerts: Vec<Alert>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The handle requests write through; the writer task ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    /// `None`: not SQLite, each request commits on its own connection.
    jobs: Option<mpsc::UnboundedSender<Job>>,
    store: Store,
}

impl GroupCommit {
    /// Must be called inside a tokio runtime (spawns the writer task).
    pub fn start(store: Store) -> GroupCommit {
        if !store.is_sqlite() {
            return GroupCommit { jobs: None, store };
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store.clone(), rx));
        GroupCommit {
            jobs: Some(tx),
            store,
        }
    }

    /// Returns once `alerts` are committed (or why they are not).
    pub async fn insert_alerts(&self, alerts: Vec<Alert>) -> Result<(), StoreError> {
        let Some(jobs) = &self.jobs else {
            return self.store.insert_alerts(&alerts).await;
        };
        let (done, rx) = oneshot::channel();
        if jobs.send(Job { alerts, done }).is_err() {
            return Err(closed());
        }
        rx.await.unwrap_or(Err(closed()))
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut n = first.alerts.len();
        let mut group = vec![first];
        while n < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.alerts.len();
                    group.push(j);
                }
                Err(_) => break,
            }
        }
        if group.len() == 1 {
            let j = group.remove(0);
            let r = store.insert_alerts(&j.alerts).await;
            let _ = j.done.send(r);
            continue;
        }
        let all: Vec<Alert> = group
            .iter()
            .flat_map(|j| j.alerts.iter().cloned())
            .collect();
        match store.insert_alerts(&all).await {
            Ok(()) => {
                for j in group {
                    let _ = j.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, requests = group.len(), "intake group commit failed; writing its requests one by one");
                for j in group {
                    let r = store.insert_alerts(&j.alerts).await;
                    let _ = j.done.send(r);
                }
            }
        }
    }
}

/// The writer task is gone (the pipeline is shutting down).
fn closed() -> StoreError {
    StoreError::Io(std::io::Error::other("the intake writer stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(i: usize) -> Alert {
        let body = format!(
            r#"{{"routing_key":"acme","dedup_key":"h{i}/x","event_action":"trigger","payload":{{"summary":"s","source":"h{i}","severity":"critical"}}}}"#
        );
        let mut b = crate::pipeline::sources::events(body.as_bytes(), 1_000, None).unwrap();
        b.items.remove(0).unwrap()
    }

    /// Many requests at once: every one answered Ok, every alert stored
    /// once, and fewer transactions than requests is the point (not
    /// observable here; the bench shows it).
    #[tokio::test]
    async fn concurrent_requests_are_all_committed() {
        let dir = std::env::temp_dir().join(format!("callout-group-commit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::connect(&format!("sqlite://{}/db", dir.display()))
            .await
            .unwrap();
        let g = GroupCommit::start(store.clone());
        let mut tasks = Vec::new();
        for r in 0..50 {
            let g = g.clone();
            let alerts: Vec<Alert> = (0..3).map(|k| alert(r * 3 + k)).collect();
            tasks.push(tokio::spawn(async move { g.insert_alerts(alerts).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(store.alert_counts("acme").await.unwrap().0, 150);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
