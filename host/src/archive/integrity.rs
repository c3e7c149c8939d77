//! [`Archive::integrity_check`]: does the index agree with itself and with
//! the blob store?

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::blobs::{is_sha256, BlobState};
use super::{db_err, tree, Archive};
use crate::error::Result;

/// One thing wrong with an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Problem {
    /// SQLite's `PRAGMA integrity_check` reported this line.
    Sqlite {
        /// SQLite's message.
        detail: String,
    },
    /// A blob the index refers to is not in the store.
    MissingBlob {
        /// The blob's name.
        sha: String,
        /// Who refers to it, e.g. `variant 3fa9c1e0b2d4 (component)`.
        referenced_by: String,
    },
    /// A blob the index refers to does not hash to its name.
    CorruptBlob {
        /// The blob's name.
        sha: String,
        /// What its bytes hash to.
        actual: String,
        /// Who refers to it.
        referenced_by: String,
    },
    /// A variant's tree blob is intact but is not a valid manifest, or a
    /// sha column holds something that is not a sha256.
    BadRow {
        /// The variant.
        variant: String,
        /// What is wrong.
        detail: String,
    },
    /// A result whose variant is not in the index.
    OrphanResult {
        /// The missing variant the result names.
        variant: String,
        /// The result's split.
        split: String,
        /// The result's task.
        task_id: String,
    },
    /// A variant whose run is not in the index.
    MissingRun {
        /// The variant.
        variant: String,
        /// The run it names.
        run: String,
    },
    /// A variant whose parent is not in the index.
    MissingParent {
        /// The variant.
        variant: String,
        /// The parent it names.
        parent: String,
    },
    /// A variant whose parent belongs to another run.
    ParentInOtherRun {
        /// The variant.
        variant: String,
        /// Its run.
        run: String,
        /// Its parent.
        parent: String,
        /// The parent's run.
        parent_run: String,
    },
    /// Variants whose parent links form a loop.
    Cycle {
        /// The variants on the loop, each the parent of the one before.
        variants: Vec<String>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Sqlite { detail } => write!(f, "sqlite integrity_check: {detail}"),
            Problem::MissingBlob { sha, referenced_by } => {
                write!(f, "blob {sha} is missing (referenced by {referenced_by})")
            }
            Problem::CorruptBlob { sha, actual, referenced_by } => {
                write!(f, "blob {sha} is corrupt: its bytes hash to {actual} (referenced by {referenced_by})")
            }
            Problem::BadRow { variant, detail } => write!(f, "variant {variant}: {detail}"),
            Problem::OrphanResult { variant, split, task_id } => {
                write!(f, "result {split}/{task_id} names variant {variant}, which is not in the index")
            }
            Problem::MissingRun { variant, run } => {
                write!(f, "variant {variant} names run {run:?}, which is not in the index")
            }
            Problem::MissingParent { variant, parent } => {
                write!(f, "variant {variant} names parent {parent}, which is not in the index")
            }
            Problem::ParentInOtherRun { variant, run, parent, parent_run } => {
                write!(f, "variant {variant} of run {run:?} has parent {parent} of run {parent_run:?}")
            }
            Problem::Cycle { variants } => write!(f, "lineage loops: {}", variants.join(" → ")),
        }
    }
}

/// What [`Archive::integrity_check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityReport {
    /// Runs in the index.
    pub runs: usize,
    /// Variants in the index.
    pub variants: usize,
    /// Result rows in the index.
    pub results: usize,
    /// Distinct blobs referenced and read (components, manifests, files).
    pub blobs_checked: usize,
    /// Everything wrong, in the order found; empty when all is well.
    pub problems: Vec<Problem>,
}

impl IntegrityReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

struct VariantRef {
    id: String,
    run: String,
    parent: Option<String>,
    component: Option<String>,
    tree: String,
}

