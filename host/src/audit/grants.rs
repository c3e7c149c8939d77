//! Reading grants back out of the log: `vivarium audit grants` and
//! `vivarium audit diff`.

use serde::Serialize;

use super::{AuditLog, EventKind, Filter};
use crate::caps::{Denial, Grant, ProvenanceLine};
use crate::error::{Error, Result};

/// The most recent grant recorded for one variant.
#[derive(Debug, Clone, Serialize)]
pub struct GrantRecord {
    /// The variant's sha256.
    pub variant: String,
    /// The variant's name from its manifest, if it had one.
    pub name: Option<String>,
    /// Sequence number of the grant record.
    pub seq: u64,
    /// When it was granted.
    pub time: String,
    /// The grant's digest.
    pub digest: String,
    /// The effective grant.
    pub grant: Grant,
    /// Where each line came from (manifest, policy, flag).
    pub provenance: Vec<ProvenanceLine>,
    /// What was requested and denied when this grant was computed.
    pub denials: Vec<Denial>,
}

/// The latest grant of the variant whose sha256 starts with `id`.
///
/// An `id` matching several variants is refused with the candidates named.
pub fn latest_grant(log: &AuditLog, id: &str) -> Result<GrantRecord> {
    if id.len() < 4 {
        return Err(Error::invalid(format!("`{id}` is too short; give at least 4 hex digits of the variant's sha256")));
    }
    let records = log.query(&Filter::new().variant(id).event(EventKind::Grant).event(EventKind::Deny))?;
    let mut variants: Vec<&str> = records.iter().filter_map(|r| r.variant.as_deref()).collect();
    variants.sort_unstable();
    variants.dedup();
    match variants.len() {
        0 => {
            return Err(Error::invalid(format!(
                "no grant recorded for a variant `{id}…`; `vivarium audit log --event grant` lists them"
            )))
        }
        1 => {}
        _ => {
            return Err(Error::invalid(format!(
                "`{id}` matches several variants ({}); give more digits",
                variants.join(", ")
            )))
        }
    }
    let grant_rec = records
        .iter()
        .rev()
        .find(|r| r.event == EventKind::Grant)
        .ok_or_else(|| Error::invalid(format!("no grant recorded for `{id}`")))?;
    let d = &grant_rec.details;
    let parse = |key: &str| d.get(key).cloned().unwrap_or(serde_json::Value::Null);
    let bad = |e: serde_json::Error| Error::invalid(format!("grant record {} is malformed: {e}", grant_rec.seq));
    let grant: Grant = serde_json::from_value(parse("grant")).map_err(bad)?;
    let provenance: Vec<ProvenanceLine> = serde_json::from_value(parse("provenance")).map_err(bad)?;
    // Denials are the `deny` records written right after this grant.
    let denials = records
        .iter()
        .filter(|r| r.event == EventKind::Deny && r.seq > grant_rec.seq)
        .take_while(|r| r.seq <= grant_rec.seq + 64)
        .filter_map(|r| serde_json::from_value(r.details.clone()).ok())
        .collect();
    Ok(GrantRecord {
        variant: grant_rec.variant.clone().unwrap_or_default(),
        name: d.get("variant").and_then(|v| v.as_str()).map(str::to_string),
        seq: grant_rec.seq,
        time: grant_rec.time.clone(),
        digest: d.get("digest").and_then(|v| v.as_str()).unwrap_or_default().to_string(),
        grant,
        provenance,
        denials,
    })
}
