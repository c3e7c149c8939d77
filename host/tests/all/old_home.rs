//! A home written by an earlier `vivarium` (before the services moved into
//! one folder each), checked in under `host/tests/fixtures/`: today's
//! binary opens it, verifies its audit chain, lists and reports its run,
//! and resumes the run where the old process was killed, appending to the
//! chain without rewriting a byte of it.
//!
//! The fixture's README says how it was made. Its grants name `trainer`,
//! `simulator`, `memory` and `archive`, so a grant written today for the
//! same manifest must have the same digest as the old one: the grant's
//! serialized form is part of the archive format.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::cli::copy_dir;

/// The old run's name, its variants (in the order `archive list` gives),
/// and the digest of the grant every one of them was run under.
const RUN: &str = "old";
const IDS: [&str; 4] = ["3ab8dacaf9b6", "03f6fc5b1ee8", "9372374be3c9", "4e840039861e"];
const GRANT_DIGEST: &str = "305b7b8e7c8738c021c82aac1b429cdd9968ef07eebd311223084da6f269b69a";
/// The old chain's head: its last record and that record's hash.
const HEAD_SEQ: u64 = 102;
const HEAD_HASH: &str = "b340831c32924cbd7705ab859eea9d8a0a49d7da3ed928cb0fb2baeb0e99edb1";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/home-before-slices")
}

/// `vivarium` run in `dir` (where the run file and its `agent` are) on the
/// home `dir/home`.
fn vivarium(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vivarium"))
        .args(args)
        .current_dir(dir)
        .env("VIVARIUM_HOME", dir.join("home"))
        .output()
        .expect("vivarium runs")
}

fn json(o: &Output) -> Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn a_home_written_before_the_service_slices_verifies_lists_reports_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    copy_dir(&fixture(), dir);
    let audit_file = dir.join("home/audit/audit.jsonl");
    let old_audit = std::fs::read(&audit_file).unwrap();

    // The chain verifies as written.
    let v = json(&vivarium(dir, &["audit", "verify", "--json"]));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"], HEAD_SEQ + 1, "{v}");
    assert_eq!(v["last_hash"], HEAD_HASH, "{v}");

    // The run shows as killed mid-way, with its variants.
    let runs = json(&vivarium(dir, &["archive", "runs", "--json"]));
    assert_eq!(runs[0]["id"], RUN, "{runs}");
    assert_eq!(runs[0]["status"], "interrupted", "{runs}");
    let rows = json(&vivarium(dir, &["archive", "list", "--run", RUN, "--json"]));
    let ids: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, IDS, "{rows}");
    assert!(rows.as_array().unwrap().iter().all(|r| r["grant_digest"] == GRANT_DIGEST), "{rows}");
    let shown = vivarium(dir, &["archive", "show", IDS[2]]);
    assert_eq!(shown.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&shown.stdout).contains(&format!("parent      {}", IDS[1])));

    // The old grant reads back with its provenance, every service named.
    let g = vivarium(dir, &["audit", "grants", IDS[3]]);
    assert_eq!(g.status.code(), Some(0), "{}", String::from_utf8_lossy(&g.stderr));
    let text = String::from_utf8_lossy(&g.stdout);
    for line in ["trainer.gpu_seconds", "simulator.steps", "memory.bytes", "archive", GRANT_DIGEST] {
        assert!(text.contains(line), "`audit grants` lacks {line:?}:\n{text}");
    }

    // The report of the old run is written and names its best variant.
    let report = dir.join("report.html");
    let o = vivarium(
        dir,
        &["report", &dir.join("home/runs/old").display().to_string(), "-o", &report.display().to_string()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(&report).unwrap().contains(IDS[3]));

    // The run resumes and finishes; the old records are untouched and the
    // chain still verifies with the new records after them.
    let done = json(&vivarium(dir, &["evolve", "run.toml", "--resume", "--json"]));
    assert_eq!(done["stop"], "finished", "{done}");
    assert!(done["variants"].as_u64().unwrap() > IDS.len() as u64, "{done}");
    let runs = json(&vivarium(dir, &["archive", "runs", "--json"]));
    assert_eq!(runs[0]["status"], "finished", "{runs}");
    let new_audit = std::fs::read(&audit_file).unwrap();
    assert!(new_audit.len() > old_audit.len() && new_audit.starts_with(&old_audit), "the old records were rewritten");
    let v = json(&vivarium(dir, &["audit", "verify", "--json"]));
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["records"].as_u64().unwrap() > HEAD_SEQ + 1, "{v}");

    // The same manifest under today's code gets the same grant, byte for
    // byte: every variant of the resumed run carries the old digest.
    let rows = json(&vivarium(dir, &["archive", "list", "--run", RUN, "--json"]));
    assert!(rows.as_array().unwrap().len() > IDS.len());
    for r in rows.as_array().unwrap() {
        assert_eq!(r["grant_digest"], GRANT_DIGEST, "a grant's serialized form changed: {r}");
    }
}
