//! The Python interpreter component, and Python variants as data for it
//! (see [`crate::interp`]).
//!
//! [`python_interpreter`] builds the interpreter once per machine: the
//! loader app and the `vivarium` SDK (`interp/python/`, embedded in the host
//! binary) and the `python-interpreter` world (`interp/wit/interp.wit` with
//! the host's `vivarium:agent` package as a dependency) go through
//! componentize-py, inside the build sandbox (it reads only
//! its staging directory and the Python installation, has no network). The
//! interpreter imports WASI, which the host builds from the grant as for
//! any component (no preopened directory unless `files` are granted, no
//! environment variable unless named, no socket unless granted): CPython
//! then gets an `OSError` where `--stub-wasi` would trap, which it needs —
//! reporting a `SyntaxError` opens the file it names. The
//! inputs are pinned — componentize-py's version, the WIT and the app — and
//! their sha256 is the build's key: `<target>/python-interpreter/<key>.json`
//! names the component's sha256, and the component is kept by that sha256
//! in `<target>/interpreters/<sha256>.wasm`, where the runtime finds it
//! when its compiled code is not cached yet. A missing or damaged artifact
//! (its size differs from the record, or the runtime finds its sha256
//! wrong and removes it) is built again.
//!
//! **An interpreter's id is its key, not its bytes' sha256**, and that id
//! is what a variant's bundle names (so what its archive id covers):
//! `<target>/interpreters/<id>.id` holds the component's sha256, which the
//! runtime checks the bytes against. componentize-py's build is not
//! bit-reproducible: it runs CPython once under its own wasmtime and
//! snapshots the memory, with the build's random bytes, wall clock and the
//! file metadata of its own temporary directories in it (never two equal
//! builds, even in one directory). The host takes out what it can at the
//! source — the staged inputs get a fixed modification time, and
//! `interp/build/deterministic.c`, preloaded into componentize-py, gives it
//! fixed random bytes and a fixed wall clock, so every build's CPython has
//! the same hash secret (the order of every set of strings a variant
//! iterates) — and names the interpreter by what decides it. What still
//! differs between two builds from different directories is the residue of
//! file metadata (inode numbers, change times) in memory the snapshot
//! holds; `tests/all/interp.rs`'s
//! `the_interpreter_build_is_reproducible_across_target_directories`
//! measures it and shows two builds behave the same.
//!
//! [`build_python_interpreted`] is the default builder of `language =
//! "python"`: it reads `src/`, checks it, and writes the variant's bundle —
//! milliseconds, no toolchain run. `builder = "componentize"` keeps the
//! per-variant componentize-py build ([`super::build_python`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::support;
use super::BuildOutput;
use crate::error::{Error, Result};
use crate::interp::{InterpLanguage, Interpreted, Mode, TreeFile};

/// The world the Python interpreter is built against (`interp/wit/python.wit`).
pub const WORLD: &str = "python-interpreter-v2";

/// The interpreter's WIT package.
pub const INTERP_WIT: &str = include_str!("../../../interp/wit/interp.wit");

/// The Python interpreter's world with the `vivarium:agent@0.2.0` parts,
/// in the same package (a file only the Python build reads).
pub const PYTHON_WIT: &str = include_str!("../../../interp/wit/python.wit");

/// The loader app's module.
const LOADER_MODULE: &str = "vivarium_loader";

/// The loader app and the SDK, as shipped in `interp/python/`.
pub const PYTHON_APP: &[(&str, &str)] = &[
    ("vivarium_loader.py", include_str!("../../../interp/python/vivarium_loader.py")),
    ("vivarium/__init__.py", include_str!("../../../interp/python/vivarium/__init__.py")),
    ("vivarium/_host.py", include_str!("../../../interp/python/vivarium/_host.py")),
    ("vivarium/errors.py", include_str!("../../../interp/python/vivarium/errors.py")),
    ("vivarium/log.py", include_str!("../../../interp/python/vivarium/log.py")),
    ("vivarium/llm.py", include_str!("../../../interp/python/vivarium/llm.py")),
    ("vivarium/memory.py", include_str!("../../../interp/python/vivarium/memory.py")),
    ("vivarium/archive.py", include_str!("../../../interp/python/vivarium/archive.py")),
    ("vivarium/simulator.py", include_str!("../../../interp/python/vivarium/simulator.py")),
    ("vivarium/trainer.py", include_str!("../../../interp/python/vivarium/trainer.py")),
    ("vivarium/source.py", include_str!("../../../interp/python/vivarium/source.py")),
    ("vivarium/workbench.py", include_str!("../../../interp/python/vivarium/workbench.py")),
    // HumanEval's grading harness (`crate::tasks::humaneval::grade`): the
    // loader imports it at build time, so it is in the snapshot and no
    // grading instance compiles it.
    ("vivarium_humaneval/__init__.py", HUMANEVAL_PACKAGE),
    ("vivarium_humaneval/plain.py", include_str!("../tasks/humaneval/plain.py")),
    ("vivarium_humaneval/candidate_side.py", include_str!("../tasks/humaneval/candidate_side.py")),
    ("vivarium_humaneval/test_side.py", include_str!("../tasks/humaneval/test_side.py")),
];

