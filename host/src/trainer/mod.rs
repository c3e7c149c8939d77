//! Training jobs run by the host: the engine behind the `trainer` service
//! ([`crate::services::trainer`]) and the `tiny-lm` suite's grader.
//!
//! A job is a recipe name, a JSON config, an optional script and a budget in
//! seconds. The operator's configuration ([`TrainerConfig`], `trainer.toml`
//! under `$VIVARIUM_HOME`) picks the one backend that runs every job:
//!
//! * [`embedded`] (the default, offline): a small character-level
//!   transformer trained with candle on the CPU (or a GPU with the `cuda`
//!   feature) on a corpus compiled into the binary; reports validation bits
//!   per byte, measured by the host.
//! * [`command`]: an operator-configured command (e.g. `uv run train.py`)
//!   in a fresh job directory, inside the build sandbox (no network, only the
//!   job directory writable); its metrics are the last JSON line it prints.
//! * [`ray`]: Ray's job submission HTTP API on an existing cluster.
//!
//! Jobs run on host threads (and the processes they start), never inside a
//! guest. Each job has a hard deadline, its budget: a backend is asked to
//! stop there (a process is killed with its group, a Ray job is stopped),
//! and a job that has not ended [`GRACE`] later is given up on and reported
//! `budget-exhausted` anyway. Seconds are wall-clock seconds from the start
//! of the run (not the queue) to its end, at most the budget; they are what
//! the ledger ([`Ledger`]) charges.

pub mod command;
pub mod embedded;
pub mod ray;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::home::Home;

/// The operator's configuration file under `$VIVARIUM_HOME`.
pub const CONFIG_FILE: &str = "trainer.toml";
/// The budget ledger the trainer charges its seconds to (the host's one
/// ledger; [`crate::ledger`]).
pub use crate::ledger::Ledger;
use crate::ledger::{micros, Resource};
/// Where the `command` backend makes job directories, under `$VIVARIUM_HOME`.
pub const JOBS_DIR: &str = "trainer-jobs";
/// How long after its deadline a job that has not stopped is given up on.
pub const GRACE: Duration = Duration::from_secs(2);
/// Bytes of a job's output kept as its log tail.
pub const LOG_TAIL_BYTES: usize = 4096;
/// Finished jobs kept in the table before the oldest are forgotten.
const MAX_FINISHED: usize = 1024;

/// Which backend runs jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The offline character-level language model ([`embedded`]).
    #[default]
    Embedded,
    /// An operator-configured command in the sandbox ([`command`]).
    Command,
    /// Ray's job submission API ([`ray`]).
    Ray,
}

impl BackendKind {
    /// The name grants and configuration use.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Embedded => "embedded",
            BackendKind::Command => "command",
            BackendKind::Ray => "ray",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host's trainer configuration (operator-owned, `trainer.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// The backend every job runs on.
    #[serde(default)]
    pub backend: BackendKind,
    /// Jobs running at once; more wait `queued`.
    #[serde(default = "default_concurrency")]
    pub max_concurrent: usize,
    /// The longest budget one job may ask for, in seconds.
    #[serde(default = "default_max_job_seconds")]
    pub max_job_seconds: f64,
    /// The `command` backend's settings (required when it is chosen).
    #[serde(default)]
    pub command: Option<command::CommandConfig>,
    /// The `ray` backend's settings (required when it is chosen).
    #[serde(default)]
    pub ray: Option<ray::RayConfig>,
}

fn default_concurrency() -> usize {
    1
}
fn default_max_job_seconds() -> f64 {
    600.0
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Embedded,
            max_concurrent: default_concurrency(),
            max_job_seconds: default_max_job_seconds(),
            command: None,
            ray: None,
        }
    }
}

