//! Host services a variant may import.
//!
//! Every service has the same shape (after Spin's per-capability factors):
//!
//! 1. a grant type in [`crate::caps::grant`] (operator config → per-variant grant),
//! 2. host-side state shared by every call ([`HostServices`]: the memory
//!    store, the archive, the LLM client and ledger, the trainer), set on
//!    the [`Runtime`](crate::runtime::Runtime) once,
//! 3. per-call state holding the grant's caps and a usage counter, built
//!    for every call by [`HostServices::for_call`],
//! 4. a [`Service`] in the [`REGISTRY`], whose `add_to_linker` the runtime
//!    calls only when the grant names the service,
//! 5. a usage summary folded into the call's one audit `use` record
//!    ([`ServiceUsage`], under `services`), taken when the call ends
//!    (`CallServices::finish`, which never blocks an executor thread),
//! 6. tests: unit tests through the guest-less `testing::TestEnvironment`
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
//!
//! What a call sees of the shared state is chosen by the caller in
//! [`CallOptions`](crate::runtime::CallOptions): the memory `lineage`, the
//! archive `run` (which is also the run the `llm` and `trainer` budgets are
//! counted in), optional caps on the call's LLM tokens and simulator steps —
//! never by the guest. `docs/services.md` describes each service for
//! operators and variant authors.

pub mod archive_view;
pub mod llm;
pub mod log;
pub mod memory;
pub mod simulator;
#[cfg(test)]
pub(crate) mod testing;
pub mod trainer;
pub mod workbench;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::caps::Grant;
use crate::error::Result;
use crate::home::Home;

/// Interfaces of `vivarium:agent` that this host implements, by short name:
/// `log` and every service of the [`REGISTRY`].
pub const IMPLEMENTED: &[&str] = &["log", "memory", "archive", "llm", "simulator", "trainer", "workbench"];

/// One host service as the runtime links it, after Spin's factors: its
/// name (its `vivarium:agent` interface and its grant's field, see
/// [`Grant::service_granted`]) and how its host functions join a call's
/// linker. The runtime links a service only when the grant names it, so a
/// variant never reaches an ungranted service (its import was refused
/// before linking).
pub(crate) trait Service: Sync {
    /// The service's short name (`memory`, `llm`, …).
    fn name(&self) -> &'static str;

    /// Add the service's host functions to `linker`; they reach the
    /// service's per-call state in [`CallServices`].
    fn add_to_linker(
        &self,
        linker: &mut wasmtime::component::Linker<crate::runtime::HostState>,
    ) -> wasmtime::Result<()>;
}

/// Every service but `log` (always linked: it carries the call's own
/// limits), in the order they are linked. Adding a service is a module
/// here and a line in this list.
pub(crate) static REGISTRY: &[&dyn Service] = &[
    &memory::MemoryFactor,
    &archive_view::ArchiveFactor,
    &simulator::SimulatorFactor,
    &llm::LlmFactor,
    &trainer::TrainerFactor,
    &workbench::WorkbenchFactor,
];

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
}

impl HostServices {
    /// The per-call states of one call under `grant`: a service the grant
    /// does not name gets a state that is not linked and reports no usage.
    pub(crate) fn for_call(&self, grant: &Grant, scope: CallScope) -> CallServices {
        let budget = budget_key(scope.run.as_deref(), &scope.variant_sha256);
        let run_usd = scope.run_usd.map(|u| (scope.run.clone(), u));
        CallServices {
            memory: memory::MemoryState::new(grant.memory.clone(), self.memory.clone(), scope.memory_lineage),
            archive: archive_view::ArchiveViewState::new(grant.archive.is_some(), self.archive.clone(), scope.run),
            llm: llm::LlmState::with_run_budget(
                grant.llm.clone(),
                self.llm.clone(),
                budget.clone(),
                run_usd,
                scope.llm_tokens,
                Some(scope.deadline),
            )
            .routed_to(scope.llm_model),
            simulator: simulator::SimulatorState::new(grant.simulator.clone(), scope.sim_steps),
            trainer: trainer::TrainerState::new(
                grant.trainer.clone(),
                self.trainer.clone(),
                budget,
                Some(scope.deadline),
            ),
            workbench: workbench::WorkbenchState::new(grant.workbench.clone(), scope.workbench),
        }
    }
}

/// What one call used of the granted services other than `log`; a service
/// not granted is left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceUsage {
    /// The `llm` service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<llm::LlmUsage>,
    /// The `memory` service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<memory::MemoryUsage>,
    /// The `archive` view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<archive_view::ArchiveUsage>,
    /// The `simulator` service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulator: Option<simulator::SimulatorUsage>,
    /// The `trainer` service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trainer: Option<trainer::TrainerUsage>,
    /// The `workbench` service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workbench: Option<workbench::WorkbenchUsage>,
}

impl ServiceUsage {
    /// Whether no service other than `log` was granted.
    pub fn is_empty(&self) -> bool {
        self.llm.is_none()
            && self.memory.is_none()
            && self.archive.is_none()
            && self.simulator.is_none()
            && self.trainer.is_none()
            && self.workbench.is_none()
    }
}

/// The per-call states of the services other than `log`.
#[derive(Debug, Clone)]
pub(crate) struct CallServices {
    pub(crate) memory: memory::MemoryState,
    pub(crate) archive: archive_view::ArchiveViewState,
    pub(crate) llm: llm::LlmState,
    pub(crate) simulator: simulator::SimulatorState,
    pub(crate) trainer: trainer::TrainerState,
    pub(crate) workbench: workbench::WorkbenchState,
}

impl CallServices {
    /// What the call used, once it is over: the trainer's jobs still
    /// running are cancelled and awaited (asynchronously: this runs on an
    /// executor thread other calls share, so it must never block it).
    pub(crate) async fn finish(&self) -> ServiceUsage {
        ServiceUsage {
            llm: self.llm.usage(),
            memory: self.memory.usage(),
            archive: self.archive.usage(),
            simulator: self.simulator.usage(),
            trainer: self.trainer.finish().await,
            workbench: self.workbench.usage(),
        }
    }

    /// States with no service granted (a reward instance's store).
    pub(crate) fn none() -> Self {
        Self {
            memory: memory::MemoryState::new(None, None, String::new()),
            archive: archive_view::ArchiveViewState::new(false, None, None),
            llm: llm::LlmState::new(None, None, String::new(), None, None),
            simulator: simulator::SimulatorState::new(None, None),
            trainer: trainer::TrainerState::new(None, None, String::new(), None),
            workbench: workbench::WorkbenchState::new(None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the import check accepts is what the runtime can link.
    #[test]
    fn the_registry_is_every_implemented_service_but_log() {
        let mut linked: Vec<&str> = REGISTRY.iter().map(|s| s.name()).collect();
        linked.insert(0, "log");
        let (mut a, mut b) = (linked.clone(), IMPLEMENTED.to_vec());
        a.sort();
        b.sort();
        assert_eq!(a, b);
        // Each is a service a grant can name.
        for s in REGISTRY {
            assert!(crate::caps::grant::SERVICES.contains(&s.name()), "{}", s.name());
        }
    }
}
