//! `callout serve`: the service on one configuration file (or defaults).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::config::{Config, RedactedUrl, TokenConfig};
use crate::driver::Gateway;
use crate::ivr::registry::Registry;
use crate::service::Service;
use crate::store::Store;
use crate::tts::{Tts, TtsConfig};

/// How long the start waits for the store to take a journal left by the
/// last run.
const REPLAY_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Start everything; returns the service and the bound HTTP address.
pub async fn start(mut config: Config) -> anyhow::Result<(Arc<Service>, tokio::net::TcpListener)> {
    if config.tokens.is_empty() {
        // No tokens configured: a random one for this run, never a fixed
        // default that would open the API to anyone who read the docs.
        let token: String = (0..32)
            .map(|_| format!("{:x}", rand::thread_rng().gen_range(0..16)))
            .collect();
        crate::logging::notice(&format!(
            "no API tokens configured; this run's admin token is {token}"
        ));
        config.tokens.push(TokenConfig {
            name: "startup".into(),
            sha256: Sha256::digest(token.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            scopes: vec!["admin".into()],
            contracts: Vec::new(),
        });
    }
    // Shipped files are found wherever the service starts (crate::paths).
    crate::paths::resolve_config(&mut config)?;
    let store = Store::connect(&config.database_url)
        .await
        .map_err(crate::schema::explain)
        .with_context(|| format!("opening the database {}", RedactedUrl(&config.database_url)))?;
    let registry = Registry::load(&config.dialplans, &config.prompts).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        anyhow::anyhow!(
            "{} problem(s) in {}",
            errors.len(),
            config.dialplans.display()
        )
    })?;
    for plan in registry.snapshot().values() {
        for trunk in std::iter::once(&plan.trunk).chain(&plan.failover_trunks) {
            if trunk != "default" && !config.trunks.contains_key(trunk) {
                anyhow::bail!(
                    "{}: trunk {:?} is not configured (add [trunks.{}] to the configuration)",
                    plan.source.display(),
                    trunk,
                    trunk
                );
            }
        }
    }
    let advertise = config.advertise()?;
    let mut gateway = Gateway::start(
        config.sip.parse().context("sip address")?,
        &config.rtp_ports,
    )
    .await?;
    gateway.set_advertise(advertise);
    if gateway.sip_addr().ip().is_unspecified() && advertise.sip.is_none() {
        tracing::warn!(sip = %config.sip, "bound to the unspecified address without sip_advertise: each call advertises the OS route's source address toward its peer; behind NAT set sip_advertise");
    }
    gateway.sip().set_flood_policy(config.sip_flood.policy());
    for ip in &config.sip_flood.trusted {
        gateway.sip().trust(*ip);
    }
    // Trunks are never banned, whatever they send (the registrar is
    // trusted when its registration starts).
    crate::driver::resolve::configure(&config.dns_servers);
    for proxy in config.trunks.values().flat_map(|t| t.all_proxies()) {
        match crate::driver::resolve::resolve(proxy).await {
            Ok(r) => r.addrs.iter().for_each(|a| gateway.sip().trust(a.ip())),
            Err(e) => {
                tracing::warn!(%proxy, error = %e, "cannot resolve a trunk proxy to trust it")
            }
        }
    }
    let tts = Tts::new(&TtsConfig {
        cache_dir: config.tts_cache.clone(),
        voices: config.voices.clone(),
        jtalk_voice: crate::paths::service_voice(&config, &registry)?,
        ..TtsConfig::default()
    })?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding the API on {}", config.listen))?;
    // The pipeline in this process calls this process's API with a token
    // of its own, and checks the webhooks it gets back with a secret.
    let run_pipeline = match config.pipeline.run.as_str() {
        "on" => true,
        "off" => false,
        _ => registry.snapshot().values().any(|p| p.pipeline.is_some()),
    };
    let mut pipeline_token = None;
    if run_pipeline {
        if config.pipeline.gateway_url.is_none() {
            let token: String = (0..48)
                .map(|_| format!("{:x}", rand::thread_rng().gen_range(0..16)))
                .collect();
            config.tokens.push(TokenConfig {
                name: "pipeline".into(),
                sha256: Sha256::digest(token.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                // `actions`: first-level actions run through the same API.
                scopes: vec!["notify".into(), "actions".into()],
                contracts: Vec::new(),
            });
            pipeline_token = Some(token);
        } else {
            let var = config.pipeline.gateway_token_env.clone().context(
                "[pipeline] gateway_url needs gateway_token_env (the variable holding the gateway's notify token)",
            )?;
            pipeline_token = Some(std::env::var(&var).with_context(|| {
                format!("[pipeline] gateway_token_env: the variable {var} is not set")
            })?);
        }
        if config.webhooks.secrets.is_empty() {
            use base64::Engine as _;
            let key: [u8; 32] = rand::thread_rng().gen();
            config.webhooks.secrets.push(format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(key)
            ));
        }
    }
    let journal = config.journal_dir();
    let writer = crate::service::writer::Writer::open(&journal)
        .with_context(|| format!("opening the store journal in {}", journal.display()))?;
    let svc = Service::new(config, store, registry, gateway, tts, writer);
    crate::service::writer::Writer::spawn(&svc);
    // Writes a crashed run could not store come before anything resumes:
    // resuming from an older state would ring people again.
    if !svc.writer.replayed(REPLAY_WITHIN).await {
        anyhow::bail!(
            "the store did not take the writes journaled in {} within {REPLAY_WITHIN:?}",
            journal.display()
        );
    }
    start_keepalives(&svc).await?;
    for (name, t) in &svc.config.trunks {
        let Some(registrar) = &t.registrar else {
            continue;
        };
        let aor = t.aor.clone().with_context(|| {
            format!("trunk {name:?}: a registrar needs aor = \"sip:user@domain\"")
        })?;
        let trunk = svc.trunk(name).await?;
        // RFC 3263 as for proxies (NAPTR/SRV for a bare name, A/AAAA for
        // host:port), followed as the answers' TTLs say (below).
        let found = crate::driver::resolve::resolve_for(registrar, trunk.transport.transport)
            .await
            .with_context(|| format!("trunk {name:?}: cannot resolve registrar {registrar}"))?;
        let destination = *found
            .addrs
            .first()
            .with_context(|| format!("trunk {name:?}: registrar {registrar} has no address"))?;
        let (local, pinned, _) = svc.gateway.addresses_toward(destination, trunk.advertise);
        let transport = trunk.transport.transport.unwrap_or_default();
        let tls = (transport == crate::sip::transport::Transport::Tls)
            .then(|| trunk.transport.tls.clone())
            .flatten()
            .map(|mut s| {
                if s.server_name.is_empty() {
                    // No proxy named: the registrar's own host.
                    s.server_name = registrar
                        .rsplit_once(':')
                        .map_or(registrar.as_str(), |(h, _)| h)
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string();
                }
                s
            });
        svc.gateway.sip().register_on(
            crate::sip::register::RegistrationConfig {
                registrar_uri: format!("sip:{registrar}"),
                aor: aor.clone(),
                destination,
                local,
                credentials: trunk.registrar_credentials,
                expires: t.register_expires.unwrap_or(600),
                timers: Default::default(),
            },
            pinned,
            transport,
            tls.clone(),
        );
        if crate::sip::resolve::Lookup::parse(registrar)
            .is_ok_and(|l| !matches!(l, crate::sip::resolve::Lookup::Literal(_)))
        {
            tokio::spawn(follow_registrar(
                svc.clone(),
                registrar.clone(),
                aor,
                trunk.transport.transport,
                tls,
                destination,
                found.valid_until,
            ));
        }
    }
    // Made before the pipeline, which runs under its named leases.
    let node = crate::cluster::Node::new(&svc.config.cluster, &svc.store, &svc.shutdown)?;
    if let Some(token) = pipeline_token {
        let own = listener.local_addr()?;
        let own = if own.ip().is_unspecified() {
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), own.port())
        } else {
            own
        };
        let local = format!("http://{own}");
        let url = svc
            .config
            .pipeline
            .gateway_url
            .clone()
            .unwrap_or(local.clone());
        let weak = Arc::downgrade(&svc);
        let plans: crate::pipeline::driver::Plans = Arc::new(move || {
            weak.upgrade()
                .map(|s| s.registry.snapshot())
                .unwrap_or_default()
        });
        // Clustered, each of the pipeline's three kinds of work runs on
        // the one node holding its lease (`cluster::role`).
        let role = |name| {
            node.as_ref()
                .and_then(|n| n.role(&svc.config.cluster, name))
        };
        let p = crate::pipeline::driver::start(
            svc.store.clone(),
            plans.clone(),
            crate::pipeline::gateway::GatewayClient::new(&url, token),
            svc.config.webhooks.secrets.clone(),
            svc.config.pipeline.expire.as_millis() as i64,
            svc.config.pipeline.recovered_wait.as_millis() as i64,
            svc.shutdown.clone(),
            role("pipeline"),
        )
        .await?;
        if let Some(mo) = &svc.config.pipeline.mail_out {
            let task = crate::pipeline::mail_outbox::start(
                p.clone(),
                mo,
                svc.shutdown.clone(),
                role("mail_outbox"),
            )?;
            svc.tasks.spawn(task);
            tracing::info!(relay = %mo.host, "mail outbox running");
        } else if p.contracts().values().any(|c| !c.notices.rules.is_empty()) {
            tracing::warn!("a contract has [pipeline.notices] but callout.toml has no [pipeline.mail_out]: notices are queued and not sent");
        }
        if let Some(smtp) = svc.config.intake.smtp.clone() {
            let l = tokio::net::TcpListener::bind(&smtp.listen)
                .await
                .with_context(|| format!("binding the SMTP intake on {}", smtp.listen))?;
            tracing::info!(listen = %l.local_addr()?, "SMTP intake listening");
            let sink: Arc<dyn crate::pipeline::smtp::MailSink> = p.clone();
            svc.tasks.spawn(crate::pipeline::smtp::serve(
                l,
                smtp,
                sink,
                svc.shutdown.clone(),
            ));
        }
        crate::tickets::sync::start(&svc, plans, p.clone(), role("ticket_sync")).await?;
        let _ = svc.pipeline.set(p);
        let _ = svc
            .pipeline_webhook
            .set(format!("{local}/v1/pipeline/webhook"));
        tracing::info!(gateway = %url, "alert pipeline running");
    }
    // Clustered, leases decide who resumes what (and replace the
    // sweeper); alone, this process resumes everything.
    if let Some(node) = node {
        let _ = svc.cluster.set(node.clone());
        // Trunk channels, queues, backoff and keepalive verdicts are the
        // nodes' together, before any work is claimed.
        svc.channels
            .use_database(&svc.store, node.clone(), svc.config.database_url.clone());
        crate::channels::health::spawn(&svc, &node.id);
        if let Err(e) = svc.actions.recover().await {
            tracing::error!(error = %e, "cannot mark interrupted action runs");
        }
        let claimed = crate::cluster::node::start(&svc, node.clone()).await;
        tracing::info!(node = %node.id, claimed, "clustered on PostgreSQL");
    } else {
        let resumed = svc.resume_all().await?;
        if resumed > 0 {
            tracing::warn!(resumed, "resumed unfinished notifications");
        }
        svc.tasks.spawn(crate::service::sweeper::run(
            svc.clone(),
            crate::service::sweeper::INTERVAL,
        ));
    }
    svc.tasks.spawn(crate::service::webhook::run(svc.clone()));
    svc.tasks.spawn(fold_report_facts(svc.clone()));
    svc.prewarm();
    Ok((svc, listener))
}

