//! Where calls go, against a real `callout serve` and sipp:
//!
//! - 3xx: a 302 to a contact the dialplan names is followed (a new INVITE
//!   there, which answers and acknowledges); a 302 anywhere else is
//!   refused: no INVITE reaches that target and the call record says
//!   `redirect_refused` with the target.
//! - Failover: a trunk with two proxies probed by OPTIONS; a 503 moves the
//!   call to the next proxy, a killed proxy is marked down (`/readyz`,
//!   metrics) and skipped, and used again once it answers.
//! - Caller identity and codec order per trunk, checked by sipp on the
//!   wire; an identity carrying CR/LF makes the trunk unusable.
//! - A registrar answering 423 gets a REGISTER with its Min-Expires.
//! - DNS: a trunk named by a bare host is found through SRV on a real
//!   dnsmasq (priority order), and followed when the record changes.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::*;
use common::*;

fn two_contacts(contract: &str, first: &str, second: Option<&str>) -> String {
    let second = second.map_or(String::new(), |u| {
        format!("[[contacts]]\nname = \"Carol\"\nuri = \"{u}\"\n")
    });
    format!(
        "contract = \"{contract}\"\nname = \"{contract}\"\nlanguage = \"en\"\n\
         [escalation]\nrounds = 1\nring_timeout = \"10s\"\nbetween_calls = \"1s\"\nbetween_rounds = \"1m\"\n\
         [[contacts]]\nname = \"Bob\"\nuri = \"{first}\"\n{second}\
         [message]\ntext = \"Alert on {{host}}.\"\n\
         [menu]\nprompt = \"Press 1.\"\n[menu.keys]\n\"1\" = \"ack\"\n"
    )
}

#[test]
fn a_302_is_followed_only_to_a_contact_the_dialplan_names() {
    require("espeak-ng");
    let dir = scratch("redirect");
    copy_prompts(&dir);
    let (_carol, carol_uri) = pressing_callee("38200-38299");
    // Somewhere a redirect must never take us: a socket that counts.
    let evil = UdpSocket::bind("127.0.0.1:0").unwrap();
    evil.set_nonblocking(true).unwrap();
    let evil_uri = format!(
        "sip:+4790000000@127.0.0.1:{}",
        evil.local_addr().unwrap().port()
    );
    let (adir, fdir) = (dir.join("sipp-allowed"), dir.join("sipp-fraud"));
    std::fs::create_dir_all(&adir).unwrap();
    std::fs::create_dir_all(&fdir).unwrap();
    let mut to_carol = Sipp::uas("redirect_302.xml", &adir, &["-set", "target", &carol_uri]);
    let mut to_evil = Sipp::uas("redirect_302.xml", &fdir, &["-set", "target", &evil_uri]);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/redir.toml"),
        two_contacts("redir", &to_carol.uri(), Some(&carol_uri)),
    )
    .unwrap();
    std::fs::write(
        dir.join("dialplans/fraud.toml"),
        two_contacts("fraud", &to_evil.uri(), None),
    )
    .unwrap();
    let s = Serve::start(&dir, "", "38100-38199");

    // Allowed: Bob's phone forwards to Carol, whom the plan names; the
    // first attempt is answered there and acknowledged.
    let id = s.notify("redir", "T1")["id"].as_str().unwrap().to_string();
    let n = s.wait_state(
        &id,
        &["acked", "exhausted", "failed"],
        Duration::from_secs(40),
    );
    assert_eq!(n["state"], "acked", "{n:#}");
    let outcomes = attempt_outcomes(&n);
    assert_eq!(outcomes[0], ("Bob".into(), "acked".into()), "{n:#}");
    let events = s.events(&id);
    let redirected: Vec<_> = events
        .iter()
        .filter(|(e, _)| e == "call.redirected")
        .collect();
    assert_eq!(redirected.len(), 1, "{events:?}");
    assert_eq!(redirected[0].1["target"], carol_uri.as_str());
    assert_eq!(redirected[0].1["code"], 302);
    assert!(
        to_carol.wait(Duration::from_secs(10)).success(),
        "{}",
        to_carol.messages()
    );

    // Disallowed: the 302 names a number the plan does not.
    let id = s.notify("fraud", "T2")["id"].as_str().unwrap().to_string();
    let n = s.wait_state(
        &id,
        &["acked", "exhausted", "failed"],
        Duration::from_secs(40),
    );
    assert_eq!(n["state"], "exhausted", "{n:#}");
    let attempt = &n["attempts"][0];
    assert_eq!(attempt["outcome"]["outcome"], "redirect_refused", "{n:#}");
    assert_eq!(attempt["outcome"]["target"], evil_uri.as_str(), "{n:#}");
    assert_eq!(attempt["outcome"]["code"], 302, "{n:#}");
    let ended: Vec<_> = s
        .events(&id)
        .into_iter()
        .filter(|(e, _)| e == "call.ended")
        .collect();
    assert_eq!(
        ended[0].1["outcome"]["outcome"], "redirect_refused",
        "{ended:?}"
    );
    assert!(
        to_evil.wait(Duration::from_secs(10)).success(),
        "{}",
        to_evil.messages()
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut buf = [0u8; 2048];
    assert!(
        evil.recv_from(&mut buf).is_err(),
        "something was sent to the refused target"
    );
}

