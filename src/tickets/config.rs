//! Ticket settings: Redmine servers in callout.toml
//! (`[tickets.redmine.NAME]`) and, per contract, `[pipeline.ticket]` in
//! its dialplan.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::pipeline::alert::Severity;

/// `[tickets]` in callout.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketsSettings {
    /// Redmine servers by name (a contract's `server`).
    pub redmine: BTreeMap<String, RedmineServer>,
    /// How often open tickets are read back to notice a person closing
    /// them.
    #[serde(deserialize_with = "crate::config::duration")]
    pub poll: Duration,
    /// How long a new timeline entry waits before it is written, so
    /// entries numbered earlier but committed later are not passed over.
    #[serde(deserialize_with = "crate::config::duration")]
    pub settle: Duration,
}

impl Default for TicketsSettings {
    fn default() -> Self {
        TicketsSettings {
            redmine: BTreeMap::new(),
            poll: Duration::from_secs(30),
            settle: Duration::from_millis(500),
        }
    }
}

/// One Redmine server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedmineServer {
    /// Base URL, e.g. `https://redmine.example.net`.
    pub url: String,
    /// The environment variable holding the API key (sent as
    /// `X-Redmine-API-Key`, never logged).
    pub api_key_env: String,
    /// Extra CA certificate (PEM) for a private TLS certificate.
    pub ca_file: Option<PathBuf>,
}

/// A contract's `[pipeline.ticket]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTicket {
    #[serde(default = "embedded")]
    pub system: String,
    pub server: Option<String>,
    pub project: Option<String>,
    pub tracker: Option<String>,
    #[serde(default)]
    pub priority: BTreeMap<String, String>,
    #[serde(default)]
    pub status: RawStatus,
    #[serde(default)]
    pub custom_fields: RawCustomFields,
    /// Contact name (as in the dialplan's `[[contacts]]`) → Redmine user
    /// id: the issue is assigned to whoever acknowledges.
    #[serde(default)]
    pub assignees: BTreeMap<String, i64>,
}

fn embedded() -> String {
    "embedded".into()
}

/// Status names for callout's four ticket states.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStatus {
    pub open: String,
    pub in_progress: String,
    pub resolved: String,
    pub closed: String,
}

impl Default for RawStatus {
    fn default() -> Self {
        RawStatus {
            open: "New".into(),
            in_progress: "In Progress".into(),
            resolved: "Resolved".into(),
            closed: "Closed".into(),
        }
    }
}

/// Names of the optional custom fields filled at the occurrence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCustomFields {
    pub host: Option<String>,
    pub contract: Option<String>,
    pub severity: Option<String>,
    pub incident: Option<String>,
}

/// A contract's ticket system, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketConfig {
    Embedded,
    Redmine(Box<RedmineContract>),
}

/// A contract's Redmine settings (names, looked up on the server at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedmineContract {
    pub server: String,
    pub project: String,
    pub tracker: String,
    /// Severity → priority name; a severity not listed gets Redmine's
    /// default priority.
    pub priority: BTreeMap<Severity, String>,
    pub status: RawStatus,
    pub custom_fields: RawCustomFields,
    /// Contact name → Redmine user id (checked to be a project member at
    /// start).
    pub assignees: BTreeMap<String, i64>,
}

/// Check a contract's `[pipeline.ticket]`; the error says which key.
pub fn check(raw: &RawTicket) -> Result<TicketConfig, String> {
    match raw.system.as_str() {
        "embedded" => {
            if raw.server.is_some()
                || raw.project.is_some()
                || raw.tracker.is_some()
                || !raw.assignees.is_empty()
            {
                return Err(
                    "pipeline.ticket: server, project, tracker and assignees are for system = \"redmine\""
                        .into(),
                );
            }
            Ok(TicketConfig::Embedded)
        }
        "redmine" => {
            let need = |v: &Option<String>, key: &str| {
                v.clone().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
                    format!("pipeline.ticket.{key} is required with system = \"redmine\"")
                })
            };
            let mut priority = BTreeMap::new();
            for (k, v) in &raw.priority {
                let s = Severity::parse(k).ok_or_else(|| {
                    format!("pipeline.ticket.priority: unknown severity {k:?} (critical, major, minor, warning, info)")
                })?;
                priority.insert(s, v.clone());
            }
            Ok(TicketConfig::Redmine(Box::new(RedmineContract {
                server: need(&raw.server, "server")?,
                project: need(&raw.project, "project")?,
                tracker: need(&raw.tracker, "tracker")?,
                priority,
                status: raw.status.clone(),
                custom_fields: raw.custom_fields.clone(),
                assignees: raw.assignees.clone(),
            })))
        }
        other => Err(format!(
            "pipeline.ticket.system: unknown system {other:?} (embedded, redmine)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> RawTicket {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn redmine_needs_server_project_tracker() {
        let e = check(&raw(
            "system = \"redmine\"\nserver = \"main\"\ntracker = \"Bug\"",
        ))
        .unwrap_err();
        assert!(e.contains("pipeline.ticket.project"), "{e}");
        let ok = check(&raw(
            "system = \"redmine\"\nserver = \"main\"\nproject = \"acme\"\ntracker = \"Bug\"\npriority = { crit = \"Urgent\" }",
        ))
        .unwrap();
        let TicketConfig::Redmine(r) = ok else {
            panic!("not redmine")
        };
        assert_eq!(
            r.priority.get(&Severity::Critical).map(String::as_str),
            Some("Urgent")
        );
        assert_eq!(r.status.in_progress, "In Progress");
    }

    #[test]
    fn bad_severity_and_system_are_named() {
        let e = check(&raw(
            "system = \"redmine\"\nserver = \"m\"\nproject = \"p\"\ntracker = \"t\"\npriority = { huge = \"Urgent\" }",
        ))
        .unwrap_err();
        assert!(e.contains("priority") && e.contains("huge"), "{e}");
        let e = check(&raw("system = \"jira\"")).unwrap_err();
        assert!(e.contains("pipeline.ticket.system"), "{e}");
        assert!(toml::from_str::<RawTicket>("system = \"redmine\"\nprojekt = \"x\"").is_err());
    }
}
