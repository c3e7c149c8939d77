//! `vivarium evolve`: the open-ended search loop.
//!
//! Each step is select → [`improve`](crate::improve) (guard + build
//! sandbox) → staged evaluation → archive → audit, as in the Darwin Gödel
//! Machine (archive of stepping stones, score×children parent selection,
//! staged evaluation), DGM-H (`dgm-h` selection) and autoresearch (`greedy`
//! with `keep = "better"`).
//!
//! # Determinism and resume
//!
//! Steps are numbered: the initial variants are steps `0..n`, then child
//! `c` of generation `g` is step `n + (g−1)·children + c`. A generation
//! chooses its parents only among variants of earlier generations, with a
//! PRNG seeded by the run's seed and the step number, so the choice of
//! every step is fixed by the archive's content before it. Each finished
//! step is recorded in the archive's step ledger (SQLite, in the same
//! database as the variants); a resumed run (`--resume`) skips finished
//! steps, re-adds a half-archived child idempotently (variants are
//! identified by run, content and parent) and never re-evaluates a variant
//! whose results are stored. A run killed at any moment (kill -9) loses at
//! most the step in flight.
//!
//! # What a variant sees
//!
//! The meta-agent gets its own sources, the *visible* scores of its lineage
//! and the *visible* failures of its parent ([`context_for`]); held-out
//! scores and tasks never leave the host.

pub mod config;
pub mod islands;
pub mod lock;
pub mod models;
pub mod noise;
pub mod novelty;
pub mod qd;
pub mod run_llm;
mod search;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

pub use config::{Budget, Keep, ModelEntry, ModelSelection, RunConfig, Search, Staged};

use crate::archive::{self, Archive, NewVariant, RunStatus, Split, VariantId, VariantRow, VariantStatus};
use crate::caps::Manifest;
use crate::error::{Error, Result};
use crate::improve::{improve, ImproveRequest};
use crate::ledger::{micros, run_account, Resource};
use crate::runtime::bindings::Evaluation;
use crate::runtime::CallOptions;
use crate::tasks::{self, Suite};
use crate::units::Usd;
use crate::variant::{Session, MANIFEST};

/// Progress of a run, for progress bars.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// Steps finished (initial variants included).
    pub done: u64,
    /// Steps in the whole run.
    pub total: u64,
    /// Best visible score so far.
    pub best: f64,
    /// What just happened.
    pub message: String,
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// Every generation ran.
    Finished,
    /// A budget was reached.
    Budget(String),
    /// A person asked the run to stop ([`request_stop`]); says who.
    Requested(String),
}

/// The end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Run id.
    pub run_id: String,
    /// The run's directory (variant trees, run.json).
    pub run_dir: PathBuf,
    /// The archive's directory.
    pub archive_dir: PathBuf,
    /// Why it ended.
    pub stop: StopReason,
    /// Best visible score among the initial variants.
    pub baseline: f64,
    /// The best variant.
    pub best: Option<VariantRow>,
    /// Visible minus held-out score of the best variant (reward-hacking gap).
    pub held_out_gap: Option<f64>,
    /// Variants in the run.
    pub variants: usize,
    /// Steps whose proposal was refused or whose child failed to build.
    pub refused: usize,
    /// Children not evaluated because their source was a near-duplicate of
    /// an archived variant's (`[search] novelty_threshold`).
    pub near_duplicates: usize,
    /// Fuel spent by this invocation.
    pub fuel: u64,
    /// LLM tokens charged in the run (every invocation).
    pub llm_tokens: u64,
    /// LLM dollars charged in the run (every invocation), at the host's prices.
    pub usd: crate::units::Usd,
    /// Dollars charged per variant of the run (calls of that variant: its
    /// evaluations and the proposals of its meta-agent), those with any.
    pub usd_by_variant: Vec<VariantDollars>,
    /// Trainer seconds spent in the run (every invocation).
    pub gpu_seconds: f64,
    /// Simulator steps taken in the run (every invocation).
    pub sim_steps: u64,
    /// Wall time of this invocation, in seconds.
    pub seconds: f64,
}

/// What one variant's calls cost in a run.
#[derive(Debug, Clone, Serialize)]
pub struct VariantDollars {
    /// The variant's archive id (its component's sha256 when no archived
    /// variant of the run has it).
    pub variant: String,
    /// Dollars charged.
    pub usd: crate::units::Usd,
}

/// Options of one invocation.
#[derive(Default)]
pub struct EvolveOptions {
    /// Continue a run that exists.
    pub resume: bool,
}

/// The step outcome of a child rejected as a near-duplicate (novelty).
pub const NEAR_DUPLICATE: &str = "near-duplicate";

/// The most bytes of a second parent's sources put in the feedback
/// (crossover): enough for a small variant, bounded for a large one.
const MAX_CROSSOVER_BYTES: usize = 32 * 1024;

/// The longest refusal note kept for the meta-agent (compiler output is long).
const MAX_ATTEMPT_NOTE: usize = 2000;

/// The file under a run's directory that shows what the run spent
/// (`vivarium serve` reads it). Before the one budget ledger it was where
/// trainer seconds and simulator steps were kept; a resume of such a run
/// reads it once into the ledger.
const SPENT_FILE: &str = "spent.json";

/// The file under a run's directory that asks the run to stop: see
/// [`request_stop`].
pub const STOP_FILE: &str = "stop";

