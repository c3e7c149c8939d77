//! `vivarium improve` and `vivarium approve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use vivarium::audit::EventKind;
use vivarium::guard::EscalationStore;
use vivarium::improve::{self, ImproveRequest};
use vivarium::text::one_line;
use vivarium::variant::Session;

use super::output::Out;

/// Arguments of `vivarium improve`.
#[derive(Args)]
pub struct ImproveArgs {
    /// The parent variant's directory.
    pub dir: PathBuf,
    /// Where to write the child (must not exist or be empty).
    #[arg(short = 'o', long = "out", visible_alias = "output")]
    pub out: PathBuf,
    /// The operator's policy (default: the built-in policy).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Feedback text handed to the meta-agent.
    #[arg(long, default_value = "")]
    pub feedback: String,
}

/// Arguments of `vivarium approve`.
#[derive(Args)]
pub struct ApproveArgs {
    /// The escalation request to decide.
    pub request: Option<String>,
    /// List requests instead (pending first).
    #[arg(long)]
    pub list: bool,
    /// Deny the request instead of approving it.
    #[arg(long)]
    pub deny: bool,
}

pub async fn improve(a: ImproveArgs, out: &Out) -> ExitCode {
    let result = async {
        let session = Session::open_default().await?;
        let req = ImproveRequest {
            parent: a.dir,
            out: a.out,
            policy: a.policy,
            feedback: a.feedback,
            iterations_left: 1,
            ..ImproveRequest::default()
        };
        let _p = out.progress("asking the meta-agent, checking and building the child");
        improve::improve(&session, &req).await
    }
    .await;
    match result {
        Ok(o) => {
            out.print(&json!({"status": "ok", "result": o}), || {
                let mut s = format!(
                    "child {} written to {}\n  parent  {}\n  change  {}\n  edits   {}, proposal {}\n  built   in {} ms",
                    &o.child[..12],
                    o.child_dir.display(),
                    &o.parent[..12],
                    one_line(&o.summary),
                    o.edits,
                    &o.proposal_digest[..12],
                    o.build_ms
                );
                if let Some(id) = &o.escalation {
                    s.push_str(&format!(
                        "\n  escalation request {id} is pending: the child keeps its parent's capabilities until a person runs `vivarium approve {id}`"
                    ));
                }
                s
            });
            ExitCode::SUCCESS
        }
        // The meta-agent answered `err` (nothing to change, or it gave up):
        // the guest did not do what was asked, as a `run` whose guest
        // answers `err` (exit 4); not a policy refusal (3).
        Err(vivarium::Error::Refused { what, detail }) if what == ["meta-agent"] => {
            out.print(&json!({"status": "declined", "reason": "declined", "detail": detail, "exit_code": 4}), || {
                format!("no child: {}", one_line(&detail))
            });
            ExitCode::from(4)
        }
        Err(e) => out.error(&e),
    }
}

pub async fn approve(a: ApproveArgs, out: &Out) -> ExitCode {
    let result = (|| -> vivarium::Result<serde_json::Value> {
        let home = vivarium::home::Home::from_env();
        let store = EscalationStore::open(home.approvals_dir())?;
        if a.list || a.request.is_none() {
            return Ok(json!(store.list()?));
        }
        let id = a.request.as_deref().unwrap_or_default();
        let who = std::env::var("USER").unwrap_or_else(|_| "operator".into());
        let audit = vivarium::audit::AuditLog::open(&home.audit_dir())?;
        let req = if a.deny { store.deny(id, &who)? } else { vivarium::improve::approve(&store, id, &who)? };
        audit.append(
            Some(&req.parent_variant),
            EventKind::Approval,
            json!({ "request": req.id, "status": req.status.as_str(), "by": who, "child_tree": req.child_tree, "exceeding": req.exceeding }),
        )?;
        Ok(json!(req))
    })();
    match result {
        Ok(v) => {
            out.print(&v, || {
                if let Some(list) = v.as_array() {
                    if list.is_empty() {
                        return "no escalation requests".into();
                    }
                    let lines = |r: &serde_json::Value, key: &str| {
                        r[key]
                            .as_array()
                            .map(|x| x.iter().filter_map(|s| s.as_str()).map(one_line).collect::<Vec<_>>().join("; "))
                            .unwrap_or_default()
                    };
                    list.iter()
                        .map(|r| {
                            let grants = serde_json::from_value::<vivarium::caps::Grant>(r["requested_grant"].clone())
                                .map(|g| g.summary_lines().iter().map(|l| one_line(l)).collect::<Vec<_>>().join("; "))
                                .unwrap_or_default();
                            let denied = lines(r, "denied");
                            let denied = if denied.is_empty() { "nothing".to_string() } else { denied };
                            format!(
                                "{}  {:<8} parent {}  child {}\n    reason: {}\n    exceeds the parent: {}\n    grants if approved (exactly): {}\n    denied by the policy (never granted): {}",
                                r["id"].as_str().unwrap_or(""),
                                r["status"].as_str().unwrap_or(""),
                                &r["parent_variant"].as_str().unwrap_or("")
                                    [..12.min(r["parent_variant"].as_str().unwrap_or("").len())],
                                r["child_tree"].as_str().unwrap_or(""),
                                one_line(r["reason"].as_str().unwrap_or("")),
                                lines(r, "exceeding"),
                                grants,
                                denied,
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                } else {
                    format!("request {} {}", v["id"].as_str().unwrap_or(""), v["status"].as_str().unwrap_or(""))
                }
            });
            ExitCode::SUCCESS
        }
        Err(e) => out.error(&e),
    }
}
