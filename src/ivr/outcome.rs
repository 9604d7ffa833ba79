//! How one call attempt ended, in the words an escalation cares about.

use crate::sip::call::EndReason;

/// Exactly one per attempt. Only a key press counts as a human response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    NoAnswer,
    Busy,
    /// The call failed with this SIP code (0 when no response at all).
    Failed {
        code: u16,
    },
    /// An answering machine or voicemail picked up.
    Machine,
    AnsweredNoInput,
    InvalidInput,
    Acked,
    Passed,
    Left,
    /// The callee ran a maintenance action; the call ended with its result.
    Action {
        action: String,
        result: ActionEnd,
    },
    Cancelled,
    /// A 3xx sent the call to a target the dialplan does not name (or
    /// too many times); it was not followed.
    RedirectRefused {
        code: u16,
        target: String,
    },
    /// A digest challenge for a realm other than the trunk's was not
    /// answered (no hash sent): someone other than the trunk asked.
    AuthRefused {
        code: u16,
        realm: String,
    },
    /// The process stopped while the call was up (set on restart).
    Interrupted,
}

/// How a maintenance action run from a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionEnd {
    Succeeded,
    NotNeeded,
    Failed,
    Refused,
}

impl ActionEnd {
    /// The problem is gone (fixed, or found absent).
    pub fn is_success(self) -> bool {
        matches!(self, ActionEnd::Succeeded | ActionEnd::NotNeeded)
    }
}

impl Outcome {
    /// A person pressed a key that decides the escalation.
    pub fn is_human_response(&self) -> bool {
        matches!(
            self,
            Outcome::Acked | Outcome::Passed | Outcome::Left | Outcome::Action { .. }
        )
    }

    /// The outcome of a call that ended before anyone answered.
    pub fn from_unanswered(r: &EndReason) -> Outcome {
        match r {
            EndReason::Busy { .. } => Outcome::Busy,
            EndReason::NoAnswer { .. } | EndReason::Declined { .. } => Outcome::NoAnswer,
            EndReason::Unreachable { code } => Outcome::Failed {
                code: code.unwrap_or(0),
            },
            EndReason::Rejected { code, reason } => match crate::sip::auth::refused_realm(reason) {
                Some(realm) => Outcome::AuthRefused { code: *code, realm },
                None => Outcome::Failed { code: *code },
            },
            EndReason::Cancelled => Outcome::Cancelled,
            EndReason::MediaMismatch => Outcome::Failed { code: 488 },
            EndReason::RedirectRefused { code, target, .. } => Outcome::RedirectRefused {
                code: *code,
                target: target.clone(),
            },
            // Only seen where no redirect rule applied.
            EndReason::Redirected { code, .. } => Outcome::Failed { code: *code },
            EndReason::LocalHangup | EndReason::RemoteHangup | EndReason::SessionExpired => {
                Outcome::AnsweredNoInput
            }
        }
    }
}
