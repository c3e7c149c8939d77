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
    /// The command that computed it (`vivarium run … --fuel 1000`), when
    /// the process said ([`set_command`]); older records have none.
    pub command: Option<String>,
    /// Whether a command-line flag narrowed it (a line from `flag`), so it
    /// is that call's grant rather than what the manifest and policy give.
    pub narrowed_by_flags: bool,
}

/// The longest command line kept in a grant record.
const MAX_COMMAND_BYTES: usize = 256;

static COMMAND: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Name the command this process runs (the CLI's arguments), so that each
/// grant it records says which command computed it. Set once; later calls
/// are ignored. Cut to 256 bytes.
pub fn set_command(command: &str) {
    let mut c = command.to_string();
    if c.len() > MAX_COMMAND_BYTES {
        let mut cut = MAX_COMMAND_BYTES;
        while !c.is_char_boundary(cut) {
            cut -= 1;
        }
        c.truncate(cut);
        c.push('…');
    }
    let _ = COMMAND.set(c);
}

/// The command set by [`set_command`], if any.
pub fn command() -> Option<&'static str> {
    COMMAND.get().map(String::as_str)
}

/// Every grant recorded for the variant whose sha256 is exactly `sha256`,
/// oldest first, each with when, by which command and whether flags
/// narrowed it.
///
/// Errors: [`Error::Invalid`] when none is recorded.
pub fn grants_of(log: &AuditLog, sha256: &str) -> Result<Vec<GrantRecord>> {
    let records = log.query(&Filter::new().variant(sha256).event(EventKind::Grant).event(EventKind::Deny))?;
    let records: Vec<_> = records.into_iter().filter(|r| r.variant.as_deref() == Some(sha256)).collect();
    let grants: Vec<_> = records.iter().filter(|r| r.event == EventKind::Grant).collect();
    if grants.is_empty() {
        return Err(Error::invalid(format!(
            "no grant recorded for variant {sha256}; `vivarium inspect` or `vivarium run` records one"
        )));
    }
    grants.into_iter().map(|g| grant_record(g, &records)).collect()
}

/// The grant `audit diff` compares for a variant: the latest one that no
/// flag narrowed (what its manifest and the policy give), else the latest.
pub fn manifest_grant(log: &AuditLog, sha256: &str) -> Result<GrantRecord> {
    let all = grants_of(log, sha256)?;
    let pick = all.iter().rposition(|g| !g.narrowed_by_flags).unwrap_or(all.len() - 1);
    Ok(all.into_iter().nth(pick).expect("in range"))
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
    grant_record(grant_rec, &records)
}

/// A grant record read back, with the `deny` records written right after
/// it (found in `records`).
fn grant_record(grant_rec: &super::Record, records: &[super::Record]) -> Result<GrantRecord> {
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
        narrowed_by_flags: provenance.iter().any(|p| p.source == crate::caps::Source::Flag),
        grant,
        provenance,
        denials,
        command: d.get("command").and_then(|v| v.as_str()).map(str::to_string),
    })
}
