//! The `simulator` service's capabilities: `simulator = { envs = [...],
//! steps = N }` in `variant.toml`, its ceiling in `policy.toml`, and the
//! grant computed from both (a "names + budget" service).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::caps::grant::list_allows;
use crate::caps::manifest::{any, de_names};
use crate::caps::resolve::Builder;
use crate::caps::service::{allowed_names, show_list, Budget, ServiceCaps};

/// `simulator = { envs = [...], steps = N }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorRequest {
    /// Environment names, or `["*"]` (the default) for any the policy allows.
    #[serde(default = "any", deserialize_with = "de_names")]
    pub envs: Vec<String>,
    /// Step budget.
    pub steps: u64,
}

/// The most of the `simulator` service a grant may have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorPolicy {
    /// Environments that may be granted (`["*"]`, the default: any).
    #[serde(default = "any", deserialize_with = "de_names")]
    pub envs: Vec<String>,
    /// The largest step budget.
    pub steps: u64,
}

/// The `simulator` service: environments stepped by the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorGrant {
    /// Environment names the variant may create, or `["*"]`.
    pub envs: Vec<String>,
    /// The most environment steps one call may take (the `simulator`
    /// service counts per call).
    pub steps: u64,
}

impl SimulatorGrant {
    /// Whether environment `env` may be created.
    pub fn allows_env(&self, env: &str) -> bool {
        list_allows(&self.envs, env)
    }
}

impl fmt::Display for SimulatorGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "envs {}, steps {}", show_list(&self.envs), self.steps)
    }
}

impl ServiceCaps for SimulatorGrant {
    const NAME: &'static str = "simulator";
    type Request = SimulatorRequest;
    type Policy = SimulatorPolicy;
    type PolicyEntry = Option<SimulatorPolicy>;

    /// Any embedded env, 10M steps.
    fn builtin_policy() -> Option<SimulatorPolicy> {
        Some(SimulatorPolicy { envs: any(), steps: 10_000_000 })
    }

    fn summary(r: &SimulatorRequest) -> String {
        format!("envs {}, steps {}", show_list(&r.envs), r.steps)
    }

    fn grant(r: &SimulatorRequest, p: &SimulatorPolicy, b: &mut Builder) -> Option<Self> {
        let envs = allowed_names::<Self>(r, "simulator.envs", &r.envs, &p.envs, "environments", b)?;
        Some(SimulatorGrant { envs, steps: b.budget("simulator.steps", r.steps, p.steps) })
    }

    fn as_request(&self) -> SimulatorRequest {
        SimulatorRequest { envs: self.envs.clone(), steps: self.steps }
    }

    fn name_lists(&self) -> Vec<(&'static str, &[String])> {
        vec![("simulator.envs", &self.envs)]
    }

    fn name_lists_mut(&mut self) -> Vec<&mut Vec<String>> {
        vec![&mut self.envs]
    }

    fn budgets(&self) -> Vec<Budget> {
        vec![("simulator.steps", self.steps as u128, self.steps.to_string())]
    }
}
