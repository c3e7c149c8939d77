//! Host-side bindings for the `vivarium:agent` world, generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "agent",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::vivarium::agent::types::{Answer, Edit, Evaluation, ImproveContext, Proposal, SourceFile, Task};
pub use exports::vivarium::agent::meta_agent;
pub use exports::vivarium::agent::task_agent;
