//! Several `callout serve` nodes on one PostgreSQL (`[cluster]`).
//!
//! Each notification is run by the node holding its lease (`owner`,
//! `lease_until_ms` on the database's clock, `epoch` = fencing token,
//! +1 at every claim; `store/leases.rs`). The accepting node claims what
//! it accepts; [`node::run`] renews this node's leases every `heartbeat`,
//! and claims (`FOR UPDATE SKIP LOCKED`) what has no live lease: work of
//! a node that died or was cut off, resumed from its checkpoint, a call
//! that was up there recorded `interrupted`. Every write of a node for a
//! notification carries its epoch and is rejected once another node
//! claimed it (the writer counts `fencing_rejections` and the work
//! stops); before each dial the node confirms its lease on the database,
//! so a node that cannot reach it dials nothing. A node that has not
//! renewed for `lease_ttl - margin` stops its work by its own clock,
//! before the database lets another node take it. `LISTEN/NOTIFY` only
//! wakes nodes early (a graceful shutdown hands its leases back at once);
//! polling every `poll` is what guarantees takeover.
//!
//! SQLite is single-node: without `[cluster] node_id`, or on SQLite,
//! nothing here runs and the service resumes everything at start.

pub mod lease;
pub mod node;
pub mod role;

use std::time::Duration;

use serde::Deserialize;

pub use node::Node;

/// `[cluster]` in `callout.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name, unique among the nodes on the database; leases
    /// are held under it. Without it the node runs alone.
    pub node_id: Option<String>,
    /// How long a lease lasts without renewal (database clock): a dead
    /// node's work is taken over after about this long.
    #[serde(deserialize_with = "crate::config::duration")]
    pub lease_ttl: Duration,
    /// How often leases are renewed (well under `lease_ttl`).
    #[serde(deserialize_with = "crate::config::duration")]
    pub heartbeat: Duration,
    /// How often expired leases are looked for (besides `NOTIFY`).
    #[serde(deserialize_with = "crate::config::duration")]
    pub poll: Duration,
    /// Notifications claimed per poll at most, so a dead node's work
    /// spreads over the nodes left.
    pub claim_batch: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: None,
            lease_ttl: Duration::from_secs(10),
            heartbeat: Duration::from_secs(3),
            poll: Duration::from_secs(1),
            claim_batch: 16,
        }
    }
}

impl ClusterConfig {
    /// Why this setting cannot work, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if let Some(id) = &self.node_id {
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "[cluster] node_id {id:?}: 1-64 characters of A-Z a-z 0-9 - _ ."
                ));
            }
        }
        if self.heartbeat * 2 > self.lease_ttl {
            return Err(format!(
                "[cluster] heartbeat ({:?}) must be at most half of lease_ttl ({:?})",
                self.heartbeat, self.lease_ttl
            ));
        }
        Ok(())
    }
}
