//! The C builder: wit-bindgen C bindings generated in process, Debian clang
//! with wasi-libc for `wasm32-wasi`, and `wit-component` with the preview1
//! reactor adapter.
//!
//! 1. The bindings for the `agent` world (`agent.h`, `agent.c`,
//!    `agent_component_type.o`) are generated **by the builder, in process**,
//!    with the `wit-bindgen-c` crate (0.60, the release on the host's
//!    wit-parser 0.254) from the WIT embedded in the host — so they always
//!    match the contract the host implements, need no `wit-bindgen` CLI, and
//!    are not part of the variant's tree (a variant holds only its own
//!    `src/*.c` and `src/*.h`, which `#include "agent.h"`).
//! 2. `clang --target=wasm32-wasi -mexec-model=reactor` compiles the
//!    variant's `src/*.c` with the bindings into a core module, inside the
//!    build sandbox (reads the tree, the staging directory, clang's LLVM
//!    installation and the wasi-libc sysroot — not `/usr/include` or
//!    `/usr/local/include`, which clang also searches; writes only the
//!    staging directory; no network).
//! 3. `wit-component` turns the module into a component in process,
//!    adapting wasi-libc's preview1 imports with the reactor adapter of
//!    `wasi-preview1-component-adapter-provider` (pinned to the host's
//!    wasmtime). The linker keeps only the imports the code calls, so a
//!    variant that never calls `llm` does not import it, and the adapter
//!    imports only the WASI interfaces libc needs.
//!
//! Install (scripts/setup.sh): `apt-get install clang lld wasi-libc
//! libclang-rt-14-dev-wasm32`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::support::{self, ERROR_TAIL_LINES};
use super::BuildOutput;
use crate::error::{Error, Result};

/// The world the bindings are generated for (also the header's name).
pub const WORLD: &str = "agent";

/// `RLIMIT_AS` of clang and wasm-ld.
const MEMORY: u64 = 8 << 30;

/// clang's flags besides the inputs and the output.
const CFLAGS: &[&str] = &[
    "--target=wasm32-wasi",
    "-mexec-model=reactor",
    "-O2",
    "-g0",
    "-std=c11",
    "-Wall",
    "-Wno-unused-function",
    "-fno-common",
];

/// The toolchain found on this machine.
#[derive(Debug, Clone)]
struct Toolchain {
    clang: PathBuf,
    /// clang's version line and the size and time of wasi-libc's files.
    version: String,
    /// What clang may read in the sandbox: its LLVM installation (or, when
    /// that is a prefix such as `/usr`, its own file, resource directory and
    /// `wasm-ld`), and the wasi-libc headers and libraries; never
    /// `/usr/include` or `/usr/local/include`, which clang also searches.
    read_only: Vec<PathBuf>,
}

/// What clang reads when it compiles and links for wasm32-wasi, from its
/// own answers (`-print-resource-dir`, `-print-prog-name=wasm-ld`, the
/// include and library search lists): the files of the toolchain only.
fn toolchain_paths(clang: &Path) -> Vec<PathBuf> {
    // Answers on stdout; `-v` speaks on stderr.
    let ask = |args: &[&str], both: bool| {
        let mut c = Command::new(clang);
        c.args(args);
        let limit = Duration::from_secs(30);
        if both { support::probe_log(c, limit) } else { support::probe(c, limit) }.unwrap_or_default()
    };
    let mut out: Vec<PathBuf> = Vec::new();
    let push = |p: PathBuf, out: &mut Vec<PathBuf>| {
        if let Ok(p) = p.canonicalize() {
            if !super::sandbox::is_broad(&p) && !out.contains(&p) {
                out.push(p);
            }
        }
    };
    let file = clang.canonicalize().unwrap_or_else(|_| clang.to_path_buf());
    // /usr/lib/llvm-14 for /usr/lib/llvm-14/bin/clang.
    match file.parent().and_then(Path::parent).and_then(support::own_dir) {
        Some(install) => push(install, &mut out),
        None => push(file, &mut out),
    }
    push(PathBuf::from(ask(&["-print-resource-dir"], false).trim()), &mut out);
    let linker = ask(&["--target=wasm32-wasi", "-print-prog-name=wasm-ld"], false);
    if let Some(ld) = super::sandbox::program_file(linker.trim()) {
        push(ld, &mut out);
    }
    // The wasi-libc sysroot: the search entries that belong to wasi.
    let includes = ask(&["--target=wasm32-wasi", "-E", "-v", "-x", "c", "/dev/null", "-o", "/dev/null"], true);
    let libraries = ask(&["--target=wasm32-wasi", "-print-search-dirs"], false);
    let listed = includes
        .lines()
        .skip_while(|l| !l.contains("search starts here"))
        .take_while(|l| !l.starts_with("End of search list"))
        .filter(|l| l.starts_with(' '))
        .map(|l| l.trim().to_string())
        .chain(
            libraries
                .lines()
                .filter_map(|l| l.strip_prefix("libraries: ="))
                .flat_map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>()),
        );
    for dir in listed {
        if dir.contains("wasi") {
            push(PathBuf::from(dir), &mut out);
        }
    }
    out
}

