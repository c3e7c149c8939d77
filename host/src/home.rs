//! `$VIVARIUM_HOME`: where all state lives (audit log, archive, compile
//! cache, run directories). Defaults to `.vivarium/` in the current directory.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The budget ledger's file name under the home ([`Home::ledger_file`]).
pub const LEDGER_FILE: &str = "ledger.sqlite";
/// The `llm` token ledger of homes from before the one ledger (read once
/// by [`crate::ledger`]).
pub const LEGACY_LLM_LEDGER: &str = "llm-ledger.sqlite";
/// The trainer seconds ledger of homes from before the one ledger (read
/// once by [`crate::ledger`]).
pub const LEGACY_TRAINER_LEDGER: &str = "trainer-ledger.sqlite";

/// The state directory and its well-known subdirectories.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `$VIVARIUM_HOME`, or `.vivarium` in the current directory.
    pub fn from_env() -> Self {
        match std::env::var_os("VIVARIUM_HOME") {
            Some(p) if !p.is_empty() => Self::at(PathBuf::from(p)),
            _ => Self::at(PathBuf::from(".vivarium")),
        }
    }

    /// A home at an explicit path (tests, embedding).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Compiled-code cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Audit log directory.
    pub fn audit_dir(&self) -> PathBuf {
        self.root.join("audit")
    }

    /// The archive: content-addressed blobs and their SQLite index
    /// (see [`crate::archive`]).
    pub fn archive_dir(&self) -> PathBuf {
        self.root.join("archive")
    }

    /// The one budget ledger ([`crate::ledger`]): every token, dollar,
    /// trainer second and simulator step charged, by run and variant.
    pub fn ledger_file(&self) -> PathBuf {
        self.root.join(LEDGER_FILE)
    }

    /// Per-run scratch areas.
    pub fn scratch_dir(&self) -> PathBuf {
        self.root.join("scratch")
    }

    /// Escalation requests waiting for (or decided by) a person
    /// ([`crate::guard::EscalationStore`]).
    pub fn approvals_dir(&self) -> PathBuf {
        self.root.join("approvals")
    }

    /// Create `dir` (and parents) under the home, with a clear error.
    pub fn ensure(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("cannot create {} (check $VIVARIUM_HOME)", dir.display()), e))
    }
}
