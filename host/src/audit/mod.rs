//! The audit log: an append-only, hash-chained record of everything the host
//! grants, denies and observes — grants, denials, refused imports, capability
//! use (aggregated per call), limit hits, traps, proposal verdicts, builds,
//! approvals, escalations.
//!
//! # Files
//!
//! [`AuditLog::open`] takes a directory (the host passes `$VIVARIUM_HOME/audit`)
//! and keeps in it:
//!
//! * `audit.jsonl` — the log: one record per line (JSON Lines), each line
//!   ending in `\n`, only ever appended to;
//! * `head.json` — the chain's head, `{"seq":N,"hash":"<hex>"}\n`: the `seq`
//!   and `hash` of the last record, replaced atomically after every append;
//! * `head.json.tmp` — transient, while the head is being replaced.
//!
//! # Record format
//!
//! ```text
//! {"seq":0,"time":"2026-11-25T12:52:16.058Z","variant":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","event":"grant","details":{"llm":{"models":["*"],"tokens":200000},"memory":{"bytes":1048576}},"prev":"0000000000000000000000000000000000000000000000000000000000000000","hash":"622ad78c3dd5b2651e4611e0d81f7bf08940ba4713240c554d4b714c924dc808"}
//! {"seq":1,"time":"2026-11-25T12:52:16.070Z","variant":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","event":"refused-import","details":{"import":"wasi:sockets/tcp@0.2.0"},"prev":"622ad78c3dd5b2651e4611e0d81f7bf08940ba4713240c554d4b714c924dc808","hash":"82262f7ee4d6fc1551879366eac16daae1ca1ef74eb94467b9ab63b16750bada"}
//! ```
//!
//! and `head.json` after them:
//!
//! ```text
//! {"seq":1,"hash":"82262f7ee4d6fc1551879366eac16daae1ca1ef74eb94467b9ab63b16750bada"}
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `seq` | u64; 0 for the first record, then +1 per record, no gaps |
//! | `time` | RFC 3339, UTC, milliseconds (`YYYY-MM-DDThh:mm:ss.sssZ`); informative only, not monotonic |
//! | `variant` | the variant's sha256 (any string up to 128 bytes), or `null` for a host event |
//! | `event` | the [`EventKind`], kebab-case (`grant`, `deny`, `refused-import`, `use`, `limit-hit`, `trap`, `proposal`, `build`, `approval`, `escalation`, `recovery`, or any other kebab-case name) |
//! | `details` | any JSON; at most 64 KiB serialized, else replaced by a marker (below) |
//! | `prev` | the previous record's `hash`; 64 zeros for record 0 |
//! | `hash` | lowercase hex sha256 of the record's canonical bytes |
//!
//! # Canonical form and hash
//!
//! The canonical bytes of a record are the compact JSON object of its first
//! six fields, in exactly this order, as `serde_json` writes them (no
//! whitespace, strings UTF-8 with JSON escapes, `details` as given — object
//! keys of a `serde_json::Value` come out sorted, or in insertion order where
//! serde_json's `preserve_order` feature is on; either way the hash covers
//! the bytes as written):
//!
//! ```text
//! {"seq":…,"time":"…","variant":…,"event":"…","details":…,"prev":"…"}
//! ```
//!
//! `hash = hex(sha256(canonical))`, and the line on disk is the canonical
//! bytes with the member `,"hash":"<hash>"` inserted before the final `}`,
//! then `\n`. So anyone can check a line without re-serializing anything:
//! strip the trailing `,"hash":"<64 hex>"}`, append `}`, hash the bytes as
//! they are, compare. Verification always hashes the stored bytes — never a
//! re-serialization — so every byte counts (an added space, `\u00e9` for `é`,
//! a reordered key all break the hash), and floats need no exact round trip.
//! In Python, for one line `l` (bytes, without its `\n`):
//!
//! ```text
//! body, h = re.fullmatch(rb'(.*),"hash":"([0-9a-f]{64})"}', l).groups()
//! assert hashlib.sha256(body + b"}").hexdigest() == h.decode()
//! ```
//!
//! # Size caps
//!
//! `details` over [`MAX_DETAILS_BYTES`] (64 KiB) serialized keep their
//! small fields (the verdict, digests, summary: what happened) and lose
//! their largest members, each replaced by
//! `{"truncated":true,"original_bytes":N,"original_sha256":"<hex>","preview":"<first 1 KiB of the JSON>"}`;
//! the object gains `"truncated":true` with the whole original's size and
//! digest ([`cap_details`]). A flood cannot blow up the log, cannot strip a
//! record of what it says, and the record still commits to what was
//! dropped. `variant` may be at most [`MAX_VARIANT_BYTES`] without control
//! characters, and an [`EventKind::Other`] name 1 to [`MAX_KIND_BYTES`] bytes
//! of `a-z0-9-`; `append` refuses others with [`Error::Invalid`].
//!
//! # Durability (fsync policy)
//!
//! With [`Durability::Fsync`] (the default), `append` returns only after
//! (1) the line is appended to `audit.jsonl` (`O_APPEND`, under the lock) and
//! `fdatasync`ed, (2) the new head is written to `head.json.tmp` and
//! `fsync`ed, (3) renamed over `head.json`, and (4) the directory is
//! `fsync`ed. A returned record survives power loss. Cost: three syncs per
//! append — fine for the host's volume (use is aggregated per call).
//! [`Durability::Flush`] does the same writes and rename without the syncs:
//! a record survives the host process dying, not the machine (tests, benches).
//!
//! # Concurrency
//!
//! [`AuditLog`] is `Clone + Send + Sync`; clones share one writer mutex, so
//! threads of one process append one at a time. Across processes (and across
//! separately opened `AuditLog`s) every append holds an exclusive advisory
//! lock on `audit.jsonl` ([`std::fs::File::lock`], `flock` on Linux) and
//! re-reads the head and the log's tail from disk under it, so writers
//! interleave into one chain. Readers ([`AuditLog::records`],
//! [`AuditLog::query`], [`verify_dir`]) take a shared lock and never see a
//! half-written append.
//!
//! # Crashes
//!
//! Before writing, `append` checks that the log's last record is the one the
//! head names. Two states that a crash can leave are repaired, and each
//! repair is itself written to the log as a [`EventKind::Recovery`] host
//! event (so it is never silent):
//!
//! * `torn-write`: the log ends in a line without `\n` (a write cut short)
//!   while the complete records match the head — the fragment is cut off, and
//!   the event records its length, sha256 and a preview;
//! * `head-behind`: the log holds exactly one well-formed record past the
//!   head that chains onto it (the host stopped between the log write and the
//!   head rename) — the head moves forward to it. Same for a log holding only
//!   record 0 and no head yet (`head-missing`).
//!
//! Any other mismatch — a missing or unreadable head with records, a head
//! ahead of the log, a head two or more records behind, a garbled last line —
//! makes `append` fail with [`Error::Invalid`] and write nothing; run
//! [`verify_dir`] (`vivarium audit verify`) to see where the damage is.
//! Until that repair, [`AuditLog::verify`] reports a crash state as a
//! failure like any other.
//!
//! # What `verify` detects
//!
//! [`VerifyReport::first_bad_seq`] is the `seq` the first bad line should
//! have (its 0-based position), and `problem` says what is wrong:
//!
//! | damage | `first_bad_seq` |
//! |---|---|
//! | a byte changed anywhere in record *k* (any field, its hash included) | *k* |
//! | record *k* deleted, or *k* and *k+1* swapped | *k* |
//! | a line inserted or duplicated at position *k* | *k* |
//! | a garbled or blank line at position *k*, or an unterminated last line | *k* |
//! | the tail cut after record *k−1* (log shorter than the head says) | *k* |
//! | the head rolled back to record *k−1* (log longer than the head says) | *k* |
//! | the head names record *k* with a different hash | *k* |
//! | `head.json` missing while the log is non-empty | 0 |
//! | `head.json` present, log empty or missing | 0 |
//! | `head.json` not a head | `None` |
//!
//! An absent or empty log with no head verifies OK with 0 records.
//!
//! # What the chain does not do
//!
//! The chain is unkeyed: it proves the files are what the host wrote, against
//! edits, deletions, reordering and truncation, but someone able to rewrite
//! the whole directory can recompute every hash. Variants never get a path to
//! this directory; to pin history against the operator's own machine, copy
//! [`VerifyReport::last_hash`] somewhere else now and then — every later
//! state must still contain that record.

