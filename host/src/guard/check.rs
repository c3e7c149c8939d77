//! [`check_proposal`]: every rule of the guard, applied to one proposal
//! against its parent's tree.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::escalation::{Escalation, ESCALATION_FILE, MAX_ESCALATION_BYTES};
use super::path::check_shape;
use super::rules::{GuardRules, MANIFEST_FILE};
use super::{Rule, Violation};
use crate::bindings::{Edit, Proposal};
use crate::caps::grant::ANY;
use crate::caps::manifest::{Capabilities, Manifest};

/// A proposal that passed every rule: the only input [`apply`](super::apply)
/// takes, so unchecked edits cannot reach a child tree.
#[derive(Debug, Clone)]
pub struct CheckedProposal {
    parent: PathBuf,
    rules: GuardRules,
    summary: String,
    digest: String,
    writes: Vec<(String, Vec<u8>)>,
    deletes: Vec<String>,
    escalation: Option<Escalation>,
    manifest_edited: bool,
}

impl CheckedProposal {
    /// The proposal's summary, as the meta-agent wrote it.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The proposal's [`proposal_digest`] (of the whole proposal, the
    /// escalation request included).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The writes to apply to the tree, in proposal order (without `escalation.toml`).
    pub fn writes(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.writes.iter().map(|(p, c)| (p.as_str(), c.as_slice()))
    }

    /// The paths to delete, in proposal order.
    pub fn deletes(&self) -> &[String] {
        &self.deletes
    }

    /// The escalation request the proposal carries (`escalation.toml`), if any.
    pub fn escalation(&self) -> Option<&Escalation> {
        self.escalation.as_ref()
    }

    /// Whether the proposal rewrites `variant.toml` (only outside its
    /// protected sections, or it would not have passed).
    pub fn manifest_edited(&self) -> bool {
        self.manifest_edited
    }

    /// Bytes written to the tree in all.
    pub fn total_bytes(&self) -> u64 {
        self.writes.iter().map(|(_, c)| c.len() as u64).sum()
    }

    /// The rules the proposal was checked with ([`apply`](super::apply)
    /// copies the tree by the same rules).
    pub fn rules(&self) -> &GuardRules {
        &self.rules
    }

    /// The canonical parent tree the proposal was checked against.
    pub fn parent(&self) -> &Path {
        &self.parent
    }

    /// What the audit log records of an accepted proposal: digest, summary
    /// (at most 1 KiB), each write's path, size and sha256, the deletes, and
    /// the escalation request.
    pub fn audit_details(&self) -> Value {
        let summary: String = self.summary.chars().take(1024).collect();
        let writes: Vec<Value> = self
            .writes
            .iter()
            .map(|(p, c)| json!({"path": p, "bytes": c.len(), "sha256": hex::encode(Sha256::digest(c))}))
            .collect();
        json!({
            "digest": self.digest,
            "summary": summary,
            "writes": writes,
            "deletes": self.deletes,
            "manifest_edited": self.manifest_edited,
            "escalation": self.escalation,
        })
    }
}

/// sha256 (hex) of a proposal's canonical bytes: `vivarium-proposal-v1\n`,
/// then the summary, the number of edits and each edit — `W` path contents
/// for a write, `D` path for a delete — where every string and byte list is
/// preceded by its length as a little-endian u64 and the count is one too.
pub fn proposal_digest(proposal: &Proposal) -> String {
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    h.update(b"vivarium-proposal-v1\n");
    field(&mut h, proposal.summary.as_bytes());
    h.update((proposal.edits.len() as u64).to_le_bytes());
    for edit in &proposal.edits {
        match edit {
            Edit::Write(f) => {
                h.update(b"W");
                field(&mut h, f.path.as_bytes());
                field(&mut h, &f.contents);
            }
            Edit::Delete(p) => {
                h.update(b"D");
                field(&mut h, p.as_bytes());
            }
        }
    }
    hex::encode(h.finalize())
}

fn edit_path(edit: &Edit) -> &str {
    match edit {
        Edit::Write(f) => &f.path,
        Edit::Delete(p) => p,
    }
}

