//! Where a call keeps its contract's PIN lockout: the database in the
//! service (so it holds across calls, notifications and restarts), memory
//! for a one-off `callout escalate`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::ivr::pin::{FailureResult, PinLock};
use crate::store::{PinFailure, Store, StoreError};

/// A boxed future for the trait's async methods.
pub type PinFut<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The contract-wide PIN state a call reads and updates.
pub trait PinStore: Send + Sync {
    fn state<'a>(&'a self, contract: &'a str) -> PinFut<'a, PinLock>;
    fn failed<'a>(
        &'a self,
        f: PinFailure<'a>,
        max_attempts: u32,
        lockout: Duration,
    ) -> PinFut<'a, (PinLock, FailureResult)>;
    fn accepted<'a>(&'a self, contract: &'a str, now_ms: i64) -> PinFut<'a, ()>;
}

/// How long a call waits on the database for its PIN state. The call is
/// live: past this it goes on as if the store had failed (PIN actions
/// stay locked for this call, fail closed) rather than leave the callee
/// in silence while a database is down.
const CALL_WAIT: Duration = Duration::from_secs(1);

async fn bounded<T>(
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_WAIT, f)
        .await
        .unwrap_or(Err(StoreError::Timeout(what)))
}

impl PinStore for Store {
    fn state<'a>(&'a self, contract: &'a str) -> PinFut<'a, PinLock> {
        Box::pin(bounded("PIN lock", self.pin_lock(contract)))
    }

    fn failed<'a>(
        &'a self,
        f: PinFailure<'a>,
        max_attempts: u32,
        lockout: Duration,
    ) -> PinFut<'a, (PinLock, FailureResult)> {
        Box::pin(async move {
            bounded(
                "PIN failure",
                self.record_pin_failure(&f, max_attempts, lockout),
            )
            .await
        })
    }

    fn accepted<'a>(&'a self, contract: &'a str, now_ms: i64) -> PinFut<'a, ()> {
        Box::pin(bounded(
            "PIN success",
            self.record_pin_success(contract, now_ms),
        ))
    }
}

/// For runs without a database: the lock lasts as long as the process.
#[derive(Debug, Default)]
pub struct MemoryPins(Mutex<HashMap<String, PinLock>>);

impl MemoryPins {
    fn with<R>(&self, contract: &str, f: impl FnOnce(&mut PinLock) -> R) -> R {
        // A poisoned lock only means a holder panicked; the map is intact.
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(m.entry(contract.to_string()).or_default())
    }
}

impl PinStore for MemoryPins {
    fn state<'a>(&'a self, contract: &'a str) -> PinFut<'a, PinLock> {
        let l = self.with(contract, |l| *l);
        Box::pin(async move { Ok(l) })
    }

    fn failed<'a>(
        &'a self,
        f: PinFailure<'a>,
        max_attempts: u32,
        lockout: Duration,
    ) -> PinFut<'a, (PinLock, FailureResult)> {
        let r = self.with(f.contract, |l| {
            let r = l.record_failure(f.at_ms, max_attempts, lockout);
            (*l, r)
        });
        Box::pin(async move { Ok(r) })
    }

    fn accepted<'a>(&'a self, contract: &'a str, now_ms: i64) -> PinFut<'a, ()> {
        self.with(contract, |l| l.record_success(now_ms));
        Box::pin(async move { Ok(()) })
    }
}