/// `vivarium_humaneval/__init__.py` of the loader app.
const HUMANEVAL_PACKAGE: &str =
    "\"\"\"HumanEval's grading harness (host/src/tasks/humaneval/), preloaded in the snapshot.\"\"\"\n";

/// The library preloaded into componentize-py so its snapshot holds no
/// random bytes or wall-clock time of the build (see the module doc).
pub const DETERMINISTIC_C: &str = include_str!("../../../interp/build/deterministic.c");

/// 1980-01-01T00:00:00Z: the modification time of every staged input (the
/// snapshot records what CPython saw of its files).
const FIXED_MTIME: u64 = 315_532_800;

/// `RLIMIT_AS` of componentize-py (it runs wasmtime, which reserves large
/// virtual regions).
const MEMORY: u64 = 64 << 30;

/// Longest the interpreter build may take.
pub const INTERPRETER_BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// A built interpreter on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interpreter {
    /// Its language.
    pub language: InterpLanguage,
    /// Its id, what bundles name: the build's key, the sha256 of its pinned
    /// inputs (the same on every machine and from every directory).
    #[serde(default)]
    pub id: String,
    /// sha256 of the component (this machine's build of it).
    pub sha256: String,
    /// Where the component is (`<target>/interpreters/<sha256>.wasm`).
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// `<target>/interpreters`: where interpreters are kept by sha256.
pub fn store_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("interpreters")
}

/// The build key of an interpreter: the builder's name, its toolchain's
/// parts, the WIT (the interpreter's and the host's), and the app.
fn interpreter_key(builder: &str, toolchain: &[(&str, &[u8])], app: &[(&str, &[u8])]) -> Result<String> {
    let mut parts: Vec<(&str, &[u8])> = vec![("builder", builder.as_bytes())];
    parts.extend_from_slice(toolchain);
    parts.push(("interp.wit", INTERP_WIT.as_bytes()));
    parts.extend(crate::wit::FILES.iter().map(|(name, text)| (*name, text.as_bytes())));
    parts.extend_from_slice(app);
    support::cache_key(&parts, &[])
}

/// The build key of the Python interpreter with componentize-py `version`.
fn python_key(version: &str) -> Result<String> {
    let mut app: Vec<(&str, &[u8])> = vec![("python.wit", PYTHON_WIT.as_bytes())];
    app.extend(crate::wit::FILES_0_2.iter().map(|(name, text)| (*name, text.as_bytes())));
    app.extend(PYTHON_APP.iter().map(|(name, text)| (*name, text.as_bytes())));
    app.push(("deterministic.c", DETERMINISTIC_C.as_bytes()));
    interpreter_key("python-interpreter-3", &[("componentize-py", version.as_bytes())], &app)
}

/// The Python interpreter for `target_dir`, built when this machine has
/// none for the current inputs (tens of seconds, once), else found in
/// microseconds (remembered per process, a size check per process).
///
/// Errors: [`Error::Invalid`] naming `scripts/setup.sh` when componentize-py
/// is missing, or with the build's output when it fails.
pub fn python_interpreter(target_dir: &Path, timeout: Duration) -> Result<Interpreter> {
    static FOUND: Mutex<Vec<(PathBuf, Interpreter)>> = Mutex::new(Vec::new());
    find_or_build(&FOUND, target_dir, "python-interpreter", |target_dir| {
        let tc = super::python::toolchain(target_dir)?;
        Ok((
            python_key(&tc.version)?,
            Box::new(move |t: &Path, key: &str, record: &Path| build(t, tc, key, record, timeout)),
        ))
    })
}

