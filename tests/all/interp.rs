//! Python variants on the shared, precompiled interpreter
//! (`vivarium::interp`): identity, load errors, limits at import time, the
//! `vivarium` SDK, improve of an interpreted child, and running code no
//! variant brought.
//!
//! The interpreter is built once per machine in the conformance suite's
//! target directory and compiled once into its compile cache, which every
//! test here shares: after the first run of either suite, nothing here
//! builds or compiles the interpreter again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vivarium::caps::{Grant, Limits, Overrides};
use vivarium::home::Home;
use vivarium::improve::{improve, ImproveRequest};
use vivarium::interp::{self, Checked, Code, Interpreted, TreeFile};
use vivarium::runtime::bindings::{Answer, Task};
use vivarium::runtime::{CallOptions, CallOutcome, CallReport, Runtime, RuntimeConfig};
use vivarium::variant::{build_variant, Session, MANIFEST};
use vivarium::{Error, GuestFailureKind};
use vivarium_tests::{guest_target, workspace_root};

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(workspace_root().join("target/conformance-cache")),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

/// Compile the interpreter into the shared compile cache once, before any
/// test's own runtime looks for it (tests run in parallel; each would
/// otherwise compile it).
pub(crate) async fn warm() {
    static WARM: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    WARM.get_or_init(|| async {
        let it = tokio::task::spawn_blocking(interpreter).await.unwrap();
        runtime().load(&std::fs::read(&it.path).unwrap()).await.expect("the interpreter compiles");
    })
    .await;
}

pub(crate) fn session(home: &Path) -> Session {
    let mut s = Session::open(Home::at(home)).expect("session");
    s.guest_target_dir = guest_target();
    s.runtime = runtime().with_services(vivarium::services::HostServices::for_home(&s.home).unwrap());
    s
}

fn interpreter() -> vivarium::build::interpreter::Interpreter {
    vivarium::build::interpreter::python_interpreter(&guest_target(), Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("building the Python interpreter: {e}"))
}

const LIMITS: &str = "[limits]\nfuel = 2_000_000_000\nmemory = \"128MiB\"\nwall = \"10s\"\n";

/// A Python variant in `dir` with `agent` as src/agent.py (and `extra`
/// files), manifest `capabilities`.
fn variant(dir: &Path, agent: &str, extra: &[(&str, &str)], capabilities: &str) -> PathBuf {
    variant_in("python", dir, agent, extra, capabilities)
}

/// A variant of `language` in `dir`: `agent` as its entry module
/// (`src/agent.py` or `src/agent.js`), `extra` files, manifest `capabilities`.
fn variant_in(language: &str, dir: &Path, agent: &str, extra: &[(&str, &str)], capabilities: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join(MANIFEST),
        format!("[variant]\nname = \"t\"\nlanguage = \"{language}\"\n\n{LIMITS}\n[capabilities]\n{capabilities}\n"),
    )
    .unwrap();
    let entry = if language == "javascript" { "src/agent.js" } else { "src/agent.py" };
    std::fs::write(dir.join(entry), agent).unwrap();
    for (path, text) in extra {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir.to_path_buf()
}

fn task(input: &str) -> Task {
    Task { id: "t".into(), domain: "test".into(), instruction: String::new(), input: input.into() }
}

async fn open(s: &Session, dir: &Path) -> (vivarium::variant::Opened, vivarium::runtime::Prepared) {
    let opened = s.open_target(dir, None, &Overrides::default()).await.unwrap_or_else(|e| panic!("open: {e}"));
    let p = s.prepare(&opened).unwrap_or_else(|e| panic!("prepare: {e}"));
    (opened, p)
}

async fn solve(s: &Session, dir: &Path, input: &str) -> CallReport<Answer> {
    let (_, p) = open(s, dir).await;
    s.solve(&p, &task(input), &CallOptions::default()).await.unwrap()
}

fn guest_error<T: std::fmt::Debug>(r: &CallReport<T>) -> &str {
    match &r.outcome {
        CallOutcome::GuestError(m) => m,
        other => panic!("expected a guest error, got {other:?} (logs {:?})", r.logs),
    }
}

fn output(r: &CallReport<Answer>) -> &str {
    match &r.outcome {
        CallOutcome::Ok(a) => &a.output,
        other => panic!("expected an answer, got {other:?} (logs {:?})", r.logs),
    }
}

const ECHO: &str = r#"
from wit_world import exports
from wit_world.imports import types

class TaskAgent(exports.TaskAgent):
    def solve(self, task):
        return types.Answer(output=task.input, notes=None)

class MetaAgent(exports.MetaAgent):
    def improve(self, ctx):
        raise NotImplementedError
"#;

// ---------------------------------------------------------------------------
// Identity.

#[tokio::test(flavor = "multi_thread")]
async fn a_variants_id_covers_the_interpreter_the_tree_and_the_manifest() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let a = variant(&tmp.path().join("a"), ECHO, &[], "");
    let b = variant(&tmp.path().join("b"), &format!("{ECHO}\n# another tree\n"), &[], "");
    let a2 = variant(&tmp.path().join("a2"), ECHO, &[], "");
    let (oa, _) = open(&s, &a).await;
    let (ob, _) = open(&s, &b).await;
    let (oa2, _) = open(&s, &a2).await;
    let it = interpreter();
    assert_ne!(oa.loaded.sha256, it.sha256, "the variant's id is not the interpreter's");
    assert_ne!(oa.loaded.sha256, ob.loaded.sha256, "two different trees never share an id");
    assert_eq!(oa.loaded.sha256, oa2.loaded.sha256, "the same tree and manifest give the same id");
    let source = oa.loaded.source.as_ref().expect("an interpreted variant");
    assert_eq!(source.bundle.interpreter, it.id, "a bundle names the interpreter by its id");
    assert_ne!(it.id, it.sha256, "the id is the build's inputs, not this build's bytes");
    // A manifest change is a new id.
    let manifest = std::fs::read_to_string(a2.join(MANIFEST)).unwrap();
    std::fs::write(a2.join(MANIFEST), manifest.replace("fuel = 2_000_000_000", "fuel = 1_000_000_000")).unwrap();
    let (oa3, _) = open(&s, &a2).await;
    assert_ne!(oa.loaded.sha256, oa3.loaded.sha256, "the manifest is part of the id");
    // The component is shared: the same compiled interpreter.
    assert_eq!(oa.loaded.imports, ["vivarium:agent/types@0.1.0", "vivarium:agent/log@0.1.0"]);

    // The grant's audit record names the interpreter and the tree.
    let records = std::fs::read_to_string(s.home.audit_dir().join(vivarium::audit::LOG_FILE)).unwrap();
    let grant = records
        .lines()
        .find(|l| l.contains("\"grant\"") && l.contains(&oa.loaded.sha256))
        .unwrap_or_else(|| panic!("no grant record for {}: {records}", oa.loaded.sha256));
    assert!(grant.contains(&it.id), "the grant record names the interpreter: {grant}");
    assert!(grant.contains(&source.bundle.tree_digest()), "the grant record names the tree: {grant}");
}

