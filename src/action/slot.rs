//! Who holds a (contract, host, flow) slot across processes: `callout
//! serve`, a second service instance on the same database, or an operator's
//! `callout action run`. The database row of a running run is the slot;
//! its owner names the process and renews a heartbeat while it runs, so a
//! slot whose process died is taken over instead of blocking the flow
//! until someone cleans up by hand.
//!
//! Clustered, a run asked for from a call also carries its notification's
//! lease epoch: the slot is taken and the run recorded only while that
//! epoch holds (`crate::store::runs`). A node that lost the lease starts
//! nothing; a run it had already started goes on to its end (a fix half
//! done is worse) and keeps beating, so the node that took over finds the
//! slot held while a step may still act on the host; at the end its record
//! is refused and the slot freed at once (`interrupted`). A node cut off
//! from the database cannot beat: its slot goes stale as any other.

/// How often a running run renews its heartbeat.
pub const HEARTBEAT_MS: i64 = 5_000;

/// A run silent for this long is taken to be dead, wherever it ran.
pub const STALE_MS: i64 = 30_000;

/// This process, as written in a run's `owner`: `host:pid`.
pub fn this_owner() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether a running run's owner is gone: its heartbeat is stale, or it ran
/// on this host in a process that no longer exists. `this` is the caller's
/// own owner string. The caller holds the slot in its own memory, so a
/// row naming this very process was left by an earlier process with the
/// same pid (pid 1 in a container restarted after a crash): gone too.
pub fn abandoned(owner: Option<&str>, heartbeat_ms: i64, now_ms: i64, this: &str) -> bool {
    if now_ms - heartbeat_ms > STALE_MS {
        return true;
    }
    let Some(owner) = owner else {
        return false;
    };
    if owner == this {
        return true;
    }
    let (Some((host, pid)), Some((this_host, _))) = (owner.rsplit_once(':'), this.rsplit_once(':'))
    else {
        return false;
    };
    host == this_host && pid.parse::<i32>().is_ok_and(|pid| pid > 0 && !alive(pid))
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_abandoned_when_silent_or_its_local_process_is_gone() {
        let me = this_owner();
        let host = me.rsplit_once(':').unwrap().0;
        let now = 1_000_000;
        // Fresh heartbeat, this very process: an earlier one with our pid.
        assert!(abandoned(Some(&me), now - 1000, now, &me));
        // Fresh heartbeat, a live process on this host (pid 1): held.
        assert!(!abandoned(Some(&format!("{host}:1")), now, now, &me));
        // Fresh heartbeat, a pid that cannot exist: gone.
        assert!(abandoned(
            Some(&format!("{host}:2147483646")),
            now,
            now,
            &me
        ));
        // Another host with a fresh heartbeat: cannot tell, so held.
        assert!(!abandoned(Some("elsewhere:2147483646"), now, now, &me));
        // Anyone silent past STALE_MS: gone, even this process.
        assert!(abandoned(Some("elsewhere:1"), now - STALE_MS - 1, now, &me));
        assert!(!abandoned(None, now - STALE_MS, now, &me));
        assert!(abandoned(None, now - STALE_MS - 1, now, &me));
        // Garbage in the column is never taken for a dead local process.
        assert!(!abandoned(Some("no-colon"), now, now, &me));
        assert!(!abandoned(Some(&format!("{host}:-1")), now, now, &me));
    }
}