impl TrainerConfig {
    /// Parse and check configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let config: TrainerConfig =
            toml::from_str(text).map_err(|e| Error::invalid(format!("{origin}: {}", e.to_string().trim_end())))?;
        config.check().map_err(|e| Error::invalid(format!("{origin}: {e}")))?;
        Ok(config)
    }

    /// The host's configuration: the file `$VIVARIUM_TRAINER_CONFIG` names,
    /// else `<home>/trainer.toml`, else the default (the embedded backend).
    pub fn discover(home: &Home) -> Result<Self> {
        let path = match std::env::var_os("VIVARIUM_TRAINER_CONFIG").filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => home.root().join(CONFIG_FILE),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.max_concurrent == 0 {
            return Err("max_concurrent must be at least 1".into());
        }
        if !(self.max_job_seconds.is_finite() && self.max_job_seconds > 0.0) {
            return Err(format!("max_job_seconds must be a positive number of seconds, not {}", self.max_job_seconds));
        }
        match self.backend {
            BackendKind::Command if self.command.is_none() => {
                Err("backend = \"command\" needs a [command] table with `program` (and `args`)".into())
            }
            BackendKind::Ray if self.ray.is_none() => {
                Err("backend = \"ray\" needs a [ray] table with `address` and `entrypoint`".into())
            }
            _ => Ok(()),
        }
    }
}

/// Which slice of the embedded corpus a job is scored on. Only host code
/// (a grader) may choose [`EvalSplit::HeldOut`]; jobs from guests are
/// always scored on the validation split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalSplit {
    /// The validation slice (visible to variants through their scores).
    #[default]
    Validation,
    /// The held-out slice (host graders only).
    HeldOut,
}

/// One job as submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// The recipe the backend knows (`char-lm` for `embedded`; any name the
    /// operator's command or Ray entrypoint understands otherwise).
    pub recipe: String,
    /// The job's configuration, a JSON object.
    pub config: serde_json::Value,
    /// A training script (the `command` and `ray` backends).
    pub script: Option<String>,
    /// The most seconds the job may run; its hard deadline.
    pub budget: Duration,
    /// The split the `embedded` backend scores on (host-only).
    pub eval_split: EvalSplit,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for a free slot.
    Queued,
    /// Running on the backend.
    Running,
    /// Ended with metrics.
    Succeeded,
    /// Ended with an error (the message says which).
    Failed,
    /// Stopped by `cancel` (or by the end of the call that submitted it).
    Cancelled,
    /// Killed at its budget.
    BudgetExhausted,
}

impl Phase {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Phase::Queued | Phase::Running)
    }

    /// The name used in audit records and notes.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
            Phase::BudgetExhausted => "budget-exhausted",
        }
    }
}

/// A job's state as a caller sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    /// Where the job is.
    pub phase: Phase,
    /// What went wrong (empty on success).
    pub message: String,
    /// Metrics by name (partial while running; those reported before a kill).
    pub metrics: BTreeMap<String, f64>,
    /// The last [`LOG_TAIL_BYTES`] of the job's output.
    pub log_tail: String,
    /// Seconds run so far (at most the budget).
    pub seconds: f64,
}

/// What a backend's run reports when it returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOutcome {
    /// `None`: succeeded; `Some(message)`: failed.
    pub error: Option<String>,
    /// Metrics by name.
    pub metrics: BTreeMap<String, f64>,
    /// The tail of the output.
    pub log_tail: String,
    /// Whether the run ended because [`JobContext::stop_reason`] said so
    /// (not on its own): the job is then cancelled or out of budget.
    pub stopped: bool,
}

/// What a running job sees of the host: when to stop, and where to report.
#[derive(Debug)]
pub struct JobContext {
    /// The job's id.
    pub id: String,
    /// The hard deadline: the budget from the start of the run.
    pub deadline: Instant,
    cancelled: Arc<AtomicBool>,
    progress: Mutex<BTreeMap<String, f64>>,
}

impl JobContext {
    /// A context for a run outside the job table (benchmarks, tests).
    pub fn standalone(id: &str, budget: Duration) -> Self {
        Self {
            id: id.to_string(),
            deadline: Instant::now() + budget,
            cancelled: Arc::new(AtomicBool::new(false)),
            progress: Mutex::new(BTreeMap::new()),
        }
    }

