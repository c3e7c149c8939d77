//! Disk quotas of read-write file grants.
//!
//! wasmtime-wasi writes straight to the preopened directory (through
//! cap-std, in blocking tasks), and its filesystem and stream host traits
//! cannot be wrapped piecewise in wasmtime-wasi 48, so the host cannot count
//! bytes as they are written. It measures the granted trees instead:
//!
//! * **before the call**: a tree already over its quota refuses the call;
//! * **during the call**: a watchdog thread measures every quota'd tree
//!   every [`POLL`]; once one is over, the call is flagged, the epoch
//!   callback interrupts the guest at its next tick and a pending host call
//!   (a write in progress) is cancelled;
//! * **after the call**: the trees are measured once more, so a call that
//!   ends over its quota fails however it ended.
//!
//! A call over its quota ends with [`GuestFailureKind::DiskQuota`], naming
//! the grant, the bytes found and the quota. The files stay where they are
//! (a `Session` removes the fresh scratch area it made for that call); a
//! caller that reuses the scratch area has its next call with that grant
//! refused until the tree is back under its quota.
//!
//! **Overshoot** is bounded by time, not bytes: what the guest can write
//! between two measurements and the interruption, about `POLL` + one walk
//! of the tree + one epoch tick (5 ms) — at disk speed, a few MiB to tens of
//! MiB on fast storage. Each write host call hands the host at most the
//! call's host-call budget (about 1 MiB), and every entry counts at least
//! [`QUOTA_ENTRY_BYTES`], so a walk visits at most quota / 4 KiB entries
//! before it stops. `tests/all/hostile.rs::files_past_the_quota` measures it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::caps::grant::{Access, Grant, QUOTA_ENTRY_BYTES};
use crate::error::{GuestFailure, GuestFailureKind};
use crate::units::ByteSize;

/// How often the watchdog measures the trees during a call.
pub const POLL: Duration = Duration::from_millis(5);

/// One read-write grant with a quota.
#[derive(Debug, Clone)]
struct QuotaDir {
    /// The grant's path (what the guest sees).
    name: String,
    /// Where it lives in the scratch area.
    dir: PathBuf,
    /// The quota in bytes.
    quota: u64,
}

/// The bytes `dir`'s tree holds for quota purposes: every file, directory
/// and link below it counted at its length or its allocated size, whichever
/// is larger (a sparse file counts at its length), and at least
/// [`QUOTA_ENTRY_BYTES`]. Links are not followed. Stops early once the sum
/// passes `stop_above`, so a tree of a million files costs one quota's worth
/// of walking. Entries that vanish while it walks are skipped.
pub fn tree_usage(dir: &Path, stop_above: u64) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total: u64 = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            let size = meta.len().max(meta.blocks().saturating_mul(512)).max(QUOTA_ENTRY_BYTES);
            total = total.saturating_add(size);
            if total > stop_above {
                return total;
            }
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

/// The first quota'd tree over its quota, as a failure.
fn over(dirs: &[QuotaDir]) -> Option<GuestFailure> {
    dirs.iter().find_map(|d| {
        let used = tree_usage(&d.dir, d.quota);
        (used > d.quota).then(|| GuestFailure {
            kind: GuestFailureKind::DiskQuota,
            detail: format!(
                "the read-write file grant `{}` holds at least {used} bytes, over its quota of {} ({} bytes); \
                 the guest wrote past its disk quota. Remove files from {} or raise `quota` in the manifest's \
                 files entry (up to the policy's files_quota.max)",
                d.name,
                ByteSize(d.quota),
                d.quota,
                d.dir.display()
            ),
        })
    })
}

/// The watchdog of one call.
pub(crate) struct Watchdog {
    dirs: Arc<Vec<QuotaDir>>,
    stop: Arc<AtomicBool>,
    hit: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<GuestFailure>>>,
    notify: Arc<tokio::sync::Notify>,
}

