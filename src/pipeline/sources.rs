//! The JSON intake parsers: an HTTP body from Prometheus Alertmanager,
//! Grafana or a PagerDuty-style event sender in, [`Alert`]s out. Pure
//! functions of the bytes, `now_ms` and the route's default contract: no
//! IO, no clock, no panic on any input (fuzz target `intake`).
//!
//! # Errors: the body, then each item
//!
//! A body that cannot be used at all is a [`BodyError`]: not JSON (its
//! `detail` gives line and column), not an object, a `version` this
//! parser does not speak (Alertmanager `"4"`, Grafana `"1"`), `alerts`
//! missing or not an array, `events` not an array, or a group-level field
//! of the wrong type (`commonLabels` not an object of strings). The route
//! answers it with a 4xx problem+json naming `field`.
//!
//! Otherwise every alert or event becomes one entry of [`Batch::items`],
//! in body order: `Ok(Alert)`, or an [`ItemError`] that names the entry's
//! index and the field, JSON-pointer-ish (`alerts[3].labels.contract`,
//! `events[1].payload.summary`; a key that is not a plain word is quoted:
//! `labels["app.kubernetes.io/name"]`). One bad alert never sinks the
//! others. An acknowledge event goes to [`Batch::acks`] instead (below).
//!
//! # Mapping (Alertmanager webhook v4 and Grafana)
//!
//! - **contract**: the alert's label `contract`, else `commonLabels.contract`,
//!   else `default_contract` (the route's, e.g. from a routing rule).
//!   None of them: an item error on `alerts[i].labels.contract`.
//! - **status**: the alert's `status` (`firing` | `resolved`), else the
//!   group's `status`. Anything else is an item error.
//! - **host**: label `host`, else `instance` with a scheme, path and
//!   `:port` stripped (`10.0.0.5:9100` → `10.0.0.5`, `[::1]:9100` → `::1`,
//!   `https://shop.example:443/health` → `shop.example`), else `hostname`,
//!   `node`, `nodename`. None: `""` (a Watchdog has no host).
//! - **name**: label `alertname` (empty if absent).
//! - **severity**: [`Severity::parse_or_warning`] of label `severity`, else
//!   `priority` (absent: `Warning`).
//! - **summary**: annotation `summary`, else `description`, else `message`,
//!   else the alertname. The alert's annotations are merged over
//!   `commonAnnotations`.
//! - **key**: `fingerprint`; absent or empty, `lh-` and a SHA-256 of the
//!   sorted labels (stable across restarts and versions).
//! - **starts_ms**: `startsAt` (RFC 3339); Go's zero time
//!   `0001-01-01T00:00:00Z` is `None`. A non-zero `endsAt` is kept as
//!   label `meta.endsAt`.
//! - **labels**: every label, every annotation as `annotation.<name>`,
//!   and `meta.*` for links that help an operator but are not matched
//!   (`generatorURL`, Grafana's `silenceURL`, `dashboardURL`, `panelURL`,
//!   `valueString`, `values` as compact JSON, and the group's `receiver`).
//!
//! # Mapping (events, PagerDuty Events API v2 semantics)
//!
//! The body is one event object or `{"events": [ … ]}`.
//!
//! - **event_action**: `trigger` → `Firing`, `resolve` → `Resolved`,
//!   `acknowledge` → an [`Ack`] (below). Required.
//! - **contract**: `payload.custom_details.contract`, else `routing_key`,
//!   else `default_contract`; none: item error on `routing_key`.
//! - **key**: `dedup_key`. A trigger without one gets `ev-` and a SHA-256 of
//!   contract, `payload.source`, `component`, `group`, `class` and
//!   `summary`, so the same trigger sent twice is one alert (the route
//!   should return the key, as PagerDuty does, so the sender can resolve
//!   it). A resolve or acknowledge without `dedup_key` is an item error.
//! - **payload**: required for a trigger, optional otherwise.
//!   `payload.summary` is required for a trigger (a resolve or acknowledge
//!   without one reads `resolved` / `acknowledged`).
//! - **host**: `custom_details` `host`, `instance` (port stripped),
//!   `hostname`, `node`, `nodename`, else `payload.source`.
//! - **name**: `payload.class`, else `component`, else the summary.
//! - **severity**: [`Severity::parse_or_warning`] of `payload.severity`
//!   (PagerDuty's `critical | error | warning | info` map to Critical,
//!   Major, Warning, Info).
//! - **starts_ms**: `payload.timestamp`: RFC 3339, or ISO 8601 with a
//!   `+0000` offset as PagerDuty's own examples write it.
//! - **labels**: each `custom_details` entry under its own name (strings
//!   as they are, other JSON compact), then `component`, `group`, `class`,
//!   `service` (the component, unless the details name one),
//!   `event_source` (`payload.source`; `source` is taken by the alert's
//!   own [`Source`]) and `event_action`.
//!
//! # Acknowledge
//!
//! An `acknowledge` event is not an alert: it neither opens nor closes
//! anything. It is an [`Ack`] in [`Batch::acks`], carrying a full [`Alert`]
//! (status `Firing`, label `event_action=acknowledge`, the key of the
//! alert it acknowledges) for the engine to record on that alert's
//! incident. An engine that ignores `acks` therefore never opens an
//! incident, let alone calls, because of an acknowledgement. Its errors
//! (no `dedup_key`, no contract) are ordinary [`ItemError`]s in `items`.
//!
//! # Bounds
//!
//! Per alert at most [`MAX_LABELS`] labels, annotations and details
//! together; a label name of at most [`MAX_NAME`] bytes; a label value
//! (and the contract, host, key) of at most [`MAX_VALUE`] bytes; an
//! annotation, detail or summary of at most [`MAX_TEXT`] bytes. Over any of
//! them the alert is refused with an item error naming the field (never
//! silently cut). `meta.*` links are cut to [`MAX_VALUE`] instead, since
//! they only help. The body's total size is the HTTP layer's limit.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::alert::{self, Alert, Severity, Source, Status};

