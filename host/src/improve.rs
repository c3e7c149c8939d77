//! `vivarium improve`: one guarded self-modification.
//!
//! 1. Build (or reuse) the parent and resolve its grant.
//! 2. Call its `meta-agent.improve` under that grant and its limits, with its
//!    own editable sources, its visible history and feedback.
//! 3. Check the proposal with the [guard](crate::guard); a refusal names
//!    every rule and path, is audited, and writes nothing.
//! 4. A request for more capabilities (`escalation.toml`) that exceeds the
//!    parent's grant becomes a pending request for a person
//!    (`vivarium approve`); the child is still written, with the parent's
//!    capabilities, and gets more only once approved.
//! 5. Write the child tree (all or nothing), build it with the same builder
//!    (sandboxed), and check the built component again: its imports against
//!    its grant, its grant within the parent's.
//! 6. Audit the proposal's digest, the verdict and the build.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::audit::EventKind;
use crate::bindings::{Evaluation, ImproveContext};
use crate::caps::{is_within, resolve, Manifest, Overrides, Policy};
use crate::error::{Error, Result};
use crate::guard::{self, EscalationStore, GuardRules, NewRequest};
use crate::runtime::{CallOptions, CallOutcome};
use crate::variant::{build_variant_within, Session, BUILD_TIMEOUT, MANIFEST};

/// What to improve and where the child goes.
#[derive(Debug, Clone, Default)]
pub struct ImproveRequest {
    /// The parent variant's directory.
    pub parent: PathBuf,
    /// Where the child tree is written (must not exist, or be empty).
    pub out: PathBuf,
    /// The operator's policy file; `None` = the built-in policy.
    pub policy: Option<PathBuf>,
    /// The parent's archive id, when it has one (`evolve`): the meta-agent's
    /// `self-id`, the id its entries in `history` carry. `None` (a variant
    /// outside the archive): its component's sha256.
    pub self_id: Option<String>,
    /// Visible results of the parent and its ancestors.
    pub history: Vec<Evaluation>,
    /// Failure notes the meta-agent may read.
    pub feedback: String,
    /// Improvement steps left in the run.
    pub iterations_left: u32,
    /// The parent's component when the caller has it (the archive does),
    /// so the parent is not rebuilt.
    pub parent_component: Option<Vec<u8>>,
    /// Options of the meta-agent's call (an evolution run passes its run id
    /// and what is left of its token budget).
    pub call: CallOptions,
    /// The suite a run evolves on, when there is one (`evolve`): the
    /// meta-agent's `workbench` tries run on its visible split
    /// ([`crate::workbench`]). `None`: a try answers `unavailable`.
    pub bench: Option<std::sync::Arc<crate::tasks::Suite>>,
    /// Set to the fuel the meta-agent's `workbench` tries spent as soon as
    /// its call ends, whatever comes of the proposal: a run counts it against
    /// `budget.fuel` for refused proposals too, or a meta-agent could try
    /// candidates without end by proposing nothing acceptable.
    pub workbench_spent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The result of a successful `improve`.
#[derive(Debug, Clone, Serialize)]
pub struct ImproveOutcome {
    /// The parent's component sha256.
    pub parent: String,
    /// The child's component sha256.
    pub child: String,
    /// The child's tree.
    pub child_dir: PathBuf,
    /// sha256 of the proposal.
    pub proposal_digest: String,
    /// The meta-agent's summary.
    pub summary: String,
    /// Files written and deleted.
    pub edits: usize,
    /// A pending escalation request, when the proposal asked for more than
    /// the parent's grant.
    pub escalation: Option<String>,
    /// Child build time.
    pub build_ms: u64,
    /// Wall time of the meta-agent's own call, in milliseconds (what the
    /// host's part of an improve step is measured without).
    pub meta_agent_ms: f64,
    /// LLM tokens (prompt + completion, pending included) the meta-agent's
    /// call spent on this proposal.
    pub llm_tokens: u64,
    /// Fuel the meta-agent's `workbench` tries spent running candidates
    /// (what a run counts against its `budget.fuel` besides evaluations).
    pub workbench_fuel: u64,
    /// The child's component bytes.
    #[serde(skip)]
    pub component: Vec<u8>,
    /// The child's grant digest.
    pub grant_digest: String,
}

/// Run one guarded self-modification.
pub async fn improve(session: &Session, req: &ImproveRequest) -> Result<ImproveOutcome> {
    let manifest_path = req.parent.join(MANIFEST);
    if !manifest_path.is_file() {
        return Err(Error::invalid(format!(
            "{} is not a variant directory (no {MANIFEST}); `vivarium init` makes one",
            req.parent.display()
        )));
    }
    let policy = match &req.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::default(),
    };
    let opened = match &req.parent_component {
        Some(bytes) => session.open_built(bytes, &Manifest::load(&manifest_path)?, req.policy.as_deref()).await?,
        None => session.open_target(&req.parent, req.policy.as_deref(), &Overrides::default()).await?,
    };
    let manifest = opened.manifest.clone().expect("a directory has a manifest");
    let parent_sha = opened.loaded.sha256.clone();
    let parent_grant = opened.resolution.grant.clone();
    let prepared = session.prepare(&opened)?;

