//! `run.toml`: what an evolution run does and what it may spend.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::Selection;
use crate::caps::manifest::{error_at, parse_toml};
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
    ///
    /// Errors: [`Error::Invalid`] (exit 2) when the file cannot be read, does
    /// not parse, or names an initial variant or a policy file that is not
    /// there; each message is `file:line:col: key: what is wrong; the fix`,
    /// like a manifest's.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("cannot read run file {}: {e}", path.display())))?;
        let origin = path.display().to_string();
        let mut c = Self::parse(&text, &origin)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for (i, p) in c.run.initial.iter_mut().enumerate() {
            *p = base.join(&*p);
            if let Err(why) = crate::variant::check_variant_dir(p) {
                let why = why.to_string();
                return Err(error_at(
                    &text,
                    &origin,
                    &format!("run.initial[{i}]"),
                    &format!("{why} (paths in run.initial are relative to the run file's folder)"),
                ));
            }
        }
        if let Some(p) = &mut c.run.policy {
            *p = base.join(&*p);
            if !p.is_file() {
                return Err(error_at(
                    &text,
                    &origin,
                    "run.policy",
                    &format!(
                        "the policy file {} does not exist; fix the path (relative to the run file's folder) \
                         or remove the key for the built-in policy",
                        p.display()
                    ),
                ));
            }
        }
        Ok(c)
    }

    /// Parse and validate a run file's text; `origin` names it in errors,
    /// which read `origin:line:col: key: message; fix`.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let c: RunConfig = parse_toml(text, origin).map_err(|e| match e {
            // A value of the wrong type or range: say what fits.
            Error::Invalid(m) if m.contains("invalid value") || m.contains("invalid type") => {
                Error::Invalid(format!("{m}; see docs/evolve.md for what each key takes"))
            }
            other => other,
        })?;
        let bad = |key: &str, m: String| Err(error_at(text, origin, key, &m));
        if c.run.name.is_empty() || !c.run.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
            return bad("run.name", format!("`{}` is not a run id; use letters, digits, - and _", c.run.name));
        }
        if c.run.suite == crate::tasks::humaneval::suite::NAME {
            if let Err(e) = crate::tasks::humaneval::problems() {
                return bad("run.suite", e.to_string());
            }
        }
        if crate::tasks::suite(&c.run.suite).is_none() {
            return bad(
                "run.suite",
                format!(
                    "`{}` is not a suite this host has; use one of: {}",
                    c.run.suite,
                    crate::tasks::SUITES.join(", ")
                ),
            );
        }
        if c.run.initial.is_empty() {
            return bad("run.initial", "name at least one variant directory".into());
        }
        if c.run.workers == 0 {
            return bad("run.workers", "must be at least 1".into());
        }
        if c.run.children_per_generation == 0 {
            return bad("run.children_per_generation", "must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&c.staged.threshold) {
            return bad("staged.threshold", "is a pass rate; give a number between 0 and 1".into());
        }
        let b = &c.budget;
        if b.wall.is_some_and(|w| w.0.is_zero()) {
            return bad(
                "budget.wall",
                "a zero wall budget ends the run before it starts; give e.g. \"10m\" or remove the key".into(),
            );
        }
        for (key, v) in [
            ("budget.fuel", b.fuel),
            ("budget.tokens", b.tokens),
            ("budget.gpu_seconds", b.gpu_seconds),
            ("budget.sim_steps", b.sim_steps),
        ] {
            if v == Some(0) {
                return bad(
                    key,
                    "a zero budget ends the run before it starts; give a positive number or remove the key".into(),
                );
            }
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

    #[test]
    fn a_bad_value_names_the_file_line_key_and_fix() {
        let text = "[run]\nname = \"r\"\nsuite = \"arith\"\ngenerations = -1\nchildren_per_generation = 1\ninitial = [\"v\"]\n";
        let e = RunConfig::parse(text, "r1.toml").unwrap_err().to_string();
        assert!(e.starts_with("r1.toml:4:") && e.contains("run.generations") && e.contains("docs/evolve.md"), "{e}");
        let text =
            "[run]\nname = \"r\"\nsuite = \"arith\"\ngenerations = 1\nchildren_per_generation = 0\ninitial = [\"v\"]\n";
        let e = RunConfig::parse(text, "r1.toml").unwrap_err().to_string();
        assert!(e.starts_with("r1.toml:5:") && e.contains("run.children_per_generation: must be at least 1"), "{e}");
    }

    #[test]
    fn a_zero_budget_is_refused_when_read() {
        let head = "[run]\nname = \"r\"\nsuite = \"arith\"\ngenerations = 1\nchildren_per_generation = 1\ninitial = [\"v\"]\n[budget]\n";
        for (line, key) in
            [("fuel = 0", "budget.fuel"), ("wall = \"0s\"", "budget.wall"), ("tokens = 0", "budget.tokens")]
        {
            let e = RunConfig::parse(&format!("{head}{line}\n"), "r.toml").unwrap_err().to_string();
            assert!(e.starts_with("r.toml:8:") && e.contains(key), "{e}");
        }
    }

    #[test]
    fn a_missing_initial_or_policy_names_the_key_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run.toml");
        let head = "[run]\nname = \"r\"\nsuite = \"arith\"\ngenerations = 1\nchildren_per_generation = 1\n";
        std::fs::write(&run, format!("{head}initial = [\"nowhere\"]\n")).unwrap();
        let e = RunConfig::load(&run).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::ExitCode::Invalid);
        let e = e.to_string();
        assert!(
            e.contains("run.toml:6:")
                && e.contains("run.initial[0]")
                && e.contains("nowhere")
                && e.contains("does not exist"),
            "{e}"
        );
        let v = dir.path().join("v");
        std::fs::create_dir_all(&v).unwrap();
        std::fs::write(v.join("variant.toml"), "").unwrap();
        std::fs::write(&run, format!("{head}initial = [\"v\"]\npolicy = \"p.toml\"\n")).unwrap();
        let e = RunConfig::load(&run).unwrap_err().to_string();
        assert!(
            e.contains("run.toml:7:")
                && e.contains("run.policy")
                && e.contains("p.toml")
                && e.contains("does not exist"),
            "{e}"
        );
    }
}