mod grants;
mod record;
mod store;
mod time;
mod verify;

#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub use grants::{command, grants_of, latest_grant, manifest_grant, set_command, GrantRecord};
pub use record::{
    cap_details, EventKind, Record, DETAILS_PREVIEW_BYTES, MAX_DETAILS_BYTES, MAX_KIND_BYTES, MAX_VARIANT_BYTES,
    ZERO_HASH,
};
pub use store::Head;
pub use time::{now_rfc3339, rfc3339};
pub use verify::VerifyReport;

use record::{decode_line, encode};
use store::{read_head, read_tail, sync_dir, write_head, FileLock, HeadState};

use crate::error::{Error, Result};

/// The log's file name inside the audit directory.
pub const LOG_FILE: &str = "audit.jsonl";
/// The head's file name inside the audit directory.
pub const HEAD_FILE: &str = "head.json";
/// The head's temporary file, renamed over [`HEAD_FILE`].
const HEAD_TMP: &str = "head.json.tmp";

/// How hard `append` works to make a record survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync the log, the new head and the directory before returning:
    /// survives power loss. The default.
    #[default]
    Fsync,
    /// Hand the writes to the OS and return: survives the process dying,
    /// not the machine.
    Flush,
}

/// A handle on one audit directory. Cheap to clone; clones share the writer
/// mutex. See the [module docs](self) for format, locking and durability.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    log: PathBuf,
    head: PathBuf,
    head_tmp: PathBuf,
    durability: Durability,
    /// Serializes this process's appends (the file lock serializes processes;
    /// on platforms where that lock is per process, this is what keeps
    /// threads apart).
    writer: Mutex<()>,
}

