//! Tests of the archive on real files: blobs, trees, the index, idempotency,
//! lineage, integrity checks against every kind of damage, crashes (a
//! leaked handle, a child process killed with SIGKILL mid-write), threads,
//! and the parent-selection formulas.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::json;
use tempfile::TempDir;

use super::select::sigmoid;
use super::tree::{encode_manifest, parse_manifest, MODE_EXEC, MODE_FILE};
use super::*;

// ---------------------------------------------------------------- helpers

fn fresh() -> (TempDir, Archive) {
    let tmp = tempfile::tempdir().unwrap();
    let archive = Archive::open(&tmp.path().join("archive")).unwrap();
    (tmp, archive)
}

/// Write `files` (path, contents) under `dir`.
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
    }
}

/// A small source tree whose contents depend on `tag`, stored in `archive`.
fn tree_for(archive: &Archive, tag: &str) -> String {
    let src = tempfile::tempdir().unwrap();
    write_files(
        src.path(),
        &[
            ("variant.toml", &format!("[variant]\nname = \"{tag}\"\nlanguage = \"rust\"\n")),
            ("src/lib.rs", &format!("// {tag}\npub fn solve() {{}}\n")),
        ],
    );
    archive.put_tree(src.path()).unwrap()
}

fn new_variant(archive: &Archive, run: &str, tag: &str, parent: Option<&VariantId>, generation: u32) -> NewVariant {
    let tree_sha = tree_for(archive, tag);
    let component_sha = archive.put(format!("component {tag}").as_bytes()).unwrap();
    NewVariant {
        run_id: run.into(),
        parent: parent.cloned(),
        generation,
        language: "rust".into(),
        component_sha: Some(component_sha),
        tree_sha,
        grant_digest: "grant-digest".into(),
        status: VariantStatus::Pending,
        summary: format!("variant {tag}"),
    }
}

fn add(archive: &Archive, run: &str, tag: &str, parent: Option<&VariantId>, generation: u32) -> VariantId {
    archive.add_variant(&new_variant(archive, run, tag, parent, generation)).unwrap()
}

fn result(task: &str, split: Split, passed: bool, score: f64) -> TaskResult {
    TaskResult { task_id: task.into(), split, passed, score, note: format!("note {task}") }
}

/// A raw connection to the index with foreign keys off, to damage it the way
/// a bug, a hand edit or another tool could.
fn raw(archive: &Archive) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(archive.index_path()).unwrap();
    c.execute_batch("PRAGMA foreign_keys = OFF;").unwrap();
    c
}

/// Make a read-only blob writable and overwrite it.
fn overwrite_blob(archive: &Archive, sha: &str, bytes: &[u8]) {
    let path = archive.blobs().path_of(sha).unwrap();
    let mut perms = fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&path, perms).unwrap();
    fs::write(&path, bytes).unwrap();
}

fn temp_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for shard in fs::read_dir(root).unwrap() {
        let shard = shard.unwrap().path();
        if shard.is_dir() {
            for f in fs::read_dir(&shard).unwrap() {
                let name = f.unwrap().file_name().to_string_lossy().into_owned();
                if name.starts_with(blobs::TMP_PREFIX) {
                    out.push(name);
                }
            }
        }
    }
    out
}

fn kinds(report: &IntegrityReport) -> Vec<&'static str> {
    report
        .problems
        .iter()
        .map(|p| match p {
            Problem::Sqlite { .. } => "sqlite",
            Problem::MissingBlob { .. } => "missing-blob",
            Problem::CorruptBlob { .. } => "corrupt-blob",
            Problem::BadRow { .. } => "bad-row",
            Problem::OrphanResult { .. } => "orphan-result",
            Problem::MissingRun { .. } => "missing-run",
            Problem::MissingParent { .. } => "missing-parent",
            Problem::ParentInOtherRun { .. } => "parent-in-other-run",
            Problem::Cycle { .. } => "cycle",
        })
        .collect()
}

/// An archive with run `r1`: root → a → b, root → c, every variant evaluated.
fn family() -> (TempDir, Archive, [VariantId; 4]) {
    let (tmp, archive) = fresh();
    archive.begin_run("r1", &json!({"seed": 7})).unwrap();
    let root = add(&archive, "r1", "root", None, 0);
    let a = add(&archive, "r1", "a", Some(&root), 1);
    let b = add(&archive, "r1", "b", Some(&a), 2);
    let c = add(&archive, "r1", "c", Some(&root), 2);
    for (i, id) in [&root, &a, &b, &c].into_iter().enumerate() {
        let s = 0.2 + 0.1 * i as f64;
        archive
            .record_results(
                id,
                &[result("t1", Split::Visible, true, s), result("h1", Split::HeldOut, false, s / 2.0)],
                Some(s),
                Some(s / 2.0),
                VariantStatus::Evaluated,
            )
            .unwrap();
    }
    (tmp, archive, [root, a, b, c])
}

// ------------------------------------------------------------------ blobs

