//! `vivarium archive list|show|lineage|runs`: read the archive under
//! `$VIVARIUM_HOME/archive`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use vivarium::archive::{format, Archive, Split, VariantId, VariantRow};
use vivarium::home::Home;
use vivarium::ids::Matched;
use vivarium::report::open_existing;

use super::output::Out;

/// Arguments of `vivarium archive`.
#[derive(Args)]
pub struct ArchiveArgs {
    #[command(subcommand)]
    pub command: ArchiveCommand,
}

/// The archive subcommands.
#[derive(Subcommand)]
pub enum ArchiveCommand {
    /// List archived variants, oldest first.
    List {
        /// Only the variants of this run.
        #[arg(long)]
        run: Option<String>,
    },
    /// One variant: its row, per-task results, lineage and files.
    Show {
        /// The variant's id (or a unique prefix of at least 4 digits).
        id: String,
    },
    /// The chain from the root to a variant, root first.
    Lineage {
        /// The variant's id (or a unique prefix of at least 4 digits).
        id: String,
    },
    /// List the runs in the archive, with where each stands (running,
    /// interrupted, finished, stopped, failed).
    Runs,
    /// Delete a run: its variants, results and directory (refused while a
    /// process is writing it).
    RmRun {
        /// The run's name (`run.name` in its run file).
        name: String,
    },
}

/// A score in a terminal column (`-` when there is none).
fn fmt_score(s: Option<f64>) -> String {
    format::score(s, "-")
}

fn short(id: &str) -> &str {
    format::short_id(id, format::ID_COLUMN)
}

fn row_line(v: &VariantRow) -> String {
    format!(
        "{:<12}  {:<12}  {:>3}  {:<9}  {:>8}  {:>8}  {:>3}  {:>3}  {:<7}  {}",
        short(&v.id.0),
        v.parent.as_ref().map(|p| short(&p.0)).unwrap_or("-"),
        v.generation,
        v.status.as_str(),
        fmt_score(v.visible_score),
        fmt_score(v.held_out_score),
        v.children,
        v.search.island.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
        v.search.cell.as_deref().unwrap_or("-"),
        format::summary_line(&v.summary, 60)
    )
}

const HEADER: &str = "id            parent        gen  status      visible  held-out   ch  isl  cell     summary";

fn open() -> vivarium::Result<Archive> {
    open_existing(&Home::from_env().archive_dir())
}

