//! 3xx redirects (RFC 3261 8.1.3.4): which target, if any, a redirected
//! call may go on to. Sans-IO.
//!
//! A redirect is toll fraud's easiest door: whoever answers a call (or
//! sits on its path) can send callout anywhere with one `302`. So a
//! redirect is followed only to a URI the dialplan itself names (one of
//! its contacts), at most `max_hops` times and never twice to the same
//! target; anything else ends the call as `redirect_refused` with the
//! target in the call record.

use super::header::{param, NameAddr, SipUri};
use super::message::{split_list, Response};

/// Longest target kept in a call record; a 302 is outside input.
const MAX_TARGET: usize = 256;

/// Redirects followed by default before the next one is refused.
pub const DEFAULT_MAX_HOPS: u8 = 3;

/// The redirect rule of one dial: the targets the dialplan allows and how
/// many redirects may be followed. The default follows none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedirectPolicy {
    allowed: Vec<SipUri>,
    max_hops: u8,
}

/// What to do with a 3xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Dial this URI (the allowed target, as the dialplan spells it).
    Follow(String),
    /// Refuse; `target` is what the 3xx asked for (cut to 256 bytes).
    Refuse { target: String, why: Refusal },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The 3xx named no Contact (or none callout can read).
    NoTarget,
    /// No target is one the dialplan names.
    NotInDialplan,
    /// Already redirected `max_hops` times, or back to a target tried.
    TooManyHops,
}

impl RedirectPolicy {
    /// Allow redirects to `uris` (a dialplan's contacts; unparseable ones
    /// are skipped), at most `max_hops` of them per call.
    pub fn new<'a>(uris: impl IntoIterator<Item = &'a str>, max_hops: u8) -> RedirectPolicy {
        RedirectPolicy {
            allowed: uris
                .into_iter()
                .filter_map(|u| SipUri::parse(u).ok())
                .collect(),
            max_hops,
        }
    }

    /// Decide on a 3xx's targets, given the URIs already dialled in this
    /// call (the first one included). The first target (highest q) the
    /// dialplan names wins.
    pub fn decide(&self, targets: &[String], dialled: &[String]) -> Decision {
        let Some(first) = targets.first() else {
            return Decision::Refuse {
                target: String::new(),
                why: Refusal::NoTarget,
            };
        };
        let mut seen_allowed = None;
        for t in targets {
            let Ok(uri) = SipUri::parse(t) else { continue };
            if !self.allowed.iter().any(|a| same_target(a, &uri)) {
                continue;
            }
            let looped = dialled
                .iter()
                .filter_map(|d| SipUri::parse(d).ok())
                .any(|d| same_target(&d, &uri));
            if looped {
                seen_allowed.get_or_insert(t);
                continue;
            }
            if dialled.len() > usize::from(self.max_hops) {
                return Decision::Refuse {
                    target: cut(t),
                    why: Refusal::TooManyHops,
                };
            }
            return Decision::Follow(t.clone());
        }
        match seen_allowed {
            Some(t) => Decision::Refuse {
                target: cut(t),
                why: Refusal::TooManyHops,
            },
            None => Decision::Refuse {
                target: cut(first),
                why: Refusal::NotInDialplan,
            },
        }
    }
}

/// Two URIs reach the same party: scheme, user, host (any case) and port
/// (absent = the scheme's default), and the same `transport` and `maddr`,
/// which change where the request goes. Other parameters do not matter.
pub fn same_target(a: &SipUri, b: &SipUri) -> bool {
    let lower = |p: Option<&str>| p.map(str::to_ascii_lowercase);
    a.scheme == b.scheme
        && a.user == b.user
        && a.target().1 == b.target().1
        && a.host.eq_ignore_ascii_case(&b.host)
        && lower(param(&a.params, "transport")) == lower(param(&b.params, "transport"))
        && lower(param(&a.params, "maddr")) == lower(param(&b.params, "maddr"))
}

/// The Contact URIs of a 3xx, highest `q` first (RFC 3261 8.1.3.4; equal
/// q keep their order). A `*` or unreadable entry is skipped.
pub fn targets(resp: &Response) -> Vec<String> {
    let mut found: Vec<(u32, String)> = Vec::new();
    for value in resp.headers.all("Contact") {
        for entry in split_list(value) {
            let Ok(na) = NameAddr::parse(entry) else {
                continue;
            };
            let q = param(&na.params, "q")
                .and_then(|q| q.parse::<f32>().ok())
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(1.0);
            found.push(((q * 1000.0) as u32, na.uri));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, u)| u).collect()
}

