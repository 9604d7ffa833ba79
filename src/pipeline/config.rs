//! A contract's `[pipeline]` section, in its dialplan file: which alerts
//! matter, the wait window, suppression, heartbeats and mail rules.
//! Checked at load like the rest of the dialplan: every problem names
//! the file, line and column, and a broken file never replaces a
//! running one.

use std::path::Path;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::alert::{Alert, Severity};
use crate::ivr::dialplan::DialplanError;

/// One label condition, written as Alertmanager writes matchers:
/// `name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`
/// (regexes are anchored, as in Alertmanager).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

impl Matcher {
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let s = s.trim();
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| format!("matcher {s:?} has no operator (=, !=, =~, !~)"))?;
        let (name, rest) = s.split_at(name_end);
        if name.is_empty() {
            return Err(format!("matcher {s:?} has no label name"));
        }
        let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
            (MatchOp::Re, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (MatchOp::NotRe, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (MatchOp::Ne, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (MatchOp::Eq, r)
        } else {
            return Err(format!(
                "matcher {s:?}: expected =, !=, =~ or !~ after {name:?}"
            ));
        };
        let rest = rest.trim();
        let value = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .ok_or_else(|| format!("matcher {s:?}: the value must be in double quotes"))?
            .replace("\\\"", "\"");
        let re = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("matcher {s:?}: bad regular expression: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value,
            re,
        })
    }

    /// A missing label reads as empty, as in Alertmanager.
    pub fn matches(&self, alert: &Alert) -> bool {
        let v = alert.label(&self.name).unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

pub fn all_match(matchers: &[Matcher], alert: &Alert) -> bool {
    matchers.iter().all(|m| m.matches(alert))
}

/// What a rule does with the alerts it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Open or join an incident; call when the wait window ends.
    Call,
    /// Keep the alert on record; no incident, no call.
    Record,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub matchers: Vec<Matcher>,
    pub min_severity: Option<Severity>,
    pub action: RuleAction,
    /// This rule's own wait window (0: call at once).
    pub wait_ms: Option<i64>,
    /// 1-based line in the file, for explaining decisions.
    pub line: usize,
}

/// `[[pipeline.routes]]`: an alert that names no contract (no `contract`
/// label or field, no `routing_key`, no `?contract=`) and whose labels
/// all match is this contract's. `=~` matchers are anchored regular
/// expressions, as in Alertmanager.
#[derive(Debug, Clone)]
pub struct Route {
    pub matchers: Vec<Matcher>,
    pub line: usize,
}

/// The contract an alert naming none belongs to, and the line of the
/// route that decided: the first contract in name order with a matching
/// route (name order, so the answer never depends on load order).
pub fn route<'a>(
    contracts: &'a std::collections::HashMap<String, std::sync::Arc<PipelineConfig>>,
    alert: &Alert,
) -> Option<(&'a str, usize)> {
    let mut names: Vec<&String> = contracts.keys().collect();
    names.sort();
    names.into_iter().find_map(|name| {
        contracts[name]
            .routes
            .iter()
            .find(|r| all_match(&r.matchers, alert))
            .map(|r| (name.as_str(), r.line))
    })
}

/// Alerts that mean the monitoring path itself is broken: while one is
/// firing, host incidents of the contract with the same values of the
/// `equal` labels are held under a monitoring-path incident.
#[derive(Debug, Clone)]
pub struct Inhibit {
    pub source: Vec<Matcher>,
    pub equal: Vec<String>,
}

/// A source that must keep sending (Alertmanager's Watchdog, a Zabbix
/// trigger, a mail): silence longer than `interval` raises an incident
/// for the monitoring centre.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub name: String,
    pub matchers: Vec<Matcher>,
    pub interval_ms: i64,
}

/// What happens at the recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryNotice {
    /// Record it and close the ticket.
    #[default]
    None,
    /// A short call to the contacts saying it recovered, then close.
    Call,
}

/// After a first-level action fixed the fault and its verify passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSuccess {
    /// Nobody is called; the customer notices (mail) say what was done.
    #[default]
    Mail,
    /// The contacts are called to be told what was done.
    Call,
}

