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
//! The build is hermetic in the ways a builder can make it so: cargo is the
//! active toolchain's own ([`RustToolchain`]), runs from `/` (so no
//! `.cargo/config.toml` of the variant's tree or above the target directory
//! is read) with a cargo home of its own that holds no configuration
//! ([`sandbox_cargo_home`]), `RUSTFLAGS`-style variables of the caller's
//! environment are removed, and the whole process group is killed when the
//! timeout passes. What the variant's tree may contain (a
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
use std::sync::{mpsc, OnceLock};
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

/// The Rust toolchain guest builds run, found once per process
/// ([`RustToolchain::find`]).
///
/// It is the toolchain `$RUSTC` (else `rustc` on `PATH`, usually rustup's
/// proxy, which picks the toolchain as it always does) reports with
/// `rustc --print sysroot`. Builds run that sysroot's own `rustc` and
/// `cargo`, never rustup's proxies, so a sandboxed build needs neither the
/// `rustup` binary nor `$CARGO_HOME/bin` nor another toolchain.
#[derive(Debug, Clone)]
pub struct RustToolchain {
    /// `rustc --print sysroot`.
    pub sysroot: PathBuf,
    /// The sysroot's `rustc`.
    pub rustc: PathBuf,
    /// The sysroot's `cargo` (else `$CARGO`, else `cargo` on `PATH`).
    pub cargo: PathBuf,
    /// `rustc -vV` and `cargo -V`: part of every Rust cache key.
    pub version: String,
    /// The caller's cargo home (`$CARGO_HOME`, else `~/.cargo`), whose
    /// registry holds what `cargo fetch` downloaded. A sandboxed build reads
    /// only the parts of it its `Cargo.lock` pins ([`locked_sources`]).
    pub cargo_home: PathBuf,
    /// The `[source]` replacements and `[registries]` indexes of the cargo
    /// home's configuration, as `--config` arguments: what a build needs to
    /// find a mirror's sources, passed on cargo's command line (which no
    /// compiler or build script can read) and never as a file. The rest of
    /// that configuration (tokens, proxies, `[env]`) never reaches a build.
    pub source_config: Vec<String>,
    /// What a sandboxed build may read of the toolchain: the sysroot (only
    /// its `lib/rustlib`, `rustc`, `cargo` and their libraries when the
    /// sysroot is a system prefix such as `/usr`), and the C compiler driver
    /// that links build scripts and proc macros (the exact file and its own
    /// directories, e.g. `/usr/lib/gcc/x86_64-linux-gnu/12`).
    pub read_only: Vec<PathBuf>,
}

impl RustToolchain {
    /// The toolchain, found on first use.
    ///
    /// Errors: [`Error::Invalid`] naming what is missing (no `rustc`, a
    /// sysroot without `bin/rustc`, no `cargo`).
    pub fn find() -> Result<&'static RustToolchain> {
        static FOUND: OnceLock<std::result::Result<RustToolchain, String>> = OnceLock::new();
        FOUND.get_or_init(discover_toolchain).as_ref().map_err(|e| {
            Error::invalid(format!(
                "the Rust toolchain was not found: {e}. Install it with rustup (https://rustup.rs), \
                 then run `bash {}` from the repository root",
                super::support::SETUP_SCRIPT
            ))
        })
    }
}

