//! What the Python, JavaScript and C builders share: a toolchain sandbox, a
//! staging directory per build, a bounded sandboxed run, the WIT they build
//! against and a content-addressed cache of their output.
//!
//! These builders run a native toolchain (componentize-py, Node with
//! ComponentizeJS, clang) on untrusted source. Each build gets a fresh
//! staging directory under `<target_dir>/<language>/`; the toolchain runs in
//! a [`Sandbox`] that may read the variant's tree, the toolchain's own files
//! (each builder names them: never a `bin` directory or a prefix such as
//! `/usr` whole) and what a program needs to start
//! ([`sandbox::system_runtime`]), may write only the staging directory, has
//! no network, a scrubbed environment and rlimits, and is killed with its
//! whole process group at the build's deadline.
//!
//! Componentizing Python or JavaScript takes tens of seconds, so every
//! builder keys its output by the sha256 of everything that goes into it —
//! every file of the variant's tree ([`tree_files`]: whatever the sandbox
//! lets the toolchain read, dot-directories included), the WIT, the world,
//! the toolchain's version — and reuses `<target_dir>/<language>/<key>.wasm`
//! when the key was built before: a second build of unchanged source takes
//! milliseconds, and a changed file anywhere in the tree is a new build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::rust::{run_bounded, tail_lines, write_atomically};
use super::sandbox::{self, Sandbox};
use super::BuildOutput;
use crate::caps::Manifest;
use crate::error::{Error, Result};

/// How many lines of a toolchain's output an error message quotes.
pub(crate) const ERROR_TAIL_LINES: usize = 40;

/// The script every missing-toolchain error points at.
pub const SETUP_SCRIPT: &str = "scripts/setup.sh";

/// Paths the interpreter toolchains read besides [`sandbox::system_runtime`].
const EXTRA_READ_ONLY: &[&str] = &["/etc/localtime", "/dev/random"];

/// The sandbox a toolchain runs in for the variant `tree`, writing only
/// `staging` (which also holds its private `TMPDIR`/`HOME`), plus
/// `toolchain` read-only paths. No network; `memory` is `RLIMIT_AS`.
pub(crate) fn toolchain_sandbox(tree: &Path, staging: &Path, toolchain: &[PathBuf], memory: u64) -> Sandbox {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut sandbox = Sandbox::new()
        .with_read_only(abs(tree))
        .with_read_write(abs(staging))
        .with_read_write("/dev/null")
        .with_tmp_root(abs(staging).join("tmp"))
        .with_memory(memory);
    for p in toolchain {
        sandbox = sandbox.with_read_only(abs(p));
    }
    for p in sandbox::system_runtime() {
        sandbox = sandbox.with_read_only(p);
    }
    for p in EXTRA_READ_ONLY {
        sandbox = sandbox.with_read_only(*p);
    }
    sandbox
}

/// `dir` when exposing it whole exposes only a toolchain, else nothing
/// ([`sandbox::is_broad`]); made canonical.
pub(crate) fn own_dir(dir: &Path) -> Option<PathBuf> {
    let dir = dir.canonicalize().ok()?;
    (dir.is_dir() && !sandbox::is_broad(&dir)).then_some(dir)
}

/// A fresh staging directory `<target_dir>/<language>/staging/<random>`,
/// removed when dropped.
pub(crate) fn staging_dir(target_dir: &Path, language: &str) -> Result<tempfile::TempDir> {
    let root = std::path::absolute(target_dir)
        .map_err(|e| Error::io(format!("resolving {}", target_dir.display()), e))?
        .join(language)
        .join("staging");
    std::fs::create_dir_all(&root).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(&root)
        .map_err(|e| Error::io(format!("creating a staging directory under {}", root.display()), e))
}

/// `path` made absolute (the toolchains run in their staging directory).
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(format!("resolving {}", path.display()), e))
}

