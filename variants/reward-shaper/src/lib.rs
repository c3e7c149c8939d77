//! reward-shaper: a reward function for the host's `reward-design` suite,
//! and a meta-agent that tunes its shaping coefficients.
//!
//! `rewards` (the `reward-model` export) is the environment's own reward
//! plus shaping terms weighted by the constants below; the host trains a
//! policy with it and scores the policy on the true return. `improve`
//! reads the feedback of the visible tasks and raises the coefficient of
//! the environment that scored worst, one rung of `LADDER` per generation.

use vivarium_guest::{
    log, source, Answer, Env, ImproveContext, MetaAgent, Observation, Proposal, RewardModel, Task, TaskAgent,
    Transition,
};

/// How many times this variant has improved itself; `improve` rewrites it.
const GENERATION: u32 = 0;

// The shaping coefficients `improve` rewrites.
/// Mountain car: weight of the per-step gain in mechanical energy (height
/// and speed, in units of the hill), a potential-based shaping term.
const MOUNTAIN_CAR_ENERGY: f64 = 0.0;
/// Acrobot: weight of the per-step rise of the tip's height.
const ACROBOT_HEIGHT: f64 = 0.0;
/// Cart-pole: penalty on the squared pole angle (1 at the 12° limit).
const CARTPOLE_UPRIGHT: f64 = 0.0;
/// Walker: weight of the forward speed (m/s) beside the bonus for staying up.
const WALKER_SPEED: f64 = 0.0;

/// The values a coefficient steps through, one per generation.
const LADDER: [f64; 5] = [0.0, 10.0, 30.0, 100.0, 300.0];
/// Acrobot's rungs, raised with mountain car's (both are −1-per-step tasks).
const ACROBOT_LADDER: [f64; 5] = [0.0, 0.5, 1.0, 2.0, 4.0];
/// Cart-pole's rungs.
const CARTPOLE_LADDER: [f64; 5] = [0.0, 0.1, 0.3, 0.5, 1.0];
/// The walker's rungs.
const WALKER_LADDER: [f64; 4] = [0.0, 1.0, 3.0, 10.0];

/// The file `improve` edits (relative to the variant's tree).
const SELF_PATH: &str = "src/lib.rs";

/// A visible score at or above this is good enough to leave alone.
const GOOD: f64 = 0.95;

/// Mountain-car mechanical energy in units of the hill: height and speed.
fn energy(o: &Observation) -> f64 {
    0.5 * (3.0 * o.o0).sin() + 0.5 * (o.o1 / 0.07) * (o.o1 / 0.07)
}

/// Acrobot tip height `−cos θ₁ − cos(θ₁ + θ₂)`.
fn tip_height(o: &Observation) -> f64 {
    -o.o0 - (o.o0 * o.o2 - o.o1 * o.o3)
}

struct Shaper;

/// The reward of one transition.
fn reward(env: Env, t: &Transition) -> f64 {
    let (obs, action, next_obs, terminated) = (&t.obs, t.action, &t.next_obs, t.terminated);
    match env {
            Env::Cartpole => {
                let th = next_obs.o2 / 0.2095;
                1.0 - CARTPOLE_UPRIGHT * th * th
            }
            Env::MountainCar => -1.0 + MOUNTAIN_CAR_ENERGY * (energy(next_obs) - energy(obs)),
            Env::Acrobot => {
                let base = if terminated { 0.0 } else { -1.0 };
                base + ACROBOT_HEIGHT * (tip_height(next_obs) - tip_height(obs))
            }
            // Stay up; walk forward once the speed is weighted.
            Env::Walker => (if terminated { 0.0 } else { 1.0 }) + WALKER_SPEED * next_obs.o1,
            Env::Pendulum => {
                // Gymnasium's own cost, on the state before the step.
                let th = obs.o1.atan2(obs.o0);
                let u = action.clamp(-2.0, 2.0);
                -(th * th + 0.1 * obs.o2 * obs.o2 + 0.001 * u * u)
            }
        }
}

impl RewardModel for Shaper {
    fn rewards(env: Env, transitions: Vec<Transition>) -> Vec<f64> {
        transitions.iter().map(|t| reward(env, t)).collect()
    }
}

fn describe() -> String {
    format!(
        "reward-shaper generation {GENERATION}: mountain-car energy {MOUNTAIN_CAR_ENERGY}, acrobot height \
         {ACROBOT_HEIGHT}, cartpole upright {CARTPOLE_UPRIGHT}, walker speed {WALKER_SPEED}"
    )
}

impl TaskAgent for Shaper {
    fn solve(_task: Task) -> Result<Answer, String> {
        Ok(Answer::new(describe()))
    }
}

