//! The `simulator` service: the built-in environments of [`crate::sim`]
//! stepped by the host for a guest, with a step budget from the grant.
//!
//! * **Grant.** `simulator = { envs = [...], steps = N }`: the environments
//!   `make` and `rollout` accept (`["*"]`: any built-in one), and the most
//!   environment steps **one call** may take (`step` and every step of a
//!   `rollout`), optionally tightened by
//!   [`CallOptions::sim_steps`](crate::runtime::CallOptions::sim_steps).
//! * **Budget.** A `step` with no step left is refused with
//!   `budget-exhausted` and changes nothing. A `rollout` runs at most the
//!   steps left; one cut short by the budget answers `budget-exhausted`
//!   (its steps are counted).
//! * **Handles.** Environments live in the call's state and die with it; at
//!   most [`MAX_OPEN_ENVS`] are open at once. Handles are never reused
//!   within a call.
//! * **Determinism.** `make(env, seed)` fixes the sequence of initial
//!   states; the dynamics have no other randomness.
//! * **Audit.** [`SimulatorUsage`] rides in the call's `use` record under
//!   `services.simulator`.

mod grant;
pub use grant::{SimulatorGrant, SimulatorPolicy, SimulatorRequest};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::bindings::vivarium::agent::simulator as wit;
use crate::sim::{self, EnvKind, Episode, LinearPolicy};

/// Most environments open at once in one call.
pub const MAX_OPEN_ENVS: usize = 64;

/// Usage counters of the simulator service for one call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimulatorUsage {
    /// The call's step budget (the grant's, or the call's tighter cap).
    pub budget: u64,
    /// Environment steps taken (`step` and `rollout`).
    pub steps: u64,
    /// Environments made.
    pub envs_made: u64,
    /// `reset` calls that succeeded.
    pub resets: u64,
    /// `rollout` calls that ran.
    pub rollouts: u64,
    /// Requests refused with `budget-exhausted`.
    pub budget_exhausted: u64,
    /// Requests refused with `denied` (environment not granted, unknown, too many open).
    pub denied: u64,
    /// Requests refused with `invalid-action`, `unknown-handle` or `needs-reset`.
    pub invalid: u64,
}

#[derive(Debug)]
struct Inner {
    grant: Option<SimulatorGrant>,
    envs: BTreeMap<u64, Episode>,
    next_handle: u64,
    usage: SimulatorUsage,
}

/// Per-call state of the simulator service; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct SimulatorState {
    inner: Arc<Mutex<Inner>>,
}

impl SimulatorState {
    /// State for one call of a variant granted `grant` (`None`: not
    /// granted; the service is then not linked), with at most `cap` steps.
    pub fn new(grant: Option<SimulatorGrant>, cap: Option<u64>) -> Self {
        let budget = grant.as_ref().map_or(0, |g| cap.map_or(g.steps, |c| c.min(g.steps)));
        let usage = SimulatorUsage { budget, ..SimulatorUsage::default() };
        Self { inner: Arc::new(Mutex::new(Inner { grant, envs: BTreeMap::new(), next_handle: 1, usage })) }
    }

