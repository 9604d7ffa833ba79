//! Dialplans: one TOML file per contract, read strictly. Every error names
//! the file, line and column and says what is wrong; unknown fields are
//! errors. See `dialplans/README.md` for the format.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use super::dialplan_file::*;
use super::inputs::{EnvAccess, Undeclared};
use super::window::Window;
use crate::action::flow::{parse_step, Errors, Flow, Flows, Step};
use crate::action::inventory::Inventory;
use crate::action::plan::ParamSource;
use crate::util::parse_duration;
use std::sync::Arc;

/// One problem in a dialplan file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialplanError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for DialplanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for DialplanError {}

/// Variables every notification provides to message templates.
pub const BUILTIN_VARIABLES: &[&str] = &[
    "host",
    "summary",
    "severity",
    "ticket",
    "contract",
    "contract_name",
];

/// The language of a contract's spoken phrases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Ja,
    En,
}

/// Text to speak or a recorded prompt (resolved under the prompts folder).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Phrase {
    Text(String),
    Recorded(PathBuf),
}

/// What a key does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAction {
    Ack,
    Next,
    Leave,
    Repeat,
    Action(String),
}

/// What to do when an answering machine picks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMachine {
    /// Hang up and go on with the escalation.
    Continue,
    /// Leave the message, then go on with the escalation.
    LeaveMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contact {
    pub name: String,
    pub uri: String,
    pub timezone: String,
    #[serde(skip)]
    pub tz: Tz,
    #[serde(skip)]
    pub windows: Vec<Window>,
    pub when: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    pub rounds: u32,
    pub ring_timeout: Duration,
    pub between_calls: Duration,
    pub between_rounds: Duration,
    pub stop_on_ack: bool,
    pub on_machine: OnMachine,
    /// After a maintenance action fails: call the next contact or stop.
    pub on_action_failure: OnActionFailure,
}

/// What the escalation does after a caller's action fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnActionFailure {
    /// Go on with the next contact: an engineer must still be reached.
    Continue,
    /// End the escalation; the ticket has the failed run.
    End,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MenuConfig {
    pub prompt: Phrase,
    pub keys: BTreeMap<char, KeyAction>,
    pub input_timeout: Duration,
    pub inter_digit_timeout: Duration,
    /// Invalid keys plus timeouts before the call gives up.
    pub max_attempts: u32,
    /// What an answered call without any key counts as.
    pub silent_answer: SilentAnswer,
}

/// How a call that was answered but never got a key is recorded. Neither
/// counts as a person responding; the escalation goes on either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SilentAnswer {
    AnsweredNoInput,
    NoAnswer,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Action {
    pub name: String,
    pub flow: String,
    pub description: String,
    pub params: BTreeMap<String, ParamSource>,
    pub pin: bool,
    /// Steps of the shared flow this contract replaces, by step name.
    pub overrides: BTreeMap<String, Step>,
    /// Phrases for this action that replace the contract's defaults.
    pub phrases: BTreeMap<ActionSay, Phrase>,
    /// The flow with the overrides in place, set when the folder's flows
    /// are linked.
    #[serde(skip)]
    pub flow_def: Option<Arc<Flow>>,
    /// Where the action is declared (for link errors).
    #[serde(skip)]
    pub line: usize,
    #[serde(skip)]
    pub column: usize,
}

/// Every [`ActionSay`].
pub const ACTION_SAYS: [ActionSay; 7] = [
    ActionSay::Checking,
    ActionSay::Executing,
    ActionSay::Verifying,
    ActionSay::Succeeded,
    ActionSay::NotNeeded,
    ActionSay::Failed,
    ActionSay::Refused,
];

/// What a caller hears while an action runs and when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionSay {
    Checking,
    Executing,
    Verifying,
    Succeeded,
    NotNeeded,
    Failed,
    Refused,
}

#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct PinConfig {
    #[serde(skip)]
    pub code: String,
    pub max_attempts: u32,
    pub lockout: Duration,
}

impl fmt::Debug for PinConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinConfig")
            .field("code", &"<redacted>")
            .field("max_attempts", &self.max_attempts)
            .field("lockout", &self.lockout)
            .finish()
    }
}

/// The fixed phrases of a call, each overridable per dialplan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Phrases {
    pub invalid_key: Phrase,
    pub goodbye: Phrase,
    pub acked: Phrase,
    pub passed: Phrase,
    pub left: Phrase,
    pub resolved: Phrase,
    pub confirm: Phrase,
    pub enter_pin: Phrase,
    pub wrong_pin: Phrase,
    pub locked: Phrase,
    pub action_requested: Phrase,
    pub action_checking: Phrase,
    pub action_executing: Phrase,
    pub action_verifying: Phrase,
    pub action_succeeded: Phrase,
    pub action_not_needed: Phrase,
    pub action_failed: Phrase,
    pub action_refused: Phrase,
}