/// Refuse a variant tree inside the target directory (a sandboxed build may
/// write there, so the tree would be writable).
pub(crate) fn check_tree_outside(dir: &Path, target_dir: &Path) -> Result<()> {
    let dir = std::path::absolute(dir).map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
    let target =
        std::path::absolute(target_dir).map_err(|e| Error::io(format!("resolving {}", target_dir.display()), e))?;
    if dir.starts_with(&target) {
        return Err(Error::invalid(format!(
            "the variant {} lies inside the guest target directory {}: a sandboxed build may write \
             there, so the tree must live elsewhere",
            dir.display(),
            target.display()
        )));
    }
    Ok(())
}

/// Run `cmd` inside `sandbox` until `deadline`. Returns the toolchain's
/// output (stderr then stdout) when it succeeded; otherwise an
/// [`Error::Invalid`] naming `what` with the output's tail, or an
/// [`Error::Refused`] when the output shows the sandbox stopped it.
pub(crate) fn run_in_sandbox(
    mut cmd: Command,
    sandbox: &Sandbox,
    deadline: Instant,
    timeout: Duration,
    what: &str,
    dir: &Path,
) -> Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own process group, so that a timeout kills every helper.
        cmd.process_group(0);
    }
    let applied = sandbox.apply(&mut cmd)?;
    let run = run_bounded(cmd, deadline).map_err(|e| Error::io(format!("starting {what}"), e))?;
    drop(applied);
    let log = run.log();
    match run.status {
        None => Err(Error::invalid(format!(
            "{what} for {dir} took longer than {secs:.0} s and was stopped.\nLast lines of its output:\n{tail}",
            dir = dir.display(),
            secs = timeout.as_secs_f64(),
            tail = tail_lines(&log, ERROR_TAIL_LINES),
        ))),
        Some(status) if !status.success() => {
            if let Some(v) = sandbox::classify_violation(&log) {
                let lines = match v {
                    sandbox::Violation::OutsidePath(l) | sandbox::Violation::Network(l) => l,
                };
                return Err(Error::Refused {
                    what: vec![sandbox::REFUSED_SANDBOX.to_string()],
                    detail: format!(
                        "{what} for {dir} reached outside the build sandbox (it may read only the \
                         variant's tree and the toolchain, write only its staging directory, and \
                         has no network):\n{lines}\nLast lines of its output:\n{tail}",
                        dir = dir.display(),
                        lines = lines.join("\n"),
                        tail = tail_lines(&log, ERROR_TAIL_LINES),
                    ),
                });
            }
            Err(Error::invalid(format!(
                "{what} for {dir} failed ({status}).\nLast lines of its output:\n{tail}\n\
                 Fix the errors above in the variant's source and build again.",
                dir = dir.display(),
                tail = tail_lines(&log, ERROR_TAIL_LINES),
            )))
        }
        Some(_) => Ok(log),
    }
}

/// Run a trusted discovery command (`python3 -c …`, `clang --version`)
/// outside the sandbox, bounded by `limit`; its stdout when it succeeded.
pub(crate) fn probe(cmd: Command, limit: Duration) -> std::result::Result<String, String> {
    probe_run(cmd, limit).map(|run| String::from_utf8_lossy(&run.stdout).into_owned())
}

/// [`probe`], returning stderr then stdout (`clang -v` speaks on stderr).
pub(crate) fn probe_log(cmd: Command, limit: Duration) -> std::result::Result<String, String> {
    probe_run(cmd, limit).map(|run| run.log())
}

