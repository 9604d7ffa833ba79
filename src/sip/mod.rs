//! SIP, sans-IO: message parsing, transactions, the UAC call (dialog),
//! digest authentication, SDP and the endpoint that owns calls.

pub mod advertise;
pub mod auth;
pub mod call;
#[cfg(test)]
mod call_tests;
pub mod endpoint;
#[cfg(test)]
mod flood_tests;
pub mod header;
pub mod limiter;
pub mod message;
pub mod register;
pub mod sdp;
pub mod timers;
pub mod transaction;
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
