//! Fencing beyond the calls, on a real PostgreSQL (a fresh database per
//! test): the work a node does for a notification or under a named lease
//! is written only while its epoch still holds.
//!
//! - `action_slots_follow_the_notification_lease`: a run asked for from a
//!   call takes its (contract, host, flow) slot only under the
//!   notification's live lease epoch. Once another node claimed the
//!   notification, the old node starts nothing and records nothing; a run
//!   it had started goes on (a real process) and holds the slot for the
//!   new owner until it ends, then the slot is free at once, its steps
//!   kept on its own row (`interrupted`, `fenced_ms`) and nothing written
//!   on the notification, and the new owner's run is recorded under its
//!   epoch.
//! - `a_stale_ticket_sync_writes_nothing`: every ticket sync write (sync
//!   row, issue number, cursor, end, reopen, its timeline lines) made
//!   under a `ticket_sync` epoch another node has since claimed is
//!   refused and changes nothing; the holder's go through.
//!
//! Needs `CALLOUT_TEST_POSTGRES_URL`; skipped loudly without it.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use callout::action::engine::RunResult;
use callout::action::flow::Phase;
use callout::action::plan::{Op, PlannedStep, RunPlan};
use callout::action::{ActionError, Actions, Requester, RunMeta};
use callout::store::{Fence, NotificationRow, Store, StoreError, TimelineRow};
use common::scratch;
use pg::ScratchDb;

fn notification(id: &str) -> NotificationRow {
    NotificationRow {
        id: id.into(),
        contract: "ops".into(),
        ticket: "T-1".into(),
        severity: "critical".into(),
        host: "web01".into(),
        summary: "down".into(),
        variables: serde_json::json!({}),
        state: "running".into(),
        final_state: None,
        escalation: None,
        cancel_reason: None,
        created_ms: 1,
        updated_ms: 1,
    }
}

/// A one-step flow on `host`: a real process that says it started and
/// runs until the test lets it end.
fn plan(host: &str, dir: &std::path::Path) -> RunPlan {
    let script = format!(
        "touch {d}/started-{host}; while [ ! -e {d}/go ]; do sleep 0.05; done; echo restarted {host}",
        d = dir.display()
    );
    RunPlan {
        contract: "ops".into(),
        action: "restart".into(),
        flow: "restart-service".into(),
        host: Some(host.into()),
        params: BTreeMap::new(),
        skip_check: true,
        steps: vec![PlannedStep {
            phase: Phase::Execute,
            name: "restart".into(),
            timeout_ms: 30_000,
            retries: 0,
            interval_ms: 0,
            overridden: false,
            op: Op::Command {
                argv: vec!["sh".into(), "-c".into(), script],
                expect_exit: vec![0],
            },
        }],
        secrets: Vec::new(),
    }
}

fn meta(run: &str, epoch: i64) -> RunMeta {
    RunMeta {
        run_id: run.into(),
        requested_by: Requester::Call {
            contact: "Oncall".into(),
            uri: "sip:oncall@127.0.0.1".into(),
            attempt: 1,
        },
        notification: Some("n_1".into()),
        ticket: Some("T-1".into()),
        epoch: Some(epoch),
    }
}

async fn wait_file(p: &std::path::Path) {
    for _ in 0..200 {
        if p.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", p.display());
}

#[test]
fn action_slots_follow_the_notification_lease() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let name = format!("callout_clslot_{}", std::process::id());
        let Some(db) = ScratchDb::create("cluster_fencing_pg", &name).await else {
            return;
        };
        let dir = scratch("cluster-fencing-slots");
        let store = Store::connect(&db.url).await.unwrap();
        store
            .insert_notification(&notification("n_1"), None)
            .await
            .unwrap();
        let ea = store
            .claim_new("n_1", "node-a", 60_000)
            .await
            .unwrap()
            .expect("node-a claims what it accepted");
        // Two nodes on other hosts: neither can tell whether the other's
        // process lives, only its heartbeat says.
        let a = Arc::new(Actions::with_store_as(store.clone(), "host-a:4242"));
        let b = Arc::new(Actions::with_store_as(store.clone(), "host-b:4242"));
        let obs = &callout::runner::PrintObserver;

        // node-a, holding the lease, starts a run on web01.
        let (plan_a, meta_a) = (plan("web01", &dir), meta("run_a", ea));
        let lock = a.claim(&plan_a, &meta_a).await.expect("under its lease");
        let a2 = a.clone();
        let run_a = tokio::spawn(async move {
            let rec = a2.execute(&plan_a, &meta_a, obs, None).await;
            drop(lock);
            rec
        });
        wait_file(&dir.join("started-web01")).await;

        // node-a's lease runs out (cut off, paused); node-b claims.
        sqlx::query("UPDATE notifications SET lease_until_ms = 0 WHERE id = 'n_1'")
            .execute(store.pool())
            .await
            .unwrap();
        let claimed = store
            .claim_expired("node-b", 60_000, 10, false)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].previous.as_deref(), Some("node-a"));
        let eb = claimed[0].epoch;
        assert!(eb > ea);

        // node-a starts nothing more under its lost epoch, and its
        // refusal is not recorded either.
        let late = a.claim(&plan("web02", &dir), &meta("run_late", ea)).await;
        assert!(
            matches!(late, Err(ActionError::Fenced(ref n)) if n == "n_1"),
            "{:?}",
            late.err()
        );
        assert!(store.get_run("run_late").await.unwrap().is_none());
        a.refused(
            &meta("run_refused", ea),
            "ops",
            "restart",
            "restart-service",
            "fenced",
            obs,
        )
        .await;
        assert!(store.get_run("run_refused").await.unwrap().is_none());

        // node-b sees web01's slot held: node-a's step still runs there.
        let busy = b.claim(&plan("web01", &dir), &meta("run_b", eb)).await;
        assert!(
            matches!(busy, Err(ActionError::BusyElsewhere { ref run, .. }) if run == "run_a"),
            "{:?}",
            busy.err()
        );
        let held = store
            .running_run("ops", "web01", "restart-service")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((held.id.as_str(), held.epoch), ("run_a", Some(ea)));

        // node-a's run ends: its result does not stand and its slot is
        // freed, but what it did on web01 stays in the audit, marked
        // fenced; nothing is written on the notification.
        let before = store.get_notification("n_1").await.unwrap().unwrap();
        std::fs::write(dir.join("go"), "").unwrap();
        let rec = run_a.await.unwrap();
        assert_eq!(rec.result, RunResult::Succeeded, "the process did run");
        let row = store.get_run("run_a").await.unwrap().unwrap();
        assert_eq!(row.state, "interrupted");
        assert!(row.fenced_ms.is_some(), "{row:?}");
        let record = row.record.expect("the steps taken are kept");
        assert_eq!(record["result"], "succeeded", "{record:#}");
        assert_eq!(record["steps"][0]["exit_code"], 0, "{record:#}");
        assert_eq!(record["steps"][0]["stdout"], "restarted web01\n");
        assert_eq!(
            store.get_notification("n_1").await.unwrap().unwrap(),
            before
        );
        assert_eq!(store.lease_epoch("n_1").await.unwrap(), Some(eb));

        // node-b runs it again, recorded under its epoch.
        let (plan_b, meta_b) = (plan("web01", &dir), meta("run_b", eb));
        let lock = b.claim(&plan_b, &meta_b).await.expect("the slot is free");
        let rec = b.execute(&plan_b, &meta_b, obs, None).await;
        drop(lock);
        assert_eq!(rec.result, RunResult::Succeeded);
        let row = store.get_run("run_b").await.unwrap().unwrap();
        assert_eq!(row.state, "succeeded");
        assert_eq!(row.epoch, Some(eb));
        assert_eq!(row.owner.as_deref(), Some("host-b:4242"));
        assert_eq!(row.record.unwrap()["run_id"], "run_b");
        store.pool().close().await;
        db.drop_db().await;
    });
}

