//! `run.toml`: what an evolution run does and what it may spend.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::archive::Selection;
use crate::caps::manifest::{error_at, parse_toml};
use crate::cluster::{ClusterConfig, Engine};
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
    /// The run's own `llm.toml`, relative to the run file: used instead of
    /// the home's, with a relative `cache_dir` in it under the file's
    /// folder, so a run can ship its response cache beside it and be
    /// replayed anywhere (`examples/coder-local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<PathBuf>,
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
    /// LLM dollars across the run, at the prices of the host's `llm.toml`:
    /// every request's worst case is reserved against it before it is sent.
    /// Left out of the stored configuration when absent, so a run begun
    /// before dollar budgets resumes under the same run file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<crate::units::Usd>,
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
    /// The search's shape: islands, quality-diversity grid, novelty
    /// rejection, repeated evaluation, crossover. Left out of the stored
    /// configuration when it is the default, so a run begun before these
    /// keys existed resumes under the same run file.
    #[serde(default, skip_serializing_if = "Search::is_default")]
    pub search: Search,
    /// Models the meta-agent's `llm` calls are routed to, one per proposal
    /// (empty: the variant's own choice; then left out of the stored
    /// configuration, as `search` is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelEntry>,
    /// Where evaluations run ([`crate::cluster`]).
    #[serde(default, skip_serializing_if = "is_local")]
    pub cluster: ClusterConfig,
}

/// The `[search]` table. Every key is optional; the defaults are one
/// island, no grid, no novelty rejection, one evaluation, no crossover —
/// the plain archive search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// Islands: separate populations, each choosing parents among its own
    /// variants (and the migrants it received).
    #[serde(default = "one")]
    pub islands: u32,
    /// Generations between migrations (0: islands never exchange).
    #[serde(default)]
    pub migration_interval: u32,
    /// Fraction of an island's variants (its best) that migrate to the next
    /// island at each migration.
    #[serde(default = "default_migration_rate")]
    pub migration_rate: f64,
    /// Named behaviour descriptors of the MAP-Elites grid (empty: no grid);
    /// see [`super::qd::available`].
    #[serde(default)]
    pub descriptors: Vec<String>,
    /// Cells per descriptor.
    #[serde(default = "default_bins")]
    pub bins: u32,
    /// Fraction of parents drawn from the grid's elites instead of by
    /// `run.selection` (with descriptors only).
    #[serde(default = "default_grid_parents")]
    pub grid_parents: f64,
    /// A child whose source is at least this similar to an archived
    /// variant's is not evaluated ([`super::novelty`]); `None`: off.
    #[serde(default)]
    pub novelty_threshold: Option<f64>,
    /// Evaluations per variant (for stochastic suites).
    #[serde(default = "one")]
    pub repeats: u32,
    /// Probability that a proposal also sees a second parent's sources.
    #[serde(default)]
    pub crossover: f64,
    /// How a model is chosen per proposal when `[[models]]` lists several.
    #[serde(default)]
    pub model_selection: ModelSelection,
}

impl Default for Search {
    fn default() -> Self {
        Self {
            islands: 1,
            migration_interval: 0,
            migration_rate: default_migration_rate(),
            descriptors: Vec::new(),
            bins: default_bins(),
            grid_parents: default_grid_parents(),
            novelty_threshold: None,
            repeats: 1,
            crossover: 0.0,
            model_selection: ModelSelection::default(),
        }
    }
}

impl Search {
    /// Whether every key has its default (the plain search).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_migration_rate() -> f64 {
    0.1
}
fn default_bins() -> u32 {
    4
}
fn default_grid_parents() -> f64 {
    0.5
}

/// How the model of a proposal is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelSelection {
    /// Drawn by the `[[models]]` weights, seeded by the step.
    #[default]
    Weights,
    /// UCB1 on improvement per thousand tokens ([`super::models`]).
    Ucb,
}