/// How to build an interpreter whose key is not on the machine yet.
type BuildFn<'a> = Box<dyn FnOnce(&Path, &str, &Path) -> Result<Interpreter> + 'a>;

/// The interpreter of `target_dir` kept under `<target>/<kind>/<key>.json`,
/// remembered per process in `found`, built by what `prepare` returns
/// (with the key) when the machine has none, one build at a time.
fn find_or_build<'a>(
    found: &Mutex<Vec<(PathBuf, Interpreter)>>,
    target_dir: &Path,
    kind: &str,
    prepare: impl FnOnce(&Path) -> Result<(String, BuildFn<'a>)>,
) -> Result<Interpreter> {
    let target_dir = support::absolute(target_dir)?;
    crate::interp::register_store(&store_dir(&target_dir));
    if let Some((_, it)) = found.lock().expect("interpreter lock").iter().find(|(t, _)| *t == target_dir) {
        if std::fs::metadata(&it.path).is_ok_and(|m| m.len() == it.bytes) {
            return Ok(it.clone());
        }
    }
    let (key, build) = prepare(&target_dir)?;
    let record = target_dir.join(kind).join(format!("{key}.json"));
    let existing = || -> Option<Interpreter> {
        let it: Interpreter = serde_json::from_slice(&std::fs::read(&record).ok()?).ok()?;
        let m = std::fs::metadata(&it.path).ok()?;
        (m.len() == it.bytes && wasm_header(&it.path)).then_some(it)
    };
    let mut it = match existing() {
        Some(it) => it,
        None => {
            let _held = support::lock_key(&target_dir, kind, &key)?;
            match existing() {
                Some(it) => it,
                None => build(&target_dir, &key, &record)?,
            }
        }
    };
    it.id = key.clone();
    link_id(&target_dir, &key, &it.sha256)?;
    let mut all = found.lock().expect("interpreter lock");
    all.retain(|(t, _)| *t != target_dir);
    all.push((target_dir, it.clone()));
    Ok(it)
}

/// `<target>/interpreters/<id>.id`: the sha256 of the component this
/// machine built for the interpreter `id` (read by
/// [`crate::interp::component_sha256`]).
fn link_id(target_dir: &Path, id: &str, sha256: &str) -> Result<()> {
    let path = store_dir(target_dir).join(format!("{id}.id"));
    if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == sha256) {
        return Ok(());
    }
    std::fs::create_dir_all(store_dir(target_dir))
        .map_err(|e| Error::io(format!("creating {}", store_dir(target_dir).display()), e))?;
    super::rust::write_atomically(&path, format!("{sha256}\n").as_bytes())
}

/// Give every file and directory under `root` the modification time
/// [`FIXED_MTIME`].
fn fix_mtimes(root: &Path) -> Result<()> {
    let when = std::time::UNIX_EPOCH + Duration::from_secs(FIXED_MTIME);
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let fail = |e| Error::io(format!("setting the modification time of {}", path.display()), e);
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(fail)? {
                stack.push(entry.map_err(fail)?.path());
            }
        }
        std::fs::File::open(&path).and_then(|f| f.set_modified(when)).map_err(fail)?;
    }
    Ok(())
}

/// The shared library of [`DETERMINISTIC_C`], compiled once per machine
/// into `<target>/python-interpreter/preload/` with the C compiler (`$CC`,
/// else `cc`). `None`, with a warning, when there is no C compiler: the
/// interpreter then builds as before, with the build's own random hash
/// secret (same id, but sets of strings may iterate in another order than
/// on other machines).
fn deterministic_preload(target_dir: &Path) -> Option<PathBuf> {
    let digest = hex::encode(Sha256::digest(DETERMINISTIC_C.as_bytes()));
    let dir = target_dir.join("python-interpreter").join("preload");
    let so = dir.join(format!("deterministic-{}.so", &digest[..16]));
    if so.is_file() {
        return Some(so);
    }
    let built = (|| -> std::result::Result<PathBuf, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let src = dir.join(format!("deterministic-{}.c", &digest[..16]));
        std::fs::write(&src, DETERMINISTIC_C).map_err(|e| format!("writing {}: {e}", src.display()))?;
        let tmp = dir.join(format!(".deterministic-{}-{}.so", &digest[..16], std::process::id()));
        let mut cmd = std::process::Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()));
        cmd.args(["-O2", "-shared", "-fPIC", "-o"]).arg(&tmp).arg(&src).arg("-ldl");
        support::probe_log(cmd, Duration::from_secs(60))?;
        std::fs::rename(&tmp, &so).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
        Ok(so)
    })();
    match built {
        Ok(so) => Some(so),
        Err(why) => {
            tracing::warn!(
                "no C compiler for interp/build/deterministic.c ({why}): the Python interpreter's snapshot \
                 gets this build's own random hash secret"
            );
            None
        }
    }
}