/// A sipp UAS on a fixed port that answers OPTIONS (`-aa`) and takes any
/// number of calls, each with `scenario`.
fn proxy(scenario: &str, dir: &Path, port: u16) -> KillOnDrop {
    std::fs::create_dir_all(dir).unwrap();
    let scen = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(scenario);
    let child = Command::new("sipp")
        .current_dir(dir)
        .args(["-sf", scen.to_str().unwrap()])
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-mp", &free_port_pair().to_string()])
        .args(["-aa", "-trace_msg"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp");
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        std::thread::sleep(Duration::from_millis(20));
    }
    KillOnDrop(child)
}

/// INVITEs a sipp in `dir` received so far.
fn invites(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with("_messages.log") {
            n += std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .matches("INVITE sip:")
                .count();
        }
    }
    n
}

fn wait_health(s: &Serve, addr: &str, want: &str) -> serde_json::Value {
    wait_trunk_health(s, "ha", addr, want)
}

fn wait_trunk_health(s: &Serve, trunk: &str, addr: &str, want: &str) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, r) = s.http("GET", "/readyz", None).unwrap();
        if r["trunks"][trunk][addr] == want {
            return r;
        }
        assert!(Instant::now() < until, "{addr} never {want}: {r:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(s: &Serve, ticket: &str) -> (serde_json::Value, Vec<(String, serde_json::Value)>) {
    let id = s.notify("ha", ticket)["id"].as_str().unwrap().to_string();
    let n = s.wait_state(
        &id,
        &["acked", "exhausted", "failed"],
        Duration::from_secs(60),
    );
    (n, s.events(&id))
}

