//! What the coordinator and a cluster worker say to each other: one JSON
//! object a line each way ([`EvalRequest`] in, [`EvalReply`] out).
//!
//! A request carries everything a worker needs and nothing more: the
//! component's bytes and sha256, the grant the coordinator computed (the
//! worker never recomputes one from a policy it does not have), the suite's
//! name and the ids of the tasks to grade (the graders and expected answers
//! are compiled into every `vivarium` binary), and the call options that
//! carry the run's budgets left. A reply carries the graded results, what
//! they spent and the audit events the worker's calls produced; the
//! coordinator appends those events to its one hash-chained log, naming the
//! worker node and the component.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::EventKind;
use crate::caps::Grant;
use crate::runtime::CallOptions;
use crate::tasks::{Spent, TaskResult};

/// One batch of tasks of one split to grade for one variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRequest {
    /// The component's bytes, hex-encoded.
    pub component_hex: String,
    /// The component's sha256 (checked by the worker against the bytes).
    pub component_sha256: String,
    /// The grant the coordinator computed and audited.
    pub grant: Grant,
    /// The suite's name ([`crate::tasks::SUITES`]).
    pub suite: String,
    /// Ids of the tasks to grade, in order, all of one split.
    pub tasks: Vec<String>,
    /// Whether they are held-out tasks (the calls are then sealed).
    pub held_out: bool,
    /// The call options that travel: run, lineage, budgets left.
    pub call: RemoteCall,
}

/// The parts of [`CallOptions`] a remote call keeps (a scratch area is the
/// worker's own).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteCall {
    /// [`CallOptions::run`].
    pub run: Option<String>,
    /// [`CallOptions::lineage`].
    pub lineage: Option<String>,
    /// [`CallOptions::llm_tokens`].
    pub llm_tokens: Option<u64>,
    /// [`CallOptions::sim_steps`].
    pub sim_steps: Option<u64>,
}

impl RemoteCall {
    /// The travelling parts of `o`.
    pub fn from_options(o: &CallOptions) -> Self {
        Self { run: o.run.clone(), lineage: o.lineage.clone(), llm_tokens: o.llm_tokens, sim_steps: o.sim_steps }
    }

    /// These options for one of `n` batches graded at once: each gets an
    /// equal share of what is left of the token and simulator-step budgets,
    /// so batches running side by side cannot together spend more than is
    /// left.
    pub fn share(mut self, n: usize) -> Self {
        let n = n.max(1) as u64;
        self.llm_tokens = self.llm_tokens.map(|t| t / n);
        self.sim_steps = self.sim_steps.map(|s| s / n);
        self
    }

    /// Call options for the worker's calls.
    pub fn to_options(&self) -> CallOptions {
        CallOptions {
            run: self.run.clone(),
            lineage: self.lineage.clone(),
            llm_tokens: self.llm_tokens,
            sim_steps: self.sim_steps,
            ..CallOptions::default()
        }
    }
}

/// One audit event a worker's call produced, to be appended by the
/// coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteEvent {
    /// The variant (component sha256), or `None` for a host event.
    pub variant: Option<String>,
    /// Its kind.
    pub event: EventKind,
    /// Its details, as the worker's log recorded them.
    pub details: Value,
}

/// Where a reply was computed (filled in by the Ray driver).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Ray's node id.
    #[serde(default)]
    pub id: String,
    /// The node's host name.
    #[serde(default)]
    pub host: String,
    /// The worker process.
    #[serde(default)]
    pub worker_pid: u32,
}

/// A worker's answer to one [`EvalRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReply {
    /// `Ok`: graded results in request order, what they spent and the audit
    /// events; `Err`: why the batch could not be graded (a host failure on
    /// the worker; a guest failure is a low score, never this).
    pub outcome: std::result::Result<Graded, String>,
    /// Where it ran (set by the driver; empty when run in process).
    #[serde(default)]
    pub node: NodeInfo,
}

/// The graded batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Graded {
    /// One result per requested task, in order.
    pub results: Vec<TaskResult>,
    /// What the batch spent.
    pub spent: Spent,
    /// The audit events of its calls, in order.
    pub events: Vec<RemoteEvent>,
}
