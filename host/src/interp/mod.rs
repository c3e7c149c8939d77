//! Interpreted variants: one precompiled interpreter per language, the
//! variant's source handed to it as read-only data.
//!
//! A Python variant used to be componentized on its own (componentize-py,
//! ~12 s, then an 18 MB Cranelift compile per child). Here a variant is its
//! `variant.toml` plus its source tree, and a child is new data, not a new
//! component:
//!
//! * **The interpreter** is a component the host builds once per machine
//!   from pinned inputs ([`crate::build::interpreter`]: componentize-py's
//!   version and the loader app in `interp/python/`), keeps by content hash
//!   and compiles once through the compile cache. It exports the `agent`
//!   world and imports every `vivarium:agent` service plus
//!   `vivarium:interp/source` (`interp/wit/interp.wit`), and WASI, which
//!   the host builds from the grant as for any component.
//! * **A variant's artifact** is an [`Interpreted`] bundle: the
//!   interpreter's sha256, the entry point, the imports the manifest
//!   declares, the manifest's digest and every file of `src/`. Its bytes are
//!   what the archive stores and what `Runtime::load` accepts in place of a
//!   component; their sha256 is the variant's id, so the id covers the
//!   interpreter, the tree and the manifest, and two different trees never
//!   share one.
//! * **At instance start** the loader asks the host for the tree through
//!   `vivarium:interp/source` (the files, the entry point, the granted
//!   services: read-only data, nothing else of the host), serves `src/` as
//!   modules and imports the entry module. Every call is a fresh instance,
//!   so the import runs under the call's fuel, memory and wall-clock limits:
//!   a loop at import time ends as `out-of-fuel` or `deadline` like any
//!   other.
//!
//! The host links the interpreter like any component, against the grant:
//! the *declared* imports (`log`, `types` and the services the manifest
//! requests, as a componentize-py build of the variant would import) go
//! through the import check, the granted services are linked, and the
//! interpreter's other service imports are linked to traps. The Python SDK
//! (`vivarium`) reads the granted list and raises `NotGranted` before it
//! gets that far.
//!
//! A syntax error or an exception at import is not a trap: `solve` and
//! `improve` answer `err` with the file, line and message, and
//! [`Mode::Check`] (used on every new child, see [`check_load`]) returns it
//! as a typed [`LoadError`].
//!
//! [`run_function`] is the same machinery for code no variant brought ("load
//! this source and call this function under these limits"), for graders.

pub mod peer;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::caps::{Grant, Limits};
use crate::error::{Error, Result};
use crate::runtime::bindings::Task;
use crate::runtime::{CallOptions, CallOutcome, CallReport, Runtime};

/// The first line of every bundle: what the bytes are, and the format's
/// version. Never `\0asm` or `(`, so a bundle is never taken for a
/// component.
pub const MAGIC: &[u8] = b"vivarium-interpreted-variant 1\n";

/// Most bytes of source a bundle may carry (all files together): the
/// interpreter receives the tree in one host call, whose size the runtime
/// bounds (`hostcall_budget`, at least 1 MiB).
pub const MAX_TREE_BYTES: u64 = 1 << 20;

/// The module a Python variant's agents live in (`src/agent.py`).
pub const PYTHON_ENTRY: &str = "agent";

/// Which interpreter a bundle runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterpLanguage {
    /// CPython, built with componentize-py.
    Python,
    /// StarlingMonkey (SpiderMonkey), built with ComponentizeJS.
    Javascript,
}

/// How the loaded code is entered (`vivarium:interp/source` `mode`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `solve` / `improve` go to the module's `TaskAgent` / `MetaAgent`.
    Agents,
    /// `solve` calls this function with the task's input.
    Function(String),
    /// `solve` only loads the module and reports how that went.
    Check,
}

/// One file of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Relative to the tree's root, `/`-separated (`src/agent.py`).
    pub path: String,
    /// The file's bytes.
    pub contents: Vec<u8>,
}

/// A variant (or a piece of code) for an interpreter: everything that
/// decides what runs, and so its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreted {
    /// The interpreter's language.
    pub language: InterpLanguage,
    /// The interpreter's id: the sha256 of its build's pinned inputs
    /// ([`crate::build::interpreter`]), the same on every machine; a
    /// bundle made before ids named the component's own sha256, which
    /// still resolves.
    pub interpreter: String,
    /// The module imported first.
    pub module: String,
    /// How it is entered.
    pub mode: Mode,
    /// The imports the variant declares (`vivarium:agent/log@0.1.0`, …):
    /// what the import check sees and `inspect` shows.
    pub imports: Vec<String>,
    /// sha256 of `variant.toml`, when the code is a variant.
    pub manifest: Option<String>,
    /// The tree, sorted by path.
    pub files: Vec<TreeFile>,
}