/// `[[pipeline.auto_actions]]`: a new incident whose first alert matches
/// runs the dialplan's `action` when its wait window ends, before anyone
/// is called.
#[derive(Debug, Clone)]
pub struct AutoAction {
    pub matchers: Vec<Matcher>,
    /// A key of the dialplan's `[actions]`.
    pub action: String,
    pub on_success: OnSuccess,
    pub line: usize,
}

/// How a contract's alert mails are read.
#[derive(Debug, Clone, Default)]
pub struct MailConfig {
    /// Recipient addresses (lower case) that belong to this contract.
    pub to: Vec<String>,
    pub rules: Vec<MailRule>,
}

/// One way of reading a mail: regular expressions on the subject and the
/// body, with named groups `host`, `service`, `state`, `severity`
/// (`summary` too; the subject by default). The first rule whose
/// expressions all match wins.
#[derive(Debug, Clone)]
pub struct MailRule {
    pub from: Option<Regex>,
    pub subject: Option<Regex>,
    pub body: Option<Regex>,
    /// `state` values (anchored, case-insensitive) that mean recovery.
    pub recovery: Regex,
    /// Severity when the mail does not say.
    pub severity: Severity,
    pub line: usize,
}

/// A contract's pipeline, checked.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub wait_ms: i64,
    /// A new occurrence this soon after a close reopens the old ticket.
    pub reopen_ms: i64,
    pub recovery: RecoveryNotice,
    /// Below this, alerts are only recorded (when no rule decides).
    pub min_severity: Severity,
    pub rules: Vec<Rule>,
    /// Labels whose values make the dedupe key (default: the source's
    /// own key: fingerprint, `dedup_key`, host + service).
    pub dedupe: Vec<String>,
    /// This many hosts failing inside one wait window is the monitoring
    /// path, not the customer (0: never).
    pub path_threshold: usize,
    /// Count hosts per value of this label (e.g. `site`), not per
    /// contract.
    pub path_group: Option<String>,
    /// Where monitoring-path and heartbeat incidents go.
    pub monitoring_contract: Option<String>,
    pub inhibit: Vec<Inhibit>,
    pub heartbeats: Vec<Heartbeat>,
    pub mail: MailConfig,
    /// E-mail notices to the customer (`[pipeline.notices]`).
    pub notices: super::notice_mail::NoticeConfig,
    /// First-level actions run before anyone is called.
    pub auto_actions: Vec<AutoAction>,
    /// The contract's ticket system (`[pipeline.ticket]`; embedded when
    /// absent).
    pub ticket: Option<crate::tickets::config::TicketConfig>,
    /// Alerts naming no contract that belong to this one.
    pub routes: Vec<Route>,
    /// An action (of the dialplan's `[actions]`) run when a called
    /// incident recovers; its result is on the ticket before it closes.
    pub recovery_verify: Option<String>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            wait_ms: 60_000,
            reopen_ms: 0,
            recovery: RecoveryNotice::None,
            min_severity: Severity::Warning,
            rules: Vec::new(),
            dedupe: Vec::new(),
            path_threshold: 0,
            path_group: None,
            monitoring_contract: None,
            inhibit: Vec::new(),
            heartbeats: Vec::new(),
            mail: MailConfig::default(),
            notices: Default::default(),
            auto_actions: Vec::new(),
            ticket: None,
            routes: Vec::new(),
            recovery_verify: None,
        }
    }
}

/// A dialplan's pipeline, shared. Two are equal when they are the same
/// load (a dialplan compares by what it was loaded as), and it shows in
/// a dialplan's JSON as its main settings.
#[derive(Debug, Clone)]
pub struct Shared(pub std::sync::Arc<PipelineConfig>);

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Shared {}

impl serde::Serialize for Shared {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = &self.0;
        serde_json::json!({
            "wait_ms": p.wait_ms,
            "reopen_ms": p.reopen_ms,
            "recovery": match p.recovery { RecoveryNotice::None => "none", RecoveryNotice::Call => "call" },
            "min_severity": p.min_severity.as_str(),
            "rules": p.rules.len(),
            "path_threshold": p.path_threshold,
            "monitoring_contract": p.monitoring_contract,
            "heartbeats": p.heartbeats.iter().map(|h| &h.name).collect::<Vec<_>>(),
            "mail_to": p.mail.to,
        })
        .serialize(s)
    }
}

impl std::ops::Deref for Shared {
    type Target = PipelineConfig;
    fn deref(&self) -> &PipelineConfig {
        &self.0
    }
}

