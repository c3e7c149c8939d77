//! `vivarium demo`.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use vivarium::variant::Session;
use vivarium::{demo, demo_coder};

use super::output::Out;

#[derive(Args)]
pub struct DemoArgs {
    /// Run the second act (the coding agent on HumanEval) against the local
    /// model (`bash scripts/local-llm.sh start`) instead of replaying its
    /// recorded answers.
    #[arg(long)]
    pub live: bool,
}

pub async fn demo(a: DemoArgs, out: &Out) -> ExitCode {
    let mut session = match Session::open_default().await {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    let note = |line: String| {
        if !out.json {
            out.note(&line);
        }
    };
    let report = match demo::run(&session, note).await {
        Ok(r) => r,
        Err(e) => return out.error(&e),
    };
    if !out.json {
        out.print(&json!(report), || demo::render(&report));
    }
    // The second act: the recorded coder run with the real model.
    let act = match demo_coder::run(&mut session, a.live, &note).await {
        Ok(act) => act,
        Err(e) => return out.error(&e),
    };
    if out.json {
        let mut v = json!(report);
        v["coder"] = json!(act);
        out.print(&v, String::new);
    } else {
        out.print(&json!(act), || format!("\n{}", demo_coder::render(&act)));
    }
    if report.audit_ok && report.contained.iter().all(|c| c.host_ok) && act.audit_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
