//! Vivarium: a host that runs self-improving AI agents as sandboxed
//! WebAssembly components.
//!
//! Data flows one way through the modules:
//!
//! ```text
//! cli → caps (manifest + policy → grant) → runtime (engine, limits, calls)
//!                                       ↘ services (log, …) → audit
//! ```
//!
//! * [`caps`]: what a variant asks for, what the operator allows, and the
//!   grant computed from both — the only thing the linker and services consult.
//! * [`runtime`]: one engine per process, compile cache, per-call stores with
//!   fuel, epoch, memory and stack limits; every guest failure becomes a
//!   [`GuestFailure`].
//! * [`services`]: host interfaces a variant may import (`log`, `memory`,
//!   `archive`, `llm`, `simulator`).
//! * [`sim`]: the built-in simulation environments, linear policies, the
//!   CEM trainer and the per-step `reward-model` callback.
//! * [`audit`]: the append-only, hash-chained record of grants, denials and use.
//! * [`build`]: turning a variant's source tree into a component.

pub mod archive;
pub mod audit;
pub mod bindings;
pub mod build;
pub mod caps;
pub mod cluster;
pub mod componentize;
pub mod demo;
pub mod demo_coder;
pub mod error;
pub mod evolve;
pub mod export_git;
pub mod fsio;
pub mod guard;
pub mod home;
pub mod ids;
pub mod improve;
pub mod init;
pub mod inspect;
pub mod interp;
pub mod ledger;
pub mod report;
pub mod runtime;
pub mod serve;
pub mod services;
pub mod sim;
pub mod task;
pub mod tasks;
pub mod text;
pub mod trainer;
pub mod units;
pub mod variant;
pub mod wit;
pub mod workbench;

pub use error::{Error, ExitCode, GuestFailure, GuestFailureKind, Result};
