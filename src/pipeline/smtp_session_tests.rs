use super::*;

fn cfg() -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        max_size: 1000,
        max_recipients: 3,
        max_errors: 5,
        tls_available: false,
        command_timeout: Duration::from_secs(300),
        data_timeout: Duration::from_secs(180),
    }
}

fn resolve(addr: &str) -> Option<String> {
    match addr {
        "alerts@acme.example" => Some("acme".into()),
        "noc@globex.example" => Some("globex".into()),
        _ => None,
    }
}

/// Feed `input`, answer every delivery with `deliver`, and return the
/// replies (one string each), the deliveries and whether it closed.
fn run(
    s: &mut Session,
    input: &[u8],
    deliver: &mut dyn FnMut(&Envelope) -> Result<(), String>,
) -> (Vec<String>, Vec<Envelope>, bool) {
    s.handle_bytes(input);
    let (mut replies, mut mails, mut closed) = (Vec::new(), Vec::new(), false);
    while let Some(o) = s.poll_output(&resolve) {
        match o {
            Output::Reply(b) => replies.push(String::from_utf8(b).unwrap()),
            Output::Deliver(e) => {
                let r = deliver(&e);
                mails.push(e);
                s.delivered(r);
            }
            Output::StartTls => s.tls_started(),
            Output::Close => closed = true,
        }
    }
    (replies, mails, closed)
}

fn ok(_: &Envelope) -> Result<(), String> {
    Ok(())
}

fn codes(replies: &[String]) -> Vec<&str> {
    replies.iter().map(|r| &r[..3]).collect()
}

#[test]
fn a_pipelined_transaction_with_dot_unstuffing() {
    let mut s = Session::new(cfg());
    let (r, m, closed) = run(
        &mut s,
        b"EHLO client.test\r\nMAIL FROM:<nms@example.jp> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<Alerts@ACME.example>\r\nRCPT TO:<noc@globex.example>\r\nDATA\r\nSubject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n",
        &mut ok,
    );
    assert_eq!(
        codes(&r),
        ["220", "250", "250", "250", "250", "354", "250", "221"]
    );
    assert!(
        r[1].contains("250-SIZE 1000\r\n") && r[1].contains("250 ENHANCEDSTATUSCODES"),
        "{}",
        r[1]
    );
    assert!(!r[1].contains("STARTTLS"));
    assert!(closed);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].from, "nms@example.jp");
    assert_eq!(
        m[0].rcpts,
        [
            ("alerts@acme.example".to_string(), "acme".to_string()),
            ("noc@globex.example".to_string(), "globex".to_string())
        ]
    );
    assert_eq!(m[0].data, b"Subject: x\r\n\r\n.leading dot\r\n");
}