fn wasm_header(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok()
        && wasmparser::Parser::is_component(&head)
}

fn build(
    target_dir: &Path,
    tc: &super::python::Toolchain,
    key: &str,
    record: &Path,
    timeout: Duration,
) -> Result<Interpreter> {
    let started = Instant::now();
    let staging = support::staging_dir(target_dir, "python-interpreter")?;
    let wit = staging.path().join("wit");
    let deps = wit.join("deps").join("agent");
    let app = staging.path().join("app");
    let write = |path: PathBuf, text: &str| -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    };
    write(wit.join("interp.wit"), INTERP_WIT)?;
    write(wit.join("python.wit"), PYTHON_WIT)?;
    for (name, text) in crate::wit::FILES {
        write(deps.join(name), text)?;
    }
    for (name, text) in crate::wit::FILES_0_2 {
        write(wit.join("deps").join("agent-0.2.0").join(name), text)?;
    }
    for (name, text) in PYTHON_APP {
        write(app.join(name), text)?;
    }
    fix_mtimes(&wit)?;
    fix_mtimes(&app)?;
    let out = staging.path().join("interpreter.wasm");
    let mut cmd = super::python::componentize_command(tc, &wit, WORLD);
    cmd.arg("-p").arg(&app).arg(LOADER_MODULE).arg("-o").arg(&out).current_dir(staging.path());
    let mut read_only = tc.read_only.clone();
    if let Some(so) = deterministic_preload(target_dir) {
        cmd.env("LD_PRELOAD", &so);
        read_only.push(so);
    }
    let sandbox = support::toolchain_sandbox(&app, staging.path(), &read_only, MEMORY);
    let deadline = started + timeout;
    let log =
        support::run_in_sandbox(cmd, &sandbox, deadline, timeout, "componentize-py (the Python interpreter)", &app)?;
    keep(
        target_dir,
        InterpLanguage::Python,
        &out,
        log,
        started,
        key,
        record,
        "componentize-py (the Python interpreter)",
    )
}

/// Keep a built interpreter: by its sha256 in the store, and its record
/// under the build's key.
#[allow(clippy::too_many_arguments)]
fn keep(
    target_dir: &Path,
    language: InterpLanguage,
    out: &Path,
    log: String,
    started: Instant,
    key: &str,
    record: &Path,
    tool: &str,
) -> Result<Interpreter> {
    let bytes = std::fs::read(out).map_err(|e| Error::io(format!("reading {}", out.display()), e))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let path = store_dir(target_dir).join(format!("{sha256}.wasm"));
    // Validates, then writes atomically.
    support::store(&path, bytes, log, started, tool)?;
    let it = Interpreter {
        language,
        id: key.to_string(),
        bytes: std::fs::metadata(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len(),
        sha256,
        path,
    };
    let json = serde_json::to_vec_pretty(&it).map_err(|e| Error::Internal(e.into()))?;
    if let Some(parent) = record.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    super::rust::write_atomically(record, &json)?;
    tracing::info!(key, sha256 = %it.sha256, ms = started.elapsed().as_millis() as u64, "built the {tool}");
    Ok(it)
}

/// The world the JavaScript interpreter is built against.
pub const JS_WORLD: &str = "js-interpreter";

/// The JavaScript interpreter's loader app, as shipped in `interp/javascript/`.
pub const JS_LOADER: &str = include_str!("../../../interp/javascript/loader.js");

/// Where the acorn parser the loader imports comes from: the JS tooling's
/// pinned install (`tools/js/package-lock.json`).
const ACORN: &str = "node_modules/acorn/dist/acorn.mjs";

/// The JavaScript interpreter for `target_dir` (ComponentizeJS:
/// StarlingMonkey with the loader of `interp/javascript/`), built when this
/// machine has none for the current inputs (about a minute, once), else
/// found in microseconds. Its key covers Node's and ComponentizeJS's
/// versions and lock file, the build script, the WIT, the loader and acorn.
///
/// Errors: [`Error::Invalid`] naming `scripts/setup.sh` when the JS tooling
/// is missing, or with the build's output when it fails.
pub fn javascript_interpreter(target_dir: &Path, timeout: Duration) -> Result<Interpreter> {
    static FOUND: Mutex<Vec<(PathBuf, Interpreter)>> = Mutex::new(Vec::new());
    find_or_build(&FOUND, target_dir, "javascript-interpreter", |_| {
        let tc = super::javascript::toolchain()?;
        let read = |p: PathBuf| std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e));
        let acorn = read(tc.tools.join(ACORN))?;
        let script = read(tc.tools.join("componentize.mjs"))?;
        let key = interpreter_key(
            "javascript-interpreter-1",
            &[("toolchain", tc.version.as_bytes()), ("script", &script)],
            &[("loader.js", JS_LOADER.as_bytes()), ("acorn.mjs", &acorn)],
        )?;
        Ok((
            key,
            Box::new(move |target_dir: &Path, key: &str, record: &Path| {
                build_javascript_interpreter(target_dir, tc, &acorn, key, record, timeout)
            }) as BuildFn<'_>,
        ))
    })
}