fn failovers(events: &[(String, serde_json::Value)]) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter(|(e, _)| e == "call.failover")
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn calls_fail_over_between_proxies_that_keepalive_watches() {
    require("espeak-ng");
    let dir = scratch("failover");
    copy_prompts(&dir);
    let (pa, pb) = (free_port_pair(), free_port_pair());
    let (a, b) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
    let (adir, bdir): (PathBuf, PathBuf) = (dir.join("a"), dir.join("b"));
    // A is up (answers OPTIONS) but refuses calls with 503; B is busy.
    let mut sipp_a = Some(proxy("unavailable.xml", &adir, pa));
    let mut sipp_b = Some(proxy("busy.xml", &bdir, pb));
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/ha.toml"),
        plan(
            "ha",
            "sip:+4712345678@carrier.example",
            Some("ha"),
            "text = \"Alert on {host}.\"",
        ),
    )
    .unwrap();
    let trunk = format!(
        "[trunks.ha]\nproxies = [\"{a}\", \"{b}\"]\nkeepalive = \"1s\"\nkeepalive_misses = 2\n"
    );
    let s = Serve::start(&dir, &trunk, "38300-38399");
    wait_health(&s, &a, "up");
    wait_health(&s, &b, "up");
    let metrics = s.text("/metrics");
    assert!(
        metrics.contains(&format!(
            "callout_trunk_up{{trunk=\"ha\",address=\"{a}\"}} 1"
        )),
        "{metrics}"
    );

    // 1. A answers 503: the same attempt goes on through B.
    let (n, events) = run(&s, "T1");
    assert_eq!(
        attempt_outcomes(&n),
        [("Bob".into(), "busy".into())],
        "{n:#}"
    );
    let f = failovers(&events);
    assert_eq!(f.len(), 1, "{events:?}");
    assert_eq!(f[0]["code"], 503);
    assert_eq!(f[0]["proxy"], b.as_str());
    assert_eq!((invites(&adir), invites(&bdir)), (1, 1));

    // 2. A dies: keepalive marks it down, /readyz and metrics say so,
    //    and the next call goes straight to B.
    drop(sipp_a.take());
    let r = wait_health(&s, &a, "down");
    assert_eq!(r["trunks"]["ha"][&b], "up", "{r:#}");
    let metrics = s.text("/metrics");
    assert!(
        metrics.contains(&format!(
            "callout_trunk_up{{trunk=\"ha\",address=\"{a}\"}} 0"
        )),
        "{metrics}"
    );
    let (n, events) = run(&s, "T2");
    assert_eq!(
        attempt_outcomes(&n),
        [("Bob".into(), "busy".into())],
        "{n:#}"
    );
    assert!(failovers(&events).is_empty(), "{events:?}");
    assert_eq!((invites(&adir), invites(&bdir)), (1, 2));

    // 3. A comes back (busy now): up again, and first again.
    let a2dir = dir.join("a2");
    sipp_a = Some(proxy("busy.xml", &a2dir, pa));
    wait_health(&s, &a, "up");
    let (n, events) = run(&s, "T3");
    assert_eq!(
        attempt_outcomes(&n),
        [("Bob".into(), "busy".into())],
        "{n:#}"
    );
    assert!(failovers(&events).is_empty(), "{events:?}");
    assert_eq!((invites(&a2dir), invites(&bdir)), (1, 2));

    // 4. Both gone: the contract cannot page anyone, and /readyz says so.
    assert!(sipp_a.take().is_some() && sipp_b.take().is_some());
    wait_health(&s, &a, "down");
    wait_health(&s, &b, "down");
    let (st, r) = s.http("GET", "/readyz", None).unwrap();
    assert_eq!(st, 503, "{r:#}");
    assert!(
        r["undialable"]["ha"]
            .as_str()
            .unwrap_or("")
            .contains("every proxy is down"),
        "{r:#}"
    );
}

#[test]
fn the_trunk_sets_caller_identity_and_codec_order_on_the_wire() {
    require("espeak-ng");
    let dir = scratch("identity");
    copy_prompts(&dir);
    let sdir = dir.join("sipp");
    std::fs::create_dir_all(&sdir).unwrap();
    let mut sipp = Sipp::uas("identity.xml", &sdir, &[]);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    let msg = "text = \"Alert on {host}.\"";
    let mut id_plan = plan("id", "sip:+4790000000@carrier.example", Some("id"), msg);
    id_plan = id_plan.replace(
        "language = \"en\"\n",
        "language = \"en\"\ncaller_id = \"sip:callout@callout.example\"\n",
    );
    std::fs::write(dir.join("dialplans/id.toml"), id_plan).unwrap();
    std::fs::write(
        dir.join("dialplans/evil.toml"),
        plan("evil", "sip:+4790000000@carrier.example", Some("evil"), msg),
    )
    .unwrap();
    let trunks = format!(
        "[trunks.id]\nproxy = \"127.0.0.1:{port}\"\n\
         asserted_identity = '\"Ops\" <sip:+4712345678@carrier.example>'\n\
         preferred_identity = \"sip:noc@carrier.example\"\n\
         from_user = \"+4712345678\"\nfrom_display = \"Ops NOC\"\ncodecs = [\"PCMA\", \"PCMU\"]\n\
         [trunks.evil]\nproxy = \"127.0.0.1:{port}\"\n\
         asserted_identity = \"sip:a@b\\r\\nX-Evil: 1\"\n",
        port = sipp.port
    );
    let s = Serve::start(&dir, &trunks, "38400-38499");
    let (_, ready) = s.http("GET", "/readyz", None).unwrap();
    let evil = ready["undialable"]["evil"].as_str().unwrap_or("");
    assert!(evil.contains("control characters"), "{ready:#}");
    assert!(ready["undialable"]["id"].is_null(), "{ready:#}");

    let id = s.notify("id", "T1")["id"].as_str().unwrap().to_string();
    let n = s.wait_state(&id, &["exhausted", "failed"], Duration::from_secs(40));
    assert_eq!(
        attempt_outcomes(&n),
        [("Bob".into(), "busy".into())],
        "{n:#}"
    );
    let status = sipp.wait(Duration::from_secs(10));
    let log = sipp.messages();
    assert!(status.success(), "sipp's checks failed:\n{log}");
    assert!(
        log.contains("P-Asserted-Identity: \"Ops\" <sip:+4712345678@carrier.example>"),
        "{log}"
    );
    assert!(!log.contains("X-Evil"), "{log}");
    assert!(log.contains("RTP/AVP 8 0 101"), "PCMA first:\n{log}");

    // The broken trunk's contract fails without a call.
    let id = s.notify("evil", "T2")["id"].as_str().unwrap().to_string();
    let n = s.wait_state(&id, &["failed"], Duration::from_secs(20));
    assert_eq!(n["final"]["reason"], "trunk_bad_identity", "{n:#}");
}

