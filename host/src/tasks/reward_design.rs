//! The `reward-design` suite (reward design as in DGM-H): the variant
//! exports a reward function (`reward-model`); for each task the host
//! trains a linear policy on one environment with that reward (seeded CEM,
//! [`crate::sim::cem`]), then scores the trained policy on the task's
//! **true** objective — the environment's own Gymnasium return — mapped
//! onto [0, 1] ([`EnvKind::score`]). Beside it, the note carries the
//! return of the same training with a hand-written reference reward
//! ([`reference_reward`]), so a variant's reward is judged against a
//! known-good one.
//!
//! Visible tasks: cart-pole and mountain car at two seeds each. Held-out:
//! a third seed of each, and acrobot (an environment the meta-agent never
//! gets feedback on). A task's input is `<env> seed <n>`.
//!
//! The `locomotion` suite ([`locomotion`]) grades the same way on the
//! planar walker ([`crate::sim::walker`]): the true objective is the
//! distance walked in 5 s; two seeds visible, two held out.
//!
//! The reward instance lives for one task's training (one store, see
//! [`crate::runtime::reward`]); a trap or limit ends that training with score
//! 0 and the failure in the note, audited as a `limit-hit` or `trap`
//! record. Every training is audited as one `use` record
//! (`call: "reward-model"`) with its reward calls, fuel and steps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::json;

use super::{Graded, GradedTask, Grader, Grading, Spent, Suite};
use crate::audit::EventKind;
use crate::error::{Error, GuestFailureKind};
use crate::runtime::bindings::Task;
use crate::runtime::reward::RewardInstance;
use crate::runtime::{CallOptions, Prepared};
use crate::sim::cem::{self, CemConfig};
use crate::sim::{walker, EnvKind, Transition};
use crate::variant::Session;

/// The suite's name.
pub const NAME: &str = "reward-design";
/// The walker suite's name.
pub const LOCOMOTION: &str = "locomotion";

const VISIBLE: &[(EnvKind, u64)] =
    &[(EnvKind::Cartpole, 1), (EnvKind::Cartpole, 2), (EnvKind::MountainCar, 1), (EnvKind::MountainCar, 2)];
const HELD_OUT: &[(EnvKind, u64)] = &[(EnvKind::Cartpole, 3), (EnvKind::MountainCar, 3), (EnvKind::Acrobot, 1)];
const WALKER_VISIBLE: &[(EnvKind, u64)] = &[(EnvKind::Walker, 1), (EnvKind::Walker, 2)];
const WALKER_HELD_OUT: &[(EnvKind, u64)] = &[(EnvKind::Walker, 3), (EnvKind::Walker, 4)];

/// Episodes the trained policy is scored on.
pub const EVAL_EPISODES: usize = 5;

/// The CEM settings of one task: sized so that a whole suite grades in a
/// few seconds on two cores, with the reward called on every step.
pub fn cem_config(kind: EnvKind, seed: u64) -> CemConfig {
    let base = CemConfig { seed: seed.wrapping_mul(1_000_003).wrapping_add(17), ..CemConfig::default() };
    match kind {
        EnvKind::Cartpole => CemConfig { population: 24, elite: 4, iterations: 10, ..base },
        // Two episodes per candidate: one is too noisy to learn pumping from.
        EnvKind::MountainCar => CemConfig { population: 24, elite: 4, iterations: 8, episodes: 2, ..base },
        EnvKind::Acrobot => CemConfig { population: 24, elite: 4, iterations: 10, ..base },
        EnvKind::Pendulum => CemConfig { population: 16, elite: 4, iterations: 8, ..base },
        // 64 parameters; a narrower start keeps early gaits from flailing.
        EnvKind::Walker => CemConfig { population: 16, elite: 4, iterations: 8, init_std: 0.5, ..base },
    }
}

/// The seed of the evaluation episodes of a task (never a training seed).
pub fn eval_seed(seed: u64) -> u64 {
    seed.wrapping_mul(7_919).wrapping_add(0xE7A1)
}