fn build_javascript_interpreter(
    target_dir: &Path,
    tc: &super::javascript::Toolchain,
    acorn: &[u8],
    key: &str,
    record: &Path,
    timeout: Duration,
) -> Result<Interpreter> {
    let started = Instant::now();
    let staging = support::staging_dir(target_dir, "javascript-interpreter")?;
    let wit = staging.path().join("wit");
    let app = staging.path().join("app");
    let write = |path: PathBuf, bytes: &[u8]| -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    };
    write(wit.join("interp.wit"), INTERP_WIT.as_bytes())?;
    for (name, text) in crate::wit::FILES {
        write(wit.join("deps").join("agent").join(name), text.as_bytes())?;
    }
    write(app.join("loader.js"), JS_LOADER.as_bytes())?;
    write(app.join("acorn.mjs"), acorn)?;
    let out = staging.path().join("interpreter.wasm");
    let mut cmd = std::process::Command::new(&tc.node);
    cmd.arg(tc.tools.join("componentize.mjs"))
        .arg(app.join("loader.js"))
        .arg(&wit)
        .arg(JS_WORLD)
        .arg(&out)
        .current_dir(staging.path());
    let sandbox = support::toolchain_sandbox(
        &app,
        staging.path(),
        &super::javascript::sandbox_paths(tc),
        super::javascript::MEMORY,
    );
    let log = support::run_in_sandbox(
        cmd,
        &sandbox,
        started + timeout,
        timeout,
        "ComponentizeJS (the JavaScript interpreter)",
        &app,
    )?;
    keep(
        target_dir,
        InterpLanguage::Javascript,
        &out,
        log,
        started,
        key,
        record,
        "ComponentizeJS (the JavaScript interpreter)",
    )
}

/// The bundle of the Python variant in `dir` for the interpreter of
/// `target_dir` (built first when this machine has none): its `src/` tree,
/// the entry module `agent`, the imports the manifest declares and the
/// manifest's digest. Written to `<target>/python-bundles/<sha256>.json`.
///
/// Errors: [`Error::Invalid`] when `src/agent.py` is missing, the tree is
/// over [`crate::interp::MAX_TREE_BYTES`], or the interpreter cannot be
/// built.
pub fn build_python_interpreted(dir: &Path, target_dir: &Path, timeout: Duration) -> Result<BuildOutput> {
    let started = Instant::now();
    let dir = &support::absolute(dir)?;
    let bundle = python_bundle(dir, &python_interpreter(target_dir, timeout)?)?;
    write_bundle(&bundle, target_dir, "python-bundles", started)
}

/// [`build_python_interpreted`] for a JavaScript variant (`src/agent.js`
/// exporting `taskAgent` and `metaAgent`) on the JavaScript interpreter:
/// the default builder of `language = "javascript"`.
pub fn build_javascript_interpreted(dir: &Path, target_dir: &Path, timeout: Duration) -> Result<BuildOutput> {
    let started = Instant::now();
    let dir = &support::absolute(dir)?;
    let bundle = bundle(dir, &javascript_interpreter(target_dir, timeout)?)?;
    write_bundle(&bundle, target_dir, "javascript-bundles", started)
}