/// Check `proposal` against the variant tree at `parent_tree` and `rules`.
///
/// `Ok` holds the edits to apply and the escalation request, if any; `Err`
/// every [`Violation`] found (see the [module docs](super) for the rules).
/// Reads the parent tree (metadata of every existing prefix of every path,
/// and `variant.toml` when the proposal rewrites it); writes nothing.
pub fn check_proposal(
    parent_tree: &Path,
    proposal: &Proposal,
    rules: &GuardRules,
) -> Result<CheckedProposal, Vec<Violation>> {
    let parent = match fs::metadata(parent_tree).and_then(|m| {
        if m.is_dir() {
            parent_tree.canonicalize()
        } else {
            Err(io::Error::other("not a directory"))
        }
    }) {
        Ok(p) => p,
        Err(e) => {
            return Err(vec![Violation::new(
                Rule::ParentTree,
                "",
                format!("the parent tree {} cannot be used: {e}", parent_tree.display()),
            )])
        }
    };
    let edits = &proposal.edits;
    if edits.len() > rules.max_edits {
        return Err(vec![Violation::new(
            Rule::TooManyEdits,
            edit_path(&edits[rules.max_edits]),
            format!("the proposal holds {} edits; at most {}", edits.len(), rules.max_edits),
        )]);
    }

    let mut violations = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut total: u64 = 0;
    let mut total_reported = false;
    let mut writes = Vec::new();
    let mut deletes = Vec::new();
    let mut escalation = None;
    let mut manifest_edited = false;

    for edit in edits {
        let path = edit_path(edit);
        if let Edit::Write(f) = edit {
            let len = f.contents.len() as u64;
            if len > rules.max_file_bytes {
                violations.push(Violation::new(
                    Rule::FileTooLarge,
                    path,
                    format!("the write is {len} bytes; at most {} per file", rules.max_file_bytes),
                ));
            }
            total = total.saturating_add(len);
            if total > rules.max_total_bytes && !total_reported {
                total_reported = true;
                let all: u64 = edits
                    .iter()
                    .map(|e| match e {
                        Edit::Write(f) => f.contents.len() as u64,
                        Edit::Delete(_) => 0,
                    })
                    .fold(0, u64::saturating_add);
                violations.push(Violation::new(
                    Rule::TooManyBytes,
                    path,
                    format!(
                        "the writes hold {all} bytes in all, past the cap of {} at this edit",
                        rules.max_total_bytes
                    ),
                ));
            }
        }
        if let Some((rule, detail)) = check_shape(path, rules) {
            violations.push(Violation::new(rule, path, detail));
            continue;
        }
        if !seen.insert(path) {
            violations.push(Violation::new(Rule::DuplicatePath, path, "the path is edited more than once"));
            continue;
        }
        if path == ESCALATION_FILE {
            match edit {
                Edit::Delete(_) => violations.push(Violation::new(
                    Rule::InvalidEscalation,
                    path,
                    "`escalation.toml` is a request, not a file of the tree; it cannot be deleted",
                )),
                Edit::Write(f) if f.contents.len() > MAX_ESCALATION_BYTES => violations.push(Violation::new(
                    Rule::InvalidEscalation,
                    path,
                    format!("the request is {} bytes; at most {MAX_ESCALATION_BYTES}", f.contents.len()),
                )),
                Edit::Write(f) => match std::str::from_utf8(&f.contents)
                    .map_err(|_| "the request is not UTF-8 text".to_string())
                    .and_then(|text| Escalation::parse(text, ESCALATION_FILE).map_err(|e| e.to_string()))
                {
                    Ok(e) => escalation = Some(e),
                    Err(why) => violations.push(Violation::new(Rule::InvalidEscalation, path, why)),
                },
            }
            continue;
        }
        if let Some(dir) = rules.skipped_component(path) {
            violations.push(Violation::new(
                Rule::BuildOutput,
                path,
                format!("`{dir}/` holds build outputs or metadata, not source"),
            ));
            continue;
        }
        let is_manifest = path.eq_ignore_ascii_case(MANIFEST_FILE);
        if is_manifest && path != MANIFEST_FILE {
            violations.push(Violation::new(
                Rule::ProtectedFile,
                path,
                format!("the path differs from `{MANIFEST_FILE}` only by case"),
            ));
            continue;
        }
        if is_manifest && matches!(edit, Edit::Delete(_)) {
            violations.push(Violation::new(Rule::ProtectedFile, path, "the manifest cannot be deleted"));
            continue;
        }
        if let Some(p) = rules.protected_by(path) {
            let verb = if matches!(edit, Edit::Write(_)) { "written" } else { "deleted" };
            violations.push(Violation::new(
                Rule::ProtectedFile,
                path,
                format!("protected ({p}); build files and the WIT cannot be {verb} by a proposal"),
            ));
            continue;
        }
        if let Some(v) = check_on_disk(&parent, path, matches!(edit, Edit::Delete(_))) {
            violations.push(v);
            continue;
        }
        match edit {
            Edit::Write(f) => {
                if is_manifest {
                    let found = check_manifest(&parent, &f.contents);
                    if !found.is_empty() {
                        violations.extend(found);
                        continue;
                    }
                    manifest_edited = true;
                }
                writes.push((f.path.clone(), f.contents.clone()));
            }
            Edit::Delete(p) => deletes.push(p.clone()),
        }
    }

    // A write under a path another write creates as a file.
    let written: HashSet<&str> = writes.iter().map(|(p, _)| p.as_str()).collect();
    for (path, _) in &writes {
        let mut prefix_end = 0;
        while let Some(i) = path[prefix_end..].find('/') {
            prefix_end += i;
            let prefix = &path[..prefix_end];
            if written.contains(prefix) {
                violations.push(Violation::new(
                    Rule::PathConflict,
                    path,
                    format!("`{prefix}` is written as a file by another edit"),
                ));
                break;
            }
            prefix_end += 1;
        }
    }

    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(CheckedProposal {
        parent,
        rules: rules.clone(),
        summary: proposal.summary.clone(),
        digest: proposal_digest(proposal),
        writes,
        deletes,
        escalation,
        manifest_edited,
    })
}

