//! The `workbench` service's capabilities: `workbench = { tries = N, tasks =
//! N, build_seconds = N, fuel = N }` in `variant.toml`, the same shape as a
//! ceiling in `policy.toml`, and the grant (four budgets).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::caps::resolve::Builder;
use crate::caps::service::{Budget, ServiceCaps};

/// The `workbench` service (`vivarium:agent/workbench@0.2.0`): trying a
/// candidate child on visible tasks during `improve` inside `evolve`. The
/// same shape is the manifest's request and the policy's ceiling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkbenchGrant {
    /// Tries per `improve` call.
    pub tries: u32,
    /// Visible tasks one try may run.
    pub tasks: u32,
    /// Seconds one try's build may take; a slower build is reported as the
    /// try's error and its tasks are not run.
    pub build_seconds: u64,
    /// Fuel one try's task calls may use in all (each call also stays
    /// within the candidate's own `limits.fuel`).
    pub fuel: u64,
}

/// `workbench = { tries = N, tasks = N, build_seconds = N, fuel = N }`: the
/// same fields as the grant.
pub type WorkbenchRequest = WorkbenchGrant;

/// The most of the `workbench` service a grant may have: the same fields
/// as the grant, each a ceiling.
pub type WorkbenchPolicy = WorkbenchGrant;

/// The built-in policy's `workbench` ceiling: a few tries of a few tasks,
/// a minute of build, 20 G fuel a try.
pub fn builtin_workbench() -> WorkbenchPolicy {
    WorkbenchPolicy { tries: 8, tasks: 20, build_seconds: 60, fuel: 20_000_000_000 }
}

impl fmt::Display for WorkbenchGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tries {}, tasks {}, build_seconds {}, fuel {}",
            self.tries, self.tasks, self.build_seconds, self.fuel
        )
    }
}

impl ServiceCaps for WorkbenchGrant {
    const NAME: &'static str = "workbench";
    type Request = WorkbenchRequest;
    type Policy = WorkbenchPolicy;
    type PolicyEntry = Option<WorkbenchPolicy>;

    fn builtin_policy() -> Option<WorkbenchPolicy> {
        Some(builtin_workbench())
    }

    fn summary(r: &WorkbenchRequest) -> String {
        r.to_string()
    }

    fn grant(r: &WorkbenchRequest, p: &WorkbenchPolicy, b: &mut Builder) -> Option<Self> {
        Some(WorkbenchGrant {
            tries: b.budget("workbench.tries", r.tries, p.tries),
            tasks: b.budget("workbench.tasks", r.tasks, p.tasks),
            build_seconds: b.budget("workbench.build_seconds", r.build_seconds, p.build_seconds),
            fuel: b.budget("workbench.fuel", r.fuel, p.fuel),
        })
    }

    fn as_request(&self) -> WorkbenchRequest {
        self.clone()
    }

    fn budgets(&self) -> Vec<Budget> {
        vec![
            ("workbench.tries", u128::from(self.tries), self.tries.to_string()),
            ("workbench.tasks", u128::from(self.tasks), self.tasks.to_string()),
            ("workbench.build_seconds", u128::from(self.build_seconds), self.build_seconds.to_string()),
            ("workbench.fuel", u128::from(self.fuel), self.fuel.to_string()),
        ]
    }
}
