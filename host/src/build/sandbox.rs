//! The build sandbox: the child process that compiles untrusted source sees
//! only its tree and the toolchain, cannot reach the network, and is bounded
//! in memory, CPU time and file size.
//!
//! A child variant's source is model-written and hostile. Compiling it runs
//! its code before any wasm sandbox exists: `include_str!`/`include_bytes!`
//! read files at compile time, a `build.rs` is a native program, a proc
//! macro runs inside rustc. The builder therefore runs cargo inside a
//! [`Sandbox`], applied to the child process between `fork` and `exec`:
//!
//! * **Files** — a [Landlock](https://docs.kernel.org/userspace-api/landlock.html)
//!   ruleset (the `landlock` crate, best-effort over the ABI the kernel has):
//!   read (and execute) only the variant's tree, the toolchain and the extra
//!   paths the caller names ([`Sandbox::with_read_only`]: the guest SDK, the
//!   WIT); write only the target directory (which holds a private `TMPDIR`)
//!   and `/dev/null`. For Rust ([`Sandbox::for_build`]) the toolchain is the
//!   active toolchain's sysroot (`rustc --print sysroot`, whose `cargo` and
//!   `rustc` the builder runs directly, never rustup's proxies), the C
//!   compiler driver that links build scripts and proc macros (the exact
//!   file, its own directories), and of the cargo home only the registry's
//!   index and the sources and archives of the packages the tree's
//!   `Cargo.lock` pins. Every sandbox may also read what a program needs to
//!   start ([`system_runtime`]): the dynamic loader's shared-library
//!   directories and cache, the locale data, `/dev/urandom`. Nothing else:
//!   not a `bin` directory (`/usr/bin`, `/usr/local/bin`, `$CARGO_HOME/bin`,
//!   where an installed `vivarium`, holding the held-out tasks and graders,
//!   would live), not `$CARGO_HOME/config.toml` or its credentials, not
//!   rustup's own files, not `/etc/passwd`, not `$HOME`, not
//!   `$VIVARIUM_HOME`, not `/proc`. Cargo runs with a cargo home of its own
//!   ([`super::rust::sandbox_cargo_home`]) that holds no configuration, from
//!   `/` (so no `.cargo/config.toml` above the target directory is read).
//!   Landlock is chosen over bubblewrap because it needs no extra program,
//!   no privilege and no user namespace, and it composes with the builder's
//!   own process handling (timeout, process-group kill, output capture).
//! * **Network** — a fresh network namespace (no interface but a down
//!   loopback) when the kernel lets us make one (`unshare(CLONE_NEWNET)`, or
//!   with a user namespace when unprivileged), and Landlock's TCP bind and
//!   connect denial (ABI ≥ 4) on top; cargo itself runs `--offline`.
//!   Landlock also scopes abstract UNIX sockets and signals (ABI ≥ 6) and
//!   pathname UNIX sockets (ABI ≥ 9) to the sandbox.
//! * **Environment** — cleared: the child gets `PATH` (the system's `bin`
//!   directories; what they hold stays unreadable unless a rule names it),
//!   `HOME` (the private temp directory), `TMPDIR`, `LANG`/`LC_ALL` (when
//!   set) and what the caller set on the command (the Rust builder sets
//!   `CARGO_HOME`, `RUSTC` and a `PATH` starting with the sysroot's `bin`),
//!   nothing inherited — so `env!("SOME_API_KEY")` cannot bake a host secret
//!   into a component.
//! * **Resources** — `RLIMIT_AS` (memory, per process), `RLIMIT_CPU` (CPU
//!   seconds, per process), `RLIMIT_FSIZE` (largest file written),
//!   `RLIMIT_CORE = 0`; `PR_SET_NO_NEW_PRIVS`. The wall-clock bound and the
//!   kill of the whole process group are the builder's
//!   ([`super::rust`]).
//!
//! When the kernel cannot confine files (no Landlock) or the network
//! (neither a network namespace nor Landlock ABI ≥ 4), [`Sandbox::apply`]
//! refuses with [`Error::Refused`] (`what = ["build-sandbox"]`) instead of
//! building untrusted code unconfined — unless the operator set
//! `VIVARIUM_ALLOW_UNSANDBOXED_BUILD=1` (or called
//! [`Sandbox::allow_unsandboxed`]), in which case whatever the kernel offers
//! is applied and the [`SandboxReport`] says what was missing.
//!
//! Everything that can fail or allocate (opening the paths, creating the
//! ruleset, probing namespaces) happens in the parent; the code that runs
//! in the child after `fork` only makes system calls.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};

/// The environment variable that lets builds run without a complete sandbox
/// (`1`): for kernels without Landlock, never for untrusted source.
pub const ALLOW_UNSANDBOXED_ENV: &str = "VIVARIUM_ALLOW_UNSANDBOXED_BUILD";

/// The `what` of the [`Error::Refused`] returned when the sandbox is not
/// available or a build reached outside it.
pub const REFUSED_SANDBOX: &str = "build-sandbox";

/// What every sandboxed program needs from the system to start, computed
/// once: the dynamic loader's cache and configuration, the shared-library
/// directories (`/usr/lib/<multiarch>`, `/usr/lib64`; `/usr/lib` itself only
/// on systems without either), the locale data and `/dev/urandom`.
///
/// Never a `bin` directory: a program a sandbox runs is named file by file
/// ([`program_file`]), so an installed `vivarium` (which holds the held-out
/// tasks and the graders) or `rustup` next to it stays unreadable.
pub fn system_runtime() -> &'static [PathBuf] {
    static PATHS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    PATHS.get_or_init(|| {
        let mut out: Vec<PathBuf> = Vec::new();
        let mut push = |p: PathBuf| {
            if let Ok(p) = p.canonicalize() {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        };
        for p in ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/usr/lib/locale", "/dev/urandom"] {
            push(PathBuf::from(p));
        }
        let multiarch = multiarch_triple();
        let libraries: Vec<PathBuf> =
            [format!("/lib/{multiarch}"), format!("/usr/lib/{multiarch}"), "/lib64".into(), "/usr/lib64".into()]
                .into_iter()
                .filter_map(|p| Path::new(&p).canonicalize().ok())
                .filter(|p| p.is_dir())
                .collect();
        // Without a multiarch or lib64 directory holding libc (Arch, Alpine),
        // the shared libraries live in /usr/lib itself.
        let has_libc = libraries.iter().any(|d| {
            std::fs::read_dir(d)
                .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libc.")))
                .unwrap_or(false)
        });
        for p in libraries {
            push(p);
        }
        if !has_libc {
            push(PathBuf::from("/lib"));
            push(PathBuf::from("/usr/lib"));
        }
        out
    })
}

/// The Debian multiarch triple of this machine (`x86_64-linux-gnu`).
fn multiarch_triple() -> String {
    match std::env::consts::ARCH {
        "x86" => "i386-linux-gnu".into(),
        "arm" => "arm-linux-gnueabihf".into(),
        "powerpc64" => "powerpc64le-linux-gnu".into(),
        arch => format!("{arch}-linux-gnu"),
    }
}