#[test]
fn put_stores_by_sha256_and_get_returns_the_bytes() {
    let (_tmp, archive) = fresh();
    let sha = archive.put(b"hello").unwrap();
    assert_eq!(sha, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    let path = archive.dir().join("blobs/2c/f24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    assert_eq!(archive.blobs().path_of(&sha).unwrap(), path);
    assert_eq!(fs::read(&path).unwrap(), b"hello");
    assert!(fs::metadata(&path).unwrap().permissions().readonly(), "blobs are read-only");
    assert_eq!(archive.get_blob(&sha).unwrap(), b"hello");
    assert_eq!(archive.blobs().check(&sha).unwrap(), BlobState::Intact);
    assert!(archive.blobs().contains(&sha).unwrap());
    // Storing again is a no-op (same name, same bytes), and the empty blob works.
    assert_eq!(archive.put(b"hello").unwrap(), sha);
    let empty = archive.put(b"").unwrap();
    assert_eq!(empty, sha256_hex(b""));
    assert_eq!(archive.get_blob(&empty).unwrap(), b"");
    assert!(temp_files(archive.blobs().root()).is_empty(), "no temp file is left behind");
}

#[test]
fn get_detects_a_corrupt_blob_and_put_repairs_it() {
    let (_tmp, archive) = fresh();
    let sha = archive.put(b"the real bytes").unwrap();
    overwrite_blob(&archive, &sha, b"the fake bytes");
    let err = archive.get_blob(&sha).unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("corrupt") && msg.contains(&sha), "{msg}");
    assert!(msg.contains(&sha256_hex(b"the fake bytes")), "names the actual hash: {msg}");
    assert_eq!(archive.blobs().check(&sha).unwrap(), BlobState::Corrupt { actual: sha256_hex(b"the fake bytes") });
    // put notices the damage and rewrites the blob.
    assert_eq!(archive.put(b"the real bytes").unwrap(), sha);
    assert_eq!(archive.get_blob(&sha).unwrap(), b"the real bytes");
}

#[test]
fn get_reports_a_missing_blob_and_refuses_names_that_are_not_shas() {
    let (_tmp, archive) = fresh();
    let missing = sha256_hex(b"never stored");
    match archive.get_blob(&missing).unwrap_err() {
        Error::Io { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected a NotFound I/O error, got {other:?}"),
    }
    assert_eq!(archive.blobs().check(&missing).unwrap(), BlobState::Missing);
    assert!(!archive.blobs().contains(&missing).unwrap());
    for bad in ["", "../../etc/passwd", "ABCDEF", &missing.to_uppercase(), &missing[..63], &format!("{missing}0")] {
        assert!(matches!(archive.get_blob(bad), Err(Error::Invalid(_))), "{bad:?}");
        assert!(!is_sha256(bad));
    }
}

#[test]
fn concurrent_puts_of_the_same_bytes_agree() {
    let (_tmp, archive) = fresh();
    let archive = Arc::new(archive);
    let shas: Vec<String> = (0..8)
        .map(|_| {
            let a = Arc::clone(&archive);
            std::thread::spawn(move || a.put(&[7u8; 100_000]).unwrap())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(shas.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(archive.get_blob(&shas[0]).unwrap(), vec![7u8; 100_000]);
    assert!(temp_files(archive.blobs().root()).is_empty());
}

// ------------------------------------------------------------------ trees

#[cfg(unix)]
fn set_exec(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_tree_round_trips_and_skips_build_outputs() {
    let (tmp, archive) = fresh();
    let src = tmp.path().join("src-tree");
    write_files(
        &src,
        &[
            ("variant.toml", "[variant]\nname = \"x\"\n"),
            ("src/lib.rs", "pub fn f() {}\n"),
            ("src/deep/er/mod.rs", "// deep\n"),
            ("with space/naïve ✓.txt", "unicode name\n"),
            ("empty", ""),
            ("tools/run.sh", "#!/bin/sh\necho hi\n"),
            // Skipped at any depth:
            ("target/debug/out.wasm", "build output"),
            ("src/target/x", "nested build output"),
            ("node_modules/pkg/index.js", "dependency"),
            ("app/__pycache__/m.cpython-312.pyc", "bytecode"),
            (".git/HEAD", "ref: refs/heads/main\n"),
            ("sub/.git", "gitdir: ../.git/modules/sub\n"),
        ],
    );
    #[cfg(unix)]
    set_exec(&src.join("tools/run.sh"));
    let sha = archive.put_tree(&src).unwrap();

    let entries = archive.read_tree(&sha).unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["empty", "src/deep/er/mod.rs", "src/lib.rs", "tools/run.sh", "variant.toml", "with space/naïve ✓.txt"]
    );
    #[cfg(unix)]
    assert_eq!(entries.iter().find(|e| e.path == "tools/run.sh").unwrap().mode, MODE_EXEC);
    assert_eq!(entries.iter().find(|e| e.path == "src/lib.rs").unwrap().mode, MODE_FILE);
    assert_eq!(entries[0].sha256, sha256_hex(b""));

    let dest = tmp.path().join("restored/here");
    archive.restore_tree(&sha, &dest).unwrap();
    for e in &entries {
        assert_eq!(fs::read(dest.join(&e.path)).unwrap(), fs::read(src.join(&e.path)).unwrap(), "{}", e.path);
    }
    assert!(!dest.join("target").exists() && !dest.join(".git").exists() && !dest.join("node_modules").exists());
    #[cfg(unix)]
    {
        assert_eq!(mode_of(&dest.join("tools/run.sh")), 0o755);
        assert_eq!(mode_of(&dest.join("src/lib.rs")), 0o644);
        assert_eq!(mode_of(&dest), 0o755);
    }
    // The restored tree stores to the same sha: the manifest is canonical.
    assert_eq!(archive.put_tree(&dest).unwrap(), sha);
    let contents = archive.tree_contents(&sha).unwrap();
    assert_eq!(contents.len(), entries.len());
    assert_eq!(contents[2].1, b"pub fn f() {}\n");
    // No staging directory is left beside the destination.
    let leftovers: Vec<_> = fs::read_dir(tmp.path().join("restored")).unwrap().collect();
    assert_eq!(leftovers.len(), 1);
}

#[test]
fn the_same_files_give_the_same_tree_sha_anywhere() {
    let (tmp, archive) = fresh();
    let files = [("b.txt", "b"), ("a/z.txt", "z"), ("a.txt", "a")];
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    write_files(&one, &files);
    let mut reversed = files;
    reversed.reverse();
    write_files(&two, &reversed);
    assert_eq!(archive.put_tree(&one).unwrap(), archive.put_tree(&two).unwrap());
    fs::write(two.join("a.txt"), "A").unwrap();
    assert_ne!(archive.put_tree(&one).unwrap(), archive.put_tree(&two).unwrap());
}

#[test]
fn the_manifest_has_one_canonical_spelling() {
    let a = sha256_hex(b"a");
    let b = sha256_hex(b"b");
    let entries = vec![
        TreeEntry { path: "z/b.sh".into(), sha256: b.clone(), mode: MODE_EXEC },
        TreeEntry { path: "a b.txt".into(), sha256: a.clone(), mode: MODE_FILE },
    ];
    let bytes = encode_manifest(&entries).unwrap();
    let expected = format!("vivarium-tree 1\n100644 {a} a b.txt\n100755 {b} z/b.sh\n");
    assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);
    let parsed = parse_manifest(&bytes).unwrap();
    assert_eq!(parsed[0].path, "a b.txt");
    assert_eq!(parsed[1].mode, MODE_EXEC);
    assert!(parse_manifest(b"vivarium-tree 1\n").unwrap().is_empty());

    let bad = [
        format!("vivarium-tree 1\n100755 {b} z/b.sh\n100644 {a} a b.txt\n"), // unsorted
        format!("vivarium-tree 1\n100644 {a} a b.txt"),                      // no final newline
        format!("vivarium-tree 2\n100644 {a} x\n"),                          // header
        format!("vivarium-tree 1\n100600 {a} x\n"),                          // mode
        format!("vivarium-tree 1\n100644 {} x\n", a.to_uppercase()),         // sha
        format!("vivarium-tree 1\n100644 {a} ../x\n"),                       // escapes
        format!("vivarium-tree 1\n100644 {a} /etc/passwd\n"),                // absolute
        format!("vivarium-tree 1\n100644 {a} a//b\n"),                       // empty component
        format!("vivarium-tree 1\n100644 {a} x\n100644 {b} x\n"),            // duplicate
        format!("vivarium-tree 1\n100644 {a} x\n100644 {b} x/y\n"),          // file and dir
        format!("vivarium-tree 1\n100644 {a}\n"),                            // no path
        "vivarium-tree 1\n\n".to_string(),                                   // blank line
    ];
    for m in &bad {
        assert!(matches!(parse_manifest(m.as_bytes()), Err(Error::Invalid(_))), "accepted {m:?}");
    }
    assert!(parse_manifest(b"\xff\xfe").is_err());
}

#[cfg(unix)]
#[test]
fn put_tree_refuses_symlinks_but_not_inside_skipped_dirs() {
    let (tmp, archive) = fresh();
    let src = tmp.path().join("src");
    write_files(&src, &[("ok.txt", "ok"), ("node_modules/.bin/real", "x")]);
    // A link inside a skipped directory is never looked at (npm makes these).
    std::os::unix::fs::symlink("real", src.join("node_modules/.bin/tool")).unwrap();
    archive.put_tree(&src).unwrap();

    std::os::unix::fs::symlink("/etc/passwd", src.join("passwd")).unwrap();
    match archive.put_tree(&src).unwrap_err() {
        Error::Refused { what, detail } => {
            assert_eq!(what, vec!["symlink passwd".to_string()]);
            assert!(detail.contains("symbolic link"), "{detail}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    fs::remove_file(src.join("passwd")).unwrap();
    fs::create_dir_all(src.join("sub")).unwrap();
    std::os::unix::fs::symlink("..", src.join("sub/up")).unwrap();
    assert!(matches!(archive.put_tree(&src), Err(Error::Refused { .. })));
}

#[test]
fn put_tree_refuses_a_file_and_a_missing_dir() {
    let (tmp, archive) = fresh();
    fs::write(tmp.path().join("f"), "x").unwrap();
    assert!(matches!(archive.put_tree(&tmp.path().join("f")), Err(Error::Invalid(_))));
    assert!(matches!(archive.put_tree(&tmp.path().join("nope")), Err(Error::Io { .. })));
}

#[test]
fn restore_tree_refuses_a_non_empty_destination_and_a_corrupt_file() {
    let (tmp, archive) = fresh();
    let sha = tree_for(&archive, "r");
    // An existing empty directory is fine.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    archive.restore_tree(&sha, &empty).unwrap();
    assert!(empty.join("src/lib.rs").is_file());
    // A non-empty one is not, and is left alone.
    assert!(matches!(archive.restore_tree(&sha, &empty), Err(Error::Invalid(_))));
    // A corrupt file blob stops the restore before anything appears.
    let lib = archive.read_tree(&sha).unwrap().into_iter().find(|e| e.path == "src/lib.rs").unwrap();
    overwrite_blob(&archive, &lib.sha256, b"tampered");
    let dest = tmp.path().join("dest");
    assert!(matches!(archive.restore_tree(&sha, &dest), Err(Error::Internal(_))));
    assert!(!dest.exists());
    let stray: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".restore-"))
        .collect();
    assert!(stray.is_empty(), "staging directories left: {stray:?}");
    // A blob that is not a manifest is not a tree.
    let not_tree = archive.put(b"hello").unwrap();
    assert!(matches!(archive.restore_tree(&not_tree, &tmp.path().join("x")), Err(Error::Invalid(_))));
}

// ------------------------------------------------------------------ index

#[test]
fn open_creates_the_schema_with_wal_and_foreign_keys() {
    let (tmp, archive) = fresh();
    assert_eq!(archive.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 4, "runs, variants, results; the step ledger; the search columns; a step's parent");
    {
        let conn = archive.lock();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
        assert_eq!(fk, 1);
        let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "synchronous = FULL");
    }
    drop(archive);
    // Reopening migrates nothing and keeps one version row.
    let archive = Archive::open(&tmp.path().join("archive")).unwrap();
    assert_eq!(archive.schema_version().unwrap(), SCHEMA_VERSION);
    let rows: i64 = raw(&archive).query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 1);
    // The database refuses what the code would never write.
    archive.begin_run("r", &json!({})).unwrap();
    let err = archive
        .lock()
        .execute(
            "INSERT INTO results (variant_id, split, task_id, passed, score, note) VALUES ('nope', 'visible', 't', 1, 1.0, '')",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
}

#[test]
fn an_archive_from_a_newer_schema_is_refused() {
    let (tmp, archive) = fresh();
    raw(&archive).execute("UPDATE schema_version SET version = 99", []).unwrap();
    drop(archive);
    match Archive::open(&tmp.path().join("archive")).unwrap_err() {
        Error::Invalid(msg) => assert!(msg.contains("99") && msg.contains("newer"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn runs_begin_resume_and_finish() {
    let (_tmp, archive) = fresh();
    let cfg = json!({"seed": 1, "selection": "dgm", "generations": 3});
    let run = archive.begin_run("run-1", &cfg).unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.config, cfg);
    assert!(run.finished.is_none());
    archive.finish_run("run-1", RunStatus::Stopped).unwrap();
    let stopped = archive.get_run("run-1").unwrap().unwrap();
    assert_eq!(stopped.status, RunStatus::Stopped);
    assert!(stopped.finished.is_some());
    // Resuming with the same config (keys in any order) sets it running again.
    let resumed = archive.begin_run("run-1", &json!({"generations": 3, "selection": "dgm", "seed": 1})).unwrap();
    assert_eq!(resumed.status, RunStatus::Running);
    assert_eq!(resumed.started, run.started);
    assert!(resumed.finished.is_none());
    // A different config is refused.
    assert!(matches!(archive.begin_run("run-1", &json!({"seed": 2})), Err(Error::Invalid(_))));
    archive.begin_run("run-2", &json!(null)).unwrap();
    let ids: Vec<String> = archive.list_runs().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["run-1", "run-2"]);
    assert!(archive.get_run("run-3").unwrap().is_none());
    assert!(matches!(archive.finish_run("run-3", RunStatus::Finished), Err(Error::Invalid(_))));
    assert!(matches!(archive.begin_run("", &json!({})), Err(Error::Invalid(_))));
    assert!(matches!(archive.begin_run("a\nb", &json!({})), Err(Error::Invalid(_))));
}

#[test]
fn add_variant_is_idempotent_on_run_content_and_parent() {
    let (_tmp, archive) = fresh();
    archive.begin_run("r1", &json!({})).unwrap();
    let nv = new_variant(&archive, "r1", "root", None, 0);
    let (id, inserted) = archive.add_variant_outcome(&nv).unwrap();
    assert!(inserted);
    assert_eq!(id.as_str().len(), 12);
    // Again (e.g. after a crash and --resume): same id, no new row, first write wins.
    let mut again = nv.clone();
    again.summary = "a different summary".into();
    assert_eq!(archive.add_variant_outcome(&again).unwrap(), (id.clone(), false));
    assert_eq!(archive.list(None).unwrap().len(), 1);
    assert_eq!(archive.get(&id).unwrap().unwrap().summary, "variant root");

    // The same content under another parent is another variant.
    let child = add(&archive, "r1", "child", Some(&id), 1);
    let mut same_content = nv.clone();
    same_content.parent = Some(child.clone());
    let (other, inserted) = archive.add_variant_outcome(&same_content).unwrap();
    assert!(inserted);
    assert_ne!(other, id);
    // So is the same content in another run.
    archive.begin_run("r2", &json!({})).unwrap();
    let mut r2 = nv.clone();
    r2.run_id = "r2".into();
    assert_ne!(archive.add_variant(&r2).unwrap(), id);

    // Without a component, the tree is the content.
    let mut refused = new_variant(&archive, "r1", "refused", Some(&id), 1);
    refused.component_sha = None;
    refused.status = VariantStatus::Refused;
    let rid = archive.add_variant(&refused).unwrap();
    assert_eq!(archive.add_variant(&refused).unwrap(), rid);
    let row = archive.get(&rid).unwrap().unwrap();
    assert_eq!(row.status, VariantStatus::Refused);
    assert_eq!(row.component_sha, None);
    assert_eq!(archive.list(None).unwrap().len(), 5);
}

#[test]
fn variant_ids_are_derived_from_identity() {
    let (_t1, one) = fresh();
    let (_t2, two) = fresh();
    let mut ids = Vec::new();
    for archive in [&one, &two] {
        archive.begin_run("same-run", &json!({"seed": 3})).unwrap();
        let root = add(archive, "same-run", "root", None, 0);
        let child = add(archive, "same-run", "child", Some(&root), 1);
        ids.push((root, child));
    }
    assert_eq!(ids[0], ids[1]);
    let (root, _) = &ids[0];
    let content = sha256_hex(b"component root");
    let expected = sha256_hex(format!("vivarium-variant\0same-run\0{content}\0").as_bytes());
    assert_eq!(root.as_str(), &expected[..12]);
}

#[test]
fn an_id_collision_lengthens_the_new_id() {
    let (_tmp, archive) = fresh();
    archive.begin_run("r1", &json!({})).unwrap();
    let nv = new_variant(&archive, "r1", "x", None, 0);
    let content = nv.component_sha.clone().unwrap();
    let full = sha256_hex(format!("vivarium-variant\0r1\0{content}\0").as_bytes());
    // Squat on the 12-digit id with a row of another identity.
    let squatter = new_variant(&archive, "r1", "squatter", None, 0);
    let sid = archive.add_variant(&squatter).unwrap();
    raw(&archive).execute("UPDATE variants SET id = ?1 WHERE id = ?2", [&full[..12], sid.as_str()]).unwrap();
    let id = archive.add_variant(&nv).unwrap();
    assert_eq!(id.as_str(), &full[..16]);
}

#[test]
fn add_variant_refuses_rows_whose_blobs_run_or_parent_are_missing() {
    let (tmp, archive) = fresh();
    archive.begin_run("r1", &json!({})).unwrap();
    archive.begin_run("r2", &json!({})).unwrap();
    let good = new_variant(&archive, "r1", "good", None, 0);

    let mut no_tree = good.clone();
    no_tree.tree_sha = sha256_hex(b"a tree never stored");
    let mut no_component = good.clone();
    no_component.component_sha = Some(sha256_hex(b"a component never stored"));
    let mut not_a_tree = good.clone();
    not_a_tree.tree_sha = archive.put(b"just bytes").unwrap();
    let mut bad_sha = good.clone();
    bad_sha.component_sha = Some("../../x".into());
    let mut no_run = good.clone();
    no_run.run_id = "r9".into();
    let mut no_parent = good.clone();
    no_parent.parent = Some(VariantId::from("0123456789ab"));
    let other_root = add(&archive, "r2", "other", None, 0);
    let mut cross_run = good.clone();
    cross_run.parent = Some(other_root);
    let mut no_language = good.clone();
    no_language.language = String::new();
    // A tree whose file blob went missing after put_tree.
    let src = tmp.path().join("t");
    write_files(&src, &[("only.txt", "only file")]);
    let tree = archive.put_tree(&src).unwrap();
    fs::remove_file(archive.blobs().path_of(&sha256_hex(b"only file")).unwrap()).unwrap();
    let mut file_missing = good.clone();
    file_missing.tree_sha = tree;

    for (what, v) in [
        ("no tree", no_tree),
        ("no component", no_component),
        ("not a tree", not_a_tree),
        ("bad sha", bad_sha),
        ("no run", no_run),
        ("no parent", no_parent),
        ("cross run", cross_run),
        ("no language", no_language),
        ("file missing", file_missing),
    ] {
        assert!(matches!(archive.add_variant(&v), Err(Error::Invalid(_))), "{what} was accepted");
    }
    assert_eq!(archive.list(Some("r1")).unwrap().len(), 0);
    archive.add_variant(&good).unwrap();
}

#[test]
fn record_results_upserts_and_sets_scores_and_status() {
    let (_tmp, archive) = fresh();
    archive.begin_run("r1", &json!({})).unwrap();
    let id = add(&archive, "r1", "v", None, 0);
    let row = archive.get(&id).unwrap().unwrap();
    assert_eq!(row.status, VariantStatus::Pending);
    assert_eq!((row.visible_score, row.held_out_score), (None, None));

    // Stage 1: a subset.
    archive
        .record_results(&id, &[result("t2", Split::Visible, true, 1.0)], Some(1.0), None, VariantStatus::Pending)
        .unwrap();
    // Stage 2: the rest, and t2 re-graded.
    archive
        .record_results(
            &id,
            &[
                result("t2", Split::Visible, false, 0.5),
                result("t1", Split::Visible, true, 1.0),
                result("h1", Split::HeldOut, false, 0.0),
                result("t1", Split::HeldOut, true, 0.25),
            ],
            Some(0.75),
            Some(0.125),
            VariantStatus::Evaluated,
        )
        .unwrap();
    let got = archive.results(&id).unwrap();
    let keys: Vec<(Split, &str, f64)> = got.iter().map(|r| (r.split, r.task_id.as_str(), r.score)).collect();
    assert_eq!(
        keys,
        [
            (Split::Visible, "t1", 1.0),
            (Split::Visible, "t2", 0.5),
            (Split::HeldOut, "h1", 0.0),
            (Split::HeldOut, "t1", 0.25)
        ]
    );
    assert!(!got[1].passed);
    assert_eq!(got[0].note, "note t1");
    let row = archive.get(&id).unwrap().unwrap();
    assert_eq!(row.visible_score, Some(0.75));
    assert_eq!(row.held_out_score, Some(0.125));
    assert_eq!(row.status, VariantStatus::Evaluated);
    assert!(row.updated >= row.created);

    // Bad input changes nothing.
    let before = archive.get(&id).unwrap().unwrap();
    for bad in [
        archive.record_results(&id, &[], Some(f64::NAN), None, VariantStatus::Failed),
        archive.record_results(&id, &[], None, Some(f64::INFINITY), VariantStatus::Failed),
        archive.record_results(&id, &[result("t", Split::Visible, true, f64::NAN)], None, None, VariantStatus::Failed),
        archive.record_results(&id, &[result("", Split::Visible, true, 1.0)], None, None, VariantStatus::Failed),
    ] {
        assert!(matches!(bad, Err(Error::Invalid(_))));
    }
    assert_eq!(archive.get(&id).unwrap().unwrap(), before);
    assert!(matches!(
        archive.record_results(&VariantId::from("ffffffffffff"), &[], None, None, VariantStatus::Failed),
        Err(Error::Invalid(_))
    ));

    archive.set_status(&id, VariantStatus::Failed, Some("build broke")).unwrap();
    let row = archive.get(&id).unwrap().unwrap();
    assert_eq!((row.status, row.summary.as_str()), (VariantStatus::Failed, "build broke"));
    archive.set_status(&id, VariantStatus::Evaluated, None).unwrap();
    assert_eq!(archive.get(&id).unwrap().unwrap().summary, "build broke");
}

#[test]
fn lineage_children_list_and_resolve() {
    let (_tmp, archive, [root, a, b, c]) = family();
    let lineage: Vec<VariantId> = archive.lineage(&b).unwrap().into_iter().map(|v| v.id).collect();
    assert_eq!(lineage, [root.clone(), a.clone(), b.clone()]);
    assert_eq!(archive.lineage(&root).unwrap().len(), 1);
    assert!(matches!(archive.lineage(&VariantId::from("ffffffffffff")), Err(Error::Invalid(_))));

    assert_eq!(archive.children_count(&root).unwrap(), 2);
    assert_eq!(archive.children_count(&a).unwrap(), 1);
    assert_eq!(archive.children_count(&b).unwrap(), 0);
    assert_eq!(archive.get(&root).unwrap().unwrap().children, 2);

    // Archive order, filtered by run.
    archive.begin_run("r2", &json!({})).unwrap();
    let other = add(&archive, "r2", "other", None, 0);
    let d = add(&archive, "r1", "d", Some(&c), 3);
    let all: Vec<VariantId> = archive.list(None).unwrap().into_iter().map(|v| v.id).collect();
    assert_eq!(all, [root.clone(), a.clone(), b.clone(), c.clone(), other.clone(), d.clone()]);
    let r1: Vec<VariantId> = archive.list(Some("r1")).unwrap().into_iter().map(|v| v.id).collect();
    assert_eq!(r1, [root.clone(), a.clone(), b.clone(), c.clone(), d.clone()]);
    assert!(archive.list(Some("nope")).unwrap().is_empty());
    let generations: Vec<u32> = archive.list(Some("r1")).unwrap().iter().map(|v| v.generation).collect();
    assert_eq!(generations, [0, 1, 2, 2, 3]);

    assert_eq!(archive.resolve(&root.as_str()[..6]).unwrap(), root);
    assert_eq!(archive.resolve(&root.as_str().to_uppercase()).unwrap(), root);
    assert!(matches!(archive.resolve("abc"), Err(Error::Invalid(_))), "too short");
    assert!(matches!(archive.resolve("zzzzzz"), Err(Error::Invalid(_))));
    assert!(matches!(archive.resolve("ffffffffffff"), Err(Error::Invalid(_))));
}

#[test]
fn candidates_and_best_use_evaluated_visible_scores() {
    let (_tmp, archive, [root, a, b, c]) = family();
    // Scores: root 0.2, a 0.3, b 0.4, c 0.5.
    let pending = add(&archive, "r1", "pending", Some(&b), 3);
    let cands = archive.candidates("r1").unwrap();
    let got: Vec<(VariantId, f64, u32)> = cands.iter().map(|c| (c.id.clone(), c.score, c.children)).collect();
    let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
    assert_eq!(got.len(), 4, "the pending variant is not a candidate");
    assert_eq!((got[0].0.clone(), got[0].2), (root, 2));
    assert_eq!((got[1].0.clone(), got[1].2), (a, 1));
    assert_eq!((got[2].0.clone(), got[2].2), (b.clone(), 1));
    assert_eq!((got[3].0.clone(), got[3].2), (c.clone(), 0));
    assert!(close(got[3].1, 0.5));
    assert!(!got.iter().any(|g| g.0 == pending));
    assert_eq!(archive.best("r1").unwrap().unwrap().id, c);
    // Ties go to the earliest.
    archive.record_results(&pending, &[], Some(0.5), None, VariantStatus::Evaluated).unwrap();
    assert_eq!(archive.best("r1").unwrap().unwrap().id, c);
    assert!(archive.best("none").unwrap().is_none());
}

#[test]
fn a_variant_stopped_at_the_first_stage_is_not_the_best_over_one_scored_on_the_whole_suite() {
    let (_tmp, archive, [_, _, b, c]) = family();
    // c: 0.5 on the whole suite. A child of b scored 0.7 on the first
    // stage only (no held-out score).
    let staged = add(&archive, "r1", "staged", Some(&b), 3);
    archive
        .record_results(&staged, &[result("t1", Split::Visible, true, 0.7)], Some(0.7), None, VariantStatus::Evaluated)
        .unwrap();
    assert_eq!(archive.best("r1").unwrap().unwrap().id, c);
    // In a run where nothing reached the whole suite, the first-stage
    // scores are all there is.
    archive.begin_run("r2", &json!({"seed": 7})).unwrap();
    let [x, y] = [("x", 0.4), ("y", 0.6)].map(|(tag, s)| {
        let id = add(&archive, "r2", tag, None, 0);
        archive
            .record_results(&id, &[result("t1", Split::Visible, true, s)], Some(s), None, VariantStatus::Evaluated)
            .unwrap();
        id
    });
    assert_ne!(x, y);
    assert_eq!(archive.best("r2").unwrap().unwrap().id, y);
}

#[test]
fn threads_share_one_archive() {
    let (_tmp, archive) = fresh();
    archive.begin_run("r1", &json!({})).unwrap();
    let archive = Arc::new(archive);
    let root = add(&archive, "r1", "root", None, 0);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let archive = Arc::clone(&archive);
            let root = root.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|i| {
                        let tag = format!("t{t}-{i}");
                        // Every thread also re-adds a shared child: one row only.
                        add(&archive, "r1", "shared", Some(&root), 1);
                        add(&archive, "r1", &tag, Some(&root), 1)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<VariantId> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 20);
    assert_eq!(archive.list(None).unwrap().len(), 22);
    assert_eq!(archive.children_count(&root).unwrap(), 21);
    assert!(archive.integrity_check().unwrap().is_ok());
}

// -------------------------------------------------------------- integrity

#[test]
fn integrity_check_passes_a_healthy_archive() {
    let (_tmp, archive, _) = family();
    let report = archive.integrity_check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!((report.runs, report.variants, report.results), (1, 4, 8));
    // 4 components + 4 manifests + 8 distinct files.
    assert_eq!(report.blobs_checked, 16);
    let (_tmp, empty) = fresh();
    assert!(empty.integrity_check().unwrap().is_ok());
}

#[test]
fn integrity_check_catches_a_deleted_blob() {
    let (_tmp, archive, [_, a, ..]) = family();
    let component = archive.get(&a).unwrap().unwrap().component_sha.unwrap();
    fs::remove_file(archive.blobs().path_of(&component).unwrap()).unwrap();
    let report = archive.integrity_check().unwrap();
    assert_eq!(
        report.problems,
        [Problem::MissingBlob { sha: component, referenced_by: format!("variant {a} (component)") }]
    );
    assert!(report.problems[0].to_string().contains("missing"));
}

#[test]
fn integrity_check_catches_a_corrupt_blob() {
    let (_tmp, archive, [_, _, b, _]) = family();
    let tree = archive.get(&b).unwrap().unwrap().tree_sha;
    let lib = archive.read_tree(&tree).unwrap().into_iter().find(|e| e.path == "src/lib.rs").unwrap();
    overwrite_blob(&archive, &lib.sha256, b"// tampered\n");
    let report = archive.integrity_check().unwrap();
    assert_eq!(
        report.problems,
        [Problem::CorruptBlob {
            sha: lib.sha256.clone(),
            actual: sha256_hex(b"// tampered\n"),
            referenced_by: format!("variant {b}: src/lib.rs"),
        }]
    );
    assert!(matches!(archive.tree_contents(&tree), Err(Error::Internal(_))));

    // A corrupt manifest is reported once, and its files are not guessed at.
    let (_tmp, archive, [root, ..]) = family();
    let tree = archive.get(&root).unwrap().unwrap().tree_sha;
    overwrite_blob(&archive, &tree, b"garbage");
    assert_eq!(kinds(&archive.integrity_check().unwrap()), ["corrupt-blob"]);
}

#[test]
fn integrity_check_catches_an_orphan_result() {
    let (_tmp, archive, _) = family();
    raw(&archive)
        .execute(
            "INSERT INTO results (variant_id, split, task_id, passed, score, note) \
             VALUES ('0000deadbeef', 'visible', 't9', 1, 1.0, '')",
            [],
        )
        .unwrap();
    let report = archive.integrity_check().unwrap();
    assert_eq!(
        report.problems,
        [Problem::OrphanResult { variant: "0000deadbeef".into(), split: "visible".into(), task_id: "t9".into() }]
    );
}

#[test]
fn integrity_check_catches_a_missing_parent() {
    let (_tmp, archive, [_, a, b, _]) = family();
    let conn = raw(&archive);
    conn.execute("DELETE FROM results WHERE variant_id = ?1", [a.as_str()]).unwrap();
    conn.execute("DELETE FROM variants WHERE id = ?1", [a.as_str()]).unwrap();
    let report = archive.integrity_check().unwrap();
    assert_eq!(report.problems, [Problem::MissingParent { variant: b.to_string(), parent: a.to_string() }]);
    assert!(matches!(archive.lineage(&b), Err(Error::Internal(_))));
}

#[test]
fn integrity_check_catches_cycles_cross_run_parents_and_missing_runs() {
    let (_tmp, archive, [root, a, b, _]) = family();
    // root's parent := b closes root → a → b → root.
    raw(&archive).execute("UPDATE variants SET parent_id = ?1 WHERE id = ?2", [b.as_str(), root.as_str()]).unwrap();
    let report = archive.integrity_check().unwrap();
    assert_eq!(kinds(&report), ["cycle"]);
    match &report.problems[0] {
        Problem::Cycle { variants } => {
            let set: HashSet<&str> = variants.iter().map(String::as_str).collect();
            assert_eq!(set, HashSet::from([root.as_str(), a.as_str(), b.as_str()]));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(archive.lineage(&b), Err(Error::Internal(_))));

    let (_tmp, archive, [_, a, ..]) = family();
    archive.begin_run("r2", &json!({})).unwrap();
    raw(&archive).execute("UPDATE variants SET run_id = 'r2' WHERE id = ?1", [a.as_str()]).unwrap();
    // a is now in r2 with a parent in r1, and b (r1) has a parent in r2.
    assert_eq!(kinds(&archive.integrity_check().unwrap()), ["parent-in-other-run", "parent-in-other-run"]);

    let (_tmp, archive, _) = family();
    raw(&archive).execute("DELETE FROM runs", []).unwrap();
    assert_eq!(kinds(&archive.integrity_check().unwrap()), ["missing-run"; 4]);
}

#[test]
fn integrity_report_serializes_for_json_output() {
    let report = IntegrityReport {
        runs: 1,
        variants: 2,
        results: 3,
        blobs_checked: 4,
        problems: vec![Problem::MissingParent { variant: "aa".into(), parent: "bb".into() }],
    };
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["problems"][0], json!({"kind": "missing-parent", "variant": "aa", "parent": "bb"}));
    let back: IntegrityReport = serde_json::from_value(v).unwrap();
    assert_eq!(back, report);
}

// ----------------------------------------------------------------- crashes

#[test]
fn committed_data_survives_a_handle_that_is_never_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    let (root, child) = {
        let archive = Archive::open(&dir).unwrap();
        archive.begin_run("r1", &json!({"seed": 1})).unwrap();
        let root = add(&archive, "r1", "root", None, 0);
        let child = add(&archive, "r1", "child", Some(&root), 1);
        archive
            .record_results(
                &child,
                &[result("t1", Split::Visible, true, 1.0)],
                Some(1.0),
                None,
                VariantStatus::Evaluated,
            )
            .unwrap();
        // No close, no checkpoint, no destructor: the connection just vanishes.
        std::mem::forget(archive);
        (root, child)
    };
    assert!(dir.join("index.sqlite-wal").exists(), "the commits are in the WAL");
    let archive = Archive::open(&dir).unwrap();
    let lineage: Vec<VariantId> = archive.lineage(&child).unwrap().into_iter().map(|v| v.id).collect();
    assert_eq!(lineage, [root.clone(), child.clone()]);
    assert_eq!(archive.get(&child).unwrap().unwrap().visible_score, Some(1.0));
    assert_eq!(archive.results(&child).unwrap().len(), 1);
    assert!(archive.integrity_check().unwrap().is_ok());
    // Re-adding after the "crash" finds the same rows.
    assert_eq!(archive.add_variant(&new_variant(&archive, "r1", "child", Some(&root), 1)).unwrap(), child);
    assert_eq!(archive.list(None).unwrap().len(), 2);
}

const CRASH_DIR_ENV: &str = "VIVARIUM_ARCHIVE_TEST_CRASH_DIR";

/// One step of the crash test's workload: a chain of variants, each one
/// archived (tree, component, row) and then evaluated.
fn crash_step(archive: &Archive, i: u32, parent: Option<&VariantId>) -> VariantId {
    let tag = format!("step-{i}");
    let (id, _) = archive.add_variant_outcome(&new_variant(archive, "crash", &tag, parent, i)).unwrap();
    if archive.get(&id).unwrap().unwrap().status != VariantStatus::Evaluated {
        let score = f64::from(i) / 100.0;
        archive
            .record_results(
                &id,
                &[result("t1", Split::Visible, true, score), result("h1", Split::HeldOut, true, score)],
                Some(score),
                Some(score),
                VariantStatus::Evaluated,
            )
            .unwrap();
    }
    id
}

/// Runs as a child process of `a_writer_killed_mid_write_loses_and_duplicates_nothing`:
/// archives steps until it is killed. A no-op as an ordinary test.
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let archive = Archive::open(Path::new(&dir)).unwrap();
    archive.begin_run("crash", &json!({"seed": 42})).unwrap();
    let mut parent = None;
    for i in 0..10_000 {
        let id = crash_step(&archive, i, parent.as_ref());
        println!("committed {i} {id}");
        parent = Some(id);
    }
}

#[cfg(unix)]
#[test]
fn a_writer_killed_mid_write_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("archive");
    let name = format!("{}::crash_child_writer", module_path!().split_once("::").unwrap().1);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--test-threads=1", "--nocapture"])
        .env(CRASH_DIR_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut committed: Vec<(u32, VariantId)> = Vec::new();
    while committed.len() < 6 {
        let line = lines.next().expect("the child stopped early").unwrap();
        if let Some(rest) = line.strip_prefix("committed ") {
            let (i, id) = rest.split_once(' ').unwrap();
            committed.push((i.parse().unwrap(), VariantId::from(id)));
        }
    }
    child.kill().unwrap(); // SIGKILL: mid-step, wherever it is
    child.wait().unwrap();
    // Lines already printed were committed before the kill.
    for line in lines.map_while(|l| l.ok()) {
        if let Some(rest) = line.strip_prefix("committed ") {
            let (i, id) = rest.split_once(' ').unwrap();
            committed.push((i.parse().unwrap(), VariantId::from(id)));
        }
    }

    let archive = Archive::open(&dir).unwrap();
    let report = archive.integrity_check().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let rows = archive.list(Some("crash")).unwrap();
    for (i, id) in &committed {
        let row = rows.iter().find(|r| &r.id == id).unwrap_or_else(|| panic!("step {i} ({id}) was lost"));
        assert_eq!(row.status, VariantStatus::Evaluated);
        assert_eq!(archive.results(id).unwrap().len(), 2);
    }
    // At most the step in flight got further than "committed".
    assert!(rows.len() <= committed.len() + 1, "{} rows for {} steps", rows.len(), committed.len());

    // Resume: redo every step; nothing is duplicated, the one in flight is finished.
    archive.begin_run("crash", &json!({"seed": 42})).unwrap();
    let mut parent = None;
    let redo = committed.len() as u32 + 2;
    for i in 0..redo {
        let id = crash_step(&archive, i, parent.as_ref());
        if let Some((_, before)) = committed.iter().find(|(j, _)| *j == i) {
            assert_eq!(&id, before, "step {i} got a new id on resume");
        }
        parent = Some(id);
    }
    let rows = archive.list(Some("crash")).unwrap();
    assert_eq!(rows.len(), redo as usize);
    assert!(rows.iter().all(|r| r.status == VariantStatus::Evaluated));
    assert!(archive.integrity_check().unwrap().is_ok());
}

// --------------------------------------------------------------- selection

fn cands(rows: &[(f64, u32)]) -> Vec<Candidate> {
    rows.iter()
        .enumerate()
        .map(|(i, &(score, children))| Candidate { id: VariantId(format!("v{i}")), score, children })
        .collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "[{i}]: got {g}, want {w} (all: {got:?})");
    }
}

/// Scores 0.5, 0.8, 0.2, 0.8 with 0, 1, 3, 0 children.
const FOUR: [(f64, u32); 4] = [(0.5, 0), (0.8, 1), (0.2, 3), (0.8, 0)];

#[test]
fn sigmoid_values() {
    assert_eq!(sigmoid(0.0), 0.5);
    assert!((sigmoid(3.0) - 0.952_574_126_822_433_4).abs() < 1e-15);
    assert!((sigmoid(-3.0) - 0.047_425_873_177_566_78).abs() < 1e-15);
    assert_eq!(sigmoid(1000.0), 1.0);
    assert_eq!(sigmoid(-1000.0), 0.0);
    assert!(sigmoid(-1000.0).is_finite() && sigmoid(f64::NEG_INFINITY) == 0.0);
}

#[test]
fn dgm_weights_match_hand_computation() {
    // sigmoid(10(s − 0.5)) / (1 + c):
    //   0.5, c=0: sigmoid(0)/1  = 0.5
    //   0.8, c=1: sigmoid(3)/2  = 0.476287063411216…
    //   0.2, c=3: sigmoid(−3)/4 = 0.011856468294391…
    //   0.8, c=0: sigmoid(3)/1  = 0.952574126822433…
    let c = cands(&FOUR);
    assert_close(
        &weights(Selection::Dgm, &c),
        &[0.5, 0.476_287_063_411_216_7, 0.011_856_468_294_391_695, 0.952_574_126_822_433_4],
        1e-12,
    );
    // Sum 1.940717658527…; probabilities:
    assert_close(
        &probabilities(Selection::Dgm, &c),
        &[0.257_636_651_989_465_8, 0.245_418_008_806_320_53, 0.006_109_321_591_572_656, 0.490_836_017_612_641_06],
        1e-12,
    );
}

#[test]
fn dgm_h_weights_match_hand_computation() {
    // Top three scores 0.8, 0.8, 0.5 → mean 0.7.
    // sigmoid(10(s − 0.7)) · exp(−(c/8)³):
    //   0.5, c=0: sigmoid(−2)                   = 0.119202922022117…
    //   0.8, c=1: sigmoid(1) · exp(−1/512)      = 0.729632123319840…
    //   0.2, c=3: sigmoid(−5) · exp(−27/512)    = 0.006349052286164…
    //   0.8, c=0: sigmoid(1)                    = 0.731058578630004…
    let c = cands(&FOUR);
    assert_close(
        &weights(Selection::DgmH, &c),
        &[0.119_202_922_022_117_48, 0.729_632_123_319_84, 0.006_349_052_286_164_875, 0.731_058_578_630_004_9],
        1e-12,
    );
    assert_close(
        &probabilities(Selection::DgmH, &c),
        &[0.075_147_973_135_681_63, 0.459_975_093_496_417_74, 0.004_002_573_112_672_768, 0.460_874_360_255_227_9],
        1e-12,
    );
    // Fewer than three candidates: the mean of all of them.
    let two = cands(&[(0.4, 0), (0.6, 0)]);
    assert_close(&weights(Selection::DgmH, &two), &[sigmoid(-1.0), sigmoid(1.0)], 1e-12);
    // The children penalty: exp(−(8/8)³) = e^−1 at 8 children, ~0 at 40.
    let penalty = cands(&[(0.5, 0), (0.5, 8), (0.5, 40)]);
    let w = weights(Selection::DgmH, &penalty);
    assert!((w[1] / w[0] - (-1.0f64).exp()).abs() < 1e-12);
    assert!(w[2] / w[0] < 1e-50);
}

#[test]
fn greedy_takes_the_best_and_the_earliest_on_ties() {
    let c = cands(&FOUR);
    assert_eq!(weights(Selection::Greedy, &c), [0.0, 1.0, 0.0, 0.0]);
    for step in 0..100 {
        assert_eq!(choose(Selection::Greedy, &c, 9, step), Some(1));
    }
    let with_nan = cands(&[(f64::NAN, 0), (0.1, 0), (0.3, 5)]);
    assert_eq!(weights(Selection::Greedy, &with_nan), [0.0, 0.0, 1.0]);
}

#[test]
fn random_is_uniform_and_degenerate_cases_fall_back_to_uniform() {
    assert_eq!(probabilities(Selection::Random, &cands(&FOUR)), [0.25; 4]);
    assert!(probabilities(Selection::Dgm, &[]).is_empty());
    for m in Selection::ALL {
        assert_eq!(choose(m, &[], 1, 1), None);
    }
    // Every dgm-h weight underflows to 0 → uniform.
    let swamped = cands(&[(0.5, 1000), (0.9, 2000)]);
    assert_eq!(weights(Selection::DgmH, &swamped), [0.0, 0.0]);
    assert_eq!(probabilities(Selection::DgmH, &swamped), [0.5, 0.5]);
    // A NaN score is never drawn while others can be.
    let nan = cands(&[(f64::NAN, 0), (0.5, 0)]);
    assert_eq!(probabilities(Selection::Dgm, &nan), [0.0, 1.0]);
    for step in 0..50 {
        assert_eq!(choose(Selection::Dgm, &nan, 3, step), Some(1));
    }
}

#[test]
fn draws_are_deterministic_and_follow_the_probabilities() {
    let c = cands(&FOUR);
    const DRAWS: u64 = 40_000;
    for method in [Selection::Dgm, Selection::DgmH, Selection::Random] {
        let probs = probabilities(method, &c);
        let mut counts = [0u64; 4];
        for step in 0..DRAWS {
            let i = choose(method, &c, 2024, step).unwrap();
            assert_eq!(choose(method, &c, 2024, step), Some(i), "same seed and step, same choice");
            counts[i] += 1;
        }
        let freq: Vec<f64> = counts.iter().map(|&n| n as f64 / DRAWS as f64).collect();
        // Binomial standard deviation at p = 0.5 over 40 000 draws is 0.0025.
        assert_close(&freq, &probs, 0.01);
    }
    // Another seed makes other choices.
    let a: Vec<_> = (0..64).map(|s| choose(Selection::Random, &c, 1, s)).collect();
    let b: Vec<_> = (0..64).map(|s| choose(Selection::Random, &c, 2, s)).collect();
    assert_ne!(a, b);
}

#[test]
fn splitmix64_matches_the_reference_and_is_pinned() {
    // Reference outputs of SplitMix64 seeded with 0.
    let mut r = SplitMix64::new(0);
    assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
    assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
    // Per-step streams are fixed: changing them would change resumed runs.
    let first: Vec<u64> = (0..3).map(|s| SplitMix64::for_step(42, s).next_u64()).collect();
    let again: Vec<u64> = (0..3).map(|s| SplitMix64::for_step(42, s).next_u64()).collect();
    assert_eq!(first, again);
    assert_eq!(first.iter().collect::<HashSet<_>>().len(), 3);
    let mut r = SplitMix64::new(7);
    for _ in 0..1000 {
        let x = r.next_f64();
        assert!((0.0..1.0).contains(&x));
        assert!(r.below(3) < 3);
    }
}

#[test]
fn selection_names_round_trip() {
    for m in Selection::ALL {
        assert_eq!(m.as_str().parse::<Selection>().unwrap(), m);
        assert_eq!(serde_json::to_value(m).unwrap(), json!(m.as_str()));
        assert_eq!(m.to_string(), m.as_str());
    }
    assert_eq!("dgm-h".parse::<Selection>().unwrap(), Selection::DgmH);
    assert!(matches!("DGM".parse::<Selection>(), Err(Error::Invalid(_))));
    assert_eq!("held-out".parse::<Split>().unwrap(), Split::HeldOut);
    assert_eq!(serde_json::to_value(VariantStatus::Refused).unwrap(), json!("refused"));
    assert_eq!("stopped".parse::<RunStatus>().unwrap(), RunStatus::Stopped);
}

#[test]
fn the_step_ledger_records_each_step_once() {
    let (_tmp, archive) = fresh();
    archive.begin_run("r", &serde_json::json!({})).unwrap();
    assert_eq!(archive.step("r", 3).unwrap(), None);
    archive.record_step("r", 3, None, "refused").unwrap();
    archive.record_step("r", 3, None, "accepted").unwrap();
    assert_eq!(archive.step("r", 3).unwrap(), Some((None, "refused".to_string())), "the first record stands");
}

#[test]
fn hgm_prefers_a_productive_clade_over_a_better_root_and_still_explores() {
    // Candidate 0 scores 0.6 but its eight descendants all scored 0.9;
    // candidate 1 scores 0.8 alone; candidate 2 is new (0.5, no children).
    let c = cands(&[(0.6, 8), (0.8, 0), (0.5, 0)]);
    let mut productive = Clade::default().with(0.6);
    for _ in 0..8 {
        productive = productive.with(0.9);
    }
    let clades = [productive, Clade::default().with(0.8), Clade::default().with(0.5)];
    assert!(clades[0].mean() > clades[1].mean(), "{clades:?}");
    const DRAWS: u64 = 4000;
    let mut counts = [0u64; 3];
    for step in 0..DRAWS {
        let i = choose_hgm(&c, &clades, 77, step).unwrap();
        assert_eq!(choose_hgm(&c, &clades, 77, step), Some(i), "same seed and step, same choice");
        counts[i] += 1;
    }
    assert!(counts[0] > counts[1] && counts[1] > counts[2], "{counts:?}");
    assert!(counts[2] > 0, "a one-member clade is still drawn sometimes: {counts:?}");
    assert_eq!(choose_hgm(&[], &[], 1, 1), None);
    // Without clade data each candidate is its own clade: the better root
    // is drawn more often.
    let own: u64 = (0..DRAWS).filter(|&s| choose(Selection::Hgm, &c, 5, s) == Some(1)).count() as u64;
    assert!(own > DRAWS / 3, "{own}");
    // Clamped and non-finite scores still count, as 1 and 0.
    assert_eq!(Clade::default().with(7.0).with(f64::NAN), Clade { successes: 1.0, failures: 1.0, size: 2 });
}
