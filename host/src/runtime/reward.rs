//! A variant's `reward-model` export, called by the host once per chunk of
//! transitions (at most [`CHUNK`](crate::sim::cem::CHUNK)): the hot host → guest path.
//!
//! One training run is **one instance in one store** (not a fresh store per
//! step), under the variant's limits for the whole run: fuel, memory,
//! table and instance limits, and an epoch deadline at the grant's wall
//! limit. The store is synchronous — the instance is linked with WASI's
//! synchronous bindings, `log`, and traps for every other import — so a
//! call is a plain function call with no fiber switch; run it on a
//! blocking thread ([`tokio::task::spawn_blocking`]), never on an async
//! executor thread. During reward calls a variant may only log: calling
//! `llm`, `memory`, `archive` or `simulator` from the reward function
//! traps. A trap or a limit ends the run as a [`GuestFailure`], never a
//! host panic; the store is dropped with it.
//!
//! An interpreted variant (Python on the shared interpreter) is the same
//! instance of its interpreter, handed its source tree through
//! `vivarium:interp/source` as in any call; its `RewardModel` class answers.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentType, Func, Linker, Lower, TypedFunc};
use wasmtime::{Engine, Store, StoreContextMut, UpdateDeadline};

use super::{HostState, Runtime};
use crate::bindings::vivarium::agent::log::Level;
use crate::caps::{wasi, Grant, Limits};
use crate::error::{Error, GuestFailure, GuestFailureKind, Result};
use crate::services::log::{LogLine, LogState, LogUsage};
use crate::services::CallServices;
use crate::sim::{EnvKind, Step, Transition, FEATURES};

/// The export's interface name.
pub const INTERFACE: &str = "vivarium:agent/reward-model@0.1.0";

/// `reward-model.env`.
#[derive(ComponentType, Lower, Clone, Copy, Debug)]
#[component(enum)]
#[repr(u8)]
enum WitEnv {
    #[component(name = "cartpole")]
    Cartpole,
    #[component(name = "pendulum")]
    Pendulum,
    #[component(name = "acrobot")]
    Acrobot,
    #[component(name = "mountain-car")]
    MountainCar,
    #[component(name = "walker")]
    Walker,
}

/// `reward-model.observation`.
#[derive(ComponentType, Lower, Clone, Copy, Debug, Default)]
#[component(record)]
struct WitObs {
    o0: f64,
    o1: f64,
    o2: f64,
    o3: f64,
    o4: f64,
    o5: f64,
}

impl WitObs {
    fn from(o: &[f64; FEATURES]) -> Self {
        Self { o0: o[0], o1: o[1], o2: o[2], o3: o[3], o4: o[4], o5: o[5] }
    }
}

/// `reward-model.transition`.
#[derive(ComponentType, Lower, Clone, Copy, Debug, Default)]
#[component(record)]
struct WitTransition {
    obs: WitObs,
    action: f64,
    #[component(name = "next-obs")]
    next_obs: WitObs,
    terminated: bool,
}

impl From<&Step> for WitTransition {
    fn from(s: &Step) -> Self {
        Self {
            obs: WitObs::from(&s.obs),
            action: s.action,
            next_obs: WitObs::from(&s.next_obs),
            terminated: s.terminated,
        }
    }
}

impl From<EnvKind> for WitEnv {
    fn from(k: EnvKind) -> Self {
        match k {
            EnvKind::Cartpole => WitEnv::Cartpole,
            EnvKind::Pendulum => WitEnv::Pendulum,
            EnvKind::Acrobot => WitEnv::Acrobot,
            EnvKind::MountainCar => WitEnv::MountainCar,
            EnvKind::Walker => WitEnv::Walker,
        }
    }
}

/// `rewards`, typed. The list argument borrows the instance's own buffer,
/// so the type is re-applied per call (checked once, at instantiation).
type RewardsFunc<'a> = TypedFunc<(WitEnv, &'a [WitTransition]), (Vec<f64>,)>;

/// What a reward instance used so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RewardUsage {
    /// Calls of `rewards` that returned.
    pub calls: u64,
    /// Transitions whose rewards those calls returned.
    pub transitions: u64,
    /// Fuel consumed (instantiation included).
    pub fuel: u64,
    /// Peak linear memory, in bytes.
    pub memory_peak: u64,
    /// Wall time since instantiation began, in milliseconds.
    pub wall_ms: u64,
}

/// A variant's reward function, instantiated once for a training run.
pub struct RewardInstance {
    store: Store<HostState>,
    func: Func,
    buf: Vec<WitTransition>,
    limits: Limits,
    log: LogState,
    started: Instant,
    calls: u64,
    transitions: u64,
}