impl Phrases {
    pub fn action(&self, say: ActionSay) -> &Phrase {
        match say {
            ActionSay::Checking => &self.action_checking,
            ActionSay::Executing => &self.action_executing,
            ActionSay::Verifying => &self.action_verifying,
            ActionSay::Succeeded => &self.action_succeeded,
            ActionSay::NotNeeded => &self.action_not_needed,
            ActionSay::Failed => &self.action_failed,
            ActionSay::Refused => &self.action_refused,
        }
    }
}

/// Answering-machine detection settings (after Asterisk's AMD).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AmdConfig {
    pub enabled: bool,
    pub initial_silence: Duration,
    pub greeting: Duration,
    pub after_greeting_silence: Duration,
    pub total_analysis: Duration,
    pub min_word_length: Duration,
    pub between_words_silence: Duration,
    pub maximum_words: u32,
}

/// A validated dialplan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dialplan {
    pub contract: String,
    pub name: String,
    pub language: Language,
    pub voice: Option<String>,
    pub trunk: String,
    /// Trunks tried next, in order, when a call through `trunk` (every
    /// proxy of it) times out, gets a 5xx, or the trunk is down.
    pub failover_trunks: Vec<String>,
    /// The contract's caller identity and codec order (`[call]`), over
    /// its trunk's.
    #[serde(skip)]
    pub call_prefs: crate::sip::trunk_prefs::CallPrefs,
    /// `[call] early_message`: the message starts on early media (a 183
    /// with SDP) instead of at the 200. It goes on across the 200 without
    /// restarting (said again whole after the answer only if it had ended
    /// before it); the menu starts at the 200 and its prompt follows the
    /// message; keys pressed before the 200 are not taken.
    pub early_message: bool,
    /// Which DTMF paths calls listen to (`both`, `rfc4733`, `inband`).
    pub dtmf: crate::media::session::DtmfMode,
    pub caller_id: String,
    pub timezone: String,
    #[serde(skip)]
    pub holidays: Vec<NaiveDate>,
    pub variables: Vec<String>,
    /// What a notification variable not in `variables` does.
    pub undeclared_variables: Undeclared,
    pub escalation: Policy,
    pub contacts: Vec<Contact>,
    pub message: Phrase,
    pub menu: MenuConfig,
    pub actions: BTreeMap<String, Action>,
    pub inventory: Inventory,
    pub pin: Option<PinConfig>,
    pub phrases: Phrases,
    pub amd: AmdConfig,
    /// The alert pipeline's rules for this contract (`[pipeline]`).
    pub pipeline: Option<crate::pipeline::config::Shared>,
    /// Business / off / sleep hours and quality targets (`[reports]`).
    #[serde(skip)]
    pub reports: crate::reports::calendar::ContractReports,
    pub source: PathBuf,
}

// ---- loading ---------------------------------------------------------------

/// Collects errors with positions while validating one file.
struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    prompts: &'a Path,
    env: &'a EnvAccess,
    errors: Vec<DialplanError>,
}