    let rules = GuardRules::for_language(manifest.variant.language);
    let ctx = ImproveContext {
        self_id: req.self_id.clone().unwrap_or_else(|| parent_sha.clone()),
        sources: guard::editable_sources(&req.parent, &rules)?,
        history: req.history.clone(),
        feedback: req.feedback.clone(),
        iterations_left: req.iterations_left,
    };
    let meta_started = std::time::Instant::now();
    // The workbench, when granted and there is a suite to try on: its tries
    // are served beside the call.
    let report = match (&req.bench, &parent_grant.workbench) {
        (Some(suite), Some(_)) => {
            let (link, tries) = crate::services::workbench::BenchLink::new();
            let call = CallOptions { workbench: Some(link), ..req.call.clone() };
            let bench = crate::workbench::Bench {
                session,
                suite: suite.clone(),
                parent: req.parent.clone(),
                parent_sha: parent_sha.clone(),
                rules: rules.clone(),
                policy: req.policy.clone(),
                parent_grant: parent_grant.clone(),
                call: req.call.clone(),
            };
            bench.serve(session.improve(&prepared, &ctx, &call), tries).await?
        }
        _ => session.improve(&prepared, &ctx, &req.call).await?,
    };
    let meta_agent_ms = meta_started.elapsed().as_secs_f64() * 1000.0;
    let llm_tokens = report.services.llm.as_ref().map_or(0, |u| u.tokens());
    let workbench_fuel = report.services.workbench.as_ref().map_or(0, |u| u.fuel);
    req.workbench_spent.store(workbench_fuel, std::sync::atomic::Ordering::Relaxed);
    let audit = |verdict: &str, details: serde_json::Value| {
        let mut d = json!({ "verdict": verdict, "parent": parent_sha, "child_dir": req.out });
        if let (Some(d), Some(extra)) = (d.as_object_mut(), details.as_object()) {
            d.extend(extra.clone());
        }
        session.audit.append(Some(&parent_sha), EventKind::Proposal, d)
    };
    let proposal = match report.outcome {
        CallOutcome::Ok(p) => p,
        CallOutcome::GuestError(m) => {
            audit("declined", json!({ "message": m }))?;
            return Err(Error::Refused {
                what: vec!["meta-agent".into()],
                detail: format!("the meta-agent proposed nothing: {m}"),
            });
        }
        CallOutcome::Failed(f) => {
            audit("guest-failed", json!({ "reason": f.kind, "detail": f.detail }))?;
            return Err(Error::Guest(f));
        }
    };
    // What the meta-agent sent, by kind, before patch edits (0.2.0)
    // become the writes they amount to (the records below say whether a
    // child came through patches); then every rule checks those writes as
    // it checks any write.
    let edit_kinds = guard::edit_kinds(&proposal);
    let proposal = match guard::resolve_edits(&req.parent, &proposal, &rules) {
        Ok(p) => p,
        Err(violations) => {
            audit("refused", json!({ "violations": violations, "edit_kinds": edit_kinds }))?;
            return Err(guard::refusal(&violations));
        }
    };
    let digest = guard::proposal_digest(&proposal);
    let checked = match guard::check_proposal(&req.parent, &proposal, &rules) {
        Ok(c) => c,
        Err(violations) => {
            audit("refused", json!({ "proposal_digest": digest, "violations": violations }))?;
            return Err(guard::refusal(&violations));
        }
    };