/// Find clang and check that it can target wasm32-wasi (wasi-libc
/// installed), once per process.
fn toolchain() -> Result<&'static Toolchain> {
    static FOUND: OnceLock<std::result::Result<Toolchain, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let clang = std::env::var_os("VIVARIUM_CLANG")
                .map(PathBuf::from)
                .or_else(|| {
                    ["/usr/bin/clang", "/usr/bin/clang-14", "/usr/local/bin/clang"]
                        .iter()
                        .map(PathBuf::from)
                        .find(|p| p.is_file())
                })
                .ok_or_else(|| "no clang in /usr/bin (set VIVARIUM_CLANG to use another)".to_string())?;
            let version = support::probe(
                {
                    let mut c = Command::new(&clang);
                    c.arg("--version");
                    c
                },
                Duration::from_secs(30),
            )?;
            let libc = ["/usr/lib/wasm32-wasi/libc.a", "/usr/share/wasi-sysroot/lib/wasm32-wasi/libc.a"];
            if !libc.iter().any(|p| Path::new(p).is_file()) {
                return Err("wasi-libc is missing (no /usr/lib/wasm32-wasi/libc.a)".into());
            }
            let reactor = ["/usr/lib/wasm32-wasi/crt1-reactor.o"];
            if !reactor.iter().any(|p| Path::new(p).is_file()) {
                return Err("wasi-libc has no reactor start file (crt1-reactor.o)".into());
            }
            let mut version = version.lines().next().unwrap_or_default().to_string();
            for p in libc.iter().chain(&reactor) {
                if let Ok(m) = std::fs::metadata(p) {
                    let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                    version.push_str(&format!("\n{p} {} {}", m.len(), mtime.map(|t| t.as_nanos()).unwrap_or(0)));
                }
            }
            let read_only = toolchain_paths(&clang);
            Ok(Toolchain { clang, version, read_only })
        })
        .as_ref()
        .map_err(|e| support::missing_toolchain("C", "clang for wasm32-wasi with wasi-libc", e))
}

/// Generate the C bindings of the `agent` world: `(file name, bytes)` for
/// `agent.h`, `agent.c` and `agent_component_type.o`.
pub fn bindings() -> Result<Vec<(String, Vec<u8>)>> {
    let (mut resolve, world) = crate::wit::resolve().map_err(Error::Internal)?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .map_err(|e| Error::Internal(anyhow::anyhow!("generating the C bindings: {e:#}")))?;
    Ok(files.iter().map(|(name, bytes)| (name.to_string(), bytes.to_vec())).collect())
}