/// Which records [`AuditLog::query`] returns. Empty criteria match all;
/// given criteria must all match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Records whose `variant` starts with this (host events never match).
    pub variant_prefix: Option<String>,
    /// Records of one of these kinds (empty: any kind).
    pub events: Vec<EventKind>,
    /// Records with `seq >= since_seq`.
    pub since_seq: Option<u64>,
}

impl Filter {
    /// A filter that matches every record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only records whose variant starts with `prefix` (an id or its prefix).
    pub fn variant(mut self, prefix: impl Into<String>) -> Self {
        self.variant_prefix = Some(prefix.into());
        self
    }

    /// Also accept records of kind `kind`.
    pub fn event(mut self, kind: EventKind) -> Self {
        self.events.push(kind);
        self
    }

    /// Only records from `seq` on.
    pub fn since(mut self, seq: u64) -> Self {
        self.since_seq = Some(seq);
        self
    }

    /// Whether `record` passes the filter.
    pub fn matches(&self, record: &Record) -> bool {
        let variant_ok = match (&self.variant_prefix, &record.variant) {
            (None, _) => true,
            (Some(p), Some(v)) => v.starts_with(p.as_str()),
            (Some(_), None) => false,
        };
        let event_ok = self.events.is_empty() || self.events.iter().any(|k| k.as_str() == record.event.as_str());
        let seq_ok = self.since_seq.is_none_or(|s| record.seq >= s);
        variant_ok && event_ok && seq_ok
    }
}

