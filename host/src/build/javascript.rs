//! The JavaScript builder: ComponentizeJS's `componentize()` API from a Node
//! script, inside the build sandbox.
//!
//! A JavaScript variant keeps its code in `src/` with the agents exported
//! from `src/agent.js` as `taskAgent` (with `solve`) and `metaAgent` (with
//! `improve`); a thrown string is the `err` of the result. The builder
//!
//! 1. writes the host's WIT plus a world `js-agent` that imports `log` and
//!    only the services the manifest requests,
//! 2. runs `node tools/js/componentize.mjs <tree>/src/agent.js <wit> js-agent
//!    out.wasm` inside a [`Sandbox`](super::Sandbox): it may read the tree,
//!    the JS tooling (`tools/js`, installed with `npm ci` from its committed
//!    lock file), Node's own file and OpenSSL's configuration, write only
//!    its staging directory, and has no network.
//!
//! The script calls `componentize({sourcePath, witPath, worldName,
//! disableFeatures})` (not the jco CLI, which breaks in jco 1.35.0 with
//! preview2-shim 0.26.1) with every engine feature disabled — `stdio`,
//! `random`, `clocks`, `http`, `fetch-event` — so the component imports no
//! WASI at all, only `vivarium:agent/log` and the requested services.
//! Variant code logs with `log(level, message)` imported from
//! `vivarium:agent/log@0.1.0`; `Math.random()` is seeded at build time.
//!
//! Building takes 15–60 s (the engine is pre-initialized with Wizer); the
//! output is cached by the digest of the inputs, so an unchanged variant
//! builds in milliseconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::support;
use super::BuildOutput;
use crate::error::Result;

/// The world a JavaScript variant is built against.
pub const WORLD: &str = "js-agent";

/// The module that exports the variant's agents.
pub const APP_MODULE: &str = "src/agent.js";

/// `RLIMIT_AS` of Node and Wizer: V8 and wasmtime reserve large virtual
/// regions (a V8 wasm memory cage alone is 10+ GiB), so this bounds a
/// runaway, not a build's real footprint.
pub(super) const MEMORY: u64 = 256 << 30;

/// Where the JS tooling lives: `$VIVARIUM_JS_TOOLS`, else `tools/js` of the
/// repository this host was built from.
pub fn tools_dir() -> Option<PathBuf> {
    match std::env::var_os("VIVARIUM_JS_TOOLS") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => support::repo_root().map(|r| r.join("tools").join("js")),
    }
}

#[derive(Debug, Clone)]
pub(super) struct Toolchain {
    pub(super) node: PathBuf,
    pub(super) tools: PathBuf,
    /// Node's version and the lock file's digest.
    pub(super) version: String,
}

pub(super) fn toolchain() -> Result<&'static Toolchain> {
    static FOUND: OnceLock<std::result::Result<Toolchain, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let node = std::env::var_os("VIVARIUM_NODE")
                .map(PathBuf::from)
                .or_else(|| ["/usr/bin/node", "/usr/local/bin/node"].iter().map(PathBuf::from).find(|p| p.is_file()))
                .ok_or_else(|| "no node in /usr/bin or /usr/local/bin (set VIVARIUM_NODE)".to_string())?;
            let node = node.canonicalize().unwrap_or(node);
            let node_version = support::probe(
                {
                    let mut c = Command::new(&node);
                    c.arg("--version");
                    c
                },
                Duration::from_secs(30),
            )?;
            let tools = tools_dir().ok_or("the repository's tools/js is gone (set VIVARIUM_JS_TOOLS)")?;
            let tools = tools.canonicalize().map_err(|e| format!("{}: {e}", tools.display()))?;
            let pkg = tools.join("node_modules/@bytecodealliance/componentize-js/package.json");
            let pkg_text = std::fs::read_to_string(&pkg).map_err(|e| {
                format!("{} is missing ({e}); `npm ci` in {} installs it", pkg.display(), tools.display())
            })?;
            let lock = std::fs::read(tools.join("package-lock.json")).unwrap_or_default();
            use sha2::Digest as _;
            let version = format!(
                "node {} componentize-js {} lock {}",
                node_version.trim(),
                hex::encode(sha2::Sha256::digest(pkg_text.as_bytes())),
                hex::encode(sha2::Sha256::digest(&lock)),
            );
            if !tools.join("componentize.mjs").is_file() {
                return Err(format!("{} has no componentize.mjs", tools.display()));
            }
            Ok(Toolchain { node, tools, version })
        })
        .as_ref()
        .map_err(|e| support::missing_toolchain("JavaScript", "Node with ComponentizeJS (tools/js)", e))
}

