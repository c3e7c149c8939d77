//! The conformance suite: every language's example in `variants/` and every
//! `vivarium init` template meets the same contract.
//!
//! For each of Rust, Python, JavaScript, C and WAT, on the example and on a
//! freshly written template:
//!
//! * **builds** with the language's builder (inside the build sandbox);
//! * **inspect** shows the expected imports and no more: `vivarium:agent/log`
//!   and `types` only (Rust for `wasm32-wasip2` also imports `wasi:cli` and
//!   `wasi:io`, nothing else: never `wasi:sockets`, never an ungranted
//!   service), and both agent exports;
//! * **solve** gives the reference evaluator's answers
//!   ([`vivarium::tasks::arith::eval`]) on baseline tasks, and names the
//!   switch it needs on a task beyond its grammar;
//! * **improve** yields a child (through the guard and a sandboxed build)
//!   that edits the variant's own source, builds, runs, and solves the task
//!   its parent could not;
//! * **limits hold**: the `spin` input loops forever and ends in
//!   `out-of-fuel` (or `deadline`), and the host keeps serving.
//!
//! A language whose toolchain is missing fails here with the builder's
//! message, which names `scripts/setup.sh` (CI runs it first): nothing is
//! skipped.
//!
//! Builds go to the workspace's `target/guests-sandboxed`; compiled code is
//! cached in `target/conformance-cache`, so a second run of this suite
//! compiles nothing. Each test prints its measurements (build time and
//! size, first and cached load) to stderr: run with `--nocapture` to see
//! them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vivarium::caps::{Language, Manifest, Overrides};
use vivarium::home::Home;
use vivarium::improve::{improve, ImproveRequest};
use vivarium::runtime::bindings::Task;
use vivarium::runtime::{CallOptions, CallOutcome, Runtime, RuntimeConfig};
use vivarium::tasks::arith::eval;
use vivarium::variant::{build_variant, Session, MANIFEST};
use vivarium::GuestFailureKind;
use vivarium_tests::{guest_target, workspace_root};

/// Tasks the baseline grammar (`+ - *`, parentheses) handles.
const BASELINE: &[&str] = &["1+2", "(3+4)*12 - 7", "2*3*4 - 5", "100 - 3*(4+5)", " 42 ", "9223372036854775807 * 1"];
/// Tasks a child with DIVISION handles.
const WITH_DIVISION: &[&str] = &["84 / 4", "7 / 2 + 10", "(100 - 1) / 3 * 2"];

/// The example of each language.
fn example(language: Language) -> PathBuf {
    workspace_root().join(vivarium::init::example_of(language))
}

/// A session on a fresh home whose builds go to the shared sandboxed target
/// directory and whose compiled code is cached across runs of this suite.
fn session(home: &Path) -> Session {
    let mut s = Session::open(Home::at(home)).expect("session");
    s.guest_target_dir = guest_target();
    s.runtime = runtime();
    s
}

fn compile_cache() -> PathBuf {
    workspace_root().join("target/conformance-cache")
}

/// Compiles may take up to 10 minutes: an interpreter of 12-18 MB compiled
/// with Cranelift on a loaded two-core CI machine can pass the default
/// 120 s, and this suite is not about that bound (`host/tests/all/compile.rs`
/// is).
fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(compile_cache()),
        compile_timeout: std::time::Duration::from_secs(600),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

fn task(id: &str, input: &str) -> Task {
    Task {
        id: id.into(),
        domain: "arith".into(),
        instruction: "Evaluate the integer expression; answer with the number only.".into(),
        input: input.into(),
    }
}

/// The imports a variant of `language` may have besides `log` and `types`.
fn extra_import_allowed(language: Language, import: &str) -> bool {
    match language {
        // The standard library for wasm32-wasip2 imports cli and io.
        Language::Rust => import.starts_with("wasi:cli/") || import.starts_with("wasi:io/"),
        // ComponentizeJS with every feature off, C without stdio and
        // hand-written WAT import no WASI at all; a Python variant declares
        // `log` and `types` (the shared interpreter's WASI is the grant's).
        _ => false,
    }
}

