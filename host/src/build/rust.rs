//! The Rust builder: `cargo build --release --target <wasm target>` of a
//! variant crate, bounded in time, into a shared guest target directory.
//!
//! * [`RustTarget::WasiP2`]: rustc links a component directly. It imports the
//!   WASI interfaces the Rust standard library uses (cli, io, and clocks or
//!   filesystem when the code calls them) plus the `vivarium:agent`
//!   interfaces the variant calls.
//! * [`RustTarget::Unknown`]: rustc produces a core module carrying the
//!   `wit-bindgen` component-type section; the builder turns it into a
//!   component in process with `wit-component`. The result imports **no WASI
//!   at all** — only the `vivarium:agent` interfaces the variant calls, which
//!   is the tightest sandbox.
//!
//! The build is hermetic in the ways a builder can make it so: cargo runs with
//! the target directory as its working directory (so a `.cargo/config.toml`
//! inside the variant's tree is never read), `RUSTFLAGS`-style variables of
//! the caller's environment are removed, and the whole process group is
//! killed when the timeout passes. What the variant's tree may contain (a
//! `build.rs`, new dependencies) is the guard's business, checked before a
//! build is ever started.
//!
//! Untrusted source (a child written by a meta-agent) is built with
//! [`build_rust_sandboxed`]: cargo then runs `--offline --locked` inside a
//! [`Sandbox`] (Landlock, no network, rlimits, a scrubbed environment; see
//! [`super::sandbox`]), and a build that reaches outside it or adds a
//! dependency fails with [`Error::Refused`] naming what it tried.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use super::sandbox::{self, Sandbox, Violation};
use super::BuildOutput;
use crate::error::{Error, Result};

/// Which target a Rust variant builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RustTarget {
    /// `wasm32-wasip2`: a component linked by rustc, importing the WASI
    /// interfaces the standard library uses.
    WasiP2,
    /// `wasm32-unknown-unknown`: a core module turned into a component by the
    /// builder; no WASI imports at all.
    Unknown,
}

impl RustTarget {
    /// The rustc target triple.
    pub fn triple(self) -> &'static str {
        match self {
            RustTarget::WasiP2 => "wasm32-wasip2",
            RustTarget::Unknown => "wasm32-unknown-unknown",
        }
    }
}

impl fmt::Display for RustTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.triple())
    }
}

impl FromStr for RustTarget {
    type Err = Error;

    /// Accepts the triples and the short names `wasip2` and `unknown`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "wasm32-wasip2" | "wasip2" => Ok(RustTarget::WasiP2),
            "wasm32-unknown-unknown" | "unknown" => Ok(RustTarget::Unknown),
            other => Err(Error::invalid(format!(
                "unknown Rust target {other:?}: use `wasm32-wasip2` or `wasm32-unknown-unknown`"
            ))),
        }
    }
}

/// Environment variables of the caller that would change how a guest
/// compiles (flags meant for the host, a forced target) and are removed.
const SCRUBBED_ENV: &[&str] = &[
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
];

/// How much of cargo's output is kept for [`BuildOutput::log`] (its tail).
const LOG_LIMIT: usize = 256 * 1024;

/// How many lines of cargo's output an error message quotes.
const ERROR_TAIL_LINES: usize = 40;

/// Build the Rust variant crate in `variant_dir` for `target` into
/// `target_dir`, and return the component.
///
/// Runs `cargo build --release --target <triple> --manifest-path
/// <variant_dir>/Cargo.toml` with `CARGO_TARGET_DIR=<target_dir>`, after
/// installing the target with `rustup target add` when `rustup target list
/// --installed` lacks it. Everything (the rustup calls included) must finish
/// within `timeout`; past it the build is killed with every process it
/// started. The crate must be a `cdylib`; its artifact is
/// `<target_dir>/<triple>/release/<name>.wasm`, where `<name>` is the
/// `[lib] name` or the `[package] name` with `-` turned into `_`. For
/// [`RustTarget::Unknown`] the core module is turned into a component and
/// written next to it as `<name>.component.wasm`.
///
/// Errors: [`Error::Invalid`] when the crate is not a buildable variant (no
/// or a bad `Cargo.toml`, a compile error, a timeout, a core module that is
/// not a valid component), with the tail of cargo's output and what to do;
/// [`Error::Io`] when a file or a program cannot be read or started.
pub fn build_rust(variant_dir: &Path, target_dir: &Path, target: RustTarget, timeout: Duration) -> Result<BuildOutput> {
    build(variant_dir, target_dir, target, timeout, None)
}

