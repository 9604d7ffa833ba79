//! Audio for the phone line: load WAV files of any common format, mix to
//! mono, resample to 8 kHz with a band-limited (windowed-sinc) filter, and
//! hold the result ready in both G.711 laws.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::SystemTime;

use super::g711;
use crate::sip::sdp::Codec;

/// The telephone sample rate.
pub const RATE: u32 = 8000;
/// Samples in one 20 ms packet.
pub const FRAME: usize = 160;

/// Why audio could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("cannot read WAV file {path}")]
    Wav {
        path: String,
        #[source]
        source: hound::Error,
    },
    #[error("{path}: unsupported WAV format ({detail})")]
    Format { path: String, detail: String },
    #[error("{path}: no audio samples")]
    Empty { path: String },
}

/// 8 kHz mono audio, pre-encoded for both laws so playback is a copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub name: String,
    pub pcm: Vec<i16>,
    pub ulaw: Vec<u8>,
    pub alaw: Vec<u8>,
}

impl Prompt {
    pub fn from_pcm(name: impl Into<String>, pcm: Vec<i16>) -> Arc<Prompt> {
        let ulaw = pcm.iter().map(|&s| g711::linear_to_ulaw(s)).collect();
        let alaw = pcm.iter().map(|&s| g711::linear_to_alaw(s)).collect();
        Arc::new(Prompt {
            name: name.into(),
            pcm,
            ulaw,
            alaw,
        })
    }

    pub fn encoded(&self, codec: Codec) -> &[u8] {
        match codec {
            Codec::Pcmu => &self.ulaw,
            Codec::Pcma => &self.alaw,
        }
    }

    pub fn duration_ms(&self) -> u64 {
        self.pcm.len() as u64 * 1000 / RATE as u64
    }

    /// Load a WAV file and convert it for the phone.
    pub fn load(path: &Path) -> Result<Arc<Prompt>, AudioError> {
        let (samples, rate) = read_wav_mono(path)?;
        if samples.is_empty() {
            return Err(AudioError::Empty {
                path: path.display().to_string(),
            });
        }
        let pcm = to_i16(&resample(&samples, rate, RATE));
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Prompt::from_pcm(name, pcm))
    }
}

/// What identifies one version of a file: a replaced recording has a
/// new inode (a rename over it), or a new change time, modification time
/// or size (written in place).
type Stamp = (u64, u64, i64, i64, Option<SystemTime>, u64);

/// A recording longer than this is not kept (bytes of memory per entry
/// stay bounded): about 2.4 MB of 8 kHz audio in three encodings.
const RECORDED_MAX_SAMPLES: usize = 60 * RATE as usize;

/// Recorded prompts already converted, by file. A recording said on every
/// call (the fallback, a recorded menu) would otherwise be read and
/// resampled for each notification: ~15 ms of CPU each, which at 100
/// notifications a second took more than a core.
static RECORDED: LazyLock<Mutex<Recorded>> = LazyLock::new(Default::default);

type Recorded = HashMap<PathBuf, (Stamp, Arc<Prompt>)>;

/// More distinct recordings than any set of dialplans names: past it the
/// cache starts again rather than grow without bound.
const RECORDED_MAX: usize = 1024;

impl Prompt {
    /// [`Prompt::load`], converted once per version of the file: the
    /// file's metadata is read on every call, so a recording that was
    /// replaced is read again and one that was deleted is an error.
    pub fn load_cached(path: &Path) -> Result<Arc<Prompt>, AudioError> {
        use std::os::unix::fs::MetadataExt;
        let cache = || RECORDED.lock().unwrap_or_else(|e| e.into_inner());
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                cache().remove(path);
                return Err(AudioError::Wav {
                    path: path.display().to_string(),
                    source: hound::Error::IoError(e),
                });
            }
        };
        let modified = meta.modified().ok();
        let stamp: Stamp = (
            meta.dev(),
            meta.ino(),
            meta.ctime(),
            meta.ctime_nsec(),
            modified,
            meta.len(),
        );
        if let Some((s, p)) = cache().get(path) {
            if *s == stamp {
                return Ok(p.clone());
            }
        }
        let p = Prompt::load(path)?;
        // A file changed within the last two seconds may still be being
        // written, or be rewritten within the same time stamp: read it
        // again next time (git's "racily clean" rule).
        let settled = modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age.as_secs() >= 2);
        let mut c = cache();
        if settled && p.pcm.len() <= RECORDED_MAX_SAMPLES {
            if c.len() >= RECORDED_MAX {
                c.clear();
            }
            c.insert(path.to_path_buf(), (stamp, p.clone()));
        } else {
            c.remove(path);
        }
        Ok(p)
    }
}

