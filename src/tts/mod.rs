//! Text to 8 kHz telephone audio: engines, readers, loudness, cache.

pub mod cache;
pub mod engine;
pub mod flight;
pub mod join;
pub mod memory;
pub mod readers;
pub mod sentences;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::ivr::dialplan::Language;
use crate::media::audio::{resample, to_i16, write_wav, Prompt, RATE};
use cache::Cache;
use engine::{CommandEngine, Engine, Espeak, HttpEngine, OpenJtalk, TtsError};

/// A site-defined voice, selected by a dialplan's `voice = "NAME"`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum VoiceConfig {
    /// Any engine with a command line that writes a WAV: `argv` with
    /// `{text}` and `{out}` placeholders, run without a shell.
    Command { argv: Vec<String> },
    /// An engine server with a VOICEVOX-style API.
    Http {
        url: String,
        #[serde(default)]
        speaker: u32,
    },
}

/// Target loudness, as RMS relative to full scale (about -18 dBFS).
const TARGET_RMS: f32 = 0.125;
/// Never let a peak exceed this (about -1 dBFS): no clipping after G.711.
const MAX_PEAK: f32 = 0.89;

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct TtsStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub failures: AtomicU64,
}

/// Where the engines and their voices live.
#[derive(Debug, Clone)]
pub struct TtsConfig {
    pub cache_dir: PathBuf,
    pub cache_max_bytes: u64,
    pub jtalk_dictionary: PathBuf,
    pub jtalk_voice: PathBuf,
    pub espeak_voice_en: String,
    /// Site-defined voices by name.
    pub voices: BTreeMap<String, VoiceConfig>,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            cache_dir: std::env::var_os("CALLOUT_TTS_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("data/tts-cache")),
            cache_max_bytes: 256 << 20,
            jtalk_dictionary: PathBuf::from(engine::DEBIAN_DICTIONARY),
            // Found wherever callout runs (crate::paths); when it is
            // nowhere, the path as asked, so synthesis names it.
            jtalk_voice: crate::paths::jtalk_voice(None).unwrap_or_else(|_| {
                std::env::var_os("CALLOUT_JTALK_VOICE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(crate::paths::JTALK_VOICE))
            }),
            espeak_voice_en: "en-us".into(),
            voices: BTreeMap::new(),
        }
    }
}

/// The synthesiser: picks the engine for a language, renders through the
/// cache, and returns phone-ready prompts.
pub struct Tts {
    cache: Cache,
    /// Hits without reading the disk; see [`memory`].
    memory: memory::MemoryCache,
    ja: Result<Arc<dyn Engine>, String>,
    en: Arc<dyn Engine>,
    /// Site voices and espeak-ng voices asked for as `espeak:NAME`.
    voices: Mutex<HashMap<String, Arc<dyn Engine>>>,
    /// Phrases being synthesised: one engine run per phrase at a time.
    flights: flight::Flights,
    pub stats: TtsStats,
}

impl Tts {
    pub fn new(cfg: &TtsConfig) -> std::io::Result<Tts> {
        let ja = OpenJtalk::new(&cfg.jtalk_dictionary, &cfg.jtalk_voice)
            .map(|e| Arc::new(e) as Arc<dyn Engine>)
            .map_err(|e| e.to_string());
        let mut voices: HashMap<String, Arc<dyn Engine>> = HashMap::new();
        for (name, v) in &cfg.voices {
            let engine: Arc<dyn Engine> = match v {
                VoiceConfig::Command { argv } => Arc::new(CommandEngine {
                    name: name.clone(),
                    argv: argv.clone(),
                }),
                VoiceConfig::Http { url, speaker } => Arc::new(HttpEngine {
                    name: name.clone(),
                    url: url.clone(),
                    speaker: *speaker,
                }),
            };
            voices.insert(name.clone(), engine);
        }
        Ok(Tts {
            cache: Cache::new(&cfg.cache_dir, cfg.cache_max_bytes)?,
            memory: memory::MemoryCache::new(memory::DEFAULT_MAX_BYTES),
            ja,
            en: Arc::new(Espeak::new(&cfg.espeak_voice_en)),
            voices: Mutex::new(voices),
            flights: flight::Flights::default(),
            stats: TtsStats::default(),
        })
    }

