//! `vivarium evolve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use vivarium::evolve::{self, EvolveOptions, StopReason, Summary};
use vivarium::variant::Session;

use super::output::Out;

/// Arguments of `vivarium evolve`.
#[derive(Args)]
pub struct EvolveArgs {
    /// The run file.
    pub run: PathBuf,
    /// Continue a run that was stopped or killed.
    #[arg(long)]
    pub resume: bool,
}

pub async fn evolve(a: EvolveArgs, out: &Out) -> ExitCode {
    let mut session = match Session::open_default().await {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    // A run that names its own llm.toml (and response cache) uses it; a run
    // file that does not load is reported by `evolve` below.
    if let Ok(c) = evolve::config::RunConfig::load(&a.run) {
        if let Err(e) = evolve::run_llm::use_run_llm(&mut session, c.run.llm.as_deref()) {
            return out.error(&e);
        }
    }
    let bar = if out.json { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |p: evolve::Progress| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(format!("best {:.3} · {}", p.best, p.message));
    };
    let result = evolve::evolve(&session, &a.run, &EvolveOptions { resume: a.resume }, &progress).await;
    bar.finish_and_clear();
    match result {
        Ok(s) => {
            out.print(&json!(s), || render(&s));
            ExitCode::SUCCESS
        }
        Err(e) => out.error(&e),
    }
}

/// The final table.
pub fn render(s: &Summary) -> String {
    let stop = match &s.stop {
        StopReason::Finished => "finished".to_string(),
        StopReason::Budget(why) => format!("stopped: budget reached ({why})"),
        StopReason::Requested(who) => format!("stopped: asked by {}", vivarium::text::one_line(who)),
    };
    let mut t = format!("run {} {stop} in {:.1} s\n", s.run_id, s.seconds);
    t.push_str(&format!("  baseline visible score   {:.3}\n", s.baseline));
    if let Some(b) = &s.best {
        t.push_str(&format!(
            "  best visible score       {:.3}  (variant {}, generation {})\n",
            b.visible_score.unwrap_or(0.0),
            b.id.0,
            b.generation
        ));
        t.push_str(&format!(
            "  best held-out score      {}\n",
            b.held_out_score.map_or("-".into(), |h| format!("{h:.3}"))
        ));
    }
    if let Some(g) = s.held_out_gap {
        t.push_str(&format!("  held-out gap             {g:+.3}  (visible − held-out; large = reward hacking)\n"));
    }
    t.push_str(&format!(
        "  variants archived        {}  ({} proposals refused, {} near-duplicates not evaluated)\n",
        s.variants, s.refused, s.near_duplicates
    ));
    t.push_str(&format!("  fuel spent               {}\n", s.fuel));
    if s.llm_tokens > 0 {
        t.push_str(&format!("  llm tokens               {}\n", s.llm_tokens));
    }
    if !s.usd.is_zero() {
        t.push_str(&format!("  llm dollars              {}\n", s.usd));
        // The costliest variants first; a long run lists its top ten.
        for v in s.usd_by_variant.iter().take(10) {
            t.push_str(&format!("    {:<22} {}\n", vivarium::text::one_line(&v.variant), v.usd));
        }
        if s.usd_by_variant.len() > 10 {
            t.push_str(&format!("    … {} more variants (see --json)\n", s.usd_by_variant.len() - 10));
        }
    }
    if s.gpu_seconds > 0.0 {
        t.push_str(&format!("  trainer seconds          {:.1}\n", s.gpu_seconds));
    }
    if s.sim_steps > 0 {
        t.push_str(&format!("  simulator steps          {}\n", s.sim_steps));
    }
    t.push_str(&format!("  run directory            {}\n", s.run_dir.display()));
    t.push_str(&format!("  archive                  {}", s.archive_dir.display()));
    t
}