/// [`build_rust`] for untrusted source: cargo runs `--offline --locked`
/// inside `sandbox` (usually [`Sandbox::for_build`]`(variant_dir,
/// target_dir)` plus the guest SDK's paths).
///
/// The variant must carry a `Cargo.lock`, and every dependency it names must
/// already be in the local cargo registry (vendored by the host ahead of
/// time). Warm rebuilds reuse `target_dir` exactly as unsandboxed ones do.
///
/// Errors, besides those of [`build_rust`]:
/// * [`Error::Refused`] with `what = ["new-dependency"]` when the crate names
///   a dependency its `Cargo.lock` lacks (or one not available offline):
///   new dependencies are refused in self-modification;
/// * [`Error::Refused`] with `what = ["build-sandbox"]` when the build
///   reached a file or a socket outside the sandbox or the network (an
///   `include_str!` of a host file, a `build.rs` or proc macro opening a
///   connection), with the compiler's lines that say so, or when the
///   system cannot provide the sandbox (see [`Sandbox::apply`]);
/// * [`Error::Invalid`] when the variant has no `Cargo.lock` or lies inside
///   `target_dir` (its tree would then be writable).
pub fn build_rust_sandboxed(
    variant_dir: &Path,
    target_dir: &Path,
    target: RustTarget,
    timeout: Duration,
    sandbox: &Sandbox,
) -> Result<BuildOutput> {
    build(variant_dir, target_dir, target, timeout, Some(sandbox))
}

/// What a new dependency is refused as ([`Error::Refused`]'s `what`).
pub const REFUSED_NEW_DEPENDENCY: &str = "new-dependency";

