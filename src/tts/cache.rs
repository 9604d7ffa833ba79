//! Rendered phrases on disk, keyed by a hash of everything that shapes the
//! audio, bounded in size with least-recently-used eviction (a hit
//! refreshes the file's modification time).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// The cache folder and its size bound.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
}

impl Cache {
    pub fn new(dir: &Path, max_bytes: u64) -> std::io::Result<Cache> {
        std::fs::create_dir_all(dir)?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    /// The key: engine id (backend, voice, version), the exact text after
    /// readers, and the output format.
    pub fn key(engine_id: &str, text: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"callout-tts-v1\0");
        h.update(engine_id.as_bytes());
        h.update(b"\0");
        h.update(text.as_bytes());
        h.update(b"\0pcm-s16-8000-mono");
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.wav"))
    }

    /// The cached file for `key`, marked as just used.
    pub fn get(&self, key: &str) -> Option<PathBuf> {
        let p = self.path(key);
        let f = std::fs::File::options().write(true).open(&p).ok()?;
        let _ = f.set_modified(SystemTime::now());
        Some(p)
    }

    /// Evict least recently used files until the folder fits the bound.
    pub fn evict(&self) -> std::io::Result<usize> {
        self.evict_keeping(&[])
    }

    /// As [`Cache::evict`], taking the files of `recent` keys as the most
    /// recently used whatever their time says (phrases served from memory
    /// since their file was last touched): nothing is written to find the
    /// true order.
    pub fn evict_keeping(&self, recent: &[String]) -> std::io::Result<usize> {
        let mut files: Vec<(SystemTime, u64, PathBuf)> = std::fs::read_dir(&self.dir)?
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                let is_wav = e.path().extension().is_some_and(|x| x == "wav");
                (m.is_file() && is_wav).then(|| {
                    (
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        m.len(),
                        e.path(),
                    )
                })
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        if total <= self.max_bytes {
            return Ok(0);
        }
        let recent: std::collections::HashSet<PathBuf> =
            recent.iter().map(|k| self.path(k)).collect();
        let newest = SystemTime::now();
        for f in files.iter_mut() {
            if recent.contains(&f.2) {
                f.0 = newest;
            }
        }
        files.sort();
        let mut removed = 0;
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn size(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}
