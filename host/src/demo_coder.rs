//! The demo's second act: `examples/coder-local`, the seed's loop with a
//! real model — `variants/coder` evolving on HumanEval with
//! Qwen2.5-Coder-0.5B — replayed from the response cache shipped beside the
//! run file, so it needs no model, no network and no configuration.
//!
//! With `live`, the same run goes to the local model that
//! `bash scripts/local-llm.sh start` serves (the run's `llm.toml`), caching
//! its answers in the act's own home rather than in the repository.
//!
//! The act runs in the demo's home under a run name of its own
//! (`demo-coder-<n>`, the recorded run file copied with absolute paths), so
//! a second demo starts a fresh run; the session's `llm` service is
//! replaced by the run's for the act.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::evolve::run_llm::config_for_run;
use crate::services::llm::LlmService;
use crate::variant::Session;

/// The recorded run (relative to the repository).
pub fn run_file() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/coder-local");
    dir.canonicalize().unwrap_or(dir).join("run.toml")
}

/// One variant of the act's run.
#[derive(Debug, Clone, Serialize)]
pub struct CoderVariant {
    /// Generation (0 = the baseline).
    pub generation: u32,
    /// The variant's sha256.
    pub variant: String,
    /// What its meta-agent said it changed.
    pub summary: String,
    /// Visible pass@1 (`None`: stopped at the first stage).
    pub visible: Option<f64>,
    /// Held-out pass@1 (`None`: not measured).
    pub held_out: Option<f64>,
    /// Set when the variant stopped at the run's first stage: its visible
    /// score is then over those few tasks, not comparable with a whole
    /// split's.
    pub first_stage: Option<FirstStage>,
}

/// A child scored on the first stage only, beside its parent on the same
/// tasks.
#[derive(Debug, Clone, Serialize)]
pub struct FirstStage {
    /// Visible tasks it was scored on.
    pub tasks: usize,
    /// How many it passed.
    pub passed: usize,
    /// How many of the same tasks its parent passed (`None`: no parent, or
    /// the parent has no result for one of them).
    pub parent_passed: Option<usize>,
}

/// What the second act showed.
#[derive(Debug, Clone, Serialize)]
pub struct CoderAct {
    /// Whether it ran against the live model (else replayed).
    pub live: bool,
    /// The run's summary.
    pub summary: crate::evolve::Summary,
    /// Every variant, baseline first.
    pub variants: Vec<CoderVariant>,
    /// Audit records of the home after the act (both acts' records).
    pub audit_records: u64,
    /// Whether the home's audit chain verified after the act.
    pub audit_ok: bool,
}

/// The recorded run file's text under run name `name`, its relative paths
/// made absolute and its `llm` key dropped (the act sets the service).
fn run_copy(recorded: &Path, name: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(recorded).map_err(|e| Error::io(format!("reading {}", recorded.display()), e))?;
    let mut doc: toml::Table =
        toml::from_str(&text).map_err(|e| Error::invalid(format!("{}: {e}", recorded.display())))?;
    let dir = recorded.parent().unwrap_or(Path::new("."));
    let abs = |v: &toml::Value| v.as_str().map(|p| toml::Value::String(dir.join(p).display().to_string()));
    if let Some(run) = doc.get_mut("run").and_then(|r| r.as_table_mut()) {
        run.insert("name".into(), toml::Value::String(name.into()));
        run.remove("llm");
        if let Some(p) = run.get("policy").and_then(abs) {
            run.insert("policy".into(), p);
        }
        if let Some(list) = run.get("initial").and_then(|v| v.as_array()) {
            let list: Vec<toml::Value> = list.iter().filter_map(abs).collect();
            run.insert("initial".into(), toml::Value::Array(list));
        }
    }
    toml::to_string(&doc).map_err(|e| Error::Internal(anyhow::anyhow!("writing the demo's coder run: {e}")))
}

