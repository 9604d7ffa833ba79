//! 3xx redirects against a real `callout serve`, sipp and a callee: a 302
//! to a contact the dialplan names is followed (a new INVITE there, which
//! answers and acknowledges); a 302 anywhere else is refused: no INVITE
//! reaches that target and the call record says `redirect_refused` with
//! the target.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

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
