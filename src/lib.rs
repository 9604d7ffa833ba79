//! callout: a telephony escalation gateway.
//!
//! `sip` and `media` are sans-IO state machines; `driver` runs them on
//! tokio sockets and timers.

pub mod bench;
pub mod cli;
pub mod driver;
pub mod ivr;
pub mod media;
pub mod runner;
pub mod sip;
pub mod softphone;
pub mod store;
pub mod tts;
pub mod util;
pub mod api;
pub mod config;
pub mod serve;
pub mod service;
