//! `vivarium init <dir> --lang rust|python|javascript|c|wat`: a ready
//! variant to start from.
//!
//! Every template is the language's example from `variants/` — the arith
//! agent (integer expressions, grammar switches its meta-agent turns on by
//! rewriting its own source) — embedded in the binary with `include_str!`,
//! so a template is exactly what the conformance suite (tests/all/conformance.rs)
//! checks: it builds, imports only `vivarium:agent/log`, solves, improves
//! itself, and its `spin` probe is stopped by the host's limits. `init`
//! renames it and adds a README on how to build, run and improve it.
//!
//! The Rust template depends on the guest SDK by an absolute path: the
//! `guest-sdk/` of the repository this binary was built from, or
//! `$VIVARIUM_GUEST_SDK`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::caps::manifest::validate_name;
use crate::caps::{Language, Manifest};
use crate::error::{Error, Result};
use crate::variant::MANIFEST;

/// One embedded template file: its path in the variant, its text.
type File = (&'static str, &'static str);

const RUST: &[File] = &[
    ("variant.toml", include_str!("../../variants/arith/variant.toml")),
    ("Cargo.toml", include_str!("../../variants/arith/Cargo.toml")),
    ("Cargo.lock", include_str!("../../variants/arith/Cargo.lock")),
    ("src/lib.rs", include_str!("../../variants/arith/src/lib.rs")),
];
const PYTHON: &[File] = &[
    ("variant.toml", include_str!("../../variants/arith-python/variant.toml")),
    ("src/agent.py", include_str!("../../variants/arith-python/src/agent.py")),
];
const JAVASCRIPT: &[File] = &[
    ("variant.toml", include_str!("../../variants/arith-javascript/variant.toml")),
    ("src/agent.js", include_str!("../../variants/arith-javascript/src/agent.js")),
];
const C: &[File] = &[
    ("variant.toml", include_str!("../../variants/arith-c/variant.toml")),
    ("src/agent.c", include_str!("../../variants/arith-c/src/agent.c")),
];
const WAT: &[File] = &[
    ("variant.toml", include_str!("../../variants/arith-wat/variant.toml")),
    ("src/agent.wat", include_str!("../../variants/arith-wat/src/agent.wat")),
];

/// The example each template is made from (for the README).
pub fn example_of(language: Language) -> &'static str {
    match language {
        Language::Rust => "variants/arith",
        Language::Python => "variants/arith-python",
        Language::Javascript => "variants/arith-javascript",
        Language::C => "variants/arith-c",
        Language::Wat => "variants/arith-wat",
    }
}

/// The file `improve` edits in each template.
pub fn self_path(language: Language) -> &'static str {
    match language {
        Language::Rust => "src/lib.rs",
        Language::Python => "src/agent.py",
        Language::Javascript => "src/agent.js",
        Language::C => "src/agent.c",
        Language::Wat => "src/agent.wat",
    }
}

/// What `init` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Initialized {
    /// The variant's directory.
    pub dir: PathBuf,
    /// The variant's name (its manifest's `name`).
    pub name: String,
    /// Its language.
    pub language: Language,
    /// The files written, relative to `dir`.
    pub files: Vec<String>,
}

/// The name `init` gives a variant in `dir` when none is given: the
/// directory's name, made safe (letters, digits, `-`, `_`; at most 64).
pub fn default_name(dir: &Path) -> String {
    let raw = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut name: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    name = name.trim_matches(|c| c == '-' || c == '_').to_string();
    name.truncate(64);
    if name.is_empty() {
        name = "agent".into();
    }
    name
}

/// The variant name taken from `dir`'s last component. Errors:
/// [`Error::Invalid`] when that component has characters a name cannot hold
/// beyond ASCII punctuation (`ünïcödé-агент` would silently become `n-c-d`),
/// suggesting `--name`.
fn name_from_dir(dir: &Path) -> Result<String> {
    let derived = default_name(dir);
    let raw = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if !raw.is_ascii() {
        return Err(Error::invalid(format!(
            "`{}` cannot be a variant name (ASCII letters, digits, `-` and `_` only; it would become `{derived}`); \
             pass --name, e.g. --name {}",
            raw.escape_debug(),
            if derived == "agent" || derived.len() < 3 { "my-agent" } else { derived.as_str() }
        )));
    }
    Ok(derived)
}

