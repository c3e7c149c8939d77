//! `vivarium demo`: the main job on the embedded defaults.
//!
//! 1. Build the example `arith` variant and score it on the arith suite
//!    (visible and held-out splits, graded by the host).
//! 2. Let it improve itself for a few generations: each step is a guarded
//!    `improve` (proposal checks, sandboxed child build, grant check),
//!    then an evaluation; a child is kept only if it scores better.
//! 3. Run a gallery of hostile components and show each one contained with
//!    its typed failure, the host serving a well-behaved call after each.
//! 4. Verify the audit log's hash chain.
//!
//! The second act, the coding agent's recorded run with a real model, is
//! [`crate::demo_coder`]; `vivarium demo` runs it after this one.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bindings::Task;
use crate::caps::Grant;
use crate::error::Result;
use crate::runtime::{CallOptions, CallOutcome};
use crate::variant::Session;

/// Where the example variants live (the repository's `variants/`).
pub fn examples_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("variants");
    dir.canonicalize().unwrap_or(dir)
}

/// One generation of the demo's improvement loop.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// Generation number (0 = the baseline).
    pub generation: u32,
    /// The variant's sha256.
    pub variant: String,
    /// Its source tree.
    pub dir: PathBuf,
    /// What the meta-agent said it changed.
    pub summary: String,
    /// Visible score.
    pub visible: f64,
    /// Held-out score.
    pub held_out: f64,
    /// Whether it was kept as the new best.
    pub kept: bool,
}

/// One contained attack.
#[derive(Debug, Clone, Serialize)]
pub struct Contained {
    /// The attack.
    pub attack: &'static str,
    /// How the host stopped it (`out-of-fuel`, `refused`, …).
    pub outcome: String,
    /// Detail.
    pub detail: String,
    /// Whether a well-behaved call right after succeeded.
    pub host_ok: bool,
}

/// Everything the demo did.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// The evolution run's summary.
    pub summary: crate::evolve::Summary,
    /// The HTML report of the run.
    pub report: PathBuf,
    /// The improvement loop, baseline first.
    pub generations: Vec<Generation>,
    /// The hostile gallery.
    pub contained: Vec<Contained>,
    /// Audit records written and whether the chain verifies.
    pub audit_records: u64,
    /// Whether `audit verify` passed.
    pub audit_ok: bool,
}

/// The hostile gallery: hand-written core modules, one attack each.
pub async fn gallery(session: &Session) -> Result<Vec<Contained>> {
    const PRELUDE: &str = r#"(memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
  (func (export "vivarium:agent/meta-agent@0.1.0#improve")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32) unreachable)"#;
    let solve = |body: &str, extra: &str| {
        format!(
            "(module {extra} {PRELUDE} (func (export \"vivarium:agent/task-agent@0.1.0#solve\") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32) {body}))"
        )
    };
    let attacks: Vec<(&'static str, String)> = vec![
        ("endless loop", solve("(loop $l (br $l)) unreachable", "")),
        (
            "memory bomb",
            solve("(loop $l (br_if $l (i32.ne (memory.grow (i32.const 256)) (i32.const -1)))) unreachable", ""),
        ),
        ("unbounded recursion", solve("(call $r) unreachable", "(func $r (call $r))")),
        ("loop in the start function", solve("unreachable", "(func $s (loop $l (br $l))) (start $s)")),
        ("wild trap", solve("(i32.load (i32.const -1))", "")),
        ("undeclared network import", solve("unreachable", "(import \"wasi:sockets/tcp@0.2.0\" \"x\" (func))")),
    ];
    let good = crate::componentize::from_core_module(
        solve(
            "(i32.store8 (i32.const 0) (i32.const 0)) (i32.store (i32.const 4) (local.get 6)) (i32.store (i32.const 8) (local.get 7)) (i32.store8 (i32.const 12) (i32.const 0)) (i32.const 0)",
            "",
        )
        .as_bytes(),
        true,
    )?;
    let limits = crate::caps::Limits {
        fuel: 100_000_000,
        memory: crate::units::ByteSize(32 << 20),
        wall: crate::units::HumanDuration(std::time::Duration::from_secs(2)),
        ..crate::caps::Limits::default()
    };
    let rt = &session.runtime;
    let good = rt.prepare(&rt.load(&good).await?, Grant::minimal(limits.clone()))?;
    let task =
        Task { id: "demo".into(), domain: "echo".into(), instruction: "echo".into(), input: "still serving".into() };
    let mut out = Vec::new();
    for (attack, wat) in attacks {
        let (outcome, detail) = match crate::componentize::from_core_module(wat.as_bytes(), true) {
            Err(e) => ("refused".to_string(), e.to_string()),
            Ok(bytes) => match rt.load(&bytes).await.and_then(|l| rt.prepare(&l, Grant::minimal(limits.clone()))) {
                Err(e) => ("refused".to_string(), e.to_string()),
                Ok(p) => match session.solve(&p, &task, &CallOptions::default()).await?.outcome {
                    CallOutcome::Failed(f) => (f.kind.to_string(), f.detail),
                    CallOutcome::GuestError(m) => ("guest-error".into(), m),
                    CallOutcome::Ok(_) => ("NOT CONTAINED".into(), String::new()),
                },
            },
        };
        let after = session.solve(&good, &task, &CallOptions::default()).await?;
        let host_ok = matches!(&after.outcome, CallOutcome::Ok(a) if a.output == "still serving");
        out.push(Contained { attack, outcome, detail, host_ok });
    }
    Ok(out)
}