fn write_bundle(bundle: &Interpreted, target_dir: &Path, kind: &str, started: Instant) -> Result<BuildOutput> {
    let bytes = bundle.to_bytes();
    let sha = hex::encode(Sha256::digest(&bytes));
    let path = support::absolute(target_dir)?.join(kind).join(format!("{sha}.json"));
    if !path.is_file() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        super::rust::write_atomically(&path, &bytes)?;
    }
    Ok(BuildOutput {
        component: bytes,
        path,
        log: format!(
            "bundled {} files ({} bytes) for the {:?} interpreter {}",
            bundle.files.len(),
            bundle.tree_bytes(),
            bundle.language,
            bundle.interpreter
        ),
        duration: started.elapsed(),
    })
}

/// The bundle of the Python variant in `dir` for `interpreter`.
pub fn python_bundle(dir: &Path, interpreter: &Interpreter) -> Result<Interpreted> {
    bundle(dir, interpreter)
}

/// The bundle of the variant in `dir` for `interpreter` (of its language).
pub fn bundle(dir: &Path, interpreter: &Interpreter) -> Result<Interpreted> {
    let sources = support::source_files(dir)?;
    let (entry, what) = match interpreter.language {
        InterpLanguage::Python => ("src/agent.py", "a Python variant defines `TaskAgent` and `MetaAgent` there"),
        InterpLanguage::Javascript => {
            ("src/agent.js", "a JavaScript variant exports `taskAgent` and `metaAgent` from it")
        }
    };
    if !sources.iter().any(|(rel, _)| rel == entry) {
        return Err(Error::invalid(format!("{} has no {entry}: {what}", dir.display())));
    }
    let mut files = Vec::with_capacity(sources.len());
    let mut total = 0u64;
    for (rel, path) in sources {
        let contents = std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        total += contents.len() as u64;
        if total > crate::interp::MAX_TREE_BYTES {
            return Err(Error::invalid(format!(
                "{}: the source tree is over {} bytes, the most an interpreted variant may carry \
                 (interp::MAX_TREE_BYTES); keep data out of src/",
                dir.display(),
                crate::interp::MAX_TREE_BYTES
            )));
        }
        files.push(TreeFile { path: rel, contents });
    }
    let manifest_path = dir.join(crate::variant::MANIFEST);
    let manifest = match std::fs::read(&manifest_path) {
        Ok(b) => Some(hex::encode(Sha256::digest(&b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(format!("reading {}", manifest_path.display()), e)),
    };
    let version = crate::caps::imports::AGENT_VERSION;
    let mut imports = vec![format!("vivarium:agent/types@{version}"), format!("vivarium:agent/log@{version}")];
    for svc in support::requested_services(dir)? {
        imports.push(format!("vivarium:agent/{svc}@{version}"));
    }
    let bundle = Interpreted {
        language: interpreter.language,
        interpreter: interpreter.id.clone(),
        module: crate::interp::PYTHON_ENTRY.to_string(),
        mode: Mode::Agents,
        imports,
        manifest,
        files,
    };
    bundle.validate()?;
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// The preloaded library fixes what componentize-py's snapshot would
    /// otherwise take from the build (random bytes, the wall clock), shown
    /// on the host's own `python3`, which reaches them through the same
    /// libc calls: two runs under it agree, a run without it does not.
    #[test]
    fn the_preload_fixes_random_bytes_and_the_wall_clock() {
        let tmp = tempfile::tempdir().unwrap();
        let so =
            super::deterministic_preload(tmp.path()).expect("a C compiler (cc) builds interp/build/deterministic.c");
        let script = "import os, time; print(os.urandom(16).hex(), int(time.time()))";
        let python = std::env::var_os("VIVARIUM_PYTHON").unwrap_or_else(|| "python3".into());
        let run = |preload: bool| {
            let mut cmd = Command::new(&python);
            cmd.args(["-I", "-c", script]);
            if preload {
                cmd.env("LD_PRELOAD", &so);
            }
            let out = cmd.output().expect("python3 runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        let (first, second) = (run(true), run(true));
        assert_eq!(first, second, "the same bytes and time under the preload");
        assert!(first.trim_end().ends_with(&format!(" {}", super::FIXED_MTIME)), "{first}");
        assert_ne!(run(false), first, "without it, the build's own");
        // Compiled once: the second call finds it.
        assert_eq!(super::deterministic_preload(tmp.path()), Some(so));
    }
}
