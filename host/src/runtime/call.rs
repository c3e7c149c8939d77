//! One call into a variant: a fresh store, the limits, and the mapping of
//! every outcome to a result, a guest error or a typed failure.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::{HostState, Prepared, Runtime};
use crate::bindings::v0_2;
use crate::bindings::{AgentPre, Answer, ImproveContext, Task};
use crate::caps::{wasi, Limits};
use crate::error::{GuestFailure, GuestFailureKind, Result};
use crate::services::log::{LogLine, LogState, LogUsage};
use crate::services::memory::SealedLineage;
use crate::services::{CallScope, ServiceUsage};

/// Per-call options: limits that can only tighten the grant's, the
/// scratch directory that file grants live in, and which slice of the
/// host's shared state the services show this call. Construct with
/// `..CallOptions::default()`: fields may be added.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Tighter limits for this call (each field is the min with the grant's).
    pub limits: Option<Limits>,
    /// The call's scratch area, needed when the grant has file grants.
    pub scratch: Option<PathBuf>,
    /// The `memory` lineage this call reads and writes; `None`: the
    /// variant's sha256 (its own memory).
    pub lineage: Option<String>,
    /// The run the `archive` view shows (and the `llm` budget is counted
    /// in); `None`: an empty archive view, and a budget outside any run.
    pub run: Option<String>,
    /// At most this many `llm` tokens in this call, within the grant's
    /// budget (e.g. what is left of a run's budget).
    pub llm_tokens: Option<u64>,
    /// The run's dollar budget (`budget.usd`): each `llm` request's worst
    /// case is reserved in the budget ledger against what every variant of
    /// [`CallOptions::run`] has spent together, so calls running side by
    /// side cannot pass it.
    pub run_usd: Option<crate::units::Usd>,
    /// Route every `llm` request of this call to this model instead of the
    /// one the guest names (an evolution run's `[[models]]` choice for one
    /// proposal); the grant must still allow it.
    pub llm_model: Option<String>,
    /// At most this many `simulator` steps in this call, within the
    /// grant's per-call budget.
    pub sim_steps: Option<u64>,
    /// A call whose effects must not persist where the variant, its
    /// meta-agent or its descendants can read them: every call on a
    /// held-out task. `memory` writes go to a throwaway fork of the
    /// lineage, and the call gets a fresh scratch area that is removed
    /// afterwards (see [`crate::variant::Session::solve`]).
    pub sealed: bool,
    /// This call's end of a link to another interpreter instance
    /// ([`crate::interp::peer`]): how a grader runs a test and the code
    /// under test in two instances. `None` for every variant.
    pub peer: Option<crate::interp::peer::PeerLink>,
    /// Who serves this call's `workbench` tries: `evolve`'s bench during
    /// `improve` ([`crate::workbench`]); `None` everywhere else, where a
    /// try answers `unavailable`.
    pub workbench: Option<crate::services::workbench::BenchLink>,
    /// The variant whose per-variant budgets (`llm` tokens and dollars,
    /// `trainer` seconds) this call spends; `None`: the called variant's
    /// own. A workbench try's candidate spends its trying parent's, so
    /// that each try does not open a fresh budget.
    pub budget_of: Option<String>,
}

impl CallOptions {
    /// These options for a call on a held-out task ([`CallOptions::sealed`]).
    pub fn sealed(&self) -> Self {
        Self { sealed: true, scratch: None, ..self.clone() }
    }
}

/// What one call used.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Fuel consumed.
    pub fuel: u64,
    /// Peak total linear memory, in bytes.
    pub memory_peak: u64,
    /// Wall time of the call, instantiation included, in milliseconds.
    pub wall_ms: u64,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome<T> {
    /// The guest returned a value.
    Ok(T),
    /// The guest returned `err(message)`: a graceful failure.
    GuestError(String),
    /// A trap or a limit ended the call.
    Failed(GuestFailure),
}

/// The outcome of a call with its usage and the guest's log.
#[derive(Debug, Clone)]
pub struct CallReport<T> {
    /// How it ended.
    pub outcome: CallOutcome<T>,
    /// What it used.
    pub usage: Usage,
    /// The limits it ran under.
    pub limits: Limits,
    /// Log lines kept (log service and captured stdout/stderr).
    pub logs: Vec<LogLine>,
    /// Log usage counters, including what was dropped.
    pub log_usage: LogUsage,
    /// Usage of the other granted services (`llm`, `memory`, `archive`).
    pub services: ServiceUsage,
}

/// Bytes a result hands to the host, for the output cap.
pub(crate) trait OutputSize {
    fn output_size(&self) -> u64;
}