/// Read any PCM or float WAV into mono f32 in [-1, 1] and its rate.
pub fn read_wav_mono(path: &Path) -> Result<(Vec<f32>, u32), AudioError> {
    let p = path.display().to_string();
    let mut reader = hound::WavReader::open(path).map_err(|source| AudioError::Wav {
        path: p.clone(),
        source,
    })?;
    let spec = reader.spec();
    // The resampler's work grows with 8000 / rate: a 2 KB file that
    // claims 1 Hz would take minutes and gigabytes.
    if !(1000..=768_000).contains(&spec.sample_rate) {
        return Err(AudioError::Format {
            path: p,
            detail: format!("sample rate {} Hz", spec.sample_rate),
        });
    }
    let channels = spec.channels.max(1) as usize;
    let mut interleaved: Vec<f32> = Vec::new();
    // espeak-ng's --stdout header claims ~1e9 frames; a short read at the
    // end is treated as the end of data rather than an error.
    let tolerate = |e: &hound::Error| matches!(e, hound::Error::IoError(_));
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => {
            for s in reader.samples::<f32>() {
                match s {
                    Ok(v) => interleaved.push(v),
                    Err(e) if tolerate(&e) => break,
                    Err(source) => return Err(AudioError::Wav { path: p, source }),
                }
            }
        }
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            for s in reader.samples::<i32>() {
                match s {
                    Ok(v) => interleaved.push(v as f32 * scale),
                    Err(e) if tolerate(&e) => break,
                    Err(source) => return Err(AudioError::Wav { path: p, source }),
                }
            }
        }
        (fmt, bits) => {
            return Err(AudioError::Format {
                path: p,
                detail: format!("{fmt:?} {bits}-bit"),
            })
        }
    }
    let mono = interleaved
        .chunks(channels)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect();
    Ok((mono, spec.sample_rate))
}