/// The files of the `language` template for a variant called `name`:
/// `(relative path, contents)`.
///
/// Errors: [`Error::Invalid`] for a bad name, or (Rust) when the guest SDK
/// cannot be found.
pub fn template(language: Language, name: &str) -> Result<Vec<(String, String)>> {
    validate_name(name).map_err(Error::invalid)?;
    let files = match language {
        Language::Rust => RUST,
        Language::Python => PYTHON,
        Language::Javascript => JAVASCRIPT,
        Language::C => C,
        Language::Wat => WAT,
    };
    let mut out = Vec::new();
    for (path, text) in files {
        let text = match *path {
            "variant.toml" => rename_manifest(text, name)?,
            "Cargo.toml" => rust_cargo_toml(text, name)?,
            "Cargo.lock" => rename_lock_root(text, "arith", &crate_name(name))?,
            _ => text.to_string(),
        };
        out.push((path.to_string(), text));
    }
    out.push(("README.md".into(), readme(language, name)));
    Ok(out)
}

/// Write the `language` template into `dir` (which must not exist, or be
/// empty), naming the variant `name` (default: [`default_name`]).
///
/// Errors: [`Error::Invalid`] when `dir` holds anything, the name is not
/// safe or (Rust) the guest SDK is missing; [`Error::Io`] when a file cannot
/// be written (what was written is removed again).
pub fn init(dir: &Path, language: Language, name: Option<&str>) -> Result<Initialized> {
    let name = match name {
        Some(n) => n.to_string(),
        None => name_from_dir(dir)?,
    };
    let files = template(language, &name)?;
    let existed = dir.exists();
    if existed && !dir.is_dir() {
        return Err(Error::invalid(format!(
            "{} is a file; `vivarium init` writes a new variant into an empty or new directory, so give another path",
            dir.display()
        )));
    }
    if existed {
        let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        if entries.next().is_some() {
            return Err(Error::invalid(format!(
                "{} is not empty; `vivarium init` writes a new variant into an empty or new directory",
                dir.display()
            )));
        }
    }
    let write_all = || -> Result<()> {
        for (rel, text) in &files {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
            }
            std::fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(())
    };
    if let Err(e) = write_all() {
        if existed {
            for (rel, _) in &files {
                let _ = std::fs::remove_file(dir.join(rel));
            }
            let _ = std::fs::remove_dir_all(dir.join("src"));
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
        return Err(e);
    }
    // The manifest written must load: the template and the name are checked.
    Manifest::load(dir.join(MANIFEST))?;
    Ok(Initialized { dir: dir.to_path_buf(), name, language, files: files.into_iter().map(|(p, _)| p).collect() })
}

/// The manifest text with `[variant] name` set to `name`.
fn rename_manifest(text: &str, name: &str) -> Result<String> {
    let mut done = false;
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            if !done && line.trim_start().starts_with("name =") {
                done = true;
                format!("name = \"{name}\"")
            } else {
                line.to_string()
            }
        })
        .collect();
    if !done {
        return Err(Error::Internal(anyhow::anyhow!("a template manifest has no `name =` line")));
    }
    let out = out.join("\n") + "\n";
    Manifest::parse(&out, "the template's variant.toml")?;
    Ok(out)
}

/// A cargo package name for the variant `name`: cargo refuses names that
/// start with a digit.
fn crate_name(name: &str) -> String {
    if name.starts_with(|c: char| c.is_ascii_digit()) || matches!(name, "test" | "core" | "std" | "alloc") {
        format!("v-{name}")
    } else {
        name.to_string()
    }
}

/// Where the guest SDK is: `$VIVARIUM_GUEST_SDK`, else `guest-sdk/` of the
/// repository this binary was built from.
pub fn guest_sdk() -> Result<PathBuf> {
    let found = match std::env::var_os("VIVARIUM_GUEST_SDK") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => crate::build::support::repo_root().map(|r| r.join("guest-sdk")),
    };
    match found {
        Some(p) if p.join("Cargo.toml").is_file() => {
            p.canonicalize().map_err(|e| Error::io(format!("resolving {}", p.display()), e))
        }
        _ => Err(Error::invalid(
            "the Rust template depends on the guest SDK (crate `vivarium-guest`), which is not where \
             this binary was built; set VIVARIUM_GUEST_SDK to its directory",
        )),
    }
}

