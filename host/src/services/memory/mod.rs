//! The `memory` service: a persistent key-value store per lineage, with a
//! byte quota from the grant.
//!
//! * **Store.** One SQLite file, [`MemoryStore`] (the host keeps it at
//!   `$VIVARIUM_HOME/memory.sqlite`), shared by every variant; each row
//!   belongs to one *lineage* id. The caller names the lineage of a call in
//!   [`CallOptions::lineage`](crate::runtime::CallOptions::lineage); by
//!   default it is the variant's sha256, so two different variants never
//!   share memory unless the host says so. The guest never names a lineage.
//! * **Quota.** The bytes of a lineage are its keys plus its values (UTF-8
//!   bytes of the key, bytes of the value). A `set` that would take the
//!   lineage past the grant's `bytes` is refused with `quota-exceeded` and
//!   writes nothing; replacing a value counts only the difference. A
//!   lineage already over a smaller quota (a child with a tighter grant) can
//!   still shrink: deletes and smaller values always pass.
//! * **Keys.** 1 to [`MAX_KEY_BYTES`] bytes, no control characters;
//!   anything else is `invalid-key`.
//! * **Transactions.** Each `set` and `delete` is its own `BEGIN IMMEDIATE`
//!   transaction, committed before the host call returns: what a call wrote
//!   stays written even if the call later traps or hits its deadline. (The
//!   simplest rule that cannot lose an acknowledged write; a variant that
//!   wants all-or-nothing writes one value.)
//! * **Forks.** [`MemoryStore::fork`] gives a child lineage a *snapshot*
//!   copy of its parent's memory (not copy-on-write): after the fork, the
//!   child's writes never change the parent's rows and the parent's later
//!   writes are not seen by the child. Forking is idempotent: a lineage that
//!   already exists is left as it is (a resumed run forks again safely).
//! * **Sealed calls.** A call on a held-out task
//!   ([`CallOptions::sealed`](crate::runtime::CallOptions::sealed)) reads
//!   its lineage's memory but writes to a throwaway fork of it
//!   (`sealed:<random>`), removed when the call ends: nothing a graded call
//!   on a held-out task stores can reach the variant's `improve`, its
//!   children (they fork the lineage) or a later call.
//! * **Bounds.** `list-keys` returns at most [`MAX_LIST_KEYS`] keys. Store
//!   failures never trap the guest: `set` answers `denied`, the others an
//!   empty answer, and the use record counts them under `errors`.

mod grant;
pub use grant::{MemoryGrant, MemoryPolicy, MemoryRequest};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::bindings::vivarium::agent::memory as wit;
use crate::error::{Error, Result};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Most keys one `list-keys` returns.
pub const MAX_LIST_KEYS: usize = 1000;
/// The store's file name under `$VIVARIUM_HOME`.
pub const STORE_FILE: &str = "memory.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lineages(
    id TEXT PRIMARY KEY,
    parent TEXT,
    used INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS entries(
    lineage TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (lineage, key)
) STRICT, WITHOUT ROWID;
";

fn db_err(context: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| Error::Internal(anyhow::anyhow!("memory store: {context}: {e}"))
}

/// Why a `set` was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetRefusal {
    /// The key is empty, too long or holds control characters.
    InvalidKey(String),
    /// The lineage would go past its quota.
    QuotaExceeded(String),
}

/// The persistent key-value store behind the `memory` service. Opened on
/// first use; `Send + Sync`, one connection behind a mutex.
#[derive(Debug)]
pub struct MemoryStore {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
}

