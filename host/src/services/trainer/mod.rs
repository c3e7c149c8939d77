//! The `trainer` service: training jobs submitted by a variant and run by
//! the host's [`Trainer`](crate::trainer::Trainer) on the backend the
//! operator configured (`trainer.toml`; see [`crate::trainer`]).
//!
//! * **Grant** ([`TrainerGrant`]): the backends the variant may use (the
//!   host's configured backend must be among them, else every `submit` is
//!   `denied`) and its seconds budget over its life in one run.
//! * **Order of checks** for one `submit`: the backend allowed (`denied`);
//!   the spec well-formed (a positive finite budget, `config-json` a JSON
//!   object, a recipe and config the backend accepts: `invalid-job`); the
//!   budget: the job's `budget-seconds` is reserved whole in the host's one
//!   budget ledger ([`crate::ledger`], `$VIVARIUM_HOME/ledger.sqlite`, keyed
//!   by run and variant like the `llm` budgets), and a job that does not fit what is left is
//!   `budget-exhausted` with nothing started. When the job ends, the
//!   reservation is replaced by the seconds it ran.
//! * **Waiting**: `wait` never blocks past the call's deadline: the guest
//!   gets the job's status while it still has time to act on it.
//! * **Budget exhaustion**: a job still running at its budget is killed
//!   (the process group, the Ray job) and ends `budget-exhausted`.
//! * **Jobs end with the call**: when the call returns, traps or hits its
//!   deadline, every job it submitted that is still running is cancelled.
//! * **Audit**: the call's `use` record carries one [`TrainerJobRecord`]
//!   per job: its id, recipe, backend, budget, seconds spent, end phase and
//!   metrics ([`TrainerUsage`]).

mod grant;
pub use grant::{TrainerGrant, TrainerPolicy, TrainerRequest};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bindings::vivarium::agent::trainer as wit;
use crate::ledger::{micros, Charge, Resource};
use crate::trainer::{EvalSplit, JobSpec, JobStatus, Phase, SubmitError, Trainer};

/// Job records kept in one call's use record.
pub const MAX_RECORDS_PER_CALL: usize = 64;
/// Largest `config-json` accepted, in bytes.
pub const MAX_CONFIG_BYTES: usize = 64 << 10;
/// How long the end of a call waits for its cancelled jobs to settle.
const SETTLE_WAIT: Duration = Duration::from_secs(3);

/// One job as the audit records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainerJobRecord {
    /// The job's id.
    pub id: String,
    /// The recipe.
    pub recipe: String,
    /// The backend that ran it.
    pub backend: String,
    /// Seconds reserved at submit.
    pub budget_seconds: f64,
    /// Seconds it ran.
    pub seconds: f64,
    /// How it ended (or where it was when the call ended).
    pub phase: Phase,
    /// Its metrics.
    pub metrics: BTreeMap<String, f64>,
}

/// What one call did with the trainer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrainerUsage {
    /// The ledger key of the budget (run and variant).
    pub budget: String,
    /// Jobs submitted and started.
    pub submitted: u64,
    /// `submit` calls refused (denied, invalid, budget).
    pub refused: u64,
    /// Seconds the call's jobs ran.
    pub seconds: f64,
    /// The jobs, [`MAX_RECORDS_PER_CALL`] at most.
    pub jobs: Vec<TrainerJobRecord>,
}

struct Inner {
    grant: Option<TrainerGrant>,
    service: Option<Arc<Trainer>>,
    budget: String,
    deadline: Option<Instant>,
    usage: Mutex<TrainerUsage>,
    /// Jobs this call submitted: (id, recipe, budget seconds).
    jobs: Mutex<Vec<(String, String, f64)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The call is over and nobody reads its usage any more: stop its jobs.
        if let Some(t) = &self.service {
            for (id, _, _) in self.jobs.lock().unwrap_or_else(PoisonError::into_inner).iter() {
                t.cancel(id);
            }
        }
    }
}

/// Per-call state of the `trainer` service.
#[derive(Clone)]
pub struct TrainerState {
    inner: Arc<Inner>,
}