    /// The usage counters so far; `None` when the service is not granted.
    pub fn usage(&self) -> Option<SimulatorUsage> {
        let g = self.lock();
        g.grant.as_ref()?;
        Some(g.usage.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn left(&self) -> u64 {
        self.usage.budget.saturating_sub(self.usage.steps)
    }

    /// The granted environment called `name`, or the refusal.
    fn env_kind(&mut self, name: &str) -> Result<EnvKind, wit::Error> {
        let allowed = self.grant.as_ref().is_some_and(|g| g.allows_env(name));
        let known = EnvKind::from_name(name);
        match (allowed, known) {
            (true, Some(k)) => Ok(k),
            (_, None) => {
                self.usage.denied += 1;
                let names: Vec<&str> = EnvKind::ALL.iter().map(|k| k.name()).collect();
                Err(wit::Error::Denied(format!("`{name}` is not an environment of this host; it has {names:?}")))
            }
            (false, Some(_)) => {
                self.usage.denied += 1;
                Err(wit::Error::Denied(format!(
                    "environment `{name}` is not in this variant's grant; request it in variant.toml under \
                     [capabilities] simulator.envs"
                )))
            }
        }
    }

    fn exhausted(&mut self) -> wit::Error {
        self.usage.budget_exhausted += 1;
        wit::Error::BudgetExhausted(format!(
            "the simulator step budget of {} steps for this call is used up",
            self.usage.budget
        ))
    }

    fn invalid(&mut self, e: wit::Error) -> wit::Error {
        self.usage.invalid += 1;
        e
    }
}

fn info(kind: EnvKind) -> wit::EnvInfo {
    let s = kind.spec();
    wit::EnvInfo {
        observation_size: s.obs as u32,
        action_size: s.actions.unwrap_or(s.action_dims) as u32,
        discrete: s.actions.is_some(),
        max_steps: s.max_steps,
        policy_size: LinearPolicy::param_count(kind) as u32,
    }
}

impl wit::Host for SimulatorState {
    async fn make(&mut self, env: String, seed: u64) -> wasmtime::Result<Result<(u64, wit::EnvInfo), wit::Error>> {
        let mut g = self.lock();
        let kind = match g.env_kind(&env) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        if g.envs.len() >= MAX_OPEN_ENVS {
            g.usage.denied += 1;
            return Ok(Err(wit::Error::Denied(format!(
                "{MAX_OPEN_ENVS} environments are open; close one before making another"
            ))));
        }
        let handle = g.next_handle;
        g.next_handle += 1;
        g.envs.insert(handle, Episode::new(kind, seed));
        g.usage.envs_made += 1;
        Ok(Ok((handle, info(kind))))
    }

    async fn reset(&mut self, handle: u64) -> wasmtime::Result<Result<Vec<f64>, wit::Error>> {
        let mut g = self.lock();
        let Some(ep) = g.envs.get_mut(&handle) else {
            return Ok(Err(g.invalid(wit::Error::UnknownHandle(handle))));
        };
        ep.reset();
        let obs = ep.observation();
        g.usage.resets += 1;
        Ok(Ok(obs))
    }

    async fn step(&mut self, handle: u64, action: Vec<f64>) -> wasmtime::Result<Result<wit::StepResult, wit::Error>> {
        let mut g = self.lock();
        let left = g.left();
        let Some(ep) = g.envs.get_mut(&handle) else {
            return Ok(Err(g.invalid(wit::Error::UnknownHandle(handle))));
        };
        let kind = ep.kind();
        if ep.done() {
            let why = format!("the {kind} episode of handle {handle} has ended (or never began); call reset");
            return Ok(Err(g.invalid(wit::Error::NeedsReset(why))));
        }
        if let Err(why) = sim::check_action(kind, &action) {
            return Ok(Err(g.invalid(wit::Error::InvalidAction(why))));
        }
        if left == 0 {
            return Ok(Err(g.exhausted()));
        }
        let out = ep.step(&action);
        let observation = ep.observation();
        g.usage.steps += 1;
        Ok(Ok(wit::StepResult {
            observation,
            reward: out.reward,
            terminated: out.terminated,
            truncated: out.truncated,
        }))
    }

    async fn rollout(
        &mut self,
        env: String,
        seed: u64,
        policy: Vec<f64>,
        max_steps: u32,
    ) -> wasmtime::Result<Result<wit::RolloutResult, wit::Error>> {
        let mut g = self.lock();
        let kind = match g.env_kind(&env) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let policy = match LinearPolicy::new(kind, policy) {
            Ok(p) => p,
            Err(why) => return Ok(Err(g.invalid(wit::Error::InvalidAction(why)))),
        };
        let left = g.left();
        if left == 0 {
            return Ok(Err(g.exhausted()));
        }
        // At most one episode (≤ 500 steps): bounded work per host call.
        let allowed = u64::from(max_steps).min(left) as u32;
        let r = sim::rollout(kind, seed, &policy, allowed);
        g.usage.steps += u64::from(r.steps);
        g.usage.rollouts += 1;
        let cut_by_budget =
            u64::from(max_steps) > left && r.steps == allowed && !r.terminated && r.steps < kind.spec().max_steps;
        if cut_by_budget {
            return Ok(Err(g.exhausted()));
        }
        Ok(Ok(wit::RolloutResult { total_reward: r.total_reward, steps: r.steps, terminated: r.terminated }))
    }

    async fn close(&mut self, handle: u64) -> wasmtime::Result<()> {
        self.lock().envs.remove(&handle);
        Ok(())
    }

    async fn steps_left(&mut self) -> wasmtime::Result<u64> {
        Ok(self.lock().left())
    }
}

/// The `simulator` service: its line in the registry (`services/registry.rs`).
pub struct SimulatorFactor;

impl super::Service for SimulatorFactor {
    type Grant = SimulatorGrant;
    type State = SimulatorState;
    type Usage = SimulatorUsage;
    const VERSIONS: &'static [&'static str] = &[crate::caps::imports::AGENT_VERSION];
}

impl super::PerCall for SimulatorFactor {
    fn state(
        section: Option<&SimulatorGrant>,
        _grant: &crate::caps::Grant,
        _host: &super::HostServices,
        scope: &super::CallScope,
    ) -> SimulatorState {
        SimulatorState::new(section.cloned(), scope.sim_steps)
    }

