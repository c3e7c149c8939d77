//! The `ray` backend: jobs sent to an existing Ray cluster through Ray's job
//! submission HTTP API (the dashboard's, port 8265 by default):
//!
//! | step | request | answer used |
//! |---|---|---|
//! | submit | `POST /api/jobs/` `{"entrypoint", "submission_id", "runtime_env", "metadata"}` | `submission_id` |
//! | status | `GET /api/jobs/<id>` | `status` (`PENDING`, `RUNNING`, `SUCCEEDED`, `FAILED`, `STOPPED`), `message` |
//! | logs | `GET /api/jobs/<id>/logs` | `logs` |
//! | stop | `POST /api/jobs/<id>/stop` | — |
//!
//! The entrypoint and the runtime environment are the operator's
//! (`[ray]` in `trainer.toml`); the host adds to the runtime environment's
//! `env_vars`: `VIVARIUM_JOB_CONFIG` (the config, JSON text),
//! `VIVARIUM_JOB_SCRIPT` (the script's text, when there is one; an
//! entrypoint such as `python -c "import os; exec(os.environ['VIVARIUM_JOB_SCRIPT'])"`
//! runs it) and `VIVARIUM_JOB_SECONDS`. The metrics are the last JSON
//! object line of the job's logs, as for [`super::command`].
//!
//! The host polls every `poll_interval` until the job ends, the job's
//! budget runs out or it is cancelled; in the last two cases it asks Ray to
//! stop the job. Seconds are the host's wall-clock seconds from submission
//! to the end (what the cluster bills is the cluster's business).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{last_json_metrics, tail, Backend, BackendKind, JobContext, JobSpec, RunOutcome, LOG_TAIL_BYTES};
use crate::error::{Error, Result};
use crate::units::HumanDuration;

/// The `[ray]` table of `trainer.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RayConfig {
    /// The dashboard's address, e.g. `http://127.0.0.1:8265`.
    pub address: String,
    /// The job's shell command on the cluster.
    pub entrypoint: String,
    /// Ray's `runtime_env` (pip packages, working_dir, env_vars, …), as a
    /// TOML table; the host adds its `VIVARIUM_JOB_*` variables to `env_vars`.
    #[serde(default)]
    pub runtime_env: BTreeMap<String, toml::Value>,
    /// Recipes accepted (empty: any).
    #[serde(default)]
    pub recipes: Vec<String>,
    /// How often the host asks for the job's status.
    #[serde(default = "default_poll")]
    pub poll_interval: HumanDuration,
    /// Timeout of one HTTP request.
    #[serde(default = "default_timeout")]
    pub request_timeout: HumanDuration,
}

fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

impl RayConfig {
    /// A configuration for the dashboard at `address` running `entrypoint`.
    pub fn new(address: impl Into<String>, entrypoint: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            entrypoint: entrypoint.into(),
            runtime_env: BTreeMap::new(),
            recipes: Vec::new(),
            poll_interval: default_poll(),
            request_timeout: default_timeout(),
        }
    }
}

/// A client of Ray's job submission API.
#[derive(Debug)]
pub struct RayBackend {
    config: RayConfig,
    /// Always `Some` until dropped (see the `Drop` impl).
    http: Option<reqwest::blocking::Client>,
}

impl Drop for RayBackend {
    fn drop(&mut self) {
        // reqwest's blocking client shuts its runtime down when dropped,
        // which must not happen on an async runtime's thread.
        if let Some(http) = self.http.take() {
            let _ = std::thread::spawn(move || drop(http)).join();
        }
    }
}

