//! Host checks for `callout doctor`: the clock, the file descriptor limit,
//! the RTP port range, the SIP address peers are told to use.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use super::{Level, Verdict};

/// Is the clock synchronised? `timedatectl` when systemd answers, else the
/// kernel's own flag (adjtimex, which every NTP daemon keeps up to date).
pub fn clock() -> Verdict {
    let check = "clock";
    let fix = "escalation time windows and pauses depend on it: enable an NTP client (systemd-timesyncd or chrony)";
    if let Ok(out) = Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .output()
    {
        match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" if out.status.success() => {
                return Verdict::new(Level::Ok, check, "synchronised (timedatectl)")
            }
            "no" if out.status.success() => {
                return Verdict::new(
                    Level::Fail,
                    check,
                    format!("not synchronised (timedatectl): {fix}"),
                )
            }
            _ => {}
        }
    }
    // SAFETY: adjtimex with modes = 0 only reads the kernel's clock state
    // into the struct passed by reference.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Verdict::new(
            Level::Warn,
            check,
            format!(
                "cannot tell whether it is synchronised (no timedatectl, adjtimex failed): {fix}"
            ),
        );
    }
    if state == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0 {
        Verdict::new(
            Level::Warn,
            check,
            format!("the kernel does not mark it synchronised (no NTP client here, or a container that cannot tell): {fix}"),
        )
    } else {
        Verdict::new(
            Level::Ok,
            check,
            format!("synchronised (kernel; estimated error {} µs)", tx.esterror),
        )
    }
}

/// Descriptors: the service raises its soft limit to the hard one.
pub fn nofile() -> Verdict {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed by reference.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Verdict::new(Level::Warn, "open files", "cannot read the limit");
    }
    let hard = r.rlim_max;
    let detail = format!("the service can raise its limit to {hard}");
    let fix = "raise it (LimitNOFILE=65536 in the systemd unit, or `ulimit -Hn`)";
    if hard < 1024 {
        Verdict::new(
            Level::Fail,
            "open files",
            format!("{detail}: too few; {fix}"),
        )
    } else if hard < 8192 {
        Verdict::new(
            Level::Warn,
            "open files",
            format!("{detail}: enough for a few hundred calls and connections; {fix}"),
        )
    } else {
        Verdict::new(Level::Ok, "open files", detail)
    }
}

/// Bind a sample of the RTP range's even ports on the SIP address.
pub fn rtp_ports(ip: IpAddr, range: &str) -> Verdict {
    let check = "rtp ports";
    let Some((start, end)) = range
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
        .filter(|(a, b)| *a > 0 && a < b)
    else {
        return Verdict::new(
            Level::Fail,
            check,
            format!("rtp_ports = {range:?} is not a range like \"20000-29999\""),
        );
    };
    let start = start + start % 2;
    let slots = (end - start) / 2 + 1;
    let samples = slots.min(32);
    let mut busy = Vec::new();
    for i in 0..samples {
        let port = start + 2 * ((i as u32 * slots as u32 / samples as u32) as u16);
        if std::net::UdpSocket::bind(SocketAddr::new(ip, port)).is_err() {
            busy.push(port);
        }
    }
    let detail = format!(
        "{range} on {ip}: {} calls at most; {} of {samples} sampled ports free",
        slots,
        samples as usize - busy.len()
    );
    if busy.len() == samples as usize {
        Verdict::new(
            Level::Fail,
            check,
            format!("{detail}: none can be bound (another program holds them, or the address is not this host's); choose another rtp_ports"),
        )
    } else if !busy.is_empty() {
        Verdict::new(
            Level::Warn,
            check,
            format!("{detail}; taken: {busy:?} (another program uses part of the range)"),
        )
    } else {
        Verdict::new(Level::Ok, check, detail)
    }
}

/// The SIP address goes into Via, Contact and the SDP of every call: it
/// must be one the peers can reach.
pub fn sip_address(sip: &str, remote_peers: &[String]) -> Verdict {
    let check = "sip address";
    let Ok(addr) = sip.parse::<SocketAddr>() else {
        return Verdict::new(
            Level::Fail,
            check,
            format!("sip = {sip:?} is not an address:port"),
        );
    };
    let ip = addr.ip();
    if ip.is_unspecified() {
        return Verdict::new(
            Level::Fail,
            check,
            format!("sip = {sip:?} is unspecified: calls would advertise {ip} in Via, Contact and SDP, and no peer could answer or send audio; set sip to the address the trunk reaches (e.g. \"192.0.2.10:5060\")"),
        );
    }
    if ip.is_loopback() && !remote_peers.is_empty() {
        return Verdict::new(
            Level::Fail,
            check,
            format!(
                "sip = {sip:?} is loopback but calls go to {}: they cannot reach it; set sip to this host's address on that network",
                remote_peers.join(", ")
            ),
        );
    }
    let note = if ip.is_loopback() {
        " (loopback: local peers only)"
    } else {
        ""
    };
    Verdict::new(Level::Ok, check, format!("{addr}{note}"))
}