impl MemoryStore {
    /// A store at `path`, opened (and created) on first use.
    pub fn lazy(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), conn: Mutex::new(None) }
    }

    /// A store at `path`, opened now.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let store = Self::lazy(path);
        store.with(|_| Ok(()))?;
        Ok(store)
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<R>(&self, f: impl FnOnce(&mut Connection) -> Result<R>) -> Result<R> {
        let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("cannot create {} (check $VIVARIUM_HOME)", dir.display()), e))?;
            }
            let conn = Connection::open(&self.path).map_err(db_err("cannot open"))?;
            conn.busy_timeout(Duration::from_secs(10)).map_err(db_err("cannot set the busy timeout"))?;
            conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err("cannot enable WAL"))?;
            conn.pragma_update(None, "synchronous", "FULL").map_err(db_err("cannot set synchronous"))?;
            conn.execute_batch(SCHEMA).map_err(db_err("cannot create the schema"))?;
            *guard = Some(conn);
        }
        f(guard.as_mut().expect("opened above"))
    }

    /// The value under `key` in `lineage`.
    pub fn get(&self, lineage: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.with(|c| {
            c.query_row("SELECT value FROM entries WHERE lineage = ?1 AND key = ?2", params![lineage, key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db_err("cannot read"))
        })
    }

    /// Store `value` under `key` in `lineage` unless that would take the
    /// lineage past `quota` bytes; one transaction. The inner `Err` is a
    /// refusal (nothing written), the outer one a store failure.
    pub fn set(&self, lineage: &str, key: &str, value: &[u8], quota: u64) -> Result<Result<(), SetRefusal>> {
        if let Err(why) = check_key(key) {
            return Ok(Err(SetRefusal::InvalidKey(why)));
        }
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err("cannot begin"))?;
            let used = ensure_lineage(&tx, lineage)?;
            let old: Option<u64> = tx
                .query_row(
                    "SELECT length(CAST(key AS BLOB)) + length(value) FROM entries WHERE lineage = ?1 AND key = ?2",
                    params![lineage, key],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .map_err(db_err("cannot read"))?
                .map(|n| n as u64);
            let new = (key.len() + value.len()) as u64;
            let after = used - old.unwrap_or(0) + new;
            if after > quota && new > old.unwrap_or(0) {
                return Ok(Err(SetRefusal::QuotaExceeded(format!(
                    "storing {new} bytes (key and value) would use {after} of the {quota}-byte quota ({} bytes left)",
                    quota.saturating_sub(used - old.unwrap_or(0))
                ))));
            }
            tx.execute(
                "INSERT INTO entries(lineage, key, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(lineage, key) DO UPDATE SET value = excluded.value",
                params![lineage, key, value],
            )
            .map_err(db_err("cannot write"))?;
            tx.execute("UPDATE lineages SET used = ?2 WHERE id = ?1", params![lineage, after as i64])
                .map_err(db_err("cannot write"))?;
            tx.commit().map_err(db_err("cannot commit"))?;
            Ok(Ok(()))
        })
    }

    /// Remove `key` from `lineage`; true when it existed.
    pub fn delete(&self, lineage: &str, key: &str) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err("cannot begin"))?;
            let size: Option<i64> = tx
                .query_row(
                    "DELETE FROM entries WHERE lineage = ?1 AND key = ?2 \
                     RETURNING length(CAST(key AS BLOB)) + length(value)",
                    params![lineage, key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err("cannot delete"))?;
            if let Some(size) = size {
                tx.execute("UPDATE lineages SET used = max(used - ?2, 0) WHERE id = ?1", params![lineage, size])
                    .map_err(db_err("cannot write"))?;
            }
            tx.commit().map_err(db_err("cannot commit"))?;
            Ok(size.is_some())
        })
    }

    /// Keys of `lineage` starting with `prefix`, sorted (byte order), at most `max`.
    pub fn list_keys(&self, lineage: &str, prefix: &str, max: usize) -> Result<Vec<String>> {
        self.with(|c| {
            let mut stmt = c
                .prepare_cached("SELECT key FROM entries WHERE lineage = ?1 AND key >= ?2 ORDER BY key")
                .map_err(db_err("cannot list"))?;
            let mut rows = stmt.query(params![lineage, prefix]).map_err(db_err("cannot list"))?;
            let mut keys = Vec::new();
            while keys.len() < max {
                let Some(row) = rows.next().map_err(db_err("cannot list"))? else { break };
                let key: String = row.get(0).map_err(db_err("cannot list"))?;
                if !key.starts_with(prefix) {
                    break;
                }
                keys.push(key);
            }
            Ok(keys)
        })
    }

    /// Bytes (keys plus values) `lineage` holds.
    pub fn used(&self, lineage: &str) -> Result<u64> {
        self.with(|c| {
            c.query_row("SELECT used FROM lineages WHERE id = ?1", [lineage], |r| r.get::<_, i64>(0))
                .optional()
                .map(|n| n.unwrap_or_default() as u64)
                .map_err(db_err("cannot read"))
        })
    }

    /// Every entry of `lineage`, by key (for inspection and tests).
    pub fn entries(&self, lineage: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.with(|c| {
            let mut stmt = c
                .prepare_cached("SELECT key, value FROM entries WHERE lineage = ?1 ORDER BY key")
                .map_err(db_err("cannot list"))?;
            let rows = stmt
                .query_map([lineage], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db_err("cannot list"));
            rows
        })
    }

    /// Every lineage id in the store, sorted.
    pub fn lineages(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT id FROM lineages ORDER BY id").map_err(db_err("cannot list"))?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(db_err("cannot list"))?;
            rows.collect::<rusqlite::Result<Vec<String>>>().map_err(db_err("cannot list"))
        })
    }

    /// Whether `lineage` exists (was written to or forked).
    pub fn exists(&self, lineage: &str) -> Result<bool> {
        self.with(|c| {
            c.query_row("SELECT 1 FROM lineages WHERE id = ?1", [lineage], |_| Ok(()))
                .optional()
                .map(|o| o.is_some())
                .map_err(db_err("cannot read"))
        })
    }

    /// Start lineage `child` as a snapshot copy of `parent`'s memory, in one
    /// transaction. Returns false, changing nothing, when `child` already
    /// exists (so a resumed run can fork again). A `parent` with no memory
    /// gives an empty child.
    pub fn fork(&self, parent: &str, child: &str) -> Result<bool> {
        if parent == child {
            return Err(Error::invalid(format!("cannot fork memory lineage {child} from itself")));
        }
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err("cannot begin"))?;
            let exists = tx
                .query_row("SELECT 1 FROM lineages WHERE id = ?1", [child], |_| Ok(()))
                .optional()
                .map_err(db_err("cannot read"))?;
            if exists.is_some() {
                return Ok(false);
            }
            let used: i64 = tx
                .query_row("SELECT used FROM lineages WHERE id = ?1", [parent], |r| r.get(0))
                .optional()
                .map_err(db_err("cannot read"))?
                .unwrap_or(0);
            tx.execute(
                "INSERT INTO lineages(id, parent, used, created) VALUES (?1, ?2, ?3, ?4)",
                params![child, parent, used, crate::audit::now_rfc3339()],
            )
            .map_err(db_err("cannot write"))?;
            tx.execute(
                "INSERT INTO entries(lineage, key, value) SELECT ?2, key, value FROM entries WHERE lineage = ?1",
                params![parent, child],
            )
            .map_err(db_err("cannot copy"))?;
            tx.commit().map_err(db_err("cannot commit"))?;
            Ok(true)
        })
    }

    /// Remove `lineage` and every entry of it, in one transaction; true when
    /// it existed. Used for the throwaway lineage of a sealed call.
    pub fn remove(&self, lineage: &str) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err("cannot begin"))?;
            tx.execute("DELETE FROM entries WHERE lineage = ?1", [lineage]).map_err(db_err("cannot delete"))?;
            let n = tx.execute("DELETE FROM lineages WHERE id = ?1", [lineage]).map_err(db_err("cannot delete"))?;
            tx.commit().map_err(db_err("cannot commit"))?;
            Ok(n > 0)
        })
    }
}