/// Ask run `run_id` (directory `run_dir`) to stop, on behalf of `who`: the
/// run ends cleanly before its next step, as a budget would end it
/// ([`StopReason::Requested`], stored as `stopped`), and a later
/// `--resume` continues it. The request is a file, `runs/<name>/stop`,
/// holding who asked and when, written atomically; the loop reads it
/// between steps, so asking costs the run nothing, and a run not being
/// written now is refused (nothing would read the file) — the caller
/// audits who asked.
///
/// Errors: [`Error::Invalid`] when the run is not running (no process holds
/// its lock); [`Error::Io`] when the file cannot be written.
pub fn request_stop(run_dir: &Path, run_id: &str, who: &str) -> Result<()> {
    check_run_id(run_id)?;
    if lock::holder(run_dir).is_none() {
        return Err(Error::invalid(format!("run `{run_id}` is not running; there is nothing to stop")));
    }
    let body = json!({ "by": who, "time": crate::audit::now_rfc3339() }).to_string();
    crate::fsio::write_atomic(&run_dir.join(STOP_FILE), body.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", run_dir.join(STOP_FILE).display()), e))
}

/// Who asked run `run_dir` to stop, when it was asked ([`request_stop`]).
fn stop_requested(run_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(run_dir.join(STOP_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Some(v["by"].as_str().unwrap_or("someone").to_string())
}

/// What a run's `spent.json` recorded: `(trainer seconds, simulator
/// steps)`, zero when there is none.
fn spent_recorded(run_dir: &Path) -> (f64, u64) {
    let v = std::fs::read(run_dir.join(SPENT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .unwrap_or_default();
    (v["gpu_seconds"].as_f64().unwrap_or(0.0), v["sim_steps"].as_u64().unwrap_or(0))
}

/// Where a run keeps its trees: `$VIVARIUM_HOME/runs/<name>`.
pub fn run_dir(session: &Session, name: &str) -> PathBuf {
    session.home.root().join("runs").join(name)
}

/// What [`remove_run`] removed.
#[derive(Debug, Clone, Serialize)]
pub struct RemovedRun {
    /// The run's id.
    pub run_id: String,
    /// Variants deleted from the archive.
    pub variants: usize,
    /// The run directory deleted, when there was one.
    pub run_dir: Option<PathBuf>,
}

/// Delete run `run_id` from the archive under `home`, its directory
/// `runs/<name>` and what the budget ledger charged in it; content-addressed
/// blobs stay.
///
/// Errors: [`Error::Invalid`] (exit 2) when there is no such run, or when a
/// process is writing it (its lock is held; the message names the pid).
pub fn remove_run(home: &crate::home::Home, run_id: &str) -> Result<RemovedRun> {
    check_run_id(run_id)?;
    let dir = home.root().join("runs").join(run_id);
    let had_dir = dir.is_dir();
    let archive = crate::report::open_existing(&home.archive_dir())?;
    if archive.get_run(run_id)?.is_none() && !had_dir {
        return Err(Error::invalid(format!("no run `{run_id}` in the archive; `vivarium archive runs` lists them")));
    }
    let lock = lock::RunLock::acquire(&dir, run_id).map_err(|e| match e {
        Error::Invalid(m) => Error::Invalid(format!("{m}; a run being written is not removed")),
        other => other,
    })?;
    let variants = archive.delete_run(run_id)?.unwrap_or(0);
    // A new run of this name starts with whole budgets.
    crate::ledger::Ledger::for_home(home).forget_run(run_id)?;
    drop(lock);
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(format!("removing {}", dir.display()), e))?;
    Ok(RemovedRun { run_id: run_id.to_string(), variants, run_dir: had_dir.then_some(dir) })
}

/// Where run `run` stands now: its stored status, except that a run
/// stored as `running` whose lock no process holds was killed
/// (`interrupted`, resumable with `--resume`); with the writer's pid while
/// one holds it.
pub fn run_state(home: &crate::home::Home, run: &archive::RunRow) -> (String, Option<u32>) {
    let holder = lock::holder(&home.root().join("runs").join(&run.id));
    let state = match (run.status, holder) {
        (_, Some(_)) => "running".to_string(),
        (RunStatus::Running, None) => "interrupted".to_string(),
        (s, None) => s.to_string(),
    };
    (state, holder)
}

/// History and feedback for improving `parent`: the visible scores of its
/// lineage and its visible failures. Nothing held-out is included.
pub fn context_for(archive: &Archive, suite: &Suite, parent: &VariantId) -> Result<(Vec<Evaluation>, String)> {
    let history = archive
        .lineage(parent)?
        .into_iter()
        .filter_map(|v| {
            v.visible_score.map(|score| Evaluation {
                id: v.id.0.clone(),
                parent: v.parent.map(|p| p.0),
                score,
                summary: v.summary.clone(),
            })
        })
        .collect();
    let visible: Vec<tasks::TaskResult> = archive
        .results(parent)?
        .into_iter()
        .filter(|r| r.split == Split::Visible)
        .map(|r| tasks::TaskResult { id: r.task_id, held_out: false, passed: r.passed, score: r.score, note: r.note })
        .collect();
    Ok((history, tasks::feedback(suite, &visible)))
}

/// What one evaluation of a variant measured.
struct Measured {
    /// Per-task results, both splits, by task id.
    rows: Vec<archive::TaskResult>,
    /// Mean visible score.
    visible: f64,
    /// Mean held-out score; `None` when the first stage stopped it.
    held_out: Option<f64>,
}

struct Ctx<'a> {
    session: &'a Session,
    archive: Archive,
    config: RunConfig,
    suite: Suite,
    run_id: String,
    run_dir: PathBuf,
    started: Instant,
    /// What this invocation's evaluations spent (fuel, trainer seconds, …).
    spent: std::sync::Mutex<tasks::Spent>,
    /// Where the run's trainer seconds and simulator steps are kept across
    /// invocations (the account [`run_account`] of the host's ledger).
    ledger: std::sync::Arc<crate::ledger::Ledger>,
    /// Novelty shingles of stored trees, by tree sha.
    shingle_cache: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<novelty::Shingles>>>,
    /// The Ray cluster evaluations go to (`[cluster] engine = "ray"`).
    cluster: Option<crate::cluster::RayCluster>,
}

impl Ctx<'_> {
    fn budget_hit(&self) -> Result<Option<String>> {
        let b = &self.config.budget;
        if let Some(w) = b.wall {
            if self.started.elapsed() >= w.0 {
                return Ok(Some(format!("wall time {w}")));
            }
        }
        let spent = self.spent();
        if let Some(f) = b.fuel {
            if spent.fuel >= f {
                return Ok(Some(format!("fuel {} of {f}", spent.fuel)));
            }
        }
        if let Some(t) = b.tokens {
            let used = self.tokens_spent()?;
            if used >= t {
                return Ok(Some(format!("llm tokens {used} of {t}")));
            }
        }
        if let Some(u) = b.usd {
            let used = self.usd_spent()?;
            if used >= u {
                return Ok(Some(format!("llm dollars {used} of {u}")));
            }
            if let Some(x) = self.ledger().and_then(|l| l.exhausted(&self.run_id, Resource::Usd, u.0).transpose()) {
                let x = x?;
                return Ok(Some(format!(
                    "llm dollars {used} of {u}: a request's worst case of {} did not fit in what was left",
                    Usd(x.asked)
                )));
            }
        }
        if let Some(g) = b.gpu_seconds {
            let used = self.gpu_seconds()?;
            if used >= g as f64 {
                return Ok(Some(format!("trainer seconds {used:.1} of {g}")));
            }
        }
        if let Some(n) = b.sim_steps {
            let used = self.sim_steps()?;
            if used >= n {
                return Ok(Some(format!("simulator steps {used} of {n}")));
            }
        }
        Ok(None)
    }

    fn spent(&self) -> tasks::Spent {
        *self.spent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Trainer seconds the run's evaluations spent, by every invocation.
    fn gpu_seconds(&self) -> Result<f64> {
        Ok(self.ledger.spent(&run_account(&self.run_id), Resource::TrainerSeconds)? as f64 / 1e6)
    }

    /// Simulator steps the run's evaluations took, by every invocation.
    fn sim_steps(&self) -> Result<u64> {
        self.ledger.spent(&run_account(&self.run_id), Resource::SimSteps)
    }

    /// Count what an evaluation spent: the run's trainer seconds and
    /// simulator steps in the ledger, so a resumed run goes on counting
    /// from them (a step killed before this point is redone and counted
    /// once), and a snapshot in `spent.json` for `vivarium serve`.
    fn add_spent(&self, s: &tasks::Spent) -> Result<()> {
        let fuel = {
            let mut g = self.spent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            g.add(s);
            g.fuel
        };
        let account = run_account(&self.run_id);
        self.ledger.record(&account, Resource::TrainerSeconds, micros(s.gpu_seconds))?;
        self.ledger.record(&account, Resource::SimSteps, s.sim_steps)?;
        // `fuel` and `wall_seconds` are this invocation's, as their budgets
        // are; the others the run's. `vivarium serve` shows them.
        let record = json!({
            "gpu_seconds": self.gpu_seconds()?, "sim_steps": self.sim_steps()?, "fuel": fuel,
            "tokens": self.tokens_spent().unwrap_or(0), "usd": self.usd_spent().unwrap_or_default(),
            "wall_seconds": self.started.elapsed().as_secs_f64(),
        });
        crate::fsio::write_atomic(&self.run_dir.join(SPENT_FILE), record.to_string().as_bytes())
            .map_err(|e| Error::io("writing the run's spent.json", e))
    }

    /// LLM tokens charged in this run so far, by every invocation (the
    /// host's token ledger survives a resume).
    fn tokens_spent(&self) -> Result<u64> {
        match &self.session.runtime.services().llm {
            Some(llm) => llm.spent_in_run(&self.run_id),
            None => Ok(0),
        }
    }

    /// The ledger the run's `llm` budgets are charged in (the llm
    /// service's); `None` when no LLM is configured.
    fn ledger(&self) -> Option<&crate::ledger::Ledger> {
        self.session.runtime.services().llm.as_ref().map(|l| &**l.ledger())
    }

    /// LLM dollars charged in this run so far, by every invocation.
    fn usd_spent(&self) -> Result<Usd> {
        Ok(Usd(match self.ledger() {
            Some(l) => l.spent_in_run(&self.run_id, Resource::Usd)?,
            None => 0,
        }))
    }

    /// Dollars per variant of the run, by archive id.
    fn usd_by_variant(&self, rows: &[VariantRow]) -> Result<Vec<VariantDollars>> {
        let Some(l) = self.ledger() else { return Ok(Vec::new()) };
        let mut out: Vec<VariantDollars> = l
            .by_variant(&self.run_id, Resource::Usd)?
            .into_iter()
            .map(|(sha, n)| {
                let id = rows.iter().find(|r| r.component_sha.as_deref() == Some(sha.as_str()));
                VariantDollars { variant: id.map_or(sha, |r| r.id.0.clone()), usd: Usd(n) }
            })
            .collect();
        out.sort_by(|a, b| b.usd.cmp(&a.usd).then_with(|| a.variant.cmp(&b.variant)));
        Ok(out)
    }

    /// The options of a guest call of variant `id` in the run: the archive
    /// view and the token ledger of this run, at most what is left of its
    /// token and simulator-step budgets, and the variant's own `memory`
    /// lineage (its archive id).
    fn call_options(&self, id: &VariantId) -> Result<CallOptions> {
        let llm_tokens = match self.config.budget.tokens {
            Some(t) => Some(t.saturating_sub(self.tokens_spent()?)),
            None => None,
        };
        let sim_steps = match self.config.budget.sim_steps {
            Some(n) => Some(n.saturating_sub(self.sim_steps()?)),
            None => None,
        };
        Ok(CallOptions {
            run: Some(self.run_id.clone()),
            llm_tokens,
            run_usd: self.config.budget.usd,
            sim_steps,
            lineage: Some(id.0.clone()),
            ..CallOptions::default()
        })
    }

    /// Start `child`'s memory as a snapshot of `parent`'s (a no-op when it
    /// exists, so a resumed step forks again safely).
    fn fork_memory(&self, parent: &VariantId, child: &VariantId) -> Result<()> {
        if let Some(m) = &self.session.runtime.services().memory {
            m.fork(&parent.0, &child.0)?;
        }
        Ok(())
    }

    /// One staged evaluation of a prepared variant, its spending counted;
    /// records nothing in the archive ([`Ctx::evaluate_search`] repeats it
    /// and records the results).
    async fn measure(&self, id: &VariantId, p: &crate::runtime::Prepared, repeat: u32) -> Result<Measured> {
        let staged = &self.config.staged;
        let visible = &self.suite.visible;
        let first = staged.first.min(visible.len());
        let opts = self.call_options(id)?;
        let (mut results, mut spent) = self.grade(id, p, &visible[..first], false, &opts, repeat).await?;
        let full = first == 0 || first == visible.len() || tasks::mean_score(&results) >= staged.threshold;
        let held = if full {
            let (rest, s1) = self.grade(id, p, &visible[first..], false, &opts, repeat).await?;
            let (held, s2) = self.grade(id, p, &self.suite.held_out, true, &opts, repeat).await?;
            spent.add(&s1);
            spent.add(&s2);
            results.extend(rest);
            Some(held)
        } else {
            None
        };
        self.add_spent(&spent)?;
        let visible_score = tasks::mean_score(&results);
        let held_score = held.as_ref().map(|h| tasks::mean_score(h));
        let mut rows: Vec<archive::TaskResult> = results
            .iter()
            .chain(held.iter().flatten())
            .map(|r| archive::TaskResult {
                task_id: r.id.clone(),
                split: if r.held_out { Split::HeldOut } else { Split::Visible },
                passed: r.passed,
                score: r.score,
                note: r.note.clone(),
            })
            .collect();
        rows.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Ok(Measured { rows, visible: visible_score, held_out: held_score })
    }

    /// Grade `tasks` of the run's suite for variant `id` (prepared as `p`):
    /// the one place where the engine is chosen. On a Ray cluster, unless
    /// the variant must stay on the coordinator
    /// ([`crate::cluster::stays_local`]), which the audit log records.
    /// `repeat` is which of the variant's `[search] repeats` evaluations
    /// this is: each has a journal of its own, so a repeat is graded again,
    /// never answered with the first one's kept reply.
    async fn grade(
        &self,
        id: &VariantId,
        p: &crate::runtime::Prepared,
        tasks: &[tasks::GradedTask],
        held_out: bool,
        opts: &CallOptions,
        repeat: u32,
    ) -> Result<(Vec<tasks::TaskResult>, tasks::Spent)> {
        let Some(cluster) = &self.cluster else {
            return tasks::run_tasks(self.session, p, &self.suite, tasks, held_out, opts).await;
        };
        if let Some(reason) = crate::cluster::stays_local(p) {
            self.session.audit.append(
                Some(&p.sha256),
                crate::audit::EventKind::Other("cluster-local".into()),
                json!({ "run": self.run_id, "variant": id.0, "reason": reason }),
            )?;
            return tasks::run_tasks(self.session, p, &self.suite, tasks, held_out, opts).await;
        }
        let row = self.archive.get(id)?.ok_or_else(|| Error::Internal(anyhow::anyhow!("variant {} vanished", id.0)))?;
        let sha =
            row.component_sha.ok_or_else(|| Error::Internal(anyhow::anyhow!("variant {} has no component", id.0)))?;
        let component = self.archive.get_blob(&sha)?;
        let journal = match repeat {
            0 => self.run_dir.join("cluster"),
            r => self.run_dir.join("cluster").join(format!("repeat-{r}")),
        };
        cluster.run_tasks(&self.session.audit, Some(&journal), &component, p, &self.suite, tasks, held_out, opts).await
    }

    /// Archive and evaluate an initial variant (step `step`).
    async fn initial(&self, step: u64, dir: &Path) -> Result<()> {
        if self.archive.step(&self.run_id, step)?.is_some() {
            return Ok(());
        }
        // The run keeps its own copy, with path dependencies made absolute
        // so the tree builds wherever it is restored.
        let staging = self.run_dir.join("staging").join(format!("initial-{step}"));
        let _ = std::fs::remove_dir_all(&staging);
        phase(step, "build");
        let original = self.archive.put_tree(dir)?;
        self.archive.restore_tree(&original, &staging)?;
        crate::improve::rebase_path_dependencies(dir, &staging)?;
        let tree = self.archive.put_tree(&staging)?;
        // The staging copy is the host's business: an error names the
        // user's directory instead.
        let opened = self
            .session
            .open_target(&staging, self.config.run.policy.as_deref(), &Default::default())
            .await
            .map_err(|e| name_original(e, &staging, dir))?;
        let manifest = opened.manifest.clone().expect("a directory");
        let component = self.component_bytes(&staging, &manifest).await.map_err(|e| name_original(e, &staging, dir))?;
        phase(step, "archive-write");
        let sha = self.archive.put(&component)?;
        let id = self.archive.add_variant(&NewVariant {
            run_id: self.run_id.clone(),
            parent: None,
            generation: 0,
            language: manifest.variant.language.to_string(),
            component_sha: Some(sha),
            tree_sha: tree,
            grant_digest: opened.resolution.grant.digest(),
            status: VariantStatus::Pending,
            summary: format!("initial: {}", manifest.variant.name),
        })?;
        let _ = std::fs::remove_dir_all(&staging);
        self.ensure_tree(&id)?;
        if self.archive.get(&id)?.is_some_and(|v| v.status != VariantStatus::Evaluated) {
            let p = self.session.prepare(&opened)?;
            phase(step, "evaluate");
            self.evaluate_search(&id, &p, self.initial_island(step), None).await?;
        }
        phase(step, "record");
        self.archive.record_step(&self.run_id, step, Some(&id), "initial")
    }

    async fn component_bytes(&self, dir: &Path, manifest: &Manifest) -> Result<Vec<u8>> {
        let (d, m, t) = (dir.to_path_buf(), manifest.clone(), self.session.guest_target_dir.clone());
        Ok(tokio::task::spawn_blocking(move || crate::variant::build_variant(&d, &m, &t))
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("build thread failed: {e}")))??
            .component)
    }

    /// The variant's tree under the run directory, restored from the archive
    /// when missing.
    fn ensure_tree(&self, id: &VariantId) -> Result<PathBuf> {
        let dir = self.run_dir.join("variants").join(&id.0);
        if !dir.join(MANIFEST).is_file() {
            let row =
                self.archive.get(id)?.ok_or_else(|| Error::Internal(anyhow::anyhow!("variant {} vanished", id.0)))?;
            let _ = std::fs::remove_dir_all(&dir);
            self.archive.restore_tree(&row.tree_sha, &dir)?;
            // Trees are stored as written; path dependencies were made
            // absolute when the child was made.
        }
        Ok(dir)
    }

    /// One child step: select, improve, archive, evaluate.
    async fn child(&self, step: u64, generation: u32, iterations_left: u32) -> Result<()> {
        if self.archive.step(&self.run_id, step)?.is_some() {
            return Ok(());
        }
        // Children are counted from the finished steps of earlier
        // generations only: a child left half-done by a killed attempt, or
        // one a concurrent step of this generation just made, must not tilt
        // the choice, or a resumed run would pick other parents than an
        // uninterrupted one (host/tests/all/evolve_resume.rs).
        let first_of_generation = self.config.run.initial.len() as u64
            + u64::from(generation - 1) * u64::from(self.config.run.children_per_generation);
        let mut children = self.archive.recorded_children(&self.run_id, first_of_generation)?;
        // A refused proposal is a child that failed: it counts against its
        // parent (and, for `hgm`, its parent's clade; see `plan`).
        let refused = self.archive.refused_children(&self.run_id, first_of_generation)?;
        for (parent, n) in &refused {
            *children.entry(parent.clone()).or_default() += n;
        }
        let Some(plan) = self.plan(step, generation, &children, &refused)? else {
            return self.archive.record_step(&self.run_id, step, None, "no-parent");
        };
        let parent = plan.parent.clone();
        let model = self.choose_model(step, first_of_generation)?;
        let parent_dir = self.ensure_tree(&parent)?;
        let (history, mut feedback) = context_for(&self.archive, &self.suite, &parent)?;
        feedback.push_str(&self.failed_attempts(&parent, generation)?);
        if let Some(second) = &plan.second {
            feedback.push_str(&self.crossover_note(second)?);
        }
        let parent_row =
            self.archive.get(&parent)?.ok_or_else(|| Error::Internal(anyhow::anyhow!("parent vanished")))?;
        let parent_component = match &parent_row.component_sha {
            Some(sha) => Some(self.archive.get_blob(sha)?),
            None => None,
        };
        let staging = self.run_dir.join("staging").join(format!("step-{step}"));
        let _ = std::fs::remove_dir_all(&staging);
        let req = ImproveRequest {
            parent: parent_dir,
            out: staging.clone(),
            policy: self.config.run.policy.clone(),
            self_id: Some(parent.0.clone()),
            history,
            feedback,
            iterations_left,
            parent_component,
            call: CallOptions { llm_model: model.clone(), ..self.call_options(&parent)? },
            // The meta-agent's workbench tries run on the visible split.
            bench: Some(std::sync::Arc::new(self.suite.clone())),
            workbench_spent: Default::default(),
        };
        phase(step, "improve");
        let result = improve(self.session, &req).await;
        // The meta-agent's tries ran candidates: their fuel is the run's,
        // whether or not the proposal is accepted.
        let tried = req.workbench_spent.load(std::sync::atomic::Ordering::Relaxed);
        if tried > 0 {
            self.add_spent(&tasks::Spent { fuel: tried, ..tasks::Spent::default() })?;
        }
        let outcome = match result {
            Ok(o) => o,
            Err(Error::Refused { detail, .. }) => {
                let _ = std::fs::remove_dir_all(&staging);
                self.refused_child(&parent, generation, &detail)?;
                self.record_attempt(&parent, step, &detail)?;
                return self.archive.record_step_of(&self.run_id, step, Some(&parent), None, "refused");
            }
            Err(Error::Guest(f)) => {
                let _ = std::fs::remove_dir_all(&staging);
                self.refused_child(&parent, generation, &f.to_string())?;
                return self.archive.record_step_of(&self.run_id, step, Some(&parent), None, "guest-failed");
            }
            Err(e) => return Err(e),
        };
        let manifest = Manifest::load(staging.join(MANIFEST))?;
        phase(step, "archive-write");
        let tree = self.archive.put_tree(&staging)?;
        // A child whose proposal raised an escalation is kept for the
        // person who decides it, however similar.
        let twin = match outcome.escalation {
            None => self.near_duplicate(&tree, generation)?,
            Some(_) => None,
        };
        if let Some((like, similarity)) = twin {
            // Not evaluated: it would spend a whole evaluation to learn what
            // its near-twin already showed. Its blobs stay (content-addressed,
            // shared); no variant row points at them.
            let _ = std::fs::remove_dir_all(&staging);
            self.session.audit.append(
                None,
                crate::audit::EventKind::Other("evolve-step".into()),
                json!({ "run": self.run_id, "parent": parent.0, "generation": generation,
                        "near_duplicate_of": like.0, "similarity": similarity }),
            )?;
            return self.archive.record_step(&self.run_id, step, None, NEAR_DUPLICATE);
        }
        let sha = self.archive.put(&outcome.component)?;
        let id = self.archive.add_variant(&NewVariant {
            run_id: self.run_id.clone(),
            parent: Some(parent.clone()),
            generation,
            language: manifest.variant.language.to_string(),
            component_sha: Some(sha),
            tree_sha: tree,
            grant_digest: outcome.grant_digest.clone(),
            status: VariantStatus::Pending,
            summary: outcome.summary.clone(),
        })?;
        self.fork_memory(&parent, &id)?;
        let dest = self.run_dir.join("variants").join(&id.0);
        if dest.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        } else {
            std::fs::create_dir_all(dest.parent().expect("has a parent"))
                .map_err(|e| Error::io("creating the run's variants directory", e))?;
            std::fs::rename(&staging, &dest)
                .map_err(|e| Error::io(format!("moving the child to {}", dest.display()), e))?;
        }
        // A pending escalation names the child's tree: it is here now.
        if let Some(request) = &outcome.escalation {
            crate::guard::EscalationStore::open(self.session.home.approvals_dir())?.relocate(request, &dest)?;
        }
        if self.archive.get(&id)?.is_some_and(|v| v.status != VariantStatus::Evaluated) {
            let opened =
                self.session.open_built(&outcome.component, &manifest, self.config.run.policy.as_deref()).await?;
            let p = self.session.prepare(&opened)?;
            phase(step, "evaluate");
            self.evaluate_search(&id, &p, plan.island, model.map(|m| (m, outcome.llm_tokens))).await?;
        }
        phase(step, "record");
        self.archive.record_step(&self.run_id, step, Some(&id), "accepted")
    }

    /// A refused attempt still counts against its parent (DGM counts
    /// children of any status); nothing of it is archived but the note.
    fn refused_child(&self, parent: &VariantId, generation: u32, why: &str) -> Result<()> {
        self.session.audit.append(
            None,
            crate::audit::EventKind::Other("evolve-step".into()),
            json!({ "run": self.run_id, "parent": parent.0, "generation": generation, "refused": why }),
        )?;
        Ok(())
    }

    /// Keep why a proposal of `parent` was refused (a guard rule, or the
    /// compiler's message when the child did not build) so that the next
    /// `improve` of `parent` sees it in its feedback. One file per step,
    /// written atomically, so a resumed step writes the same file again.
    fn record_attempt(&self, parent: &VariantId, step: u64, why: &str) -> Result<()> {
        let dir = self.run_dir.join("attempts").join(&parent.0);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating the run's attempts directory", e))?;
        let mut note = why.to_string();
        if note.len() > MAX_ATTEMPT_NOTE {
            let mut cut = MAX_ATTEMPT_NOTE;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push_str(" …");
        }
        crate::fsio::write_atomic(&dir.join(format!("{step:08}.txt")), note.as_bytes())
            .map_err(|e| Error::io("writing a refused attempt", e))
    }

    /// The last refused attempts on `parent` from earlier generations, as
    /// feedback. Only earlier generations: a sibling step running at the
    /// same time must not change what this step sees (determinism).
    fn failed_attempts(&self, parent: &VariantId, generation: u32) -> Result<String> {
        let first_of_generation = self.config.run.initial.len() as u64
            + u64::from(generation.saturating_sub(1)) * u64::from(self.config.run.children_per_generation);
        let dir = self.run_dir.join("attempts").join(&parent.0);
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(String::new()) };
        let mut steps: Vec<(u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let step = name.strip_suffix(".txt")?.parse::<u64>().ok()?;
                (step < first_of_generation).then(|| (step, e.path()))
            })
            .collect();
        steps.sort();
        let mut out = String::new();
        for (step, path) in steps.iter().rev().take(3).rev() {
            let note = std::fs::read_to_string(path).map_err(|e| Error::io("reading a refused attempt", e))?;
            out.push_str(&format!("an earlier proposal (step {step}) was refused: {note}\n"));
        }
        Ok(out)
    }

    /// A second parent's sources, for the meta-agent to borrow from
    /// (crossover): its visible score, then each text file of its tree,
    /// at most [`MAX_CROSSOVER_BYTES`] in all.
    fn crossover_note(&self, second: &VariantId) -> Result<String> {
        let row = self.archive.get(second)?.ok_or_else(|| Error::Internal(anyhow::anyhow!("variant vanished")))?;
        let mut out = format!(
            "\ncrossover: a second parent, {} (visible score {:.4}), is shown below; take from it what helps. \
             Its files are not in your tree.\n",
            second.0,
            row.visible_score.unwrap_or(0.0)
        );
        let mut left = MAX_CROSSOVER_BYTES;
        for (entry, bytes) in self.archive.tree_contents(&row.tree_sha)? {
            let Ok(text) = std::str::from_utf8(&bytes) else { continue };
            let block = format!("--- {}/{} ---\n{text}\n", search::CROSSOVER_DIR, entry.path);
            if block.len() > left {
                out.push_str(&format!(
                    "--- {}/{}: left out (over the size bound) ---\n",
                    search::CROSSOVER_DIR,
                    entry.path
                ));
                continue;
            }
            left -= block.len();
            out.push_str(&block);
        }
        Ok(out)
    }

    fn keeps(&self, v: &VariantRow) -> bool {
        match self.config.run.keep {
            Keep::All => true,
            Keep::Better => match &v.parent {
                None => true,
                Some(p) => {
                    let ps = self.archive.get(p).ok().flatten().and_then(|r| r.visible_score);
                    matches!((v.visible_score, ps), (Some(a), Some(b)) if a > b)
                }
            },
        }
    }
}

