//! A guest for the simulator tests: `solve` runs a script of `simulator`
//! calls, and the `reward-model` export behaves per environment.
//!
//! | command | result |
//! |---|---|
//! | `make ENV SEED` | `ok HANDLE obs=N act=M discrete=B max=S policy=P` |
//! | `reset H` | `ok O1,O2,…` |
//! | `step H A1,A2,…` | `ok reward=R term=T trunc=U obs=O1,…` |
//! | `run H A N` | N steps of action A, resetting after each episode: `ok N` |
//! | `rollout ENV SEED MAX P1,P2,…` | `ok total=R steps=N term=T` |
//! | `left` | steps left |
//! | `close H` | `ok` |
//!
//! Errors answer `err KIND: message`.
//!
//! | reward env | behaviour |
//! |---|---|
//! | cartpole | 1 per step (the environment's own reward); with the first `obs.o0 == 1234` it calls `simulator.steps-left`; with `4321` it answers no rewards at all, with `4322` one too many |
//! | mountain-car | loops forever |
//! | pendulum | panics (a trap) |
//! | acrobot | allocates without bound |
//! | walker | the forward speed (`next-obs.o1`) |

use vivarium_guest::simulator::{self as sim, Error};
use vivarium_guest::{Answer, Env, ImproveContext, MetaAgent, Proposal, RewardModel, Task, TaskAgent, Transition};

struct Guest;

fn err(e: Error) -> String {
    match e {
        Error::Denied(m) => format!("err denied: {m}"),
        Error::BudgetExhausted(m) => format!("err budget-exhausted: {m}"),
        Error::InvalidAction(m) => format!("err invalid-action: {m}"),
        Error::UnknownHandle(h) => format!("err unknown-handle: {h}"),
        Error::NeedsReset(m) => format!("err needs-reset: {m}"),
    }
}

fn nums(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(",")
}

fn run(line: &str) -> String {
    let w: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let float = |i: usize| w.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let floats = |i: usize| -> Vec<f64> { w.get(i).map_or(vec![], |p| p.split(',').filter_map(|x| x.parse().ok()).collect()) };
    match w.first().copied() {
        Some("make") => match sim::make(w.get(1).copied().unwrap_or(""), num(2)) {
            Ok((h, i)) => format!(
                "ok {h} obs={} act={} discrete={} max={} policy={}",
                i.observation_size, i.action_size, i.discrete, i.max_steps, i.policy_size
            ),
            Err(e) => err(e),
        },
        Some("reset") => match sim::reset(num(1)) {
            Ok(o) => format!("ok {}", nums(&o)),
            Err(e) => err(e),
        },
        Some("step") => match sim::step(num(1), &floats(2)) {
            Ok(r) => format!("ok reward={} term={} trunc={} obs={}", r.reward, r.terminated, r.truncated, nums(&r.observation)),
            Err(e) => err(e),
        },
        Some("run") => {
            let (h, a, n) = (num(1), float(2), num(3));
            if let Err(e) = sim::reset(h) {
                return err(e);
            }
            for k in 0..n {
                match sim::step(h, &[a]) {
                    Ok(r) if r.terminated || r.truncated => {
                        if let Err(e) = sim::reset(h) {
                            return err(e);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return format!("{} after {k}", err(e)),
                }
            }
            format!("ok {n}")
        }
        Some("rollout") => {
            let policy = floats(4);
            match sim::rollout(w.get(1).copied().unwrap_or(""), num(2), &policy, num(3) as u32) {
                Ok(r) => format!("ok total={} steps={} term={}", r.total_reward, r.steps, r.terminated),
                Err(e) => err(e),
            }
        }
        Some("left") => sim::steps_left().to_string(),
        Some("close") => {
            sim::close(num(1));
            "ok".into()
        }
        _ => format!("err unknown command {line:?}"),
    }
}

impl TaskAgent for Guest {
    fn solve(task: Task) -> Result<Answer, String> {
        Ok(Answer::new(task.input.lines().map(run).collect::<Vec<_>>().join("\n")))
    }
}

impl MetaAgent for Guest {
    fn improve(_ctx: ImproveContext) -> Result<Proposal, String> {
        Err("not supported".into())
    }
}

impl RewardModel for Guest {
    fn rewards(env: Env, transitions: Vec<Transition>) -> Vec<f64> {
        let first = transitions.first().map_or(0.0, |t| t.obs.o0);
        match env {
            Env::Cartpole if first == 1234.0 => vec![sim::steps_left() as f64; transitions.len()],
            Env::Cartpole if first == 4321.0 => Vec::new(),
            Env::Cartpole if first == 4322.0 => vec![1.0; transitions.len() + 1],
            Env::Cartpole => vec![1.0; transitions.len()],
            Env::MountainCar => {
                let mut spins = 0u64;
                loop {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
            }
            Env::Pendulum => panic!("the pendulum reward is not written yet"),
            // Forward speed: a reward that makes the walker walk.
            Env::Walker => transitions.iter().map(|t| t.next_obs.o1).collect(),
            Env::Acrobot => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
        }
    }
}

vivarium_guest::export!(Guest);