fn discover_toolchain() -> std::result::Result<RustToolchain, String> {
    let run = |program: &std::ffi::OsStr, args: &[&str]| {
        let mut cmd = Command::new(program);
        cmd.args(args);
        super::support::probe(cmd, Duration::from_secs(120))
    };
    let rustc_cmd = std::env::var_os("RUSTC").filter(|v| !v.is_empty()).unwrap_or_else(|| "rustc".into());
    let sysroot = PathBuf::from(run(&rustc_cmd, &["--print", "sysroot"])?.trim());
    let sysroot = sysroot.canonicalize().map_err(|e| format!("the sysroot {}: {e}", sysroot.display()))?;
    let rustc = sysroot.join("bin").join("rustc");
    if !rustc.is_file() {
        return Err(format!("the sysroot {} has no bin/rustc", sysroot.display()));
    }
    let cargo = Some(sysroot.join("bin").join("cargo"))
        .filter(|c| c.is_file())
        .or_else(|| std::env::var_os("CARGO").and_then(sandbox::program_file))
        .or_else(|| sandbox::program_file("cargo"))
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path).find_map(|d| d.join("cargo").canonicalize().ok().filter(|p| p.is_file()))
            })
        })
        .ok_or_else(|| format!("no cargo in {} or on PATH", sysroot.join("bin").display()))?;
    let version = format!("{}{}", run(rustc.as_os_str(), &["-vV"])?, run(cargo.as_os_str(), &["-V"])?);
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    let cargo_home = std::env::var_os("CARGO_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let cargo_home = std::path::absolute(&cargo_home).unwrap_or(cargo_home);

    let mut read_only = Vec::new();
    if sandbox::is_broad(&sysroot) {
        // A distribution's toolchain (sysroot /usr): its own files only.
        read_only.push(sysroot.join("lib").join("rustlib"));
        read_only.push(rustc.canonicalize().unwrap_or(rustc.clone()));
        if let Ok(entries) = std::fs::read_dir(sysroot.join("lib")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("librustc_driver-") || name.starts_with("libstd-") {
                    read_only.push(e.path());
                }
            }
        }
    } else {
        read_only.push(sysroot.clone());
    }
    if !cargo.starts_with(&sysroot) {
        read_only.push(cargo.canonicalize().unwrap_or(cargo.clone()));
    }
    read_only.extend(host_linker_paths());
    Ok(RustToolchain {
        sysroot,
        rustc,
        cargo,
        version,
        source_config: source_config(&cargo_home),
        cargo_home,
        read_only,
    })
}

/// What linking a build script or a proc macro for the host reads besides
/// the sysroot: the `cc` driver (the exact file), its own directories
/// (gcc's `install:` directory with `collect2`, the LTO plugin, `crtbegin*.o`
/// and `libgcc`; wherever `collect2` lives) and the system linker's file,
/// for toolchains that do not link with their own `rust-lld`.
fn host_linker_paths() -> Vec<PathBuf> {
    let Some(cc) = sandbox::program_file("cc") else { return Vec::new() };
    let ask = |arg: &str| {
        let mut cmd = Command::new(&cc);
        cmd.arg(arg);
        super::support::probe(cmd, Duration::from_secs(30)).ok()
    };
    let mut out = vec![cc.clone()];
    let push_dir = |dir: PathBuf, out: &mut Vec<PathBuf>| {
        if let Ok(dir) = dir.canonicalize() {
            if dir.is_dir() && !sandbox::is_broad(&dir) && !out.contains(&dir) {
                out.push(dir);
            }
        }
    };
    if let Some(dirs) = ask("-print-search-dirs") {
        for line in dirs.lines() {
            if let Some(dir) = line.strip_prefix("install: ") {
                push_dir(PathBuf::from(dir.trim()), &mut out);
            }
        }
    }
    for program in ["collect2", "lto-wrapper", "ld"] {
        let Some(found) = ask(&format!("-print-prog-name={program}")) else { continue };
        let Some(file) = sandbox::program_file(found.trim()) else { continue };
        if program == "ld" {
            if !out.contains(&file) {
                out.push(file);
            }
        } else if let Some(dir) = file.parent() {
            push_dir(dir.to_path_buf(), &mut out);
        }
    }
    out
}

/// The `[source]` and `[registries]` entries of `cargo_home`'s
/// configuration that say where packages come from, as `--config KEY=VALUE`
/// arguments, sorted.
fn source_config(cargo_home: &Path) -> Vec<String> {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let key = |s: &str| {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            s.to_string()
        } else {
            quote(s)
        }
    };
    let mut out = Vec::new();
    let Some(table) = ["config.toml", "config"]
        .iter()
        .find_map(|name| std::fs::read_to_string(cargo_home.join(name)).ok())
        .and_then(|text| text.parse::<toml::Table>().ok())
    else {
        return out;
    };
    for (section, fields) in [("source", &["replace-with", "registry"][..]), ("registries", &["index"][..])] {
        let Some(entries) = table.get(section).and_then(|s| s.as_table()) else { continue };
        for (name, entry) in entries {
            for field in fields {
                if let Some(value) = entry.get(*field).and_then(|v| v.as_str()) {
                    out.push(format!("{section}.{}.{field}={}", key(name), quote(value)));
                }
            }
        }
    }
    out.sort();
    out
}