/// `e` with every mention of the staging copy `staging` replaced by the
/// user's directory `original`.
fn name_original(e: Error, staging: &Path, original: &Path) -> Error {
    let (from, to) = (staging.display().to_string(), original.display().to_string());
    match e {
        Error::Invalid(m) => Error::Invalid(m.replace(&from, &to)),
        Error::Refused { what, detail } => Error::Refused { what, detail: detail.replace(&from, &to) },
        Error::Io { context, source } => Error::Io { context: context.replace(&from, &to), source },
        Error::Internal(a) => Error::Internal(anyhow::anyhow!(format!("{a:#}").replace(&from, &to))),
        other => other,
    }
}

/// Trace the phase a step enters (`VIVARIUM_LOG=vivarium::evolve=info`); the
/// crash-safety test reads it to say where each kill landed.
fn phase(step: u64, phase: &str) {
    tracing::info!(target: "vivarium::evolve", "step {step} phase {phase}");
}

/// Run (or resume) the evolution described by `config_path`.
pub async fn evolve(
    session: &Session,
    config_path: &Path,
    opts: &EvolveOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Summary> {
    let config = RunConfig::load(config_path)?;
    let suite = tasks::suite(&config.run.suite).expect("validated");
    // What can be checked without building is checked before the run is
    // created, so a mistake there leaves nothing behind.
    if let Some(p) = &config.run.policy {
        crate::caps::Policy::load(p)?;
    }
    for dir in &config.run.initial {
        Manifest::load(dir.join(MANIFEST))?;
    }
    check_distinct_initial(config_path, &config.run.initial)?;
    let run_id = config.run.name.clone();
    check_run_id(&run_id)?;
    // An unreachable cluster fails the run before anything is written.
    let cluster = match config.cluster.engine {
        crate::cluster::Engine::Local => None,
        crate::cluster::Engine::Ray => {
            Some(crate::cluster::RayCluster::connect(&config.cluster, &session.home.root().join("cluster")).await?)
        }
    };
    let run_dir = run_dir(session, &run_id);
    session.home.ensure(&run_dir)?;
    // One writer per run; held until this function returns (or the
    // process dies).
    let _lock = lock::RunLock::acquire(&run_dir, &run_id)?;
    session.home.ensure(&session.home.archive_dir())?;
    let archive = Archive::open(&session.home.archive_dir())?;
    if let Some(existing) = archive.get_run(&run_id)? {
        if archive.list(Some(&run_id))?.is_empty() {
            // A start that failed before its first variant was archived
            // left nothing worth keeping: start the run afresh, under the
            // run file as it is now.
            archive.delete_run(&run_id)?;
        } else if !opts.resume {
            return Err(Error::invalid(format!(
                "run `{run_id}` already exists ({}) in {}; pass --resume to continue it, \
                 remove it with `vivarium archive rm-run {run_id}`, or choose another run.name",
                existing.status,
                session.home.archive_dir().display()
            )));
        }
    }
    let result = evolve_locked(session, archive, config, suite, run_dir, cluster, opts, progress).await;
    if result.is_err() {
        // Not `running` any more: nothing writes it. A resume sets it back.
        if let Ok(a) = Archive::open(&session.home.archive_dir()) {
            if a.get_run(&run_id).ok().flatten().is_some_and(|r| r.status == RunStatus::Running) {
                let _ = a.finish_run(&run_id, RunStatus::Failed);
            }
        }
    }
    result
}

/// A run name is a directory under `runs/`: letters, digits, `-`, `_`
/// (the run file was checked already; this guards other callers).
fn check_run_id(run_id: &str) -> Result<()> {
    if run_id.is_empty() || !run_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Error::invalid(format!("`{run_id}` is not a run name; use letters, digits, - and _")));
    }
    Ok(())
}