/// The directories a sandbox's `PATH` lists. Listing a directory exposes
/// nothing: a program in it runs only when a rule names its file.
pub const SANDBOX_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// The file a program runs from: `name` looked up in [`SANDBOX_PATH`] (or
/// taken as is when it is a path), with every symbolic link resolved, so
/// that a rule can name that one file and not the directory around it.
/// `None` when there is no such program.
pub fn program_file(name: impl AsRef<Path>) -> Option<PathBuf> {
    let name = name.as_ref();
    if name.components().count() > 1 || name.is_absolute() {
        return name.canonicalize().ok().filter(|p| p.is_file());
    }
    SANDBOX_PATH.iter().map(|d| Path::new(d).join(name)).find_map(|p| p.canonicalize().ok().filter(|p| p.is_file()))
}

/// Whether exposing `dir` whole would expose more than a toolchain: the
/// root, a `bin` directory, a prefix such as `/usr` or `/usr/local`, a home
/// (`$HOME`, `$CARGO_HOME`, `$RUSTUP_HOME`). A builder that finds its
/// toolchain in such a place exposes the toolchain's own files instead.
pub fn is_broad(dir: &Path) -> bool {
    const BROAD: &[&str] = &[
        "/",
        "/bin",
        "/sbin",
        "/lib",
        "/lib64",
        "/etc",
        "/home",
        "/root",
        "/opt",
        "/usr",
        "/usr/bin",
        "/usr/sbin",
        "/usr/lib",
        "/usr/lib64",
        "/usr/libexec",
        "/usr/share",
        "/usr/include",
        "/usr/local",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/usr/local/lib",
        "/usr/local/share",
        "/usr/local/include",
    ];
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if BROAD.iter().any(|b| dir == Path::new(b) || Path::new(b).canonicalize().is_ok_and(|c| c == dir)) {
        return true;
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    let homes = [
        home.clone(),
        std::env::var_os("CARGO_HOME").map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(".cargo"))),
        std::env::var_os("RUSTUP_HOME").map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(".rustup"))),
    ];
    homes.into_iter().flatten().any(|h| {
        let h = h.canonicalize().unwrap_or(h);
        dir == h || dir == h.join("bin")
    })
}

/// A set of restrictions for a child process: which paths it may read,
/// which it may write, how much memory and CPU time each of its processes
/// may use, and whether it may use the network.
///
/// Build one with [`Sandbox::for_build`] (the Rust builder's view) or
/// [`Sandbox::new`] (nothing allowed), add paths with
/// [`with_read_only`](Sandbox::with_read_only) /
/// [`with_read_write`](Sandbox::with_read_write), and
/// [`apply`](Sandbox::apply) it to a [`Command`] before spawning it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Paths (files or directories, with everything beneath) the process may
    /// read and execute.
    read_only: Vec<PathBuf>,
    /// Paths the process may read, write, create in and remove from.
    read_write: Vec<PathBuf>,
    /// `RLIMIT_AS` of every process, in bytes.
    memory: u64,
    /// `RLIMIT_CPU` of every process.
    cpu_time: Duration,
    /// Whether the network stays reachable (`false`: no network).
    network: bool,
    /// `RLIMIT_FSIZE`: the largest file a process may write, in bytes.
    max_file_size: u64,
    /// Where [`apply`](Sandbox::apply) makes the private `TMPDIR` (and
    /// `HOME`); must lie under a read-write path. `None`: no `TMPDIR`.
    tmp_root: Option<PathBuf>,
    /// Run with what the kernel offers even when it cannot confine files or
    /// the network.
    allow_unsandboxed: bool,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// The default `RLIMIT_AS` (8 GiB): rustc, LLVM and the linker reserve
    /// far more address space than they touch, so the bound is generous; it
    /// stops a runaway proc macro or build script, not a big crate.
    pub const DEFAULT_MEMORY: u64 = 8 << 30;
    /// The default `RLIMIT_CPU` per process (10 minutes).
    pub const DEFAULT_CPU_TIME: Duration = Duration::from_secs(600);
    /// The default `RLIMIT_FSIZE` (1 GiB): no rlib or component comes near.
    pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 30;

    /// A sandbox that allows nothing: no path, no network, default limits.
    /// Unsandboxed runs are allowed only when
    /// `VIVARIUM_ALLOW_UNSANDBOXED_BUILD=1`.
    pub fn new() -> Self {
        Sandbox {
            read_only: Vec::new(),
            read_write: Vec::new(),
            memory: Self::DEFAULT_MEMORY,
            cpu_time: Self::DEFAULT_CPU_TIME,
            network: false,
            max_file_size: Self::DEFAULT_MAX_FILE_SIZE,
            tmp_root: None,
            allow_unsandboxed: std::env::var_os(ALLOW_UNSANDBOXED_ENV).is_some_and(|v| v == "1"),
        }
    }

    /// The sandbox a Rust build of the variant tree `tree` into `target_dir`
    /// runs in.
    ///
    /// Read-only: `tree`; the active Rust toolchain
    /// ([`RustToolchain::read_only`](super::rust::RustToolchain)): its
    /// sysroot and the C compiler driver that links build scripts and proc
    /// macros; of the cargo home, the registry's index and the source and
    /// archive of each package `tree/Cargo.lock` pins
    /// ([`super::rust::locked_sources`]); and [`system_runtime`].
    /// Read-write: `target_dir` (with a private `TMPDIR` under
    /// `<target_dir>/sandbox-tmp/`) and `/dev/null`. No network.
    ///
    /// Not `$CARGO_HOME/bin` (rustup, an installed `vivarium`),
    /// `$CARGO_HOME/config.toml`, its credentials, rustup's settings or
    /// another toolchain. When no Rust toolchain is found, none is exposed
    /// (the build then fails saying so).
    ///
    /// Path dependencies outside the tree (the guest SDK, the WIT, the
    /// workspace manifest the SDK inherits its version from) are not
    /// included: add them with [`with_read_only`](Sandbox::with_read_only).
    pub fn for_build(tree: &Path, target_dir: &Path) -> Self {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let target_dir = abs(target_dir);
        let mut sandbox =
            Sandbox::new().with_read_only(abs(tree)).with_read_write(&target_dir).with_read_write("/dev/null");
        sandbox.tmp_root = Some(target_dir.join("sandbox-tmp"));
        match super::rust::RustToolchain::find() {
            Ok(tc) => {
                for p in tc.read_only.iter().cloned().chain(super::rust::locked_sources(&abs(tree), &tc.cargo_home)) {
                    sandbox = sandbox.with_read_only(p);
                }
            }
            Err(e) => tracing::warn!(error = %e, "no Rust toolchain to expose to the build sandbox"),
        }
        for system in system_runtime() {
            sandbox = sandbox.with_read_only(system);
        }
        sandbox
    }

    /// Allow reading (and executing) `path` and everything beneath it.
    pub fn with_read_only(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        if !self.read_only.contains(&path) {
            self.read_only.push(path);
        }
        self
    }

    /// Allow reading, writing, creating and removing `path` and everything
    /// beneath it.
    pub fn with_read_write(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        if !self.read_write.contains(&path) {
            self.read_write.push(path);
        }
        self
    }

    /// Set `RLIMIT_AS` (bytes of address space per process).
    pub fn with_memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }

    /// Set `RLIMIT_CPU` (CPU time per process, whole seconds, at least 1).
    pub fn with_cpu_time(mut self, cpu_time: Duration) -> Self {
        self.cpu_time = cpu_time;
        self
    }

    /// Set `RLIMIT_FSIZE` (the largest file a process may write, in bytes).
    pub fn with_max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = bytes;
        self
    }

    /// Leave the network reachable (`true`) or cut it off (`false`, the
    /// default).
    pub fn with_network(mut self, network: bool) -> Self {
        self.network = network;
        self
    }

    /// Make the private `TMPDIR` (and `HOME`) under `dir`, which must lie
    /// under a read-write path.
    pub fn with_tmp_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.tmp_root = Some(dir.into());
        self
    }

    /// Run with whatever confinement the kernel offers, even none (`true`),
    /// or refuse when files or the network cannot be confined (`false`, the
    /// default unless `VIVARIUM_ALLOW_UNSANDBOXED_BUILD=1`).
    pub fn allow_unsandboxed(mut self, allow: bool) -> Self {
        self.allow_unsandboxed = allow;
        self
    }

    /// The read-only paths.
    pub fn read_only(&self) -> &[PathBuf] {
        &self.read_only
    }

    /// The read-write paths.
    pub fn read_write(&self) -> &[PathBuf] {
        &self.read_write
    }

    /// `RLIMIT_AS`, in bytes.
    pub fn memory(&self) -> u64 {
        self.memory
    }

    /// `RLIMIT_CPU`.
    pub fn cpu_time(&self) -> Duration {
        self.cpu_time
    }

    /// Whether the network stays reachable.
    pub fn network(&self) -> bool {
        self.network
    }

    /// `RLIMIT_FSIZE`, in bytes.
    pub fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    /// Prepare `cmd` to run inside this sandbox: clear its environment (what
    /// was set explicitly on `cmd` is kept), make the private `TMPDIR`, and
    /// install the restrictions that the child applies to itself before
    /// `exec`.
    ///
    /// Keep the returned [`Applied`] until the process has ended: dropping
    /// it removes the private temporary directory.
    ///
    /// Errors: [`Error::Refused`] (`what = ["build-sandbox"]`) when the
    /// kernel cannot confine files or the network and unsandboxed runs are
    /// not allowed; [`Error::Io`] when the temporary directory cannot be
    /// made or a path cannot be opened; [`Error::Internal`] when the
    /// Landlock ruleset cannot be built.
    pub fn apply(&self, cmd: &mut Command) -> Result<Applied> {
        self.apply_with(cmd, support())
    }

    /// [`apply`](Sandbox::apply) with the kernel's `support` given.
    fn apply_with(&self, cmd: &mut Command, support: Support) -> Result<Applied> {
        let plan = imp::plan(self, support)?;
        let report = plan.report.clone();
        let missing = report.missing();
        if !missing.is_empty() {
            if !self.allow_unsandboxed {
                return Err(Error::Refused {
                    what: vec![REFUSED_SANDBOX.to_string()],
                    detail: format!(
                        "the build sandbox is not available on this system ({}; Landlock ABI \
                         {}), so untrusted source is not built. Run on a Linux kernel with \
                         Landlock enabled (5.13 or later, `lsm=landlock,…`) and network \
                         namespaces or Landlock ABI 4 (6.7 or later), or set {}=1 to build \
                         without a complete sandbox (only for source you trust)",
                        missing.join("; "),
                        report.landlock_abi,
                        ALLOW_UNSANDBOXED_ENV,
                    ),
                });
            }
            tracing::warn!(
                missing = %missing.join("; "),
                "building without a complete sandbox ({ALLOW_UNSANDBOXED_ENV}=1)"
            );
        }

        let tmp_dir = match &self.tmp_root {
            Some(root) => Some(make_private_dir(root)?),
            None => None,
        };
        scrub_env(cmd, tmp_dir.as_deref());
        imp::install(cmd, plan);
        Ok(Applied { report, tmp_dir })
    }
}

