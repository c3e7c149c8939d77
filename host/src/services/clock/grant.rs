//! The `clock` service's capabilities: `clock = {}` in `variant.toml`,
//! `clock = true` in `policy.toml`, and the grant (an on/off service: no
//! names, no budget).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::caps::resolve::{Builder, Source};
use crate::caps::service::ServiceCaps;

/// `clock = {}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockRequest {}

/// The `clock` service: the call's elapsed and remaining time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockGrant {}

impl fmt::Display for ClockGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the call's elapsed and remaining time")
    }
}

impl ServiceCaps for ClockGrant {
    const NAME: &'static str = "clock";
    type Request = ClockRequest;
    /// The policy's `clock = true` (`false` is no policy for it).
    type Policy = ();
    type PolicyEntry = bool;

    /// The built-in policy allows it: it stays on the machine and reveals
    /// nothing the WASI clocks do not.
    fn builtin_policy() -> bool {
        true
    }

    fn summary(_: &ClockRequest) -> String {
        ClockGrant {}.to_string()
    }

    fn grant(_: &ClockRequest, _: &(), b: &mut Builder) -> Option<Self> {
        let g = ClockGrant {};
        b.line("clock", &g, Source::Manifest, None);
        Some(g)
    }

    fn as_request(&self) -> ClockRequest {
        ClockRequest {}
    }
}