    fn unlinked() -> SimulatorState {
        SimulatorState::new(None, None)
    }

    fn add_to_linker(
        linker: &mut wasmtime::component::Linker<crate::runtime::HostState>,
        get: fn(&mut crate::runtime::HostState) -> &mut SimulatorState,
    ) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, wasmtime::component::HasSelf<SimulatorState>>(linker, get)
    }

    fn usage(state: &SimulatorState) -> Option<SimulatorUsage> {
        state.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::wit::Host;
    use super::*;
    use crate::caps::Denial;
    use crate::services::testing::TestEnvironment;

    const POLICY: &str = r#"simulator = { envs = ["cartpole"], steps = 10_000 }"#;

    fn cartpole_env() -> TestEnvironment {
        TestEnvironment::new().manifest(r#"simulator = { envs = ["cartpole"], steps = 1000 }"#).policy(POLICY)
    }

    /// The grant has the manifest's per-call budget within the policy's.
    #[test]
    fn the_grant_is_the_manifests_request_within_the_policy() {
        let r = cartpole_env().resolve();
        assert_eq!(r.grant.simulator, Some(SimulatorGrant { envs: vec!["cartpole".into()], steps: 1000 }));
        assert!(r.refusal().is_none());
    }

    /// An environment the policy does not list is denied, and a denial
    /// refuses the grant (the variant runs with all it asked for or not).
    #[test]
    fn an_environment_the_policy_does_not_list_refuses_the_grant() {
        let r = TestEnvironment::new()
            .manifest(r#"simulator = { envs = ["cartpole", "pendulum"], steps = 1000 }"#)
            .policy(POLICY)
            .resolve();
        assert_eq!(
            r.denials,
            [Denial {
                capability: "simulator.envs".into(),
                requested: "pendulum".into(),
                reason: "not in the policy's list [cartpole]".into()
            }]
        );
        assert!(r.refusal().is_some());
    }

    /// An environment outside the grant, and one the host does not have,
    /// are denied with what to do; both are counted.
    #[tokio::test]
    async fn an_environment_outside_the_grant_is_denied() {
        let mut sim = cartpole_env().call().services.simulator;
        match sim.make("pendulum".into(), 1).await.unwrap() {
            Err(wit::Error::Denied(m)) => assert!(m.contains("simulator.envs"), "{m}"),
            other => panic!("expected denied, got {other:?}"),
        }
        match sim.make("lunar-lander".into(), 1).await.unwrap() {
            Err(wit::Error::Denied(m)) => assert!(m.contains("not an environment of this host"), "{m}"),
            other => panic!("expected denied, got {other:?}"),
        }
        let usage = sim.usage().unwrap();
        assert_eq!((usage.denied, usage.envs_made, usage.steps), (2, 0, 0));
    }

    /// The call's cap tightens the grant's budget: a rollout past it is
    /// cut at the cap and refused as `budget-exhausted`, and nothing is
    /// left for a step.
    #[tokio::test]
    async fn the_calls_step_cap_ends_a_rollout_as_budget_exhausted() {
        let mut env = cartpole_env();
        env.sim_steps = Some(3);
        let mut sim = env.call().services.simulator;
        assert_eq!(sim.steps_left().await.unwrap(), 3);
        let (handle, info) = sim.make("cartpole".into(), 7).await.unwrap().unwrap();
        let policy = vec![0.0; info.policy_size as usize];
        match sim.rollout("cartpole".into(), 7, policy, 500).await.unwrap() {
            Err(wit::Error::BudgetExhausted(m)) => assert!(m.contains("3 steps"), "{m}"),
            other => panic!("expected budget-exhausted, got {other:?}"),
        }
        assert_eq!(sim.steps_left().await.unwrap(), 0);
        sim.reset(handle).await.unwrap().unwrap();
        assert!(matches!(sim.step(handle, vec![1.0]).await.unwrap(), Err(wit::Error::BudgetExhausted(_))));
        let usage = sim.usage().unwrap();
        assert_eq!((usage.budget, usage.steps, usage.budget_exhausted), (3, 3, 2));
    }

    /// Not granted: no usage is reported (the service is not linked).
    #[test]
    fn not_granted_reports_no_usage() {
        let call = TestEnvironment::new().call();
        assert_eq!(call.grant.simulator, None);
        assert_eq!(call.services.simulator.usage(), None);
    }
}
