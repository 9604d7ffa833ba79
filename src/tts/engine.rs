//! Speech engines run as child processes (never through a shell): Open
//! JTalk for Japanese, espeak-ng for English and other languages, and a
//! generic argv template for any engine that writes a WAV file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::media::audio::read_wav_mono;

/// Why synthesis failed.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("{engine} is not installed or not runnable: {source}")]
    Missing {
        engine: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{engine} failed ({status}): {stderr}")]
    Failed {
        engine: String,
        status: String,
        stderr: String,
    },
    #[error("{engine} took longer than {0:?}", .limit)]
    Timeout { engine: String, limit: Duration },
    #[error("{engine} produced no usable audio: {detail}")]
    BadOutput { engine: String, detail: String },
    #[error("scratch file: {0}")]
    Io(#[from] std::io::Error),
    #[error("voice file {0} not found")]
    NoVoice(PathBuf),
    #[error("{0}")]
    Unavailable(String),
}

/// Raw engine output: mono samples in [-1, 1] and their rate.
pub struct Audio {
    pub samples: Vec<f32>,
    pub rate: u32,
}

/// A text-to-speech engine.
pub trait Engine: Send + Sync {
    /// Backend, voice and engine version: part of the cache key, so a new
    /// engine version or voice never serves stale audio.
    fn id(&self) -> String;
    fn synthesize(&self, text: &str) -> Result<Audio, TtsError>;
}

/// How long one synthesis may take.
pub const LIMIT: Duration = Duration::from_secs(20);

fn scratch(tag: &str, ext: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "callout-tts-{}-{}-{tag}.{ext}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Run argv with a time limit; the child is killed when it overruns.
fn run(engine: &str, argv: &[String]) -> Result<(), TtsError> {
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| TtsError::Missing {
            engine: engine.to_string(),
            source,
        })?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut stderr);
            }
            return Err(TtsError::Failed {
                engine: engine.to_string(),
                status: status.to_string(),
                stderr: stderr.chars().take(300).collect(),
            });
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TtsError::Timeout {
                engine: engine.to_string(),
                limit: LIMIT,
            });
        }
        // Every millisecond waited here is added to the time to first
        // audio; a wake-up a millisecond costs nothing next to the engine.
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn read_output(engine: &str, path: &Path) -> Result<Audio, TtsError> {
    let r = read_wav_mono(path);
    let _ = std::fs::remove_file(path);
    let (samples, rate) = r.map_err(|e| TtsError::BadOutput {
        engine: engine.to_string(),
        detail: e.to_string(),
    })?;
    if samples.is_empty() {
        return Err(TtsError::BadOutput {
            engine: engine.to_string(),
            detail: "empty".into(),
        });
    }
    Ok(Audio { samples, rate })
}

fn version_of(argv: &[&str]) -> String {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(if o.stdout.is_empty() {
                &o.stderr
            } else {
                &o.stdout
            })
            .into_owned();
            text.lines()
                .find(|l| l.contains("ersion") || l.contains("eSpeak"))
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|_| "missing".into())
}

/// espeak-ng, written to a file with `-w` (its `--stdout` WAV header
/// claims a huge length).
pub struct Espeak {
    pub voice: String,
    version: String,
}

impl Espeak {
    pub fn new(voice: &str) -> Espeak {
        Espeak {
            voice: voice.to_string(),
            version: version_of(&["espeak-ng", "--version"]),
        }
    }
}

impl Espeak {
    /// The cache identity, for tests that look for a cached file.
    pub fn id_for_test(&self) -> String {
        self.id()
    }
}

impl Engine for Espeak {
    fn id(&self) -> String {
        format!("espeak-ng|{}|{}", self.voice, self.version)
    }

    fn synthesize(&self, text: &str) -> Result<Audio, TtsError> {
        let out = scratch("espeak", "wav");
        let argv = vec![
            "espeak-ng".to_string(),
            "-v".into(),
            self.voice.clone(),
            "-s".into(),
            "150".into(),
            "-w".into(),
            out.display().to_string(),
            "--".into(),
            text.to_string(),
        ];
        run("espeak-ng", &argv)?;
        read_output("espeak-ng", &out)
    }
}

