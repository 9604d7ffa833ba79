//! The JSON intake parsers (`pipeline::sources`): Alertmanager, Grafana
//! and PagerDuty-style event bodies as the HTTP routes receive them.

use crate::pipeline::alert::{Alert, Status};
use crate::pipeline::sources::{self, Batch, BodyError, MAX_LABELS, MAX_TEXT, MAX_VALUE};

const NOW: i64 = 1_700_000_000_000;

/// Byte 0 picks the parser (`a` Alertmanager, `g` Grafana, `e` events,
/// upper case: with a default contract from a routing rule; anything
/// else: all three without), the rest is the body. Every alert that comes
/// out must be bounded, name its contract and key, and survive the JSON
/// round trip the store makes; every refusal must name a field.
pub fn intake(data: &[u8]) -> bool {
    let Some((&sel, body)) = data.split_first() else {
        return false;
    };
    let default = sel.is_ascii_uppercase().then_some("fallback");
    type Parser = fn(&[u8], i64, Option<&str>) -> Result<Batch, BodyError>;
    let all: [Parser; 3] = [sources::alertmanager, sources::grafana, sources::events];
    let run: &[Parser] = match sel.to_ascii_lowercase() {
        b'a' => &all[..1],
        b'g' => &all[1..2],
        b'e' => &all[2..],
        _ => &all,
    };
    let mut parsed = false;
    for parse in run {
        match parse(body, NOW, default) {
            Ok(batch) => {
                parsed = true;
                check(&batch, default);
            }
            Err(e) => assert!(!e.field.is_empty() && !e.detail.is_empty(), "{e:?}"),
        }
    }
    parsed
}

fn check(batch: &Batch, default: Option<&str>) {
    let entries = batch.items.len() + batch.acks.len();
    for item in &batch.items {
        match item {
            Ok(a) => check_alert(a, default),
            Err(e) => {
                // Every entry of the body's array is an item or an ack.
                assert!(e.index < entries, "{e:?}");
                assert!(!e.field.is_empty() && !e.detail.is_empty(), "{e:?}");
            }
        }
    }
    for ack in &batch.acks {
        check_alert(&ack.alert, default);
        assert_eq!(ack.alert.status, Status::Firing);
        assert_eq!(
            ack.alert.labels.get("event_action").map(String::as_str),
            Some("acknowledge")
        );
    }
}

fn check_alert(a: &Alert, default: Option<&str>) {
    assert!(
        !a.contract.is_empty() && a.contract.len() <= MAX_VALUE,
        "{a:?}"
    );
    assert_eq!(a.contract.trim(), a.contract);
    if default.is_none() {
        assert_ne!(a.contract, "fallback", "a default appeared from nowhere");
    }
    assert!(!a.key.is_empty() && a.key.len() <= MAX_VALUE, "{a:?}");
    assert!(a.host.len() <= MAX_VALUE && a.summary.len() <= MAX_TEXT);
    assert_eq!(a.received_ms, NOW);
    assert!(a.id.starts_with("al_"));
    // Sources' own labels and annotations are bounded; callout adds at
    // most a handful of its own (event fields, meta links).
    assert!(
        a.labels.len() <= MAX_LABELS + 12,
        "{} labels",
        a.labels.len()
    );
    for (k, v) in &a.labels {
        assert!(
            !k.is_empty() && k.len() <= 128 + "annotation.".len(),
            "{k:?}"
        );
        assert!(v.len() <= MAX_TEXT, "{k}: {} bytes", v.len());
    }
    let json = serde_json::to_string(a).expect("an alert serialises");
    let back: Alert = serde_json::from_str(&json).expect("and reads back");
    assert_eq!(&back, a);
}