/// The JSON body of a bundle (files as text when they are UTF-8, else hex).
#[derive(Serialize, Deserialize)]
struct Body {
    language: InterpLanguage,
    interpreter: String,
    module: String,
    mode: Mode,
    imports: Vec<String>,
    manifest: Option<String>,
    tree: String,
    files: Vec<BodyFile>,
}

#[derive(Serialize, Deserialize)]
struct BodyFile {
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hex: Option<String>,
}

impl Interpreted {
    /// The bundle's bytes: [`MAGIC`], then one line of JSON. Deterministic:
    /// the same inputs give the same bytes, hence the same id.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = Body {
            language: self.language,
            interpreter: self.interpreter.clone(),
            module: self.module.clone(),
            mode: self.mode.clone(),
            imports: self.imports.clone(),
            manifest: self.manifest.clone(),
            tree: self.tree_digest(),
            files: self
                .files
                .iter()
                .map(|f| match std::str::from_utf8(&f.contents) {
                    Ok(t) => BodyFile { path: f.path.clone(), text: Some(t.to_string()), hex: None },
                    Err(_) => BodyFile { path: f.path.clone(), text: None, hex: Some(hex::encode(&f.contents)) },
                })
                .collect(),
        };
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&serde_json::to_vec(&body).expect("a bundle serializes"));
        out.push(b'\n');
        out
    }

    /// The bundle in `bytes`, `None` when they are not a bundle at all.
    ///
    /// Errors: [`Error::Invalid`] for a damaged bundle (bad JSON, a tree
    /// digest that does not match its files, a file path outside `src/`).
    pub fn parse(bytes: &[u8]) -> Result<Option<Self>> {
        let Some(rest) = bytes.strip_prefix(MAGIC) else { return Ok(None) };
        let body: Body = serde_json::from_slice(rest)
            .map_err(|e| Error::invalid(format!("a damaged interpreted-variant bundle: {e}")))?;
        let mut files = Vec::with_capacity(body.files.len());
        for f in body.files {
            let contents = match (f.text, f.hex) {
                (Some(t), None) => t.into_bytes(),
                (None, Some(h)) => hex::decode(h)
                    .map_err(|e| Error::invalid(format!("a damaged bundle: file {} is not hex: {e}", f.path)))?,
                _ => return Err(Error::invalid(format!("a damaged bundle: file {} has no contents", f.path))),
            };
            files.push(TreeFile { path: f.path, contents });
        }
        let it = Interpreted {
            language: body.language,
            interpreter: body.interpreter,
            module: body.module,
            mode: body.mode,
            imports: body.imports,
            manifest: body.manifest,
            files,
        };
        it.validate()?;
        if it.tree_digest() != body.tree {
            return Err(Error::invalid("a damaged bundle: its tree digest does not match its files"));
        }
        Ok(Some(it))
    }

    /// Checks every bundle meets, made or parsed: a sha256 for the
    /// interpreter, file paths that are plain relative paths, sorted and
    /// unique, and a tree within [`MAX_TREE_BYTES`].
    pub fn validate(&self) -> Result<()> {
        if self.interpreter.len() != 64 || !self.interpreter.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid("a bundle names its interpreter by a sha256"));
        }
        for w in self.files.windows(2) {
            if w[0].path >= w[1].path {
                return Err(Error::invalid(format!("a bundle's files are not sorted and unique at {}", w[1].path)));
            }
        }
        for f in &self.files {
            crate::caps::manifest::validate_rel_path(&f.path)
                .map_err(|why| Error::invalid(format!("a bundle's file {}: {why}", f.path)))?;
        }
        let total = self.tree_bytes();
        if total > MAX_TREE_BYTES {
            return Err(Error::invalid(format!(
                "the source tree is {total} bytes; an interpreted variant may carry at most {MAX_TREE_BYTES} \
                 bytes of source (interp::MAX_TREE_BYTES): keep data out of src/"
            )));
        }
        Ok(())
    }

    /// Bytes of source in the tree.
    pub fn tree_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.contents.len() as u64).sum()
    }

    /// sha256 over the tree: each file's path and contents, length-prefixed,
    /// in order.
    pub fn tree_digest(&self) -> String {
        let mut h = Sha256::new();
        for f in &self.files {
            h.update((f.path.len() as u64).to_le_bytes());
            h.update(f.path.as_bytes());
            h.update((f.contents.len() as u64).to_le_bytes());
            h.update(&f.contents);
        }
        hex::encode(h.finalize())
    }

    /// The same code entered another way (a check of a new child).
    pub fn with_mode(&self, mode: Mode) -> Self {
        Self { mode, ..self.clone() }
    }
}