/// Most labels, annotations and details one alert may carry.
pub const MAX_LABELS: usize = 64;
/// Longest label name, in bytes.
pub const MAX_NAME: usize = 128;
/// Longest label value, contract, host or key, in bytes.
pub const MAX_VALUE: usize = 1024;
/// Longest annotation, detail or summary, in bytes.
pub const MAX_TEXT: usize = 8 * 1024;

/// What one body held: one entry per alert or trigger/resolve event, in
/// body order, each parsed or refused on its own; and the acknowledge
/// events apart (see the module doc).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub items: Vec<Result<Alert, ItemError>>,
    pub acks: Vec<Ack>,
}

impl Batch {
    /// The alerts that parsed.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.items.iter().filter_map(|i| i.as_ref().ok())
    }

    /// The entries that were refused.
    pub fn errors(&self) -> impl Iterator<Item = &ItemError> {
        self.items.iter().filter_map(|i| i.as_ref().err())
    }
}

/// An `acknowledge` event: the alert it acknowledges, as the sender
/// described it (status `Firing`, label `event_action=acknowledge`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// Its position in the body (`events[index]`).
    pub index: usize,
    pub alert: Alert,
}

/// One alert or event of a body that could not be taken; the others
/// still are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("item {index}: {field}: {detail}")]
pub struct ItemError {
    /// Position in `alerts[]` / `events[]` (0 for a single event).
    pub index: usize,
    /// Where, e.g. `alerts[3].labels.contract`.
    pub field: String,
    /// What is wrong, for the sender.
    pub detail: String,
}

/// A body that cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct BodyError {
    /// Where: a top-level field, or `(body)` for the body itself.
    pub field: String,
    pub detail: String,
}

/// The contract the intake gives a parser for alerts that name none, so
/// the contracts' routing rules (`[[pipeline.routes]]`) can place them
/// after parsing. Parentheses keep it apart from any dialplan's contract.
pub const UNROUTED: &str = "(unrouted)";

/// The field that names the body as a whole.
pub const BODY: &str = "(body)";

