//! Loading and linking interpreted variants (see [`crate::interp`]): a
//! bundle's bytes become a [`Loaded`] whose component is the shared,
//! compiled-once interpreter; linking adds `vivarium:interp/source`, which
//! hands each instance the bundle's tree and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentType, Lift, Linker, Lower};
use wasmtime::StoreContextMut;

use super::{HostState, Loaded, Prepared, Runtime};
use crate::caps::Grant;
use crate::error::{Error, Result};
use crate::interp::{self, Interpreted, Mode};

/// The interface the interpreter imports its source through.
pub const SOURCE_INTERFACE: &str = "vivarium:interp/source@0.1.0";

/// What one instance of the interpreter is handed: the bundle, the
/// services the grant links (for the SDK's `NotGranted`), and the
/// runtime's kept compiled code of trees.
pub(crate) struct InstanceSource {
    pub(crate) bundle: Arc<Interpreted>,
    pub(crate) granted: Vec<String>,
    /// `<interpreter sha256>:<tree digest>`: whose compiled code this is.
    key: String,
    compiled: Arc<CompiledTrees>,
}

impl std::fmt::Debug for InstanceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceSource").field("key", &self.key).field("granted", &self.granted).finish()
    }
}

/// Compiled interpreters of this runtime, by sha256 (loading the hundredth
/// child deserializes nothing), and the compiled code of trees.
#[derive(Default)]
pub(crate) struct Interpreters {
    components: Mutex<HashMap<String, Component>>,
    compiled: Arc<CompiledTrees>,
}

/// The most bytes of compiled code kept for one tree: what one host call
/// hands an instance stays well inside the call's host-call budget.
const MAX_COMPILED_PER_TREE: usize = 768 << 10;

/// The most bytes of compiled code a runtime keeps (all trees); past it
/// the oldest half is forgotten.
const MAX_COMPILED_TOTAL: usize = 256 << 20;

/// Compiled code (CPython `marshal` output) of the modules of trees,
/// offered by the first instance of each tree before any of its code ran,
/// so that later instances skip compiling: the largest part of an
/// instance's start for a few hundred lines of Python. The bytes only ever
/// reach instances of the same tree on the same interpreter (the same
/// code), so a variant can at worst affect its own instances.
#[derive(Default)]
struct CompiledTrees {
    by_key: Mutex<(HashMap<String, Arc<Vec<(String, Vec<u8>)>>>, Vec<String>, usize)>,
}

impl CompiledTrees {
    fn get(&self, key: &str) -> Option<Arc<Vec<(String, Vec<u8>)>>> {
        self.by_key.lock().expect("compiled lock").0.get(key).cloned()
    }

    fn offer(&self, key: &str, files: Vec<(String, Vec<u8>)>) {
        let size: usize = files.iter().map(|(p, c)| p.len() + c.len()).sum();
        if size > MAX_COMPILED_PER_TREE {
            return;
        }
        let mut guard = self.by_key.lock().expect("compiled lock");
        let (map, order, total) = &mut *guard;
        if map.contains_key(key) {
            return;
        }
        if *total + size > MAX_COMPILED_TOTAL {
            let half = (order.len() / 2 + 1).min(order.len());
            let forget: Vec<String> = order.drain(..half).collect();
            for k in forget {
                if let Some(v) = map.remove(&k) {
                    *total -= v.iter().map(|(p, c)| p.len() + c.len()).sum::<usize>();
                }
            }
        }
        map.insert(key.to_string(), Arc::new(files));
        order.push(key.to_string());
        *total += size;
    }
}

