//! Compiling untrusted components, in a process of their own.
//!
//! Wasmtime does not treat compile-time denial of service as a
//! vulnerability: a small component can make Cranelift spend minutes or
//! gigabytes. A thread cannot be stopped, so the host compiles in a child
//! process it can kill:
//!
//! * the parent runs `<compiler> __compile --max-wasm-stack N` (the
//!   `vivarium` binary itself; the subcommand is hidden), writes the
//!   component bytes to its stdin and reads the serialized artifact
//!   (`Engine::precompile_component`) from its stdout;
//! * the child gets an empty environment, `RLIMIT_AS` =
//!   [`RuntimeConfig::compile_memory`], `RLIMIT_CORE` = 0, dies with its
//!   parent (`PR_SET_PDEATHSIG`), and is killed (SIGKILL) when
//!   [`RuntimeConfig::compile_timeout`] passes;
//! * the parent deserializes the artifact (the child's engine is configured
//!   by [`engine_config`] like the parent's, and `Component::deserialize`
//!   refuses an artifact from an engine with other settings and applies the
//!   pooling allocator's limits, which the child does not have), then
//!   stores it in its compile cache with its sha256 sidecar, which every
//!   later load checks ([`CompileCache`](super::cache::CompileCache)).
//!
//! Which path is used: [`Compiler::Process`] when the runtime is given a
//! compiler executable — the `vivarium` binary always does (see
//! [`Compiler::for_this_process`]); [`Compiler::InProcess`] (the default of
//! [`RuntimeConfig`]) for library users and tests that have no such binary:
//! there compilation runs on a blocking thread under the same timeout, and a
//! timed-out thread runs to completion in the background.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use super::RuntimeConfig;
use crate::error::{Error, Result};

/// The hidden subcommand of the `vivarium` binary that compiles one component.
pub const SUBCOMMAND: &str = "__compile";

/// Where untrusted components are compiled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Compiler {
    /// On a blocking thread of this process (a timeout refuses the load but
    /// cannot stop the thread).
    #[default]
    InProcess,
    /// In a child process running this executable's [`SUBCOMMAND`], killed
    /// at the timeout, under a memory limit.
    Process(PathBuf),
}

static THIS_PROCESS: OnceLock<PathBuf> = OnceLock::new();

impl Compiler {
    /// The compiler for runtimes this process creates by default:
    /// [`Compiler::Process`] once [`compile_out_of_process_with`] named an
    /// executable (the `vivarium` binary names itself at start), else
    /// [`Compiler::InProcess`].
    pub fn for_this_process() -> Self {
        THIS_PROCESS.get().map_or(Compiler::InProcess, |p| Compiler::Process(p.clone()))
    }
}

/// Make [`Compiler::for_this_process`] compile in child processes running
/// `exe` (an executable with the [`SUBCOMMAND`], i.e. `vivarium`).
pub fn compile_out_of_process_with(exe: PathBuf) {
    let _ = THIS_PROCESS.set(exe);
}

/// The engine settings that decide compiled code, shared by the runtime's
/// engine and the compiler process (which adds no pooling allocator).
pub fn engine_config(max_wasm_stack: usize) -> Config {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(max_wasm_stack)
        .async_stack_size(max_wasm_stack + (1 << 20));
    cfg
}

/// The refusal of a component whose compilation ran past the timeout.
fn timed_out(timeout: Duration) -> Error {
    Error::invalid(format!(
        "compiling the component took longer than {timeout:?}, so it was stopped; it is too large or too complex \
         for this host (make it smaller, or raise RuntimeConfig::compile_timeout)"
    ))
}

/// Compile `bytes` on a blocking thread of this process under the timeout.
pub(crate) async fn in_process(engine: &Engine, bytes: &[u8], timeout: Duration) -> Result<Component> {
    let (engine, bytes) = (engine.clone(), bytes.to_vec());
    let job = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes));
    match tokio::time::timeout(timeout, job).await {
        Err(_) => Err(timed_out(timeout)),
        Ok(Err(join)) => Err(Error::Internal(anyhow::anyhow!("compiler thread failed: {join}"))),
        Ok(Ok(Err(e))) => Err(Error::invalid(format!("the component does not validate: {e:#}"))),
        Ok(Ok(Ok(c))) => Ok(c),
    }
}

/// Compile `bytes` in a child process running `exe`; the serialized artifact.
pub(crate) async fn out_of_process(exe: &std::path::Path, bytes: &[u8], config: &RuntimeConfig) -> Result<Vec<u8>> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .arg("--max-wasm-stack")
        .arg(config.max_wasm_stack.to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let memory = config.compile_memory;
    // SAFETY: between fork and exec only async-signal-safe calls (setrlimit,
    // prctl).
    unsafe {
        cmd.pre_exec(move || {
            // The compiler dies with the host (a host killed with SIGKILL
            // leaves no compile running).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for (resource, value) in [(libc::RLIMIT_AS, memory), (libc::RLIMIT_CORE, 0)] {
                let limit = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child =
        cmd.spawn().map_err(|e| Error::io(format!("cannot start the compiler process {}", exe.display()), e))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let work = async {
        let write = async {
            // A child that dies early closes the pipe; its exit status says why.
            let _ = stdin.write_all(bytes).await;
            drop(stdin);
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = stdout.read_to_end(&mut out);
        let mut err_reader = (&mut stderr).take(64 << 10);
        let read_err = err_reader.read_to_end(&mut err);
        let (_, r1, r2) = tokio::join!(write, read_out, read_err);
        r1.and(r2).map_err(|e| Error::io("reading from the compiler process", e))?;
        let status = child.wait().await.map_err(|e| Error::io("waiting for the compiler process", e))?;
        Ok::<_, Error>((status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(config.compile_timeout, work).await {
        Ok(r) => r?,
        Err(_) => {
            // Dropping the future dropped the child: kill_on_drop sends
            // SIGKILL and tokio reaps it.
            return Err(timed_out(config.compile_timeout));
        }
    };
    let said = String::from_utf8_lossy(&err).trim().to_string();
    match status.code() {
        Some(0) => Ok(out),
        Some(2) => Err(Error::invalid(format!("the component does not validate: {said}"))),
        _ => {
            use std::os::unix::process::ExitStatusExt;
            let how = match status.signal() {
                Some(sig) => format!("was killed by signal {sig}"),
                None => format!("exited with {status}"),
            };
            Err(Error::invalid(format!(
                "the compiler process {how} (its memory limit is {} MiB): {said}; the component is too large or \
                 too complex for this host",
                memory >> 20
            )))
        }
    }
}

/// The body of the [`SUBCOMMAND`]: read a component from stdin, compile it
/// with [`engine_config`], write the serialized artifact to stdout. Exit 0
/// on success, 2 when the component does not validate, 1 on any other
/// failure; the reason goes to stderr.
pub fn child_main(max_wasm_stack: usize, max_component_bytes: usize) -> std::process::ExitCode {
    use std::process::ExitCode;
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().take(max_component_bytes as u64 + 1).read_to_end(&mut bytes) {
        eprintln!("cannot read the component from stdin: {e}");
        return ExitCode::from(1);
    }
    if bytes.len() > max_component_bytes {
        eprintln!("the component is over {max_component_bytes} bytes");
        return ExitCode::from(2);
    }
    let engine = match Engine::new(&engine_config(max_wasm_stack)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot create the wasm engine: {e:#}");
            return ExitCode::from(1);
        }
    };
    let artifact = match engine.precompile_component(&bytes) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(&artifact).and_then(|()| stdout.flush()) {
        eprintln!("cannot write the compiled component: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