/// Everything the suite checks, on the variant in `dir`.
async fn check_variant(language: Language, label: &str, dir: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let session = session(&tmp.path().join("home"));
    let manifest = Manifest::load(dir.join(MANIFEST)).unwrap();
    assert_eq!(manifest.variant.language, language, "{label}: the manifest's language");

    // Builds (a toolchain that is missing fails here, naming scripts/setup.sh).
    let started = Instant::now();
    let built = {
        let (d, m, t) = (dir.to_path_buf(), manifest.clone(), session.guest_target_dir.clone());
        tokio::task::spawn_blocking(move || build_variant(&d, &m, &t)).await.unwrap()
    }
    .unwrap_or_else(|e| panic!("{label}: the build failed: {e}"));
    let build_time = started.elapsed();
    // A component, or for Python and JavaScript the variant's bundle for
    // the shared interpreter (vivarium::interp).
    let bundle = vivarium::interp::Interpreted::parse(&built.component).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(
        wasmparser_is_component(&built.component) || bundle.is_some(),
        "{label}: the build output is a component or an interpreter bundle"
    );
    assert_eq!(
        bundle.is_some(),
        matches!(language, Language::Python | Language::Javascript),
        "{label}: Python and JavaScript build a bundle by default"
    );

    // First load (compiles, or reuses this suite's cache), then a cached load
    // on a fresh runtime: what the second run of a variant costs.
    let started = Instant::now();
    session.runtime.load(&built.component).await.unwrap_or_else(|e| panic!("{label}: load: {e}"));
    let first_load = started.elapsed();
    let again = runtime();
    let started = Instant::now();
    again.load(&built.component).await.unwrap();
    let cached_load = started.elapsed();
    eprintln!(
        "conformance {label}: build {:.2} s, {} bytes, first load {:.2} s, cached load {:.1} ms",
        build_time.as_secs_f64(),
        built.component.len(),
        first_load.as_secs_f64(),
        cached_load.as_secs_f64() * 1000.0
    );
    assert!(cached_load < Duration::from_secs(5), "{label}: a cached load must not recompile (took {cached_load:?})");

    // Inspect: the expected imports and no more; both agents exported.
    let inspection = session.inspect(dir, None).await.unwrap_or_else(|e| panic!("{label}: inspect: {e}"));
    assert!(inspection.is_agent, "{label}: exports both agents: {:?}", inspection.exports);
    assert!(inspection.refused.is_empty(), "{label}: the grant refuses {:?}", inspection.refused);
    assert!(
        inspection.imports.iter().any(|i| i == "vivarium:agent/log@0.1.0"),
        "{label}: imports log: {:?}",
        inspection.imports
    );
    for import in &inspection.imports {
        let expected = matches!(import.as_str(), "vivarium:agent/log@0.1.0" | "vivarium:agent/types@0.1.0")
            || extra_import_allowed(language, import);
        assert!(expected, "{label}: unexpected import {import} (all: {:?})", inspection.imports);
        assert!(!import.starts_with("wasi:sockets"), "{label}: imports {import}");
    }

    // Solve: the reference evaluator's answers on the baseline grammar.
    let opened = session.open_target(dir, None, &Overrides::default()).await.unwrap();
    let prepared = session.prepare(&opened).unwrap();
    let opts = CallOptions::default();
    for (i, input) in BASELINE.iter().enumerate() {
        let r = session.solve(&prepared, &task(&format!("b{i}"), input), &opts).await.unwrap();
        let expected = eval(input).unwrap().to_string();
        match &r.outcome {
            CallOutcome::Ok(a) => assert_eq!(a.output, expected, "{label}: {input}"),
            other => panic!("{label}: {input}: expected {expected}, got {other:?}"),
        }
    }
    let r = session.solve(&prepared, &task("d0", WITH_DIVISION[0]), &opts).await.unwrap();
    let feedback = match &r.outcome {
        CallOutcome::GuestError(m) => {
            assert!(m.contains("needs DIVISION"), "{label}: the error names the switch: {m}");
            format!("d0: {m}")
        }
        other => panic!("{label}: the baseline must not divide yet: {other:?}"),
    };
    let r = session.solve(&prepared, &task("e0", "(1+2"), &opts).await.unwrap();
    assert!(matches!(r.outcome, CallOutcome::GuestError(_)), "{label}: a malformed input is an err: {:?}", r.outcome);

    // Limits: `spin` loops forever and ends in a limit; the host goes on.
    let r = session.solve(&prepared, &task("spin", "spin"), &opts).await.unwrap();
    match &r.outcome {
        CallOutcome::Failed(f) => assert!(
            matches!(f.kind, GuestFailureKind::OutOfFuel | GuestFailureKind::Deadline),
            "{label}: spin ended in {f}"
        ),
        other => panic!("{label}: spin must end in a limit, got {other:?}"),
    }
    let r = session.solve(&prepared, &task("after", "6*7"), &opts).await.unwrap();
    assert!(matches!(&r.outcome, CallOutcome::Ok(a) if a.output == "42"), "{label}: still serves: {:?}", r.outcome);

    // Improve: a child that edits the variant's own source, builds and runs.
    let child = tmp.path().join("child");
    let req = ImproveRequest {
        parent: dir.to_path_buf(),
        out: child.clone(),
        feedback: feedback.clone(),
        iterations_left: 1,
        ..ImproveRequest::default()
    };
    let started = Instant::now();
    let outcome = improve(&session, &req).await.unwrap_or_else(|e| panic!("{label}: improve: {e}"));
    eprintln!(
        "conformance {label}: improve -> child {} in {:.2} s (child build {} ms)",
        &outcome.child[..12],
        started.elapsed().as_secs_f64(),
        outcome.build_ms
    );
    assert_eq!(outcome.edits, 1, "{label}: one edit");
    let own = vivarium::init::self_path(language);
    let before = std::fs::read_to_string(dir.join(own)).unwrap();
    let after = std::fs::read_to_string(child.join(own)).unwrap();
    assert_ne!(before, after, "{label}: the child's {own} differs from its parent's");
    let opened = session.open_target(&child, None, &Overrides::default()).await.unwrap();
    assert_eq!(opened.loaded.sha256, outcome.child, "{label}: the child is what improve built");
    let prepared = session.prepare(&opened).unwrap();
    for (i, input) in BASELINE.iter().chain(WITH_DIVISION).enumerate() {
        let r = session.solve(&prepared, &task(&format!("c{i}"), input), &opts).await.unwrap();
        let expected = eval(input).unwrap().to_string();
        match &r.outcome {
            CallOutcome::Ok(a) => assert_eq!(a.output, expected, "{label} child: {input}"),
            other => panic!("{label} child: {input}: expected {expected}, got {other:?}"),
        }
    }
}

fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00]
}

/// The example and a fresh `init` template of `language`.
async fn conformance(language: Language) {
    check_variant(language, &format!("{language} example"), &example(language)).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(format!("my-{language}-agent"));
    let done = vivarium::init::init(&dir, language, None).unwrap_or_else(|e| panic!("init --lang {language}: {e}"));
    assert_eq!(done.name, format!("my-{language}-agent"));
    assert!(dir.join("README.md").is_file());
    check_variant(language, &format!("{language} template"), &dir).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rust() {
    conformance(Language::Rust).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python() {
    conformance(Language::Python).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn javascript() {
    conformance(Language::Javascript).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn c() {
    conformance(Language::C).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wat() {
    conformance(Language::Wat).await;
}

/// `vivarium init` refuses what it cannot do, with exit code 2.
#[test]
fn init_refuses_a_used_directory_and_a_bad_name() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
    let e = vivarium::init::init(tmp.path(), Language::Python, None).unwrap_err();
    assert_eq!(e.exit_code() as u8, 2, "{e}");
    assert_eq!(std::fs::read_to_string(tmp.path().join("keep.txt")).unwrap(), "mine");
    let e = vivarium::init::init(&tmp.path().join("x"), Language::C, Some("../evil")).unwrap_err();
    assert_eq!(e.exit_code() as u8, 2, "{e}");
    assert!(!tmp.path().join("x").exists());
}
