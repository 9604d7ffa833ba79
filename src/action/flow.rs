//! Job flows: `dialplans/flows/*.toml`, one reusable maintenance flow per
//! file (the file name is the flow's name). Read as strictly as dialplans:
//! every problem is `file:line:column: what is wrong`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::ivr::dialplan::DialplanError;
use crate::util::parse_duration;

/// The three phases, in the order they run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Is the problem still there? All steps passing means it is gone.
    Check,
    /// The fix.
    Execute,
    /// Is it fixed now?
    Verify,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Check, Phase::Execute, Phase::Verify];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Check => "check",
            Phase::Execute => "execute",
            Phase::Verify => "verify",
        }
    }
}

/// Where a flow parameter's value must come from.
#[derive(Debug, Clone)]
pub enum ParamKind {
    /// A host of the contract's inventory.
    Host,
    /// A service the contract's inventory lists.
    Service,
    /// Any value that passes the strict pattern, plus this one.
    Value { pattern: Option<regex::Regex> },
}

#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub kind: ParamKind,
    pub description: String,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// A fixed argv on an inventory host through the OpenSSH client.
    Ssh {
        /// Inventory host name, or a `{param}` of kind host.
        host: String,
        argv: Vec<String>,
        /// Argv by OS: `debian-12` is tried first, then `debian`, then `argv`.
        argv_os: BTreeMap<String, Vec<String>>,
        expect_exit: Vec<i32>,
    },
    /// A local argv, run without a shell.
    Command {
        argv: Vec<String>,
        expect_exit: Vec<i32>,
    },
    /// A runbook or automation API call.
    Http {
        method: String,
        url: String,
        headers: BTreeMap<String, String>,
        body: Option<serde_json::Value>,
        expect_status: Vec<u16>,
    },
    /// Can a TCP connection be made?
    TcpCheck { host: String, port: u16 },
    /// Does a GET answer with the expected status (and text)?
    HttpCheck {
        url: String,
        expect_status: Vec<u16>,
        contains: Option<String>,
    },
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Ssh { .. } => "ssh",
            StepKind::Command { .. } => "command",
            StepKind::Http { .. } => "http",
            StepKind::TcpCheck { .. } => "tcp_check",
            StepKind::HttpCheck { .. } => "http_check",
        }
    }

    /// Every template string of the step (for placeholder checks).
    pub fn templates(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        match self {
            StepKind::Ssh {
                host,
                argv,
                argv_os,
                ..
            } => {
                out.push(host);
                out.extend(argv.iter().map(String::as_str));
                out.extend(argv_os.values().flatten().map(String::as_str));
            }
            StepKind::Command { argv, .. } => out.extend(argv.iter().map(String::as_str)),
            StepKind::Http {
                url, headers, body, ..
            } => {
                out.push(url);
                out.extend(headers.values().map(String::as_str));
                if let Some(b) = body {
                    json_strings(b, &mut out);
                }
            }
            StepKind::TcpCheck { host, .. } => out.push(host),
            StepKind::HttpCheck { url, contains, .. } => {
                out.push(url);
                out.extend(contains.as_deref());
            }
        }
        out
    }
}

fn json_strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| json_strings(x, out)),
        _ => {}
    }
}

/// One step of a phase.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    pub name: String,
    pub phase: Phase,
    #[serde(with = "crate::util::duration_ms")]
    pub timeout: Duration,
    /// Extra tries after a failure (a service takes a while to come up).
    pub retries: u32,
    #[serde(with = "crate::util::duration_ms")]
    pub interval: Duration,
    #[serde(flatten)]
    pub kind: StepKind,
    /// Where the step is defined (file:line), for error messages.
    #[serde(skip)]
    pub origin: String,
    /// Which of timeout, retries and interval were written; a contract's
    /// override takes the others from the step it replaces.
    #[serde(skip)]
    pub written: Written,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub timeout: bool,
    pub retries: bool,
    pub interval: bool,
}

/// A validated flow.
#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    pub description: String,
    pub skip_check: bool,
    pub params: BTreeMap<String, ParamSpec>,
    /// All steps in run order (check, execute, verify).
    pub steps: Vec<Step>,
    pub source: PathBuf,
}

