//! A real OpenSSH server on a loopback high port, with a throwaway host
//! key, a throwaway client key and a known_hosts file, plus a stand-in
//! service manager whose state is a real process on the "host".

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub user: String,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    /// `fakesvc ACTION NAME` (status / restart): see `write_fakesvc`.
    pub fakesvc: PathBuf,
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "callout-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sshd {
    pub fn start(dir: &Path) -> Sshd {
        super::require("ssh");
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "sshd is not installed: run .ci/install or `apt-get install openssh-server`"
        );
        std::fs::create_dir_all(dir).unwrap();
        // sshd refuses to start without its privilege separation folder.
        let _ = std::fs::create_dir_all("/run/sshd");
        let host_key = dir.join("host_key");
        let key = dir.join("client_key");
        keygen(&host_key);
        keygen(&key);
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_tcp_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {dir}/authorized_keys\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile none\nLogLevel VERBOSE\n",
            hk = host_key.display(),
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        let pubkey = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!(
                "[127.0.0.1]:{port} {}\n",
                pubkey
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "sshd did not start: {}",
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let fakesvc = dir.join("fakesvc");
        write_fakesvc(&fakesvc);
        Sshd {
            child,
            port,
            dir: dir.to_path_buf(),
            user,
            key,
            known_hosts,
            fakesvc,
        }
    }

    /// Is the fake service `name` running right now (a live process)?
    pub fn running(&self, name: &str) -> bool {
        std::fs::read_to_string(self.dir.join("state").join(format!("{name}.pid")))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
    }

    /// Every fakesvc invocation so far ("ACTION NAME" lines).
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("state").join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// An `[inventory]` section naming this server as host `web01`.
    pub fn inventory(&self, services: &[&str]) -> String {
        format!(
            "[inventory]\nservices = {services:?}\n\n[inventory.ssh]\nuser = \"{user}\"\nkey_file = \"{key}\"\n\
             known_hosts = \"{kh}\"\nconnect_timeout = \"3s\"\n\n[inventory.hosts.web01]\naddress = \"127.0.0.1\"\n\
             port = {port}\nos = \"debian-12\"\n",
            user = self.user,
            key = self.key.display(),
            kh = self.known_hosts.display(),
            port = self.port
        )
    }

    /// A flow file that restarts a fakesvc service over SSH.
    pub fn flow(&self, execute_timeout: &str) -> String {
        let svc = self.fakesvc.display();
        format!(
            r#"description = "Restart a fake service over SSH"

[params]
host = {{ kind = "host" }}
service = {{ kind = "service" }}

[[check]]
name = "running"
timeout = "10s"
ssh = {{ argv = ["{svc}", "status", "{{service}}"] }}

[[execute]]
name = "restart"
timeout = "{execute_timeout}"
ssh = {{ argv = ["{svc}", "restart", "{{service}}"] }}

[[verify]]
name = "running-again"
timeout = "10s"
retries = 2
interval = "300ms"
ssh = {{ argv = ["{svc}", "status", "{{service}}"] }}
"#
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Stop the fake services' processes.
        if let Ok(rd) = std::fs::read_dir(self.dir.join("state")) {
            for e in rd.flatten() {
                if let Some(pid) = std::fs::read_to_string(e.path())
                    .ok()
                    .filter(|_| e.path().extension().is_some_and(|x| x == "pid"))
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

/// A stand-in service manager. `status NAME` exits 0 when NAME's process
/// lives, 3 when not; `restart NAME` starts a fresh process. Service
/// `broken` never stays up, `slow` hangs in restart, `sluggish` takes 4 s
/// to restart.
fn write_fakesvc(path: &Path) {
    let script = r#"#!/bin/sh
set -u
state="$(dirname "$0")/state"
mkdir -p "$state"
echo "$1 $2" >> "$state/calls.log"
pidf="$state/$2.pid"
case "$1" in
status)
    [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null && { echo "$2 is running"; exit 0; }
    echo "$2 is stopped"; exit 3 ;;
restart)
    [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null
    rm -f "$pidf"
    case "$2" in
    broken) echo "started $2"; exit 0 ;;
    slow) sleep 30 ;;
    sluggish) sleep 4 ;;
    esac
    setsid sleep 3600 </dev/null >/dev/null 2>&1 &
    echo $! > "$pidf"
    echo "restarted $2"; exit 0 ;;
*) echo "usage: fakesvc status|restart NAME" >&2; exit 2 ;;
esac
"#;
    std::fs::write(path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