#[test]
fn a_423_on_register_is_answered_with_the_min_expires() {
    let dir = scratch("register-423");
    copy_prompts(&dir);
    let sdir = dir.join("sipp");
    std::fs::create_dir_all(&sdir).unwrap();
    let mut registrar = Sipp::uas("register_423.xml", &sdir, &[]);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/reg.toml"),
        plan("reg", "sip:x@127.0.0.1:5999", Some("reg"), "text = \"x\""),
    )
    .unwrap();
    let trunk = format!(
        "[trunks.reg]\nregistrar = \"127.0.0.1:{}\"\naor = \"sip:alice@127.0.0.1\"\nregister_expires = 60\n",
        registrar.port
    );
    let s = Serve::start(&dir, &trunk, "38500-38599");
    let status = registrar.wait(Duration::from_secs(15));
    let log = registrar.messages();
    assert!(
        status.success(),
        "the second REGISTER did not ask for 120 s:\n{log}"
    );
    assert_eq!(log.matches("REGISTER sip:").count(), 2, "{log}");
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, r) = s.http("GET", "/readyz", None).unwrap();
        let state = r["registrations"]["sip:alice@127.0.0.1"]
            .as_str()
            .unwrap_or("");
        if state.starts_with("registered for 120 s") {
            break;
        }
        assert!(Instant::now() < until, "{r:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// dnsmasq on `port` serving `_sip._udp.trunk.test` with these SRV
/// (target, port, priority) records, all targets at 127.0.0.1, TTL 1 s.
fn dnsmasq(port: u16, srv: &[(&str, u16, u16)]) -> KillOnDrop {
    require("dnsmasq");
    let mut cmd = Command::new("dnsmasq");
    cmd.args([
        "--no-daemon",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
    ])
    .args([
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--pid-file=",
    ])
    .args(["--user=nobody", "--local-ttl=1", &format!("--port={port}")]);
    for (target, p, prio) in srv {
        cmd.arg(format!(
            "--srv-host=_sip._udp.trunk.test,{target}.trunk.test,{p},{prio},0"
        ));
        cmd.arg(format!("--host-record={target}.trunk.test,127.0.0.1"));
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq");
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        std::thread::sleep(Duration::from_millis(20));
    }
    KillOnDrop(child)
}

#[test]
fn a_trunk_name_is_found_by_srv_and_followed_when_dns_changes() {
    require("espeak-ng");
    let dir = scratch("dns-srv");
    copy_prompts(&dir);
    let (pa, pb, pc) = (free_port_pair(), free_port_pair(), free_port_pair());
    let (adir, bdir, cdir) = (dir.join("a"), dir.join("b"), dir.join("c"));
    let _a = proxy("busy.xml", &adir, pa);
    let _b = proxy("busy.xml", &bdir, pb);
    let _c = proxy("busy.xml", &cdir, pc);
    let dns_port = free_port_pair();
    let mut dns = Some(dnsmasq(dns_port, &[("a", pa, 10), ("b", pb, 20)]));
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/ha.toml"),
        plan(
            "ha",
            "sip:+4712345678@carrier.example",
            Some("ha"),
            "text = \"x\"",
        ),
    )
    .unwrap();
    let cfg = format!(
        "dns_servers = [\"127.0.0.1:{dns_port}\"]\n\
         [trunks.ha]\nproxy = \"trunk.test\"\nkeepalive = \"1s\"\nkeepalive_misses = 2\n"
    );
    let s = Serve::start(&dir, &cfg, "38600-38699");
    let (a, b, c) = (
        format!("127.0.0.1:{pa}"),
        format!("127.0.0.1:{pb}"),
        format!("127.0.0.1:{pc}"),
    );
    // Both SRV targets are probed; the call goes to priority 10.
    wait_health(&s, &a, "up");
    wait_health(&s, &b, "up");
    let (n, _) = run(&s, "T1");
    assert_eq!(
        attempt_outcomes(&n),
        [("Bob".into(), "busy".into())],
        "{n:#}"
    );
    assert_eq!((invites(&adir), invites(&bdir)), (1, 0));

    // The record changes (TTL 1 s): C replaces A, without a restart.
    dns.take();
    let _dns = dnsmasq(dns_port, &[("c", pc, 10), ("b", pb, 20)]);
    let r = wait_health(&s, &c, "up");
    assert!(r["trunks"]["ha"][&a].is_null(), "A is forgotten: {r:#}");
    let (n, _) = run(&s, "T2");
    assert_eq!(
        attempt_outcomes(&n),
        [("Bob".into(), "busy".into())],
        "{n:#}"
    );
    assert_eq!((invites(&adir), invites(&cdir)), (1, 1));
}

