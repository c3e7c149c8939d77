//! Evaluations on a Ray cluster: `[cluster] engine = "ray"` in `run.toml`.
//!
//! `evolve` stays the only writer of the run: it selects, improves, builds,
//! archives and audits on the coordinator, as on one machine. Only the
//! grading of a child — the part that outgrows one machine — is sent out:
//! each split of a staged evaluation is cut into up to `slots` batches, and
//! each batch becomes one Ray task ([`driver.py`](self), started with the
//! Python of the Ray install, is the coordinator's one Ray driver; Ray
//! schedules, retries and places the tasks — there is no scheduler here).
//! A Ray task hands its batch to a `vivarium __cluster-worker` process
//! ([`worker`]) that grades it with the same runtime, limits and typed
//! failures as a local evaluation and answers the results, what they spent
//! and the audit events of its calls.
//!
//! # Where things happen, and what a worker sees
//!
//! * The coordinator alone writes the archive and the one hash-chained
//!   audit log. A remote batch's audit events are appended there, each
//!   naming the Ray node that ran it and the component's sha256
//!   (`details.cluster`).
//! * Budgets are charged centrally: a request carries its share of what is
//!   left of the run's token and simulator-step budgets (batches graded at
//!   once split it, so together they cannot overspend it); the coordinator
//!   adds what each
//!   reply spent, and checks every budget between steps as a local run
//!   does. A reply is counted once: the coordinator keeps the first answer
//!   to each request id, and a batch Ray retried answers once.
//! * A worker receives the component, the grant the coordinator computed
//!   and audited, the suite's name and the ids of the tasks of its batch —
//!   no run file, no policy, no archive, no other run's tasks. Graders run
//!   on the worker: they are host code compiled into the `vivarium` binary
//!   (as are the expected answers, held-out ones included), so a node is
//!   operator infrastructure, trusted like the coordinator; the variant is
//!   the hostile party and is contained there exactly as here. Held-out
//!   calls are sealed on the worker as they are locally.
//! * No operator key reaches a worker: the driver starts each worker
//!   process with an environment of `PATH` and a fresh `VIVARIUM_HOME`
//!   only, so it has no `llm.toml`, no key variable, no memory store and no
//!   archive. A child whose grant names a service that needs the
//!   coordinator's state or secrets (`llm`, `memory`, `archive`, `trainer`)
//!   is therefore graded on the coordinator, as is an interpreted variant
//!   ([`stays_local`]); the audit log says so (`cluster-local`).
//!
//! # Faults
//!
//! A worker process that dies mid-batch makes the Ray task raise
//! `WorkerLost`, which Ray retries (`max_retries`, default 3), on whatever
//! node it picks; a node that dies is a Ray system failure, retried the same
//! way. Each reply is written to the run's `cluster/` journal (atomically)
//! as soon as it arrives, so a coordinator killed mid-run and resumed with
//! `--resume` finds the batches the cluster already finished and does not
//! send them again. An unreachable cluster is an error naming the address,
//! raised before the run is created.

pub mod local;
pub mod protocol;
pub mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{oneshot, Semaphore};

use crate::audit::AuditLog;
use crate::error::{Error, Result};
use crate::runtime::{CallOptions, Prepared};
use crate::tasks::{GradedTask, Spent, Suite, TaskResult};
use protocol::{EvalReply, EvalRequest, Graded, NodeInfo, RemoteCall};

/// The variable that overrides `[cluster] address`.
pub const ADDRESS_ENV: &str = "VIVARIUM_RAY_ADDRESS";

/// The variable naming the Python of the Ray install (default: the
/// repository's `tools/ray/venv`, which `scripts/setup.sh` makes).
pub const PYTHON_ENV: &str = "VIVARIUM_RAY_PYTHON";

/// The Ray driver, written next to the run when a cluster run starts.
const DRIVER: &str = include_str!("driver.py");

/// How long connecting to the cluster may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(90);

/// Where a run's evaluations run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// In this process (the default).
    #[default]
    Local,
    /// On a Ray cluster.
    Ray,
}

