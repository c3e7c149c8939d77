//! The archive: every variant an evolution run produces — its source tree,
//! its component, its lineage and its scores — stored so that nothing is
//! lost when the host is killed at any moment, and a run can resume without
//! duplicating or re-evaluating anything.
//!
//! # Files
//!
//! [`Archive::open`] takes a directory (the host passes
//! [`Home::archive_dir`](crate::home::Home::archive_dir)) and keeps in it:
//!
//! * `blobs/ab/cdef…` — the content-addressed [`BlobStore`]: one read-only
//!   file per distinct content, named by the lowercase hex sha256 of its
//!   bytes (first two digits as a shard directory). Components, source
//!   files and tree manifests all live here;
//! * `blobs/ab/.tmp-*` — transient, while a blob is being written (left
//!   behind only by a crash mid-write; harmless, never read);
//! * `index.sqlite` (+ `-wal`, `-shm`) — the SQLite index: runs, variants,
//!   per-task results.
//!
//! A source tree is stored as one blob per file plus a canonical manifest
//! blob listing `(mode, sha256, path)`; the tree's sha is the manifest's
//! sha. See [`tree`] for the format and for what [`Archive::put_tree`] skips
//! (`target/`, `node_modules/`, `__pycache__/`, `.git/`) and refuses
//! (symbolic links, special files).
//!
//! # Schema (version 4)
//!
//! ```text
//! schema_version(version)                       one row: migrations applied
//! runs(id PK, config JSON, status, started, finished)
//!     status ∈ running | finished | stopped | failed
//! variants(seq INTEGER PK, id UNIQUE, run_id → runs, parent_id → variants,
//!          generation ≥ 0, language, component_sha?, tree_sha, grant_digest,
//!          visible_score?, held_out_score?, status, summary, created, updated,
//!          island?, cell?, repeats?, score_lo?, score_hi?, model?, tokens?)
//!     status ∈ pending | evaluated | failed | refused
//!     (the last seven, added by migration 3: see [`SearchFields`])
//!     UNIQUE (run_id, ifnull(component_sha, 'tree:' || tree_sha), ifnull(parent_id, ''))
//! results(variant_id → variants, split, task_id, passed, score, note)
//!     PK (variant_id, split, task_id); split ∈ visible | held-out
//! steps(run_id → runs, step, variant_id?, outcome, parent_id?)  PK (run_id, step)
//!     (parent_id, added by migration 4: the parent a step worked on, kept
//!     for a step that left no variant, e.g. a refused proposal)
//! ```
//!
//! Tables are `STRICT`; timestamps are RFC 3339 UTC with milliseconds
//! (`2026-04-14T12:34:56.789Z`). The children of a variant are not stored:
//! they are the rows whose `parent_id` names it, of any status — a parent
//! whose children keep failing counts them too, which is what the selection
//! formulas want. Migrations are described in [`schema`].
//!
//! # Variant ids and idempotency
//!
//! A variant's *identity* is `(run, content, parent)`, where content is the
//! component's sha256, or — for a variant that never got a component (refused
//! by the guard, failed to build) — `tree:` and its tree's sha.
//! [`Archive::add_variant`] looks the identity up first and returns the
//! existing row's id when it is there, so re-adding a variant after a crash
//! (`vivarium evolve --resume` redoing the step it was killed in) never
//! duplicates it; the first write's other fields win. Add a variant once its
//! content is known: the identity does not change afterwards.
//!
//! Its *id* is short and derived from the identity: the first 12 hex digits
//! of `sha256("vivarium-variant\0" run "\0" content "\0" parent)`, lengthened
//! 4 digits at a time in the (astronomically rare) case that prefix is taken
//! by another identity. So the same run id and the same choices give the
//! same ids in any archive — two runs with the same seed can be compared row
//! by row. [`Archive::resolve`] accepts any unique prefix of an id.
//!
//! # Durability
//!
//! * **Blobs first.** `put` writes a temp file in the blob's shard directory,
//!   `fsync`s it, renames it into place and `fsync`s the directory (and the
//!   parents it had to create) before returning. `add_variant` refuses a
//!   row whose tree, component or any file of the tree is not in the store
//!   (tree blobs themselves are written file-first, manifest last). So a
//!   crash at any moment leaves at worst an unreferenced blob — never a row
//!   pointing at a missing one.
//! * **One transaction per write.** Every method that writes does so in one
//!   `BEGIN IMMEDIATE` transaction (a variant row; a batch of results
//!   together with the scores and status they produce), so a reader sees all
//!   of it or none of it. Immediate transactions take the write lock up
//!   front, so two writers wait for each other (`busy_timeout` 10 s) instead
//!   of failing on a lock upgrade.
//! * **`journal_mode=WAL`, `synchronous=FULL`.** In WAL mode, `NORMAL` is
//!   already safe against the process dying (`kill -9`): a committed
//!   transaction is in the WAL file, which the next open replays. It is not
//!   safe against power loss or an OS crash, where the last commits can roll
//!   back. We pay for `FULL` — one more `fsync` of the WAL per commit, a
//!   millisecond or so, a handful of times per variant, negligible next to
//!   building and evaluating one — because the archive sits beside the audit
//!   log, which `fsync`s every record: with `NORMAL`, a power cut could keep
//!   the audit record of a variant and lose its archive row, and a resumed
//!   run would then re-spend the budget for it.
//! * **`foreign_keys=ON`**, so the database itself refuses a result for an
//!   unknown variant or a variant with an unknown parent or run.
//!
//! # Concurrency
//!
//! [`Archive`] is `Send + Sync`: one connection behind a mutex, so parallel
//! workers in one process can share an `Arc<Archive>`. Several processes may
//! open the same directory; SQLite's locks and the blob store's
//! rename-into-place keep them consistent.
//!
//! # Integrity
//!
//! [`Archive::integrity_check`] re-reads everything the index refers to and
//! returns an [`IntegrityReport`]: every referenced blob (components, tree
//! manifests, every file of every tree) present and hashing to its name; no
//! result without its variant; no variant without its run or with a missing
//! parent, a parent in another run, or a cycle in its lineage; and SQLite's
//! own `PRAGMA integrity_check`. [`BlobStore::get`] verifies every read too,
//! so a corrupt blob is never used silently.
//!
//! # Parent selection
//!
//! [`select`] holds the parent-selection methods (`dgm`, `dgm-h`, `greedy`,
//! `random`) as pure functions over [`Candidate`]s, seeded per step so a
//! resumed run makes the same choices. [`Archive::candidates`] gives a run's
//! evaluated variants in that shape.

