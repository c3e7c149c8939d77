//! The JSON API under `/api/` and the embedded page. docs/serve.md
//! documents every route; this module's functions build the JSON, and the
//! handlers only run them on the blocking pool and map errors to statuses.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, Semaphore};

use super::auth::{self, Token};
use super::events::{self, Event};
use crate::archive::{Archive, RunRow, RunStatus, VariantRow, INDEX_FILE};
use crate::audit::{AuditLog, EventKind, Filter};
use crate::error::{Error, Result};
use crate::evolve::{lock, STOP_FILE};
use crate::guard::{EscalationStore, Request as EscalationRequest, Status};
use crate::home::Home;

/// The page, its script and style, embedded in the binary.
pub(crate) const INDEX_HTML: &str = include_str!("assets/index.html");
pub(crate) const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const LOGIN_JS: &str = include_str!("assets/login.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The longest page of audit records.
pub const MAX_AUDIT_PAGE: usize = 500;
/// Audit records shown with a variant (its latest).
const VARIANT_AUDIT_RECORDS: usize = 200;
/// Files larger than this are not diffed line by line.
const MAX_DIFF_FILE: usize = 256 << 10;

/// What every handler shares.
pub struct AppState {
    pub(crate) home: Home,
    pub(crate) token: Token,
    pub(crate) addr: SocketAddr,
    pub(crate) allow_remote: bool,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) streams: Arc<Semaphore>,
    reads: Semaphore,
    archive: Mutex<Option<Arc<Archive>>>,
}

impl AppState {
    pub(crate) fn new(
        home: Home,
        token: Token,
        addr: SocketAddr,
        allow_remote: bool,
        limits: &super::Limits,
    ) -> Arc<AppState> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(AppState {
            home,
            token,
            addr,
            allow_remote,
            events,
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            reads: Semaphore::new(limits.max_reads.max(1)),
            archive: Mutex::new(None),
        })
    }

    /// The archive, opened once it exists (`None` before the first run).
    pub(crate) fn archive(&self) -> Result<Option<Arc<Archive>>> {
        let mut slot = self.archive.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() && self.home.archive_dir().join(INDEX_FILE).is_file() {
            *slot = Some(Arc::new(Archive::open(&self.home.archive_dir())?));
        }
        Ok(slot.clone())
    }

    fn run_dir(&self, run: &str) -> PathBuf {
        self.home.root().join("runs").join(run)
    }

    fn audit(&self) -> Result<AuditLog> {
        AuditLog::open(&self.home.audit_dir())
    }

    fn approvals(&self) -> Result<EscalationStore> {
        EscalationStore::open(self.home.approvals_dir())
    }
}

/// Every route, behind [`auth::guard`].
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/login.js", get(|| async { asset("text/javascript; charset=utf-8", LOGIN_JS) }))
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/api/session", post(auth::login))
        .route("/api/logout", post(auth::logout))
        .route("/api/runs", get(runs))
        .route("/api/runs/{run}", get(run))
        .route("/api/runs/{run}/lineage", get(lineage))
        .route("/api/runs/{run}/stop", post(stop))
        .route("/api/stop-all", post(stop_all))
        .route("/api/variants/{id}", get(variant))
        .route("/api/approvals", get(approvals))
        .route("/api/approvals/{id}/approve", post(approve))
        .route("/api/approvals/{id}/deny", post(deny))
        .route("/api/audit", get(audit))
        .route("/api/events", get(events::stream))
        .fallback(|| async { auth::refuse(StatusCode::NOT_FOUND, "no such page or API route; see docs/serve.md") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard))
        .with_state(state)
}