fn build(
    variant_dir: &Path,
    target_dir: &Path,
    target: RustTarget,
    timeout: Duration,
    sandbox: Option<&Sandbox>,
) -> Result<BuildOutput> {
    let started = Instant::now();
    let deadline = started + timeout;
    let manifest = variant_dir.join("Cargo.toml");
    let name = artifact_name(variant_dir, &manifest)?;

    // An absolute target directory: cargo runs with it as working directory.
    let target_dir = std::path::absolute(target_dir)
        .map_err(|e| Error::io(format!("resolving the guest target directory {}", target_dir.display()), e))?;
    std::fs::create_dir_all(&target_dir)
        .map_err(|e| Error::io(format!("creating the guest target directory {}", target_dir.display()), e))?;
    let manifest =
        std::path::absolute(&manifest).map_err(|e| Error::io(format!("resolving {}", manifest.display()), e))?;

    if sandbox.is_some() {
        let abs_dir = std::path::absolute(variant_dir)
            .map_err(|e| Error::io(format!("resolving the variant directory {}", variant_dir.display()), e))?;
        if abs_dir.starts_with(&target_dir) {
            return Err(Error::invalid(format!(
                "the variant {} lies inside the guest target directory {}: a sandboxed build \
                 may write there, so the tree must live elsewhere",
                variant_dir.display(),
                target_dir.display()
            )));
        }
        if !variant_dir.join("Cargo.lock").is_file() {
            return Err(Error::invalid(format!(
                "{} has no Cargo.lock: sandboxed builds run `cargo build --offline --locked`, \
                 so the variant must carry the lock file of its dependencies",
                variant_dir.display()
            )));
        }
    }

    ensure_target_installed(target, &target_dir, deadline, timeout)?;

    let mut cargo = Command::new(cargo_program());
    cargo
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(target.triple())
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--color")
        .arg("never")
        .current_dir(&target_dir);
    for var in SCRUBBED_ENV {
        cargo.env_remove(var);
    }
    cargo.env("CARGO_TARGET_DIR", &target_dir);
    // Kept until cargo has ended: dropping it removes the private TMPDIR.
    let applied = match sandbox {
        Some(sandbox) => {
            // No network, and the lock file as it is: a dependency the
            // variant did not have before fails instead of being fetched.
            cargo.arg("--offline").arg("--locked");
            Some(sandbox.apply(&mut cargo)?)
        }
        None => None,
    };

    let run = run_bounded(cargo, deadline)
        .map_err(|e| Error::io(format!("starting `cargo build` for {}", variant_dir.display()), e))?;
    drop(applied);
    let log = run.log();
    match run.status {
        None => {
            return Err(Error::invalid(format!(
                "building the Rust variant in {dir} took longer than {secs:.0} s and was stopped. \
                 A first build compiles the dependencies (wit-bindgen, the guest SDK) and can take \
                 minutes; later builds reuse them from {target_dir}. Raise the build timeout, or \
                 look for a build step that never ends.\nLast lines of cargo's output:\n{tail}",
                dir = variant_dir.display(),
                secs = timeout.as_secs_f64(),
                target_dir = target_dir.display(),
                tail = tail_lines(&log, ERROR_TAIL_LINES),
            )));
        }
        Some(status) if !status.success() => {
            if sandbox.is_some() {
                if let Some(refusal) = sandbox_refusal(variant_dir, &log) {
                    return Err(refusal);
                }
            }
            return Err(Error::invalid(format!(
                "building the Rust variant in {dir} failed ({status}).\n\
                 Last lines of cargo's output:\n{tail}\n\
                 Fix the errors above in the variant's source and build again.",
                dir = variant_dir.display(),
                tail = tail_lines(&log, ERROR_TAIL_LINES),
            )));
        }
        Some(_) => {}
    }

    let release = target_dir.join(target.triple()).join("release");
    let artifact = release.join(format!("{name}.wasm"));
    let bytes = std::fs::read(&artifact).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::invalid(format!(
                "cargo built {dir} but left no {artifact}: a Rust variant must be a library with \
                 `[lib] crate-type = [\"cdylib\"]` in its Cargo.toml",
                dir = variant_dir.display(),
                artifact = artifact.display(),
            ))
        } else {
            Error::io(format!("reading the build output {}", artifact.display()), e)
        }
    })?;

    let (component, path) = if is_component(&bytes) {
        (bytes, artifact)
    } else if !is_core_module(&bytes) {
        return Err(Error::invalid(format!("the build output {} is not WebAssembly", artifact.display())));
    } else {
        match target {
            RustTarget::Unknown => {
                let component = module_to_component(&bytes).map_err(|e| {
                    Error::invalid(format!(
                        "turning the core module {} into a component failed: {e:#}. \
                         The variant must generate its bindings with the guest SDK \
                         (`vivarium_guest::export!`), which embeds the component type.",
                        artifact.display()
                    ))
                })?;
                let path = release.join(format!("{name}.component.wasm"));
                write_atomically(&path, &component)?;
                (component, path)
            }
            RustTarget::WasiP2 => {
                return Err(Error::invalid(format!(
                    "{} is a core module, not a component: the wasm32-wasip2 toolchain should \
                     link components (rustc 1.82 or later); update the toolchain or build for \
                     wasm32-unknown-unknown",
                    artifact.display()
                )));
            }
        }
    };

    Ok(BuildOutput { component, path, log, duration: started.elapsed() })
}