/// Flows compare by what they run (a pattern compares by its text).
impl PartialEq for Flow {
    fn eq(&self, o: &Flow) -> bool {
        let pat = |f: &Flow| -> Vec<(String, String)> {
            f.params
                .iter()
                .map(|(k, p)| {
                    let kind = match &p.kind {
                        ParamKind::Host => "host".to_string(),
                        ParamKind::Service => "service".to_string(),
                        ParamKind::Value { pattern } => {
                            format!("value {}", pattern.as_ref().map_or("", |r| r.as_str()))
                        }
                    };
                    (k.clone(), kind)
                })
                .collect()
        };
        self.name == o.name
            && self.skip_check == o.skip_check
            && self.steps == o.steps
            && self.source == o.source
            && pat(self) == pat(o)
    }
}

impl Eq for Flow {}

impl Flow {
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// The flows of a dialplan folder, by name.
#[derive(Debug, Clone, Default)]
pub struct Flows(pub BTreeMap<String, Arc<Flow>>);

impl Flows {
    pub fn get(&self, name: &str) -> Option<&Arc<Flow>> {
        self.0.get(name)
    }
}

// ---- the file as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    #[serde(default)]
    description: String,
    #[serde(default)]
    skip_check: bool,
    #[serde(default)]
    params: BTreeMap<String, Spanned<RawParam>>,
    #[serde(default)]
    check: Vec<Spanned<RawStep>>,
    #[serde(default)]
    execute: Vec<Spanned<RawStep>>,
    #[serde(default)]
    verify: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    kind: String,
    #[serde(default)]
    description: String,
    pattern: Option<String>,
}

/// A step as written, in a flow or as a contract's override.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    name: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retries: Option<u32>,
    interval: Option<Spanned<String>>,
    ssh: Option<RawSsh>,
    command: Option<RawCommand>,
    http: Option<RawHttp>,
    tcp_check: Option<RawTcp>,
    http_check: Option<RawHttpCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    #[serde(default = "default_host")]
    host: String,
    #[serde(default)]
    argv: Vec<String>,
    #[serde(default)]
    argv_os: BTreeMap<String, Vec<String>>,
    #[serde(default = "exit_zero")]
    expect_exit: Vec<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    argv: Vec<String>,
    #[serde(default = "exit_zero")]
    expect_exit: Vec<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "post")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<toml::Value>,
    #[serde(default = "status_2xx")]
    expect_status: Vec<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    #[serde(default = "default_host")]
    host: String,
    port: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpCheck {
    url: String,
    #[serde(default = "status_2xx")]
    expect_status: Vec<u16>,
    contains: Option<String>,
}

fn default_host() -> String {
    "{host}".into()
}
fn exit_zero() -> Vec<i32> {
    vec![0]
}
fn post() -> String {
    "POST".into()
}
fn status_2xx() -> Vec<u16> {
    (200..=299).collect()
}

// ---- loading ---------------------------------------------------------------

/// Line and column (1-based) of a byte offset.
pub fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Collects positioned errors for one file.
pub struct Errors<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    pub list: Vec<DialplanError>,
}