impl RayBackend {
    /// A client for `config`.
    pub fn new(config: RayConfig) -> Result<Self> {
        if !(config.address.starts_with("http://") || config.address.starts_with("https://")) {
            return Err(Error::invalid(format!(
                "[ray] address {:?} must be an http:// or https:// URL, e.g. http://127.0.0.1:8265",
                config.address
            )));
        }
        // Built on a plain thread: reqwest's blocking client owns a runtime
        // that must not be created (or dropped) inside an async context.
        let timeout = config.request_timeout.0;
        let http = std::thread::spawn(move || {
            reqwest::blocking::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none()).build()
        })
        .join()
        .map_err(|_| Error::Internal(anyhow::anyhow!("building the Ray HTTP client panicked")))?
        .map_err(|e| Error::Internal(anyhow::anyhow!("building the Ray HTTP client: {e}")))?;
        Ok(Self { config, http: Some(http) })
    }

    fn http(&self) -> &reqwest::blocking::Client {
        self.http.as_ref().expect("the client is taken only on drop")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.address.trim_end_matches('/'))
    }

    fn call(&self, req: reqwest::blocking::RequestBuilder, what: &str) -> std::result::Result<Value, String> {
        let resp = req.send().map_err(|e| format!("Ray {what}: cannot reach the cluster: {e}"))?;
        let status = resp.status();
        let body = resp.text().map_err(|e| format!("Ray {what}: reading the answer: {e}"))?;
        if !status.is_success() {
            return Err(format!("Ray {what}: the cluster answered {status}: {}", tail(&body, 300)));
        }
        serde_json::from_str(&body)
            .map_err(|e| format!("Ray {what}: the answer is not JSON ({e}): {}", tail(&body, 300)))
    }

    /// Submit; the submission id.
    pub fn submit(&self, spec: &JobSpec, id: &str) -> std::result::Result<String, String> {
        let mut env = serde_json::to_value(&self.config.runtime_env).unwrap_or_else(|_| json!({}));
        let obj = env.as_object_mut().expect("a map serializes to an object");
        let vars = obj.entry("env_vars").or_insert_with(|| json!({}));
        if !vars.is_object() {
            *vars = json!({});
        }
        let vars = vars.as_object_mut().expect("made an object above");
        vars.insert("VIVARIUM_JOB_CONFIG".into(), Value::String(spec.config.to_string()));
        vars.insert("VIVARIUM_JOB_SECONDS".into(), Value::String(spec.budget.as_secs_f64().to_string()));
        if let Some(s) = &spec.script {
            vars.insert("VIVARIUM_JOB_SCRIPT".into(), Value::String(s.clone()));
        }
        let body = json!({
            "entrypoint": self.config.entrypoint,
            "submission_id": id,
            "runtime_env": env,
            "metadata": {"vivarium_job": id, "recipe": spec.recipe},
        });
        let v = self.call(self.http().post(self.url("/api/jobs/")).json(&body), "submit")?;
        v["submission_id"]
            .as_str()
            .or_else(|| v["job_id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("Ray submit: the answer has no submission_id: {v}"))
    }

    /// The job's status and message.
    pub fn status(&self, sid: &str) -> std::result::Result<(String, String), String> {
        let v = self.call(self.http().get(self.url(&format!("/api/jobs/{sid}"))), "status")?;
        let status = v["status"].as_str().ok_or_else(|| format!("Ray status: the answer has no status: {v}"))?;
        Ok((status.to_string(), v["message"].as_str().unwrap_or("").to_string()))
    }

    /// The job's logs.
    pub fn logs(&self, sid: &str) -> std::result::Result<String, String> {
        let v = self.call(self.http().get(self.url(&format!("/api/jobs/{sid}/logs"))), "logs")?;
        Ok(v["logs"].as_str().unwrap_or("").to_string())
    }

    /// Ask Ray to stop the job.
    pub fn stop(&self, sid: &str) -> std::result::Result<(), String> {
        self.call(self.http().post(self.url(&format!("/api/jobs/{sid}/stop"))), "stop").map(|_| ())
    }
}

impl Backend for RayBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ray
    }

    fn check(&self, spec: &JobSpec) -> std::result::Result<(), String> {
        if !self.config.recipes.is_empty() && !self.config.recipes.contains(&spec.recipe) {
            return Err(format!(
                "unknown recipe {:?}: this host's Ray entrypoint accepts {:?}",
                spec.recipe, self.config.recipes
            ));
        }
        Ok(())
    }

    fn run(&self, spec: &JobSpec, ctx: &JobContext) -> RunOutcome {
        let fail = |e: String| RunOutcome { error: Some(e), ..RunOutcome::default() };
        let sid = match self.submit(spec, &ctx.id) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let poll = self.config.poll_interval.0.max(Duration::from_millis(10));
        let (status, message) = loop {
            if ctx.stop_reason().is_some() {
                let stopped = self.stop(&sid);
                let logs = self.logs(&sid).unwrap_or_default();
                return RunOutcome {
                    error: stopped.err(),
                    metrics: last_json_metrics(&logs).unwrap_or_default(),
                    log_tail: tail(&logs, LOG_TAIL_BYTES),
                    stopped: true,
                };
            }
            match self.status(&sid) {
                Ok((s, m)) if matches!(s.as_str(), "SUCCEEDED" | "FAILED" | "STOPPED") => break (s, m),
                Ok(_) => {}
                Err(e) => {
                    let _ = self.stop(&sid);
                    return fail(e);
                }
            }
            let next = Instant::now() + poll;
            while Instant::now() < next && ctx.stop_reason().is_none() {
                std::thread::sleep(Duration::from_millis(10).min(poll));
            }
        };
        let logs = self.logs(&sid).unwrap_or_else(|e| e);
        let metrics = last_json_metrics(&logs).unwrap_or_default();
        let error = match status.as_str() {
            "SUCCEEDED" if metrics.is_empty() => {
                Some("the Ray job ended without printing its metrics; print them as a final JSON line".to_string())
            }
            "SUCCEEDED" => None,
            other => Some(format!("the Ray job ended {other}: {message}")),
        };
        RunOutcome { error, metrics, log_tail: tail(&logs, LOG_TAIL_BYTES), stopped: false }
    }
}