/// `s` cut to at most [`MAX_TARGET`] bytes on a char boundary.
fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_TARGET);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, Message};

    fn resp(contacts: &[&str]) -> Response {
        let mut raw = String::from(
            "SIP/2.0 302 Moved Temporarily\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
             From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n",
        );
        for c in contacts {
            raw.push_str(&format!("Contact: {c}\r\n"));
        }
        raw.push_str("Content-Length: 0\r\n\r\n");
        match parse(raw.as_bytes()).unwrap() {
            Message::Response(r) => r,
            _ => unreachable!(),
        }
    }

    fn policy() -> RedirectPolicy {
        RedirectPolicy::new(
            ["sip:bob@10.0.0.1:5070", "sip:+4712345678@trunk.example"],
            DEFAULT_MAX_HOPS,
        )
    }

    #[test]
    fn contacts_come_out_highest_q_first() {
        let r = resp(&[
            "<sip:low@h>;q=0.1, <sip:high@h>;q=0.9",
            "\"Mid\" <sip:mid@h;transport=udp>;q=0.5",
            "*",
            "sip:plain@h",
        ]);
        assert_eq!(
            targets(&r),
            [
                "sip:plain@h",
                "sip:high@h",
                "sip:mid@h;transport=udp",
                "sip:low@h"
            ]
        );
        assert!(targets(&resp(&[])).is_empty());
    }

    #[test]
    fn only_a_target_the_dialplan_names_is_followed() {
        let p = policy();
        let dialled = ["sip:alice@10.0.0.2".to_string()];
        // Host case and an explicit default port do not matter.
        assert_eq!(
            p.decide(&["sip:+4712345678@TRUNK.example:5060".into()], &dialled),
            Decision::Follow("sip:+4712345678@TRUNK.example:5060".into())
        );
        // Another user, port, transport or maddr is another target.
        for t in [
            "sip:+4790000000@trunk.example",
            "sip:bob@10.0.0.1",
            "sip:bob@10.0.0.1:5070;transport=tcp",
            "sip:bob@10.0.0.1:5070;maddr=203.0.113.9",
            "sips:bob@10.0.0.1:5070",
            "tel:+4712345678",
        ] {
            assert_eq!(
                p.decide(&[t.to_string()], &dialled),
                Decision::Refuse {
                    target: t.into(),
                    why: Refusal::NotInDialplan
                },
                "{t}"
            );
        }
        // The first allowed one wins over disallowed ones before it.
        assert_eq!(
            p.decide(
                &[
                    "sip:evil@203.0.113.1".into(),
                    "sip:bob@10.0.0.1:5070".into()
                ],
                &dialled
            ),
            Decision::Follow("sip:bob@10.0.0.1:5070".into())
        );
        // The default policy follows nothing.
        assert!(matches!(
            RedirectPolicy::default().decide(&["sip:bob@10.0.0.1:5070".into()], &[]),
            Decision::Refuse {
                why: Refusal::NotInDialplan,
                ..
            }
        ));
        assert_eq!(
            p.decide(&[], &dialled),
            Decision::Refuse {
                target: String::new(),
                why: Refusal::NoTarget
            }
        );
    }

    #[test]
    fn loops_and_long_chains_are_refused() {
        let p = RedirectPolicy::new(["sip:a@h", "sip:b@h", "sip:c@h"], 1);
        let once = ["sip:x@h".to_string()];
        assert_eq!(
            p.decide(&["sip:a@h".into()], &once),
            Decision::Follow("sip:a@h".into())
        );
        let twice = ["sip:x@h".to_string(), "sip:a@h".to_string()];
        assert_eq!(
            p.decide(&["sip:a@h".into()], &twice),
            Decision::Refuse {
                target: "sip:a@h".into(),
                why: Refusal::TooManyHops
            }
        );
        assert_eq!(
            p.decide(&["sip:b@h".into()], &twice),
            Decision::Refuse {
                target: "sip:b@h".into(),
                why: Refusal::TooManyHops
            }
        );
    }

    #[test]
    fn a_huge_target_is_cut_for_the_record() {
        let t = format!("sip:{}@h", "é".repeat(400));
        match policy().decide(&[t], &[]) {
            Decision::Refuse { target, .. } => assert!(target.len() <= MAX_TARGET),
            d => panic!("{d:?}"),
        }
    }
}
