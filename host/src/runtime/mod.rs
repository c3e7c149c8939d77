//! The runtime: one [`wasmtime::Engine`] per process, a compiled-code cache,
//! and per-call stores under hard limits.
//!
//! * fuel (deterministic) per call,
//! * an epoch deadline per call from a ticker thread, with a cooperative
//!   yield at every tick so one variant cannot starve another on the same
//!   executor thread, and a call that computes past one tick moved to an
//!   executor of its own (the long lane, module `lanes`) so the caller's
//!   threads stay free for short calls,
//! * a tokio timeout around the whole call (instantiation included) so a
//!   host call that blocks cannot outlive the deadline,
//! * memory, table and instance limits through [`limiter::CallLimiter`],
//! * a wasm stack limit (engine-wide), a cap on the result and on logs.
//!
//! Every way a call can fail becomes a [`GuestFailure`](crate::GuestFailure).

/// The generated bindings live in the leaf module [`crate::bindings`] (the
/// services, the builders and the runtime all use them); re-exported here
/// for the paths callers already use.
pub use crate::bindings;
pub mod cache;
mod call;
pub mod compile;
pub mod host_work;
pub(crate) mod interpreted;
mod lanes;
pub mod limiter;
pub mod quota;
pub mod reward;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub(crate) use call::{classify, hostcall_budget};
pub use call::{CallOptions, CallOutcome, CallReport, Usage};
pub use interpreted::SOURCE_INTERFACE;

use crate::caps::{imports, Grant};
use crate::error::{Error, Result};
use crate::services::log::LogState;
use crate::services::{CallServices, HostServices};
use bindings::AgentPre;
use limiter::CallLimiter;

/// Engine-wide settings. The defaults fit an 18 MB componentize-py component.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled code is cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Wasm stack available to a call, in bytes.
    pub max_wasm_stack: usize,
    /// Ceiling for any one linear memory (grants are cut below it).
    pub max_memory: u64,
    /// Component instances alive at once across the process.
    pub total_instances: u32,
    /// How often the epoch ticks; also the cooperative-yield period.
    pub epoch_tick: Duration,
    /// Longest a component may take to compile.
    pub compile_timeout: Duration,
    /// Where components are compiled: in a child process that is killed at
    /// the timeout ([`compile::Compiler::Process`]) or on a thread of this
    /// process (the default; see [`compile`]).
    pub compiler: compile::Compiler,
    /// `RLIMIT_AS` of the compiler process, in bytes.
    pub compile_memory: u64,
    /// Largest component accepted, in bytes.
    pub max_component_bytes: usize,
    /// Threads of the long lane, where calls that compute past one epoch
    /// tick continue, on `SCHED_BATCH` threads (see `runtime::lanes`); 0: one
    /// per CPU.
    pub long_lane_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_wasm_stack: 1 << 20,
            max_memory: 4 << 30,
            total_instances: 1000,
            epoch_tick: Duration::from_millis(5),
            compile_timeout: Duration::from_secs(120),
            compiler: compile::Compiler::InProcess,
            compile_memory: 8 << 30,
            max_component_bytes: 64 << 20,
            long_lane_threads: 0,
        }
    }
}

/// Store data of one call: WASI, the limiter and the services' per-call state.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: CallLimiter,
    pub(crate) log: LogState,
    /// The other services' per-call state (linked only when granted).
    pub(crate) services: CallServices,
    /// Host work owed to the call's fuel, and what was charged ([`host_work`]).
    pub(crate) host_work: host_work::HostWork,
    pub(crate) charged: host_work::Charged,
    /// What an interpreter instance loads (`vivarium:interp/source`).
    pub(crate) source: Option<Arc<interpreted::InstanceSource>>,
    /// This call's end of a link to another instance (`peer`), for a grader.
    pub(crate) peer: Option<crate::interp::peer::PeerLink>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A compiled component and what it imports and exports.
#[derive(Clone)]
pub struct Loaded {
    /// The compiled component.
    pub component: Component,
    /// sha256 of the component bytes: the variant's identity.
    pub sha256: String,
    /// Interface names the component imports.
    pub imports: Vec<String>,
    /// Interface names the component exports.
    pub exports: Vec<String>,
    /// For an interpreted variant ([`crate::interp`]): its bundle. The
    /// component is then the shared interpreter, `sha256` the bundle's and
    /// `imports` the ones the bundle declares.
    pub source: Option<crate::interp::Source>,
}

/// A component linked against its grant, ready to instantiate per call.
#[derive(Clone)]
pub struct Prepared {
    pub(crate) pre: AgentPre<HostState>,
    /// The component's 0.2.0 `meta-agent` export, when it has one: the
    /// `improve` the host then calls (patch edits), 0.1.0's otherwise.
    pub(crate) meta_v2: Option<bindings::v0_2::MetaToolsPre<HostState>>,
    /// The grant it runs under.
    pub grant: Arc<Grant>,
    /// sha256 of the component bytes.
    pub sha256: String,
    /// For an interpreted variant: what each instance is handed.
    pub(crate) source: Option<Arc<interpreted::InstanceSource>>,
}