#[derive(ComponentType, Lower, Lift)]
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

    /// The compiled interpreter a bundle names (its id, or an older
    /// bundle's component sha256), resolved to this machine's component.
    async fn interpreter(&self, name: &str) -> Result<Component> {
        if let Some(c) = self.interpreters.components.lock().expect("interpreters lock").get(name) {
            return Ok(c.clone());
        }
        let sha = interp::component_sha256(name).unwrap_or_else(|| name.to_string());
        let sha = sha.as_str();
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
        self.interpreters.components.lock().expect("interpreters lock").insert(name.to_string(), component.clone());
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
        add_source_to_linker(linker, false)?;
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
                let message =
                    format!("capability `{service}` is not granted to this variant (it called {name}#{func})");
                li.func_new(func, move |_, _, _, _| Err(wasmtime::Error::msg(message.clone()))).map_err(internal)?;
            }
        }
        let granted = ["llm", "trainer", "simulator", "memory", "archive", "workbench"]
            .into_iter()
            .filter(|s| grant.service_granted(s))
            .map(String::from)
            .collect();
        Ok(Some(Arc::new(InstanceSource {
            key: compiled_key(&source.bundle),
            bundle: source.bundle.clone(),
            granted,
            compiled: self.interpreters.compiled.clone(),
        })))
    }
}

/// Add `vivarium:interp/source` to `linker`: each instance reads the
/// [`InstanceSource`] its store holds (`HostState::source`), and nothing
/// else. Also used by the reward-model instance of an interpreted variant,
/// whose store is synchronous (`sync`): there `peer` answers that the
/// instance has none instead of waiting.
pub(crate) fn add_source_to_linker(linker: &mut Linker<HostState>, sync: bool) -> Result<()> {
    let internal = |e: wasmtime::Error| Error::Internal(anyhow::anyhow!("linking the interpreter failed: {e:#}"));
    let mut inst = linker.root();
    let mut inst = inst.instance(SOURCE_INTERFACE).map_err(internal)?;
    inst.func_wrap("files", |store: StoreContextMut<'_, HostState>, (): ()| {
        let files = match &store.data().source {
            Some(s) => {
                s.bundle.files.iter().map(|f| WitFile { path: f.path.clone(), contents: f.contents.clone() }).collect()
            }
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
    inst.func_wrap("compiled", |store: StoreContextMut<'_, HostState>, (): ()| {
        let files = match &store.data().source {
            Some(s) => s.compiled.get(&s.key).map_or_else(Vec::new, |files| {
                files.iter().map(|(path, code)| WitFile { path: path.clone(), contents: code.clone() }).collect()
            }),
            None => Vec::new(),
        };
        Ok((files,))
    })
    .map_err(internal)?;
    inst.func_wrap("offer-compiled", |store: StoreContextMut<'_, HostState>, (files,): (Vec<WitFile>,)| {
        if let Some(s) = &store.data().source {
            s.compiled.offer(&s.key, files.into_iter().map(|f| (f.path, f.contents)).collect());
        }
        Ok(())
    })
    .map_err(internal)?;
    if sync {
        // A synchronous store (the reward instance) cannot wait on a peer.
        inst.func_wrap("peer", |_: StoreContextMut<'_, HostState>, (_message,): (String,)| {
            Ok((Err::<String, String>("this instance has no peer".to_string()),))
        })
        .map_err(internal)?;
    } else {
        inst.func_wrap_async("peer", |store: StoreContextMut<'_, HostState>, (message,): (String,)| {
            let link = store.data().peer.clone();
            Box::new(async move {
                Ok((match link {
                    Some(link) => link.exchange(message).await,
                    None => Err("this instance has no peer".to_string()),
                },))
            })
        })
        .map_err(internal)?;
    }
    inst.func_wrap("granted", |store: StoreContextMut<'_, HostState>, (): ()| {
        Ok((store.data().source.as_ref().map(|s| s.granted.clone()).unwrap_or_default(),))
    })
    .map_err(internal)?;
    Ok(())
}

fn compiled_key(bundle: &Interpreted) -> String {
    format!("{}:{}", bundle.interpreter, bundle.tree_digest())
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
        if let Some(s) = &self.source {
            p.source = Some(Arc::new(InstanceSource {
                key: compiled_key(&bundle),
                bundle: Arc::new(bundle),
                granted: s.granted.clone(),
                compiled: s.compiled.clone(),
            }));
        }
        p
    }
}
