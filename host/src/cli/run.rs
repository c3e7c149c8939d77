//! `run`, `inspect` and `build`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use vivarium::caps::Overrides;
use vivarium::home::Home;
use vivarium::runtime::{CallOptions, CallOutcome};
use vivarium::task::TaskSpec;
use vivarium::units::{ByteSize, HumanDuration};
use vivarium::variant;

use super::output::Out;

/// Arguments of `vivarium run`.
#[derive(Args)]
pub struct RunArgs {
    /// A variant directory, a `.wasm` component or a `.wat` component text.
    pub target: PathBuf,
    /// JSON file with one task record.
    #[arg(long)]
    pub task: PathBuf,
    /// The operator's policy (default: the built-in policy).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Fuel for the call (can only lower the granted fuel).
    #[arg(long, value_parser = parse_fuel, allow_negative_numbers = true)]
    pub fuel: Option<u64>,
    /// Memory limit with its unit, e.g. 64MiB, 1.5GiB or 65536B (can only
    /// lower the granted memory).
    #[arg(long, value_parser = parse_memory, allow_negative_numbers = true)]
    pub memory: Option<ByteSize>,
    /// Wall-clock limit, e.g. 2s or 1.5s (can only lower the granted wall time).
    #[arg(long, value_parser = parse_wall, allow_negative_numbers = true)]
    pub wall: Option<HumanDuration>,
}

// Limits that cannot work are refused when read (exit 2), not at the call.

fn parse_fuel(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    if t.starts_with('-') {
        return Err("fuel cannot be negative; give a positive number of instructions, e.g. 1000000".into());
    }
    match t.parse::<u64>() {
        Ok(0) => Err("zero fuel lets no call run; give a positive number, e.g. 1000000".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a number of instructions; give e.g. 1000000")),
    }
}

fn parse_memory(s: &str) -> Result<ByteSize, String> {
    match ByteSize::parse_with_unit(s)? {
        ByteSize(0) => Err("zero memory lets no call run; give a size, e.g. 64MiB".into()),
        m => Ok(m),
    }
}

fn parse_wall(s: &str) -> Result<HumanDuration, String> {
    if s.trim().starts_with('-') {
        return Err("a duration cannot be negative; give e.g. 2s or 500ms".into());
    }
    match s.parse::<HumanDuration>()? {
        w if w.0.is_zero() => Err("a zero wall-clock limit lets no call run; give e.g. 2s or 500ms".into()),
        w => Ok(w),
    }
}

/// Arguments of `vivarium inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// A variant directory, a `.wasm` component or a `.wat` component text.
    pub target: PathBuf,
    /// The operator's policy, to show the grant and what would be refused.
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

/// Arguments of `vivarium build`.
#[derive(Args)]
pub struct BuildArgs {
    /// The variant directory.
    pub dir: PathBuf,
    /// Where to write the component (default: print where it was built).
    #[arg(short = 'o', long = "out", visible_alias = "output")]
    pub out: Option<PathBuf>,
}

pub async fn run(a: RunArgs, out: &Out) -> ExitCode {
    let overrides = Overrides { fuel: a.fuel, memory: a.memory, wall: a.wall };
    let task = match TaskSpec::load(&a.task) {
        Ok(t) => t,
        Err(e) => return out.error(&e),
    };
    let session = match variant::Session::open_default().await {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    let report = match {
        let _p = out.progress("building (if needed), compiling (the first time) and running");
        session.run(&a.target, a.policy.as_deref(), &overrides, task.into(), &CallOptions::default()).await
    } {
        Ok(r) => r,
        Err(e) => return out.error(&e),
    };
    let usage = json!(report.usage);
    let logs = json!(report.logs);
    let (status, reason, output, code) = match &report.outcome {
        CallOutcome::Ok(a) => ("ok", String::new(), json!(a.output), 0u8),
        CallOutcome::GuestError(m) => ("error", format!("the guest returned an error: {m}"), json!(null), 4),
        CallOutcome::Failed(f) => ("trapped", f.kind.to_string(), json!(null), 4),
    };
    let detail = match &report.outcome {
        CallOutcome::Failed(f) => f.detail.clone(),
        _ => String::new(),
    };
    let v = json!({
        "status": status, "reason": reason, "detail": detail, "output": output,
        "usage": usage, "logs": logs, "log_usage": report.log_usage,
    });
    out.print(&v, || {
        let mut s = String::new();
        for l in &report.logs {
            s.push_str(&format!("[{}] {}\n", l.level, vivarium::text::one_line(&l.message)));
        }
        match &report.outcome {
            CallOutcome::Ok(a) => s.push_str(&a.output),
            CallOutcome::GuestError(m) => s.push_str(&format!("guest error: {}", vivarium::text::one_line(m))),
            CallOutcome::Failed(f) => s.push_str(&format!("{}: {}", f.kind, f.detail)),
        }
        s.push_str(&format!(
            "\n(fuel {}, memory peak {}, {} ms)",
            report.usage.fuel,
            ByteSize(report.usage.memory_peak),
            report.usage.wall_ms
        ));
        s
    });
    if code != 0 && !out.json {
        let why = if reason.is_empty() { &detail } else { &reason };
        out.note(&format!("vivarium: the guest failed ({status}: {})", vivarium::text::one_line(why)));
    }
    ExitCode::from(code)
}

pub async fn inspect(a: InspectArgs, out: &Out) -> ExitCode {
    let result = async {
        let session = variant::Session::open_default().await?;
        let _p = out.progress("building (if needed) and compiling (the first time)");
        session.inspect(&a.target, a.policy.as_deref()).await
    }
    .await;
    match result {
        Ok(i) => {
            out.print(&json!(i), || {
                let mut s = format!(
                    "sha256   {}\nagent    {}\nimports:\n",
                    i.sha256,
                    if i.is_agent { "yes (task-agent + meta-agent)" } else { "no" }
                );
                for imp in &i.imports {
                    let refused = i.refused.iter().find(|r| &r.import == imp);
                    match refused {
                        Some(r) => s.push_str(&format!("  {imp}   REFUSED: {}\n", r.reason)),
                        None => s.push_str(&format!("  {imp}\n")),
                    }
                }
                s.push_str("exports:\n");
                for e in &i.exports {
                    s.push_str(&format!("  {e}\n"));
                }
                s.push_str(&format!("grant digest {}\n", i.grant.digest()));
                s.push_str(&serde_json::to_string_pretty(&i.grant).unwrap_or_default());
                s
            });
            ExitCode::SUCCESS
        }
        Err(e) => out.error(&e),
    }
}

pub async fn build(a: BuildArgs, out: &Out) -> ExitCode {
    let built = {
        let _p = out.progress(&format!("building {}", a.dir.display()));
        variant::build_dir(&a.dir, a.out.as_deref(), &Home::from_env())
    };
    match built {
        Ok(b) => {
            out.print(
                &json!({"status": "ok", "path": b.path, "sha256": b.sha256, "bytes": b.bytes, "duration_ms": b.duration_ms}),
                || format!("built {} ({} bytes, sha256 {}) in {} ms", b.path.display(), b.bytes, b.sha256, b.duration_ms),
            );
            ExitCode::SUCCESS
        }
        Err(e) => out.error(&e),
    }
}