mod blobs;
pub mod format;
mod integrity;
pub mod schema;
pub mod select;
pub mod tree;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};

pub use blobs::{is_sha256, sha256_hex, BlobState, BlobStore};
pub use integrity::{IntegrityReport, Problem};
pub use schema::SCHEMA_VERSION;
pub use select::{choose, choose_hgm, probabilities, weights, Candidate, Clade, Selection, SplitMix64};
pub use tree::TreeEntry;

use crate::audit::now_rfc3339;
use crate::error::{Error, Result};

/// The index's file name inside the archive directory.
pub const INDEX_FILE: &str = "index.sqlite";
/// The blob store's directory name inside the archive directory.
pub const BLOBS_DIR: &str = "blobs";

/// Hex digits in a fresh variant id.
const ID_DIGITS: usize = 12;
/// Longest run id, task id, language or grant digest accepted.
const MAX_NAME_BYTES: usize = 256;
/// How long a writer waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Wrap a rusqlite error as an internal error with context.
pub(crate) fn db_err(context: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| Error::Internal(anyhow::anyhow!("archive index: {context}: {e}"))
}

/// A variant's id in the archive (12+ lowercase hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VariantId(pub String);

impl VariantId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VariantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for VariantId {
    fn from(s: &str) -> Self {
        VariantId(s.to_string())
    }
}

impl From<String> for VariantId {
    fn from(s: String) -> Self {
        VariantId(s)
    }
}

/// Generates the string conversions of a kebab-case status enum.
macro_rules! string_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The name stored in the index and printed by the CLI.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(Error::invalid(format!(concat!("unknown ", $what, " {:?}"), other))),
                }
            }
        }
    };
}

/// Where a variant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VariantStatus {
    /// Archived, not (fully) evaluated yet.
    #[default]
    Pending,
    /// Evaluated; its scores are final.
    Evaluated,
    /// It did not build, or its evaluation failed as a whole.
    Failed,
    /// The guard or the policy refused it.
    Refused,
}
string_enum!(VariantStatus, "variant status", {
    Pending => "pending", Evaluated => "evaluated", Failed => "failed", Refused => "refused",
});

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Started (or resumed) and not ended.
    Running,
    /// Ran all its generations.
    Finished,
    /// Ended early and cleanly: a budget was reached, or it was interrupted.
    Stopped,
    /// Ended by an error.
    Failed,
}
string_enum!(RunStatus, "run status", {
    Running => "running", Finished => "finished", Stopped => "stopped", Failed => "failed",
});

/// Which task split a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Tasks whose results a variant's meta-agent may see.
    Visible,
    /// Tasks kept from every variant; their score shows reward hacking.
    HeldOut,
}
string_enum!(Split, "split", { Visible => "visible", HeldOut => "held-out" });

/// One run, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// The run's id.
    pub id: String,
    /// The run's configuration, as given to [`Archive::begin_run`].
    pub config: serde_json::Value,
    /// Where it stands.
    pub status: RunStatus,
    /// When it was first begun.
    pub started: String,
    /// When it last ended; `None` while running.
    pub finished: Option<String>,
}

/// A variant to archive; see [`Archive::add_variant`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewVariant {
    /// The run it belongs to (begun with [`Archive::begin_run`]).
    pub run_id: String,
    /// Its parent, in the same run; `None` for an initial variant.
    pub parent: Option<VariantId>,
    /// The generation (iteration) that made it; 0 for initial variants.
    pub generation: u32,
    /// Its language (`rust`, `python`, …).
    pub language: String,
    /// sha256 of its component, already [put](Archive::put); `None` when it
    /// was never built.
    pub component_sha: Option<String>,
    /// sha of its source tree, from [`Archive::put_tree`].
    pub tree_sha: String,
    /// Digest of the grant it runs under.
    pub grant_digest: String,
    /// Its status when archived (usually [`VariantStatus::Pending`]).
    pub status: VariantStatus,
    /// The proposal's summary, or why it was refused.
    pub summary: String,
}

