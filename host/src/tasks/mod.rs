//! Task suites and their graders. They live in the host and are never
//! reachable from a variant: a variant sees one task at a time, never the
//! expected answer, never the held-out split.

pub mod arith;

use serde::Serialize;

use crate::runtime::bindings::Task;

/// One task with the grader's expectation (kept host-side).
#[derive(Debug, Clone)]
pub struct GradedTask {
    /// What the variant sees.
    pub task: Task,
    /// The exact expected output.
    pub expected: String,
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
}

/// The result of one graded task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    /// Task id.
    pub id: String,
    /// Whether it is a held-out task.
    pub held_out: bool,
    /// Whether the output matched.
    pub passed: bool,
    /// What went wrong, for feedback (visible split only).
    pub note: String,
}

/// Grade `output` against `t`: exact match after trimming whitespace.
pub fn grade(t: &GradedTask, output: &str) -> bool {
    output.trim() == t.expected
}

/// Look a suite up by name.
pub fn suite(name: &str) -> Option<Suite> {
    match name {
        "arith" => Some(arith::suite()),
        _ => None,
    }
}

/// Scores of one variant on a suite.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteScore {
    /// Fraction of visible tasks passed.
    pub visible: f64,
    /// Fraction of held-out tasks passed (`None` when not evaluated, e.g.
    /// stopped after the first stage).
    pub held_out: Option<f64>,
    /// Per-task results, both splits.
    pub results: Vec<TaskResult>,
    /// Failure notes of the visible split, for the meta-agent.
    pub feedback: String,
    /// Fuel used over all calls.
    pub fuel: u64,
}

/// Run `tasks` through `solve` and grade each; a trap or limit hit fails
/// that task only.
pub async fn run_tasks(
    session: &crate::variant::Session,
    p: &crate::runtime::Prepared,
    tasks: &[GradedTask],
    held_out: bool,
) -> crate::Result<(Vec<TaskResult>, u64)> {
    use crate::runtime::{CallOptions, CallOutcome};
    let opts = CallOptions::default();
    let mut results = Vec::new();
    let mut fuel = 0;
    for t in tasks {
        let r = session.solve(p, &t.task, &opts).await?;
        fuel += r.usage.fuel;
        let (passed, note) = match &r.outcome {
            CallOutcome::Ok(a) if grade(t, &a.output) => (true, String::new()),
            CallOutcome::Ok(a) => (
                false,
                format!(
                    "answered {:?}, which is wrong",
                    crate::services::log::sanitize(&a.output.as_bytes()[..a.output.len().min(200)])
                ),
            ),
            CallOutcome::GuestError(m) => (false, format!("failed: {m}")),
            CallOutcome::Failed(f) => (false, format!("{}: {}", f.kind, f.detail)),
        };
        results.push(TaskResult { id: t.task.id.clone(), held_out, passed, note });
    }
    Ok((results, fuel))
}

/// Fraction passed.
pub fn pass_rate(results: &[TaskResult]) -> f64 {
    if results.is_empty() {
        0.0
    } else {
        results.iter().filter(|r| r.passed).count() as f64 / results.len() as f64
    }
}

/// The visible failures as feedback text: the task input and what went
/// wrong. Held-out results are never included.
pub fn feedback(suite: &Suite, results: &[TaskResult]) -> String {
    let mut out = String::new();
    for r in results.iter().filter(|r| !r.held_out && !r.passed) {
        let input = suite.visible.iter().find(|t| t.task.id == r.id).map(|t| t.task.input.as_str()).unwrap_or("");
        out.push_str(&format!("task {} `{}`: {}\n", r.id, input, r.note));
    }
    out
}

/// Evaluate on the whole suite (both splits).
pub async fn evaluate(
    session: &crate::variant::Session,
    p: &crate::runtime::Prepared,
    suite: &Suite,
) -> crate::Result<SuiteScore> {
    let (mut results, f1) = run_tasks(session, p, &suite.visible, false).await?;
    let (held, f2) = run_tasks(session, p, &suite.held_out, true).await?;
    let visible = pass_rate(&results);
    let held_out = Some(pass_rate(&held));
    results.extend(held);
    Ok(SuiteScore { visible, held_out, feedback: feedback(suite, &results), results, fuel: f1 + f2 })
}
