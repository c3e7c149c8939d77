//! Argument parsing, printing and exit codes. No logic lives here: every
//! command calls into the library and renders what it returns.

mod archive;
mod audit;
mod demo;
mod evolve;
mod grade;
mod improve;
mod init;
mod output;
mod report;
mod run;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use output::Out;

/// Vivarium: run self-improving agents as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "vivarium", version, about)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Answer every `llm` call from the response cache only, never the
    /// network, to reproduce a recorded run offline (same as
    /// `VIVARIUM_LLM_REPLAY=1`); a request not in the cache is `unavailable`.
    /// Given before the subcommand: `vivarium --replay evolve run.toml`.
    #[arg(long)]
    replay: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job on the embedded defaults: score, self-improve, contain, audit;
    /// then the coding agent's recorded run with a real model, replayed.
    Demo(demo::DemoArgs),
    /// Write a ready variant (manifest, source, README) in one of five languages.
    Init(init::InitArgs),
    /// Run a variant on one task under its grant and limits.
    Run(run::RunArgs),
    /// Show a component's imports, exports, sha256 and grant.
    Inspect(run::InspectArgs),
    /// Build a variant's source tree into a component.
    Build(run::BuildArgs),
    /// One guarded self-modification: the variant proposes its own child.
    Improve(improve::ImproveArgs),
    /// List, approve or deny capability escalation requests.
    Approve(improve::ApproveArgs),
    /// Run (or resume) an evolution: select, improve, evaluate, archive.
    Evolve(evolve::EvolveArgs),
    /// Inspect and verify the audit log.
    Audit(audit::AuditArgs),
    /// Read the archive: variants, results, lineage.
    Archive(archive::ArchiveArgs),
    /// Write a run's self-contained HTML report (lineage tree, scores, variants).
    Report(report::ReportArgs),
    /// Write a run's variants as git commits, one branch per lineage.
    ExportGit(report::ExportGitArgs),
    /// Grade model-written code on a public benchmark, each sample sandboxed (`grade humaneval SAMPLES.jsonl`).
    Grade(grade::GradeArgs),
    /// A live control room in the browser: runs, lineage, approvals, stop, audit (token required).
    Serve(serve::ServeArgs),
    /// Internal: compile one component read from stdin and write the
    /// serialized artifact to stdout (the host's compiler process).
    #[command(name = "__compile", hide = true)]
    Compile(CompileArgs),
    /// Internal: grade cluster batches read from stdin, one JSON request a
    /// line, answering on stdout (what a Ray task runs; see `cluster`).
    #[command(name = "__cluster-worker", hide = true)]
    ClusterWorker,
}

/// Arguments of the hidden compiler subcommand.
#[derive(clap::Args)]
struct CompileArgs {
    /// The engine's wasm stack limit, in bytes (it shapes the compiled code).
    #[arg(long)]
    max_wasm_stack: usize,
}

/// Parse, dispatch, print, exit.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return argument_error(e),
    };
    if let Command::Compile(a) = &cli.command {
        let max = vivarium::runtime::RuntimeConfig::default().max_component_bytes;
        return vivarium::runtime::compile::child_main(a.max_wasm_stack, max);
    }
    // Runtimes of this process compile untrusted components in a child
    // process running this binary's `__compile`, which can be killed.
    if let Ok(exe) = std::env::current_exe() {
        vivarium::runtime::compile::compile_out_of_process_with(exe);
    }
    init_tracing();
    // Each grant this process records says which command computed it.
    let args: Vec<String> = std::env::args().skip(1).collect();
    vivarium::audit::set_command(&format!("vivarium {}", args.join(" ")));
    if cli.replay {
        // Still one thread here: the async runtime starts below. The
        // service reads the variable when a session opens its home.
        std::env::set_var("VIVARIUM_LLM_REPLAY", "1");
    }
    // The control room yields to the runs it watches. Linux keeps a nice
    // value per thread and a new thread inherits its creator's, so this
    // must happen here, before the async runtime starts its threads.
    if let Command::Serve(_) = &cli.command {
        vivarium::serve::lower_priority();
    }
    let out = Out { json: cli.json };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return out.error(&vivarium::Error::io("cannot start the async runtime", e)),
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Demo(a) => demo::demo(a, &out).await,
            Command::Init(a) => init::init(a, &out),
            Command::Run(a) => run::run(a, &out).await,
            Command::Inspect(a) => run::inspect(a, &out).await,
            Command::Build(a) => run::build(a, &out).await,
            Command::Audit(a) => audit::audit(a, &out),
            Command::Archive(a) => archive::archive(a, &out),
            Command::Report(a) => report::report(a, &out),
            Command::ExportGit(a) => report::export_git(a, &out),
            Command::Evolve(a) => evolve::evolve(a, &out).await,
            Command::Improve(a) => improve::improve(a, &out).await,
            Command::Approve(a) => improve::approve(a, &out).await,
            Command::Serve(a) => serve::serve(a, &out).await,
            Command::ClusterWorker => cluster_worker(&out).await,
            Command::Grade(a) => grade::grade(a, &out).await,
            // Handled above, before the async runtime starts.
            Command::Compile(a) => vivarium::runtime::compile::child_main(
                a.max_wasm_stack,
                vivarium::runtime::RuntimeConfig::default().max_component_bytes,
            ),
        }
    })
}

/// `__cluster-worker`: serve requests on stdin until it closes.
async fn cluster_worker(out: &Out) -> ExitCode {
    let mut session = match vivarium::variant::Session::open_default().await {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    let input = tokio::io::BufReader::new(tokio::io::stdin());
    match vivarium::cluster::worker::serve(&mut session, input, tokio::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => out.error(&e),
    }
}

/// An argument clap refused (or `--help`/`--version`, which are not
/// errors): exit 2 with clap's message, as JSON on stdout when `--json` was
/// among the arguments, since the caller then reads stdout only.
fn argument_error(e: clap::Error) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    // The parse failed, so `--json` is looked for by hand; an argument after
    // `--` is a value, not the flag.
    let json = std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json");
    if !json {
        let _ = e.print();
        return ExitCode::from(2);
    }
    let detail = e.render().to_string();
    let reason = detail.lines().next().unwrap_or_default().trim_start_matches("error: ").to_string();
    let v = serde_json::json!({
        "status": "error", "reason": reason, "detail": detail.trim_end(),
        "kind": format!("{:?}", e.kind()), "exit_code": 2,
    });
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    ExitCode::from(2)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIVARIUM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
