//! The `tiny-lm` suite: the variant chooses how to train a small byte-level
//! language model; the host trains it and measures it.
//!
//! Each task asks `solve` for a JSON config of the embedded trainer's
//! `char-lm` recipe (see [`crate::trainer::embedded`]: width, depth, heads,
//! context, batch, learning rate, steps). The host — never the variant —
//! trains that config on the corpus's training split for [`TASK_SECONDS`]
//! with the task's seed (the variant's `seed` is replaced) and measures bits
//! per byte itself: on the validation split for visible tasks, on the
//! held-out slice with other seeds for held-out tasks. A variant therefore
//! cannot claim a score it did not earn.
//!
//! Score: `1 - bpb / 8`, clamped to `[0, 1]` (8 bits per byte is a model
//! that knows nothing about bytes; lower bpb is better, a higher score is
//! better). The note carries the raw bpb, steps and parameters; an answer
//! that is not a valid config scores 0 with the reason. The seconds each
//! job ran are the task's `Spent.gpu_seconds`, counted against the run's
//! `budget.gpu_seconds`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Graded, GradedTask, Grader, Grading, Spent, Suite};
use crate::runtime::bindings::Task;
use crate::runtime::{CallOptions, CallOutcome, Prepared};
use crate::trainer::embedded::{self, LmConfig};
use crate::trainer::{EvalSplit, JobSpec, Ledger, Phase, Trainer, TrainerConfig};
use crate::variant::Session;

/// The training budget of one task, in seconds.
pub const TASK_SECONDS: f64 = 2.0;
/// Seeds of the visible tasks (validation split).
const VISIBLE_SEEDS: &[u64] = &[1, 2];
/// Seeds of the held-out tasks (held-out split).
const HELD_OUT_SEEDS: &[u64] = &[101];

/// The suite.
pub fn suite() -> Suite {
    let make = |split: &str, seeds: &[u64]| {
        seeds
            .iter()
            .map(|&seed| GradedTask {
                task: Task {
                    id: format!("tiny-lm-{split}-{seed}"),
                    domain: "tiny-lm".into(),
                    instruction: format!(
                        "Answer with a JSON object configuring the `char-lm` recipe: a byte-level transformer \
                         language model the host trains for {TASK_SECONDS} s on the CPU. Fields (all optional): \
                         d_model 8-512 (a multiple of heads), layers 1-8, heads 1-16, context 4-256, batch \
                         1-256, lr (0, 1], weight_decay [0, 1], steps 1-1000000. The host sets the seed, \
                         measures validation bits per byte (lower is better) and scores 1 - bpb/8."
                    ),
                    input: json!({
                        "recipe": embedded::RECIPE,
                        "budget_seconds": TASK_SECONDS,
                        "train_bytes": embedded::splits().0.len(),
                    })
                    .to_string(),
                },
                expected: json!({ "seed": seed, "split": split }).to_string(),
            })
            .collect()
    };
    Suite {
        name: "tiny-lm",
        visible: make("v", VISIBLE_SEEDS),
        held_out: make("h", HELD_OUT_SEEDS),
        grading: Grading::Custom(Arc::new(TinyLmGrader::new())),
    }
}

/// Trains the variant's config on the host and scores bits per byte.
pub struct TinyLmGrader {
    trainer: Arc<Trainer>,
}

impl Default for TinyLmGrader {
    fn default() -> Self {
        Self::new()
    }
}

impl TinyLmGrader {
    /// A grader with its own embedded trainer (one job at a time).
    pub fn new() -> Self {
        let config = TrainerConfig { max_job_seconds: TASK_SECONDS, ..TrainerConfig::default() };
        Self {
            trainer: Arc::new(Trainer::with_backend(config, Arc::new(embedded::Embedded::new()), Ledger::in_memory())),
        }
    }
}

