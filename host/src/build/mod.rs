//! Turning a variant's source tree into a component: one builder per language.
//!
//! A builder takes a variant directory and returns the component's bytes
//! ([`BuildOutput`]). Builders are synchronous and bounded in time: a build
//! that runs past its timeout is killed (with every process it started) and
//! reported as an error: [`build_rust`], [`interpreter::build_python_interpreted`]
//! (a Python variant as data for the shared interpreter, the default),
//! [`build_python`] (componentize-py, `builder = "componentize"`),
//! [`build_javascript`] (ComponentizeJS), [`build_c`] (clang + wasi-libc +
//! wit-component) and [`wat::build_wat`] (in process).
//!
//! Untrusted source — a child a meta-agent wrote — is built with
//! [`build_rust_sandboxed`] inside a [`Sandbox`] ([`sandbox`]): Landlock
//! confines the build's files to the variant's tree, the toolchain and the
//! target directory, the network is cut off, cargo runs `--offline
//! --locked`, the environment is scrubbed and every process is bounded in
//! memory and CPU time.
//!
//! Builds write into a target directory of their own (see
//! [`default_guest_target_dir`]), never into the host's `target/`, so that a
//! guest build neither blocks on nor invalidates the host's build.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod c;
pub mod dispatch;
pub mod interpreter;
pub mod javascript;
pub mod python;
pub mod rust;
pub mod sandbox;
pub mod support;
pub mod wat;

pub use c::build_c;
pub use javascript::build_javascript;
pub use python::build_python;
pub use rust::{build_rust, build_rust_sandboxed, RustTarget};
pub use sandbox::Sandbox;

/// What a successful build produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The component's bytes (always a component, never a core module).
    pub component: Vec<u8>,
    /// Where the component was written.
    pub path: PathBuf,
    /// The build tool's output (stderr then stdout), its tail when long.
    pub log: String,
    /// How long the build took, toolchain checks included.
    pub duration: Duration,
}

/// The target directory guest builds use under `root` (a workspace root or
/// `$VIVARIUM_HOME`): `<root>/target/guests`.
///
/// All variants share it, so dependencies (`wit-bindgen`, the guest SDK) are
/// compiled once and a rebuild after a one-line edit only recompiles the
/// variant's own crate.
pub fn default_guest_target_dir(workspace_root_or_home: &Path) -> PathBuf {
    workspace_root_or_home.join("target").join("guests")
}
