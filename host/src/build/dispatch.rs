//! The builder a variant's manifest names, and `vivarium build`: the build
//! half of opening a variant directory (`crate::variant` keeps the opening,
//! granting and calling, and re-exports these).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{BuildOutput, RustTarget};
use crate::caps::manifest::MANIFEST_FILE as MANIFEST;
use crate::caps::{Language, Manifest};
use crate::error::{Error, Result};
use crate::home::Home;

/// Longest a variant build may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Where guest builds go: `$VIVARIUM_GUEST_TARGET_DIR`, else
/// `<home>/target/guests`.
pub fn guest_target_dir(home: &Home) -> PathBuf {
    match std::env::var_os("VIVARIUM_GUEST_TARGET_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => super::default_guest_target_dir(home.root()),
    }
}

/// Build the variant in `dir` with the builder its manifest names, within
/// [`BUILD_TIMEOUT`].
pub fn build_variant(dir: &Path, manifest: &Manifest, guest_target_dir: &Path) -> Result<BuildOutput> {
    build_variant_within(dir, manifest, guest_target_dir, BUILD_TIMEOUT)
}

/// [`build_variant`], the toolchain stopped (its whole process group
/// killed) once `timeout` has passed: how the workbench holds a try's
/// build to `workbench.build_seconds`. A `.wat` tree is assembled in the
/// host, bounded by its size, and has no timeout.
pub fn build_variant_within(
    dir: &Path,
    manifest: &Manifest,
    guest_target_dir: &Path,
    timeout: Duration,
) -> Result<BuildOutput> {
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
            super::rust::build_in_sandbox(dir, guest_target_dir, target, timeout)
        }
        Language::Wat => super::wat::build_wat(dir),
        Language::Python => match manifest.variant.builder.as_deref() {
            None | Some("interpreter") => super::interpreter::build_python_interpreted(dir, guest_target_dir, timeout),
            Some("componentize") => super::build_python(dir, guest_target_dir, timeout),
            Some(other) => Err(Error::invalid(format!(
                "{}: builder `{other}` is not a Python builder; use `interpreter` (the default: the \
                 variant runs on the shared Python interpreter) or `componentize` (a component of its own, \
                 for native extensions)",
                dir.join(MANIFEST).display()
            ))),
        },
        Language::Javascript => match manifest.variant.builder.as_deref() {
            None | Some("interpreter") => {
                super::interpreter::build_javascript_interpreted(dir, guest_target_dir, timeout)
            }
            Some("componentize") => super::build_javascript(dir, guest_target_dir, timeout),
            Some(other) => Err(Error::invalid(format!(
                "{}: builder `{other}` is not a JavaScript builder; use `interpreter` (the default: the \
                 variant runs on the shared JavaScript interpreter) or `componentize` (a ComponentizeJS \
                 component of its own)",
                dir.join(MANIFEST).display()
            ))),
        },
        Language::C => super::build_c(dir, guest_target_dir, timeout),
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
