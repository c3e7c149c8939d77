//! The bench behind the `workbench` service: what the host does with one
//! try of a meta-agent inside `evolve` (see [`crate::services::workbench`]
//! for the guest-facing half, its budgets and refusals).
//!
//! A try runs beside the meta-agent's `improve` call ([`Bench::serve`]
//! polls the call and answers its tries; the call waits for each answer,
//! so the try's time counts against the meta-agent's wall-clock limit):
//!
//! 1. **Tasks.** The ids named must all be in the suite's visible split;
//!    any other id is `denied`, naming it, with the same words whether it
//!    is held out or unknown (the workbench is no oracle of the held-out
//!    split). None named: the first `limit` visible tasks.
//! 2. **Guard.** The edits go through [`guard::resolve_edits`] and
//!    [`guard::check_proposal`] against the parent's tree, exactly as a
//!    proposal does; a refusal is the trial's `error` (not built).
//! 3. **Build.** The candidate is written to a scratch directory under
//!    `$VIVARIUM_HOME/scratch` and built and loaded as a child is
//!    (`improve`'s own build, in the build sandbox; its grant within the
//!    parent's). The toolchain is stopped at `workbench.build_seconds`
//!    (its process group killed); a build stopped there, or one that
//!    fails, is the trial's `error`.
//! 4. **Run.** The candidate's task agent solves each task under the
//!    candidate's own grant and limits, each call's fuel also cut to what
//!    is left of `workbench.fuel` and its `llm` tokens and dollars and
//!    `trainer` seconds charged to the parent's budgets (a try opens no
//!    fresh budget), in *sealed* calls (a throwaway memory
//!    fork, a scratch area removed afterwards: nothing a try does
//!    persists). The suite's grader scores it host-side; only the score
//!    and the grader's feedback line for that task come back — never the
//!    expected answer or the grader's code.
//! 5. **Record.** One audit record per try (`workbench-try`: the parent,
//!    the edits' paths, the tasks run, each outcome, the fuel), then the
//!    scratch tree is removed. Nothing enters the archive: a candidate is
//!    archived only if the meta-agent proposes it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use crate::audit::EventKind;
use crate::bindings::v0_2;
use crate::bindings::v0_2::vivarium::agent::workbench as wit;
use crate::caps::{Grant, Limits, Manifest, Policy};
use crate::error::{Error, Result};
use crate::guard::{self, GuardRules};
use crate::improve::ImproveRequest;
use crate::runtime::CallOptions;
use crate::services::workbench::{Refusal, TryJob, TryRequest};
use crate::tasks::{self, Suite};
use crate::variant::{Session, MANIFEST};

/// What the bench of one `improve` call works with: the suite (its
/// visible split is all it runs), the parent, its rules and grant.
pub struct Bench<'a> {
    /// The session (archive-free: a try writes only scratch and audit).
    pub session: &'a Session,
    /// The suite the run evolves on.
    pub suite: Arc<Suite>,
    /// The parent's tree.
    pub parent: PathBuf,
    /// The parent's archive id (for the audit records).
    pub parent_sha: String,
    /// The guard's rules for the parent's language.
    pub rules: GuardRules,
    /// The operator's policy file.
    pub policy: Option<PathBuf>,
    /// The parent's grant (a candidate may not exceed it).
    pub parent_grant: Grant,
    /// The options of the run's calls (its id, for the `llm` ledger).
    pub call: CallOptions,
}

