//! Opening what the user points at — a variant directory, a `.wasm`
//! component or a `.wat` text — computing its grant, and running it with
//! every step audited: the library side of `vivarium run`, `inspect` and
//! `build`.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::audit::{AuditLog, EventKind};
use crate::bindings::{Answer, ImproveContext, Task};
use crate::build;
use crate::caps::{resolve, resolve_bare, Manifest, Overrides, Policy, Resolution};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::inspect::{self, Inspection};
use crate::runtime::{CallOptions, CallOutcome, CallReport, Loaded, Prepared, Runtime, RuntimeConfig};

/// The manifest file of a variant directory.
pub use crate::caps::manifest::MANIFEST_FILE as MANIFEST;

pub use crate::build::dispatch::{
    build_dir, build_variant, build_variant_within, check_variant_dir, guest_target_dir, Built, BUILD_TIMEOUT,
};
pub use crate::build::rust::path_dependencies;

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