/// Convert f32 to i16 with saturation.
pub fn to_i16(samples: &[f32]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// Band-limited resampling by a Blackman-windowed sinc. The cut-off sits
/// at 0.45 of the lower of the two rates, so nothing folds back into the
/// telephone band. The filter is tabulated once per phase (the ratio
/// reduced to L/M has L phases), so each output sample costs one dot
/// product.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() || from == 0 || to == 0 {
        return input.to_vec();
    }
    let g = gcd(from, to);
    let (l, m) = ((to / g) as usize, (from / g) as u64);
    let ratio = to as f64 / from as f64;
    // Cut-off relative to the input rate.
    let cutoff = 0.45 * ratio.min(1.0) * 2.0;
    const ZERO_CROSSINGS: f64 = 16.0;
    let half = (ZERO_CROSSINGS / cutoff).ceil() as i64;
    let taps = (2 * half) as usize;
    let kernel = |x: f64| -> f64 {
        let arg = x * cutoff;
        let sinc = if arg.abs() < 1e-12 {
            1.0
        } else {
            (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg)
        };
        let w = 0.5 * (x / half as f64 + 1.0);
        let window = if (0.0..=1.0).contains(&w) {
            0.42 - 0.5 * (2.0 * std::f64::consts::PI * w).cos()
                + 0.08 * (4.0 * std::f64::consts::PI * w).cos()
        } else {
            0.0
        };
        sinc * window * cutoff
    };
    // Odd rate pairs could need very many phases; compute those directly.
    let table: Option<Vec<f32>> = (l <= 4096).then(|| {
        let mut t = Vec::with_capacity(l * taps);
        for phase in 0..l {
            let frac = phase as f64 / l as f64;
            for j in 0..taps {
                let k = j as i64 - half + 1;
                t.push(kernel(frac - k as f64) as f32);
            }
        }
        t
    });
    let out_len = ((input.len() as u64 * l as u64) / m) as usize;
    let mut out = Vec::with_capacity(out_len);
    for n in 0..out_len {
        let pos = n as u64 * m;
        let centre = (pos / l as u64) as i64;
        let phase = (pos % l as u64) as usize;
        let first = centre - half + 1;
        let mut acc = 0.0f32;
        match &table {
            Some(t) => {
                let coefs = &t[phase * taps..(phase + 1) * taps];
                if first >= 0 && (first as usize + taps) <= input.len() {
                    let xs = &input[first as usize..first as usize + taps];
                    acc = xs.iter().zip(coefs).map(|(x, c)| x * c).sum();
                } else {
                    for (j, c) in coefs.iter().enumerate() {
                        let k = first + j as i64;
                        if k >= 0 && (k as usize) < input.len() {
                            acc += input[k as usize] * c;
                        }
                    }
                }
            }
            None => {
                let t = pos as f64 / l as f64;
                for j in 0..taps {
                    let k = first + j as i64;
                    if k >= 0 && (k as usize) < input.len() {
                        acc += input[k as usize] * kernel(t - k as f64) as f32;
                    }
                }
            }
        }
        out.push(acc);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Write 8 kHz mono 16-bit audio to a WAV file.
pub fn write_wav(path: &Path, pcm: &[i16]) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    for &s in pcm {
        w.write_sample(s)?;
    }
    w.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, rate: u32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn passes_the_voice_band_and_stops_aliases() {
        // 1 kHz survives 48k -> 8k at full level.
        let pass = resample(&tone(1000.0, 48000, 0.5), 48000, 8000);
        assert_eq!(pass.len(), 4000);
        let r = rms(&pass[200..3800]);
        assert!((r - 0.3536).abs() < 0.02, "rms {r}");
        // 7 kHz would alias to 1 kHz with sample dropping; it must vanish.
        let stop = resample(&tone(7000.0, 48000, 0.5), 48000, 8000);
        assert!(
            rms(&stop[200..3800]) < 0.005,
            "alias rms {}",
            rms(&stop[200..3800])
        );
        // Upsampling 22050 -> 8000 and 8000 -> 16000 keep the length ratio.
        assert!((resample(&tone(440.0, 22050, 1.0), 22050, 8000).len() as i64 - 8000).abs() <= 1);
    }

    #[test]
    fn a_recording_is_converted_once_per_version_of_its_file() {
        let dir = std::env::temp_dir().join(format!("callout-audio-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("prompt.wav");
        write_wav(&path, &[1000; 800]).unwrap();
        // Just written: read again until it has settled.
        let fresh = Prompt::load_cached(&path).unwrap();
        assert!(!Arc::ptr_eq(&fresh, &Prompt::load_cached(&path).unwrap()));
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let a = Prompt::load_cached(&path).unwrap();
        let b = Prompt::load_cached(&path).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second load must come from the cache"
        );
        // Replaced by a different recording (another size): read again.
        write_wav(&path, &[-1000; 1600]).unwrap();
        let c = Prompt::load_cached(&path).unwrap();
        assert_eq!(c.pcm.len(), 1600);
        assert!(c.pcm.iter().all(|&v| v < 0));
        // Rewritten in place, same size, its time set back (`cp -p`): the
        // change time still tells.
        let settle = |path: &Path| {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(old)
                .unwrap()
        };
        settle(&path);
        let d = Prompt::load_cached(&path).unwrap();
        assert!(Arc::ptr_eq(&d, &Prompt::load_cached(&path).unwrap()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_wav(&path, &[2000; 1600]).unwrap();
        settle(&path);
        let e = Prompt::load_cached(&path).unwrap();
        assert!(
            e.pcm.iter().all(|&v| v > 0),
            "re-read after a same-size rewrite"
        );
        // Deleted: an error, never the stale copy.
        std::fs::remove_file(&path).unwrap();
        assert!(Prompt::load_cached(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
