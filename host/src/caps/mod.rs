//! Capabilities: what a variant asks for (`variant.toml`), what the operator
//! allows (`policy.toml`), and the [`Grant`] computed from both.
//!
//! The grant is computed once per variant and is the only thing the linker
//! ([`imports`]) and the services consult.
//!
//! What is not a service lives here: limits, files, env, sockets,
//! determinism, and the generic machinery every service's section goes
//! through ([`service::ServiceCaps`], the grant [`resolve::Builder`]). A
//! service's own request, policy and grant types live in its folder,
//! `services/<name>/grant.rs`.

pub mod grant;
pub mod imports;
pub mod manifest;
pub mod policy;
pub mod resolve;
pub mod service;
pub mod wasi;

pub use grant::{diff, is_within, Access, FileGrant, Grant, Limits, LogGrant};
pub use manifest::{Language, Manifest};
pub use policy::Policy;
pub use resolve::{resolve, resolve_bare, Denial, Overrides, ProvenanceLine, Resolution, Source};