impl OutputSize for Answer {
    fn output_size(&self) -> u64 {
        (self.output.len() + self.notes.as_ref().map_or(0, String::len)) as u64
    }
}

impl OutputSize for v0_2::Proposal {
    fn output_size(&self) -> u64 {
        let edits: usize = self
            .edits
            .iter()
            .map(|e| match e {
                v0_2::Edit::Write(f) => f.path.len() + f.contents.len(),
                v0_2::Edit::Delete(p) => p.len(),
                v0_2::Edit::SearchReplace(r) => r.path.len() + r.search.len() + r.replace.len(),
                v0_2::Edit::Patch(d) => d.len(),
            })
            .sum();
        (self.summary.len() + edits) as u64
    }
}

type GuestFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<Result<R, String>>> + Send + 'a>>;

/// What a call instantiates: the 0.1.0 world's exports, and the 0.2.0
/// `meta-agent` when the component has it.
#[derive(Clone)]
pub(crate) struct Pres {
    agent: AgentPre<HostState>,
    meta_v2: Option<v0_2::MetaToolsPre<HostState>>,
}

/// A 0.1.0 proposal as 0.2.0's (its edits are a subset): what the guard
/// takes from either version of `improve`.
pub fn proposal_v0_2(p: crate::bindings::Proposal) -> v0_2::Proposal {
    use crate::bindings::Edit;
    v0_2::Proposal {
        summary: p.summary,
        edits: p
            .edits
            .into_iter()
            .map(|e| match e {
                Edit::Write(f) => v0_2::Edit::Write(v0_2::SourceFile { path: f.path, contents: f.contents }),
                Edit::Delete(p) => v0_2::Edit::Delete(p),
            })
            .collect(),
    }
}

fn context_v0_2(ctx: &ImproveContext) -> v0_2::ImproveContext {
    v0_2::ImproveContext {
        self_id: ctx.self_id.clone(),
        sources: ctx
            .sources
            .iter()
            .map(|f| v0_2::SourceFile { path: f.path.clone(), contents: f.contents.clone() })
            .collect(),
        history: ctx
            .history
            .iter()
            .map(|h| v0_2::vivarium::agent::edits::Evaluation {
                id: h.id.clone(),
                parent: h.parent.clone(),
                score: h.score,
                summary: h.summary.clone(),
            })
            .collect(),
        feedback: ctx.feedback.clone(),
        iterations_left: ctx.iterations_left,
    }
}

impl Runtime {
    /// Call `task-agent.solve` on a fresh instance.
    pub async fn solve(&self, p: &Prepared, task: &Task, opts: &CallOptions) -> Result<CallReport<Answer>> {
        let task = task.clone();
        self.call(p, opts, move |pres, store| {
            Box::pin(async move {
                let agent = pres.agent.instantiate_async(&mut *store).await?;
                agent.vivarium_agent_task_agent().call_solve(store, &task).await
            })
        })
        .await
    }

    /// Call `meta-agent.improve` on a fresh instance: the 0.2.0 export
    /// when the component has one (its proposal may carry patch edits),
    /// else the 0.1.0 one, whose proposal comes back as 0.2.0's.
    pub async fn improve(
        &self,
        p: &Prepared,
        ctx: &ImproveContext,
        opts: &CallOptions,
    ) -> Result<CallReport<v0_2::Proposal>> {
        let ctx = ctx.clone();
        self.call(p, opts, move |pres, store| {
            Box::pin(async move {
                match &pres.meta_v2 {
                    Some(meta) => {
                        let tools = meta.instantiate_async(&mut *store).await?;
                        tools.vivarium_agent_meta_agent().call_improve(store, &context_v0_2(&ctx)).await
                    }
                    None => {
                        let agent = pres.agent.instantiate_async(&mut *store).await?;
                        let r = agent.vivarium_agent_meta_agent().call_improve(store, &ctx).await?;
                        Ok(r.map(proposal_v0_2))
                    }
                }
            })
        })
        .await
    }