/// Replay (or, with `live`, rerun) `examples/coder-local` in `session`'s
/// home, with the session's `llm` service replaced by the run's.
///
/// Errors: the run file or its `llm.toml` is missing or invalid, or the run
/// fails (a replay whose cache lacks an answer does not fail: the variant
/// falls back offline, and its scores show it).
pub async fn run(session: &mut Session, live: bool, progress: &(dyn Fn(String) + Sync)) -> Result<CoderAct> {
    let recorded = run_file();
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let dir = session.home.root().join("demo");
    session.home.ensure(&dir)?;
    let run_file = dir.join(format!("demo-coder-{secs}.toml"));
    crate::fsio::write_atomic(&run_file, run_copy(&recorded, &format!("demo-coder-{secs}"))?.as_bytes())
        .map_err(|e| Error::io(format!("writing {}", run_file.display()), e))?;
    let mut config = config_for_run(&recorded.with_file_name("llm.toml"))?;
    if live {
        // The live answers go to the act's home, never into the repository.
        config.cache_dir = Some(session.home.root().join(crate::services::llm::CACHE_DIR));
        config.replay = false;
    } else {
        config.replay = true;
    }
    let root = session.home.root().to_path_buf();
    let mut services = session.runtime.services().clone();
    let llm = LlmService::with_ledger(config, Some(&root), services.ledger.clone())?;
    services.llm = Some(Arc::new(llm));
    session.runtime.set_services(services);
    progress(format!(
        "{} {} (variants/coder on humaneval, Qwen2.5-Coder-0.5B) …",
        if live { "running" } else { "replaying" },
        recorded.display()
    ));
    let summary = crate::evolve::evolve(&session, &run_file, &Default::default(), &|p: crate::evolve::Progress| {
        progress(format!("  step {}/{}  best visible {:.3}  {}", p.done, p.total, p.best, p.message))
    })
    .await?;
    let archive = crate::archive::Archive::open(&session.home.archive_dir())?;
    let mut variants = Vec::new();
    for v in archive.list(Some(&summary.run_id))? {
        let first_stage = match (v.visible_score, v.held_out_score) {
            (Some(_), None) => Some(first_stage(&archive, &v)?),
            _ => None,
        };
        variants.push(CoderVariant {
            generation: v.generation,
            variant: v.id.0,
            summary: v.summary,
            visible: v.visible_score,
            held_out: v.held_out_score,
            first_stage,
        });
    }
    let verify = session.audit.verify()?;
    Ok(CoderAct { live, summary, variants, audit_records: verify.records, audit_ok: verify.ok })
}

/// What a variant scored at the first stage, and its parent on the same
/// tasks.
fn first_stage(archive: &crate::archive::Archive, v: &crate::archive::VariantRow) -> Result<FirstStage> {
    use crate::archive::Split;
    let mine: Vec<_> = archive.results(&v.id)?.into_iter().filter(|r| r.split == Split::Visible).collect();
    let parent_passed = match &v.parent {
        Some(p) => {
            let theirs = archive.results(p)?;
            let on_same: Option<Vec<bool>> = mine
                .iter()
                .map(|r| theirs.iter().find(|t| t.split == Split::Visible && t.task_id == r.task_id).map(|t| t.passed))
                .collect();
            on_same.map(|same| same.into_iter().filter(|passed| *passed).count())
        }
        None => None,
    };
    Ok(FirstStage { tasks: mine.len(), passed: mine.iter().filter(|r| r.passed).count(), parent_passed })
}

/// The act as text.
pub fn render(a: &CoderAct) -> String {
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
    let mut s = format!(
        "The seed's loop with a real model: variants/coder on HumanEval, Qwen2.5-Coder-0.5B ({})\n",
        if a.live { "live" } else { "replayed from examples/coder-local/llm-cache" }
    );
    s.push_str(&format!("{:>4}  {:<14} {:>8} {:>9}  {}\n", "gen", "variant", "visible", "held-out", "change"));
    for v in &a.variants {
        let change: String = crate::text::one_line(&v.summary).chars().take(90).collect();
        let visible = match &v.first_stage {
            Some(f) => format!("{}/{}", f.passed, f.tasks),
            None => pct(v.visible),
        };
        s.push_str(&format!(
            "{:>4}  {:<14} {:>8} {:>9}  {}\n",
            v.generation,
            &v.variant[..12.min(v.variant.len())],
            visible,
            pct(v.held_out),
            change
        ));
    }
    for v in &a.variants {
        if let Some(f) = &v.first_stage {
            let parent =
                f.parent_passed.map_or(String::new(), |p| format!(", where its parent passed {p} of the same"));
            s.push_str(&format!(
                "generation {} stopped at the first stage: {} of {} visible tasks{parent}\n",
                v.generation, f.passed, f.tasks
            ));
        }
    }
    // The best is chosen among variants scored on the whole suite: a
    // first-stage score covers a few tasks and is not comparable.
    let base = a.variants.first();
    let best = a
        .variants
        .iter()
        .filter(|v| v.first_stage.is_none() && v.visible.is_some())
        .max_by(|x, y| x.visible.partial_cmp(&y.visible).unwrap_or(std::cmp::Ordering::Equal));
    s.push_str(&format!(
        "\npass@1 baseline {} visible / {} held-out; best {} visible / {} held-out; {} tokens, {:.1} s\n",
        pct(base.and_then(|v| v.visible)),
        pct(base.and_then(|v| v.held_out)),
        pct(best.and_then(|b| b.visible)),
        pct(best.and_then(|b| b.held_out)),
        a.summary.llm_tokens,
        a.summary.seconds
    ));
    s.push_str(&format!(
        "Audit log after both acts: {} records, hash chain {}",
        a.audit_records,
        if a.audit_ok { "verified" } else { "BROKEN" }
    ));
    s
}