impl fmt::Debug for TrainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrainerState").field("budget", &self.inner.budget).finish_non_exhaustive()
    }
}

impl TrainerState {
    /// State for one call: `grant` (`None`: not granted, not linked), the
    /// host's trainer (`None`: none; `submit` answers `unavailable`), the
    /// budget's ledger key and the call's deadline.
    pub fn new(
        grant: Option<TrainerGrant>,
        service: Option<Arc<Trainer>>,
        budget: String,
        deadline: Option<Instant>,
    ) -> Self {
        let usage = TrainerUsage { budget: budget.clone(), ..TrainerUsage::default() };
        Self {
            inner: Arc::new(Inner {
                grant,
                service,
                budget,
                deadline,
                usage: Mutex::new(usage),
                jobs: Mutex::new(Vec::new()),
            }),
        }
    }

    /// What the call did so far; `None` when the service is not granted.
    /// Never waits: jobs still running are not in it (see [`Self::finish`]).
    pub fn usage(&self) -> Option<TrainerUsage> {
        self.inner.grant.as_ref()?;
        Some(self.inner.usage.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// What the call did, once it is over; `None` when the service is not
    /// granted. Jobs still running are cancelled and waited for (a few
    /// seconds at most, [`SETTLE_WAIT`]) so their seconds are final. The
    /// wait is asynchronous: the end of a call runs on an executor thread,
    /// which other calls share.
    pub async fn finish(&self) -> Option<TrainerUsage> {
        let mut usage = self.usage()?;
        let jobs = self.inner.jobs.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(t) = &self.inner.service {
            for (id, _, _) in &jobs {
                t.cancel(id);
            }
            let until = Instant::now() + SETTLE_WAIT;
            for (id, recipe, budget) in jobs.iter().take(MAX_RECORDS_PER_CALL) {
                let left = until.saturating_duration_since(Instant::now());
                let Some(s) = t.wait(id, left).await else { continue };
                usage.seconds += s.seconds;
                usage.jobs.push(TrainerJobRecord {
                    id: id.clone(),
                    recipe: recipe.clone(),
                    backend: t.backend().to_string(),
                    budget_seconds: *budget,
                    seconds: s.seconds,
                    phase: s.phase,
                    metrics: s.metrics,
                });
            }
        }
        Some(usage)
    }

    fn count(&self, f: impl FnOnce(&mut TrainerUsage)) {
        f(&mut self.inner.usage.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Seconds this variant may still reserve.
    pub fn left(&self) -> f64 {
        let (Some(grant), Some(t)) = (&self.inner.grant, &self.inner.service) else { return 0.0 };
        let limit = grant.gpu_seconds.saturating_mul(1_000_000);
        let left = t.ledger().left(&self.inner.budget, Resource::TrainerSeconds, limit).unwrap_or(0);
        left as f64 / 1e6
    }

    fn submit(&self, spec: wit::JobSpec) -> Result<String, wit::Error> {
        let grant = self.inner.grant.as_ref().ok_or_else(|| wit::Error::Denied("trainer is not granted".into()))?;
        let t = self.inner.service.as_ref().ok_or_else(|| {
            wit::Error::Unavailable("this host has no trainer configured; ask the operator for one".into())
        })?;
        let backend = t.backend();
        if !grant.allows_backend(backend.as_str()) {
            return Err(wit::Error::Denied(format!(
                "this host trains on the \"{backend}\" backend, which the grant does not allow (it allows {:?}); \
                 ask the operator to grant it",
                grant.backends
            )));
        }
        let secs = spec.budget_seconds;
        if !(secs.is_finite() && secs > 0.0) {
            return Err(wit::Error::InvalidJob(format!("budget-seconds must be a positive number, not {secs}")));
        }
        if spec.config_json.len() > MAX_CONFIG_BYTES {
            return Err(wit::Error::InvalidJob(format!(
                "config-json is {} bytes; at most {MAX_CONFIG_BYTES} are accepted",
                spec.config_json.len()
            )));
        }
        let config: serde_json::Value = serde_json::from_str(&spec.config_json)
            .map_err(|e| wit::Error::InvalidJob(format!("config-json is not JSON: {e}")))?;
        let job = JobSpec {
            recipe: spec.recipe.clone(),
            config,
            script: spec.script,
            budget: Duration::from_secs_f64(secs.min(1e9)),
            // Guests are always scored on the validation split.
            eval_split: EvalSplit::Validation,
        };
        t.check(&job).map_err(|e| match e {
            SubmitError::Invalid(m) => wit::Error::InvalidJob(m),
            SubmitError::Busy(m) => wit::Error::Unavailable(m),
        })?;
        let charge = Charge {
            resource: Resource::TrainerSeconds,
            amount: micros(secs),
            limit: Some(grant.gpu_seconds.saturating_mul(1_000_000)),
            run_limit: None,
        };
        match t.ledger().reserve(&self.inner.budget, &[charge]) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(wit::Error::BudgetExhausted(format!(
                    "the job asks for {secs} s but {:.1} s of the grant's {} s are left; ask for less",
                    e.left() as f64 / 1e6,
                    grant.gpu_seconds
                )))
            }
            Err(e) => return Err(wit::Error::Unavailable(format!("the budget ledger failed: {e}"))),
        }
        match t.submit(job, Some((self.inner.budget.clone(), secs))) {
            Ok(id) => {
                self.inner.jobs.lock().unwrap_or_else(PoisonError::into_inner).push((id.clone(), spec.recipe, secs));
                Ok(id)
            }
            Err(e) => {
                let _ = t.ledger().settle(&self.inner.budget, Resource::TrainerSeconds, micros(secs), 0);
                Err(match e {
                    SubmitError::Invalid(m) => wit::Error::InvalidJob(m),
                    SubmitError::Busy(m) => wit::Error::Unavailable(m),
                })
            }
        }
    }

    /// The trainer, if `job` was submitted by this call.
    fn own(&self, job: &str) -> Result<&Arc<Trainer>, wit::Error> {
        let known = self.inner.jobs.lock().unwrap_or_else(PoisonError::into_inner).iter().any(|(id, _, _)| id == job);
        match (&self.inner.service, known) {
            (Some(t), true) => Ok(t),
            _ => Err(wit::Error::UnknownJob(format!(
                "no job {:?} was submitted by this call",
                job.chars().take(80).collect::<String>()
            ))),
        }
    }
}

/// A status from the job table; a job forgotten by it (only long-finished
/// jobs are) is unknown.
fn found(job: &str, s: Option<JobStatus>) -> Result<wit::JobStatus, wit::Error> {
    s.map(to_wit).ok_or_else(|| wit::Error::UnknownJob(format!("job {job:?} ended long ago and was forgotten")))
}

fn to_wit(s: JobStatus) -> wit::JobStatus {
    wit::JobStatus {
        phase: match s.phase {
            Phase::Queued => wit::Phase::Queued,
            Phase::Running => wit::Phase::Running,
            Phase::Succeeded => wit::Phase::Succeeded,
            Phase::Failed => wit::Phase::Failed,
            Phase::Cancelled => wit::Phase::Cancelled,
            Phase::BudgetExhausted => wit::Phase::BudgetExhausted,
        },
        message: s.message,
        metrics: s.metrics.into_iter().map(|(name, value)| wit::Metric { name, value }).collect(),
        log_tail: s.log_tail,
        seconds: s.seconds,
    }
}

impl wit::Host for TrainerState {
    async fn submit(&mut self, spec: wit::JobSpec) -> wasmtime::Result<Result<String, wit::Error>> {
        let r = TrainerState::submit(self, spec);
        self.count(|u| match r {
            Ok(_) => u.submitted += 1,
            Err(_) => u.refused += 1,
        });
        Ok(r)
    }

    async fn poll(&mut self, job: String) -> wasmtime::Result<Result<wit::JobStatus, wit::Error>> {
        Ok(self.own(&job).and_then(|t| found(&job, t.status(&job))))
    }

    async fn wait(&mut self, job: String, timeout_ms: u32) -> wasmtime::Result<Result<wit::JobStatus, wit::Error>> {
        let t = match self.own(&job) {
            Ok(t) => t.clone(),
            Err(e) => return Ok(Err(e)),
        };
        let mut timeout = Duration::from_millis(timeout_ms.into());
        if let Some(d) = self.inner.deadline {
            // Leave the guest a little time to act on the answer.
            let left = d.saturating_duration_since(Instant::now());
            timeout = timeout.min(left.saturating_sub(left / 10));
        }
        Ok(found(&job, t.wait(&job, timeout).await))
    }

    async fn cancel(&mut self, job: String) -> wasmtime::Result<Result<wit::JobStatus, wit::Error>> {
        Ok(self.own(&job).and_then(|t| found(&job, t.cancel(&job))))
    }

    async fn seconds_left(&mut self) -> wasmtime::Result<f64> {
        Ok(self.left())
    }
}

/// The `trainer` service: its line in the registry (`services/registry.rs`).
pub struct TrainerFactor;

impl super::Service for TrainerFactor {
    type Grant = TrainerGrant;
    type State = TrainerState;
    type Usage = TrainerUsage;
    const VERSIONS: &'static [&'static str] = &[crate::caps::imports::AGENT_VERSION];
}

impl super::PerCall for TrainerFactor {
    fn state(
        section: Option<&TrainerGrant>,
        _grant: &crate::caps::Grant,
        host: &super::HostServices,
        scope: &super::CallScope,
    ) -> TrainerState {
        TrainerState::new(section.cloned(), host.trainer.clone(), scope.budget_key(), Some(scope.deadline))
    }