/// Build the C variant in `dir` (its `src/*.c`) into a component, under
/// `target_dir/c/`, within `timeout`. Always sandboxed.
///
/// Errors: [`Error::Invalid`] for a compile or link error (with clang's
/// output), a missing toolchain (naming `scripts/setup.sh`) or a timeout;
/// [`Error::Refused`] when the sandbox cannot be set up or the build reached
/// outside it.
pub fn build_c(dir: &Path, target_dir: &Path, timeout: Duration) -> Result<BuildOutput> {
    let started = Instant::now();
    let deadline = started + timeout;
    let dir = &support::absolute(dir)?;
    support::check_tree_outside(dir, target_dir)?;
    let sources = support::source_files(dir)?;
    let c_files: Vec<&PathBuf> = sources.iter().filter(|(rel, _)| rel.ends_with(".c")).map(|(_, p)| p).collect();
    if c_files.is_empty() {
        return Err(Error::invalid(format!(
            "{} has no src/*.c: a C variant keeps its source there and `#include \"agent.h\"` (generated by the builder)",
            dir.display()
        )));
    }
    let tc = toolchain()?;
    let key = cache_key(dir, tc)?;
    let (out_path, _held) = match support::lookup(target_dir, "c", &key, started)? {
        Ok(hit) => return Ok(hit),
        Err(miss) => miss,
    };

    let staging = support::staging_dir(target_dir, "c")?;
    let gen = staging.path().join("bindings");
    std::fs::create_dir_all(&gen).map_err(|e| Error::io(format!("creating {}", gen.display()), e))?;
    for (name, bytes) in bindings()? {
        std::fs::write(gen.join(&name), bytes).map_err(|e| Error::io(format!("writing {name}"), e))?;
    }
    let core = staging.path().join("core.wasm");
    let mut cmd = Command::new(&tc.clang);
    cmd.args(CFLAGS)
        .arg("-I")
        .arg(&gen)
        .arg("-I")
        .arg(dir.join("src"))
        .args(&c_files)
        .arg(gen.join(format!("{WORLD}.c")))
        .arg(gen.join(format!("{WORLD}_component_type.o")))
        .arg("-o")
        .arg(&core)
        .current_dir(staging.path());
    let sandbox = support::toolchain_sandbox(dir, staging.path(), &tc.read_only, MEMORY);
    let log = support::run_in_sandbox(cmd, &sandbox, deadline, timeout, "clang", dir)?;
    let module = std::fs::read(&core).map_err(|e| Error::io(format!("reading {}", core.display()), e))?;
    let component = module_to_component(&module).map_err(|e| {
        Error::invalid(format!(
            "turning the C module into a component failed: {e:#}\n(clang's output:\n{})",
            super::rust::tail_lines(&log, ERROR_TAIL_LINES)
        ))
    })?;
    support::store(&out_path, component, log, started, "the C build")
}

/// The cache key of a C build of `dir`: every file of the tree (a header
/// included from outside `src/`, from a dot-directory, a prompt under
/// `prompts/`: whatever clang may read there), the toolchain, the flags,
/// the bindings' generator, the adapter and the WIT.
fn cache_key(dir: &Path, tc: &Toolchain) -> Result<String> {
    support::cache_key(
        &[
            ("builder", b"c-2"),
            ("clang", tc.version.as_bytes()),
            ("wit-bindgen-c", b"0.60.0"),
            ("adapter", wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER),
            ("cflags", CFLAGS.join(" ").as_bytes()),
            ("wit-types", crate::wit::FILES[0].1.as_bytes()),
            ("wit-services", crate::wit::FILES[1].1.as_bytes()),
        ],
        &support::tree_files(dir)?,
    )
}