/// Where the next record goes: its `seq` and `prev`, plus recovery events to
/// write first.
struct ChainEnd {
    next_seq: u64,
    prev: String,
    recoveries: Vec<Value>,
}

impl AuditLog {
    /// Open (creating if missing) the audit log in `dir`, with
    /// [`Durability::Fsync`]. Reads nothing: damage shows at the next
    /// `append` or `verify`.
    pub fn open(dir: &Path) -> Result<AuditLog> {
        Self::open_with(dir, Durability::Fsync)
    }

    /// [`open`](Self::open) with an explicit durability.
    pub fn open_with(dir: &Path, durability: Durability) -> Result<AuditLog> {
        fs::create_dir_all(dir).map_err(|e| {
            Error::io(format!("cannot create audit directory {} (check $VIVARIUM_HOME)", dir.display()), e)
        })?;
        let log = dir.join(LOG_FILE);
        let existed = log.exists();
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .map_err(|e| Error::io(format!("cannot open audit log {}", log.display()), e))?;
        if !existed && durability == Durability::Fsync {
            sync_dir(dir)?;
        }
        Ok(AuditLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                head: dir.join(HEAD_FILE),
                head_tmp: dir.join(HEAD_TMP),
                log,
                durability,
                writer: Mutex::new(()),
            }),
        })
    }

    /// The audit directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The log file (`<dir>/audit.jsonl`).
    pub fn log_path(&self) -> &Path {
        &self.inner.log
    }

    /// The head file (`<dir>/head.json`).
    pub fn head_path(&self) -> &Path {
        &self.inner.head
    }

    /// This handle's durability.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// The head as on disk: `None` before the first append. An unreadable
    /// head file is [`Error::Invalid`].
    pub fn head(&self) -> Result<Option<Head>> {
        match read_head(&self.inner.head)? {
            HeadState::Missing => Ok(None),
            HeadState::Present(h) => Ok(Some(h)),
            HeadState::Garbled(why) => {
                Err(Error::Invalid(format!("audit head {} is unreadable: {why}", self.inner.head.display())))
            }
        }
    }

    /// Append one record and return it as written.
    ///
    /// `variant` is the variant's sha256, or `None` (or `""`) for a host
    /// event. `details` over [`MAX_DETAILS_BYTES`] are replaced by a marker.
    /// Durable on return per [`Durability`]. Fails with [`Error::Invalid`] for
    /// a bad `variant` or kind name, or when the log on disk is damaged (then
    /// nothing is written); see the module docs for the two crash states it
    /// repairs first.
    pub fn append(&self, variant: Option<&str>, event: EventKind, details: Value) -> Result<Record> {
        let variant = check_variant(variant)?;
        let event = EventKind::from_name(event.as_str());
        event.check()?;
        let details = cap_details(details)?;

        let _writer = self.inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let log = &self.inner.log;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(log)
            .map_err(|e| Error::io(format!("cannot open audit log {}", log.display()), e))?;
        let _lock = FileLock::exclusive(&file, log)?;
        let mut end = self.chain_end(&file)?;
        for recovery in std::mem::take(&mut end.recoveries) {
            self.write_record(&file, &mut end, None, EventKind::Recovery, recovery)?;
        }
        self.write_record(&file, &mut end, variant, event, details)
    }

    /// Every record, in order. Parses without checking hashes (that is
    /// [`verify`](Self::verify)'s job); a line that does not parse is
    /// [`Error::Invalid`]. An unterminated last line is an append that never
    /// completed and is skipped.
    pub fn records(&self) -> Result<Vec<Record>> {
        self.scan(|_| true)
    }

    /// The records that pass `filter`, in order (same reading rules as
    /// [`records`](Self::records)).
    pub fn query(&self, filter: &Filter) -> Result<Vec<Record>> {
        self.scan(|r| filter.matches(r))
    }

    /// Check the whole chain and the head. Damage is reported in the
    /// [`VerifyReport`] (see the module docs for `first_bad_seq` in each
    /// case); `Err` only when the files cannot be read.
    pub fn verify(&self) -> Result<VerifyReport> {
        verify::verify_files(&self.inner.log, &self.inner.head)
    }

    fn fsync(&self) -> bool {
        self.inner.durability == Durability::Fsync
    }

    fn damaged(&self, why: String) -> Error {
        Error::Invalid(format!(
            "audit log {} is damaged: {why}. Nothing was appended; run `vivarium audit verify` to see \
             where, and inspect {} before going on",
            self.inner.dir.display(),
            self.inner.log.display()
        ))
    }

    /// Move the head to `r`, the record a crash left past it, before
    /// anything else is appended: the recovery event that follows is itself
    /// a record, and a crash after writing it with the head still behind
    /// would leave the head two records back, which is damage, not a crash
    /// state (the crash sweep found that window).
    fn adopt(&self, r: &Record) -> Result<()> {
        let head = Head { seq: r.seq, hash: r.hash.clone() };
        write_head(&self.inner.dir, &self.inner.head, &self.inner.head_tmp, &head, self.fsync())
    }

    /// Under the exclusive lock: find where the chain ends, cross-checking the
    /// head and the log's tail, and repair the crash states (see module docs).
    fn chain_end(&self, file: &File) -> Result<ChainEnd> {
        let head = match read_head(&self.inner.head)? {
            HeadState::Missing => None,
            HeadState::Present(h) => Some(h),
            HeadState::Garbled(why) => {
                return Err(self.damaged(format!("the head file {} is unreadable ({why})", self.inner.head.display())))
            }
        };
        let tail = read_tail(file, 2)
            .map_err(|e| Error::io(format!("cannot read audit log {}", self.inner.log.display()), e))?;
        let no_fragment = tail.fragment.is_empty();
        let last = match tail.lines.last().map(|l| decode_line(l)) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => return Err(self.damaged(format!("the log's last complete line is {e}"))),
        };
        let names = |r: &Record, h: &Head| r.seq == h.seq && r.hash == h.hash;
        let mut recoveries = Vec::new();
        let (next_seq, prev) = match (&head, &last) {
            (None, None) => (0, ZERO_HASH.to_owned()),
            (Some(h), Some(r)) if names(r, h) => (r.seq, r.hash.clone()),
            (Some(h), Some(r))
                if no_fragment
                    && h.seq.checked_add(1) == Some(r.seq)
                    && r.prev == h.hash
                    && tail.lines.len() == 2
                    && decode_line(&tail.lines[0]).is_ok_and(|p| names(&p, h)) =>
            {
                self.adopt(r)?;
                recoveries.push(json!({
                    "reason": "head-behind",
                    "explanation": "the log held one record past the head (the host stopped between \
                                    writing a record and updating the head); the head was moved to it",
                    "head_seq": h.seq,
                    "adopted_seq": r.seq,
                    "adopted_hash": r.hash,
                }));
                (r.seq, r.hash.clone())
            }
            (None, Some(r)) if no_fragment && r.seq == 0 && r.prev == ZERO_HASH && tail.lines.len() == 1 => {
                self.adopt(r)?;
                recoveries.push(json!({
                    "reason": "head-missing",
                    "explanation": "the log held only its first record and no head (the host stopped \
                                    before the first head was written); the head was created for it",
                    "adopted_seq": 0,
                    "adopted_hash": r.hash,
                }));
                (0, r.hash.clone())
            }
            (Some(h), None) => {
                return Err(self.damaged(format!(
                    "the log holds no complete record but the head says its last record is seq {}",
                    h.seq
                )))
            }
            (None, Some(r)) => {
                return Err(
                    self.damaged(format!("the head file is missing but the log holds records up to seq {}", r.seq))
                )
            }
            (Some(h), Some(r)) => {
                return Err(self.damaged(format!(
                    "the head names seq {} (hash {}) but the log's last record is seq {} (hash {})",
                    h.seq, h.hash, r.seq, r.hash
                )))
            }
        };
        let next_seq = match last {
            None => 0,
            Some(_) => next_seq.checked_add(1).ok_or_else(|| self.damaged("seq overflow".into()))?,
        };
        if !no_fragment {
            // Only reached when the complete records match the head.
            file.set_len(tail.fragment_offset)
                .map_err(|e| Error::io(format!("cannot cut a torn write off {}", self.inner.log.display()), e))?;
            if self.fsync() {
                file.sync_data().map_err(|e| Error::io(format!("cannot fsync {}", self.inner.log.display()), e))?;
            }
            let frag = &tail.fragment;
            let preview = String::from_utf8_lossy(&frag[..frag.len().min(256)]).into_owned();
            recoveries.insert(
                0,
                json!({
                    "reason": "torn-write",
                    "explanation": "the log ended in an incomplete line (a write cut short by a crash); \
                                    it was removed",
                    "at_offset": tail.fragment_offset,
                    "discarded_bytes": frag.len(),
                    "discarded_sha256": hex::encode(Sha256::digest(frag)),
                    "discarded_preview": preview,
                }),
            );
        }
        Ok(ChainEnd { next_seq, prev, recoveries })
    }

    /// Write one record at the chain's end, sync it, move the head.
    fn write_record(
        &self,
        file: &File,
        end: &mut ChainEnd,
        variant: Option<String>,
        event: EventKind,
        details: Value,
    ) -> Result<Record> {
        let (record, line) = encode(end.next_seq, now_rfc3339(), variant, event, details, end.prev.clone())?;
        let log = &self.inner.log;
        let ctx = || format!("cannot append to audit log {}", log.display());
        let mut w = file;
        w.write_all(&line).map_err(|e| Error::io(ctx(), e))?;
        if self.fsync() {
            file.sync_data().map_err(|e| Error::io(ctx(), e))?;
        }
        let head = Head { seq: record.seq, hash: record.hash.clone() };
        write_head(&self.inner.dir, &self.inner.head, &self.inner.head_tmp, &head, self.fsync())?;
        end.next_seq += 1;
        end.prev = record.hash.clone();
        Ok(record)
    }

    fn scan(&self, mut keep: impl FnMut(&Record) -> bool) -> Result<Vec<Record>> {
        let log = &self.inner.log;
        let ctx = || format!("cannot read audit log {}", log.display());
        let file = match File::open(log) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(ctx(), e)),
        };
        let _lock = FileLock::shared(&file, log)?;
        let mut reader = BufReader::new(&file);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for line_no in 1u64.. {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(|e| Error::io(ctx(), e))? == 0 || buf.pop() != Some(b'\n') {
                break;
            }
            let record: Record = serde_json::from_slice(&buf).map_err(|e| {
                Error::Invalid(format!(
                    "audit log {} line {line_no} is not a valid record ({e}); run `vivarium audit verify`",
                    log.display()
                ))
            })?;
            if keep(&record) {
                out.push(record);
            }
        }
        Ok(out)
    }
}

/// Verify the audit log in `dir` without opening it for writing (creates
/// nothing). A missing directory or log with no head is OK with 0 records.
pub fn verify_dir(dir: &Path) -> Result<VerifyReport> {
    verify::verify_files(&dir.join(LOG_FILE), &dir.join(HEAD_FILE))
}

fn check_variant(variant: Option<&str>) -> Result<Option<String>> {
    match variant {
        None | Some("") => Ok(None),
        Some(v) if v.len() > MAX_VARIANT_BYTES || v.chars().any(char::is_control) => Err(Error::Invalid(format!(
            "audit variant id {:?} is not valid: at most {MAX_VARIANT_BYTES} bytes, no control characters",
            v.chars().take(80).collect::<String>()
        ))),
        Some(v) => Ok(Some(v.to_owned())),
    }
}