fn probe_run(mut cmd: Command, limit: Duration) -> std::result::Result<super::rust::Finished, String> {
    // The command in words: the program and its short arguments (a probe
    // script is shown as `…`).
    let shown = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.len() > 40 || a.contains('\n') {
                "…".to_string()
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let shown = format!("`{shown}`");
    let run = run_bounded(
        {
            #[cfg(unix)]
            {
                use std::os::unix::process::CommandExt;
                cmd.process_group(0);
            }
            cmd
        },
        Instant::now() + limit,
    )
    .map_err(|e| format!("{shown}: {e}"))?;
    match run.status {
        Some(s) if s.success() => Ok(run),
        Some(s) => Err(format!("{shown} failed ({s}): {}", tail_lines(&run.log(), 12))),
        None => Err(format!("{shown} did not finish within {} s", limit.as_secs())),
    }
}

/// The `vivarium:agent` services the variant in `dir` requests in its
/// manifest (`llm`, `trainer`, …), in WIT order; none when it has no
/// manifest. `log` is always available and not listed.
pub(crate) fn requested_services(dir: &Path) -> Result<Vec<&'static str>> {
    let path = dir.join(crate::variant::MANIFEST);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let m = Manifest::load(&path)?;
    let c = &m.capabilities;
    let mut out = Vec::new();
    for (name, on) in [
        ("llm", c.llm.is_some()),
        ("trainer", c.trainer.is_some()),
        ("simulator", c.simulator.is_some()),
        ("memory", c.memory.is_some()),
        ("archive", c.archive.is_some()),
    ] {
        if on {
            out.push(name);
        }
    }
    Ok(out)
}

/// A world of the `vivarium:agent` package that imports `log` and
/// `services` and exports both agents: what the Python and JavaScript
/// toolchains build against, since they import every interface of their
/// world whether the code calls it or not.
pub(crate) fn build_world(name: &str, services: &[&str]) -> String {
    let mut s = String::from(
        "// Written by the vivarium builder: the variant's world, importing only\n\
         // `log` and the services its manifest requests.\n\
         package vivarium:agent@0.1.0;\n\n",
    );
    s.push_str(&format!("world {name} {{\n  import log;\n"));
    for svc in services {
        s.push_str(&format!("  import {svc};\n"));
    }
    s.push_str("  export task-agent;\n  export meta-agent;\n}\n");
    s
}

/// Write the host's WIT package plus `extra_world` (file `build-world.wit`)
/// into `dir`.
pub(crate) fn write_wit(dir: &Path, extra_world: Option<&str>) -> Result<()> {
    crate::wit::write_to(dir).map_err(|e| Error::io(format!("writing the WIT into {}", dir.display()), e))?;
    if let Some(world) = extra_world {
        std::fs::write(dir.join("build-world.wit"), world)
            .map_err(|e| Error::io(format!("writing {}", dir.join("build-world.wit").display()), e))?;
    }
    Ok(())
}

