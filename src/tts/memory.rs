//! Rendered phrases kept in memory, shared by every call that says them.
//!
//! Every notification asks for its whole script (about twenty phrases,
//! most of them the contract's fixed ones), once to measure it at the API
//! and once to prepare its calls. From the disk cache alone each ask
//! re-read and re-encoded the WAV file (G.711 twice): at 100
//! notifications/s that was most of the process's CPU (`perf`, see
//! docs/benchmarks.md). Here a hit is one `Arc` clone, and calls of the
//! same phrase share one copy of its pre-encoded frames.
//!
//! Bounded by bytes of audio held; the least recently used entry goes
//! first. The disk cache stays the durable one (and its LRU keeps being
//! refreshed by the caller on a memory hit).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::media::audio::Prompt;

/// Bytes held by default: 32 MiB is about 17 minutes of audio at
/// 4 bytes per sample (PCM, µ-law, A-law) and 8,000 samples/s.
pub const DEFAULT_MAX_BYTES: usize = 32 << 20;

struct Entry {
    prompt: Arc<Prompt>,
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

/// The in-memory phrase cache (see the module docs).
pub struct MemoryCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

fn size_of(p: &Prompt) -> usize {
    p.pcm.len() * 2 + p.ulaw.len() + p.alaw.len() + p.name.len()
}

impl MemoryCache {
    pub fn new(max_bytes: usize) -> MemoryCache {
        MemoryCache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a holder panicked between two
        // consistent states of the map.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Arc<Prompt>> {
        let mut g = self.lock();
        g.clock += 1;
        let now = g.clock;
        let e = g.map.get_mut(key)?;
        e.used = now;
        Some(e.prompt.clone())
    }

    /// Keep `prompt` under `key`, evicting the least recently used
    /// entries beyond the bound. A prompt larger than the whole bound is
    /// not kept.
    pub fn insert(&self, key: &str, prompt: Arc<Prompt>) {
        let bytes = size_of(&prompt);
        if bytes > self.max_bytes {
            return;
        }
        let mut g = self.lock();
        g.clock += 1;
        let used = g.clock;
        if let Some(old) = g.map.insert(
            key.to_string(),
            Entry {
                prompt,
                bytes,
                used,
            },
        ) {
            g.bytes -= old.bytes;
        }
        g.bytes += bytes;
        while g.bytes > self.max_bytes {
            // A linear scan: the map holds a few hundred phrases, and this
            // runs only when a new phrase does not fit.
            let Some(oldest) = g
                .map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = g.map.remove(&oldest) {
                g.bytes -= e.bytes;
            }
        }
    }

    /// Bytes of audio held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(samples: usize) -> Arc<Prompt> {
        Prompt::from_pcm("p", vec![0; samples])
    }

    #[test]
    fn hits_share_one_copy() {
        let c = MemoryCache::new(1 << 20);
        assert!(c.get("a").is_none());
        let p = prompt(800);
        c.insert("a", p.clone());
        let hit = c.get("a").unwrap();
        assert!(Arc::ptr_eq(&p, &hit));
        assert_eq!(c.bytes(), 800 * 4 + 1);
    }

    #[test]
    fn the_least_recently_used_goes_first_and_the_bound_holds() {
        // Room for two prompts of 1,000 samples (4,001 bytes each).
        let c = MemoryCache::new(9_000);
        c.insert("a", prompt(1000));
        c.insert("b", prompt(1000));
        assert!(c.get("a").is_some()); // "b" is now the oldest
        c.insert("c", prompt(1000));
        assert!(c.get("b").is_none(), "evicted");
        assert!(c.get("a").is_some() && c.get("c").is_some());
        assert!(c.bytes() <= 9_000);
        // Replacing a key does not count it twice.
        c.insert("a", prompt(1000));
        assert_eq!(c.len(), 2);
        assert_eq!(c.bytes(), 2 * 4001);
        // Larger than the whole bound: not kept, nothing evicted for it.
        c.insert("huge", prompt(10_000));
        assert!(c.get("huge").is_none());
        assert_eq!(c.len(), 2);
    }
}
