//! Where the pipeline meets the gateway: its public REST API going out
//! (`POST /v1/notifications` with an Idempotency-Key per incident call,
//! `POST …/cancel`), its signed webhooks coming back.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::engine::GatewayOutcome;

/// The gateway the pipeline calls.
#[derive(Clone)]
pub struct GatewayClient {
    pub url: String,
    token: String,
    client: reqwest::Client,
}

/// What became of a notify request.
#[derive(Debug, Clone, PartialEq)]
pub enum NotifyResult {
    Accepted(String),
    /// Refused for good (a 4xx other than 409/429): recorded, not retried.
    Refused(String),
}

impl GatewayClient {
    pub fn new(url: &str, token: String) -> GatewayClient {
        GatewayClient {
            url: url.trim_end_matches('/').to_string(),
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Post a notification; a retryable failure (connection, 5xx, 409,
    /// 429) is retried with backoff until `give_up` has passed, then
    /// reported as refused.
    pub async fn notify(&self, body: &Value, key: &str, give_up: Duration) -> NotifyResult {
        let start = std::time::Instant::now();
        let mut wait = Duration::from_millis(200);
        loop {
            let r = self
                .client
                .post(format!("{}/v1/notifications", self.url))
                .bearer_auth(&self.token)
                .header("idempotency-key", key)
                .json(body)
                .send()
                .await;
            let retry = match r {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await.unwrap_or_default();
                    return match v["id"].as_str() {
                        Some(id) => NotifyResult::Accepted(id.to_string()),
                        None => NotifyResult::Refused("the gateway's answer has no id".into()),
                    };
                }
                Ok(r) if r.status().as_u16() == 409 || r.status().as_u16() == 429 => {
                    format!("HTTP {}", r.status().as_u16())
                }
                Ok(r) if r.status().is_client_error() => {
                    let code = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or_default();
                    return NotifyResult::Refused(format!(
                        "HTTP {code}: {}",
                        v["detail"].as_str().unwrap_or("refused")
                    ));
                }
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                Err(e) => format!("{e}"),
            };
            if start.elapsed() > give_up {
                return NotifyResult::Refused(format!("the gateway did not take it: {retry}"));
            }
            tracing::warn!(key, error = %retry, "gateway notify failed; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    /// Run (or dry-run) a contract's action through the gateway's action
    /// API and wait for its record. `Err` carries why it did not run: a
    /// refusal (4xx, with the gateway's detail) at once; a connection
    /// failure or 5xx after a few tries.
    pub async fn run_action(
        &self,
        flow: &str,
        body: &Value,
        limit: Duration,
    ) -> Result<Value, String> {
        let mut wait = Duration::from_millis(200);
        let mut last = String::new();
        for _ in 0..5 {
            let r = self
                .client
                .post(format!("{}/v1/actions/{flow}/run", self.url))
                .bearer_auth(&self.token)
                .timeout(limit)
                .json(body)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    return r
                        .json()
                        .await
                        .map_err(|e| format!("the gateway's answer: {e}"));
                }
                Ok(r) if r.status().is_client_error() => {
                    let code = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or_default();
                    return Err(format!(
                        "refused (HTTP {code}): {}",
                        v["detail"].as_str().unwrap_or("no detail")
                    ));
                }
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                // A timeout is not retried: the run may be under way.
                Err(e) if e.is_timeout() => return Err(format!("no answer in time: {e}")),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        Err(format!("the gateway did not take it: {last}"))
    }

    /// Ask the gateway to stop a notification. True when it accepted.
    pub async fn cancel(&self, notification: &str, reason: &str) -> bool {
        for _ in 0..5 {
            let r = self
                .client
                .post(format!(
                    "{}/v1/notifications/{notification}/cancel",
                    self.url
                ))
                .bearer_auth(&self.token)
                .json(&json!({"reason": reason}))
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() || r.status().as_u16() == 409 => return true,
                Ok(r) if r.status().is_client_error() => return false,
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        false
    }
}

/// Check a webhook's `webhook-signature` (any of its `v1,` values under
/// any of our secrets) and that its timestamp is within `tolerance_s`.
pub fn verify(
    secrets: &[String],
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), &'static str> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| "bad webhook-timestamp")?;
    // abs_diff: a timestamp near i64::MIN must not overflow.
    if now_s.abs_diff(ts) > tolerance_s.unsigned_abs() {
        return Err("webhook-timestamp is too far from now");
    }
    if secrets.is_empty() {
        return Err("no webhook secret is configured");
    }
    use base64::Engine as _;
    for s in secrets {
        let key = crate::service::webhook::secret_bytes(s);
        for sig in signature.split_whitespace() {
            let Some(b64) = sig.strip_prefix("v1,") else {
                continue;
            };
            let Ok(given) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                continue;
            };
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
                continue;
            };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.trim().as_bytes());
            mac.update(b".");
            mac.update(body);
            if mac.verify_slice(&given).is_ok() {
                return Ok(());
            }
        }
    }
    Err("the signature does not match")
}

/// Who acknowledged: the person an operator named, or the contact who
/// pressed the key.
fn acked_by(d: &Value, contact_name: &dyn Fn(u64) -> Option<String>) -> Option<String> {
    d["final"]["console"]["by"]
        .as_str()
        .map(str::to_string)
        .or_else(|| d["final"]["contact"].as_u64().and_then(contact_name))
}

/// A gateway event as one timeline line, and the final outcome when it
/// is one. `contact_name` turns a contact index into a name.
pub fn describe(
    ev: &Value,
    contact_name: &dyn Fn(u64) -> Option<String>,
) -> (String, Option<GatewayOutcome>) {
    let t = ev["type"].as_str().unwrap_or("?");
    let d = &ev["data"];
    let s = |k: &str| d[k].as_str().map(str::to_string).unwrap_or_default();
    let attempt = d["attempt"]
        .as_u64()
        .map(|a| format!(" (attempt {a})"))
        .unwrap_or_default();
    let text = match t {
        "call.dialing" => format!("calling {}{attempt}", s("contact")),
        "call.ringing" => format!("ringing{attempt}"),
        "call.answered" => format!("answered{attempt}"),
        "call.redirected" => format!("redirected ({}) to {}{attempt}", d["code"], s("target")),
        "call.amd" => format!("answering machine detection: {}{attempt}", d["result"]),
        "digit" => format!("key {} pressed{attempt}", s("digit")),
        "call.ended" => format!(
            "call ended: {}{attempt}",
            d["outcome"]["outcome"]
                .as_str()
                .or(d["outcome"].as_str())
                .unwrap_or("?")
        ),
        "call.failed" => format!("call failed: {}{attempt}", s("error")),
        "contact.skipped" => format!("skipped {}", s("contact")),
        "notification.queued" => "queued at the gateway".into(),
        "audio.ready" => "the message is rendered".into(),
        "notification.started" => "the escalation started".into(),
        "notification.acked" | "notification.action_taken" => {
            let who = acked_by(d, contact_name);
            // An operator's acknowledgement for someone on the phone says so.
            let via = match (d["via"].as_str(), d["operator"].as_str()) {
                (Some("console"), Some(op)) => format!(" (recorded in the console by {op})"),
                _ => String::new(),
            };
            format!(
                "acknowledged{}{via}",
                who.map(|w| format!(" by {w}")).unwrap_or_default()
            )
        }
        "notification.exhausted" => "every round was tried: nobody took it".into(),
        "notification.cancelled" => format!(
            "the escalation was cancelled: {}",
            d["final"]["reason"].as_str().unwrap_or("")
        ),
        "notification.failed" => format!("the gateway could not call: {}", s("detail")),
        t if t.starts_with("action.") => {
            let mut x = format!("{t}: {}", s("action"));
            for k in ["phase", "step", "result", "exit", "status", "excerpt"] {
                if let Some(v) = d.get(k).filter(|v| !v.is_null()) {
                    x.push_str(&format!(
                        " {k}={}",
                        v.as_str().map_or(v.to_string(), str::to_string)
                    ));
                }
            }
            x
        }
        other => other.to_string(),
    };
    let outcome = match t {
        "notification.acked" | "notification.action_taken" => Some(GatewayOutcome::Acked {
            by: acked_by(d, contact_name),
        }),
        "notification.exhausted" | "notification.cancelled" | "notification.failed" => {
            Some(GatewayOutcome::Ended {
                state: t.trim_start_matches("notification.").to_string(),
            })
        }
        _ => None,
    };
    (text, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_made_by_the_gateway_verifies_and_a_forged_one_does_not() {
        let secrets = vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()];
        let body = br#"{"type":"notification.acked"}"#;
        let sig = crate::service::webhook::sign(
            &secrets,
            "ev_1",
            1_700_000_000,
            std::str::from_utf8(body).unwrap(),
        );
        assert_eq!(
            verify(
                &secrets,
                "ev_1",
                "1700000000",
                &sig,
                body,
                1_700_000_010,
                300
            ),
            Ok(())
        );
        assert!(verify(
            &secrets,
            "ev_2",
            "1700000000",
            &sig,
            body,
            1_700_000_010,
            300
        )
        .is_err());
        assert!(verify(
            &secrets,
            "ev_1",
            "1700000000",
            &sig,
            b"{}",
            1_700_000_010,
            300
        )
        .is_err());
        assert!(verify(
            &secrets,
            "ev_1",
            "1700000000",
            &sig,
            body,
            1_700_009_000,
            300
        )
        .is_err());
        assert!(verify(&[], "ev_1", "1700000000", &sig, body, 1_700_000_010, 300).is_err());
        assert!(verify(&secrets, "ev_1", "x", &sig, body, 1_700_000_010, 300).is_err());
        // Extreme timestamps are refused, not an overflow.
        for ts in ["-9223372036854775808", "9223372036854775807"] {
            assert!(verify(&secrets, "ev_1", ts, &sig, body, 1_700_000_010, 300).is_err());
        }
    }

    #[test]
    fn final_events_carry_the_outcome() {
        let names = |i: u64| Some(format!("contact{i}"));
        let (t, o) = describe(
            &json!({"type": "notification.acked", "data": {"final": {"contact": 1}}}),
            &names,
        );
        assert_eq!(t, "acknowledged by contact1");
        assert_eq!(
            o,
            Some(GatewayOutcome::Acked {
                by: Some("contact1".into())
            })
        );
        let (_, o) = describe(
            &json!({"type": "notification.exhausted", "data": {}}),
            &names,
        );
        assert_eq!(
            o,
            Some(GatewayOutcome::Ended {
                state: "exhausted".into()
            })
        );
        let (t, o) = describe(
            &json!({"type": "digit", "data": {"digit": "1", "attempt": 2}}),
            &names,
        );
        assert_eq!((t.as_str(), o), ("key 1 pressed (attempt 2)", None));
    }
}