/// The hand-written reference reward: the environment's reward plus
/// shaping terms that a person would write.
///
/// * cart-pole: 1 per step, minus the pole angle and cart offset, squared
///   and scaled to the termination thresholds;
/// * mountain car: −1 per step, plus 100 × the gain in mechanical energy
///   (height and speed, in units of the hill) — pumping energy is what
///   reaches the flag;
/// * acrobot: −1 per step, plus the rise of the tip's height;
/// * pendulum: its own reward (already dense);
/// * walker: 0.3 × the forward speed (m/s, from the distance walked in
///   the step), plus 0.05 for staying up, minus 0.01 × effort and 0.02 ×
///   the squared tilt.
pub fn reference_reward(t: &Transition<'_>) -> f64 {
    match t.env {
        EnvKind::Cartpole => {
            let (x, th) = (t.next_obs[0] / 2.4, t.next_obs[2] / 0.2095);
            1.0 - 0.5 * th * th - 0.25 * x * x
        }
        EnvKind::MountainCar => t.env_reward + 100.0 * (energy(t.next_obs) - energy(t.obs)),
        EnvKind::Acrobot => t.env_reward + 2.0 * (tip_height(t.next_obs) - tip_height(t.obs)),
        EnvKind::Pendulum => t.env_reward,
        EnvKind::Walker => {
            let alive = if t.terminated { 0.0 } else { 0.05 };
            0.3 * t.env_reward / walker::DT + alive - 0.01 * t.action - 0.02 * t.next_obs[3] * t.next_obs[3]
        }
    }
}

/// Mountain-car mechanical energy, scaled so that the swing to the flag is about 1.
fn energy(o: &[f64]) -> f64 {
    let (x, v) = (o[0], o[1]);
    // Height sin(3x)·0.45 (Gymnasium's rendering) and the kinetic term,
    // both in units of the hill's height.
    0.5 * (3.0 * x).sin() + 0.5 * (v / 0.07).powi(2)
}

/// Acrobot tip height `−cos θ₁ − cos(θ₁ + θ₂)` from the observation.
fn tip_height(o: &[f64]) -> f64 {
    let (c1, s1, c2, s2) = (o[0], o[1], o[2], o[3]);
    -c1 - (c1 * c2 - s1 * s2)
}

/// Train with the reference reward and score the result: `(true return, steps)`.
pub fn reference_return(kind: EnvKind, seed: u64) -> (f64, u64) {
    let cfg = cem_config(kind, seed);
    let trained = cem::train::<std::convert::Infallible>(kind, &cfg, &mut |t| Ok(reference_reward(t)));
    let Ok(trained) = trained;
    let (ret, eval_steps) = cem::evaluate(&trained.policy, eval_seed(seed), EVAL_EPISODES);
    (ret, trained.steps + eval_steps)
}

/// The suite.
pub fn suite() -> Suite {
    suite_of(NAME, "rd", VISIBLE, HELD_OUT)
}

/// The locomotion suite: reward design on the walker.
pub fn locomotion() -> Suite {
    suite_of(LOCOMOTION, "lo", WALKER_VISIBLE, WALKER_HELD_OUT)
}

fn suite_of(name: &'static str, prefix: &str, visible: &[(EnvKind, u64)], held_out: &[(EnvKind, u64)]) -> Suite {
    let make = |split: &str, tasks: &[(EnvKind, u64)]| {
        tasks
            .iter()
            .map(|(kind, seed)| GradedTask {
                task: Task {
                    id: format!("{prefix}-{split}-{kind}-{seed}"),
                    domain: name.into(),
                    instruction: "The host trains a linear policy on this environment with your reward-model \
                                  export and scores it on the environment's own return."
                        .into(),
                    input: format!("{kind} seed {seed}"),
                },
                expected: format!("{kind} {seed}"),
            })
            .collect()
    };
    Suite {
        name,
        visible: make("v", visible),
        held_out: make("h", held_out),
        grading: Grading::Custom(Arc::new(RewardDesignGrader::default())),
    }
}

/// Grades one task: train with the variant's reward, score on the true return.
#[derive(Default)]
pub struct RewardDesignGrader {
    /// Reference results by (env, seed): the same for every variant.
    reference: Mutex<HashMap<(EnvKind, u64), (f64, u64)>>,
}

/// What one training with the variant's reward came to.
enum Outcome {
    Trained { ret: f64, steps: u64 },
    Failed { kind: GuestFailureKind, detail: String, steps: u64 },
    NoExport(String),
}

fn parse_expected(t: &GradedTask) -> crate::Result<(EnvKind, u64)> {
    let bad = || Error::Internal(anyhow::anyhow!("reward-design task {} has a malformed spec", t.task.id));
    let (env, seed) = t.expected.split_once(' ').ok_or_else(bad)?;
    Ok((EnvKind::from_name(env).ok_or_else(bad)?, seed.parse().map_err(|_| bad())?))
}

