//! The API's accepted notifications go to the store through here, so
//! that requests arriving together share one commit
//! ([`Store::accept_batch`]). A batch is whatever waited while the
//! previous one committed, up to [`MAX_BATCH`]: alone, a request commits
//! at once (no added wait); in a storm, batches grow with the load.
//!
//! A batch that fails as a whole is tried again one row at a time, so one
//! row the database refuses cannot fail the requests it travelled with.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::store::{AcceptRow, Store, StoreError};

/// Rows in one commit at most.
pub const MAX_BATCH: usize = 64;

/// Requests waiting for a commit, at most (then callers wait to queue).
const QUEUE: usize = 4096;

struct Job {
    row: AcceptRow,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// The batching front of [`Store::accept_batch`].
pub struct AcceptBatcher {
    store: Store,
    /// `None` outside a tokio runtime: each row is then its own commit.
    jobs: Option<mpsc::Sender<Job>>,
}

impl AcceptBatcher {
    /// Start `committers` tasks taking batches from one queue (several on
    /// PostgreSQL, whose pool commits in parallel; one on SQLite, whose
    /// single connection would only serialise them).
    pub fn new(store: Store) -> AcceptBatcher {
        // `CALLOUT_ACCEPT_BATCH=0` commits each accept on its own (to
        // compare the two in one benchmark run).
        let off = std::env::var("CALLOUT_ACCEPT_BATCH").is_ok_and(|v| v == "0");
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return AcceptBatcher { store, jobs: None };
        };
        if off {
            return AcceptBatcher { store, jobs: None };
        }
        let committers = if store.is_sqlite() { 1 } else { 4 };
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..committers {
            rt.spawn(committer(store.clone(), rx.clone()));
        }
        AcceptBatcher {
            store,
            jobs: Some(tx),
        }
    }

    /// Store one row; returns once it is committed (`true`) or refused by
    /// a conflict (`false`).
    pub async fn store(&self, row: AcceptRow) -> Result<bool, StoreError> {
        let Some(jobs) = &self.jobs else {
            return one(&self.store, row).await;
        };
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = jobs.send(Job { row, reply }).await {
            // The committers are gone (shutting down): commit it here.
            return one(&self.store, job.row).await;
        }
        match answer.await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Db(sqlx::Error::WorkerCrashed)),
        }
    }
}

async fn one(store: &Store, row: AcceptRow) -> Result<bool, StoreError> {
    store
        .accept_batch(std::slice::from_ref(&row))
        .await
        .map(|v| v.first().copied().unwrap_or(false))
}

async fn committer(store: Store, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            jobs.push(first);
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
        }
        let rows: Vec<AcceptRow> = jobs.iter().map(|j| j.row.clone()).collect();
        match store.accept_batch(&rows).await {
            Ok(stored) => {
                for (job, ok) in jobs.into_iter().zip(stored) {
                    let _ = job.reply.send(Ok(ok));
                }
            }
            Err(e) if jobs.len() == 1 => {
                if let Some(job) = jobs.pop() {
                    let _ = job.reply.send(Err(e));
                }
            }
            // The database is out of reach: every row would wait for
            // it again, one after another. All fail now, as each would.
            Err(StoreError::Db(e)) if !matches!(e, sqlx::Error::Database(_)) => {
                let text = e.to_string();
                let mut first = Some(e);
                for job in jobs {
                    let e = first
                        .take()
                        .unwrap_or_else(|| sqlx::Error::Io(std::io::Error::other(text.clone())));
                    let _ = job.reply.send(Err(StoreError::Db(e)));
                }
            }
            Err(e) => {
                tracing::warn!(rows = jobs.len(), error = %e, "a batch of accepted notifications failed; storing them one by one");
                for job in jobs {
                    let r = one(&store, job.row).await;
                    let _ = job.reply.send(r);
                }
            }
        }
    }
}
