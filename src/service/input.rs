//! Checks on what a notification carries, before it is stored: how many
//! variables and how long, no built-in field overridden, only the
//! variables the contract declares, and phrases that stay short enough to
//! say. Each failure names the request field to fix.

use crate::config::LimitsConfig;
use crate::ivr::dialplan::{template_variables, Dialplan, Phrase, BUILTIN_VARIABLES};
use crate::ivr::inputs::Undeclared;
use crate::runner::Notification;
use crate::tts::Tts;

/// A notification that cannot be accepted as sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct InputError {
    /// The request field, e.g. `variables.region` or `summary`.
    pub field: String,
    pub detail: String,
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> InputError {
    InputError {
        field: field.into(),
        detail: detail.into(),
    }
}

/// A name cut short for an error message, so a huge key is not echoed.
fn shown(name: &str) -> String {
    let mut s: String = name.chars().take(64).collect();
    if s.len() < name.len() {
        s.push('…');
    }
    s
}

/// Check the variables against the limits and the contract; drop the
/// undeclared ones when the contract says to ignore them. Returns the
/// names dropped.
pub fn check_variables(
    plan: &Dialplan,
    n: &mut Notification,
    limits: &LimitsConfig,
) -> Result<Vec<String>, InputError> {
    if n.variables.len() > limits.max_variables {
        return Err(invalid(
            "variables",
            format!(
                "{} variables; at most {} are accepted",
                n.variables.len(),
                limits.max_variables
            ),
        ));
    }
    let mut ignored = Vec::new();
    for (name, value) in &n.variables {
        let field = format!("variables.{}", shown(name));
        if name.chars().count() > limits.max_variable_name {
            return Err(invalid(
                field,
                format!(
                    "a variable name has at most {} characters",
                    limits.max_variable_name
                ),
            ));
        }
        if BUILTIN_VARIABLES.contains(&name.as_str()) {
            return Err(invalid(
                field,
                format!("{name} is a built-in field; send it at the top level, not in variables"),
            ));
        }
        if value.chars().count() > limits.max_variable_value {
            return Err(invalid(
                field,
                format!(
                    "a variable's value has at most {} characters",
                    limits.max_variable_value
                ),
            ));
        }
        if !plan.variables.contains(name) {
            match plan.undeclared_variables {
                Undeclared::Reject => {
                    return Err(invalid(
                        field,
                        format!(
                            "contract {} does not declare variable {} (declared: {})",
                            plan.contract,
                            shown(name),
                            if plan.variables.is_empty() {
                                "none".to_string()
                            } else {
                                plan.variables.join(", ")
                            }
                        ),
                    ))
                }
                Undeclared::Ignore => ignored.push(name.clone()),
            }
        }
    }
    for name in &ignored {
        n.variables.remove(name);
    }
    Ok(ignored)
}

/// The phrases whose words depend on the notification.
fn templated(plan: &Dialplan) -> Vec<&str> {
    let p = &plan.phrases;
    [
        &plan.message,
        &plan.menu.prompt,
        &p.invalid_key,
        &p.goodbye,
        &p.acked,
        &p.passed,
        &p.left,
        &p.resolved,
        &p.confirm,
        &p.enter_pin,
        &p.wrong_pin,
        &p.locked,
        &p.action_requested,
    ]
    .into_iter()
    .chain(
        crate::ivr::dialplan::ACTION_SAYS
            .iter()
            .map(|&s| p.action(s)),
    )
    .chain(plan.actions.values().flat_map(|a| a.phrases.values()))
    .filter_map(|ph| match ph {
        Phrase::Text(t) if !template_variables(t).is_empty() => Some(t.as_str()),
        _ => None,
    })
    .collect()
}

/// Typical speaking rate of the shipped voices, in ms per character of
/// rendered text, measured: Open JTalk (mei) said the first-audio bench's
/// Japanese message, 169 characters, in 32.1 s (190 ms); espeak-ng says
/// English at about 60 ms.
pub fn typical_ms_per_char(lang: crate::ivr::dialplan::Language) -> u64 {
    match lang {
        crate::ivr::dialplan::Language::Ja => 190,
        crate::ivr::dialplan::Language::En => 60,
    }
}

/// What the text's length says about its spoken length against a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimate {
    /// Within three quarters of the limit at the typical rate: within it
    /// unless the voice is a third slower than measured.
    Short,
    /// Over twice the limit at the typical rate (estimated ms): surely not.
    Long(u64),
    /// Near the limit: only synthesis tells.
    Unsure,
}

