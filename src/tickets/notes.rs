//! A timeline entry as a ticket note, in the contract's language, and the
//! ticket status it moves to. Pure: no I/O.

use super::{marker, Note, TicketStatus};
use crate::ivr::dialplan::Language;
use crate::store::TimelineRow;

fn state_word(lang: Language, s: &str) -> String {
    let ja = match s {
        "pending" => "待機中",
        "notifying" => "通知中",
        "acknowledged" => "受領済み",
        "recovered" => "復旧",
        "closed" => "クローズ",
        "suppressed" => "抑止",
        "expired" => "期限切れ",
        other => other,
    };
    match lang {
        Language::Ja => ja.to_string(),
        Language::En => s.to_string(),
    }
}

/// `from → to: why` (the engine's state lines) split up.
fn parse_state(text: &str) -> Option<(&str, &str, &str)> {
    let (from, rest) = text.split_once(" → ")?;
    let (to, why) = rest.split_once(':').unwrap_or((rest, ""));
    Some((from.trim(), to.trim(), why.trim()))
}

/// The status a timeline entry moves the ticket to, if any.
pub fn status_of(row: &TimelineRow) -> Option<TicketStatus> {
    if row.kind != "state" {
        return None;
    }
    let (from, to, _) = parse_state(&row.text)?;
    match to {
        // A reopen: the same ticket is open again (and a person's close
        // of it no longer stands).
        "pending" | "notifying" if matches!(from, "closed" | "expired") => Some(TicketStatus::Open),
        "acknowledged" => Some(TicketStatus::InProgress),
        "recovered" => Some(TicketStatus::Resolved),
        "closed" | "expired" => Some(TicketStatus::Closed),
        _ => None,
    }
}

fn label(lang: Language, row: &TimelineRow) -> &'static str {
    let ty = row
        .data
        .as_ref()
        .and_then(|d| d["type"].as_str())
        .unwrap_or("");
    let ja = lang == Language::Ja;
    match row.kind.as_str() {
        "alert" => {
            if ja {
                "アラート"
            } else {
                "Alert"
            }
        }
        "held" => {
            if ja {
                "監視経路障害として保留"
            } else {
                "Held (monitoring path)"
            }
        }
        "notify" => {
            if ja {
                "通知"
            } else {
                "Notification"
            }
        }
        "recovery" => {
            if ja {
                "復旧"
            } else {
                "Recovery"
            }
        }
        "cancel" => {
            if ja {
                "取り消し"
            } else {
                "Cancelled"
            }
        }
        "ticket" => {
            if ja {
                "チケット"
            } else {
                "Ticket"
            }
        }
        "state" => {
            if ja {
                "状態"
            } else {
                "State"
            }
        }
        // A run on the incident: the pipeline's own or an operator's, its
        // steps and its result.
        "action" => {
            if ja {
                "保守作業"
            } else {
                "Maintenance"
            }
        }
        "gateway" if ty.starts_with("action") => {
            if ja {
                "保守作業"
            } else {
                "Maintenance"
            }
        }
        "gateway" if ty.starts_with("call") => {
            if ja {
                "架電"
            } else {
                "Call"
            }
        }
        "gateway" => {
            if ja {
                "連絡"
            } else {
                "Escalation"
            }
        }
        "link" => {
            if ja {
                "関連チケット"
            } else {
                "Related"
            }
        }
        "mail" => {
            if ja {
                "メール"
            } else {
                "Mail"
            }
        }
        _ => {
            if ja {
                "記録"
            } else {
                "Event"
            }
        }
    }
}

/// Who took it, from the engine's acknowledgement line (`notifying →
/// acknowledged: acknowledged by NAME on the phone`).
pub fn assignee_of(row: &TimelineRow) -> Option<String> {
    if row.kind != "state" {
        return None;
    }
    let (_, to, why) = parse_state(&row.text)?;
    if to != "acknowledged" {
        return None;
    }
    why.strip_prefix("acknowledged by ")?
        .strip_suffix(" on the phone")
        .filter(|n| !n.is_empty() && *n != "someone")
        .map(str::to_string)
}