#[test]
fn a_contract_fails_over_to_its_next_trunk_and_skips_a_dead_one() {
    require("espeak-ng");
    let dir = scratch("trunk-failover");
    copy_prompts(&dir);
    let (pa, pb) = (free_port_pair(), free_port_pair());
    let (adir, bdir) = (dir.join("a"), dir.join("b"));
    // Trunk "first" refuses with 503; trunk "second" is busy.
    let mut sipp_a = Some(proxy("unavailable.xml", &adir, pa));
    let _sipp_b = proxy("busy.xml", &bdir, pb);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    let mut p = plan(
        "ha",
        "sip:+4712345678@carrier.example",
        Some("first"),
        "text = \"x\"",
    );
    p = p.replace(
        "trunk = \"first\"\n",
        "trunk = \"first\"\nfailover_trunks = [\"second\"]\n",
    );
    std::fs::write(dir.join("dialplans/ha.toml"), p).unwrap();
    // Each trunk has its own identity: the second's must be on the
    // INVITE that goes through it.
    let trunks = format!(
        "[trunks.first]\nproxy = \"127.0.0.1:{pa}\"\nkeepalive = \"1s\"\nkeepalive_misses = 2\nfrom_user = \"+4711111\"\n\
         [trunks.second]\nproxy = \"127.0.0.1:{pb}\"\nfrom_user = \"+4722222\"\n"
    );
    let s = Serve::start(&dir, &trunks, "38700-38799");
    let a = format!("127.0.0.1:{pa}");
    wait_trunk_health(&s, "first", &a, "up");

    // 1. First's 503 moves the same attempt to the second trunk.
    let (n, events) = run(&s, "T1");
    assert_eq!(
        attempt_outcomes(&n),
        [("Bob".into(), "busy".into())],
        "{n:#}"
    );
    let f = failovers(&events);
    assert_eq!(f.len(), 1, "{events:?}");
    assert_eq!(f[0]["code"], 503);
    assert_eq!(f[0]["trunk"], "second");
    assert_eq!(f[0]["proxy"], format!("127.0.0.1:{pb}"));
    assert_eq!((invites(&adir), invites(&bdir)), (1, 1));
    let log_of = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<String>()
    };
    assert!(
        log_of(&adir).contains("<sip:+4711111@"),
        "{}",
        log_of(&adir)
    );
    let b_log = log_of(&bdir);
    assert!(b_log.contains("<sip:+4722222@"), "{b_log}");
    assert!(!b_log.contains("+4711111"), "{b_log}");

    // 2. First dies: keepalive marks it down, the contract stays
    //    dialable, and the next call goes straight to the second trunk.
    drop(sipp_a.take());
    wait_trunk_health(&s, "first", &a, "down");
    let (st, r) = s.http("GET", "/readyz", None).unwrap();
    assert!(r["undialable"]["ha"].is_null(), "{st} {r:#}");
    let (n, events) = run(&s, "T2");
    assert_eq!(
        attempt_outcomes(&n),
        [("Bob".into(), "busy".into())],
        "{n:#}"
    );
    assert!(failovers(&events).is_empty(), "{events:?}");
    assert_eq!((invites(&adir), invites(&bdir)), (1, 2));
}

