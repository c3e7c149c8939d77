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
    /// Fraction of held-out tasks passed.
    pub held_out: f64,
    /// Per-task results of the visible split.
    pub results: Vec<TaskResult>,
    /// Failure notes of the visible split, for the meta-agent.
    pub feedback: String,
    /// Fuel used over all calls.
    pub fuel: u64,
}

/// Run every task of `suite` through `solve` and grade it.
///
/// A trap or limit hit on one task fails that task only.
pub async fn evaluate(
    session: &crate::variant::Session,
    p: &crate::runtime::Prepared,
    suite: &Suite,
) -> crate::Result<SuiteScore> {
    use crate::runtime::{CallOptions, CallOutcome};
    let opts = CallOptions::default();
    let mut results = Vec::new();
    let mut feedback = String::new();
    let mut fuel = 0;
    let mut passed = [0usize; 2];
    for (split, tasks) in [(0, &suite.visible), (1, &suite.held_out)] {
        for t in tasks {
            let r = session.solve(p, &t.task, &opts).await?;
            fuel += r.usage.fuel;
            let (ok, note) = match &r.outcome {
                CallOutcome::Ok(a) if grade(t, &a.output) => (true, String::new()),
                CallOutcome::Ok(a) => (false, format!("answered {:?}, which is wrong", a.output)),
                CallOutcome::GuestError(m) => (false, format!("failed: {m}")),
                CallOutcome::Failed(f) => (false, format!("{}: {}", f.kind, f.detail)),
            };
            if ok {
                passed[split] += 1;
            }
            if split == 0 {
                if !ok {
                    feedback.push_str(&format!("task {} `{}`: {note}\n", t.task.id, t.task.input));
                }
                results.push(TaskResult { id: t.task.id.clone(), passed: ok, note });
            }
        }
    }
    let frac = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    Ok(SuiteScore {
        visible: frac(passed[0], suite.visible.len()),
        held_out: frac(passed[1], suite.held_out.len()),
        results,
        feedback,
        fuel,
    })
}