/// Estimate `text`'s spoken length against `max_ms` without synthesis.
pub fn estimate(text: &str, lang: crate::ivr::dialplan::Language, max_ms: u64) -> Estimate {
    let ms = (text.chars().count() as u64).saturating_mul(typical_ms_per_char(lang));
    if ms.saturating_mul(4) <= max_ms.saturating_mul(3) {
        Estimate::Short
    } else if ms > max_ms.saturating_mul(2) {
        Estimate::Long(ms)
    } else {
        Estimate::Unsure
    }
}

/// Whether every phrase that carries notification values is surely short
/// enough ([`Estimate::Short`]): then [`check_speech`] has nothing to do
/// and need not leave the async worker.
pub fn speech_surely_short(plan: &Dialplan, n: &Notification, limits: &LimitsConfig) -> bool {
    let values = crate::runner::template_values(plan, n);
    let max_ms = limits.max_message.as_millis() as u64;
    templated(plan).into_iter().all(|t| {
        let text = crate::ivr::dialplan::render(t, &values);
        estimate(&text, plan.language, max_ms) == Estimate::Short
    })
}

/// Render every phrase that carries notification values, the way the call
/// will, and refuse the notification when one would last longer than the
/// limit. The field named is the longest value the phrase uses. Only a
/// phrase whose length in characters leaves it near the limit is
/// synthesised to measure it ([`estimate`]): the 202 and the INVITE must
/// not wait for speech (the message is synthesised while the call rings).
/// Blocking when it synthesises: run it off the async workers.
///
/// A voice that fails here does not refuse the page: the call falls back
/// to the recorded prompt, whose length is known.
pub fn check_speech(
    plan: &Dialplan,
    n: &Notification,
    tts: &Tts,
    limits: &LimitsConfig,
) -> Result<(), InputError> {
    let values = crate::runner::template_values(plan, n);
    let max_ms = limits.max_message.as_millis() as u64;
    for template in templated(plan) {
        let text = crate::ivr::dialplan::render(template, &values);
        match estimate(&text, plan.language, max_ms) {
            Estimate::Short => continue,
            Estimate::Long(ms) => {
                let field = longest_field(template, n);
                return Err(invalid(
                    field.clone(),
                    format!(
                        "the message would last about {} s when spoken (at most {} s); shorten {field}",
                        ms.div_ceil(1000),
                        max_ms / 1000
                    ),
                ));
            }
            Estimate::Unsure => {}
        }
        let prompt = match tts.render_voice(plan.language, plan.voice.as_deref(), &text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(contract = %plan.contract, error = %e, "cannot measure a phrase; the call will use the fallback");
                continue;
            }
        };
        if prompt.duration_ms() > max_ms {
            let field = longest_field(template, n);
            return Err(invalid(
                field.clone(),
                format!(
                    "the message would last {} s when spoken (at most {} s); shorten {field}",
                    prompt.duration_ms().div_ceil(1000),
                    max_ms / 1000
                ),
            ));
        }
    }
    Ok(())
}

