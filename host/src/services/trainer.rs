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
//!   budget: the job's `budget-seconds` is reserved whole in the ledger
//!   (`$VIVARIUM_HOME/trainer-ledger.sqlite`, keyed by run and variant like
//!   the `llm` ledger), and a job that does not fit what is left is
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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::caps::TrainerGrant;
use crate::runtime::bindings::vivarium::agent::trainer as wit;
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

    /// What the call did; `None` when the service is not granted. The call
    /// is over when this is asked: jobs still running are cancelled and
    /// waited for (a few seconds at most) so their seconds are final.
    pub fn usage(&self) -> Option<TrainerUsage> {
        self.inner.grant.as_ref()?;
        let mut usage = self.inner.usage.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let jobs = self.inner.jobs.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(t) = &self.inner.service {
            for (id, _, _) in &jobs {
                t.cancel(id);
            }
            let until = Instant::now() + SETTLE_WAIT;
            for (id, recipe, budget) in jobs.iter().take(MAX_RECORDS_PER_CALL) {
                let left = until.saturating_duration_since(Instant::now());
                let Some(s) = t.wait_blocking(id, left) else { continue };
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
        let spent = t.ledger().spent(&self.inner.budget).unwrap_or(grant.gpu_seconds as f64);
        (grant.gpu_seconds as f64 - spent).max(0.0)
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
        match t.ledger().reserve(&self.inner.budget, secs, grant.gpu_seconds as f64) {
            Ok(Ok(())) => {}
            Ok(Err(left)) => {
                return Err(wit::Error::BudgetExhausted(format!(
                    "the job asks for {secs} s but {left:.1} s of the grant's {} s are left; ask for less",
                    grant.gpu_seconds
                )))
            }
            Err(e) => return Err(wit::Error::Unavailable(format!("the trainer ledger failed: {e}"))),
        }
        match t.submit(job, Some((self.inner.budget.clone(), secs))) {
            Ok(id) => {
                self.inner.jobs.lock().unwrap_or_else(PoisonError::into_inner).push((id.clone(), spec.recipe, secs));
                Ok(id)
            }
            Err(e) => {
                let _ = t.ledger().settle(&self.inner.budget, secs, 0.0);
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