/// A call that fails over is counted against the trunk it is sent on:
/// only the second trunk is limited, so nothing but the failover takes
/// a channel, and the second trunk's full 503 backs that trunk off.
#[test]
fn a_failed_over_call_counts_against_the_trunk_it_moved_to() {
    require("espeak-ng");
    let dir = scratch("trunk-failover-channels");
    copy_prompts(&dir);
    let (pa, pb) = (free_port_pair(), free_port_pair());
    let (adir, bdir) = (dir.join("a"), dir.join("b"));
    let _sipp_a = proxy("unavailable.xml", &adir, pa);
    let _sipp_b = proxy("unavailable_retry_after.xml", &bdir, pb);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    let p = plan(
        "ha",
        "sip:+4712345678@carrier.example",
        Some("first"),
        "text = \"x\"",
    )
    .replace(
        "trunk = \"first\"\n",
        "trunk = \"first\"\nfailover_trunks = [\"second\"]\n",
    );
    std::fs::write(dir.join("dialplans/ha.toml"), p).unwrap();
    let trunks = format!(
        "[trunks.first]\nproxy = \"127.0.0.1:{pa}\"\n\
         [trunks.second]\nproxy = \"127.0.0.1:{pb}\"\nmax_channels = 1\n"
    );
    let s = Serve::start(&dir, &trunks, "38800-38899");
    let (_, events) = run(&s, "T1");
    let f = failovers(&events);
    assert_eq!(f.len(), 1, "{events:?}");
    assert_eq!(f[0]["trunk"], "second");
    assert_eq!((invites(&adir), invites(&bdir)), (1, 1));
    let backoff: Vec<_> = events
        .iter()
        .filter(|(e, _)| e == "trunk.backoff")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(backoff.len(), 1, "{events:?}");
    assert_eq!(backoff[0]["trunk"], "second");
    assert_eq!(backoff[0]["retry_after_s"], 3);
    // Its channel was given back when the call ended.
    let metrics = s.text("/metrics");
    assert!(
        metrics.contains("callout_trunk_channels_in_use{trunk=\"second\"} 0"),
        "{metrics}"
    );
}

#[test]
fn a_contracts_call_settings_override_its_trunks() {
    require("espeak-ng");
    let dir = scratch("contract-identity");
    copy_prompts(&dir);
    let sdir = dir.join("sipp");
    std::fs::create_dir_all(&sdir).unwrap();
    let mut sipp = Sipp::uas("busy.xml", &sdir, &[]);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    let mut p = plan(
        "acme",
        "sip:+4790000000@carrier.example",
        Some("id"),
        "text = \"x\"",
    );
    p.push_str(
        "[call]\nasserted_identity = '\"Acme NOC\" <sip:+4799999999@carrier.example>'\n\
         from_display = \"Acme\"\ncodecs = [\"PCMU\"]\n",
    );
    std::fs::write(dir.join("dialplans/acme.toml"), p).unwrap();
    let trunks = format!(
        "[trunks.id]\nproxy = \"127.0.0.1:{port}\"\n\
         asserted_identity = '\"Ops\" <sip:+4712345678@carrier.example>'\n\
         from_user = \"+4712345678\"\nfrom_display = \"Ops NOC\"\ncodecs = [\"PCMA\", \"PCMU\"]\n",
        port = sipp.port
    );
    let s = Serve::start(&dir, &trunks, "38800-38899");
    let id = s.notify("acme", "T1")["id"].as_str().unwrap().to_string();
    let n = s.wait_state(&id, &["exhausted", "failed"], Duration::from_secs(40));
    assert_eq!(
        attempt_outcomes(&n),
        [("Bob".into(), "busy".into())],
        "{n:#}"
    );
    assert!(sipp.wait(Duration::from_secs(10)).success());
    let log = sipp.messages();
    // The contract's identity, display name and codecs; the trunk's From
    // user, which the contract does not set.
    assert!(
        log.contains("P-Asserted-Identity: \"Acme NOC\" <sip:+4799999999@carrier.example>"),
        "{log}"
    );
    assert!(!log.contains("\"Ops\""), "{log}");
    assert!(log.contains("From: \"Acme\" <sip:+4712345678@"), "{log}");
    assert!(log.contains("RTP/AVP 0 101"), "PCMU only:\n{log}");
}

