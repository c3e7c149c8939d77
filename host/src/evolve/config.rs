//! `run.toml`: what an evolution run does and what it may spend.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::Selection;
use crate::error::{Error, Result};
use crate::units::HumanDuration;

/// Which children become candidate parents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keep {
    /// Every evaluated child (DGM's open-ended archive).
    All,
    /// Only children that beat their parent's visible score (autoresearch's
    /// keep-or-revert).
    Better,
}

/// The `[run]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Run id: letters, digits, `-`, `_`.
    pub name: String,
    /// Task suite (one of [`crate::tasks::SUITES`]).
    pub suite: String,
    /// Seed of parent selection.
    #[serde(default)]
    pub seed: u64,
    /// Generations after the initial variants.
    pub generations: u32,
    /// Children proposed per generation.
    pub children_per_generation: u32,
    /// Children improved and evaluated at once.
    #[serde(default = "one")]
    pub workers: u32,
    /// Parent selection.
    #[serde(default = "default_selection")]
    pub selection: Selection,
    /// Keep policy.
    #[serde(default = "default_keep")]
    pub keep: Keep,
    /// Initial variant directories, relative to the run file.
    pub initial: Vec<PathBuf>,
    /// The operator's policy file, relative to the run file.
    #[serde(default)]
    pub policy: Option<PathBuf>,
}

fn one() -> u32 {
    1
}
fn default_selection() -> Selection {
    Selection::Dgm
}
fn default_keep() -> Keep {
    Keep::All
}

/// Staged evaluation: a small subset first, the rest only above a threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Staged {
    /// Visible tasks in the first stage (0 = no staging).
    #[serde(default)]
    pub first: usize,
    /// First-stage pass rate needed for the full evaluation.
    #[serde(default)]
    pub threshold: f64,
}

impl Default for Staged {
    fn default() -> Self {
        Self { first: 0, threshold: 0.0 }
    }
}

/// Hard budgets; reaching one ends the run cleanly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Wall time of this invocation.
    #[serde(default)]
    pub wall: Option<HumanDuration>,
    /// Fuel across every guest call of this invocation.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// LLM tokens (prompt + completion) across the run.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Trainer GPU-seconds across the run.
    #[serde(default)]
    pub gpu_seconds: Option<u64>,
    /// Simulator steps across the run: the `simulator` service's and the
    /// reward-design suites' policy trainings.
    #[serde(default)]
    pub sim_steps: Option<u64>,
}

/// A whole `run.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// What to run.
    pub run: RunSection,
    /// Staged evaluation.
    #[serde(default)]
    pub staged: Staged,
    /// Budgets.
    #[serde(default)]
    pub budget: Budget,
}

impl RunConfig {
    /// Read `path`; relative paths inside are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("cannot read run file {}: {e}", path.display())))?;
        let mut c = Self::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in &mut c.run.initial {
            *p = base.join(&*p);
        }
        if let Some(p) = &mut c.run.policy {
            *p = base.join(&*p);
        }
        Ok(c)
    }

    /// Parse and validate a run file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let c: RunConfig = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    format!("{line}:")
                })
                .unwrap_or_default();
            Error::invalid(format!("{origin}:{at} {}", e.message()))
        })?;
        let bad = |m: String| Err(Error::invalid(format!("{origin}: {m}")));
        if c.run.name.is_empty() || !c.run.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
            return bad(format!("run.name `{}` must be letters, digits, - and _", c.run.name));
        }
        if crate::tasks::suite(&c.run.suite).is_none() {
            return bad(format!(
                "run.suite `{}` is not a suite this host has; available: {}",
                c.run.suite,
                crate::tasks::SUITES.join(", ")
            ));
        }
        if c.run.initial.is_empty() {
            return bad("run.initial must name at least one variant directory".into());
        }
        if c.run.workers == 0 || c.run.children_per_generation == 0 {
            return bad("run.workers and run.children_per_generation must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&c.staged.threshold) {
            return bad("staged.threshold is a pass rate between 0 and 1".into());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let ok = RunConfig::parse(
            "[run]\nname = \"r1\"\nsuite = \"arith\"\ngenerations = 2\nchildren_per_generation = 2\ninitial = [\"v\"]\nselection = \"dgm-h\"\n[budget]\nwall = \"1m\"\n",
            "run.toml",
        )
        .unwrap();
        assert_eq!(ok.run.selection, Selection::DgmH);
        assert_eq!(ok.run.keep, Keep::All);
        let e = RunConfig::parse("[run]\nname = \"r\"\nsuite = \"arith\"\ngenerations = 1\nchildren_per_generation = 1\ninitial = [\"v\"]\nbogus = 1\n", "run.toml")
            .unwrap_err();
        assert!(e.to_string().contains("run.toml:") && e.to_string().contains("bogus"), "{e}");
        let e = RunConfig::parse("[run]\nname = \"r\"\nsuite = \"poetry\"\ngenerations = 1\nchildren_per_generation = 1\ninitial = [\"v\"]\n", "run.toml")
            .unwrap_err();
        assert!(e.to_string().contains("not a suite"), "{e}");
    }
}
