//! One SMTP server connection as a sans-IO state machine (RFC 5321 with
//! SIZE, PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES and optionally
//! STARTTLS): no socket, no clock, no tokio. Written here rather than
//! taken from a crate because it is small and the listener needs exactly
//! these hooks: the 250 after DATA waits for the sink's durable
//! delivery, recipients are checked against the contracts at RCPT, and
//! every buffer is bounded.
//!
//! Order of calls for the driver (`smtp.rs`):
//! 1. [`Session::new`] queues the greeting;
//! 2. drain [`Session::poll_output`] until `None`: write each
//!    [`Output::Reply`], carry out [`Output::Deliver`] and answer with
//!    [`Session::delivered`], upgrade on [`Output::StartTls`], close on
//!    [`Output::Close`];
//! 3. read with a deadline of [`Session::timeout`]; feed the bytes to
//!    [`Session::handle_bytes`] (or call [`Session::handle_timeout`],
//!    or stop on end of stream); go to 2.

use std::collections::VecDeque;
use std::time::Duration;

/// Longest command line, CRLF included (RFC 5321 4.5.3.1.4 says 512;
/// some clients send longer parameter lists, 1000 is the text limit).
pub const MAX_LINE: usize = 1000;

/// The limits of one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name in the greeting and EHLO answer.
    pub hostname: String,
    /// Largest message, in bytes after dot-unstuffing (advertised as
    /// `SIZE`).
    pub max_size: usize,
    pub max_recipients: usize,
    /// Failed commands before the connection is closed with 421.
    pub max_errors: usize,
    /// Offer STARTTLS (the driver has a certificate).
    pub tls_available: bool,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
}

/// A message to deliver: the envelope and the bytes between DATA and the
/// final dot, dot-unstuffed, line ends as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path (empty for a bounce, `<>`).
    pub from: String,
    /// Recipient addresses (lower case) with the contract each belongs to.
    pub rcpts: Vec<(String, String)>,
    pub data: Vec<u8>,
}

/// What the session asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes to send (one complete reply, CRLF-terminated).
    Reply(Vec<u8>),
    /// Deliver this durably, then call [`Session::delivered`]; no more
    /// output until then.
    Deliver(Envelope),
    /// Start TLS on the connection now (the 220 went out just before);
    /// then keep driving the same session.
    StartTls,
    /// Close the connection (after writing the replies before it).
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading commands.
    Command,
    /// Between DATA's 354 and the final dot.
    Data,
    /// Waiting for [`Session::delivered`].
    Delivering,
    Closed,
}

/// One connection's SMTP server state. See the module docs for the order
/// of calls.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    phase: Phase,
    input: Vec<u8>,
    /// A command line over [`MAX_LINE`] is being skipped to its end.
    skipping_line: bool,
    out: VecDeque<Output>,
    helo: Option<String>,
    tls: bool,
    from: Option<String>,
    rcpts: Vec<(String, String)>,
    data: Vec<u8>,
    /// In DATA: the next byte starts a line.
    at_line_start: bool,
    oversize: bool,
    errors: usize,
}

