//! The cross-entropy method over a [`LinearPolicy`]'s parameters, seeded.
//!
//! Each iteration samples `population` parameter vectors from a diagonal
//! Gaussian, scores each by the mean return of `episodes` episodes under
//! the given reward function (every candidate of an iteration sees the
//! same initial states: common random numbers), and refits the Gaussian to
//! the best `elite` candidates (ties go to the earlier candidate), adding
//! `extra_std` so the search does not collapse. The trained policy is the
//! final mean. Everything is a pure function of the seed and the reward
//! function's answers. The reward is asked in chunks of transitions
//! ([`train_batched`]) or one at a time ([`train`]); both give the same result.

use super::{run_episode, EnvKind, Episode, LinearPolicy, Rng, Step, Transition, FEATURES, MAX_OBS};

/// CEM settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CemConfig {
    /// Candidates per iteration.
    pub population: usize,
    /// Candidates kept to refit the distribution.
    pub elite: usize,
    /// Iterations.
    pub iterations: usize,
    /// Episodes per candidate.
    pub episodes: usize,
    /// Initial standard deviation of every parameter.
    pub init_std: f64,
    /// Added to every refitted standard deviation.
    pub extra_std: f64,
    /// Seed of the sampling and of the training episodes' initial states.
    pub seed: u64,
}

impl CemConfig {
    /// The most environment steps this training can take on `kind`.
    pub fn max_steps(&self, kind: EnvKind) -> u64 {
        (self.population * self.iterations * self.episodes) as u64 * u64::from(kind.spec().max_steps)
    }
}

impl Default for CemConfig {
    fn default() -> Self {
        Self { population: 16, elite: 4, iterations: 8, episodes: 1, init_std: 1.0, extra_std: 0.05, seed: 0 }
    }
}

/// A trained policy and what training took.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    /// The final mean of the distribution.
    pub policy: LinearPolicy,

    /// Environment steps taken (each one transition whose reward was asked).
    pub steps: u64,
    /// The best candidate's mean return (under the training reward) per iteration.
    pub best_per_iteration: Vec<f64>,
}

/// Training stopped by the reward function.
#[derive(Debug, Clone, PartialEq)]
pub struct Stopped<E> {
    /// The reward function's error.
    pub error: E,
    /// Environment steps taken, the one whose reward failed included.
    pub steps: u64,
}

/// The most transitions [`train_batched`] hands its reward function at once.
pub const CHUNK: usize = 256;