/// What [`Sandbox::apply`] set up for one process. Dropping it removes the
/// private temporary directory.
#[derive(Debug)]
pub struct Applied {
    /// What the sandbox enforces.
    pub report: SandboxReport,
    tmp_dir: Option<PathBuf>,
}

impl Applied {
    /// The private `TMPDIR` (also the process's `HOME`), if any.
    pub fn tmp_dir(&self) -> Option<&Path> {
        self.tmp_dir.as_deref()
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        if let Some(dir) = &self.tmp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// How the network is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkIsolation {
    /// Not cut off: the sandbox allows the network.
    Allowed,
    /// A new network namespace (privileged `unshare(CLONE_NEWNET)`), plus
    /// Landlock TCP denial where the ABI has it.
    Namespace,
    /// A new user and network namespace (unprivileged), plus Landlock TCP
    /// denial where the ABI has it.
    UserNamespace,
    /// Landlock only: TCP bind and connect denied (ABI ≥ 4); UDP (ABI ≥ 10
    /// only) may stay open. `cargo --offline` still fetches nothing.
    LandlockTcp,
    /// Nothing: neither a namespace nor Landlock ABI ≥ 4.
    None,
}

/// What a [`Sandbox`] enforces on this system.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SandboxReport {
    /// The kernel's Landlock ABI version; 0 when Landlock is unavailable.
    pub landlock_abi: u32,
    /// Whether file access is confined (Landlock is enforced).
    pub filesystem: bool,
    /// How the network is cut off.
    pub network: NetworkIsolation,
}

impl SandboxReport {
    /// What is missing for a complete sandbox, in words (empty: nothing).
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if !self.filesystem {
            missing.push("Landlock is not available, so file access cannot be confined".into());
        }
        if self.network == NetworkIsolation::None {
            missing.push(
                "neither a network namespace nor Landlock TCP rules (ABI 4) are available, so \
                 the network cannot be cut off"
                    .into(),
            );
        }
        missing
    }

    /// Whether files and (unless allowed) the network are confined.
    pub fn is_complete(&self) -> bool {
        self.missing().is_empty()
    }
}

/// What the kernel offers for sandboxing, probed once per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// The Landlock ABI version (0: unavailable).
    pub landlock_abi: u32,
    /// How a new network namespace can be made, if at all.
    pub net_namespace: Option<NetNamespace>,
}

