//! Sending the customer notices: the relay's settings
//! (`[pipeline.mail_out]` in callout.toml), what a step queues
//! ([`queue`]) and the task that sends what is due.
//!
//! A notice is queued in the engine step's own commit, so a crash between
//! the step and the mail loses nothing. The task sends one mail at a
//! time: a 2xx marks it sent; a connection failure, a timeout or a 4xx
//! keeps it queued with a doubling delay (up to `retry_max`) until
//! `give_up_after`; a 5xx gives it up at once with the relay's reason.
//! Either end is written with its timeline line in one transaction.

use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::driver::Pipeline;
use super::engine::Incident;
use super::notice_mail::{self, header_safe, Notice, NoticeEvent, Sender};
use crate::cluster::role::{run_while_held, Role, Term};
use crate::runner::now_ms;
use crate::store::{new_id, Fence, MailEnd, OutboxMail, QueuedMail, StoreError, TimelineRow};

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP, then STARTTLS (required); port 587 by default.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS); port 465 by default.
    Tls,
    /// No TLS at all (a relay on the same host); port 25 by default.
    None,
}

/// `[pipeline.mail_out]`: the relay customer notices go through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailOutConfig {
    pub host: String,
    pub port: Option<u16>,
    #[serde(default)]
    pub security: Security,
    /// The notices' `From`.
    pub from: String,
    /// The right-hand side of Message-IDs (default: `from`'s domain).
    pub domain: Option<String>,
    /// Environment variables holding the relay's user name and password
    /// (no authentication when absent).
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    /// A PEM file of CA certificates the relay's certificate is checked
    /// against, besides the usual roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// One SMTP conversation's limit.
    #[serde(default = "d_timeout")]
    pub timeout: String,
    /// The first retry's delay; it doubles up to `retry_max`.
    #[serde(default = "d_retry_min")]
    pub retry_min: String,
    #[serde(default = "d_retry_max")]
    pub retry_max: String,
    /// A mail not sent this long after it was queued is given up.
    #[serde(default = "d_give_up")]
    pub give_up_after: String,
}

fn d_timeout() -> String {
    "30s".into()
}
fn d_retry_min() -> String {
    "30s".into()
}
fn d_retry_max() -> String {
    "15m".into()
}
fn d_give_up() -> String {
    "48h".into()
}