/// Build the JavaScript variant in `dir` into a component under
/// `target_dir/javascript/`, within `timeout`. Always sandboxed.
///
/// Errors: [`crate::Error::Invalid`] when ComponentizeJS fails (a syntax
/// error, a missing export, an import of a service the manifest does not
/// request), when the toolchain is missing (naming `scripts/setup.sh`) or on
/// a timeout; [`crate::Error::Refused`] when the sandbox cannot be set up or
/// the build reached outside it.
pub fn build_javascript(dir: &Path, target_dir: &Path, timeout: Duration) -> Result<BuildOutput> {
    let started = Instant::now();
    let deadline = started + timeout;
    let dir = &support::absolute(dir)?;
    support::check_tree_outside(dir, target_dir)?;
    let sources = support::source_files(dir)?;
    if !sources.iter().any(|(rel, _)| rel == APP_MODULE) {
        return Err(crate::Error::invalid(format!(
            "{} has no {APP_MODULE}: a JavaScript variant exports `taskAgent` and `metaAgent` from it",
            dir.display()
        )));
    }
    let services = support::requested_services(dir)?;
    let world = support::build_world(WORLD, &services);
    let tc = toolchain()?;
    let key = cache_key(dir, tc, &world)?;
    let (out_path, _held) = match support::lookup(target_dir, "javascript", &key, started)? {
        Ok(hit) => return Ok(hit),
        Err(miss) => miss,
    };

    let staging = support::staging_dir(target_dir, "javascript")?;
    let wit = staging.path().join("wit");
    support::write_wit(&wit, Some(&world))?;
    let out = staging.path().join("out.wasm");
    let source =
        std::path::absolute(dir.join(APP_MODULE)).map_err(|e| crate::Error::io("resolving the variant's source", e))?;
    let mut cmd = Command::new(&tc.node);
    cmd.arg(tc.tools.join("componentize.mjs")).arg(&source).arg(&wit).arg(WORLD).arg(&out).current_dir(staging.path());
    let sandbox = support::toolchain_sandbox(dir, staging.path(), &sandbox_paths(tc), MEMORY);
    let log = support::run_in_sandbox(cmd, &sandbox, deadline, timeout, "ComponentizeJS", dir)?;
    let bytes = std::fs::read(&out).map_err(|e| crate::Error::io(format!("reading {}", out.display()), e))?;
    support::store(&out_path, bytes, log, started, "ComponentizeJS")
}

/// What Node may read in the sandbox: the JS tooling, Node's own file and
/// OpenSSL's configuration (read at startup; public, no secrets).
pub(super) fn sandbox_paths(tc: &Toolchain) -> [PathBuf; 3] {
    [tc.tools.clone(), tc.node.clone(), PathBuf::from("/etc/ssl/openssl.cnf")]
}

/// The cache key of a JavaScript build of `dir` against `world`: every file
/// of the tree (whatever the toolchain may read there, dot-directories
/// included), Node's and ComponentizeJS's versions, the build script, the
/// world and the WIT.
fn cache_key(dir: &Path, tc: &Toolchain, world: &str) -> Result<String> {
    let script = std::fs::read(tc.tools.join("componentize.mjs")).unwrap_or_default();
    support::cache_key(
        &[
            ("builder", b"javascript-2"),
            ("toolchain", tc.version.as_bytes()),
            ("script", &script),
            ("world", world.as_bytes()),
            ("wit-types", crate::wit::FILES[0].1.as_bytes()),
            ("wit-services", crate::wit::FILES[1].1.as_bytes()),
        ],
        &support::tree_files(dir)?,
    )
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::build::support::tests::{assert_every_kind_changes, assert_unreadable, host_files};

    /// A copy of `variants/arith-javascript`.
    fn arith_javascript() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../variants/arith-javascript");
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        for f in ["variant.toml", super::APP_MODULE] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        dir
    }

    #[test]
    fn a_javascript_child_changing_any_file_of_its_tree_gets_a_new_key() {
        let tc = super::toolchain().unwrap();
        let dir = arith_javascript();
        let world = crate::build::support::build_world(super::WORLD, &[]);
        assert_every_kind_changes(dir.path(), str::to_string, |d| super::cache_key(d, tc, &world).unwrap());
    }

    #[test]
    fn node_in_its_sandbox_reads_no_installed_binary() {
        let tc = super::toolchain().unwrap();
        let dir = arith_javascript();
        let staging = tempfile::tempdir().unwrap();
        let sandbox = crate::build::support::toolchain_sandbox(
            dir.path(),
            staging.path(),
            &super::sandbox_paths(tc),
            super::MEMORY,
        );
        let (_installed, _fake_home, files) = host_files();
        let readable: PathBuf = dir.path().join(super::APP_MODULE);
        assert_unreadable(&sandbox, &readable, &files, |f| {
            let mut cmd = std::process::Command::new(&tc.node);
            cmd.args(["-e", "require('fs').readFileSync(process.argv[1])"]).arg(f);
            cmd
        });
    }
}