/// The symlink and conflict rules: every existing prefix of `path` in the
/// parent tree, inspected without following links.
fn check_on_disk(parent: &Path, path: &str, delete: bool) -> Option<Violation> {
    let components: Vec<&str> = path.split('/').collect();
    let mut at = parent.to_path_buf();
    for (i, c) in components.iter().enumerate() {
        at.push(c);
        let prefix = components[..=i].join("/");
        let last = i + 1 == components.len();
        let meta = match fs::symlink_metadata(&at) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return delete.then(|| {
                    Violation::new(Rule::PathConflict, path, "the file to delete does not exist in the parent tree")
                });
            }
            Err(e) => {
                return Some(Violation::new(Rule::PathConflict, path, format!("`{prefix}` cannot be inspected: {e}")))
            }
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let detail = if last {
                format!("`{prefix}` is a symbolic link in the parent tree")
            } else {
                format!("the path goes through `{prefix}`, a symbolic link in the parent tree")
            };
            return Some(Violation::new(Rule::PathSymlink, path, detail));
        }
        if !last && !ft.is_dir() {
            return Some(Violation::new(
                Rule::PathConflict,
                path,
                format!("`{prefix}` is a file in the parent tree, not a directory"),
            ));
        }
        if last && ft.is_dir() {
            return Some(Violation::new(Rule::PathConflict, path, "the path is a directory in the parent tree"));
        }
        if last && !ft.is_file() {
            return Some(Violation::new(
                Rule::PathConflict,
                path,
                "the path is a special file (device, socket or pipe) in the parent tree",
            ));
        }
    }
    None
}

/// The manifest rule: the new `variant.toml` parses, and its capabilities,
/// limits, language, builder and target are the parent's.
fn check_manifest(parent: &Path, new: &[u8]) -> Vec<Violation> {
    let bad = |detail: String| vec![Violation::new(Rule::InvalidManifest, MANIFEST_FILE, detail)];
    let Ok(text) = std::str::from_utf8(new) else {
        return bad("the new manifest is not UTF-8 text".into());
    };
    let new = match Manifest::parse(text, MANIFEST_FILE) {
        Ok(m) => m,
        Err(e) => return bad(format!("the new manifest does not parse: {e}")),
    };
    // `check_on_disk` has already refused a symlink here.
    let old_path = parent.join(MANIFEST_FILE);
    let old = match fs::read_to_string(&old_path) {
        Ok(text) => match Manifest::parse(&text, MANIFEST_FILE) {
            Ok(m) => Some(m),
            Err(e) => return bad(format!("the parent's manifest does not parse: {e}")),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return bad(format!("the parent's manifest cannot be read: {e}")),
    };
    let mut out = Vec::new();
    let section = |detail: String| Violation::new(Rule::ProtectedManifestSection, MANIFEST_FILE, detail);
    let (old_caps, old_limits) = old.as_ref().map(|m| (m.capabilities.clone(), m.limits.clone())).unwrap_or_default();
    if normalized_capabilities(&old_caps) != normalized_capabilities(&new.capabilities) {
        out.push(section(
            "`[capabilities]` differs from the parent's; ask for more in `escalation.toml` instead".into(),
        ));
    }
    if old_limits != new.limits {
        out.push(section("`[limits]` differs from the parent's; ask for more in `escalation.toml` instead".into()));
    }
    if let Some(old) = &old {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(default)".into());
        if old.variant.language != new.variant.language {
            out.push(section(format!(
                "`[variant] language` changed from `{}` to `{}`",
                old.variant.language, new.variant.language
            )));
        }
        if old.variant.builder != new.variant.builder {
            out.push(section(format!(
                "`[variant] builder` changed from `{}` to `{}`",
                show(&old.variant.builder),
                show(&new.variant.builder)
            )));
        }
        if old.variant.target != new.variant.target {
            out.push(section(format!(
                "`[variant] target` changed from `{}` to `{}`",
                show(&old.variant.target),
                show(&new.variant.target)
            )));
        }
    }
    out
}

/// `caps` with every set-like list sorted and a list holding `*` reduced
/// to `["*"]`, so that reordering a list is not a change.
fn normalized_capabilities(caps: &Capabilities) -> Capabilities {
    fn names(v: &mut Vec<String>) {
        if v.iter().any(|n| n == ANY) {
            *v = vec![ANY.to_string()];
        }
        v.sort();
        v.dedup();
    }
    let mut c = caps.clone();
    c.files.sort_by(|a, b| a.path.cmp(&b.path));
    c.env.sort();
    c.sockets.sort();
    if let Some(l) = &mut c.llm {
        names(&mut l.models);
    }
    if let Some(t) = &mut c.trainer {
        names(&mut t.backends);
    }
    if let Some(s) = &mut c.simulator {
        names(&mut s.envs);
    }
    c
}
