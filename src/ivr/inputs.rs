//! What a dialplan may take from outside its file: the environment (a
//! PIN's `code_env`) and the alert's custom variables.

use serde::{Deserialize, Serialize};

/// What happens to a notification variable the dialplan does not list in
/// `variables` (`undeclared_variables` in the file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Undeclared {
    /// The notification is refused (422 naming the variable).
    #[default]
    Reject,
    /// The variable is dropped before the notification is stored; nothing
    /// reads it.
    Ignore,
}

/// Which environment variables a dialplan being loaded may read.
#[derive(Debug, Clone)]
pub enum EnvAccess {
    /// Files the operator put on disk (start, reload, `dialplan check`):
    /// any variable, with precise errors.
    Process,
    /// A dialplan sent over the API: only names with this prefix, and an
    /// error never says whether a variable exists or what it holds.
    Prefixed(String),
}

impl EnvAccess {
    /// A PIN from `name`, or the error to report.
    pub fn pin(&self, name: &str) -> Result<String, String> {
        match self {
            EnvAccess::Process => match std::env::var(name) {
                Ok(v) if valid_pin(&v) => Ok(v),
                Ok(_) => Err("PIN must be 4 to 12 digits".into()),
                Err(_) => Err(format!("PIN environment variable {name} is not set")),
            },
            EnvAccess::Prefixed(prefix) => {
                // One answer for "outside the prefix", "unset" and "not a
                // PIN", so a caller learns nothing about the environment.
                let hidden = || {
                    format!(
                        "PIN environment variable {name} is not set or not valid \
                         (only variables starting with {prefix} are read here)"
                    )
                };
                if prefix.is_empty() || !name.starts_with(prefix.as_str()) {
                    return Err(hidden());
                }
                match std::env::var(name) {
                    Ok(v) if valid_pin(&v) => Ok(v),
                    _ => Err(hidden()),
                }
            }
        }
    }
}

fn valid_pin(code: &str) -> bool {
    (4..=12).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_learns_nothing_about_the_environment() {
        std::env::set_var("CALLOUT_TEST_INPUTS_PIN", "2468");
        std::env::set_var("CALLOUT_TEST_INPUTS_WORD", "hello");
        std::env::set_var("OTHER_TEST_INPUTS_PIN", "1357");
        let api = EnvAccess::Prefixed("CALLOUT_".into());
        assert_eq!(api.pin("CALLOUT_TEST_INPUTS_PIN"), Ok("2468".into()));
        let unset = api.pin("CALLOUT_TEST_INPUTS_UNSET").unwrap_err();
        let word = api.pin("CALLOUT_TEST_INPUTS_WORD").unwrap_err();
        let other = api.pin("OTHER_TEST_INPUTS_PIN").unwrap_err();
        let home = api.pin("HOME").unwrap_err();
        let strip = |s: &str, name: &str| s.replace(name, "NAME");
        assert_eq!(
            strip(&unset, "CALLOUT_TEST_INPUTS_UNSET"),
            strip(&word, "CALLOUT_TEST_INPUTS_WORD")
        );
        assert_eq!(strip(&other, "OTHER_TEST_INPUTS_PIN"), strip(&home, "HOME"));
        assert_eq!(
            strip(&unset, "CALLOUT_TEST_INPUTS_UNSET"),
            strip(&home, "HOME")
        );
        // Files on disk keep the precise messages.
        let disk = EnvAccess::Process;
        assert_eq!(disk.pin("OTHER_TEST_INPUTS_PIN"), Ok("1357".into()));
        assert!(disk
            .pin("CALLOUT_TEST_INPUTS_WORD")
            .unwrap_err()
            .contains("4 to 12"));
    }
}
