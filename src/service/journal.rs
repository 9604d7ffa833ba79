//! The store writer's journal: an append-only file of JSON lines, one
//! store write each, made durable (fsync) before an append returns. It
//! holds the writes the store could not take yet, so they survive a
//! crash; the writer empties it once they are in the store.
//!
//! One process uses a journal at a time (an exclusive `flock`, released
//! by the kernel if the process dies). A torn last line (a crash during an
//! append) is dropped: its append never returned, so nobody relied on it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {0} is in use by another callout process")]
    Locked(PathBuf),
}

/// The journal file, with a read position at the oldest unapplied line.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Where the oldest unapplied line starts.
    read_pos: u64,
    len: u64,
}

impl Journal {
    /// Open (or create) `dir/serve.jsonl`, lock it, and return it with
    /// the entries a previous run left.
    pub fn open<T: DeserializeOwned>(dir: &Path) -> Result<(Journal, Vec<T>), JournalError> {
        let path = dir.join("serve.jsonl");
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(JournalError::Locked(path));
        }
        let len = file.metadata().map_err(io)?.len();
        let mut j = Journal {
            file,
            path: path.clone(),
            read_pos: 0,
            len,
        };
        let mut entries = Vec::new();
        let mut complete = 0;
        while let Some((item, next)) = j.read_line_at::<T>(complete)? {
            if let Some(item) = item {
                entries.push(item);
            }
            complete = next;
        }
        if complete < j.len {
            tracing::warn!(journal = %j.path.display(), bytes = j.len - complete, "dropping a torn last journal line");
            j.file.set_len(complete).map_err(io)?;
            j.len = complete;
        }
        Ok((j, entries))
    }

    /// Append these entries and fsync. On failure the file is cut back to
    /// where it was, so a partly written batch does not stay behind.
    pub fn append<T: Serialize>(&mut self, items: &[T]) -> Result<(), JournalError> {
        let mut buf = Vec::new();
        for item in items {
            // Serialising our own plain data cannot fail; if it ever did,
            // an empty object line is skipped at read time.
            serde_json::to_writer(&mut buf, item).unwrap_or_default();
            buf.push(b'\n');
        }
        let r = self
            .file
            .write_all_at(&buf, self.len)
            .and_then(|()| self.file.sync_data());
        match r {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(source) => {
                let _ = self.file.set_len(self.len);
                Err(JournalError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// The oldest unapplied entry and where the next one starts. A line
    /// that does not parse is skipped (logged).
    pub fn peek<T: DeserializeOwned>(&self) -> Result<Option<(T, u64)>, JournalError> {
        let mut at = self.read_pos;
        loop {
            match self.read_line_at::<T>(at)? {
                None => return Ok(None),
                Some((Some(item), next)) => return Ok(Some((item, next))),
                Some((None, next)) => at = next,
            }
        }
    }

    /// The entry read by [`Journal::peek`] is in the store.
    pub fn consumed(&mut self, next: u64) {
        self.read_pos = next;
    }

    /// Everything is applied: empty the file.
    pub fn reset(&mut self) -> Result<(), JournalError> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.len = 0;
        self.read_pos = 0;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The line starting at `at`: `None` at the end or at a torn line;
    /// `Some((None, next))` for a line that does not parse.
    #[allow(clippy::type_complexity)]
    fn read_line_at<T: DeserializeOwned>(
        &self,
        at: u64,
    ) -> Result<Option<(Option<T>, u64)>, JournalError> {
        let mut line = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut pos = at;
        while pos < self.len {
            let n = self
                .file
                .read_at(&mut chunk, pos)
                .map_err(|source| JournalError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            let got = &chunk[..n.min((self.len - pos) as usize)];
            if let Some(i) = got.iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&got[..i]);
                let next = pos + i as u64 + 1;
                return Ok(Some((
                    match serde_json::from_slice(&line) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            tracing::error!(journal = %self.path.display(), offset = at, error = %e, "skipping an unreadable journal line");
                            None
                        }
                    },
                    next,
                )));
            }
            line.extend_from_slice(got);
            pos += got.len() as u64;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn appends_survive_reopen_and_a_torn_line_is_dropped() {
        let dir = std::env::temp_dir().join(format!("callout-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (mut j, old) = Journal::open::<u64>(&dir).unwrap();
            assert!(old.is_empty());
            j.append(&[1u64, 2]).unwrap();
            j.append(&[3u64]).unwrap();
            let (v, next) = j.peek::<u64>().unwrap().unwrap();
            assert_eq!(v, 1);
            j.consumed(next);
            assert_eq!(j.peek::<u64>().unwrap().unwrap().0, 2);
            assert!(matches!(
                Journal::open::<u64>(&dir),
                Err(JournalError::Locked(_))
            ));
        }
        // A crash mid-append leaves half a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("serve.jsonl"))
            .unwrap();
        f.write_all(b"4").unwrap();
        drop(f);
        let (mut j, old) = Journal::open::<u64>(&dir).unwrap();
        assert_eq!(old, vec![1, 2, 3]);
        j.reset().unwrap();
        j.append(&[5u64]).unwrap();
        drop(j);
        let (_, old) = Journal::open::<u64>(&dir).unwrap();
        assert_eq!(old, vec![5]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
