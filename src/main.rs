//! The `callout` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use callout::cli;

#[derive(Parser)]
#[command(name = "callout", version, about = "Telephony escalation gateway")]
struct Cli {
    /// Log lines on stderr: plain (journald-friendly) or json (one object
    /// per line). Level: CALLOUT_LOG (default warn).
    #[arg(
        long,
        global = true,
        env = "CALLOUT_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: callout::logging::LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Place one call, play a prompt and collect digits.
    Call {
        /// SIP URI to call, e.g. sip:bob@127.0.0.1:5070
        uri: String,
        /// WAV file to play (any common rate and depth).
        #[arg(long)]
        prompt: PathBuf,
        /// Number of digits to collect before hanging up.
        #[arg(long, default_value_t = 1)]
        collect: usize,
        /// Bounds the ringing, then the wait for input (e.g. 10s, 500ms).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
        /// Local SIP address to bind.
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: String,
        /// RTP port range, even start, e.g. 20000-20999.
        #[arg(long, default_value = "20000-29999")]
        rtp_ports: String,
        /// Digest username; the password is read from CALLOUT_SIP_PASSWORD.
        #[arg(long, env = "CALLOUT_SIP_USER")]
        user: Option<String>,
        /// Caller identity for From.
        #[arg(long, default_value = "sip:callout@localhost")]
        from: String,
        /// DTMF paths: both, rfc4733 or inband.
        #[arg(long, default_value = "both")]
        dtmf: callout::media::session::DtmfMode,
        /// Take the first RTP source as the peer (a callee behind NAT).
        #[arg(long)]
        symmetric_rtp: bool,
        /// Address for Via and Contact (IP, IP:port, [IPv6]:port),
        /// e.g. with --bind 0.0.0.0:5060 behind NAT.
        #[arg(long)]
        sip_advertise: Option<String>,
        /// Address for the SDP c=/o= lines (default: --sip-advertise's).
        #[arg(long)]
        rtp_advertise: Option<String>,
        /// Answer digest challenges only for this realm.
        #[arg(long)]
        realm: Option<String>,
        /// For a `sips:` or `;transport=tls` URI: PEM CA certificates to
        /// trust instead of the public roots.
        #[arg(long)]
        tls_ca_file: Option<PathBuf>,
        /// For TLS: the name the certificate must carry (default: the
        /// URI's host).
        #[arg(long)]
        tls_server_name: Option<String>,
        /// SRTP with SDES keys: required, optional or off (default:
        /// required on TLS, off otherwise; never on UDP/TCP).
        #[arg(long)]
        srtp: Option<callout::media::srtp::SrtpMode>,
    },
    /// Run the service: REST API, store, escalations, webhooks.
    Serve {
        /// Configuration file (defaults for everything when absent).
        #[arg(long, env = "CALLOUT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check everything an alert depends on (configuration, dialplans,
    /// database, trunks, addresses, voices, clock, limits); one line per
    /// check, exit 1 when any failed.
    Doctor {
        #[arg(long, env = "CALLOUT_CONFIG")]
        config: Option<PathBuf>,
        /// Also place a test call: answer, audio out, a key read back.
        #[arg(long, value_name = "URI")]
        call: Option<String>,
    },
    /// A small SIP callee: answers, records what it hears, presses keys.
    Softphone {
        #[arg(long, default_value = "127.0.0.1:5070")]
        listen: String,
        /// Keys to press by RFC 4733, e.g. "1" or "1234#".
        #[arg(long, default_value = "")]
        press: String,
        /// When to press, after answering.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        after: Duration,
        /// Record what the caller plays to this WAV file.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Exit after this many calls (0 = keep serving).
        #[arg(long, default_value_t = 0)]
        calls: usize,
        #[arg(long, default_value = "31000-31999")]
        rtp_ports: String,
    },
    /// The whole service on embedded defaults with two local softphones:
    /// a notification through the HTTP API, escalated live.
    Demo {
        #[arg(long, default_value = "dialplans")]
        dialplans: PathBuf,
        #[arg(long, default_value = "prompts")]
        prompts: PathBuf,
    },
    /// Benchmarks that print measured figures (see docs/benchmarks.md).
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// Render a phrase exactly as a call would play it (readers, engine,
    /// 8 kHz, loudness) to a WAV file.
    Say {
        /// Language voice: ja (Open JTalk) or en (espeak-ng).
        #[arg(long, default_value = "en")]
        voice: String,
        /// The phrase; {name} placeholders are filled from --var.
        text: String,
        #[arg(short, long)]
        out: PathBuf,
        /// Template variables, e.g. --var host=web-01.example.jp
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
    },
    /// Run one notification's escalation from a dialplan file, printing
    /// every step as a JSON line.
    Escalate {
        dialplan: PathBuf,
        #[arg(long)]
        ticket: String,
        #[arg(long)]
        host: String,
        #[arg(long)]
        summary: String,
        #[arg(long, default_value = "major")]
        severity: String,
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        #[arg(long, default_value = "prompts")]
        prompts: PathBuf,
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: String,
        #[arg(long, default_value = "20000-29999")]
        rtp_ports: String,
    },
    /// Dialplan tools.
    Dialplan {
        #[command(subcommand)]
        cmd: DialplanCmd,
    },
    /// DTMF tools.
    Dtmf {
        #[command(subcommand)]
        cmd: DtmfCmd,
    },
    /// Maintenance actions.
    Action {
        #[command(subcommand)]
        cmd: ActionCmd,
    },
    /// The alert pipeline's incidents, from the database.
    Incidents {
        #[command(subcommand)]
        cmd: IncidentsCmd,
    },
}

#[derive(Subcommand)]
enum IncidentsCmd {
    /// Newest first.
    List {
        #[arg(long)]
        contract: Option<String>,
        #[arg(long)]
        host: Option<String>,
        /// pending, notifying, acknowledged, recovered, closed, suppressed, expired
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// The service's config (for its database).
        #[arg(long, env = "CALLOUT_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "CALLOUT_DATABASE_URL")]
        database: Option<String>,
    },
    /// One incident (by id or ticket number): its alerts and timeline.
    Show {
        id: String,
        #[arg(long, env = "CALLOUT_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "CALLOUT_DATABASE_URL")]
        database: Option<String>,
    },
}

fn database_of(
    config: Option<&std::path::Path>,
    database: Option<String>,
) -> anyhow::Result<String> {
    if let Some(d) = database {
        return Ok(d);
    }
    Ok(match config {
        Some(p) => callout::config::Config::load(p)?.database_url,
        None => callout::config::Config::default().database_url,
    })
}

#[derive(Subcommand)]
enum ActionCmd {
    /// Run (or dry-run) a contract's maintenance flow from here.
    Run {
        /// The flow's name (a file in dialplans/flows/).
        flow: String,
        #[arg(long)]
        contract: String,
        /// Which of the contract's actions, when several use the flow.
        #[arg(long)]
        action: Option<String>,
        /// A value for a parameter the dialplan takes from the alert.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Print exactly what would run, run nothing.
        #[arg(long)]
        dry_run: bool,
        /// The ticket the run is for (in its record and webhooks).
        #[arg(long)]
        ticket: Option<String>,
        /// The service's config: its dialplans, prompts and database.
        #[arg(long, env = "CALLOUT_CONFIG")]
        config: Option<PathBuf>,
        /// Where the run is recorded and its slot taken (default: the
        /// config's, else sqlite://data/callout.db, as `callout serve`).
        #[arg(long, env = "CALLOUT_DATABASE_URL")]
        database: Option<String>,
        /// Default: the config's, else dialplans/.
        #[arg(long)]
        dialplans: Option<PathBuf>,
        /// Default: the config's, else prompts/.
        #[arg(long)]
        prompts: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Calls against a sipp UAS: setup rate, concurrency, RTP jitter, CPU
    /// and memory per call, and sipp's own UAC rate beside it.
    Calls {
        #[arg(long, default_value_t = 2000)]
        setup_calls: usize,
        #[arg(long, default_value_t = 200)]
        window: usize,
        #[arg(long, default_value_t = 500)]
        concurrent: usize,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        hold: Duration,
        #[arg(long, default_value = "prompts/press-a-key.wav")]
        prompt: PathBuf,
        /// Signal over TCP (sipp `-t t1`, `;transport=tcp`) instead of UDP,
        /// for callout and for sipp's own UAC beside it.
        #[arg(long)]
        tcp: bool,
        /// Signal over TLS: sipp here has no TLS, so `socat` terminates
        /// TLS (a test CA made with `openssl`) in front of sipp's TCP UAS;
        /// sipp's own UAC figure beside it is then over TCP.
        #[arg(long, conflicts_with = "tcp")]
        tls: bool,
        /// Skip sipp's streaming UAC (a pcap of the same prompt, as many
        /// calls at once) and its CPU per stream.
        #[arg(long)]
        no_peer_media: bool,
        /// Setup-rate rounds, callout's and sipp's UAC's in turn; more
        /// than one prints the median ratio.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// Notifications per second through the API, and POST -> INVITE latency.
    Api {
        #[arg(long, default_value_t = 100)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Contract language: en or ja.
        #[arg(long, default_value = "en")]
        language: String,
        /// A new host in every notification, so each message is synthesised.
        #[arg(long)]
        fresh_text: bool,
        /// Admin URL of a PostgreSQL server (…/postgres): the service runs
        /// on a fresh database there, as a `[cluster]` node, instead of
        /// SQLite (the database is dropped afterwards).
        #[arg(long, env = "CALLOUT_BENCH_POSTGRES_URL")]
        postgres: Option<String>,
    },
    /// Time to first audio: POST -> INVITE, -> first sentence of a fresh
    /// 20-second Japanese message ready, -> whole message ready.
    FirstAudio {
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Time between notifications.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        gap: Duration,
        /// Post the first notification as soon as the service is up, on
        /// its empty speech cache (no warm-up notification): its POST ->
        /// INVITE includes whatever the dial waits for while the start's
        /// prewarm is still rendering the contract's fixed phrases.
        #[arg(long)]
        cold: bool,
    },
    /// Speech synthesis time per second of audio, and cache hit time.
    Tts {
        #[arg(long, default_value_t = 10)]
        repeat: usize,
    },
    /// The cost of running a flow beyond its commands, beside spawning
    /// the same commands directly.
    Actions {
        #[arg(long, default_value_t = 200)]
        runs: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
    },
    /// Tickets in a running Redmine: alert stored -> issue exists (p50,
    /// p99) and notes/s through the sync, beside a plain HTTP client.
    Tickets {
        /// Redmine's base URL.
        #[arg(long)]
        url: String,
        /// The environment variable holding an administrator's API key.
        #[arg(long, default_value = "CALLOUT_REDMINE_KEY")]
        key_env: String,
        /// An existing project's identifier (issues are created in it).
        #[arg(long)]
        project: String,
        #[arg(long, default_value = "Support")]
        tracker: String,
        #[arg(long, default_value_t = 100)]
        incidents: usize,
        #[arg(long, default_value_t = 300)]
        notes: usize,
    },
    /// The alert pipeline: alerts/s over HTTP (beside a real Alertmanager)
    /// and SMTP, window end -> INVITE, memory during a storm.
    Pipeline {
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Seconds per throughput phase.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Alerts per Alertmanager body.
        #[arg(long, default_value_t = 50)]
        batch: usize,
        #[arg(long, default_value_t = 8)]
        smtp_sessions: usize,
        /// Incidents timed from window end to INVITE.
        #[arg(long, default_value_t = 300)]
        incidents: usize,
        #[arg(long, default_value_t = 60.0)]
        storm_secs: f64,
        /// Alerts per second offered during the storm.
        #[arg(long, default_value_t = 1000)]
        storm_rate: u64,
        /// Admin URL of a PostgreSQL server (…/postgres): the throughput
        /// phases again on a database made and dropped there.
        #[arg(long, env = "CALLOUT_BENCH_POSTGRES_URL")]
        postgres: Option<String>,
        /// No Alertmanager beside callout.
        #[arg(long)]
        no_peer: bool,
        /// Only the window end -> INVITE phase (SQLite).
        #[arg(long)]
        latency_only: bool,
        /// A tiny run (seconds) that only shows the bench still works.
        #[arg(long)]
        quick: bool,
    },
    /// Report queries over a year of seeded history, on SQLite and
    /// (with --postgres) PostgreSQL.
    Reports {
        #[arg(long, default_value_t = 100_000)]
        notifications: usize,
        /// Calls of a notification nobody acknowledged (and the most an
        /// acknowledged one takes); 4 gives about 3 calls a notification.
        #[arg(long, default_value_t = 4)]
        calls_per_notification: usize,
        /// Admin URL of a PostgreSQL server (…/postgres).
        #[arg(long, env = "CALLOUT_BENCH_POSTGRES_URL")]
        postgres: Option<String>,
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Keep the databases (SQLite in this directory, PostgreSQL as
        /// `callout_bench_reports_keep`) and, when they already hold the
        /// history, time the reports only: seed and backfill once, then
        /// measure briefly with the machine quiet.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// In-band detector throughput on a WAV file.
    Dtmf {
        file: PathBuf,
        #[arg(long, default_value_t = 20)]
        repeat: usize,
    },
}

#[derive(Subcommand)]
enum DialplanCmd {
    /// Validate dialplan files; print FILE:LINE:COLUMN: problem for each.
    Check {
        /// A dialplan file or a folder of them.
        #[arg(default_value = "dialplans")]
        path: PathBuf,
        /// Folder recorded prompts are looked up in.
        #[arg(long, default_value = "prompts")]
        prompts: PathBuf,
        /// Skip rendering the fixed phrases with the speech engines.
        #[arg(long)]
        no_tts: bool,
        /// Service configuration, for site-defined voices.
        #[arg(long, env = "CALLOUT_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DtmfCmd {
    /// Print "DIGIT START_MS" for each in-band digit in a WAV file.
    Detect { file: PathBuf },
}

/// Parse "10s", "500ms", "2m" or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    callout::util::parse_duration(s).map_err(|e| e.to_string())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    callout::logging::init(cli.log_format);
    let result = match cli.cmd {
        Cmd::Dtmf {
            cmd: DtmfCmd::Detect { file },
        } => cli::dtmf_detect(&file),
        Cmd::Serve { config } => runtime()
            .and_then(|rt| rt.block_on(callout::serve::serve(config.as_deref())))
            .map(|_| ExitCode::SUCCESS),
        Cmd::Doctor { config, call } => runtime().map(|rt| {
            rt.block_on(callout::doctor::main(callout::doctor::Options {
                config,
                call,
            }))
        }),
        Cmd::Softphone {
            listen,
            press,
            after,
            record,
            calls,
            rtp_ports,
        } => (|| {
            let listen = listen
                .parse()
                .with_context(|| format!("--listen {listen:?} is not an address:port"))?;
            let opts = callout::softphone::SoftphoneOptions {
                listen,
                press,
                after,
                record,
                calls,
                rtp_ports,
            };
            runtime()?.block_on(callout::softphone::run(opts, |v| println!("{v}")))?;
            Ok(ExitCode::SUCCESS)
        })(),
        Cmd::Action {
            cmd:
                ActionCmd::Run {
                    flow,
                    contract,
                    action,
                    params,
                    dry_run,
                    ticket,
                    config,
                    database,
                    dialplans,
                    prompts,
                },
        } => runtime().and_then(|rt| {
            rt.block_on(cli::action_run(cli::ActionRunOpts {
                flow,
                contract,
                action,
                params,
                dry_run,
                ticket,
                config,
                database,
                dialplans,
                prompts,
            }))
        }),
        Cmd::Incidents {
            cmd:
                IncidentsCmd::List {
                    contract,
                    host,
                    state,
                    limit,
                    config,
                    database,
                },
        } => database_of(config.as_deref(), database)
            .and_then(|db| {
                runtime().and_then(|rt| {
                    rt.block_on(callout::pipeline::cli::list(
                        &db, contract, host, state, limit,
                    ))
                })
            })
            .map(|_| ExitCode::SUCCESS),
        Cmd::Incidents {
            cmd:
                IncidentsCmd::Show {
                    id,
                    config,
                    database,
                },
        } => database_of(config.as_deref(), database)
            .and_then(|db| {
                runtime().and_then(|rt| rt.block_on(callout::pipeline::cli::show(&db, &id)))
            })
            .map(|_| ExitCode::SUCCESS),
        Cmd::Dialplan {
            cmd:
                DialplanCmd::Check {
                    path,
                    prompts,
                    no_tts,
                    config,
                },
        } => cli::dialplan_check(
            &path,
            &callout::paths::prompts(&prompts).unwrap_or(prompts),
            !no_tts,
            config.as_deref(),
        ),
        Cmd::Escalate {
            dialplan,
            ticket,
            host,
            summary,
            severity,
            vars,
            prompts,
            bind,
            rtp_ports,
        } => runtime().and_then(|rt| {
            rt.block_on(cli::escalate(cli::EscalateOptions {
                dialplan,
                ticket,
                host,
                summary,
                severity,
                vars,
                prompts: callout::paths::prompts(&prompts).unwrap_or(prompts),
                bind,
                rtp_ports,
            }))
        }),
        Cmd::Say {
            voice,
            text,
            out,
            vars,
        } => cli::say(&voice, &text, &out, &vars),
        Cmd::Demo { dialplans, prompts } => runtime()
            .and_then(|rt| {
                // The shipped samples, wherever the demo is started.
                let dialplans = callout::paths::dialplans(&dialplans)?;
                let prompts = callout::paths::prompts(&prompts)?;
                rt.block_on(callout::demo::run(dialplans, prompts))
            })
            .map(|_| ExitCode::SUCCESS),
        Cmd::Bench {
            cmd:
                BenchCmd::Api {
                    rate,
                    seconds,
                    language,
                    fresh_text,
                    postgres,
                },
        } => runtime()
            .and_then(|rt| {
                rt.block_on(callout::bench::api(
                    rate,
                    seconds,
                    &language,
                    fresh_text,
                    postgres.as_deref(),
                ))
            })
            .map(|_| ExitCode::SUCCESS),
        Cmd::Bench {
            cmd: BenchCmd::Actions { runs, steps },
        } => runtime()
            .and_then(|rt| rt.block_on(callout::bench::actions(runs, steps)))
            .map(|_| ExitCode::SUCCESS),
        Cmd::Bench {
            cmd:
                BenchCmd::Pipeline {
                    clients,
                    seconds,
                    batch,
                    smtp_sessions,
                    incidents,
                    storm_secs,
                    storm_rate,
                    postgres,
                    no_peer,
                    latency_only,
                    quick,
                },
        } => {
            use callout::bench::pipeline::PipelineBench;
            let o = if quick {
                PipelineBench {
                    postgres,
                    no_peer,
                    latency_only,
                    ..PipelineBench::quick()
                }
            } else {
                PipelineBench {
                    clients,
                    seconds,
                    batch,
                    smtp_sessions,
                    incidents,
                    storm_secs,
                    storm_rate,
                    postgres,
                    no_peer,
                    latency_only,
                }
            };
            runtime()
                .and_then(|rt| rt.block_on(callout::bench::pipeline::run(o)))
                .map(|_| ExitCode::SUCCESS)
        }
        Cmd::Bench {
            cmd:
                BenchCmd::Tickets {
                    url,
                    key_env,
                    project,
                    tracker,
                    incidents,
                    notes,
                },
        } => runtime()
            .and_then(|rt| {
                rt.block_on(callout::bench::tickets::run(
                    callout::bench::tickets::TicketsBench {
                        url,
                        key_env,
                        project,
                        tracker,
                        incidents,
                        notes,
                    },
                ))
            })
            .map(|_| ExitCode::SUCCESS),
        Cmd::Bench {
            cmd:
                BenchCmd::Reports {
                    notifications,
                    calls_per_notification,
                    postgres,
                    repeat,
                    keep,
                },
        } => runtime()
            .and_then(|rt| {
                rt.block_on(callout::bench::reports::run(
                    callout::bench::reports::ReportsBench {
                        notifications,
                        calls_per_notification,
                        postgres,
                        repeat,
                        keep,
                    },
                ))
            })
            .map(|_| ExitCode::SUCCESS),
        Cmd::Bench {
            cmd: BenchCmd::FirstAudio { runs, gap, cold },
        } => runtime()
            .and_then(|rt| rt.block_on(callout::bench::first_audio::run(runs, gap, cold)))
            .map(|_| ExitCode::SUCCESS),
        Cmd::Bench {
            cmd: BenchCmd::Tts { repeat },
        } => callout::bench::tts(repeat).map(|_| ExitCode::SUCCESS),
        Cmd::Bench {
            cmd: BenchCmd::Dtmf { file, repeat },
        } => callout::bench::dtmf(&file, repeat).map(|_| ExitCode::SUCCESS),
        Cmd::Bench {
            cmd:
                BenchCmd::Calls {
                    setup_calls,
                    window,
                    concurrent,
                    hold,
                    prompt,
                    tcp,
                    tls,
                    no_peer_media,
                    rounds,
                },
        } => runtime().and_then(|rt| {
            rt.block_on(callout::bench::calls(callout::bench::CallsBench {
                setup_calls,
                setup_window: window,
                concurrent,
                hold,
                prompt,
                tcp,
                tls,
                peer_media: !no_peer_media,
                rounds,
            }))
            .map(|_| ExitCode::SUCCESS)
        }),
        Cmd::Call {
            uri,
            prompt,
            collect,
            timeout,
            bind,
            rtp_ports,
            user,
            from,
            dtmf,
            symmetric_rtp,
            sip_advertise,
            rtp_advertise,
            realm,
            tls_ca_file,
            tls_server_name,
            srtp,
        } => (|| {
            let rt = runtime()?;
            let opts = cli::CallOptions {
                uri,
                prompt,
                collect,
                timeout,
                bind,
                rtp_ports,
                user,
                password: std::env::var("CALLOUT_SIP_PASSWORD").ok(),
                from,
                media: callout::media::session::MediaPolicy {
                    dtmf,
                    symmetric_rtp,
                },
                advertise: callout::sip::advertise::Advertise::parse(
                    "--",
                    sip_advertise.as_deref(),
                    rtp_advertise.as_deref(),
                )?,
                realm,
                tls: callout::sip::transport::TlsSettings {
                    server_name: tls_server_name.unwrap_or_default(),
                    ca_file: tls_ca_file,
                    client_cert: None,
                    client_key: None,
                },
                srtp,
            };
            rt.block_on(cli::call(opts))
        })(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("callout: {e:#}");
            ExitCode::from(2)
        }
    }
}
