//! From a contract's action, a flow and the alert's values to exactly what
//! will run: every argv, host, URL and body. Linking (at load) checks what
//! can be known from the files; resolving (at run and dry-run alike)
//! validates the values and fills the templates. A value is substituted
//! into one argv element, one URL part or one JSON string, never into a
//! string a shell reads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::flow::{check_placeholders, Flow, Flows, ParamKind, Phase, Step, StepKind};
use super::inventory::{Inventory, SshTarget};
use super::validate::check_value;
use super::ActionError;
use crate::ivr::dialplan::{render, template_variables, Action};

/// Where an action's parameter value comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamSource {
    /// Written in the dialplan.
    Fixed(String),
    /// `{name}`: the notification's field or variable `name`.
    Alert(String),
}

impl ParamSource {
    pub fn parse(s: &str) -> ParamSource {
        match s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            Some(v) if !v.contains(['{', '}']) => ParamSource::Alert(v.to_string()),
            _ => ParamSource::Fixed(s.to_string()),
        }
    }
}

/// Check an action against its flow and the contract's inventory, and
/// return the flow with the contract's step overrides in place.
pub fn link(
    action: &Action,
    inv: &Inventory,
    variables: &[String],
    flows: &Flows,
) -> Result<Arc<Flow>, Vec<String>> {
    let mut errs = Vec::new();
    let Some(flow) = flows.get(&action.flow) else {
        let known: Vec<&str> = flows.0.keys().map(String::as_str).collect();
        return Err(vec![format!(
            "action {:?}: unknown flow {:?} (flows in dialplans/flows/: {})",
            action.name,
            action.flow,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )]);
    };
    let a = &action.name;
    for p in action.params.keys() {
        if !flow.params.contains_key(p) {
            errs.push(format!(
                "action {a:?}: flow {:?} has no parameter {p:?} (it has: {})",
                flow.name,
                flow.params.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let mut hosts: Vec<String> = Vec::new();
    for (p, spec) in &flow.params {
        match action.params.get(p) {
            None => errs.push(format!(
                "action {a:?}: parameter {p:?} of flow {:?} is not set (give a value or \"{{host}}\"-style alert field in params)",
                flow.name
            )),
            Some(ParamSource::Fixed(v)) => {
                if let Err(why) = validate_param(p, &spec.kind, v, inv) {
                    errs.push(format!("action {a:?}: {why}"));
                }
                if matches!(spec.kind, ParamKind::Host) {
                    hosts.push(v.clone());
                }
            }
            Some(ParamSource::Alert(var)) => {
                if !crate::ivr::dialplan::BUILTIN_VARIABLES.contains(&var.as_str())
                    && !variables.contains(var)
                {
                    errs.push(format!(
                        "action {a:?}: parameter {p:?} takes {{{var}}}, which is not an alert field or declared variable"
                    ));
                }
                if matches!(spec.kind, ParamKind::Host) {
                    if inv.hosts.is_empty() {
                        errs.push(format!(
                            "action {a:?}: parameter {p:?} takes a host from the alert but the contract's [inventory] has no hosts"
                        ));
                    }
                    hosts.extend(inv.hosts.keys().cloned());
                }
                if matches!(spec.kind, ParamKind::Service) && inv.services.is_empty() {
                    errs.push(format!(
                        "action {a:?}: parameter {p:?} takes a service from the alert but the contract's [inventory] lists no services"
                    ));
                }
            }
        }
    }
    let mut flow = (**flow).clone();
    for (name, over) in &action.overrides {
        match flow.steps.iter_mut().find(|s| &s.name == name) {
            None => errs.push(format!(
                "action {a:?}: override of step {name:?}, which flow {:?} does not have (steps: {})",
                flow.name,
                flow.steps
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(step) => {
                let mut s = over.clone();
                s.name = name.clone();
                s.phase = step.phase;
                if !s.written.timeout {
                    s.timeout = step.timeout;
                }
                if !s.written.retries {
                    s.retries = step.retries;
                }
                if !s.written.interval {
                    s.interval = step.interval;
                }
                check_placeholders(&s.kind, &flow.params, name, &mut |m| {
                    errs.push(format!("action {a:?}: override: {m}"))
                });
                *step = s;
            }
        }
    }
    for step in &flow.steps {
        let step_hosts: Vec<String> = match &step.kind {
            StepKind::Ssh { host, .. } | StepKind::TcpCheck { host, .. } => {
                if host.starts_with('{') {
                    hosts.clone()
                } else {
                    vec![host.clone()]
                }
            }
            _ => continue,
        };
        for h in step_hosts {
            if !inv.hosts.contains_key(&h) {
                errs.push(format!(
                    "action {a:?}: step {:?} ({}) names host {h:?}, which is not in the contract's inventory",
                    step.name, step.origin
                ));
                continue;
            }
            if let StepKind::Ssh { argv, argv_os, .. } = &step.kind {
                match inv.ssh_target(&h) {
                    Err(e) => errs.push(format!("action {a:?}: step {:?}: {e}", step.name)),
                    Ok(t) => {
                        for p in [&t.key_file, &t.known_hosts] {
                            if !plain_path(p) {
                                errs.push(format!("action {a:?}: SSH file path {} must not contain spaces, quotes or '='", p.display()));
                            }
                        }
                    }
                }
                let os = inv.hosts[&h].os.as_deref();
                if pick_argv(argv, argv_os, os).is_none() {
                    errs.push(format!(
                        "action {a:?}: step {:?} has no argv for host {h:?} (os {}): add argv or argv_os",
                        step.name,
                        os.unwrap_or("not set")
                    ));
                }
            }
        }
    }
    if errs.is_empty() {
        Ok(Arc::new(flow))
    } else {
        Err(errs)
    }
}

fn plain_path(p: &Path) -> bool {
    p.to_str()
        .is_some_and(|s| !s.contains(|c: char| c.is_whitespace() || "\"'=".contains(c)))
}

/// The argv for a host's OS: `debian-12`, then `debian`, then the default.
pub fn pick_argv<'a>(
    argv: &'a [String],
    argv_os: &'a BTreeMap<String, Vec<String>>,
    os: Option<&str>,
) -> Option<&'a [String]> {
    if let Some(os) = os {
        if let Some(a) = argv_os.get(os) {
            return Some(a);
        }
        if let Some(a) = os.split_once('-').and_then(|(fam, _)| argv_os.get(fam)) {
            return Some(a);
        }
    }
    (!argv.is_empty()).then_some(argv)
}

fn validate_param(
    name: &str,
    kind: &ParamKind,
    v: &str,
    inv: &Inventory,
) -> Result<(), ActionError> {
    let invalid = |reason: String| ActionError::InvalidValue {
        param: name.to_string(),
        value: v.to_string(),
        reason,
    };
    check_value(v).map_err(invalid)?;
    match kind {
        ParamKind::Host if !inv.hosts.contains_key(v) => Err(ActionError::NotInInventory {
            param: name.to_string(),
            value: v.to_string(),
            what: "hosts",
        }),
        ParamKind::Service if !inv.services.iter().any(|s| s == v) => {
            Err(ActionError::NotInInventory {
                param: name.to_string(),
                value: v.to_string(),
                what: "services",
            })
        }
        ParamKind::Value { pattern: Some(p) } if !p.is_match(v) => Err(invalid(format!(
            "does not match the flow's pattern {}",
            p.as_str()
        ))),
        _ => Ok(()),
    }
}

/// Exactly what a run does.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunPlan {
    pub contract: String,
    pub action: String,
    pub flow: String,
    /// The inventory host the flow works on, if it has one.
    pub host: Option<String>,
    pub params: BTreeMap<String, String>,
    pub skip_check: bool,
    pub steps: Vec<PlannedStep>,
    /// Values taken from the environment; redacted from every record.
    #[serde(skip)]
    pub secrets: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedStep {
    pub phase: Phase,
    pub name: String,
    pub timeout_ms: u64,
    pub retries: u32,
    pub interval_ms: u64,
    /// Replaced by the contract's override.
    pub overridden: bool,
    #[serde(flatten)]
    pub op: Op,
}

/// One step with every value in place.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    Ssh {
        host: String,
        /// `user@address:port`
        target: String,
        os: Option<String>,
        /// The argv the remote host runs.
        remote: Vec<String>,
        /// The local argv: the OpenSSH client.
        argv: Vec<String>,
        expect_exit: Vec<i32>,
    },
    Command {
        argv: Vec<String>,
        expect_exit: Vec<i32>,
    },
    Http {
        method: String,
        url: String,
        /// As recorded: secrets appear as `{env:NAME}`.
        headers: BTreeMap<String, String>,
        body: Option<serde_json::Value>,
        expect_status: Vec<u16>,
        #[serde(skip)]
        send_headers: BTreeMap<String, String>,
        #[serde(skip)]
        send_body: Option<serde_json::Value>,
    },
    TcpCheck {
        host: String,
        address: String,
        port: u16,
    },
    HttpCheck {
        url: String,
        expect_status: Vec<u16>,
        contains: Option<String>,
    },
}

/// Resolve an action for a run or a dry run. `alert` holds the
/// notification's fields and variables; `given` are parameters an operator
/// passed (API or CLI), allowed only where the dialplan takes the value
/// from the alert.
pub fn resolve(
    contract: &str,
    inv: &Inventory,
    action: &Action,
    alert: &BTreeMap<String, String>,
    given: &BTreeMap<String, String>,
) -> Result<RunPlan, ActionError> {
    let flow = action
        .flow_def
        .as_ref()
        .ok_or_else(|| ActionError::NotLinked(action.name.clone()))?;
    for (p, v) in given {
        match action.params.get(p) {
            None => {
                return Err(ActionError::UnknownParam {
                    param: p.clone(),
                    flow: flow.name.clone(),
                })
            }
            Some(ParamSource::Fixed(fixed)) if fixed != v => {
                return Err(ActionError::FixedParam {
                    param: p.clone(),
                    action: action.name.clone(),
                    value: fixed.clone(),
                })
            }
            _ => {}
        }
    }
    let mut params = BTreeMap::new();
    let mut host = None;
    for (p, spec) in &flow.params {
        let v = match action.params.get(p) {
            Some(ParamSource::Fixed(v)) => v.clone(),
            Some(ParamSource::Alert(var)) => match given.get(p).or_else(|| alert.get(var)) {
                Some(v) => v.clone(),
                None => {
                    return Err(ActionError::MissingParam {
                        param: p.clone(),
                        var: var.clone(),
                    })
                }
            },
            None => return Err(ActionError::NotLinked(action.name.clone())),
        };
        validate_param(p, &spec.kind, &v, inv)?;
        if matches!(spec.kind, ParamKind::Host) {
            host = Some(v.clone());
        }
        params.insert(p.clone(), v);
    }
    let mut vars = params.clone();
    if let Some(h) = &host {
        vars.insert("address".into(), inv.hosts[h].address.clone());
    }
    let mut secrets = Vec::new();
    let mut steps = Vec::new();
    for s in &flow.steps {
        if flow.skip_check && s.phase == Phase::Check {
            continue;
        }
        let op = plan_op(s, inv, &vars, &mut secrets)?;
        steps.push(PlannedStep {
            phase: s.phase,
            name: s.name.clone(),
            timeout_ms: s.timeout.as_millis() as u64,
            retries: s.retries,
            interval_ms: s.interval.as_millis() as u64,
            overridden: action.overrides.contains_key(&s.name),
            op,
        });
    }
    Ok(RunPlan {
        contract: contract.to_string(),
        action: action.name.clone(),
        flow: flow.name.clone(),
        host,
        params,
        skip_check: flow.skip_check,
        steps,
        secrets,
    })
}

fn host_of(template: &str, vars: &BTreeMap<String, String>) -> String {
    match template.strip_prefix('{').and_then(|h| h.strip_suffix('}')) {
        Some(p) => vars.get(p).cloned().unwrap_or_default(),
        None => template.to_string(),
    }
}

fn plan_op(
    s: &Step,
    inv: &Inventory,
    vars: &BTreeMap<String, String>,
    secrets: &mut Vec<String>,
) -> Result<Op, ActionError> {
    Ok(match &s.kind {
        StepKind::Ssh {
            host,
            argv,
            argv_os,
            expect_exit,
        } => {
            let h = host_of(host, vars);
            let ih = inv
                .hosts
                .get(&h)
                .ok_or_else(|| ActionError::NotInInventory {
                    param: "host".into(),
                    value: h.clone(),
                    what: "hosts",
                })?;
            let remote_t =
                pick_argv(argv, argv_os, ih.os.as_deref()).ok_or_else(|| ActionError::NoArgv {
                    step: s.name.clone(),
                    host: h.clone(),
                })?;
            let remote: Vec<String> = remote_t.iter().map(|a| render(a, vars)).collect();
            let t = inv
                .ssh_target(&h)
                .map_err(|e| ActionError::Config(e.to_string()))?;
            Op::Ssh {
                host: h,
                target: format!("{}@{}:{}", t.user, t.address, t.port),
                os: ih.os.clone(),
                argv: ssh_argv(&t, &remote),
                remote,
                expect_exit: expect_exit.clone(),
            }
        }
        StepKind::Command { argv, expect_exit } => Op::Command {
            argv: argv.iter().map(|a| render(a, vars)).collect(),
            expect_exit: expect_exit.clone(),
        },
        StepKind::Http {
            method,
            url,
            headers,
            body,
            expect_status,
        } => {
            let mut send_headers = BTreeMap::new();
            let mut shown = BTreeMap::new();
            for (k, v) in headers {
                send_headers.insert(k.clone(), fill_secrets(&render(v, vars), secrets)?);
                shown.insert(k.clone(), render(v, vars));
            }
            let send_body = match body {
                Some(b) => Some(json_fill(b, vars, secrets)?),
                None => None,
            };
            Op::Http {
                method: method.clone(),
                url: render_url(url, vars),
                headers: shown,
                body: body.as_ref().map(|b| json_render(b, vars)),
                expect_status: expect_status.clone(),
                send_headers,
                send_body,
            }
        }
        StepKind::TcpCheck { host, port } => {
            let h = host_of(host, vars);
            let ih = inv
                .hosts
                .get(&h)
                .ok_or_else(|| ActionError::NotInInventory {
                    param: "host".into(),
                    value: h.clone(),
                    what: "hosts",
                })?;
            Op::TcpCheck {
                address: ih.address.clone(),
                host: h,
                port: *port,
            }
        }
        StepKind::HttpCheck {
            url,
            expect_status,
            contains,
        } => Op::HttpCheck {
            url: render_url(url, vars),
            expect_status: expect_status.clone(),
            contains: contains.as_ref().map(|c| render(c, vars)),
        },
    })
}

/// Values land in URLs percent-encoded where they could change the URL's
/// structure ('@' would start a user part, ':' a port). The inventory's
/// address goes in as written.
fn render_url(t: &str, vars: &BTreeMap<String, String>) -> String {
    let enc: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| {
            let v = if k == "address" {
                v.clone()
            } else {
                v.replace('%', "%25")
                    .replace('@', "%40")
                    .replace(':', "%3A")
                    .replace('+', "%2B")
            };
            (k.clone(), v)
        })
        .collect();
    render(t, &enc)
}

fn fill_secrets(s: &str, secrets: &mut Vec<String>) -> Result<String, ActionError> {
    let mut out = s.to_string();
    for var in template_variables(s) {
        if let Some(name) = var.strip_prefix("env:") {
            let v =
                std::env::var(name).map_err(|_| ActionError::MissingSecret(name.to_string()))?;
            if !v.is_empty() && !secrets.contains(&v) {
                secrets.push(v.clone());
            }
            out = out.replace(&format!("{{{var}}}"), &v);
        }
    }
    Ok(out)
}

fn json_render(v: &serde_json::Value, vars: &BTreeMap<String, String>) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(render(s, vars)),
        Value::Array(a) => Value::Array(a.iter().map(|x| json_render(x, vars)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), json_render(x, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn json_fill(
    v: &serde_json::Value,
    vars: &BTreeMap<String, String>,
    secrets: &mut Vec<String>,
) -> Result<serde_json::Value, ActionError> {
    use serde_json::Value;
    Ok(match v {
        Value::String(s) => Value::String(fill_secrets(&render(s, vars), secrets)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| json_fill(x, vars, secrets))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => {
            let mut m = serde_json::Map::new();
            for (k, x) in o {
                m.insert(k.clone(), json_fill(x, vars, secrets)?);
            }
            Value::Object(m)
        }
        other => other.clone(),
    })
}

/// Quote one word for the remote login shell. The OpenSSH protocol
/// carries a command line, not an argv, so each element is quoted to
/// arrive as exactly one argument.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@%+=,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The OpenSSH client argv: no user config, no agent, no password or
/// keyboard prompts, only this key, only this known_hosts file, strict
/// host key checking.
pub fn ssh_argv(t: &SshTarget, remote: &[String]) -> Vec<String> {
    let mut v: Vec<String> = vec!["ssh".into(), "-F".into(), "/dev/null".into(), "-T".into()];
    let opts = [
        "BatchMode=yes".to_string(),
        "StrictHostKeyChecking=yes".to_string(),
        format!("UserKnownHostsFile={}", t.known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".to_string(),
        "IdentitiesOnly=yes".to_string(),
        format!("IdentityFile={}", t.key_file.display()),
        format!("ConnectTimeout={}", t.connect_timeout.as_secs().max(1)),
        "ServerAliveInterval=5".to_string(),
        "ServerAliveCountMax=2".to_string(),
        "LogLevel=ERROR".to_string(),
    ];
    for o in opts {
        v.push("-o".into());
        v.push(o);
    }
    v.extend([
        "-p".into(),
        t.port.to_string(),
        "-l".into(),
        t.user.clone(),
        "--".into(),
        t.address.clone(),
        remote
            .iter()
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
    ]);
    v
}

impl RunPlan {
    /// The dry-run listing: everything that would run, in order.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "flow {} for contract {} (action {})",
            self.flow, self.contract, self.action
        );
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "params: {}", params.join(" "));
        if self.skip_check {
            let _ = writeln!(out, "check: skipped by the flow");
        }
        for (i, s) in self.steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}. {} {}: {}, timeout {}{}{}",
                i + 1,
                s.phase.as_str(),
                s.name,
                match &s.op {
                    Op::Ssh { .. } => "ssh",
                    Op::Command { .. } => "command",
                    Op::Http { .. } => "http",
                    Op::TcpCheck { .. } => "tcp_check",
                    Op::HttpCheck { .. } => "http_check",
                },
                crate::util::format_duration(std::time::Duration::from_millis(s.timeout_ms)),
                if s.retries > 0 {
                    format!(
                        ", {} retries every {}",
                        s.retries,
                        crate::util::format_duration(std::time::Duration::from_millis(
                            s.interval_ms
                        ))
                    )
                } else {
                    String::new()
                },
                if s.overridden {
                    " (contract override)"
                } else {
                    ""
                }
            );
            let q = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
            match &s.op {
                Op::Ssh {
                    host,
                    target,
                    os,
                    remote,
                    argv,
                    ..
                } => {
                    let _ = writeln!(
                        out,
                        "   host: {host} ({target}{})",
                        os.as_ref().map(|o| format!(", os {o}")).unwrap_or_default()
                    );
                    let _ = writeln!(out, "   remote argv: {}", q(remote));
                    let _ = writeln!(out, "   argv: {}", q(argv));
                }
                Op::Command { argv, .. } => {
                    let _ = writeln!(out, "   argv: {}", q(argv));
                }
                Op::Http {
                    method,
                    url,
                    headers,
                    body,
                    ..
                } => {
                    let _ = writeln!(out, "   request: {method} {url}");
                    for (k, v) in headers {
                        let _ = writeln!(out, "   header: {k}: {v}");
                    }
                    if let Some(b) = body {
                        let _ = writeln!(out, "   body: {b}");
                    }
                }
                Op::TcpCheck {
                    host,
                    address,
                    port,
                } => {
                    let _ = writeln!(out, "   connect: {host} ({address}:{port})");
                }
                Op::HttpCheck { url, contains, .. } => {
                    let _ = writeln!(out, "   request: GET {url}");
                    if let Some(c) = contains {
                        let _ = writeln!(out, "   expect text: {c:?}");
                    }
                }
            }
        }
        out.push_str("dry run: nothing was executed\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_for_the_host_os_version_then_family_then_default() {
        let default = vec!["systemctl".to_string(), "restart".into(), "x".into()];
        let mut os = BTreeMap::new();
        os.insert("freebsd".to_string(), vec!["service".to_string()]);
        os.insert("debian-9".to_string(), vec!["invoke-rc.d".to_string()]);
        let pick = |o: Option<&str>| pick_argv(&default, &os, o).map(|a| a[0].clone());
        assert_eq!(pick(Some("debian-9")).as_deref(), Some("invoke-rc.d"));
        assert_eq!(pick(Some("debian-12")).as_deref(), Some("systemctl"));
        assert_eq!(pick(Some("freebsd-14")).as_deref(), Some("service"));
        assert_eq!(pick(Some("freebsd")).as_deref(), Some("service"));
        assert_eq!(pick(None).as_deref(), Some("systemctl"));
        // No default and no match: nothing, which linking reports.
        assert_eq!(pick_argv(&[], &os, Some("alpine-3")), None);
    }

    /// What the remote login shell makes of the quoted command line is
    /// exactly the argv written in the flow, whatever it contains.
    #[test]
    fn the_remote_shell_gets_each_element_as_one_word() {
        let argv: Vec<String> = [
            "printf",
            "%s\\0",
            "plain",
            "two words",
            "it's",
            "$(touch /tmp/callout-pwned)",
            "`id`",
            "a;b|c&d>e",
            "line\nbreak",
            "",
            "*",
            "ünïcode",
            "'",
            "\\",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let line = argv
            .iter()
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}");
        let words: Vec<String> = out
            .stdout
            .split(|&b| b == 0)
            .map(|w| String::from_utf8(w.to_vec()).unwrap())
            .collect();
        // printf's output: one NUL-terminated word per argument after the
        // format, so the last split is empty.
        assert_eq!(&words[..words.len() - 1], &argv[2..]);
        assert!(!std::path::Path::new("/tmp/callout-pwned").exists());
        // Plain words stay readable in the dry run.
        assert_eq!(sh_quote("nginx"), "nginx");
        assert_eq!(sh_quote("php8.2-fpm"), "php8.2-fpm");
    }

    #[test]
    fn values_in_urls_cannot_change_their_structure() {
        let mut vars = BTreeMap::new();
        vars.insert("host".to_string(), "web01".to_string());
        vars.insert("user".to_string(), "evil@attacker:80".to_string());
        vars.insert("address".to_string(), "192.0.2.1:8443".to_string());
        assert_eq!(
            render_url("https://{address}/api/{host}?u={user}", &vars),
            "https://192.0.2.1:8443/api/web01?u=evil%40attacker%3A80"
        );
    }
}