/// A Prometheus Alertmanager webhook body (payload version 4).
pub fn alertmanager(
    body: &[u8],
    now_ms: i64,
    default_contract: Option<&str>,
) -> Result<Batch, BodyError> {
    alert_group(body, now_ms, default_contract, Source::Alertmanager)
}

/// A Grafana-managed alerting webhook body (the Alertmanager shape,
/// `version` `"1"`, plus `title`, `state`, `orgId`, `message`, per-alert
/// `values`, `valueString`, `silenceURL`, `dashboardURL`, `panelURL`).
pub fn grafana(
    body: &[u8],
    now_ms: i64,
    default_contract: Option<&str>,
) -> Result<Batch, BodyError> {
    alert_group(body, now_ms, default_contract, Source::Grafana)
}

/// A generic event (PagerDuty Events API v2 semantics), or a batch of
/// them as `{"events": [ … ]}`.
pub fn events(
    body: &[u8],
    now_ms: i64,
    default_contract: Option<&str>,
) -> Result<Batch, BodyError> {
    let root = parse_object(body)?;
    let mut batch = Batch::default();
    match root.get("events") {
        None if root.contains_key("event_action") || root.contains_key("payload") => {
            one_event(&mut batch, 0, &root, "", now_ms, default_contract);
        }
        None | Some(Value::Null) => {
            return Err(BodyError {
                field: "event_action".into(),
                detail: "missing: the body is neither an event nor {\"events\": [...]}".into(),
            })
        }
        Some(Value::Array(list)) => {
            for (i, ev) in list.iter().enumerate() {
                let path = format!("events[{i}]");
                match ev {
                    Value::Object(m) => {
                        one_event(&mut batch, i, m, &path, now_ms, default_contract)
                    }
                    other => batch.items.push(Err(ItemError {
                        index: i,
                        field: path,
                        detail: format!("expected an object, got {}", kind(other)),
                    })),
                }
            }
        }
        Some(other) => {
            return Err(BodyError {
                field: "events".into(),
                detail: format!("expected an array, got {}", kind(other)),
            })
        }
    }
    Ok(batch)
}

// ---- Alertmanager and Grafana ----------------------------------------------

/// What every alert of a group shares.
struct Group<'a> {
    source: Source,
    status: Option<Status>,
    common_labels: BTreeMap<&'a str, &'a str>,
    common_annotations: BTreeMap<&'a str, &'a str>,
    receiver: Option<&'a str>,
    default_contract: Option<&'a str>,
    now_ms: i64,
}

fn alert_group(
    body: &[u8],
    now_ms: i64,
    default_contract: Option<&str>,
    source: Source,
) -> Result<Batch, BodyError> {
    let root = parse_object(body)?;
    let want = match source {
        Source::Grafana => "1",
        _ => "4",
    };
    match root.get("version") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v == want => {}
        Some(Value::String(v)) => {
            return Err(BodyError {
                field: "version".into(),
                detail: format!(
                    "{} webhook version {v:?} is not supported (expected {want:?})",
                    source.as_str()
                ),
            })
        }
        Some(other) => return Err(body_type("version", "a string", other)),
    }
    let body_err = |f: Fault| BodyError {
        field: f.field,
        detail: f.detail,
    };
    let status = match str_field(&root, "", "status").map_err(body_err)? {
        None => None,
        Some(s) => Some(parse_status(s).ok_or_else(|| BodyError {
            field: "status".into(),
            detail: format!("{s:?} is neither \"firing\" nor \"resolved\""),
        })?),
    };
    let group = Group {
        source,
        status,
        common_labels: string_map(&root, "", "commonLabels", MAX_VALUE).map_err(body_err)?,
        common_annotations: string_map(&root, "", "commonAnnotations", MAX_TEXT)
            .map_err(body_err)?,
        receiver: str_field(&root, "", "receiver").map_err(body_err)?,
        default_contract,
        now_ms,
    };
    let alerts = match root.get("alerts") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => {
            let hint = if source == Source::Grafana && root.contains_key("evalMatches") {
                " (legacy Grafana alerting is not supported: use Grafana-managed alerting)"
            } else {
                ""
            };
            return Err(BodyError {
                field: "alerts".into(),
                detail: format!("missing{hint}"),
            });
        }
        Some(other) => return Err(body_type("alerts", "an array", other)),
    };
    let items = alerts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let path = format!("alerts[{i}]");
            group_alert(&group, a, &path).map_err(|f| ItemError {
                index: i,
                field: f.field,
                detail: f.detail,
            })
        })
        .collect();
    Ok(Batch {
        items,
        acks: Vec::new(),
    })
}

