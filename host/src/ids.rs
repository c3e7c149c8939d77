//! One way to name a variant on the command line.
//!
//! A variant has two ids: its **archive id** (what `evolve` and `archive
//! list` print; one per run, content and parent) and its **component
//! sha256** (what `inspect` and the audit log use; the same built bytes in
//! two runs share it). Every command that takes a variant takes either, or
//! any unique prefix of 4 hex digits or more, and says which it matched
//! ([`VariantRef::matched`]); a prefix that fits ids of both kinds is
//! refused rather than guessed.

use serde::Serialize;

use crate::archive::Archive;
use crate::audit::{AuditLog, EventKind, Filter};
use crate::error::{Error, Result};
use crate::home::Home;

/// Which kind of id a name matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Matched {
    /// An archive id (`archive list`).
    ArchiveId,
    /// A component sha256 (`inspect`, the audit log).
    ComponentSha256,
}

impl Matched {
    /// `archive id` or `component sha256`, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Matched::ArchiveId => "archive id",
            Matched::ComponentSha256 => "component sha256",
        }
    }
}

/// A variant named on the command line, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VariantRef {
    /// What the user typed.
    pub given: String,
    /// Which kind of id it matched.
    pub matched: Matched,
    /// The archive id, when the variant is archived under exactly one id
    /// (a component archived in several runs has several).
    pub archive_id: Option<String>,
    /// The component's sha256, when known (a variant archived without a
    /// build has none).
    pub sha256: Option<String>,
}

impl VariantRef {
    /// `"<given> matched the archive id <id>"`, for the line a command
    /// prints before its answer.
    pub fn describe(&self) -> String {
        let full = match self.matched {
            Matched::ArchiveId => self.archive_id.as_deref(),
            Matched::ComponentSha256 => self.sha256.as_deref(),
        };
        format!("{} matched the {} {}", self.given, self.matched.describe(), full.unwrap_or("?"))
    }
}

/// Resolve `given` (an archive id, a component sha256, or a unique prefix
/// of 4+ hex digits of either) against the archive and the audit log of
/// `home`.
///
/// Errors: [`Error::Invalid`] (exit 2) when it is not hex, matches nothing,
/// matches several variants, or matches ids of both kinds; each message
/// says what to give instead.
pub fn resolve_variant(home: &Home, given: &str) -> Result<VariantRef> {
    let prefix = given.trim().to_ascii_lowercase();
    if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "`{given}` is not a variant id; give an archive id (`vivarium archive list`) or a component sha256 \
             (`vivarium inspect`), or at least 4 hex digits of one"
        )));
    }
    let archive = if home.archive_dir().join(crate::archive::INDEX_FILE).is_file() {
        Some(Archive::open(&home.archive_dir())?)
    } else {
        None
    };
    let rows = match &archive {
        Some(a) => a.list(None)?,
        None => Vec::new(),
    };
    let by_id: Vec<&crate::archive::VariantRow> = rows.iter().filter(|r| r.id.0.starts_with(&prefix)).collect();
    let mut shas: Vec<String> =
        rows.iter().filter_map(|r| r.component_sha.clone()).filter(|s| s.starts_with(&prefix)).collect();
    // Components only run or inspected (never archived) are in the log.
    let log = AuditLog::open(&home.audit_dir())?;
    for r in log.query(&Filter::new().variant(prefix.clone()).event(EventKind::Grant))? {
        if let Some(v) = r.variant {
            shas.push(v);
        }
    }
    shas.sort();
    shas.dedup();
    match (by_id.as_slice(), shas.as_slice()) {
        ([], []) => Err(Error::invalid(format!(
            "no variant `{given}`: neither an archive id (`vivarium archive list`) nor the sha256 of a component \
             the audit log has seen (`vivarium audit log --event grant`)"
        ))),
        ([row], []) => Ok(VariantRef {
            given: given.to_string(),
            matched: Matched::ArchiveId,
            archive_id: Some(row.id.0.clone()),
            sha256: row.component_sha.clone(),
        }),
        ([], [sha]) => {
            let archived: Vec<&str> =
                rows.iter().filter(|r| r.component_sha.as_deref() == Some(sha)).map(|r| r.id.0.as_str()).collect();
            Ok(VariantRef {
                given: given.to_string(),
                matched: Matched::ComponentSha256,
                archive_id: match archived.as_slice() {
                    [one] => Some(one.to_string()),
                    _ => None,
                },
                sha256: Some(sha.clone()),
            })
        }
        (ids, []) => Err(Error::invalid(format!(
            "`{given}` is the start of {} archive ids ({}); give more digits",
            ids.len(),
            ids.iter().map(|r| short(&r.id.0)).collect::<Vec<_>>().join(", ")
        ))),
        ([], shas) => Err(Error::invalid(format!(
            "`{given}` is the start of {} component sha256s ({}); give more digits",
            shas.len(),
            shas.iter().map(|s| short(s)).collect::<Vec<_>>().join(", ")
        ))),
        (ids, shas) => Err(Error::invalid(format!(
            "`{given}` is the start of both an archive id ({}) and a component sha256 ({}); give more digits",
            ids.iter().map(|r| short(&r.id.0)).collect::<Vec<_>>().join(", "),
            shas.iter().map(|s| short(s)).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(16)]
}
