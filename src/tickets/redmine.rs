//! Redmine over its REST API (JSON, `X-Redmine-API-Key`).
//!
//! [`Redmine::resolve`] looks a contract's names (project, tracker,
//! statuses, priorities, custom fields) up once and fails with an error
//! naming the setting that is wrong; [`RedmineTickets`] is the resolved
//! contract's [`TicketAdapter`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::config::{RedmineContract, RedmineServer};
use super::{Fut, NewTicket, Note, RemoteTicket, TicketAdapter, TicketError, TicketStatus};

/// One Redmine server's client.
#[derive(Clone)]
pub struct Redmine {
    name: String,
    base: reqwest::Url,
    key: String,
    key_env: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Redmine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redmine")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Redmine {
    /// Build the client; the key is read from the environment now.
    pub fn new(name: &str, s: &RedmineServer) -> Result<Redmine, TicketError> {
        let key = std::env::var(&s.api_key_env).map_err(|_| {
            TicketError::Config(format!(
                "tickets.redmine.{name}.api_key_env: the environment variable {} is not set",
                s.api_key_env
            ))
        })?;
        let mut base = reqwest::Url::parse(&s.url)
            .map_err(|e| TicketError::Config(format!("tickets.redmine.{name}.url: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(TicketError::Config(format!(
                "tickets.redmine.{name}.url: must be http or https"
            )));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &s.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                TicketError::Config(format!(
                    "tickets.redmine.{name}.ca_file {}: {e}",
                    ca.display()
                ))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                TicketError::Config(format!(
                    "tickets.redmine.{name}.ca_file {}: {e}",
                    ca.display()
                ))
            })?;
            b = b.add_root_certificate(cert);
        }
        let http = b
            .build()
            .map_err(|e| TicketError::Config(format!("tickets.redmine.{name}: {e}")))?;
        Ok(Redmine {
            name: name.to_string(),
            base,
            key,
            key_env: s.api_key_env.clone(),
            http,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, TicketError> {
        self.base
            .join(path)
            .map_err(|e| TicketError::Config(format!("tickets.redmine.{}.url: {e}", self.name)))
    }

    /// One request; maps the status to [`TicketError`]. `what` says what
    /// was being done, `setting` what to fix on a 404.
    async fn call(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<&Value>,
        what: &str,
        setting: &str,
    ) -> Result<Option<Value>, TicketError> {
        let mut rq = self
            .http
            .request(method, url)
            .header("X-Redmine-API-Key", &self.key)
            .header("Accept", "application/json");
        if let Some(b) = body {
            rq = rq.json(b);
        }
        let rs = rq.send().await.map_err(|e| TicketError::Unreachable {
            server: self.name.clone(),
            reason: e.without_url().to_string(),
        })?;
        let status = rs.status();
        let bytes = rs.bytes().await.map_err(|e| TicketError::Unreachable {
            server: self.name.clone(),
            reason: e.without_url().to_string(),
        })?;
        let parsed = || serde_json::from_slice::<Value>(&bytes).ok();
        match status {
            s if s.is_success() => Ok(parsed()),
            StatusCode::UNAUTHORIZED => Err(TicketError::BadKey {
                server: self.name.clone(),
                env: self.key_env.clone(),
            }),
            StatusCode::FORBIDDEN => Err(TicketError::Forbidden {
                server: self.name.clone(),
                what: what.to_string(),
                env: self.key_env.clone(),
                setting: setting.to_string(),
            }),
            StatusCode::NOT_FOUND => Err(TicketError::NotFound {
                server: self.name.clone(),
                what: what.to_string(),
                setting: setting.to_string(),
            }),
            StatusCode::UNPROCESSABLE_ENTITY => {
                let errors = parsed()
                    .and_then(|v| {
                        v["errors"].as_array().map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(|s| s.chars().take(200).collect::<String>())
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                    })
                    .unwrap_or_default();
                Err(TicketError::Refused {
                    server: self.name.clone(),
                    what: what.to_string(),
                    errors,
                    setting: setting.to_string(),
                })
            }
            s => Err(TicketError::Unexpected {
                server: self.name.clone(),
                what: what.to_string(),
                status: s.as_u16(),
            }),
        }
    }

    async fn get(&self, path: &str, what: &str, setting: &str) -> Result<Value, TicketError> {
        let url = self.url(path)?;
        self.call(reqwest::Method::GET, url, None, what, setting)
            .await
            .map(Option::unwrap_or_default)
    }

    /// Look a contract's names up; the error names the missing one.
    pub async fn resolve(&self, c: &RedmineContract) -> Result<Resolved, TicketError> {
        let nf = |what: String, setting: &str| TicketError::NotFound {
            server: self.name.clone(),
            what,
            setting: setting.to_string(),
        };
        // The identifier goes into a path: one segment, nothing else.
        let mut url = self.url("projects/")?;
        url.path_segments_mut()
            .map_err(|_| TicketError::Config(format!("tickets.redmine.{}.url", self.name)))?
            .pop_if_empty()
            .push(&format!("{}.json", c.project));
        url.set_query(Some("include=trackers,issue_custom_fields"));
        let project = self
            .call(
                reqwest::Method::GET,
                url,
                None,
                &format!("project {:?}", c.project),
                "pipeline.ticket.project",
            )
            .await?
            .unwrap_or_default();
        let project_id = project["project"]["id"].as_i64().ok_or_else(|| {
            nf(
                format!("project {:?}", c.project),
                "pipeline.ticket.project",
            )
        })?;
        let tracker_id = project["project"]["trackers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"].as_str() == Some(c.tracker.as_str()))
            .and_then(|t| t["id"].as_i64())
            .ok_or_else(|| {
                nf(
                    format!("tracker {:?} in project {:?}", c.tracker, c.project),
                    "pipeline.ticket.tracker",
                )
            })?;
        let statuses = self
            .get(
                "issue_statuses.json",
                "the issue statuses",
                "tickets.redmine.url",
            )
            .await?;
        let find_status = |name: &str, key: &str| -> Result<(i64, bool), TicketError> {
            statuses["issue_statuses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["name"].as_str() == Some(name))
                .and_then(|s| Some((s["id"].as_i64()?, s["is_closed"].as_bool().unwrap_or(false))))
                .ok_or_else(|| {
                    nf(
                        format!("status {name:?}"),
                        &format!("pipeline.ticket.status.{key}"),
                    )
                })
        };
        let mut status = BTreeMap::new();
        status.insert(TicketStatus::Open, find_status(&c.status.open, "open")?.0);
        status.insert(
            TicketStatus::InProgress,
            find_status(&c.status.in_progress, "in_progress")?.0,
        );
        status.insert(
            TicketStatus::Resolved,
            find_status(&c.status.resolved, "resolved")?.0,
        );
        status.insert(
            TicketStatus::Closed,
            find_status(&c.status.closed, "closed")?.0,
        );
        let closed_ids = statuses["issue_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["is_closed"].as_bool() == Some(true))
            .filter_map(|s| s["id"].as_i64())
            .collect();
        let mut priority = BTreeMap::new();
        if !c.priority.is_empty() {
            let ps = self
                .get(
                    "enumerations/issue_priorities.json",
                    "the issue priorities",
                    "tickets.redmine.url",
                )
                .await?;
            for (sev, name) in &c.priority {
                let id = ps["issue_priorities"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"].as_str() == Some(name.as_str()))
                    .and_then(|p| p["id"].as_i64())
                    .ok_or_else(|| {
                        nf(
                            format!("priority {name:?}"),
                            &format!("pipeline.ticket.priority.{}", sev.as_str()),
                        )
                    })?;
                priority.insert(*sev, id);
            }
        }
        let mut fields = BTreeMap::new();
        let wanted: Vec<(&str, &String)> = [
            ("host", &c.custom_fields.host),
            ("contract", &c.custom_fields.contract),
            ("severity", &c.custom_fields.severity),
            ("incident", &c.custom_fields.incident),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        // Listing custom fields needs an administrator's key: without
        // custom fields to map, a key that may not list them still serves
        // (the check for required fields is then Redmine's, at the first
        // issue).
        let cf = match self
            .get(
                "custom_fields.json",
                "listing the custom fields (the key's user must be an administrator to list them)",
                "pipeline.ticket.custom_fields",
            )
            .await
        {
            Ok(v) => v,
            Err(TicketError::Forbidden { .. }) if wanted.is_empty() => Value::Null,
            Err(e) => return Err(e),
        };
        let issue_fields: Vec<&Value> = cf["custom_fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["customized_type"].as_str() == Some("issue"))
            .collect();
        let for_tracker = |f: &Value| {
            f["trackers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["id"].as_i64() == Some(tracker_id))
        };
        for (key, name) in &wanted {
            let f = issue_fields
                .iter()
                .find(|f| f["name"].as_str() == Some(name.as_str()))
                .ok_or_else(|| {
                    nf(
                        format!("issue custom field {name:?}"),
                        &format!("pipeline.ticket.custom_fields.{key}"),
                    )
                })?;
            // Redmine drops a value for a field its tracker does not
            // have, silently: say so now rather than lose it.
            if !for_tracker(f) {
                return Err(nf(
                    format!(
                        "issue custom field {name:?} on tracker {:?} (enable the tracker in the field's settings)",
                        c.tracker
                    ),
                    &format!("pipeline.ticket.custom_fields.{key}"),
                ));
            }
            let id = f["id"].as_i64().ok_or_else(|| {
                nf(
                    format!("issue custom field {name:?}"),
                    &format!("pipeline.ticket.custom_fields.{key}"),
                )
            })?;
            fields.insert(key.to_string(), id);
        }
        // A required field of this project and tracker that callout does
        // not fill makes Redmine refuse every issue (422): name it now.
        let enabled: Vec<i64> = project["project"]["issue_custom_fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["id"].as_i64())
            .collect();
        if let Some(f) = issue_fields.iter().find(|f| {
            f["is_required"].as_bool() == Some(true)
                && for_tracker(f)
                && f["id"].as_i64().is_some_and(|id| enabled.contains(&id))
                && !f["id"]
                    .as_i64()
                    .is_some_and(|id| fields.values().any(|v| *v == id))
                && f["default_value"].as_str().is_none_or(str::is_empty)
        }) {
            return Err(TicketError::Config(format!(
                "{}: issue custom field {:?} is required in project {:?} for tracker {:?} and callout does not fill it: \
                 map it under pipeline.ticket.custom_fields (host, contract, severity, incident), give it a default value, \
                 or make it optional in Redmine",
                self.name,
                f["name"].as_str().unwrap_or("?"),
                c.project,
                c.tracker
            )));
        }
        let mut assignees = BTreeMap::new();
        if !c.assignees.is_empty() {
            // Redmine assigns an issue only to a member of its project.
            let members = self
                .get(
                    &format!("projects/{project_id}/memberships.json?limit=100"),
                    &format!("the members of project {:?}", c.project),
                    "pipeline.ticket.assignees",
                )
                .await?;
            let ids: Vec<i64> = members["memberships"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["user"]["id"].as_i64())
                .collect();
            for (contact, id) in &c.assignees {
                if !ids.contains(id) {
                    return Err(nf(
                        format!("user {id} as a member of project {:?}", c.project),
                        &format!("pipeline.ticket.assignees.{contact}"),
                    ));
                }
                assignees.insert(contact.clone(), *id);
            }
        }
        Ok(Resolved {
            project_id,
            project: c.project.clone(),
            tracker_id,
            status,
            closed_ids,
            priority,
            fields,
            assignees,
        })
    }
}

/// A contract's names as ids on its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub project_id: i64,
    pub project: String,
    pub tracker_id: i64,
    pub status: BTreeMap<TicketStatus, i64>,
    /// Every status Redmine counts as closed.
    pub closed_ids: Vec<i64>,
    pub priority: BTreeMap<crate::pipeline::alert::Severity, i64>,
    /// `host`, `contract`, `severity`, `incident` → custom field id.
    pub fields: BTreeMap<String, i64>,
    /// Contact name → Redmine user id.
    pub assignees: BTreeMap<String, i64>,
}

/// A resolved contract on one server: the Redmine [`TicketAdapter`].
#[derive(Debug, Clone)]
pub struct RedmineTickets {
    pub server: Arc<Redmine>,
    pub resolved: Resolved,
}

/// The other issue of each relation in a Redmine `relations` array.
fn related(relations: &Value, me: u64) -> Vec<String> {
    relations
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let (a, b) = (r["issue_id"].as_u64()?, r["issue_to_id"].as_u64()?);
            Some(if a == me { b } else { a }.to_string())
        })
        .collect()
}

fn issue_id(number: &str) -> Result<u64, TicketError> {
    number
        .trim_start_matches('#')
        .parse()
        .map_err(|_| TicketError::Config(format!("{number:?} is not a Redmine issue number")))
}

impl RedmineTickets {
    fn issue_url(&self, number: &str, query: Option<&str>) -> Result<reqwest::Url, TicketError> {
        let mut u = self
            .server
            .url(&format!("issues/{}.json", issue_id(number)?))?;
        u.set_query(query);
        Ok(u)
    }

    async fn put(&self, number: &str, issue: Value, what: &str) -> Result<(), TicketError> {
        let url = self.issue_url(number, None)?;
        self.server
            .call(
                reqwest::Method::PUT,
                url,
                Some(&json!({ "issue": issue })),
                what,
                "the issue (deleted in Redmine?)",
            )
            .await
            .map(|_| ())
            .map_err(|e| match e {
                // Redmine answers an edit that lost a race with another
                // edit of the same issue (ActiveRecord::StaleObjectError:
                // a person saving it at that moment) with a 422 and no
                // error at all. Nothing was saved: try again, rather than
                // give up the incident's notes as a wrong setting.
                TicketError::Refused { server, errors, .. } if errors.trim().is_empty() => {
                    TicketError::Unreachable {
                        server,
                        reason: format!(
                            "422 without a reason while {what}: an edit of issue #{number} at the same moment; retried"
                        ),
                    }
                }
                // A status Redmine's workflow does not allow the key's
                // user, or a note too long: say where to look.
                TicketError::Refused {
                    server,
                    what,
                    errors,
                    ..
                } => TicketError::Refused {
                    server,
                    what,
                    errors,
                    setting: "pipeline.ticket.status: Redmine's workflow must let the key's user \
                              move the tracker's issues to it"
                        .into(),
                },
                e => e,
            })
    }

    /// The issue already opened for an incident (after a crash between
    /// Redmine creating it and the store recording its id).
    async fn find_open(&self, incident: &str) -> Result<Option<String>, TicketError> {
        let mut url = self.server.url("issues.json")?;
        url.query_pairs_mut()
            .append_pair("project_id", &self.resolved.project_id.to_string())
            .append_pair("status_id", "*")
            .append_pair("description", &format!("~callout:{incident}"))
            .append_pair("limit", "5");
        let v = self
            .server
            .call(
                reqwest::Method::GET,
                url,
                None,
                "searching issues",
                "pipeline.ticket.project",
            )
            .await?
            .unwrap_or_default();
        let want = format!("callout:{incident}\n");
        Ok(v["issues"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| {
                i["description"]
                    .as_str()
                    .is_some_and(|d| format!("{d}\n").contains(&want))
            })
            .and_then(|i| i["id"].as_i64())
            .map(|id| id.to_string()))
    }

    async fn open_impl(&self, t: &NewTicket) -> Result<String, TicketError> {
        if let Some(n) = self.find_open(&t.incident).await? {
            return Ok(n);
        }
        let r = &self.resolved;
        let mut custom = Vec::new();
        for (key, value) in [
            ("host", t.host.as_str()),
            ("contract", t.contract.as_str()),
            ("severity", t.severity.as_str()),
            ("incident", t.incident.as_str()),
        ] {
            if let Some(id) = r.fields.get(key) {
                custom.push(json!({"id": id, "value": value}));
            }
        }
        let mut issue = json!({
            "project_id": r.project_id,
            "tracker_id": r.tracker_id,
            "status_id": r.status[&TicketStatus::Open],
            "subject": t.subject.chars().take(250).collect::<String>(),
            // The marker line lets a retry find this issue.
            "description": format!("{}\n\ncallout:{}", t.description, t.incident),
        });
        if let Some(p) = r.priority.get(&t.severity) {
            issue["priority_id"] = json!(p);
        }
        if !custom.is_empty() {
            issue["custom_fields"] = Value::Array(custom);
        }
        let url = self.server.url("issues.json")?;
        let v = self
            .server
            .call(
                reqwest::Method::POST,
                url,
                Some(&json!({ "issue": issue })),
                "creating the issue",
                "pipeline.ticket.project, .tracker, .custom_fields; or a custom field \
                 Redmine requires that callout does not fill",
            )
            .await?
            .unwrap_or_default();
        v["issue"]["id"]
            .as_i64()
            .map(|id| id.to_string())
            .ok_or(TicketError::Unexpected {
                server: self.server.name.clone(),
                what: "creating the issue (no id in the answer)".into(),
                status: 201,
            })
    }

    /// The issues related to one, whichever side made the relation.
    async fn relations(&self, number: &str) -> Result<Vec<String>, TicketError> {
        let url = self
            .server
            .url(&format!("issues/{}/relations.json", issue_id(number)?))?;
        let v = self
            .server
            .call(
                reqwest::Method::GET,
                url,
                None,
                "reading the issue's relations",
                "the issue (deleted in Redmine?)",
            )
            .await?
            .unwrap_or_default();
        Ok(related(&v["relations"], issue_id(number)?))
    }

    /// The project of an issue (to explain a refused relation).
    async fn project_of(&self, number: &str) -> Result<Option<i64>, TicketError> {
        let url = self.issue_url(number, None)?;
        let v = self
            .server
            .call(
                reqwest::Method::GET,
                url,
                None,
                "reading the issue",
                "the issue (deleted in Redmine?)",
            )
            .await?
            .unwrap_or_default();
        Ok(v["issue"]["project"]["id"].as_i64())
    }

    /// Relate `number` to `other` (`relates`) unless they are already:
    /// a retry after a lost answer must not fail on Redmine's "has
    /// already been taken".
    async fn link_impl(&self, number: &str, other: &str) -> Result<bool, TicketError> {
        let (from, to) = (issue_id(number)?, issue_id(other)?);
        if self.relations(number).await?.contains(&to.to_string()) {
            return Ok(false);
        }
        let url = self.server.url(&format!("issues/{from}/relations.json"))?;
        let body = json!({"relation": {"issue_to_id": to, "relation_type": "relates"}});
        match self
            .server
            .call(
                reqwest::Method::POST,
                url,
                Some(&body),
                &format!("relating issue #{from} to #{to}"),
                "the issue (deleted in Redmine?)",
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(TicketError::Refused {
                server,
                what,
                errors,
                setting,
            }) => {
                // Redmine's own words are in its user's language; the two
                // projects differing is what says which setting it is.
                if self.project_of(number).await? != self.project_of(other).await? {
                    Err(TicketError::CrossProject {
                        server,
                        from: from.to_string(),
                        to: to.to_string(),
                        errors,
                    })
                } else {
                    Err(TicketError::Refused {
                        server,
                        what,
                        errors,
                        setting,
                    })
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch_impl(&self, number: &str) -> Result<RemoteTicket, TicketError> {
        let url = self.issue_url(number, Some("include=journals,relations"))?;
        let v = self
            .server
            .call(
                reqwest::Method::GET,
                url,
                None,
                "reading the issue",
                "the issue (deleted in Redmine?)",
            )
            .await?
            .unwrap_or_default();
        let status_id = v["issue"]["status"]["id"].as_i64().unwrap_or(0);
        let journals = v["issue"]["journals"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let markers = journals
            .iter()
            .filter_map(|j| j["notes"].as_str())
            .filter_map(|n| n.lines().last())
            .filter(|l| l.starts_with("callout:"))
            .map(|l| l.trim().to_string())
            .collect();
        let closed_by = journals
            .iter()
            .rev()
            .find(|j| {
                j["details"].as_array().into_iter().flatten().any(|d| {
                    d["name"].as_str() == Some("status_id")
                        && d["new_value"]
                            .as_str()
                            .and_then(|s| s.parse::<i64>().ok())
                            .is_some_and(|s| self.resolved.closed_ids.contains(&s))
                })
            })
            .and_then(|j| j["user"]["name"].as_str())
            .map(str::to_string);
        let links = related(&v["issue"]["relations"], issue_id(number)?);
        Ok(RemoteTicket {
            links,
            closed: self.resolved.closed_ids.contains(&status_id),
            status: v["issue"]["status"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            closed_by,
            markers,
        })
    }
}

impl TicketAdapter for RedmineTickets {
    fn open<'a>(&'a self, t: &'a NewTicket) -> Fut<'a, String> {
        Box::pin(self.open_impl(t))
    }

    fn append<'a>(&'a self, number: &'a str, note: &'a Note) -> Fut<'a, ()> {
        Box::pin(async move {
            let mut issue = json!({ "notes": note.text });
            if let Some(s) = note.status {
                issue["status_id"] = json!(self.resolved.status[&s]);
            }
            if let Some(id) = note
                .assignee
                .as_ref()
                .and_then(|who| self.resolved.assignees.get(who))
            {
                issue["assigned_to_id"] = json!(id);
            }
            match self.put(number, issue.clone(), "adding a note").await {
                // The user left the project since the start: the note
                // matters more than the assignment.
                Err(TicketError::Refused { .. }) if issue.get("assigned_to_id").is_some() => {
                    if let Some(o) = issue.as_object_mut() {
                        o.remove("assigned_to_id");
                    }
                    self.put(number, issue, "adding a note").await
                }
                r => r,
            }
        })
    }

    fn set_status<'a>(&'a self, number: &'a str, status: TicketStatus) -> Fut<'a, ()> {
        Box::pin(async move {
            self.put(
                number,
                json!({ "status_id": self.resolved.status[&status] }),
                "setting the status",
            )
            .await
        })
    }

    fn close<'a>(&'a self, number: &'a str, resolution: &'a str) -> Fut<'a, ()> {
        Box::pin(async move {
            self.put(
                number,
                json!({ "status_id": self.resolved.status[&TicketStatus::Closed], "notes": resolution }),
                "closing the issue",
            )
            .await
        })
    }

    fn link<'a>(&'a self, number: &'a str, other: &'a str) -> Fut<'a, bool> {
        Box::pin(self.link_impl(number, other))
    }

    fn fetch<'a>(&'a self, number: &'a str) -> Fut<'a, RemoteTicket> {
        Box::pin(self.fetch_impl(number))
    }
}