async fn index() -> Response {
    (auth::page_headers(), INDEX_HTML).into_response()
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// An error as a JSON response: invalid input 400 (an unknown id 404),
/// refusals 403 (a state conflict 409), the rest 500.
fn error_response(e: &Error) -> Response {
    let msg = e.to_string();
    let status = match e {
        Error::Invalid(m) if m.contains("no run") || m.contains("no request") || m.contains("no variant") => {
            StatusCode::NOT_FOUND
        }
        Error::Invalid(m) if m.contains("already") || m.contains("not running") => StatusCode::CONFLICT,
        Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::Refused { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    auth::refuse(status, &msg)
}

/// Run `f` on the blocking pool, a few at a time, and answer its JSON.
async fn blocking<F>(state: Arc<AppState>, f: F) -> Response
where
    F: FnOnce(&AppState) -> Result<Value> + Send + 'static,
{
    let Ok(_permit) = state.reads.acquire().await else {
        return auth::refuse(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let s = state.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&Error::Internal(anyhow::anyhow!("a request handler failed: {e}"))),
    }
}

async fn runs(State(s): State<Arc<AppState>>) -> Response {
    blocking(s, |s| Ok(json!(runs_json(s)?))).await
}

async fn run(State(s): State<Arc<AppState>>, UrlPath(run): UrlPath<String>) -> Response {
    blocking(s, move |s| runs_json(s)?.into_iter().find(|r| r["id"] == run.as_str()).ok_or_else(|| no_run(&run))).await
}

async fn lineage(State(s): State<Arc<AppState>>, UrlPath(run): UrlPath<String>) -> Response {
    blocking(s, move |s| lineage_json(s, &run)).await
}

async fn variant(State(s): State<Arc<AppState>>, UrlPath(id): UrlPath<String>) -> Response {
    blocking(s, move |s| variant_json(s, &id)).await
}

async fn approvals(State(s): State<Arc<AppState>>) -> Response {
    blocking(s, |s| {
        let all = s.approvals()?.list()?;
        let (pending, decided): (Vec<_>, Vec<_>) = all.iter().partition(|r| r.status == Status::Pending);
        Ok(json!({
            "pending": pending.iter().map(|r| request_json(r)).collect::<Vec<_>>(),
            "decided": decided.iter().rev().take(50).map(|r| request_json(r)).collect::<Vec<_>>(),
        }))
    })
    .await
}

async fn approve(State(s): State<Arc<AppState>>, UrlPath(id): UrlPath<String>) -> Response {
    blocking(s, move |s| decide(s, &id, true)).await
}

async fn deny(State(s): State<Arc<AppState>>, UrlPath(id): UrlPath<String>) -> Response {
    blocking(s, move |s| decide(s, &id, false)).await
}

async fn stop(State(s): State<Arc<AppState>>, UrlPath(run): UrlPath<String>) -> Response {
    blocking(s, move |s| {
        stop_run(s, &run)?;
        Ok(json!({ "stopping": [run], "by": s.token.actor() }))
    })
    .await
}

async fn stop_all(State(s): State<Arc<AppState>>) -> Response {
    blocking(s, |s| {
        let mut stopping = Vec::new();
        for (run, dir) in run_dirs(s) {
            if lock::holder(&dir).is_some() && stop_run(s, &run).is_ok() {
                stopping.push(run);
            }
        }
        Ok(json!({ "stopping": stopping, "by": s.token.actor() }))
    })
    .await
}

/// Query of `GET /api/audit`.
#[derive(Debug, Deserialize)]
struct AuditQuery {
    /// Records with `seq` below this (newest first); default: from the end.
    before: Option<u64>,
    /// Records per page (default 100, at most [`MAX_AUDIT_PAGE`]).
    limit: Option<usize>,
    /// Only records of variants whose sha256 starts with this.
    variant: Option<String>,
    /// Only records of this kind.
    event: Option<String>,
}

async fn audit(State(s): State<Arc<AppState>>, Query(q): Query<AuditQuery>) -> Response {
    blocking(s, move |s| {
        let limit = q.limit.unwrap_or(100).clamp(1, MAX_AUDIT_PAGE);
        let mut filter = Filter::new();
        if let Some(v) = q.variant.filter(|v| !v.is_empty()) {
            filter = filter.variant(v);
        }
        if let Some(e) = q.event.filter(|e| !e.is_empty()) {
            filter = filter.event(EventKind::from_name(&e));
        }
        let before = q.before.unwrap_or(u64::MAX);
        let records = s.audit()?.query(&filter)?;
        let page: Vec<_> = records.iter().rev().filter(|r| r.seq < before).take(limit).collect();
        let next = if page.len() == limit { page.last().map(|r| r.seq) } else { None };
        Ok(json!({ "records": page, "next_before": next, "total": records.len() }))
    })
    .await
}

/// The directories under `runs/`, by name.
fn run_dirs(s: &AppState) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(s.home.root().join("runs")) else { return Vec::new() };
    let mut out: Vec<_> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .collect();
    out.sort();
    out
}

fn no_run(run: &str) -> Error {
    Error::invalid(format!("no run `{run}` in the archive"))
}

/// Ask `run` to stop and audit who asked.
fn stop_run(s: &AppState, run: &str) -> Result<()> {
    let known = s.archive()?.map(|a| a.get_run(run)).transpose()?.flatten().is_some();
    if !known {
        return Err(no_run(run));
    }
    let who = s.token.actor();
    crate::evolve::request_stop(&s.run_dir(run), run, &who)?;
    s.audit()?.append(None, EventKind::Other("stop-request".into()), json!({ "run": run, "by": who }))?;
    Ok(())
}

/// Approve (or deny) escalation request `id` through the library function
/// `vivarium approve` uses, and audit it with who did it.
fn decide(s: &AppState, id: &str, approve: bool) -> Result<Value> {
    let store = s.approvals()?;
    let who = s.token.actor();
    let req = if approve { crate::improve::approve(&store, id, &who)? } else { store.deny(id, &who)? };
    s.audit()?.append(
        Some(&req.parent_variant),
        EventKind::Approval,
        json!({
            "request": req.id, "status": req.status.as_str(), "by": who, "via": "vivarium serve",
            "child_tree": req.child_tree, "exceeding": req.exceeding,
        }),
    )?;
    Ok(request_json(&req))
}

/// A request as the page shows it: what approving grants (exactly), what
/// exceeds the parent, what the policy denied (never granted).
fn request_json(r: &EscalationRequest) -> Value {
    json!({
        "id": r.id,
        "status": r.status.as_str(),
        "parent_variant": r.parent_variant,
        "child_tree": r.child_tree,
        "reason": r.reason,
        "exceeding": r.exceeding,
        "grants_if_approved": r.requested_grant.summary_lines(),
        "parent_grant": r.parent_grant.summary_lines(),
        "denied": r.denied,
        "created_at": r.created_at,
        "decided_at": r.decided_at,
        "decided_by": r.decided_by,
    })
}

/// Whether the process named in a run's lock file is alive: a cheap check
/// (no lock is taken, so a run starting at this moment is never refused
/// its lock because the server was looking).
pub(crate) fn writer_alive(run_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(run_dir.join(lock::LOCK_FILE)).ok()?.trim().parse().ok()?;
    #[cfg(unix)]
    {
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        alive.then_some(pid)
    }
    #[cfg(not(unix))]
    {
        lock::holder(run_dir).map(|_| pid)
    }
}

/// A run's state: its stored status, except that a `running` run whose
/// writer is gone was killed (`interrupted`).
fn state_of(s: &AppState, run: &RunRow) -> (String, Option<u32>) {
    let pid = writer_alive(&s.run_dir(&run.id));
    match (run.status, pid) {
        (RunStatus::Running, Some(p)) => ("running".into(), Some(p)),
        (RunStatus::Running, None) => ("interrupted".into(), None),
        (st, _) => (st.to_string(), None),
    }
}

/// Every run, newest first, with its state, best scores, progress and
/// budgets.
pub(crate) fn runs_json(s: &AppState) -> Result<Vec<Value>> {
    let Some(archive) = s.archive()? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut runs = archive.list_runs()?;
    runs.sort_by(|a, b| b.started.cmp(&a.started).then_with(|| a.id.cmp(&b.id)));
    for run in runs {
        let rows = archive.list(Some(&run.id))?;
        out.push(run_json(s, &run, &rows, &archive.step_outcomes(&run.id)?));
    }
    Ok(out)
}

pub(crate) fn run_json(s: &AppState, run: &RunRow, rows: &[VariantRow], steps: &BTreeMap<String, u64>) -> Value {
    let (state, pid) = state_of(s, run);
    let best = rows
        .iter()
        .filter(|r| r.visible_score.is_some())
        .max_by(|a, b| a.visible_score.partial_cmp(&b.visible_score).unwrap_or(std::cmp::Ordering::Equal));
    // Progress counts the loop's finished steps (a refused or failed child
    // is a step done), not the variants that happened to be archived.
    let generations = run.config["run"]["generations"].as_u64();
    let initial = run.config["run"]["initial"].as_array().map_or(0, |a| a.len() as u64);
    let per_generation = run.config["run"]["children_per_generation"].as_u64().unwrap_or(1).max(1);
    let steps_done: u64 = steps.values().sum();
    let count = |outcome: &str| steps.get(outcome).copied().unwrap_or(0);
    let done = steps_done.saturating_sub(initial) / per_generation;
    let dir = s.run_dir(&run.id);
    json!({
        "id": run.id,
        "state": state,
        "pid": pid,
        "started": run.started,
        "finished": run.finished,
        "suite": run.config["run"]["suite"],
        "variants": rows.len(),
        "evaluated": rows.iter().filter(|r| r.status == crate::archive::VariantStatus::Evaluated).count(),
        "generation": { "done": done, "total": generations },
        "steps": {
            "done": steps_done,
            "total": generations.map(|g| initial + g * per_generation),
            "accepted": count("accepted"),
            "refused": count("refused"),
            "guest_failed": count("guest-failed"),
            "no_parent": count("no-parent"),
        },
        "best": best.map(|b| json!({
            "id": b.id, "visible": b.visible_score, "held_out": b.held_out_score,
        })),
        "budgets": budgets(&run.config["budget"], &dir),
        "stop_requested": state == "running" && dir.join(STOP_FILE).is_file(),
    })
}

/// Each budget the run file sets, with what the run recorded as spent in
/// `spent.json` (`null` when it records none). Wall time and fuel count
/// this invocation, as their budgets do.
fn budgets(config: &Value, run_dir: &Path) -> Vec<Value> {
    let spent: Value = std::fs::read(run_dir.join("spent.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut out = Vec::new();
    let Some(map) = config.as_object() else { return out };
    for (key, limit) in map {
        if limit.is_null() {
            continue;
        }
        let (limit, spent_key, unit) = match key.as_str() {
            "wall" => {
                let secs = limit.as_str().and_then(|t| t.parse::<crate::units::HumanDuration>().ok());
                (secs.map(|d| json!(d.0.as_secs_f64())).unwrap_or(Value::Null), "wall_seconds", "seconds")
            }
            "fuel" => (limit.clone(), "fuel", "fuel"),
            "tokens" => (limit.clone(), "tokens", "tokens"),
            "usd" => (limit.clone(), "usd", "USD"),
            "gpu_seconds" => (limit.clone(), "gpu_seconds", "trainer seconds"),
            "sim_steps" => (limit.clone(), "sim_steps", "simulator steps"),
            other => (limit.clone(), other, ""),
        };
        out.push(json!({ "name": key, "limit": limit, "spent": spent[spent_key], "unit": unit }));
    }
    out
}

/// A run's variants with parent, generation, status and both scores.
fn lineage_json(s: &AppState, run: &str) -> Result<Value> {
    let archive = s.archive()?.ok_or_else(|| no_run(run))?;
    let row = archive.get_run(run)?.ok_or_else(|| no_run(run))?;
    let rows = archive.list(Some(run))?;
    let (state, _) = state_of(s, &row);
    Ok(json!({
        "run": run,
        "state": state,
        "variants": rows.iter().map(|v| json!({
            "id": v.id,
            "parent": v.parent,
            "generation": v.generation,
            "status": v.status.as_str(),
            "visible": v.visible_score,
            "held_out": v.held_out_score,
            "summary": clip(&v.summary, 300),
            "component_sha": v.component_sha,
            "children": v.children,
            "created": v.created,
        })).collect::<Vec<_>>(),
    }))
}

/// One variant: its row, task results, latest grant (with provenance and
/// denials), its tree's diff against its parent's, and its latest audit
/// records.
fn variant_json(s: &AppState, given: &str) -> Result<Value> {
    let archive = s.archive()?.ok_or_else(|| Error::invalid(format!("no variant `{given}`: there is no archive")))?;
    let id = archive.resolve(given).map_err(|e| Error::invalid(format!("no variant `{given}`: {e}")))?;
    let row = archive.get(&id)?.ok_or_else(|| Error::invalid(format!("no variant `{given}`")))?;
    let results = archive.results(&id)?;
    let log = s.audit()?;
    let (grant, records) = match &row.component_sha {
        Some(sha) => {
            let grant = crate::audit::grants_of(&log, sha).ok().and_then(|g| g.into_iter().last()).map(|g| {
                json!({
                    "seq": g.seq, "time": g.time, "digest": g.digest, "command": g.command,
                    "summary": g.grant.summary_lines(),
                    "provenance": g.provenance.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "denials": g.denials.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "grant": g.grant,
                })
            });
            let all = log.query(&Filter::new().variant(sha.as_str()))?;
            let records: Vec<_> =
                all.iter().rev().filter(|r| r.variant.as_deref() == Some(sha)).take(VARIANT_AUDIT_RECORDS).collect();
            (json!(grant), json!(records))
        }
        None => (Value::Null, json!([])),
    };
    let parent = match &row.parent {
        Some(p) => archive.get(p)?,
        None => None,
    };
    Ok(json!({
        "variant": row,
        "results": results,
        "grant": grant,
        "diff": diff_json(&archive, parent.as_ref().map(|p| p.tree_sha.as_str()), &row.tree_sha)?,
        "audit": records,
    }))
}

/// The files of tree `child` against tree `parent` (none: every file
/// added): each changed file with a unified diff, or `binary`/`too large`.
fn diff_json(archive: &Archive, parent: Option<&str>, child: &str) -> Result<Value> {
    let files = |sha: Option<&str>| -> Result<HashMap<String, Vec<u8>>> {
        Ok(match sha {
            Some(sha) => archive.tree_contents(sha)?.into_iter().map(|(e, b)| (e.path, b)).collect(),
            None => HashMap::new(),
        })
    };
    let (old, new) = (files(parent)?, files(Some(child))?);
    let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut out = Vec::new();
    for path in paths {
        let (a, b) = (old.get(path), new.get(path));
        if a == b {
            continue;
        }
        let change = match (a, b) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "modified",
        };
        let (a, b) = (a.map(Vec::as_slice).unwrap_or_default(), b.map(Vec::as_slice).unwrap_or_default());
        let text = match (std::str::from_utf8(a), std::str::from_utf8(b)) {
            _ if a.len() > MAX_DIFF_FILE || b.len() > MAX_DIFF_FILE => None,
            (Ok(x), Ok(y)) => Some(
                similar::TextDiff::from_lines(x, y)
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("a/{path}"), &format!("b/{path}"))
                    .to_string(),
            ),
            _ => None,
        };
        out.push(json!({ "path": path, "change": change, "diff": text, "bytes": [a.len(), b.len()] }));
    }
    Ok(json!(out))
}

/// `s` cut to `max` characters, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
