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

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

pub use config::{Budget, Keep, RunConfig, Staged};

use crate::archive::{self, Archive, NewVariant, RunStatus, Split, VariantId, VariantRow, VariantStatus};
use crate::caps::Manifest;
use crate::error::{Error, Result};
use crate::improve::{improve, ImproveRequest};
use crate::runtime::bindings::Evaluation;
use crate::tasks::{self, Suite};
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
    /// Fuel spent by this invocation.
    pub fuel: u64,
    /// Wall time of this invocation, in seconds.
    pub seconds: f64,
}

/// Options of one invocation.
#[derive(Default)]
pub struct EvolveOptions {
    /// Continue a run that exists.
    pub resume: bool,
}

/// Where a run keeps its trees: `$VIVARIUM_HOME/runs/<name>`.
pub fn run_dir(session: &Session, name: &str) -> PathBuf {
    session.home.root().join("runs").join(name)
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
        .map(|r| tasks::TaskResult { id: r.task_id, held_out: false, passed: r.passed, note: r.note })
        .collect();
    Ok((history, tasks::feedback(suite, &visible)))
}

struct Ctx<'a> {
    session: &'a Session,
    archive: Archive,
    config: RunConfig,
    suite: Suite,
    run_id: String,
    run_dir: PathBuf,
    started: Instant,
    fuel: std::sync::atomic::AtomicU64,
}

