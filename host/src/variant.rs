//! Opening what the user points at — a variant directory, a `.wasm`
//! component or a `.wat` text — computing its grant, and running it with
//! every step audited: the library side of `vivarium run`, `inspect` and
//! `build`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::{AuditLog, EventKind};
use crate::bindings::{Answer, ImproveContext, Task};
use crate::build::{self, RustTarget};
use crate::caps::{resolve, resolve_bare, Language, Manifest, Overrides, Policy, Resolution};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::inspect::{self, Inspection};
use crate::runtime::{CallOptions, CallOutcome, CallReport, Loaded, Prepared, Runtime, RuntimeConfig};

/// The manifest file of a variant directory.
pub use crate::caps::manifest::MANIFEST_FILE as MANIFEST;

/// Longest a variant build may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// A runtime, the state directory and its audit log: what one CLI
/// invocation (or one embedding) works with.
pub struct Session {
    /// The state directory.
    pub home: Home,
    /// The runtime.
    pub runtime: Runtime,
    /// The audit log under the home.
    pub audit: AuditLog,
    /// Where guest crates are built (shared, so rebuilds are warm).
    pub guest_target_dir: PathBuf,
}

/// A component resolved from a user path, with its grant.
pub struct Opened {
    /// The compiled component.
    pub loaded: Loaded,
    /// The grant with where each line came from and what was denied.
    pub resolution: Resolution,
    /// The manifest, for a variant directory.
    pub manifest: Option<Manifest>,
}

impl Session {
    /// A session on `$VIVARIUM_HOME`.
    pub async fn open_default() -> Result<Self> {
        Self::open(Home::from_env())
    }

