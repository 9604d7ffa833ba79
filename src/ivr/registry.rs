//! The loaded dialplans, swapped as a whole on reload. A broken file
//! rejects the whole reload and the previous set keeps serving; calls hold
//! an `Arc` to the plan they started with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::dialplan::{load_dir, Dialplan, DialplanError};

/// Shared, reloadable set of dialplans by contract id.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    prompts: PathBuf,
    plans: RwLock<Arc<BTreeMap<String, Arc<Dialplan>>>>,
}

impl Registry {
    /// Load `dir`; fails if any file is broken.
    pub fn load(dir: &Path, prompts: &Path) -> Result<Registry, Vec<DialplanError>> {
        let plans = Self::read(dir, prompts)?;
        Ok(Registry {
            dir: dir.to_path_buf(),
            prompts: prompts.to_path_buf(),
            plans: RwLock::new(Arc::new(plans)),
        })
    }

    fn read(
        dir: &Path,
        prompts: &Path,
    ) -> Result<BTreeMap<String, Arc<Dialplan>>, Vec<DialplanError>> {
        Ok(load_dir(dir, prompts)?
            .into_iter()
            .map(|p| (p.contract.clone(), Arc::new(p)))
            .collect())
    }

    /// Re-read the folder. On any error nothing changes and the errors are
    /// returned; on success the new set replaces the old at once.
    pub fn reload(&self) -> Result<usize, Vec<DialplanError>> {
        let plans = Self::read(&self.dir, &self.prompts)?;
        let n = plans.len();
        // A poisoned lock only means a reader panicked; the map is intact.
        let mut guard = self.plans.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(plans);
        Ok(n)
    }

    pub fn get(&self, contract: &str) -> Option<Arc<Dialplan>> {
        self.snapshot().get(contract).cloned()
    }

    pub fn snapshot(&self) -> Arc<BTreeMap<String, Arc<Dialplan>>> {
        self.plans.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
