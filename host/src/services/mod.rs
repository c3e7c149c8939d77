//! Host services a variant may import.
//!
//! Every service has the same shape (after Spin's per-capability factors),
//! lives in one folder, `services/<name>/`, and has one line in the
//! registry (`registry.rs`), from which every structure that gathers the
//! services is generated:
//!
//! 1. `grant.rs`: its `variant.toml` request, its `policy.toml` ceiling and
//!    its grant, with [`ServiceCaps`](crate::caps::service::ServiceCaps)
//!    for the grant (request ∩ policy → grant, with provenance and denials;
//!    the built-in policy's entry),
//! 2. host-side state shared by every call ([`HostServices`]: the memory
//!    store, the archive, the LLM client, the trainer, and the one budget
//!    ledger they charge, [`crate::ledger`]), set on the
//!    [`Runtime`](crate::runtime::Runtime) once,
//! 3. its *factor* in `mod.rs`, a unit struct implementing [`Service`] (its
//!    grant, per-call state and usage types, and the `vivarium:agent`
//!    versions it implements) and `PerCall`: the per-call state built for
//!    every call from the grant and the `CallScope`, the host functions
//!    the runtime links only when the grant names the service, and the
//!    usage taken when the call ends (`PerCall::finish`, which never blocks
//!    an executor thread), folded into the call's one audit `use` record
//!    ([`ServiceUsage`], under `services`),
//! 4. tests: unit tests through the guest-less `testing::TestEnvironment`
//!    and integration tests with real guests in `tests/all/`.
//!
//! | service | module | per-call state | usage |
//! |---|---|---|---|
//! | `log` (always granted) | [`log`] | [`log::LogState`] | [`log::LogUsage`] |
//! | `memory` | [`memory`] | [`memory::MemoryState`] | [`memory::MemoryUsage`] |
//! | `archive` (read-only view) | [`archive_view`] | [`archive_view::ArchiveViewState`] | [`archive_view::ArchiveUsage`] |
//! | `llm` | [`llm`] | [`llm::LlmState`] | [`llm::LlmUsage`] |
//! | `simulator` | [`simulator`] | [`simulator::SimulatorState`] | [`simulator::SimulatorUsage`] |
//! | `trainer` | [`trainer`] | [`trainer::TrainerState`] | [`trainer::TrainerUsage`] |
//! | `workbench` (0.2.0) | [`workbench`] | [`workbench::WorkbenchState`] | [`workbench::WorkbenchUsage`] |
//! | `clock` (`@0.2.0`) | [`clock`] | [`clock::ClockState`] | [`clock::ClockUsage`] |
//!
//! # Adding a service
//!
//! Copy a sibling folder (`clock/` is the smallest: on/off, no host state),
//! then:
//!
//! 1. write its interface as a new file in `wit-0.2.0/` (never change an
//!    existing interface) with a world importing it, and one `bindgen!`
//!    module for that world in [`crate::bindings`] (the one leaf module of
//!    generated code);
//! 2. in `<name>/grant.rs`, its request, policy and grant types and
//!    `impl ServiceCaps`; in `<name>/mod.rs`, its per-call state and usage,
//!    the WIT `Host` impl, and its factor with `impl Service` and
//!    `impl PerCall`;
//! 3. here, `pub mod <name>;` and, in `registry.rs`, its line, last;
//! 4. unit tests through `testing::TestEnvironment` next to it, one guest
//!    test in `tests/all/<name>.rs`, and its section in `docs/services.md`.
//!
//! Nothing in `caps/` or `runtime/` changes: a unit test in `registry.rs`
//! fails when a service's types are named anywhere else.
//! docs/architecture.md lists the files adding `clock` touches.
//!
//! What a call sees of the shared state is chosen by the caller in
//! [`CallOptions`](crate::runtime::CallOptions): the memory `lineage`, the
//! archive `run` (which is also the run the `llm` and `trainer` budgets are
//! counted in), optional caps on the call's LLM tokens and simulator steps —
//! never by the guest. `docs/services.md` describes each service for
//! operators and variant authors.

pub mod archive_view;
pub mod clock;
pub mod llm;
pub mod log;
pub mod memory;
mod registry;
pub mod simulator;
#[cfg(test)]
pub(crate) mod testing;
pub mod trainer;
pub mod workbench;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::home::Home;

pub(crate) use registry::{registry, versions, CallServices, PerCall};
pub use registry::{Service, ServiceUsage, IMPLEMENTED};