impl RewardInstance {
    /// Instantiate `component` under `grant`'s limits for one training run.
    ///
    /// The component must already have passed the import check against
    /// `grant` (it comes from a [`Prepared`](crate::runtime::Prepared)).
    /// `Err(Error::Invalid)` when it does not export `reward-model`;
    /// `Ok(Err(failure))` when instantiating it hit a limit or trapped.
    pub fn new(
        runtime: &Runtime,
        component: &Component,
        grant: &Grant,
        scratch: Option<&Path>,
    ) -> Result<std::result::Result<Self, GuestFailure>> {
        Self::with_engine(runtime.engine(), runtime.config().max_memory, component, grant, scratch)
    }

    /// [`RewardInstance::new`] for a prepared variant, under its grant. An
    /// interpreted variant (Python) runs on its interpreter, handed its
    /// source tree as in any call; its `RewardModel` class answers.
    pub fn for_prepared(
        runtime: &Runtime,
        p: &crate::runtime::Prepared,
        scratch: Option<&Path>,
    ) -> Result<std::result::Result<Self, GuestFailure>> {
        Self::for_prepared_with(runtime.engine(), runtime.config().max_memory, p, scratch)
    }

    /// [`RewardInstance::for_prepared`] with the runtime's engine and memory
    /// ceiling given separately (they are `'static`, so this runs on a
    /// blocking thread).
    pub fn for_prepared_with(
        engine: &Engine,
        max_memory: u64,
        p: &crate::runtime::Prepared,
        scratch: Option<&Path>,
    ) -> Result<std::result::Result<Self, GuestFailure>> {
        Self::build(engine, max_memory, p.component(), &p.grant, p.source.clone(), scratch)
    }

    /// [`RewardInstance::new`] with the runtime's engine and memory ceiling
    /// given separately (they are `'static`, so this runs on a blocking thread).
    pub fn with_engine(
        engine: &Engine,
        max_memory: u64,
        component: &Component,
        grant: &Grant,
        scratch: Option<&Path>,
    ) -> Result<std::result::Result<Self, GuestFailure>> {
        Self::build(engine, max_memory, component, grant, None, scratch)
    }