/// The embedded run: three generations of two children from the baseline.
pub fn run_toml(name: &str) -> String {
    format!(
        r#"[run]
name = "{name}"
suite = "arith"
seed = 7
generations = 3
children_per_generation = 2
workers = 1
selection = "dgm"
keep = "all"
initial = ["{}"]

[staged]
first = 4
threshold = 0.25

[budget]
wall = "10m"
"#,
        examples_dir().join("arith").display()
    )
}

/// Run the whole demo; `progress` receives one line per step.
pub async fn run(session: &Session, progress: impl Fn(String) + Sync) -> Result<DemoReport> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let name = format!("demo-{secs}");
    let dir = session.home.root().join("demo");
    session.home.ensure(&dir)?;
    let run_file = dir.join(format!("{name}.toml"));
    crate::fsio::write_atomic(&run_file, run_toml(&name).as_bytes())
        .map_err(|e| crate::Error::io(format!("writing {}", run_file.display()), e))?;
    progress(format!("evolving the arith baseline ({}) …", run_file.display()));
    let summary = crate::evolve::evolve(session, &run_file, &Default::default(), &|p: crate::evolve::Progress| {
        progress(format!("  step {}/{}  best visible {:.3}  {}", p.done, p.total, p.best, p.message))
    })
    .await?;
    let archive = crate::archive::Archive::open(&session.home.archive_dir())?;
    let generations = archive
        .list(Some(&summary.run_id))?
        .into_iter()
        .map(|v| Generation {
            generation: v.generation,
            kept: summary.best.as_ref().is_some_and(|b| b.id == v.id),
            variant: v.id.0,
            dir: summary.run_dir.join("variants"),
            summary: v.summary,
            visible: v.visible_score.unwrap_or(0.0),
            held_out: v.held_out_score.unwrap_or(0.0),
        })
        .collect();
    let report = summary.run_dir.join("report.html");
    crate::report::write_report(&summary.run_dir, &report)?;
    progress("running the hostile gallery …".into());
    let contained = gallery(session).await?;
    let verify = session.audit.verify()?;
    Ok(DemoReport { summary, report, generations, contained, audit_records: verify.records, audit_ok: verify.ok })
}

/// The demo's report as text.
pub fn render(r: &DemoReport) -> String {
    let mut s = String::from("Self-improvement on the arith suite (scores: visible / held-out)\n");
    s.push_str(&format!(
        "{:>4}  {:<14} {:>8} {:>9}  {:<5} {}\n",
        "gen", "variant", "visible", "held-out", "best", "change"
    ));
    for g in &r.generations {
        s.push_str(&format!(
            "{:>4}  {:<14} {:>8.2} {:>9.2}  {:<5} {}\n",
            g.generation,
            &g.variant[..12],
            g.visible,
            g.held_out,
            if g.kept { "*" } else { "" },
            g.summary
        ));
    }
    let sm = &r.summary;
    s.push_str(&format!(
        "\nstarted from {:.3}, best visible {:.3}, held-out gap {}\nrun directory {}\narchive {}\nreport {}\n",
        sm.baseline,
        sm.best.as_ref().and_then(|b| b.visible_score).unwrap_or(0.0),
        sm.held_out_gap.map_or("-".into(), |g| format!("{g:+.3}")),
        sm.run_dir.display(),
        sm.archive_dir.display(),
        r.report.display()
    ));
    s.push_str("\nHostile components, each contained (the host answers a good call after each)\n");
    for c in &r.contained {
        let detail: String = c.detail.chars().take(90).collect();
        s.push_str(&format!(
            "  {:<28} {:<15} host ok: {:<5} {}\n",
            c.attack,
            c.outcome,
            if c.host_ok { "yes" } else { "NO" },
            detail
        ));
    }
    s.push_str(&format!(
        "\nAudit log: {} records, hash chain {}",
        r.audit_records,
        if r.audit_ok { "verified" } else { "BROKEN" }
    ));
    s
}