    /// Why the job must stop now, if it must: cancelled, or past its deadline.
    pub fn stop_reason(&self) -> Option<Phase> {
        if self.cancelled.load(Ordering::Relaxed) {
            Some(Phase::Cancelled)
        } else if Instant::now() >= self.deadline {
            Some(Phase::BudgetExhausted)
        } else {
            None
        }
    }

    /// Record a metric while running (seen by `poll`, kept after a kill).
    pub fn report(&self, name: &str, value: f64) {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string(), value);
    }
}

/// A backend that runs jobs. `run` blocks on a job thread until the job
/// ends; it must return soon after [`JobContext::stop_reason`] turns
/// `Some` (the host gives up on it [`GRACE`] later).
pub trait Backend: Send + Sync {
    /// The backend's kind.
    fn kind(&self) -> BackendKind;
    /// Refuse a job the backend cannot run (unknown recipe, bad config),
    /// with a message saying what to change.
    fn check(&self, spec: &JobSpec) -> std::result::Result<(), String>;
    /// Run the job.
    fn run(&self, spec: &JobSpec, ctx: &JobContext) -> RunOutcome;
}

/// Why a job was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// The spec is malformed or the backend cannot run it.
    #[error("invalid job: {0}")]
    Invalid(String),
    /// Too many jobs are alive in the table.
    #[error("the trainer is busy: {0}")]
    Busy(String),
}

struct JobRecord {
    status: JobStatus,
    started: Option<Instant>,
    ended: bool,
}

struct Job {
    spec: JobSpec,
    cancelled: Arc<AtomicBool>,
    record: Mutex<JobRecord>,
    changed: Condvar,
    ctx: Mutex<Option<Arc<JobContext>>>,
    /// Ledger settlement at the end: (key, seconds reserved).
    account: Option<(String, f64)>,
    submitted: Instant,
}

impl Job {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobRecord> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self) -> JobStatus {
        let r = self.lock();
        let mut s = r.status.clone();
        if !r.ended {
            if let Some(start) = r.started {
                s.seconds = start.elapsed().as_secs_f64().min(self.spec.budget.as_secs_f64());
            }
            if let Some(ctx) = self.ctx.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                s.metrics = ctx.progress.lock().unwrap_or_else(PoisonError::into_inner).clone();
            }
        }
        s
    }
}

/// Run slots: at most `max_concurrent` jobs run at once, and queued jobs
/// start in the order they were submitted (a job thread may be scheduled
/// before an older one's, so the order is kept by ticket, not by the OS).
struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
}

struct SlotState {
    free: usize,
    /// Tickets of the queued jobs, oldest first.
    queue: std::collections::VecDeque<u64>,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The job table over one backend, with the seconds ledger.
pub struct Trainer {
    config: TrainerConfig,
    backend: Arc<dyn Backend>,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    slots: Arc<Slots>,
    next: AtomicU64,
    ledger: Arc<Ledger>,
    /// Prefix of job ids, so ids from two trainers differ.
    prefix: String,
}

impl fmt::Debug for Trainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trainer").field("backend", &self.backend.kind()).finish_non_exhaustive()
    }
}

impl Trainer {
    /// A trainer with `config`'s backend and `ledger`; `jobs_dir` is where
    /// the `command` backend makes job directories.
    pub fn new(config: TrainerConfig, ledger: impl Into<Arc<Ledger>>, jobs_dir: &Path) -> Result<Self> {
        let backend: Arc<dyn Backend> = match config.backend {
            BackendKind::Embedded => Arc::new(embedded::Embedded::new()),
            BackendKind::Command => {
                let c = config.command.clone().ok_or_else(|| Error::invalid("the command backend needs [command]"))?;
                Arc::new(command::CommandBackend::new(c, jobs_dir.to_path_buf()))
            }
            BackendKind::Ray => {
                let c = config.ray.clone().ok_or_else(|| Error::invalid("the ray backend needs [ray]"))?;
                Arc::new(ray::RayBackend::new(c)?)
            }
        };
        Ok(Self::with_backend(config, backend, ledger))
    }