fn group_alert(g: &Group, a: &Value, path: &str) -> Result<Alert, Fault> {
    let Value::Object(a) = a else {
        return Err(Fault::new(
            path.to_string(),
            format!("expected an object, got {}", kind(a)),
        ));
    };
    let labels = string_map(a, path, "labels", MAX_VALUE)?;
    let mut annotations = g.common_annotations.clone();
    annotations.extend(string_map(a, path, "annotations", MAX_TEXT)?);
    let count = labels.len() + annotations.len();
    if count > MAX_LABELS {
        return Err(Fault::new(
            join(path, "labels"),
            format!("{count} labels and annotations, more than {MAX_LABELS}"),
        ));
    }

    let status = match str_field(a, path, "status")? {
        Some(s) => parse_status(s).ok_or_else(|| {
            Fault::new(
                join(path, "status"),
                format!("{s:?} is neither \"firing\" nor \"resolved\""),
            )
        })?,
        None => g
            .status
            .ok_or_else(|| Fault::new(join(path, "status"), "missing".into()))?,
    };
    let contract = first([
        labels.get("contract").copied(),
        g.common_labels.get("contract").copied(),
        g.default_contract,
    ])
    .ok_or_else(|| {
        Fault::new(
            join(&join(path, "labels"), "contract"),
            "missing: no label \"contract\" on the alert or in commonLabels, and no routing rule names one".into(),
        )
    })?;
    let host = host_of(|k| labels.get(k).copied()).unwrap_or_default();
    let name = labels.get("alertname").copied().unwrap_or_default();
    let severity = Severity::parse_or_warning(
        first([
            labels.get("severity").copied(),
            labels.get("priority").copied(),
        ])
        .unwrap_or(""),
    );
    let summary = first([
        annotations.get("summary").copied(),
        annotations.get("description").copied(),
        annotations.get("message").copied(),
        Some(name),
    ])
    .unwrap_or_default();
    let key = match str_field(a, path, "fingerprint")? {
        Some(f) if !f.trim().is_empty() => bounded(path, "fingerprint", f.trim(), MAX_VALUE)?,
        _ => format!("lh-{}", digest(labels.iter().flat_map(|(k, v)| [*k, *v]))),
    };
    let starts_ms = time_field(a, path, "startsAt")?;
    let ends_ms = time_field(a, path, "endsAt")?;

    let mut out: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in &annotations {
        out.insert(format!("annotation.{k}"), v.to_string());
    }
    let mut meta = |name: &str, value: &str| {
        if !value.is_empty() {
            out.insert(format!("meta.{name}"), cut(value, MAX_VALUE).to_string());
        }
    };
    for link in [
        "generatorURL",
        "silenceURL",
        "dashboardURL",
        "panelURL",
        "valueString",
    ] {
        if let Some(v) = str_field(a, path, link)? {
            meta(link, v);
        }
    }
    if let Some(v @ Value::Object(m)) = a.get("values") {
        if !m.is_empty() {
            meta("values", &v.to_string());
        }
    }
    if let Some(ms) = ends_ms {
        meta("endsAt", &ms_rfc3339(ms));
    }
    if let Some(r) = g.receiver {
        meta("receiver", r);
    }

    Ok(Alert {
        id: alert::new_id(g.now_ms),
        contract: contract.to_string(),
        source: g.source,
        status,
        key,
        host: host.to_string(),
        name: name.to_string(),
        severity,
        summary: summary.to_string(),
        labels: out,
        starts_ms,
        received_ms: g.now_ms,
    })
}