/// The refusal for a sandboxed build that failed because it added a
/// dependency or reached outside the sandbox; `None` for an ordinary
/// compile error.
fn sandbox_refusal(variant_dir: &Path, log: &str) -> Option<Error> {
    let tail = tail_lines(log, ERROR_TAIL_LINES);
    if is_new_dependency(log) {
        return Some(Error::Refused {
            what: vec![REFUSED_NEW_DEPENDENCY.to_string()],
            detail: format!(
                "the child adds a dependency that is not in its Cargo.lock (or not available \
                 offline); new dependencies are refused in self-modification: a variant builds \
                 only against the dependencies the host vendored, with `cargo build --offline \
                 --locked`. Remove the new dependency from {manifest}.\n\
                 Last lines of cargo's output:\n{tail}",
                manifest = variant_dir.join("Cargo.toml").display(),
            ),
        });
    }
    let (what, lines) = match sandbox::classify_violation(log)? {
        Violation::OutsidePath(lines) => (
            "tried to reach a file outside the build sandbox (or a socket: the sandbox has no \
             network). The sandbox lets a build read only the variant's tree, the toolchain and \
             the guest SDK, and write only its target directory",
            lines,
        ),
        Violation::Network(lines) => (
            "tried to reach the network, which the build sandbox does not allow (builds run \
             offline)",
            lines,
        ),
    };
    Some(Error::Refused {
        what: vec![sandbox::REFUSED_SANDBOX.to_string()],
        detail: format!(
            "the build of {dir} {what}:\n{lines}\nLast lines of cargo's output:\n{tail}",
            dir = variant_dir.display(),
            lines = lines.join("\n"),
        ),
    })
}

/// Whether cargo's output says the crate needs a dependency the lock file
/// (or the offline registry) does not have.
fn is_new_dependency(log: &str) -> bool {
    const SIGNS: &[&str] = &[
        "needs to be updated but --locked was passed",
        "cannot update the lock file",
        "no matching package named",
        "failed to select a version for the requirement",
        "attempting to make an HTTP request, but --offline was specified",
        "--offline was specified",
    ];
    SIGNS.iter().any(|sign| log.contains(sign))
}

/// Turn a core module carrying a `component-type` custom section (what
/// `wit-bindgen` embeds) into a validated component.
fn module_to_component(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    wit_component::ComponentEncoder::default().module(module)?.validate(true).encode()
}

/// The file stem of the crate's wasm artifact: `[lib] name`, else
/// `[package] name`, with `-` turned into `_`.
fn artifact_name(variant_dir: &Path, manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::invalid(format!(
                "{} has no Cargo.toml: a Rust variant is a cargo crate with \
                 `[lib] crate-type = [\"cdylib\"]` that depends on the guest SDK",
                variant_dir.display()
            ))
        } else {
            Error::io(format!("reading {}", manifest.display()), e)
        }
    })?;
    let table: toml::Table =
        text.parse().map_err(|e| Error::invalid(format!("{} is not valid TOML: {e}", manifest.display())))?;
    let lib_name = table.get("lib").and_then(|lib| lib.get("name")).and_then(|n| n.as_str());
    let package_name = table.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str());
    let name = lib_name
        .or(package_name)
        .ok_or_else(|| Error::invalid(format!("{} has no `[package] name`", manifest.display())))?;
    // The name becomes part of a path: accept only what cargo accepts.
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Error::invalid(format!(
            "{}: the crate name {name:?} may only hold ASCII letters, digits, `-` and `_`",
            manifest.display()
        )));
    }
    Ok(name.replace('-', "_"))
}

