//! The `trainer` service's capabilities: `trainer = { backends = [...],
//! gpu_seconds = N }` in `variant.toml`, its ceiling in `policy.toml`, and
//! the grant computed from both (a "names + budget" service).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::caps::grant::list_allows;
use crate::caps::manifest::{any, de_names};
use crate::caps::resolve::Builder;
use crate::caps::service::{allowed_names, show_list, Budget, ServiceCaps};

/// `trainer = { backends = [...], gpu_seconds = N }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerRequest {
    /// Backends (`cpu`, `cuda`, …); `["*"]` (any the policy allows) when absent.
    #[serde(default = "any", deserialize_with = "de_names")]
    pub backends: Vec<String>,
    /// GPU-seconds budget.
    pub gpu_seconds: u64,
}

/// The most of the `trainer` service a grant may have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerPolicy {
    /// Backends that may be granted (`["*"]`, the default: any).
    #[serde(default = "any", deserialize_with = "de_names")]
    pub backends: Vec<String>,
    /// The largest GPU-seconds budget.
    pub gpu_seconds: u64,
}

/// The `trainer` service: training jobs run by the host on a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerGrant {
    /// Backends (`embedded`, `command`, `ray`) jobs may run on, or `["*"]`;
    /// the host's configured backend must be among them.
    pub backends: Vec<String>,
    /// Total trainer seconds (GPU-seconds on a GPU, else CPU-seconds) the
    /// variant may spend in one run.
    pub gpu_seconds: u64,
}

impl TrainerGrant {
    /// Whether jobs may run on `backend`.
    pub fn allows_backend(&self, backend: &str) -> bool {
        list_allows(&self.backends, backend)
    }
}

impl fmt::Display for TrainerGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backends {}, gpu_seconds {}", show_list(&self.backends), self.gpu_seconds)
    }
}

impl ServiceCaps for TrainerGrant {
    const NAME: &'static str = "trainer";
    type Request = TrainerRequest;
    type Policy = TrainerPolicy;
    type PolicyEntry = Option<TrainerPolicy>;

    /// The `embedded` backend, 600 s.
    fn builtin_policy() -> Option<TrainerPolicy> {
        Some(TrainerPolicy { backends: vec!["embedded".into()], gpu_seconds: 600 })
    }

    fn summary(r: &TrainerRequest) -> String {
        format!("backends {}, gpu_seconds {}", show_list(&r.backends), r.gpu_seconds)
    }

    fn grant(r: &TrainerRequest, p: &TrainerPolicy, b: &mut Builder) -> Option<Self> {
        let backends = allowed_names::<Self>(r, "trainer.backends", &r.backends, &p.backends, "backends", b)?;
        Some(TrainerGrant { backends, gpu_seconds: b.budget("trainer.gpu_seconds", r.gpu_seconds, p.gpu_seconds) })
    }

    fn as_request(&self) -> TrainerRequest {
        TrainerRequest { backends: self.backends.clone(), gpu_seconds: self.gpu_seconds }
    }

    fn name_lists(&self) -> Vec<(&'static str, &[String])> {
        vec![("trainer.backends", &self.backends)]
    }

    fn name_lists_mut(&mut self) -> Vec<&mut Vec<String>> {
        vec![&mut self.backends]
    }

    fn budgets(&self) -> Vec<Budget> {
        vec![("trainer.gpu_seconds", self.gpu_seconds as u128, self.gpu_seconds.to_string())]
    }
}