impl Checker<'_> {
    fn pos(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn err(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let (line, column) = self.pos(span.start);
        self.errors.push(DialplanError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        });
    }

    /// `[call]`, each setting checked on its own so an error points at
    /// its line.
    fn call_prefs(&mut self, raw: Option<&RawCall>) -> crate::sip::trunk_prefs::CallPrefs {
        use crate::sip::trunk_prefs::{CallPrefs, RawPrefs};
        let Some(r) = raw else {
            return CallPrefs::default();
        };
        let mut ok = true;
        let mut check = |span: std::ops::Range<usize>, p: RawPrefs<'_>| {
            if let Err(e) = CallPrefs::parse(&p) {
                self.err(span, format!("call.{e}"));
                ok = false;
            }
        };
        if let Some(v) = &r.asserted_identity {
            check(
                v.span(),
                RawPrefs {
                    asserted_identity: Some(v.get_ref()),
                    ..Default::default()
                },
            );
        }
        if let Some(v) = &r.preferred_identity {
            check(
                v.span(),
                RawPrefs {
                    preferred_identity: Some(v.get_ref()),
                    ..Default::default()
                },
            );
        }
        if let Some(v) = &r.from_user {
            check(
                v.span(),
                RawPrefs {
                    from_user: Some(v.get_ref()),
                    ..Default::default()
                },
            );
        }
        if let Some(v) = &r.from_display {
            check(
                v.span(),
                RawPrefs {
                    from_display: Some(v.get_ref()),
                    ..Default::default()
                },
            );
        }
        if let Some(v) = &r.codecs {
            check(
                v.span(),
                RawPrefs {
                    codecs: v.get_ref(),
                    ..Default::default()
                },
            );
        }
        if !ok {
            return CallPrefs::default();
        }
        let codecs = r
            .codecs
            .as_ref()
            .map(|v| v.get_ref().clone())
            .unwrap_or_default();
        CallPrefs::parse(&RawPrefs {
            asserted_identity: r.asserted_identity.as_ref().map(|v| v.get_ref().as_str()),
            preferred_identity: r.preferred_identity.as_ref().map(|v| v.get_ref().as_str()),
            from_user: r.from_user.as_ref().map(|v| v.get_ref().as_str()),
            from_display: r.from_display.as_ref().map(|v| v.get_ref().as_str()),
            codecs: &codecs,
        })
        .unwrap_or_default()
    }

    fn duration(&mut self, v: &Spanned<String>, what: &str) -> Duration {
        match parse_duration(v.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.err(v.span(), format!("{what}: {e}"));
                Duration::ZERO
            }
        }
    }

    fn opt_duration(
        &mut self,
        v: &Option<Spanned<String>>,
        what: &str,
        default: Duration,
    ) -> Duration {
        v.as_ref().map_or(default, |v| self.duration(v, what))
    }

    /// `[reports]`: each value checked on its own line.
    fn reports(
        &mut self,
        r: &RawReports,
        tz: Tz,
        holidays: &[NaiveDate],
    ) -> crate::reports::calendar::ContractReports {
        use crate::reports::calendar::{self as cal, Calendar, ContractReports};
        let mut windows = |v: &Option<Spanned<OneOrMany>>, what: &str, default: &str| {
            let list = match v.as_ref().map(|v| v.get_ref()) {
                None => vec![default.to_string()],
                Some(OneOrMany::One(s)) => vec![s.clone()],
                Some(OneOrMany::Many(l)) => l.clone(),
            };
            let mut out = Vec::new();
            for s in list {
                match cal::parse_window(&s) {
                    Ok(w) => out.push(w),
                    Err(e) => self.err(
                        v.as_ref().map_or(0..0, |v| v.span()),
                        format!("reports.{what}: {e} (or HH:MM-HH:MM for every day)"),
                    ),
                }
            }
            out
        };
        let business = windows(&r.business, "business", cal::DEFAULT_BUSINESS);
        let sleep = windows(&r.sleep, "sleep", cal::DEFAULT_SLEEP);
        let mut percent = |v: &Option<Spanned<f64>>, what: &str| {
            let p = v.as_ref()?;
            let x = *p.get_ref();
            if !(0.0..=100.0).contains(&x) {
                self.err(p.span(), format!("reports.{what}: {x} is not 0 to 100"));
                return None;
            }
            Some(x)
        };
        let ack_percent = percent(&r.ack_target_percent, "ack_target_percent");
        let answer_rate_percent = percent(&r.answer_rate_percent, "answer_rate_percent");
        let within = r
            .ack_within
            .as_ref()
            .map(|v| self.duration(v, "reports.ack_within"));
        if within.is_some_and(|d| d.is_zero()) {
            if let Some(v) = &r.ack_within {
                self.err(v.span(), "reports.ack_within must be more than 0");
            }
        }
        ContractReports {
            calendar: Calendar {
                tz,
                holidays: holidays.to_vec(),
                business,
                sleep,
            },
            ack_within_ms: within.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            ack_percent,
            answer_rate_percent,
        }
    }

    fn tz(&mut self, v: &Spanned<String>) -> Tz {
        v.get_ref().parse().unwrap_or_else(|_| {
            self.err(
                v.span(),
                format!(
                    "unknown time zone {:?} (use an IANA name such as Asia/Tokyo)",
                    v.get_ref()
                ),
            );
            Tz::UTC
        })
    }

    fn phrase(&mut self, v: &Spanned<RawPhrase>, vars: &HashSet<String>, what: &str) -> Phrase {
        let (text, prompt) = match v.get_ref() {
            RawPhrase::Text(t) => (Some(t), None),
            RawPhrase::Table(t) => (t.text.as_ref(), t.prompt.as_ref()),
        };
        match (text, prompt) {
            (None, None) => {
                self.err(v.span(), format!("{what}: give text or prompt"));
                Phrase::Text(String::new())
            }
            (Some(t), None) => {
                for name in template_variables(t) {
                    if !vars.contains(&name) {
                        self.err(
                            v.span(),
                            format!("{what}: unknown variable {{{name}}} (known: {}; declare custom ones in `variables`)", {
                                let mut k: Vec<&String> = vars.iter().collect();
                                k.sort();
                                k.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                            }),
                        );
                    }
                }
                if t.trim().is_empty() {
                    self.err(v.span(), format!("{what}: empty text"));
                }
                Phrase::Text(t.clone())
            }
            (_, Some(prompt)) => {
                let path = self.prompts.join(prompt);
                if prompt.contains("..") || Path::new(prompt).is_absolute() {
                    self.err(v.span(), format!("{what}: prompt {prompt:?} must be a file name under the prompts folder"));
                } else if !path.is_file() {
                    self.err(
                        v.span(),
                        format!(
                            "{what}: unknown prompt file {prompt:?} (looked in {})",
                            self.prompts.display()
                        ),
                    );
                }
                Phrase::Recorded(path)
            }
        }
    }
}