impl Prepared {
    /// The compiled component (for host code that instantiates it another
    /// way, such as a reward instance).
    pub fn component(&self) -> &Component {
        self.pre.instance_pre().component()
    }
}

/// The host runtime. Create one per process and share it.
pub struct Runtime {
    engine: Engine,
    config: RuntimeConfig,
    cache: Option<cache::CompileCache>,
    ticker_stop: Arc<AtomicBool>,
    /// Where calls that compute past one tick continue (see `lanes`).
    long_lane: Option<tokio::runtime::Runtime>,
    services: HostServices,
    /// Compiled interpreters, by sha256 (see `interpreted`).
    interpreters: interpreted::Interpreters,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        if let Some(lane) = self.long_lane.take() {
            // Allowed inside an async context, unlike dropping it.
            lane.shutdown_background();
        }
    }
}

impl Runtime {
    /// Build the engine and start the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.total_instances)
            .total_core_instances(config.total_instances * 4)
            .total_memories(config.total_instances * 2)
            .total_tables(config.total_instances * 2)
            .total_stacks(config.total_instances)
            .max_memories_per_component(16)
            .max_tables_per_component(16)
            .max_core_instances_per_component(64)
            .max_memory_size(config.max_memory as usize)
            // componentize-py and componentize-js components have large
            // VM contexts and function tables.
            .max_core_instance_size(16 << 20)
            .max_component_instance_size(8 << 20)
            .table_elements(100_000)
            .max_unused_warm_slots(100);
        let mut cfg = compile::engine_config(config.max_wasm_stack);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine =
            Engine::new(&cfg).map_err(|e| Error::Internal(anyhow::anyhow!("cannot create the wasm engine: {e:#}")))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("vivarium-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| Error::io("cannot start the epoch ticker thread", e))?;
        }
        let cache = config.cache_dir.clone().map(|d| cache::CompileCache::new(d, &engine));
        let threads = match config.long_lane_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let long_lane =
            Some(lanes::long_lane(threads).map_err(|e| Error::io("cannot start the long-call executor", e))?);
        Ok(Self {
            engine,
            config,
            cache,
            ticker_stop,
            long_lane,
            services: HostServices::default(),
            interpreters: Default::default(),
        })
    }

    /// This runtime with `services` as the host side of the services
    /// (memory store, archive, LLM); the default has none of them.
    pub fn with_services(mut self, services: HostServices) -> Self {
        self.services = services;
        self
    }

    /// Replace the host side of the services.
    pub fn set_services(&mut self, services: HostServices) {
        self.services = services;
    }

    /// The host side of the services.
    pub fn services(&self) -> &HostServices {
        &self.services
    }

    /// The process's engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine-wide settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compile (or load from the cache) a component from binary or text bytes.
    ///
    /// Bytes that are not a component are refused with a clear
    /// [`Error::Invalid`]; compilation runs under the configured timeout, in
    /// a compiler process or on a blocking thread ([`RuntimeConfig::compiler`]).
    ///
    /// An interpreted variant's bundle ([`crate::interp`]) loads as its
    /// interpreter, compiled once per runtime.
    pub async fn load(&self, bytes: &[u8]) -> Result<Loaded> {
        if let Some(bundle) = crate::interp::Interpreted::parse(bytes)? {
            return self.load_interpreted(bytes, bundle).await;
        }
        let bytes = to_component_bytes(bytes, self.config.max_component_bytes)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let component = match self.cache.as_ref().and_then(|c| c.get(&self.engine, &sha256)) {
            Some(c) => c,
            None => match &self.config.compiler {
                compile::Compiler::InProcess => {
                    let component = compile::in_process(&self.engine, &bytes, self.config.compile_timeout).await?;
                    if let Some(cache) = &self.cache {
                        cache.put(&sha256, &component);
                    }
                    component
                }
                compile::Compiler::Process(exe) => {
                    let artifact = compile::out_of_process(exe, &bytes, &self.config).await?;
                    // SAFETY: `artifact` is `Engine::precompile_component`
                    // output of this host's own binary (`exe`), read from a
                    // pipe only we hold; deserialize checks that it was
                    // compiled with this engine's settings, and applies the
                    // pool's limits the compiler process does not have.
                    let component = unsafe { Component::deserialize(&self.engine, &artifact) }
                        .map_err(|e| Error::invalid(format!("the component does not validate: {e:#}")))?;
                    // Later loads come from the cache, checked against the
                    // sidecar digest written with it.
                    if let Some(cache) = &self.cache {
                        cache.put_serialized(&sha256, &artifact);
                    }
                    component
                }
            },
        };
        let ty = component.component_type();
        let imports = ty.imports(&self.engine).map(|(n, _)| n.to_string()).collect();
        let exports = ty.exports(&self.engine).map(|(n, _)| n.to_string()).collect();
        Ok(Loaded { component, sha256, imports, exports, source: None })
    }

    /// Link `loaded` against `grant`: every import is checked first and all
    /// offending imports are named in one [`Error::Refused`]; then only the
    /// granted interfaces are linked.
    ///
    /// The wasm stack limit is engine-wide ([`RuntimeConfig::max_wasm_stack`]);
    /// the grant's `stack` is set to it so the grant says what is enforced.
    pub fn prepare(&self, loaded: &Loaded, mut grant: Grant) -> Result<Prepared> {
        grant.limits.stack = crate::units::ByteSize(self.config.max_wasm_stack as u64);
        let refused = imports::check(loaded.imports.iter().map(String::as_str), &grant);
        if !refused.is_empty() {
            let detail = refused.iter().map(|r| format!("{} ({})", r.import, r.reason)).collect::<Vec<_>>().join("; ");
            return Err(Error::Refused {
                what: refused.into_iter().map(|r| r.import).collect(),
                detail: format!("import refused before instantiation: {detail}"),
            });
        }
        let mut linker = Linker::<HostState>::new(&self.engine);
        let internal = |e: wasmtime::Error| Error::Internal(anyhow::anyhow!("linking failed: {e:#}"));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(internal)?;
        bindings::vivarium::agent::log::add_to_linker::<HostState, HasSelf<LogState>>(&mut linker, |s| &mut s.log)
            .map_err(internal)?;
        // The other services are linked only when granted: an import of one
        // that is not granted was refused above, before linking.
        CallServices::link(&grant, &mut linker).map_err(internal)?;
        let source = self.link_interpreted(&mut linker, loaded, &grant)?;
        let pre = linker
            .instantiate_pre(&loaded.component)
            .map_err(|e| Error::Refused { what: vec![], detail: format!("the component cannot be linked: {e:#}") })?;
        let meta_v2 = bindings::v0_2::MetaToolsPre::new(pre.clone()).ok();
        let pre = AgentPre::new(pre).map_err(|e| {
            Error::invalid(format!(
                "the component does not export the vivarium:agent world (task-agent and meta-agent): {e:#}"
            ))
        })?;
        Ok(Prepared { pre, meta_v2, grant: Arc::new(grant), sha256: loaded.sha256.clone(), source })
    }
}

