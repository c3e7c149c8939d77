//! `vivarium inspect`: what a component imports and exports, its sha256,
//! and — given a manifest and policy — its grant and which imports would be
//! refused.

use serde::Serialize;

use crate::caps::imports::{self, RefusedImport};
use crate::caps::{Denial, Grant, ProvenanceLine, Resolution};
use crate::runtime::Loaded;

/// The inspection of one component.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// sha256 of the component bytes.
    pub sha256: String,
    /// Imported interfaces.
    pub imports: Vec<String>,
    /// Exported interfaces.
    pub exports: Vec<String>,
    /// Whether it exports both `task-agent` and `meta-agent`.
    pub is_agent: bool,
    /// The grant it would run under.
    pub grant: Grant,
    /// The grant's digest.
    pub grant_digest: String,
    /// Where each line of the grant came from.
    pub provenance: Vec<ProvenanceLine>,
    /// Requested capabilities the policy denied.
    pub denials: Vec<Denial>,
    /// Imports the grant would refuse (empty: it would load).
    pub refused: Vec<RefusedImport>,
}

/// Inspect a loaded component against a resolved grant.
pub fn inspect(loaded: &Loaded, r: &Resolution) -> Inspection {
    let has = |iface: &str| loaded.exports.iter().any(|e| e.starts_with(&format!("vivarium:agent/{iface}@")));
    Inspection {
        sha256: loaded.sha256.clone(),
        imports: loaded.imports.clone(),
        exports: loaded.exports.clone(),
        is_agent: has("task-agent") && has("meta-agent"),
        grant: r.grant.clone(),
        grant_digest: r.grant.digest(),
        provenance: r.provenance.clone(),
        denials: r.denials.clone(),
        refused: imports::check(loaded.imports.iter().map(String::as_str), &r.grant),
    }
}
