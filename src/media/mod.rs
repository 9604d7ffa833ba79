//! Media, sans-IO: G.711, audio conversion, the RTP session, and DTMF
//! (RFC 4733 events, in-band tones, and the merge of all paths).

pub mod amd;
pub mod audio;
pub mod g711;
pub mod inband;
pub mod pacing;
pub mod rfc4733;
pub mod rtcp;
pub mod session;
pub mod srtp;
