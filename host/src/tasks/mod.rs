//! Task suites and their graders. They live in the host and are never
//! reachable from a variant: a variant sees one task at a time, never the
//! expected answer, never the held-out split.
//!
//! A suite grades in one of two ways ([`Grading`]): `solve`'s answer must
//! equal the expected string (score 1 or 0), or host code grades each task
//! itself ([`Grader`]): it may call `solve` and score the answer by running
//! something (a training job), or drive another export of the variant (a
//! reward model called by the simulator). Either way a task's score is in
//! `[0, 1]`, higher is better, and the suite's score is their mean.

pub mod arith;
pub mod humaneval;
pub mod reward_design;
pub mod tiny_lm;
pub mod trap;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::runtime::bindings::Task;
use crate::runtime::{CallOptions, CallOutcome, Prepared};
use crate::variant::Session;

/// One task with the grader's expectation (kept host-side).
#[derive(Debug, Clone)]
pub struct GradedTask {
    /// What the variant sees.
    pub task: Task,
    /// The exact expected output ([`Grading::Exact`]), or whatever host-side
    /// data a [`Grader`] needs for this task (e.g. a JSON of seeds); never
    /// shown to the variant.
    pub expected: String,
}

/// What grading one task spent, for the run's budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// Fuel of every guest call.
    pub fuel: u64,
    /// LLM tokens (prompt + completion) charged.
    pub llm_tokens: u64,
    /// Trainer seconds (GPU-seconds, or CPU-seconds on a CPU backend).
    pub gpu_seconds: f64,
    /// Simulator steps.
    pub sim_steps: u64,
}

impl Spent {
    /// Add `o` to `self`.
    pub fn add(&mut self, o: &Spent) {
        self.fuel += o.fuel;
        self.llm_tokens += o.llm_tokens;
        self.gpu_seconds += o.gpu_seconds;
        self.sim_steps += o.sim_steps;
    }
}

/// One graded task as a [`Grader`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Graded {
    /// Score in `[0, 1]`, higher is better.
    pub score: f64,
    /// Whether the task counts as solved (shown in `archive show`).
    pub passed: bool,
    /// What happened, for feedback (visible split only) and the report:
    /// raw metrics, or what went wrong.
    pub note: String,
    /// What it spent.
    pub spent: Spent,
}

/// Host code that grades one task of a suite by driving a prepared variant.
/// Implementations must turn every guest failure into a low score with a
/// note, never into an `Err`: `Err` is for host failures (the run stops).
pub trait Grader: Send + Sync {
    /// Grade `task` for the variant `p`; `opts` carries the run's call
    /// options (run id, lineage, what is left of the token budget).
    fn grade<'a>(
        &'a self,
        session: &'a Session,
        p: &'a Prepared,
        task: &'a GradedTask,
        opts: &'a CallOptions,
    ) -> Pin<Box<dyn Future<Output = crate::Result<Graded>> + Send + 'a>>;
}

/// How a suite grades its tasks.
#[derive(Clone)]
pub enum Grading {
    /// `solve`'s answer, trimmed, must equal [`GradedTask::expected`].
    Exact,
    /// Host code grades each task.
    Custom(Arc<dyn Grader>),
}

impl fmt::Debug for Grading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grading::Exact => f.write_str("Exact"),
            Grading::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// A suite: a visible split (its scores and failures reach the meta-agent)
/// and a held-out split (scored, never shown).
#[derive(Debug, Clone)]
pub struct Suite {
    /// Suite name.
    pub name: &'static str,
    /// Tasks whose results the meta-agent may read.
    pub visible: Vec<GradedTask>,
    /// Tasks scored but never shown.
    pub held_out: Vec<GradedTask>,
    /// How tasks are graded.
    pub grading: Grading,
}

/// The result of one graded task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResult {
    /// Task id.
    pub id: String,
    /// Whether it is a held-out task.
    pub held_out: bool,
    /// Whether the task counts as solved.
    pub passed: bool,
    /// Score in `[0, 1]`.
    pub score: f64,
    /// What went wrong (or the raw metrics), for feedback (visible split only).
    pub note: String,
}

/// Grade `output` against `t`: exact match after trimming whitespace.
pub fn grade(t: &GradedTask, output: &str) -> bool {
    output.trim() == t.expected
}

/// The names of the suites this host has.
pub const SUITES: &[&str] =
    &["arith", reward_design::NAME, reward_design::LOCOMOTION, "tiny-lm", humaneval::suite::NAME, trap::NAME];

/// Look a suite up by name.
pub fn suite(name: &str) -> Option<Suite> {
    match name {
        "arith" => Some(arith::suite()),
        reward_design::NAME => Some(reward_design::suite()),
        reward_design::LOCOMOTION => Some(reward_design::locomotion()),
        "tiny-lm" => Some(tiny_lm::suite()),
        trap::NAME => Some(trap::suite()),
        // `None` also when the problems are missing; `evolve`'s config check
        // asks `humaneval::problems` for the reason.
        humaneval::suite::NAME => humaneval::suite::suite().ok(),
        _ => None,
    }
}

/// Scores of one variant on a suite.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteScore {
    /// Mean score of the visible tasks.
    pub visible: f64,
    /// Mean score of the held-out tasks (`None` when not evaluated, e.g.
    /// stopped after the first stage).
    pub held_out: Option<f64>,
    /// Per-task results, both splits.
    pub results: Vec<TaskResult>,
    /// Failure notes of the visible split, for the meta-agent.
    pub feedback: String,
    /// What the evaluation spent.
    pub spent: Spent,
}

