//! Tests of the audit log on real files: a chain, every kind of tampering,
//! concurrency (threads, handles, processes), reopening, queries, crash
//! recovery.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::*;

// ---------------------------------------------------------------- helpers

const V1: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const V2: &str = "9f86aaaa884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const V3: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

fn fresh() -> (TempDir, AuditLog) {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&tmp.path().join("audit")).unwrap();
    (tmp, log)
}

fn variant_for(i: usize) -> Option<&'static str> {
    [Some(V1), Some(V2), Some(V3), None][i % 4]
}

fn kind_for(i: usize) -> EventKind {
    let n = EventKind::KNOWN.len();
    if i % (n + 1) == n {
        EventKind::Other("gpu-lease".into())
    } else {
        EventKind::KNOWN[i % (n + 1)].clone()
    }
}

fn details_for(i: usize) -> Value {
    json!({
        "i": i,
        "tokens": 200 + i,
        "ratio": (i as f64) / 7.0,
        "text": format!("line \"{i}\" — naïve ✓ \\ \n tab\t"),
        "nested": {"z": [1, 2.5, null, true], "a": {"deep": i.is_multiple_of(3)}},
    })
}

/// A log of `n` records with varied variants, kinds and details. Written
/// with [`Durability::Flush`] to keep the tampering tests quick; the
/// concurrency, reopen and recovery tests use the default `Fsync`.
fn chain(n: usize) -> (TempDir, AuditLog, Vec<Record>) {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open_with(&tmp.path().join("audit"), Durability::Flush).unwrap();
    let recs = (0..n).map(|i| log.append(variant_for(i), kind_for(i), details_for(i)).unwrap()).collect();
    (tmp, log, recs)
}

/// The log's lines, each with its `\n`.
fn lines(log: &AuditLog) -> Vec<Vec<u8>> {
    let bytes = fs::read(log.log_path()).unwrap();
    bytes.split_inclusive(|&b| b == b'\n').map(|l| l.to_vec()).collect()
}

fn write_lines(log: &AuditLog, lines: &[Vec<u8>]) {
    fs::write(log.log_path(), lines.concat()).unwrap();
}

fn report(log: &AuditLog) -> VerifyReport {
    let r = log.verify().unwrap();
    assert_eq!(r, verify_dir(log.dir()).unwrap(), "verify and verify_dir agree");
    r
}

/// Assert a failed report with exactly this first bad seq and good-record
/// count, and a problem containing `needle`; returns the problem.
#[track_caller]
fn assert_bad(r: &VerifyReport, first_bad: Option<u64>, records: u64, needle: &str) -> String {
    assert!(!r.ok, "expected a failure, got {r:?}");
    assert_eq!(r.first_bad_seq, first_bad, "{r:?}");
    assert_eq!(r.records, records, "{r:?}");
    let p = r.problem.clone().expect("a problem");
    assert!(p.contains(needle), "problem {p:?} lacks {needle:?}");
    p
}

#[track_caller]
fn assert_good(r: &VerifyReport, records: u64) {
    assert_eq!((r.ok, r.records, r.first_bad_seq, r.problem.as_deref()), (true, records, None, None), "{r:?}");
}

fn head_bytes(log: &AuditLog) -> Vec<u8> {
    fs::read(log.head_path()).unwrap()
}

// ---------------------------------------------------------------- a good chain

#[test]
fn handle_is_clone_send_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<AuditLog>();
}

#[test]
fn a_long_chain_verifies() {
    let (_tmp, log, recs) = chain(120);
    let r = report(&log);
    assert_good(&r, 120);
    assert_eq!(r.last_hash.as_deref(), Some(recs[119].hash.as_str()));
    assert_eq!(log.head().unwrap(), Some(Head { seq: 119, hash: recs[119].hash.clone() }));
    assert_eq!(r.to_string(), format!("audit log OK: 120 records, head {}", recs[119].hash));

    let read = log.records().unwrap();
    assert_eq!(read, recs, "records() returns exactly what append returned");
    for (i, rec) in read.iter().enumerate() {
        assert_eq!(rec.seq, i as u64);
        assert_eq!(rec.prev, if i == 0 { ZERO_HASH.to_owned() } else { read[i - 1].hash.clone() });
        assert_eq!(rec.variant.as_deref(), variant_for(i));
        assert_eq!(rec.event, kind_for(i));
        assert_eq!(rec.details, details_for(i));
        assert_eq!(rec.time.len(), "2026-04-14T12:34:56.789Z".len());
        assert!(rec.time.ends_with('Z') && rec.time.as_bytes()[10] == b'T', "{}", rec.time);
    }
    // Each line on disk is the documented canonical form.
    for (line, rec) in lines(&log).iter().zip(&read) {
        let text = std::str::from_utf8(line).unwrap();
        let member = format!(",\"hash\":\"{}\"}}\n", rec.hash);
        assert!(text.ends_with(&member));
        let canonical = format!("{}}}", &text[..text.len() - member.len()]);
        assert_eq!(hex::encode(Sha256::digest(canonical.as_bytes())), rec.hash);
        assert!(text.starts_with(&format!("{{\"seq\":{},\"time\":\"", rec.seq)));
    }
}

