//! Out-of-process compilation (`vivarium::runtime::compile`): a runtime
//! given the `vivarium` binary compiles untrusted components in a child
//! process (`vivarium __compile`), stores the artifact with its sha256
//! sidecar in the compile cache and loads it from there; a compile past the
//! timeout is killed and refused with a typed error, and the host carries on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use vivarium::runtime::compile::Compiler;
use vivarium::runtime::{Runtime, RuntimeConfig};
use vivarium::Error;

/// A component with a few core modules and instances (component text).
const COMPONENT: &str = include_str!("../../../tests/hostile/38-memory-split-across-instances.wat");
/// One with more core instances than the pool allows: the child compiles it,
/// the parent's deserialize refuses it.
const OVER_THE_POOL: &str = include_str!("../../../tests/hostile/37-many-core-instances.wat");

fn runtime(cache: &Path, compiler: Compiler, timeout: Duration) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        compiler,
        compile_timeout: timeout,
        total_instances: 8,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn vivarium_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vivarium"))
}

/// Children of this process that run `__compile` and are not yet reaped.
fn live_compilers() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid …
        let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
        let mut fields = after.split_whitespace();
        let (state, ppid) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if ppid == me && state != "Z" && String::from_utf8_lossy(&cmdline).contains("__compile") {
            found.push(stat);
        }
    }
    found
}

#[tokio::test]
async fn untrusted_components_compile_in_a_child_process_that_is_killed_at_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let bytes = wat::parse_str(COMPONENT).unwrap();
    let sha = hex::encode(Sha256::digest(&bytes));

    // Compiled by the child, stored with its sidecar, loaded through the cache.
    let rt = runtime(&cache, Compiler::Process(vivarium_exe()), Duration::from_secs(120));
    let loaded = rt.load(&bytes).await.unwrap();
    assert_eq!(loaded.sha256, sha);
    let mut names: Vec<String> =
        std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with(&sha) && names[0].ends_with(".cwasm"), "{names:?}");
    let artifact = std::fs::read(cache.join(&names[0])).unwrap();
    let sidecar = std::fs::read_to_string(cache.join(&names[1])).unwrap();
    assert_eq!(sidecar.trim(), hex::encode(Sha256::digest(&artifact)), "the sidecar names the artifact");

    // The same bytes again: from the cache, no compiler needed.
    let cached = runtime(&cache, Compiler::Process(tmp.path().join("no-such-compiler")), Duration::from_secs(120));
    assert_eq!(cached.load(&bytes).await.unwrap().sha256, sha);

    // Invalid bytes: the child's verdict comes back as invalid input.
    let bad = wat::parse_str("(component (core module (func (result i32))))").unwrap();
    match rt.load(&bad).await {
        Err(Error::Invalid(msg)) => assert!(msg.starts_with("the component does not validate: "), "{msg}"),
        other => panic!("expected Invalid, got {:?}", other.map(|l| l.sha256)),
    }

    // Over the pool's limits: compiled by the child, refused by the parent
    // as invalid, and never cached.
    match rt.load(&wat::parse_str(OVER_THE_POOL).unwrap()).await {
        Err(Error::Invalid(msg)) => assert!(
            msg.contains("transitively contains 101 core module instances, which exceeds the configured maximum of 64"),
            "{msg}"
        ),
        other => panic!("expected Invalid, got {:?}", other.map(|l| l.sha256)),
    }
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 2, "nothing more was cached");

    // A compile past the timeout: killed, refused with the typed error. (The
    // timeout is tiny so any compile, even of this small component, is over
    // it; a component that takes minutes to compile ends the same way.)
    let tight = runtime(&tmp.path().join("cache-2"), Compiler::Process(vivarium_exe()), Duration::from_millis(1));
    match tight.load(&bytes).await {
        Err(Error::Invalid(msg)) => assert_eq!(
            msg,
            "compiling the component took longer than 1ms, so it was stopped; it is too large or too complex for \
             this host (make it smaller, or raise RuntimeConfig::compile_timeout)"
        ),
        other => panic!("expected the compile timeout, got {:?}", other.map(|l| l.sha256)),
    }
    // The child is gone (killed with SIGKILL, reaped in the background).
    let mut left = live_compilers();
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = live_compilers();
    }
    assert_eq!(left, Vec::<String>::new(), "no compiler process outlives its timeout");

    // The host carries on: the same runtime loads what its cache holds, and
    // a runtime with a sane timeout compiles again.
    std::fs::create_dir_all(tmp.path().join("cache-2")).unwrap();
    for name in &names {
        std::fs::copy(cache.join(name), tmp.path().join("cache-2").join(name)).unwrap();
    }
    assert_eq!(tight.load(&bytes).await.unwrap().sha256, sha);
    let other = wat::parse_str("(component (core module (func (export \"f\"))))").unwrap();
    assert!(rt.load(&other).await.is_ok());
}