impl RewardDesignGrader {
    async fn reference(&self, kind: EnvKind, seed: u64) -> crate::Result<(f64, u64)> {
        if let Some(r) = self.reference.lock().unwrap_or_else(PoisonError::into_inner).get(&(kind, seed)) {
            return Ok(*r);
        }
        let r = tokio::task::spawn_blocking(move || reference_return(kind, seed))
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("reference training thread failed: {e}")))?;
        self.reference.lock().unwrap_or_else(PoisonError::into_inner).insert((kind, seed), r);
        Ok(r)
    }
}

impl Grader for RewardDesignGrader {
    fn grade<'a>(
        &'a self,
        session: &'a Session,
        p: &'a Prepared,
        task: &'a GradedTask,
        _opts: &'a CallOptions,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::Result<Graded>> + Send + 'a>> {
        Box::pin(async move {
            let (kind, seed) = parse_expected(task)?;
            let (ref_ret, _) = self.reference(kind, seed).await?;
            let engine = session.runtime.engine().clone();
            let max_memory = session.runtime.config().max_memory;
            let prepared = p.clone();
            let scratch = session.scratch_for(p)?;
            let job = tokio::task::spawn_blocking(move || {
                let mut inst =
                    match RewardInstance::for_prepared_with(&engine, max_memory, &prepared, scratch.as_deref()) {
                        Err(Error::Invalid(why)) => return Ok((Outcome::NoExport(why), None)),
                        Err(e) => return Err(e),
                        Ok(Err(f)) => {
                            return Ok((Outcome::Failed { kind: f.kind, detail: f.detail, steps: 0 }, None));
                        }
                        Ok(Ok(i)) => i,
                    };
                let cfg = cem_config(kind, seed);
                let trained = cem::train_batched(kind, &cfg, &mut |env, steps| inst.rewards(env, steps));
                let (usage, _lines, log) = inst.finish();
                let outcome = match trained {
                    Ok(tr) => {
                        let (ret, eval_steps) = cem::evaluate(&tr.policy, eval_seed(seed), EVAL_EPISODES);
                        Outcome::Trained { ret, steps: tr.steps + eval_steps }
                    }
                    Err(stop) => {
                        Outcome::Failed { kind: stop.error.kind, detail: stop.error.detail, steps: stop.steps }
                    }
                };
                Ok((outcome, Some((usage, log))))
            });
            let (outcome, usage) =
                job.await.map_err(|e| Error::Internal(anyhow::anyhow!("reward training thread failed: {e}")))??;
            let ref_score = kind.score(ref_ret);
            let reference = format!("reference reward return {ref_ret:.1} (score {ref_score:.2})");
            let (score, note, steps, failure) = match &outcome {
                Outcome::Trained { ret, steps } => {
                    let score = kind.score(*ret);
                    (score, format!("{kind}: trained return {ret:.1} (score {score:.2}); {reference}"), *steps, None)
                }
                Outcome::Failed { kind: fk, detail, steps } => (
                    0.0,
                    format!("{kind}: the reward function failed ({fk}: {detail}) after {steps} steps; {reference}"),
                    *steps,
                    Some((*fk, detail.clone())),
                ),
                Outcome::NoExport(why) => (0.0, format!("{kind}: {why}"), 0, None),
            };
            let sha = Some(p.sha256.as_str());
            let (reward_usage, log_usage) = match usage {
                Some((u, l)) => (Some(u), Some(l)),
                None => (None, None),
            };
            session.audit.append(
                sha,
                EventKind::Use,
                json!({
                    "call": "reward-model",
                    "task": task.task.id,
                    "env": kind.name(),
                    "seed": seed,
                    "outcome": outcome_name(&outcome),
                    "grant_digest": p.grant.digest(),
                    "usage": reward_usage,
                    "log": log_usage,
                    "sim_steps": steps,
                }),
            )?;
            if let Some((fk, detail)) = &failure {
                let ev = if *fk == GuestFailureKind::Trap { EventKind::Trap } else { EventKind::LimitHit };
                session.audit.append(sha, ev, json!({ "call": "reward-model", "reason": fk, "detail": detail }))?;
            }
            let fuel = reward_usage.as_ref().map_or(0, |u| u.fuel);
            Ok(Graded {
                score,
                passed: score >= 0.9,
                note,
                spent: Spent { fuel, sim_steps: steps, ..Spent::default() },
            })
        })
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Trained { .. } => "ok",
        Outcome::Failed { .. } => "failed",
        Outcome::NoExport(_) => "refused",
    }
}
