//! Text to 8 kHz telephone audio: engines, readers, loudness, cache.

pub mod cache;
pub mod engine;
pub mod readers;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::ivr::dialplan::Language;
use crate::media::audio::{resample, to_i16, write_wav, Prompt, RATE};
use cache::Cache;
use engine::{Engine, Espeak, OpenJtalk, TtsError};

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
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            cache_dir: std::env::var_os("CALLOUT_TTS_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("data/tts-cache")),
            cache_max_bytes: 256 << 20,
            jtalk_dictionary: PathBuf::from(engine::DEBIAN_DICTIONARY),
            jtalk_voice: std::env::var_os("CALLOUT_JTALK_VOICE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("voices/mei_normal.htsvoice")),
            espeak_voice_en: "en-us".into(),
        }
    }
}

/// The synthesiser: picks the engine for a language, renders through the
/// cache, and returns phone-ready prompts.
pub struct Tts {
    cache: Cache,
    ja: Result<Box<dyn Engine>, String>,
    en: Box<dyn Engine>,
    pub stats: TtsStats,
}

impl Tts {
    pub fn new(cfg: &TtsConfig) -> std::io::Result<Tts> {
        let ja = OpenJtalk::new(&cfg.jtalk_dictionary, &cfg.jtalk_voice)
            .map(|e| Box::new(e) as Box<dyn Engine>)
            .map_err(|e| e.to_string());
        Ok(Tts {
            cache: Cache::new(&cfg.cache_dir, cfg.cache_max_bytes)?,
            ja,
            en: Box::new(Espeak::new(&cfg.espeak_voice_en)),
            stats: TtsStats::default(),
        })
    }

    /// Is a voice for `lang` usable (for `dialplan check`)?
    pub fn available(&self, lang: Language) -> Result<(), String> {
        match lang {
            Language::Ja => self.ja.as_ref().map(|_| ()).map_err(|e| e.clone()),
            Language::En => Ok(()),
        }
    }

    fn engine(&self, lang: Language) -> Result<&dyn Engine, TtsError> {
        match lang {
            Language::Ja => self
                .ja
                .as_deref()
                .map_err(|e| TtsError::Unavailable(e.clone())),
            Language::En => Ok(self.en.as_ref()),
        }
    }

    /// Render `text` (already through the readers) to an 8 kHz prompt,
    /// from the cache when it is there. Blocking: run it off the async
    /// workers (`spawn_blocking`).
    pub fn render(&self, lang: Language, text: &str) -> Result<Arc<Prompt>, TtsError> {
        let engine = self.engine(lang)?;
        let key = Cache::key(&engine.id(), text);
        if let Some(path) = self.cache.get(&key) {
            if let Ok(p) = Prompt::load(&path) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(p);
            }
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let audio = engine.synthesize(text).inspect_err(|_| {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        })?;
        let pcm = to_i16(&normalise(&resample(&audio.samples, audio.rate, RATE)));
        let path = self.cache.path(&key);
        // Write under a temporary name and rename, so a reader never sees
        // half a file.
        let tmp = path.with_extension("part");
        write_wav(&tmp, &pcm).map_err(|e| TtsError::BadOutput {
            engine: "cache".into(),
            detail: e.to_string(),
        })?;
        std::fs::rename(&tmp, &path)?;
        let _ = self.cache.evict();
        Ok(Prompt::from_pcm(
            text.chars().take(40).collect::<String>(),
            pcm,
        ))
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
        ] {
            if let Phrase::Text(t) = phrase {
                // Phrases with variables depend on the notification.
                if template_variables(t).is_empty() {
                    self.render(plan.language, t)?;
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