/// The throwaway lineage of a sealed call: a fork of the call's lineage,
/// removed when this is dropped (whichever way the call ended).
pub struct SealedLineage {
    store: Arc<MemoryStore>,
    /// The lineage id the call reads and writes: `sealed:<random>`.
    pub id: String,
}

impl SealedLineage {
    /// Fork `lineage` into a fresh throwaway lineage on `store`.
    pub fn fork(store: Arc<MemoryStore>, lineage: &str) -> Result<Self> {
        use sha2::{Digest, Sha256};
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nonce = format!(
            "{lineage}/{}/{}/{:?}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
        );
        let id = format!("sealed:{}", &hex::encode(Sha256::digest(nonce.as_bytes()))[..32]);
        store.fork(lineage, &id)?;
        Ok(Self { store, id })
    }
}

impl Drop for SealedLineage {
    fn drop(&mut self) {
        if let Err(e) = self.store.remove(&self.id) {
            tracing::warn!(error = %e, lineage = %self.id, "cannot remove a sealed call's memory");
        }
    }
}

/// The lineage's `used` bytes, creating its row if missing.
fn ensure_lineage(tx: &rusqlite::Transaction<'_>, lineage: &str) -> Result<u64> {
    tx.execute(
        "INSERT OR IGNORE INTO lineages(id, parent, used, created) VALUES (?1, NULL, 0, ?2)",
        params![lineage, crate::audit::now_rfc3339()],
    )
    .map_err(db_err("cannot write"))?;
    tx.query_row("SELECT used FROM lineages WHERE id = ?1", [lineage], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
        .map_err(db_err("cannot read"))
}

/// `Err(why)` unless `key` is 1 to [`MAX_KEY_BYTES`] bytes without control characters.
pub fn check_key(key: &str) -> std::result::Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("the key is {} bytes; keys are at most {MAX_KEY_BYTES} bytes", key.len()));
    }
    if key.chars().any(char::is_control) {
        return Err("the key holds a control character".into());
    }
    Ok(())
}