/// The `[cluster]` table of `run.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where evaluations run.
    #[serde(default)]
    pub engine: Engine,
    /// The cluster's address as `ray.init` takes it: `HOST:PORT` of the
    /// head's GCS (the last line of `scripts/ray-cluster.sh up`) when the
    /// coordinator is a node of the cluster, `ray://HOST:10001` otherwise.
    /// [`ADDRESS_ENV`] overrides it.
    #[serde(default)]
    pub address: Option<String>,
    /// Batches in flight at once (default: the cluster's CPUs).
    #[serde(default)]
    pub slots: Option<u32>,
    /// How often Ray retries a batch whose worker died (default 3).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// The Python of the Ray install on the coordinator ([`PYTHON_ENV`]
    /// overrides the default, not this key).
    #[serde(default)]
    pub python: Option<PathBuf>,
    /// The `vivarium` binary on every node (default: this binary's path, the
    /// same on every node: a shared path or one installed alike).
    #[serde(default)]
    pub worker_command: Option<PathBuf>,
}

impl ClusterConfig {
    /// The address to use: [`ADDRESS_ENV`], else `address`.
    ///
    /// Errors: [`Error::Invalid`] when neither is set.
    pub fn resolved_address(&self) -> Result<String> {
        match std::env::var(ADDRESS_ENV).ok().filter(|s| !s.trim().is_empty()).or_else(|| self.address.clone()) {
            Some(a) => Ok(a.trim().to_string()),
            None => Err(Error::invalid(format!(
                "cluster.engine is \"ray\" but no address is set: give [cluster] address (the last line of \
                 `scripts/ray-cluster.sh up`) or set {ADDRESS_ENV}"
            ))),
        }
    }

    fn python(&self) -> PathBuf {
        if let Some(p) = std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        if let Some(p) = &self.python {
            return p.clone();
        }
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/ray/venv/bin/python");
        if venv.is_file() {
            venv
        } else {
            PathBuf::from("python3")
        }
    }
}

/// Why the prepared variant `p` must be graded on the coordinator, or
/// `None` when a worker can grade it: not when its grant names a service
/// that lives with the coordinator's state or secrets, nor when it is an
/// interpreted variant (the shared interpreter it runs on is built on the
/// coordinator, not shipped to workers).
pub fn stays_local(p: &Prepared) -> Option<&'static str> {
    let g = &p.grant;
    if g.llm.is_some() || g.memory.is_some() || g.archive.is_some() || g.trainer.is_some() {
        Some("its grant names a service that stays on the coordinator (llm, memory, archive or trainer)")
    } else if p.source.is_some() {
        Some("it is an interpreted variant, whose interpreter is on the coordinator")
    } else {
        None
    }
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<std::result::Result<EvalReply, String>>>>>;

/// A connection to a Ray cluster through the driver process.
pub struct RayCluster {
    address: String,
    stdin: tokio::sync::Mutex<tokio::process::ChildStdin>,
    waiters: Waiters,
    next: AtomicU64,
    slots: Arc<Semaphore>,
    slot_count: usize,
    /// Alive nodes when connected.
    pub nodes: u64,
    /// CPUs of the cluster when connected.
    pub cpus: f64,
    // Killed when the cluster handle is dropped (its stdin closing ends it
    // too); Ray then cancels what was in flight.
    _child: tokio::process::Child,
}