#[test]
fn naptr_picks_the_transport_before_srv() {
    require("espeak-ng");
    require("dnsmasq");
    let dir = scratch("dns-naptr");
    copy_prompts(&dir);
    // The TCP callee NAPTR points at, and a UDP one that plain SRV would
    // have chosen.
    let tdir = dir.join("tcp");
    std::fs::create_dir_all(&tdir).unwrap();
    let pt = loop {
        let p = free_port_pair();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            break p;
        }
    };
    let scen = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/busy.xml");
    let tcp_sipp = KillOnDrop(
        Command::new("sipp")
            .current_dir(&tdir)
            .args(["-sf", scen.to_str().unwrap(), "-t", "t1"])
            .args(["-i", "127.0.0.1", "-p", &pt.to_string()])
            .args(["-mp", &free_port_pair().to_string(), "-trace_msg"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sipp"),
    );
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && std::net::TcpListener::bind(("127.0.0.1", pt)).is_ok() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pu = free_port_pair();
    let udir = dir.join("udp");
    let _udp_sipp = proxy("busy.xml", &udir, pu);
    let dns_port = free_port_pair();
    let _dns = KillOnDrop(
        Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
            ])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
            ])
            .args([
                "--user=nobody",
                "--local-ttl=1",
                &format!("--port={dns_port}"),
            ])
            .arg("--naptr-record=trunk.test,20,10,S,SIP+D2U,,_sip._udp.trunk.test")
            .arg("--naptr-record=trunk.test,10,10,S,SIP+D2T,,_sip._tcp.trunk.test")
            .arg(format!(
                "--srv-host=_sip._tcp.trunk.test,t.trunk.test,{pt},10,0"
            ))
            .arg(format!(
                "--srv-host=_sip._udp.trunk.test,u.trunk.test,{pu},10,0"
            ))
            .arg("--host-record=t.trunk.test,127.0.0.1")
            .arg("--host-record=u.trunk.test,127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq"),
    );
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && UdpSocket::bind(("127.0.0.1", dns_port)).is_ok() {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/ha.toml"),
        plan(
            "ha",
            "sip:+4712345678@carrier.example",
            Some("ha"),
            "text = \"x\"",
        ),
    )
    .unwrap();
    let cfg =
        format!("dns_servers = [\"127.0.0.1:{dns_port}\"]\n[trunks.ha]\nproxy = \"trunk.test\"\n");
    let s = Serve::start(&dir, &cfg, "38900-38999");
    let (n, _) = run(&s, "T1");
    assert_eq!(
        attempt_outcomes(&n),
        [("Bob".into(), "busy".into())],
        "{n:#}"
    );
    // NAPTR's order 10 (TCP) won over order 20 and over plain SRV UDP.
    assert_eq!((invites(&tdir), invites(&udir)), (1, 0));
    let log: String = std::fs::read_dir(&tdir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(log.contains("Via: SIP/2.0/TCP "), "{log}");
    drop(tcp_sipp);
}

/// A registrar that answers every REGISTER 200 (60 s) and counts them.
fn counting_registrar() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((len, from)) = s.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            if !text.starts_with("REGISTER ") {
                continue;
            }
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut resp = String::from("SIP/2.0 200 OK\r\n");
            for l in text.split("\r\n") {
                let name = l.split(':').next().unwrap_or("").to_ascii_lowercase();
                if ["via", "from", "call-id", "cseq", "contact"].contains(&name.as_str()) {
                    resp.push_str(l);
                    resp.push_str("\r\n");
                } else if name == "to" {
                    resp.push_str(&format!("{l};tag=reg\r\n"));
                }
            }
            resp.push_str("Expires: 60\r\nContent-Length: 0\r\n\r\n");
            let _ = s.send_to(resp.as_bytes(), from);
        }
    });
    (port, n)
}