/// What of `cargo_home` a sandboxed build of `tree` may read: the
/// registry's index, and for each package `tree/Cargo.lock` pins, its
/// unpacked source and its `.crate` archive (registry packages) or its
/// checkout and git database (git packages).
///
/// Never the whole registry: it holds the source of every crate the user
/// ever built or installed, the host's own among them after a
/// `cargo install` (with the held-out tasks and graders in it). A lock file
/// naming a package with a path-like name or version pins nothing.
pub fn locked_sources(tree: &Path, cargo_home: &Path) -> Vec<PathBuf> {
    let registry = cargo_home.join("registry");
    let mut out = vec![registry.join("index")];
    let Some(packages) = std::fs::read_to_string(tree.join("Cargo.lock"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|lock| lock.get("package").and_then(|p| p.as_array()).cloned())
    else {
        return out;
    };
    let subdirs = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default()
    };
    let plain = |s: &str| {
        !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
    };
    let (sources, archives) = (subdirs(&registry.join("src")), subdirs(&registry.join("cache")));
    let checkouts: Vec<PathBuf> = subdirs(&cargo_home.join("git").join("checkouts"));
    for pkg in &packages {
        let field = |k: &str| pkg.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let (name, version, source) = (field("name"), field("version"), field("source"));
        if !plain(name) || !plain(version) {
            continue;
        }
        if source.starts_with("registry+") || source.starts_with("sparse+") {
            for dir in &sources {
                out.push(dir.join(format!("{name}-{version}")));
            }
            for dir in &archives {
                out.push(dir.join(format!("{name}-{version}.crate")));
            }
        } else if let Some((_, rev)) = source.strip_prefix("git+").and_then(|s| s.rsplit_once('#')) {
            for repo in &checkouts {
                for checkout in subdirs(repo) {
                    let short = checkout.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    if short.len() >= 7 && plain(&short) && rev.starts_with(&short) {
                        out.push(checkout);
                        if let Some(ident) = repo.file_name() {
                            out.push(cargo_home.join("git").join("db").join(ident));
                        }
                    }
                }
            }
        }
    }
    out.retain(|p| p.exists());
    out.sort();
    out.dedup();
    out
}

/// The cargo home guest builds run with: `<target_dir>.cargo-home`, beside
/// (never inside, where a build may write) the target directory, holding
/// only links to `tc.cargo_home`'s `registry` (and `git`).
///
/// Cargo finds there the sources `cargo fetch` downloaded, and no
/// `config.toml`, credentials or `bin` of the caller's cargo home: their
/// registry tokens, proxy passwords and `[env]` secrets never reach a
/// build. Sandboxed and trusted builds use the same one, so the paths the
/// compiler sees, and with them the artifacts in the target directory, are
/// shared. Anything else found in it is removed.
pub fn sandbox_cargo_home(target_dir: &Path, tc: &RustToolchain) -> Result<PathBuf> {
    let target_dir = std::path::absolute(target_dir)
        .map_err(|e| Error::io(format!("resolving the guest target directory {}", target_dir.display()), e))?;
    let name = target_dir
        .file_name()
        .ok_or_else(|| Error::invalid(format!("the guest target directory {} has no name", target_dir.display())))?;
    let home = target_dir.with_file_name(format!("{}.cargo-home", name.to_string_lossy()));
    std::fs::create_dir_all(&home).map_err(|e| Error::io(format!("creating {}", home.display()), e))?;
    for stray in ["config", "config.toml", "credentials", "credentials.toml", "bin", "env"] {
        let p = home.join(stray);
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            let removed = if m.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            removed.map_err(|e| Error::io(format!("removing {}", p.display()), e))?;
        }
    }
    for entry in ["registry", "git"] {
        let real = tc.cargo_home.join(entry);
        if entry == "registry" {
            std::fs::create_dir_all(&real).map_err(|e| Error::io(format!("creating {}", real.display()), e))?;
        }
        link(&real, &home.join(entry))?;
    }
    Ok(home)
}