#[test]
fn a_bundle_round_trips_and_a_damaged_one_is_refused() {
    let b = Interpreted {
        language: interp::InterpLanguage::Python,
        interpreter: "ab".repeat(32),
        module: "agent".into(),
        mode: interp::Mode::Agents,
        imports: vec!["vivarium:agent/log@0.1.0".into()],
        manifest: None,
        files: vec![
            TreeFile { path: "src/agent.py".into(), contents: b"x = 1\n".to_vec() },
            TreeFile { path: "src/data.bin".into(), contents: vec![0, 159, 146, 150] },
        ],
    };
    let bytes = b.to_bytes();
    assert_eq!(Interpreted::parse(&bytes).unwrap(), Some(b.clone()));
    assert_eq!(Interpreted::parse(b"\0asm\x0d\0\x01\0").unwrap(), None, "a component is not a bundle");
    let damaged = String::from_utf8(bytes).unwrap().replace("x = 1", "x = 2");
    let e = Interpreted::parse(damaged.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("tree digest"), "{e}");
    let mut escaping = b.clone();
    escaping.files[0].path = "../etc/passwd".into();
    assert!(escaping.validate().is_err());
}

#[test]
fn a_source_tree_over_the_cap_is_refused_naming_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = variant(tmp.path(), ECHO, &[], "");
    std::fs::write(dir.join("src/big.txt"), vec![b'x'; interp::MAX_TREE_BYTES as usize + 1]).unwrap();
    let it = interpreter();
    let e = vivarium::build::interpreter::python_bundle(&dir, &it).unwrap_err();
    assert!(e.to_string().contains("MAX_TREE_BYTES"), "{e}");
    assert_eq!(e.exit_code() as u8, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_interpreter_is_refused_naming_setup() {
    warm().await;
    let b = Interpreted {
        language: interp::InterpLanguage::Python,
        interpreter: "0".repeat(64),
        module: "agent".into(),
        mode: interp::Mode::Agents,
        imports: vec![],
        manifest: None,
        files: vec![TreeFile { path: "src/agent.py".into(), contents: ECHO.as_bytes().to_vec() }],
    };
    let e = match runtime().load(&b.to_bytes()).await {
        Err(e) => e,
        Ok(_) => panic!("an unknown interpreter loads"),
    };
    let text = e.to_string();
    assert!(text.contains("scripts/setup.sh") && text.contains(&"0".repeat(64)), "{text}");
}

#[test]
fn an_unknown_python_builder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = variant(tmp.path(), ECHO, &[], "");
    let manifest = std::fs::read_to_string(dir.join(MANIFEST)).unwrap();
    std::fs::write(
        dir.join(MANIFEST),
        manifest.replace("language = \"python\"", "language = \"python\"\nbuilder = \"pyinstaller\""),
    )
    .unwrap();
    let m = vivarium::caps::Manifest::load(dir.join(MANIFEST)).unwrap();
    let e = build_variant(&dir, &m, &guest_target()).err().expect("refused");
    assert!(e.to_string().contains("componentize"), "{e}");
}

// ---------------------------------------------------------------------------
// Load errors: typed, with file, line and message.