/// The note for one timeline entry. The marker goes on its own last line
/// so a resend can find it in the ticket's journals.
pub fn render(lang: Language, incident: &str, row: &TimelineRow, tz: chrono_tz::Tz) -> Note {
    let at = chrono::DateTime::from_timestamp_millis(row.at_ms)
        .unwrap_or_default()
        .with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z");
    let body = match (row.kind.as_str(), parse_state(&row.text)) {
        ("state", Some((from, to, why))) => {
            let (from, to) = (state_word(lang, from), state_word(lang, to));
            if why.is_empty() {
                format!("{from} → {to}")
            } else {
                format!("{from} → {to}: {why}")
            }
        }
        _ => row.text.clone(),
    };
    // Keep a hostile alert field from becoming Redmine markup that hides
    // the marker: the body is a quoted block of at most 4000 characters.
    let body: String = body.chars().take(4000).collect();
    Note {
        marker: marker(incident, row.seq),
        text: format!(
            "[{}] {at}\n<pre>{}</pre>\n{}",
            label(lang, row),
            body.replace('<', "&lt;").replace('>', "&gt;"),
            marker(incident, row.seq)
        ),
        status: status_of(row),
        assignee: assignee_of(row),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, text: &str) -> TimelineRow {
        TimelineRow {
            id: "tl_1".into(),
            seq: 7,
            at_ms: 1_700_000_000_000,
            kind: kind.into(),
            text: text.into(),
            alert: None,
            data: None,
        }
    }

    #[test]
    fn states_move_the_status() {
        assert_eq!(
            status_of(&row("state", "notifying → acknowledged: key 1 by Alice")),
            Some(TicketStatus::InProgress)
        );
        assert_eq!(
            status_of(&row("state", "acknowledged → recovered: ok")),
            Some(TicketStatus::Resolved)
        );
        assert_eq!(
            status_of(&row("state", "recovered → closed: recovered")),
            Some(TicketStatus::Closed)
        );
        assert_eq!(
            status_of(&row("state", "pending → notifying: window over")),
            None
        );
        assert_eq!(status_of(&row("alert", "a → acknowledged")), None);
        assert_eq!(
            status_of(&row(
                "state",
                "closed → pending: reopened by a new occurrence inside the reopen window"
            )),
            Some(TicketStatus::Open)
        );
        assert_eq!(status_of(&row("state", "suppressed → pending: x")), None);
    }

    #[test]
    fn an_acknowledgement_names_who_took_it() {
        let r = row(
            "state",
            "notifying → acknowledged: acknowledged by Bob Smith on the phone",
        );
        assert_eq!(assignee_of(&r).as_deref(), Some("Bob Smith"));
        assert_eq!(
            render(Language::En, "in_1", &r, chrono_tz::UTC)
                .assignee
                .as_deref(),
            Some("Bob Smith")
        );
        assert_eq!(
            assignee_of(&row(
                "state",
                "notifying → acknowledged: acknowledged by someone on the phone"
            )),
            None
        );
        assert_eq!(
            assignee_of(&row(
                "alert",
                "notifying → acknowledged: acknowledged by Bob on the phone"
            )),
            None
        );
        assert_eq!(
            assignee_of(&row(
                "state",
                "acknowledged → recovered: acknowledged by Bob on the phone"
            )),
            None
        );
    }

    #[test]
    fn japanese_note_with_marker() {
        let n = render(
            Language::Ja,
            "in_1",
            &row("state", "notifying → acknowledged: key 1"),
            chrono_tz::Asia::Tokyo,
        );
        assert!(
            n.text.starts_with("[状態] 2023-11-15 07:13:20 JST"),
            "{}",
            n.text
        );
        assert!(n.text.contains("通知中 → 受領済み"), "{}", n.text);
        assert!(n.text.ends_with("callout:in_1:7"));
        assert_eq!(n.marker, "callout:in_1:7");
        let n = render(
            Language::En,
            "in_1",
            &row("alert", "<b>x</b>"),
            chrono_tz::UTC,
        );
        assert!(n.text.contains("&lt;b&gt;x&lt;/b&gt;"), "{}", n.text);
        let n = render(
            Language::Ja,
            "in_1",
            &row("action", "action restart step 1/3: check running"),
            chrono_tz::UTC,
        );
        assert!(n.text.starts_with("[保守作業] "), "{}", n.text);
    }
}
