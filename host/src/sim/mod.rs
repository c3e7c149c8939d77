//! Built-in deterministic simulation environments, linear policies, and a
//! seeded cross-entropy-method trainer.
//!
//! * **Environments** — the classic-control set with Gymnasium's dynamics,
//!   constants and reward definitions, so returns compare with published
//!   ones: [`cartpole`] (CartPole-v1), [`pendulum`] (Pendulum-v1),
//!   [`acrobot`] (Acrobot-v1), [`mountain_car`] (MountainCar-v0). Each
//!   implements [`Env`]; [`Episode`] adds Gymnasium's `TimeLimit`
//!   truncation. Initial states are drawn from Gymnasium's distributions
//!   with this module's own PRNG ([`rng::Rng`]), so the same seed gives the
//!   same rollout on every machine (but not numpy's exact numbers).
//!   Beside them, [`walker`]: a planar legged walker on rapier2d for
//!   locomotion (four motorised joints, reward = distance walked).
//! * **Policies** — [`LinearPolicy`]: observations scaled by a fixed
//!   per-environment scale, then one linear map (argmax for discrete
//!   actions, `tanh` × the limit for each continuous one). A policy is
//!   just its parameter vector, which is what crosses the WIT boundary.
//! * **Training** — [`cem::train`]: the cross-entropy method over the
//!   policy's parameters, seeded, driven by any reward function: per step
//!   ([`cem::train`]: the environment's own, a hand-written reference) or
//!   per batch of transitions ([`cem::train_batched`]: a variant's
//!   `reward-model` export through [`crate::runtime::reward::RewardInstance`] (with the
//!   other guest-calling code, so `sim` never calls into the runtime), one guest
//!   call per chunk of [`cem::CHUNK`] transitions).

pub mod acrobot;
pub mod cartpole;
pub mod cem;
pub mod mountain_car;
pub mod pendulum;
pub mod rng;
pub mod walker;

use std::fmt;

pub use rng::Rng;

/// The largest observation of any built-in environment (the walker's 15).
pub const MAX_OBS: usize = walker::OBS;
/// The longest action vector of any built-in environment (the walker's 4).
pub const MAX_ACTIONS: usize = walker::JOINTS;
/// How many numbers a reward function sees of a state
/// ([`Env::features`]; the WIT's `reward-model.observation`).
pub const FEATURES: usize = 6;

/// Distance (m) the walker must cover in an episode for a score of 1.
pub const WALKER_CEILING: f64 = 4.0;

/// An action vector: the first [`Spec::action_dims`] numbers are used.
pub type Action = [f64; MAX_ACTIONS];

/// The built-in environments, by their names in grants and WIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvKind {
    /// CartPole-v1.
    Cartpole,
    /// Pendulum-v1.
    Pendulum,
    /// Acrobot-v1.
    Acrobot,
    /// MountainCar-v0.
    MountainCar,
    /// The planar legged walker ([`walker`]).
    Walker,
}

/// Shape and constants of an environment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    /// Observation length.
    pub obs: usize,
    /// Discrete actions (`Some(n)`: one number, an index `0..n`), or
    /// `None` for continuous actions.
    pub actions: Option<usize>,
    /// Length of the action vector (1 for a discrete environment).
    pub action_dims: usize,
    /// Continuous actions are clipped to `±max_action`.
    pub max_action: f64,
    /// Gymnasium's `max_episode_steps` (truncation).
    pub max_steps: u32,
    /// The scale each observation is divided by before a linear policy sees it.
    pub obs_scale: &'static [f64],
    /// Episode return mapped to score 0 (a policy that does nothing useful).
    pub score_floor: f64,
    /// Episode return mapped to score 1 (Gymnasium's `reward_threshold`
    /// where it has one).
    pub score_ceiling: f64,
}

impl EnvKind {
    /// Every built-in environment.
    pub const ALL: [EnvKind; 5] =
        [EnvKind::Cartpole, EnvKind::Pendulum, EnvKind::Acrobot, EnvKind::MountainCar, EnvKind::Walker];

