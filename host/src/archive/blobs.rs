//! The content-addressed blob store: `blobs/ab/cdef…`, one file per distinct
//! content, named by the lowercase hex sha256 of its bytes.
//!
//! See the [module docs](super) for the durability argument.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Prefix of the temporary files written beside a blob before the rename.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// The state of one blob on disk, as [`BlobStore::check`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobState {
    /// Present, and its bytes hash to its name.
    Intact,
    /// No file under that name.
    Missing,
    /// Present, but its bytes hash to `actual`.
    Corrupt {
        /// The sha256 of the bytes found.
        actual: String,
    },
}

/// A directory of blobs. Cheap to clone; all methods take `&self` and are
/// safe to call from several threads and processes at once (every write is a
/// rename of a complete, synced temp file).
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `s` is a sha256 as the store names blobs: 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `Err(Invalid)` unless `sha` is a well-formed sha256 (this is also what
/// keeps a caller's string from naming a path outside the store).
pub(crate) fn check_sha(sha: &str) -> Result<()> {
    if is_sha256(sha) {
        Ok(())
    } else {
        Err(Error::invalid(format!("{sha:?} is not a sha256 (64 lowercase hex digits)")))
    }
}

impl BlobStore {
    /// A store rooted at `root` (created on the first `put`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `sha` lives (whether or not it is there). `sha` must be
    /// well-formed ([`is_sha256`]).
    pub fn path_of(&self, sha: &str) -> Result<PathBuf> {
        check_sha(sha)?;
        Ok(self.root.join(&sha[..2]).join(&sha[2..]))
    }

    /// Store `bytes`; returns their sha256.
    ///
    /// When a blob of that name is already there and intact, nothing is
    /// written. When one is there but corrupt, it is replaced (and a warning
    /// logged). A new blob is written to a temp file in its shard directory,
    /// `fsync`ed, made read-only, renamed into place, and the directory
    /// `fsync`ed, so once `put` returns the blob survives a crash or power
    /// loss, and no reader ever sees a partial blob.
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.path_of(&sha)?;
        match self.check(&sha)? {
            BlobState::Intact => return Ok(sha),
            BlobState::Corrupt { actual } => {
                tracing::warn!(blob = %sha, actual = %actual, "replacing a corrupt blob");
            }
            BlobState::Missing => {}
        }
        let shard = path.parent().expect("a blob path has a shard directory");
        self.ensure_shard(shard)?;
        let ctx = || format!("cannot write blob {}", path.display());
        let mut tmp =
            tempfile::Builder::new().prefix(TMP_PREFIX).tempfile_in(shard).map_err(|e| Error::io(ctx(), e))?;
        tmp.write_all(bytes).map_err(|e| Error::io(ctx(), e))?;
        tmp.as_file().sync_all().map_err(|e| Error::io(ctx(), e))?;
        set_read_only(tmp.as_file()).map_err(|e| Error::io(ctx(), e))?;
        tmp.persist(&path).map_err(|e| Error::io(ctx(), e.error))?;
        sync_dir(shard)?;
        Ok(sha)
    }

    /// The bytes of blob `sha`, checked against their name.
    ///
    /// A missing blob is an [`Error::Io`] (`NotFound`); a blob whose bytes do
    /// not hash to `sha` is an [`Error::Internal`] naming both hashes.
    pub fn get(&self, sha: &str) -> Result<Vec<u8>> {
        let path = self.path_of(sha)?;
        let bytes =
            fs::read(&path).map_err(|e| Error::io(format!("cannot read blob {sha} ({})", path.display()), e))?;
        let actual = sha256_hex(&bytes);
        if actual != sha {
            return Err(Error::Internal(anyhow::anyhow!(
                "blob {sha} is corrupt: its bytes hash to {actual} ({}); \
                 run the archive's integrity check",
                path.display()
            )));
        }
        Ok(bytes)
    }

    /// Whether a file named `sha` exists (without reading it).
    pub fn contains(&self, sha: &str) -> Result<bool> {
        let path = self.path_of(sha)?;
        match fs::symlink_metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("cannot stat blob {}", path.display()), e)),
        }
    }

    /// Read blob `sha` and say whether it is intact, missing or corrupt.
    pub fn check(&self, sha: &str) -> Result<BlobState> {
        let path = self.path_of(sha)?;
        match fs::read(&path) {
            Ok(bytes) => {
                let actual = sha256_hex(&bytes);
                Ok(if actual == sha { BlobState::Intact } else { BlobState::Corrupt { actual } })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BlobState::Missing),
            Err(e) => Err(Error::io(format!("cannot read blob {}", path.display()), e)),
        }
    }

    /// Create the store root and `shard` if needed, syncing each parent
    /// whose entries changed so the new directories survive power loss.
    fn ensure_shard(&self, shard: &Path) -> Result<()> {
        if shard.is_dir() {
            return Ok(());
        }
        let root_existed = self.root.is_dir();
        fs::create_dir_all(shard).map_err(|e| Error::io(format!("cannot create {}", shard.display()), e))?;
        if !root_existed {
            if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        sync_dir(&self.root)
    }
}

/// `fsync` a directory, so the entries renamed or created in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("cannot fsync directory {}", dir.display()), e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Blobs are never modified in place: make the file read-only (0444) as a
/// guard against accidental edits. Renaming over it still works.
fn set_read_only(file: &File) -> io::Result<()> {
    let mut perms = file.metadata()?.permissions();
    perms.set_readonly(true);
    file.set_permissions(perms)
}
