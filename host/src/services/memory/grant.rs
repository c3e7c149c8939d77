//! The `memory` service's capabilities: `memory = { bytes = SIZE }` in
//! `variant.toml`, its ceiling in `policy.toml`, and the grant computed from
//! both (a budget-only service).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::caps::resolve::Builder;
use crate::caps::service::{Budget, ServiceCaps};
use crate::units::ByteSize;

/// `memory = { bytes = SIZE }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryRequest {
    /// Quota.
    pub bytes: ByteSize,
}

/// The most of the `memory` service a grant may have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryPolicy {
    /// The largest quota.
    pub bytes: ByteSize,
}

/// The `memory` service: a persistent key-value store per lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryGrant {
    /// The quota: keys plus values, in bytes.
    pub bytes: ByteSize,
}

impl fmt::Display for MemoryGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bytes {}", self.bytes)
    }
}

impl ServiceCaps for MemoryGrant {
    const NAME: &'static str = "memory";
    type Request = MemoryRequest;
    type Policy = MemoryPolicy;
    type PolicyEntry = Option<MemoryPolicy>;

    /// 16MiB.
    fn builtin_policy() -> Option<MemoryPolicy> {
        Some(MemoryPolicy { bytes: ByteSize(16 << 20) })
    }

    fn summary(r: &MemoryRequest) -> String {
        format!("bytes {}", r.bytes)
    }

    fn grant(r: &MemoryRequest, p: &MemoryPolicy, b: &mut Builder) -> Option<Self> {
        Some(MemoryGrant { bytes: b.budget("memory.bytes", r.bytes, p.bytes) })
    }

    fn as_request(&self) -> MemoryRequest {
        MemoryRequest { bytes: self.bytes }
    }

    fn budgets(&self) -> Vec<Budget> {
        vec![("memory.bytes", self.bytes.0 as u128, self.bytes.to_string())]
    }
}