/// Train a linear policy for `kind` with CEM, `reward` scoring every step.
/// A non-finite reward counts as a very low return for that candidate.
///
/// This is [`train_batched`] with the reward asked one transition at a
/// time; the result is the same. On an error, [`Stopped::steps`] counts
/// the transitions whose reward was asked, the failing one included.
pub fn train<E>(
    kind: EnvKind,
    cfg: &CemConfig,
    reward: &mut dyn FnMut(&Transition<'_>) -> Result<f64, E>,
) -> Result<Trained, Stopped<E>> {
    let mut asked = 0u64;
    let mut out = Vec::with_capacity(CHUNK);
    let r = train_batched(kind, cfg, &mut |env, steps: &[Step]| {
        out.clear();
        for s in steps {
            asked += 1;
            out.push(reward(&s.transition(env))?);
        }
        Ok(std::mem::take(&mut out))
    });
    r.map_err(|s| Stopped { error: s.error, steps: asked })
}

/// Train a linear policy for `kind` with CEM, `rewards` scoring the
/// transitions in chunks.
///
/// The reward never changes the dynamics, so each candidate's episodes are
/// rolled out first and their transitions handed to `rewards` in order, at
/// most [`CHUNK`] at a time (a chunk never spans two candidates). `rewards`
/// must answer exactly one reward per transition (the host's
/// [`RewardInstance`](crate::runtime::reward::RewardInstance) turns a wrong count
/// into an error). A non-finite reward counts as a very low return for
/// that candidate. On an error, [`Stopped::steps`] counts every
/// environment step taken, the failing chunk's included.
pub fn train_batched<E>(
    kind: EnvKind,
    cfg: &CemConfig,
    rewards: &mut dyn FnMut(EnvKind, &[Step]) -> Result<Vec<f64>, E>,
) -> Result<Trained, Stopped<E>> {
    let dim = LinearPolicy::param_count(kind);
    let spec = kind.spec();
    let n = spec.obs;
    let mut mean = vec![0.0; dim];
    let mut std = vec![cfg.init_std; dim];
    let mut rng = Rng::derive(cfg.seed, 0xCE);
    let mut steps = 0u64;
    let mut best_per_iteration = Vec::with_capacity(cfg.iterations);
    let elite = cfg.elite.clamp(1, cfg.population.max(1));
    let mut buf: Vec<Step> = Vec::with_capacity(CHUNK);
    for it in 0..cfg.iterations {
        let episode_seed = Rng::derive(cfg.seed, 1 + it as u64).next_u64();
        let mut scored: Vec<(f64, Vec<f64>)> = Vec::with_capacity(cfg.population);
        for _ in 0..cfg.population {
            let params: Vec<f64> = mean.iter().zip(&std).map(|(m, s)| m + s * rng.normal()).collect();
            let policy = LinearPolicy { kind, params };
            let mut ep = Episode::new(kind, episode_seed);
            // Summed exactly as `run_episode` sums: per episode, then over episodes.
            let (mut total, mut episode_sum) = (0.0, 0.0);
            let mut flush = |buf: &mut Vec<Step>, total: &mut f64, episode_sum: &mut f64| {
                if buf.is_empty() {
                    return Ok(());
                }
                let rs = rewards(kind, buf)?;
                assert_eq!(rs.len(), buf.len(), "a batched reward function must answer one reward per transition");
                for (s, r) in buf.iter().zip(rs) {
                    *episode_sum += r;
                    if s.last {
                        *total += *episode_sum;
                        *episode_sum = 0.0;
                    }
                }
                buf.clear();
                Ok(())
            };
            for _ in 0..cfg.episodes.max(1) {
                ep.reset();
                let mut obs = [0.0; MAX_OBS];
                let mut feat = [0.0; FEATURES];
                ep.features(&mut feat);
                while !ep.done() {
                    ep.observe(&mut obs);
                    let action = policy.act(&obs[..n]);
                    let action = &action[..spec.action_dims];
                    let out = ep.step(action);
                    let mut next = [0.0; FEATURES];
                    ep.features(&mut next);
                    steps += 1;
                    buf.push(Step {
                        obs: feat,
                        action: ep.effort(action),
                        next_obs: next,
                        terminated: out.terminated,
                        last: ep.done(),
                        env_reward: out.reward,
                    });
                    feat = next;
                    if buf.len() == CHUNK {
                        if let Err(error) = flush(&mut buf, &mut total, &mut episode_sum) {
                            return Err(Stopped { error, steps });
                        }
                    }
                }
            }
            if let Err(error) = flush(&mut buf, &mut total, &mut episode_sum) {
                return Err(Stopped { error, steps });
            }
            let avg = total / cfg.episodes.max(1) as f64;
            scored.push((if avg.is_finite() { avg } else { f64::MIN }, policy.params));
        }
        // Stable sort: ties keep the earlier candidate first.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        best_per_iteration.push(scored[0].0);

        for j in 0..dim {
            let m = scored[..elite].iter().map(|(_, p)| p[j]).sum::<f64>() / elite as f64;
            let v = scored[..elite].iter().map(|(_, p)| (p[j] - m).powi(2)).sum::<f64>() / elite as f64;
            mean[j] = m;
            std[j] = v.sqrt() + cfg.extra_std;
        }
    }
    Ok(Trained { policy: LinearPolicy { kind, params: mean }, steps, best_per_iteration })
}

/// The mean return, under the environment's own reward, of `policy` over
/// `episodes` episodes whose initial states come from `seed`; and the steps taken.
pub fn evaluate(policy: &LinearPolicy, seed: u64, episodes: usize) -> (f64, u64) {
    let kind = policy.kind;
    let mut ep = Episode::new(kind, seed);
    let mut total = 0.0;
    let mut steps = 0;
    for _ in 0..episodes.max(1) {
        let r: Result<_, std::convert::Infallible> = run_episode(&mut ep, policy, u32::MAX, &mut |t| Ok(t.env_reward));
        let Ok(r) = r;
        total += r.env_return;
        steps += u64::from(r.steps);
    }
    (total / episodes.max(1) as f64, steps)
}