    /// The name used in grants, tasks and the WIT (`cartpole`, `pendulum`,
    /// `acrobot`, `mountain-car`, `walker`).
    pub fn name(self) -> &'static str {
        match self {
            EnvKind::Cartpole => "cartpole",
            EnvKind::Pendulum => "pendulum",
            EnvKind::Acrobot => "acrobot",
            EnvKind::MountainCar => "mountain-car",
            EnvKind::Walker => "walker",
        }
    }

    /// The environment called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Its shape and constants.
    pub fn spec(self) -> Spec {
        match self {
            EnvKind::Cartpole => Spec {
                obs: 4,
                actions: Some(2),
                action_dims: 1,
                max_action: 1.0,
                max_steps: 500,
                obs_scale: &[2.4, 3.0, 0.21, 3.0],
                score_floor: 0.0,
                score_ceiling: 500.0,
            },
            EnvKind::Pendulum => Spec {
                obs: 3,
                actions: None,
                action_dims: 1,
                max_action: pendulum::MAX_TORQUE,
                max_steps: 200,
                obs_scale: &[1.0, 1.0, 8.0],
                score_floor: -1500.0,
                score_ceiling: -200.0,
            },
            EnvKind::Acrobot => Spec {
                obs: 6,
                actions: Some(3),
                action_dims: 1,
                max_action: 1.0,
                max_steps: 500,
                obs_scale: &[1.0, 1.0, 1.0, 1.0, 4.0 * std::f64::consts::PI, 9.0 * std::f64::consts::PI],
                score_floor: -500.0,
                score_ceiling: -100.0,
            },
            EnvKind::MountainCar => Spec {
                obs: 2,
                actions: Some(3),
                action_dims: 1,
                max_action: 1.0,
                max_steps: 200,
                obs_scale: &[1.2, 0.07],
                score_floor: -200.0,
                score_ceiling: -110.0,
            },
            EnvKind::Walker => Spec {
                obs: walker::OBS,
                actions: None,
                action_dims: walker::JOINTS,
                max_action: 1.0,
                max_steps: walker::MAX_STEPS,
                obs_scale: &[1.0, 1.0, 2.0, 2.0, 4.0, 1.0, 1.0, 1.0, 1.0, 10.0, 10.0, 10.0, 10.0, 1.0, 1.0],
                // Metres walked in the episode's 5 s (0.8 m/s).
                score_floor: 0.0,
                score_ceiling: WALKER_CEILING,
            },
        }
    }

    /// A fresh environment of this kind (call [`Env::reset`] before stepping).
    pub fn make(self) -> AnyEnv {
        match self {
            EnvKind::Cartpole => AnyEnv::Cartpole(cartpole::CartPole::default()),
            EnvKind::Pendulum => AnyEnv::Pendulum(pendulum::Pendulum::default()),
            EnvKind::Acrobot => AnyEnv::Acrobot(acrobot::Acrobot::default()),
            EnvKind::MountainCar => AnyEnv::MountainCar(mountain_car::MountainCar::default()),
            EnvKind::Walker => AnyEnv::Walker(Box::default()),
        }
    }

    /// How many numbers of a state its reward function sees (at most
    /// [`FEATURES`]): the observation for the classic environments, six
    /// features for the walker.
    pub fn features(self) -> usize {
        self.spec().obs.min(FEATURES)
    }

    /// `ret` mapped linearly from [score_floor, score_ceiling] onto [0, 1], clamped.
    pub fn score(self, ret: f64) -> f64 {
        let s = self.spec();
        if !ret.is_finite() {
            return 0.0;
        }
        ((ret - s.score_floor) / (s.score_ceiling - s.score_floor)).clamp(0.0, 1.0)
    }
}