#[test]
fn absent_or_empty_logs_verify_ok() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    assert_good(&verify_dir(&missing).unwrap(), 0);
    assert!(!missing.exists(), "verify_dir creates nothing");

    let log = AuditLog::open(&tmp.path().join("a/b/audit")).unwrap();
    assert!(log.log_path().exists());
    let r = report(&log);
    assert_good(&r, 0);
    assert_eq!(r.last_hash, None);
    assert_eq!(r.to_string(), "audit log OK: empty");
    assert_eq!(log.records().unwrap(), vec![]);
    assert_eq!(log.head().unwrap(), None);
}

#[test]
fn reopening_continues_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let first: Vec<Record> = {
        let log = AuditLog::open(&dir).unwrap();
        (0..5).map(|i| log.append(Some(V1), EventKind::Use, json!({"i": i})).unwrap()).collect()
    };
    let log = AuditLog::open(&dir).unwrap();
    let next = log.append(None, EventKind::Build, json!({"again": true})).unwrap();
    assert_eq!(next.seq, 5);
    assert_eq!(next.prev, first[4].hash);
    for i in 0..4 {
        log.append(Some(V2), EventKind::Trap, json!(i)).unwrap();
    }
    let all = log.records().unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    assert_good(&report(&log), 10);
}

#[test]
fn flush_durability_writes_the_same_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let log = AuditLog::open_with(tmp.path(), Durability::Flush).unwrap();
    assert_eq!(log.durability(), Durability::Flush);
    for i in 0..30 {
        log.append(variant_for(i), kind_for(i), details_for(i)).unwrap();
    }
    assert_good(&report(&log), 30);
    // A Fsync handle continues it.
    let log2 = AuditLog::open(tmp.path()).unwrap();
    assert_eq!(log2.durability(), Durability::Fsync);
    assert_eq!(log2.append(None, EventKind::Approval, json!({})).unwrap().seq, 30);
    assert_good(&report(&log2), 31);
}

// ---------------------------------------------------------------- tampering

#[cfg(unix)]
#[test]
fn every_single_byte_change_is_detected_at_its_record() {
    use std::os::unix::fs::FileExt;

    let (_tmp, log, _) = chain(12);
    let original = lines(&log);
    // Flip each byte in place on the real file, verify, flip it back.
    let file = fs::OpenOptions::new().write(true).open(log.log_path()).unwrap();
    let (mut altered, mut garbled) = (0, 0);
    for k in [0usize, 5, 11] {
        let line = &original[k];
        let start: usize = original[..k].iter().map(Vec::len).sum();
        for pos in 0..line.len() - 1 {
            let flipped = line[pos] ^ 0x01;
            assert_ne!(flipped, b'\n');
            file.write_at(&[flipped], (start + pos) as u64).unwrap();
            let r = report(&log);
            file.write_at(&line[pos..pos + 1], (start + pos) as u64).unwrap();
            assert!(!r.ok, "byte {pos} of record {k} changed undetected");
            assert_eq!((r.first_bad_seq, r.records), (Some(k as u64), k as u64), "byte {pos}: {r:?}");
            let p = r.problem.unwrap();
            if p.starts_with(&format!("record {k} (line {}) was altered: its bytes hash to ", k + 1)) {
                altered += 1;
            } else if p.starts_with(&format!("line {} (seq {k}) is garbled: ", k + 1)) {
                garbled += 1;
            } else {
                panic!("unexpected problem for byte {pos} of record {k}: {p}");
            }
        }
    }
    // Both paths were exercised (value bytes → hash mismatch; structure → garbled).
    assert!(altered > 100 && garbled > 20, "altered {altered}, garbled {garbled}");
    assert_eq!(lines(&log), original);
    assert_good(&report(&log), 12);
}

#[test]
fn a_changed_detail_value_is_detected() {
    let (_tmp, log, recs) = chain(10);
    let mut ls = lines(&log);
    let text = String::from_utf8(ls[4].clone()).unwrap();
    assert!(text.contains("\"tokens\":204"));
    ls[4] = text.replacen("\"tokens\":204", "\"tokens\":904", 1).into_bytes();
    write_lines(&log, &ls);
    let r = report(&log);
    let p = assert_bad(&r, Some(4), 4, "record 4 (line 5) was altered");
    assert!(p.contains(&format!("carries hash {}", recs[4].hash)), "{p}");
    assert_eq!(r.last_hash.as_deref(), Some(recs[3].hash.as_str()));
    assert_eq!(r.to_string(), format!("audit log FAILED at seq 4: {p} (4 records before it are intact)"));
    // Reading still works (verify is the integrity check), and shows the edit.
    assert_eq!(log.records().unwrap()[4].details["tokens"], json!(904));
}

