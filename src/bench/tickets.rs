//! `callout bench tickets`: against a running Redmine, the time from an
//! alert being stored (what the intake does before its 2xx) to the
//! incident's Redmine issue existing, and how many notes per second the
//! sync gets Redmine to accept, beside a plain HTTP client writing notes
//! to the same Redmine in the same run (the peer).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::pipeline::alert::{Alert, Severity, Source, Status};
use crate::runner::now_ms;
use crate::store::{new_id, Store, TimelineRow};
use crate::tickets::config::{RedmineServer, TicketsSettings};
use crate::tickets::sync::TicketSync;

/// What to measure, and on which Redmine.
#[derive(Debug, Clone)]
pub struct TicketsBench {
    pub url: String,
    pub key_env: String,
    pub project: String,
    pub tracker: String,
    /// Incidents opened one after another (latency samples).
    pub incidents: usize,
    /// Notes written to one issue (throughput).
    pub notes: usize,
}

fn alert(contract: &str, host: &str) -> Alert {
    let now = now_ms();
    Alert {
        id: crate::pipeline::alert::new_id(now),
        contract: contract.into(),
        source: Source::Events,
        status: Status::Firing,
        key: format!("{host}-down"),
        host: host.into(),
        name: "HostDown".into(),
        severity: Severity::Critical,
        summary: format!("{host} does not answer"),
        labels: BTreeMap::new(),
        starts_ms: None,
        received_ms: now,
    }
}

pub async fn run(o: TicketsBench) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("callout-bench-tickets-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let plan_file = dir.join("bench.toml");
    std::fs::write(
        &plan_file,
        format!(
            "contract = \"bench\"\nname = \"bench\"\nlanguage = \"en\"\n\
             [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n[[contacts]]\nname = \"Nobody\"\nuri = \"sip:nobody@127.0.0.1:9\"\n\
             [message]\ntext = \"x\"\n[menu]\nprompt = \"x\"\n[menu.keys]\n\"1\" = \"ack\"\n\
             [pipeline]\nwait = \"1h\"\n[pipeline.ticket]\nsystem = \"redmine\"\nserver = \"bench\"\n\
             project = \"{}\"\ntracker = \"{}\"\n",
            o.project, o.tracker
        ),
    )?;
    let plan = crate::ivr::dialplan::load_file(&plan_file, &dir).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let plans: crate::pipeline::driver::Plans = {
        let m = Arc::new(BTreeMap::from([("bench".to_string(), Arc::new(plan))]));
        Arc::new(move || m.clone())
    };
    let store = Store::connect(&format!("sqlite://{}", dir.join("bench.db").display())).await?;
    let shutdown = CancellationToken::new();
    let pipeline = crate::pipeline::driver::start(
        store.clone(),
        plans.clone(),
        crate::pipeline::gateway::GatewayClient::new("http://127.0.0.1:9", "unused".into()),
        Vec::new(),
        86_400_000,
        crate::pipeline::engine::DEFAULT_RECOVERED_WAIT_MS,
        shutdown.clone(),
        None,
    )
    .await?;
    let server = RedmineServer {
        url: o.url.clone(),
        api_key_env: o.key_env.clone(),
        ca_file: None,
    };
    let mut settings = TicketsSettings::default();
    settings.redmine.insert("bench".into(), server.clone());
    settings.settle = Duration::from_millis(1);
    let servers = crate::tickets::sync::servers(&settings)?;
    let sync = TicketSync::new(store.clone(), plans, servers, settings, pipeline.clone());
    tokio::spawn(sync.run(shutdown.clone()));

    // 1. Alert stored → issue exists, one incident at a time.
    let mut lat = Vec::new();
    let mut last = None;
    for i in 0..o.incidents {
        let a = alert("bench", &format!("bench-{}-{i}", std::process::id()));
        let t0 = Instant::now();
        store.insert_alerts(std::slice::from_ref(&a)).await?;
        pipeline.kick();
        let incident = loop {
            if let Some(inc) = store
                .list_incidents(&crate::store::IncidentFilter {
                    host: Some(a.host.clone()),
                    limit: 1,
                    ..Default::default()
                })
                .await?
                .into_iter()
                .next()
            {
                if let Some(s) = store.ticket_sync(&inc.incident.id).await? {
                    if s.issue.is_some() {
                        break inc.incident.id;
                    }
                }
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "no issue after 30 s: is Redmine up?"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        last = Some(incident);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "alert stored -> Redmine issue exists: {} incidents, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        lat.len(),
        super::percentile(&lat, 0.5),
        super::percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );

    // 2. Notes per second through the sync (timeline → cursor).
    let incident = last.context("--incidents must be at least 1")?;
    let issue = store
        .ticket_sync(&incident)
        .await?
        .and_then(|s| s.issue)
        .context("no issue")?;
    // Let the incident's own first lines go out before timing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let t0 = Instant::now();
    let mut last_seq = 0;
    for i in 0..o.notes {
        let row = TimelineRow {
            id: new_id("tl"),
            seq: pipeline.next_seq(),
            at_ms: now_ms(),
            kind: "gateway".into(),
            text: format!("bench note {i}"),
            alert: None,
            data: None,
        };
        last_seq = row.seq;
        store.add_timeline(&incident, &row).await?;
    }
    loop {
        let s = store
            .ticket_sync(&incident)
            .await?
            .context("sync row gone")?;
        if s.cursor_seq >= last_seq {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(600),
            "notes stalled at seq {}",
            s.cursor_seq
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sync_rate = o.notes as f64 / t0.elapsed().as_secs_f64();
    println!(
        "callout sync: {} notes to issue #{issue} in {:.2} s = {sync_rate:.1} notes/s (in order, cursor committed after each)",
        o.notes,
        t0.elapsed().as_secs_f64()
    );

    // 3. The peer: a plain client PUTting notes back to back.
    let key = std::env::var(&o.key_env).with_context(|| format!("${} is not set", o.key_env))?;
    let http = reqwest::Client::new();
    let url = format!("{}/issues/{issue}.json", o.url.trim_end_matches('/'));
    let t0 = Instant::now();
    for i in 0..o.notes {
        let r = http
            .put(&url)
            .header("X-Redmine-API-Key", &key)
            .json(&serde_json::json!({"issue": {"notes": format!("peer note {i}")}}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "Redmine answered {}", r.status());
    }
    let peer_rate = o.notes as f64 / t0.elapsed().as_secs_f64();
    println!(
        "peer (plain HTTP client, same Redmine): {} notes in {:.2} s = {peer_rate:.1} notes/s; callout reaches {:.0} %",
        o.notes,
        t0.elapsed().as_secs_f64(),
        100.0 * sync_rate / peer_rate
    );
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