/// `{name}` placeholders in a template.
pub fn template_variables(t: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                out.push(after[..close].to_string());
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    out
}

/// Fill `{name}` placeholders; unknown names stay as they are.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

fn default_phrases(lang: Language) -> [&'static str; 18] {
    match lang {
        Language::En => [
            "That key is not valid.",
            "Goodbye.",
            "Thank you. You have acknowledged this alert.",
            "The alert is passed to the next person.",
            "You will not be called again for this alert.",
            "This alert has been resolved. Goodbye.",
            "Press 1 to confirm, or any other key to cancel.",
            "Please enter your PIN, then press the hash key.",
            "That PIN is not correct.",
            "Too many wrong PINs. Actions are locked for now.",
            "The action is starting. Please stay on the line.",
            "Running the check.",
            "Running the fix.",
            "Verifying the result.",
            "The action succeeded and the check now passes. Goodbye.",
            "The check found no problem, so nothing was changed. Goodbye.",
            "The action failed. An engineer will be contacted.",
            "The action cannot be run now. An engineer will be contacted.",
        ],
        Language::Ja => [
            "そのキーは無効です。",
            "失礼します。",
            "ありがとうございます。この障害の対応を受け付けました。",
            "次の担当者に回します。",
            "この障害については、今後お電話しません。",
            "この障害は復旧しました。失礼します。",
            "実行する場合は1を、取り消す場合はほかのキーを押してください。",
            "暗証番号を入力し、最後にシャープを押してください。",
            "暗証番号が違います。",
            "暗証番号の誤りが続いたため、操作を一時的に停止しました。",
            "操作を開始します。このままお待ちください。",
            "状態を確認しています。",
            "復旧操作を実行しています。",
            "結果を確認しています。",
            "操作は成功し、正常に動作しています。失礼します。",
            "確認の結果、異常はありませんでした。何も変更していません。失礼します。",
            "操作に失敗しました。担当のエンジニアに連絡します。",
            "現在この操作は実行できません。担当のエンジニアに連絡します。",
        ],
    }
}

/// Parse and validate one dialplan. `prompts` is the folder recorded
/// prompts are resolved in.
pub fn load_str(
    text: &str,
    file: &Path,
    prompts: &Path,
    flows: &Flows,
) -> Result<Dialplan, Vec<DialplanError>> {
    load_str_env(text, file, prompts, flows, &EnvAccess::Process)
}