#[test]
fn a_whitespace_only_edit_is_detected() {
    let (_tmp, log, _) = chain(6);
    let mut ls = lines(&log);
    let text = String::from_utf8(ls[2].clone()).unwrap();
    ls[2] = text.replacen("\"seq\":2,", "\"seq\": 2,", 1).into_bytes();
    write_lines(&log, &ls);
    assert_bad(&report(&log), Some(2), 2, "record 2 (line 3) was altered");
}

#[test]
fn a_deleted_record_is_detected() {
    for k in [0usize, 7, 18] {
        let (_tmp, log, _) = chain(20);
        let mut ls = lines(&log);
        ls.remove(k);
        write_lines(&log, &ls);
        assert_bad(
            &report(&log),
            Some(k as u64),
            k as u64,
            &format!("line {} should hold seq {k} but holds seq {}: records were deleted or moved", k + 1, k + 1),
        );
    }
    // The last one deleted: the log is now shorter than the head says.
    let (_tmp, log, _) = chain(20);
    let mut ls = lines(&log);
    ls.pop();
    write_lines(&log, &ls);
    assert_bad(&report(&log), Some(19), 19, "records 19 to 19 are missing (the tail was truncated)");
}

#[test]
fn swapped_records_are_detected() {
    for k in [0usize, 9, 18] {
        let (_tmp, log, _) = chain(20);
        let mut ls = lines(&log);
        ls.swap(k, k + 1);
        write_lines(&log, &ls);
        assert_bad(
            &report(&log),
            Some(k as u64),
            k as u64,
            &format!("line {} should hold seq {k} but holds seq {}", k + 1, k + 1),
        );
    }
}

#[test]
fn inserted_or_duplicated_records_are_detected() {
    let (_tmp, log, _) = chain(10);
    let mut ls = lines(&log);
    ls.insert(4, ls[3].clone());
    write_lines(&log, &ls);
    assert_bad(
        &report(&log),
        Some(4),
        4,
        "line 5 should hold seq 4 but holds seq 3: records were inserted, duplicated or moved",
    );
}

#[test]
fn a_forged_record_that_does_not_chain_is_detected() {
    // A self-consistent record (its own hash is right) spliced in place of
    // record 6, and one in place of record 0 with a non-zero prev.
    let (_tmp, log, recs) = chain(10);
    let (_, forged) =
        record::encode(6, now_rfc3339(), Some(V1.into()), EventKind::Grant, json!({"all": true}), "ab".repeat(32))
            .unwrap();
    let mut ls = lines(&log);
    ls[6] = forged;
    write_lines(&log, &ls);
    let p = assert_bad(&report(&log), Some(6), 6, "record 6 does not chain: its prev is abab");
    assert!(p.contains(&format!("record 5 has hash {}", recs[5].hash)), "{p}");

    let (_, forged0) =
        record::encode(0, now_rfc3339(), None, EventKind::Grant, json!({}), recs[3].hash.clone()).unwrap();
    ls[0] = forged0;
    write_lines(&log, &ls);
    assert_bad(&report(&log), Some(0), 0, "record 0 does not start the chain");
}

#[test]
fn a_truncated_tail_is_detected() {
    let (_tmp, log, recs) = chain(20);
    let ls = lines(&log);

    // Whole records cut off.
    write_lines(&log, &ls[..17]);
    let r = report(&log);
    assert_bad(
        &r,
        Some(17),
        17,
        "the log ends at seq 16 but the head says its last record is seq 19: records 17 to 19 are missing",
    );
    assert_eq!(r.last_hash.as_deref(), Some(recs[16].hash.as_str()));

    // Cut inside the last record.
    let mut cut = ls.concat();
    cut.truncate(cut.len() - 40);
    fs::write(log.log_path(), &cut).unwrap();
    assert_bad(&report(&log), Some(19), 19, "line 20 (seq 19) is incomplete");

    // Cut to nothing, or the log removed.
    fs::write(log.log_path(), b"").unwrap();
    assert_bad(&report(&log), Some(0), 0, "the log is empty or missing but the head says its last record is seq 19");
    fs::remove_file(log.log_path()).unwrap();
    assert_bad(&report(&log), Some(0), 0, "the log is empty or missing");
}