/// The files under `dir/src`, relative to `dir` with `/` separators, sorted;
/// build-output and metadata directories (`target`, `node_modules`,
/// `__pycache__`, dot-directories) are skipped, links are refused.
pub(crate) fn source_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let src = dir.join("src");
    if !src.is_dir() {
        return Err(Error::invalid(format!("{} has no src/ directory", dir.display())));
    }
    let mut out = Vec::new();
    let mut stack = vec![src];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io(format!("reading {}", d.display()), e))?;
        for e in entries {
            let e = e.map_err(|e| Error::io(format!("reading {}", d.display()), e))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let ft = e.file_type().map_err(|err| Error::io(format!("reading {}", e.path().display()), err))?;
            if ft.is_symlink() {
                return Err(Error::invalid(format!(
                    "{} is a symbolic link; a variant's tree holds plain files only",
                    e.path().display()
                )));
            }
            if ft.is_dir() {
                if name.starts_with('.') || matches!(&*name, "target" | "node_modules" | "__pycache__") {
                    continue;
                }
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .map(|r| r.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"))
                    .unwrap_or_else(|_| name.to_string());
                out.push((rel, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every file of the variant tree `dir`, relative to it with `/`
/// separators, sorted: what a build sandbox that exposes the tree lets the
/// toolchain read, so what a cache key must cover. Nothing is skipped —
/// dot-directories, `target`, `node_modules` included: a file anywhere in
/// the tree can reach the component (`include_str!("../notes.txt")`,
/// `#include ".inc/x.h"`, a prompt under `prompts/`).
///
/// A symbolic link is listed, never followed: [`cache_key`] hashes where it
/// points. What a build reads through it is then a file of the tree (hashed
/// on its own), a file of the toolchain (whose version is in the key) or a
/// file the sandbox refuses.
///
/// Errors: [`Error::Invalid`] for a special file (a FIFO, a socket, a
/// device: a variant's tree holds files, directories and links only);
/// [`Error::Io`] when a directory cannot be read.
pub fn tree_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io(format!("reading {}", d.display()), e))?;
        for e in entries {
            let e = e.map_err(|e| Error::io(format!("reading {}", d.display()), e))?;
            let ft = e.file_type().map_err(|err| Error::io(format!("reading {}", e.path().display()), err))?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() || ft.is_symlink() {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .map(|r| r.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"))
                    .unwrap_or_else(|_| e.file_name().to_string_lossy().into_owned());
                out.push((rel, e.path()));
            } else {
                return Err(Error::invalid(format!(
                    "{} is not a plain file; a variant's tree holds files, directories and links only",
                    e.path().display()
                )));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The cache key of a build, in hex: sha256 over `parts` (labels and
/// values) and every file in `files` (relative path and contents; for a
/// symbolic link, where it points).
///
/// Errors: [`Error::Io`] when a file cannot be read.
pub fn cache_key(parts: &[(&str, &[u8])], files: &[(String, PathBuf)]) -> Result<String> {
    let mut h = Sha256::new();
    let mut put = |label: &[u8], value: &[u8]| {
        h.update((label.len() as u64).to_le_bytes());
        h.update(label);
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    };
    for (label, value) in parts {
        put(label.as_bytes(), value);
    }
    for (rel, path) in files {
        let read = |e| Error::io(format!("reading {}", path.display()), e);
        if std::fs::symlink_metadata(path).map_err(read)?.is_symlink() {
            let to = std::fs::read_link(path).map_err(read)?;
            // NUL: no path holds one, so no file's label reads the same.
            put(format!("{rel}\0link").as_bytes(), to.as_os_str().as_encoded_bytes());
        } else {
            put(rel.as_bytes(), &std::fs::read(path).map_err(read)?);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Where the output of the build with `key` is kept.
pub(crate) fn cached_path(target_dir: &Path, language: &str, key: &str) -> Result<PathBuf> {
    let dir = std::path::absolute(target_dir)
        .map_err(|e| Error::io(format!("resolving {}", target_dir.display()), e))?
        .join(language);
    Ok(dir.join(format!("{key}.wasm")))
}

/// Hold the build of `key` for this process: builds of the same inputs (in
/// this process or another) wait for each other, so the second one finds the
/// first one's output instead of building again and replacing it with
/// different bytes (componentizers are not bit-for-bit reproducible, and a
/// variant's identity is its component's sha256).
pub(crate) fn lock_key(target_dir: &Path, language: &str, key: &str) -> Result<std::fs::File> {
    let dir = absolute(target_dir)?.join(language).join("locks");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(format!("{key}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    file.lock().map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
    Ok(file)
}

/// The cached component for `path`, when one is there and is a component.
pub(crate) fn cached(path: &Path, started: Instant) -> Option<BuildOutput> {
    let bytes = std::fs::read(path).ok()?;
    if !wasmparser::Parser::is_component(&bytes) {
        return None;
    }
    Some(BuildOutput {
        component: bytes,
        path: path.to_path_buf(),
        log: format!("reused {} (same sources, WIT and toolchain)", path.display()),
        duration: started.elapsed(),
    })
}

/// The cached output of the build with `key`, or, when there is none, where
/// to store it and the held lock of `key` ([`lock_key`]): the cache is
/// looked at again once the lock is held, so a build of the same inputs
/// that finished meanwhile is reused instead of repeated.
pub(crate) fn lookup(
    target_dir: &Path,
    language: &str,
    key: &str,
    started: Instant,
) -> Result<std::result::Result<BuildOutput, (PathBuf, std::fs::File)>> {
    let out_path = cached_path(target_dir, language, key)?;
    if let Some(hit) = cached(&out_path, started) {
        return Ok(Ok(hit));
    }
    let held = lock_key(target_dir, language, key)?;
    if let Some(hit) = cached(&out_path, started) {
        return Ok(Ok(hit));
    }
    Ok(Err((out_path, held)))
}

/// Check that `bytes` are a valid component and store them at `path`.
pub(crate) fn store(path: &Path, bytes: Vec<u8>, log: String, started: Instant, what: &str) -> Result<BuildOutput> {
    if !wasmparser::Parser::is_component(&bytes) {
        return Err(Error::invalid(format!("{what} produced something that is not a component")));
    }
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&bytes)
        .map_err(|e| Error::invalid(format!("{what} produced an invalid component: {e}")))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    write_atomically(path, &bytes)?;
    Ok(BuildOutput { component: bytes, path: path.to_path_buf(), log, duration: started.elapsed() })
}

/// The error for a toolchain that is not installed.
pub(crate) fn missing_toolchain(language: &str, what: &str, detail: &str) -> Error {
    Error::invalid(format!(
        "the {language} toolchain is not installed: {what} ({detail}). Run `bash {SETUP_SCRIPT}` \
         from the repository root (idempotent) to install it, then build again."
    ))
}

/// The repository root this host was built from, when it still exists
/// (tools under `tools/`, the guest SDK).
pub fn repo_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.to_path_buf();
    root.join("wit").is_dir().then_some(root)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn build_world_parses_with_the_package() {
        let dir = tempfile::tempdir().unwrap();
        write_wit(dir.path(), Some(&build_world("python-agent", &["llm", "memory"]))).unwrap();
        let mut resolve = wit_parser::Resolve::default();
        let (pkg, _) = resolve.push_dir(dir.path()).unwrap();
        let world = resolve.select_world(&[pkg], Some("python-agent")).unwrap();
        let imports: Vec<String> = resolve.worlds[world].imports.keys().map(|k| resolve.name_world_key(k)).collect();
        assert!(imports.iter().any(|i| i == "vivarium:agent/llm@0.1.0"), "{imports:?}");
        assert!(!imports.iter().any(|i| i.contains("trainer")), "{imports:?}");
    }

    /// A tree with a file of each kind a build can read besides `src/`'s
    /// ordinary files: one outside `src/`, one in a dot-directory, a prompt.
    pub(crate) const KINDS: &[&str] = &["notes.txt", "src/.inc/extra.txt", "prompts/system.txt"];

    /// `key` of `dir` changes when any file of [`KINDS`] (written first as
    /// `text("first <file>")`) changes to `text("changed <file>")`.
    pub(crate) fn assert_every_kind_changes(dir: &Path, text: impl Fn(&str) -> String, key: impl Fn(&Path) -> String) {
        for rel in KINDS {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text(&format!("first {rel}"))).unwrap();
        }
        let mut seen = vec![key(dir)];
        for rel in KINDS {
            std::fs::write(dir.join(rel), text(&format!("changed {rel}"))).unwrap();
            let k = key(dir);
            assert!(!seen.contains(&k), "changing {rel} left the key (or the sha256) as it was");
            seen.push(k);
        }
    }

    /// Copies of a host binary where a user would install one (the test
    /// binary holds the held-out tasks and the graders, as `vivarium` does),
    /// removed when dropped.
    pub(crate) struct Installed(pub(crate) Vec<PathBuf>);

    impl Drop for Installed {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// What no build may read, as far as this machine has it: a copy of the
    /// host binary in `/usr/local/bin` (when writable: root) and in a
    /// directory standing for `~/.cargo/bin`; the real `$CARGO_HOME`'s
    /// `bin/rustup`, `config.toml` and `credentials.toml`; rustup's
    /// `settings.toml`; a system program (`/usr/bin/env`).
    pub(crate) fn host_files() -> (Installed, tempfile::TempDir, Vec<PathBuf>) {
        let exe = std::env::current_exe().unwrap();
        static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("vivarium-sandbox-probe-{}-{n}", std::process::id());
        let fake_home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(fake_home.path().join("bin")).unwrap();
        let mut installed = Installed(Vec::new());
        for dir in [PathBuf::from("/usr/local/bin"), fake_home.path().join("bin")] {
            let at = dir.join(&name);
            if std::fs::copy(&exe, &at).is_ok() {
                installed.0.push(at);
            }
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        let cargo_home = std::env::var_os("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".cargo"));
        let rustup_home = std::env::var_os("RUSTUP_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".rustup"));
        let mut files = installed.0.clone();
        for p in [
            cargo_home.join("bin/rustup"),
            cargo_home.join("config.toml"),
            cargo_home.join("credentials.toml"),
            rustup_home.join("settings.toml"),
            PathBuf::from("/usr/bin/env"),
        ] {
            if p.is_file() {
                files.push(p);
            }
        }
        (installed, fake_home, files)
    }

    /// Run the command `reading(file)` makes inside `sandbox` for each of
    /// `files` and assert that each read was refused by the sandbox (and
    /// that the same command reads a file of the tree `readable`).
    pub(crate) fn assert_unreadable(
        sandbox: &Sandbox,
        readable: &Path,
        files: &[PathBuf],
        reading: impl Fn(&Path) -> Command,
    ) {
        if super::sandbox::support().landlock_abi < 1 {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        let run = |f: &Path| {
            let mut cmd = reading(f);
            let applied = sandbox.apply(&mut cmd).unwrap();
            let out = cmd.output().unwrap();
            drop(applied);
            (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let (ok, err) = run(readable);
        assert!(ok, "reading {} in the sandbox failed: {err}", readable.display());
        assert!(!files.is_empty());
        for f in files {
            let (ok, err) = run(f);
            assert!(!ok, "{} was read in the sandbox", f.display());
            assert!(
                err.contains("Permission denied") || err.contains("EACCES") || err.contains("os error 13"),
                "reading {}: {err}",
                f.display()
            );
        }
    }

    #[test]
    fn every_file_of_the_tree_is_in_the_key_and_links_by_where_they_point() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/__pycache__")).unwrap();
        std::fs::write(dir.path().join("src/a.py"), "x = 1").unwrap();
        std::fs::write(dir.path().join("src/__pycache__/a.pyc"), "junk").unwrap();
        let key = |d: &Path| cache_key(&[("world", b"w")], &tree_files(d).unwrap()).unwrap();
        assert_every_kind_changes(dir.path(), str::to_string, key);
        let files: Vec<String> = tree_files(dir.path()).unwrap().into_iter().map(|f| f.0).collect();
        assert_eq!(
            files,
            ["notes.txt", "prompts/system.txt", "src/.inc/extra.txt", "src/__pycache__/a.pyc", "src/a.py"]
        );
        #[cfg(unix)]
        {
            let before = key(dir.path());
            std::os::unix::fs::symlink("/etc/passwd", dir.path().join("prompts/link")).unwrap();
            let to_passwd = key(dir.path());
            assert_ne!(before, to_passwd);
            std::fs::remove_file(dir.path().join("prompts/link")).unwrap();
            std::os::unix::fs::symlink("/etc/hosts", dir.path().join("prompts/link")).unwrap();
            assert_ne!(key(dir.path()), to_passwd, "a link counts by where it points");
            let fifo = dir.path().join("src/fifo");
            if std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
                let e = tree_files(dir.path()).unwrap_err();
                assert!(matches!(&e, Error::Invalid(m) if m.contains("not a plain file")), "{e}");
            }
        }
    }

    #[test]
    fn cache_keys_change_with_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/__pycache__")).unwrap();
        std::fs::write(dir.path().join("src/a.py"), "x = 1").unwrap();
        std::fs::write(dir.path().join("src/__pycache__/a.pyc"), "junk").unwrap();
        let files = source_files(dir.path()).unwrap();
        assert_eq!(files.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(), ["src/a.py"]);
        let k1 = cache_key(&[("world", b"w")], &files).unwrap();
        std::fs::write(dir.path().join("src/a.py"), "x = 2").unwrap();
        let k2 = cache_key(&[("world", b"w")], &files).unwrap();
        assert_ne!(k1, k2);
        assert_ne!(k2, cache_key(&[("world", b"v")], &files).unwrap());
    }
}
