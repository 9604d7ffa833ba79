//! Running a contract's action on an incident, the driver's side: the
//! request the gateway's action API takes (the alert's values from the
//! incident, the ticket, the same checks as a call's run) and the one
//! line that tells how the run ended, in the contract's language for the
//! call and in English for the timeline.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::engine::{ActionReport, Incident};
use super::gateway::GatewayClient;
use crate::action::plan::ParamSource;
use crate::ivr::dialplan::{Dialplan, Language};

/// The values an action's `{name}` parameters take from the incident.
pub fn params_for(plan: &Dialplan, action: &str, inc: &Incident) -> BTreeMap<String, String> {
    let Some(a) = plan.actions.get(action) else {
        return BTreeMap::new();
    };
    a.params
        .iter()
        .filter_map(|(k, src)| match src {
            ParamSource::Alert(var) => {
                let v = match var.as_str() {
                    "host" => Some(inc.host.clone()),
                    "summary" => Some(inc.summary.clone()),
                    "severity" => Some(inc.severity.as_str().to_string()),
                    other => inc.labels.get(other).cloned(),
                }?;
                Some((k.clone(), v))
            }
            ParamSource::Fixed(_) => None,
        })
        .collect()
}

/// The request body for `POST /v1/actions/{flow}/run`.
pub fn request(
    plan: &Dialplan,
    action: &str,
    inc: &Incident,
    ticket: Option<&str>,
    dry_run: bool,
) -> Value {
    json!({
        "contract": plan.contract,
        "action": action,
        "params": params_for(plan, action, inc),
        "ticket": ticket,
        "dry_run": dry_run,
        "wait": !dry_run,
    })
}

