//! Shared helpers for the workspace-level integration tests: a session on a
//! fresh `$VIVARIUM_HOME`, hand-written core-WAT agents, and the prebuilt
//! Rust guests.

use std::path::{Path, PathBuf};

use vivarium::caps::{Grant, Limits};
use vivarium::runtime::bindings::Task;
use vivarium::runtime::{CallOptions, CallOutcome, CallReport, Prepared, Runtime, RuntimeConfig};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Where the tests' sandboxed guest builds go: one directory for every test
/// binary, so a guest (and the Python interpreter) is built once.
pub fn guest_target() -> PathBuf {
    workspace_root().join("target/guests-sandboxed")
}

/// A session on `home` whose builds go to [`guest_target`].
pub fn sandboxed_session(home: &Path) -> vivarium::variant::Session {
    let mut s = vivarium::variant::Session::open(vivarium::home::Home::at(home)).expect("session");
    s.guest_target_dir = guest_target();
    s
}

/// A runtime with no cache, for tests.
pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).expect("runtime")
}

/// A task with `instruction` and `input`.
pub fn task(instruction: &str, input: &str) -> Task {
    Task { id: "t1".into(), domain: "test".into(), instruction: instruction.into(), input: input.into() }
}

/// Limits small enough that hostile tests end quickly.
pub fn small_limits() -> Limits {
    Limits {
        fuel: 200_000_000,
        memory: vivarium::units::ByteSize(64 << 20),
        wall: vivarium::units::HumanDuration(std::time::Duration::from_secs(5)),
        ..Limits::default()
    }
}

/// Core-module text of an agent whose `solve` body is `solve_body`.
///
/// The prelude gives a bump `cabi_realloc`, one page of memory, a `$log`
/// import when `log` is true, and `$ok_input` which returns the task input
/// as the answer (locals 6 and 7 are the input's pointer and length).
pub fn agent_wat(log: bool, extra: &str, solve_body: &str) -> String {
    let log_import =
        if log { r#"(import "vivarium:agent/log@0.1.0" "log" (func $log (param i32 i32 i32)))"# } else { "" };
    format!(
        r#"(module
  {log_import}
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 1024))
  (func $realloc (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $bump (i32.add (local.get $p) (local.get 3)))
    (block $ok
      (loop $grow
        (br_if $ok (i32.le_u (global.get $bump) (i32.shl (memory.size) (i32.const 16))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (local.get $p))
  (func $answer (param $ptr i32) (param $len i32) (result i32)
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (local.get $ptr))
    (i32.store (i32.const 8) (local.get $len))
    (i32.store8 (i32.const 12) (i32.const 0))
    (i32.const 0))
  {extra}
  (func (export "vivarium:agent/task-agent@0.1.0#solve")
    (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    {solve_body})
  (func (export "vivarium:agent/meta-agent@0.1.0#improve") (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32) unreachable)
)"#
    )
}

/// Componentize core WAT into an agent component.
pub fn wat_component(core_wat: &str) -> Vec<u8> {
    vivarium::componentize::from_core_module(core_wat.as_bytes(), true).expect("componentize")
}

/// Load and prepare `bytes` under `grant`.
pub async fn prepare(rt: &Runtime, bytes: &[u8], grant: Grant) -> vivarium::Result<Prepared> {
    let loaded = rt.load(bytes).await?;
    rt.prepare(&loaded, grant)
}

/// Solve `task` with default call options.
pub async fn solve(rt: &Runtime, p: &Prepared, t: &Task) -> CallReport<vivarium::runtime::bindings::Answer> {
    rt.solve(p, t, &CallOptions::default()).await.expect("host error")
}

/// The output of a successful call, or a panic describing what happened.
pub fn ok_output<T: std::fmt::Debug>(r: &CallReport<T>) -> &T {
    match &r.outcome {
        CallOutcome::Ok(v) => v,
        other => panic!("expected ok, got {other:?}"),
    }
}

/// The failure kind of a call, or a panic describing what happened.
pub fn failure<T: std::fmt::Debug>(r: &CallReport<T>) -> &vivarium::GuestFailure {
    match &r.outcome {
        CallOutcome::Failed(f) => f,
        other => panic!("expected a guest failure, got {other:?}"),
    }
}

/// Build a Rust guest crate (relative to the workspace root) for
/// `wasm32-wasip2` into the shared guest target directory, once per process.
pub fn rust_guest(rel: &str) -> Vec<u8> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    built
        .entry(rel.to_string())
        .or_insert_with(|| {
            let root = workspace_root();
            vivarium::build::build_rust(
                &root.join(rel),
                &root.join("target").join("guests"),
                vivarium::build::RustTarget::WasiP2,
                std::time::Duration::from_secs(900),
            )
            .unwrap_or_else(|e| panic!("building {rel}: {e}"))
            .component
        })
        .clone()
}

/// The fake LLM API key's variable in the host environment (the `services`
/// tests' fake server must see the key in `Authorization`, nothing else).
pub const LLM_KEY_VAR: &str = "VIVARIUM_SERVICES_TEST_API_KEY";
/// The fake LLM API key.
pub const LLM_KEY: &str = "sk-vivarium-test-5e3r3t-k3y-0123456789";

/// Every host environment variable a test looks at (`None`: unset). The
/// suite is one process, so the environment is written in one place, once,
/// by [`init_env`], rather than by each test module at its own moment while
/// other threads may be reading it.
pub const TEST_ENV: &[(&str, Option<&str>)] = &[
    // `caps`: a variable a policy allows, one it refuses, a secret-looking
    // one, and one that is granted but not set.
    ("VIVARIUM_CAPS_LANG", Some("en_GB.UTF-8")),
    ("VIVARIUM_CAPS_OTHER", Some("not-for-guests")),
    ("API_TOKEN", Some("tok-123")),
    ("VIVARIUM_CAPS_UNSET", None),
    // `services`: the fake LLM key.
    (LLM_KEY_VAR, Some(LLM_KEY)),
    // `limits_rust`: a host secret that must not reach an ungranted guest.
    ("VIVARIUM_TEST_SECRET_TOKEN", Some("hunter2")),
];

/// Set [`TEST_ENV`], once per process. Every test that reads the host
/// environment (or calls a guest that may) calls this first; `Once` blocks
/// the others until it is done.
pub fn init_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (name, value) in TEST_ENV {
            // SAFETY: runs before any test that calls `init_env` reads the
            // environment; the suite writes the environment nowhere else.
            unsafe {
                match value {
                    Some(v) => std::env::set_var(name, v),
                    None => std::env::remove_var(name),
                }
            }
        }
    });
}

/// One runtime shared by every test in a test binary: "the same host".
pub fn shared_runtime() -> &'static Runtime {
    static RT: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(runtime)
}
