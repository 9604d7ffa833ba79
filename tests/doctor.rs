//! `callout doctor` against a working setup (all green, with a test call)
//! and against each broken one: trunk unreachable, wrong credentials (a
//! sipp registrar answering 403), database down, voice missing, SIP
//! address 0.0.0.0, a database from a newer release. Also the upgrade
//! from the previous release's schema, and `serve` refusing a downgrade.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::serve::{copy_prompts, pressing_callee};
use common::{free_port_pair, scratch, Sipp};

/// A setup folder: prompts, one English and one Japanese contract calling
/// `uri`, a fresh SQLite database, and `extra` appended to callout.toml.
fn setup(name: &str, uri: &str, top: &str, extra: &str) -> PathBuf {
    let dir = scratch(name);
    copy_prompts(&dir);
    let dp = dir.join("dialplans");
    std::fs::create_dir_all(&dp).unwrap();
    std::fs::write(
        dp.join("en.toml"),
        common::serve::plan("en", uri, None, "text = \"Host {host} is down.\""),
    )
    .unwrap();
    std::fs::write(
        dp.join("ja.toml"),
        common::serve::plan("ja", uri, None, "text = \"ホスト{host}で障害です。\"")
            .replace("language = \"en\"", "language = \"ja\""),
    )
    .unwrap();
    // Its own RTP range: the doctor binds samples of it, in parallel.
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let rtp = 35000 + 50 * NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::fs::write(
        dir.join("callout.toml"),
        format!(
            "sip = \"127.0.0.1:5060\"\nrtp_ports = \"{rtp}-{}\"\n{top}\ndatabase_url = \"sqlite://{d}/data/callout.db\"\n\
             dialplans = \"{d}/dialplans\"\nprompts = \"{d}/prompts\"\ntts_cache = \"{d}/tts\"\n{extra}",
            rtp + 40,
            d = dir.display()
        ),
    )
    .unwrap();
    dir
}

fn doctor(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Output, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callout"));
    cmd.current_dir("/")
        .args(["doctor", "--config"])
        .arg(dir.join("callout.toml"))
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn lines_of<'a>(text: &'a str, level: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{level} ")))
        .collect()
}

/// Exactly one failing line, starting with `check`, containing `words`;
/// exit status 1.
fn assert_red(out: &Output, text: &str, check: &str, words: &[&str]) {
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fails = lines_of(text, "fail");
    assert!(
        fails
            .iter()
            .any(|l| l[6..].starts_with(check) && words.iter().all(|w| l.contains(w))),
        "expected a failing {check:?} line with {words:?}:\n{text}"
    );
}

#[test]
fn a_working_setup_is_all_green_with_a_test_call() {
    common::require("sipp");
    common::require("open_jtalk");
    let (_callee, uri) = pressing_callee("34100-34199");
    let sdir = scratch("doctor-green-sipp");
    std::fs::write(sdir.join("auth.csv"), "SEQUENTIAL\nMD5;reg-secret\n").unwrap();
    let mut registrar = Sipp::uas("registrar.xml", &sdir, &["-inf", "auth.csv"]);
    // The callee's softphone answers OPTIONS: it stands in for the proxy.
    let proxy = uri.rsplit_once('@').unwrap().1;
    // A ticket system's intake (only connected to, never posted to).
    let tickets = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = setup(
        "doctor-green",
        &uri,
        "",
        &format!(
            "[trunks.carrier]\nproxy = \"{proxy}\"\nregistrar = \"127.0.0.1:{}\"\naor = \"sip:alice@127.0.0.1\"\n\
             username_env = \"DOCTOR_USER\"\npassword_env = \"DOCTOR_PASS\"\n\
             [webhooks]\nurl = \"http://{}/tickets\"\n",
            registrar.port,
            tickets.local_addr().unwrap()
        ),
    );
    let (out, text) = doctor(
        &dir,
        &["--call", &uri],
        &[("DOCTOR_USER", "alice"), ("DOCTOR_PASS", "reg-secret")],
    );
    assert!(out.status.success(), "{text}");
    assert!(lines_of(&text, "fail").is_empty(), "{text}");
    for check in [
        "configuration:",
        "prompts:",
        "dialplans: 2 contract(s) load",
        "database:",
        "webhooks http://127.0.0.1:",
        "trunk carrier: options: proxy",
        "trunk carrier: register: sip:alice@127.0.0.1 registered",
        "sip address:",
        "rtp ports:",
        "voice en:",
        "voice ja:",
        "open files:",
        "call: answer:",
        "call: audio out:",
        "call: key: 1",
    ] {
        assert!(
            lines_of(&text, "ok")
                .iter()
                .any(|l| l[6..].starts_with(check)),
            "no ok line {check:?}:\n{text}"
        );
    }
    // Registered, then removed again (sipp's scenario ends with the
    // second REGISTER answered).
    assert!(
        registrar.wait(Duration::from_secs(10)).success(),
        "{}",
        registrar.messages()
    );
    assert!(
        registrar.messages().contains("Expires: 0"),
        "{}",
        registrar.messages()
    );
}

#[test]
fn trunk_unreachable() {
    let closed = free_port_pair();
    let dir = setup(
        "doctor-unreachable",
        "sip:p@127.0.0.1:5999",
        "",
        &format!("[trunks.carrier]\nproxy = \"127.0.0.1:{closed}\"\n"),
    );
    let (out, text) = doctor(&dir, &[], &[]);
    assert_red(
        &out,
        &text,
        "trunk carrier: options",
        &[&format!("127.0.0.1:{closed}"), "nothing listens"],
    );
}

