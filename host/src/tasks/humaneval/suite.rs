//! HumanEval as an `evolve` suite: each task's input is a problem's prompt
//! (its instruction names the entry point), the variant's answer is the
//! completion, graded by [`super::grade`] as `vivarium grade` grades it.
//!
//! The 164 problems are split 82 visible / 82 held out by a seeded order
//! (sha256 of [`SEED`] and the task id), the same on every machine. A
//! visible task's note is the grader's result — for a failed check, the
//! failing assert's line of the test — and reaches the meta-agent as
//! feedback; held-out tasks run sealed ([`crate::runtime::CallOptions::sealed`])
//! and their notes never leave the host. The test code itself never reaches
//! the variant: it runs only in the grader's own instances.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::grade::{default_limits, Grader};
use super::Problem;
use crate::error::Result;
use crate::runtime::bindings::Task;
use crate::runtime::{CallOptions, CallOutcome, Prepared};
use crate::tasks::{Graded, GradedTask, Grading, Spent, Suite};
use crate::variant::Session;

/// The suite's name in `run.toml`.
pub const NAME: &str = "humaneval";

/// The seed of the visible / held-out split.
pub const SEED: &str = "vivarium-humaneval-split-1";

/// The instruction of every task; `{entry_point}` is the function's name.
pub fn instruction(entry_point: &str) -> String {
    format!(
        "Complete the Python function `{entry_point}` whose signature and docstring are the input: answer with \
         the code that follows the input (the function's body, indented), as a HumanEval completion. \
         entry_point: {entry_point}"
    )
}

/// The suite from the installed problems ([`super::problems`]): the first
/// half of the seeded order visible, the rest held out.
///
/// Errors: the problems are not found ([`crate::Error::Invalid`] naming
/// `scripts/setup.sh`).
pub fn suite() -> Result<Suite> {
    Ok(from_problems(super::problems()?))
}

/// The suite over `problems`.
pub fn from_problems(problems: Vec<Problem>) -> Suite {
    let mut order: Vec<(String, &Problem)> =
        problems.iter().map(|p| (hex::encode(Sha256::digest(format!("{SEED}\n{}", p.task_id))), p)).collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let task = |p: &Problem| GradedTask {
        task: Task {
            id: p.task_id.clone(),
            domain: NAME.into(),
            instruction: instruction(&p.entry_point),
            input: p.prompt.clone(),
        },
        expected: p.task_id.clone(),
    };
    let half = order.len().div_ceil(2);
    let visible = order[..half].iter().map(|(_, p)| task(p)).collect();
    let held_out = order[half..].iter().map(|(_, p)| task(p)).collect();
    let grader = SuiteGrader {
        problems: problems.iter().map(|p| (p.task_id.clone(), p.clone())).collect(),
        graders: Mutex::new(Vec::new()),
        building: tokio::sync::Mutex::new(()),
    };
    Suite { name: NAME, visible, held_out, grading: Grading::Custom(Arc::new(grader)) }
}

/// Asks the variant for a completion, then grades it in the grader's own
/// instances.
struct SuiteGrader {
    problems: HashMap<String, Problem>,
    /// One grader per engine (a grader's linked interpreter belongs to the
    /// runtime it was made on).
    graders: Mutex<Vec<(wasmtime::Engine, Arc<Grader>)>>,
    building: tokio::sync::Mutex<()>,
}

impl SuiteGrader {
    async fn grader(&self, session: &Session) -> Result<Arc<Grader>> {
        let find = || {
            let all = self.graders.lock().expect("graders lock");
            all.iter().find(|(e, _)| wasmtime::Engine::same(e, session.runtime.engine())).map(|(_, g)| g.clone())
        };
        if let Some(g) = find() {
            return Ok(g);
        }
        let _one = self.building.lock().await;
        if let Some(g) = find() {
            return Ok(g);
        }
        let g = Arc::new(Grader::for_session(session, default_limits()).await?);
        self.graders.lock().expect("graders lock").push((session.runtime.engine().clone(), g.clone()));
        Ok(g)
    }
}

impl crate::tasks::Grader for SuiteGrader {
    fn grade<'a>(
        &'a self,
        session: &'a Session,
        p: &'a Prepared,
        task: &'a GradedTask,
        opts: &'a CallOptions,
    ) -> Pin<Box<dyn Future<Output = Result<Graded>> + Send + 'a>> {
        Box::pin(async move {
            let Some(problem) = self.problems.get(&task.expected) else {
                return Err(crate::Error::invalid(format!("no HumanEval problem {}", task.expected)));
            };
            let r = session.solve(p, &task.task, opts).await?;
            let mut spent = Spent {
                fuel: r.usage.fuel,
                llm_tokens: r.services.llm.as_ref().map(|u| u.prompt_tokens + u.completion_tokens).unwrap_or(0),
                ..Spent::default()
            };
            let completion = match r.outcome {
                CallOutcome::Ok(a) => a.output,
                CallOutcome::GuestError(m) => {
                    return Ok(Graded { score: 0.0, passed: false, note: format!("failed: {m}"), spent });
                }
                CallOutcome::Failed(f) => {
                    return Ok(Graded { score: 0.0, passed: false, note: format!("{}: {}", f.kind, f.detail), spent });
                }
            };
            let v = self.grader(session).await?.grade(&session.runtime, problem, &completion).await?;
            spent.fuel += v.fuel;
            let note = if v.passed { String::new() } else { v.result };
            Ok(Graded { score: if v.passed { 1.0 } else { 0.0 }, passed: v.passed, note, spent })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_seeded_half_and_half() {
        let problems: Vec<Problem> = (0..164)
            .map(|i| Problem {
                task_id: format!("HumanEval/{i}"),
                prompt: format!("def f{i}():\n"),
                canonical_solution: String::new(),
                test: "def check(c): pass".into(),
                entry_point: format!("f{i}"),
            })
            .collect();
        let a = from_problems(problems.clone());
        let b = from_problems(problems);
        assert_eq!((a.visible.len(), a.held_out.len()), (82, 82));
        let ids = |s: &Suite| s.visible.iter().map(|t| t.task.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b), "the same split every time");
        // Not the file order: both splits draw from the whole range.
        assert!(a.visible.iter().any(|t| t.task.id == "HumanEval/163" || t.task.id == "HumanEval/162"));
        assert!(a.held_out.iter().any(|t| t.task.id == "HumanEval/0" || t.task.id == "HumanEval/1"));
        assert!(a.visible.iter().all(|t| !t.task.input.is_empty() && t.task.instruction.contains("entry_point")));
    }
}
