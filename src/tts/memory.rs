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
//! first. The disk cache stays the durable one; its LRU is refreshed by
//! the caller on a memory hit at most once per [`DISK_TOUCH_EVERY`] per
//! phrase, and its eviction takes every phrase hit since its last touch
//! as the newest ([`MemoryCache::untouched_hits`]): touching the
//! file's time on every hit was an inode write per phrase per
//! notification (about 1,500 a second at 100 notifications/s).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::media::audio::Prompt;

/// Bytes held by default: 32 MiB is about 17 minutes of audio at
/// 4 bytes per sample (PCM, µ-law, A-law) and 8,000 samples/s.
pub const DEFAULT_MAX_BYTES: usize = 32 << 20;

/// How often a phrase's disk-cache file has its time refreshed while it
/// is served from memory.
pub const DISK_TOUCH_EVERY: Duration = Duration::from_secs(600);

/// A phrase found in memory.
pub struct Hit {
    pub prompt: Arc<Prompt>,
    /// Refresh the disk-cache file's place in its LRU now.
    pub touch_disk: bool,
}

struct Entry {
    prompt: Arc<Prompt>,
    bytes: usize,
    used: u64,
    /// When its disk file's time was last refreshed (or it was inserted:
    /// the caller has just read or written the file).
    disk_touched: Instant,
    /// When it was last served.
    last_hit: Instant,
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

    pub fn get(&self, key: &str, now: Instant) -> Option<Hit> {
        let mut g = self.lock();
        g.clock += 1;
        let clock = g.clock;
        let e = g.map.get_mut(key)?;
        e.used = clock;
        e.last_hit = now;
        let touch_disk = now.saturating_duration_since(e.disk_touched) >= DISK_TOUCH_EVERY;
        if touch_disk {
            e.disk_touched = now;
        }
        Some(Hit {
            prompt: e.prompt.clone(),
            touch_disk,
        })
    }

    /// Keep `prompt` under `key`, evicting the least recently used
    /// entries beyond the bound. A prompt larger than the whole bound is
    /// not kept.
    pub fn insert(&self, key: &str, prompt: Arc<Prompt>) {
        let bytes = size_of(&prompt);
        if bytes > self.max_bytes {
            return;
        }
        let inserted = Instant::now();
        let mut g = self.lock();
        g.clock += 1;
        let used = g.clock;
        if let Some(old) = g.map.insert(
            key.to_string(),
            Entry {
                prompt,
                bytes,
                used,
                disk_touched: inserted,
                last_hit: inserted,
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

    /// The keys served since their disk file was last touched: the disk
    /// cache's eviction takes them as the most recently used
    /// ([`super::cache::Cache::evict_keeping`]), so its order is the true
    /// order of use without writing their files' times.
    pub fn untouched_hits(&self) -> Vec<String> {
        self.lock()
            .map
            .iter()
            .filter(|(_, e)| e.last_hit > e.disk_touched)
            .map(|(k, _)| k.clone())
            .collect()
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
        assert!(c.get("a", Instant::now()).is_none());
        let p = prompt(800);
        c.insert("a", p.clone());
        let hit = c.get("a", Instant::now()).unwrap();
        assert!(Arc::ptr_eq(&p, &hit.prompt));
        assert_eq!(c.bytes(), 800 * 4 + 1);
    }

    #[test]
    fn the_least_recently_used_goes_first_and_the_bound_holds() {
        // Room for two prompts of 1,000 samples (4,001 bytes each).
        let c = MemoryCache::new(9_000);
        c.insert("a", prompt(1000));
        c.insert("b", prompt(1000));
        assert!(c.get("a", Instant::now()).is_some()); // "b" is now the oldest
        c.insert("c", prompt(1000));
        assert!(c.get("b", Instant::now()).is_none(), "evicted");
        assert!(c.get("a", Instant::now()).is_some() && c.get("c", Instant::now()).is_some());
        assert!(c.bytes() <= 9_000);
        // Replacing a key does not count it twice.
        c.insert("a", prompt(1000));
        assert_eq!(c.len(), 2);
        assert_eq!(c.bytes(), 2 * 4001);
        // Larger than the whole bound: not kept, nothing evicted for it.
        c.insert("huge", prompt(10_000));
        assert!(c.get("huge", Instant::now()).is_none());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn the_disk_file_is_touched_once_per_interval_not_per_hit() {
        let c = MemoryCache::new(1 << 20);
        c.insert("a", prompt(800));
        let t0 = Instant::now();
        // Just written or read from disk: no touch for the next hits.
        assert!(!c.get("a", t0).unwrap().touch_disk);
        assert!(
            !c.get("a", t0 + Duration::from_secs(599))
                .unwrap()
                .touch_disk
        );
        let later = t0 + DISK_TOUCH_EVERY + Duration::from_secs(1);
        assert!(c.get("a", later).unwrap().touch_disk, "due");
        assert!(!c.get("a", later).unwrap().touch_disk, "once");
        assert!(c.get("a", later + DISK_TOUCH_EVERY).unwrap().touch_disk);
        // For an eviction: what was served since its last touch.
        c.insert("b", prompt(800));
        let t1 = later + DISK_TOUCH_EVERY + Duration::from_secs(5);
        assert!(c.untouched_hits().is_empty(), "no hits since the touches");
        c.get("a", t1);
        assert_eq!(c.untouched_hits(), ["a"]);
        assert!(c.get("a", t1 + DISK_TOUCH_EVERY).unwrap().touch_disk);
        assert!(c.untouched_hits().is_empty(), "touched");
    }
}