/// The run, its lock held and its archive open.
#[allow(clippy::too_many_arguments)]
async fn evolve_locked(
    session: &Session,
    archive: Archive,
    config: RunConfig,
    suite: Suite,
    run_dir: PathBuf,
    cluster: Option<crate::cluster::RayCluster>,
    opts: &EvolveOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Summary> {
    let run_id = config.run.name.clone();
    let mut config_json = serde_json::to_value(&config).map_err(|e| Error::Internal(e.into()))?;
    // Where evaluations run is not what the run is: a run started on one
    // machine resumes on a cluster (and back) with the same results.
    if let Some(o) = config_json.as_object_mut() {
        o.remove("cluster");
    }
    archive.begin_run(&run_id, &config_json)?;
    crate::fsio::write_atomic(
        &run_dir.join("run.json"),
        serde_json::to_string_pretty(
            &json!({ "run_id": run_id, "archive": session.home.archive_dir(), "config": config_json }),
        )
        .unwrap_or_default()
        .as_bytes(),
    )
    .map_err(|e| Error::io("writing run.json", e))?;

    let ledger = session.runtime.services().ledger.clone();
    if opts.resume {
        // A run from before the one ledger kept these in spent.json.
        let (gpu_seconds, sim_steps) = spent_recorded(&run_dir);
        ledger.raise_to(&run_account(&run_id), Resource::TrainerSeconds, micros(gpu_seconds))?;
        ledger.raise_to(&run_account(&run_id), Resource::SimSteps, sim_steps)?;
    }
    // A stop asked of an earlier invocation was honoured by it.
    let _ = std::fs::remove_file(run_dir.join(STOP_FILE));
    let ctx = Ctx {
        session,
        archive,
        suite,
        run_id: run_id.clone(),
        run_dir: run_dir.clone(),
        started: Instant::now(),
        spent: Default::default(),
        ledger,
        shingle_cache: Default::default(),
        cluster,
        config,
    };
    let n_init = ctx.config.run.initial.len() as u64;
    let per_gen = u64::from(ctx.config.run.children_per_generation);
    let total = n_init + u64::from(ctx.config.run.generations) * per_gen;
    let best_now = || ctx.archive.best(&run_id).ok().flatten().and_then(|b| b.visible_score).unwrap_or(0.0);
    let report = |done: u64, message: String| progress(Progress { done, total, best: best_now(), message });

    let mut stop = StopReason::Finished;
    for (i, dir) in ctx.config.run.initial.clone().iter().enumerate() {
        ctx.initial(i as u64, dir).await?;
        report(i as u64 + 1, format!("initial variant {}", dir.display()));
    }
    'generations: for g in 1..=ctx.config.run.generations {
        let steps: Vec<u64> = (0..per_gen).map(|c| n_init + u64::from(g - 1) * per_gen + c).collect();
        for chunk in steps.chunks(ctx.config.run.workers as usize) {
            if let Some(why) = ctx.budget_hit()? {
                stop = StopReason::Budget(why);
                break 'generations;
            }
            if let Some(who) = stop_requested(&ctx.run_dir) {
                stop = StopReason::Requested(who);
                break 'generations;
            }
            let left = ctx.config.run.generations - g;
            let results = futures::future::join_all(chunk.iter().map(|&s| ctx.child(s, g, left))).await;
            for r in results {
                r?;
            }
            let done = chunk.last().copied().unwrap_or(0) + 1;
            report(done, format!("generation {g}"));
        }
    }
    let status = if stop == StopReason::Finished { RunStatus::Finished } else { RunStatus::Stopped };
    ctx.archive.finish_run(&run_id, status)?;
    let rows = ctx.archive.list(Some(&run_id))?;
    let best = ctx.archive.best(&run_id)?;
    // The initial variants' best, whatever this invocation did: a resume of
    // a finished run reports the same baseline as the run itself.
    let baseline = rows
        .iter()
        .filter(|r| r.generation == 0)
        .filter_map(|r| r.visible_score)
        .fold(None, |a: Option<f64>, s| Some(a.map_or(s, |a| a.max(s))))
        .unwrap_or(0.0);
    let (mut refused, mut near_duplicates) = (0, 0);
    for s in 0..total {
        match ctx.archive.step(&run_id, s)? {
            Some((None, o)) if o == NEAR_DUPLICATE => near_duplicates += 1,
            Some((None, _)) => refused += 1,
            _ => {}
        }
    }
    let summary = Summary {
        run_id,
        run_dir,
        archive_dir: session.home.archive_dir(),
        stop,
        baseline,
        held_out_gap: best.as_ref().and_then(|b| Some(b.visible_score? - b.held_out_score?)),
        best,
        variants: rows.len(),
        refused,
        near_duplicates,
        fuel: ctx.spent().fuel,
        llm_tokens: ctx.tokens_spent()?,
        usd: ctx.usd_spent()?,
        usd_by_variant: ctx.usd_by_variant(&rows)?,
        gpu_seconds: ctx.gpu_seconds()?,
        sim_steps: ctx.sim_steps()?,
        seconds: ctx.started.elapsed().as_secs_f64(),
    };
    session.audit.append(None, crate::audit::EventKind::Other("evolve-summary".into()), json!(summary))?;
    Ok(summary)
}

/// Two initial variants with the same files would be one variant in the
/// archive (ids are content-addressed), silently merged: refuse the run
/// file instead, naming both.
fn check_distinct_initial(config_path: &Path, initial: &[std::path::PathBuf]) -> Result<()> {
    let mut seen: Vec<(String, &std::path::PathBuf)> = Vec::new();
    for dir in initial {
        let digest = crate::build::support::cache_key(&[], &crate::build::support::tree_files(dir)?)?;
        if let Some((_, first)) = seen.iter().find(|(d, _)| *d == digest) {
            return Err(Error::invalid(format!(
                "{}: run.initial: `{}` and `{}` hold the same files, so they would be one variant; \
                 list it once, or change one of them",
                config_path.display(),
                first.display(),
                dir.display()
            )));
        }
        seen.push((digest, dir));
    }
    Ok(())
}