impl Ctx<'_> {
    fn budget_hit(&self) -> Option<String> {
        let b = &self.config.budget;
        if let Some(w) = b.wall {
            if self.started.elapsed() >= w.0 {
                return Some(format!("wall time {w}"));
            }
        }
        if let Some(f) = b.fuel {
            let used = self.fuel.load(std::sync::atomic::Ordering::Relaxed);
            if used >= f {
                return Some(format!("fuel {used} of {f}"));
            }
        }
        None
    }

    fn add_fuel(&self, n: u64) {
        self.fuel.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Staged evaluation of a prepared variant; records the results.
    async fn evaluate(&self, id: &VariantId, p: &crate::runtime::Prepared) -> Result<()> {
        let staged = &self.config.staged;
        let visible = &self.suite.visible;
        let first = staged.first.min(visible.len());
        let (mut results, fuel) = tasks::run_tasks(self.session, p, &visible[..first], false).await?;
        self.add_fuel(fuel);
        let full = first == 0 || first == visible.len() || tasks::pass_rate(&results) >= staged.threshold;
        let held = if full {
            let (rest, f1) = tasks::run_tasks(self.session, p, &visible[first..], false).await?;
            let (held, f2) = tasks::run_tasks(self.session, p, &self.suite.held_out, true).await?;
            self.add_fuel(f1 + f2);
            results.extend(rest);
            Some(held)
        } else {
            None
        };
        let visible_score = tasks::pass_rate(&results);
        let held_score = held.as_ref().map(|h| tasks::pass_rate(h));
        let mut rows: Vec<archive::TaskResult> = results
            .iter()
            .chain(held.iter().flatten())
            .map(|r| archive::TaskResult {
                task_id: r.id.clone(),
                split: if r.held_out { Split::HeldOut } else { Split::Visible },
                passed: r.passed,
                score: if r.passed { 1.0 } else { 0.0 },
                note: r.note.clone(),
            })
            .collect();
        rows.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        self.archive.record_results(id, &rows, Some(visible_score), held_score, VariantStatus::Evaluated)
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
        let opened = self.session.open_target(&staging, self.config.run.policy.as_deref(), &Default::default()).await?;
        let manifest = opened.manifest.clone().expect("a directory");
        let component = self.component_bytes(&staging, &manifest).await?;
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
            self.evaluate(&id, &p).await?;
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
        // uninterrupted one (host/tests/evolve_resume.rs).
        let first_of_generation = self.config.run.initial.len() as u64
            + u64::from(generation - 1) * u64::from(self.config.run.children_per_generation);
        let children = self.archive.recorded_children(&self.run_id, first_of_generation)?;
        let candidates: Vec<archive::Candidate> = self
            .archive
            .list(Some(&self.run_id))?
            .into_iter()
            .filter(|v| v.generation < generation && v.status == VariantStatus::Evaluated)
            .filter(|v| self.keeps(v))
            .filter_map(|v| {
                let children = children.get(&v.id.0).copied().unwrap_or(0);
                v.visible_score.map(|score| archive::Candidate { id: v.id, score, children })
            })
            .collect();
        let Some(i) = archive::choose(self.config.run.selection, &candidates, self.config.run.seed, step) else {
            return self.archive.record_step(&self.run_id, step, None, "no-parent");
        };
        let parent = candidates[i].id.clone();
        let parent_dir = self.ensure_tree(&parent)?;
        let (history, feedback) = context_for(&self.archive, &self.suite, &parent)?;
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
            history,
            feedback,
            iterations_left,
            parent_component,
        };
        phase(step, "improve");
        let outcome = match improve(self.session, &req).await {
            Ok(o) => o,
            Err(Error::Refused { detail, .. }) => {
                let _ = std::fs::remove_dir_all(&staging);
                self.refused_child(&parent, generation, &detail)?;
                return self.archive.record_step(&self.run_id, step, None, "refused");
            }
            Err(Error::Guest(f)) => {
                let _ = std::fs::remove_dir_all(&staging);
                self.refused_child(&parent, generation, &f.to_string())?;
                return self.archive.record_step(&self.run_id, step, None, "guest-failed");
            }
            Err(e) => return Err(e),
        };
        let manifest = Manifest::load(staging.join(MANIFEST))?;
        phase(step, "archive-write");
        let tree = self.archive.put_tree(&staging)?;
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
        let dest = self.run_dir.join("variants").join(&id.0);
        if dest.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        } else {
            std::fs::create_dir_all(dest.parent().expect("has a parent"))
                .map_err(|e| Error::io("creating the run's variants directory", e))?;
            std::fs::rename(&staging, &dest)
                .map_err(|e| Error::io(format!("moving the child to {}", dest.display()), e))?;
        }
        if self.archive.get(&id)?.is_some_and(|v| v.status != VariantStatus::Evaluated) {
            let opened =
                self.session.open_built(&outcome.component, &manifest, self.config.run.policy.as_deref()).await?;
            let p = self.session.prepare(&opened)?;
            phase(step, "evaluate");
            self.evaluate(&id, &p).await?;
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
    session.home.ensure(&session.home.archive_dir())?;
    let archive = Archive::open(&session.home.archive_dir())?;
    let run_id = config.run.name.clone();
    if archive.get_run(&run_id)?.is_some() && !opts.resume {
        return Err(Error::invalid(format!(
            "run `{run_id}` already exists in {}; pass --resume to continue it, or choose another run.name",
            session.home.archive_dir().display()
        )));
    }
    let config_json = serde_json::to_value(&config).map_err(|e| Error::Internal(e.into()))?;
    archive.begin_run(&run_id, &config_json)?;
    let run_dir = run_dir(session, &run_id);
    session.home.ensure(&run_dir)?;
    crate::runtime::cache::write_atomic(
        &run_dir.join("run.json"),
        serde_json::to_string_pretty(
            &json!({ "run_id": run_id, "archive": session.home.archive_dir(), "config": config_json }),
        )
        .unwrap_or_default()
        .as_bytes(),
    )
    .map_err(|e| Error::io("writing run.json", e))?;

    let ctx = Ctx {
        session,
        archive,
        suite,
        run_id: run_id.clone(),
        run_dir: run_dir.clone(),
        started: Instant::now(),
        fuel: Default::default(),
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
    let baseline = best_now();
    'generations: for g in 1..=ctx.config.run.generations {
        let steps: Vec<u64> = (0..per_gen).map(|c| n_init + u64::from(g - 1) * per_gen + c).collect();
        for chunk in steps.chunks(ctx.config.run.workers as usize) {
            if let Some(why) = ctx.budget_hit() {
                stop = StopReason::Budget(why);
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
    let mut refused = 0;
    for s in 0..total {
        if let Some((None, _)) = ctx.archive.step(&run_id, s)? {
            refused += 1;
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
        fuel: ctx.fuel.load(std::sync::atomic::Ordering::Relaxed),
        seconds: ctx.started.elapsed().as_secs_f64(),
    };
    session.audit.append(None, crate::audit::EventKind::Other("evolve-summary".into()), json!(summary))?;
    Ok(summary)
}