    fn unlinked() -> TrainerState {
        TrainerState::new(None, None, String::new(), None)
    }

    fn add_to_linker(
        linker: &mut wasmtime::component::Linker<crate::runtime::HostState>,
        get: fn(&mut crate::runtime::HostState) -> &mut TrainerState,
    ) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, wasmtime::component::HasSelf<TrainerState>>(linker, get)
    }

    fn usage(state: &TrainerState) -> Option<TrainerUsage> {
        state.usage()
    }

    /// The call's jobs still running are cancelled and awaited without
    /// blocking the executor thread ([`TrainerState::finish`]).
    async fn finish(state: &TrainerState) -> Option<TrainerUsage> {
        state.finish().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::trainer::{Backend, BackendKind, JobContext, Ledger, RunOutcome, TrainerConfig};

    /// A backend whose job ignores cancel and ends only once `release` is
    /// set (by another task on the caller's executor).
    struct Held {
        release: Arc<AtomicBool>,
    }

    impl Backend for Held {
        fn kind(&self) -> BackendKind {
            BackendKind::Embedded
        }
        fn check(&self, _spec: &JobSpec) -> std::result::Result<(), String> {
            Ok(())
        }
        fn run(&self, _spec: &JobSpec, ctx: &JobContext) -> RunOutcome {
            while !self.release.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(2));
            }
            RunOutcome { stopped: ctx.stop_reason().is_some(), ..RunOutcome::default() }
        }
    }

    /// Ending a call waits for its cancelled jobs without holding the
    /// executor thread: on a one-thread executor, a task that must run for
    /// the job to end still runs while the call's end waits, so the job is
    /// recorded ended (`cancelled`) rather than still `running`.
    #[test]
    fn ending_a_call_waits_for_its_jobs_without_blocking_the_executor() {
        let release = Arc::new(AtomicBool::new(false));
        let trainer = Trainer::with_backend(
            TrainerConfig { max_job_seconds: 30.0, ..TrainerConfig::default() },
            Arc::new(Held { release: release.clone() }),
            Ledger::in_memory(),
        );
        let grant = TrainerGrant { backends: vec!["*".into()], gpu_seconds: 60 };
        let state = TrainerState::new(Some(grant), Some(Arc::new(trainer)), "run/variant".into(), None);
        let spec = wit::JobSpec { recipe: "held".into(), config_json: "{}".into(), script: None, budget_seconds: 20.0 };
        let id = state.submit(spec).expect("submitted");

        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let usage = rt.block_on(async {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                release.store(true, Ordering::Relaxed);
            });
            state.finish().await.expect("granted")
        });
        assert_eq!(usage.budget, "run/variant");
        assert_eq!(usage.jobs.len(), 1, "{usage:?}");
        let job = &usage.jobs[0];
        assert_eq!((job.id.as_str(), job.recipe.as_str(), job.phase), (id.as_str(), "held", Phase::Cancelled));
        assert_eq!(job.budget_seconds, 20.0);
        // Settled: the ledger holds what the job ran, not its reservation.
        let spent = state.inner.service.as_ref().unwrap().ledger().spent("run/variant", Resource::TrainerSeconds);
        assert!(spent.unwrap() < 20_000_000, "settled below the 20 s reserved");
    }

    /// A test environment whose host trains on the embedded backend (a
    /// [`Held`] job), granted `manifest` under a policy allowing any
    /// backend and 600 s, in run `run-a`.
    fn env(manifest: &str) -> crate::services::testing::TestEnvironment {
        crate::services::testing::TestEnvironment::new()
            .manifest(manifest)
            .policy(r#"trainer = { backends = ["*"], gpu_seconds = 600 }"#)
            .run("run-a")
            .host(|_| crate::services::HostServices {
                trainer: Some(Arc::new(Trainer::with_backend(
                    TrainerConfig { max_job_seconds: 30.0, ..TrainerConfig::default() },
                    Arc::new(Held { release: Arc::new(AtomicBool::new(true)) }),
                    Ledger::in_memory(),
                ))),
                ..crate::services::HostServices::default()
            })
    }

    fn job(budget_seconds: f64) -> wit::JobSpec {
        wit::JobSpec { recipe: "held".into(), config_json: "{}".into(), script: None, budget_seconds }
    }

    /// The host's backend must be among the grant's.
    #[tokio::test]
    async fn a_backend_the_grant_does_not_allow_is_denied() {
        let mut t = env(r#"trainer = { backends = ["command"], gpu_seconds = 60 }"#).call().services.trainer;
        match wit::Host::submit(&mut t, job(1.0)).await.unwrap() {
            Err(wit::Error::Denied(m)) => assert!(m.contains("\"embedded\" backend"), "{m}"),
            other => panic!("expected denied, got {other:?}"),
        }
        let usage = t.finish().await.unwrap();
        assert_eq!((usage.submitted, usage.refused, usage.jobs.len()), (0, 1, 0));
    }

    /// A job asking for more than is left of the grant's seconds is
    /// refused with nothing started; the budget is keyed by run and variant.
    #[tokio::test]
    async fn a_job_past_the_seconds_left_is_refused_and_nothing_starts() {
        let mut t = env(r#"trainer = { backends = ["embedded"], gpu_seconds = 10 }"#).call().services.trainer;
        assert_eq!(wit::Host::seconds_left(&mut t).await.unwrap(), 10.0);
        match wit::Host::submit(&mut t, job(20.0)).await.unwrap() {
            Err(wit::Error::BudgetExhausted(m)) => assert!(m.contains("asks for 20 s but 10.0 s"), "{m}"),
            other => panic!("expected budget-exhausted, got {other:?}"),
        }
        assert_eq!(wit::Host::seconds_left(&mut t).await.unwrap(), 10.0);
        let usage = t.finish().await.unwrap();
        let key = format!("run-a/{}", crate::services::testing::VARIANT_SHA256);
        assert_eq!((usage.budget, usage.submitted, usage.refused, usage.jobs.len()), (key, 0, 1, 0));
    }

    /// `usage` answers at once, with the counts so far and no job records.
    #[test]
    fn usage_before_the_end_never_waits() {
        let state = TrainerState::new(
            Some(TrainerGrant { backends: vec!["*".into()], gpu_seconds: 60 }),
            None,
            "k".into(),
            None,
        );
        assert_eq!(state.usage(), Some(TrainerUsage { budget: "k".into(), ..TrainerUsage::default() }));
        assert_eq!(TrainerState::new(None, None, "k".into(), None).usage(), None);
    }
}