impl fmt::Display for EnvKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One environment's dynamics. An action is [`Spec::action_dims`]
/// numbers: for a discrete environment one, the action's index (already
/// validated); for a continuous one the commands (clipped by the
/// environment).
pub trait Env: Send {
    /// Which environment this is.
    fn kind(&self) -> EnvKind;
    /// Draw a fresh initial state from Gymnasium's distribution.
    fn reset(&mut self, rng: &mut Rng);
    /// Write the observation into `out[..spec.obs]`.
    fn observe(&self, out: &mut [f64]);
    /// Write what a reward function sees of the state into
    /// `out[..kind.features()]` (the rest is zero): the observation, unless
    /// the environment says otherwise — which it must when its observation
    /// is longer than [`FEATURES`].
    fn features(&self, out: &mut [f64; FEATURES]) {
        *out = [0.0; FEATURES];
        self.observe(out);
    }
    /// The one number a reward function sees of an action: the action
    /// itself for one-number actions.
    fn effort(&self, action: &[f64]) -> f64 {
        action[0]
    }
    /// Advance one step: `(reward, terminated)` as Gymnasium defines them.
    fn step(&mut self, action: &[f64]) -> (f64, bool);
}

/// Any built-in environment, dispatched without a vtable.
#[derive(Debug)]
pub enum AnyEnv {
    /// CartPole-v1.
    Cartpole(cartpole::CartPole),
    /// Pendulum-v1.
    Pendulum(pendulum::Pendulum),
    /// Acrobot-v1.
    Acrobot(acrobot::Acrobot),
    /// MountainCar-v0.
    MountainCar(mountain_car::MountainCar),
    /// The walker (boxed: its physics world is large).
    Walker(Box<walker::Walker>),
}

macro_rules! dispatch {
    ($self:ident, $e:ident => $body:expr) => {
        match $self {
            AnyEnv::Cartpole($e) => $body,
            AnyEnv::Pendulum($e) => $body,
            AnyEnv::Acrobot($e) => $body,
            AnyEnv::MountainCar($e) => $body,
            AnyEnv::Walker($e) => $body,
        }
    };
}

impl Env for AnyEnv {
    fn kind(&self) -> EnvKind {
        dispatch!(self, e => e.kind())
    }
    fn reset(&mut self, rng: &mut Rng) {
        dispatch!(self, e => e.reset(rng))
    }
    fn observe(&self, out: &mut [f64]) {
        dispatch!(self, e => e.observe(out))
    }
    fn features(&self, out: &mut [f64; FEATURES]) {
        dispatch!(self, e => e.features(out))
    }
    fn effort(&self, action: &[f64]) -> f64 {
        dispatch!(self, e => e.effort(action))
    }
    fn step(&mut self, action: &[f64]) -> (f64, bool) {
        dispatch!(self, e => e.step(action))
    }
}

/// What one step returned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The environment's own reward.
    pub reward: f64,
    /// The episode ended by the task's rules (pole fell, goal reached).
    pub terminated: bool,
    /// The episode hit `max_steps`.
    pub truncated: bool,
}

/// An environment with Gymnasium's `TimeLimit`, its seed and its step count.
#[derive(Debug)]
pub struct Episode {
    env: AnyEnv,
    rng: Rng,
    steps: u32,
    done: bool,
}

impl Episode {
    /// An environment of `kind` whose initial states come from `seed`:
    /// each [`Episode::reset`] draws the next one. It must be reset before
    /// its first step ([`Episode::done`] is true until then).
    pub fn new(kind: EnvKind, seed: u64) -> Self {
        Self { env: kind.make(), rng: Rng::new(seed), steps: 0, done: true }
    }

    /// Start a new episode from a fresh initial state.
    pub fn reset(&mut self) {
        self.env.reset(&mut self.rng);
        self.steps = 0;
        self.done = false;
    }

    /// Which environment this is.
    pub fn kind(&self) -> EnvKind {
        self.env.kind()
    }

    /// Steps taken since the last reset.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Whether the episode has terminated or been truncated.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Write the observation into `out[..spec.obs]`.
    pub fn observe(&self, out: &mut [f64]) {
        self.env.observe(out)
    }

    /// What a reward function sees of the state (zero-padded).
    pub fn features(&self, out: &mut [f64; FEATURES]) {
        self.env.features(out)
    }