    async fn call<R, F>(&self, p: &Prepared, opts: &CallOptions, f: F) -> Result<CallReport<R>>
    where
        R: OutputSize + Send + 'static,
        F: for<'a> FnOnce(&'a Pres, &'a mut Store<HostState>) -> GuestFuture<'a, R> + Send + 'static,
    {
        let limits = match &opts.limits {
            Some(l) => p.grant.limits.tightened(l),
            None => p.grant.limits.clone(),
        };
        let log = LogState::new(p.grant.log.clone());
        let work = super::host_work::HostWork::default();
        let wasi = wasi::build(&p.grant, &log, opts.scratch.as_deref(), &|name| std::env::var(name).ok(), &work)?;
        let lineage = opts.lineage.clone().unwrap_or_else(|| p.sha256.clone());
        // SQLite work (copying up to the quota) runs off the executor.
        let sealed_memory = match (&self.services().memory, opts.sealed && p.grant.memory.is_some()) {
            (Some(store), true) => {
                let (store, from) = (store.clone(), lineage.clone());
                let forked = tokio::task::spawn_blocking(move || SealedLineage::fork(store, &from)).await;
                Some(forked.map_err(|e| crate::Error::Internal(anyhow::anyhow!("forking sealed memory: {e}")))??)
            }
            _ => None,
        };
        let services = self.services().for_call(
            &p.grant,
            CallScope {
                variant_sha256: opts.budget_of.clone().unwrap_or_else(|| p.sha256.clone()),
                run: opts.run.clone(),
                memory_lineage: sealed_memory.as_ref().map_or(lineage, |s| s.id.clone()),
                llm_tokens: opts.llm_tokens,
                run_usd: opts.run_usd,
                llm_model: opts.llm_model.clone(),
                sim_steps: opts.sim_steps,
                deadline: Instant::now() + limits.wall.0,
                workbench: opts.workbench.clone(),
                wall: limits.wall.0,
            },
        );
        // Disk quotas of read-write file grants (see `quota`): a tree already
        // over its quota refuses the call before anything runs.
        let quota = super::quota::Watchdog::start(&p.grant, opts.scratch.as_deref());
        if let Some(failure) = quota.failure() {
            let (logs, log_usage) = log.finish();
            return Ok(CallReport {
                outcome: CallOutcome::Failed(failure),
                usage: Usage::default(),
                limits,
                logs,
                log_usage,
                services: services.finish().await,
            });
        }
        let over_quota = quota.hit_flag();
        let quota_notify = quota.notifier();
        let mut store = Store::new(&self.engine, self.new_state(&limits, log.clone(), wasi, services.clone(), work));
        store.limiter(|s| &mut s.limiter);
        store.call_hook(super::host_work::hook);
        store.data_mut().source = p.source.clone();
        store.data_mut().peer = opts.peer.clone();
        // Bound what wasmtime copies from the guest in one crossing (results,
        // log messages) near the output cap, so a huge result is refused
        // before the host allocates it.
        store.set_hostcall_fuel(hostcall_budget(&limits));
        store.set_fuel(limits.fuel).map_err(|e| crate::Error::Internal(anyhow::anyhow!("cannot set fuel: {e:#}")))?;
        let wall = limits.wall.0;
        let start = Instant::now();
        let deadline = start + wall;
        // Every tick: stop past the deadline, otherwise yield to the executor
        // so other calls on this thread make progress — and from then on the
        // call runs on the long lane (see `lanes`).
        let demote = Arc::new(AtomicBool::new(false));
        let computed_a_tick = demote.clone();
        store.epoch_deadline_callback(move |mut store| {
            super::host_work::mark_epoch_tick(&mut store);
            if Instant::now() >= deadline || over_quota.load(Ordering::Relaxed) {
                return Ok(UpdateDeadline::Interrupt);
            }
            if super::host_work::over_budget(&store) {
                return Err(Trap::OutOfFuel.into());
            }
            computed_a_tick.store(true, Ordering::Relaxed);
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);

        // The whole call owns its store, so it can move to the long lane; the
        // timeout is inside, so the store always comes back.
        let pres = Pres { agent: p.pre.clone(), meta_v2: p.meta_v2.clone() };
        let job = async move {
            let result = tokio::time::timeout(wall, async {
                // A write in progress when the quota is hit is cancelled.
                tokio::select! {
                    r = f(&pres, &mut store) => r,
                    _ = quota_notify.notified() => Err(wasmtime::Error::msg("disk quota exceeded")),
                }
            })
            .await;
            (result, store)
        };
        let lane = self.long_lane.as_ref().map(|l| l.handle().clone());
        let (result, store) = super::lanes::Demotable::new(job, demote, lane).await;
        let elapsed = start.elapsed();
        let quota_failure = quota.finish();
        let fuel_left = store.get_fuel().unwrap_or(0);
        let state = store.data();
        let host_fuel = state.charged.total;
        let usage = Usage {
            fuel: super::host_work::fuel_used(limits.fuel, fuel_left, host_fuel),
            memory_peak: state.limiter.memory_peak,
            wall_ms: elapsed.as_millis() as u64,
        };
        let outcome = match (quota_failure, result) {
            // Whatever else happened, a call that ends over a quota fails.
            (Some(f), _) => CallOutcome::Failed(f),
            (None, Err(_)) => CallOutcome::Failed(deadline_failure(wall)),
            // Guest and host work past the budget, whichever way the call
            // ended after that (see `host_work`).
            (None, Ok(_)) if super::host_work::exhausted(limits.fuel, fuel_left, host_fuel) => {
                CallOutcome::Failed(fuel_failure(&limits))
            }
            (None, Ok(Err(e))) => CallOutcome::Failed(classify(&e, state, &limits, wall, &log)),
            // An interpreter's engine turns a refused growth into an
            // exception of its own language, which its loader (or the
            // variant) may catch and answer as `err`: after a refusal, an
            // interpreted call's `err` is that limit's consequence, as a
            // trap would be.
            (None, Ok(Ok(Err(_)))) if state.source.is_some() && state.limiter.hit.is_some() => {
                CallOutcome::Failed(GuestFailure {
                    kind: GuestFailureKind::MemoryLimit,
                    detail: state.limiter.hit.clone().unwrap_or_default(),
                })
            }
            (None, Ok(Ok(Err(msg)))) => CallOutcome::GuestError(crate::services::log::sanitize(
                &msg.as_bytes()[..msg.len().min(limits.output.bytes() as usize)],
            )),
            (None, Ok(Ok(Ok(v)))) => {
                let size = v.output_size();
                if size > limits.output.bytes() {
                    CallOutcome::Failed(GuestFailure {
                        kind: GuestFailureKind::MemoryLimit,
                        detail: format!(
                            "the guest returned {size} bytes; the output cap is {} bytes",
                            limits.output.bytes()
                        ),
                    })
                } else {
                    CallOutcome::Ok(v)
                }
            }
        };
        drop(store);
        if let Some(sealed) = sealed_memory {
            // Its removal, too, runs off the executor.
            let _ = tokio::task::spawn_blocking(move || drop(sealed)).await;
        }
        let (logs, log_usage) = log.finish();
        Ok(CallReport { outcome, usage, limits, logs, log_usage, services: services.finish().await })
    }
}

/// Bytes the guest may hand the host in one crossing.
pub(crate) fn hostcall_budget(limits: &Limits) -> usize {
    (limits.output.bytes().max(1 << 20) + (64 << 10)) as usize
}

fn fuel_failure(limits: &Limits) -> GuestFailure {
    GuestFailure {
        kind: GuestFailureKind::OutOfFuel,
        detail: format!("the fuel budget of {} was used up", limits.fuel),
    }
}

fn deadline_failure(wall: Duration) -> GuestFailure {
    GuestFailure {
        kind: GuestFailureKind::Deadline,
        detail: format!("the wall-clock limit of {} ms was reached", wall.as_millis()),
    }
}

/// Map a wasmtime error to the contract's failure kinds.
pub(crate) fn classify(
    e: &wasmtime::Error,
    state: &HostState,
    limits: &Limits,
    wall: Duration,
    log: &LogState,
) -> GuestFailure {
    use GuestFailureKind as K;
    // Fuel, the deadline and the stack end a call by themselves. Any other
    // failure after a refused growth is taken as that limit's consequence (a
    // Rust guest aborts with `unreachable` when allocation fails) — but a
    // guest that was refused memory, carried on and then ran out of time or
    // fuel is reported as what ended it.
    let unambiguous = matches!(e.downcast_ref::<Trap>(), Some(Trap::OutOfFuel | Trap::Interrupt | Trap::StackOverflow));
    if let (Some(hit), false) = (&state.limiter.hit, unambiguous) {
        return GuestFailure { kind: K::MemoryLimit, detail: hit.clone() };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => fuel_failure(limits),
        Some(Trap::Interrupt) => deadline_failure(wall),
        Some(Trap::StackOverflow) => {
            GuestFailure { kind: K::StackOverflow, detail: "the wasm stack limit was exceeded".into() }
        }
        Some(trap) => {
            let mut detail = trap.to_string();
            if let Some(msg) = log.last_stderr() {
                detail = format!("{detail}; the guest said: {msg}");
            }
            GuestFailure { kind: K::Trap, detail }
        }
        None => {
            let text = format!("{e:#}");
            // Instantiation failures caused by limits surface as plain errors.
            if text.contains("too much data is being copied between the host and the guest") {
                GuestFailure {
                    kind: K::MemoryLimit,
                    detail: format!(
                        "the guest tried to hand the host more than {} bytes at once (output cap {} bytes)",
                        hostcall_budget(limits),
                        limits.output.bytes()
                    ),
                }
            } else if text.contains("exceeds memory limits")
                || text.contains("resource limit")
                || text.contains("instance limit")
            {
                GuestFailure { kind: K::MemoryLimit, detail: text }
            } else {
                GuestFailure { kind: K::Trap, detail: text }
            }
        }
    }
}