/// What the rules decided for one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Form or join an incident, calling after this wait.
    Call {
        wait_ms: i64,
        rule_line: Option<usize>,
    },
    Record {
        why: String,
    },
}

impl PipelineConfig {
    pub fn decide(&self, alert: &Alert) -> Decision {
        for r in &self.rules {
            if !all_match(&r.matchers, alert) {
                continue;
            }
            if r.min_severity.is_some_and(|m| alert.severity < m) {
                continue;
            }
            return match r.action {
                RuleAction::Call => Decision::Call {
                    wait_ms: r.wait_ms.unwrap_or(self.wait_ms),
                    rule_line: Some(r.line),
                },
                RuleAction::Record => Decision::Record {
                    why: format!("rule at line {} records it", r.line),
                },
            };
        }
        if !self.rules.is_empty() {
            return Decision::Record {
                why: "no rule matches".into(),
            };
        }
        if alert.severity < self.min_severity {
            return Decision::Record {
                why: format!(
                    "severity {} is below {}",
                    alert.severity.as_str(),
                    self.min_severity.as_str()
                ),
            };
        }
        Decision::Call {
            wait_ms: self.wait_ms,
            rule_line: None,
        }
    }

    /// The key that links an alert's firing and recovery.
    pub fn dedupe_key(&self, alert: &Alert) -> String {
        if self.dedupe.is_empty() {
            return alert.key.clone();
        }
        self.dedupe
            .iter()
            .map(|l| alert.label(l).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\u{1f}")
    }

    pub fn heartbeat_for(&self, alert: &Alert) -> Option<&Heartbeat> {
        self.heartbeats
            .iter()
            .find(|h| all_match(&h.matchers, alert))
    }
}

// ---- the file as written ---------------------------------------------------

#[derive(Deserialize)]
struct RawFile {
    pipeline: Option<RawPipeline>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    wait: Option<Spanned<String>>,
    reopen: Option<Spanned<String>>,
    #[serde(default)]
    recovery: RecoveryNotice,
    recovery_verify: Option<String>,
    min_severity: Option<Spanned<String>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    dedupe: Vec<String>,
    #[serde(default)]
    path_threshold: usize,
    path_group: Option<String>,
    monitoring_contract: Option<String>,
    #[serde(default)]
    inhibit: Vec<RawInhibit>,
    #[serde(default)]
    heartbeats: Vec<RawHeartbeat>,
    mail: Option<RawMail>,
    ticket: Option<Spanned<crate::tickets::config::RawTicket>>,
    notices: Option<super::notice_mail::RawNotices>,
    #[serde(default)]
    auto_actions: Vec<Spanned<RawAutoAction>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(rename = "match")]
    matchers: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutoAction {
    #[serde(rename = "match", default)]
    matchers: Vec<Spanned<String>>,
    action: String,
    #[serde(default)]
    on_success: OnSuccess,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match", default)]
    matchers: Vec<Spanned<String>>,
    min_severity: Option<Spanned<String>>,
    action: RuleAction,
    wait: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInhibit {
    source: Vec<Spanned<String>>,
    #[serde(default)]
    equal: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeartbeat {
    name: String,
    #[serde(rename = "match")]
    matchers: Vec<Spanned<String>>,
    interval: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMail {
    #[serde(default)]
    to: Vec<Spanned<String>>,
    #[serde(default)]
    rules: Vec<Spanned<RawMailRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailRule {
    from: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
    recovery: Option<Spanned<String>>,
    severity: Option<Spanned<String>>,
}

struct Check<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<DialplanError>,
}

impl Check<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let before = &self.text[..span.start.min(self.text.len())];
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        self.errors.push(DialplanError {
            file: self.file.to_path_buf(),
            line: self.line(span.start),
            column,
            message: message.into(),
        });
    }

    fn duration(&mut self, v: &Spanned<String>, what: &str, zero_ok: bool) -> i64 {
        match crate::util::parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.err(v.span(), format!("{what} must be more than 0"));
                0
            }
            Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
            Err(e) => {
                self.err(v.span(), format!("{what}: {e}"));
                0
            }
        }
    }

    fn severity(&mut self, v: &Spanned<String>, what: &str) -> Severity {
        Severity::parse(v.get_ref()).unwrap_or_else(|| {
            self.err(
                v.span(),
                format!(
                    "{what}: unknown severity {:?} (critical, major, minor, warning, info)",
                    v.get_ref()
                ),
            );
            Severity::Warning
        })
    }