/// As [`load_str`], reading the environment only as `env` allows (a
/// dialplan sent over the API).
pub fn load_str_env(
    text: &str,
    file: &Path,
    prompts: &Path,
    flows: &Flows,
    env: &EnvAccess,
) -> Result<Dialplan, Vec<DialplanError>> {
    let mut c = Checker {
        file,
        text,
        prompts,
        env,
        errors: Vec::new(),
    };
    let raw: RawDialplan = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().replace(
                "data did not match any variant of untagged enum RawPhrase",
                "expected a phrase: text in quotes, or a table with text = \"...\" or prompt = \"file.wav\"",
            );
            let msg = msg.replace(
                "data did not match any variant of untagged enum RawKey",
                "expected a key function: \"ack\", \"next\", \"leave\", \"repeat\" or { action = \"NAME\" }",
            );
            // toml reports a repeated table key as "duplicate key".
            let msg = if msg.contains("duplicate key") {
                format!("{msg} (a key or setting is given twice)")
            } else {
                msg
            };
            c.err(span, msg);
            return Err(c.errors);
        }
    };
    let contract = raw.contract.get_ref().clone();
    if contract.is_empty()
        || !contract
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        c.err(
            raw.contract.span(),
            "contract id must be letters, digits, '-' or '_'",
        );
    }
    let tz = c.tz(&raw.timezone);
    let mut holidays = Vec::new();
    for h in &raw.holidays {
        match NaiveDate::parse_from_str(h.get_ref(), "%Y-%m-%d") {
            Ok(d) => holidays.push(d),
            Err(_) => c.err(
                h.span(),
                format!("holiday {:?} is not a date (YYYY-MM-DD)", h.get_ref()),
            ),
        }
    }
    let mut vars: HashSet<String> = BUILTIN_VARIABLES.iter().map(|s| s.to_string()).collect();
    for v in &raw.variables {
        if !v
            .get_ref()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || v.get_ref().is_empty()
        {
            c.err(
                v.span(),
                format!(
                    "variable name {:?} must be letters, digits or '_'",
                    v.get_ref()
                ),
            );
        }
        if BUILTIN_VARIABLES.contains(&v.get_ref().as_str()) {
            c.err(
                v.span(),
                format!(
                    "variable {:?} is a built-in field; the alert sets it, not `variables`",
                    v.get_ref()
                ),
            );
        }
        vars.insert(v.get_ref().clone());
    }
    let e = &raw.escalation;
    if *e.rounds.get_ref() == 0 || *e.rounds.get_ref() > 100 {
        c.err(e.rounds.span(), "rounds must be between 1 and 100");
    }
    let escalation = Policy {
        rounds: *e.rounds.get_ref(),
        ring_timeout: c.duration(&e.ring_timeout, "ring_timeout"),
        between_calls: c.duration(&e.between_calls, "between_calls"),
        between_rounds: c.duration(&e.between_rounds, "between_rounds"),
        stop_on_ack: e.stop_on_ack,
        on_machine: e.on_machine,
        on_action_failure: e.on_action_failure,
    };
    if escalation.ring_timeout != Duration::ZERO && escalation.ring_timeout < Duration::from_secs(2)
    {
        c.err(e.ring_timeout.span(), "ring_timeout must be at least 2s");
    }
    if raw.contacts.is_empty() {
        c.err(
            0..0,
            "no contacts: add at least one [[contacts]] entry with name and uri",
        );
    }
    let mut contacts = Vec::new();
    let mut names = HashSet::new();
    for rc in &raw.contacts {
        if !names.insert(rc.name.get_ref().clone()) {
            c.err(
                rc.name.span(),
                format!("contact {:?} is listed twice", rc.name.get_ref()),
            );
        }
        let uri = rc.uri.get_ref();
        let ok = match uri.split_once(':') {
            Some(("sip" | "sips", _)) => crate::sip::header::SipUri::parse(uri).is_ok(),
            Some(("tel", n)) => {
                n.starts_with('+')
                    && n.len() > 4
                    && n[1..].bytes().all(|b| b.is_ascii_digit() || b == b'-')
            }
            _ => false,
        };
        if !ok {
            c.err(
                rc.uri.span(),
                format!("contact uri {uri:?} is not a sip:, sips: or tel:+number URI"),
            );
        }
        let ctz = rc.timezone.as_ref().map_or(tz, |t| c.tz(t));
        let mut windows = Vec::new();
        for w in &rc.when {
            match Window::parse(w.get_ref()) {
                Ok(win) => windows.push(win),
                Err(e) => c.err(w.span(), e.to_string()),
            }
        }
        contacts.push(Contact {
            name: rc.name.get_ref().clone(),
            uri: uri.clone(),
            timezone: rc
                .timezone
                .as_ref()
                .map_or(raw.timezone.get_ref().clone(), |t| t.get_ref().clone()),
            tz: ctz,
            windows,
            when: rc.when.iter().map(|w| w.get_ref().clone()).collect(),
        });
    }
    let message = c.phrase(&raw.message, &vars, "message");
    let menu_prompt = c.phrase(&raw.menu.prompt, &vars, "menu prompt");
    let mut keys = BTreeMap::new();
    let mut actions_used = HashSet::new();
    for (k, v) in raw.menu.keys.get_ref() {
        let key = k.get_ref();
        let ch = match key.chars().collect::<Vec<_>>()[..] {
            [ch] if "0123456789*#".contains(ch) => ch,
            _ => {
                c.err(
                    k.span(),
                    format!("{key:?} is not a phone key (0-9, * or #)"),
                );
                continue;
            }
        };
        let action = match v.get_ref() {
            RawKey::Simple(s) => match s.as_str() {
                "ack" => KeyAction::Ack,
                "next" => KeyAction::Next,
                "leave" => KeyAction::Leave,
                "repeat" => KeyAction::Repeat,
                other => {
                    c.err(v.span(), format!("key {key:?}: unknown function {other:?} (use ack, next, leave, repeat or {{ action = \"NAME\" }})"));
                    continue;
                }
            },
            RawKey::Action { action } => {
                if !raw.actions.contains_key(action) {
                    c.err(v.span(), format!("key {key:?}: undefined action {action:?} (declare it under [actions.{action}])"));
                }
                actions_used.insert(action.clone());
                KeyAction::Action(action.clone())
            }
        };
        if keys.insert(ch, action).is_some() {
            c.err(k.span(), format!("key {key:?} is mapped twice"));
        }
    }
    if !keys.values().any(|a| *a == KeyAction::Ack) {
        c.err(
            raw.menu.keys.span(),
            "no key is mapped to \"ack\": nobody could acknowledge the alert",
        );
    }
    let menu = MenuConfig {
        prompt: menu_prompt,
        keys,
        input_timeout: c.duration(&raw.menu.input_timeout, "input_timeout"),
        inter_digit_timeout: c.duration(&raw.menu.inter_digit_timeout, "inter_digit_timeout"),
        max_attempts: raw.menu.max_attempts.max(1),
        silent_answer: raw.menu.silent_answer,
    };
    // An action only a first-level rule runs (no key) is used too.
    let auto_used: Vec<String> = crate::pipeline::config::load(text, file)
        .ok()
        .flatten()
        .map(|p| {
            p.auto_actions
                .into_iter()
                .map(|a| a.action)
                .chain(p.recovery_verify)
                .collect()
        })
        .unwrap_or_default();
    let mut actions = BTreeMap::new();
    for (name, a) in &raw.actions {
        if !actions_used.contains(name) && !auto_used.contains(name) {
            c.err(
                a.span(),
                format!("action {name:?} is declared but no key runs it"),
            );
        }
        let ra = a.get_ref();
        let mut overrides = BTreeMap::new();
        for (step, raw) in &ra.overrides {
            let mut e = Errors {
                file,
                text,
                list: Vec::new(),
            };
            // The phase is the replaced step's, set when linking.
            if let Some(s) =
                parse_step(raw, crate::action::flow::Phase::Execute, Some(step), &mut e)
            {
                overrides.insert(step.clone(), s);
            }
            c.errors.append(&mut e.list);
        }
        let rp = &ra.phrases;
        let mut phrases = BTreeMap::new();
        for (say, v, what) in [
            (ActionSay::Checking, &rp.checking, "checking"),
            (ActionSay::Executing, &rp.executing, "executing"),
            (ActionSay::Verifying, &rp.verifying, "verifying"),
            (ActionSay::Succeeded, &rp.succeeded, "succeeded"),
            (ActionSay::NotNeeded, &rp.not_needed, "not_needed"),
            (ActionSay::Failed, &rp.failed, "failed"),
            (ActionSay::Refused, &rp.refused, "refused"),
        ] {
            if let Some(v) = v {
                let ph = c.phrase(v, &vars, &format!("actions.{name}.phrases.{what}"));
                phrases.insert(say, ph);
            }
        }
        let (line, column) = c.pos(a.span().start);
        actions.insert(
            name.clone(),
            Action {
                name: name.clone(),
                flow: ra.flow.clone(),
                description: ra.description.clone(),
                params: ra
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), ParamSource::parse(v)))
                    .collect(),
                pin: ra.pin,
                overrides,
                phrases,
                flow_def: None,
                line,
                column,
            },
        );
    }
    let pin = raw.pin.as_ref().map(|p| {
        let rp = p.get_ref();
        let code = match (&rp.code, &rp.code_env) {
            (Some(code), None) => Some((code.get_ref().clone(), code.span())),
            (None, Some(env)) => match c.env.pin(env.get_ref()) {
                Ok(v) => Some((v, env.span())),
                Err(e) => {
                    c.err(env.span(), e);
                    None
                }
            },
            _ => {
                c.err(p.span(), "[pin] needs exactly one of code or code_env");
                None
            }
        };
        if let Some((code, span)) = &code {
            if !(4..=12).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
                c.err(span.clone(), "PIN must be 4 to 12 digits");
            }
        }
        PinConfig {
            code: code.map(|c| c.0).unwrap_or_default(),
            max_attempts: rp.max_attempts.max(1),
            lockout: c.duration(&rp.lockout, "lockout"),
        }
    });
    let inventory = {
        let mut e = Errors {
            file,
            text,
            list: Vec::new(),
        };
        let base = file.parent().unwrap_or(Path::new("."));
        let inv = crate::action::inventory::parse(&raw.inventory, base, &mut e);
        c.errors.append(&mut e.list);
        inv
    };
    let custom_vars: Vec<String> = raw.variables.iter().map(|v| v.get_ref().clone()).collect();
    for a in actions.values_mut() {
        match crate::action::plan::link(a, &inventory, &custom_vars, flows) {
            Ok(f) => a.flow_def = Some(f),
            Err(msgs) => {
                for m in msgs {
                    c.errors.push(DialplanError {
                        file: file.to_path_buf(),
                        line: a.line,
                        column: a.column,
                        message: m,
                    });
                }
            }
        }
    }
    let needs_pin = actions.values().any(|a| a.pin);
    match (&raw.pin, needs_pin) {
        (None, true) => {
            // `needs_pin` was computed from these same actions.
            if let Some((name, a)) = raw.actions.iter().find(|(_, a)| a.get_ref().pin) {
                c.err(a.span(), format!("action {name:?} requires a PIN but there is no [pin] section (or set pin = false)"));
            }
        }
        (Some(p), false) => c.err(
            p.span(),
            "[pin] is configured but no action asks for it: it can never be entered",
        ),
        _ => {}
    }
    let d = default_phrases(raw.language);
    let mut ph = |v: &Option<Spanned<RawPhrase>>, default: &str, what: &str| match v {
        Some(v) => c.phrase(v, &vars, what),
        None => Phrase::Text(default.to_string()),
    };
    let p = &raw.phrases;
    let phrases = Phrases {
        invalid_key: ph(&p.invalid_key, d[0], "phrases.invalid_key"),
        goodbye: ph(&p.goodbye, d[1], "phrases.goodbye"),
        acked: ph(&p.acked, d[2], "phrases.acked"),
        passed: ph(&p.passed, d[3], "phrases.passed"),
        left: ph(&p.left, d[4], "phrases.left"),
        resolved: ph(&p.resolved, d[5], "phrases.resolved"),
        confirm: ph(&p.confirm, d[6], "phrases.confirm"),
        enter_pin: ph(&p.enter_pin, d[7], "phrases.enter_pin"),
        wrong_pin: ph(&p.wrong_pin, d[8], "phrases.wrong_pin"),
        locked: ph(&p.locked, d[9], "phrases.locked"),
        action_requested: ph(&p.action_requested, d[10], "phrases.action_requested"),
        action_checking: ph(&p.action_checking, d[11], "phrases.action_checking"),
        action_executing: ph(&p.action_executing, d[12], "phrases.action_executing"),
        action_verifying: ph(&p.action_verifying, d[13], "phrases.action_verifying"),
        action_succeeded: ph(&p.action_succeeded, d[14], "phrases.action_succeeded"),
        action_not_needed: ph(&p.action_not_needed, d[15], "phrases.action_not_needed"),
        action_failed: ph(&p.action_failed, d[16], "phrases.action_failed"),
        action_refused: ph(&p.action_refused, d[17], "phrases.action_refused"),
    };
    let a = &raw.amd;
    let amd = AmdConfig {
        enabled: a.enabled,
        initial_silence: c.opt_duration(
            &a.initial_silence,
            "amd.initial_silence",
            Duration::from_millis(2500),
        ),
        greeting: c.opt_duration(&a.greeting, "amd.greeting", Duration::from_millis(1500)),
        after_greeting_silence: c.opt_duration(
            &a.after_greeting_silence,
            "amd.after_greeting_silence",
            Duration::from_millis(800),
        ),
        total_analysis: c.opt_duration(
            &a.total_analysis,
            "amd.total_analysis",
            Duration::from_secs(5),
        ),
        min_word_length: c.opt_duration(
            &a.min_word_length,
            "amd.min_word_length",
            Duration::from_millis(100),
        ),
        between_words_silence: c.opt_duration(
            &a.between_words_silence,
            "amd.between_words_silence",
            Duration::from_millis(50),
        ),
        maximum_words: a.maximum_words.unwrap_or(3),
    };
    let caller_id = match &raw.caller_id {
        Some(cid) => {
            if crate::sip::header::SipUri::parse(cid.get_ref()).is_err() {
                c.err(
                    cid.span(),
                    format!("caller_id {:?} is not a sip: URI", cid.get_ref()),
                );
            }
            cid.get_ref().clone()
        }
        None => "sip:callout@localhost".into(),
    };
    let mut failover_trunks: Vec<String> = Vec::new();
    for t in &raw.failover_trunks {
        let name = t.get_ref();
        if name.is_empty() || *name == raw.trunk || failover_trunks.contains(name) {
            c.err(
                t.span(),
                format!(
                    "failover_trunks: {name:?} is empty, the contract's trunk, or listed twice"
                ),
            );
        }
        failover_trunks.push(name.clone());
    }
    let call_prefs = c.call_prefs(raw.call.as_ref());
    let early_message = match raw.call.as_ref().and_then(|r| r.early_message.as_ref()) {
        Some(v) if *v.get_ref() && raw.amd.enabled => {
            c.err(
                v.span(),
                "call.early_message cannot be used with [amd] enabled: the machine detector \
                 listens to the callee after the answer, when the message would already be playing",
            );
            false
        }
        Some(v) => *v.get_ref(),
        None => false,
    };
    let reports = c.reports(&raw.reports, tz, &holidays);
    let pipeline = match crate::pipeline::config::load(text, file) {
        Ok(p) => p.map(|p| crate::pipeline::config::Shared(std::sync::Arc::new(p))),
        Err(e) => {
            c.errors.extend(e);
            None
        }
    };
    for a in pipeline.iter().flat_map(|p| p.auto_actions.iter()) {
        if !actions.contains_key(&a.action) {
            c.errors.push(DialplanError {
                file: file.to_path_buf(),
                line: a.line,
                column: 1,
                message: format!(
                    "pipeline.auto_actions: action {:?} is not one of this dialplan's [actions]",
                    a.action
                ),
            });
        }
    }
    if let Some(v) = pipeline.as_ref().and_then(|p| p.recovery_verify.as_ref()) {
        if !actions.contains_key(v) {
            c.errors.push(DialplanError {
                file: file.to_path_buf(),
                line: text
                    .lines()
                    .position(|l| l.trim_start().starts_with("recovery_verify"))
                    .map_or(1, |i| i + 1),
                column: 1,
                message: format!(
                    "pipeline.recovery_verify: action {v:?} is not one of this dialplan's [actions]"
                ),
            });
        }
    }
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Dialplan {
        contract,
        name: raw.name,
        language: raw.language,
        voice: raw.voice,
        trunk: raw.trunk,
        failover_trunks,
        call_prefs,
        early_message,
        dtmf: raw.dtmf,
        caller_id,
        timezone: raw.timezone.get_ref().clone(),
        holidays,
        variables: raw.variables.iter().map(|v| v.get_ref().clone()).collect(),
        undeclared_variables: raw.undeclared_variables,
        escalation,
        contacts,
        message,
        menu,
        actions,
        inventory,
        pin,
        phrases,
        amd,
        pipeline,
        reports,
        source: file.to_path_buf(),
    })
}