impl Watchdog {
    /// Measure the quota'd read-write grants of `grant` under `scratch` now,
    /// and, when none is over and there is one, keep measuring them on a
    /// thread of its own until [`finish`](Self::finish) or drop.
    pub(crate) fn start(grant: &Grant, scratch: Option<&Path>) -> Self {
        let dirs: Vec<QuotaDir> = match scratch {
            Some(scratch) => grant
                .files
                .iter()
                .filter(|f| f.access == Access::ReadWrite)
                .filter_map(|f| {
                    f.quota.map(|q| QuotaDir { name: f.path.clone(), dir: scratch.join(&f.path), quota: q.0 })
                })
                .collect(),
            None => Vec::new(),
        };
        let w = Watchdog {
            dirs: Arc::new(dirs),
            stop: Arc::new(AtomicBool::new(false)),
            hit: Arc::new(AtomicBool::new(false)),
            failure: Arc::new(Mutex::new(None)),
            notify: Arc::new(tokio::sync::Notify::new()),
        };
        if w.dirs.is_empty() {
            return w;
        }
        if let Some(f) = over(&w.dirs) {
            w.record(f);
            return w;
        }
        let (dirs, stop, hit, failure, notify) =
            (w.dirs.clone(), w.stop.clone(), w.hit.clone(), w.failure.clone(), w.notify.clone());
        let spawned = std::thread::Builder::new().name("vivarium-quota".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(f) = over(&dirs) {
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                    hit.store(true, Ordering::SeqCst);
                    notify.notify_one();
                    return;
                }
                std::thread::sleep(POLL);
            }
        });
        if spawned.is_err() {
            // Without the thread the check after the call still holds the
            // quota; the overshoot is then what one call can write.
            tracing::warn!("cannot start the disk-quota watchdog thread; checking quotas after the call only");
        }
        w
    }

    fn record(&self, f: GuestFailure) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
        self.hit.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Set once a tree was found over its quota (read by the epoch callback).
    pub(crate) fn hit_flag(&self) -> Arc<AtomicBool> {
        self.hit.clone()
    }

    /// Resolves once a tree was found over its quota.
    pub(crate) fn notifier(&self) -> Arc<tokio::sync::Notify> {
        self.notify.clone()
    }

    /// The failure found so far, if any.
    pub(crate) fn failure(&self) -> Option<GuestFailure> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stop watching and measure once more: the failure, if a tree was over
    /// its quota at any check.
    pub(crate) fn finish(self) -> Option<GuestFailure> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(f) = self.failure() {
            return Some(f);
        }
        over(&self.dirs)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_bytes_entries_and_sparse_lengths() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(tree_usage(d.path(), u64::MAX), 0);
        std::fs::write(d.path().join("a"), vec![1u8; 10_000]).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/empty"), b"").unwrap();
        let used = tree_usage(d.path(), u64::MAX);
        // 10 000 bytes (at least; blocks may round up) + a directory + an empty file.
        assert!((10_000 + 2 * QUOTA_ENTRY_BYTES..=12_288 + 2 * QUOTA_ENTRY_BYTES).contains(&used), "{used}");
        let sparse = std::fs::File::create(d.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        assert!(tree_usage(d.path(), u64::MAX) > 1 << 30, "a sparse file counts at its length");
        // The walk stops once past the bound.
        assert!(tree_usage(d.path(), 100) > 100);
    }

    #[test]
    fn a_tree_over_its_quota_fails_at_the_start() {
        let scratch = tempfile::tempdir().unwrap();
        std::fs::create_dir(scratch.path().join("s")).unwrap();
        std::fs::write(scratch.path().join("s/big"), vec![0u8; 64 << 10]).unwrap();
        let mut grant = Grant::default();
        grant.files.push(crate::caps::grant::FileGrant {
            path: "s".into(),
            access: Access::ReadWrite,
            quota: Some(ByteSize(32 << 10)),
        });
        let w = Watchdog::start(&grant, Some(scratch.path()));
        let f = w.failure().expect("over its quota");
        assert_eq!(f.kind, GuestFailureKind::DiskQuota);
        assert!(f.detail.starts_with("the read-write file grant `s` holds at least"), "{}", f.detail);
        assert!(f.detail.contains("over its quota of 32KiB (32768 bytes)"), "{}", f.detail);
        // Under the quota: nothing to report.
        grant.files[0].quota = Some(ByteSize(1 << 20));
        assert_eq!(Watchdog::start(&grant, Some(scratch.path())).finish(), None);
    }
}
