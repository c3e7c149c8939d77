//! The index's schema and its migrations.
//!
//! `schema_version` holds one row, the number of migrations applied. Opening
//! an archive applies the missing ones in order, each in the same
//! `BEGIN IMMEDIATE` transaction as the version bump, so a crash leaves the
//! schema at one version or the next, never between. An archive written by a
//! newer vivarium (a version above [`SCHEMA_VERSION`]) is refused rather
//! than misread.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::db_err;
use crate::error::{Error, Result};

/// Migration `i` (0-based) takes the schema from version `i` to `i + 1`.
/// Append only; never edit a migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: runs, variants, results.
    r#"
    CREATE TABLE runs (
        id       TEXT PRIMARY KEY NOT NULL,
        config   TEXT NOT NULL CHECK (json_valid(config)),
        status   TEXT NOT NULL CHECK (status IN ('running', 'finished', 'stopped', 'failed')),
        started  TEXT NOT NULL,
        finished TEXT
    ) STRICT;

    CREATE TABLE variants (
        seq            INTEGER PRIMARY KEY,
        id             TEXT NOT NULL UNIQUE,
        run_id         TEXT NOT NULL REFERENCES runs(id),
        parent_id      TEXT REFERENCES variants(id),
        generation     INTEGER NOT NULL CHECK (generation >= 0),
        language       TEXT NOT NULL,
        component_sha  TEXT,
        tree_sha       TEXT NOT NULL,
        grant_digest   TEXT NOT NULL,
        visible_score  REAL,
        held_out_score REAL,
        status         TEXT NOT NULL CHECK (status IN ('pending', 'evaluated', 'failed', 'refused')),
        summary        TEXT NOT NULL,
        created        TEXT NOT NULL,
        updated        TEXT NOT NULL
    ) STRICT;

    -- A variant's identity: its run, its content (the component, or the tree
    -- for one that never got built) and its parent. add_variant looks this up
    -- first, which is what makes it idempotent.
    CREATE UNIQUE INDEX variants_identity ON variants (
        run_id, ifnull(component_sha, 'tree:' || tree_sha), ifnull(parent_id, '')
    );
    CREATE INDEX variants_parent ON variants (parent_id);
    CREATE INDEX variants_run ON variants (run_id, seq);

    CREATE TABLE results (
        variant_id TEXT NOT NULL REFERENCES variants(id),
        split      TEXT NOT NULL CHECK (split IN ('visible', 'held-out')),
        task_id    TEXT NOT NULL,
        passed     INTEGER NOT NULL CHECK (passed IN (0, 1)),
        score      REAL NOT NULL,
        note       TEXT NOT NULL,
        PRIMARY KEY (variant_id, split, task_id)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 2: the evolution loop's step ledger, so a resumed run skips finished steps.
    r#"
    CREATE TABLE steps (
        run_id     TEXT NOT NULL REFERENCES runs(id),
        step       INTEGER NOT NULL CHECK (step >= 0),
        variant_id TEXT REFERENCES variants(id),
        outcome    TEXT NOT NULL,
        PRIMARY KEY (run_id, step)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 3: where the search placed a variant (island, quality-diversity cell),
    // its score's interval over repeated evaluations, and the model its
    // proposal went to. Nullable, so rows written before read as "not
    // recorded".
    r#"
    ALTER TABLE variants ADD COLUMN island INTEGER CHECK (island >= 0);
    ALTER TABLE variants ADD COLUMN cell TEXT;
    ALTER TABLE variants ADD COLUMN repeats INTEGER CHECK (repeats >= 1);
    ALTER TABLE variants ADD COLUMN score_lo REAL;
    ALTER TABLE variants ADD COLUMN score_hi REAL;
    ALTER TABLE variants ADD COLUMN model TEXT;
    ALTER TABLE variants ADD COLUMN tokens INTEGER CHECK (tokens >= 0);
    "#,
    // 4: the parent a step worked on, so a refused proposal (a step with no
    // variant) still counts against its parent in selection. Nullable: steps
    // written before read as "not recorded".
    r#"
    ALTER TABLE steps ADD COLUMN parent_id TEXT REFERENCES variants(id);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Bring the database to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err("cannot start the schema migration"))?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL) STRICT;")
        .map_err(db_err("cannot create schema_version"))?;
    let current: Option<i64> = tx
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()
        .map_err(db_err("cannot read schema_version"))?;
    let current = current.unwrap_or(0);
    if current < 0 || current > i64::from(SCHEMA_VERSION) {
        return Err(Error::invalid(format!(
            "the archive's schema is version {current}, newer than this vivarium understands \
             ({SCHEMA_VERSION}); use a newer vivarium"
        )));
    }
    if current == i64::from(SCHEMA_VERSION) {
        return Ok(()); // nothing to do; the transaction rolls back
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).map_err(db_err(&format!("schema migration {} failed", i + 1)))?;
    }
    tx.execute("DELETE FROM schema_version", []).map_err(db_err("cannot update schema_version"))?;
    tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [SCHEMA_VERSION])
        .map_err(db_err("cannot update schema_version"))?;
    tx.commit().map_err(db_err("cannot commit the schema migration"))?;
    Ok(())
}