/// A variant, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantRow {
    /// Its id.
    pub id: VariantId,
    /// Its run.
    pub run_id: String,
    /// Its parent, if any.
    pub parent: Option<VariantId>,
    /// The generation that made it.
    pub generation: u32,
    /// Its language.
    pub language: String,
    /// sha256 of its component, if it was built.
    pub component_sha: Option<String>,
    /// sha of its source tree.
    pub tree_sha: String,
    /// Digest of its grant.
    pub grant_digest: String,
    /// Its score on the visible split, once evaluated.
    pub visible_score: Option<f64>,
    /// Its score on the held-out split, once evaluated.
    pub held_out_score: Option<f64>,
    /// Where it stands.
    pub status: VariantStatus,
    /// The proposal's summary.
    pub summary: String,
    /// When it was archived.
    pub created: String,
    /// When it last changed.
    pub updated: String,
    /// How many variants name it as their parent (any status).
    pub children: u32,
    /// Where the search placed it and how sure its score is (absent in
    /// archives written before these columns, and for plain runs).
    #[serde(flatten)]
    pub search: SearchFields,
}

impl VariantRow {
    /// The score parent selection and "best" use: the lower bound of the
    /// 95 % interval when the variant was evaluated more than once, else
    /// its visible score.
    pub fn selection_score(&self) -> Option<f64> {
        match (self.search.repeats, self.search.score_lo) {
            (Some(n), Some(lo)) if n > 1 => Some(lo),
            _ => self.visible_score,
        }
    }
}

/// A variant's place in the search: island, quality-diversity cell, the
/// 95 % interval of its visible score over repeated evaluations, and the
/// model its proposal was routed to. Every field is optional, so an archive
/// written before them reads as "not recorded".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchFields {
    /// The island it lives on (`null` when not recorded).
    #[serde(default)]
    pub island: Option<u32>,
    /// Its MAP-Elites cell (bin indices joined by `,`; `null` without a
    /// grid).
    #[serde(default)]
    pub cell: Option<String>,
    /// Evaluations its visible score is the mean of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats: Option<u32>,
    /// Lower end of the 95 % interval of its visible score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_lo: Option<f64>,
    /// Upper end of the 95 % interval of its visible score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_hi: Option<f64>,
    /// The model its proposal was routed to (`[[models]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// LLM tokens the proposal that made it spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
}

/// One task's result for a variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The task's id.
    pub task_id: String,
    /// Its split.
    pub split: Split,
    /// Whether the grader accepted the answer.
    pub passed: bool,
    /// The grader's score.
    pub score: f64,
    /// A short note from the grader (why it failed, the limit hit, …).
    pub note: String,
}

/// The archive: a [`BlobStore`] and its SQLite index. See the
/// [module docs](self).
#[derive(Debug)]
pub struct Archive {
    dir: PathBuf,
    blobs: BlobStore,
    conn: Mutex<Connection>,
}

const VARIANT_COLUMNS: &str = "v.id, v.run_id, v.parent_id, v.generation, v.language, \
    v.component_sha, v.tree_sha, v.grant_digest, v.visible_score, v.held_out_score, v.status, \
    v.summary, v.created, v.updated, \
    (SELECT count(*) FROM variants c WHERE c.parent_id = v.id), \
    v.island, v.cell, v.repeats, v.score_lo, v.score_hi, v.model, v.tokens";

fn variant_from_row(r: &Row<'_>) -> rusqlite::Result<VariantRow> {
    let status: String = r.get(10)?;
    Ok(VariantRow {
        id: VariantId(r.get(0)?),
        run_id: r.get(1)?,
        parent: r.get::<_, Option<String>>(2)?.map(VariantId),
        generation: r.get(3)?,
        language: r.get(4)?,
        component_sha: r.get(5)?,
        tree_sha: r.get(6)?,
        grant_digest: r.get(7)?,
        visible_score: r.get(8)?,
        held_out_score: r.get(9)?,
        status: status.parse().map_err(|e: Error| {
            rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, e.to_string().into())
        })?,
        summary: r.get(11)?,
        created: r.get(12)?,
        updated: r.get(13)?,
        children: r.get(14)?,
        search: SearchFields {
            island: r.get(15)?,
            cell: r.get(16)?,
            repeats: r.get(17)?,
            score_lo: r.get(18)?,
            score_hi: r.get(19)?,
            model: r.get(20)?,
            tokens: r.get::<_, Option<i64>>(21)?.map(|t| t.max(0) as u64),
        },
    })
}

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    let conv =
        |i: usize, e: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into());
    let config: String = r.get(1)?;
    let status: String = r.get(2)?;
    Ok(RunRow {
        id: r.get(0)?,
        config: serde_json::from_str(&config).map_err(|e| conv(1, e.to_string()))?,
        status: status.parse().map_err(|e: Error| conv(2, e.to_string()))?,
        started: r.get(3)?,
        finished: r.get(4)?,
    })
}