    // An escalation exceeding the parent's grant waits for a person; one
    // that stays within it (a narrowing) is applied.
    let mut in_grant_escalation = None;
    let mut escalation = None;
    if let Some(esc) = checked.escalation() {
        let wanted = esc.child_manifest(&manifest);
        let resolution = resolve(&wanted, &policy, &Overrides::default());
        let denied: Vec<String> = resolution.denials.iter().map(ToString::to_string).collect();
        let wanted_grant = resolution.grant;
        match guard::check_escalation(&parent_grant, &wanted_grant) {
            Ok(()) => in_grant_escalation = Some(esc.clone()),
            Err(exceeding) => {
                let store = EscalationStore::open(session.home.approvals_dir())?;
                let request = store.create(&NewRequest {
                    parent_variant: parent_sha.clone(),
                    child_tree: std::path::absolute(&req.out).unwrap_or_else(|_| req.out.clone()),
                    proposal_digest: Some(digest.clone()),
                    escalation: esc.clone(),
                    parent_grant: parent_grant.clone(),
                    requested_grant: wanted_grant,
                    denied,
                })?;
                session.audit.append(
                    Some(&parent_sha),
                    EventKind::Escalation,
                    json!({ "request": request.id, "exceeding": exceeding, "reason": esc.reason, "status": "pending" }),
                )?;
                escalation = Some(request.id);
            }
        }
    }

    guard::apply(&req.parent, &checked, &req.out)?;
    let result = build_child(
        session,
        req,
        &policy,
        &parent_grant,
        in_grant_escalation.as_ref(),
        escalation.is_some(),
        BUILD_TIMEOUT,
    )
    .await;
    match result {
        Ok(ChildBuild { sha: child_sha, build_ms, component, grant_digest }) => {
            audit(
                "accepted",
                json!({
                    "proposal_digest": digest, "summary": checked.summary(), "child": child_sha,
                    "edits": checked.audit_details(), "escalation": escalation, "edit_kinds": edit_kinds,
                }),
            )?;
            Ok(ImproveOutcome {
                parent: parent_sha.clone(),
                child: child_sha,
                child_dir: req.out.clone(),
                proposal_digest: digest,
                summary: checked.summary().to_string(),
                edits: checked.writes().count() + checked.deletes().len(),
                escalation,
                build_ms,
                meta_agent_ms,
                llm_tokens,
                workbench_fuel,
                component,
                grant_digest,
            })
        }
        Err(e) => {
            // Leave nothing behind: the child never existed.
            let _ = std::fs::remove_dir_all(&req.out);
            audit("build-refused", json!({ "proposal_digest": digest, "error": e.to_string() }))?;
            Err(e)
        }
    }
}

/// Rebase path dependencies, apply an in-grant manifest change, build the
/// child within `build_timeout` and check the built component (also how
/// the workbench builds a candidate, within `workbench.build_seconds`).
pub(crate) async fn build_child(
    session: &Session,
    req: &ImproveRequest,
    policy: &Policy,
    parent_grant: &crate::caps::Grant,
    in_grant_escalation: Option<&guard::Escalation>,
    escalation_pending: bool,
    build_timeout: std::time::Duration,
) -> Result<ChildBuild> {
    rebase_path_dependencies(&req.parent, &req.out)?;
    if let Some(esc) = in_grant_escalation {
        // Applied to the child's own manifest, keeping its allowed edits.
        let m = esc.child_manifest(&Manifest::load(req.out.join(MANIFEST))?);
        crate::fsio::write_atomic(&req.out.join(MANIFEST), m.to_toml().as_bytes())
            .map_err(|e| Error::io("writing the child's manifest", e))?;
    }
    let manifest = Manifest::load(req.out.join(MANIFEST))?;
    // Read by the crash-safety test (host/tests/all/evolve_resume.rs).
    tracing::info!(target: "vivarium::evolve", "phase child-build");
    let built = {
        let (dir, m, target) = (req.out.clone(), manifest.clone(), session.guest_target_dir.clone());
        tokio::task::spawn_blocking(move || build_variant_within(&dir, &m, &target, build_timeout))
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("build thread failed: {e}")))?
    }
    .map_err(|e| match e {
        Error::Invalid(m) => {
            Error::Refused { what: vec!["build".into()], detail: format!("the child does not build: {m}") }
        }
        other => other,
    })?;
    session.audit.append(
        None,
        EventKind::Build,
        json!({ "dir": req.out, "ms": built.duration.as_millis() as u64, "bytes": built.component.len() }),
    )?;
    let max = policy.build.max_component;
    if built.component.len() as u64 > max.0 {
        return Err(Error::Refused {
            what: vec!["build.max_component".into()],
            detail: format!(
                "the child's component is {} bytes; the policy allows at most {max} (build.max_component): \
                 propose a smaller child, or raise build.max_component in the policy",
                built.component.len()
            ),
        });
    }
    let loaded = session.runtime.load(&built.component).await?;
    let child_grant = resolve(&manifest, policy, &Overrides::default()).grant;
    if !escalation_pending {
        if let Err(exceeding) = is_within(&child_grant, parent_grant) {
            return Err(Error::Refused {
                what: exceeding.clone(),
                detail: format!("the child would exceed its parent's grant: {}", exceeding.join("; ")),
            });
        }
    }
    // The built component is checked again: its imports against its grant.
    let grant_digest = child_grant.digest();
    let prepared = session.runtime.prepare(&loaded, child_grant)?;
    // An interpreted child is not compiled, so nothing has read its code
    // yet: load it once, and refuse it like a compiler error when it does
    // not load (the message reaches the next `improve` as feedback).
    if prepared.interpreted().is_some() {
        let scratch = session.scratch_for(&prepared)?;
        let opts = CallOptions { scratch: scratch.clone(), ..CallOptions::default() };
        let checked = crate::interp::check_load(&session.runtime, &prepared, &opts).await;
        if let Some(dir) = scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
        match checked? {
            crate::interp::Checked::Loaded => {}
            crate::interp::Checked::LoadError(e) => {
                return Err(Error::Refused {
                    what: vec!["build".into()],
                    detail: format!("the child does not build: {e}"),
                })
            }
            crate::interp::Checked::Failed(f) => {
                return Err(Error::Refused {
                    what: vec!["build".into()],
                    detail: format!("the child does not build: loading it failed: {f}"),
                })
            }
        }
    }
    Ok(ChildBuild {
        sha: loaded.sha256,
        build_ms: built.duration.as_millis() as u64,
        component: built.component,
        grant_digest,
    })
}