#[test]
fn a_stale_ticket_sync_writes_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let name = format!("callout_cltick_{}", std::process::id());
        let Some(db) = ScratchDb::create("cluster_fencing_pg", &name).await else {
            return;
        };
        let store = Store::connect(&db.url).await.unwrap();
        let (ea, _) = store
            .claim_work_lease("ticket_sync", "node-a", 1)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (eb, prev) = store
            .claim_work_lease("ticket_sync", "node-b", 60_000)
            .await
            .unwrap()
            .expect("an expired lease is claimed");
        assert_eq!(prev.as_deref(), Some("node-a"));
        let fence = |owner: &str, epoch| Fence {
            name: "ticket_sync".into(),
            owner: owner.into(),
            epoch,
            ttl_ms: 60_000,
        };
        let (fa, fb) = (fence("node-a", ea), fence("node-b", eb));
        let (fa, fb) = (Some(&fa), Some(&fb));
        let fenced = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Fenced(_)));
        let line = |id: &str| TimelineRow {
            id: id.into(),
            seq: 7,
            at_ms: 7,
            kind: "ticket".into(),
            text: "Redmine issue #77 opened".into(),
            alert: None,
            data: None,
        };

        // The holder begins following inc_1.
        store
            .ticket_sync_begin("inc_1", "redmine", "main", 1, fb)
            .await
            .unwrap();
        // The stale node: each write refused, nothing changed.
        assert!(fenced(
            store
                .ticket_sync_begin("inc_2", "redmine", "main", 2, fa)
                .await
        ));
        assert!(store.ticket_sync("inc_2").await.unwrap().is_none());
        assert!(fenced(
            store.ticket_sync_created("inc_1", "77", "77", 3, fa).await
        ));
        assert!(fenced(store.ticket_sync_advance("inc_1", 5, 4, fa).await));
        assert!(fenced(store.ticket_sync_done("inc_1", 5, fa).await));
        assert!(matches!(
            store.ticket_syncs_reopen(6, fa).await,
            Err(StoreError::Fenced(_))
        ));
        assert!(matches!(
            store.add_timeline_fenced("inc_1", &line("tl_a"), fa).await,
            Err(StoreError::Fenced(_))
        ));
        let row = store.ticket_sync("inc_1").await.unwrap().unwrap();
        assert_eq!(
            (row.issue, row.cursor_seq, row.done_ms),
            (None, 0, None),
            "the stale node changed nothing"
        );
        assert!(store.timeline_after("inc_1", 0).await.unwrap().is_empty());

        // The holder's writes go through.
        store
            .ticket_sync_created("inc_1", "77", "77", 8, fb)
            .await
            .unwrap();
        assert!(store
            .add_timeline_fenced("inc_1", &line("tl_b"), fb)
            .await
            .unwrap());
        store.ticket_sync_advance("inc_1", 7, 9, fb).await.unwrap();
        store.ticket_sync_done("inc_1", 10, fb).await.unwrap();
        let row = store.ticket_sync("inc_1").await.unwrap().unwrap();
        assert_eq!(
            (row.issue.as_deref(), row.cursor_seq, row.done_ms),
            (Some("77"), 7, Some(10))
        );
        assert_eq!(store.timeline_after("inc_1", 0).await.unwrap().len(), 1);
        store.pool().close().await;
        db.drop_db().await;
    });
}
