//! A dialplan file as written: the TOML shapes serde reads, with spans
//! for the positions errors name. `super::dialplan` validates them into
//! a [`super::dialplan::Dialplan`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::dialplan::*;
use super::inputs::Undeclared;
use crate::action::flow::RawStep;
use crate::action::inventory::RawInventory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDialplan {
    pub(super) contract: Spanned<String>,
    pub(super) name: String,
    pub(super) language: Language,
    pub(super) voice: Option<String>,
    #[serde(default = "default_trunk")]
    pub(super) trunk: String,
    #[serde(default)]
    pub(super) failover_trunks: Vec<Spanned<String>>,
    /// Caller identity and codecs of this contract's calls.
    pub(super) call: Option<RawCall>,
    #[serde(default)]
    pub(super) dtmf: crate::media::session::DtmfMode,
    pub(super) caller_id: Option<Spanned<String>>,
    #[serde(default = "default_tz")]
    pub(super) timezone: Spanned<String>,
    #[serde(default)]
    pub(super) holidays: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) variables: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) undeclared_variables: Undeclared,
    pub(super) escalation: RawEscalation,
    #[serde(default)]
    pub(super) contacts: Vec<RawContact>,
    pub(super) message: Spanned<RawPhrase>,
    pub(super) menu: RawMenu,
    #[serde(default)]
    pub(super) actions: BTreeMap<String, Spanned<RawAction>>,
    #[serde(default)]
    pub(super) inventory: RawInventory,
    pub(super) pin: Option<Spanned<RawPin>>,
    #[serde(default)]
    pub(super) phrases: RawPhrases,
    #[serde(default)]
    pub(super) amd: RawAmd,
    #[serde(default)]
    pub(super) reports: RawReports,
    /// Read by `pipeline::config`, which keeps its own spans.
    #[allow(dead_code)]
    pub(super) pipeline: Option<toml::Value>,
}

/// `[reports]`: the centre's hours and quality targets for this contract.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReports {
    pub(super) business: Option<Spanned<OneOrMany>>,
    pub(super) sleep: Option<Spanned<OneOrMany>>,
    pub(super) ack_within: Option<Spanned<String>>,
    pub(super) ack_target_percent: Option<Spanned<f64>>,
    pub(super) answer_rate_percent: Option<Spanned<f64>>,
}

/// One window, or a list of them.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `[call]`: a trunk's identity and codec settings, per contract.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCall {
    pub(super) asserted_identity: Option<Spanned<String>>,
    pub(super) preferred_identity: Option<Spanned<String>>,
    pub(super) from_user: Option<Spanned<String>>,
    pub(super) from_display: Option<Spanned<String>>,
    pub(super) codecs: Option<Spanned<Vec<String>>>,
    /// Start the message on early media (a 183 with SDP).
    pub(super) early_message: Option<Spanned<bool>>,
}

pub(super) fn default_trunk() -> String {
    "default".into()
}