/// The cargo to run: the one that is running us (`$CARGO`, set by cargo for
/// tests and `cargo run`), else `cargo` from `PATH`.
fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Install `target` with rustup when it is missing. Without rustup (a
/// toolchain from a distribution) nothing is checked: cargo then reports a
/// missing target itself.
///
/// A target found installed is remembered for the life of the process, so
/// only the first build per target pays for the rustup call.
fn ensure_target_installed(target: RustTarget, cwd: &Path, deadline: Instant, timeout: Duration) -> Result<()> {
    static KNOWN_INSTALLED: Mutex<Vec<RustTarget>> = Mutex::new(Vec::new());
    let known = |t: RustTarget| KNOWN_INSTALLED.lock().map(|k| k.contains(&t)).unwrap_or(false);
    let remember = |t: RustTarget| {
        if let Ok(mut k) = KNOWN_INSTALLED.lock() {
            if !k.contains(&t) {
                k.push(t);
            }
        }
    };
    if known(target) {
        return Ok(());
    }

    let mut list = Command::new("rustup");
    list.args(["target", "list", "--installed"]).current_dir(cwd);
    let listed = match run_bounded(list, deadline) {
        Ok(run) => run,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("running `rustup target list --installed`", e)),
    };
    match listed.status {
        Some(status) if status.success() => {}
        // rustup present but unhappy (no default toolchain, …): let cargo speak.
        Some(_) => return Ok(()),
        None => {
            return Err(Error::invalid(format!(
                "`rustup target list --installed` took longer than the build timeout ({:.0} s)",
                timeout.as_secs_f64()
            )))
        }
    }
    let installed = String::from_utf8_lossy(&listed.stdout);
    if installed.lines().any(|line| line.trim() == target.triple()) {
        remember(target);
        return Ok(());
    }

    let mut add = Command::new("rustup");
    add.args(["target", "add", target.triple()]).current_dir(cwd);
    let added =
        run_bounded(add, deadline).map_err(|e| Error::io(format!("running `rustup target add {target}`"), e))?;
    match added.status {
        Some(status) if status.success() => {
            remember(target);
            Ok(())
        }
        Some(status) => Err(Error::invalid(format!(
            "the Rust target {target} is not installed and `rustup target add {target}` failed \
             ({status}):\n{tail}\nInstall it by hand (`rustup target add {target}`) and build again.",
            tail = tail_lines(&added.log(), ERROR_TAIL_LINES),
        ))),
        None => Err(Error::invalid(format!(
            "`rustup target add {target}` did not finish within the build timeout ({:.0} s); \
             install the target by hand and build again",
            timeout.as_secs_f64()
        ))),
    }
}

/// A finished (or stopped) child process.
pub(crate) struct Finished {
    /// `None` when the deadline passed and the process group was killed.
    pub(crate) status: Option<ExitStatus>,
    /// The tail (up to [`LOG_LIMIT`] bytes) of its stdout.
    pub(crate) stdout: Vec<u8>,
    /// The tail (up to [`LOG_LIMIT`] bytes) of its stderr.
    pub(crate) stderr: Vec<u8>,
}

impl Finished {
    /// Stderr then stdout, as text, at most [`LOG_LIMIT`] bytes (the tail).
    pub(crate) fn log(&self) -> String {
        let mut log = String::from_utf8_lossy(&self.stderr).into_owned();
        if !self.stdout.is_empty() {
            if !log.is_empty() && !log.ends_with('\n') {
                log.push('\n');
            }
            log.push_str(&String::from_utf8_lossy(&self.stdout));
        }
        if log.len() > LOG_LIMIT {
            let mut cut = log.len() - LOG_LIMIT;
            while !log.is_char_boundary(cut) {
                cut += 1;
            }
            log.replace_range(..cut, "[… earlier output cut …]\n");
        }
        log
    }
}

/// Run `cmd` to completion or until `deadline`, collecting the tails of its
/// stdout and stderr. Past the deadline its whole process group is killed.
pub(crate) fn run_bounded(mut cmd: Command, deadline: Instant) -> std::io::Result<Finished> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own process group, so that a timeout can kill rustc and build
        // scripts along with cargo.
        cmd.process_group(0);
    }
    let mut child = cmd.spawn()?;

    let (tx, rx) = mpsc::channel::<(usize, Vec<u8>)>();
    if let Some(out) = child.stdout.take() {
        spawn_reader(out, 0, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        spawn_reader(err, 1, tx.clone());
    }
    drop(tx);

    let mut poll = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        let now = Instant::now();
        if now >= deadline {
            kill_tree(&mut child);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(poll.min(deadline - now));
        poll = (poll * 2).min(Duration::from_millis(25));
    };

    // Collect the pipes. A straggler that keeps a pipe open (it should not
    // exist once the group is dead) must not block us: wait a little only.
    let mut outputs = [Vec::new(), Vec::new()];
    let grace = Instant::now() + Duration::from_secs(2);
    loop {
        let left = grace.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((index, bytes)) => outputs[index] = bytes,
            Err(_) => break, // all readers done (disconnected) or the grace ran out
        }
    }
    let [stdout, stderr] = outputs;
    Ok(Finished { status, stdout, stderr })
}

