//! Webhook deliveries from the outbox, signed as Standard Webhooks do:
//! `webhook-id`, `webhook-timestamp`, and `webhook-signature: v1,<base64
//! HMAC-SHA256 of "id.timestamp.body">`, one signature per valid secret.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use tokio::task::JoinSet;

use super::Service;
use crate::runner::now_ms;
use crate::store::OutboxRow;

/// Decode a `whsec_<base64>` secret (or raw text without the prefix).
pub fn secret_bytes(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|_| b64.as_bytes().to_vec()),
        None => secret.as_bytes().to_vec(),
    }
}

/// The `webhook-signature` header value for these secrets.
pub fn sign(secrets: &[String], id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .map(|s| {
            // HMAC accepts keys of any length; `new_from_slice` cannot fail.
            let mut mac = Hmac::<Sha256>::new_from_slice(&secret_bytes(s)).expect("any key length");
            mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Backoff before try `n` (1-based): exponential from 1 s, capped at 10
/// minutes, with up to 20 % jitter.
pub fn backoff_ms(tries: i64) -> i64 {
    let base = 1000i64.saturating_mul(1 << tries.clamp(0, 10)).min(600_000);
    base + rand::thread_rng().gen_range(0..=base / 5)
}

/// How long a node that claimed a delivery has to send it (clustered)
/// before another node may.
const DELIVERY_CLAIM_MS: i64 = 30_000;

/// Deliver due events until the service stops.
pub async fn run(svc: Arc<Service>) {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(ca) = &svc.config.webhooks.ca_file {
        match std::fs::read(ca).map(|pem| reqwest::Certificate::from_pem(&pem)) {
            Ok(Ok(cert)) => builder = builder.add_root_certificate(cert),
            Ok(Err(e)) => {
                tracing::error!(file = %ca.display(), error = %e, "webhook CA file is not a PEM certificate")
            }
            Err(e) => {
                tracing::error!(file = %ca.display(), error = %e, "cannot read the webhook CA file")
            }
        }
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks disabled: cannot build the HTTP client");
            return;
        }
    };
    let give_up_ms = crate::util::parse_duration(&svc.config.webhooks.give_up_after)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(86_400_000);
    // Deliveries run side by side, one per notification at a time (`due`
    // hands out only each notification's oldest undelivered event, and
    // one in flight is skipped), so a slow or dead receiver holds up its
    // own stream and nobody else's.
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut deliveries: JoinSet<String> = JoinSet::new();
    // No target for any contract: events are marked delivered nowhere in
    // bulk, at most ten times a second, instead of one commit each.
    let nowhere = svc.config.webhooks.url.is_none()
        && svc.config.webhooks.contracts.is_empty()
        && svc.pipeline_webhook.get().is_none();
    if nowhere {
        loop {
            if let Err(e) = svc.store.delivered_nowhere(now_ms()).await {
                tracing::warn!(error = %e, "outbox update failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = svc.outbox_kick.notified() => {}
                _ = svc.shutdown.cancelled() => return,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    loop {
        while let Some(done) = deliveries.try_join_next() {
            if let Ok(id) = done {
                in_flight.remove(&id);
            }
        }
        let due = match svc.store.due(now_ms(), 50).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "outbox read failed");
                Vec::new()
            }
        };
        for ev in due {
            if in_flight.len() >= MAX_IN_FLIGHT {
                break;
            }
            if !in_flight.insert(ev.notification_id.clone()) {
                continue;
            }
            let (svc, client) = (svc.clone(), client.clone());
            deliveries.spawn(async move {
                // Several nodes read the same outbox: the one that moves
                // the row's due time first sends it; a node dying while
                // sending leaves it due again after the claim runs out.
                let mine = match svc.cluster.get() {
                    None => true,
                    Some(_) => svc
                        .store
                        .claim_delivery(&ev.id, ev.next_try_ms, now_ms() + DELIVERY_CLAIM_MS)
                        .await
                        .unwrap_or(false),
                };
                if mine {
                    deliver(&svc, &client, &ev, give_up_ms).await;
                }
                ev.notification_id
            });
        }
        // Wake when the next delivery is due, soon after new events, or
        // when a delivery ends (its stream's next event may be due).
        let next = svc.store.next_due_ms().await.ok().flatten();
        let wait = next.map_or(500, |t| (t - now_ms()).clamp(20, 500)) as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = svc.outbox_kick.notified() => {}
            Some(done) = deliveries.join_next() => {
                if let Ok(id) = done {
                    in_flight.remove(&id);
                }
            }
            _ = svc.shutdown.cancelled() => return,
        }
    }
}

/// Deliveries in flight at once (each has the client's 10 s timeout).
const MAX_IN_FLIGHT: usize = 32;

/// Send one event and record the result.
async fn deliver(svc: &Arc<Service>, client: &reqwest::Client, ev: &OutboxRow, give_up_ms: i64) {
    let n = svc
        .store
        .get_notification(&ev.notification_id)
        .await
        .ok()
        .flatten();
    // An operator's run without a notification has its own stream.
    let run = match &n {
        Some(_) => None,
        None => svc.store.get_run(&ev.notification_id).await.ok().flatten(),
    };
    let contract = n
        .as_ref()
        .map(|n| n.contract.clone())
        .or_else(|| run.as_ref().map(|r| r.contract.clone()))
        .unwrap_or_default();
    let ticket = n
        .as_ref()
        .map(|n| n.ticket.clone())
        .or_else(|| run.as_ref().and_then(|r| r.ticket.clone()));
    let Some(url) = svc.webhook_url(&contract) else {
        // No target configured: the event stays in the database
        // (visible in the API) and counts as delivered nowhere.
        let _ = svc.store.delivered(&ev.id, now_ms()).await;
        return;
    };
    let ts = now_ms() / 1000;
    let body = serde_json::json!({
        "type": ev.event,
        "timestamp": ev.created_ms,
        "notification": ev.notification_id,
        "contract": contract,
        "ticket": ticket,
        "seq": ev.seq,
        "data": serde_json::from_str::<serde_json::Value>(&ev.payload).unwrap_or_default(),
    })
    .to_string();
    let mut req = client
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", &ev.id)
        .header("webhook-timestamp", ts.to_string());
    if !svc.config.webhooks.secrets.is_empty() {
        req = req.header(
            "webhook-signature",
            sign(&svc.config.webhooks.secrets, &ev.id, ts, &body),
        );
    }
    let result = req.body(body).send().await;
    let error = match result {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
        Err(e) => Some(if e.is_timeout() {
            "timeout".to_string()
        } else {
            "connection failed".to_string()
        }),
    };
    match error {
        None => {
            let _ = svc.store.delivered(&ev.id, now_ms()).await;
        }
        Some(err) => {
            let give_up = now_ms() - ev.created_ms > give_up_ms;
            if give_up {
                svc.metrics.webhook_gave_up.fetch_add(1, Ordering::Relaxed);
                tracing::error!(event = %ev.id, error = %err, "webhook delivery given up");
            }
            svc.metrics.webhook_failures.fetch_add(1, Ordering::Relaxed);
            let _ = svc
                .store
                .failed(&ev.id, now_ms() + backoff_ms(ev.tries + 1), &err, give_up)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's example.
    #[test]
    fn signature_matches_the_spec_example() {
        let secret = vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()];
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// While a secret is rotated, both sign: receivers holding either one
    /// can verify.
    #[test]
    fn rotation_signs_with_every_secret() {
        let secrets = vec![
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
            "whsec_bmV3LXNlY3JldA==".to_string(),
        ];
        let header = sign(
            &secrets,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let only_new = sign(
            &secrets[1..],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(parts[1], only_new);
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!((1000..=1200 * 2).contains(&backoff_ms(0)));
        assert!(backoff_ms(3) >= 8000);
        assert!(backoff_ms(30) <= 720_000);
    }
}