impl Errors<'_> {
    pub fn err(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let (line, column) = position(self.text, span.start);
        self.list.push(DialplanError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        });
    }

    fn duration(&mut self, v: &Option<Spanned<String>>, what: &str, default: Duration) -> Duration {
        match v {
            None => default,
            Some(v) => match parse_duration(v.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.err(v.span(), format!("{what}: {e}"));
                    default
                }
            },
        }
    }
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Validate one step as written. `name` is used when the table has none
/// (a contract's override is keyed by the step name).
pub fn parse_step(
    raw: &Spanned<RawStep>,
    phase: Phase,
    name: Option<&str>,
    e: &mut Errors<'_>,
) -> Option<Step> {
    let span = raw.span();
    let r = raw.get_ref();
    let name = match (&r.name, name) {
        (Some(n), _) => n.get_ref().clone(),
        (None, Some(n)) => n.to_string(),
        (None, None) => {
            e.err(span, "step without a name (add name = \"...\")");
            return None;
        }
    };
    if !super::validate::is_safe_name(&name) {
        e.err(
            span.clone(),
            format!("step name {name:?} must be letters, digits, '-' or '_'"),
        );
    }
    let timeout = e.duration(&r.timeout, "timeout", Duration::from_secs(30));
    if timeout.is_zero() || timeout > Duration::from_secs(3600) {
        e.err(
            span.clone(),
            format!("step {name:?}: timeout must be between 1ms and 1h"),
        );
    }
    let interval = e.duration(&r.interval, "interval", Duration::from_secs(2));
    let retries = r.retries.unwrap_or(0);
    if retries > 100 {
        e.err(span.clone(), format!("step {name:?}: at most 100 retries"));
    }
    let mut kinds = Vec::new();
    if let Some(s) = &r.ssh {
        if s.argv.is_empty() && s.argv_os.is_empty() {
            e.err(
                span.clone(),
                format!("step {name:?}: ssh needs argv (or argv_os)"),
            );
        }
        for (os, argv) in &s.argv_os {
            if argv.is_empty() {
                e.err(
                    span.clone(),
                    format!("step {name:?}: argv_os.{os} is empty"),
                );
            }
        }
        kinds.push(StepKind::Ssh {
            host: s.host.clone(),
            argv: s.argv.clone(),
            argv_os: s.argv_os.clone(),
            expect_exit: s.expect_exit.clone(),
        });
    }
    if let Some(c) = &r.command {
        if c.argv.is_empty() {
            e.err(span.clone(), format!("step {name:?}: command needs argv"));
        }
        kinds.push(StepKind::Command {
            argv: c.argv.clone(),
            expect_exit: c.expect_exit.clone(),
        });
    }
    if let Some(h) = &r.http {
        let method = h.method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            e.err(
                span.clone(),
                format!(
                    "step {name:?}: method {:?} is not one of {}",
                    h.method,
                    METHODS.join(", ")
                ),
            );
        }
        check_url(&h.url, &name, span.clone(), e);
        let body = h.body.as_ref().map(|b| match serde_json::to_value(b) {
            Ok(v) => v,
            Err(err) => {
                e.err(
                    span.clone(),
                    format!("step {name:?}: body cannot be JSON: {err}"),
                );
                serde_json::Value::Null
            }
        });
        kinds.push(StepKind::Http {
            method,
            url: h.url.clone(),
            headers: h.headers.clone(),
            body,
            expect_status: h.expect_status.clone(),
        });
    }
    if let Some(t) = &r.tcp_check {
        if t.port == 0 {
            e.err(span.clone(), format!("step {name:?}: port 0"));
        }
        kinds.push(StepKind::TcpCheck {
            host: t.host.clone(),
            port: t.port,
        });
    }
    if let Some(h) = &r.http_check {
        check_url(&h.url, &name, span.clone(), e);
        kinds.push(StepKind::HttpCheck {
            url: h.url.clone(),
            expect_status: h.expect_status.clone(),
            contains: h.contains.clone(),
        });
    }
    if kinds.len() != 1 {
        e.err(
            span,
            format!(
                "step {name:?} needs exactly one of ssh, command, http, tcp_check, http_check (has {})",
                kinds.len()
            ),
        );
        return None;
    }
    let (line, _) = position(e.text, raw.span().start);
    Some(Step {
        name,
        phase,
        timeout,
        retries,
        interval,
        kind: kinds.remove(0),
        origin: format!("{}:{line}", e.file.display()),
        written: Written {
            timeout: r.timeout.is_some(),
            retries: r.retries.is_some(),
            interval: r.interval.is_some(),
        },
    })
}

fn check_url(url: &str, step: &str, span: std::ops::Range<usize>, e: &mut Errors<'_>) {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        e.err(
            span,
            format!("step {step:?}: url {url:?} must start with http:// or https://"),
        );
    }
}

