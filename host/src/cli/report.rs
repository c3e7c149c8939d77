//! `vivarium report <run-dir> -o report.html` and
//! `vivarium export-git <run-dir> <repo-dir>`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::output::Out;

/// Arguments of `vivarium report`.
#[derive(Args)]
pub struct ReportArgs {
    /// The run directory ($VIVARIUM_HOME/runs/<name>, with its run.json), or a run name.
    pub run_dir: PathBuf,
    /// Where to write the HTML file (default: <run-dir>/report.html).
    #[arg(short = 'o', long = "out", visible_alias = "output")]
    pub output: Option<PathBuf>,
}

/// Arguments of `vivarium export-git`.
#[derive(Args)]
pub struct ExportGitArgs {
    /// The run directory ($VIVARIUM_HOME/runs/<name>, with its run.json), or a run name.
    pub run_dir: PathBuf,
    /// The git repository to write into: a new or empty directory, or an existing repository.
    pub repo_dir: PathBuf,
}

pub fn report(a: ReportArgs, out: &Out) -> ExitCode {
    // A bad -o is named before the run is looked for.
    let checked = a.output.as_deref().map_or(Ok(()), vivarium::report::check_output);
    let result = checked.and_then(|()| vivarium::report::locate_run(&a.run_dir)).and_then(|loc| {
        let path = a.output.clone().unwrap_or_else(|| loc.run_dir.join("report.html"));
        vivarium::report::write_report(&loc.run_dir, &path).map(|loc| (loc, path))
    });
    match result {
        Ok((loc, path)) => {
            out.print(
                &json!({ "status": "ok", "report": path, "run_id": loc.run_id, "archive": loc.archive_dir }),
                || format!("wrote the report of run {} to {}", loc.run_id, path.display()),
            );
            ExitCode::SUCCESS
        }
        Err(e) => out.error(&e),
    }
}

pub fn export_git(a: ExportGitArgs, out: &Out) -> ExitCode {
    match vivarium::export_git::export_run(&a.run_dir, &a.repo_dir) {
        Ok(s) => {
            out.print(&json!(s), || {
                let mut t = format!(
                    "exported {} variants of run {} as commits into {}{}\n",
                    s.commits,
                    s.run_id,
                    s.repo.display(),
                    if s.initialised { " (new repository, `best` checked out)" } else { "" }
                );
                for b in &s.branches {
                    t.push_str(&format!("  {:<30} {}\n", b.branch, b.variant));
                }
                t.push_str("every variant is also tagged variant/<id>; try `git log -p best`");
                t
            });
            ExitCode::SUCCESS
        }
        Err(e) => out.error(&e),
    }
}