fn parse_status(s: &str) -> Option<Status> {
    match s {
        "firing" => Some(Status::Firing),
        "resolved" => Some(Status::Resolved),
        _ => None,
    }
}

// ---- events ----------------------------------------------------------------

fn one_event(
    batch: &mut Batch,
    index: usize,
    ev: &Map<String, Value>,
    path: &str,
    now_ms: i64,
    default_contract: Option<&str>,
) {
    let to_item = |f: Fault| ItemError {
        index,
        field: f.field,
        detail: f.detail,
    };
    match event(ev, path, now_ms, default_contract) {
        Ok((alert, true)) => batch.acks.push(Ack { index, alert }),
        Ok((alert, false)) => batch.items.push(Ok(alert)),
        Err(f) => batch.items.push(Err(to_item(f))),
    }
}

/// One event; the `bool` says it is an acknowledgement.
fn event(
    ev: &Map<String, Value>,
    path: &str,
    now_ms: i64,
    default_contract: Option<&str>,
) -> Result<(Alert, bool), Fault> {
    let action = str_field(ev, path, "event_action")?
        .ok_or_else(|| Fault::new(join(path, "event_action"), "missing".into()))?;
    let (status, ack) = match action {
        "trigger" => (Status::Firing, false),
        "resolve" => (Status::Resolved, false),
        "acknowledge" => (Status::Firing, true),
        other => {
            return Err(Fault::new(
                join(path, "event_action"),
                format!("{other:?} is not one of \"trigger\", \"acknowledge\", \"resolve\""),
            ))
        }
    };
    let empty = Map::new();
    let payload_path = join(path, "payload");
    let payload = match ev.get("payload") {
        Some(Value::Object(p)) => p,
        None | Some(Value::Null) if status != Status::Firing || ack => &empty,
        None | Some(Value::Null) => {
            return Err(Fault::new(
                payload_path,
                "missing: a trigger needs a payload".into(),
            ))
        }
        Some(other) => {
            return Err(Fault::new(
                payload_path,
                format!("expected an object, got {}", kind(other)),
            ))
        }
    };
    let p = payload_path.as_str();

    // custom_details: any JSON; an object's entries become labels.
    let details_path = join(p, "custom_details");
    let mut details: BTreeMap<String, String> = BTreeMap::new();
    match payload.get("custom_details") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            if m.len() > MAX_LABELS {
                return Err(Fault::new(
                    details_path,
                    format!("{} details, more than {MAX_LABELS}", m.len()),
                ));
            }
            for (k, v) in m {
                let field = join(&details_path, k);
                check_name(&field, k)?;
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                if text.len() > MAX_TEXT {
                    return Err(too_long(field, text.len(), MAX_TEXT));
                }
                details.insert(k.clone(), text);
            }
        }
        Some(Value::String(s)) => {
            if s.len() > MAX_TEXT {
                return Err(too_long(details_path, s.len(), MAX_TEXT));
            }
            details.insert("details".into(), s.clone());
        }
        Some(other) => {
            let text = other.to_string();
            if text.len() > MAX_TEXT {
                return Err(too_long(details_path, text.len(), MAX_TEXT));
            }
            details.insert("details".into(), text);
        }
    }

    let routing_key = str_field(ev, path, "routing_key")?;
    let contract = first([
        details.get("contract").map(String::as_str),
        routing_key,
        default_contract,
    ])
    .ok_or_else(|| {
        Fault::new(
            join(path, "routing_key"),
            "missing: no contract in routing_key or payload.custom_details.contract, and no routing rule names one".into(),
        )
    })?;
    let contract = bounded(path, "routing_key", contract, MAX_VALUE)?;

    let summary = str_field(payload, p, "summary")?.filter(|s| !s.trim().is_empty());
    let summary = match (summary, status, ack) {
        (Some(s), _, _) => bounded(p, "summary", s, MAX_TEXT)?,
        (None, Status::Firing, false) => {
            return Err(Fault::new(
                join(p, "summary"),
                "missing: a trigger needs a summary".into(),
            ))
        }
        (None, _, true) => "acknowledged".into(),
        (None, _, false) => "resolved".into(),
    };
    let source = str_field(payload, p, "source")?.map(str::trim);
    let component = str_field(payload, p, "component")?;
    let group = str_field(payload, p, "group")?;
    let class = str_field(payload, p, "class")?;
    let severity = str_field(payload, p, "severity")?;
    let starts_ms = time_field(payload, p, "timestamp")?;

    let dedup = str_field(ev, path, "dedup_key")?.filter(|k| !k.trim().is_empty());
    let key = match dedup {
        Some(k) => bounded(path, "dedup_key", k.trim(), MAX_VALUE)?,
        None if status == Status::Firing && !ack => format!(
            "ev-{}",
            digest([
                contract.as_str(),
                source.unwrap_or(""),
                component.unwrap_or(""),
                group.unwrap_or(""),
                class.unwrap_or(""),
                &summary,
            ])
        ),
        None => {
            return Err(Fault::new(
                join(path, "dedup_key"),
                format!("missing: {action} needs the dedup_key of the trigger"),
            ))
        }
    };

    let host = host_of(|k| details.get(k).map(String::as_str))
        .or(source.filter(|s| !s.is_empty()))
        .unwrap_or_default();
    let host = bounded(p, "source", host, MAX_VALUE)?;
    let name = first([class, component]).unwrap_or(&summary);
    let name = bounded(p, "class", name, MAX_TEXT)?;

    let mut labels = details;
    let mut set = |k: &str, v: Option<&str>| -> Result<(), Fault> {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            if v.len() > MAX_VALUE {
                return Err(too_long(join(p, k), v.len(), MAX_VALUE));
            }
            labels.insert(k.to_string(), v.to_string());
        }
        Ok(())
    };
    set("component", component)?;
    set("group", group)?;
    set("class", class)?;
    set("event_source", source)?;
    labels.insert("event_action".into(), action.into());
    if !labels.contains_key("service") {
        if let Some(c) = component.filter(|c| !c.is_empty()) {
            labels.insert("service".into(), c.into());
        }
    }
    if let Some(s) = severity {
        labels.insert("event_severity".into(), cut(s, MAX_VALUE).into());
    }

    Ok((
        Alert {
            id: alert::new_id(now_ms),
            contract,
            source: Source::Events,
            status,
            key,
            host,
            name,
            severity: Severity::parse_or_warning(severity.unwrap_or("")),
            summary,
            labels,
            starts_ms,
            received_ms: now_ms,
        },
        ack,
    ))
}