/// Usage counters of the memory service for one call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryUsage {
    /// The lineage the call used.
    pub lineage: String,
    /// `get` calls.
    pub gets: u64,
    /// `set` calls (refused ones included).
    pub sets: u64,
    /// `delete` calls.
    pub deletes: u64,
    /// `list-keys` calls.
    pub lists: u64,
    /// Value bytes returned by `get`.
    pub bytes_read: u64,
    /// Key and value bytes stored by accepted `set`s.
    pub bytes_written: u64,
    /// `set`s refused with `quota-exceeded`.
    pub quota_exceeded: u64,
    /// `set`s refused with `invalid-key`.
    pub invalid_keys: u64,
    /// Store failures (the guest got `denied` or an empty answer).
    pub errors: u64,
}

#[derive(Debug)]
struct Inner {
    grant: Option<MemoryGrant>,
    store: Option<Arc<MemoryStore>>,
    lineage: String,
    usage: Mutex<MemoryUsage>,
}

/// Per-call state of the memory service; cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub struct MemoryState {
    inner: Arc<Inner>,
}

impl MemoryState {
    /// State for one call of a variant granted `grant` (`None`: not granted;
    /// the service is then not linked), on `store`, for `lineage`.
    pub fn new(grant: Option<MemoryGrant>, store: Option<Arc<MemoryStore>>, lineage: String) -> Self {
        let usage = MemoryUsage { lineage: lineage.clone(), ..MemoryUsage::default() };
        Self { inner: Arc::new(Inner { grant, store, lineage, usage: Mutex::new(usage) }) }
    }