#[test]
fn a_rolled_back_head_is_detected() {
    let (_tmp, log) = fresh();
    for i in 0..10 {
        log.append(variant_for(i), kind_for(i), details_for(i)).unwrap();
    }
    let head_at_9 = head_bytes(&log);
    for i in 10..20 {
        log.append(variant_for(i), kind_for(i), details_for(i)).unwrap();
    }
    let head_at_19 = head_bytes(&log);
    let head_at_18 = {
        let recs = log.records().unwrap();
        format!("{{\"seq\":18,\"hash\":\"{}\"}}\n", recs[18].hash).into_bytes()
    };

    fs::write(log.head_path(), &head_at_9).unwrap();
    let p = assert_bad(
        &report(&log),
        Some(10),
        20,
        "the log holds records up to seq 19 but the head says the last is seq 9: the head was rolled back",
    );
    assert!(!p.contains("host stopped"), "{p}");

    // Rolled back by one: indistinguishable from a crash between the two writes.
    fs::write(log.head_path(), &head_at_18).unwrap();
    assert_bad(&report(&log), Some(19), 20, "or the host stopped between writing record 19 and updating the head");

    fs::write(log.head_path(), &head_at_19).unwrap();
    assert_good(&report(&log), 20);
}

#[test]
fn a_head_with_a_wrong_hash_is_detected() {
    let (_tmp, log, recs) = chain(8);
    fs::write(log.head_path(), format!("{{\"seq\":7,\"hash\":\"{}\"}}", recs[6].hash)).unwrap();
    assert_bad(&report(&log), Some(7), 8, &format!("the head says record 7 has hash {}", recs[6].hash));
    fs::write(log.head_path(), format!("{{\"seq\":3,\"hash\":\"{}\"}}", "cd".repeat(32))).unwrap();
    assert_bad(&report(&log), Some(3), 8, &format!("but it has hash {}", recs[3].hash));
}

#[test]
fn a_garbled_line_is_detected() {
    let (_tmp, log, _) = chain(12);
    let original = lines(&log);

    let mut ls = original.clone();
    ls[6] = b"this is not json\n".to_vec();
    write_lines(&log, &ls);
    assert_bad(&report(&log), Some(6), 6, "line 7 (seq 6) is garbled: not a valid record");
    assert!(matches!(log.records(), Err(Error::Invalid(m)) if m.contains("line 7 is not a valid record")));

    // Valid JSON that is not a record.
    ls[6] = b"{\"seq\":6}\n".to_vec();
    write_lines(&log, &ls);
    assert_bad(&report(&log), Some(6), 6, "line 7 (seq 6) is garbled");

    // A record whose hash member is right in shape but the JSON before it is broken.
    let mut broken = original[6].clone();
    broken[0] = b'[';
    ls[6] = broken;
    write_lines(&log, &ls);
    assert_bad(&report(&log), Some(6), 6, "line 7 (seq 6) is garbled");

    // A blank line.
    let mut ls = original.clone();
    ls.insert(4, b"\n".to_vec());
    write_lines(&log, &ls);
    assert_bad(&report(&log), Some(4), 4, "line 5 (seq 4) is garbled: not a valid record: empty line");

    // Invalid UTF-8.
    let mut ls = original.clone();
    let pos = ls[2].len() / 2;
    ls[2][pos] = 0xff;
    write_lines(&log, &ls);
    assert_bad(&report(&log), Some(2), 2, "line 3 (seq 2) is garbled");
}

#[test]
fn a_missing_or_garbled_head_is_detected() {
    let (_tmp, log, _) = chain(5);
    let head = head_bytes(&log);
    fs::remove_file(log.head_path()).unwrap();
    let p = assert_bad(&report(&log), Some(0), 5, "is missing but the log holds 5 records (seq 0 to 4)");
    assert!(p.contains(HEAD_FILE));

    fs::write(log.head_path(), b"{not json").unwrap();
    let r = report(&log);
    assert_bad(&r, None, 5, "is unreadable: not a head record");
    assert!(r.to_string().starts_with("audit log FAILED: the head file"), "{r}");
    assert!(matches!(log.head(), Err(Error::Invalid(_))));

    fs::write(log.head_path(), head).unwrap();
    assert_good(&report(&log), 5);
}

#[test]
fn record_problems_are_reported_before_head_problems() {
    let (_tmp, log, _) = chain(10);
    let mut ls = lines(&log);
    ls.swap(2, 3);
    write_lines(&log, &ls);
    fs::remove_file(log.head_path()).unwrap();
    assert_bad(&report(&log), Some(2), 2, "line 3 should hold seq 2");
}

// ---------------------------------------------------------------- concurrency

