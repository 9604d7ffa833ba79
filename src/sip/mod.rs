//! SIP, sans-IO: message parsing, transactions, the UAC call (dialog),
//! digest authentication, SDP and the endpoint that owns calls.

pub mod advertise;
pub mod auth;
pub mod call;
#[cfg(test)]
mod call_tests;
#[cfg(test)]
mod dialog_tests;
pub mod endpoint;
#[cfg(test)]
mod flood_tests;
pub mod fork;
pub mod header;
pub mod info_dtmf;
pub mod keepalive;
pub mod leg;
pub mod limiter;
pub mod message;
pub mod offer_answer;
pub mod prack;
pub mod redirect;
pub mod register;
pub mod resolve;
pub mod sdp;
pub mod session_timer;
pub mod timers;
pub mod transaction;
pub mod transport;
#[cfg(test)]
mod transport_tests;
pub mod trunk_prefs;
#[cfg(test)]
mod trunk_tests;
pub mod uas;
pub mod validate;

use std::net::SocketAddr;

/// Bytes to send and where to send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dest: SocketAddr,
    pub bytes: Vec<u8>,
}