/// One line for a finished run record (the gateway's JSON).
pub fn describe(action: &str, rec: &Value) -> (bool, String) {
    let result = rec["result"].as_str().unwrap_or("unknown");
    let host = rec["host"].as_str().unwrap_or("-");
    let flow = rec["flow"].as_str().unwrap_or("?");
    let run = rec["run_id"].as_str().unwrap_or("?");
    let steps: Vec<String> = rec["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|st| {
                    format!(
                        "{} {} {}",
                        st["phase"].as_str().unwrap_or("?"),
                        st["name"].as_str().or(st["step"].as_str()).unwrap_or("?"),
                        st["outcome"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let ok = matches!(result, "succeeded" | "not_needed");
    let how = match result {
        "failed" => format!(
            "failed at the {} step {} ({})",
            rec["phase"].as_str().unwrap_or("?"),
            rec["step"].as_str().unwrap_or("?"),
            rec["outcome"].as_str().unwrap_or("?")
        ),
        "refused" => format!("refused: {}", rec["reason"].as_str().unwrap_or("?")),
        "succeeded" => "succeeded and verified".into(),
        "not_needed" => "found nothing to fix".into(),
        other => other.to_string(),
    };
    let steps = if steps.is_empty() {
        String::new()
    } else {
        format!("; steps: {}", steps.join(", "))
    };
    (
        ok,
        format!("action {action} (flow {flow}) on {host} {how} [run {run}]{steps}"),
    )
}

/// The step lines of a finished run record, one per step run, in the
/// order they ran: phase, what ran, the exit or HTTP status and a short
/// excerpt of what it printed. Each becomes a timeline entry, so a
/// ticket note of its own.
pub fn step_lines(action: &str, rec: &Value) -> Vec<String> {
    let Some(steps) = rec["steps"].as_array() else {
        return Vec::new();
    };
    let total = steps.len();
    steps
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let attempt = match st["attempt"].as_u64() {
                Some(a) if a > 1 => format!(" (attempt {a})"),
                _ => String::new(),
            };
            let status = if let Some(code) = st["exit_code"].as_i64() {
                format!("exit {code}")
            } else if let Some(code) = st["http_status"].as_u64() {
                format!("HTTP {code}")
            } else if let Some(sig) = st["signal"].as_i64() {
                format!("signal {sig}")
            } else {
                "no status".to_string()
            };
            let excerpt = excerpt(st);
            format!(
                "action {action} step {n}/{total}: {phase} {name}{attempt}: {what} → {status}, {outcome}{excerpt}",
                n = i + 1,
                phase = st["phase"].as_str().unwrap_or("?"),
                name = st["name"].as_str().unwrap_or("?"),
                what = cut(&what_ran(&st["op"]), 200),
                outcome = st["outcome"].as_str().unwrap_or("?"),
            )
        })
        .collect()
}

/// What a step ran, in one line: `ssh HOST: ARGV`, `ARGV`, `METHOD URL`.
fn what_ran(op: &Value) -> String {
    let argv = |k: &str| {
        op[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    match op["kind"].as_str() {
        Some("ssh") => format!(
            "ssh {}: {}",
            op["host"].as_str().unwrap_or("?"),
            argv("remote")
        ),
        Some("command") => argv("argv"),
        Some("http") => format!(
            "{} {}",
            op["method"].as_str().unwrap_or("?"),
            op["url"].as_str().unwrap_or("?")
        ),
        Some(other) => other.to_string(),
        None => "?".to_string(),
    }
}

/// `: ` and the first printed line (stdout, else stderr, else the
/// error), cut short; empty when the step printed nothing.
fn excerpt(st: &Value) -> String {
    ["stdout", "stderr", "error"]
        .iter()
        .filter_map(|k| st[*k].as_str())
        .find_map(|t| t.lines().map(str::trim).find(|l| !l.is_empty()))
        .map(|l| format!(": {}", cut(l, 160)))
        .unwrap_or_default()
}

/// At most `max` characters, control characters as spaces (a host's
/// output is not trusted to be one clean line).
fn cut(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut c: String = flat.chars().take(max.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

/// What the callee hears before the message: what was tried and how it
/// ended (`result` is the timeline's line).
pub fn spoken(plan: &Dialplan, action: &str, ok: bool, result: &str) -> String {
    let what = plan
        .actions
        .get(action)
        .map(|a| a.description.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| action.to_string());
    // From "failed at …" / "refused …" / "did not run …", without the
    // run id and the step list.
    let short = result.split(" [run ").next().unwrap_or(result);
    let how = ["failed at", "refused", "did not run", "found nothing"]
        .iter()
        .find_map(|k| short.find(k).map(|i| &short[i..]))
        .unwrap_or(short);
    match (plan.language, ok) {
        (Language::Ja, false) => format!("自動対応として{what}を実行しましたが、失敗しました。"),
        (Language::Ja, true) => format!("自動対応として{what}を実行し、復旧を確認しました。"),
        (Language::En, false) => {
            format!("An automatic {what} was tried and failed: {how}.")
        }
        (Language::En, true) => format!("An automatic {what} fixed it and was verified."),
    }
}

/// Run an action for the incident through the gateway and report it.
pub async fn run(
    gateway: &GatewayClient,
    plan: &Dialplan,
    action: &str,
    inc: &Incident,
    ticket: Option<&str>,
    automatic: bool,
) -> ActionReport {
    let Some(def) = plan.actions.get(action) else {
        return ActionReport {
            ok: false,
            text: format!(
                "action {action} is not in contract {}'s dialplan",
                plan.contract
            ),
            steps: Vec::new(),
            automatic,
        };
    };
    let body = request(plan, action, inc, ticket, false);
    match gateway
        .run_action(&def.flow, &body, Duration::from_secs(900))
        .await
    {
        Ok(rec) => {
            let (ok, text) = describe(action, &rec);
            ActionReport {
                ok,
                text,
                steps: step_lines(action, &rec),
                automatic,
            }
        }
        Err(why) => ActionReport {
            ok: false,
            text: format!("action {action} (flow {}) did not run: {why}", def.flow),
            steps: Vec::new(),
            automatic,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_is_a_line_with_what_ran_its_status_and_an_excerpt() {
        let rec = json!({
            "result": "succeeded", "run_id": "run_1", "flow": "restart", "host": "web-01",
            "steps": [
                {"phase": "check", "name": "running", "attempt": 1,
                 "op": {"kind": "ssh", "host": "web-01", "remote": ["fakesvc", "status", "app"]},
                 "outcome": "failed", "exit_code": 3, "stdout": "\napp is stopped\nmore", "stderr": ""},
                {"phase": "verify", "name": "running-again", "attempt": 2,
                 "op": {"kind": "http", "method": "GET", "url": "http://web-01/health"},
                 "outcome": "ok", "http_status": 200, "stdout": "", "stderr": ""},
                {"phase": "execute", "name": "kick", "attempt": 1,
                 "op": {"kind": "command", "argv": ["/bin/kick", "x"]},
                 "outcome": "error", "stdout": "", "stderr": "", "error": "spawn: no such file\r\nX-Injected: 1"},
            ]
        });
        assert_eq!(
            step_lines("restart", &rec),
            vec![
                "action restart step 1/3: check running: ssh web-01: fakesvc status app → exit 3, failed: app is stopped",
                "action restart step 2/3: verify running-again (attempt 2): GET http://web-01/health → HTTP 200, ok",
                "action restart step 3/3: execute kick: /bin/kick x → no status, error: spawn: no such file",
            ]
        );
        // A refused run has no steps; a record without any is no panic.
        assert!(step_lines("restart", &json!({"result": "refused"})).is_empty());
        assert!(step_lines("restart", &json!(null)).is_empty());
    }

    #[test]
    fn a_long_or_multiline_excerpt_is_cut_to_one_short_line() {
        let long = "x".repeat(500);
        let rec = json!({"steps": [{"phase": "check", "name": "n", "op": {"kind": "ssh", "host": "h", "remote": ["a"]},
            "outcome": "ok", "exit_code": 0, "stdout": format!("{long}\nsecond"), "stderr": ""}]});
        let l = &step_lines("a", &rec)[0];
        assert!(l.ends_with('…'), "{l}");
        assert!(!l.contains('\n') && !l.contains("second"), "{l}");
        assert!(l.chars().count() < 300, "{l}");
    }
}