/// Parse and validate one flow file.
pub fn load_str(text: &str, file: &Path) -> Result<Flow, Vec<DialplanError>> {
    let mut e = Errors {
        file,
        text,
        list: Vec::new(),
    };
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    if !super::validate::is_safe_name(&name) {
        e.err(
            0..0,
            format!("flow file name {name:?} must be letters, digits, '-' or '_' (it is the flow's name)"),
        );
    }
    let raw: RawFlow = match toml::from_str(text) {
        Ok(r) => r,
        Err(err) => {
            e.err(err.span().unwrap_or(0..0), err.message().to_string());
            return Err(e.list);
        }
    };
    let mut params = BTreeMap::new();
    for (pname, p) in &raw.params {
        if !super::validate::is_safe_name(pname) || pname == "address" {
            e.err(
                p.span(),
                format!(
                    "parameter name {pname:?} must be letters, digits, '-' or '_' (and not \"address\")"
                ),
            );
        }
        let rp = p.get_ref();
        let kind = match rp.kind.as_str() {
            "host" => ParamKind::Host,
            "service" => ParamKind::Service,
            "value" => ParamKind::Value {
                pattern: rp.pattern.as_ref().and_then(|pat| {
                    match regex::Regex::new(&format!("^(?:{pat})$")) {
                        Ok(r) => Some(r),
                        Err(err) => {
                            e.err(p.span(), format!("parameter {pname:?}: bad pattern: {err}"));
                            None
                        }
                    }
                }),
            },
            other => {
                e.err(
                    p.span(),
                    format!("parameter {pname:?}: kind {other:?} is not host, service or value"),
                );
                ParamKind::Value { pattern: None }
            }
        };
        if rp.pattern.is_some() && !matches!(kind, ParamKind::Value { .. }) {
            e.err(
                p.span(),
                format!("parameter {pname:?}: pattern applies to kind = \"value\" only"),
            );
        }
        params.insert(
            pname.clone(),
            ParamSpec {
                kind,
                description: rp.description.clone(),
            },
        );
    }
    if params
        .values()
        .filter(|p| matches!(p.kind, ParamKind::Host))
        .count()
        > 1
    {
        e.err(
            0..0,
            "a flow has at most one parameter of kind host (the host it works on)",
        );
    }
    let mut steps = Vec::new();
    for (phase, list) in [
        (Phase::Check, &raw.check),
        (Phase::Execute, &raw.execute),
        (Phase::Verify, &raw.verify),
    ] {
        for s in list {
            if let Some(step) = parse_step(s, phase, None, &mut e) {
                if steps.iter().any(|o: &Step| o.name == step.name) {
                    e.err(
                        s.span(),
                        format!("step name {:?} is used twice in this flow", step.name),
                    );
                }
                steps.push(step);
            }
        }
    }
    if raw.execute.is_empty() {
        e.err(0..0, "a flow needs at least one [[execute]] step");
    }
    if raw.skip_check && !raw.check.is_empty() {
        e.err(
            0..0,
            "skip_check = true but the flow has [[check]] steps: remove one or the other",
        );
    }
    for s in &steps {
        check_placeholders(&s.kind, &params, &s.name, &mut |msg| {
            e.list.push(DialplanError {
                file: file.to_path_buf(),
                line: s
                    .origin
                    .rsplit(':')
                    .next()
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0),
                column: 1,
                message: msg,
            })
        });
    }
    if !e.list.is_empty() {
        return Err(e.list);
    }
    Ok(Flow {
        name,
        description: raw.description,
        skip_check: raw.skip_check,
        params,
        steps,
        source: file.to_path_buf(),
    })
}

/// Every `{name}` in a step must be a declared parameter, `{address}`
/// (the address of the flow's host) or `{env:NAME}` (a secret from the
/// environment, for HTTP headers and bodies only).
pub fn check_placeholders(
    kind: &StepKind,
    params: &BTreeMap<String, ParamSpec>,
    step: &str,
    report: &mut dyn FnMut(String),
) {
    let has_host = params.values().any(|p| matches!(p.kind, ParamKind::Host));
    let secrets_ok = matches!(kind, StepKind::Http { .. });
    for t in kind.templates() {
        for var in crate::ivr::dialplan::template_variables(t) {
            if let Some(env) = var.strip_prefix("env:") {
                if !secrets_ok {
                    report(format!("step {step:?}: {{env:{env}}} is allowed in http steps only (secrets stay out of argv and URLs of probes)"));
                }
                continue;
            }
            if var == "address" && has_host {
                continue;
            }
            if !params.contains_key(&var) {
                report(format!(
                    "step {step:?}: unknown placeholder {{{var}}} (declare it under [params])"
                ));
            }
        }
    }
    if let StepKind::Ssh { host, .. } | StepKind::TcpCheck { host, .. } = kind {
        if let Some(p) = host.strip_prefix('{').and_then(|h| h.strip_suffix('}')) {
            if !params
                .get(p)
                .is_some_and(|s| matches!(s.kind, ParamKind::Host))
            {
                report(format!(
                    "step {step:?}: host {host:?} must name a parameter of kind host"
                ));
            }
        } else if host.contains('{') {
            report(format!(
                "step {step:?}: host {host:?} must be an inventory host name or one {{param}}"
            ));
        }
    }
}

/// Load every `*.toml` in `dir/flows` (no folder: no flows).
pub fn load_dir(dialplans: &Path) -> Result<Flows, Vec<DialplanError>> {
    let dir = dialplans.join("flows");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Flows::default()),
        Err(e) => {
            return Err(vec![DialplanError {
                file: dir,
                line: 0,
                column: 0,
                message: format!("cannot read the flows folder: {e}"),
            }])
        }
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut flows = BTreeMap::new();
    let mut errors = Vec::new();
    for f in files {
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) => {
                errors.push(DialplanError {
                    file: f.clone(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        match load_str(&text, &f) {
            Ok(flow) => {
                flows.insert(flow.name.clone(), Arc::new(flow));
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(Flows(flows))
    } else {
        Err(errors)
    }
}