/// The example's Cargo.toml with the package renamed and the guest SDK's
/// path made absolute.
fn rust_cargo_toml(text: &str, name: &str) -> Result<String> {
    let sdk = guest_sdk()?;
    let sdk = toml::Value::String(sdk.display().to_string()).to_string();
    let renamed = replace_once(text, "name = \"arith\"", &format!("name = \"{}\"", crate_name(name)))?;
    replace_once(&renamed, "path = \"../../guest-sdk\"", &format!("path = {sdk}"))
}

fn replace_once(text: &str, from: &str, to: &str) -> Result<String> {
    if text.matches(from).count() != 1 {
        return Err(Error::Internal(anyhow::anyhow!("the Rust template does not hold `{from}` exactly once")));
    }
    Ok(text.replacen(from, to, 1))
}

/// The lock file with the root package `old` renamed to `new`, its
/// `[[package]]` entries re-sorted by name as cargo writes them (so that
/// `cargo build --locked` accepts it unchanged).
pub fn rename_lock_root(lock: &str, old: &str, new: &str) -> Result<String> {
    let Some(first) = lock.find("[[package]]") else {
        return Err(Error::Internal(anyhow::anyhow!("the template's Cargo.lock has no packages")));
    };
    let (header, body) = lock.split_at(first);
    let mut blocks: Vec<String> = body.trim_end().split("\n\n").map(str::to_string).collect();
    let old_line = format!("name = \"{old}\"\n");
    let hits = blocks.iter().filter(|b| b.contains(&old_line)).count();
    if hits != 1 {
        return Err(Error::Internal(anyhow::anyhow!("the template's Cargo.lock names `{old}` {hits} times")));
    }
    for b in &mut blocks {
        if b.contains(&old_line) {
            *b = b.replacen(&old_line, &format!("name = \"{new}\"\n"), 1);
        }
    }
    let key = |b: &String| {
        let field = |f: &str| {
            b.lines()
                .find_map(|l| l.strip_prefix(&format!("{f} = \"")).and_then(|v| v.strip_suffix('"')))
                .unwrap_or_default()
                .to_string()
        };
        (field("name"), field("version"))
    };
    blocks.sort_by_key(key);
    Ok(format!("{header}{}\n", blocks.join("\n\n")))
}

