//! Error types shared by the library and the CLI's exit codes.

use std::fmt;

/// Process exit codes of the CLI contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// An internal error of the host.
    Internal = 1,
    /// Usage error or invalid input (bad manifest, bad task file, not a component).
    Invalid = 2,
    /// Refused by policy: a capability not granted, an escalation, a guard verdict.
    Refused = 3,
    /// The guest failed: a trap or a limit hit.
    GuestFailed = 4,
}

/// How a guest call ended when it did not return normally.
///
/// The names are the `reason` strings of the CLI contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestFailureKind {
    /// The per-call fuel budget ran out.
    OutOfFuel,
    /// The wall-clock deadline passed (epoch deadline or the host's timeout).
    Deadline,
    /// A memory, table or instance limit was hit, or the guest tried to hand
    /// the host more than the output cap.
    MemoryLimit,
    /// The wasm stack limit was exceeded.
    StackOverflow,
    /// Any other trap: `unreachable`, a Rust panic, a bad memory access, …
    Trap,
    /// A read-write file grant's tree grew past its byte quota
    /// (`runtime::quota`).
    DiskQuota,
}

impl GuestFailureKind {
    /// The contract's name for this kind (`out-of-fuel`, `deadline`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OutOfFuel => "out-of-fuel",
            Self::Deadline => "deadline",
            Self::MemoryLimit => "memory-limit",
            Self::StackOverflow => "stack-overflow",
            Self::Trap => "trap",
            Self::DiskQuota => "disk-quota",
        }
    }
}

impl fmt::Display for GuestFailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A guest failure: its kind and a human-readable detail (the guest's panic
/// message where it has one).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GuestFailure {
    /// Which limit or trap ended the call.
    pub kind: GuestFailureKind,
    /// What happened, in words.
    pub detail: String,
}

impl fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// The library's error type. Every variant says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input the user gave is invalid (manifest, task, component bytes, flags).
    #[error("{0}")]
    Invalid(String),
    /// The policy or the grant refuses something; `what` names the capability
    /// or import.
    #[error("refused: {detail}")]
    Refused {
        /// The capability or import refused (e.g. `vivarium:agent/llm@0.1.0`).
        what: Vec<String>,
        /// The full explanation.
        detail: String,
    },
    /// The guest trapped or hit a limit.
    #[error("guest failed: {0}")]
    Guest(GuestFailure),
    /// A failure of the host itself.
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
    /// An I/O failure, with the path involved.
    #[error("{context}: {source}")]
    Io {
        /// What the host was doing, with the path.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// The CLI exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Invalid(_) => ExitCode::Invalid,
            Error::Refused { .. } => ExitCode::Refused,
            Error::Guest(_) => ExitCode::GuestFailed,
            Error::Internal(_) | Error::Io { .. } => ExitCode::Internal,
        }
    }

    /// Shorthand for an I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// Shorthand for invalid input.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