/// How often ended notifications are folded into the report facts.
const FOLD_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Fold ended notifications into the report facts in the background, so
/// a report rarely has any left to fold, and the history before
/// migration 0017 is folded here rather than by the first reports (a
/// year of a centre took 20-30 s on SQLite, 150-190 s on PostgreSQL
/// under load). Nodes fold side by side: each batch takes rows the
/// others have not locked.
async fn fold_report_facts(svc: Arc<Service>) {
    let start = tokio::time::Instant::now() + FOLD_EVERY;
    let mut every = tokio::time::interval_at(start, FOLD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = svc.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        tokio::select! {
            _ = svc.shutdown.cancelled() => return,
            r = crate::reports::facts::fold_settled(&svc.store, crate::reports::facts::REPORT_BATCHES, crate::reports::facts::SETTLE_MS) => match r {
                Ok(0) => {}
                Ok(n) => tracing::debug!(notifications = n, "folded into the report facts"),
                Err(e) => tracing::warn!(error = %e, "cannot fold the report facts; reports read the raw rows meanwhile"),
            },
        }
    }
}

/// Run until SIGTERM or Ctrl-C. Every step is already in the database, so
/// stopping loses nothing: unfinished notifications resume at the next
/// start, and a call that was up is recorded as interrupted.
pub async fn serve(config_path: Option<&Path>) -> anyhow::Result<()> {
    let config = match config_path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    // Before anything opens a file: many connections, calls and speech
    // children each take a descriptor.
    let open_files = crate::api::server::raise_nofile_limit().unwrap_or(1024);
    let (svc, listener) = start(config).await?;
    let max_connections =
        crate::api::server::connection_limit(svc.config.http.max_connections, open_files);
    crate::logging::notice(&format!(
        "API on http://{} (at most {max_connections} connections), SIP on {}, database {}",
        listener.local_addr()?,
        svc.gateway.sip_addr(),
        RedactedUrl(&svc.config.database_url)
    ));
    // SIGHUP reloads the dialplans; a broken file keeps the old ones.
    let reload = svc.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match reload.registry.reload() {
                Ok(n) => {
                    tracing::warn!(dialplans = n, "reloaded dialplans");
                    reload.prewarm();
                    if let Some(p) = reload.pipeline.get() {
                        p.send(crate::pipeline::driver::Input::Reload);
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::error!("reload rejected, previous dialplans kept: {e}");
                    }
                }
            }
        }
    });
    let app = crate::api::router(svc.clone());
    let shutdown = svc.shutdown.clone();
    tokio::spawn(async move {
        let term = async {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
            }
        };
        tokio::select! {
            _ = term => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        shutdown.cancel();
    });
    crate::api::server::serve(
        listener,
        app,
        svc.config.http.clone(),
        max_connections,
        svc.shutdown.clone(),
        std::time::Duration::from_secs(30),
    )
    .await;
    // Answered calls finish the sentence they are hearing and are hung
    // up; ringing ones are cancelled; everything is already stored.
    svc.tasks.close();
    if tokio::time::timeout(std::time::Duration::from_secs(30), svc.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some calls did not end within 30 s of the shutdown");
    }
    // Their last events and final states, written or journaled.
    svc.writer.close(std::time::Duration::from_secs(10)).await;
    if let Some(node) = svc.cluster.get() {
        crate::cluster::node::release(&svc, node).await;
    }
    crate::logging::notice("stopped; unfinished notifications resume at the next start");
    Ok(())
}