pub fn archive(a: ArchiveArgs, out: &Out) -> ExitCode {
    let result = open().and_then(|archive| match a.command {
        ArchiveCommand::List { run } => list(&archive, run.as_deref(), out),
        ArchiveCommand::Show { id } => show(&archive, &id, out),
        ArchiveCommand::Lineage { id } => lineage(&archive, &id, out),
        ArchiveCommand::Runs => runs(&archive, out),
        ArchiveCommand::RmRun { name } => rm_run(&name, out),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => out.error(&e),
    }
}

fn list(archive: &Archive, run: Option<&str>, out: &Out) -> vivarium::Result<()> {
    if let Some(r) = run {
        if archive.get_run(r)?.is_none() {
            return Err(vivarium::Error::invalid(format!(
                "no run {r:?} in the archive; `vivarium archive runs` lists them"
            )));
        }
    }
    let rows = archive.list(run)?;
    out.print(&json!(rows), || {
        if rows.is_empty() {
            return "no variants archived".into();
        }
        let mut s = String::new();
        let mut current_run: Option<&str> = None;
        for v in &rows {
            if run.is_none() && current_run != Some(v.run_id.as_str()) {
                s.push_str(&format!("{}run {}\n{HEADER}\n", if current_run.is_some() { "\n" } else { "" }, v.run_id));
                current_run = Some(&v.run_id);
            } else if current_run.is_none() {
                s.push_str(HEADER);
                s.push('\n');
                current_run = Some(&v.run_id);
            }
            s.push_str(&row_line(v));
            s.push('\n');
        }
        s.trim_end().to_string()
    });
    Ok(())
}

/// The archive id of the variant named `given` (an archive id, a component
/// sha256, or a prefix of either); says on stderr when it was the sha256.
fn archive_id(given: &str, out: &Out) -> vivarium::Result<(VariantId, vivarium::ids::VariantRef)> {
    let r = vivarium::ids::resolve_variant(&Home::from_env(), given)?;
    let id = r.archive_id.clone().ok_or_else(|| {
        vivarium::Error::invalid(format!(
            "{}, which is not archived under one id (it is in no run, or in several); \
             `vivarium archive list` shows the archive ids",
            r.describe()
        ))
    })?;
    if r.matched == Matched::ComponentSha256 && !out.json {
        eprintln!("({})", r.describe());
    }
    Ok((VariantId(id), r))
}

fn show(archive: &Archive, id: &str, out: &Out) -> vivarium::Result<()> {
    let (id, matched) = archive_id(id, out)?;
    let v = archive.get(&id)?.ok_or_else(|| vivarium::Error::invalid(format!("no variant {id} in the archive")))?;
    let results = archive.results(&id)?;
    let chain = archive.lineage(&id)?;
    let files = archive.read_tree(&v.tree_sha)?;
    let lineage: Vec<_> = chain
        .iter()
        .map(|a| {
            json!({
                "id": a.id, "generation": a.generation, "status": a.status,
                "visible_score": a.visible_score, "held_out_score": a.held_out_score,
                "summary": a.summary,
            })
        })
        .collect();
    let value = json!({
        "matched": matched,
        "variant": v,
        "held_out_gap": v.visible_score.zip(v.held_out_score).map(|(a, b)| a - b),
        "results": results,
        "lineage": lineage,
        "files": files,
    });
    out.print(&value, || {
        let mut s = format!("variant     {}\n", v.id);
        s.push_str(&format!("run         {}\n", v.run_id));
        s.push_str(&format!(
            "parent      {}\n",
            v.parent.as_ref().map(|p| p.0.as_str()).unwrap_or("none (initial variant)")
        ));
        s.push_str(&format!("generation  {}\n", v.generation));
        s.push_str(&format!("status      {}\n", v.status));
        s.push_str(&format!("language    {}\n", v.language));
        s.push_str(&format!(
            "scores      visible {}  held-out {}  gap {}\n",
            fmt_score(v.visible_score),
            fmt_score(v.held_out_score),
            fmt_score(v.visible_score.zip(v.held_out_score).map(|(a, b)| a - b))
        ));
        s.push_str(&format!("children    {}\n", v.children));
        s.push_str(&format!("component   {}\n", v.component_sha.as_deref().unwrap_or("none (not built)")));
        s.push_str(&format!("tree        {} ({} files)\n", v.tree_sha, files.len()));
        s.push_str(&format!("grant       {}\n", v.grant_digest));
        s.push_str(&format!("created     {}\nupdated     {}\n", v.created, v.updated));
        s.push_str("\nsummary\n");
        for l in v.summary.trim().lines() {
            s.push_str(&format!("  {l}\n"));
        }
        for split in [Split::Visible, Split::HeldOut] {
            let rs: Vec<_> = results.iter().filter(|r| r.split == split).collect();
            if rs.is_empty() {
                continue;
            }
            let passed = rs.iter().filter(|r| r.passed).count();
            s.push_str(&format!("\n{split} results ({passed}/{} passed)\n", rs.len()));
            for r in rs {
                s.push_str(&format!(
                    "  {:<24} {:<4} {:>8}  {}\n",
                    r.task_id,
                    if r.passed { "pass" } else { "FAIL" },
                    fmt_score(Some(r.score)),
                    format::summary_line(&r.note, 80)
                ));
            }
        }
        s.push_str(&format!("\nlineage ({} generations from the root)\n", chain.len().saturating_sub(1)));
        for a in &chain {
            s.push_str(&format!(
                "  {}  gen {:<3} {:>8}  {}\n",
                short(&a.id.0),
                a.generation,
                fmt_score(a.visible_score),
                format::summary_line(&a.summary, 60)
            ));
        }
        s.trim_end().to_string()
    });
    Ok(())
}

fn lineage(archive: &Archive, id: &str, out: &Out) -> vivarium::Result<()> {
    let (id, _) = archive_id(id, out)?;
    let chain = archive.lineage(&id)?;
    out.print(&json!(chain), || {
        let mut s = String::new();
        let mut prev: Option<f64> = None;
        for (depth, a) in chain.iter().enumerate() {
            let delta = match (prev, a.visible_score) {
                (Some(p), Some(c)) => format!(" ({:+.4})", c - p),
                _ => String::new(),
            };
            s.push_str(&format!(
                "{}{}{}  gen {}  {}  visible {}{delta}  held-out {}\n{}    {}\n",
                "  ".repeat(depth),
                if depth == 0 { "" } else { "└ " },
                a.id,
                a.generation,
                a.status,
                fmt_score(a.visible_score),
                fmt_score(a.held_out_score),
                "  ".repeat(depth),
                format::summary_line(&a.summary, 72)
            ));
            if a.visible_score.is_some() {
                prev = a.visible_score;
            }
        }
        s.trim_end().to_string()
    });
    Ok(())
}

fn runs(archive: &Archive, out: &Out) -> vivarium::Result<()> {
    let runs = archive.list_runs()?;
    let mut rows = Vec::new();
    for r in &runs {
        let variants = archive.list(Some(&r.id))?.len();
        let best = archive.best(&r.id)?;
        let (state, pid) = vivarium::evolve::run_state(&Home::from_env(), r);
        rows.push(json!({
            "id": r.id, "status": state, "stored_status": r.status, "pid": pid,
            "started": r.started, "finished": r.finished,
            "variants": variants,
            "best": best.as_ref().map(|b| json!({"id": b.id, "visible_score": b.visible_score, "held_out_score": b.held_out_score})),
        }));
    }
    out.print(&json!(rows), || {
        if runs.is_empty() {
            return "no runs in the archive".into();
        }
        rows.iter()
            .map(|r| {
                format!(
                    "{:<24} {:<11} {:>4} variants  best {}  started {}",
                    r["id"].as_str().unwrap_or(""),
                    match r["pid"].as_u64() {
                        Some(pid) if pid > 0 => format!("running ({pid})"),
                        _ => r["status"].as_str().unwrap_or("").to_string(),
                    },
                    r["variants"],
                    fmt_score(r["best"]["visible_score"].as_f64()),
                    r["started"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

fn rm_run(name: &str, out: &Out) -> vivarium::Result<()> {
    let removed = vivarium::evolve::remove_run(&Home::from_env(), name)?;
    out.print(&json!({ "status": "ok", "removed": removed }), || {
        format!(
            "removed run {} ({} variants{}); its content-addressed blobs stay in the archive",
            removed.run_id,
            removed.variants,
            removed.run_dir.as_ref().map(|d| format!(", {}", d.display())).unwrap_or_default()
        )
    });
    Ok(())
}