/// Make `at` a symbolic link to `to` (replacing what is there), or remove
/// it when `to` does not exist. The link is replaced by a rename, so a
/// build running meanwhile always finds one.
#[cfg(unix)]
fn link(to: &Path, at: &Path) -> Result<()> {
    static LINKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let remove = |at: &Path| -> Result<()> {
        match std::fs::symlink_metadata(at) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(at),
            Ok(_) => std::fs::remove_file(at),
            Err(_) => Ok(()),
        }
        .map_err(|e| Error::io(format!("removing {}", at.display()), e))
    };
    if !to.exists() {
        return remove(at);
    }
    if std::fs::read_link(at).is_ok_and(|t| t == to) {
        return Ok(());
    }
    if std::fs::symlink_metadata(at).is_ok_and(|m| m.is_dir()) {
        remove(at)?;
    }
    let n = LINKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = at.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(to, &tmp).and_then(|()| std::fs::rename(&tmp, at)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("linking {} to {}", at.display(), to.display()), e)
    })
}

#[cfg(not(unix))]
fn link(to: &Path, at: &Path) -> Result<()> {
    let _ = (to, at);
    Err(Error::invalid("guest builds need symbolic links (a Unix system)"))
}

/// The cache key of a sandboxed Rust build of `dir` for `target`: the
/// sha256 of every file the build sandbox lets the compiler read that can
/// change between builds — every file of the tree, dot-directories and all
/// (an `include_str!("../notes.txt")`, a module under `src/.inc/`, a prompt
/// under `prompts/` all reach the component); every file of each path
/// dependency, the WIT directory and workspace manifest beside it — and the
/// toolchain (`rustc -vV`, `cargo -V`), the source configuration and the
/// target. Registry dependencies are pinned by `Cargo.lock`, a file of the
/// tree.
///
/// Errors: [`Error::Invalid`] for a tree holding a special file;
/// [`Error::Io`] for a file that cannot be read.
pub fn cache_key(dir: &Path, target: RustTarget) -> Result<String> {
    let tc = RustToolchain::find()?;
    let mut files = super::support::tree_files(dir)?;
    for (i, dep) in path_dependencies(dir)?.into_iter().enumerate() {
        for (rel, path) in super::support::tree_files(&dep)? {
            files.push((format!("dep{i}/{rel}"), path));
        }
        let parent = dep.join("..");
        if parent.join("Cargo.toml").is_file() {
            files.push((format!("dep{i}/../Cargo.toml"), parent.join("Cargo.toml")));
        }
        if parent.join("wit").is_dir() {
            for (rel, path) in super::support::tree_files(&parent.join("wit"))? {
                files.push((format!("dep{i}/../wit/{rel}"), path));
            }
        }
    }
    super::support::cache_key(
        &[
            ("builder", b"rust-2"),
            ("target", target.triple().as_bytes()),
            ("toolchain", tc.version.as_bytes()),
            ("source-config", tc.source_config.join("\n").as_bytes()),
        ],
        &files,
    )
}

