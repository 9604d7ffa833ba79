//! One synthesis per phrase at a time. When many notifications need the
//! same phrase before it is cached (the first ones after a start, while
//! the dialplans' fixed phrases are still being prewarmed, or after a
//! reload in an alert storm), each used to run the engine itself: at 100
//! notifications a second that was a dozen engine processes per
//! notification, and the machine spent its time in them. Now the first
//! asks the engine and the others wait for its result in the cache.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex};

/// Phrases being synthesised, by cache key.
#[derive(Default)]
pub struct Flights {
    busy: Mutex<HashSet<String>>,
    done: Condvar,
}

/// The right to synthesise one phrase; released when dropped.
pub struct Turn<'a> {
    flights: &'a Flights,
    key: String,
}

impl Flights {
    /// Wait until nobody else synthesises `key`, then take the turn.
    /// Blocking: synthesis runs on blocking threads.
    pub fn enter(&self, key: &str) -> Turn<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        while busy.contains(key) {
            busy = self.done.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        busy.insert(key.to_string());
        Turn {
            flights: self,
            key: key.to_string(),
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.flights
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        self.flights.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn one_turn_per_key_at_a_time_and_other_keys_do_not_wait() {
        let f = Flights::default();
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let _t = f.enter("same");
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    inside.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");
        // Held for one key, another key is free at once.
        let _a = f.enter("a");
        let _b = f.enter("b");
        // Released: the same key can be taken again.
        drop(_a);
        let _a2 = f.enter("a");
    }
}