/// Looks up the contract a recipient address belongs to (the sink's
/// `contract_for`).
pub type Resolve<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Session {
    pub fn new(cfg: SessionConfig) -> Session {
        let mut s = Session {
            phase: Phase::Command,
            input: Vec::new(),
            skipping_line: false,
            out: VecDeque::new(),
            helo: None,
            tls: false,
            from: None,
            rcpts: Vec::new(),
            data: Vec::new(),
            at_line_start: true,
            oversize: false,
            errors: 0,
            cfg,
        };
        let greeting = format!("220 {} ESMTP callout", s.cfg.hostname);
        s.reply(&greeting);
        s
    }

    /// How long to wait for the client's next bytes.
    pub fn timeout(&self) -> Duration {
        match self.phase {
            Phase::Data => self.cfg.data_timeout,
            _ => self.cfg.command_timeout,
        }
    }

    /// Whether TLS has been started on this session.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Bytes from the client. Buffered; [`Session::poll_output`] works
    /// through them.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        if self.phase != Phase::Closed {
            self.input.extend_from_slice(bytes);
        }
    }

    /// The client was silent for [`Session::timeout`].
    pub fn handle_timeout(&mut self) {
        if self.phase != Phase::Closed {
            self.reply("421 4.4.2 Timeout, closing connection");
            self.close();
        }
    }

    /// TLS is up (after [`Output::StartTls`]): the session starts over
    /// as RFC 3207 says, without a greeting. Bytes the client sent before
    /// the handshake are discarded (a command injection).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.helo = None;
        self.reset();
        self.input.clear();
    }

    /// The outcome of the last [`Output::Deliver`]: `Ok` sends the 250,
    /// `Err` a 451 (the client keeps the message and retries).
    pub fn delivered(&mut self, result: Result<(), String>) {
        if self.phase != Phase::Delivering {
            return;
        }
        self.phase = Phase::Command;
        self.reset();
        match result {
            Ok(()) => self.reply("250 2.0.0 OK: queued"),
            Err(_) => {
                self.reply("451 4.3.0 Temporary failure storing the message, try again later")
            }
        }
    }

    /// The next thing to do, working through buffered input as needed.
    /// `resolve` maps a recipient to its contract.
    pub fn poll_output(&mut self, resolve: Resolve<'_>) -> Option<Output> {
        loop {
            if let Some(o) = self.out.pop_front() {
                return Some(o);
            }
            match self.phase {
                Phase::Closed | Phase::Delivering => return None,
                Phase::Data => {
                    if !self.step_data() {
                        return None;
                    }
                }
                Phase::Command => {
                    if !self.step_command(resolve) {
                        return None;
                    }
                }
            }
        }
    }

    fn reply(&mut self, text: &str) {
        let mut b = text.as_bytes().to_vec();
        b.extend_from_slice(b"\r\n");
        self.out.push_back(Output::Reply(b));
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.input.clear();
        self.out.push_back(Output::Close);
    }

    fn reset(&mut self) {
        self.from = None;
        self.rcpts.clear();
        self.data = Vec::new();
        self.oversize = false;
        self.at_line_start = true;
    }

    /// A client error: counted, and the connection closed past the
    /// limit.
    fn error(&mut self, text: &str) {
        self.reply(text);
        self.errors += 1;
        if self.errors >= self.cfg.max_errors {
            self.reply("421 4.7.0 Too many errors, closing connection");
            self.close();
        }
    }

    /// One command line, if a whole one is buffered. `false`: need more
    /// input.
    fn step_command(&mut self, resolve: Resolve<'_>) -> bool {
        let Some(nl) = self.input.iter().position(|&b| b == b'\n') else {
            if self.input.len() > MAX_LINE {
                self.input.clear();
                self.skipping_line = true;
            }
            return false;
        };
        let line: Vec<u8> = self.input.drain(..=nl).collect();
        if std::mem::take(&mut self.skipping_line) || line.len() > MAX_LINE {
            self.error("500 5.5.2 Line too long");
            return true;
        }
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = String::from_utf8_lossy(line);
        self.command(line.trim_end(), resolve);
        true
    }

    fn command(&mut self, line: &str, resolve: Resolve<'_>) {
        let (verb, arg) = match line.find(' ') {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => (line, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if arg.is_empty() => self.error("501 5.5.4 Syntax: EHLO hostname"),
            "EHLO" => {
                self.helo = Some(arg.to_string());
                self.reset();
                let mut lines = vec![
                    format!("{} Hello {}", self.cfg.hostname, cut(arg, 64)),
                    format!("SIZE {}", self.cfg.max_size),
                    "PIPELINING".into(),
                    "8BITMIME".into(),
                    "ENHANCEDSTATUSCODES".into(),
                ];
                if self.cfg.tls_available && !self.tls {
                    lines.push("STARTTLS".into());
                }
                let n = lines.len();
                let text: Vec<String> = lines
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i + 1 == n { ' ' } else { '-' }))
                    .collect();
                self.reply(&text.join("\r\n"));
            }
            "HELO" => {
                self.helo = Some(arg.to_string());
                self.reset();
                let r = format!("250 {}", self.cfg.hostname);
                self.reply(&r);
            }
            "MAIL" => self.mail(arg),
            "RCPT" => self.rcpt(arg, resolve),
            "DATA" if !arg.is_empty() => self.error("501 5.5.4 Syntax: DATA"),
            "DATA" if self.from.is_none() => self.error("503 5.5.1 MAIL first"),
            "DATA" if self.rcpts.is_empty() => self.error("554 5.5.1 No valid recipients"),
            "DATA" => {
                self.phase = Phase::Data;
                self.at_line_start = true;
                self.reply("354 End data with <CR><LF>.<CR><LF>");
            }
            "RSET" => {
                self.reset();
                self.reply("250 2.0.0 OK");
            }
            "NOOP" => self.reply("250 2.0.0 OK"),
            "QUIT" => {
                self.reply("221 2.0.0 Bye");
                self.close();
            }
            "VRFY" => self.reply("252 2.5.0 Cannot VRFY user, but will accept message"),
            "EXPN" => self.error("502 5.5.1 EXPN not supported"),
            "HELP" => self.reply("214 2.0.0 See RFC 5321"),
            "STARTTLS" if !self.cfg.tls_available || self.tls => {
                self.error("502 5.5.1 STARTTLS not available")
            }
            "STARTTLS" if !arg.is_empty() => self.error("501 5.5.4 Syntax: STARTTLS"),
            "STARTTLS" => {
                self.reply("220 2.0.0 Ready to start TLS");
                // Pipelined bytes after STARTTLS are not to be trusted.
                self.input.clear();
                self.out.push_back(Output::StartTls);
            }
            _ => self.error("500 5.5.1 Command unrecognized"),
        }
    }

    fn mail(&mut self, arg: &str) {
        if self.helo.is_none() {
            return self.error("503 5.5.1 EHLO or HELO first");
        }
        if self.from.is_some() {
            return self.error("503 5.5.1 Nested MAIL command");
        }
        let Some((addr, params)) = path_arg(arg, "FROM:") else {
            return self.error("501 5.5.4 Syntax: MAIL FROM:<address>");
        };
        for p in params.split_whitespace() {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k.to_ascii_uppercase().as_str() {
                "SIZE" => match v.parse::<u64>() {
                    Ok(n) if n > self.cfg.max_size as u64 => {
                        return self.error("552 5.3.4 Message size exceeds fixed limit");
                    }
                    Ok(_) => {}
                    Err(_) => return self.error("501 5.5.4 Bad SIZE parameter"),
                },
                "BODY" | "SMTPUTF8" => {}
                _ => return self.error("555 5.5.4 Unsupported MAIL parameter"),
            }
        }
        self.from = Some(addr);
        self.reply("250 2.1.0 OK");
    }

    fn rcpt(&mut self, arg: &str, resolve: Resolve<'_>) {
        if self.from.is_none() {
            return self.error("503 5.5.1 MAIL first");
        }
        let Some((addr, _params)) = path_arg(arg, "TO:") else {
            return self.error("501 5.5.4 Syntax: RCPT TO:<address>");
        };
        let addr = addr.to_ascii_lowercase();
        if self.rcpts.iter().any(|(a, _)| *a == addr) {
            return self.reply("250 2.1.5 OK");
        }
        if self.rcpts.len() >= self.cfg.max_recipients {
            return self.reply("452 4.5.3 Too many recipients");
        }
        let contract = if addr.is_empty() {
            None
        } else {
            resolve(&addr)
        };
        match contract {
            Some(c) => {
                self.rcpts.push((addr, c));
                self.reply("250 2.1.5 OK");
            }
            None => self.error("550 5.1.1 No such recipient here (relaying denied)"),
        }
    }

    /// One line of DATA, if a whole one is buffered (or a chunk of an
    /// overlong one). `false`: need more input.
    fn step_data(&mut self) -> bool {
        let nl = self.input.iter().position(|&b| b == b'\n');
        let take = match nl {
            Some(i) => i + 1,
            // A line longer than MAX_LINE goes in by pieces (no dot can
            // end it), so the buffer stays bounded.
            None if self.input.len() > MAX_LINE => self.input.len(),
            None => return false,
        };
        let chunk: Vec<u8> = self.input.drain(..take).collect();
        let complete = nl.is_some();
        let mut piece: &[u8] = &chunk;
        if self.at_line_start && complete && (piece == b".\r\n" || piece == b".\n") {
            self.phase = Phase::Delivering;
            if self.oversize {
                self.phase = Phase::Command;
                self.reset();
                self.error("552 5.3.4 Message size exceeds fixed limit");
                return true;
            }
            let env = Envelope {
                from: self.from.take().unwrap_or_default(),
                rcpts: std::mem::take(&mut self.rcpts),
                data: std::mem::take(&mut self.data),
            };
            self.out.push_back(Output::Deliver(env));
            return true;
        }
        if self.at_line_start && piece.first() == Some(&b'.') {
            piece = &piece[1..];
        }
        self.at_line_start = complete;
        if !self.oversize {
            if self.data.len() + piece.len() > self.cfg.max_size {
                self.oversize = true;
                self.data = Vec::new();
            } else {
                self.data.extend_from_slice(piece);
            }
        }
        true
    }
}

/// `FROM:<addr> params` → (addr, params). Accepts a space after the
/// colon and a bare address without brackets, as many clients send.
fn path_arg<'a>(arg: &'a str, prefix: &str) -> Option<(String, &'a str)> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg.get(prefix.len()..)?.trim_start();
    let (addr, params) = if let Some(r) = rest.strip_prefix('<') {
        let end = r.find('>')?;
        (&r[..end], &r[end + 1..])
    } else {
        match rest.find(' ') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        }
    };
    // A source route (`@a,@b:user@host`) is ignored, as RFC 5321 allows.
    let addr = addr.rsplit(':').next().unwrap_or(addr).trim();
    if addr.len() > 254 || addr.chars().any(|c| c.is_control() || c == ' ') {
        return None;
    }
    Some((addr.to_string(), params.trim()))
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

#[cfg(test)]
#[path = "smtp_session_tests.rs"]
mod tests;