/// `Err(Invalid)` unless `s` is 1..=MAX_NAME_BYTES bytes without control
/// characters.
fn check_name(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_NAME_BYTES || s.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} {s:?} must be 1 to {MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

fn check_score(what: &str, s: Option<f64>) -> Result<()> {
    match s {
        Some(x) if !x.is_finite() => Err(Error::invalid(format!("{what} {x} is not a finite number"))),
        _ => Ok(()),
    }
}

impl Archive {
    /// Open (creating if needed) the archive in `dir`, and bring its schema
    /// up to date. Fails with [`Error::Invalid`] on an archive written by a
    /// newer schema.
    pub fn open(dir: &Path) -> Result<Archive> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create the archive directory {}", dir.display()), e))?;
        let blobs = BlobStore::new(dir.join(BLOBS_DIR));
        std::fs::create_dir_all(blobs.root())
            .map_err(|e| Error::io(format!("cannot create {}", blobs.root().display()), e))?;
        let db = dir.join(INDEX_FILE);
        let mut conn = Connection::open(&db).map_err(db_err(&format!("cannot open {}", db.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err("cannot set busy_timeout"))?;
        let mode: String =
            conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(db_err("cannot switch to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Internal(anyhow::anyhow!(
                "archive index {}: journal_mode is {mode}, not wal (is the file system one SQLite can share memory on?)",
                db.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(db_err("cannot set pragmas"))?;
        schema::migrate(&mut conn)?;
        Ok(Archive { dir: dir.to_path_buf(), blobs, conn: Mutex::new(conn) })
    }

    /// The archive's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The SQLite index's path.
    pub fn index_path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The schema version of the open index (always [`SCHEMA_VERSION`]
    /// after `open`).
    pub fn schema_version(&self) -> Result<u32> {
        schema::version(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-transaction drops (rolls back) the transaction, so the
        // connection is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ------------------------------------------------------------- blobs

    /// Store `bytes` as a blob; returns their sha256. See [`BlobStore::put`].
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        self.blobs.put(bytes)
    }

    /// The blob `sha`, verified. See [`BlobStore::get`].
    pub fn get_blob(&self, sha: &str) -> Result<Vec<u8>> {
        self.blobs.get(sha)
    }

    /// Store the source tree under `dir`; returns the tree's sha. See
    /// [`tree::put_tree`].
    pub fn put_tree(&self, dir: &Path) -> Result<String> {
        tree::put_tree(&self.blobs, dir)
    }

    /// The files of tree `tree_sha`. See [`tree::read_tree`].
    pub fn read_tree(&self, tree_sha: &str) -> Result<Vec<TreeEntry>> {
        tree::read_tree(&self.blobs, tree_sha)
    }

    /// The files of tree `tree_sha` with their bytes, verified.
    pub fn tree_contents(&self, tree_sha: &str) -> Result<Vec<(TreeEntry, Vec<u8>)>> {
        tree::tree_contents(&self.blobs, tree_sha)
    }

    /// Write tree `tree_sha` out as `dest`. See [`tree::restore_tree`].
    pub fn restore_tree(&self, tree_sha: &str, dest: &Path) -> Result<()> {
        tree::restore_tree(&self.blobs, tree_sha, dest)
    }

    // -------------------------------------------------------------- runs

    /// Begin run `run_id` with `config` (any JSON), or resume it.
    ///
    /// A new run is stored as `running`. An existing run with an equal
    /// config is set back to `running` (a resume); one with a different
    /// config is refused with [`Error::Invalid`], so `--resume` cannot
    /// silently continue a run under other settings.
    pub fn begin_run(&self, run_id: &str, config: &serde_json::Value) -> Result<RunRow> {
        check_name("run id", run_id)?;
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err("cannot begin a transaction"))?;
        let existing = tx
            .query_row("SELECT id, config, status, started, finished FROM runs WHERE id = ?1", [run_id], run_from_row)
            .optional()
            .map_err(db_err("cannot read runs"))?;
        match existing {
            Some(run) if &run.config != config => {
                return Err(Error::invalid(format!(
                    "run {run_id:?} already exists with a different configuration; \
                     resume it with the same run file, start a run with a new id, \
                     or remove it with `vivarium archive rm-run {run_id}`"
                )));
            }
            Some(_) => {
                tx.execute("UPDATE runs SET status = 'running', finished = NULL WHERE id = ?1", [run_id])
                    .map_err(db_err("cannot resume the run"))?;
            }
            None => {
                tx.execute(
                    "INSERT INTO runs (id, config, status, started) VALUES (?1, ?2, 'running', ?3)",
                    params![run_id, config.to_string(), now_rfc3339()],
                )
                .map_err(db_err("cannot insert the run"))?;
            }
        }
        let row = tx
            .query_row("SELECT id, config, status, started, finished FROM runs WHERE id = ?1", [run_id], run_from_row)
            .map_err(db_err("cannot read runs"))?;
        tx.commit().map_err(db_err("cannot commit the run"))?;
        Ok(row)
    }

    /// Delete run `run_id`: its variants, their results, its step ledger and
    /// its row, in one transaction. Blobs stay (they are content-addressed
    /// and other runs may share them). Returns how many variants went, or
    /// `None` when there was no such run.
    ///
    /// The caller makes sure no process is writing the run (the run lock,
    /// `evolve::lock`).
    pub fn delete_run(&self, run_id: &str) -> Result<Option<usize>> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err("cannot begin a transaction"))?;
        let exists = tx
            .query_row("SELECT 1 FROM runs WHERE id = ?1", [run_id], |_| Ok(()))
            .optional()
            .map_err(db_err("cannot read runs"))?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let del = |sql: &str| tx.execute(sql, [run_id]).map_err(db_err("cannot delete the run"));
        del("DELETE FROM results WHERE variant_id IN (SELECT id FROM variants WHERE run_id = ?1)")?;
        del("DELETE FROM steps WHERE run_id = ?1")?;
        let variants = del("DELETE FROM variants WHERE run_id = ?1")?;
        del("DELETE FROM runs WHERE id = ?1")?;
        tx.commit().map_err(db_err("cannot commit the deletion"))?;
        Ok(Some(variants))
    }

    /// Mark run `run_id` ended with `status` (now as its `finished` time).
    pub fn finish_run(&self, run_id: &str, status: RunStatus) -> Result<()> {
        let conn = self.lock();
        let n = conn
            .execute(
                "UPDATE runs SET status = ?2, finished = CASE WHEN ?2 = 'running' THEN NULL ELSE ?3 END WHERE id = ?1",
                params![run_id, status.as_str(), now_rfc3339()],
            )
            .map_err(db_err("cannot update the run"))?;
        if n == 0 {
            return Err(Error::invalid(format!("no run {run_id:?} in the archive")));
        }
        Ok(())
    }

    /// Run `run_id`, if stored.
    pub fn get_run(&self, run_id: &str) -> Result<Option<RunRow>> {
        self.lock()
            .query_row("SELECT id, config, status, started, finished FROM runs WHERE id = ?1", [run_id], run_from_row)
            .optional()
            .map_err(db_err("cannot read runs"))
    }

    /// Every run, oldest first.
    pub fn list_runs(&self) -> Result<Vec<RunRow>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT id, config, status, started, finished FROM runs ORDER BY started, id")
            .map_err(db_err("cannot read runs"))?;
        let rows = stmt
            .query_map([], run_from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db_err("cannot read runs"));
        rows
    }

    // ---------------------------------------------------------- variants

    /// Archive a variant; returns its id. Idempotent: when a variant with the
    /// same identity (run, content, parent — see the [module docs](self)) is
    /// there already, returns its id and changes nothing.
    ///
    /// Refuses ([`Error::Invalid`]) a variant whose tree, any file of the
    /// tree, or component is not in the blob store yet (blobs first, so no
    /// row ever points at a missing blob), whose run was not begun, or whose
    /// parent is not a variant of the same run.
    pub fn add_variant(&self, v: &NewVariant) -> Result<VariantId> {
        self.add_variant_outcome(v).map(|(id, _)| id)
    }

    /// [`add_variant`](Self::add_variant), also saying whether a row was
    /// inserted (`true`) or an existing one found (`false`).
    pub fn add_variant_outcome(&self, v: &NewVariant) -> Result<(VariantId, bool)> {
        check_name("run id", &v.run_id)?;
        check_name("language", &v.language)?;
        if v.grant_digest.len() > MAX_NAME_BYTES || v.grant_digest.chars().any(char::is_control) {
            return Err(Error::invalid("grant digest must be at most 256 bytes without control characters"));
        }
        // Blobs first: everything the row will reference must be stored.
        let entries = self
            .read_tree(&v.tree_sha)
            .map_err(|e| Error::invalid(format!("variant's tree {} is not in the archive: {e}", v.tree_sha)))?;
        for e in &entries {
            if !self.blobs.contains(&e.sha256)? {
                return Err(Error::invalid(format!(
                    "file {} ({}) of tree {} is not in the archive; store the tree with put_tree",
                    e.path, e.sha256, v.tree_sha
                )));
            }
        }
        if let Some(c) = &v.component_sha {
            if !self.blobs.contains(c)? {
                return Err(Error::invalid(format!(
                    "component {c} is not in the archive; put its bytes before adding the variant"
                )));
            }
        }
        let content = match &v.component_sha {
            Some(c) => c.clone(),
            None => format!("tree:{}", v.tree_sha),
        };
        let parent = v.parent.as_ref().map(|p| p.0.as_str());

        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err("cannot begin a transaction"))?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT id FROM variants WHERE run_id = ?1 \
                 AND ifnull(component_sha, 'tree:' || tree_sha) = ?2 AND ifnull(parent_id, '') = ?3",
                params![v.run_id, content, parent.unwrap_or("")],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err("cannot look the variant up"))?;
        if let Some(id) = existing {
            return Ok((VariantId(id), false));
        }
        let run_exists: bool = tx
            .query_row("SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1)", [&v.run_id], |r| r.get(0))
            .map_err(db_err("cannot read runs"))?;
        if !run_exists {
            return Err(Error::invalid(format!("no run {:?} in the archive; begin it first", v.run_id)));
        }
        if let Some(p) = parent {
            let parent_run: Option<String> = tx
                .query_row("SELECT run_id FROM variants WHERE id = ?1", [p], |r| r.get(0))
                .optional()
                .map_err(db_err("cannot read the parent"))?;
            match parent_run {
                None => return Err(Error::invalid(format!("parent {p} is not in the archive"))),
                Some(r) if r != v.run_id => {
                    let msg = format!("parent {p} belongs to run {r:?}, not {:?}", v.run_id);
                    return Err(Error::invalid(format!("{msg}; parents must be in the same run")));
                }
                Some(_) => {}
            }
        }
        let full =
            sha256_hex(format!("vivarium-variant\0{}\0{content}\0{}", v.run_id, parent.unwrap_or("")).as_bytes());
        let mut id = None;
        for len in (ID_DIGITS..=64).step_by(4) {
            let candidate = &full[..len];
            let taken: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM variants WHERE id = ?1)", [candidate], |r| r.get(0))
                .map_err(db_err("cannot read variants"))?;
            if !taken {
                id = Some(candidate.to_string());
                break;
            }
        }
        let id = id.ok_or_else(|| Error::Internal(anyhow::anyhow!("variant id {full} is taken")))?;
        let now = now_rfc3339();
        tx.execute(
            "INSERT INTO variants (id, run_id, parent_id, generation, language, component_sha, tree_sha, \
             grant_digest, status, summary, created, updated) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
            params![
                id,
                v.run_id,
                parent,
                v.generation,
                v.language,
                v.component_sha,
                v.tree_sha,
                v.grant_digest,
                v.status.as_str(),
                v.summary,
                now
            ],
        )
        .map_err(db_err("cannot insert the variant"))?;
        tx.commit().map_err(db_err("cannot commit the variant"))?;
        Ok((VariantId(id), true))
    }

    /// Record results for variant `id` and set its scores and status, in one
    /// transaction.
    ///
    /// Results are upserted by `(split, task_id)`: recording the same task
    /// again replaces its row (a re-evaluation after a crash), and a later
    /// stage of a staged evaluation adds its tasks to the earlier ones. The
    /// scores are set to exactly what is given (`None` stores no score).
    /// Scores must be finite.
    pub fn record_results(
        &self,
        id: &VariantId,
        results: &[TaskResult],
        visible_score: Option<f64>,
        held_out_score: Option<f64>,
        status: VariantStatus,
    ) -> Result<()> {
        check_score("visible score", visible_score)?;
        check_score("held-out score", held_out_score)?;
        for r in results {
            check_name("task id", &r.task_id)?;
            check_score(&format!("score of task {:?}", r.task_id), Some(r.score))?;
        }
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err("cannot begin a transaction"))?;
        let n = tx
            .execute(
                "UPDATE variants SET visible_score = ?2, held_out_score = ?3, status = ?4, updated = ?5 WHERE id = ?1",
                params![id.0, visible_score, held_out_score, status.as_str(), now_rfc3339()],
            )
            .map_err(db_err("cannot update the variant"))?;
        if n == 0 {
            return Err(Error::invalid(format!("no variant {id} in the archive")));
        }
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO results (variant_id, split, task_id, passed, score, note) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (variant_id, split, task_id) DO UPDATE SET \
                     passed = excluded.passed, score = excluded.score, note = excluded.note",
                )
                .map_err(db_err("cannot prepare the results insert"))?;
            for r in results {
                stmt.execute(params![id.0, r.split.as_str(), r.task_id, r.passed, r.score, r.note])
                    .map_err(db_err("cannot insert a result"))?;
            }
        }
        tx.commit().map_err(db_err("cannot commit the results"))?;
        Ok(())
    }

    /// Set variant `id`'s [`SearchFields`] (every field, as given). The
    /// evolution loop calls it before [`record_results`](Self::record_results)
    /// marks the variant evaluated, so an evaluated variant always has them.
    ///
    /// Errors: [`Error::Invalid`] for no such variant, a non-finite bound,
    /// or a cell or model name that is not 1 to 256 bytes without control
    /// characters.
    pub fn set_search(&self, id: &VariantId, f: &SearchFields) -> Result<()> {
        check_score("score interval", f.score_lo)?;
        check_score("score interval", f.score_hi)?;
        if let Some(c) = &f.cell {
            check_name("cell", c)?;
        }
        if let Some(m) = &f.model {
            check_name("model", m)?;
        }
        let n = self
            .lock()
            .execute(
                "UPDATE variants SET island = ?2, cell = ?3, repeats = ?4, score_lo = ?5, score_hi = ?6, \
                 model = ?7, tokens = ?8, updated = ?9 WHERE id = ?1",
                params![
                    id.0,
                    f.island,
                    f.cell,
                    f.repeats,
                    f.score_lo,
                    f.score_hi,
                    f.model,
                    f.tokens.map(|t| t.min(i64::MAX as u64) as i64),
                    now_rfc3339()
                ],
            )
            .map_err(db_err("cannot update the variant's search fields"))?;
        if n == 0 {
            return Err(Error::invalid(format!("no variant {id} in the archive")));
        }
        Ok(())
    }

    /// Set variant `id`'s status, and its summary when one is given.
    pub fn set_status(&self, id: &VariantId, status: VariantStatus, summary: Option<&str>) -> Result<()> {
        let n = self
            .lock()
            .execute(
                "UPDATE variants SET status = ?2, summary = ifnull(?3, summary), updated = ?4 WHERE id = ?1",
                params![id.0, status.as_str(), summary, now_rfc3339()],
            )
            .map_err(db_err("cannot update the variant"))?;
        if n == 0 {
            return Err(Error::invalid(format!("no variant {id} in the archive")));
        }
        Ok(())
    }

    /// Variant `id`, if stored.
    pub fn get(&self, id: &VariantId) -> Result<Option<VariantRow>> {
        self.lock()
            .query_row(&format!("SELECT {VARIANT_COLUMNS} FROM variants v WHERE v.id = ?1"), [&id.0], variant_from_row)
            .optional()
            .map_err(db_err("cannot read the variant"))
    }

    /// The id of the one variant whose id starts with `prefix` (at least 4
    /// characters). [`Error::Invalid`] when none or several match.
    pub fn resolve(&self, prefix: &str) -> Result<VariantId> {
        if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!("{prefix:?} is not a variant id (at least 4 hex digits)")));
        }
        let prefix = prefix.to_ascii_lowercase();
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT id FROM variants WHERE substr(id, 1, ?2) = ?1 ORDER BY seq LIMIT 2")
            .map_err(db_err("cannot read variants"))?;
        let ids = stmt
            .query_map(params![prefix, prefix.len() as i64], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db_err("cannot read variants"))?;
        match ids.as_slice() {
            [one] => Ok(VariantId(one.clone())),
            [] => Err(Error::invalid(format!("no variant {prefix} in the archive"))),
            _ => Err(Error::invalid(format!("{prefix} names more than one variant; give more digits"))),
        }
    }

    /// Variants of run `run` (or of every run), in the order they were
    /// archived.
    pub fn list(&self, run: Option<&str>) -> Result<Vec<VariantRow>> {
        let conn = self.lock();
        let sql = format!("SELECT {VARIANT_COLUMNS} FROM variants v WHERE ?1 IS NULL OR v.run_id = ?1 ORDER BY v.seq");
        let mut stmt = conn.prepare(&sql).map_err(db_err("cannot read variants"))?;
        let rows = stmt
            .query_map([run], variant_from_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db_err("cannot read variants"));
        rows
    }

    /// The results recorded for variant `id`, visible split first, by task id.
    pub fn results(&self, id: &VariantId) -> Result<Vec<TaskResult>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT task_id, split, passed, score, note FROM results WHERE variant_id = ?1 \
                 ORDER BY split = 'held-out', task_id",
            )
            .map_err(db_err("cannot read results"))?;
        let rows = stmt
            .query_map([&id.0], |r| {
                let split: String = r.get(1)?;
                Ok(TaskResult {
                    task_id: r.get(0)?,
                    split: split.parse().map_err(|e: Error| {
                        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.to_string().into())
                    })?,
                    passed: r.get(2)?,
                    score: r.get(3)?,
                    note: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db_err("cannot read results"));
        rows
    }

    /// The chain from the root to variant `id`, root first, `id` last.
    /// [`Error::Invalid`] when `id` is unknown; [`Error::Internal`] when a
    /// parent is missing or the chain loops (a damaged index).
    pub fn lineage(&self, id: &VariantId) -> Result<Vec<VariantRow>> {
        let mut chain = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut next = Some(id.clone());
        while let Some(cur) = next {
            if !seen.insert(cur.clone()) {
                return Err(Error::Internal(anyhow::anyhow!(
                    "the lineage of {id} loops at {cur}; run the archive's integrity check"
                )));
            }
            let row = match self.get(&cur)? {
                Some(row) => row,
                None if chain.is_empty() => return Err(Error::invalid(format!("no variant {id} in the archive"))),
                None => {
                    return Err(Error::Internal(anyhow::anyhow!(
                        "the lineage of {id} names a missing parent {cur}; run the archive's integrity check"
                    )))
                }
            };
            next = row.parent.clone();
            chain.push(row);
        }
        chain.reverse();
        Ok(chain)
    }

    /// Per parent, how many distinct variants the finished steps of run
    /// `run` numbered below `before` produced. Unlike the variants' own
    /// children counts this ignores children left by an interrupted attempt,
    /// so a resumed run selects exactly as an uninterrupted one.
    pub fn recorded_children(&self, run: &str, before: u64) -> Result<std::collections::HashMap<String, u32>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT v.parent_id, count(DISTINCT v.id) FROM steps s JOIN variants v ON v.id = s.variant_id \
                 WHERE s.run_id = ?1 AND s.step < ?2 AND v.parent_id IS NOT NULL GROUP BY v.parent_id",
            )
            .map_err(db_err("cannot read steps"))?;
        let rows = stmt
            .query_map(rusqlite::params![run, before as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
            .map_err(db_err("cannot read steps"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_err("cannot read steps"))
    }

    /// Per parent, how many of the finished steps of run `run` numbered
    /// below `before` worked on it and left no variant (a refused proposal,
    /// or one whose meta-agent failed): the failures selection counts
    /// besides [`recorded_children`](Self::recorded_children).
    pub fn refused_children(&self, run: &str, before: u64) -> Result<std::collections::HashMap<String, u32>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT parent_id, count(*) FROM steps WHERE run_id = ?1 AND step < ?2 \
                 AND variant_id IS NULL AND parent_id IS NOT NULL GROUP BY parent_id",
            )
            .map_err(db_err("cannot read steps"))?;
        let rows = stmt
            .query_map(rusqlite::params![run, before as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
            .map_err(db_err("cannot read steps"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_err("cannot read steps"))
    }

    /// How many variants name `id` as their parent.
    pub fn children_count(&self, id: &VariantId) -> Result<u32> {
        self.lock()
            .query_row("SELECT count(*) FROM variants WHERE parent_id = ?1", [&id.0], |r| r.get(0))
            .map_err(db_err("cannot count children"))
    }

    /// The variants of run `run` a parent can be chosen from — evaluated,
    /// with a visible score — with their children counts, in archive order
    /// (so `greedy`'s ties go to the earliest).
    pub fn candidates(&self, run: &str) -> Result<Vec<Candidate>> {
        Ok(self
            .list(Some(run))?
            .into_iter()
            .filter(|v| v.status == VariantStatus::Evaluated)
            .filter_map(|v| v.visible_score.map(|score| Candidate { id: v.id, score, children: v.children }))
            .collect())
    }

    /// Record that step `step` of run `run` is finished, with the variant it
    /// produced (if any) and a one-word outcome (`accepted`, `refused`, …).
    /// Recording a finished step again is a no-op.
    pub fn record_step(&self, run: &str, step: u64, variant: Option<&VariantId>, outcome: &str) -> Result<()> {
        self.record_step_of(run, step, None, variant, outcome)
    }

    /// [`record_step`](Self::record_step) for a step that worked on
    /// `parent`: a step that ends without a variant (a refused proposal)
    /// still counts against its parent ([`refused_children`](Self::refused_children)).
    pub fn record_step_of(
        &self,
        run: &str,
        step: u64,
        parent: Option<&VariantId>,
        variant: Option<&VariantId>,
        outcome: &str,
    ) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT OR IGNORE INTO steps (run_id, step, variant_id, outcome, parent_id) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![run, step as i64, variant.map(|v| v.0.clone()), outcome, parent.map(|v| v.0.clone())],
        )
        .map_err(|e| Error::Internal(anyhow::anyhow!("recording step {step} of run {run}: {e}")))?;
        Ok(())
    }

    /// Every finished step of run `run`, in step order, with the variant
    /// it produced (if any) and its outcome.
    pub fn steps(&self, run: &str) -> Result<Vec<(u64, Option<VariantId>, String)>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT step, variant_id, outcome FROM steps WHERE run_id = ?1 ORDER BY step")
            .map_err(db_err("cannot read steps"))?;
        let rows = stmt
            .query_map([run], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Option<String>>(1)?.map(VariantId), r.get::<_, String>(2)?))
            })
            .map_err(db_err("cannot read steps"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(db_err("cannot read steps"))
    }

    /// The record of step `step` of run `run`: `None` when it has not
    /// finished; otherwise the variant it produced (if any) and its outcome.
    pub fn step(&self, run: &str, step: u64) -> Result<Option<(Option<VariantId>, String)>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT variant_id, outcome FROM steps WHERE run_id = ?1 AND step = ?2")
            .map_err(|e| Error::Internal(anyhow::anyhow!("reading steps: {e}")))?;
        let mut rows = stmt
            .query(rusqlite::params![run, step as i64])
            .map_err(|e| Error::Internal(anyhow::anyhow!("reading steps: {e}")))?;
        match rows.next().map_err(|e| Error::Internal(anyhow::anyhow!("reading steps: {e}")))? {
            None => Ok(None),
            Some(r) => {
                let v: Option<String> = r.get(0).map_err(|e| Error::Internal(anyhow::anyhow!("{e}")))?;
                let o: String = r.get(1).map_err(|e| Error::Internal(anyhow::anyhow!("{e}")))?;
                Ok(Some((v.map(VariantId), o)))
            }
        }
    }

    /// How many finished steps of run `run` ended with each outcome
    /// (`initial`, `accepted`, `refused`, `guest-failed`, `no-parent`):
    /// progress counts attempts, not only the children that were archived.
    pub fn step_outcomes(&self, run: &str) -> Result<std::collections::BTreeMap<String, u64>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT outcome, COUNT(*) FROM steps WHERE run_id = ?1 GROUP BY outcome")
            .map_err(|e| Error::Internal(anyhow::anyhow!("reading steps: {e}")))?;
        let rows = stmt
            .query_map(rusqlite::params![run], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| Error::Internal(anyhow::anyhow!("reading steps: {e}")))?;
        let mut out = std::collections::BTreeMap::new();
        for row in rows {
            let (outcome, n) = row.map_err(|e| Error::Internal(anyhow::anyhow!("reading steps: {e}")))?;
            out.insert(outcome, n.max(0) as u64);
        }
        Ok(out)
    }

    /// The evaluated variant of run `run` with the highest visible score
    /// (the earliest on ties), if any. A variant evaluated more than once
    /// is ranked by its interval's lower bound ([`SearchFields::score_lo`]),
    /// so one lucky evaluation does not make a variant the best.
    ///
    /// A variant stopped at the first stage of a staged evaluation (no
    /// held-out score) is scored on a few tasks only, so it is the best
    /// only when no variant was scored on the whole suite: 14 of the first
    /// 20 is not a better 70 % than 51 of 82.
    pub fn best(&self, run: &str) -> Result<Option<VariantRow>> {
        let rank = |v: &VariantRow| Some((v.held_out_score.is_some(), v.selection_score()?));
        let mut best: Option<(VariantRow, (bool, f64))> = None;
        for v in self.list(Some(run))? {
            let Some(s) = rank(&v).filter(|_| v.status == VariantStatus::Evaluated) else {
                continue;
            };
            if best.as_ref().is_none_or(|(_, b)| s.0 > b.0 || (s.0 == b.0 && s.1 > b.1)) {
                best = Some((v, s));
            }
        }
        Ok(best.map(|(v, _)| v))
    }

    /// Check everything the index refers to. See [`IntegrityReport`].
    pub fn integrity_check(&self) -> Result<IntegrityReport> {
        integrity::check(self)
    }
}
