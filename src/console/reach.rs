//! Who of a contract can be rung now, and when that changes: each
//! contact's time windows asked with the escalation's own function
//! (`ivr::window::available`, holidays and time zones included) at an
//! explicit `now`, for the contracts page and `GET
//! /v1/contracts/{id}/reachable`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use crate::api::ApiError;
use crate::ivr::dialplan::Dialplan;
use crate::ivr::window;

/// How far ahead a window's opening is looked for.
pub const HORIZON_MS: i64 = 8 * 86_400_000;

/// One contact at `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactReach {
    pub name: String,
    pub reachable: bool,
    /// Reachable: when its window closes; not: when one opens. `None`:
    /// no change within [`HORIZON_MS`] (24/7, or never).
    pub change_ms: Option<i64>,
}

/// A contract at `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reach {
    pub now_ms: i64,
    pub contacts: Vec<ContactReach>,
    /// Reachable now, in dialling order.
    pub reachable_now: Vec<String>,
    /// The first contact not reachable now whose window opens soonest,
    /// and when (ties: the earlier in dialling order).
    pub next_opening: Option<(String, i64)>,
}

/// Pure: the contract's contacts at `now_ms`.
pub fn reachability(plan: &Dialplan, now_ms: i64) -> Reach {
    let contacts: Vec<ContactReach> = plan
        .contacts
        .iter()
        .map(|c| ContactReach {
            name: c.name.clone(),
            reachable: window::available(&c.windows, now_ms, c.tz, &plan.holidays),
            change_ms: window::next_change(&c.windows, now_ms, c.tz, &plan.holidays, HORIZON_MS),
        })
        .collect();
    let reachable_now = contacts
        .iter()
        .filter(|c| c.reachable)
        .map(|c| c.name.clone())
        .collect();
    let next_opening = contacts
        .iter()
        .filter(|c| !c.reachable)
        .filter_map(|c| c.change_ms.map(|t| (c.name.clone(), t)))
        .min_by_key(|(_, t)| *t);
    Reach {
        now_ms,
        contacts,
        reachable_now,
        next_opening,
    }
}

/// `GET /v1/contracts/{id}/reachable?now_ms=`: operators (the contacts
/// are the centre's people).
pub(crate) async fn contract_reachability(
    State(svc): State<Arc<crate::service::Service>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let caller = crate::api::operator(&svc, &headers)?;
    caller.check(&id, "contract", &id)?;
    let plan = svc
        .registry
        .get(&id)
        .ok_or_else(|| crate::api::access_not_found("contract", &id))?;
    let now = match q.get("now_ms") {
        None => crate::runner::now_ms(),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|v| (0..=253_402_300_799_000).contains(v))
            .ok_or_else(|| ApiError::invalid("now_ms", "now_ms must be epoch milliseconds"))?,
    };
    let r = tokio::task::spawn_blocking(move || reachability(&plan, now))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(serde_json::to_value(r).map_err(ApiError::internal)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    fn plan() -> Dialplan {
        let text = r#"contract = "acme"
name = "ACME"
language = "en"
holidays = ["2026-11-30"]
[escalation]
rounds = 1
ring_timeout = "10s"
between_calls = "1s"
between_rounds = "1m"
[[contacts]]
name = "Day"
uri = "sip:day@127.0.0.1"
timezone = "Asia/Tokyo"
when = ["mon-fri 09:00-18:00"]
[[contacts]]
name = "Night"
uri = "sip:night@127.0.0.1"
timezone = "Asia/Tokyo"
when = ["mon-fri 18:00-09:00"]
[[contacts]]
name = "Weekend"
uri = "sip:we@127.0.0.1"
timezone = "Europe/London"
when = ["sat,sun 10:00-16:00"]
[message]
text = "Alert."
[menu]
prompt = "Press 1."
[menu.keys]
"1" = "ack"
"#;
        let prompts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        crate::ivr::dialplan::load_str(
            text,
            std::path::Path::new("acme.toml"),
            &prompts,
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn who_is_reachable_and_whose_window_opens_next() {
        let p = plan();
        // Friday 2026-11-27 17:30 JST (08:30 UTC): Day until 18:00 JST;
        // Night opens then, Weekend on Saturday 10:00 London.
        let r = reachability(&p, at("2026-11-27T08:30:00Z"));
        assert_eq!(r.reachable_now, vec!["Day"]);
        assert_eq!(r.contacts[0].change_ms, Some(at("2026-11-27T09:00:00Z")));
        assert_eq!(
            r.next_opening,
            Some(("Night".to_string(), at("2026-11-27T09:00:00Z")))
        );
        assert_eq!(r.contacts[2].change_ms, Some(at("2026-11-28T10:00:00Z")));

        // Saturday 12:00 UTC (21:00 JST, 12:00 London): only Weekend.
        let r = reachability(&p, at("2026-11-28T12:00:00Z"));
        assert_eq!(r.reachable_now, vec!["Weekend"]);
        // Monday 30 November is a holiday: Day stays out until Tuesday
        // 09:00 JST, Night until Tuesday 18:00 JST (Monday's overnight
        // window starts on the holiday).
        assert_eq!(
            r.next_opening,
            Some(("Day".to_string(), at("2026-12-01T00:00:00Z")))
        );
        assert_eq!(r.contacts[2].change_ms, Some(at("2026-11-28T16:00:00Z")));
        assert_eq!(r.contacts[0].change_ms, Some(at("2026-12-01T00:00:00Z")));
        assert_eq!(r.contacts[1].change_ms, Some(at("2026-12-01T09:00:00Z")));
    }
}