impl Bench<'_> {
    /// Run `call` (the meta-agent's `improve`) to its end, answering every
    /// try that arrives on `tries` meanwhile.
    pub async fn serve<F: std::future::Future>(&self, call: F, mut tries: mpsc::Receiver<TryJob>) -> F::Output {
        tokio::pin!(call);
        loop {
            tokio::select! {
                out = &mut call => return out,
                Some(job) = tries.recv() => {
                    let answer = self.run(job.request).await;
                    let _ = job.reply.send(answer);
                }
            }
        }
    }

    /// One try (see the [module docs](self)).
    async fn run(&self, req: TryRequest) -> std::result::Result<wit::Trial, Refusal> {
        let chosen = self.tasks(&req)?;
        let paths = edit_paths(&req.edits);
        let started = Instant::now();
        let trial = match self.build_and_run(&req, &chosen).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "a workbench try failed in the host");
                return Err(Refusal::Unavailable(format!("the host could not run the try: {e}")));
            }
        };
        let outcomes: Vec<_> =
            trial.outcomes.iter().map(|o| json!({"task": o.task_id, "passed": o.passed, "score": o.score})).collect();
        let audited = self.session.audit.append(
            Some(&self.parent_sha),
            EventKind::Other("workbench-try".into()),
            json!({
                "paths": paths, "tasks": chosen.iter().map(|t| &t.task.id).collect::<Vec<_>>(),
                "built": trial.built, "error": trial.error, "outcomes": outcomes, "score": trial.score,
                "fuel": trial.fuel, "ms": started.elapsed().as_millis() as u64,
            }),
        );
        if let Err(e) = audited {
            return Err(Refusal::Unavailable(format!("the try could not be audited: {e}")));
        }
        Ok(trial)
    }

    /// The visible tasks a try runs; `denied` naming the first id that is
    /// not one.
    fn tasks(&self, req: &TryRequest) -> std::result::Result<Vec<tasks::GradedTask>, Refusal> {
        let limit = req.limit as usize;
        if req.task_ids.is_empty() {
            return Ok(self.suite.visible.iter().take(limit).cloned().collect());
        }
        let mut out = Vec::new();
        for id in &req.task_ids {
            match self.suite.visible.iter().find(|t| &t.task.id == id) {
                Some(t) => out.push(t.clone()),
                None => {
                    return Err(Refusal::Denied(format!(
                        "`{}` is not a visible task of the suite `{}`; the workbench runs visible tasks only",
                        crate::guard::shown_path(id),
                        self.suite.name
                    )))
                }
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn build_and_run(&self, req: &TryRequest, chosen: &[tasks::GradedTask]) -> Result<wit::Trial> {
        let not_built =
            |error: String| wit::Trial { built: false, error: Some(error), outcomes: vec![], score: 0.0, fuel: 0 };
        let proposal = v0_2::Proposal { summary: "workbench try".into(), edits: req.edits.clone() };
        let checked = match guard::resolve_edits(&self.parent, &proposal, &self.rules)
            .and_then(|p| guard::check_proposal(&self.parent, &p, &self.rules))
        {
            Ok(c) => c,
            Err(violations) => return Ok(not_built(guard::refusal(&violations).to_string())),
        };
        self.session.home.ensure(&self.session.home.scratch_dir())?;
        let scratch = tempfile::Builder::new()
            .prefix("workbench-")
            .tempdir_in(self.session.home.scratch_dir())
            .map_err(|e| Error::io("cannot create the workbench's scratch directory", e))?;
        let out = scratch.path().join("candidate");
        guard::apply(&self.parent, &checked, &out)?;
        let policy = match &self.policy {
            Some(p) => Policy::load(p)?,
            None => Policy::default(),
        };
        let build_started = Instant::now();
        let child_req = ImproveRequest { parent: self.parent.clone(), out: out.clone(), ..ImproveRequest::default() };
        // The toolchain is stopped at the limit, not waited for: a try's
        // build must not take the meta-agent's whole wall clock.
        let limit = Duration::from_secs(req.grant.build_seconds).min(crate::variant::BUILD_TIMEOUT);
        let built =
            crate::improve::build_child(self.session, &child_req, &policy, &self.parent_grant, None, false, limit)
                .await;
        let build_s = build_started.elapsed().as_secs_f64();
        let past_limit = |detail: String| {
            not_built(format!(
                "the build was stopped after {build_s:.1} s, at the workbench's {} s (workbench.build_seconds); \
                 try a candidate that builds faster, or ask the operator for more build_seconds: {detail}",
                req.grant.build_seconds
            ))
        };
        let built = match built {
            Ok(b) => b,
            Err(Error::Refused { detail, .. }) | Err(Error::Invalid(detail)) if build_s >= limit.as_secs_f64() => {
                return Ok(past_limit(detail))
            }
            Err(Error::Refused { detail, .. }) => return Ok(not_built(detail)),
            Err(Error::Invalid(m)) => return Ok(not_built(m)),
            Err(e) => return Err(e),
        };
        // Loading the built component counts too.
        if build_s > req.grant.build_seconds as f64 {
            return Ok(past_limit("the candidate was built but took too long".into()));
        }
        let manifest = Manifest::load(out.join(MANIFEST))?;
        let opened = self.session.open_built(&built.component, &manifest, self.policy.as_deref()).await?;
        let prepared = self.session.prepare(&opened)?;
        let mut outcomes = Vec::new();
        let mut fuel: u64 = 0;
        for t in chosen {
            let left = req.grant.fuel.saturating_sub(fuel);
            if left == 0 {
                outcomes.push(wit::Outcome {
                    task_id: t.task.id.clone(),
                    passed: false,
                    score: 0.0,
                    feedback: format!("not run: the try's fuel ({}) is spent (workbench.fuel)", req.grant.fuel),
                });
                continue;
            }
            let limits = Limits { fuel: left, ..prepared.grant.limits.clone() };
            // The candidate is its parent's work in progress: its `llm` and
            // `trainer` use is charged to the parent's budgets.
            let opts = CallOptions {
                limits: Some(limits),
                lineage: None,
                budget_of: Some(self.parent_sha.clone()),
                ..self.call.sealed()
            };
            let (results, spent) =
                tasks::run_tasks(self.session, &prepared, &self.suite, std::slice::from_ref(t), false, &opts).await?;
            fuel = fuel.saturating_add(spent.fuel);
            for r in results {
                let line = tasks::feedback(&self.suite, std::slice::from_ref(&r));
                outcomes.push(wit::Outcome {
                    task_id: r.id.clone(),
                    passed: r.passed,
                    score: r.score,
                    feedback: line.trim_end().to_string(),
                });
            }
        }
        let score = if outcomes.is_empty() {
            0.0
        } else {
            outcomes.iter().map(|o| o.score).sum::<f64>() / outcomes.len() as f64
        };
        drop(scratch);
        Ok(wit::Trial { built: true, error: None, outcomes, score, fuel })
    }
}

/// The paths an edit set names (a diff's `+++`/`---` paths), for the audit
/// record.
fn edit_paths(edits: &[v0_2::Edit]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in edits {
        match e {
            v0_2::Edit::Write(f) => out.push(f.path.clone()),
            v0_2::Edit::Delete(p) => out.push(p.clone()),
            v0_2::Edit::SearchReplace(r) => out.push(r.path.clone()),
            v0_2::Edit::Patch(d) => {
                for line in d.lines() {
                    let name = line.strip_prefix("+++ b/").or_else(|| line.strip_prefix("--- a/"));
                    if let Some(n) = name {
                        let n = n.split('\t').next().unwrap_or(n).to_string();
                        if !out.contains(&n) {
                            out.push(n);
                        }
                    }
                }
            }
        }
    }
    out.truncate(256);
    out
}
