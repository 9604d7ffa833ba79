//! Targets for the TOML files an operator edits and the API accepts for
//! validation: dialplans and action flows.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::action::flow::{self, Flows};
use crate::ivr::dialplan;
use crate::ivr::inputs::EnvAccess;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped flows, so a dialplan's actions can link to them.
fn flows() -> &'static Flows {
    static F: OnceLock<Flows> = OnceLock::new();
    F.get_or_init(|| flow::load_dir(&root().join("dialplans")).unwrap_or_default())
}

/// A dialplan as `POST /v1/dialplans/validate` loads it: only
/// `CALLOUT_`-prefixed environment variables may be read.
pub fn dialplan(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let prompts: PathBuf = root().join("prompts");
    let env = EnvAccess::Prefixed("CALLOUT_".into());
    dialplan::load_str_env(text, Path::new("fuzz.toml"), &prompts, flows(), &env).is_ok()
}

/// An action flow file.
pub fn flow(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    flow::load_str(text, Path::new("flows/fuzz.toml")).is_ok()
}