    /// A trainer over a backend given directly.
    pub fn with_backend(config: TrainerConfig, backend: Arc<dyn Backend>, ledger: impl Into<Arc<Ledger>>) -> Self {
        static TRAINERS: AtomicU64 = AtomicU64::new(0);
        let n = TRAINERS.fetch_add(1, Ordering::Relaxed);
        Self {
            slots: Arc::new(Slots {
                state: Mutex::new(SlotState { free: config.max_concurrent, queue: Default::default() }),
                freed: Condvar::new(),
            }),
            config,
            backend,
            jobs: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            ledger: ledger.into(),
            prefix: format!("job-{}-{n}", std::process::id()),
        }
    }

    /// The trainer of a home: [`TrainerConfig::discover`], charging
    /// `ledger` (the home's one budget ledger), job directories under
    /// `trainer-jobs/`.
    pub fn for_home(home: &Home, ledger: Arc<Ledger>) -> Result<Self> {
        let config = TrainerConfig::discover(home)?;
        Self::new(config, ledger, &home.root().join(JOBS_DIR))
    }

    /// The configuration.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// The backend's kind.
    pub fn backend(&self) -> BackendKind {
        self.backend.kind()
    }

    /// The budget ledger its seconds are charged to.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Check `spec` against the configuration and the backend.
    pub fn check(&self, spec: &JobSpec) -> std::result::Result<(), SubmitError> {
        let secs = spec.budget.as_secs_f64();
        if !(secs > 0.0) {
            return Err(SubmitError::Invalid("budget-seconds must be more than 0".into()));
        }
        if secs > self.config.max_job_seconds {
            return Err(SubmitError::Invalid(format!(
                "budget-seconds {secs} is over this host's limit of {} per job; ask for less",
                self.config.max_job_seconds
            )));
        }
        if !spec.config.is_object() {
            return Err(SubmitError::Invalid("config-json must be a JSON object, e.g. {\"lr\": 0.003}".into()));
        }
        self.backend.check(spec).map_err(SubmitError::Invalid)
    }

