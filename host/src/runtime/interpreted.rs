//! Loading and linking interpreted variants (see [`crate::interp`]): a
//! bundle's bytes become a [`Loaded`] whose component is the shared,
//! compiled-once interpreter; linking adds `vivarium:interp/source`, which
//! hands each instance the bundle's tree and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentType, Linker, Lower};
use wasmtime::StoreContextMut;

use super::{HostState, Loaded, Prepared, Runtime};
use crate::caps::Grant;
use crate::error::{Error, Result};
use crate::interp::{self, Interpreted, Mode};

/// The interface the interpreter imports its source through.
pub const SOURCE_INTERFACE: &str = "vivarium:interp/source@0.1.0";

/// What one instance of the interpreter is handed: the bundle and the
/// services the grant links (for the SDK's `NotGranted`).
#[derive(Debug)]
pub(crate) struct InstanceSource {
    pub(crate) bundle: Arc<Interpreted>,
    pub(crate) granted: Vec<String>,
}

/// Compiled interpreters of this runtime, by sha256: loading the hundredth
/// child deserializes nothing.
#[derive(Default)]
pub(crate) struct Interpreters(Mutex<HashMap<String, Component>>);

#[derive(ComponentType, Lower)]
#[component(record)]
struct WitFile {
    path: String,
    contents: Vec<u8>,
}

#[derive(ComponentType, Lower)]
#[component(variant)]
enum WitMode {
    #[component(name = "agents")]
    Agents,
    #[component(name = "function")]
    Function(String),
    #[component(name = "check")]
    Check,
}

#[derive(ComponentType, Lower)]
#[component(record)]
struct WitEntryPoint {
    module: String,
    mode: WitMode,
}

impl Runtime {
    /// Load a bundle: its interpreter (from this runtime's memory, the
    /// compile cache, or the interpreter's bytes on this machine), with the
    /// bundle's sha256 as the identity and its declared imports.
    pub(super) async fn load_interpreted(&self, bytes: &[u8], bundle: Interpreted) -> Result<Loaded> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = self.interpreter(&bundle.interpreter).await?;
        let ty = component.component_type();
        let exports = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let imports = bundle.imports.clone();
        let source = interp::Source { bundle: Arc::new(bundle), sha256: sha256.clone() };
        Ok(Loaded { component, sha256, imports, exports, source: Some(source) })
    }

    async fn interpreter(&self, sha: &str) -> Result<Component> {
        if let Some(c) = self.interpreters.0.lock().expect("interpreters lock").get(sha) {
            return Ok(c.clone());
        }
        let cached = self.cache.as_ref().and_then(|c| c.get(&self.engine, sha));
        let component = match cached {
            Some(c) => c,
            None => {
                let bytes = interp::interpreter_bytes(sha)?;
                let loaded = Box::pin(self.load(&bytes)).await?;
                if loaded.sha256 != sha {
                    return Err(Error::invalid(format!("the interpreter {sha} on this machine is damaged")));
                }
                loaded.component
            }
        };
        self.interpreters.0.lock().expect("interpreters lock").insert(sha.to_string(), component.clone());
        Ok(component)
    }

    /// Link what an interpreted variant needs beyond the granted services:
    /// its source, and traps for every other import of the interpreter.
    pub(super) fn link_interpreted(
        &self,
        linker: &mut Linker<HostState>,
        loaded: &Loaded,
        grant: &Grant,
    ) -> Result<Option<Arc<InstanceSource>>> {
        let Some(source) = &loaded.source else { return Ok(None) };
        let internal = |e: wasmtime::Error| Error::Internal(anyhow::anyhow!("linking the interpreter failed: {e:#}"));
        let mut inst = linker.root();
        let mut inst = inst.instance(SOURCE_INTERFACE).map_err(internal)?;
        inst.func_wrap("files", |store: StoreContextMut<'_, HostState>, (): ()| {
            let files = match &store.data().source {
                Some(s) => s
                    .bundle
                    .files
                    .iter()
                    .map(|f| WitFile { path: f.path.clone(), contents: f.contents.clone() })
                    .collect(),
                None => Vec::new(),
            };
            Ok((files,))
        })
        .map_err(internal)?;
        inst.func_wrap("entry", |store: StoreContextMut<'_, HostState>, (): ()| {
            let Some(s) = &store.data().source else {
                return Err(wasmtime::Error::msg("no source was handed to this instance"));
            };
            let mode = match &s.bundle.mode {
                Mode::Agents => WitMode::Agents,
                Mode::Function(f) => WitMode::Function(f.clone()),
                Mode::Check => WitMode::Check,
            };
            Ok((WitEntryPoint { module: s.bundle.module.clone(), mode },))
        })
        .map_err(internal)?;
        inst.func_wrap("granted", |store: StoreContextMut<'_, HostState>, (): ()| {
            Ok((store.data().source.as_ref().map(|s| s.granted.clone()).unwrap_or_default(),))
        })
        .map_err(internal)?;
        // The services the grant does not link: a call traps, naming the
        // capability (the SDK refuses before that, by name). Only these:
        // WASI is linked from the grant as for any component.
        let ty = loaded.component.component_type();
        for (name, item) in ty.imports(&self.engine) {
            let Some(rest) = name.strip_prefix("vivarium:agent/") else { continue };
            let service = rest.split('@').next().unwrap_or(rest).to_string();
            if matches!(service.as_str(), "log" | "types") || grant.service_granted(&service) {
                continue;
            }
            let ComponentItem::ComponentInstance(instance) = item.ty else { continue };
            let mut li = linker.instance(name).map_err(internal)?;
            for (func, f) in instance.exports(&self.engine) {
                if !matches!(f.ty, ComponentItem::ComponentFunc(_)) {
                    continue;
                }
                let message = format!("capability `{service}` is not granted to this variant (it called {name}#{func})");
                li.func_new(func, move |_, _, _, _| Err(wasmtime::Error::msg(message.clone()))).map_err(internal)?;
            }
        }
        let granted = ["llm", "trainer", "simulator", "memory", "archive"]
            .into_iter()
            .filter(|s| grant.service_granted(s))
            .map(String::from)
            .collect();
        Ok(Some(Arc::new(InstanceSource { bundle: source.bundle.clone(), granted })))
    }
}

impl Prepared {
    /// The interpreted variant this runs, when it is one.
    pub fn interpreted(&self) -> Option<interp::Source> {
        self.source.as_ref().map(|s| interp::Source { bundle: s.bundle.clone(), sha256: self.sha256.clone() })
    }

    /// The same prepared interpreter with another bundle (same id, grant
    /// and links): how a new child is checked ([`interp::check_load`]).
    pub fn with_bundle(&self, bundle: Interpreted) -> Prepared {
        let mut p = self.clone();
        let granted = self.source.as_ref().map(|s| s.granted.clone()).unwrap_or_default();
        p.source = Some(Arc::new(InstanceSource { bundle: Arc::new(bundle), granted }));
        p
    }
}