/// What the host knows of an interpreted variant once loaded: the bundle
/// and its id.
#[derive(Debug, Clone)]
pub struct Source {
    /// The bundle.
    pub bundle: Arc<Interpreted>,
    /// sha256 of the bundle's bytes: the variant's id.
    pub sha256: String,
}

/// Why an interpreted variant's code did not load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadError {
    /// `syntax-error`, `missing-module`, `exception` (raised by the
    /// module's top level) or `missing-agent`.
    pub kind: String,
    /// The file it happened in (`src/agent.py`), or empty.
    pub file: String,
    /// The 1-based line, or 0.
    pub line: u32,
    /// The exception's type and message.
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the variant did not load ({}): ", self.kind)?;
        match (self.file.is_empty(), self.line) {
            (false, 0) => write!(f, "{}: ", self.file)?,
            (false, line) => write!(f, "{}:{line}: ", self.file)?,
            (true, _) => {}
        }
        f.write_str(&self.message)
    }
}

/// How a [`check_load`] ended.
#[derive(Debug, Clone)]
pub enum Checked {
    /// The module loaded and defines what its mode needs.
    Loaded,
    /// It did not load: where and why.
    LoadError(LoadError),
    /// The load itself hit a limit or trapped (a loop at import time).
    Failed(crate::GuestFailure),
}

/// Load `p`'s code on a fresh instance, under its grant and `opts`, and
/// say whether it loads: what `improve` runs on every new interpreted child,
/// so that a syntax error is refused like a compiler error, with file and
/// line, and reaches the next `improve` as feedback.
///
/// Errors: [`Error::Invalid`] when `p` is not an interpreted variant; host
/// errors from the call.
pub async fn check_load(rt: &Runtime, p: &crate::runtime::Prepared, opts: &CallOptions) -> Result<Checked> {
    let Some(source) = p.interpreted() else {
        return Err(Error::invalid("check_load: not an interpreted variant"));
    };
    let checking = p.with_bundle(source.bundle.with_mode(Mode::Check));
    let task =
        Task { id: "load-check".into(), domain: "load-check".into(), instruction: String::new(), input: String::new() };
    let report = rt.solve(&checking, &task, opts).await?;
    Ok(match report.outcome {
        CallOutcome::Ok(a) if a.output == "loaded" => Checked::Loaded,
        CallOutcome::Ok(a) if a.output == "load-error" => {
            match a.notes.as_deref().and_then(|n| serde_json::from_str::<LoadError>(n).ok()) {
                Some(e) => Checked::LoadError(e),
                None => Checked::LoadError(LoadError {
                    kind: "exception".into(),
                    file: String::new(),
                    line: 0,
                    message: "the loader reported an error it could not describe".into(),
                }),
            }
        }
        CallOutcome::Ok(a) => Checked::LoadError(LoadError {
            kind: "exception".into(),
            file: String::new(),
            line: 0,
            message: format!("unexpected answer to the load check: {}", a.output),
        }),
        CallOutcome::GuestError(m) => {
            Checked::LoadError(LoadError { kind: "exception".into(), file: String::new(), line: 0, message: m })
        }
        CallOutcome::Failed(f) => Checked::Failed(f),
    })
}

/// Code to run on an interpreter that no variant brought: what a grader
/// hands [`run_function`].
#[derive(Debug, Clone)]
pub struct Code {
    /// The interpreter's sha256 (from [`crate::build::interpreter`]).
    pub interpreter: String,
    /// The files, relative paths (`src/solution.py`).
    pub files: Vec<TreeFile>,
    /// The module to import (`solution` for `src/solution.py`).
    pub module: String,
    /// The function to call with the input.
    pub function: String,
}

