//! Checking a whole log against itself and its head.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde::Serialize;

use super::record::{decode_line, LineError, ZERO_HASH};
use super::store::{read_head, FileLock, HeadState};
use crate::error::{Error, Result};

/// The outcome of [`verify_dir`](super::verify_dir) /
/// [`AuditLog::verify`](super::AuditLog::verify).
///
/// A damaged log is a report with `ok == false`, not an `Err`; `Err` means
/// the files could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Whether the whole log and its head are intact.
    pub ok: bool,
    /// How many records were checked and found good, in order, before the
    /// first problem (all of them when `ok`).
    pub records: u64,
    /// The `seq` of the first record that is wrong or missing; see
    /// [`AuditLog::verify`](super::AuditLog::verify) for the value in each case.
    pub first_bad_seq: Option<u64>,
    /// What is wrong, in words; `None` when `ok`.
    pub problem: Option<String>,
    /// The hash of the last good record: when `ok`, the chain's head, which an
    /// operator can write down elsewhere to pin the log's whole history.
    pub last_hash: Option<String>,
}

impl VerifyReport {
    fn good(records: u64, last_hash: Option<String>) -> Self {
        Self { ok: true, records, first_bad_seq: None, problem: None, last_hash }
    }

    fn bad(records: u64, first_bad_seq: Option<u64>, problem: String, last_hash: Option<String>) -> Self {
        Self { ok: false, records, first_bad_seq, problem: Some(problem), last_hash }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.problem, self.first_bad_seq) {
            (None, _) => match &self.last_hash {
                Some(h) => write!(f, "audit log OK: {} records, head {h}", self.records),
                None => write!(f, "audit log OK: empty"),
            },
            (Some(p), Some(seq)) => {
                write!(f, "audit log FAILED at seq {seq}: {p} ({} records before it are intact)", self.records)
            }
            (Some(p), None) => write!(f, "audit log FAILED: {p}"),
        }
    }
}

/// Verify `log` (a JSON Lines file) against `head`, under a shared lock on
/// the log so that no append is half-seen.
pub(crate) fn verify_files(log: &Path, head_path: &Path) -> Result<VerifyReport> {
    let io_ctx = || format!("cannot read audit log {}", log.display());
    let file = match File::open(log) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(io_ctx(), e)),
    };
    let _lock = match &file {
        Some(f) => Some(FileLock::shared(f, log)?),
        None => None,
    };
    let head = read_head(head_path)?;
    let head_seq = match &head {
        HeadState::Present(h) => Some(h.seq),
        _ => None,
    };

    // Walk the chain.
    let mut n: u64 = 0; // records good so far = the seq the next line must have
    let mut prev: Option<String> = None;
    let mut hash_at_head_seq: Option<String> = None;
    if let Some(file) = &file {
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read = reader.read_until(b'\n', &mut buf).map_err(|e| Error::io(io_ctx(), e))?;
            if read == 0 {
                break;
            }
            let line_no = n + 1;
            let bad = |why: String| Ok(VerifyReport::bad(n, Some(n), why, prev.clone()));
            if buf.last() != Some(&b'\n') {
                return bad(format!(
                    "line {line_no} (seq {n}) is incomplete: {read} bytes without a final newline \
                     (a write cut short by a crash, or a truncation inside a record)"
                ));
            }
            buf.pop();
            let record = match decode_line(&buf) {
                Ok(r) => r,
                Err(e @ LineError::Garbled(_)) => {
                    return bad(format!("line {line_no} (seq {n}) is garbled: {e}"));
                }
                Err(e @ LineError::HashMismatch { .. }) => {
                    return bad(format!("record {n} (line {line_no}) was altered: {e}"));
                }
            };
            if record.seq != n {
                let how = if record.seq > n {
                    "records were deleted or moved"
                } else {
                    "records were inserted, duplicated or moved"
                };
                return bad(format!("line {line_no} should hold seq {n} but holds seq {}: {how}", record.seq));
            }
            let expected_prev = prev.as_deref().unwrap_or(ZERO_HASH);
            if record.prev != expected_prev {
                let why = match n {
                    0 => format!(
                        "record 0 does not start the chain: its prev is {} instead of all zeros \
                         (records before it were removed)",
                        record.prev
                    ),
                    _ => format!(
                        "record {n} does not chain: its prev is {} but record {} has hash {expected_prev} \
                         (a record before it was replaced or the log was spliced)",
                        record.prev,
                        n - 1
                    ),
                };
                return bad(why);
            }
            if Some(n) == head_seq {
                hash_at_head_seq = Some(record.hash.clone());
            }
            prev = Some(record.hash);
            n += 1;
        }
    }

    // Every line is good; now the head must point at the last one.
    Ok(match head {
        HeadState::Garbled(why) => {
            VerifyReport::bad(n, None, format!("the head file {} is unreadable: {why}", head_path.display()), prev)
        }
        HeadState::Missing if n == 0 => VerifyReport::good(0, None),
        HeadState::Missing => VerifyReport::bad(
            n,
            Some(0),
            format!(
                "the head file {} is missing but the log holds {n} records (seq 0 to {}): \
                 without the head, truncation cannot be detected",
                head_path.display(),
                n - 1
            ),
            prev,
        ),
        HeadState::Present(h) if n == 0 => VerifyReport::bad(
            0,
            Some(0),
            format!(
                "the log is empty or missing but the head says its last record is seq {}: \
                 the log was truncated or replaced",
                h.seq
            ),
            None,
        ),
        HeadState::Present(h) => {
            let last = n - 1;
            if h.seq > last {
                VerifyReport::bad(
                    n,
                    Some(n),
                    format!(
                        "the log ends at seq {last} but the head says its last record is seq {}: \
                         records {n} to {} are missing (the tail was truncated)",
                        h.seq, h.seq
                    ),
                    prev,
                )
            } else if hash_at_head_seq.as_deref() != Some(h.hash.as_str()) {
                VerifyReport::bad(
                    n,
                    Some(h.seq),
                    format!(
                        "the head says record {} has hash {} but it has hash {}: the head file \
                         or the log was replaced",
                        h.seq,
                        h.hash,
                        hash_at_head_seq.unwrap_or_default()
                    ),
                    prev,
                )
            } else if h.seq < last {
                let cause = if last == h.seq + 1 {
                    format!(
                        "the head was rolled back, or the host stopped between writing record {last} \
                         and updating the head (the next append repairs that case and records a \
                         recovery event)"
                    )
                } else {
                    "the head was rolled back".to_owned()
                };
                VerifyReport::bad(
                    n,
                    Some(h.seq + 1),
                    format!(
                        "the log holds records up to seq {last} but the head says the last is seq {}: {cause}",
                        h.seq
                    ),
                    prev,
                )
            } else {
                VerifyReport::good(n, prev)
            }
        }
    })
}