#[test]
fn a_registrar_found_by_srv_is_followed_when_dns_changes() {
    let dir = scratch("registrar-dns");
    copy_prompts(&dir);
    let (pa, at_a) = counting_registrar();
    let (pb, at_b) = counting_registrar();
    let dns_port = free_port_pair();
    let mut dns = Some(dnsmasq(dns_port, &[("a", pa, 10)]));
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    std::fs::write(
        dir.join("dialplans/reg.toml"),
        plan("reg", "sip:x@127.0.0.1:5999", Some("reg"), "text = \"x\""),
    )
    .unwrap();
    let cfg = format!(
        "dns_servers = [\"127.0.0.1:{dns_port}\"]\n\
         [trunks.reg]\nregistrar = \"trunk.test\"\naor = \"sip:alice@trunk.test\"\nregister_expires = 60\n"
    );
    let _s = Serve::start(&dir, &cfg, "39000-39099");
    let wait = |what: &str, n: &std::sync::atomic::AtomicUsize| {
        let until = Instant::now() + Duration::from_secs(10);
        while n.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(Instant::now() < until, "no REGISTER at {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("A", &at_a);
    assert_eq!(at_b.load(std::sync::atomic::Ordering::SeqCst), 0);
    // The SRV record now names B (TTL 1 s): the registration moves there
    // without a restart, long before its 60 s refresh.
    dns.take();
    let _dns = dnsmasq(dns_port, &[("b", pb, 10)]);
    wait("B after the DNS change", &at_b);
}

/// Media settings follow the trunk that carries the call: trunk "first"
/// (no `symmetric_rtp`) refuses with 503, the call moves to "second",
/// whose callee sits behind NAT: its SDP names one port, its RTP (with
/// the key press) comes from another. Only with second's
/// `symmetric_rtp` does callout take that RTP and hear the 1; with the
/// first trunk's setting kept, the key is dropped as from a stranger and
/// nobody acknowledges.
#[test]
fn a_call_that_fails_over_uses_the_media_settings_of_the_trunk_it_moved_to() {
    require("espeak-ng");
    let dir = scratch("trunk-failover-media");
    copy_prompts(&dir);
    let (pa, pb) = (free_port_pair(), free_port_pair());
    let (adir, bdir) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&bdir).unwrap();
    // The NAT's outside port the SDP names: whatever reaches it is lost.
    let nat = UdpSocket::bind("127.0.0.1:0").unwrap();
    let scen = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/answer_digits_natted.xml"),
    )
    .unwrap()
    .replace("SDP_PORT", &nat.local_addr().unwrap().port().to_string());
    let natted = bdir.join("natted.xml");
    std::fs::write(&natted, scen).unwrap();
    rfc4733_pcap(&bdir.join("digits.pcap"), &[('1', 1500, 120)], false);
    let _sipp_a = proxy("unavailable.xml", &adir, pa);
    let _sipp_b = proxy(natted.to_str().unwrap(), &bdir, pb);
    std::fs::create_dir_all(dir.join("dialplans")).unwrap();
    let p = plan(
        "ha",
        "sip:+4712345678@carrier.example",
        Some("first"),
        "text = \"x\"",
    )
    .replace(
        "trunk = \"first\"\n",
        "trunk = \"first\"\nfailover_trunks = [\"second\"]\n",
    );
    std::fs::write(dir.join("dialplans/ha.toml"), p).unwrap();
    let trunks = format!(
        "[trunks.first]\nproxy = \"127.0.0.1:{pa}\"\n\
         [trunks.second]\nproxy = \"127.0.0.1:{pb}\"\nsymmetric_rtp = true\n"
    );
    let s = Serve::start(&dir, &trunks, "35300-35399");
    let (n, events) = run(&s, "T1");
    let f = failovers(&events);
    assert_eq!(f.len(), 1, "{events:?}");
    assert_eq!(f[0]["trunk"], "second");
    assert_eq!((invites(&adir), invites(&bdir)), (1, 1));
    assert_eq!(n["state"], "acked", "{n:#}\n{events:?}");
    assert_eq!(
        attempt_outcomes(&n),
        [("Bob".into(), "acked".into())],
        "{n:#}"
    );
}