/// Grade one task with `solve` and an exact match.
async fn grade_exact(session: &Session, p: &Prepared, t: &GradedTask, opts: &CallOptions) -> crate::Result<Graded> {
    let r = session.solve(p, &t.task, opts).await?;
    let spent = Spent {
        fuel: r.usage.fuel,
        llm_tokens: r.services.llm.as_ref().map(|u| u.prompt_tokens + u.completion_tokens).unwrap_or(0),
        ..Spent::default()
    };
    let (passed, note) = match &r.outcome {
        CallOutcome::Ok(a) if grade(t, &a.output) => (true, reported(a.notes.as_deref())),
        CallOutcome::Ok(a) => (
            false,
            join_note(
                format!(
                    "answered {:?}, which is wrong",
                    crate::services::log::sanitize(&a.output.as_bytes()[..a.output.len().min(200)])
                ),
                reported(a.notes.as_deref()),
            ),
        ),
        CallOutcome::GuestError(m) => (false, format!("failed: {m}")),
        CallOutcome::Failed(f) => (false, format!("{}: {}", f.kind, f.detail)),
    };
    Ok(Graded { score: if passed { 1.0 } else { 0.0 }, passed, note, spent })
}

/// What a task's note keeps of the descriptors an answer's notes report:
/// one line `reported <name>=<value>` per `descriptor: <name>=<value>`
/// line of `notes` whose name is 1–32 of `a-z 0-9 - _` and whose value is
/// a finite number (clamped to `[0, 1]`), at most [`MAX_REPORTED`] of
/// them; anything else in the notes is dropped. Graders call this on every
/// answer `solve` returned and never score the notes, so a variant can place
/// itself in the search's grid (`reported:<name>`, `evolve::qd`) but not
/// raise its score with it.
pub fn reported(notes: Option<&str>) -> String {
    let mut out: Vec<String> = Vec::new();
    for line in notes.unwrap_or("").lines() {
        let Some(rest) = line.trim().strip_prefix("descriptor:") else { continue };
        let Some((name, value)) = rest.split_once('=') else { continue };
        let name = name.trim();
        let Ok(v) = value.trim().parse::<f64>() else { continue };
        if !is_descriptor_name(name)
            || !v.is_finite()
            || out.iter().any(|l| l.starts_with(&format!("{REPORTED}{name}=")))
        {
            continue;
        }
        out.push(format!("{REPORTED}{name}={:.6}", v.clamp(0.0, 1.0)));
        if out.len() == MAX_REPORTED {
            break;
        }
    }
    out.join("\n")
}

/// Whether `name` may name a reported descriptor: 1–32 of `a-z 0-9 - _`.
pub fn is_descriptor_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `note`, then `more` on a line of its own when there is any.
pub fn join_note(note: String, more: String) -> String {
    match (note.is_empty(), more.is_empty()) {
        (_, true) => note,
        (true, false) => more,
        (false, false) => format!("{note}\n{more}"),
    }
}

/// The prefix of a reported descriptor's line in a task's note.
pub const REPORTED: &str = "reported ";

/// The most descriptors one answer may report.
pub const MAX_REPORTED: usize = 8;

/// Run `tasks` of `suite` and grade each; a trap or limit hit fails that
/// task only. `opts` are the call options of every call.
pub async fn run_tasks(
    session: &Session,
    p: &Prepared,
    suite: &Suite,
    tasks: &[GradedTask],
    held_out: bool,
    opts: &CallOptions,
) -> crate::Result<(Vec<TaskResult>, Spent)> {
    let mut results = Vec::new();
    let mut spent = Spent::default();
    // Nothing a call on a held-out task does may persist where the variant
    // or its descendants can read it.
    let sealed;
    let opts = if held_out {
        sealed = opts.sealed();
        &sealed
    } else {
        opts
    };
    for t in tasks {
        let g = match &suite.grading {
            Grading::Exact => grade_exact(session, p, t, opts).await?,
            Grading::Custom(grader) => grader.grade(session, p, t, opts).await?,
        };
        spent.add(&g.spent);
        let score = if g.score.is_finite() { g.score.clamp(0.0, 1.0) } else { 0.0 };
        results.push(TaskResult { id: t.task.id.clone(), held_out, passed: g.passed, score, note: g.note });
    }
    Ok((results, spent))
}

/// The mean score (for exact suites: the pass rate).
pub fn mean_score(results: &[TaskResult]) -> f64 {
    if results.is_empty() {
        0.0
    } else {
        results.iter().map(|r| r.score).sum::<f64>() / results.len() as f64
    }
}

/// The visible failures (and scored notes) as feedback text: the task
/// input and what went wrong. Held-out results are never included.
pub fn feedback(suite: &Suite, results: &[TaskResult]) -> String {
    let mut out = String::new();
    for r in results.iter().filter(|r| !r.held_out && (!r.passed || !r.note.is_empty())) {
        let input = suite.visible.iter().find(|t| t.task.id == r.id).map(|t| t.task.input.as_str()).unwrap_or("");
        out.push_str(&format!("task {} `{}`: score {:.4}: {}\n", r.id, input, r.score, r.note));
    }
    out
}

/// Evaluate on the whole suite (both splits).
pub async fn evaluate(session: &Session, p: &Prepared, suite: &Suite) -> crate::Result<SuiteScore> {
    let opts = CallOptions::default();
    let (mut results, mut spent) = run_tasks(session, p, suite, &suite.visible, false, &opts).await?;
    let (held, s2) = run_tasks(session, p, suite, &suite.held_out, true, &opts).await?;
    spent.add(&s2);
    let visible = mean_score(&results);
    let held_out = Some(mean_score(&held));
    results.extend(held);
    Ok(SuiteScore { visible, held_out, feedback: feedback(suite, &results), results, spent })
}