/// Mean visible score per environment, from feedback lines of the shape
/// ``task <id> `<env> seed <n>`: score <x>: <note>``.
fn scores(feedback: &str) -> Vec<(String, f64)> {
    let mut sums: Vec<(String, f64, u32)> = Vec::new();
    for line in feedback.lines() {
        let Some((_, rest)) = line.split_once('`') else { continue };
        let Some((input, rest)) = rest.split_once('`') else { continue };
        let Some((env, _seed)) = input.split_once(" seed ") else { continue };
        let Some(rest) = rest.strip_prefix(": score ") else { continue };
        let Some(Ok(score)) = rest.split(':').next().map(|s| s.trim().parse::<f64>()) else { continue };
        match sums.iter_mut().find(|(e, _, _)| e == env) {
            Some(s) => {
                s.1 += score;
                s.2 += 1;
            }
            None => sums.push((env.to_string(), score, 1)),
        }
    }
    sums.into_iter().map(|(e, s, n)| (e, s / f64::from(n))).collect()
}

/// The next rung above `value` on `ladder`, if any.
fn next_rung(ladder: &[f64], value: f64) -> Option<f64> {
    ladder.iter().copied().find(|&v| v > value)
}

/// The edits for this generation: `(constant, new value)` pairs and a summary.
fn plan(feedback: &str) -> Result<(Vec<(&'static str, f64)>, String), String> {
    let mut by_score = scores(feedback);
    if by_score.is_empty() {
        return Err("the feedback holds no task scores; nothing to act on".into());
    }
    // Worst first; ties in feedback order.
    by_score.sort_by(|a, b| a.1.total_cmp(&b.1));
    for (env, score) in &by_score {
        if *score >= GOOD {
            break;
        }
        let edits: Vec<(&'static str, f64)> = match env.as_str() {
            "mountain-car" => match next_rung(&LADDER, MOUNTAIN_CAR_ENERGY) {
                Some(v) => {
                    let mut e = vec![("MOUNTAIN_CAR_ENERGY", v)];
                    if let Some(a) = next_rung(&ACROBOT_LADDER, ACROBOT_HEIGHT) {
                        e.push(("ACROBOT_HEIGHT", a));
                    }
                    e
                }
                None => continue,
            },
            "acrobot" => match next_rung(&ACROBOT_LADDER, ACROBOT_HEIGHT) {
                Some(v) => vec![("ACROBOT_HEIGHT", v)],
                None => continue,
            },
            "cartpole" => match next_rung(&CARTPOLE_LADDER, CARTPOLE_UPRIGHT) {
                Some(v) => vec![("CARTPOLE_UPRIGHT", v)],
                None => continue,
            },
            "walker" => match next_rung(&WALKER_LADDER, WALKER_SPEED) {
                Some(v) => vec![("WALKER_SPEED", v)],
                None => continue,
            },
            _ => continue,
        };
        let what: Vec<String> = edits.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        return Ok((edits, format!("{env} scored {score:.2}: {}", what.join(", "))));
    }
    Err("every environment scores well or its shaping is at the top of its ladder".into())
}

/// A Rust literal for `v` that stays an `f64` (`10.0`, not `10`).
fn literal(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

impl MetaAgent for Shaper {
    fn improve(ctx: ImproveContext) -> Result<Proposal, String> {
        let (edits, why) = plan(&ctx.feedback)?;
        let next_generation = GENERATION + 1;
        let edit = ctx.edit_text(SELF_PATH, |text| {
            let mut text = text.to_string();
            for (name, value) in &edits {
                text = source::set_const(&text, name, &literal(*value))?;
            }
            source::set_const(&text, "GENERATION", &next_generation.to_string())
        })?;
        log::info(&format!("{}: {why}", describe()));
        Ok(Proposal::new(format!("reward-shaper: {why} (generation {next_generation})")).with_edit(edit))
    }
}

vivarium_guest::export!(Shaper);

#[cfg(test)]
mod tests {
    use super::*;

    const FEEDBACK: &str = "task rd-v-cartpole-1 `cartpole seed 1`: score 1.0000: cartpole: trained return 500.0\n\
        task rd-v-mountain-car-1 `mountain-car seed 1`: score 0.0000: mountain-car: trained return -200.0\n\
        task rd-v-mountain-car-2 `mountain-car seed 2`: score 0.5000: mountain-car: trained return -155.0\n";

    #[test]
    fn reads_scores_per_environment() {
        assert_eq!(scores(FEEDBACK), vec![("cartpole".to_string(), 1.0), ("mountain-car".to_string(), 0.25)]);
    }

    #[test]
    fn raises_the_worst_environments_shaping() {
        let (edits, why) = plan(FEEDBACK).unwrap();
        assert_eq!(edits, vec![("MOUNTAIN_CAR_ENERGY", 10.0), ("ACROBOT_HEIGHT", 0.5)]);
        assert!(why.starts_with("mountain-car scored 0.25"), "{why}");
        assert!(plan("task a `cartpole seed 1`: score 1.0000: fine\n").is_err());
        let walker = "task lo-v-walker-1 `walker seed 1`: score 0.0100: walker: trained return 0.0\n";
        assert_eq!(plan(walker).unwrap().0, vec![("WALKER_SPEED", 1.0)]);
        assert_eq!(literal(10.0), "10.0");
        assert_eq!(literal(0.5), "0.5");
    }
}
