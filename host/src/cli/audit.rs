//! `vivarium audit verify|log|grants|diff`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;
use vivarium::archive::format;
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
        /// Only records of this variant: an archive id, or a component
        /// sha256 or its prefix.
        #[arg(long)]
        variant: Option<String>,
        /// Only records of this kind (grant, deny, refused-import, use, limit-hit, trap, …).
        #[arg(long)]
        event: Option<String>,
    },
    /// Every grant of a variant (when, by which command), and where each
    /// line of the latest came from.
    Grants {
        /// The variant: its archive id or component sha256, or a unique prefix.
        id: String,
    },
    /// Capabilities and limits one variant's manifest grant has that the
    /// other's has not (flags of single runs left out).
    Diff {
        /// First variant: archive id or component sha256, or a unique prefix.
        a: String,
        /// Second variant: archive id or component sha256, or a unique prefix.
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
                        out.note(&format!("vivarium: the audit log under {} was altered", home.audit_dir().display()));
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
                    // An archive id names its component; anything else
                    // filters by sha256 prefix as given.
                    match vivarium::ids::resolve_variant(&home, &v) {
                        Ok(vivarium::ids::VariantRef { sha256: Some(sha), .. }) => f = f.variant(sha),
                        _ => f = f.variant(v),
                    }
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
                                    r.variant.as_deref().map(|v| format::short_id(v, format::ID_COLUMN)).unwrap_or("-"),
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
        AuditCommand::Grants { id } => match grants(&home, &id) {
            Ok((r, history)) => {
                let latest = history.last().expect("grants_of returns at least one");
                let mut v = json!(latest);
                v["matched"] = json!(r);
                v["history"] = json!(history
                    .iter()
                    .map(|g| json!({
                        "seq": g.seq, "time": g.time, "digest": g.digest, "command": g.command,
                        "narrowed_by_flags": g.narrowed_by_flags,
                    }))
                    .collect::<Vec<_>>());
                out.print(&v, || {
                    let g = latest;
                    let mut s = format!(
                        "({})
",
                        r.describe()
                    );
                    s.push_str(&format!(
                        "variant {} ({})
latest grant at seq {} ({}), digest {}{}
",
                        g.variant,
                        g.name.as_deref().unwrap_or("bare component"),
                        g.seq,
                        g.time,
                        g.digest,
                        g.command.as_deref().map(|c| format!(", by `{c}`")).unwrap_or_default()
                    ));
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
                    s.push_str(&format!("every grant of this variant, oldest first ({}):\n", history.len()));
                    for h in &history {
                        s.push_str(&format!(
                            "  seq {:<6} {}  digest {}  {:<9} {}\n",
                            h.seq,
                            h.time,
                            format::short_id(&h.digest, format::ID_COLUMN),
                            if h.narrowed_by_flags { "flags" } else { "manifest" },
                            h.command.as_deref().unwrap_or("(command not recorded)")
                        ));
                    }
                    s.trim_end().to_string()
                });
                ExitCode::SUCCESS
            }
            Err(e) => out.error(&e),
        },
        AuditCommand::Diff { a, b } => {
            let result = AuditLog::open(&home.audit_dir()).and_then(|log| {
                let (ra, rb) = (sha_of(&home, &a)?, sha_of(&home, &b)?);
                let ga = audit::manifest_grant(&log, ra.sha256.as_deref().unwrap_or_default())?;
                let gb = audit::manifest_grant(&log, rb.sha256.as_deref().unwrap_or_default())?;
                Ok((ra, rb, ga, gb))
            });
            match result {
                Ok((ra, rb, ga, gb)) => {
                    let lines = vivarium::caps::diff(&ga.grant, &gb.grant);
                    let side = |r: &vivarium::ids::VariantRef, g: &audit::GrantRecord| {
                        json!({
                            "matched": r, "seq": g.seq, "time": g.time, "command": g.command,
                            "narrowed_by_flags": g.narrowed_by_flags,
                        })
                    };
                    let v = json!({
                        "a": ga.variant, "b": gb.variant, "differences": lines,
                        "compared": "the latest grant of each variant that no command-line flag narrowed (what its manifest and the policy give)",
                        "a_grant": side(&ra, &ga), "b_grant": side(&rb, &gb),
                    });
                    out.print(&v, || {
                        let mut s = String::from(
                            "comparing the grants the manifests and the policy give (flags of single runs left out)\n",
                        );
                        for (r, g) in [(&ra, &ga), (&rb, &gb)] {
                            s.push_str(&format!("  {}: grant at seq {}", r.describe(), g.seq));
                            if g.narrowed_by_flags {
                                s.push_str(
                                    " (narrowed by flags: no flag-free grant is recorded; `vivarium inspect` records one)",
                                );
                            }
                            s.push('\n');
                        }
                        if lines.is_empty() {
                            s.push_str("the two grants are the same");
                        } else {
                            s.push_str(&format!(
                                "--- {} ({})\n+++ {} ({})\n{}",
                                &ga.variant[..12],
                                ga.name.as_deref().unwrap_or("-"),
                                &gb.variant[..12],
                                gb.name.as_deref().unwrap_or("-"),
                                lines.join("\n")
                            ));
                        }
                        s
                    });
                    ExitCode::SUCCESS
                }
                Err(e) => out.error(&e),
            }
        }
    }
}

/// The variant named `given` (archive id, component sha256, or a prefix),
/// which must have a component.
fn sha_of(home: &Home, given: &str) -> vivarium::Result<vivarium::ids::VariantRef> {
    let r = vivarium::ids::resolve_variant(home, given)?;
    if r.sha256.is_none() {
        return Err(vivarium::Error::invalid(format!(
            "{}, which was archived without a component, so it has no grant",
            r.describe()
        )));
    }
    Ok(r)
}

/// Every grant of the variant named `given`, oldest first.
fn grants(home: &Home, given: &str) -> vivarium::Result<(vivarium::ids::VariantRef, Vec<audit::GrantRecord>)> {
    let r = sha_of(home, given)?;
    let log = AuditLog::open(&home.audit_dir())?;
    let history = audit::grants_of(&log, r.sha256.as_deref().unwrap_or_default())?;
    Ok((r, history))
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