/// Load one file, with the flows of its folder.
pub fn load_file(path: &Path, prompts: &Path) -> Result<Dialplan, Vec<DialplanError>> {
    let flows = crate::action::flow::load_dir(path.parent().unwrap_or(Path::new(".")))?;
    load_file_with(path, prompts, &flows)
}

fn load_file_with(
    path: &Path,
    prompts: &Path,
    flows: &Flows,
) -> Result<Dialplan, Vec<DialplanError>> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, path, prompts, flows),
        Err(e) => Err(vec![DialplanError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        }]),
    }
}

/// Load every `*.toml` directly in `dir` (not `flows/` or other folders).
/// All errors of all files are returned; a contract id used twice is an
/// error on the second file.
pub fn load_dir(dir: &Path, prompts: &Path) -> Result<Vec<Dialplan>, Vec<DialplanError>> {
    Ok(load_dir_with_flows(dir, prompts)?.0)
}

/// Load the flows in `dir/flows`, then every dialplan linked to them.
pub fn load_dir_with_flows(
    dir: &Path,
    prompts: &Path,
) -> Result<(Vec<Dialplan>, Flows), Vec<DialplanError>> {
    let flows = crate::action::flow::load_dir(dir)?;
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            return Err(vec![DialplanError {
                file: dir.to_path_buf(),
                line: 0,
                column: 0,
                message: format!("cannot read the dialplan folder: {e}"),
            }])
        }
    };
    files.sort();
    let mut plans: Vec<Dialplan> = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match load_file_with(&f, prompts, &flows) {
            Ok(p) => {
                if let Some(other) = plans.iter().find(|o| o.contract == p.contract) {
                    errors.push(DialplanError {
                        file: f.clone(),
                        line: 1,
                        column: 1,
                        message: format!(
                            "contract {:?} is already defined in {}",
                            p.contract,
                            other.source.display()
                        ),
                    });
                } else {
                    plans.push(p);
                }
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok((plans, flows))
    } else {
        Err(errors)
    }
}