/// The score of `bpb`: `1 - bpb/8` in `[0, 1]`.
pub fn score(bpb: f64) -> f64 {
    if bpb.is_finite() {
        (1.0 - bpb / 8.0).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Parse the variant's answer into a config with the host's seed.
fn config_from_answer(answer: &str, seed: u64) -> Result<serde_json::Value, String> {
    let mut v: serde_json::Value = serde_json::from_str(answer.trim())
        .map_err(|e| format!("the answer is not a JSON object ({e}); answer with e.g. {{\"lr\": 0.003}}"))?;
    let obj = v.as_object_mut().ok_or("the answer is not a JSON object; answer with e.g. {\"lr\": 0.003}")?;
    obj.insert("seed".into(), json!(seed));
    LmConfig::from_json(&v)?;
    Ok(v)
}

impl Grader for TinyLmGrader {
    fn grade<'a>(
        &'a self,
        session: &'a Session,
        p: &'a Prepared,
        task: &'a GradedTask,
        opts: &'a CallOptions,
    ) -> Pin<Box<dyn Future<Output = crate::Result<Graded>> + Send + 'a>> {
        Box::pin(async move {
            let meta: serde_json::Value = serde_json::from_str(&task.expected)
                .map_err(|e| crate::Error::Internal(anyhow::anyhow!("tiny-lm task data: {e}")))?;
            let seed = meta["seed"].as_u64().unwrap_or(0);
            let split = if meta["split"] == "h" { EvalSplit::HeldOut } else { EvalSplit::Validation };
            let r = session.solve(p, &task.task, opts).await?;
            let mut spent = Spent {
                fuel: r.usage.fuel,
                llm_tokens: r.services.llm.as_ref().map(|u| u.prompt_tokens + u.completion_tokens).unwrap_or(0),
                ..Spent::default()
            };
            let fail = |note: String, spent: Spent| Graded { score: 0.0, passed: false, note, spent };
            let answer = match &r.outcome {
                CallOutcome::Ok(a) => a.output.clone(),
                CallOutcome::GuestError(m) => return Ok(fail(format!("failed: {m}"), spent)),
                CallOutcome::Failed(f) => return Ok(fail(format!("{}: {}", f.kind, f.detail), spent)),
            };
            let config = match config_from_answer(&answer, seed) {
                Ok(c) => c,
                Err(e) => return Ok(fail(e, spent)),
            };
            let spec = JobSpec {
                recipe: embedded::RECIPE.into(),
                config,
                script: None,
                budget: Duration::from_secs_f64(TASK_SECONDS),
                eval_split: split,
            };
            let trainer = self.trainer.clone();
            let status = tokio::task::spawn_blocking(move || trainer.run_blocking(spec))
                .await
                .map_err(|e| crate::Error::Internal(anyhow::anyhow!("the tiny-lm training thread failed: {e}")))?;
            let status = match status {
                Ok(s) => s,
                Err(e) => return Ok(fail(e.to_string(), spent)),
            };
            spent.gpu_seconds = status.seconds;
            let key = match split {
                EvalSplit::Validation => "val_bpb",
                EvalSplit::HeldOut => "heldout_bpb",
            };
            let m = &status.metrics;
            let Some(&bpb) = m.get(key).filter(|_| status.phase == Phase::Succeeded) else {
                return Ok(fail(
                    format!(
                        "training did not produce a score ({}{}{}); a smaller model or fewer steps fits the \
                         {TASK_SECONDS} s budget, a lower lr avoids divergence",
                        status.phase.as_str(),
                        if status.message.is_empty() { "" } else { ": " },
                        status.message
                    ),
                    spent,
                ));
            };
            let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
            let note = format!(
                "bpb {bpb:.4} (steps {}, params {}, train loss {:.4}, {:.2} s)",
                get("steps"),
                get("params"),
                get("train_loss"),
                status.seconds
            );
            Ok(Graded { score: score(bpb), passed: bpb < 8.0, note, spent })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_map_bpb_into_the_unit_interval() {
        assert_eq!(score(8.0), 0.0);
        assert_eq!(score(2.0), 0.75);
        assert_eq!(score(12.0), 0.0);
        assert_eq!(score(f64::NAN), 0.0);
    }

    #[test]
    fn answers_get_the_host_seed_and_are_checked() {
        let c = config_from_answer(" {\"lr\": 0.01, \"seed\": 999} ", 7).unwrap();
        assert_eq!(c, json!({"lr": 0.01, "seed": 7}));
        assert!(config_from_answer("lr=0.1", 1).unwrap_err().contains("not a JSON object"));
        assert!(config_from_answer("[1]", 1).unwrap_err().contains("not a JSON object"));
        assert!(config_from_answer("{\"layers\": 99}", 1).unwrap_err().contains("layers = 99"));
    }

    #[test]
    fn the_suite_hides_its_seeds_and_splits() {
        let s = suite();
        assert_eq!((s.visible.len(), s.held_out.len()), (2, 1));
        for t in s.visible.iter().chain(&s.held_out) {
            assert!(!t.task.input.contains("seed"), "{}", t.task.input);
        }
        assert_eq!(s.held_out[0].expected, "{\"seed\":101,\"split\":\"h\"}");
    }
}