pub(crate) struct ChildBuild {
    pub(crate) sha: String,
    pub(crate) build_ms: u64,
    pub(crate) component: Vec<u8>,
    pub(crate) grant_digest: String,
}

/// Rewrite relative `path = "…"` dependencies of a Rust child's Cargo.toml
/// to absolute paths, so a child written elsewhere still finds the SDK.
pub fn rebase_path_dependencies(parent: &Path, child: &Path) -> Result<()> {
    let cargo = child.join("Cargo.toml");
    let Ok(text) = std::fs::read_to_string(&cargo) else { return Ok(()) };
    let mut doc: toml::Table = text.parse().map_err(|e| Error::invalid(format!("{}: {e}", cargo.display())))?;
    let mut changed = false;
    for section in ["dependencies", "build-dependencies", "dev-dependencies"] {
        let Some(deps) = doc.get_mut(section).and_then(|d| d.as_table_mut()) else { continue };
        for (_, dep) in deps.iter_mut() {
            let Some(path) = dep.as_table_mut().and_then(|t| t.get_mut("path")) else { continue };
            let Some(p) = path.as_str() else { continue };
            if Path::new(p).is_absolute() {
                continue;
            }
            let abs = parent.join(p);
            let abs =
                abs.canonicalize().map_err(|e| Error::io(format!("resolving dependency path {}", abs.display()), e))?;
            *path = toml::Value::String(abs.display().to_string());
            changed = true;
        }
    }
    if changed {
        crate::fsio::write_atomic(&cargo, toml::to_string(&doc).unwrap_or(text).as_bytes())
            .map_err(|e| Error::io(format!("writing {}", cargo.display()), e))?;
    }
    Ok(())
}

/// Approve escalation request `id`: the child's `variant.toml` gets the
/// `[capabilities]` and `[limits]` of the grant the approver was shown
/// ([`guard::Request::requested_grant`]), then the request is marked
/// approved. The caller audits the returned request.
pub fn approve(store: &EscalationStore, id: &str, who: &str) -> Result<guard::Request> {
    let pending = store.get(id)?;
    if pending.status != guard::Status::Pending {
        return Err(Error::invalid(format!("request {id} is already {}", pending.status.as_str())));
    }
    let child = PathBuf::from(&pending.child_tree);
    let manifest_path = child.join(MANIFEST);
    let mut manifest = Manifest::load(&manifest_path).map_err(|e| {
        Error::invalid(format!("the child of request {id} is gone or broken ({e}); deny the request instead"))
    })?;
    // Exactly what the approver was shown: the grant the request resolved
    // to under the policy in force then, written as a request, so no later
    // policy, however broad, gives the child more (the raw request may ask
    // for parts that policy denied, and those were shown as denied).
    let (capabilities, limits) = pending.requested_grant.as_request();
    manifest.capabilities = capabilities;
    manifest.limits = limits;
    crate::fsio::write_atomic(&manifest_path, manifest.to_toml().as_bytes())
        .map_err(|e| Error::io(format!("writing {}", manifest_path.display()), e))?;
    store.approve(id, who)
}
