//! `vivarium export-git`: an evolution run as a git history — autoresearch's
//! "git as memory", so a person can `git log -p` a lineage.
//!
//! Every archived variant of the run becomes one commit whose tree is the
//! variant's source tree ([`Archive::tree_contents`]) and whose parent is
//! its parent variant's commit; initial variants are root commits. Refs:
//!
//! * `refs/heads/lineage/<id>` — one branch per leaf (a variant no other
//!   variant names as parent): `git log lineage/<id>` walks that lineage
//!   from the leaf back to its root;
//! * `refs/heads/best` — the run's best variant (highest visible score);
//! * `refs/tags/variant/<id>` — every variant, so `git show variant/<id>`
//!   and `git diff variant/<a> variant/<b>` work.
//!
//! The commit message is the variant's summary (first line as the subject)
//! followed by trailers: `Variant`, `Parent`, `Run`, `Generation`,
//! `Status`, `Visible-Score`, `Held-Out-Score`, `Held-Out-Gap`, `Language`,
//! `Tree-Sha256`, `Component-Sha256`. Author and committer are fixed
//! (`Vivarium <vivarium@localhost>`) and dated by the variant's archive
//! time, so exporting the same archive twice gives the same commit ids.
//!
//! The commits are written by one `git fast-import` (the git CLI, through
//! [`std::process::Command`]); the working tree is not used, except that a
//! repository this export created gets `best` checked out. The target must
//! be a missing or empty directory (a repository is initialised there) or
//! an existing git repository (its refs under the names above are
//! overwritten); any other non-empty directory is refused.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::archive::{Archive, VariantRow};
use crate::error::{Error, Result};

/// Author and committer of every exported commit.
pub const AUTHOR_NAME: &str = "Vivarium";
/// Their e-mail.
pub const AUTHOR_EMAIL: &str = "vivarium@localhost";

/// One ref written by the export.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExportedRef {
    /// Branch name (`lineage/<id>`, `best`).
    pub branch: String,
    /// The variant it points at.
    pub variant: String,
}

/// What [`export`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// The repository.
    pub repo: PathBuf,
    /// The run exported.
    pub run_id: String,
    /// Commits written (one per variant).
    pub commits: usize,
    /// Branches written: one per leaf, and `best`.
    pub branches: Vec<ExportedRef>,
    /// Whether the repository was created by this export.
    pub initialised: bool,
}

