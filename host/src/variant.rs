//! Opening what the user points at — a variant directory, a `.wasm`
//! component or a `.wat` text — computing its grant, and running it with
//! every step audited: the library side of `vivarium run`, `inspect` and
//! `build`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::{AuditLog, EventKind};
use crate::build::{self, RustTarget};
use crate::caps::{resolve, resolve_bare, Language, Manifest, Overrides, Policy, Resolution};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::inspect::{self, Inspection};
use crate::runtime::bindings::{Answer, ImproveContext, Proposal, Task};
use crate::runtime::{CallOptions, CallOutcome, CallReport, Loaded, Prepared, Runtime, RuntimeConfig};

/// The manifest file of a variant directory.
pub const MANIFEST: &str = "variant.toml";

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
        let runtime = Runtime::new(RuntimeConfig { cache_dir: Some(home.cache_dir()), ..RuntimeConfig::default() })?;
        let audit = AuditLog::open(&home.audit_dir())?;
        let guest_target_dir = guest_target_dir(&home);
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
            let manifest = Manifest::load(target.join(MANIFEST))?;
            (build_variant(target, &manifest, &self.guest_target_dir)?.component, Some(manifest))
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
        self.audit.append(
            v,
            EventKind::Grant,
            json!({
                "variant": manifest.map(|m| m.variant.name.clone()),
                "digest": r.grant.digest(),
                "grant": r.grant,
                "provenance": r.provenance,
            }),
        )?;
        for d in &r.denials {
            self.audit.append(v, EventKind::Deny, json!(d))?;
        }
        Ok(())
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
        let mut opts = opts.clone();
        if opts.scratch.is_none() {
            opts.scratch = self.scratch_for(p)?;
        }
        let report = self.runtime.solve(p, task, &opts).await?;
        self.audit_call(p, "solve", &report)?;
        Ok(report)
    }

    /// Call `improve`, audited like [`Session::solve`].
    pub async fn improve(&self, p: &Prepared, ctx: &ImproveContext, opts: &CallOptions) -> Result<CallReport<Proposal>> {
        let mut opts = opts.clone();
        if opts.scratch.is_none() {
            opts.scratch = self.scratch_for(p)?;
        }
        let report = self.runtime.improve(p, ctx, &opts).await?;
        self.audit_call(p, "improve", &report)?;
        Ok(report)
    }

    fn audit_call<T>(&self, p: &Prepared, func: &str, r: &CallReport<T>) -> Result<()> {
        let (outcome, failure) = match &r.outcome {
            CallOutcome::Ok(_) => ("ok", None),
            CallOutcome::GuestError(_) => ("guest-error", None),
            CallOutcome::Failed(f) => ("failed", Some(f)),
        };
        let v = Some(p.sha256.as_str());
        self.audit.append(
            v,
            EventKind::Use,
            json!({
                "call": func,
                "outcome": outcome,
                "grant_digest": p.grant.digest(),
                "usage": r.usage,
                "log": r.log_usage,
            }),
        )?;
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
        .is_ok_and(|s| s.trim_start().trim_start_matches('(').trim_start().starts_with("module"));
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
            build::build_rust(dir, guest_target_dir, target, BUILD_TIMEOUT)
        }
        Language::Wat => build::wat::build_wat(dir),
        other => Err(Error::invalid(format!(
            "{}: no builder for language `{other}` in this host yet; supported: rust, wat",
            dir.join(MANIFEST).display()
        ))),
    }
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
pub fn build_dir(dir: &Path, out: Option<&Path>, home: &Home) -> Result<Built> {
    let manifest = Manifest::load(dir.join(MANIFEST))?;
    let b = build_variant(dir, &manifest, &guest_target_dir(home))?;
    let path = match out {
        Some(o) => {
            crate::runtime::cache::write_atomic(o, &b.component)
                .map_err(|e| Error::io(format!("cannot write {}", o.display()), e))?;
            o.to_path_buf()
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
