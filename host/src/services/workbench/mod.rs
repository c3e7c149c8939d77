//! `vivarium:agent/workbench@0.2.0`: a meta-agent tries a candidate child
//! before it proposes one.
//!
//! This is the guest-facing half: the grant's budgets, counted per call
//! (an `improve` call is one call), and the refusals. The work — the guard,
//! the build, the visible tasks — is done by the caller that knows the
//! suite ([`crate::workbench`], inside `evolve`), reached through a
//! [`BenchLink`] the caller puts in the call's options. Without one (plain
//! `vivarium improve`, a `solve` call) every try answers `unavailable`.
//!
//! | refusal | when |
//! |---|---|
//! | `budget-exhausted` | the grant's `tries` for this call are used, or a try names more tasks than `tasks` |
//! | `invalid-request` | no edits, or `limit` 0 |
//! | `unavailable` | no suite to run on (outside `evolve`) |
//! | `denied` | a task id outside the visible split (from the bench) |
//!
//! A try counts against `tries` as soon as it is sent, whatever its
//! outcome. Every try is one audit record of its own (written by the
//! bench) and a line of the call's `use` record ([`WorkbenchUsage`]).

mod grant;
pub use grant::{builtin_workbench, WorkbenchGrant, WorkbenchPolicy, WorkbenchRequest};

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::bindings::v0_2;
use crate::bindings::v0_2::vivarium::agent::workbench as wit;

/// Why a try was refused (the WIT `error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not allowed; names what.
    Denied(String),
    /// A budget of the grant is spent.
    BudgetExhausted(String),
    /// No suite to run on.
    Unavailable(String),
    /// Malformed arguments.
    InvalidRequest(String),
}

impl Refusal {
    /// The WIT case's kebab-case name, as in the usage record.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Denied(_) => "denied",
            Refusal::BudgetExhausted(_) => "budget-exhausted",
            Refusal::Unavailable(_) => "unavailable",
            Refusal::InvalidRequest(_) => "invalid-request",
        }
    }

    fn into_wit(self) -> wit::Error {
        match self {
            Refusal::Denied(m) => wit::Error::Denied(m),
            Refusal::BudgetExhausted(m) => wit::Error::BudgetExhausted(m),
            Refusal::Unavailable(m) => wit::Error::Unavailable(m),
            Refusal::InvalidRequest(m) => wit::Error::InvalidRequest(m),
        }
    }
}

/// One try as the bench receives it: the edits, the tasks asked for, and
/// the grant's per-try caps.
#[derive(Debug)]
pub struct TryRequest {
    /// The edit set, as a proposal's.
    pub edits: Vec<v0_2::Edit>,
    /// Visible task ids; empty: the first `limit` of the visible split.
    pub task_ids: Vec<String>,
    /// At most this many tasks (already cut to the grant's `tasks`).
    pub limit: u32,
    /// The grant (its `build_seconds` and `fuel` are per try).
    pub grant: WorkbenchGrant,
}

/// One try and where its answer goes.
pub struct TryJob {
    /// What to try.
    pub request: TryRequest,
    /// The trial, or a refusal.
    pub reply: oneshot::Sender<Result<wit::Trial, Refusal>>,
}

/// The caller's end that serves tries ([`crate::workbench::Bench`]); set in
/// [`CallOptions::workbench`](crate::runtime::CallOptions::workbench).
#[derive(Clone)]
pub struct BenchLink(pub mpsc::Sender<TryJob>);

impl std::fmt::Debug for BenchLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BenchLink")
    }
}

impl BenchLink {
    /// A link and the receiver its tries arrive on.
    pub fn new() -> (Self, mpsc::Receiver<TryJob>) {
        let (tx, rx) = mpsc::channel(1);
        (Self(tx), rx)
    }
}

/// What one call did with the workbench: its `use` record's `workbench`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkbenchUsage {
    /// Tries sent (each counts against `tries`).
    pub tries: u32,
    /// Tries refused (by a budget, a bad argument, a held-out id, no suite).
    pub refused: u32,
    /// Visible tasks run over all tries.
    pub tasks: u64,
    /// Fuel the candidates' task calls used over all tries.
    pub fuel: u64,
    /// One line per try: the candidate's score or the refusal's kind.
    pub calls: Vec<TryLine>,
}