#[test]
fn wrong_credentials_403() {
    common::require("sipp");
    let sdir = scratch("doctor-403-sipp");
    std::fs::write(sdir.join("auth.csv"), "SEQUENTIAL\nMD5;right-secret\n").unwrap();
    let mut registrar = Sipp::uas("registrar.xml", &sdir, &["-inf", "auth.csv"]);
    let dir = setup(
        "doctor-403",
        "sip:p@127.0.0.1:5999",
        "",
        &format!(
            "[trunks.carrier]\nregistrar = \"127.0.0.1:{}\"\naor = \"sip:alice@127.0.0.1\"\n\
             username_env = \"DOCTOR_USER\"\npassword_env = \"DOCTOR_PASS\"\n",
            registrar.port
        ),
    );
    let (out, text) = doctor(
        &dir,
        &[],
        &[("DOCTOR_USER", "alice"), ("DOCTOR_PASS", "wrong-secret")],
    );
    assert_red(
        &out,
        &text,
        "trunk carrier: register",
        &["403 Forbidden", "wrong credentials", "DOCTOR_PASS"],
    );
    assert!(!text.contains("wrong-secret"), "never the password: {text}");
    let _ = registrar.wait(Duration::from_secs(10));
}

#[test]
fn database_down() {
    let closed = free_port_pair();
    let dir = setup("doctor-db-down", "sip:p@127.0.0.1:5999", "", "");
    let toml = std::fs::read_to_string(dir.join("callout.toml")).unwrap();
    let toml = toml
        .lines()
        .map(|l| {
            if l.starts_with("database_url") {
                format!(
                    "database_url = \"postgres://callout:pw-secret@127.0.0.1:{closed}/callout\""
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("callout.toml"), toml).unwrap();
    let (out, text) = doctor(&dir, &[], &[]);
    assert_red(
        &out,
        &text,
        "database",
        &[
            &format!("127.0.0.1:{closed}"),
            "unreachable",
            "is the server running",
        ],
    );
    assert!(!text.contains("pw-secret"), "never the password: {text}");
}

#[test]
fn voice_missing() {
    let dir = setup(
        "doctor-novoice",
        "sip:p@127.0.0.1:5999",
        "jtalk_voice = \"/nonexistent/mei.htsvoice\"",
        "",
    );
    let (out, text) = doctor(&dir, &[], &[]);
    assert_red(
        &out,
        &text,
        "voice file",
        &["the Japanese voice not found", "/nonexistent/mei.htsvoice"],
    );
    assert_red(&out, &text, "voice ja", &["recorded fallback"]);
    assert!(
        lines_of(&text, "ok").iter().any(|l| l.contains("voice en")),
        "{text}"
    );
}

#[test]
fn sip_address_unspecified() {
    let dir = setup("doctor-any", "sip:p@127.0.0.1:5999", "", "");
    let toml = std::fs::read_to_string(dir.join("callout.toml"))
        .unwrap()
        .replace("sip = \"127.0.0.1:5060\"", "sip = \"0.0.0.0:5060\"");
    std::fs::write(dir.join("callout.toml"), toml).unwrap();
    let (out, text) = doctor(&dir, &[], &[]);
    assert_red(&out, &text, "sip address", &["0.0.0.0", "unspecified"]);
}

/// A database at the previous release's schema: doctor warns that serve
/// will migrate it, serve does, doctor is then green for it. One with a
/// migration this binary does not know (a downgrade): doctor fails and
/// serve refuses to start, both saying why.
#[test]
fn upgrade_from_the_previous_schema_and_a_refused_downgrade() {
    let dir = setup("doctor-schema", "sip:p@127.0.0.1:5999", "", "");
    let db = dir.join("data/callout.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    // The previous release's schema: every migration but the last.
    let old = dir.join("old-migrations");
    std::fs::create_dir_all(&old).unwrap();
    let mut all: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    all.sort();
    for m in &all[..all.len() - 1] {
        std::fs::copy(m, old.join(m.file_name().unwrap())).unwrap();
    }
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let (out, text) = doctor(&dir, &[], &[]);
    assert!(out.status.success(), "{text}");
    assert!(
        lines_of(&text, "warn")
            .iter()
            .any(|l| l.contains("database") && l.contains("migrates it")),
        "{text}"
    );
    // serve migrates it (then is stopped).
    let mut s = common::serve::Serve::start_in(&dir, "", "34300-34399", Some(Path::new("/")));
    let _ = s.child.kill();
    let _ = s.child.wait();
    let (out, text) = doctor(&dir, &[], &[]);
    assert!(out.status.success(), "{text}");
    assert!(
        lines_of(&text, "ok")
            .iter()
            .any(|l| l.contains("database") && l.contains("this release's")),
        "{text}"
    );
    // A newer release's migration.
    rt.block_on(async {
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
             VALUES (9999, 'from the future', CURRENT_TIMESTAMP, TRUE, x'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });
    let (out, text) = doctor(&dir, &[], &[]);
    assert_red(
        &out,
        &text,
        "database",
        &["newer callout", "schema version 9999"],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_callout"))
        .current_dir("/")
        .args(["serve", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("migrated by a newer callout (schema version 9999")
            && err.contains("refusing"),
        "{err}"
    );
}

/// A loopback SIP address with a remote trunk: the trunk could never
/// reach it.
#[test]
fn sip_address_loopback_with_a_remote_trunk() {
    let dir = setup(
        "doctor-loopback",
        "sip:p@127.0.0.1:5999",
        "",
        // TEST-NET-1: remote, and never answers.
        "[trunks.carrier]\nproxy = \"192.0.2.1:5060\"\n",
    );
    let (out, text) = doctor(&dir, &[], &[]);
    assert_red(
        &out,
        &text,
        "sip address",
        &["127.0.0.1:5060", "loopback", "192.0.2.1:5060"],
    );
}