    /// A session on `home`, with the compile cache and audit log under it.
    pub fn open(home: Home) -> Result<Self> {
        home.ensure(&home.cache_dir())?;
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(home.cache_dir()),
            // Out of process in the `vivarium` binary (see `runtime::compile`).
            compiler: crate::runtime::compile::Compiler::for_this_process(),
            ..RuntimeConfig::default()
        })?
        .with_services(crate::services::HostServices::for_home(&home)?);
        let audit = AuditLog::open(&home.audit_dir())?;
        let guest_target_dir = guest_target_dir(&home);
        crate::interp::register_store(&build::interpreter::store_dir(&guest_target_dir));
        Ok(Self { home, runtime, audit, guest_target_dir })
    }

    /// Read (building a variant directory first), compile and compute the
    /// grant for `target`; the grant and any denial are audited.
    pub async fn open_target(&self, target: &Path, policy: Option<&Path>, overrides: &Overrides) -> Result<Opened> {
        let policy = match policy {
            Some(p) => Policy::load(p)?,
            None => Policy::default(),
        };
        let (bytes, manifest) = if target.is_dir() {
            let manifest_path = target.join(MANIFEST);
            if !manifest_path.is_file() {
                return Err(Error::invalid(format!(
                    "{} is not a variant directory (no {MANIFEST}); `vivarium init` makes one",
                    target.display()
                )));
            }
            let manifest = Manifest::load(manifest_path)?;
            let (dir, m, t) = (target.to_path_buf(), manifest.clone(), self.guest_target_dir.clone());
            let built = tokio::task::spawn_blocking(move || build_variant(&dir, &m, &t))
                .await
                .map_err(|e| Error::Internal(anyhow::anyhow!("build thread failed: {e}")))??;
            (built.component, Some(manifest))
        } else {
            let bytes = std::fs::read(target).map_err(|e| {
                Error::invalid(format!(
                    "cannot read {}: {e}; give a variant directory, a .wasm or a .wat file",
                    target.display()
                ))
            })?;
            (componentize_if_core(bytes)?, None)
        };
        let loaded = self.runtime.load(&bytes).await.map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{}: {m}", target.display())),
            other => other,
        })?;
        let resolution = match &manifest {
            Some(m) => resolve(m, &policy, overrides),
            None => resolve_bare(&policy, overrides),
        };
        self.audit_grant(&loaded, &resolution, manifest.as_ref())?;
        Ok(Opened { loaded, resolution, manifest })
    }

    fn audit_grant(&self, loaded: &Loaded, r: &Resolution, manifest: Option<&Manifest>) -> Result<()> {
        let v = Some(loaded.sha256.as_str());
        let mut details = json!({
            "variant": manifest.map(|m| m.variant.name.clone()),
            "digest": r.grant.digest(),
            "grant": r.grant,
            "provenance": r.provenance,
            "command": crate::audit::command(),
        });
        // An interpreted variant runs the shared interpreter on its tree:
        // the record names both.
        if let Some(s) = &loaded.source {
            details["interpreter"] = json!(s.bundle.interpreter);
            details["tree"] = json!(s.bundle.tree_digest());
        }
        self.audit.append(v, EventKind::Grant, details)?;
        for d in &r.denials {
            self.audit.append(v, EventKind::Deny, json!(d))?;
        }
        Ok(())
    }

    /// Open an already built component with its manifest (no rebuild).
    pub async fn open_built(&self, component: &[u8], manifest: &Manifest, policy: Option<&Path>) -> Result<Opened> {
        let policy = match policy {
            Some(p) => Policy::load(p)?,
            None => Policy::default(),
        };
        let loaded = self.runtime.load(component).await?;
        let resolution = resolve(manifest, &policy, &Overrides::default());
        self.audit_grant(&loaded, &resolution, Some(manifest))?;
        Ok(Opened { loaded, resolution, manifest: Some(manifest.clone()) })
    }

    /// Link an opened component against its grant; a refusal is audited.
    pub fn prepare(&self, opened: &Opened) -> Result<Prepared> {
        match self.runtime.prepare(&opened.loaded, opened.resolution.grant.clone()) {
            Ok(p) => Ok(p),
            Err(e) => {
                if let Error::Refused { what, detail } = &e {
                    self.audit.append(
                        Some(&opened.loaded.sha256),
                        EventKind::RefusedImport,
                        json!({ "imports": what, "detail": detail }),
                    )?;
                }
                Err(e)
            }
        }
    }

    /// A fresh scratch area for one call, when the grant has file grants.
    pub fn scratch_for(&self, p: &Prepared) -> Result<Option<PathBuf>> {
        if p.grant.files.is_empty() {
            return Ok(None);
        }
        self.home.ensure(&self.home.scratch_dir())?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", &p.sha256[..12]))
            .tempdir_in(self.home.scratch_dir())
            .map_err(|e| Error::io("cannot create a scratch directory under $VIVARIUM_HOME", e))?;
        Ok(Some(dir.keep()))
    }

    /// Call `solve` and write the call's one `use` record (and a
    /// `limit-hit`/`trap` record when it failed).
    pub async fn solve(&self, p: &Prepared, task: &Task, opts: &CallOptions) -> Result<CallReport<Answer>> {
        let (opts, fresh) = self.with_scratch(p, opts)?;
        let report = self.runtime.solve(p, task, &opts).await?;
        self.finish_call(p, "solve", fresh, &opts, report)
    }

    /// Call `improve`, audited like [`Session::solve`].
    pub async fn improve(
        &self,
        p: &Prepared,
        ctx: &ImproveContext,
        opts: &CallOptions,
    ) -> Result<CallReport<crate::bindings::v0_2::Proposal>> {
        let (opts, fresh) = self.with_scratch(p, opts)?;
        let report = self.runtime.improve(p, ctx, &opts).await?;
        self.finish_call(p, "improve", fresh, &opts, report)
    }

    /// `opts` with a fresh scratch area when the caller gave none; true when
    /// this call made it (and so may discard it).
    fn with_scratch(&self, p: &Prepared, opts: &CallOptions) -> Result<(CallOptions, bool)> {
        let mut opts = opts.clone();
        // A sealed call never writes into an area the caller keeps.
        if opts.sealed {
            opts.scratch = None;
        }
        let fresh = opts.scratch.is_none();
        if fresh {
            opts.scratch = self.scratch_for(p)?;
        }
        Ok((opts, fresh))
    }

    /// After a call: drop its own scratch area if it ended over quota, and
    /// write its audit records.
    fn finish_call<T>(
        &self,
        p: &Prepared,
        func: &str,
        fresh: bool,
        opts: &CallOptions,
        report: CallReport<T>,
    ) -> Result<CallReport<T>> {
        discard_over_quota(fresh, opts, &report);
        if opts.sealed {
            // A held-out call's files die with it (see `CallOptions::sealed`).
            if let Some(dir) = &opts.scratch {
                if let Err(e) = std::fs::remove_dir_all(dir) {
                    tracing::warn!(error = %e, dir = %dir.display(), "cannot remove a sealed call's scratch area");
                }
            }
        }
        self.audit_call(p, func, &report)?;
        Ok(report)
    }

    fn audit_call<T>(&self, p: &Prepared, func: &str, r: &CallReport<T>) -> Result<()> {
        let (outcome, failure) = match &r.outcome {
            CallOutcome::Ok(_) => ("ok", None),
            CallOutcome::GuestError(_) => ("guest-error", None),
            CallOutcome::Failed(f) => ("failed", Some(f)),
        };
        let v = Some(p.sha256.as_str());
        let mut details = json!({
            "call": func,
            "outcome": outcome,
            "grant_digest": p.grant.digest(),
            "usage": r.usage,
            "log": r.log_usage,
        });
        // Service usage (llm requests, memory, archive view) rides in the
        // same one record per call.
        if !r.services.is_empty() {
            details["services"] = json!(r.services);
        }
        self.audit.append(v, EventKind::Use, details)?;
        if let Some(f) = failure {
            let kind = if f.kind == crate::GuestFailureKind::Trap { EventKind::Trap } else { EventKind::LimitHit };
            self.audit.append(v, kind, json!({ "call": func, "reason": f.kind, "detail": f.detail }))?;
        }
        Ok(())
    }

    /// `vivarium run`: open `target` and call `solve` once.
    pub async fn run(
        &self,
        target: &Path,
        policy: Option<&Path>,
        overrides: &Overrides,
        task: Task,
        opts: &CallOptions,
    ) -> Result<CallReport<Answer>> {
        let opened = self.open_target(target, policy, overrides).await?;
        let prepared = self.prepare(&opened)?;
        self.solve(&prepared, &task, opts).await
    }

    /// `vivarium inspect`.
    pub async fn inspect(&self, target: &Path, policy: Option<&Path>) -> Result<Inspection> {
        let opened = self.open_target(target, policy, &Overrides::default()).await?;
        Ok(inspect::inspect(&opened.loaded, &opened.resolution))
    }
}

