//! Turning a core WebAssembly module into an `agent` component in process.
//!
//! A core module that exports the canonical-ABI names of the world
//! (`vivarium:agent/task-agent@0.1.0#solve`, `cabi_realloc`, `memory`, …)
//! and imports only world interfaces (`vivarium:agent/log@0.1.0` `log`) is
//! wrapped with `wit-component`, using the WIT embedded in the host. This is
//! how the `wat` builder accepts hand-written core text, and how a Rust
//! variant built for `wasm32-unknown-unknown` becomes a component with no
//! WASI imports at all.

use crate::error::{Error, Result};

/// Componentize `core` (binary or text) against the `agent` world.
///
/// `embed_world`: add the world's type information first (needed for
/// hand-written modules; toolchains such as wit-bindgen embed their own).
pub fn from_core_module(core: &[u8], embed_world: bool) -> Result<Vec<u8>> {
    let mut bytes = wat::parse_bytes(core)
        .map_err(|e| Error::invalid(format!("not a valid core module or module text: {e}")))?
        .into_owned();
    if embed_world {
        let (resolve, world) = crate::wit::resolve().map_err(Error::Internal)?;
        wit_component::embed_component_metadata(&mut bytes, &resolve, world, wit_component::StringEncoding::UTF8)
            .map_err(|e| Error::Internal(anyhow::anyhow!("cannot embed the agent world: {e:#}")))?;
    }
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&bytes)
        .and_then(|mut enc| enc.encode())
        .map_err(|e| Error::invalid(format!("the module does not fit the agent world: {e:#}")))
}
