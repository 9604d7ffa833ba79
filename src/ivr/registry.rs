//! The loaded dialplans, swapped as a whole on reload. A broken file
//! rejects the whole reload and the previous set keeps serving; calls hold
//! an `Arc` to the plan they started with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::dialplan::{load_dir_with_flows, Dialplan, DialplanError};
use crate::action::flow::Flows;

/// Shared, reloadable set of dialplans by contract id.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    prompts: PathBuf,
    plans: RwLock<Arc<BTreeMap<String, Arc<Dialplan>>>>,
    flows: RwLock<Arc<Flows>>,
}

type Loaded = (BTreeMap<String, Arc<Dialplan>>, Flows);

impl Registry {
    /// Load `dir`; fails if any file is broken.
    pub fn load(dir: &Path, prompts: &Path) -> Result<Registry, Vec<DialplanError>> {
        let (plans, flows) = Self::read(dir, prompts)?;
        Ok(Registry {
            dir: dir.to_path_buf(),
            prompts: prompts.to_path_buf(),
            plans: RwLock::new(Arc::new(plans)),
            flows: RwLock::new(Arc::new(flows)),
        })
    }

    fn read(dir: &Path, prompts: &Path) -> Result<Loaded, Vec<DialplanError>> {
        let (plans, flows) = load_dir_with_flows(dir, prompts)?;
        Ok((
            plans
                .into_iter()
                .map(|p| (p.contract.clone(), Arc::new(p)))
                .collect(),
            flows,
        ))
    }

    /// Re-read the folder. On any error nothing changes and the errors are
    /// returned; on success the new set replaces the old at once.
    pub fn reload(&self) -> Result<usize, Vec<DialplanError>> {
        let (plans, flows) = Self::read(&self.dir, &self.prompts)?;
        let n = plans.len();
        // A poisoned lock only means a reader panicked; the map is intact.
        let mut guard = self.plans.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(plans);
        *self.flows.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(flows);
        Ok(n)
    }

    pub fn get(&self, contract: &str) -> Option<Arc<Dialplan>> {
        self.snapshot().get(contract).cloned()
    }

    /// The flows the current dialplans are linked to.
    pub fn flows(&self) -> Arc<Flows> {
        self.flows.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn snapshot(&self) -> Arc<BTreeMap<String, Arc<Dialplan>>> {
        self.plans.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
