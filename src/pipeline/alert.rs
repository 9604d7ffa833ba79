//! One alert as the pipeline sees it, whatever sent it: the intake
//! parsers (`sources.rs`, `mail.rs`) turn every payload into these.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

/// Severities in the order rules compare them (`Critical` is the most
/// urgent). Words from the sources map onto these (`error` and `high`
/// are `Major`, `disaster` is `Critical`, …); anything unknown is
/// `Warning`, so an odd word never silences an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Minor,
    Major,
    Critical,
}

impl Severity {
    pub fn parse(word: &str) -> Option<Severity> {
        Some(match word.trim().to_ascii_lowercase().as_str() {
            "critical" | "crit" | "disaster" | "emergency" | "fatal" | "page" | "p1" => {
                Severity::Critical
            }
            "major" | "error" | "high" | "err" | "p2" => Severity::Major,
            "minor" | "average" | "medium" | "p3" => Severity::Minor,
            "warning" | "warn" | "low" | "p4" => Severity::Warning,
            "info" | "information" | "informational" | "notice" | "ok" | "not classified"
            | "p5" => Severity::Info,
            _ => return None,
        })
    }

    /// [`Severity::parse`], with `Warning` for words it does not know.
    pub fn parse_or_warning(word: &str) -> Severity {
        Severity::parse(word).unwrap_or(Severity::Warning)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }
}

/// Where an alert came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Alertmanager,
    Grafana,
    Events,
    Mail,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Alertmanager => "alertmanager",
            Source::Grafana => "grafana",
            Source::Events => "events",
            Source::Mail => "mail",
        }
    }
}

/// One accepted alert. `labels` holds everything rules can match on:
/// the source's labels, plus `alertname`, `host`, `severity`, `service`
/// and `contract` filled from whatever the source called them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `al_…`, given at intake; also the order of arrival.
    pub id: String,
    pub contract: String,
    pub source: Source,
    pub status: Status,
    /// What stays the same between an alert's firing and its recovery
    /// (Alertmanager's fingerprint, the event's `dedup_key`, or host +
    /// service for mail).
    pub key: String,
    pub host: String,
    /// `alertname`, the event's summary class, the mail's service.
    pub name: String,
    pub severity: Severity,
    pub summary: String,
    pub labels: BTreeMap<String, String>,
    /// When the source says it started (epoch ms), if it does.
    pub starts_ms: Option<i64>,
    /// When callout accepted it (epoch ms).
    pub received_ms: i64,
}

impl Alert {
    /// A label rules can match: the alert's own fields first.
    pub fn label(&self, name: &str) -> Option<&str> {
        match name {
            "host" => Some(&self.host),
            "alertname" => Some(&self.name),
            "severity" => Some(self.severity.as_str()),
            "contract" => Some(&self.contract),
            "status" => Some(match self.status {
                Status::Firing => "firing",
                Status::Resolved => "resolved",
            }),
            "source" => Some(self.source.as_str()),
            _ => self.labels.get(name).map(String::as_str),
        }
    }
}

/// A new alert id: time-ordered (epoch ms in hex, then a counter of this
/// process, then randomness), so sorting ids sorts by arrival, within
/// one millisecond too (a batch's trigger and its resolve share one).
pub fn new_id(now_ms: i64) -> String {
    use rand::Rng;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed) & 0xff_ffff_ffff;
    let r: u32 = rand::thread_rng().gen::<u32>() & 0xff_ffff;
    format!("al_{:012x}{n:010x}{r:06x}", now_ms.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_and_map() {
        assert!(Severity::Critical > Severity::Major && Severity::Minor > Severity::Warning);
        assert_eq!(Severity::parse("Disaster"), Some(Severity::Critical));
        assert_eq!(Severity::parse("error"), Some(Severity::Major));
        assert_eq!(Severity::parse("bogus"), None);
        assert_eq!(Severity::parse_or_warning("bogus"), Severity::Warning);
    }

    #[test]
    fn ids_sort_by_time() {
        assert!(new_id(1_000) < new_id(2_000));
        assert_eq!(new_id(5).len(), 3 + 12 + 16);
    }

    #[test]
    fn ids_of_one_millisecond_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..1_000).map(|_| new_id(5)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