    /// The usage counters so far; `None` when the service is not granted.
    pub fn usage(&self) -> Option<MemoryUsage> {
        self.inner.grant.as_ref()?;
        Some(self.inner.usage.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    fn count(&self, f: impl FnOnce(&mut MemoryUsage)) {
        f(&mut self.inner.usage.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Run `f` on the store on a blocking thread; `None` when there is no
    /// store or it failed (counted).
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&MemoryStore, &str) -> Result<R> + Send + 'static,
    ) -> Option<R> {
        let (Some(store), Some(_)) = (self.inner.store.clone(), self.inner.grant.as_ref()) else {
            self.count(|u| u.errors += 1);
            return None;
        };
        let lineage = self.inner.lineage.clone();
        match tokio::task::spawn_blocking(move || f(&store, &lineage)).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                tracing::warn!("memory service: {e}");
                self.count(|u| u.errors += 1);
                None
            }
            Err(e) => {
                tracing::warn!("memory service: the store thread failed: {e}");
                self.count(|u| u.errors += 1);
                None
            }
        }
    }

    fn quota(&self) -> u64 {
        self.inner.grant.as_ref().map_or(0, |g| g.bytes.bytes())
    }
}

impl wit::Host for MemoryState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.count(|u| u.gets += 1);
        let value = self.run(move |s, l| s.get(l, &key)).await.flatten();
        if let Some(v) = &value {
            self.count(|u| u.bytes_read += v.len() as u64);
        }
        Ok(value)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), wit::Error>> {
        self.count(|u| u.sets += 1);
        let size = (key.len() + value.len()) as u64;
        let quota = self.quota();
        let Some(outcome) = self.run(move |s, l| s.set(l, &key, &value, quota)).await else {
            return Ok(Err(wit::Error::Denied("the memory store is not available on this host".into())));
        };
        Ok(match outcome {
            Ok(()) => {
                self.count(|u| u.bytes_written += size);
                Ok(())
            }
            Err(SetRefusal::InvalidKey(why)) => {
                self.count(|u| u.invalid_keys += 1);
                Err(wit::Error::InvalidKey(why))
            }
            Err(SetRefusal::QuotaExceeded(why)) => {
                self.count(|u| u.quota_exceeded += 1);
                Err(wit::Error::QuotaExceeded(why))
            }
        })
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        self.count(|u| u.deletes += 1);
        Ok(self.run(move |s, l| s.delete(l, &key)).await.unwrap_or(false))
    }

    async fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Vec<String>> {
        self.count(|u| u.lists += 1);
        Ok(self.run(move |s, l| s.list_keys(l, &prefix, MAX_LIST_KEYS)).await.unwrap_or_default())
    }

    async fn bytes_left(&mut self) -> wasmtime::Result<u64> {
        let quota = self.quota();
        Ok(self.run(|s, l| s.used(l)).await.map_or(0, |used| quota.saturating_sub(used)))
    }
}

/// The `memory` service: its line in the registry (`services/registry.rs`).
pub struct MemoryFactor;

impl super::Service for MemoryFactor {
    type Grant = MemoryGrant;
    type State = MemoryState;
    type Usage = MemoryUsage;
    const VERSIONS: &'static [&'static str] = &[crate::caps::imports::AGENT_VERSION];
}

impl super::PerCall for MemoryFactor {
    fn state(
        section: Option<&MemoryGrant>,
        _grant: &crate::caps::Grant,
        host: &super::HostServices,
        scope: &super::CallScope,
    ) -> MemoryState {
        MemoryState::new(section.cloned(), host.memory.clone(), scope.memory_lineage.clone())
    }

    fn unlinked() -> MemoryState {
        MemoryState::new(None, None, String::new())
    }