/// One `[[models]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The model's name as the `llm` service knows it.
    pub name: String,
    /// Its share of proposals under `model_selection = "weights"`; the
    /// weights must sum to 1 (all omitted: equal shares).
    #[serde(default)]
    pub weight: Option<f64>,
}

fn is_local(c: &ClusterConfig) -> bool {
    *c == ClusterConfig::default()
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
        if let Some(p) = &mut c.run.llm {
            *p = base.join(&*p);
            if !p.is_file() {
                return Err(error_at(
                    &text,
                    &origin,
                    "run.llm",
                    &format!(
                        "the llm configuration {} does not exist; fix the path (relative to the run file's folder) \
                         or remove the key to use the home's llm.toml",
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
        check_search(&c, text, origin)?;
        if c.cluster.slots == Some(0) {
            return bad("cluster.slots", "must be at least 1, or left out for the cluster's CPUs".into());
        }
        if c.cluster.engine == Engine::Local && c.cluster.address.is_some() {
            return bad(
                "cluster.address",
                "is only used with engine = \"ray\"; set engine = \"ray\" or remove the key".into(),
            );
        }
        Ok(c)
    }
}

/// The `[search]` and `[[models]]` checks: each names its key.
fn check_search(c: &RunConfig, text: &str, origin: &str) -> Result<()> {
    let bad = |key: &str, m: String| Err(error_at(text, origin, key, &m));
    let s = &c.search;
    if s.islands == 0 {
        return bad("search.islands", "must be at least 1 (1 is one population, no islands)".into());
    }
    if !(0.0..=1.0).contains(&s.migration_rate) {
        return bad(
            "search.migration_rate",
            "is the fraction of an island that migrates; give a number between 0 and 1".into(),
        );
    }
    if s.islands > 1 && s.migration_interval > 0 && s.migration_rate == 0.0 {
        return bad(
            "search.migration_rate",
            "is 0, so no variant would ever migrate; give e.g. 0.1, or set search.migration_interval = 0".into(),
        );
    }
    let suite = crate::tasks::suite(&c.run.suite).expect("checked before");
    let known = super::qd::available(&suite);
    for (i, d) in s.descriptors.iter().enumerate() {
        if !known.iter().any(|k| k == d) && !super::qd::is_reported(d) {
            return bad(
                &format!("search.descriptors[{i}]"),
                format!(
                    "suite `{}` has no descriptor `{d}`; use one of: {}, or reported:<name> (a-z 0-9 - _) \
                     for one the variant reports",
                    c.run.suite,
                    known.join(", ")
                ),
            );
        }
        if s.descriptors[..i].contains(d) {
            return bad(&format!("search.descriptors[{i}]"), format!("`{d}` is listed twice; list it once"));
        }
    }
    if s.descriptors.len() > 3 {
        return bad("search.descriptors", "name at most three descriptors (the grid has bins^n cells)".into());
    }
    if !(1..=64).contains(&s.bins) {
        return bad("search.bins", "give a number of cells per descriptor between 1 and 64".into());
    }
    if !(0.0..=1.0).contains(&s.grid_parents) {
        return bad("search.grid_parents", "is a fraction of parents; give a number between 0 and 1".into());
    }
    if let Some(t) = s.novelty_threshold {
        if !(t > 0.0 && t <= 1.0) {
            return bad(
                "search.novelty_threshold",
                "is a similarity in (0, 1] (1 rejects only exact copies); give e.g. 0.95, or remove the key".into(),
            );
        }
    }
    if !(1..=100).contains(&s.repeats) {
        return bad("search.repeats", "give a number of evaluations per variant between 1 and 100".into());
    }
    if !(0.0..=1.0).contains(&s.crossover) {
        return bad("search.crossover", "is a probability; give a number between 0 and 1".into());
    }
    let mut names = std::collections::HashSet::new();
    for (i, m) in c.models.iter().enumerate() {
        if m.name.is_empty() || m.name.chars().any(char::is_control) {
            return bad(&format!("models[{i}].name"), "give the model's name as llm.toml lists it".into());
        }
        if !names.insert(m.name.as_str()) {
            return bad(&format!("models[{i}].name"), format!("`{}` is listed twice; list each model once", m.name));
        }
        if let Some(w) = m.weight {
            if !(w.is_finite() && w >= 0.0) {
                return bad(&format!("models[{i}].weight"), "give a share between 0 and 1".into());
            }
            if s.model_selection == ModelSelection::Ucb {
                return bad(
                    &format!("models[{i}].weight"),
                    "weights are for search.model_selection = \"weights\"; the UCB bandit sets its own shares — \
                     remove the weight or the model_selection key"
                        .into(),
                );
            }
        }
    }
    let given = c.models.iter().filter(|m| m.weight.is_some()).count();
    if given > 0 {
        if given < c.models.len() {
            let i = c.models.iter().position(|m| m.weight.is_none()).unwrap_or(0);
            return bad(&format!("models[{i}].weight"), "give every model a weight, or none (equal shares)".into());
        }
        let sum: f64 = c.models.iter().filter_map(|m| m.weight).sum();
        if (sum - 1.0).abs() > 1e-6 {
            return bad("models", format!("the weights sum to {sum}, not 1; make them shares that sum to 1"));
        }
    }
    Ok(())
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
    fn the_cluster_table_is_read_and_checked() {
        let head =
            "[run]\nname = \"r\"\nsuite = \"arith\"\ngenerations = 1\nchildren_per_generation = 1\ninitial = [\"v\"]\n";
        let c = RunConfig::parse(head, "r.toml").unwrap();
        assert_eq!(c.cluster.engine, Engine::Local, "local unless asked");
        let c = RunConfig::parse(
            &format!("{head}[cluster]\nengine = \"ray\"\naddress = \"h:6379\"\nslots = 4\n"),
            "r.toml",
        )
        .unwrap();
        assert_eq!(
            (c.cluster.engine, c.cluster.address.as_deref(), c.cluster.slots),
            (Engine::Ray, Some("h:6379"), Some(4))
        );
        for (table, key) in [
            ("[cluster]\nengine = \"ray\"\nslots = 0\n", "cluster.slots: must be at least 1"),
            ("[cluster]\naddress = \"h:6379\"\n", "cluster.address: is only used with engine = \"ray\""),
            ("[cluster]\nengine = \"slurm\"\n", "slurm"),
        ] {
            let e = RunConfig::parse(&format!("{head}{table}"), "r.toml").unwrap_err().to_string();
            assert!(e.starts_with("r.toml:") && e.contains(key), "{e}");
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

    #[test]
    fn search_keys_parse_and_default_to_the_plain_search() {
        let head = "[run]\nname = \"r\"\nsuite = \"reward-design\"\ngenerations = 1\nchildren_per_generation = 1\ninitial = [\"v\"]\n";
        let c = RunConfig::parse(head, "r.toml").unwrap();
        assert_eq!(c.search, Search::default());
        assert!(c.models.is_empty());
        // Stored as before these keys existed, so such a run still resumes.
        let stored = serde_json::to_value(&c).unwrap();
        assert!(stored.get("search").is_none() && stored.get("models").is_none(), "{stored}");
        let text = format!(
            "{head}[search]\nislands = 3\nmigration_interval = 2\nmigration_rate = 0.2\n\
             descriptors = [\"source_size\", \"family:cartpole\"]\nnovelty_threshold = 0.95\nrepeats = 3\n\
             crossover = 0.25\n[[models]]\nname = \"a\"\nweight = 0.75\n[[models]]\nname = \"b\"\nweight = 0.25\n"
        );
        let c = RunConfig::parse(&text, "r.toml").unwrap();
        assert_eq!(c.search.islands, 3);
        assert_eq!(c.search.descriptors, ["source_size", "family:cartpole"]);
        // A variant-reported descriptor is accepted on any suite.
        let text = text.replace("\"family:cartpole\"", "\"reported:ones-0\"");
        assert_eq!(RunConfig::parse(&text, "r.toml").unwrap().search.descriptors, ["source_size", "reported:ones-0"]);
        assert_eq!(c.search.novelty_threshold, Some(0.95));
        assert_eq!(c.models.len(), 2);
        assert_eq!(c.models[1].weight, Some(0.25));
    }

    #[test]
    fn a_bad_search_key_names_the_file_line_key_and_fix() {
        let head = "[run]\nname = \"r\"\nsuite = \"reward-design\"\ngenerations = 1\nchildren_per_generation = 1\ninitial = [\"v\"]\n";
        for (tail, line, key, says) in [
            ("[search]\nislands = 0\n", 8, "search.islands", "at least 1"),
            (
                "[search]\ndescriptors = [\"score\", \"family:poetry\"]\n",
                8,
                "search.descriptors[1]",
                "no descriptor `family:poetry`; use one of: source_size, score, family:",
            ),
            ("[search]\ndescriptors = [\"score\", \"score\"]\n", 8, "search.descriptors[1]", "listed twice"),
            (
                "[search]\ndescriptors = [\"reported:Ones\"]\n",
                8,
                "search.descriptors[0]",
                "or reported:<name> (a-z 0-9 - _)",
            ),
            (
                "[search]\ndescriptors = [\"reported:ones\", \"reported:ones\"]\n",
                8,
                "search.descriptors[1]",
                "listed twice",
            ),
            ("[search]\nnovelty_threshold = 0\n", 8, "search.novelty_threshold", "(0, 1]"),
            ("[search]\nrepeats = 0\n", 8, "search.repeats", "between 1 and 100"),
            ("[search]\nmigration_rate = 1.5\n", 8, "search.migration_rate", "between 0 and 1"),
            ("[search]\ncrossover = -0.1\n", 8, "search.crossover", "probability"),
            (
                "[search]\nislands = 2\nmigration_interval = 1\nmigration_rate = 0\n",
                10,
                "search.migration_rate",
                "would ever migrate",
            ),
            (
                "[[models]]\nname = \"a\"\nweight = 0.5\n[[models]]\nname = \"b\"\nweight = 0.4\n",
                0,
                "models",
                "sum to 0.9",
            ),
            (
                "[[models]]\nname = \"a\"\nweight = 0.5\n[[models]]\nname = \"b\"\n",
                0,
                "models[1].weight",
                "every model a weight",
            ),
            ("[[models]]\nname = \"a\"\n[[models]]\nname = \"a\"\n", 10, "models[1].name", "listed twice"),
            (
                "[search]\nmodel_selection = \"ucb\"\n[[models]]\nname = \"a\"\nweight = 1.0\n",
                11,
                "models[0].weight",
                "UCB",
            ),
        ] {
            let e = RunConfig::parse(&format!("{head}{tail}"), "r.toml").unwrap_err();
            assert_eq!(e.exit_code(), crate::error::ExitCode::Invalid);
            let e = e.to_string();
            let at = if line > 0 { format!("r.toml:{line}:") } else { "r.toml".to_string() };
            assert!(e.starts_with(&at) && e.contains(&format!("{key}: ")) && e.contains(says), "{tail}: {e}");
        }
        let e = RunConfig::parse(&format!("{head}[search]\nisland = 2\n"), "r.toml").unwrap_err().to_string();
        assert!(e.contains("island") && e.contains("unknown field"), "an unknown key is named: {e}");
    }

    #[test]
    fn the_islands_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/islands/run.toml");
        let c = RunConfig::load(&path).unwrap();
        assert_eq!(c.search.islands, 2);
        assert_eq!(c.search.descriptors, ["reported:ones-0", "reported:ones-1"]);
        assert_eq!((c.run.suite.as_str(), c.run.selection), ("trap", Selection::Dgm));
    }
}
