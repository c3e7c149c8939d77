//! Capabilities: what a variant asks for (`variant.toml`), what the operator
//! allows (`policy.toml`), and the [`Grant`] computed from both.
//!
//! The grant is computed once per variant and is the only thing the linker
//! ([`imports`]) and the services consult.

pub mod grant;
pub mod imports;
pub mod manifest;
pub mod policy;
pub mod resolve;
pub mod wasi;

pub use grant::{
    diff, is_within, Access, ArchiveGrant, FileGrant, Grant, Limits, LlmGrant, LogGrant, MemoryGrant, SimulatorGrant,
    TrainerGrant,
};
pub use manifest::{Language, Manifest};
pub use policy::Policy;
pub use resolve::{resolve, resolve_bare, Denial, Overrides, ProvenanceLine, Resolution, Source};