/// Accept a binary component or component text (`.wat`); refuse anything
/// else with a message that says what it is and what to do.
pub fn to_component_bytes(bytes: &[u8], max: usize) -> Result<Vec<u8>> {
    if bytes.len() > max {
        return Err(Error::invalid(format!(
            "the component is {} bytes; this host accepts at most {max} bytes",
            bytes.len()
        )));
    }
    let bytes = if bytes.starts_with(b"\0asm") {
        bytes.to_vec()
    } else if std::str::from_utf8(bytes).is_ok_and(|s| wat_text_start(s).starts_with('(')) {
        wat::parse_bytes(bytes)
            .map_err(|e| Error::invalid(format!("the text is not valid WebAssembly text: {e}")))?
            .into_owned()
    } else {
        return Err(Error::invalid(
            "not a WebAssembly component: the bytes start with neither `\\0asm` nor a `(` of the text format",
        ));
    };
    if wasmparser::Parser::is_core_wasm(&bytes) {
        return Err(Error::invalid(
            "this is a core WebAssembly module, not a component; build for wasm32-wasip2 or wrap it with `wasm-tools component new`",
        ));
    }
    if !wasmparser::Parser::is_component(&bytes) {
        return Err(Error::invalid("not a WebAssembly component (unknown binary header version)"));
    }
    Ok(bytes)
}

/// `text` from its first token on: leading whitespace, `;;` line comments
/// and (nested) `(; … ;)` block comments skipped, so a `.wat` file may open
/// with a comment.
pub fn wat_text_start(text: &str) -> &str {
    let mut s = text;
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix(";;") {
            s = rest.find('\n').map_or("", |i| &rest[i..]);
        } else if s.starts_with("(;") {
            let mut depth = 0usize;
            let mut i = 0;
            let b = s.as_bytes();
            loop {
                if i + 1 >= b.len() {
                    return "";
                }
                if b[i] == b'(' && b[i + 1] == b';' {
                    depth += 1;
                    i += 2;
                } else if b[i] == b';' && b[i + 1] == b')' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            s = &s[i..];
        } else {
            return s;
        }
    }
}

impl Runtime {
    pub(crate) fn new_state(
        &self,
        limits: &crate::caps::Limits,
        log: LogState,
        wasi: WasiCtx,
        services: CallServices,
        host_work: host_work::HostWork,
    ) -> HostState {
        HostState::new(self.config.max_memory, limits, log, wasi, services, host_work)
    }
}

impl HostState {
    /// Store data for one call (or one reward instance) under `limits`,
    /// linear memory capped at `max_memory` as well.
    pub(crate) fn new(
        max_memory: u64,
        limits: &crate::caps::Limits,
        log: LogState,
        wasi: WasiCtx,
        services: CallServices,
        host_work: host_work::HostWork,
    ) -> Self {
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: CallLimiter::new(limits.memory.bytes().min(max_memory), limits.table_elements, limits.instances),
            log,
            services,
            host_work,
            charged: host_work::Charged::default(),
            source: None,
            peer: None,
        }
    }
}
