//! `vivarium demo`.

use std::process::ExitCode;

use serde_json::json;
use vivarium::demo;
use vivarium::variant::Session;

use super::output::Out;

pub async fn demo(out: &Out) -> ExitCode {
    let session = match Session::open_default().await {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    match demo::run(&session, |line: String| {
        if !out.json {
            out.note(&line);
        }
    })
    .await
    {
        Ok(report) => {
            out.print(&json!(report), || demo::render(&report));
            if report.audit_ok && report.contained.iter().all(|c| c.host_ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => out.error(&e),
    }
}
