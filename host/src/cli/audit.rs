//! `vivarium audit verify|log|grants|diff`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use vivarium::audit::{self, AuditLog, EventKind, Filter};
use vivarium::home::Home;

use super::output::Out;

/// Arguments of `vivarium audit`.
#[derive(Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// The audit subcommands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of the log under $VIVARIUM_HOME.
    Verify,
    /// List records, optionally filtered.
    Log {
        /// Only records of the variant whose sha256 starts with this.
        #[arg(long)]
        variant: Option<String>,
        /// Only records of this kind (grant, deny, refused-import, use, limit-hit, trap, …).
        #[arg(long)]
        event: Option<String>,
    },
    /// The effective grant of a variant and where each line came from.
    Grants {
        /// The variant's sha256 (or a unique prefix).
        id: String,
    },
    /// Capabilities and limits one variant has that the other has not.
    Diff {
        /// First variant (sha256 or prefix).
        a: String,
        /// Second variant (sha256 or prefix).
        b: String,
    },
}

pub fn audit(a: AuditArgs, out: &Out) -> ExitCode {
    let home = Home::from_env();
    match a.command {
        AuditCommand::Verify => match audit::verify_dir(&home.audit_dir()) {
            Ok(report) => {
                out.print(&json!(report), || report.to_string());
                if report.ok {
                    ExitCode::SUCCESS
                } else {
                    if !out.json {
                        eprintln!("vivarium: the audit log under {} was altered", home.audit_dir().display());
                    }
                    ExitCode::from(1)
                }
            }
            Err(e) => out.error(&e),
        },
        AuditCommand::Log { variant, event } => {
            let result = AuditLog::open(&home.audit_dir()).and_then(|log| {
                let mut f = Filter::new();
                if let Some(v) = variant {
                    f = f.variant(v);
                }
                if let Some(e) = &event {
                    f = f.event(EventKind::from_name(e));
                }
                let records = log.query(&f)?;
                if let Some(e) = event.as_deref().filter(|e| !EventKind::from_name(e).is_known()) {
                    check_event_name(&log, e)?;
                }
                Ok(records)
            });
            match result {
                Ok(records) => {
                    out.print(&json!(records), || {
                        records
                            .iter()
                            .map(|r| {
                                format!(
                                    "{:>6}  {}  {:<14} {:<12} {}",
                                    r.seq,
                                    r.time,
                                    r.event.as_str(),
                                    r.variant.as_deref().map(|v| &v[..v.len().min(12)]).unwrap_or("-"),
                                    r.details
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    });
                    ExitCode::SUCCESS
                }
                Err(e) => out.error(&e),
            }
        }
        AuditCommand::Grants { id } => {
            match AuditLog::open(&home.audit_dir()).and_then(|log| audit::latest_grant(&log, &id)) {
                Ok(g) => {
                    out.print(&json!(g), || {
                        let mut s = format!(
                            "variant {} ({})\ngranted at seq {} ({}), digest {}\n",
                            g.variant,
                            g.name.as_deref().unwrap_or("bare component"),
                            g.seq,
                            g.time,
                            g.digest
                        );
                        for p in &g.provenance {
                            s.push_str(&format!("  {:<28} {:<24} from {}", p.field, p.value, p.source.as_str()));
                            if let Some(n) = &p.note {
                                s.push_str(&format!("  ({n})"));
                            }
                            s.push('\n');
                        }
                        for d in &g.denials {
                            s.push_str(&format!("  DENIED {:<21} {:<24} {}\n", d.capability, d.requested, d.reason));
                        }
                        s.trim_end().to_string()
                    });
                    ExitCode::SUCCESS
                }
                Err(e) => out.error(&e),
            }
        }
        AuditCommand::Diff { a, b } => {
            let result = AuditLog::open(&home.audit_dir())
                .and_then(|log| Ok((audit::latest_grant(&log, &a)?, audit::latest_grant(&log, &b)?)));
            match result {
                Ok((ga, gb)) => {
                    let lines = vivarium::caps::diff(&ga.grant, &gb.grant);
                    out.print(&json!({"a": ga.variant, "b": gb.variant, "differences": lines}), || {
                        if lines.is_empty() {
                            "the two grants are the same".to_string()
                        } else {
                            format!(
                                "--- {} ({})\n+++ {} ({})\n{}",
                                &ga.variant[..12],
                                ga.name.as_deref().unwrap_or("-"),
                                &gb.variant[..12],
                                gb.name.as_deref().unwrap_or("-"),
                                lines.join("\n")
                            )
                        }
                    });
                    ExitCode::SUCCESS
                }
                Err(e) => out.error(&e),
            }
        }
    }
}

/// An event name that is neither one of the kinds the host defines nor one
/// found in the log is a typo: exit 2 with the names that would match.
fn check_event_name(log: &AuditLog, name: &str) -> vivarium::Result<()> {
    let mut names: Vec<String> = EventKind::KNOWN.iter().map(|k| k.as_str().to_string()).collect();
    for r in log.query(&Filter::new())? {
        let n = r.event.as_str().to_string();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    if names.iter().any(|n| n == name) {
        return Ok(());
    }
    Err(vivarium::Error::invalid(format!("no audit event is called `{name}`; use one of: {}", names.join(", "))))
}