// ---- shared helpers --------------------------------------------------------

/// An error inside one alert, before its index is attached.
struct Fault {
    field: String,
    detail: String,
}

impl Fault {
    fn new(field: String, detail: String) -> Fault {
        Fault { field, detail }
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, BodyError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(BodyError {
            field: BODY.into(),
            detail: format!("expected a JSON object, got {}", kind(&other)),
        }),
        Err(e) => Err(BodyError {
            field: BODY.into(),
            detail: format!(
                "not JSON: {} (line {}, column {})",
                json_problem(&e),
                e.line(),
                e.column()
            ),
        }),
    }
}

/// serde_json's message without its own " at line L column C" tail.
fn json_problem(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn body_type(field: &str, want: &str, got: &Value) -> BodyError {
    BodyError {
        field: field.into(),
        detail: format!("expected {want}, got {}", kind(got)),
    }
}

/// `base.key`, or `base["odd key"]` when the key is not a plain word;
/// long keys are shortened so an error stays readable.
fn join(base: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let shown = cut(key, 64);
    let shown = if shown.len() < key.len() {
        format!("{shown}…")
    } else {
        shown.to_string()
    };
    match (plain, base.is_empty()) {
        (true, true) => shown,
        (true, false) => format!("{base}.{shown}"),
        (false, _) => format!(
            "{base}[{}]",
            serde_json::to_string(&shown).unwrap_or_default()
        ),
    }
}

/// A string field: absent or null is `None`, another type an error.
fn str_field<'a>(
    m: &'a Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<&'a str>, Fault> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Fault::new(
            join(path, key),
            format!("expected a string, got {}", kind(other)),
        )),
    }
}