/// Resolve a registrar's name again whenever its DNS answers expire, and
/// move the registration to the first address when the one in use is no
/// longer listed; until shutdown.
/// A failed lookup keeps the address and tries again in 5 s.
async fn follow_registrar(
    svc: Arc<Service>,
    registrar: String,
    aor: String,
    transport: Option<crate::sip::transport::Transport>,
    tls: Option<crate::sip::transport::TlsSettings>,
    mut current: std::net::SocketAddr,
    mut until: std::time::Instant,
) {
    loop {
        tokio::select! {
            _ = svc.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(until.into()) => {}
        }
        match crate::driver::resolve::resolve_for(&registrar, transport).await {
            Ok(r) => {
                until = r.valid_until;
                if let Some(first) = r.addrs.first().copied() {
                    // Still listed: stay (weights may reorder ties).
                    if !r.addrs.contains(&current) {
                        tracing::info!(%registrar, from = %current, to = %first, "registrar moved (DNS); registering there");
                        current = first;
                        svc.gateway
                            .sip()
                            .move_registration(&aor, first, tls.clone());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%registrar, error = %e, "registrar does not resolve; keeping its address");
                until = std::time::Instant::now() + std::time::Duration::from_secs(5);
            }
        }
    }
}

/// OPTIONS keepalive for each trunk that asks for it, on its resolved
/// proxies (see `sip::keepalive`).
async fn start_keepalives(svc: &Arc<Service>) -> anyhow::Result<()> {
    for (name, t) in &svc.config.trunks {
        let Some(every) = &t.keepalive else { continue };
        let interval = crate::util::parse_duration(every)
            .with_context(|| format!("trunk {name:?}: keepalive"))?;
        // An unusable trunk is reported by /readyz; no reason not to start.
        let trunk = match svc.trunk(name).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(trunk = %name, error = %e, "no keepalive for an unusable trunk");
                continue;
            }
        };
        let targets: Vec<String> = t.all_proxies().cloned().collect();
        if targets.is_empty() {
            anyhow::bail!("trunk {name:?}: keepalive needs proxy or proxies");
        }
        let cfg = crate::sip::keepalive::KeepaliveConfig {
            interval,
            misses: t.keepalive_misses.unwrap_or(3),
        };
        let advertise = trunk.advertise.sip.map(|a| a.ip());
        let task = crate::driver::keepalive::spawn(
            name.clone(),
            targets,
            svc.gateway.sip_addr().ip(),
            advertise,
            trunk.transport.clone(),
            cfg,
            svc.trunk_health.clone(),
            svc.shutdown.clone(),
        )
        .await
        .with_context(|| format!("trunk {name:?}: keepalive socket"))?;
        drop(task);
        tracing::info!(trunk = %name, every = %every, "trunk keepalive running");
    }
    Ok(())
}
