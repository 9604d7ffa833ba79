//! The alert pipeline, in front of the gateway: alerts arrive
//! (Alertmanager, Grafana, generic events, mail), rules decide what
//! matters, a wait window gathers what one host is saying and catches
//! monitoring-path faults, one incident with one ticket number runs from
//! the occurrence to the recovery, and the gateway is called through its
//! public REST API.
//!
//! `config`, `alert`, `sources` and `engine` are pure (no tokio, no
//! clock reads); the drivers feed them and carry out what they decide.

pub mod action_run;
pub mod alert;
pub mod cli;
pub mod config;
pub mod driver;
pub mod engine;
pub mod gateway;
pub mod group_commit;
pub mod mail;
pub mod mail_outbox;
pub mod notice_mail;
pub mod smtp;
pub mod smtp_session;
pub mod sources;