impl RayCluster {
    /// Start the driver and connect to the cluster `config` names; `scratch`
    /// holds the driver's script and log.
    ///
    /// Errors: [`Error::Invalid`] naming the address when the cluster cannot
    /// be reached, or naming the Python when Ray is not installed there.
    pub async fn connect(config: &ClusterConfig, scratch: &Path) -> Result<Self> {
        let address = config.resolved_address()?;
        let unreachable = |why: String| {
            Error::invalid(format!(
                "cannot reach the Ray cluster at {address}: {why}; start one (`scripts/ray-cluster.sh up`) or fix \
                 [cluster] address / {ADDRESS_ENV}"
            ))
        };
        // A plain HOST:PORT is checked with one TCP connection first: a
        // typo fails in milliseconds rather than after Ray's own retries.
        if let Some(hostport) = address.strip_prefix("ray://").or(Some(&address)).filter(|a| a.contains(':')) {
            let probe = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(hostport)).await;
            match probe {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Err(_) => return Err(unreachable("no answer within 5 s".into())),
            }
        }
        std::fs::create_dir_all(scratch).map_err(|e| Error::io(format!("creating {}", scratch.display()), e))?;
        let script = scratch.join("driver.py");
        crate::fsio::write_atomic(&script, DRIVER.as_bytes())
            .map_err(|e| Error::io(format!("writing {}", script.display()), e))?;
        let log_path = scratch.join("driver.log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
        let worker = match &config.worker_command {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|e| Error::io("finding this vivarium binary", e))?,
        };
        if worker.file_stem().is_none_or(|s| s != "vivarium") {
            return Err(Error::invalid(format!(
                "{} is not a vivarium binary; set [cluster] worker_command to the vivarium binary's path on the nodes",
                worker.display()
            )));
        }
        let driver_config = json!({
            "address": address,
            "worker_command": worker,
            "max_retries": config.max_retries.unwrap_or(3),
        });
        let python = config.python();
        let mut child = tokio::process::Command::new(&python)
            .arg(&script)
            .arg(driver_config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::invalid(format!(
                    "cannot start the Ray driver with {}: {e}; run scripts/setup.sh (it installs Ray in \
                     tools/ray/venv) or set {PYTHON_ENV}",
                    python.display()
                ))
            })?;
        let stdin = child.stdin.take().expect("piped");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = tokio::time::timeout(CONNECT_TIMEOUT, lines.next_line()).await;
        let ready = match first {
            Ok(Ok(Some(line))) => serde_json::from_str::<serde_json::Value>(&line).unwrap_or_default(),
            Ok(_) => {
                let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(unreachable(format!("the Ray driver exited: {}", crate::trainer::tail(&tail, 600))));
            }
            Err(_) => return Err(unreachable(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()))),
        };
        if let Some(f) = ready["fatal"].as_str() {
            return Err(unreachable(f.to_string()));
        }
        let nodes = ready["ready"]["nodes"].as_u64().unwrap_or(0);
        let cpus = ready["ready"]["cpus"].as_f64().unwrap_or(0.0);
        let slot_count = config.slots.map(|s| s as usize).unwrap_or(cpus as usize).max(1);
        let waiters: Waiters = Arc::default();
        let w = waiters.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                let Some(id) = v["id"].as_u64() else { continue };
                let answer = match (v.get("ok"), v["error"].as_str()) {
                    (Some(ok), _) => serde_json::from_value::<EvalReply>(ok.clone())
                        .map_err(|e| format!("a malformed reply from the cluster: {e}")),
                    (None, Some(e)) => Err(e.to_string()),
                    (None, None) => Err("an empty reply from the cluster".into()),
                };
                // The first answer to a request is the one counted.
                if let Some(tx) = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id) {
                    let _ = tx.send(answer);
                }
            }
            // The driver is gone: whoever still waits learns it.
            for (_, tx) in w.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain() {
                let _ = tx.send(Err("the Ray driver exited".into()));
            }
        });
        Ok(Self {
            address,
            stdin: tokio::sync::Mutex::new(stdin),
            waiters,
            next: AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(slot_count)),
            slot_count,
            nodes,
            cpus,
            _child: child,
        })
    }

    /// The address connected to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Batches in flight at once.
    pub fn slots(&self) -> usize {
        self.slot_count
    }

    /// Send one request and wait for its reply.
    ///
    /// Errors: [`Error::Internal`] when the cluster failed the batch after
    /// Ray's retries, or the driver is gone.
    pub async fn call(&self, req: &EvalRequest) -> Result<EvalReply> {
        let _slot = self.slots.acquire().await.map_err(|e| Error::Internal(e.into()))?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, tx);
        let line = json!({ "id": id, "request": req }).to_string();
        {
            let mut stdin = self.stdin.lock().await;
            let sent = async {
                stdin.write_all(line.as_bytes()).await?;
                stdin.write_all(b"\n").await?;
                stdin.flush().await
            };
            sent.await.map_err(|e| Error::io(format!("sending a batch to the Ray driver ({})", self.address), e))?;
        }
        let answer = rx.await.map_err(|_| Error::Internal(anyhow::anyhow!("the Ray driver exited")))?;
        answer.map_err(|e| Error::Internal(anyhow::anyhow!("the Ray cluster at {} failed a batch: {e}", self.address)))
    }

    /// Grade `tasks` of `suite` for the variant `p` (whose component is
    /// `component`) on the cluster, in up to [`RayCluster::slots`] batches;
    /// the remote calls' audit events go to `audit`, naming the node. A
    /// batch already answered (in `journal`, from an earlier invocation of
    /// the run) is not sent again; `None` keeps no journal.
    ///
    /// Errors: the cluster's ([`RayCluster::call`]), a batch the worker
    /// could not grade, or the audit log's.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_tasks(
        &self,
        audit: &AuditLog,
        journal: Option<&Path>,
        component: &[u8],
        p: &Prepared,
        suite: &Suite,
        tasks: &[GradedTask],
        held_out: bool,
        opts: &CallOptions,
    ) -> Result<(Vec<TaskResult>, Spent)> {
        if tasks.is_empty() {
            return Ok((Vec::new(), Spent::default()));
        }
        let sha = hex::encode(Sha256::digest(component));
        let per = tasks.len().div_ceil(self.slot_count.min(tasks.len()));
        let component_hex = hex::encode(component);
        let call = RemoteCall::from_options(opts).share(tasks.len().div_ceil(per));
        let requests: Vec<EvalRequest> = tasks
            .chunks(per)
            .map(|chunk| EvalRequest {
                component_hex: component_hex.clone(),
                component_sha256: sha.clone(),
                grant: (*p.grant).clone(),
                suite: suite.name.to_string(),
                tasks: chunk.iter().map(|t| t.task.id.clone()).collect(),
                held_out,
                call: call.clone(),
            })
            .collect();
        let replies = futures::future::join_all(requests.iter().map(|r| self.call_journaled(journal, r))).await;
        let mut results = Vec::with_capacity(tasks.len());
        let mut spent = Spent::default();
        for (req, reply) in requests.iter().zip(replies) {
            let (reply, replayed) = reply?;
            let graded: Graded = reply.outcome.map_err(|e| {
                Error::Internal(anyhow::anyhow!("a worker of the Ray cluster at {} could not grade: {e}", self.address))
            })?;
            if graded.results.len() != req.tasks.len()
                || graded.results.iter().zip(&req.tasks).any(|(r, id)| &r.id != id || r.held_out != held_out)
            {
                return Err(Error::Internal(anyhow::anyhow!("a worker answered other tasks than it was sent")));
            }
            for e in graded.events {
                audit.append(e.variant.as_deref(), e.event, with_origin(e.details, &reply.node, &sha, replayed))?;
            }
            spent.add(&graded.spent);
            results.extend(graded.results);
        }
        Ok((results, spent))
    }

    /// [`RayCluster::call`], or the reply the run's journal kept (then
    /// `true`); a fresh reply is kept there before it is used.
    async fn call_journaled(&self, journal: Option<&Path>, req: &EvalRequest) -> Result<(EvalReply, bool)> {
        let Some(journal) = journal else { return Ok((self.call(req).await?, false)) };
        let key = request_key(req);
        let path = journal.join(format!("{key}.json"));
        if let Some(reply) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<EvalReply>(&b).ok()) {
            if reply.outcome.is_ok() {
                return Ok((reply, true));
            }
        }
        let reply = self.call(req).await?;
        if reply.outcome.is_ok() {
            std::fs::create_dir_all(journal).map_err(|e| Error::io(format!("creating {}", journal.display()), e))?;
            let bytes = serde_json::to_vec(&reply).map_err(|e| Error::Internal(e.into()))?;
            crate::fsio::write_atomic(&path, &bytes)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok((reply, false))
    }
}

/// The journal key of a request: what it asks, without the component's
/// bytes (their sha256 is in it).
fn request_key(req: &EvalRequest) -> String {
    let mut v = serde_json::to_value(req).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("component_hex");
    }
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

/// A remote event's details with where it ran.
fn with_origin(details: serde_json::Value, node: &NodeInfo, sha: &str, replayed: bool) -> serde_json::Value {
    let origin = json!({
        "engine": "ray",
        "node": node.id,
        "host": node.host,
        "worker_pid": node.worker_pid,
        "component_sha256": sha,
        "from_journal": replayed,
    });
    match details {
        serde_json::Value::Object(mut o) => {
            o.insert("cluster".into(), origin);
            serde_json::Value::Object(o)
        }
        other => json!({ "details": other, "cluster": origin }),
    }
}