/// A core module (binary or text) becomes an `agent` component with the
/// embedded WIT; anything else is passed through for the runtime to judge.
fn componentize_if_core(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let text_module = std::str::from_utf8(&bytes)
        .is_ok_and(|s| crate::runtime::wat_text_start(s).trim_start_matches('(').trim_start().starts_with("module"));
    if text_module || wasmparser::Parser::is_core_wasm(&bytes) {
        crate::componentize::from_core_module(&bytes, true)
    } else {
        Ok(bytes)
    }
}

/// Where guest builds go: `$VIVARIUM_GUEST_TARGET_DIR`, else
/// `<home>/target/guests`.
pub fn guest_target_dir(home: &Home) -> PathBuf {
    match std::env::var_os("VIVARIUM_GUEST_TARGET_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => build::default_guest_target_dir(home.root()),
    }
}

/// Build the variant in `dir` with the builder its manifest names.
pub fn build_variant(dir: &Path, manifest: &Manifest, guest_target_dir: &Path) -> Result<build::BuildOutput> {
    match manifest.variant.language {
        Language::Rust => {
            let target = match manifest.variant.target.as_deref() {
                None | Some("wasm32-wasip2") => RustTarget::WasiP2,
                Some("wasm32-unknown-unknown") => RustTarget::Unknown,
                Some(other) => {
                    return Err(Error::invalid(format!(
                        "{}: target `{other}` is not supported; use wasm32-wasip2 or wasm32-unknown-unknown",
                        dir.join(MANIFEST).display()
                    )))
                }
            };
            // Variants share the target directory and may share a crate
            // name (a parent and its child): one build at a time, across
            // processes, so the artifact read is the one just built.
            std::fs::create_dir_all(guest_target_dir)
                .map_err(|e| Error::io(format!("creating {}", guest_target_dir.display()), e))?;
            let lock_path = guest_target_dir.join(".vivarium-build.lock");
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
            lock.lock().map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
            build_rust_in_sandbox(dir, guest_target_dir, target)
        }
        Language::Wat => build::wat::build_wat(dir),
        Language::Python => match manifest.variant.builder.as_deref() {
            None | Some("interpreter") => {
                build::interpreter::build_python_interpreted(dir, guest_target_dir, BUILD_TIMEOUT)
            }
            Some("componentize") => build::build_python(dir, guest_target_dir, BUILD_TIMEOUT),
            Some(other) => Err(Error::invalid(format!(
                "{}: builder `{other}` is not a Python builder; use `interpreter` (the default: the \
                 variant runs on the shared Python interpreter) or `componentize` (a component of its own, \
                 for native extensions)",
                dir.join(MANIFEST).display()
            ))),
        },
        Language::Javascript => match manifest.variant.builder.as_deref() {
            None | Some("interpreter") => {
                build::interpreter::build_javascript_interpreted(dir, guest_target_dir, BUILD_TIMEOUT)
            }
            Some("componentize") => build::build_javascript(dir, guest_target_dir, BUILD_TIMEOUT),
            Some(other) => Err(Error::invalid(format!(
                "{}: builder `{other}` is not a JavaScript builder; use `interpreter` (the default: the \
                 variant runs on the shared JavaScript interpreter) or `componentize` (a ComponentizeJS \
                 component of its own)",
                dir.join(MANIFEST).display()
            ))),
        },
        Language::C => build::build_c(dir, guest_target_dir, BUILD_TIMEOUT),
    }
}