#[test]
fn the_250_waits_for_the_delivery_and_a_failure_is_451() {
    let mut s = Session::new(cfg());
    let (r, _, _) = run(
        &mut s,
        b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<alerts@acme.example>\r\nDATA\r\nhi\r\n.\r\nNOOP\r\n",
        &mut |_| Err("disk full".into()),
    );
    assert_eq!(codes(&r), ["220", "250", "250", "250", "354", "451", "250"]);
    assert!(r[5].starts_with("451 4.3.0"), "{}", r[5]);
    assert!(!r[5].contains("disk full"), "internal errors stay inside");
    // Nothing is answered while the delivery is out.
    let mut s = Session::new(cfg());
    s.handle_bytes(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alerts@acme.example>\r\nDATA\r\nhi\r\n.\r\nNOOP\r\n");
    let mut seen = Vec::new();
    let env = loop {
        match s.poll_output(&resolve).unwrap() {
            Output::Deliver(e) => break e,
            o => seen.push(o),
        }
    };
    assert_eq!(env.data, b"hi\r\n");
    assert_eq!(s.poll_output(&resolve), None, "the NOOP waits too");
    s.delivered(Ok(()));
    assert_eq!(
        s.poll_output(&resolve),
        Some(Output::Reply(b"250 2.0.0 OK: queued\r\n".to_vec()))
    );
    assert!(
        matches!(s.poll_output(&resolve), Some(Output::Reply(r)) if r.starts_with(b"250 2.0.0 OK"))
    );
}

#[test]
fn unknown_recipients_are_refused_at_rcpt() {
    let mut s = Session::new(cfg());
    let (r, m, _) = run(&mut s, b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<root@acme.example>\r\nRCPT TO:<victim@elsewhere.example>\r\nDATA\r\n", &mut ok);
    assert_eq!(codes(&r), ["220", "250", "250", "550", "550", "554"]);
    assert!(r[3].starts_with("550 5.1.1"));
    assert!(m.is_empty());
}

#[test]
fn size_is_refused_at_mail_and_after_data() {
    let mut s = Session::new(cfg());
    let (r, _, _) = run(&mut s, b"EHLO c\r\nMAIL FROM:<a@b> SIZE=1001\r\n", &mut ok);
    assert!(r[2].starts_with("552 5.3.4"), "{}", r[2]);
    let mut s = Session::new(cfg());
    let mut input =
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alerts@acme.example>\r\nDATA\r\n".to_vec();
    for _ in 0..100 {
        input.extend_from_slice(b"0123456789abcdefghijklmnopqrstuvwxyz\r\n");
    }
    input.extend_from_slice(b".\r\nRSET\r\n");
    let (r, m, _) = run(&mut s, &input, &mut ok);
    assert_eq!(codes(&r), ["220", "250", "250", "250", "354", "552", "250"]);
    assert!(m.is_empty());
    assert!(s.data.capacity() <= 1000 + MAX_LINE);
}

#[test]
fn long_lines_errors_and_limits() {
    let mut s = Session::new(cfg());
    let mut input = b"EHLO c\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'A', 5000));
    input.extend_from_slice(b"\r\nNOOP\r\n");
    let (r, _, _) = run(&mut s, &input, &mut ok);
    assert_eq!(codes(&r), ["220", "250", "500", "250"]);
    assert!(r[2].starts_with("500 5.5.2"));
    // Max recipients.
    let mut s = Session::new(cfg());
    let (r, _, _) = run(&mut s, b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alerts@acme.example>\r\nRCPT TO:<noc@globex.example>\r\nRSET\r\n", &mut ok);
    assert_eq!(codes(&r), ["220", "250", "250", "250", "250", "250"]);
    let mut c = cfg();
    c.max_recipients = 1;
    let mut s = Session::new(c);
    let (r, _, _) = run(&mut s, b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alerts@acme.example>\r\nRCPT TO:<noc@globex.example>\r\n", &mut ok);
    assert!(r[4].starts_with("452 4.5.3"), "{}", r[4]);
    // Sequence errors, then too many errors closes.
    let mut s = Session::new(cfg());
    let (r, _, closed) = run(
        &mut s,
        b"MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\nBOGUS\r\nEXPN x\r\nNOOP\r\n",
        &mut ok,
    );
    assert_eq!(codes(&r), ["220", "503", "503", "503", "500", "502", "421"]);
    assert!(closed);
    // VRFY, RSET, HELP.
    let mut s = Session::new(cfg());
    let (r, _, _) = run(&mut s, b"VRFY root\r\nRSET\r\nHELP\r\n", &mut ok);
    assert_eq!(codes(&r), ["220", "252", "250", "214"]);
}

#[test]
fn timeouts_and_starttls() {
    let mut s = Session::new(cfg());
    assert_eq!(s.timeout(), Duration::from_secs(300));
    run(
        &mut s,
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alerts@acme.example>\r\nDATA\r\n",
        &mut ok,
    );
    assert_eq!(s.timeout(), Duration::from_secs(180));
    s.handle_timeout();
    let (r, _, closed) = run(&mut s, b"", &mut ok);
    assert!(r[0].starts_with("421 4.4.2") && closed);
    let (r, _, _) = run(&mut s, b"NOOP\r\n", &mut ok);
    assert!(r.is_empty(), "closed sessions say nothing");

    let mut c = cfg();
    c.tls_available = true;
    let mut s = Session::new(c);
    let (r, _, _) = run(
        &mut s,
        b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<injected@x>\r\n",
        &mut ok,
    );
    assert!(r[1].contains("250 STARTTLS"));
    assert_eq!(
        codes(&r),
        ["220", "250", "220"],
        "the pipelined MAIL is dropped"
    );
    assert!(s.is_tls());
    let (r, _, _) = run(
        &mut s,
        b"MAIL FROM:<a@b>\r\nEHLO c\r\nSTARTTLS\r\n",
        &mut ok,
    );
    assert_eq!(codes(&r), ["503", "250", "502"]);
    assert!(!r[1].contains("STARTTLS"));
}

#[test]
fn any_bytes_in_small_pieces() {
    // The same session fed byte by byte gives the same replies.
    let input = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alerts@acme.example>\r\nDATA\r\n.x\r\n\xff\xfe\r\n.\r\nQUIT\r\n";
    let mut a = Session::new(cfg());
    let whole = run(&mut a, input, &mut ok);
    let mut b = Session::new(cfg());
    let mut pieces = (Vec::new(), Vec::new(), false);
    for byte in input {
        let (r, m, c) = run(&mut b, std::slice::from_ref(byte), &mut ok);
        pieces.0.extend(r);
        pieces.1.extend(m);
        pieces.2 |= c;
    }
    assert_eq!(whole, pieces);
    assert_eq!(whole.1[0].data, b"x\r\n\xff\xfe\r\n");
}