/// The request field behind the longest value a template uses.
fn longest_field(template: &str, n: &Notification) -> String {
    template_variables(template)
        .into_iter()
        .filter_map(|name| {
            let len = match name.as_str() {
                "host" => n.host.len(),
                "summary" => n.summary.len(),
                "severity" => n.severity.len(),
                "ticket" => n.ticket.len(),
                "contract" | "contract_name" => return None,
                other => n.variables.get(other)?.len(),
            };
            let field = if BUILTIN_VARIABLES.contains(&name.as_str()) {
                name
            } else {
                format!("variables.{name}")
            };
            Some((len, field))
        })
        .max()
        .map(|(_, f)| f)
        .unwrap_or_else(|| "summary".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn plan_text(variables: &str, extra: &str) -> String {
        format!(
            "contract = \"c\"\nname = \"C\"\nlanguage = \"en\"\nvariables = [{variables}]\n{extra}\n\
             [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
             [[contacts]]\nname = \"a\"\nuri = \"sip:a@127.0.0.1\"\n\
             [message]\ntext = \"Alert on {{host}} in {{region}}: {{summary}}.\"\n\
             [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n"
        )
    }

    fn plan(extra: &str) -> Dialplan {
        let text = plan_text("\"region\"", extra);
        crate::ivr::dialplan::load_str(
            &text,
            Path::new("c.toml"),
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")),
            &Default::default(),
        )
        .unwrap()
    }

    fn notification(vars: &[(&str, &str)]) -> Notification {
        Notification {
            contract: "c".into(),
            ticket: "T1".into(),
            severity: "major".into(),
            host: "db-01".into(),
            summary: "down".into(),
            variables: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn built_ins_undeclared_and_sizes() {
        let limits = LimitsConfig::default();
        let p = plan("");
        let field = |vars: &[(&str, &str)]| {
            check_variables(&p, &mut notification(vars), &limits).map_err(|e| e.field)
        };
        assert_eq!(field(&[("region", "London")]), Ok(vec![]));
        assert_eq!(field(&[("host", "evil")]).unwrap_err(), "variables.host");
        assert_eq!(
            field(&[("contract_name", "Other Corp")]).unwrap_err(),
            "variables.contract_name"
        );
        assert_eq!(field(&[("other", "x")]).unwrap_err(), "variables.other");
        let long = "x".repeat(257);
        assert_eq!(field(&[("region", &long)]).unwrap_err(), "variables.region");
        let key = "k".repeat(65);
        assert!(field(&[(&key, "v")])
            .unwrap_err()
            .starts_with("variables.kkk"));
        let many: Vec<(String, String)> = (0..33).map(|i| (format!("v{i}"), "x".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(field(&many).unwrap_err(), "variables");

        let lenient = plan("undeclared_variables = \"ignore\"");
        let mut n = notification(&[("region", "London"), ("other", "x")]);
        assert_eq!(
            check_variables(&lenient, &mut n, &limits),
            Ok(vec!["other".to_string()])
        );
        assert_eq!(n.variables.keys().collect::<Vec<_>>(), ["region"]);
        // Ignoring never lets a built-in through.
        let mut n = notification(&[("host", "evil")]);
        assert!(check_variables(&lenient, &mut n, &limits).is_err());
    }

    #[test]
    fn a_declared_built_in_is_a_load_error() {
        let text = plan_text("\"region\", \"host\"", "undeclared_variables = \"maybe\"");
        let errors = crate::ivr::dialplan::load_str(
            &text,
            Path::new("c.toml"),
            Path::new("prompts"),
            &Default::default(),
        )
        .unwrap_err();
        assert_eq!(errors[0].line, 5, "{errors:?}");
        assert!(errors[0].message.contains("reject"), "{errors:?}");
        let text = text.replace("\"maybe\"", "\"ignore\"");
        let errors = crate::ivr::dialplan::load_str(
            &text,
            Path::new("c.toml"),
            Path::new("prompts"),
            &Default::default(),
        )
        .unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.line == 4 && e.message.contains("built-in")),
            "{errors:?}"
        );
    }

    #[test]
    fn built_ins_win_in_what_the_callee_hears() {
        // A notification stored before these checks existed may still
        // carry such variables; the renderer never lets them through.
        let p = plan("");
        let n = notification(&[("host", "evil-host"), ("contract_name", "Other Corp")]);
        let values = crate::runner::template_values(&p, &n);
        let spoken = |name: &str, v: &str| {
            crate::tts::readers::read_variable(name, v, crate::ivr::dialplan::Language::En)
        };
        assert_eq!(values["host"], spoken("host", "db-01"));
        assert_eq!(values["contract_name"], spoken("contract_name", "C"));
    }

    #[test]
    fn the_field_behind_a_long_message() {
        let n = notification(&[("region", &"y".repeat(200))]);
        assert_eq!(
            longest_field("On {host} in {region}: {summary}", &n),
            "variables.region"
        );
        let mut n = notification(&[("region", "x")]);
        n.summary = "s".repeat(50);
        assert_eq!(
            longest_field("On {host} in {region}: {summary}", &n),
            "summary"
        );
    }

    #[test]
    fn only_a_phrase_near_the_limit_is_synthesised_to_measure_it() {
        use crate::ivr::dialplan::Language::{En, Ja};
        // The first-audio bench's 20-second Japanese message (169
        // characters) against the default 60 s: not synthesised.
        assert_eq!(estimate(&"あ".repeat(169), Ja, 60_000), Estimate::Short);
        assert_eq!(estimate(&"a".repeat(200), En, 60_000), Estimate::Short);
        // Near the limit: synthesised.
        assert_eq!(estimate(&"あ".repeat(236), Ja, 60_000), Estimate::Short);
        assert_eq!(estimate(&"あ".repeat(237), Ja, 60_000), Estimate::Unsure);
        assert_eq!(estimate(&"a".repeat(1500), En, 60_000), Estimate::Unsure);
        // The hardening issue's 60 KB value: refused without synthesis.
        assert_eq!(
            estimate(&"London ".repeat(8500), En, 60_000),
            Estimate::Long(59_500 * 60)
        );
    }
}
