//! The `archive` view's capabilities: `archive = {}` in `variant.toml`,
//! `archive = true` in `policy.toml`, and the grant (an on/off service: no
//! names, no budget).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::caps::resolve::{Builder, Source};
use crate::caps::service::ServiceCaps;

/// `archive = {}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRequest {}

/// The `archive` service: a read-only view of variants, visible scores and lineage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveGrant {}

impl fmt::Display for ArchiveGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("read-only view")
    }
}

impl ServiceCaps for ArchiveGrant {
    const NAME: &'static str = "archive";
    type Request = ArchiveRequest;
    /// The policy's `archive = true` (`false` is no policy for it).
    type Policy = ();
    /// `archive = true`.
    type PolicyEntry = bool;

    /// The built-in policy allows it: a read-only view of this run.
    fn builtin_policy() -> bool {
        true
    }

    fn summary(_: &ArchiveRequest) -> String {
        "read-only view".to_string()
    }

    fn grant(_: &ArchiveRequest, _: &(), b: &mut Builder) -> Option<Self> {
        b.line("archive", "read-only view", Source::Manifest, None);
        Some(ArchiveGrant {})
    }

    fn as_request(&self) -> ArchiveRequest {
        ArchiveRequest {}
    }
}