    /// Accept `spec` and start it on a job thread (queued until a slot is
    /// free). `account` is a ledger key and the seconds reserved there for
    /// this job: when it ends, the reservation is replaced by the seconds
    /// it ran.
    pub fn submit(&self, spec: JobSpec, account: Option<(String, f64)>) -> std::result::Result<String, SubmitError> {
        self.check(&spec)?;
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{ticket}", self.prefix);
        let job = Arc::new(Job {
            cancelled: Arc::new(AtomicBool::new(false)),
            record: Mutex::new(JobRecord {
                status: JobStatus {
                    phase: Phase::Queued,
                    message: String::new(),
                    metrics: BTreeMap::new(),
                    log_tail: String::new(),
                    seconds: 0.0,
                },
                started: None,
                ended: false,
            }),
            changed: Condvar::new(),
            ctx: Mutex::new(None),
            spec,
            account,
            submitted: Instant::now(),
        });
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            self.prune(&mut jobs);
            jobs.insert(id.clone(), job.clone());
        }
        let backend = self.backend.clone();
        let slots = self.slots.clone();
        let ledger = self.ledger.clone();
        let thread_id = id.clone();
        slots.lock().queue.push_back(ticket);
        let queue = slots.clone();
        std::thread::Builder::new()
            .name(format!("trainer {id}"))
            .spawn(move || run_job(thread_id, ticket, job, backend, slots, ledger))
            .map_err(|e| {
                queue.lock().queue.retain(|t| *t != ticket);
                queue.freed.notify_all();
                SubmitError::Busy(format!("cannot start a job thread ({e}); try again later"))
            })?;
        Ok(id)
    }

    /// Forget the oldest finished jobs past [`MAX_FINISHED`].
    fn prune(&self, jobs: &mut HashMap<String, Arc<Job>>) {
        let mut finished: Vec<(Instant, String)> =
            jobs.iter().filter(|(_, j)| j.lock().ended).map(|(id, j)| (j.submitted, id.clone())).collect();
        if finished.len() > MAX_FINISHED {
            finished.sort();
            for (_, id) in &finished[..finished.len() - MAX_FINISHED] {
                jobs.remove(id);
            }
        }
    }

    fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    /// The job's state now; `None` for an unknown id.
    pub fn status(&self, id: &str) -> Option<JobStatus> {
        self.job(id).map(|j| j.snapshot())
    }

    /// Wait up to `timeout` for the job to end (blocking); its state then.
    pub fn wait_blocking(&self, id: &str, timeout: Duration) -> Option<JobStatus> {
        let job = self.job(id)?;
        let until = Instant::now() + timeout;
        let mut r = job.lock();
        while !r.ended {
            let now = Instant::now();
            if now >= until {
                break;
            }
            r = job.changed.wait_timeout(r, until - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        drop(r);
        Some(job.snapshot())
    }

    /// Wait up to `timeout` for the job to end without blocking the async
    /// runtime; dropping the future stops waiting (not the job).
    pub async fn wait(&self, id: &str, timeout: Duration) -> Option<JobStatus> {
        let job = self.job(id)?;
        let until = Instant::now() + timeout;
        let mut poll = Duration::from_millis(1);
        loop {
            let s = job.snapshot();
            let now = Instant::now();
            if s.phase.is_terminal() || now >= until {
                return Some(s);
            }
            tokio::time::sleep(poll.min(until - now)).await;
            poll = (poll * 2).min(Duration::from_millis(20));
        }
    }

    /// Ask the job to stop; its state then (it may still be ending:
    /// `wait` for `cancelled`). `None` for an unknown id.
    pub fn cancel(&self, id: &str) -> Option<JobStatus> {
        let job = self.job(id)?;
        job.cancelled.store(true, Ordering::Relaxed);
        Some(job.snapshot())
    }

    /// Submit `spec` and wait for it to end (host code: the graders).
    pub fn run_blocking(&self, spec: JobSpec) -> std::result::Result<JobStatus, SubmitError> {
        let wait = spec.budget + GRACE + Duration::from_secs(1);
        let id = self.submit(spec, None)?;
        // The job thread ends the job at its deadline plus GRACE at the latest.
        let mut s = self.wait_blocking(&id, wait).expect("a job just submitted is in the table");
        while !s.phase.is_terminal() {
            s = self.wait_blocking(&id, Duration::from_secs(1)).expect("jobs are pruned only once finished");
        }
        Ok(s)
    }
}

/// The job thread: wait for a slot, run the backend under a watchdog,
/// record the end, settle the ledger.
fn run_job(id: String, ticket: u64, job: Arc<Job>, backend: Arc<dyn Backend>, slots: Arc<Slots>, ledger: Arc<Ledger>) {
    // Queue: wait for a slot and our turn, or for a cancel.
    {
        let mut st = slots.lock();
        while !(st.free > 0 && st.queue.front() == Some(&ticket)) && !job.cancelled.load(Ordering::Relaxed) {
            st = slots.freed.wait_timeout(st, Duration::from_millis(50)).unwrap_or_else(PoisonError::into_inner).0;
        }
        st.queue.retain(|t| *t != ticket);
        if job.cancelled.load(Ordering::Relaxed) {
            drop(st);
            // The next in line may be able to start now.
            slots.freed.notify_all();
            finish(&job, &ledger, Phase::Cancelled, "cancelled while queued".into(), RunOutcome::default(), 0.0);
            return;
        }
        st.free -= 1;
        drop(st);
        // With more than one free slot, the next in line starts too.
        slots.freed.notify_all();
    }
    let start = Instant::now();
    let ctx = Arc::new(JobContext {
        id: id.clone(),
        deadline: start + job.spec.budget,
        cancelled: job.cancelled.clone(),
        progress: Mutex::new(BTreeMap::new()),
    });
    *job.ctx.lock().unwrap_or_else(PoisonError::into_inner) = Some(ctx.clone());
    {
        let mut r = job.lock();
        r.started = Some(start);
        r.status.phase = Phase::Running;
    }
    job.changed.notify_all();

    // The backend runs on its own thread so that one ignoring its deadline
    // cannot hold the job (or the slot) past the grace.
    let (tx, rx) = std::sync::mpsc::channel();
    let run_job = job.clone();
    let run_ctx = ctx.clone();
    let spawned = std::thread::Builder::new().name(format!("trainer {id} run")).spawn(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.run(&run_job.spec, &run_ctx)))
            .unwrap_or_else(|_| RunOutcome {
                error: Some("the backend failed unexpectedly (a host bug; see the host log)".into()),
                ..RunOutcome::default()
            });
        let _ = tx.send(out);
    });
    let outcome = match spawned {
        Ok(_) => rx.recv_timeout((ctx.deadline + GRACE).saturating_duration_since(Instant::now())).ok(),
        Err(e) => Some(RunOutcome { error: Some(format!("cannot start the job ({e})")), ..RunOutcome::default() }),
    };
    let budget = job.spec.budget.as_secs_f64();
    let seconds = start.elapsed().as_secs_f64().min(budget);
    let (phase, message, outcome) = match outcome {
        None => {
            ctx.cancelled.store(true, Ordering::Relaxed);
            let mut out = RunOutcome::default();
            out.metrics = ctx.progress.lock().unwrap_or_else(PoisonError::into_inner).clone();
            (Phase::BudgetExhausted, format!("the job did not stop at its budget of {budget} s and was abandoned"), out)
        }
        // A run that ended on its own keeps its outcome even when the
        // deadline passed while it was returning.
        Some(out) => match (out.stopped.then(|| ctx.stop_reason()).flatten(), &out.error) {
            (Some(Phase::Cancelled), _) => (Phase::Cancelled, "cancelled".to_string(), out),
            (Some(_), _) => (
                Phase::BudgetExhausted,
                format!("the job ran out of its budget of {budget} s and was stopped; ask for more seconds or do less"),
                out,
            ),
            (None, Some(e)) => (Phase::Failed, e.clone(), out),
            (None, None) => (Phase::Succeeded, String::new(), out),
        },
    };
    slots.lock().free += 1;
    // Every queued thread waits on `freed`; only the oldest may take the slot.
    slots.freed.notify_all();
    finish(&job, &ledger, phase, message, outcome, seconds);
}

