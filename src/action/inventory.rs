//! A contract's inventory: the hosts and services its maintenance actions
//! may touch, and how to reach the hosts over SSH. Nothing outside it is
//! ever a target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::flow::Errors;
use super::validate::{is_address, is_safe_name, is_user};

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Inventory {
    pub hosts: BTreeMap<String, Host>,
    pub services: Vec<String>,
    pub ssh: SshDefaults,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub port: u16,
    /// `family-version` (e.g. `debian-12`), picks per-OS argv.
    pub os: Option<String>,
    pub user: Option<String>,
    pub key_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SshDefaults {
    pub user: Option<String>,
    pub key_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    #[serde(with = "crate::util::duration_ms")]
    pub connect_timeout: Duration,
}

impl Default for SshDefaults {
    fn default() -> Self {
        SshDefaults {
            user: None,
            key_file: None,
            known_hosts: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything the OpenSSH client needs for one host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SshTarget {
    pub user: String,
    pub address: String,
    pub port: u16,
    pub key_file: PathBuf,
    pub known_hosts: PathBuf,
    #[serde(with = "crate::util::duration_ms")]
    pub connect_timeout: Duration,
}

impl Inventory {
    /// How to reach `host` over SSH, or what is missing.
    pub fn ssh_target(&self, host: &str) -> Result<SshTarget, String> {
        let h = self
            .hosts
            .get(host)
            .ok_or_else(|| format!("host {host:?} is not in the inventory"))?;
        let missing = |what: &str| {
            format!("host {host:?} has no SSH {what} (set it on the host or under [inventory.ssh])")
        };
        Ok(SshTarget {
            user: h
                .user
                .clone()
                .or_else(|| self.ssh.user.clone())
                .ok_or_else(|| missing("user"))?,
            address: h.address.clone(),
            port: h.port,
            key_file: h
                .key_file
                .clone()
                .or_else(|| self.ssh.key_file.clone())
                .ok_or_else(|| missing("key_file"))?,
            known_hosts: h
                .known_hosts
                .clone()
                .or_else(|| self.ssh.known_hosts.clone())
                .ok_or_else(|| missing("known_hosts"))?,
            connect_timeout: self.ssh.connect_timeout,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawInventory {
    #[serde(default)]
    hosts: BTreeMap<String, Spanned<RawHost>>,
    #[serde(default)]
    services: Vec<Spanned<String>>,
    #[serde(default)]
    ssh: Option<Spanned<RawSsh>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    address: String,
    #[serde(default = "ssh_port")]
    port: u16,
    os: Option<String>,
    user: Option<String>,
    key_file: Option<String>,
    known_hosts: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    user: Option<String>,
    key_file: Option<String>,
    known_hosts: Option<String>,
    connect_timeout: Option<String>,
}

fn ssh_port() -> u16 {
    22
}

/// Validate the inventory; relative key and known_hosts paths are taken
/// from the dialplan file's folder.
pub fn parse(raw: &RawInventory, base: &Path, e: &mut Errors<'_>) -> Inventory {
    let path = |p: &Option<String>| {
        p.as_ref().map(|p| {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        })
    };
    let mut inv = Inventory::default();
    if let Some(s) = &raw.ssh {
        let r = s.get_ref();
        if let Some(u) = &r.user {
            if !is_user(u) {
                e.err(
                    s.span(),
                    format!("inventory.ssh: user {u:?} is not a valid login name"),
                );
            }
        }
        let connect_timeout = match r
            .connect_timeout
            .as_deref()
            .map(crate::util::parse_duration)
        {
            None => Duration::from_secs(5),
            Some(Ok(d)) if d >= Duration::from_secs(1) => d,
            Some(_) => {
                e.err(
                    s.span(),
                    "inventory.ssh: connect_timeout must be a duration of at least 1s",
                );
                Duration::from_secs(5)
            }
        };
        inv.ssh = SshDefaults {
            user: r.user.clone(),
            key_file: path(&r.key_file),
            known_hosts: path(&r.known_hosts),
            connect_timeout,
        };
    }
    for (name, h) in &raw.hosts {
        let r = h.get_ref();
        if !is_safe_name(name) {
            e.err(
                h.span(),
                format!("inventory host name {name:?} must be letters, digits, '-' or '_'"),
            );
        }
        if !is_address(&r.address) {
            e.err(
                h.span(),
                format!(
                    "inventory host {name:?}: address {:?} is not a host name or IP address",
                    r.address
                ),
            );
        }
        if let Some(u) = &r.user {
            if !is_user(u) {
                e.err(
                    h.span(),
                    format!("inventory host {name:?}: user {u:?} is not a valid login name"),
                );
            }
        }
        if let Some(os) = &r.os {
            if !is_safe_name(os) {
                e.err(
                    h.span(),
                    format!("inventory host {name:?}: os {os:?} must look like debian-12"),
                );
            }
        }
        inv.hosts.insert(
            name.clone(),
            Host {
                name: name.clone(),
                address: r.address.clone(),
                port: r.port,
                os: r.os.clone(),
                user: r.user.clone(),
                key_file: path(&r.key_file),
                known_hosts: path(&r.known_hosts),
            },
        );
    }
    for s in &raw.services {
        if let Err(why) = super::validate::check_value(s.get_ref()) {
            e.err(
                s.span(),
                format!("inventory service {:?} {why}", s.get_ref()),
            );
        }
        inv.services.push(s.get_ref().clone());
    }
    inv
}