/// Build a Rust variant inside the build sandbox: dependencies pinned by its
/// `Cargo.lock` are fetched first (cargo fetch runs no build code), then
/// cargo runs `--offline --locked` under Landlock with no network, seeing
/// only the tree, the toolchain, the fetched sources and its path
/// dependencies. Every variant build goes through here, so the shared target
/// directory only ever holds sandboxed output.
///
/// A tree whose inputs were built before is not built again: the output is
/// kept by content ([`build::rust::cache_key`]: every file the sandbox lets
/// the build read), as the other languages' builders do, so running or
/// evolving an unchanged variant costs no cargo run.
fn build_rust_in_sandbox(dir: &Path, target_dir: &Path, target: RustTarget) -> Result<build::BuildOutput> {
    let started = std::time::Instant::now();
    let key = build::rust::cache_key(dir, target)?;
    let (out_path, _held) = match build::support::lookup(target_dir, "rust-cache", &key, started)? {
        Ok(hit) => return Ok(hit),
        Err(miss) => miss,
    };
    let built = build_rust_uncached(dir, target_dir, target)?;
    build::support::store(&out_path, built.component, built.log, started, "the Rust build")
}

fn build_rust_uncached(dir: &Path, target_dir: &Path, target: RustTarget) -> Result<build::BuildOutput> {
    fetch_locked(dir)?;
    touch_sources(dir)?;
    let mut sandbox = build::Sandbox::for_build(dir, target_dir);
    for dep in path_dependencies(dir)? {
        // The SDK's own manifest inherits from its workspace and reads the WIT.
        for p in [dep.clone(), dep.join("..").join("wit"), dep.join("..").join("Cargo.toml")] {
            if let Ok(p) = p.canonicalize() {
                sandbox = sandbox.with_read_only(p);
            }
        }
    }
    build::build_rust_sandboxed(dir, target_dir, target, BUILD_TIMEOUT, &sandbox)
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
    for (_, path) in build::support::tree_files(dir)? {
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
    let cargo = &build::rust::RustToolchain::find()?.cargo;
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
            what: vec![build::rust::REFUSED_NEW_DEPENDENCY.into()],
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

/// A built component and where it is.
pub struct Built {
    /// The component bytes.
    pub component: Vec<u8>,
    /// Where the component was written.
    pub path: PathBuf,
    /// sha256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Build time.
    pub duration_ms: u64,
}

/// `vivarium build`: build the variant in `dir`; copy the component to
/// `out` when given.
///
/// Errors: [`Error::Invalid`] (exit 2) when `dir` is not a variant
/// directory (missing, a file, or without a `variant.toml`) or when `out`
/// is a directory; the build's own errors otherwise.
pub fn build_dir(dir: &Path, out: Option<&Path>, home: &Home) -> Result<Built> {
    check_variant_dir(dir)?;
    if let Some(o) = out.filter(|o| o.is_dir()) {
        return Err(Error::invalid(format!(
            "{} is a directory; give -o the path of the component file to write, e.g. {}",
            o.display(),
            o.join("agent.wasm").display()
        )));
    }
    let manifest = Manifest::load(dir.join(MANIFEST))?;
    let b = build_variant(dir, &manifest, &guest_target_dir(home))?;
    let path = match out {
        Some(o) => {
            crate::fsio::write_atomic(o, &b.component)
                .map_err(|e| Error::io(format!("cannot write {}", o.display()), e))?;
            o.to_path_buf()
        }
        // A builder that reads its source in process (wat) writes no
        // component file: write one, so the path printed is the
        // component's, not the source's.
        None if b.path.extension().is_some_and(|e| e != "wasm") => {
            let o = guest_target_dir(home).join("components").join(format!("{}.wasm", manifest.variant.name));
            if let Some(parent) = o.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
            }
            crate::fsio::write_atomic(&o, &b.component)
                .map_err(|e| Error::io(format!("cannot write {}", o.display()), e))?;
            o
        }
        None => b.path.clone(),
    };
    Ok(Built {
        sha256: hex::encode(Sha256::digest(&b.component)),
        bytes: b.component.len() as u64,
        component: b.component,
        path,
        duration_ms: b.duration.as_millis() as u64,
    })
}

/// `dir` is a variant directory: it exists, is a directory and holds a
/// `variant.toml`. Errors: [`Error::Invalid`] saying which and what to do.
pub fn check_variant_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Err(Error::invalid(format!(
            "{} does not exist; give a variant directory (one with a {MANIFEST}), \
             or make one with `vivarium init {} --lang wat`",
            dir.display(),
            dir.display()
        )));
    }
    if !dir.is_dir() {
        return Err(Error::invalid(format!(
            "{} is a file, not a variant directory; give the directory that holds its {MANIFEST}",
            dir.display()
        )));
    }
    if !dir.join(MANIFEST).is_file() {
        return Err(Error::invalid(format!(
            "{} is not a variant directory (no {MANIFEST}); `vivarium init <dir> --lang …` makes one",
            dir.display()
        )));
    }
    Ok(())
}

/// A scratch area this session made for one call that ended over its disk
/// quota is removed, so over-quota bytes do not pile up across calls (a
/// scratch area the caller passed in is the caller's to keep or clear).
fn discard_over_quota<T>(fresh: bool, opts: &CallOptions, report: &CallReport<T>) {
    if let (true, Some(dir), CallOutcome::Failed(f)) = (fresh, &opts.scratch, &report.outcome) {
        if f.kind == crate::GuestFailureKind::DiskQuota {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot remove an over-quota scratch area");
            }
        }
    }
}