    /// The one number a reward function sees of `action`.
    pub fn effort(&self, action: &[f64]) -> f64 {
        self.env.effort(action)
    }

    /// The observation as a vector.
    pub fn observation(&self) -> Vec<f64> {
        let mut v = vec![0.0; self.kind().spec().obs];
        self.observe(&mut v);
        v
    }

    /// The underlying environment (for tests that set a state).
    pub fn env_mut(&mut self) -> &mut AnyEnv {
        &mut self.env
    }

    /// Advance one step with an action already checked by [`check_action`].
    pub fn step(&mut self, action: &[f64]) -> StepOutcome {
        let (reward, terminated) = self.env.step(action);
        self.steps += 1;
        let truncated = !terminated && self.steps >= self.kind().spec().max_steps;
        self.done = terminated || truncated;
        StepOutcome { reward, terminated, truncated }
    }
}

/// Check an action vector for `kind`: for a discrete environment one
/// number, an integer index below the action count; for a continuous one
/// [`Spec::action_dims`] finite numbers (clipped by the environment).
/// `Err` says why it is invalid.
pub fn check_action(kind: EnvKind, action: &[f64]) -> Result<(), String> {
    let spec = kind.spec();
    if action.len() != spec.action_dims {
        let s = if spec.action_dims == 1 { "" } else { "s" };
        return Err(format!("{kind} takes an action of {} number{s}; got {}", spec.action_dims, action.len()));
    }
    match spec.actions {
        Some(n) if action[0].fract() != 0.0 || action[0] < 0.0 || action[0] >= n as f64 => {
            Err(format!("{kind} takes a discrete action 0..{n} (an integer); got {}", action[0]))
        }
        None if action.iter().any(|a| !a.is_finite()) => {
            Err(format!("{kind} takes finite motor commands; got {action:?}"))
        }
        _ => Ok(()),
    }
}

/// A linear policy for one environment: observations divided by the
/// environment's `obs_scale`, then `W·o + b`.
///
/// Parameters, row by row: for a discrete environment with `n` actions,
/// `n` rows of `obs + 1` (weights, then bias) and the action is the argmax
/// (the lowest index on ties); for a continuous one, one row per action
/// number, each `max_action · tanh(w·o + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearPolicy {
    kind: EnvKind,
    params: Vec<f64>,
}

impl LinearPolicy {
    /// How many parameters a policy for `kind` has.
    pub fn param_count(kind: EnvKind) -> usize {
        let s = kind.spec();
        s.actions.unwrap_or(s.action_dims) * (s.obs + 1)
    }

    /// A policy from its parameters; an error names the expected count.
    pub fn new(kind: EnvKind, params: Vec<f64>) -> Result<Self, String> {
        let want = Self::param_count(kind);
        if params.len() != want {
            return Err(format!("a linear policy for {kind} has {want} parameters; got {}", params.len()));
        }
        if let Some(i) = params.iter().position(|p| !p.is_finite()) {
            return Err(format!("policy parameter {i} is not a finite number"));
        }
        Ok(Self { kind, params })
    }

    /// The parameters.
    pub fn params(&self) -> &[f64] {
        &self.params
    }

    /// The action for observation `obs` (its first
    /// [`Spec::action_dims`] numbers).
    pub fn act(&self, obs: &[f64]) -> Action {
        let spec = self.kind.spec();
        let row = |r: usize| {
            let w = &self.params[r * (spec.obs + 1)..(r + 1) * (spec.obs + 1)];
            let mut z = w[spec.obs];
            for j in 0..spec.obs {
                z += w[j] * obs[j] / spec.obs_scale[j];
            }
            z
        };
        let mut out = [0.0; MAX_ACTIONS];
        match spec.actions {
            Some(n) => {
                let mut best = (0, row(0));
                for a in 1..n {
                    let z = row(a);
                    if z > best.1 {
                        best = (a, z);
                    }
                }
                out[0] = best.0 as f64;
            }
            None => {
                for (r, a) in out.iter_mut().enumerate().take(spec.action_dims) {
                    *a = spec.max_action * row(r).tanh();
                }
            }
        }
        out
    }
}