/// The host-side state of the services, shared by every call of a
/// [`Runtime`](crate::runtime::Runtime). A service whose state is `None`
/// still links when granted, and answers as an empty host would: `memory`
/// `denied`, an empty `archive`, `llm` `unavailable`.
#[derive(Debug, Clone, Default)]
pub struct HostServices {
    /// The memory store.
    pub memory: Option<Arc<memory::MemoryStore>>,
    /// Where the archive view reads from.
    pub archive: Option<Arc<archive_view::ArchiveSource>>,
    /// The LLM client, key, ledger and cache.
    pub llm: Option<Arc<llm::LlmService>>,
    /// The trainer: its backend and job table.
    pub trainer: Option<Arc<crate::trainer::Trainer>>,
    /// The budget ledger the services of a home share (in memory by
    /// default); `vivarium evolve` keeps a run's own counts in it.
    pub ledger: Arc<crate::ledger::Ledger>,
}

impl HostServices {
    /// The services of a home, sharing its budget ledger
    /// ([`Home::ledger_file`]): the memory store at `memory.sqlite` and the
    /// archive under `archive/` (each opened on first use), and the LLM
    /// when one is configured ([`llm::LlmConfig::discover`]), and the
    /// trainer ([`crate::trainer::Trainer::for_home`]; the embedded backend
    /// unless `trainer.toml` says otherwise).
    pub fn for_home(home: &Home) -> Result<Self> {
        // One budget ledger for every service that spends a budget.
        let ledger = Arc::new(crate::ledger::Ledger::for_home(home));
        Ok(Self {
            memory: Some(Arc::new(memory::MemoryStore::lazy(home.root().join(memory::STORE_FILE)))),
            archive: Some(Arc::new(archive_view::ArchiveSource::lazy(home.archive_dir()))),
            llm: llm::LlmService::for_home(home, ledger.clone())?.map(Arc::new),
            trainer: Some(Arc::new(crate::trainer::Trainer::for_home(home, ledger.clone())?)),
            ledger,
        })
    }
}

pub use crate::ledger::budget_key;

/// Which slice of the host's shared state one call sees, chosen by the
/// caller (the runtime, from [`CallOptions`](crate::runtime::CallOptions)),
/// never by the guest.
#[derive(Debug, Clone)]
pub(crate) struct CallScope {
    /// The variant called (its budgets are keyed by it).
    pub(crate) variant_sha256: String,
    /// The run the archive view shows and the budgets are counted in.
    pub(crate) run: Option<String>,
    /// The `memory` lineage the call reads and writes.
    pub(crate) memory_lineage: String,
    /// At most this many `llm` tokens in this call.
    pub(crate) llm_tokens: Option<u64>,
    /// The run's dollar budget, held in the ledger against the whole run.
    pub(crate) run_usd: Option<crate::units::Usd>,
    /// The model every `llm` request of the call goes to, when the caller
    /// routes them (a run choosing a model per proposal).
    pub(crate) llm_model: Option<String>,
    /// At most this many `simulator` steps in this call.
    pub(crate) sim_steps: Option<u64>,
    /// When the call's wall-clock limit ends it.
    pub(crate) deadline: Instant,
    /// Who serves the call's workbench tries (`evolve`'s bench), if anyone.
    pub(crate) workbench: Option<workbench::BenchLink>,
    /// The call's wall-clock limit itself (`deadline` less the call's
    /// start), exact where a virtual clock counts down from it.
    pub(crate) wall: Duration,
}

impl CallScope {
    /// The ledger key of the call's variant's budgets in its run
    /// ([`budget_key`]).
    pub(crate) fn budget_key(&self) -> String {
        budget_key(self.run.as_deref(), &self.variant_sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `log` first, each service once, and each with the `vivarium:agent`
    /// versions the import check accepts it at.
    #[test]
    fn every_implemented_service_has_its_versions() {
        assert_eq!(IMPLEMENTED[0], "log");
        let mut names = IMPLEMENTED.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), IMPLEMENTED.len(), "{IMPLEMENTED:?}");
        for name in &IMPLEMENTED[1..] {
            assert!(registry::versions(name).is_some_and(|v| !v.is_empty()), "{name}");
        }
        assert_eq!(registry::versions("log"), None);
        assert_eq!(registry::versions("llm"), Some(&["0.1.0", "0.2.0"][..]));
        assert_eq!(registry::versions("clock"), Some(&["0.2.0"][..]));
    }
}
