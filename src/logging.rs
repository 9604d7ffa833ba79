//! Logs for operators, on stderr.
//!
//! - `plain` (default): one readable line per event. Under systemd
//!   (`JOURNAL_STREAM` set) without timestamps or colours, since journald
//!   adds its own.
//! - `json` (`--log-format json`, or `CALLOUT_LOG_FORMAT=json`): one JSON
//!   object per line, with the fields of the spans around the event
//!   (`notification` with its id and contract, `call` with its attempt).
//!
//! The level filter is `CALLOUT_LOG` (default `warn`). Phone numbers and
//! the user parts of SIP URIs go through [`Redacted`]: hidden but for
//! their last two characters, unless `CALLOUT_LOG_NUMBERS=show` (for
//! debugging with a carrier).

use std::sync::atomic::{AtomicBool, Ordering};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

static SHOW_NUMBERS: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);

/// A line for the operator whatever the level filter (start-up banner,
/// the run's token, stop): `callout: …` in plain logs, an object with
/// `"notice": true` in JSON logs, so every JSON line parses.
pub fn notice(message: &str) {
    if JSON.load(Ordering::Relaxed) {
        let line = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": "INFO",
            "notice": true,
            "message": message,
        });
        eprintln!("{line}");
    } else {
        eprintln!("callout: {message}");
    }
}

/// Install the global subscriber.
pub fn init(format: LogFormat) {
    SHOW_NUMBERS.store(
        std::env::var("CALLOUT_LOG_NUMBERS").is_ok_and(|v| v == "show"),
        Ordering::Relaxed,
    );
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("CALLOUT_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Plain if std::env::var_os("JOURNAL_STREAM").is_some() => {
            tracing_subscriber::fmt()
                .without_time()
                .with_ansi(false)
                .with_env_filter(filter())
                .with_writer(std::io::stderr)
                .init()
        }
        LogFormat::Plain => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .init(),
    }
}

/// A SIP URI or phone number fit for a log: `sip:0312345678@carrier`
/// shows as `sip:…78@carrier`, `+81312345678` as `…78`.
#[derive(Clone, Copy)]
pub struct Redacted<'a>(pub &'a str);

fn hide(user: &str) -> String {
    let n = user.chars().count();
    if n <= 2 {
        return "…".into();
    }
    format!("…{}", user.chars().skip(n - 2).collect::<String>())
}

impl std::fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        if SHOW_NUMBERS.load(Ordering::Relaxed) {
            return f.write_str(s);
        }
        let (open, inner, close) = match (s.find('<'), s.rfind('>')) {
            (Some(a), Some(b)) if a < b => (&s[..=a], &s[a + 1..b], &s[b..]),
            _ => ("", s, ""),
        };
        let shown = match inner.split_once(':') {
            Some((scheme, rest))
                if ["sip", "sips", "tel"].contains(&scheme.to_ascii_lowercase().as_str()) =>
            {
                match rest.split_once('@') {
                    Some((user, host)) => format!("{scheme}:{}@{host}", hide(user)),
                    None if scheme.eq_ignore_ascii_case("tel") => {
                        let (num, params) = rest
                            .split_once(';')
                            .map_or((rest, None), |(n, p)| (n, Some(p)));
                        match params {
                            Some(p) => format!("{scheme}:{};{p}", hide(num)),
                            None => format!("{scheme}:{}", hide(num)),
                        }
                    }
                    None => inner.to_string(),
                }
            }
            _ if inner.chars().any(|c| c.is_ascii_digit())
                && inner
                    .chars()
                    .all(|c| c.is_ascii_digit() || "+-() ".contains(c)) =>
            {
                hide(inner)
            }
            _ => inner.to_string(),
        };
        write!(f, "{open}{shown}{close}")
    }
}

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_sip_users_are_hidden_but_for_two_characters() {
        let r = |s: &str| Redacted(s).to_string();
        assert_eq!(
            r("sip:0312345678@carrier.example"),
            "sip:…78@carrier.example"
        );
        assert_eq!(
            r("\"Bob\" <sip:bob@127.0.0.1:5070>;tag=1"),
            "\"Bob\" <sip:…ob@127.0.0.1:5070>;tag=1"
        );
        assert_eq!(
            r("tel:+81-3-1234-5678;phone-context=x"),
            "tel:…78;phone-context=x"
        );
        assert_eq!(r("+81 3 1234 5678"), "…78");
        assert_eq!(r("sip:carrier.example"), "sip:carrier.example");
        assert_eq!(r("web-01"), "web-01");
        assert!(!format!("{:?}", Redacted("sip:0312345678@c")).contains("03123456"));
    }
}
