//! Host-side bindings for the `vivarium:agent` world, generated from `wit/`.
//!
//! A leaf: it imports nothing of the host, and every layer above it (the
//! services, the runtime, the guard, the task suites) may use it.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "agent",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::vivarium::agent::types::{Answer, Edit, Evaluation, ImproveContext, Proposal, SourceFile, Task};
pub use exports::vivarium::agent::meta_agent;
pub use exports::vivarium::agent::task_agent;

/// `vivarium:agent@0.2.0`, generated from `wit-0.2.0/`: its `llm` (tool
/// calls, multi-turn), its `workbench`, and its `meta-agent`, whose
/// proposals carry patch edits (`edits`). A component may import and export
/// them next to the 0.1.0 interfaces; the host links both versions and
/// calls the 0.2.0 `improve` when a component exports it.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit-0.2.0",
        world: "meta-tools",
        imports: { default: async | trappable },
        exports: { default: async },
    });

    pub use self::vivarium::agent::edits::{Edit, ImproveContext, Proposal, SearchReplace, SourceFile};
}