fn readme(language: Language, name: &str) -> String {
    let example = example_of(language);
    let self_path = self_path(language);
    let (build, notes) = match language {
        Language::Rust => (
            "cargo for `wasm32-wasip2` inside the build sandbox (`--offline --locked`); a warm rebuild takes about a second",
            "`Cargo.toml`, `Cargo.lock` and `build.rs` are protected: a child may not add dependencies or build scripts.",
        ),
        Language::Python => (
            "milliseconds: the variant is a bundle for the host's shared Python interpreter, which is built once per machine (componentize-py, installed by scripts/setup.sh; ~20 s) and compiled once",
            "The variant runs on the shared Python interpreter: `src/` is handed to it as read-only data when an instance starts and `src/agent.py` is imported (classes `TaskAgent` and `MetaAgent`); other modules under `src/` import as usual. `import vivarium` gives the SDK: `vivarium.log`, `vivarium.llm`, `vivarium.memory`, `vivarium.archive`, `vivarium.simulator`, `vivarium.trainer` (each raises `NotGranted` unless `variant.toml` requests it) and `vivarium.source` (read your own tree, write a proposal's edits). `print()` and `logging` go to the host log. The standard library is there, preloaded; packages outside it are not (`builder = \"componentize\"` builds a component of its own instead). A syntax error or an exception at import is reported with its file and line.",
        ),
        Language::Javascript => (
            "ComponentizeJS (`tools/js`, installed with `npm ci` by scripts/setup.sh) inside the build sandbox; 15-60 s cold, cached by content after",
            "Every engine feature (stdio, random, clocks, http, fetch-event) is disabled: the component imports no WASI, only `vivarium:agent/log`. Log with `log(level, message)` from `vivarium:agent/log@0.1.0`. Export `taskAgent` and `metaAgent` from `src/agent.js`.",
        ),
        Language::C => (
            "clang for `wasm32-wasi` with wasi-libc (apt packages, installed by scripts/setup.sh) inside the build sandbox, then wit-component with the preview1 reactor adapter; about a second",
            "`agent.h` is generated by the builder from the host's WIT (wit-bindgen C bindings); every `src/*.c` is compiled. Strings returned to the host must be heap-allocated (`agent_string_dup`). The template uses no stdio, so it imports no WASI.",
        ),
        Language::Wat => (
            "parsed in process (no toolchain); milliseconds",
            "`src/agent.wat` is a core module exporting the canonical-ABI names of the `agent` world; the builder wraps it into a component with the host's WIT.",
        ),
    };
    format!(
        "# {name}\n\n\
         A {language} Vivarium variant, made by `vivarium init` from `{example}`: an agent that\n\
         evaluates integer expressions (`(3+4)*12 - 7` → `77`) with checked 64-bit arithmetic,\n\
         and a meta-agent that improves it by editing its own source (`{self_path}`): each\n\
         `improve` turns on one grammar switch (DIVISION, REMAINDER, UNARY_MINUS, POWER) — the\n\
         one the feedback asks for (\"needs DIVISION\"), else the next one off — and bumps\n\
         GENERATION.\n\n\
         ## Build, run, improve\n\n\
         ```sh\n\
         vivarium build .                       # {build}\n\
         vivarium inspect .                     # its imports, exports, sha256 and grant\n\
         echo '{{\"id\":\"t1\",\"domain\":\"arith\",\"instruction\":\"evaluate\",\"input\":\"(3+4)*12 - 7\"}}' > task.json\n\
         vivarium run . --task task.json        # 77\n\
         vivarium improve . --out ../{name}-child --feedback \"t2: operator '/' is not supported: needs DIVISION\"\n\
         ```\n\n\
         The input `spin` makes `solve` loop forever: it shows the host's limits at work\n\
         (`vivarium run` reports `out-of-fuel` or `deadline`). Limits and capabilities are in\n\
         `variant.toml`; the operator's policy caps them.\n\n\
         ## Notes\n\n{notes}\n\n\
         The conformance suite (`cargo test -p vivarium-tests --test all conformance::`) checks this\n\
         template: it builds, imports only what it should, solves, improves itself into a child\n\
         that builds and runs, and its `spin` ends in a limit.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_safe() {
        assert_eq!(default_name(Path::new("/tmp/My Agent!")), "my-agent");
        assert_eq!(default_name(Path::new("/tmp/x_1")), "x_1");
        assert!(validate_name(&default_name(Path::new("/"))).is_ok());
    }

    #[test]
    fn every_template_has_a_manifest_that_loads() {
        for lang in Language::ALL {
            if lang == Language::Rust && guest_sdk().is_err() {
                continue;
            }
            let files = template(lang, "my-agent").unwrap();
            let manifest = &files.iter().find(|f| f.0 == "variant.toml").unwrap().1;
            let m = Manifest::parse(manifest, "t").unwrap();
            assert_eq!(m.variant.name, "my-agent");
            assert_eq!(m.variant.language, lang);
            assert!(files.iter().any(|f| f.0 == self_path(lang)), "{lang}");
            assert!(files.iter().any(|f| f.0 == "README.md"), "{lang}");
        }
    }

    #[test]
    fn lock_root_is_renamed_and_sorted() {
        let lock = "version = 4\n\n[[package]]\nname = \"arith\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"b\"\nversion = \"1.0.0\"\n";
        let out = rename_lock_root(lock, "arith", "zed").unwrap();
        assert_eq!(
            out,
            "version = 4\n\n[[package]]\nname = \"b\"\nversion = \"1.0.0\"\n\n[[package]]\nname = \"zed\"\nversion = \"0.1.0\"\n"
        );
        // The real lock file round-trips unchanged when nothing is renamed.
        let real = include_str!("../../variants/arith/Cargo.lock");
        assert_eq!(rename_lock_root(real, "arith", "arith").unwrap(), real);
    }

    #[test]
    fn init_refuses_a_non_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "").unwrap();
        assert!(matches!(init(dir.path(), Language::Wat, None), Err(Error::Invalid(_))));
        let fresh = dir.path().join("new-one");
        let done = init(&fresh, Language::Wat, None).unwrap();
        assert_eq!(done.name, "new-one");
        assert!(fresh.join("src/agent.wat").is_file());
    }
}