/// One try in the usage record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TryLine {
    /// `ok` when a trial came back, else the refusal's kind.
    pub outcome: String,
    /// Edits in the try.
    pub edits: usize,
    /// Tasks run.
    pub tasks: usize,
    /// Whether the candidate built and loaded.
    pub built: bool,
    /// The trial's score.
    pub score: f64,
    /// Fuel used.
    pub fuel: u64,
}

/// The per-call state of the `workbench` service.
#[derive(Debug, Clone)]
pub struct WorkbenchState {
    grant: Option<WorkbenchGrant>,
    link: Option<BenchLink>,
    usage: Arc<Mutex<WorkbenchUsage>>,
}

impl WorkbenchState {
    /// The state of one call under `grant`, served by `link` when the
    /// caller has a suite.
    pub fn new(grant: Option<WorkbenchGrant>, link: Option<BenchLink>) -> Self {
        Self { grant, link, usage: Arc::default() }
    }

    /// What the call used; `None` when the service is not granted.
    pub fn usage(&self) -> Option<WorkbenchUsage> {
        self.grant.as_ref().map(|_| self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }

    fn count(&self, f: impl FnOnce(&mut WorkbenchUsage)) {
        f(&mut self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// One try: the budgets, then the bench.
    pub async fn try_candidate(
        &self,
        edits: Vec<v0_2::Edit>,
        task_ids: Vec<String>,
        limit: u32,
    ) -> Result<wit::Trial, Refusal> {
        let n_edits = edits.len();
        let r = self.try_inner(edits, task_ids, limit).await;
        self.count(|u| {
            let line = match &r {
                Ok(t) => {
                    u.tasks += t.outcomes.len() as u64;
                    u.fuel = u.fuel.saturating_add(t.fuel);
                    TryLine {
                        outcome: "ok".into(),
                        edits: n_edits,
                        tasks: t.outcomes.len(),
                        built: t.built,
                        score: t.score,
                        fuel: t.fuel,
                    }
                }
                Err(e) => {
                    u.refused += 1;
                    TryLine { outcome: e.kind().into(), edits: n_edits, tasks: 0, built: false, score: 0.0, fuel: 0 }
                }
            };
            u.calls.push(line);
        });
        r
    }

    async fn try_inner(
        &self,
        edits: Vec<v0_2::Edit>,
        task_ids: Vec<String>,
        limit: u32,
    ) -> Result<wit::Trial, Refusal> {
        let Some(grant) = self.grant.clone() else {
            return Err(Refusal::Denied("the workbench is not granted to this variant".into()));
        };
        let used = self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner).tries;
        if used >= grant.tries {
            return Err(Refusal::BudgetExhausted(format!(
                "all {} tries of this improve call are used (workbench.tries); propose the best candidate",
                grant.tries
            )));
        }
        if edits.is_empty() {
            return Err(Refusal::InvalidRequest("no edits: a try needs at least one edit".into()));
        }
        if limit == 0 {
            return Err(Refusal::InvalidRequest("limit is 0: a try runs at least one task".into()));
        }
        if task_ids.len() as u64 > u64::from(grant.tasks) {
            return Err(Refusal::BudgetExhausted(format!(
                "the try names {} tasks; a try may run at most {} (workbench.tasks)",
                task_ids.len(),
                grant.tasks
            )));
        }
        let Some(link) = &self.link else {
            return Err(Refusal::Unavailable(
                "the workbench needs a suite: it runs candidates during `vivarium evolve`, where the host knows \
                 the visible tasks; plain `vivarium improve` has none"
                    .into(),
            ));
        };
        self.count(|u| u.tries += 1);
        let (reply, answer) = oneshot::channel();
        let request = TryRequest { edits, task_ids, limit: limit.min(grant.tasks), grant };
        if link.0.send(TryJob { request, reply }).await.is_err() {
            return Err(Refusal::Unavailable("the bench has stopped".into()));
        }
        answer.await.unwrap_or_else(|_| Err(Refusal::Unavailable("the bench has stopped".into())))
    }

    /// Tries left in this call.
    pub fn tries_left(&self) -> u32 {
        let used = self.usage.lock().unwrap_or_else(std::sync::PoisonError::into_inner).tries;
        self.grant.as_ref().map_or(0, |g| g.tries.saturating_sub(used))
    }
}

impl wit::Host for WorkbenchState {
    async fn try_candidate(
        &mut self,
        edits: Vec<v0_2::Edit>,
        task_ids: Vec<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<wit::Trial, wit::Error>> {
        Ok(WorkbenchState::try_candidate(self, edits, task_ids, limit).await.map_err(Refusal::into_wit))
    }

    async fn tries_left(&mut self) -> wasmtime::Result<u32> {
        Ok(WorkbenchState::tries_left(self))
    }
}

/// The `workbench` service: its line in the registry (`services/registry.rs`).
pub struct WorkbenchFactor;

impl super::Service for WorkbenchFactor {
    type Grant = WorkbenchGrant;
    type State = WorkbenchState;
    type Usage = WorkbenchUsage;
    const VERSIONS: &'static [&'static str] = &[crate::caps::imports::AGENT_VERSION_0_2];
}

impl super::PerCall for WorkbenchFactor {
    fn state(
        section: Option<&WorkbenchGrant>,
        _grant: &crate::caps::Grant,
        _host: &super::HostServices,
        scope: &super::CallScope,
    ) -> WorkbenchState {
        WorkbenchState::new(section.cloned(), scope.workbench.clone())
    }

    fn unlinked() -> WorkbenchState {
        WorkbenchState::new(None, None)
    }

    fn add_to_linker(
        linker: &mut wasmtime::component::Linker<crate::runtime::HostState>,
        get: fn(&mut crate::runtime::HostState) -> &mut WorkbenchState,
    ) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, wasmtime::component::HasSelf<WorkbenchState>>(linker, get)
    }

    fn usage(state: &WorkbenchState) -> Option<WorkbenchUsage> {
        state.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> WorkbenchGrant {
        WorkbenchGrant { tries: 2, tasks: 3, build_seconds: 10, fuel: 1_000 }
    }

    fn edit() -> Vec<v0_2::Edit> {
        vec![v0_2::Edit::Delete("src/x.py".into())]
    }

    #[tokio::test]
    async fn without_a_suite_a_try_is_unavailable_and_counts_nothing() {
        let s = WorkbenchState::new(Some(grant()), None);
        let e = s.try_candidate(edit(), vec![], 1).await.unwrap_err();
        assert_eq!(e.kind(), "unavailable");
        assert!(matches!(&e, Refusal::Unavailable(m) if m.contains("vivarium evolve")), "{e:?}");
        assert_eq!(s.tries_left(), 2);
        let u = s.usage().unwrap();
        assert_eq!((u.tries, u.refused), (0, 1));
    }

    #[tokio::test]
    async fn tries_are_counted_and_refused_past_the_grant() {
        let (link, mut rx) = BenchLink::new();
        let bench = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let trial = wit::Trial { built: true, error: None, outcomes: vec![], score: 0.5, fuel: 7 };
                let _ = job.reply.send(Ok(trial));
            }
        });
        let s = WorkbenchState::new(Some(grant()), Some(link));
        assert_eq!(s.try_candidate(edit(), vec![], 1).await.unwrap().score, 0.5);
        assert_eq!(s.tries_left(), 1);
        let e = s.try_candidate(vec![], vec![], 1).await.unwrap_err();
        assert_eq!(e, Refusal::InvalidRequest("no edits: a try needs at least one edit".into()));
        let e = s.try_candidate(edit(), vec!["a".into(), "b".into(), "c".into(), "d".into()], 1).await.unwrap_err();
        assert_eq!(e.kind(), "budget-exhausted");
        s.try_candidate(edit(), vec![], 9).await.unwrap();
        let e = s.try_candidate(edit(), vec![], 1).await.unwrap_err();
        assert_eq!(
            e,
            Refusal::BudgetExhausted(
                "all 2 tries of this improve call are used (workbench.tries); propose the best candidate".into()
            )
        );
        let u = s.usage().unwrap();
        assert_eq!((u.tries, u.refused, u.fuel), (2, 3, 14));
        drop(s);
        bench.await.unwrap();
    }

    #[tokio::test]
    async fn an_ungranted_workbench_is_denied_and_reports_no_usage() {
        let s = WorkbenchState::new(None, None);
        assert_eq!(s.try_candidate(edit(), vec![], 1).await.unwrap_err().kind(), "denied");
        assert_eq!(s.usage(), None);
        assert_eq!(s.tries_left(), 0);
    }
}