    fn matchers(&mut self, list: &[Spanned<String>], what: &str) -> Vec<Matcher> {
        list.iter()
            .filter_map(|m| match Matcher::parse(m.get_ref()) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.err(m.span(), format!("{what}: {e}"));
                    None
                }
            })
            .collect()
    }

    fn regex(&mut self, v: &Spanned<String>, what: &str) -> Option<Regex> {
        match regex::RegexBuilder::new(v.get_ref())
            .size_limit(1 << 20)
            .build()
        {
            Ok(r) => Some(r),
            Err(e) => {
                self.err(v.span(), format!("{what}: bad regular expression: {e}"));
                None
            }
        }
    }
}

/// Read the `[pipeline]` section of a dialplan file (`None` when it has
/// none).
pub fn load(text: &str, file: &Path) -> Result<Option<PipelineConfig>, Vec<DialplanError>> {
    let raw: RawFile = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let mut c = Check {
                file,
                text,
                errors: Vec::new(),
            };
            c.err(
                e.span().unwrap_or(0..0),
                format!("pipeline: {}", e.message()),
            );
            return Err(c.errors);
        }
    };
    let Some(p) = raw.pipeline else {
        return Ok(None);
    };
    let mut c = Check {
        file,
        text,
        errors: Vec::new(),
    };
    let d = PipelineConfig::default();
    let wait_ms = p
        .wait
        .as_ref()
        .map_or(d.wait_ms, |w| c.duration(w, "pipeline.wait", true));
    let reopen_ms = p
        .reopen
        .as_ref()
        .map_or(d.reopen_ms, |w| c.duration(w, "pipeline.reopen", true));
    let min_severity = p
        .min_severity
        .as_ref()
        .map_or(d.min_severity, |s| c.severity(s, "pipeline.min_severity"));
    let mut rules = Vec::new();
    for r in &p.rules {
        let line = c.line(r.span().start);
        let r = r.get_ref();
        let matchers = c.matchers(&r.matchers, "pipeline.rules.match");
        let min_severity = r
            .min_severity
            .as_ref()
            .map(|s| c.severity(s, "pipeline.rules.min_severity"));
        let wait_ms = r
            .wait
            .as_ref()
            .map(|w| c.duration(w, "pipeline.rules.wait", true));
        rules.push(Rule {
            matchers,
            min_severity,
            action: r.action,
            wait_ms,
            line,
        });
    }
    let inhibit = p
        .inhibit
        .iter()
        .map(|i| Inhibit {
            source: c.matchers(&i.source, "pipeline.inhibit.source"),
            equal: i.equal.clone(),
        })
        .collect();
    let mut heartbeats: Vec<Heartbeat> = Vec::new();
    for h in &p.heartbeats {
        let interval_ms = c.duration(&h.interval, "pipeline.heartbeats.interval", false);
        if heartbeats.iter().any(|o| o.name == h.name) {
            c.err(
                h.interval.span(),
                format!("pipeline.heartbeats: the name {:?} is used twice", h.name),
            );
        }
        heartbeats.push(Heartbeat {
            name: h.name.clone(),
            matchers: c.matchers(&h.matchers, "pipeline.heartbeats.match"),
            interval_ms,
        });
    }
    let mut mail = MailConfig::default();
    let default_recovery =
        Regex::new("(?i)^(?:recovery|recovered|resolved|ok|up|復旧)$").expect("fixed regex");
    if let Some(m) = &p.mail {
        for to in &m.to {
            let a = to.get_ref().trim().to_ascii_lowercase();
            let ok = a.split_once('@').is_some_and(|(l, d)| {
                !l.is_empty()
                    && !d.is_empty()
                    && !a.contains(|ch: char| ch.is_whitespace() || ch == '<' || ch == '>')
            });
            if ok {
                mail.to.push(a);
            } else {
                c.err(
                    to.span(),
                    format!("pipeline.mail.to: {:?} is not a mail address", to.get_ref()),
                );
            }
        }
        for r in &m.rules {
            let line = c.line(r.span().start);
            let r = r.get_ref();
            if r.subject.is_none() && r.body.is_none() {
                c.err(
                    0..0,
                    format!("pipeline.mail.rules (line {line}): a rule needs subject or body"),
                );
            }
            let recovery = match &r.recovery {
                Some(v) => match regex::RegexBuilder::new(&format!("^(?:{})$", v.get_ref()))
                    .case_insensitive(true)
                    .build()
                {
                    Ok(re) => re,
                    Err(e) => {
                        c.err(
                            v.span(),
                            format!("pipeline.mail.rules.recovery: bad regular expression: {e}"),
                        );
                        continue;
                    }
                },
                None => default_recovery.clone(),
            };
            mail.rules.push(MailRule {
                from: r
                    .from
                    .as_ref()
                    .and_then(|v| c.regex(v, "pipeline.mail.rules.from")),
                subject: r
                    .subject
                    .as_ref()
                    .and_then(|v| c.regex(v, "pipeline.mail.rules.subject")),
                body: r
                    .body
                    .as_ref()
                    .and_then(|v| c.regex(v, "pipeline.mail.rules.body")),
                recovery,
                severity: r.severity.as_ref().map_or(Severity::Warning, |s| {
                    c.severity(s, "pipeline.mail.rules.severity")
                }),
                line,
            });
        }
    }
    let notices = match p.notices.as_ref().map(super::notice_mail::check) {
        None => Default::default(),
        Some(Ok(n)) => n,
        Some(Err(errs)) => {
            for (span, m) in errs {
                c.err(span, m);
            }
            Default::default()
        }
    };
    let mut auto_actions = Vec::new();
    for a in &p.auto_actions {
        let line = c.line(a.span().start);
        let r = a.get_ref();
        auto_actions.push(AutoAction {
            matchers: c.matchers(&r.matchers, "pipeline.auto_actions.match"),
            action: r.action.clone(),
            on_success: r.on_success,
            line,
        });
    }
    let mut routes = Vec::new();
    for r in &p.routes {
        let line = c.line(r.span().start);
        if r.get_ref().matchers.is_empty() {
            // A route matching everything would take every other
            // sender's mistakes too.
            c.err(
                r.span(),
                "pipeline.routes: a route needs at least one matcher",
            );
        }
        routes.push(Route {
            matchers: c.matchers(&r.get_ref().matchers, "pipeline.routes.match"),
            line,
        });
    }
    let ticket = p
        .ticket
        .as_ref()
        .and_then(|t| match crate::tickets::config::check(t.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                c.err(t.span(), e);
                None
            }
        });
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Some(PipelineConfig {
        ticket,
        wait_ms,
        reopen_ms,
        recovery: p.recovery,
        min_severity,
        rules,
        dedupe: p.dedupe,
        path_threshold: p.path_threshold,
        path_group: p.path_group,
        monitoring_contract: p.monitoring_contract,
        inhibit,
        heartbeats,
        mail,
        notices,
        auto_actions,
        routes,
        recovery_verify: p.recovery_verify,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::alert::{Source, Status};

    pub(crate) fn alert(host: &str, name: &str, sev: Severity) -> Alert {
        Alert {
            id: "al_1".into(),
            contract: "acme".into(),
            source: Source::Alertmanager,
            status: Status::Firing,
            key: format!("{host}/{name}"),
            host: host.into(),
            name: name.into(),
            severity: sev,
            summary: "s".into(),
            labels: [("site".to_string(), "tokyo".to_string())].into(),
            starts_ms: None,
            received_ms: 0,
        }
    }

    #[test]
    fn matchers_read_like_alertmanager() {
        let a = alert("web-01", "HostDown", Severity::Critical);
        for (m, want) in [
            (r#"alertname="HostDown""#, true),
            (r#"alertname!="HostDown""#, false),
            (r#"host=~"web-.*""#, true),
            (r#"host=~"web""#, false),
            (r#"site!~"osaka|nagoya""#, true),
            (r#"missing="""#, true),
        ] {
            assert_eq!(Matcher::parse(m).unwrap().matches(&a), want, "{m}");
        }
        assert!(Matcher::parse("alertname").is_err());
        assert!(Matcher::parse("x=unquoted").is_err());
        assert!(Matcher::parse(r#"x=~"(""#).is_err());
    }

    #[test]
    fn rules_decide_in_order() {
        let text = r#"
contract = "acme"
[pipeline]
wait = "30s"
[[pipeline.rules]]
match = ['alertname="Watchdog"']
action = "record"
[[pipeline.rules]]
match = ['alertname=~"Host.*"']
min_severity = "major"
action = "call"
wait = "0s"
[[pipeline.rules]]
match = []
action = "call"
"#;
        let p = load(text, Path::new("a.toml")).unwrap().unwrap();
        assert_eq!(p.wait_ms, 30_000);
        let d = |n, s| p.decide(&alert("h", n, s));
        assert!(matches!(
            d("Watchdog", Severity::Critical),
            Decision::Record { .. }
        ));
        assert_eq!(
            d("HostDown", Severity::Critical),
            Decision::Call {
                wait_ms: 0,
                rule_line: Some(8)
            }
        );
        assert_eq!(
            d("HostDown", Severity::Minor),
            Decision::Call {
                wait_ms: 30_000,
                rule_line: Some(13)
            }
        );
    }

    #[test]
    fn errors_name_the_line() {
        let text = "contract = \"x\"\n[pipeline]\nwait = \"soon\"\n[[pipeline.rules]]\nmatch = ['a~\"b\"']\naction = \"call\"\n[pipeline.mail]\nto = [\"nobody\"]\n";
        let e = load(text, Path::new("x.toml")).unwrap_err();
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 5, 8], "{e:?}");
        let e = load("[pipeline]\nwiat = \"1s\"\n", Path::new("x.toml")).unwrap_err();
        assert_eq!(e[0].line, 2);
        assert!(e[0].message.contains("wiat"), "{}", e[0].message);
    }

    #[test]
    fn routes_pick_a_contract_by_regular_expression_in_name_order() {
        let load_as = |contract: &str, extra: &str| {
            let text = format!("contract = \"{contract}\"\n[pipeline]\n{extra}");
            std::sync::Arc::new(load(&text, Path::new("r.toml")).unwrap().unwrap())
        };
        let contracts = std::collections::HashMap::from([
            (
                "zeta".to_string(),
                load_as(
                    "zeta",
                    "[[pipeline.routes]]\nmatch = ['host=~\"web-[0-9]+\\.acme\\.example\"']\n",
                ),
            ),
            (
                "acme".to_string(),
                load_as(
                    "acme",
                    "[[pipeline.routes]]\nmatch = ['host=~\"db-.*\"', 'site=\"tokyo\"']\n\
                     [[pipeline.routes]]\nmatch = ['host=~\"web-.*\"']\n",
                ),
            ),
            ("none".to_string(), load_as("none", "")),
        ]);
        let a = |host: &str| alert(host, "HostDown", Severity::Critical);
        // Both acme (line 5) and zeta match: acme comes first by name.
        assert_eq!(
            route(&contracts, &a("web-01.acme.example")),
            Some(("acme", 5))
        );
        assert_eq!(route(&contracts, &a("db-9")), Some(("acme", 3)));
        let mut osaka = a("db-9");
        osaka.labels.insert("site".into(), "osaka".into());
        assert_eq!(route(&contracts, &osaka), None);
        assert_eq!(route(&contracts, &a("mail-1")), None);
        // Anchored: a prefix is not a match.
        let only_zeta =
            std::collections::HashMap::from([("zeta".to_string(), contracts["zeta"].clone())]);
        assert_eq!(
            route(&only_zeta, &a("web-12.acme.example")),
            Some(("zeta", 3))
        );
        assert_eq!(route(&only_zeta, &a("web-12.acme.example.evil")), None);
        // A route with no matcher, or a broken expression, is refused
        // with its line.
        let e = load(
            "contract = \"x\"\n[pipeline]\n[[pipeline.routes]]\nmatch = []\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(e[0].message.contains("at least one matcher"), "{e:?}");
        let e = load(
            "contract = \"x\"\n[pipeline]\n[[pipeline.routes]]\nmatch = ['host=~\"(\"']\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert_eq!(e[0].line, 4, "{e:?}");
        assert!(e[0].message.contains("pipeline.routes.match"), "{e:?}");
    }

    #[test]
    fn without_rules_the_severity_floor_decides() {
        let p = PipelineConfig::default();
        assert!(matches!(
            p.decide(&alert("h", "x", Severity::Info)),
            Decision::Record { .. }
        ));
        assert!(matches!(
            p.decide(&alert("h", "x", Severity::Warning)),
            Decision::Call { .. }
        ));
    }
}