pub(super) fn check(archive: &Archive) -> Result<IntegrityReport> {
    let mut report = IntegrityReport::default();

    // One consistent snapshot of the index (a read transaction), then the
    // blobs outside the lock. Rows are only ever added after their blobs,
    // so a writer running meanwhile cannot make this report a false alarm.
    let (variants, runs, orphans) = {
        let mut conn = archive.lock();
        let tx = conn.transaction().map_err(db_err("cannot begin a read transaction"))?;
        let mut sqlite = Vec::new();
        {
            let mut stmt = tx.prepare("PRAGMA integrity_check").map_err(db_err("integrity_check"))?;
            let lines = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db_err("integrity_check"))?;
            for line in lines {
                if line != "ok" {
                    sqlite.push(Problem::Sqlite { detail: line });
                }
            }
        }
        report.problems.extend(sqlite);
        let runs: HashSet<String> = {
            let mut stmt = tx.prepare("SELECT id FROM runs").map_err(db_err("cannot read runs"))?;
            let ids = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<HashSet<_>>>())
                .map_err(db_err("cannot read runs"))?;
            ids
        };
        let variants: Vec<VariantRef> = {
            let mut stmt = tx
                .prepare("SELECT id, run_id, parent_id, component_sha, tree_sha FROM variants ORDER BY seq")
                .map_err(db_err("cannot read variants"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(VariantRef {
                        id: r.get(0)?,
                        run: r.get(1)?,
                        parent: r.get(2)?,
                        component: r.get(3)?,
                        tree: r.get(4)?,
                    })
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db_err("cannot read variants"))?;
            rows
        };
        report.results = tx
            .query_row("SELECT count(*) FROM results", [], |r| r.get::<_, i64>(0))
            .map_err(db_err("cannot count results"))? as usize;
        let orphans: Vec<Problem> = {
            let mut stmt = tx
                .prepare(
                    "SELECT r.variant_id, r.split, r.task_id FROM results r \
                     WHERE NOT EXISTS (SELECT 1 FROM variants v WHERE v.id = r.variant_id) \
                     ORDER BY r.variant_id, r.split, r.task_id",
                )
                .map_err(db_err("cannot read results"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Problem::OrphanResult { variant: r.get(0)?, split: r.get(1)?, task_id: r.get(2)? })
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db_err("cannot read results"))?;
            rows
        };
        (variants, runs, orphans)
    };
    report.runs = runs.len();
    report.variants = variants.len();
    report.problems.extend(orphans);

    // Rows: runs and parents.
    let by_id: HashMap<&str, &VariantRef> = variants.iter().map(|v| (v.id.as_str(), v)).collect();
    for v in &variants {
        if !runs.contains(&v.run) {
            report.problems.push(Problem::MissingRun { variant: v.id.clone(), run: v.run.clone() });
        }
        if let Some(p) = &v.parent {
            match by_id.get(p.as_str()) {
                None => report.problems.push(Problem::MissingParent { variant: v.id.clone(), parent: p.clone() }),
                Some(parent) if parent.run != v.run => report.problems.push(Problem::ParentInOtherRun {
                    variant: v.id.clone(),
                    run: v.run.clone(),
                    parent: p.clone(),
                    parent_run: parent.run.clone(),
                }),
                Some(_) => {}
            }
        }
    }
    report.problems.extend(cycles(&variants, &by_id));

    // Blobs: each distinct one read once.
    let mut seen: HashMap<String, BlobState> = HashMap::new();
    let mut check_blob = |sha: &str, referenced_by: &dyn Fn() -> String, problems: &mut Vec<Problem>| -> Result<bool> {
        let state = match seen.get(sha) {
            Some(s) => s.clone(),
            None => {
                let s = archive.blobs().check(sha)?;
                seen.insert(sha.to_string(), s.clone());
                s
            }
        };
        match state {
            BlobState::Intact => Ok(true),
            BlobState::Missing => {
                problems.push(Problem::MissingBlob { sha: sha.to_string(), referenced_by: referenced_by() });
                Ok(false)
            }
            BlobState::Corrupt { actual } => {
                problems.push(Problem::CorruptBlob { sha: sha.to_string(), actual, referenced_by: referenced_by() });
                Ok(false)
            }
        }
    };
    let mut problems = Vec::new();
    for v in &variants {
        if let Some(c) = &v.component {
            if is_sha256(c) {
                check_blob(c, &|| format!("variant {} (component)", v.id), &mut problems)?;
            } else {
                problems.push(Problem::BadRow {
                    variant: v.id.clone(),
                    detail: format!("component_sha {c:?} is not a sha256"),
                });
            }
        }
        if !is_sha256(&v.tree) {
            problems.push(Problem::BadRow {
                variant: v.id.clone(),
                detail: format!("tree_sha {:?} is not a sha256", v.tree),
            });
            continue;
        }
        if !check_blob(&v.tree, &|| format!("variant {} (tree)", v.id), &mut problems)? {
            continue;
        }
        let entries = match tree::parse_manifest(&archive.blobs().get(&v.tree)?) {
            Ok(e) => e,
            Err(e) => {
                problems.push(Problem::BadRow { variant: v.id.clone(), detail: format!("tree {}: {e}", v.tree) });
                continue;
            }
        };
        for e in &entries {
            check_blob(&e.sha256, &|| format!("variant {}: {}", v.id, e.path), &mut problems)?;
        }
    }
    report.blobs_checked = seen.len();
    report.problems.extend(problems);
    Ok(report)
}

/// Every loop in the parent links, each reported once.
fn cycles(variants: &[VariantRef], by_id: &HashMap<&str, &VariantRef>) -> Vec<Problem> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::new();
    let mut found = Vec::new();
    for start in variants {
        let mut path: Vec<&str> = Vec::new();
        let mut cur = Some(start.id.as_str());
        while let Some(id) = cur {
            match marks.get(id) {
                Some(Mark::Done) => break,
                Some(Mark::OnPath) => {
                    let at = path.iter().position(|p| *p == id).expect("on the current path");
                    found.push(Problem::Cycle { variants: path[at..].iter().map(|s| s.to_string()).collect() });
                    break;
                }
                None => {}
            }
            marks.insert(id, Mark::OnPath);
            path.push(id);
            cur = by_id.get(id).and_then(|v| v.parent.as_deref());
        }
        for id in path {
            marks.insert(id, Mark::Done);
        }
    }
    found
}