fn finish(job: &Job, ledger: &Ledger, phase: Phase, message: String, out: RunOutcome, seconds: f64) {
    if let Some((key, reserved)) = &job.account {
        let (reserved, ran) = (micros(*reserved), micros(seconds).min(micros(*reserved)));
        if let Err(e) = ledger.settle(key, Resource::TrainerSeconds, reserved, ran) {
            tracing::warn!(error = %e, "cannot settle the trainer ledger");
        }
    }
    let mut metrics = out.metrics;
    if let Some(ctx) = job.ctx.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
        for (k, v) in ctx.progress.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            metrics.entry(k.clone()).or_insert(*v);
        }
    }
    {
        let mut r = job.lock();
        r.status = JobStatus { phase, message, metrics, log_tail: tail(&out.log_tail, LOG_TAIL_BYTES), seconds };
        r.ended = true;
    }
    job.changed.notify_all();
}

/// The last `max` bytes of `text`, cut at a character boundary.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// The metrics of the last line of `log` that is a JSON object of numbers
/// (the `command` and `ray` backends' protocol); other fields are ignored.
pub fn last_json_metrics(log: &str) -> Option<BTreeMap<String, f64>> {
    log.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        let obj = v.as_object()?;
        let m: BTreeMap<String, f64> =
            obj.iter().filter_map(|(k, v)| v.as_f64().filter(|f| f.is_finite()).map(|f| (k.clone(), f))).collect();
        (!m.is_empty()).then_some(m)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that sleeps in small steps until `finish_after`, honouring
    /// the stop flag unless `stubborn`.
    struct Sleeper {
        finish_after: Duration,
        stubborn: bool,
    }

    impl Backend for Sleeper {
        fn kind(&self) -> BackendKind {
            BackendKind::Embedded
        }
        fn check(&self, spec: &JobSpec) -> std::result::Result<(), String> {
            if spec.recipe == "sleep" {
                Ok(())
            } else {
                Err(format!("unknown recipe {:?}; this backend knows \"sleep\"", spec.recipe))
            }
        }
        fn run(&self, _spec: &JobSpec, ctx: &JobContext) -> RunOutcome {
            let start = Instant::now();
            while start.elapsed() < self.finish_after {
                if !self.stubborn && ctx.stop_reason().is_some() {
                    break;
                }
                ctx.report("slept_ms", start.elapsed().as_millis() as f64);
                std::thread::sleep(Duration::from_millis(5));
            }
            RunOutcome { log_tail: "done\n".into(), stopped: ctx.stop_reason().is_some(), ..RunOutcome::default() }
        }
    }

    fn trainer(finish_after: Duration, stubborn: bool) -> Trainer {
        Trainer::with_backend(
            TrainerConfig { max_job_seconds: 30.0, ..TrainerConfig::default() },
            Arc::new(Sleeper { finish_after, stubborn }),
            Ledger::in_memory(),
        )
    }

    fn spec(budget_ms: u64) -> JobSpec {
        JobSpec {
            recipe: "sleep".into(),
            config: serde_json::json!({}),
            script: None,
            budget: Duration::from_millis(budget_ms),
            eval_split: EvalSplit::Validation,
        }
    }

    #[test]
    fn a_job_that_ends_in_time_succeeds_and_settles_its_seconds() {
        let t = trainer(Duration::from_millis(50), false);
        let charge = crate::ledger::Charge {
            resource: Resource::TrainerSeconds,
            amount: 1_000_000,
            limit: Some(5_000_000),
            run_limit: None,
        };
        t.ledger().reserve("run/v", &[charge]).unwrap().unwrap();
        let id = t.submit(spec(1000), Some(("run/v".into(), 1.0))).unwrap();
        let s = t.wait_blocking(&id, Duration::from_secs(5)).unwrap();
        assert_eq!(s.phase, Phase::Succeeded);
        assert_eq!(s.log_tail, "done\n");
        assert!(s.seconds >= 0.05 && s.seconds < 1.0, "{}", s.seconds);
        assert_eq!(t.ledger().spent("run/v", Resource::TrainerSeconds).unwrap(), micros(s.seconds));
        assert!(s.metrics["slept_ms"] > 0.0);
    }

    #[test]
    fn a_job_past_its_budget_is_stopped_as_budget_exhausted() {
        let t = trainer(Duration::from_secs(10), false);
        let id = t.submit(spec(100), None).unwrap();
        let s = t.wait_blocking(&id, Duration::from_secs(5)).unwrap();
        assert_eq!(s.phase, Phase::BudgetExhausted);
        assert!(s.message.contains("budget of 0.1 s"), "{}", s.message);
        assert!((s.seconds - 0.1).abs() < 1e-9, "charged at most the budget: {}", s.seconds);
    }

    #[test]
    fn a_job_that_ignores_its_deadline_is_abandoned_after_the_grace() {
        let t = trainer(Duration::from_secs(6), true);
        let started = Instant::now();
        let id = t.submit(spec(100), None).unwrap();
        let s = t.wait_blocking(&id, Duration::from_secs(5)).unwrap();
        assert_eq!(s.phase, Phase::BudgetExhausted);
        assert!(s.message.contains("abandoned"), "{}", s.message);
        // Abandoned at budget + GRACE, long before the job's own 6 s (the
        // margin is for a loaded machine).
        assert!(started.elapsed() < Duration::from_millis(100) + GRACE + Duration::from_millis(2900));
    }

    #[test]
    fn cancel_stops_a_running_job_and_a_queued_one() {
        let t = trainer(Duration::from_secs(10), false);
        let a = t.submit(spec(5000), None).unwrap();
        // Queued behind `a`: there is one slot.
        let b = t.submit(spec(5000), None).unwrap();
        // The job thread takes a moment to start on a loaded machine.
        let until = Instant::now() + Duration::from_secs(10);
        while t.status(&a).unwrap().phase == Phase::Queued && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(t.status(&a).unwrap().phase, Phase::Running);
        assert_eq!(t.status(&b).unwrap().phase, Phase::Queued);
        t.cancel(&b).unwrap();
        t.cancel(&a).unwrap();
        let sa = t.wait_blocking(&a, Duration::from_secs(2)).unwrap();
        let sb = t.wait_blocking(&b, Duration::from_secs(2)).unwrap();
        assert_eq!((sa.phase, sb.phase), (Phase::Cancelled, Phase::Cancelled));
        assert_eq!(sb.message, "cancelled while queued");
        assert_eq!(sb.seconds, 0.0);
        assert!(t.status("nope").is_none());
    }

    /// Records the order in which jobs start, by their config's `n`.
    struct Recorder(Mutex<Vec<u64>>);

    impl Backend for Recorder {
        fn kind(&self) -> BackendKind {
            BackendKind::Embedded
        }
        fn check(&self, _spec: &JobSpec) -> std::result::Result<(), String> {
            Ok(())
        }
        fn run(&self, spec: &JobSpec, _ctx: &JobContext) -> RunOutcome {
            self.0.lock().unwrap().push(spec.config["n"].as_u64().unwrap());
            std::thread::sleep(Duration::from_millis(2));
            RunOutcome::default()
        }
    }

    #[test]
    fn queued_jobs_start_in_the_order_they_were_submitted() {
        let backend = Arc::new(Recorder(Mutex::new(Vec::new())));
        // One slot: the start order is then the whole queue's order.
        let config = TrainerConfig { max_concurrent: 1, ..TrainerConfig::default() };
        let t = Trainer::with_backend(config, backend.clone(), Ledger::in_memory());
        let ids: Vec<String> = (0..12u64)
            .map(|n| t.submit(JobSpec { config: serde_json::json!({ "n": n }), ..spec(5000) }, None).unwrap())
            .collect();
        for id in &ids {
            assert_eq!(t.wait_blocking(id, Duration::from_secs(20)).unwrap().phase, Phase::Succeeded);
        }
        assert_eq!(*backend.0.lock().unwrap(), (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn bad_specs_are_refused_with_what_to_change() {
        let t = trainer(Duration::ZERO, false);
        let mut s = spec(1000);
        s.recipe = "gpt-5".into();
        assert_eq!(
            t.submit(s, None).unwrap_err(),
            SubmitError::Invalid("unknown recipe \"gpt-5\"; this backend knows \"sleep\"".into())
        );
        assert!(matches!(t.submit(spec(0), None), Err(SubmitError::Invalid(m)) if m.contains("more than 0")));
        assert!(matches!(t.submit(spec(31_000), None), Err(SubmitError::Invalid(m)) if m.contains("limit of 30")));
        let mut s = spec(1000);
        s.config = serde_json::json!([1]);
        assert!(matches!(t.submit(s, None), Err(SubmitError::Invalid(m)) if m.contains("JSON object")));
    }

    #[test]
    fn config_defaults_to_embedded_and_checks_backend_tables() {
        let c = TrainerConfig::parse("", "t").unwrap();
        assert_eq!(c, TrainerConfig::default());
        let e = TrainerConfig::parse("backend = \"ray\"", "t.toml").unwrap_err().to_string();
        assert_eq!(e, "t.toml: backend = \"ray\" needs a [ray] table with `address` and `entrypoint`");
        assert!(TrainerConfig::parse("backend = \"tpu\"", "t").is_err());
    }

    #[test]
    fn last_json_line_holds_the_metrics() {
        let log = "step 1\n{\"loss\": 2.5, \"note\": \"x\"}\nnot json\n{\"val_bpb\": 1.25}\ntrailing\n";
        assert_eq!(last_json_metrics(log), Some(BTreeMap::from([("val_bpb".to_string(), 1.25)])));
        assert_eq!(last_json_metrics("no metrics"), None);
        assert_eq!(tail("héllo", 4), "llo");
    }
}
