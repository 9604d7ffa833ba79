//! `callout incidents list|show`: the incidents and their timelines,
//! read straight from the database (works with the service stopped).

use crate::store::{IncidentFilter, IncidentRow, Store};

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn line(r: &IncidentRow) -> String {
    let i = &r.incident;
    format!(
        "{}  {:<14} {:<12} {:<10} {:<8} {:<20} {}",
        time(i.opened_ms),
        r.ticket.as_deref().unwrap_or("-"),
        i.state.as_str(),
        i.contract,
        i.severity.as_str(),
        i.host,
        i.id
    )
}

pub async fn list(
    database: &str,
    contract: Option<String>,
    host: Option<String>,
    state: Option<String>,
    limit: i64,
) -> anyhow::Result<()> {
    let store = Store::connect(database).await?;
    let rows = store
        .list_incidents(&IncidentFilter {
            contract,
            host,
            state,
            limit,
            ..Default::default()
        })
        .await?;
    println!(
        "{:<19}  {:<14} {:<12} {:<10} {:<8} {:<20} id",
        "opened", "ticket", "state", "contract", "severity", "host"
    );
    for r in &rows {
        println!("{}", line(r));
    }
    Ok(())
}

pub async fn show(database: &str, id: &str) -> anyhow::Result<()> {
    let store = Store::connect(database).await?;
    let r = match store.get_incident(id).await? {
        Some(r) => r,
        None => store
            .incident_by_ticket(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no incident or ticket {id}"))?,
    };
    let i = &r.incident;
    println!(
        "incident {}  ticket {}",
        i.id,
        r.ticket.as_deref().unwrap_or("-")
    );
    println!(
        "  contract {}  host {}  severity {}",
        i.contract,
        i.host,
        i.severity.as_str()
    );
    println!("  state {}  summary {}", i.state.as_str(), i.summary);
    println!("alerts:");
    for a in store.incident_alerts(&i.id, 1000).await? {
        println!(
            "  {}  {:<8} {:<9} {} {}",
            time(a.alert.received_ms),
            a.alert.source.as_str(),
            format!("{:?}", a.alert.status).to_lowercase(),
            a.alert.name,
            a.alert.summary
        );
    }
    println!("timeline:");
    for t in store.timeline(&i.id).await? {
        println!("  {}  {:<9} {}", time(t.at_ms), t.kind, t.text);
    }
    Ok(())
}
