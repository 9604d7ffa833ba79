//! The reports as CSV (RFC 4180: CRLF, fields quoted when they need it).

use super::{Figures, Group, Summary};

fn field(s: &str) -> String {
    // A leading = + - @ would be a formula in a spreadsheet.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

const HEADER: &str = "notifications,acknowledged,answer_rate,ack_median_ms,ack_p90_ms,calls,answered_calls,unanswered_calls,abandoned_calls,machine_calls,escalation_depth_mean";

fn figures(f: &Figures) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{}",
        f.notifications,
        f.acknowledged,
        opt(f.answer_rate.map(|r| format!("{r:.4}"))),
        opt(f.ack_median_ms),
        opt(f.ack_p90_ms),
        f.calls,
        f.answered_calls,
        f.unanswered_calls,
        f.abandoned_calls,
        f.machine_calls,
        opt(f.escalation_depth_mean.map(|r| format!("{r:.3}"))),
    )
}

/// One line per group, the dimension's name as the first column.
pub fn groups(dim: &str, rows: &[Group]) -> String {
    let mut out = format!("{},{HEADER}\r\n", field(dim));
    for g in rows {
        out.push_str(&format!("{},{}\r\n", field(&g.key), figures(&g.figures)));
    }
    out
}

/// The summary's figures, then its SIP codes and action states as
/// `metric,value` lines.
pub fn summary(s: &Summary) -> String {
    let mut out = format!(
        "from_ms,to_ms,{HEADER}\r\n{},{},{}\r\n",
        s.from_ms,
        s.to_ms,
        figures(&s.figures)
    );
    out.push_str("\r\nmetric,key,value\r\n");
    for (k, v) in &s.escalation_depth {
        out.push_str(&format!("escalation_depth,{k},{v}\r\n"));
    }
    for (k, v) in &s.sip_failures {
        out.push_str(&format!("sip_failure,{k},{v}\r\n"));
    }
    for (k, v) in &s.actions {
        out.push_str(&format!("action,{},{v}\r\n", field(k)));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting() {
        assert_eq!(super::field("a,b"), "\"a,b\"");
        assert_eq!(super::field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(super::field("=cmd()"), "'=cmd()");
        assert_eq!(super::field("acme"), "acme");
    }
}