/// An object of strings (labels, annotations), each value at most `max`
/// bytes and each name a sane label name.
fn string_map<'a>(
    m: &'a Map<String, Value>,
    path: &str,
    key: &str,
    max: usize,
) -> Result<BTreeMap<&'a str, &'a str>, Fault> {
    let here = join(path, key);
    let obj = match m.get(key) {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(o)) => o,
        Some(other) => {
            return Err(Fault::new(
                here,
                format!("expected an object of strings, got {}", kind(other)),
            ))
        }
    };
    if obj.len() > MAX_LABELS {
        return Err(Fault::new(
            here,
            format!("{} entries, more than {MAX_LABELS}", obj.len()),
        ));
    }
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let field = join(&here, k);
        check_name(&field, k)?;
        let Value::String(s) = v else {
            return Err(Fault::new(
                field,
                format!("expected a string, got {}", kind(v)),
            ));
        };
        if s.len() > max {
            return Err(too_long(field, s.len(), max));
        }
        out.insert(k.as_str(), s.as_str());
    }
    Ok(out)
}

fn check_name(field: &str, name: &str) -> Result<(), Fault> {
    if name.is_empty() {
        return Err(Fault::new(field.into(), "empty label name".into()));
    }
    if name.len() > MAX_NAME {
        return Err(Fault::new(
            field.into(),
            format!("label name of {} bytes, more than {MAX_NAME}", name.len()),
        ));
    }
    Ok(())
}

fn too_long(field: String, len: usize, max: usize) -> Fault {
    Fault::new(field, format!("{len} bytes, more than {max}"))
}

/// `value` if it fits in `max` bytes, else an error on `path.key`.
fn bounded(path: &str, key: &str, value: &str, max: usize) -> Result<String, Fault> {
    if value.len() > max {
        return Err(too_long(join(path, key), value.len(), max));
    }
    Ok(value.to_string())
}

/// An RFC 3339 time field as epoch ms; Go's zero time is `None`.
fn time_field(m: &Map<String, Value>, path: &str, key: &str) -> Result<Option<i64>, Fault> {
    let Some(s) = str_field(m, path, key)? else {
        return Ok(None);
    };
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let t = DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map_err(|_| {
            Fault::new(
                join(path, key),
                format!("{:?} is not an RFC 3339 time", cut(s, 64)),
            )
        })?;
    if t.year() <= 1 {
        return Ok(None);
    }
    Ok(Some(t.timestamp_millis()))
}

fn ms_rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The first value that is there and not blank, trimmed.
fn first<const N: usize>(candidates: [Option<&str>; N]) -> Option<&str> {
    candidates
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
}

/// The host an alert is about, from the usual label names.
fn host_of<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    first([get("host")])
        .or_else(|| get("instance").map(instance_host).filter(|h| !h.is_empty()))
        .or_else(|| first([get("hostname"), get("node"), get("nodename")]))
}

/// `10.0.0.5:9100` → `10.0.0.5`, `[::1]:9100` → `::1`,
/// `https://user@shop.example:443/health` → `shop.example`; a bare IPv6
/// address stays as it is.
pub fn instance_host(instance: &str) -> &str {
    let s = instance.trim();
    let s = s.find("://").map_or(s, |i| &s[i + 3..]);
    let s = s.split(['/', '?', '#']).next().unwrap_or(s);
    let s = s.rsplit_once('@').map_or(s, |(_, h)| h);
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']').map_or(s, |(h, _)| h);
    }
    match s.split_once(':') {
        Some((h, port)) if !port.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => s,
    }
}

/// The longest prefix of `s` of at most `max` bytes on a char boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A stable key from parts: SHA-256 over each part prefixed with its
/// length, first 16 bytes in hex.
fn digest<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
#[path = "sources_tests.rs"]
mod tests;