    /// The engine for a dialplan: its `voice` when set (`ja`, `en`,
    /// `espeak:NAME`, or a site voice), else the language's default.
    fn engine(&self, lang: Language, voice: Option<&str>) -> Result<Arc<dyn Engine>, TtsError> {
        match (voice, lang) {
            (None | Some("ja"), Language::Ja) | (Some("ja"), _) => {
                self.ja.clone().map_err(TtsError::Unavailable)
            }
            (None | Some("en"), _) => Ok(self.en.clone()),
            (Some(name), _) => {
                let mut voices = self.voices.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(e) = voices.get(name) {
                    return Ok(e.clone());
                }
                match name.strip_prefix("espeak:") {
                    Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_+".contains(&b)) => {
                        let e: Arc<dyn Engine> = Arc::new(Espeak::new(v));
                        voices.insert(name.to_string(), e.clone());
                        Ok(e)
                    }
                    _ => Err(TtsError::Unavailable(format!(
                        "unknown voice {name:?} (use ja, en, espeak:NAME, or a voice defined in callout.toml)"
                    ))),
                }
            }
        }
    }

    /// Render `text` (already through the readers) to an 8 kHz prompt,
    /// from the cache when it is there. Blocking: run it off the async
    /// workers (`spawn_blocking`).
    pub fn render(&self, lang: Language, text: &str) -> Result<Arc<Prompt>, TtsError> {
        self.render_voice(lang, None, text)
    }

    /// As [`Tts::render`], with a dialplan's voice.
    pub fn render_voice(
        &self,
        lang: Language,
        voice: Option<&str>,
        text: &str,
    ) -> Result<Arc<Prompt>, TtsError> {
        let engine = self.engine(lang, voice)?;
        let key = Cache::key(&engine.id(), text);
        if let Some(p) = self.cached(&key) {
            return Ok(p);
        }
        // Another thread may be synthesising it: wait for its result.
        let _turn = self.flights.enter(&key);
        if let Some(p) = self.cached(&key) {
            return Ok(p);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        // Where a synthesis' time goes (the time to first audio is one).
        let t0 = std::time::Instant::now();
        let audio = engine.synthesize(text).inspect_err(|_| {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        })?;
        let t_engine = t0.elapsed();
        let pcm = to_i16(&normalise(&resample(&audio.samples, audio.rate, RATE)));
        let t_convert = t0.elapsed();
        let path = self.cache.path(&key);
        // Write under a temporary name and rename, so a reader never sees
        // half a file. The name is this render's own: the same phrase can
        // be rendered twice at once (a dialplan's fixed phrases warming up
        // while the first notification needs one of them), and a shared
        // name let one rename take the other's file away.
        static PART: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = path.with_extension(format!(
            "part-{}-{}",
            std::process::id(),
            PART.fetch_add(1, Ordering::Relaxed)
        ));
        write_wav(&tmp, &pcm).map_err(|e| TtsError::BadOutput {
            engine: "cache".into(),
            detail: e.to_string(),
        })?;
        if let Err(e) = std::fs::rename(&tmp, &path) {
            // The audio is here already: only the disk copy is lost.
            tracing::warn!(error = %e, "cannot store a rendered prompt in the cache");
            let _ = std::fs::remove_file(&tmp);
        }
        let t_store = t0.elapsed();
        let _ = self.cache.evict_keeping(&self.memory.untouched_hits());
        let t_evict = t0.elapsed();
        let p = Prompt::from_pcm(text.chars().take(40).collect::<String>(), pcm);
        self.memory.insert(&key, p.clone());
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        tracing::debug!(
            chars = text.chars().count(),
            audio_ms = p.duration_ms(),
            engine_ms = ms(t_engine),
            convert_ms = ms(t_convert - t_engine),
            store_ms = ms(t_store - t_convert),
            evict_ms = ms(t_evict - t_store),
            total_ms = ms(t0.elapsed()),
            "synthesised"
        );
        Ok(p)
    }

    /// The phrase from memory, else from the disk cache (then kept in
    /// memory).
    fn cached(&self, key: &str) -> Option<Arc<Prompt>> {
        if let Some(hit) = self.memory.get(key, std::time::Instant::now()) {
            if hit.touch_disk {
                // Refreshes the file's place in the disk cache's LRU.
                let _ = self.cache.get(key);
            }
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Some(hit.prompt);
        }
        let path = self.cache.get(key)?;
        let p = Prompt::load(&path).ok()?;
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        self.memory.insert(key, p.clone());
        Some(p)
    }

    /// Render the fixed phrases of a dialplan (menu, greetings, "invalid
    /// key", "goodbye", ...) so calls find them in the cache. Returns the
    /// first failure, which means the dialplan's voice is unusable.
    pub fn prewarm(&self, plan: &crate::ivr::dialplan::Dialplan) -> Result<usize, TtsError> {
        use crate::ivr::dialplan::{template_variables, Phrase};
        let p = &plan.phrases;
        let mut n = 0;
        for phrase in [
            &plan.menu.prompt,
            &p.invalid_key,
            &p.goodbye,
            &p.acked,
            &p.passed,
            &p.left,
            &p.resolved,
            &p.confirm,
            &p.enter_pin,
            &p.wrong_pin,
            &p.locked,
            &p.action_requested,
        ]
        .into_iter()
        .chain(
            crate::ivr::dialplan::ACTION_SAYS
                .iter()
                .map(|&s| p.action(s)),
        )
        .chain(plan.actions.values().flat_map(|a| a.phrases.values()))
        {
            if let Phrase::Text(t) = phrase {
                // Phrases with variables depend on the notification.
                if template_variables(t).is_empty() {
                    self.render_voice(plan.language, plan.voice.as_deref(), t)?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

/// Bring speech to the target loudness without letting any peak clip.
pub fn normalise(x: &[f32]) -> Vec<f32> {
    let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if peak == 0.0 {
        return x.to_vec();
    }
    // Loudness over the voiced part only, so pauses do not inflate gain.
    let voiced: Vec<f32> = x
        .iter()
        .copied()
        .filter(|v| v.abs() > peak * 0.05)
        .collect();
    let rms = (voiced.iter().map(|v| v * v).sum::<f32>() / voiced.len().max(1) as f32).sqrt();
    let gain = (TARGET_RMS / rms.max(1e-6)).min(MAX_PEAK / peak);
    x.iter().map(|v| v * gain).collect()
}

/// Render one phrase to a WAV file exactly as a call would play it.
pub fn say_to_file(
    tts: &Tts,
    lang: Language,
    text: &str,
    out: &Path,
) -> anyhow::Result<Arc<Prompt>> {
    let p = tts.render(lang, text)?;
    write_wav(out, &p.pcm)?;
    Ok(p)
}
