//! Where callout finds the files it ships: the Japanese voice, the
//! recorded prompts and the sample dialplans, wherever it is started from
//! (a service manager starts it in `/`).
//!
//! A relative path (the defaults `voices/mei_normal.htsvoice`, `prompts`,
//! `dialplans`, or a relative path in `callout.toml`) is looked for, in
//! order:
//!
//! 1. as given, from the working directory (a clone of the repository);
//! 2. under the install prefix `/usr/share/callout` (the Debian package);
//! 3. next to the executable, then in `../share/callout` relative to it
//!    (an unpacked tarball, `/usr/local/bin` + `/usr/local/share/callout`);
//! 4. in the source tree the binary was built from (`cargo run`, tests).
//!
//! An absolute path is used as given, and only there: a configured file
//! that is missing is an error, never a silent switch to another copy.
//! A file found nowhere is an error naming every place looked.

use std::path::{Path, PathBuf};

/// Where the Debian package puts the shipped data.
pub const PREFIX: &str = "/usr/share/callout";

/// The Japanese voice shipped with callout (HTS voice "Mei").
pub const JTALK_VOICE: &str = "voices/mei_normal.htsvoice";

/// Where the Debian package puts the sample dialplans (looked in for
/// `dialplans` after the prefix).
pub const EXAMPLES: &str = "/usr/share/doc/callout/examples";

/// A shipped file or folder found in none of the places looked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} not found; looked in: {}{hint}", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
pub struct NotFound {
    /// What was looked for, e.g. "the Japanese voice".
    pub what: String,
    /// Every place looked, in order.
    pub tried: Vec<PathBuf>,
    /// What to do about it (starts with "; " when present).
    pub hint: String,
}

/// The places a path is looked for, in order (see the module docs).
pub fn candidates(path: &Path) -> Vec<PathBuf> {
    if path.is_absolute() {
        return vec![path.to_path_buf()];
    }
    let mut out = vec![path.to_path_buf(), Path::new(PREFIX).join(path)];
    if path == Path::new("dialplans") {
        out.push(Path::new(EXAMPLES).join(path));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(path));
        if let Some(up) = dir.parent() {
            out.push(up.join("share/callout").join(path));
        }
    }
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(path));
    let mut seen = Vec::new();
    out.retain(|p| {
        let new = !seen.contains(p);
        seen.push(p.clone());
        new
    });
    out
}

/// The first place `path` exists (a file or a folder as `dir` says).
pub fn find(what: &str, path: &Path, dir: bool) -> Result<PathBuf, NotFound> {
    let tried = candidates(path);
    tried
        .iter()
        .find(|p| if dir { p.is_dir() } else { p.is_file() })
        .cloned()
        .ok_or_else(|| NotFound {
            what: what.to_string(),
            tried,
            hint: String::new(),
        })
}

/// The Japanese voice: `configured` (`jtalk_voice` in callout.toml, or
/// `CALLOUT_JTALK_VOICE`), else the shipped one.
pub fn jtalk_voice(configured: Option<&Path>) -> Result<PathBuf, NotFound> {
    let env = std::env::var_os("CALLOUT_JTALK_VOICE").map(PathBuf::from);
    let path = configured
        .map(Path::to_path_buf)
        .or(env)
        .unwrap_or_else(|| PathBuf::from(JTALK_VOICE));
    find("the Japanese voice", &path, false).map_err(|mut e| {
        e.hint = "; install the package's voice again, or set jtalk_voice in callout.toml".into();
        e
    })
}

/// The recorded prompts folder.
pub fn prompts(configured: &Path) -> Result<PathBuf, NotFound> {
    find("the recorded prompts folder", configured, true).map_err(|mut e| {
        e.hint = "; set prompts in callout.toml".into();
        e
    })
}

/// The dialplans folder.
pub fn dialplans(configured: &Path) -> Result<PathBuf, NotFound> {
    find("the dialplans folder", configured, true).map_err(|mut e| {
        e.hint = "; set dialplans in callout.toml".into();
        e
    })
}

/// Make the configuration's prompts and dialplans folders point at what
/// exists, as absolute paths, so nothing depends on the working directory
/// afterwards (a reload after a `chdir` reads the same folders).
pub fn resolve_config(config: &mut crate::config::Config) -> Result<(), NotFound> {
    config.prompts = absolute(prompts(&config.prompts)?);
    config.dialplans = absolute(dialplans(&config.dialplans)?);
    Ok(())
}

/// The Japanese voice for `callout serve`: a start-up error when a loaded
/// contract speaks with it and it is found nowhere; otherwise (no such
/// contract) a warning and the path as asked, so a contract added by a
/// later reload falls back to its recorded prompt and says why.
pub fn service_voice(
    config: &crate::config::Config,
    registry: &crate::ivr::registry::Registry,
) -> Result<PathBuf, NotFound> {
    match jtalk_voice(config.jtalk_voice.as_deref()) {
        Ok(v) => Ok(absolute(v)),
        Err(e) => {
            let users: Vec<String> = registry
                .snapshot()
                .values()
                .filter(|p| uses_jtalk(p))
                .map(|p| p.contract.clone())
                .collect();
            if !users.is_empty() {
                return Err(NotFound {
                    hint: format!("{} (needed by contract {})", e.hint, users.join(", ")),
                    ..e
                });
            }
            tracing::warn!("{e}");
            Ok(e.tried.into_iter().next().unwrap_or_default())
        }
    }
}

/// Whether a dialplan speaks with the Open JTalk voice.
pub fn uses_jtalk(p: &crate::ivr::dialplan::Dialplan) -> bool {
    use crate::ivr::dialplan::Language;
    matches!(
        (p.voice.as_deref(), p.language),
        (None, Language::Ja) | (Some("ja"), _)
    )
}

/// `p` made absolute against the working directory (unchanged if that
/// cannot be read).
pub fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        return p;
    }
    std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_looked_for_everywhere_absolute_only_as_given() {
        let c = candidates(Path::new("prompts"));
        assert_eq!(c[0], PathBuf::from("prompts"));
        assert_eq!(c[1], PathBuf::from("/usr/share/callout/prompts"));
        assert_eq!(
            c.last().unwrap(),
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts")
        );
        assert!(candidates(Path::new("dialplans"))
            .contains(&PathBuf::from("/usr/share/doc/callout/examples/dialplans")));
        assert_eq!(
            candidates(Path::new("/srv/voice.htsvoice")),
            vec![PathBuf::from("/srv/voice.htsvoice")]
        );
    }

    #[test]
    fn the_source_tree_is_the_last_resort_and_a_miss_names_every_place() {
        let found = find("voice", Path::new(JTALK_VOICE), false).unwrap();
        assert!(found.is_file(), "{}", found.display());
        let e = find("the thing", Path::new("no/such/file.bin"), false).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("the thing not found; looked in: no/such/file.bin, /usr/share/callout/no/such/file.bin, "), "{text}");
        assert!(text.contains(env!("CARGO_MANIFEST_DIR")), "{text}");
        let e = jtalk_voice(Some(Path::new("/nonexistent/v.htsvoice"))).unwrap_err();
        assert_eq!(e.tried, vec![PathBuf::from("/nonexistent/v.htsvoice")]);
        assert!(e.to_string().contains("jtalk_voice"), "{e}");
    }
}
