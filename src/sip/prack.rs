//! Reliable provisional responses on the UAC side (RFC 3262): which 1xx
//! to PRACK, with what RAck, and which are retransmissions to absorb.
//! Sans-IO bookkeeping; the call builds and sends the PRACK.

use std::collections::HashMap;

use super::header::CSeq;
use super::leg::to_tag;
use super::message::{split_list, Headers, Response};

/// Does header `name` list option tag `token` (e.g. Require: 100rel)?
pub fn lists(headers: &Headers, name: &str, token: &str) -> bool {
    headers
        .all(name)
        .flat_map(split_list)
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// What to do with a provisional response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisional {
    /// An ordinary 1xx.
    Unreliable,
    /// A new reliable 1xx: process it and PRACK with this RAck value.
    Acknowledge { rack: String },
    /// A retransmission, or out of order: neither PRACKed nor processed
    /// (RFC 3262 4); the first PRACK's transaction covers it.
    Repeat,
}

/// The highest RSeq PRACKed on each early dialog (To tag).
#[derive(Debug, Default)]
pub struct Prack {
    acked: HashMap<String, u32>,
}

impl Prack {
    pub fn classify(&mut self, resp: &Response) -> Provisional {
        if !(101..=199).contains(&resp.code) || !lists(&resp.headers, "Require", "100rel") {
            return Provisional::Unreliable;
        }
        let rseq = resp
            .headers
            .get("RSeq")
            .and_then(|v| v.trim().parse::<u32>().ok());
        let cseq = resp.headers.get("CSeq").and_then(|c| CSeq::parse(c).ok());
        // Without RSeq or a dialog there is nothing to acknowledge.
        let (Some(rseq), Some(cseq), Some(tag)) = (rseq, cseq, to_tag(resp)) else {
            return Provisional::Unreliable;
        };
        match self.acked.get(&tag) {
            Some(&last) if rseq != last.wrapping_add(1) => Provisional::Repeat,
            _ => {
                self.acked.insert(tag, rseq);
                Provisional::Acknowledge {
                    rack: format!("{rseq} {} {}", cseq.seq, cseq.method),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Method, Request};

    fn resp(code: u16, tag: &str, require: Option<&str>, rseq: Option<&str>) -> Response {
        let mut req = Request::new(Method::Invite, "sip:b@127.0.0.1");
        req.headers
            .push("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx");
        req.headers.push("From", "<sip:a@127.0.0.1>;tag=a");
        req.headers.push("To", "<sip:b@127.0.0.1>");
        req.headers.push("Call-ID", "c");
        req.headers.push("CSeq", "2 INVITE");
        let mut r = Response::for_request(&req, code, Some(tag));
        if let Some(v) = require {
            r.headers.push("Require", v);
        }
        if let Some(v) = rseq {
            r.headers.push("RSeq", v);
        }
        r
    }

    #[test]
    fn each_rseq_is_acknowledged_once_in_order_per_dialog() {
        let mut p = Prack::default();
        assert_eq!(
            p.classify(&resp(180, "x", None, Some("1"))),
            Provisional::Unreliable
        );
        assert_eq!(
            p.classify(&resp(183, "x", Some("100rel"), None)),
            Provisional::Unreliable
        );
        assert_eq!(
            p.classify(&resp(100, "x", Some("100rel"), Some("1"))),
            Provisional::Unreliable
        );
        let ack = |rack: &str| Provisional::Acknowledge { rack: rack.into() };
        assert_eq!(
            p.classify(&resp(183, "x", Some("timer, 100rel"), Some("7"))),
            ack("7 2 INVITE")
        );
        assert_eq!(
            p.classify(&resp(183, "x", Some("100rel"), Some("7"))),
            Provisional::Repeat
        );
        assert_eq!(
            p.classify(&resp(180, "x", Some("100rel"), Some("9"))),
            Provisional::Repeat
        );
        assert_eq!(
            p.classify(&resp(180, "x", Some("100rel"), Some("8"))),
            ack("8 2 INVITE")
        );
        // Another fork numbers its own responses.
        assert_eq!(
            p.classify(&resp(183, "y", Some("100rel"), Some("1"))),
            ack("1 2 INVITE")
        );
    }
}
