//! Fuzz target bodies, one function per target, shared by the cargo-fuzz
//! binaries in `fuzz/` (nightly, coverage-guided, for long runs) and the
//! stable corpus-and-mutation test `tests/fuzz_corpus.rs` that CI runs.
//! Keeping the bodies here means both harnesses drive exactly the same
//! code, and a crash found by one replays in the other.
//!
//! Each target takes any bytes. The code under test must never panic on
//! them; the target itself asserts the invariants of what it drives
//! (round trips, "everything we send parses", "media from a stranger never
//! becomes a key"), so a panic here is always a finding. The returned
//! `bool` says whether the input got past the first parse: the stable
//! mutator keeps such inputs to mutate further, a cheap stand-in for
//! coverage feedback.

mod api;
mod intake;
mod mail;
mod media;
mod sip;
mod text;

pub use api::api;
pub use intake::intake;
pub use mail::mail;
pub use media::{rtcp, rtp_session, sdp, wav};
pub use sip::{sip_dialog, sip_message};
pub use text::{dialplan, flow};

/// A fuzz target: any bytes in, `true` when they parsed.
pub type Target = fn(&[u8]) -> bool;

/// Every target, by the name of its cargo-fuzz binary and corpus folder
/// (`fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("sip_message", sip_message),
    ("sip_dialog", sip_dialog),
    ("sdp", sdp),
    ("rtp_session", rtp_session),
    ("rtcp", rtcp),
    ("wav", wav),
    ("dialplan", dialplan),
    ("flow", flow),
    ("api", api),
    ("intake", intake),
    ("mail", mail),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Split `data` on `sep` (for targets whose input is several datagrams).
fn split<'a>(data: &'a [u8], sep: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(sep.len()).position(|w| w == sep) {
            Some(i) => {
                rest = Some(&r[i + sep.len()..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}