#[tokio::test(flavor = "multi_thread")]
async fn a_syntax_error_answers_err_with_file_line_and_message() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let dir = variant(&tmp.path().join("v"), "import sys\n\ndef f(:\n    pass\n", &[], "");
    let r = solve(&s, &dir, "x").await;
    let m = guest_error(&r);
    assert!(m.contains("syntax-error") && m.contains("src/agent.py:3") && m.contains("SyntaxError"), "{m}");
    let (_, p) = open(&s, &dir).await;
    match interp::check_load(&s.runtime, &p, &CallOptions::default()).await.unwrap() {
        Checked::LoadError(e) => {
            assert_eq!((e.kind.as_str(), e.file.as_str(), e.line), ("syntax-error", "src/agent.py", 3), "{e:?}");
            assert!(e.message.contains("def f(:"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exception_at_import_names_the_innermost_line_of_the_tree() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let dir = variant(
        &tmp.path().join("v"),
        "import helper\n",
        &[("src/helper.py", "X = 1\n\ndef boom():\n    return {}['missing']\n\nboom()\n")],
        "",
    );
    let (_, p) = open(&s, &dir).await;
    match interp::check_load(&s.runtime, &p, &CallOptions::default()).await.unwrap() {
        Checked::LoadError(e) => {
            assert_eq!((e.kind.as_str(), e.file.as_str(), e.line), ("exception", "src/helper.py", 4), "{e:?}");
            assert!(e.message.contains("KeyError") && e.message.contains("missing"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_the_interpreter_lacks_is_named() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let dir = variant(&tmp.path().join("v"), "import json\nimport numpy\n", &[], "");
    let r = solve(&s, &dir, "x").await;
    let m = guest_error(&r);
    assert!(m.contains("missing-module") && m.contains("'numpy'") && m.contains("src/agent.py:2"), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tree_without_the_agents_is_a_missing_agent() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let dir = variant(&tmp.path().join("v"), "X = 1\n", &[], "");
    let (_, p) = open(&s, &dir).await;
    match interp::check_load(&s.runtime, &p, &CallOptions::default()).await.unwrap() {
        Checked::LoadError(e) => assert!(e.kind == "missing-agent" && e.message.contains("TaskAgent"), "{e:?}"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Hostile code at import time: the call's limits hold, with the same
// typed reasons as in a call.

async fn import_attack(top_level: &str) -> CallReport<Answer> {
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let dir = variant(&tmp.path().join("v"), &format!("{top_level}\n{ECHO}"), &[], "");
    solve(&s, &dir, "x").await
}

fn failed(r: &CallReport<Answer>) -> &vivarium::GuestFailure {
    match &r.outcome {
        CallOutcome::Failed(f) => f,
        other => panic!("expected a limit hit, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_at_import_time_runs_out_of_fuel() {
    warm().await;
    let r = import_attack("while True:\n    pass").await;
    assert_eq!(failed(&r).kind, GuestFailureKind::OutOfFuel, "{:?}", r.outcome);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_at_import_time_hits_the_memory_limit() {
    warm().await;
    let r = import_attack("held = []\nwhile True:\n    held.append(bytearray(1 << 20))").await;
    let f = failed(&r);
    assert_eq!(f.kind, GuestFailureKind::MemoryLimit, "{f}");
    assert!(f.detail.contains("134217728"), "{f}");
}

#[tokio::test(flavor = "multi_thread")]
async fn recursion_at_import_time_overflows_the_stack() {
    warm().await;
    let r = import_attack("import sys\nsys.setrecursionlimit(10**9)\ndef r(n):\n    return r(n + 1) + 1\nr(0)").await;
    assert_eq!(failed(&r).kind, GuestFailureKind::StackOverflow, "{:?}", r.outcome);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_print_flood_at_import_time_is_capped_in_the_log() {
    warm().await;
    let r = import_attack("for _ in range(20_000):\n    print('P' * 1023)").await;
    assert_eq!(output(&r), "x");
    let kept: usize = r.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= 64 << 10, "{kept}");
    assert_eq!(r.log_usage.calls, 20_000, "{:?}", r.log_usage);
}

// ---------------------------------------------------------------------------
// The `vivarium` SDK.

const SDK_AGENT: &str = r#"
import logging

import vivarium
from vivarium import Err, types

GENERATION = 0


class TaskAgent(vivarium.TaskAgent):
    def solve(self, task):
        what = task.input
        if what == "log":
            print("hello from print")
            vivarium.log.warn("a warning")
            logging.getLogger("mine").error("via logging")
            return types.Answer(output="logged", notes=None)
        if what == "llm":
            try:
                vivarium.llm.complete("hi")
            except vivarium.NotGranted as e:
                return types.Answer(output=str(e), notes=None)
            raise Err("llm was granted")
        if what == "memory":
            vivarium.memory.set("k", "v1")
            vivarium.memory.set_json("j", {"a": [1, 2]})
            out = f"{vivarium.memory.get_text('k')} {vivarium.memory.get_json('j')} {vivarium.memory.keys()}"
            return types.Answer(output=out, notes=None)
        if what == "tree":
            import helpers.text
            tree = vivarium.source.tree()
            return types.Answer(output=helpers.text.joined(sorted(tree)), notes=None)
        if what == "granted":
            return types.Answer(output=",".join(sorted(vivarium.granted())), notes=None)
        raise Err(f"unknown {what}")


class MetaAgent(vivarium.MetaAgent):
    def improve(self, ctx):
        text = vivarium.source.text(ctx, "src/agent.py")
        n = int(vivarium.source.const_value(text, "GENERATION")) + 1
        text = vivarium.source.set_const(text, "GENERATION", str(n))
        return vivarium.source.proposal(f"generation {n}", [vivarium.source.write("src/agent.py", text)])
"#;

const HELPERS: &[(&str, &str)] =
    &[("src/helpers/__init__.py", ""), ("src/helpers/text.py", "def joined(items):\n    return '|'.join(items)\n")];

#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_routes_print_logging_and_log_to_the_host_log() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let dir = variant(&tmp.path().join("v"), SDK_AGENT, HELPERS, "");
    let r = solve(&s, &dir, "log").await;
    assert_eq!(output(&r), "logged");
    let lines: Vec<(String, String)> = r.logs.iter().map(|l| (l.level.clone(), l.message.clone())).collect();
    for want in [("info", "hello from print"), ("warn", "a warning"), ("error", "mine: via logging")] {
        assert!(lines.iter().any(|(l, m)| l == want.0 && m == want.1), "{want:?} not in {lines:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_refuses_an_ungranted_service_by_name() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let dir = variant(&tmp.path().join("v"), SDK_AGENT, HELPERS, "");
    let r = solve(&s, &dir, "llm").await;
    let m = output(&r);
    assert!(m.contains("`llm` service is not granted") && m.contains("variant.toml"), "{m}");
    assert_eq!(output(&solve(&s, &dir, "granted").await), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_reads_and_writes_granted_memory() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let dir = variant(&tmp.path().join("v"), SDK_AGENT, HELPERS, "memory = { bytes = \"64KiB\" }");
    let (opened, _) = open(&s, &dir).await;
    assert!(opened.loaded.imports.iter().any(|i| i == "vivarium:agent/memory@0.1.0"), "{:?}", opened.loaded.imports);
    assert_eq!(output(&solve(&s, &dir, "granted").await), "memory");
    assert_eq!(output(&solve(&s, &dir, "memory").await), "v1 {'a': [1, 2]} ['j', 'k']");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_variant_imports_its_own_packages_and_sees_its_tree() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let dir = variant(&tmp.path().join("v"), SDK_AGENT, HELPERS, "");
    assert_eq!(output(&solve(&s, &dir, "tree").await), "src/agent.py|src/helpers/__init__.py|src/helpers/text.py");
}

// ---------------------------------------------------------------------------
// improve: a child is new data; a child that does not load is refused
// like a compiler error, with the line.

#[tokio::test(flavor = "multi_thread")]
async fn improve_makes_a_child_with_the_sdk_helpers() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let dir = variant(&tmp.path().join("v"), SDK_AGENT, HELPERS, "");
    let out = tmp.path().join("child");
    let outcome = improve(&s, &ImproveRequest { parent: dir.clone(), out: out.clone(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("improve: {e}"));
    assert_eq!(outcome.summary, "generation 1");
    let child = std::fs::read_to_string(out.join("src/agent.py")).unwrap();
    assert!(child.contains("\nGENERATION = 1\n"), "{child}");
    assert!(Interpreted::parse(&outcome.component).unwrap().is_some(), "the child is a bundle");
    assert_eq!(output(&solve(&s, &out, "tree").await), "src/agent.py|src/helpers/__init__.py|src/helpers/text.py");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_with_a_syntax_error_is_refused_with_its_line() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let breaker = SDK_AGENT.replace(
        "text = vivarium.source.set_const(text, \"GENERATION\", str(n))",
        "text = vivarium.source.set_const(text, \"GENERATION\", str(n) + \" +\")",
    );
    let dir = variant(&tmp.path().join("v"), &breaker, HELPERS, "");
    let out = tmp.path().join("child");
    let e = improve(&s, &ImproveRequest { parent: dir, out: out.clone(), ..Default::default() }).await.unwrap_err();
    match &e {
        Error::Refused { what, detail } => {
            assert_eq!(what, &["build"]);
            assert!(detail.contains("syntax-error") && detail.contains("src/agent.py:7"), "{detail}");
        }
        other => panic!("{other}"),
    }
    assert!(!out.exists(), "nothing of the refused child is left");
}

// ---------------------------------------------------------------------------
// Code no variant brought: the library function a grader uses.

#[tokio::test(flavor = "multi_thread")]
async fn run_function_calls_code_under_limits() {
    warm().await;
    let rt = runtime();
    let it = interpreter();
    let code = |body: &str| Code {
        interpreter: it.id.clone(),
        files: vec![TreeFile { path: "src/solution.py".into(), contents: body.as_bytes().to_vec() }],
        module: "solution".into(),
        function: "main".into(),
    };
    let limits = Limits {
        fuel: 500_000_000,
        memory: vivarium::units::ByteSize(128 << 20),
        wall: vivarium::units::HumanDuration(Duration::from_secs(10)),
        ..Limits::default()
    };
    let r =
        interp::run_function(&rt, &code("def main(x):\n    return int(x) + 1\n"), "41", limits.clone()).await.unwrap();
    assert_eq!(output(&r), "42");
    let r = interp::run_function(&rt, &code("def main(x):\n    return 1 / 0\n"), "", limits.clone()).await.unwrap();
    let m = guest_error(&r);
    assert!(m.contains("ZeroDivisionError") && m.contains("src/solution.py:2"), "{m}");
    let r = interp::run_function(&rt, &code("def main(x):\n    while True: pass\n"), "", limits.clone()).await.unwrap();
    assert_eq!(failed(&r).kind, GuestFailureKind::OutOfFuel);
    let r = interp::run_function(&rt, &code("def main(x) return 1\n"), "", limits.clone()).await.unwrap();
    let m = guest_error(&r);
    assert!(m.contains("syntax-error") && m.contains("src/solution.py:1"), "{m}");
    // A bundle made before interpreters had ids names the component's
    // sha256: it still runs.
    let older = Code { interpreter: it.sha256.clone(), ..code("def main(x):\n    return int(x) * 2\n") };
    assert_eq!(output(&interp::run_function(&rt, &older, "21", limits.clone()).await.unwrap()), "42");
    // Nothing but `log`: no service is linked.
    let _ = Grant::minimal(limits);
}

// ---------------------------------------------------------------------------
// evolve: the demo's shape on arith-python, and a child that does not load
// coming back to the meta-agent as feedback.

const REWARD_AGENT: &str = r#"
import vivarium
from vivarium import types


class TaskAgent(vivarium.TaskAgent):
    def solve(self, task):
        return types.Answer(output="", notes=None)


class MetaAgent(vivarium.MetaAgent):
    def improve(self, ctx):
        raise vivarium.Err("nothing to improve")


class RewardModel(vivarium.RewardModel):
    def __init__(self):
        self.calls = 0

    def rewards(self, env, transitions):
        self.calls += 1
        if env != vivarium.reward.Env.CARTPOLE:
            raise ValueError(f"only cartpole, not {env}")
        return [t.next_obs.o0 * 10 + self.calls + (100 if t.terminated else 0) for t in transitions]
"#;

/// A Python variant serves the `reward-designer` world's `reward-model`
/// export from the interpreter: the host's reward instance calls its
/// `RewardModel` once per chunk on one instance (its state carries over),
/// with the WIT's records as Python objects; a variant that raises, has no
/// `RewardModel`, or answers something other than numbers ends as a trap
/// saying why, and the host carries on.
#[tokio::test(flavor = "multi_thread")]
async fn a_python_reward_model_answers_each_chunk_on_one_instance() {
    use vivarium::runtime::reward::RewardInstance;
    use vivarium::sim::EnvKind;
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(session(&tmp.path().join("h")));
    let honest = variant(&tmp.path().join("honest"), REWARD_AGENT, &[], "");
    let (_, p) = open(&s, &honest).await;
    let no_model = REWARD_AGENT.split("class RewardModel").next().unwrap().to_string();
    let (_, missing) = open(&s, &variant(&tmp.path().join("missing"), &no_model, &[], "")).await;
    let words = REWARD_AGENT.replace("return [t.next_obs.o0", "return [\"x\" for t in transitions] or [t.next_obs.o0");
    let (_, wordy) = open(&s, &variant(&tmp.path().join("wordy"), &words, &[], "")).await;
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || {
        let steps = three_steps();
        let mut inst = RewardInstance::for_prepared(&s2.runtime, &p, None).unwrap().unwrap();
        assert_eq!(inst.rewards(EnvKind::Cartpole, &steps).unwrap(), vec![1.0, 6.0, 101.0]);
        assert_eq!(inst.rewards(EnvKind::Cartpole, &steps[..1]).unwrap(), vec![2.0], "the same instance");
        assert_eq!((inst.usage().calls, inst.usage().transitions), (2, 4));
        assert!(inst.usage().fuel > 0);
        let f = inst.rewards(EnvKind::Pendulum, &steps).unwrap_err();
        assert_eq!(f.kind, GuestFailureKind::Trap, "{}", f.detail);
        let (_, lines, _) = inst.finish();
        let log: String = lines.iter().map(|l| l.message.clone()).collect::<Vec<_>>().join("\n");
        assert!(log.contains("only cartpole"), "the reason is in the log: {log}");

        for (p, why) in [
            (&missing, "defines no RewardModel class"),
            (&wordy, "RewardModel.rewards must return numbers, one per transition"),
        ] {
            let mut inst = RewardInstance::for_prepared(&s2.runtime, p, None).unwrap().unwrap();
            let f = inst.rewards(EnvKind::Cartpole, &steps).unwrap_err();
            assert_eq!(f.kind, GuestFailureKind::Trap, "{}", f.detail);
            let (_, lines, _) = inst.finish();
            let log: String = lines.iter().map(|l| l.message.clone()).collect::<Vec<_>>().join("\n");
            assert!(log.contains(why), "{why}: {log}");
        }
        // The host carries on: the honest variant answers again.
        let mut inst = RewardInstance::for_prepared(&s2.runtime, &p, None).unwrap().unwrap();
        assert_eq!(inst.rewards(EnvKind::Cartpole, &steps[..1]).unwrap(), vec![1.0]);
    })
    .await
    .unwrap();
}

/// The `reward-design` suite grades a Python reward model like a Rust one:
/// its cart-pole tasks train a policy on the variant's rewards; the
/// environments it refuses end as traps in their notes, scored 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_reward_design_suite_trains_on_a_python_reward_model() {
    use vivarium::tasks;
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("h"));
    // A training run is one call; CPython spends about 40,000 fuel per
    // transition here (Rust: a few hundred), so it gets more fuel and time.
    let dir = variant(&tmp.path().join("v"), REWARD_AGENT, &[], "");
    let manifest = std::fs::read_to_string(dir.join(MANIFEST)).unwrap();
    let manifest = manifest.replace("fuel = 2_000_000_000", "fuel = 100_000_000_000").replace("\"10s\"", "\"120s\"");
    std::fs::write(dir.join(MANIFEST), manifest).unwrap();
    let (_, p) = open(&s, &dir).await;
    let suite = tasks::suite(tasks::reward_design::NAME).unwrap();
    let score = tasks::evaluate(&s, &p, &suite).await.unwrap();
    let cart = score.results.iter().find(|r| r.id == "rd-v-cartpole-1").unwrap();
    eprintln!("cartpole: {} ({:.2})", cart.note, cart.score);
    assert!(cart.note.starts_with("cartpole: trained return "), "{}", cart.note);
    let car = score.results.iter().find(|r| r.id == "rd-v-mountain-car-1").unwrap();
    assert_eq!(car.score, 0.0);
    assert!(car.note.contains("the reward function failed (trap"), "{}", car.note);
    assert!(s.audit.verify().unwrap().ok);
}

async fn evolve_in(home: &Path, run: &Path) -> vivarium::evolve::Summary {
    vivarium::evolve::evolve(&session(home), run, &vivarium::evolve::EvolveOptions::default(), &|_| {})
        .await
        .unwrap_or_else(|e| panic!("evolve: {e}"))
}

fn fingerprint(archive: &vivarium::archive::Archive, run: &str) -> Vec<(String, Option<String>, u32, Option<f64>)> {
    archive
        .list(Some(run))
        .unwrap()
        .into_iter()
        .map(|v| (v.id.0, v.parent.map(|p| p.0), v.generation, v.visible_score))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn evolve_of_arith_python_improves_and_is_deterministic() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run.toml");
    std::fs::write(
        &run,
        format!(
            "[run]\nname = \"py\"\nsuite = \"arith\"\nseed = 11\ngenerations = 2\nchildren_per_generation = 2\ninitial = [\"{}\"]\n",
            workspace_root().join("variants/arith-python").display()
        ),
    )
    .unwrap();
    let a = evolve_in(&tmp.path().join("a"), &run).await;
    let b = evolve_in(&tmp.path().join("b"), &run).await;
    assert_eq!(a.stop, vivarium::evolve::StopReason::Finished);
    let archive = vivarium::archive::Archive::open(&a.archive_dir).unwrap();
    let fa = fingerprint(&archive, "py");
    assert_eq!(fa, fingerprint(&vivarium::archive::Archive::open(&b.archive_dir).unwrap(), "py"));
    assert!(fa.len() >= 3, "{fa:?}");
    let best = a.best.unwrap().visible_score.unwrap();
    assert!(best > a.baseline, "improved: {} -> {best}", a.baseline);
    assert!(archive.integrity_check().unwrap().is_ok());
    // Every archived Python variant is a bundle for the one interpreter.
    let it = interpreter();
    for v in archive.list(Some("py")).unwrap() {
        let blob = archive.get_blob(v.component_sha.as_ref().unwrap()).unwrap();
        let bundle = Interpreted::parse(&blob).unwrap().expect("a bundle");
        assert_eq!(bundle.interpreter, it.id);
    }
}

const PROPOSER: &str = r#"
import vivarium
from vivarium import Err, source

GENERATION = 0


class TaskAgent(vivarium.TaskAgent):
    def solve(self, task):
        raise Err("this variant only proposes")


class MetaAgent(vivarium.MetaAgent):
    def improve(self, ctx):
        text = source.text(ctx, "src/agent.py")
        if "syntax-error" in ctx.feedback and "src/agent.py:" in ctx.feedback:
            text = source.set_const(text, "GENERATION", "1")
            return source.proposal("saw the syntax error; honest now", [source.write("src/agent.py", text)])
        return source.proposal("broken", [source.write("src/agent.py", text + "\ndef broken(:\n    pass\n")])
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_python_childs_syntax_error_comes_back_to_the_meta_agent_as_feedback() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    variant(&tmp.path().join("proposer"), PROPOSER, &[], "");
    let run = tmp.path().join("run.toml");
    std::fs::write(
        &run,
        "[run]\nname = \"feedback\"\nsuite = \"arith\"\ngenerations = 2\nchildren_per_generation = 1\ninitial = [\"proposer\"]\n",
    )
    .unwrap();
    let s = evolve_in(&tmp.path().join("h"), &run).await;
    assert_eq!(s.stop, vivarium::evolve::StopReason::Finished);
    assert_eq!(s.refused, 1, "the first child did not load");
    let archive = vivarium::archive::Archive::open(&s.archive_dir).unwrap();
    let rows = archive.list(Some("feedback")).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].summary, "saw the syntax error; honest now");
    let note = std::fs::read_to_string(s.run_dir.join("attempts").join(&rows[0].id.0).join("00000001.txt")).unwrap();
    assert!(note.contains("syntax-error") && note.contains("def broken(:"), "the loader's message: {note}");
}

// ---------------------------------------------------------------------------
// `builder = "componentize"` keeps the per-variant component.

#[test]
fn builder_componentize_keeps_a_component_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let src = workspace_root().join("tests/guests/hostile-python");
    let dir = tmp.path().join("v");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::copy(src.join("src/agent.py"), dir.join("src/agent.py")).unwrap();
    let manifest = std::fs::read_to_string(src.join(MANIFEST)).unwrap();
    let manifest = manifest.replace("language = \"python\"", "language = \"python\"\nbuilder = \"componentize\"");
    std::fs::write(dir.join(MANIFEST), manifest).unwrap();
    let m = vivarium::caps::Manifest::load(dir.join(MANIFEST)).unwrap();
    // Cached by its inputs in the shared target directory: seconds once.
    let built = build_variant(&dir, &m, &guest_target()).unwrap_or_else(|e| panic!("componentize: {e}"));
    assert_eq!(&built.component[..4], b"\0asm", "a component, not a bundle");
    assert!(Interpreted::parse(&built.component).unwrap().is_none());
}

/// Where an instance's time goes (run with `--ignored --nocapture`): a
/// trivial variant against arith-python, fuel and wall per call.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn measure_instance_start() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let echo = variant(&tmp.path().join("echo"), ECHO, &[], "");
    let arith = workspace_root().join("variants/arith-python");
    for (label, dir, input) in [("echo", echo.as_path(), "x"), ("arith-python", arith.as_path(), "1+2")] {
        let (_, p) = open(&s, dir).await;
        let mut walls = Vec::new();
        let mut fuel = 0;
        for _ in 0..9 {
            let started = std::time::Instant::now();
            let r = s.runtime.solve(&p, &task(input), &CallOptions::default()).await.unwrap();
            walls.push(started.elapsed().as_secs_f64() * 1000.0);
            fuel = r.usage.fuel;
            assert!(matches!(r.outcome, CallOutcome::Ok(_)), "{:?}", r.outcome);
        }
        walls.sort_by(f64::total_cmp);
        eprintln!("{label}: median {:.1} ms, fuel {fuel}", walls[walls.len() / 2]);
    }
}

// ---------------------------------------------------------------------------
// JavaScript on its interpreter (ComponentizeJS, the loader of
// interp/javascript/): the same machinery, the variant's ES modules as data.

/// Compile the JavaScript interpreter into the shared compile cache once.
async fn warm_js() {
    static WARM: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    WARM.get_or_init(|| async {
        let it = tokio::task::spawn_blocking(|| {
            vivarium::build::interpreter::javascript_interpreter(&guest_target(), Duration::from_secs(600))
                .unwrap_or_else(|e| panic!("building the JavaScript interpreter: {e}"))
        })
        .await
        .unwrap();
        runtime().load(&std::fs::read(&it.path).unwrap()).await.expect("the interpreter compiles");
    })
    .await;
}

/// A JavaScript variant in `dir`: `agent` as src/agent.js, `extra` files.
fn js_variant(dir: &Path, agent: &str, extra: &[(&str, &str)], capabilities: &str) -> PathBuf {
    variant_in("javascript", dir, agent, extra, capabilities)
}

const JS_ECHO: &str = r#"
export const taskAgent = { solve(task) { return { output: task.input }; } };
export const metaAgent = { improve(ctx) { throw "nothing to improve"; } };
"#;

/// `variants/arith-javascript` runs on the interpreter as a bundle (no
/// component of its own): the same answers as its own build, and a second
/// instance of the same tree reuses the first one's parsed modules.
#[tokio::test(flavor = "multi_thread")]
async fn arith_javascript_runs_on_the_interpreter_and_reuses_its_parse() {
    warm_js().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("h"));
    let dir = workspace_root().join("variants/arith-javascript");
    let (opened, p) = open(&s, &dir).await;
    let bundle = opened.loaded.source.as_ref().expect("an interpreted variant").bundle.clone();
    assert_eq!(bundle.language, interp::InterpLanguage::Javascript);
    assert!(bundle.files.iter().any(|f| f.path == "src/agent.js"));
    let first = s.solve(&p, &task("(3+4)*12 - 7"), &CallOptions::default()).await.unwrap();
    assert_eq!(output(&first), "77");
    let second = s.solve(&p, &task("2*(5+1)"), &CallOptions::default()).await.unwrap();
    assert_eq!(output(&second), "12");
    let r = s.solve(&p, &task("8/2"), &CallOptions::default()).await.unwrap();
    assert!(guest_error(&r).contains("needs DIVISION"), "{:?}", r.outcome);
    eprintln!("fuel: first call {}, second {}", first.usage.fuel, second.usage.fuel);
    assert!(
        second.usage.fuel * 2 < first.usage.fuel,
        "the parse is reused: {} then {}",
        first.usage.fuel,
        second.usage.fuel
    );
}

/// ES module forms across files: named, default, list and re-exports,
/// relative imports with and without `.js`, a namespace's live bindings; the host's
/// interfaces by their WIT names; a service not granted throws naming it.
#[tokio::test(flavor = "multi_thread")]
async fn javascript_modules_import_each_other_and_the_host() {
    warm_js().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("h"));
    let agent = r#"import { log } from "vivarium:agent/log@0.1.0";
import * as memory from "vivarium:agent/memory@0.1.0";
import twice, { add as plus, bump } from "./lib/math";
import * as lib from "./lib/math.js";
import { again } from "./lib/index.js";
export const taskAgent = {
  solve(task) {
    log("info", "solving " + task.input);
    bump();
    if (task.input === "memory") { memory.get("k"); }
    return { output: [twice(plus(1, 2)), lib.COUNT, again(4)].join(",") };
  },
};
export const metaAgent = { improve() { throw "no"; } };
"#;
    let math = "let COUNT = 0;\nexport function bump() { COUNT += 1; }\nexport { COUNT };\n\
                export const add = (a, b) => a + b;\nexport default function twice(x) { return 2 * x; }\n";
    let index = "export { default as again } from \"./math.js\";\n";
    let dir = js_variant(&tmp.path().join("v"), agent, &[("src/lib/math.js", math), ("src/lib/index.js", index)], "");
    let r = solve(&s, &dir, "x").await;
    assert_eq!(output(&r), "6,1,8", "named, default, live and re-exported bindings");
    assert!(r.logs.iter().any(|l| l.message == "solving x"), "{:?}", r.logs);
    let r = solve(&s, &dir, "memory").await;
    assert!(guest_error(&r).contains("capability `memory` is not granted to this variant"), "{:?}", r.outcome);
}

/// Load errors name the file and line, as the Python interpreter's do; the
/// check of a new child returns them typed.
#[tokio::test(flavor = "multi_thread")]
async fn javascript_load_errors_name_the_file_and_line() {
    warm_js().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("h"));
    let cases: [(&str, &[(&str, &str)], &str); 5] = [
        ("// one\nexport const taskAgent = {\n  solve( { return 1; }\n};\n", &[], "src/agent.js:3: SyntaxError"),
        (
            "import { x } from \"./util.js\";\n",
            &[("src/util.js", "\n\nthrow new TypeError(\"boom\");\n")],
            "src/util.js:3: TypeError: boom",
        ),
        ("import \"./nowhere.js\";\n", &[], "(missing-module)"),
        ("const m = await 1;\n", &[], "src/agent.js:1: top-level await is not supported"),
        (
            "export const taskAgent = { solve() { return { output: \"\" }; } };\n",
            &[],
            "src/agent.js:0: the module does not export metaAgent",
        ),
    ];
    for (i, (agent, extra, want)) in cases.iter().enumerate() {
        let dir = js_variant(&tmp.path().join(format!("v{i}")), agent, extra, "");
        let r = solve(&s, &dir, "x").await;
        if i < 4 {
            let e = guest_error(&r);
            assert!(e.contains("the variant did not load") && e.contains(want), "case {i}: {e}");
        }
        let (_, p) = open(&s, &dir).await;
        let bundle = p.interpreted().unwrap().bundle.with_mode(interp::Mode::Check);
        match interp::check_load(&s.runtime, &p.with_bundle(bundle), &CallOptions::default()).await.unwrap() {
            Checked::LoadError(e) => {
                let said = format!("({}) {}:{}: {}", e.kind, e.file, e.line, e.message);
                assert!(said.contains(want), "case {i}: {said}");
            }
            other => panic!("case {i}: {other:?}"),
        }
    }
    // And an honest tree loads.
    let dir = js_variant(&tmp.path().join("ok"), JS_ECHO, &[], "");
    let (_, p) = open(&s, &dir).await;
    let bundle = p.interpreted().unwrap().bundle.with_mode(interp::Mode::Check);
    assert!(matches!(
        interp::check_load(&s.runtime, &p.with_bundle(bundle), &CallOptions::default()).await.unwrap(),
        Checked::Loaded
    ));
}

/// Hostile code at load time meets the call's limits with typed reasons.
#[tokio::test(flavor = "multi_thread")]
async fn javascript_hostile_loads_hit_the_calls_limits() {
    warm_js().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("h"));
    for (i, (top, want)) in [
        ("for (;;) {}", GuestFailureKind::OutOfFuel),
        ("const held = []; for (;;) held.push(new Uint8Array(1 << 20).fill(1));", GuestFailureKind::MemoryLimit),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = js_variant(&tmp.path().join(format!("v{i}")), &format!("{top}\n{JS_ECHO}"), &[], "");
        let r = solve(&s, &dir, "x").await;
        assert_eq!(failed(&r).kind, want, "{top}: {:?}", r.outcome);
    }
    // The host carries on.
    let dir = js_variant(&tmp.path().join("ok"), JS_ECHO, &[], "");
    assert_eq!(output(&solve(&s, &dir, "still here").await), "still here");
}

/// `improve` of arith-javascript on the interpreter: a child that is new
/// data, checked to load, answering what its parent could not.
#[tokio::test(flavor = "multi_thread")]
async fn improve_of_a_javascript_variant_makes_a_child_that_loads() {
    warm_js().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("h"));
    let parent = tmp.path().join("parent");
    for f in ["variant.toml", "src/agent.js"] {
        std::fs::create_dir_all(parent.join(f).parent().unwrap()).unwrap();
        std::fs::copy(workspace_root().join("variants/arith-javascript").join(f), parent.join(f)).unwrap();
    }
    let req = ImproveRequest {
        parent: parent.clone(),
        out: tmp.path().join("child"),
        feedback: "task t: operator '/' is not supported: needs DIVISION".into(),
        iterations_left: 1,
        ..Default::default()
    };
    let o = improve(&s, &req).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(o.summary.contains("DIVISION"), "{}", o.summary);
    let r = solve(&s, &tmp.path().join("child"), "8/2").await;
    assert_eq!(output(&r), "4");
}

/// The JavaScript SDK (`import { log, llm, memory } from "vivarium"`):
/// memory round-trips text, JSON and bytes within the grant's quota, a
/// write past it is a `ServiceError` of kind `quota-exceeded`, `llm`
/// without its grant is `NotGranted` by name, and `console` reaches the
/// host log.
#[tokio::test(flavor = "multi_thread")]
async fn the_javascript_sdk_wraps_log_llm_and_memory() {
    warm_js().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("h"));
    let agent = r#"import { log, llm, memory, granted } from "vivarium";
export const taskAgent = {
  solve(task) {
    console.log("console says", 42);
    log.info("sdk says hi");
    if (task.input === "memory") {
      memory.set("k", "v1");
      memory.setJson("j", { a: [1, 2] });
      let quota = "";
      try { memory.set("big", "x".repeat(100000)); } catch (e) { quota = `${e.name}/${e.kind}`; }
      return { output: [memory.getText("k"), JSON.stringify(memory.getJson("j")), memory.keys("").join("+"), quota].join(" ") };
    }
    try { llm.complete("hi"); } catch (e) { return { output: `${e.name}: ${e.message}` }; }
    return { output: "llm answered?" };
  },
};
export const metaAgent = { improve() { throw "no"; } };
"#;
    let dir = js_variant(&tmp.path().join("v"), agent, &[], "memory = { bytes = \"64KiB\" }");
    let r = solve(&s, &dir, "memory").await;
    assert_eq!(output(&r), r#"v1 {"a":[1,2]} j+k ServiceError/quota-exceeded"#);
    let said: Vec<&str> = r.logs.iter().map(|l| l.message.as_str()).collect();
    assert!(said.contains(&"console says 42") && said.contains(&"sdk says hi"), "{said:?}");
    let r = solve(&s, &dir, "llm").await;
    assert!(output(&r).starts_with("NotGranted: capability `llm` is not granted to this variant"), "{:?}", r.outcome);
}

/// A JavaScript variant serves `reward-model` from its `rewardModel`
/// export, on one instance per training run (its module state carries
/// over between chunks); a non-number ends the training run as a trap.
#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_reward_model_answers_each_chunk() {
    use vivarium::runtime::reward::RewardInstance;
    use vivarium::sim::EnvKind;
    warm_js().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(session(&tmp.path().join("h")));
    let agent = r#"let calls = 0;
export const taskAgent = { solve() { return { output: "" }; } };
export const metaAgent = { improve() { throw "no"; } };
export const rewardModel = {
  rewards(env, transitions) {
    calls += 1;
    if (env === "pendulum") return transitions.map(() => "x");
    return transitions.map((t) => t.nextObs.o0 * 10 + calls + (t.terminated ? 100 : 0));
  },
};
"#;
    let (_, p) = open(&s, &js_variant(&tmp.path().join("v"), agent, &[], "")).await;
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || {
        let steps = three_steps();
        let mut inst = RewardInstance::for_prepared(&s2.runtime, &p, None).unwrap().unwrap();
        assert_eq!(inst.rewards(EnvKind::Cartpole, &steps).unwrap(), vec![1.0, 6.0, 101.0]);
        assert_eq!(inst.rewards(EnvKind::Cartpole, &steps[..1]).unwrap(), vec![2.0], "the same instance");
        let f = inst.rewards(EnvKind::Pendulum, &steps).unwrap_err();
        assert_eq!(f.kind, GuestFailureKind::Trap, "{}", f.detail);
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------
// Patch edits (`vivarium:agent@0.2.0`): a Python meta-agent proposes
// search/replace and unified-diff edits; the guard applies them exactly and
// checks the result as it checks a write.

/// A meta-agent whose `MODE` picks the edits it proposes. Line 5 is
/// `LIMIT = 1`, which the diffs below edit by line number.
const PATCH_AGENT: &str = r#"import vivarium
from vivarium import types, source

MODE = "diff"
LIMIT = 1


class TaskAgent(vivarium.TaskAgent):
    def solve(self, task):
        return types.Answer(output=str(LIMIT), notes=None)


DIFF = """--- a/src/agent.py
+++ b/src/agent.py
@@ -5,1 +5,1 @@
-LIMIT = 1
+LIMIT = 2
--- /dev/null
+++ b/src/notes.md
@@ -0,0 +1,1 @@
+tried a diff
"""

STALE = """--- a/src/agent.py
+++ b/src/agent.py
@@ -4,2 +4,2 @@
 MODE = "stale"
-LIMIT = 7
+LIMIT = 8
"""

HIDDEN = """--- /dev/null
+++ b/src/a\u200b.py
@@ -0,0 +1,1 @@
+x = 1
"""

PROTECTED = """--- /dev/null
+++ b/requirements.txt
@@ -0,0 +1,1 @@
+evil-package
"""


class MetaAgent(vivarium.MetaAgent):
    def improve(self, ctx):
        edits = {
            "diff": [source.patch(DIFF), source.search_replace("src/notes.md", "a diff", "a diff, then a search")],
            "stale": [source.patch(STALE)],
            "missing": [source.search_replace("src/twice.py", "y = 2", "y = 3")],
            "twice": [source.search_replace("src/twice.py", "x = 1", "x = 2")],
            "hidden": [source.patch(HIDDEN)],
            "protected": [source.patch(PROTECTED)],
            "manifest": [source.search_replace("variant.toml", "[capabilities]", "[capabilities]\nmemory = { bytes = \"1MiB\" }")],
        }[MODE]
        return source.proposal(f"patch: {MODE}", edits)
"#;

/// improve of a [`PATCH_AGENT`] in `mode`: the outcome, and the parent's
/// home for the audit checks.
async fn improve_patch(
    mode: &str,
) -> (tempfile::TempDir, Session, vivarium::Result<vivarium::improve::ImproveOutcome>) {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let agent = PATCH_AGENT.replace("MODE = \"diff\"\nLIMIT", &format!("MODE = {mode:?}\nLIMIT"));
    let dir = variant(&tmp.path().join("v"), &agent, &[("src/twice.py", "x = 1\nx = 1\n")], "");
    let out = tmp.path().join("child");
    let r = improve(&s, &ImproveRequest { parent: dir, out, ..Default::default() }).await;
    (tmp, s, r)
}

fn refusal(r: vivarium::Result<vivarium::improve::ImproveOutcome>) -> (Vec<String>, String) {
    match r {
        Err(Error::Refused { what, detail }) => (what, detail),
        Err(other) => panic!("expected a guard refusal, got {other}"),
        Ok(o) => panic!("expected a guard refusal, got a child {}", o.child),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_meta_agent_proposes_a_diff_and_a_search_replace_applied_exactly() {
    let (tmp, s, r) = improve_patch("diff").await;
    let outcome = r.unwrap_or_else(|e| panic!("improve: {e}"));
    let child = tmp.path().join("child");
    let agent = std::fs::read_to_string(child.join("src/agent.py")).unwrap();
    assert_eq!(agent.lines().nth(4), Some("LIMIT = 2"), "{agent}");
    // The second edit saw the file the first one created.
    assert_eq!(std::fs::read_to_string(child.join("src/notes.md")).unwrap(), "tried a diff, then a search\n");
    assert_eq!(outcome.edits, 2, "one write per touched file");
    // The audit record says how the proposal was made.
    let verdicts = s.audit.query(&vivarium::audit::Filter::new().event(vivarium::audit::EventKind::Proposal)).unwrap();
    let accepted = &verdicts.last().unwrap().details;
    assert_eq!(accepted["verdict"], "accepted");
    assert_eq!(accepted["edit_kinds"], serde_json::json!({"patch": 1, "search-replace": 1}));
    assert_eq!(output(&solve(&s, &child, "").await), "2");
    assert!(s.audit.verify().unwrap().ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patch_that_does_not_apply_is_refused_with_its_hunk_and_nothing_is_made() {
    for (mode, rule, detail) in [
        (
            "stale",
            "patch-failed: src/agent.py",
            "the hunk @@ -4,2 +4,2 @@ does not apply: line 5 is `LIMIT = 1` where the hunk expects `LIMIT = 7`",
        ),
        ("missing", "patch-failed: src/twice.py", "the search text was not found: `y = 2`"),
        (
            "twice",
            "patch-failed: src/twice.py",
            "the search text was found 2 times; it must occur exactly once (add context to it)",
        ),
    ] {
        let (tmp, s, r) = improve_patch(mode).await;
        let (what, message) = refusal(r);
        assert_eq!(what, [rule], "{mode}: {message}");
        assert!(message.contains(detail), "{mode}: {message}");
        assert!(!tmp.path().join("child").exists(), "{mode}: nothing of the refused child is left");
        let verdicts =
            s.audit.query(&vivarium::audit::Filter::new().event(vivarium::audit::EventKind::Proposal)).unwrap();
        assert_eq!(verdicts.last().unwrap().details["verdict"], "refused", "{mode}");
        assert!(s.audit.verify().unwrap().ok, "{mode}: the audit chain is intact");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patched_file_goes_through_every_write_check() {
    for (mode, rule) in [
        ("hidden", "path-control-char: src/a\\u{200b}.py"),
        ("protected", "protected-file: requirements.txt"),
        ("manifest", "protected-manifest-section: variant.toml"),
    ] {
        let (tmp, s, r) = improve_patch(mode).await;
        let (what, message) = refusal(r);
        assert_eq!(what, [rule], "{mode}: {message}");
        assert!(!tmp.path().join("child").exists(), "{mode}");
        assert!(s.audit.verify().unwrap().ok, "{mode}: the audit chain is intact");
    }
}

/// Three transitions for a reward model: the second moves `o0` to 0.5, the
/// third ends the episode.
fn three_steps() -> Vec<vivarium::sim::Step> {
    let mut steps = vec![vivarium::sim::Step::default(); 3];
    steps[1].next_obs[0] = 0.5;
    steps[2].terminated = true;
    steps
}

/// The Python interpreter built in two different target directories (as
/// two checkouts at different paths, or two machines, build it) has one id,
/// so a variant's bundle — and so its archive id — is the same from either,
/// and the two builds behave the same: the same hash of a string (CPython's
/// hash secret, fixed at build time by `interp/build/deterministic.c`: the
/// order every set of strings iterates in) and the same answers.
/// componentize-py's output is not bit-for-bit reproducible (see
/// `vivarium::build::interpreter`); the test prints how many bytes differ.
///
/// Two componentize-py builds and two compiles, a few minutes, so not in
/// CI: `cargo test -p vivarium-tests --test all
/// interp::the_interpreter_build_is_reproducible -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "two componentize-py builds and compiles (minutes); run with --ignored"]
async fn the_interpreter_build_is_reproducible_across_target_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let build = |target: PathBuf| {
        tokio::task::spawn_blocking(move || {
            vivarium::build::interpreter::python_interpreter(&target, Duration::from_secs(600))
                .unwrap_or_else(|e| panic!("building the Python interpreter in {}: {e}", target.display()))
        })
    };
    let a = build(tmp.path().join("checkout-a/target/guests")).await.unwrap();
    let b = build(tmp.path().join("another/place/t")).await.unwrap();
    assert_eq!(a.id, b.id, "one id from either directory");
    assert_eq!(a.id, interpreter().id, "and the same as the shared target directory's");
    let (bytes_a, bytes_b) = (std::fs::read(&a.path).unwrap(), std::fs::read(&b.path).unwrap());
    let differing =
        bytes_a.iter().zip(&bytes_b).filter(|(x, y)| x != y).count() + bytes_a.len().abs_diff(bytes_b.len());
    eprintln!(
        "two builds: {} and {} ({} and {} bytes), {differing} bytes differ",
        a.sha256, b.sha256, a.bytes, b.bytes
    );
    // A variant's bundle from either build is the same bytes: the same id.
    let dir = variant(&tmp.path().join("v"), ECHO, &[], "");
    let bundle = |it: &vivarium::build::interpreter::Interpreter| {
        vivarium::build::interpreter::python_bundle(&dir, it).unwrap().to_bytes()
    };
    assert_eq!(bundle(&a), bundle(&b), "a variant's bundle does not depend on where the interpreter was built");
    // Both builds answer the same, set order of strings included: each run
    // by its own component's sha256.
    let rt = runtime();
    let probe = "def main(x):\n    words = {'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta'}\n    \
                 return repr((hash('vivarium'), list(words), sorted(words)[0], x))\n";
    let mut answers = Vec::new();
    for it in [&a, &b] {
        let code = Code {
            interpreter: it.sha256.clone(),
            files: vec![TreeFile { path: "src/probe.py".into(), contents: probe.as_bytes().to_vec() }],
            module: "probe".into(),
            function: "main".into(),
        };
        let limits = Limits { fuel: 500_000_000, ..Limits::default() };
        let report = interp::run_function(&rt, &code, "x", limits).await.unwrap();
        answers.push(output(&report).to_string());
    }
    eprintln!("answers: {answers:?}");
    assert_eq!(answers[0], answers[1], "the two builds behave differently");
}