/// Environment variables of the caller that would change how a guest
/// compiles (flags meant for the host, a forced target) and are removed.
const SCRUBBED_ENV: &[&str] = &[
    "CARGO_HOME",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTC_WRAPPER",
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
/// Runs the active toolchain's `cargo build --release --target <triple>
/// --manifest-path <variant_dir>/Cargo.toml` with
/// `CARGO_TARGET_DIR=<target_dir>` and the cargo home of
/// [`sandbox_cargo_home`], after installing the target with `rustup target
/// add` when the sysroot lacks it. Everything (the rustup call included) must finish
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

    let tc = RustToolchain::find()?;
    ensure_target_installed(tc, target, deadline, timeout)?;
    let cargo_home = sandbox_cargo_home(&target_dir, tc)?;

    let mut cargo = Command::new(&tc.cargo);
    cargo
        .arg("build")
        .arg("--release")
        .arg("--target")
        .arg(target.triple())
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--color")
        .arg("never");
    for setting in &tc.source_config {
        cargo.arg("--config").arg(setting);
    }
    // From `/`: cargo reads the `.cargo/config.toml` of its working
    // directory and every directory above, and no configuration but the
    // sources may reach a build.
    cargo.current_dir("/");
    for var in SCRUBBED_ENV {
        cargo.env_remove(var);
    }
    cargo.env("CARGO_TARGET_DIR", &target_dir).env("CARGO_HOME", &cargo_home).env("RUSTC", &tc.rustc);
    // Kept until cargo has ended: dropping it removes the private TMPDIR.
    let applied = match sandbox {
        Some(sandbox) => {
            // No network, and the lock file as it is: a dependency the
            // variant did not have before fails instead of being fetched.
            cargo.arg("--offline").arg("--locked");
            let mut path = vec![tc.sysroot.join("bin")];
            path.extend(sandbox::SANDBOX_PATH.iter().map(PathBuf::from));
            if let Ok(path) = std::env::join_paths(path) {
                cargo.env("PATH", path);
            }
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

/// Install `target` into `tc`'s sysroot with rustup when the sysroot lacks
/// its standard library (`lib/rustlib/<triple>`). Without rustup (a
/// toolchain from a distribution) nothing is installed: cargo then reports
/// the missing target itself.
fn ensure_target_installed(tc: &RustToolchain, target: RustTarget, deadline: Instant, timeout: Duration) -> Result<()> {
    if tc.sysroot.join("lib").join("rustlib").join(target.triple()).is_dir() {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add", target.triple()]);
    // The sysroot's own toolchain, whatever rustup would pick here.
    if tc.sysroot.parent().and_then(Path::file_name).is_some_and(|d| d == "toolchains") {
        if let Some(name) = tc.sysroot.file_name() {
            add.arg("--toolchain").arg(name);
        }
    }
    let added = match run_bounded(add, deadline) {
        Ok(run) => run,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("running `rustup target add {target}`"), e)),
    };
    match added.status {
        Some(status) if status.success() => Ok(()),
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

/// Write `bytes` to `path` atomically and durably ([`crate::fsio::write_atomic`]),
/// so a reader never sees half a component; the error names the path.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsio::write_atomic(path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Build a Rust variant inside the build sandbox: dependencies pinned by its
/// `Cargo.lock` are fetched first (cargo fetch runs no build code), then
/// cargo runs `--offline --locked` under Landlock with no network, seeing
/// only the tree, the toolchain, the fetched sources and its path
/// dependencies. Every variant build goes through here, so the shared target
/// directory only ever holds sandboxed output.
///
/// A tree whose inputs were built before is not built again: the output is
/// kept by content ([`cache_key`]: every file the sandbox lets
/// the build read), as the other languages' builders do, so running or
/// evolving an unchanged variant costs no cargo run.
pub(crate) fn build_in_sandbox(
    dir: &Path,
    target_dir: &Path,
    target: RustTarget,
    timeout: Duration,
) -> Result<BuildOutput> {
    let started = std::time::Instant::now();
    let key = cache_key(dir, target)?;
    let (out_path, _held) = match super::support::lookup(target_dir, "rust-cache", &key, started)? {
        Ok(hit) => return Ok(hit),
        Err(miss) => miss,
    };
    let built = build_uncached(dir, target_dir, target, timeout)?;
    super::support::store(&out_path, built.component, built.log, started, "the Rust build")
}

fn build_uncached(dir: &Path, target_dir: &Path, target: RustTarget, timeout: Duration) -> Result<BuildOutput> {
    fetch_locked(dir)?;
    touch_sources(dir)?;
    let mut sandbox = Sandbox::for_build(dir, target_dir);
    for dep in path_dependencies(dir)? {
        // The SDK's own manifest inherits from its workspace and reads the WIT.
        for p in [dep.clone(), dep.join("..").join("wit"), dep.join("..").join("Cargo.toml")] {
            if let Ok(p) = p.canonicalize() {
                sandbox = sandbox.with_read_only(p);
            }
        }
    }
    build_rust_sandboxed(dir, target_dir, target, timeout, &sandbox)
}

/// Set the mtime of every file in the tree to now.
///
/// Cargo identifies a root crate by name and version, not by directory, and
/// decides freshness from the mtimes its dep-info lists: after building a
/// parent, a child with the same crate name in another directory would be
/// taken as fresh and the parent's artifact returned. Touching the tree
/// (every file the cache key covers, so whatever the code includes) forces
/// the variant's own crate (only) to rebuild; builds are serialized, so the
/// artifact read afterwards is this tree's.
fn touch_sources(dir: &Path) -> Result<()> {
    let now = std::time::SystemTime::now();
    for (_, path) in super::support::tree_files(dir)? {
        // Never through a link: what it points at may lie outside the tree.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            if let Ok(f) = std::fs::File::open(&path) {
                let _ = f.set_modified(now);
            }
        }
    }
    Ok(())
}

/// `cargo fetch --locked`: download what the lock file pins. A dependency
/// missing from the lock file is refused as a new dependency.
fn fetch_locked(dir: &Path) -> Result<()> {
    // The caller's own configuration (mirrors, proxies, tokens) applies
    // here: this fetch runs no build code, outside the sandbox.
    let cargo = &RustToolchain::find()?.cargo;
    let out = std::process::Command::new(cargo)
        .args(["fetch", "--locked", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::io("running cargo fetch", e))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: String = err.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    if err.contains("--locked") || err.contains("lock file") {
        return Err(Error::Refused {
            what: vec![REFUSED_NEW_DEPENDENCY.into()],
            detail: format!(
                "{} adds a dependency that is not in its Cargo.lock; new dependencies are refused: {tail}",
                dir.display()
            ),
        });
    }
    Err(Error::invalid(format!("cargo fetch failed for {}: {tail}", dir.display())))
}

/// Absolute paths of the `path = …` dependencies in `dir/Cargo.toml`.
pub fn path_dependencies(dir: &Path) -> Result<Vec<PathBuf>> {
    let cargo = dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&cargo).map_err(|e| Error::invalid(format!("cannot read {}: {e}", cargo.display())))?;
    let doc: toml::Table = text.parse().map_err(|e| Error::invalid(format!("{}: {e}", cargo.display())))?;
    let mut out = Vec::new();
    for section in ["dependencies", "build-dependencies"] {
        let Some(deps) = doc.get(section).and_then(|d| d.as_table()) else { continue };
        for dep in deps.values() {
            if let Some(p) = dep.get("path").and_then(|p| p.as_str()) {
                let p = dir.join(p);
                out.push(
                    p.canonicalize().map_err(|e| Error::io(format!("resolving dependency path {}", p.display()), e))?,
                );
            }
        }
    }
    Ok(out)
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
    fn a_child_reading_notes_outside_src_gets_a_new_sha() {
        if crate::build::sandbox::support().landlock_abi < 1 {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        use crate::build::support::tests::{assert_every_kind_changes, KINDS};
        let (_dir, tree) = crate::build::sandbox::tests::echo_copy("sbx-echo-notes");
        // Its answers' notes carry each kind of file, included at compile time.
        let lib = tree.join("src/lib.rs");
        let text = std::fs::read_to_string(&lib).unwrap();
        let notes = "with_notes(format!(\"echo generation {GENERATION}\"))";
        assert!(text.contains(notes));
        let included = KINDS
            .iter()
            .map(|rel| {
                let from_src = rel.strip_prefix("src/").map(str::to_string).unwrap_or_else(|| format!("../{rel}"));
                format!("include_str!(\"{from_src}\")")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let text = text.replace(notes, "with_notes(format!(\"echo generation {GENERATION} {NOTES}\"))")
            + &format!("\nconst NOTES: &str = concat!({included});\n");
        std::fs::write(&lib, text).unwrap();
        let manifest = crate::caps::Manifest::load(tree.join("variant.toml")).unwrap();
        let target = crate::build::default_guest_target_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap());
        assert_every_kind_changes(&tree, str::to_string, |t| {
            let out = crate::build::dispatch::build_variant(t, &manifest, &target).unwrap_or_else(|e| panic!("{e}"));
            let now = std::fs::read_to_string(t.join(KINDS[2])).unwrap();
            assert!(out.component.windows(now.len()).any(|w| w == now.as_bytes()), "{now:?} is not in it");
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&out.component))
        });
    }

    #[test]
    fn a_sandboxed_build_sees_only_the_pinned_sources_and_no_cargo_configuration() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let reg = "index.crates.io-0123456789abcdef";
        for dir in ["src/{reg}/itoa-1.0.0/src", "src/{reg}/vivarium-0.1.0/src", "cache/{reg}", "index/{reg}/.cache"] {
            std::fs::create_dir_all(h.join("registry").join(dir.replace("{reg}", reg))).unwrap();
        }
        std::fs::write(h.join("registry/cache").join(reg).join("itoa-1.0.0.crate"), "x").unwrap();
        std::fs::write(
            h.join("config.toml"),
            "[source.crates-io]\nreplace-with = \"mirror\"\n[source.mirror]\nregistry = \"sparse+https://mirror.example/index/\"\n\
             [registries.mine]\nindex = \"https://mine.example/git/index\"\ntoken = \"secret-token\"\n\
             [http]\nproxy = \"http://user:secret-password@proxy:3128\"\n[env]\nAPI_KEY = \"secret-key\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(h.join("bin")).unwrap();
        std::fs::write(h.join("bin/vivarium"), "the host").unwrap();
        let tree = tempfile::tempdir().unwrap();
        let src = "registry+https://github.com/rust-lang/crates.io-index";
        std::fs::write(
            tree.path().join("Cargo.lock"),
            format!(
                "version = 4\n[[package]]\nname = \"itoa\"\nversion = \"1.0.0\"\nsource = \"{src}\"\n\
                 [[package]]\nname = \"../../../bin/vivarium\"\nversion = \"x\"\nsource = \"{src}\"\n\
                 [[package]]\nname = \"sbx\"\nversion = \"0.1.0\"\n"
            ),
        )
        .unwrap();
        let exposed = super::locked_sources(tree.path(), h);
        let registry = h.join("registry");
        assert_eq!(
            exposed,
            [
                registry.join("cache").join(reg).join("itoa-1.0.0.crate"),
                registry.join("index"),
                registry.join("src").join(reg).join("itoa-1.0.0"),
            ]
        );

        let config = super::source_config(h);
        assert_eq!(
            config,
            [
                "registries.mine.index=\"https://mine.example/git/index\"",
                "source.crates-io.replace-with=\"mirror\"",
                "source.mirror.registry=\"sparse+https://mirror.example/index/\"",
            ]
        );
        let Ok(found) = RustToolchain::find() else { return };
        let tc = RustToolchain { cargo_home: h.to_path_buf(), source_config: config, ..found.clone() };
        let target = tempfile::tempdir().unwrap();
        let target = target.path().join("guests");
        let cargo_home = super::sandbox_cargo_home(&target, &tc).unwrap();
        assert_eq!(cargo_home, target.with_file_name("guests.cargo-home"));
        std::fs::write(cargo_home.join("config.toml"), "[env]\nAPI_KEY = \"planted\"\n").unwrap();
        let cargo_home = super::sandbox_cargo_home(&target, &tc).unwrap();
        let mut entries: Vec<String> =
            std::fs::read_dir(&cargo_home).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        entries.sort();
        assert_eq!(entries, ["registry"], "only the registry's link");
        assert_eq!(std::fs::read_link(cargo_home.join("registry")).unwrap(), registry);
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }
}