/// One transition as a reward function sees it: the state's features
/// ([`Env::features`]) before and after, and the action's one number
/// ([`Env::effort`]).
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    /// The environment.
    pub env: EnvKind,
    /// The features before the step.
    pub obs: &'a [f64],
    /// The action taken (its effort, for a multi-number action).
    pub action: f64,
    /// The features after the step.
    pub next_obs: &'a [f64],
    /// Whether the step ended the episode by the task's rules.
    pub terminated: bool,
    /// The environment's own reward for the step.
    pub env_reward: f64,
}

/// One transition, owned, as the batched reward path carries it: the
/// features zero-padded to [`FEATURES`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Step {
    /// The features before the step (zero-padded).
    pub obs: [f64; FEATURES],
    /// The action taken (its effort, for a multi-number action).
    pub action: f64,
    /// The features after the step (zero-padded).
    pub next_obs: [f64; FEATURES],
    /// Whether the step ended the episode by the task's rules.
    pub terminated: bool,
    /// Whether this is the last step of its episode (terminated or truncated).
    pub last: bool,
    /// The environment's own reward for the step.
    pub env_reward: f64,
}

impl Step {
    /// The borrowed view of this step, for `env` (features cut to its length).
    pub fn transition(&self, env: EnvKind) -> Transition<'_> {
        let n = env.features();
        Transition {
            env,
            obs: &self.obs[..n],
            action: self.action,
            next_obs: &self.next_obs[..n],
            terminated: self.terminated,
            env_reward: self.env_reward,
        }
    }
}

/// The result of one episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollout {
    /// Sum of the rewards (the environment's own, or the reward function's).
    pub total_reward: f64,
    /// Sum of the environment's own rewards (the true objective).
    pub env_return: f64,
    /// Steps taken.
    pub steps: u32,
    /// Whether it ended by termination (not truncation).
    pub terminated: bool,
}

/// Run one episode of `policy` on `episode` (after resetting it), at most
/// `max_steps` steps (and the environment's own limit), with `reward`
/// scoring every step. The first `Err` of `reward` ends the episode.
pub fn run_episode<E>(
    episode: &mut Episode,
    policy: &LinearPolicy,
    max_steps: u32,
    reward: &mut dyn FnMut(&Transition<'_>) -> Result<f64, E>,
) -> Result<Rollout, E> {
    episode.reset();
    let kind = episode.kind();
    let spec = kind.spec();
    let (n, f) = (spec.obs, kind.features());
    let mut obs = [0.0; MAX_OBS];
    let (mut feat, mut next) = ([0.0; FEATURES], [0.0; FEATURES]);
    episode.features(&mut feat);
    let mut r = Rollout { total_reward: 0.0, env_return: 0.0, steps: 0, terminated: false };
    while r.steps < max_steps && !episode.done() {
        episode.observe(&mut obs);
        let action = policy.act(&obs[..n]);
        let action = &action[..spec.action_dims];
        let out = episode.step(action);
        episode.features(&mut next);
        let t = Transition {
            env: kind,
            obs: &feat[..f],
            action: episode.effort(action),
            next_obs: &next[..f],
            terminated: out.terminated,
            env_reward: out.reward,
        };
        r.total_reward += reward(&t)?;
        r.env_return += out.reward;
        r.steps += 1;
        r.terminated = out.terminated;
        feat = next;
    }
    Ok(r)
}

/// One episode of `policy` scored by the environment's own reward.
pub fn rollout(kind: EnvKind, seed: u64, policy: &LinearPolicy, max_steps: u32) -> Rollout {
    let mut ep = Episode::new(kind, seed);
    let never: Result<Rollout, std::convert::Infallible> =
        run_episode(&mut ep, policy, max_steps, &mut |t| Ok(t.env_reward));
    match never {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

#[cfg(test)]
mod tests;