/// Load `code` on a fresh interpreter instance and call `function(input)`
/// under `limits` and nothing but `log`: the answer's `output` is `str()`
/// of what it returned ("" for `None`). An exception (at import or in the
/// call) is a [`CallOutcome::GuestError`] with the file, line and message;
/// a limit hit is a [`CallOutcome::Failed`] of its kind, as for a variant.
///
/// The interpreter must have been built on this machine (or be in the
/// runtime's compile cache). Errors: [`Error::Invalid`] for bad code (paths,
/// size) or a missing interpreter; host errors.
pub async fn run_function(
    rt: &Runtime,
    code: &Code,
    input: &str,
    limits: Limits,
) -> Result<CallReport<crate::runtime::bindings::Answer>> {
    let p = prepare_function(rt, code, limits).await?;
    let task = Task { id: "run".into(), domain: "run".into(), instruction: String::new(), input: input.to_string() };
    rt.solve(&p, &task, &CallOptions::default()).await
}

/// `code` loaded and linked as [`run_function`] runs it (`function(input)`
/// on `solve`, nothing granted but `log`), for a caller that needs its own
/// [`CallOptions`] (a grader linking two instances, [`peer`]).
///
/// Errors: as [`run_function`].
pub async fn prepare_function(rt: &Runtime, code: &Code, limits: Limits) -> Result<crate::runtime::Prepared> {
    let mut files = code.files.clone();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let bundle = Interpreted {
        language: InterpLanguage::Python,
        interpreter: code.interpreter.clone(),
        module: code.module.clone(),
        mode: Mode::Function(code.function.clone()),
        imports: vec![
            format!("vivarium:agent/log@{}", crate::caps::imports::AGENT_VERSION),
            format!("vivarium:agent/types@{}", crate::caps::imports::AGENT_VERSION),
        ],
        manifest: None,
        files,
    };
    bundle.validate()?;
    let loaded = rt.load(&bundle.to_bytes()).await?;
    rt.prepare(&loaded, Grant::minimal(limits))
}

/// Directories where interpreter components are kept by sha256
/// (`<dir>/<sha256>.wasm`), registered by the builder that put them there
/// and by sessions: where the runtime finds an interpreter's bytes when its
/// compiled code is not cached.
static STORES: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Look for interpreters in `dir` (`<dir>/<sha256>.wasm`) too.
pub fn register_store(dir: &std::path::Path) {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut stores = STORES.lock().expect("interpreter stores lock");
    if !stores.contains(&dir) {
        stores.push(dir);
    }
}

/// The sha256 of the component this machine keeps for the interpreter
/// `name` (an id: `<store>/<name>.id`; or a component's own sha256, as
/// bundles made before ids name it), `None` when no registered store knows
/// it.
pub fn component_sha256(name: &str) -> Option<String> {
    let stores = STORES.lock().expect("interpreter stores lock").clone();
    for dir in &stores {
        if let Ok(text) = std::fs::read_to_string(dir.join(format!("{name}.id"))) {
            let sha = text.trim();
            if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(sha.to_string());
            }
        }
        if dir.join(format!("{name}.wasm")).is_file() {
            return Some(name.to_string());
        }
    }
    None
}

/// The bytes of interpreter `sha` from a registered store, checked against
/// the sha256 (a damaged copy is removed, so the next build makes it again).
///
/// Errors: [`Error::Invalid`] naming `vivarium build` and
/// `scripts/setup.sh` when no store has it, or only a damaged copy.
pub fn interpreter_bytes(sha: &str) -> Result<Vec<u8>> {
    let stores = STORES.lock().expect("interpreter stores lock").clone();
    let mut damaged = None;
    for dir in &stores {
        let path = dir.join(format!("{sha}.wasm"));
        let Ok(bytes) = std::fs::read(&path) else { continue };
        if hex::encode(Sha256::digest(&bytes)) == sha {
            return Ok(bytes);
        }
        let _ = std::fs::remove_file(&path);
        damaged = Some(path);
    }
    let why = match damaged {
        Some(p) => format!("its copy at {} was damaged and has been removed", p.display()),
        None => format!(
            "it is in none of {}",
            if stores.is_empty() {
                "the interpreter stores (none registered)".to_string()
            } else {
                stores.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            }
        ),
    };
    Err(Error::invalid(format!(
        "the interpreter {sha} this variant runs on is not available on this machine ({why}). \
         Build the variant again (`vivarium build <dir>`, which builds the interpreter; componentize-py \
         comes from `bash {}`)",
        crate::build::support::SETUP_SCRIPT
    )))
}