/// The schema version recorded in `conn` (0 for a database without one).
pub(crate) fn version(conn: &Connection) -> Result<u32> {
    let v: Option<i64> = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()
        .map_err(db_err("cannot read schema_version"))?;
    Ok(v.unwrap_or(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive written by the build before migration 3 (schema 2, one run
    /// and one evaluated variant) opens, gains the search columns as "not
    /// recorded", and keeps everything it held.
    #[test]
    fn an_archive_of_schema_two_opens_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let archive = super::super::Archive::open(dir.path()).unwrap();
        archive.begin_run("old", &serde_json::json!({})).unwrap();
        let tree_dir = dir.path().join("t");
        std::fs::create_dir_all(&tree_dir).unwrap();
        std::fs::write(tree_dir.join("variant.toml"), "[variant]\n").unwrap();
        let tree = archive.put_tree(&tree_dir).unwrap();
        let id = archive
            .add_variant(&super::super::NewVariant {
                run_id: "old".into(),
                language: "wat".into(),
                tree_sha: tree,
                grant_digest: "g".into(),
                summary: "initial".into(),
                ..Default::default()
            })
            .unwrap();
        archive.record_results(&id, &[], Some(0.5), None, super::super::VariantStatus::Evaluated).unwrap();
        let path = archive.index_path();
        drop(archive);
        // Take the database back to schema 2: drop the columns migration 3 added.
        let conn = Connection::open(&path).unwrap();
        for col in ["island", "cell", "repeats", "score_lo", "score_hi", "model", "tokens"] {
            conn.execute_batch(&format!("ALTER TABLE variants DROP COLUMN {col}")).unwrap();
        }
        conn.execute_batch("ALTER TABLE steps DROP COLUMN parent_id").unwrap();
        conn.execute("UPDATE schema_version SET version = 2", []).unwrap();
        drop(conn);

        let archive = super::super::Archive::open(dir.path()).unwrap();
        assert_eq!(archive.schema_version().unwrap(), SCHEMA_VERSION);
        let rows = archive.list(Some("old")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].visible_score, Some(0.5));
        assert_eq!(rows[0].search, Default::default(), "not recorded");
        assert!(archive.integrity_check().unwrap().is_ok());
        let f = super::super::SearchFields { island: Some(1), cell: Some("0,2".into()), ..Default::default() };
        archive.set_search(&rows[0].id, &f).unwrap();
        assert_eq!(archive.get(&rows[0].id).unwrap().unwrap().search, f);
        // `archive list --json` prints the rows: island and cell are always
        // there (null when not recorded), the rest only when recorded.
        let json = serde_json::to_value(archive.get(&rows[0].id).unwrap().unwrap()).unwrap();
        assert_eq!((json["island"].clone(), json["cell"].clone()), (serde_json::json!(1), serde_json::json!("0,2")));
        let old_row = serde_json::to_value(&rows[0]).unwrap();
        assert!(old_row.get("island").is_some_and(|v| v.is_null()) && old_row.get("model").is_none(), "{old_row}");
    }
}
