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
                automatic,
            }
        }
        Err(why) => ActionReport {
            ok: false,
            text: format!("action {action} (flow {}) did not run: {why}", def.flow),
            automatic,
        },
    }
}
