//! DTMF carried in SIP INFO bodies (`application/dtmf-relay`,
//! `application/dtmf`), for both call directions.

use super::message::Request;

/// DTMF from an INFO body: `Some(Ok)` a digit, `Some(Err)` a known type with
/// a bad body, `None` a content type we do not take.
pub(crate) fn parse_info_dtmf(req: &Request) -> Option<Result<(char, Option<u32>), ()>> {
    let ctype = req.headers.get("Content-Type")?.to_ascii_lowercase();
    let ctype = ctype
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let body = std::str::from_utf8(&req.body).ok();
    let valid = |c: char| matches!(c, '0'..='9' | '*' | '#' | 'A'..='D');
    match ctype.as_str() {
        "application/dtmf-relay" => {
            let body = body?;
            let mut digit = None;
            let mut duration = None;
            for line in body.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = normalise_digit(v.trim()),
                    "duration" => duration = v.trim().parse().ok(),
                    _ => {}
                }
            }
            Some(digit.filter(|c| valid(*c)).map(|d| (d, duration)).ok_or(()))
        }
        "application/dtmf" => {
            let d = body.and_then(|b| normalise_digit(b.trim()));
            Some(d.filter(|c| valid(*c)).map(|d| (d, None)).ok_or(()))
        }
        _ => None,
    }
}

fn normalise_digit(s: &str) -> Option<char> {
    match s {
        "10" => Some('*'),
        "11" => Some('#'),
        s if s.chars().count() == 1 => s.chars().next().map(|c| c.to_ascii_uppercase()),
        _ => None,
    }
}
