//! callout: a telephony escalation gateway.
//!
//! `sip` and `media` are sans-IO state machines; `driver` runs them on
//! tokio sockets and timers.

pub mod action;
pub mod api;
pub mod bench;
pub mod channels;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod demo;
pub mod doctor;
pub mod driver;
// Fuzz target bodies for `fuzz/` and `tests/fuzz_corpus.rs`; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod ivr;
pub mod logging;
pub mod media;
pub mod paths;
pub mod pin_store;
pub mod pipeline;
pub mod reports;
pub mod runner;
pub mod schema;
pub mod script;
pub mod serve;
pub mod service;
pub mod sip;
pub mod softphone;
pub mod speech;
pub mod store;
pub mod tickets;
pub mod tts;
pub mod util;