    fn build(
        engine: &Engine,
        max_memory: u64,
        component: &Component,
        grant: &Grant,
        source: Option<std::sync::Arc<crate::runtime::interpreted::InstanceSource>>,
        scratch: Option<&Path>,
    ) -> Result<std::result::Result<Self, GuestFailure>> {
        let limits = grant.limits.clone();
        let log = LogState::new(grant.log.clone());
        let work = crate::runtime::host_work::HostWork::default();
        let wasi = wasi::build(grant, &log, scratch, &|name| std::env::var(name).ok(), &work)?;
        let state = HostState::new(max_memory, &limits, log.clone(), wasi, CallServices::none(), work);
        let mut store = Store::new(engine, state);
        let interpreted = source.is_some();
        store.data_mut().source = source;
        store.limiter(|s| &mut s.limiter);
        store.call_hook(crate::runtime::host_work::hook);
        store.set_hostcall_fuel(crate::runtime::hostcall_budget(&limits));
        store.set_fuel(limits.fuel).map_err(|e| Error::Internal(anyhow::anyhow!("cannot set fuel: {e:#}")))?;
        let started = Instant::now();
        let deadline = started + limits.wall.0;
        store.epoch_deadline_callback(move |mut store| {
            crate::runtime::host_work::mark_epoch_tick(&mut store);
            if crate::runtime::host_work::over_budget(&store) {
                return Err(wasmtime::Trap::OutOfFuel.into());
            }
            Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Continue(1) })
        });
        store.set_epoch_deadline(1);

        let mut linker = reward_linker(engine, component)?;
        if interpreted {
            crate::runtime::interpreted::add_source_to_linker(&mut linker, true)?;
        }
        let instance = match linker.instantiate(&mut store, component) {
            Ok(i) => i,
            Err(e) => return Ok(Err(crate::runtime::classify(&e, store.data(), &limits, limits.wall.0, &log))),
        };
        let missing = || {
            Error::invalid(format!(
                "the component does not export `{INTERFACE}` with `rewards: func(env, transitions: \
                 list<transition>) -> list<f64>`; build it for the `reward-designer` world (vivarium-guest feature \
                 `reward-model`)"
            ))
        };
        let iface = instance.get_export_index(&mut store, None, INTERFACE).ok_or_else(missing)?;
        let index = instance.get_export_index(&mut store, Some(&iface), "rewards").ok_or_else(missing)?;
        let typed: RewardsFunc<'static> = instance.get_typed_func(&mut store, index).map_err(|_| missing())?;
        let func = *typed.func();
        let buf = Vec::with_capacity(crate::sim::cem::CHUNK);
        Ok(Ok(Self { store, func, buf, limits, log, started, calls: 0, transitions: 0 }))
    }

    /// The rewards of `steps` (transitions of `env`, in order) in one guest
    /// call, or the failure that ends the run. A guest that answers a
    /// different number of rewards than transitions fails as a trap.
    pub fn rewards(&mut self, env: EnvKind, steps: &[Step]) -> std::result::Result<Vec<f64>, GuestFailure> {
        self.buf.clear();
        self.buf.extend(steps.iter().map(WitTransition::from));
        // SAFETY: `with_engine` checked this function's type as `RewardsFunc`;
        // only the (erased) lifetime of the list argument differs.
        let func = unsafe { RewardsFunc::new_unchecked(self.func) };
        match func.call(&mut self.store, (WitEnv::from(env), self.buf.as_slice())) {
            Ok((r,)) if r.len() == steps.len() => {
                self.calls += 1;
                self.transitions += steps.len() as u64;
                Ok(r)
            }
            Ok((r,)) => Err(GuestFailure {
                kind: GuestFailureKind::Trap,
                detail: format!(
                    "`rewards` returned {} rewards for {} transitions; it must return exactly one per transition",
                    r.len(),
                    steps.len()
                ),
            }),
            Err(e) => Err(crate::runtime::classify(&e, self.store.data(), &self.limits, self.limits.wall.0, &self.log)),
        }
    }

    /// The reward of one transition: [`RewardInstance::rewards`] with a
    /// batch of one (a full guest call per transition; for tests and the
    /// benchmark's comparison).
    pub fn reward(&mut self, t: &Transition<'_>) -> std::result::Result<f64, GuestFailure> {
        let mut s = Step {
            action: t.action,
            terminated: t.terminated,
            last: t.terminated,
            env_reward: t.env_reward,
            ..Step::default()
        };
        s.obs[..t.obs.len()].copy_from_slice(t.obs);
        s.next_obs[..t.next_obs.len()].copy_from_slice(t.next_obs);
        self.rewards(t.env, std::slice::from_ref(&s)).map(|r| r[0])
    }

    /// What the instance used so far.
    pub fn usage(&self) -> RewardUsage {
        let fuel_left = self.store.get_fuel().unwrap_or(0);
        RewardUsage {
            calls: self.calls,
            transitions: self.transitions,
            fuel: crate::runtime::host_work::fuel_used(self.limits.fuel, fuel_left, self.store.data().charged.total),
            memory_peak: self.store.data().limiter.memory_peak,
            wall_ms: self.started.elapsed().as_millis() as u64,
        }
    }

    /// The wall time left before the deadline.
    pub fn time_left(&self) -> Duration {
        self.limits.wall.0.saturating_sub(self.started.elapsed())
    }

    /// Drop the instance; its usage and the guest's log.
    pub fn finish(self) -> (RewardUsage, Vec<LogLine>, LogUsage) {
        let usage = self.usage();
        let log = self.log.clone();
        drop(self);
        let (lines, log_usage) = log.finish();
        (usage, lines, log_usage)
    }
}

/// The synchronous linker of a reward instance: WASI (sync bindings, the
/// same authority as a call), `log`, and a trapping stub for any other import.
fn reward_linker(engine: &Engine, component: &Component) -> Result<Linker<HostState>> {
    let internal = |e: wasmtime::Error| Error::Internal(anyhow::anyhow!("linking the reward instance failed: {e:#}"));
    let mut linker = Linker::<HostState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(internal)?;
    let mut log = linker.instance("vivarium:agent/log@0.1.0").map_err(internal)?;
    log.func_wrap("log", |cx: StoreContextMut<'_, HostState>, (level, message): (Level, String)| {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        cx.data().log.record(level, message.as_bytes());
        Ok(())
    })
    .map_err(internal)?;
    // The other services trap when called: a reward function may only log.
    // (WASI is matched by semver in the linker, so only these are stubbed.)
    let ty = component.component_type();
    for (name, item) in ty.imports(engine) {
        let Some(iface) = name.strip_prefix("vivarium:agent/") else { continue };
        if iface.starts_with("log@") || iface.starts_with("types@") {
            continue;
        }
        let ComponentItem::ComponentInstance(inst) = item.ty else { continue };
        let mut stub = linker.instance(name).map_err(internal)?;
        for (func, item) in inst.exports(engine) {
            if !matches!(item.ty, ComponentItem::ComponentFunc(_)) {
                continue;
            }
            let what = format!("`{name}#{func}` cannot be called from the reward function; only `log` can");
            stub.func_new(func, move |_, _, _, _| Err(wasmtime::format_err!("{what}"))).map_err(internal)?;
        }
    }
    Ok(linker)
}

/// Whether `failure`'s kind is a limit (as opposed to a plain trap).
pub fn is_limit(failure: &GuestFailure) -> bool {
    failure.kind != GuestFailureKind::Trap
}