/// Read `pipe` to its end on a thread, keeping the last [`LOG_LIMIT`] bytes,
/// and send them with `index` when the pipe closes.
fn spawn_reader<R: Read + Send + 'static>(mut pipe: R, index: usize, tx: mpsc::Sender<(usize, Vec<u8>)>) {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * LOG_LIMIT {
                        kept.drain(..kept.len() - LOG_LIMIT);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        if kept.len() > LOG_LIMIT {
            kept.drain(..kept.len() - LOG_LIMIT);
        }
        let _ = tx.send((index, kept));
    });
}

/// Kill `child` and, on Unix, every process in its process group.
fn kill_tree(child: &mut Child) {
    #[cfg(unix)]
    {
        // The child leads its own group (`process_group(0)`), so its pid is
        // the group id; `kill -KILL -- -<pgid>` signals the whole group.
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", child.id()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
}

/// The last `n` lines of `text`.
pub(crate) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Whether `bytes` start with the header of a component.
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00]
}

/// Whether `bytes` start with the header of a core module.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [0x01, 0x00, 0x00, 0x00]
}

/// Write `bytes` to `path` through a temporary file and a rename, so a reader
/// never sees half a component.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp: PathBuf = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("renaming {} to {}", tmp.display(), path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print() {
        assert_eq!("wasip2".parse::<RustTarget>().unwrap(), RustTarget::WasiP2);
        assert_eq!("wasm32-unknown-unknown".parse::<RustTarget>().unwrap(), RustTarget::Unknown);
        assert!("x86_64".parse::<RustTarget>().is_err());
        assert_eq!(RustTarget::WasiP2.to_string(), "wasm32-wasip2");
    }

    #[test]
    fn artifact_names() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("Cargo.toml");
        std::fs::write(&manifest, "[package]\nname = \"my-variant\"\n").unwrap();
        assert_eq!(artifact_name(dir.path(), &manifest).unwrap(), "my_variant");
        std::fs::write(&manifest, "[package]\nname = \"a\"\n[lib]\nname = \"b-c\"\n").unwrap();
        assert_eq!(artifact_name(dir.path(), &manifest).unwrap(), "b_c");
        std::fs::write(&manifest, "[package]\nname = \"../x\"\n").unwrap();
        assert!(matches!(artifact_name(dir.path(), &manifest), Err(Error::Invalid(_))));
        std::fs::remove_file(&manifest).unwrap();
        assert!(matches!(artifact_name(dir.path(), &manifest), Err(Error::Invalid(_))));
    }

    #[test]
    fn headers() {
        assert!(is_component(b"\0asm\x0d\0\x01\0rest"));
        assert!(is_core_module(b"\0asm\x01\0\0\0rest"));
        assert!(!is_component(b"\0asm"));
    }

    #[cfg(unix)]
    #[test]
    fn bounded_run_stops_at_the_deadline() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; sleep 30"]);
        let start = Instant::now();
        let run = run_bounded(cmd, Instant::now() + Duration::from_millis(300)).unwrap();
        assert!(run.status.is_none());
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "started");
    }

    /// Builds `variants/echo` for both targets (slow on a cold target
    /// directory: run with `cargo test -p vivarium -- --ignored`).
    #[test]
    #[ignore]
    fn builds_echo_for_both_targets() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let variant = root.join("variants").join("echo");
        let target_dir = super::super::default_guest_target_dir(&root);
        for target in [RustTarget::WasiP2, RustTarget::Unknown] {
            let out = build_rust(&variant, &target_dir, target, Duration::from_secs(600))
                .unwrap_or_else(|e| panic!("{target}: {e}"));
            assert!(is_component(&out.component), "{target}: not a component");
            assert_eq!(std::fs::read(&out.path).unwrap(), out.component);
        }
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }
}