#[derive(Debug, thiserror::Error)]
pub enum MailOutError {
    #[error("pipeline.mail_out.{0}: {1}")]
    Setting(&'static str, String),
    #[error("pipeline.mail_out.{setting}: the environment variable {var} is not set")]
    Env { setting: &'static str, var: String },
}

/// The checked settings.
struct Checked {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    sender: Sender,
    retry_min_ms: i64,
    retry_max_ms: i64,
    give_up_ms: i64,
}

fn ms(setting: &'static str, v: &str) -> Result<i64, MailOutError> {
    let d = crate::util::parse_duration(v)
        .map_err(|e| MailOutError::Setting(setting, e.to_string()))?;
    if d.is_zero() {
        return Err(MailOutError::Setting(setting, "must be more than 0".into()));
    }
    Ok(d.as_millis().min(i64::MAX as u128) as i64)
}

fn env(setting: &'static str, var: &Option<String>) -> Result<Option<String>, MailOutError> {
    match var {
        None => Ok(None),
        Some(v) => std::env::var(v).map(Some).map_err(|_| MailOutError::Env {
            setting,
            var: v.clone(),
        }),
    }
}

impl MailOutConfig {
    fn check(&self) -> Result<Checked, MailOutError> {
        let from: lettre::message::Mailbox = self
            .from
            .parse()
            .map_err(|e| MailOutError::Setting("from", format!("{:?}: {e}", self.from)))?;
        let domain = self
            .domain
            .clone()
            .unwrap_or_else(|| from.email.domain().to_string());
        if domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(MailOutError::Setting(
                "domain",
                format!("{domain:?} is not a domain name"),
            ));
        }
        if self.host.trim().is_empty() {
            return Err(MailOutError::Setting("host", "is empty".into()));
        }
        let tls = || -> Result<TlsParameters, MailOutError> {
            let mut b = TlsParameters::builder(self.host.clone());
            if let Some(f) = &self.ca_file {
                let pem = std::fs::read(f).map_err(|e| {
                    MailOutError::Setting("ca_file", format!("{}: {e}", f.display()))
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    MailOutError::Setting("ca_file", format!("{}: {e}", f.display()))
                })?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls()
                .map_err(|e| MailOutError::Setting("security", e.to_string()))
        };
        let (tls, port) = match self.security {
            Security::None => (Tls::None, 25),
            Security::Starttls => (Tls::Required(tls()?), 587),
            Security::Tls => (Tls::Wrapper(tls()?), 465),
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.trim())
            .port(self.port.unwrap_or(port))
            .tls(tls)
            .hello_name(ClientId::Domain(domain.clone()))
            .timeout(Some(Duration::from_millis(
                ms("timeout", &self.timeout)? as u64
            )));
        let user = env("username_env", &self.username_env)?;
        let pass = env("password_env", &self.password_env)?;
        match (user, pass) {
            (Some(u), Some(p)) => b = b.credentials(Credentials::new(u, p)),
            (None, None) => {}
            _ => {
                return Err(MailOutError::Setting(
                    "username_env",
                    "username_env and password_env go together".into(),
                ))
            }
        }
        Ok(Checked {
            transport: b.build(),
            sender: Sender { from, domain },
            retry_min_ms: ms("retry_min", &self.retry_min)?,
            retry_max_ms: ms("retry_max", &self.retry_max)?,
            give_up_ms: ms("give_up_after", &self.give_up_after)?,
        })
    }
}

/// The outbox row for a notice the engine asked for: what the incident
/// says now, rendered when it is sent.
pub fn queue(p: &Pipeline, inc: &Incident, event: NoticeEvent, detail: String) -> OutboxMail {
    let declared = p
        .plan(&inc.contract)
        .map(|plan| plan.variables.clone())
        .unwrap_or_default();
    let variables = inc
        .labels
        .iter()
        .filter(|(k, _)| declared.contains(k))
        .map(|(k, v)| (k.clone(), v.chars().take(256).collect()))
        .collect();
    OutboxMail {
        id: new_id("mo"),
        contract: inc.contract.clone(),
        notice: Notice {
            event,
            incident: inc.id.clone(),
            host: inc.host.clone(),
            severity: inc.severity.as_str().to_string(),
            summary: inc.summary.chars().take(1_000).collect(),
            variables,
            detail,
        },
    }
}

/// The delay before attempt `attempts + 1` (after `attempts` failures).
pub fn backoff_ms(attempts: i64, min_ms: i64, max_ms: i64) -> i64 {
    let shift = (attempts.max(1) - 1).min(30) as u32;
    min_ms.saturating_mul(1i64 << shift).min(max_ms)
}

/// Check the settings and start the sending task.
/// With `role` (several nodes on one PostgreSQL) it runs only while this
/// node holds the `mail_outbox` lease: the lease is confirmed on the
/// database before each mail, and each mail's record is refused once
/// another node claimed it.
pub fn start(
    p: Arc<Pipeline>,
    cfg: &MailOutConfig,
    shutdown: CancellationToken,
    role: Option<Arc<Role>>,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, MailOutError> {
    let c = Arc::new(cfg.check()?);
    let r = role.clone();
    Ok(run_while_held(role, shutdown, move |term, stop| {
        run(p.clone(), c.clone(), stop, r.clone().zip(term))
    }))
}

/// Stop sending: another node holds the outbox now.
#[derive(Debug)]
struct Fenced;

async fn run(
    p: Arc<Pipeline>,
    c: Arc<Checked>,
    shutdown: CancellationToken,
    held: Option<(Arc<Role>, Term)>,
) {
    let fence = held.as_ref().map(|(_, t)| &t.fence);
    loop {
        let now = now_ms();
        let mut full = false;
        match p.store.due_mails(now, 20).await {
            Ok(rows) => {
                full = rows.len() == 20;
                for r in rows {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    // A mail cannot be fenced once it is out: make sure
                    // the lease is still ours just before.
                    if let Some((role, term)) = &held {
                        if !role.confirm(term).await {
                            return;
                        }
                    }
                    if send_one(&p, &c, r, fence).await.is_err() {
                        if let Some((role, term)) = &held {
                            role.fenced(term);
                        }
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "mail outbox: reading the queue failed"),
        }
        if full {
            continue;
        }
        let next = p.store.next_mail_due().await.ok().flatten();
        let wait = next.map_or(5_000, |n| (n - now_ms()).clamp(5, 5_000)) as u64;
        tokio::select! {
            _ = p.mail_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

fn line(p: &Pipeline, text: String) -> TimelineRow {
    TimelineRow {
        id: new_id("tl"),
        seq: p.next_seq(),
        at_ms: now_ms(),
        kind: "mail".into(),
        text,
        alert: None,
        data: None,
    }
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    p: &Pipeline,
    r: &QueuedMail,
    end: MailEnd,
    attempts: i64,
    message_id: Option<&str>,
    error: Option<&str>,
    text: String,
    fence: Option<&Fence>,
) -> Result<(), Fenced> {
    let incident = &r.notice.incident;
    match end {
        MailEnd::Sent => tracing::info!(incident = %incident, "{text}"),
        MailEnd::GivenUp => tracing::warn!(incident = %incident, "{text}"),
    }
    let l = line(p, text);
    let mut wait = Duration::from_millis(100);
    // The mail is out (or given up): its record must land, or a restart
    // would send it twice.
    for _ in 0..8 {
        match p
            .store
            .mail_finish(&r.id, incident, end, attempts, message_id, error, &l, fence)
            .await
        {
            Ok(()) => return Ok(()),
            Err(StoreError::Fenced(_)) => return Err(Fenced),
            Err(e) => {
                tracing::error!(error = %e, "mail outbox: recording a mail failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    Ok(())
}

async fn send_one(
    p: &Pipeline,
    c: &Checked,
    r: QueuedMail,
    fence: Option<&Fence>,
) -> Result<(), Fenced> {
    let n = &r.notice;
    let what = format!("{} notice", n.event.as_str());
    let attempts = r.attempts + 1;
    let Some(plan) = p.plan(&r.contract) else {
        let why = format!("contract {} has no dialplan now", r.contract);
        let text = format!("{what} given up: {why}");
        return finish(
            p,
            &r,
            MailEnd::GivenUp,
            attempts,
            None,
            Some(&why),
            text,
            fence,
        )
        .await;
    };
    let config = plan
        .pipeline
        .as_ref()
        .map(|pc| pc.notices.clone())
        .unwrap_or_default();
    let to: Vec<String> = config
        .recipients(n.event)
        .iter()
        .map(|m| m.email.to_string())
        .collect();
    let (ticket, earlier) = match (
        p.store.get_incident(&n.incident).await,
        p.store.sent_message_ids(&n.incident).await,
    ) {
        (Ok(i), Ok(e)) => (i.and_then(|i| i.ticket), e),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "mail outbox: reading the incident failed; later");
            let retry = p
                .store
                .mail_retry(&r.id, r.attempts, now_ms() + c.retry_min_ms, "store", fence)
                .await;
            return match retry {
                Err(StoreError::Fenced(_)) => Err(Fenced),
                _ => Ok(()),
            };
        }
    };
    let ticket = ticket.unwrap_or_else(|| n.incident.clone());
    let ctx = notice_mail::Context {
        language: plan.language,
        contract: &r.contract,
        contract_name: &plan.name,
        ticket: &ticket,
        config: &config,
        sender: &c.sender,
        outbox_id: &r.id,
        earlier: &earlier,
    };
    let msg = match notice_mail::build(n, &ctx) {
        Ok(m) => m,
        Err(e) => {
            let why = e.to_string();
            let text = format!("{what} given up: {why}");
            return finish(
                p,
                &r,
                MailEnd::GivenUp,
                attempts,
                None,
                Some(&why),
                text,
                fence,
            )
            .await;
        }
    };
    let message_id = notice_mail::message_id(&r.id, &n.incident, &c.sender.domain);
    match c.transport.send(msg).await {
        Ok(_) => {
            let text = format!(
                "{what} mailed to {} (ticket {ticket}, Message-ID {message_id})",
                to.join(", ")
            );
            finish(
                p,
                &r,
                MailEnd::Sent,
                attempts,
                Some(&message_id),
                None,
                text,
                fence,
            )
            .await
        }
        Err(e) if e.is_permanent() => {
            let why = header_safe(&e.to_string(), 300);
            let text = format!(
                "{what} to {} given up: the relay refused it ({why})",
                to.join(", ")
            );
            finish(
                p,
                &r,
                MailEnd::GivenUp,
                attempts,
                None,
                Some(&why),
                text,
                fence,
            )
            .await
        }
        Err(e) => {
            let why = header_safe(&e.to_string(), 300);
            let now = now_ms();
            if now - r.created_ms >= c.give_up_ms {
                let text = format!(
                    "{what} to {} given up after {attempts} attempts: {why}",
                    to.join(", ")
                );
                return finish(
                    p,
                    &r,
                    MailEnd::GivenUp,
                    attempts,
                    None,
                    Some(&why),
                    text,
                    fence,
                )
                .await;
            }
            let delay = backoff_ms(attempts, c.retry_min_ms, c.retry_max_ms);
            tracing::warn!(incident = %n.incident, attempts, retry_in_ms = delay, error = %why, "mail outbox: the relay did not take the {what}; retrying");
            match p
                .store
                .mail_retry(&r.id, attempts, now + delay, &why, fence)
                .await
            {
                Err(StoreError::Fenced(_)) => return Err(Fenced),
                Err(e) => tracing::warn!(error = %e, "mail outbox: recording a retry failed"),
                Ok(()) => {}
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let v: Vec<i64> = (1..=6).map(|a| backoff_ms(a, 1_000, 10_000)).collect();
        assert_eq!(v, vec![1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        assert_eq!(backoff_ms(500, 1_000, 10_000), 10_000);
    }

    #[test]
    fn settings_errors_name_the_setting() {
        let mut c: MailOutConfig = toml::from_str(
            "host = \"127.0.0.1\"\nsecurity = \"none\"\nfrom = \"callout@example.net\"\n",
        )
        .unwrap();
        assert!(c.check().is_ok());
        c.retry_min = "soon".into();
        assert!(c.check().err().unwrap().to_string().contains("retry_min"));
        c.retry_min = "1s".into();
        c.username_env = Some("CALLOUT_TEST_SURELY_UNSET_VAR".into());
        c.password_env = Some("CALLOUT_TEST_SURELY_UNSET_VAR".into());
        let e = c.check().err().unwrap().to_string();
        assert!(e.contains("CALLOUT_TEST_SURELY_UNSET_VAR"), "{e}");
        c.username_env = None;
        c.password_env = None;
        c.from = "not an address".into();
        assert!(c.check().err().unwrap().to_string().contains("from"));
    }
}
