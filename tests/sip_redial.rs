//! A call that moves to another proxy (or follows a 3xx) makes a new
//! INVITE while its owner waits on `ActiveCall::next`. The owner (the
//! escalation runner) waits in a `select!` with other branches, which
//! drops the `next` future whenever another branch fires first. This
//! drives a real failover between two sipp proxies while dropping
//! `next` after every single poll: the failover must still happen, and
//! the call end with the second proxy's answer (before the fix, the
//! half-made INVITE was lost and the call ended with no reason at all,
//! recorded as "answered, no input").

mod common;

use std::time::Duration;

use callout::driver::{CallUpdate, DialRequest, Gateway};
use callout::sip::call::{CallEvent, EndReason};
use common::*;

fn request(uri: String, proxy: u16, failover: u16) -> DialRequest {
    DialRequest {
        outbound_proxy: Some(([127, 0, 0, 1], proxy).into()),
        failover: vec![([127, 0, 0, 1], failover).into()],
        ..plain_dial(uri)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_survives_its_waiter_giving_up_after_every_poll() {
    let dir = scratch("redial-cancel");
    let (adir, bdir) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&adir).unwrap();
    std::fs::create_dir_all(&bdir).unwrap();
    let mut a = Sipp::uas("unavailable.xml", &adir, &[]);
    let mut b = Sipp::uas("busy.xml", &bdir, &[]);
    let gw = Gateway::start("127.0.0.1:0".parse().unwrap(), "41000-41099")
        .await
        .unwrap();
    let mut call = gw
        .dial(request(a.uri(), a.port, b.port))
        .await
        .expect("dial");
    let mut updates = Vec::new();
    let mut polls = 0u32;
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < until,
            "no end after {polls} polls: {updates:?}"
        );
        polls += 1;
        // One poll, then the future is dropped: as a `select!` does when
        // another of its branches is ready.
        match tokio::time::timeout(Duration::ZERO, call.next()).await {
            Err(_) => tokio::time::sleep(Duration::from_micros(200)).await,
            Ok(None) => break,
            Ok(Some(u)) => updates.push(u),
        }
    }
    let failed_over = updates
        .iter()
        .filter(|u| matches!(u, CallUpdate::FailedOver { .. }))
        .count();
    assert_eq!(failed_over, 1, "{updates:?}");
    let ended: Vec<_> = updates
        .iter()
        .filter_map(|u| match u {
            CallUpdate::Sip(CallEvent::Ended(r)) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert!(
        matches!(ended[..], [EndReason::Busy { code: 486 }]),
        "the call ends with the second proxy's 486: {updates:?}"
    );
    assert!(
        a.wait(Duration::from_secs(10)).success(),
        "{}",
        a.messages()
    );
    assert!(
        b.wait(Duration::from_secs(10)).success(),
        "{}",
        b.messages()
    );
}