#[test]
fn eight_threads_make_one_chain() {
    let (_tmp, log) = fresh();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            thread::spawn(move || {
                for i in 0..50 {
                    let rec = log.append(Some(V1), EventKind::Use, json!({"thread": t, "i": i})).unwrap();
                    assert_eq!(rec.details, json!({"thread": t, "i": i}));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_good(&report(&log), 400);
    let recs = log.records().unwrap();
    assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), (0..400).collect::<Vec<_>>());
    assert_eq!(log.head().unwrap().unwrap().seq, 399);
    // Every thread's 50 appends are there, in its own order.
    for t in 0..8 {
        let mine: Vec<i64> =
            recs.iter().filter(|r| r.details["thread"] == json!(t)).map(|r| r.details["i"].as_i64().unwrap()).collect();
        assert_eq!(mine, (0..50).collect::<Vec<_>>(), "thread {t}");
    }
}

#[test]
fn separately_opened_handles_interleave_through_the_file_lock() {
    // Two handles do not share a mutex: only the advisory lock and the
    // re-read of head and tail keep them in one chain (as two processes).
    let tmp = tempfile::tempdir().unwrap();
    let a = AuditLog::open(tmp.path()).unwrap();
    let b = AuditLog::open(tmp.path()).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let log = if t % 2 == 0 { a.clone() } else { b.clone() };
            thread::spawn(move || {
                for i in 0..25 {
                    log.append(None, EventKind::Build, json!({"t": t, "i": i})).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_good(&report(&a), 200);
    assert_eq!(b.records().unwrap().len(), 200);
}

const CHILD_DIR_ENV: &str = "VIVARIUM_AUDIT_TEST_CHILD_DIR";
const CHILD_TAG_ENV: &str = "VIVARIUM_AUDIT_TEST_CHILD_TAG";

/// Runs as a child process of `processes_interleave_into_one_chain`; a no-op
/// when run as an ordinary test.
#[test]
fn child_process_appender() {
    let (Some(dir), Some(tag)) = (std::env::var_os(CHILD_DIR_ENV), std::env::var(CHILD_TAG_ENV).ok()) else {
        return;
    };
    let log = AuditLog::open(Path::new(&dir)).unwrap();
    for i in 0..40 {
        log.append(Some(V3), EventKind::Use, json!({"process": tag, "i": i})).unwrap();
    }
}

#[test]
fn processes_interleave_into_one_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // The test's path without the crate name: `audit::tests::child_process_appender`.
    let name = format!("{}::child_process_appender", module_path!().split_once("::").unwrap().1);
    let children: Vec<_> = (0..3)
        .map(|c| {
            Command::new(&exe)
                .args([name.as_str(), "--exact", "--test-threads=1", "--nocapture"])
                .env(CHILD_DIR_ENV, tmp.path())
                .env(CHILD_TAG_ENV, format!("child{c}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let log = AuditLog::open(tmp.path()).unwrap();
    for i in 0..40 {
        log.append(Some(V3), EventKind::Use, json!({"process": "parent", "i": i})).unwrap();
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("1 passed"), "the child ran the appender: {stdout}");
    }
    assert_good(&report(&log), 160);
    let recs = log.records().unwrap();
    for tag in ["parent", "child0", "child1", "child2"] {
        let mine: Vec<i64> = recs
            .iter()
            .filter(|r| r.details["process"] == json!(tag))
            .map(|r| r.details["i"].as_i64().unwrap())
            .collect();
        assert_eq!(mine, (0..40).collect::<Vec<_>>(), "{tag}");
    }
}

// ---------------------------------------------------------------- queries, kinds, caps

#[test]
fn query_filters_by_variant_prefix_kind_and_seq() {
    let (_tmp, log) = fresh();
    log.append(Some(V1), EventKind::Grant, json!({"n": 0})).unwrap();
    log.append(Some(V2), EventKind::Grant, json!({"n": 1})).unwrap();
    log.append(Some(V3), EventKind::Deny, json!({"n": 2})).unwrap();
    log.append(None, EventKind::Build, json!({"n": 3})).unwrap();
    log.append(Some(V1), EventKind::LimitHit, json!({"n": 4})).unwrap();
    log.append(Some(V2), EventKind::Other("gpu-lease".into()), json!({"n": 5})).unwrap();
    log.append(Some(V1), EventKind::Grant, json!({"n": 6})).unwrap();

    let seqs = |f: Filter| log.query(&f).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(Filter::new()), vec![0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(seqs(Filter::new().variant(V1)), vec![0, 4, 6]);
    assert_eq!(seqs(Filter::new().variant("9f86")), vec![0, 1, 4, 5, 6], "V1 and V2 share a prefix");
    assert_eq!(seqs(Filter::new().variant("9f86a")), vec![1, 5]);
    assert_eq!(seqs(Filter::new().variant("")), vec![0, 1, 2, 4, 5, 6], "host events have no variant");
    assert_eq!(seqs(Filter::new().variant("ffff")), Vec::<u64>::new());
    assert_eq!(seqs(Filter::new().event(EventKind::Grant)), vec![0, 1, 6]);
    assert_eq!(seqs(Filter::new().event(EventKind::Grant).event(EventKind::Deny)), vec![0, 1, 2, 6]);
    assert_eq!(seqs(Filter::new().event(EventKind::Other("gpu-lease".into()))), vec![5]);
    assert_eq!(seqs(Filter::new().event(EventKind::Other("grant".into()))), vec![0, 1, 6]);
    assert_eq!(seqs(Filter::new().variant(V1).event(EventKind::Grant)), vec![0, 6]);
    assert_eq!(seqs(Filter::new().variant(V1).event(EventKind::Grant).since(1)), vec![6]);
    assert_eq!(seqs(Filter::new().since(5)), vec![5, 6]);
    assert_eq!(
        Filter::new().variant("ab").event(EventKind::Trap).since(2),
        Filter { variant_prefix: Some("ab".into()), events: vec![EventKind::Trap], since_seq: Some(2) }
    );
    let recs = log.query(&Filter::new().variant(V2)).unwrap();
    assert_eq!(recs[1].event, EventKind::Other("gpu-lease".into()));
    assert_eq!(recs[1].details, json!({"n": 5}));
}

#[test]
fn unknown_kinds_read_back_and_verify() {
    // A record written by some future host with a kind (and a name) this
    // build has no variant for, and which `append` would not even accept.
    let (_tmp, log, recs) = chain(3);
    let (future, line) = record::encode(
        3,
        now_rfc3339(),
        None,
        EventKind::Other("Quantum Leap ✓".into()),
        json!({"x": 1}),
        recs[2].hash.clone(),
    )
    .unwrap();
    let mut bytes = fs::read(log.log_path()).unwrap();
    bytes.extend_from_slice(&line);
    fs::write(log.log_path(), bytes).unwrap();
    fs::write(log.head_path(), format!("{{\"seq\":3,\"hash\":\"{}\"}}\n", future.hash)).unwrap();

    assert_good(&report(&log), 4);
    let read = log.records().unwrap();
    assert_eq!(read[3], future);
    assert_eq!(read[3].event.as_str(), "Quantum Leap ✓");
    assert!(!read[3].event.is_known());
    assert_eq!(log.query(&Filter::new().event(EventKind::Other("Quantum Leap ✓".into()))).unwrap(), vec![future]);
    // And the chain goes on after it.
    assert_eq!(log.append(None, EventKind::Use, json!(null)).unwrap().seq, 4);
    assert_good(&report(&log), 5);
}

#[test]
fn append_checks_variant_and_kind() {
    let (_tmp, log) = fresh();
    let too_long = "a".repeat(MAX_VARIANT_BYTES + 1);
    for (variant, kind) in [
        (Some(too_long.as_str()), EventKind::Use),
        (Some("abc\ndef"), EventKind::Use),
        (Some(V1), EventKind::Other("Bad Kind".into())),
        (Some(V1), EventKind::Other(String::new())),
    ] {
        let err = log.append(variant, kind, json!({})).unwrap_err();
        assert!(matches!(err, Error::Invalid(ref m) if m.contains("is not valid")), "{err}");
    }
    assert_eq!(log.records().unwrap(), vec![]);
    assert_eq!(log.head().unwrap(), None);

    // "" is a host event; a known name given as Other is the known kind.
    let rec = log.append(Some(""), EventKind::Other("grant".into()), json!({})).unwrap();
    assert_eq!((rec.variant, rec.event), (None, EventKind::Grant));
    let rec = log.append(Some(&"a".repeat(MAX_VARIANT_BYTES)), EventKind::Use, json!({})).unwrap();
    assert_eq!(rec.variant.unwrap().len(), MAX_VARIANT_BYTES);
}

#[test]
fn oversized_details_are_capped_in_the_log() {
    let (_tmp, log) = fresh();
    let flood = json!({"output": "A".repeat(10 * MAX_DETAILS_BYTES)});
    let flood_bytes = serde_json::to_vec(&flood).unwrap();
    let rec = log.append(Some(V1), EventKind::LimitHit, flood.clone()).unwrap();
    assert_eq!(rec.details["truncated"], json!(true));
    assert_eq!(rec.details["original_bytes"], json!(flood_bytes.len()));
    assert_eq!(rec.details["original_sha256"], json!(hex::encode(Sha256::digest(&flood_bytes))));
    let output_bytes = serde_json::to_vec(&flood["output"]).unwrap();
    assert_eq!(rec.details["output"]["original_bytes"], json!(output_bytes.len()));
    assert_eq!(
        rec.details["output"]["preview"].as_str().unwrap(),
        std::str::from_utf8(&output_bytes[..DETAILS_PREVIEW_BYTES]).unwrap()
    );
    let len = fs::metadata(log.log_path()).unwrap().len();
    assert!(len < 2 * DETAILS_PREVIEW_BYTES as u64, "line is {len} bytes");
    assert_eq!(log.records().unwrap(), vec![rec]);

    // At the cap: kept whole.
    let at_cap = Value::String("b".repeat(MAX_DETAILS_BYTES - 2));
    let rec = log.append(Some(V1), EventKind::Use, at_cap.clone()).unwrap();
    assert_eq!(rec.details, at_cap);
    assert_good(&report(&log), 2);
}

// ---------------------------------------------------------------- crashes

#[test]
fn append_repairs_a_head_left_one_behind() {
    let (_tmp, log, _) = chain(5);
    let head_at_4 = head_bytes(&log);
    let r5 = log.append(Some(V1), EventKind::Use, json!({"last": true})).unwrap();
    fs::write(log.head_path(), &head_at_4).unwrap(); // as if killed before the rename
    assert_bad(&report(&log), Some(5), 6, "the host stopped between writing record 5");

    let next = log.append(Some(V2), EventKind::Trap, json!({})).unwrap();
    assert_eq!(next.seq, 7);
    let recs = log.records().unwrap();
    assert_eq!(recs[5], r5, "the unacknowledged-by-head record is kept");
    let rec = &recs[6];
    assert_eq!(
        (rec.event.clone(), rec.variant.clone(), rec.prev.clone()),
        (EventKind::Recovery, None, r5.hash.clone())
    );
    assert_eq!(rec.details["reason"], json!("head-behind"));
    assert_eq!(rec.details["head_seq"], json!(4));
    assert_eq!(rec.details["adopted_seq"], json!(5));
    assert_eq!(rec.details["adopted_hash"], json!(r5.hash));
    assert_eq!(recs[7], next);
    assert_good(&report(&log), 8);
}

/// A crash in the middle of that repair: the head is moved to the adopted
/// record before the recovery event is written, so a host killed right
/// after writing the event leaves the head one behind again (repaired the
/// same way), never two (damage). The crash sweep once hit the old order.
#[test]
fn a_crash_during_the_repair_leaves_a_state_the_next_append_repairs() {
    let (_tmp, log, _) = chain(5);
    let head_at_4 = head_bytes(&log);
    log.append(Some(V1), EventKind::Use, json!({"last": true})).unwrap();
    fs::write(log.head_path(), &head_at_4).unwrap();
    // The repair runs: the head moves to record 5 first, then the recovery
    // event (6) and the new record (7) are written.
    log.append(Some(V2), EventKind::Trap, json!({})).unwrap();
    let recs = log.records().unwrap();
    assert_eq!(recs[6].event, EventKind::Recovery);
    // Killed right after the recovery event: the log ends at 6, the head
    // names 5 — what `adopt` guarantees before the event is written.
    let head_at_5 = {
        let h = json!({"seq": 5, "hash": recs[5].hash});
        serde_json::to_vec(&h).unwrap()
    };
    let text = fs::read_to_string(log.log_path()).unwrap();
    let upto_6: String = text.lines().take(7).map(|l| format!("{l}\n")).collect();
    fs::write(log.log_path(), upto_6).unwrap();
    fs::write(log.head_path(), head_at_5).unwrap();
    let next = log.append(None, EventKind::Grant, json!({})).unwrap();
    assert_eq!(next.seq, 8, "record 6 adopted, a recovery event 7, then this one");
    assert_eq!(log.records().unwrap()[7].details["adopted_seq"], json!(6));
    assert_good(&report(&log), 9);
}

#[test]
fn append_repairs_a_missing_first_head() {
    let (_tmp, log) = fresh();
    let r0 = log.append(None, EventKind::Grant, json!({})).unwrap();
    fs::remove_file(log.head_path()).unwrap();
    assert_bad(&report(&log), Some(0), 1, "is missing but the log holds 1 records");
    let next = log.append(None, EventKind::Grant, json!({})).unwrap();
    assert_eq!(next.seq, 2);
    let recs = log.records().unwrap();
    assert_eq!(recs[1].event, EventKind::Recovery);
    assert_eq!(recs[1].details["reason"], json!("head-missing"));
    assert_eq!(recs[1].details["adopted_hash"], json!(r0.hash));
    assert_good(&report(&log), 3);
}

#[test]
fn append_repairs_a_torn_write() {
    let (_tmp, log, recs) = chain(3);
    let good = fs::read(log.log_path()).unwrap();
    let fragment = b"{\"seq\":3,\"time\":\"2026-";
    let mut torn = good.clone();
    torn.extend_from_slice(fragment);
    fs::write(log.log_path(), &torn).unwrap();
    assert_bad(
        &report(&log),
        Some(3),
        3,
        &format!("line 4 (seq 3) is incomplete: {} bytes without a final newline", fragment.len()),
    );
    assert_eq!(log.records().unwrap(), recs, "readers skip the unfinished line");

    let next = log.append(Some(V1), EventKind::Use, json!({})).unwrap();
    assert_eq!(next.seq, 4);
    let all = log.records().unwrap();
    let rec = &all[3];
    assert_eq!(rec.event, EventKind::Recovery);
    assert_eq!(rec.prev, recs[2].hash);
    assert_eq!(rec.details["reason"], json!("torn-write"));
    assert_eq!(rec.details["at_offset"], json!(good.len()));
    assert_eq!(rec.details["discarded_bytes"], json!(fragment.len()));
    assert_eq!(rec.details["discarded_sha256"], json!(hex::encode(Sha256::digest(fragment))));
    assert_eq!(rec.details["discarded_preview"], json!(std::str::from_utf8(fragment).unwrap()));
    assert!(fs::read(log.log_path()).unwrap().starts_with(&good));
    assert_good(&report(&log), 5);

    // A torn very first write.
    let (_tmp2, log2) = fresh();
    fs::write(log2.log_path(), b"{\"se").unwrap();
    assert_eq!(log2.append(None, EventKind::Use, json!({})).unwrap().seq, 1);
    assert_eq!(log2.records().unwrap()[0].details["reason"], json!("torn-write"));
    assert_good(&report(&log2), 2);
}

#[test]
fn append_refuses_a_damaged_log_and_writes_nothing() {
    type Damage = fn(&AuditLog, &[Vec<u8>], &[u8]);
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "head two behind",
            |log, _, _| {
                let recs = log.records().unwrap();
                fs::write(log.head_path(), format!("{{\"seq\":7,\"hash\":\"{}\"}}", recs[7].hash)).unwrap();
            },
            "the head names seq 7",
        ),
        (
            "head missing",
            |log, _, _| fs::remove_file(log.head_path()).unwrap(),
            "the head file is missing but the log holds records up to seq 9",
        ),
        ("head garbled", |log, _, _| fs::write(log.head_path(), "garbage").unwrap(), "is unreadable"),
        ("tail truncated", |log, ls, _| write_lines(log, &ls[..8]), "the head names seq 9"),
        (
            "log emptied",
            |log, _, _| fs::write(log.log_path(), b"").unwrap(),
            "the log holds no complete record but the head says its last record is seq 9",
        ),
        (
            "last line garbled",
            |log, ls, _| {
                let mut ls = ls.to_vec();
                ls[9] = b"oops\n".to_vec();
                write_lines(log, &ls);
            },
            "the log's last complete line is not a valid record",
        ),
        (
            "last line altered",
            |log, ls, _| {
                let mut ls = ls.to_vec();
                ls[9][20] ^= 1;
                write_lines(log, &ls);
            },
            "it was changed after it was written",
        ),
        (
            "fragment after a mismatch",
            |log, ls, head| {
                write_lines(log, &ls[..9]);
                let mut b = fs::read(log.log_path()).unwrap();
                b.extend_from_slice(b"{\"partial");
                fs::write(log.log_path(), b).unwrap();
                fs::write(log.head_path(), head).unwrap();
            },
            "the head names seq 9",
        ),
    ];
    for (name, damage, needle) in cases {
        let (_tmp, log, _) = chain(10);
        let ls = lines(&log);
        damage(&log, &ls, &head_bytes(&log));
        let (log_before, head_before) = (fs::read(log.log_path()).ok(), fs::read(log.head_path()).ok());
        let err = log.append(None, EventKind::Use, json!({})).unwrap_err();
        match &err {
            Error::Invalid(m) => {
                assert!(m.contains(needle), "{name}: {m:?} lacks {needle:?}");
                assert!(m.contains("is damaged") && m.contains("Nothing was appended"), "{name}: {m}");
            }
            other => panic!("{name}: expected Invalid, got {other:?}"),
        }
        assert_eq!(fs::read(log.log_path()).ok(), log_before, "{name}: log untouched");
        assert_eq!(fs::read(log.head_path()).ok(), head_before, "{name}: head untouched");
        assert!(!report(&log).ok, "{name}: verify agrees it is damaged");
    }
}

#[test]
fn a_poisoned_writer_mutex_does_not_stop_the_log() {
    let (_tmp, log) = fresh();
    let l2 = log.clone();
    let _ = thread::spawn(move || {
        let _g = l2.inner.writer.lock().unwrap();
        panic!("poison the mutex");
    })
    .join();
    assert!(log.inner.writer.is_poisoned());
    assert_eq!(log.append(None, EventKind::Use, json!({})).unwrap().seq, 0);
    assert_good(&report(&log), 1);
}