fn git(repo: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(repo);
    for (k, v) in [
        ("GIT_AUTHOR_NAME", AUTHOR_NAME),
        ("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL),
        ("GIT_COMMITTER_NAME", AUTHOR_NAME),
        ("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL),
        ("GIT_AUTHOR_DATE", "1970-01-01T00:00:00Z"),
        ("GIT_COMMITTER_DATE", "1970-01-01T00:00:00Z"),
        ("GIT_TERMINAL_PROMPT", "0"),
    ] {
        c.env(k, v);
    }
    c
}

fn run_git(repo: &Path, args: &[&str]) -> Result<String> {
    let out =
        git(repo).args(args).output().map_err(|e| Error::io("cannot run git (is it installed and on PATH?)", e))?;
    if !out.status.success() {
        return Err(Error::Internal(anyhow::anyhow!(
            "git {} in {} failed: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Make `repo` ready: initialise a missing or empty directory, accept an
/// existing repository, refuse anything else. Returns whether it was
/// initialised here.
fn prepare_repo(repo: &Path) -> Result<bool> {
    if repo.exists() {
        if !repo.is_dir() {
            return Err(Error::invalid(format!("{} exists and is not a directory", repo.display())));
        }
        let empty = std::fs::read_dir(repo)
            .map_err(|e| Error::io(format!("cannot read {}", repo.display()), e))?
            .next()
            .is_none();
        if !empty {
            if repo.join(".git").exists() {
                run_git(repo, &["rev-parse", "--git-dir"]).map_err(|e| {
                    Error::invalid(format!("{} has a .git but git does not accept it: {e}", repo.display()))
                })?;
                return Ok(false);
            }
            return Err(Error::invalid(format!(
                "refusing to export into {}: it is not empty and not a git repository; give a new or empty directory, or an existing repository",
                repo.display()
            )));
        }
    } else {
        std::fs::create_dir_all(repo).map_err(|e| Error::io(format!("cannot create {}", repo.display()), e))?;
    }
    run_git(repo, &["init", "-q"])?;
    Ok(true)
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2026-04-14T12:34:56.789Z`);
/// 0 when it cannot be read.
pub fn epoch_seconds(t: &str) -> i64 {
    let num = |r: std::ops::Range<usize>| t.get(r).and_then(|s| s.parse::<i64>().ok());
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) =
        (num(0..4), num(5..7), num(8..10), num(11..13), num(14..16), num(17..19))
    else {
        return 0;
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return 0;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + h * 3_600 + mi * 60 + s).max(0)
}

/// Guest text for a commit message, which `git log` prints to a terminal:
/// every hidden character ([`crate::text::is_hidden`]) but newline and tab
/// replaced.
fn clean(s: &str) -> String {
    crate::text::replace_hidden(s, |c| c == '\n' || c == '\t')
}

fn score(s: Option<f64>) -> String {
    s.map(|x| format!("{x}")).unwrap_or_else(|| "none".into())
}

/// The commit message of variant `v`.
pub fn commit_message(v: &VariantRow) -> String {
    let summary = clean(v.summary.trim());
    let first = summary.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let mut subject: String = first.chars().take(72).collect();
    let cut = subject.chars().count() < first.chars().count();
    if cut {
        subject.push('…');
    }
    if subject.is_empty() {
        subject = format!("variant {}", v.id);
    }
    let mut msg = subject;
    msg.push_str("\n\n");
    if cut || summary.trim() != first {
        msg.push_str(&summary);
        msg.push_str("\n\n");
    }
    let gap = match (v.visible_score, v.held_out_score) {
        (Some(a), Some(b)) => format!("{}", a - b),
        _ => "none".into(),
    };
    let trailers = [
        ("Variant", v.id.0.clone()),
        ("Parent", v.parent.as_ref().map(|p| p.0.clone()).unwrap_or_else(|| "none".into())),
        ("Run", clean(&v.run_id)),
        ("Generation", v.generation.to_string()),
        ("Status", v.status.to_string()),
        ("Visible-Score", score(v.visible_score)),
        ("Held-Out-Score", score(v.held_out_score)),
        ("Held-Out-Gap", gap),
        ("Language", clean(&v.language)),
        ("Tree-Sha256", v.tree_sha.clone()),
        ("Component-Sha256", v.component_sha.clone().unwrap_or_else(|| "none".into())),
    ];
    for (k, val) in trailers {
        msg.push_str(&format!("{k}: {}\n", val.replace('\n', " ")));
    }
    msg
}

/// A path quoted for fast-import (C-style).
fn quote_path(p: &str) -> String {
    let mut q = String::with_capacity(p.len() + 2);
    q.push('"');
    for c in p.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn data(stream: &mut Vec<u8>, bytes: &[u8]) {
    stream.extend_from_slice(format!("data {}\n", bytes.len()).as_bytes());
    stream.extend_from_slice(bytes);
    stream.push(b'\n');
}

/// Export run `run_id` of `archive` into the git repository `repo`. See the
/// [module docs](self).
pub fn export(archive: &Archive, run_id: &str, repo: &Path) -> Result<ExportSummary> {
    if archive.get_run(run_id)?.is_none() {
        return Err(Error::invalid(format!("no run {run_id:?} in the archive at {}", archive.dir().display())));
    }
    let rows = archive.list(Some(run_id))?;
    if rows.is_empty() {
        return Err(Error::invalid(format!("run {run_id:?} has no variants to export")));
    }
    let initialised = prepare_repo(repo)?;

    // The fast-import stream: each distinct file once, then one commit per
    // variant in archive order (a parent is always archived before its child).
    let mut stream = Vec::new();
    let mut next_mark = 1u64;
    let mut blob_marks: HashMap<String, u64> = HashMap::new();
    let mut commit_marks: HashMap<&str, u64> = HashMap::new();
    for v in &rows {
        let files = archive.tree_contents(&v.tree_sha)?;
        let mut entries = Vec::with_capacity(files.len());
        for (entry, bytes) in files {
            let mark = match blob_marks.get(&entry.sha256) {
                Some(&m) => m,
                None => {
                    let m = next_mark;
                    next_mark += 1;
                    stream.extend_from_slice(format!("blob\nmark :{m}\n").as_bytes());
                    data(&mut stream, &bytes);
                    blob_marks.insert(entry.sha256.clone(), m);
                    m
                }
            };
            entries.push((entry, mark));
        }
        let mark = next_mark;
        next_mark += 1;
        let when = epoch_seconds(&v.created);
        let tag = format!("refs/tags/variant/{}", v.id);
        stream.extend_from_slice(format!("reset {tag}\n\ncommit {tag}\nmark :{mark}\n").as_bytes());
        stream.extend_from_slice(
            format!(
                "author {AUTHOR_NAME} <{AUTHOR_EMAIL}> {when} +0000\ncommitter {AUTHOR_NAME} <{AUTHOR_EMAIL}> {when} +0000\n"
            )
            .as_bytes(),
        );
        data(&mut stream, commit_message(v).as_bytes());
        if let Some(p) = v.parent.as_ref().and_then(|p| commit_marks.get(p.0.as_str())) {
            stream.extend_from_slice(format!("from :{p}\n").as_bytes());
        }
        stream.extend_from_slice(b"deleteall\n");
        for (entry, m) in &entries {
            stream.extend_from_slice(format!("M {:o} :{m} {}\n", entry.mode, quote_path(&entry.path)).as_bytes());
        }
        stream.push(b'\n');
        commit_marks.insert(v.id.0.as_str(), mark);
    }
    let mut branches: Vec<ExportedRef> = rows
        .iter()
        .filter(|v| v.children == 0)
        .map(|v| ExportedRef { branch: format!("lineage/{}", v.id), variant: v.id.0.clone() })
        .collect();
    let head = archive.best(run_id)?.map(|b| b.id.0).unwrap_or_else(|| branches[0].variant.clone());
    branches.push(ExportedRef { branch: "best".into(), variant: head });
    for b in &branches {
        let m = commit_marks[b.variant.as_str()];
        stream.extend_from_slice(format!("reset refs/heads/{}\nfrom :{m}\n\n", b.branch).as_bytes());
    }
    stream.extend_from_slice(b"done\n");

    let mut child = git(repo)
        .args(["fast-import", "--quiet", "--force", "--done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("cannot run git fast-import (is git installed and on PATH?)", e))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&stream));
    let out = child.wait_with_output().map_err(|e| Error::io("waiting for git fast-import", e))?;
    let written = writer.join().unwrap_or_else(|_| Err(std::io::Error::other("writer panicked")));
    if !out.status.success() {
        return Err(Error::Internal(anyhow::anyhow!(
            "git fast-import into {} failed: {}",
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    written.map_err(|e| Error::io("writing to git fast-import", e))?;

    if initialised {
        run_git(repo, &["checkout", "-q", "-f", "best"])?;
    }
    Ok(ExportSummary {
        repo: repo.to_path_buf(),
        run_id: run_id.to_string(),
        commits: rows.len(),
        branches,
        initialised,
    })
}

/// Export the run in run directory `run_dir` (see
/// [`report::locate_run`](crate::report::locate_run)) into `repo`.
pub fn export_run(run_dir: &Path, repo: &Path) -> Result<ExportSummary> {
    let loc = crate::report::locate_run(run_dir)?;
    let archive = crate::report::open_existing(&loc.archive_dir)?;
    export(&archive, &loc.run_id, repo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_of_rfc3339() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00.000Z"), 0);
        assert_eq!(epoch_seconds("2000-03-01T00:00:00Z"), 951_868_800);
        assert_eq!(epoch_seconds("2026-04-14T12:34:56.789Z"), 1_776_170_096);
        assert_eq!(epoch_seconds("garbage"), 0);
    }

    #[test]
    fn paths_are_quoted() {
        assert_eq!(quote_path("src/a b.rs"), "\"src/a b.rs\"");
        assert_eq!(quote_path("q\"\\"), "\"q\\\"\\\\\"");
    }
}