/// How a new network namespace is made in the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetNamespace {
    /// `unshare(CLONE_NEWNET)`: needs `CAP_SYS_ADMIN`.
    Plain,
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNET)`: unprivileged, where user
    /// namespaces are allowed.
    WithUser,
}

/// What the kernel offers for sandboxing (probed on first use, then cached):
/// the Landlock ABI version and whether the child can get a network
/// namespace (probed by starting `true` in one).
pub fn support() -> Support {
    static SUPPORT: std::sync::OnceLock<Support> = std::sync::OnceLock::new();
    *SUPPORT.get_or_init(|| Support { landlock_abi: imp::landlock_abi(), net_namespace: imp::probe_net_namespace() })
}

/// The names of the caller's environment variables passed into the
/// sandbox unchanged (when set).
const PASSED_ENV: &[&str] = &["LANG", "LC_ALL"];

/// Clear `cmd`'s inherited environment: keep what was set on `cmd`
/// explicitly, and give it `PATH` ([`SANDBOX_PATH`]), `HOME`/`TMPDIR` (the
/// private directory) and [`PASSED_ENV`]. Never the caller's `PATH` (it may
/// hold `.` or directories outside the sandbox), `CARGO_HOME` or
/// `RUSTUP_HOME`: the Rust builder sets the cargo home it wants.
fn scrub_env(cmd: &mut Command, tmp_dir: Option<&Path>) {
    let explicit: Vec<(OsString, Option<OsString>)> =
        cmd.get_envs().map(|(k, v)| (k.to_os_string(), v.map(OsStr::to_os_string))).collect();
    cmd.env_clear();
    if let Ok(joined) = std::env::join_paths(SANDBOX_PATH) {
        cmd.env("PATH", joined);
    }
    if let Some(tmp) = tmp_dir {
        cmd.env("TMPDIR", tmp).env("HOME", tmp);
    }
    for var in PASSED_ENV {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    for (key, value) in explicit {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
}

/// Make a fresh directory `<root>/<pid>-<n>` (mode 0700 on Unix).
fn make_private_dir(root: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(root)
        .map_err(|e| Error::io(format!("creating the sandbox's temp root {}", root.display()), e))?;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("{}-{n}", std::process::id()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        match builder.create(&dir) {
            Ok(()) => return Ok(dir),
            // Left behind by an earlier process with the same pid.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("creating the sandbox's temp directory {}", dir.display()), e)),
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    //! The Linux implementation: Landlock, namespaces, rlimits.

    use std::io;
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::{Command, Stdio};

    use landlock::{
        Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
        RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
    };

    use super::{NetNamespace, NetworkIsolation, Sandbox, SandboxReport, Support};
    use crate::error::{Error, Result};

    /// The newest Landlock ABI this code asks for; the ruleset is
    /// best-effort, so a kernel with an older ABI enforces what it has.
    const REQUESTED_ABI: ABI = ABI::V10;

    /// Everything the child needs, computed in the parent.
    pub(super) struct Plan {
        pub(super) report: SandboxReport,
        ruleset: Option<RulesetCreated>,
        net_namespace: Option<NetNamespace>,
        memory: u64,
        cpu_seconds: u64,
        max_file_size: u64,
    }

    /// The kernel's Landlock ABI version (0 when Landlock is not built in
    /// or not enabled).
    pub(super) fn landlock_abi() -> u32 {
        const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
        // SAFETY: the documented version query: no ruleset, size 0.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        if v < 0 {
            0
        } else {
            v as u32
        }
    }

    /// Whether a child can get a new network namespace, and how: start
    /// `true` in one, privileged first, then with a user namespace.
    pub(super) fn probe_net_namespace() -> Option<NetNamespace> {
        let program = ["/usr/bin/true", "/bin/true"].into_iter().find(|p| Path::new(p).exists())?;
        for mode in [NetNamespace::Plain, NetNamespace::WithUser] {
            let mut cmd = Command::new(program);
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            // SAFETY: the closure only makes the unshare system call.
            unsafe {
                cmd.pre_exec(move || unshare(mode));
            }
            if cmd.status().is_ok_and(|s| s.success()) {
                return Some(mode);
            }
        }
        None
    }

    fn unshare(mode: NetNamespace) -> io::Result<()> {
        let flags = match mode {
            NetNamespace::Plain => libc::CLONE_NEWNET,
            NetNamespace::WithUser => libc::CLONE_NEWUSER | libc::CLONE_NEWNET,
        };
        // SAFETY: a plain system call.
        if unsafe { libc::unshare(flags) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Build the ruleset and decide the network isolation, in the parent.
    pub(super) fn plan(sandbox: &Sandbox, support: Support) -> Result<Plan> {
        let ruleset = if support.landlock_abi >= 1 { Some(ruleset(sandbox, support.landlock_abi)?) } else { None };
        let filesystem = ruleset.is_some();
        let tcp_denied = filesystem && !sandbox.network && support.landlock_abi >= 4;
        let net_namespace = if sandbox.network { None } else { support.net_namespace };
        let network = match (sandbox.network, net_namespace) {
            (true, _) => NetworkIsolation::Allowed,
            (false, Some(NetNamespace::Plain)) => NetworkIsolation::Namespace,
            (false, Some(NetNamespace::WithUser)) => NetworkIsolation::UserNamespace,
            (false, None) if tcp_denied => NetworkIsolation::LandlockTcp,
            (false, None) => NetworkIsolation::None,
        };
        Ok(Plan {
            report: SandboxReport { landlock_abi: support.landlock_abi, filesystem, network },
            ruleset,
            net_namespace,
            memory: sandbox.memory,
            cpu_seconds: sandbox.cpu_time.as_secs().max(1),
            max_file_size: sandbox.max_file_size,
        })
    }

    /// The Landlock ruleset of `sandbox`, created (its rules added) but not
    /// yet enforced.
    fn ruleset(sandbox: &Sandbox, abi: u32) -> Result<RulesetCreated> {
        let internal = |e: landlock::RulesetError| {
            Error::Internal(anyhow::anyhow!("building the Landlock ruleset of the build sandbox: {e}"))
        };
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(REQUESTED_ABI))
            .map_err(internal)?;
        if !sandbox.network && abi >= 4 {
            ruleset = ruleset.handle_access(AccessNet::from_all(REQUESTED_ABI)).map_err(internal)?;
        }
        if abi >= 6 {
            ruleset = ruleset.scope(Scope::from_all(REQUESTED_ABI)).map_err(internal)?;
        }
        let mut created = ruleset.create().map_err(internal)?;
        let rules = sandbox
            .read_only
            .iter()
            .map(|p| (p, AccessFs::from_read(REQUESTED_ABI)))
            .chain(sandbox.read_write.iter().map(|p| (p, AccessFs::from_all(REQUESTED_ABI))));
        for (path, access) in rules {
            let fd = match PathFd::new(path) {
                Ok(fd) => fd,
                // A path this system lacks (/lib64, a cargo home without
                // `git/`) needs no rule.
                Err(_) if std::fs::symlink_metadata(path).is_err() => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("opening {} for the build sandbox", path.display()),
                        io::Error::other(e.to_string()),
                    ))
                }
            };
            created = created.add_rule(PathBeneath::new(fd, access)).map_err(internal)?;
        }
        // The kernel enforces nothing when the ruleset has no descriptor
        // (Landlock disabled after all).
        let has_fd = created.try_clone().map(|c| Option::<std::os::fd::OwnedFd>::from(c).is_some()).unwrap_or(false);
        if !has_fd {
            return Err(Error::Internal(anyhow::anyhow!(
                "the kernel reports Landlock ABI {abi} but created no ruleset"
            )));
        }
        Ok(created)
    }

    /// Install the child-side half: rlimits, no-new-privileges, the network
    /// namespace, the Landlock domain.
    pub(super) fn install(cmd: &mut Command, plan: Plan) {
        let Plan { mut ruleset, net_namespace, memory, cpu_seconds, max_file_size, .. } = plan;
        // SAFETY: runs between fork and exec; it only makes system calls
        // (getrlimit, setrlimit, prctl, unshare, the Landlock calls), takes
        // no lock and does not allocate: errors are `from_raw_os_error` /
        // `last_os_error`.
        unsafe {
            cmd.pre_exec(move || {
                set_limit(libc::RLIMIT_AS, memory, memory)?;
                // SIGXCPU at the soft limit, SIGKILL a little later.
                set_limit(libc::RLIMIT_CPU, cpu_seconds, cpu_seconds.saturating_add(5))?;
                set_limit(libc::RLIMIT_FSIZE, max_file_size, max_file_size)?;
                set_limit(libc::RLIMIT_CORE, 0, 0)?;
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(mode) = net_namespace {
                    unshare(mode)?;
                }
                if let Some(ruleset) = ruleset.take() {
                    match ruleset.restrict_self() {
                        Ok(status) if status.ruleset != RulesetStatus::NotEnforced => {}
                        Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOSYS)),
                        Err(_) => return Err(io::Error::last_os_error()),
                    }
                }
                Ok(())
            });
        }
    }

    /// Lower `resource` to `soft`/`hard`, never above the current hard
    /// limit (raising it needs privilege).
    fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
        let mut current = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: plain system calls on a stack value.
        unsafe {
            if libc::getrlimit(resource, &mut current) != 0 {
                return Err(io::Error::last_os_error());
            }
            let hard = hard.min(current.rlim_max);
            let limit = libc::rlimit { rlim_cur: soft.min(hard), rlim_max: hard };
            if libc::setrlimit(resource, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    //! Other systems: no confinement at all (no Landlock, no namespaces, no
    //! rlimits); [`Sandbox::apply`](super::Sandbox::apply) refuses unless
    //! unsandboxed builds are allowed.

    use std::process::Command;

    use super::{NetworkIsolation, Sandbox, SandboxReport, Support};
    use crate::error::Result;

    pub(super) struct Plan {
        pub(super) report: SandboxReport,
    }

    pub(super) fn landlock_abi() -> u32 {
        0
    }

    pub(super) fn probe_net_namespace() -> Option<super::NetNamespace> {
        None
    }

    pub(super) fn plan(sandbox: &Sandbox, support: Support) -> Result<Plan> {
        let network = if sandbox.network { NetworkIsolation::Allowed } else { NetworkIsolation::None };
        Ok(Plan { report: SandboxReport { landlock_abi: support.landlock_abi, filesystem: false, network } })
    }

    pub(super) fn install(_cmd: &mut Command, _plan: Plan) {}
}

/// How a failed sandboxed build broke the sandbox's rules, from the build
/// tool's output: `Some((what, lines))` with the offending lines quoted.
pub(crate) fn classify_violation(log: &str) -> Option<Violation> {
    const NETWORK: &[&str] = &[
        "Network is unreachable",
        "os error 101",
        "Address family not supported",
        "os error 97",
        "Cannot assign requested address",
        "os error 99",
        "failed to lookup address",
        "Temporary failure in name resolution",
    ];
    const FILES: &[&str] = &["Permission denied", "os error 13", "Operation not permitted"];
    let quote = |needles: &[&str]| -> Vec<String> {
        let mut lines: Vec<String> = log
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)))
            .map(|l| l.trim().chars().take(400).collect())
            .collect();
        lines.dedup();
        lines.truncate(10);
        lines
    };
    let network = quote(NETWORK);
    if !network.is_empty() {
        return Some(Violation::Network(network));
    }
    let files = quote(FILES);
    if !files.is_empty() {
        return Some(Violation::OutsidePath(files));
    }
    None
}

/// A rule of the sandbox a build broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Violation {
    /// It reached for a file (or socket) outside the sandbox; the lines of
    /// the build's output that say so.
    OutsidePath(Vec<String>),
    /// It reached for the network.
    Network(Vec<String>),
}

#[cfg(test)]
pub(crate) mod tests {
    //! Unit tests run `/bin/sh` inside the sandbox; the build tests build
    //! throwaway copies of `variants/echo` (renamed, so they never touch the
    //! real echo's artifacts) into the shared `target/guests`, so only the
    //! copy's own crate is compiled.

    use super::*;
    use crate::build::{build_rust_sandboxed, RustTarget};
    use std::io::Read as _;

    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
    }

    fn enforcing() -> bool {
        let s = support();
        s.landlock_abi >= 1
    }

    /// `sandbox` plus the shell and the few programs these tests run: the
    /// build sandbox itself exposes no `bin` directory.
    fn with_shell(sandbox: Sandbox) -> Sandbox {
        ["sh", "bash", "cat", "ls", "head", "env", "touch", "true"]
            .iter()
            .filter_map(program_file)
            .fold(sandbox, |s, p| s.with_read_only(p))
    }

    /// Run `script` with `sh -c` inside `sandbox` (plus [`with_shell`]):
    /// (success, stdout, stderr).
    fn sh(sandbox: &Sandbox, script: &str) -> (bool, String, String) {
        let sandbox = with_shell(sandbox.clone());
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        let applied = sandbox.apply(&mut cmd).expect("applying the sandbox");
        let out = cmd.output().expect("running sh in the sandbox");
        drop(applied);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A tree with one file and a separate target directory.
    fn tree_and_target() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let target = dir.path().join("target");
        std::fs::create_dir_all(tree.join("src")).unwrap();
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(tree.join("src/lib.rs"), "pub const X: u32 = 7;\n").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "outside").unwrap();
        (dir, tree, target)
    }

    #[test]
    fn reports_what_this_kernel_supports() {
        let s = support();
        eprintln!("sandbox support: {s:?}");
        let (_dir, tree, target) = tree_and_target();
        let mut cmd = Command::new("/bin/true");
        match with_shell(Sandbox::for_build(&tree, &target)).apply(&mut cmd) {
            Ok(applied) => {
                eprintln!("report: {:?}", applied.report);
                assert!(applied.report.filesystem);
                assert_ne!(applied.report.network, NetworkIsolation::None);
                assert_ne!(applied.report.network, NetworkIsolation::Allowed);
                assert!(cmd.status().unwrap().success());
            }
            Err(Error::Refused { what, detail }) => {
                // A kernel without Landlock: the refusal must say so.
                assert_eq!(what, [REFUSED_SANDBOX]);
                assert!(detail.contains(ALLOW_UNSANDBOXED_ENV), "{detail}");
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn refuses_without_kernel_support_unless_allowed() {
        let none = Support { landlock_abi: 0, net_namespace: None };
        let sandbox = Sandbox::new().allow_unsandboxed(false);
        let mut cmd = Command::new("/bin/true");
        match sandbox.apply_with(&mut cmd, none) {
            Err(Error::Refused { what, detail }) => {
                assert_eq!(what, [REFUSED_SANDBOX]);
                assert!(detail.contains("Landlock is not available"), "{detail}");
                assert!(detail.contains("network cannot be cut off"), "{detail}");
                assert!(detail.contains(ALLOW_UNSANDBOXED_ENV), "{detail}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let applied = sandbox.allow_unsandboxed(true).apply_with(&mut cmd, none).unwrap();
        assert!(!applied.report.filesystem);
        assert_eq!(applied.report.network, NetworkIsolation::None);
        assert!(cmd.status().unwrap().success());
        // Landlock without network namespaces still cuts TCP off from ABI 4.
        if enforcing() {
            let tcp_only = Support { landlock_abi: support().landlock_abi, net_namespace: None };
            let mut cmd = Command::new("/bin/true");
            let applied = Sandbox::new().apply_with(&mut cmd, tcp_only);
            if tcp_only.landlock_abi >= 4 {
                assert_eq!(applied.unwrap().report.network, NetworkIsolation::LandlockTcp);
            } else {
                assert!(matches!(applied, Err(Error::Refused { .. })));
            }
        }
    }

    #[test]
    fn shell_reads_its_tree_but_not_etc_passwd() {
        if !enforcing() {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        let (dir, tree, target) = tree_and_target();
        let sandbox = Sandbox::for_build(&tree, &target);
        let (ok, out, err) = sh(&sandbox, &format!("cat {}/src/lib.rs", tree.display()));
        assert!(ok, "reading the tree failed: {err}");
        assert_eq!(out, "pub const X: u32 = 7;\n");

        let (ok, out, err) = sh(&sandbox, "cat /etc/passwd");
        assert!(!ok, "/etc/passwd was readable: {out}");
        assert!(out.is_empty());
        assert!(err.contains("Permission denied"), "{err}");

        // Neither a sibling of the tree nor $HOME.
        let (ok, _, err) = sh(&sandbox, &format!("cat {}/outside.txt", dir.path().display()));
        assert!(!ok && err.contains("Permission denied"), "{err}");
        if let Some(home) = std::env::var_os("HOME") {
            let (ok, _, _) = sh(&sandbox, &format!("ls {}", Path::new(&home).display()));
            assert!(!ok, "$HOME was listable");
        }
        let (ok, _, _) = sh(&sandbox, "cat /proc/1/environ /proc/self/environ");
        assert!(!ok, "/proc was readable");
    }

    #[test]
    fn the_build_sandbox_exposes_no_bin_directory_installed_host_or_cargo_configuration() {
        let (_dir, tree, target) = tree_and_target();
        let sandbox = Sandbox::for_build(&tree, &target);
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        let cargo_home = std::env::var_os("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".cargo"));
        let rustup_home = std::env::var_os("RUSTUP_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".rustup"));
        // Whether they exist or not: no rule may cover them.
        let never = [
            PathBuf::from("/usr/local/bin/vivarium"),
            PathBuf::from("/usr/bin/vivarium"),
            cargo_home.join("bin/vivarium"),
            cargo_home.join("bin/rustup"),
            cargo_home.join("config.toml"),
            cargo_home.join("credentials.toml"),
            cargo_home.join("registry/src/index.crates.io-0000000000000000/vivarium-0.1.0/src/tasks/arith.rs"),
            rustup_home.join("settings.toml"),
            home.join(".bashrc"),
            PathBuf::from("/usr/include/stdio.h"),
            PathBuf::from("/etc/passwd"),
        ];
        for path in &never {
            let canonical_dir = path.parent().and_then(|d| d.canonicalize().ok());
            for rule in sandbox.read_only().iter().chain(sandbox.read_write()) {
                let covers = |p: &Path| p.starts_with(rule) || rule.canonicalize().is_ok_and(|r| p.starts_with(r));
                assert!(
                    !covers(path) && !canonical_dir.as_ref().is_some_and(|d| covers(&d.join("x"))),
                    "the rule {} exposes {}",
                    rule.display(),
                    path.display()
                );
            }
        }
        // And by experiment, for the ones this machine has.
        let (_installed, _fake_home, files) = crate::build::support::tests::host_files();
        std::fs::write(tree.join("notes.txt"), "notes").unwrap();
        let cat = program_file("cat").unwrap();
        crate::build::support::tests::assert_unreadable(
            &sandbox.clone().with_read_only(&cat),
            &tree.join("notes.txt"),
            &files,
            |f| {
                let mut cmd = Command::new(&cat);
                cmd.arg(f);
                cmd
            },
        );
    }

    #[test]
    fn shell_writes_only_the_target_dir() {
        if !enforcing() {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        let (_dir, tree, target) = tree_and_target();
        let sandbox = Sandbox::for_build(&tree, &target);
        let (ok, _, err) = sh(&sandbox, &format!("echo x > {}/src/lib.rs", tree.display()));
        assert!(!ok, "the tree was writable");
        assert!(err.contains("Permission denied"), "{err}");
        assert_eq!(std::fs::read_to_string(tree.join("src/lib.rs")).unwrap(), "pub const X: u32 = 7;\n");
        let (ok, _, err) = sh(&sandbox, &format!("touch {}/new", tree.display()));
        assert!(!ok && !tree.join("new").exists(), "{err}");

        let (ok, _, err) = sh(
            &sandbox,
            &format!("echo x > {t}/out && echo y > \"$TMPDIR/f\" && echo z > /dev/null", t = target.display()),
        );
        assert!(ok, "writing the target dir failed: {err}");
        assert_eq!(std::fs::read_to_string(target.join("out")).unwrap(), "x\n");
        let (ok, _, _) = sh(&sandbox, "echo x > /tmp/vivarium-sandbox-escape");
        assert!(!ok, "/tmp was writable");
    }

    #[test]
    fn environment_is_scrubbed_and_tmpdir_private() {
        let (_dir, tree, target) = tree_and_target();
        let sandbox = with_shell(Sandbox::for_build(&tree, &target)).allow_unsandboxed(true);
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg("env").env("EXPLICIT_VAR", "kept");
        let applied = sandbox.apply(&mut cmd).unwrap();
        let tmp = applied.tmp_dir().unwrap().to_path_buf();
        assert!(tmp.starts_with(target.join("sandbox-tmp")), "{}", tmp.display());
        assert!(tmp.is_dir());
        let out = cmd.output().unwrap();
        drop(applied);
        assert!(!tmp.exists(), "the private TMPDIR was not removed");
        let env = String::from_utf8_lossy(&out.stdout).into_owned();
        let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(env.contains("EXPLICIT_VAR=kept"), "{env}");
        assert!(env.contains(&format!("TMPDIR={}", tmp.display())), "{env}");
        assert!(env.contains(&format!("HOME={}", tmp.display())), "{env}");
        let allowed = ["PATH", "HOME", "TMPDIR", "EXPLICIT_VAR", "PWD", "OLDPWD", "SHLVL", "_"];
        for name in names {
            assert!(allowed.contains(&name) || PASSED_ENV.contains(&name), "{name} leaked into the sandbox:\n{env}");
        }
    }

    #[test]
    fn limits_are_set() {
        let (_dir, tree, target) = tree_and_target();
        let sandbox = Sandbox::for_build(&tree, &target)
            .allow_unsandboxed(true)
            .with_memory(3 << 30)
            .with_cpu_time(Duration::from_secs(42))
            .with_max_file_size(1 << 20);
        let (ok, out, err) = sh(&sandbox, "ulimit -v; ulimit -t; ulimit -f; ulimit -c");
        assert!(ok, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, [&*((3u64 << 30) / 1024).to_string(), "42", "2048", "0"], "{out}");
        // The file-size limit bites: a 2 MiB write fails.
        let (ok, _, _) = sh(&sandbox, &format!("head -c 2097152 /dev/urandom > {}/big", target.display()));
        assert!(!ok, "a file over RLIMIT_FSIZE was written");
        assert!(std::fs::metadata(target.join("big")).map(|m| m.len()).unwrap_or(0) <= 1 << 20);
    }

    #[test]
    fn shell_cannot_connect_out() {
        if !enforcing() || !Path::new("/bin/bash").exists() {
            eprintln!("skipped: no Landlock or no bash");
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_dir, tree, target) = tree_and_target();
        let sandbox = with_shell(Sandbox::for_build(&tree, &target));
        let mut cmd = Command::new("/bin/bash");
        cmd.arg("-c").arg(format!("echo hi > /dev/tcp/127.0.0.1/{port}"));
        let _applied = sandbox.apply(&mut cmd).unwrap();
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "the connection was made");
        assert!(listener.accept().is_err(), "the listener got a connection");
        // Outside the sandbox the same command connects.
        let ok =
            Command::new("/bin/bash").arg("-c").arg(format!("echo hi > /dev/tcp/127.0.0.1/{port}")).status().unwrap();
        assert!(ok.success());
    }

    /// The unprivileged path (a user namespace around the network
    /// namespace) confines the same way and still writes the target dir.
    #[test]
    fn user_namespace_mode_works() {
        if !enforcing() || support().net_namespace.is_none() {
            eprintln!("skipped: no Landlock or no namespaces");
            return;
        }
        let with_user = Support { landlock_abi: support().landlock_abi, net_namespace: Some(NetNamespace::WithUser) };
        let (_dir, tree, target) = tree_and_target();
        let sandbox = with_shell(Sandbox::for_build(&tree, &target));
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(format!(
            "cat {t}/src/lib.rs && echo ok > {o}/out && ! cat /etc/passwd 2>/dev/null",
            t = tree.display(),
            o = target.display()
        ));
        let applied = match sandbox.apply_with(&mut cmd, with_user) {
            Ok(applied) => applied,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(applied.report.network, NetworkIsolation::UserNamespace);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read_to_string(target.join("out")).unwrap(), "ok\n");
    }

    #[test]
    fn missing_paths_are_skipped() {
        if !enforcing() {
            return;
        }
        let (_dir, tree, target) = tree_and_target();
        let sandbox = Sandbox::for_build(&tree, &target).with_read_only("/no/such/vivarium/path");
        let (ok, _, err) = sh(&sandbox, "true");
        assert!(ok, "{err}");
    }

    #[test]
    fn classifies_violations() {
        let log = "error: couldn't read `/etc/passwd`: Permission denied (os error 13)\n";
        assert!(matches!(classify_violation(log), Some(Violation::OutsidePath(l)) if l.len() == 1));
        let log =
            "thread 'main' panicked: Os { code: 101, kind: NetworkUnreachable, message: \"Network is unreachable\" }";
        assert!(matches!(classify_violation(log), Some(Violation::Network(_))));
        assert_eq!(classify_violation("error[E0425]: cannot find value `x`"), None);
    }

    // ---- builds of throwaway variants ---------------------------------

    /// A copy of `variants/echo` named `name` under a tempdir, its SDK path
    /// made absolute, its lock file renamed along.
    pub(crate) fn echo_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
        let root = workspace_root();
        let src = root.join("variants/echo");
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join(name);
        std::fs::create_dir_all(tree.join("src")).unwrap();
        let sdk = root.join("guest-sdk");
        let manifest = std::fs::read_to_string(src.join("Cargo.toml"))
            .unwrap()
            .replace("name = \"echo\"", &format!("name = \"{name}\""))
            .replace("path = \"../../guest-sdk\"", &format!("path = {:?}", sdk.display().to_string()));
        assert!(manifest.contains(&format!("name = \"{name}\"")));
        std::fs::write(tree.join("Cargo.toml"), manifest).unwrap();
        let lock = std::fs::read_to_string(src.join("Cargo.lock"))
            .unwrap()
            .replace("name = \"echo\"", &format!("name = \"{name}\""));
        std::fs::write(tree.join("Cargo.lock"), lock).unwrap();
        std::fs::copy(src.join("src/lib.rs"), tree.join("src/lib.rs")).unwrap();
        std::fs::copy(src.join("variant.toml"), tree.join("variant.toml")).unwrap();
        (dir, tree)
    }

    /// The sandbox for a copy: its tree, the guest SDK, the WIT and the
    /// workspace manifest the SDK inherits its version from.
    fn build_sandbox(tree: &Path, target: &Path) -> Sandbox {
        let root = workspace_root();
        Sandbox::for_build(tree, target)
            .with_read_only(root.join("guest-sdk"))
            .with_read_only(root.join("wit"))
            .with_read_only(root.join("Cargo.toml"))
    }

    fn build(tree: &Path) -> Result<crate::build::BuildOutput> {
        let target = crate::build::default_guest_target_dir(&workspace_root());
        build_rust_sandboxed(tree, &target, RustTarget::WasiP2, Duration::from_secs(900), &build_sandbox(tree, &target))
    }

    fn assert_refused(result: Result<crate::build::BuildOutput>, expected_what: &str, needle: &str) -> String {
        match result {
            Err(Error::Refused { what, detail }) => {
                eprintln!("refused ({what:?}): {detail}");
                assert_eq!(what, [expected_what], "{detail}");
                assert!(detail.contains(needle), "expected {needle:?} in:\n{detail}");
                detail
            }
            Err(other) => panic!("expected a {expected_what} refusal, got: {other}"),
            Ok(out) => panic!("expected a {expected_what} refusal, but it built:\n{}", out.log),
        }
    }

    #[test]
    fn variant_builds_in_the_sandbox() {
        if !enforcing() {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        let (_dir, tree) = echo_copy("sbx-echo-ok");
        let out = build(&tree).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&out.component[..4], b"\0asm");
        eprintln!("sandboxed build: {:?}\n{}", out.duration, out.log);

        // The same tree built outside the sandbox and in it share the
        // dependencies' artifacts: after an unsandboxed build, a sandboxed
        // rebuild after a one-line edit compiles the variant's crate only.
        let target = crate::build::default_guest_target_dir(&workspace_root());
        let lib = tree.join("src/lib.rs");
        let text = std::fs::read_to_string(&lib).unwrap();
        std::fs::write(&lib, text.replace("const GENERATION: u32 = 0;", "const GENERATION: u32 = 1;")).unwrap();
        let plain = crate::build::build_rust(&tree, &target, RustTarget::WasiP2, Duration::from_secs(900))
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("unsandboxed rebuild after a one-line edit: {:?}", plain.duration);
        std::fs::write(&lib, text.replace("const GENERATION: u32 = 0;", "const GENERATION: u32 = 2;")).unwrap();
        let again = build(&tree).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("sandboxed rebuild after a one-line edit: {:?}\n{}", again.duration, again.log);
        assert_ne!(again.component, out.component);
        let compiled: Vec<&str> = again.log.lines().filter(|l| l.trim_start().starts_with("Compiling")).collect();
        assert_eq!(compiled.len(), 1, "a warm rebuild recompiled more than the variant: {compiled:?}");
        assert!(compiled[0].contains("sbx-echo-ok"), "{compiled:?}");
    }

    #[test]
    fn include_str_of_etc_passwd_is_refused() {
        if !enforcing() {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        let (_dir, tree) = echo_copy("sbx-echo-passwd");
        let lib = tree.join("src/lib.rs");
        let mut text = std::fs::read_to_string(&lib).unwrap();
        text.push_str("\npub const LEAK: &str = include_str!(\"/etc/passwd\");\n");
        std::fs::write(&lib, text).unwrap();
        let detail = assert_refused(build(&tree), REFUSED_SANDBOX, "outside the build sandbox");
        assert!(detail.contains("/etc/passwd"), "{detail}");
        assert!(detail.contains("Permission denied"), "{detail}");
        // No byte of the file in the message.
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        if let Some(first) = passwd.lines().next().filter(|l| !l.is_empty()) {
            assert!(!detail.contains(first), "the file leaked into the error");
        }
    }

    #[test]
    fn build_script_reading_a_host_file_is_refused() {
        if !enforcing() {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        let (_dir, tree) = echo_copy("sbx-echo-buildrs-file");
        std::fs::write(
            tree.join("build.rs"),
            "fn main() {\n    let s = std::fs::read_to_string(\"/etc/passwd\").expect(\"reading /etc/passwd\");\n    println!(\"cargo:warning=read {} bytes\", s.len());\n}\n",
        )
        .unwrap();
        let detail = assert_refused(build(&tree), REFUSED_SANDBOX, "outside the build sandbox");
        assert!(detail.contains("Permission denied"), "{detail}");
    }

    /// How the workbench holds a try to `workbench.build_seconds`: the
    /// toolchain is stopped at the timeout, not waited for.
    #[test]
    fn a_build_script_that_never_ends_is_stopped_at_the_timeout() {
        let (_dir, tree) = echo_copy("sbx-echo-buildrs-forever");
        std::fs::write(
            tree.join("build.rs"),
            "fn main() {\n    loop {\n        std::thread::sleep(std::time::Duration::from_millis(100));\n    }\n}\n",
        )
        .unwrap();
        let manifest = crate::caps::Manifest::load(tree.join("variant.toml")).unwrap();
        let target = crate::build::default_guest_target_dir(&workspace_root());
        let started = std::time::Instant::now();
        let result = crate::build::dispatch::build_variant_within(&tree, &manifest, &target, Duration::from_secs(4));
        let took = started.elapsed();
        match result {
            Err(Error::Invalid(m)) => assert!(m.contains("took longer than 4 s and was stopped"), "{m}"),
            Err(other) => panic!("expected the build to be stopped at 4 s, got: {other}"),
            Ok(out) => panic!("a never-ending build script finished:\n{}", out.log),
        }
        // Stopped, not waited for (the default timeout is ten minutes).
        assert!(took < Duration::from_secs(120), "stopped only after {took:?}");
    }

    #[test]
    fn build_script_opening_a_connection_is_refused() {
        if !enforcing() {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_dir, tree) = echo_copy("sbx-echo-buildrs-net");
        std::fs::write(
            tree.join("build.rs"),
            format!(
                "use std::io::Write;\nfn main() {{\n    let mut s = std::net::TcpStream::connect(\"127.0.0.1:{port}\").expect(\"connecting\");\n    s.write_all(b\"exfiltrated\").unwrap();\n}}\n"
            ),
        )
        .unwrap();
        let result = build(&tree);
        let detail = match result {
            Err(Error::Refused { what, detail }) => {
                eprintln!("refused ({what:?}): {detail}");
                assert_eq!(what, [REFUSED_SANDBOX], "{detail}");
                detail
            }
            Err(other) => panic!("expected a sandbox refusal, got: {other}"),
            Ok(out) => panic!("the build script connected out:\n{}", out.log),
        };
        assert!(detail.contains("network") || detail.contains("outside the build sandbox"), "{detail}");
        let mut got = Vec::new();
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.read_to_end(&mut got);
            panic!("the listener got a connection ({} bytes)", got.len());
        }
    }

    #[test]
    fn new_dependency_is_refused() {
        if !enforcing() {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        // One already in the lock file as a transitive dependency, and one
        // that exists nowhere.
        for dep in ["anyhow = \"1\"", "vivarium-no-such-crate-xyz = \"1\""] {
            let (_dir, tree) = echo_copy("sbx-echo-newdep");
            let manifest_path = tree.join("Cargo.toml");
            let manifest = std::fs::read_to_string(&manifest_path)
                .unwrap()
                .replace("[dependencies]\n", &format!("[dependencies]\n{dep}\n"));
            std::fs::write(&manifest_path, manifest).unwrap();
            let lock_before = std::fs::read(tree.join("Cargo.lock")).unwrap();
            let detail = assert_refused(
                build(&tree),
                crate::build::rust::REFUSED_NEW_DEPENDENCY,
                "new dependencies are refused in self-modification",
            );
            assert!(detail.contains("the child adds a dependency"), "{detail}");
            assert_eq!(std::fs::read(tree.join("Cargo.lock")).unwrap(), lock_before);
        }
    }

    #[test]
    fn a_tree_without_lock_file_or_inside_the_target_is_invalid() {
        let (_dir, tree) = echo_copy("sbx-echo-nolock");
        std::fs::remove_file(tree.join("Cargo.lock")).unwrap();
        let target = crate::build::default_guest_target_dir(&workspace_root());
        let sandbox = build_sandbox(&tree, &target).allow_unsandboxed(true);
        let r = build_rust_sandboxed(&tree, &target, RustTarget::WasiP2, Duration::from_secs(60), &sandbox);
        assert!(matches!(&r, Err(Error::Invalid(m)) if m.contains("no Cargo.lock")), "{r:?}");

        let target = tempfile::tempdir().unwrap();
        let inside = target.path().join("variant");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
        let sandbox = Sandbox::for_build(&inside, target.path()).allow_unsandboxed(true);
        let r = build_rust_sandboxed(&inside, target.path(), RustTarget::WasiP2, Duration::from_secs(60), &sandbox);
        assert!(matches!(&r, Err(Error::Invalid(m)) if m.contains("inside the guest target")), "{r:?}");
    }
}
