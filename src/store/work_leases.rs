//! Named leases for work one node at a time carries out for the whole
//! database (`crate::cluster::role`): the pipeline engine, the mail
//! outbox, the ticket sync. PostgreSQL only, on its clock, like the
//! notification leases in `leases.rs`; a [`Fence`] is checked inside the
//! transaction of every write that work makes.

use sqlx::Row;

use super::{Store, StoreError};

/// The database's wall clock in epoch ms.
macro_rules! db_now {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}

/// Proof of holding lease `name` at `epoch`, checked by a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub owner: String,
    pub epoch: i64,
    pub ttl_ms: i64,
}

/// The row of a fenced check: renews the lease while checking it, and the
/// row lock it takes lasts until the caller's commit, so no claim can
/// come between the check and the write.
const FENCE_SQL: &str = concat!(
    "UPDATE work_leases SET lease_until_ms = ",
    db_now!(),
    " + $4 WHERE name = $1 AND owner = $2 AND epoch = $3"
);

/// Check `fence` inside `tx` (nothing without one): `Fenced` when another
/// node claimed the work since.
pub(super) async fn check(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let Some(f) = fence else {
        return Ok(());
    };
    let n = sqlx::query(FENCE_SQL)
        .bind(&f.name)
        .bind(&f.owner)
        .bind(f.epoch)
        .bind(f.ttl_ms)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::Fenced(f.name.clone()))
    }
}

impl Store {
    /// Claim lease `name` for `node` when it has run out, was handed back,
    /// or names `node` (left by this node id before a restart, or given
    /// up by its own clock). Returns the new epoch and the previous owner.
    pub async fn claim_work_lease(
        &self,
        name: &str,
        node: &str,
        ttl_ms: i64,
    ) -> Result<Option<(i64, Option<String>)>, StoreError> {
        let row = sqlx::query(concat!(
            "WITH prev AS (SELECT owner FROM work_leases WHERE name = $1) \
             INSERT INTO work_leases (name, owner, epoch, lease_until_ms) VALUES ($1, $2, 1, ",
            db_now!(),
            " + $3) ON CONFLICT (name) DO UPDATE SET owner = $2, epoch = work_leases.epoch + 1, \
             lease_until_ms = ",
            db_now!(),
            " + $3 WHERE work_leases.lease_until_ms < ",
            db_now!(),
            " OR work_leases.owner IS NULL OR work_leases.owner = $2 \
             RETURNING epoch, (SELECT owner FROM prev) AS prev_owner"
        ))
        .bind(name)
        .bind(node)
        .bind(ttl_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("epoch")?, r.try_get("prev_owner")?)),
            None => None,
        })
    }

    /// Renew a held lease; `false` when another node claimed it.
    pub async fn renew_work_lease(&self, f: &Fence) -> Result<bool, StoreError> {
        let n = sqlx::query(FENCE_SQL)
            .bind(&f.name)
            .bind(&f.owner)
            .bind(f.epoch)
            .bind(f.ttl_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Hand a held lease back at once and wake the other nodes.
    pub async fn release_work_lease(&self, f: &Fence) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE work_leases SET owner = NULL, lease_until_ms = 0 \
             WHERE name = $1 AND owner = $2 AND epoch = $3",
        )
        .bind(&f.name)
        .bind(&f.owner)
        .bind(f.epoch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.wake_nodes().await?;
        Ok(n == 1)
    }

    /// Hand back every named lease `node` holds (graceful shutdown, after
    /// its work stopped; a late write of that work is then refused).
    pub async fn release_work_leases_of(&self, node: &str) -> Result<u64, StoreError> {
        let n =
            sqlx::query("UPDATE work_leases SET owner = NULL, lease_until_ms = 0 WHERE owner = $1")
                .bind(node)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(n)
    }

    /// Who holds each named lease now (for `/readyz` and tests).
    pub async fn work_leases(&self) -> Result<Vec<(String, Option<String>, i64)>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT name, CASE WHEN lease_until_ms >= ",
            db_now!(),
            " THEN owner END AS owner, epoch FROM work_leases ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("owner")?, r.try_get("epoch")?)))
            .collect()
    }

    /// Leave an input for the node running the pipeline.
    pub async fn pipeline_inbox_put(
        &self,
        id: &str,
        now_ms: i64,
        body: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pipeline_inbox (id, created_ms, body) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(now_ms)
        .bind(body)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The oldest inputs left for the pipeline (deleted by the step that
    /// handles them, `PipelineWrite::inbox_done`).
    pub async fn pipeline_inbox(&self, limit: i64) -> Result<Vec<(String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT id, body FROM pipeline_inbox ORDER BY created_ms, id LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("body")?)))
            .collect()
    }
}