/// Open JTalk with an HTS voice.
pub struct OpenJtalk {
    pub dictionary: PathBuf,
    pub voice: PathBuf,
    version: String,
}

/// Where Debian's open-jtalk-mecab-naist-jdic puts the dictionary.
pub const DEBIAN_DICTIONARY: &str = "/var/lib/mecab/dic/open-jtalk/naist-jdic";

impl OpenJtalk {
    pub fn new(dictionary: &Path, voice: &Path) -> Result<OpenJtalk, TtsError> {
        if !voice.is_file() {
            return Err(TtsError::NoVoice(voice.to_path_buf()));
        }
        Ok(OpenJtalk {
            dictionary: dictionary.to_path_buf(),
            voice: voice.to_path_buf(),
            version: version_of(&["open_jtalk"]),
        })
    }
}

impl Engine for OpenJtalk {
    fn id(&self) -> String {
        let voice = self
            .voice
            .file_name()
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("open_jtalk|{voice}|{}", self.version)
    }

    fn synthesize(&self, text: &str) -> Result<Audio, TtsError> {
        let input = scratch("jtalk", "txt");
        let out = scratch("jtalk", "wav");
        std::fs::write(&input, text)?;
        let argv = vec![
            "open_jtalk".to_string(),
            "-x".into(),
            self.dictionary.display().to_string(),
            "-m".into(),
            self.voice.display().to_string(),
            "-ow".into(),
            out.display().to_string(),
            input.display().to_string(),
        ];
        let r = run("open_jtalk", &argv);
        let _ = std::fs::remove_file(&input);
        r?;
        read_output("open_jtalk", &out)
    }
}

/// Any engine with a command line that writes a WAV: `argv` may contain
/// `{text}` and `{out}`, replaced as whole arguments (no shell involved).
pub struct CommandEngine {
    pub name: String,
    pub argv: Vec<String>,
}

impl Engine for CommandEngine {
    fn id(&self) -> String {
        format!("command|{}|{}", self.name, self.argv.join(" "))
    }

    fn synthesize(&self, text: &str) -> Result<Audio, TtsError> {
        let out = scratch("cmd", "wav");
        let argv: Vec<String> = self
            .argv
            .iter()
            .map(|a| {
                a.replace("{text}", text)
                    .replace("{out}", &out.display().to_string())
            })
            .collect();
        if argv.is_empty() {
            return Err(TtsError::BadOutput {
                engine: self.name.clone(),
                detail: "empty argv".into(),
            });
        }
        run(&self.name, &argv)?;
        read_output(&self.name, &out)
    }
}

/// An engine server with a VOICEVOX-style API: `POST /audio_query?text=…
/// &speaker=N` returns a query, `POST /synthesis?speaker=N` with that query
/// returns a WAV.
pub struct HttpEngine {
    pub name: String,
    pub url: String,
    pub speaker: u32,
}

impl Engine for HttpEngine {
    fn id(&self) -> String {
        format!("http|{}|{}|{}", self.name, self.url, self.speaker)
    }

    fn synthesize(&self, text: &str) -> Result<Audio, TtsError> {
        let engine = || self.name.clone();
        let client = reqwest::blocking::Client::builder()
            .timeout(LIMIT)
            .build()
            .map_err(|e| TtsError::Unavailable(format!("{}: {e}", self.name)))?;
        let base = self.url.trim_end_matches('/');
        let speaker = self.speaker.to_string();
        let query = client
            .post(format!("{base}/audio_query"))
            .query(&[("text", text), ("speaker", speaker.as_str())])
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.bytes())
            .map_err(|e| TtsError::Failed {
                engine: engine(),
                status: "audio_query".into(),
                stderr: e.to_string(),
            })?;
        let wav = client
            .post(format!("{base}/synthesis"))
            .query(&[("speaker", speaker.as_str())])
            .header("content-type", "application/json")
            .body(query)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.bytes())
            .map_err(|e| TtsError::Failed {
                engine: engine(),
                status: "synthesis".into(),
                stderr: e.to_string(),
            })?;
        let out = scratch("http", "wav");
        std::fs::write(&out, &wav)?;
        read_output(&self.name, &out)
    }
}