pub(super) fn default_tz() -> Spanned<String> {
    Spanned::new(0..0, "UTC".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEscalation {
    pub(super) rounds: Spanned<u32>,
    pub(super) ring_timeout: Spanned<String>,
    pub(super) between_calls: Spanned<String>,
    pub(super) between_rounds: Spanned<String>,
    #[serde(default = "yes")]
    pub(super) stop_on_ack: bool,
    #[serde(default = "on_machine_default")]
    pub(super) on_machine: OnMachine,
    #[serde(default = "continue_after_failure")]
    pub(super) on_action_failure: OnActionFailure,
}

pub(super) fn continue_after_failure() -> OnActionFailure {
    OnActionFailure::Continue
}

pub(super) fn yes() -> bool {
    true
}

pub(super) fn on_machine_default() -> OnMachine {
    OnMachine::Continue
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContact {
    pub(super) name: Spanned<String>,
    pub(super) uri: Spanned<String>,
    pub(super) timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) when: Vec<Spanned<String>>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawPhrase {
    Text(String),
    Table(RawPhraseTable),
}

/// `{ text = "..." }` or `{ prompt = "file.wav" }`: a recorded prompt
/// wins when both are given, the text documents what it says.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPhraseTable {
    pub(super) text: Option<String>,
    pub(super) prompt: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMenu {
    pub(super) prompt: Spanned<RawPhrase>,
    pub(super) keys: Spanned<BTreeMap<Spanned<String>, Spanned<RawKey>>>,
    #[serde(default = "ten_s")]
    pub(super) input_timeout: Spanned<String>,
    #[serde(default = "three_s")]
    pub(super) inter_digit_timeout: Spanned<String>,
    #[serde(default = "three")]
    pub(super) max_attempts: u32,
    #[serde(default = "silent_default")]
    pub(super) silent_answer: SilentAnswer,
}

pub(super) fn silent_default() -> SilentAnswer {
    SilentAnswer::AnsweredNoInput
}

pub(super) fn ten_s() -> Spanned<String> {
    Spanned::new(0..0, "10s".into())
}
pub(super) fn three_s() -> Spanned<String> {
    Spanned::new(0..0, "3s".into())
}
pub(super) fn three() -> u32 {
    3
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawKey {
    Simple(String),
    Action { action: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAction {
    pub(super) flow: String,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) params: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub(super) pin: bool,
    #[serde(default, rename = "override")]
    pub(super) overrides: BTreeMap<String, Spanned<RawStep>>,
    #[serde(default)]
    pub(super) phrases: RawActionPhrases,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawActionPhrases {
    pub(super) checking: Option<Spanned<RawPhrase>>,
    pub(super) executing: Option<Spanned<RawPhrase>>,
    pub(super) verifying: Option<Spanned<RawPhrase>>,
    pub(super) succeeded: Option<Spanned<RawPhrase>>,
    pub(super) not_needed: Option<Spanned<RawPhrase>>,
    pub(super) failed: Option<Spanned<RawPhrase>>,
    pub(super) refused: Option<Spanned<RawPhrase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPin {
    pub(super) code: Option<Spanned<String>>,
    pub(super) code_env: Option<Spanned<String>>,
    #[serde(default = "three")]
    pub(super) max_attempts: u32,
    #[serde(default = "fifteen_min")]
    pub(super) lockout: Spanned<String>,
}

pub(super) fn fifteen_min() -> Spanned<String> {
    Spanned::new(0..0, "15m".into())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPhrases {
    pub(super) invalid_key: Option<Spanned<RawPhrase>>,
    pub(super) goodbye: Option<Spanned<RawPhrase>>,
    pub(super) acked: Option<Spanned<RawPhrase>>,
    pub(super) passed: Option<Spanned<RawPhrase>>,
    pub(super) left: Option<Spanned<RawPhrase>>,
    pub(super) resolved: Option<Spanned<RawPhrase>>,
    pub(super) confirm: Option<Spanned<RawPhrase>>,
    pub(super) enter_pin: Option<Spanned<RawPhrase>>,
    pub(super) wrong_pin: Option<Spanned<RawPhrase>>,
    pub(super) locked: Option<Spanned<RawPhrase>>,
    pub(super) action_requested: Option<Spanned<RawPhrase>>,
    pub(super) action_checking: Option<Spanned<RawPhrase>>,
    pub(super) action_executing: Option<Spanned<RawPhrase>>,
    pub(super) action_verifying: Option<Spanned<RawPhrase>>,
    pub(super) action_succeeded: Option<Spanned<RawPhrase>>,
    pub(super) action_not_needed: Option<Spanned<RawPhrase>>,
    pub(super) action_failed: Option<Spanned<RawPhrase>>,
    pub(super) action_refused: Option<Spanned<RawPhrase>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAmd {
    #[serde(default)]
    pub(super) enabled: bool,
    pub(super) initial_silence: Option<Spanned<String>>,
    pub(super) greeting: Option<Spanned<String>>,
    pub(super) after_greeting_silence: Option<Spanned<String>>,
    pub(super) total_analysis: Option<Spanned<String>>,
    pub(super) min_word_length: Option<Spanned<String>>,
    pub(super) between_words_silence: Option<Spanned<String>>,
    pub(super) maximum_words: Option<u32>,
}
