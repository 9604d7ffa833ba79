//! Dialplan loading: the shipped samples pass `callout dialplan check`;
//! each broken sample gives its exact file:line:column error; a reload
//! with a broken file keeps the previous plans.

use std::path::Path;
use std::process::Command;

use callout::ivr::registry::Registry;

const EXPECTED: &[(&str, &str)] = &[
    ("action_without_pin", "25:1: action \"restart\" requires a PIN but there is no [pin] section (or set pin = false)"),
    ("bad_duration", "7:16: ring_timeout: invalid duration \"30 parsecs\""),
    ("bad_language", "3:12: unknown variant `fr`, expected `ja` or `en`"),
    ("bad_timezone", "4:12: unknown time zone \"Mars/Olympus\""),
    ("bad_uri", "13:7: contact uri \"+81 90 1111 2222\" is not a sip:, sips: or tel:+number URI"),
    ("bad_window", "14:9: invalid time window \"mon-fri 9-17\""),
    ("call_codecs", "25:10: call.codecs: \"G729\" is not PCMU or PCMA"),
    ("call_early_message", "28:17: call.early_message cannot be used with [amd] enabled: the machine detector listens to the callee after the answer, when the message would already be playing"),
    ("call_identity", "26:21: call.asserted_identity: control characters (CR, LF, ...) are not allowed"),
    ("duplicate_contact", "25:8: contact \"A\" is listed twice"),
    ("duplicate_key", "23:1: duplicate key `1` in table `menu.keys`"),
    ("no_ack", "21:1: no key is mapped to \"ack\""),
    ("no_contacts", "1:1: no contacts"),
    ("pipeline_mail_regex", "31:11: pipeline.mail.rules.subject: bad regular expression: regex parse error:"),
    ("pipeline_matcher", "28:10: pipeline.rules.match: matcher \"alertname~\\\"HostDown\\\"\": expected =, !=, =~ or !~ after \"alertname\""),
    ("not_a_key", "23:1: \"10\" is not a phone key (0-9, * or #)"),
    ("undefined_action", "23:7: key \"5\": undefined action \"reboot\""),
    ("unknown_field", "7:1: unknown field `ringtimeout`"),
    ("unknown_prompt", "15:1: message: unknown prompt file \"no-such-file.wav\""),
    ("unknown_variable", "15:1: message: unknown variable {sumary}"),
    ("unreachable_pin", "24:1: [pin] is configured but no action asks for it"),
];

fn check(path: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .args(["dialplan", "check"])
        .arg(path)
        .env(
            "CALLOUT_TTS_CACHE",
            std::env::temp_dir().join(format!("callout-check-cache-{}", std::process::id())),
        )
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--prompts", concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")])
        .env("ACME_PIN", "2468")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn shipped_samples_pass() {
    let (code, out) = check(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/dialplans")));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok: contract acme-web (3 contacts, 3 rounds, 5 keys)"),
        "{out}"
    );
    assert!(
        out.contains("ok: contract globex-db (3 contacts, 2 rounds, 4 keys)"),
        "{out}"
    );
}

#[test]
fn each_broken_sample_gives_its_error() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dialplans/broken"
    ));
    let files = std::fs::read_dir(dir).unwrap().count();
    assert_eq!(
        files,
        EXPECTED.len(),
        "every broken sample has an expectation"
    );
    for (name, want) in EXPECTED {
        let path = dir.join(format!("{name}.toml"));
        let (code, out) = check(&path);
        assert_eq!(code, 1, "{name}: {out}");
        let want = format!("{}:{want}", path.display());
        assert!(
            out.lines().any(|l| l.starts_with(&want)),
            "{name}: want a line starting\n  {want}\ngot\n{out}"
        );
    }
}

#[test]
fn reload_with_a_broken_file_keeps_the_old_plans() {
    let dir = std::env::temp_dir().join(format!("callout-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let prompts = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"));
    let sample = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dialplans/globex-db.toml"
    ));
    std::fs::copy(sample, dir.join("globex-db.toml")).unwrap();
    let reg = Registry::load(&dir, prompts).unwrap();
    let in_progress = reg.get("globex-db").unwrap();
    assert_eq!(in_progress.escalation.rounds, 2);

    // A broken edit: rejected, the old plan still serves.
    let text = std::fs::read_to_string(sample).unwrap();
    std::fs::write(
        dir.join("globex-db.toml"),
        text.replace("rounds = 2", "rounds = 4\nbogus = 1"),
    )
    .unwrap();
    let errors = reg.reload().unwrap_err();
    assert!(
        errors[0].to_string().contains("unknown field `bogus`"),
        "{errors:?}"
    );
    assert_eq!(reg.get("globex-db").unwrap().escalation.rounds, 2);

    // A good edit: replaces the plan; a call that started earlier keeps its version.
    std::fs::write(
        dir.join("globex-db.toml"),
        text.replace("rounds = 2", "rounds = 4"),
    )
    .unwrap();
    assert_eq!(reg.reload().unwrap(), 1);
    assert_eq!(reg.get("globex-db").unwrap().escalation.rounds, 4);
    assert_eq!(in_progress.escalation.rounds, 2);
    let _ = std::fs::remove_dir_all(&dir);
}