    fn add_to_linker(
        linker: &mut wasmtime::component::Linker<crate::runtime::HostState>,
        get: fn(&mut crate::runtime::HostState) -> &mut MemoryState,
    ) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, wasmtime::component::HasSelf<MemoryState>>(linker, get)
    }

    fn usage(state: &MemoryState) -> Option<MemoryUsage> {
        state.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, MemoryStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = MemoryStore::open(dir.path().join(STORE_FILE)).unwrap();
        (dir, s)
    }

    #[test]
    fn quota_counts_keys_and_values_and_refuses_without_writing() {
        let (_d, s) = store();
        assert_eq!(s.set("L", "ab", b"1234", 10).unwrap(), Ok(()));
        assert_eq!(s.used("L").unwrap(), 6);
        // 6 + 5 > 10: refused, nothing written.
        assert!(matches!(s.set("L", "cd", b"xyz", 10).unwrap(), Err(SetRefusal::QuotaExceeded(_))));
        assert_eq!(s.get("L", "cd").unwrap(), None);
        assert_eq!(s.used("L").unwrap(), 6);
        // Replacing counts the difference only.
        s.set("L", "ab", b"12345678", 10).unwrap().unwrap();
        assert_eq!(s.used("L").unwrap(), 10);
        assert!(matches!(s.set("L", "ab", b"123456789", 10).unwrap(), Err(SetRefusal::QuotaExceeded(_))));
        // Shrinking always passes, even past a smaller quota.
        s.set("L", "ab", b"1", 1).unwrap().unwrap();
        assert_eq!(s.used("L").unwrap(), 3);
        assert!(s.delete("L", "ab").unwrap());
        assert!(!s.delete("L", "ab").unwrap());
        assert_eq!(s.used("L").unwrap(), 0);
        // Lineages are separate.
        assert_eq!(s.used("other").unwrap(), 0);
    }

    #[test]
    fn keys_are_validated() {
        let (_d, s) = store();
        for bad in ["", "a\nb", "\u{1b}[31m", &"k".repeat(MAX_KEY_BYTES + 1)] {
            assert!(matches!(s.set("L", bad, b"v", 1 << 20).unwrap(), Err(SetRefusal::InvalidKey(_))), "{bad:?}");
        }
        assert!(s.set("L", &"k".repeat(MAX_KEY_BYTES), b"v", 1 << 20).unwrap().is_ok());
        assert!(s.set("L", "ünïcode/ключ", b"v", 1 << 20).unwrap().is_ok());
    }

    #[test]
    fn list_keys_by_prefix_sorted_and_capped() {
        let (_d, s) = store();
        for k in ["b/2", "a/1", "b/1", "c", "b/10", "ba"] {
            s.set("L", k, b"", 1 << 20).unwrap().unwrap();
        }
        s.set("M", "b/other", b"", 1 << 20).unwrap().unwrap();
        assert_eq!(s.list_keys("L", "b/", 100).unwrap(), ["b/1", "b/10", "b/2"]);
        assert_eq!(s.list_keys("L", "", 100).unwrap(), ["a/1", "b/1", "b/10", "b/2", "ba", "c"]);
        assert_eq!(s.list_keys("L", "", 2).unwrap(), ["a/1", "b/1"]);
        assert_eq!(s.list_keys("L", "zz", 100).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn fork_is_a_snapshot_and_idempotent() {
        let (_d, s) = store();
        s.set("parent", "k", b"v1", 100).unwrap().unwrap();
        assert!(s.fork("parent", "child").unwrap());
        assert_eq!(s.get("child", "k").unwrap().as_deref(), Some(&b"v1"[..]));
        assert_eq!(s.used("child").unwrap(), 3);
        s.set("child", "k", b"child's", 100).unwrap().unwrap();
        s.set("child", "new", b"x", 100).unwrap().unwrap();
        s.set("parent", "later", b"y", 100).unwrap().unwrap();
        assert_eq!(s.entries("parent").unwrap(), vec![("k".into(), b"v1".to_vec()), ("later".into(), b"y".to_vec())]);
        assert_eq!(s.entries("child").unwrap(), vec![("k".into(), b"child's".to_vec()), ("new".into(), b"x".to_vec())]);
        // Forking again changes nothing.
        assert!(!s.fork("parent", "child").unwrap());
        assert_eq!(s.get("child", "k").unwrap().as_deref(), Some(&b"child's"[..]));
        // A parent without memory gives an empty child.
        assert!(s.fork("nobody", "orphan").unwrap());
        assert!(s.exists("orphan").unwrap());
        assert_eq!(s.entries("orphan").unwrap(), vec![]);
        assert!(s.fork("x", "x").is_err());
    }
}