/// Wrap a wasm32-wasi reactor module carrying the `agent` component type
/// into a component, adapting its preview1 imports.
pub fn module_to_component(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    use wasi_preview1_component_adapter_provider as adapter;
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)?
        .adapter(adapter::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)?
        .encode()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use crate::build::support::tests::{assert_every_kind_changes, assert_unreadable, host_files, KINDS};
    use crate::error::Error;

    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
    }

    fn target_dir() -> PathBuf {
        crate::build::default_guest_target_dir(&workspace_root())
    }

    /// A copy of `variants/arith-c` whose `agent.c` starts with `prelude`
    /// and whose answers' notes begin with `PROBE` when `probe` is set.
    fn arith_c(prelude: &str, probe: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let src = workspace_root().join("variants/arith-c");
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::copy(src.join("variant.toml"), dir.path().join("variant.toml")).unwrap();
        let mut text = std::fs::read_to_string(src.join("src/agent.c")).unwrap();
        if probe {
            let at = "  put_str(&notes, \"arith generation \");";
            assert!(text.contains(at));
            text = text.replace(at, &format!("  put_str(&notes, PROBE);\n{at}"));
        }
        std::fs::write(dir.path().join("src/agent.c"), format!("{prelude}\n{text}")).unwrap();
        dir
    }

    fn sha(bytes: &[u8]) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(bytes))
    }

    #[test]
    fn a_c_child_including_files_outside_src_gets_a_new_sha() {
        // Each kind of file is a string literal the code includes.
        let prelude = KINDS
            .iter()
            .map(|rel| {
                let from_src = rel.strip_prefix("src/").map(str::to_string).unwrap_or_else(|| format!("../{rel}"));
                format!("#include \"{from_src}\"\n")
            })
            .collect::<String>();
        let dir = arith_c(&format!("static const char PROBE[] =\n{prelude};"), true);
        let build = |d: &Path| {
            let out = super::build_c(d, &target_dir(), Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
            // The component carries what the tree says now.
            let notes = std::fs::read_to_string(d.join(KINDS[0])).unwrap();
            let notes = notes.trim().trim_matches('"');
            assert!(out.component.windows(notes.len()).any(|w| w == notes.as_bytes()), "{notes:?} is not in it");
            sha(&out.component)
        };
        assert_every_kind_changes(dir.path(), |text| format!("\"{text} \"\n"), build);
    }

    #[test]
    fn a_c_child_including_a_file_under_usr_local_is_refused() {
        if crate::build::sandbox::support().landlock_abi < 1 {
            eprintln!("skipped: no Landlock on this kernel");
            return;
        }
        let name = format!("vivarium-sandbox-probe-{}.h", std::process::id());
        let header = Path::new("/usr/local/include").join(&name);
        if std::fs::write(&header, "#define SECRET \"held-out answer 42\"\n").is_err() {
            eprintln!("skipped: /usr/local/include is not writable here");
            return;
        }
        let _planted = crate::build::support::tests::Installed(vec![header.clone()]);
        // By path, and through clang's own search list (which holds
        // /usr/local/include and /usr/include).
        for include in [format!("\"{}\"", header.display()), format!("<{name}>")] {
            let dir = arith_c(&format!("#include {include}\nstatic const char *LEAK = SECRET;"), false);
            match super::build_c(dir.path(), &target_dir(), Duration::from_secs(300)) {
                Err(Error::Refused { what, detail }) => {
                    assert_eq!(what, [crate::build::sandbox::REFUSED_SANDBOX], "{detail}");
                    assert!(detail.contains(&name) && detail.contains("Permission denied"), "{detail}");
                    assert!(!detail.contains("held-out answer"), "the header leaked: {detail}");
                }
                other => panic!("{include}: expected a sandbox refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn clang_in_its_sandbox_reads_no_installed_binary() {
        let tc = super::toolchain().unwrap();
        let dir = arith_c("", false);
        let staging = tempfile::tempdir().unwrap();
        let sandbox =
            crate::build::support::toolchain_sandbox(dir.path(), staging.path(), &tc.read_only, super::MEMORY);
        let (_installed, _fake_home, files) = host_files();
        std::fs::write(dir.path().join("notes.txt"), "notes\n").unwrap();
        assert_unreadable(&sandbox, &dir.path().join("notes.txt"), &files, |f| {
            let source = staging.path().join(format!("{}.c", f.file_name().unwrap().to_string_lossy()));
            std::fs::write(&source, format!("#include \"{}\"\n", f.display())).unwrap();
            let mut cmd = std::process::Command::new(&tc.clang);
            cmd.args(["--target=wasm32-wasi", "-E"]).arg(source);
            cmd
        });
    }

    #[test]
    fn bindings_are_generated_in_process() {
        let files = super::bindings().unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
        assert!(names.contains(&"agent.h") && names.contains(&"agent.c"), "{names:?}");
        assert!(names.contains(&"agent_component_type.o"), "{names:?}");
        let header = &files.iter().find(|f| f.0 == "agent.h").unwrap().1;
        let header = String::from_utf8_lossy(header);
        assert!(header.contains("exports_vivarium_agent_task_agent_solve"));
        if let Ok(dir) = std::env::var("VIVARIUM_DUMP_C_BINDINGS") {
            for (name, bytes) in &files {
                std::fs::write(std::path::Path::new(&dir).join(name), bytes).unwrap();
            }
        }
    }
}
