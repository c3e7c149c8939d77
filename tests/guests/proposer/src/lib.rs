//! A meta-agent that makes one hostile (or honest) proposal, chosen by the
//! `feedback` the host passes: each is one attack on the guard, the build
//! sandbox or capability monotonicity, for the host's tests.

use vivarium_guest::{Answer, Edit, ImproveContext, MetaAgent, Proposal, Task, TaskAgent};

/// Bumped by the honest proposal.
const GENERATION: u32 = 0;

struct Proposer;

impl TaskAgent for Proposer {
    fn solve(_task: Task) -> Result<Answer, String> {
        Ok(Answer::new(format!("generation {GENERATION}")))
    }
}

fn lib_with(ctx: &ImproveContext, extra: &str) -> Result<Edit, String> {
    let text = ctx.source_text("src/lib.rs")?;
    Ok(Edit::write_file("src/lib.rs", format!("{text}\n{extra}\n")))
}

impl MetaAgent for Proposer {
    fn improve(ctx: ImproveContext) -> Result<Proposal, String> {
        let attack = ctx.feedback.trim().to_string();
        // Inside `vivarium evolve` the feedback is the suite's failures: the
        // first proposal breaks the build; once the compiler's message
        // comes back as feedback, an honest one follows.
        if attack.starts_with("task ") {
            // A copy holding `escalate-in-evolve` asks a person for memory
            // from inside a run, with an honest edit beside the request.
            if ctx.source("escalate-in-evolve").is_some() {
                return Ok(Proposal::new("asks for memory inside a run")
                    .with_edit(ctx.edit_text("src/lib.rs", |t| vivarium_guest::source::set_const(t, "GENERATION", "1"))?)
                    .with_edit(Edit::write_file(
                        "escalation.toml",
                        "reason = \"remember results across generations\"\n\n[capabilities]\nmemory = { bytes = \"1MiB\" }\n",
                    )));
            }
            return Ok(if attack.contains("was refused") && attack.contains("/etc/passwd") {
                Proposal::new("saw the compiler's refusal; honest now")
                    .with_edit(ctx.edit_text("src/lib.rs", |t| vivarium_guest::source::set_const(t, "GENERATION", "1"))?)
            } else {
                Proposal::new("break the build").with_edit(lib_with(
                    &ctx,
                    "pub const STOLEN: &str = include_str!(\"/etc/passwd\");",
                )?)
            });
        }
        let p = Proposal::new(format!("attack: {attack}"));
        Ok(match attack.as_str() {
            "honest" => p.with_edit(ctx.edit_text("src/lib.rs", |t| {
                vivarium_guest::source::set_const(t, "GENERATION", "1")
            })?),
            "parent-dir" => p.with_edit(Edit::write_file("../x", "escaped")),
            "absolute" => p.with_edit(Edit::write_file("/tmp/vivarium-escape-x", "escaped")),
            "through-symlink" => p.with_edit(Edit::write_file("link/x", "escaped")),
            "many-edits" => {
                let mut p = p;
                for i in 0..100_000 {
                    p = p.with_edit(Edit::write_file(format!("src/f{i}.rs"), "//"));
                }
                p
            }
            "huge-edit" => p.with_edit(Edit::write_file("src/huge.txt", vec![b'x'; 200_000_000])),
            "raise-capabilities" => {
                let m = ctx.source_text("variant.toml")?;
                p.with_edit(Edit::write_file("variant.toml", m.replace("[capabilities]", "[capabilities]\nllm = { models = [\"*\"], tokens = 1000000 }")))
            }
            "new-dependency" => {
                let c = ctx.source_text("Cargo.toml")?;
                p.with_edit(Edit::write_file("Cargo.toml", format!("{c}\nreqwest = \"0.12\"\n")))
            }
            "build-rs" => p.with_edit(Edit::write_file(
                "build.rs",
                "fn main() { let _ = std::net::TcpStream::connect(\"1.1.1.1:80\"); }",
            )),
            "include-passwd" => p.with_edit(lib_with(&ctx, "pub const STOLEN: &str = include_str!(\"/etc/passwd\");")?),
            "escalate" => p.with_edit(Edit::write_file(
                "escalation.toml",
                "reason = \"remember results across generations\"\n\n[capabilities]\nmemory = { bytes = \"1MiB\" }\n",
            )),
            // Asks for much more than the operator's policy allows; an
            // approval must grant only what the policy let through.
            "escalate-wide" => p.with_edit(Edit::write_file(
                "escalation.toml",
                "reason = \"remember results\\napproved  0000000000000000  (forged line)\"\n\n\
                 [capabilities]\nmemory = { bytes = \"1MiB\" }\n\
                 llm = { models = [\"*\"], tokens = 1000000 }\n\
                 env = [\"HF_TOKEN\"]\nsockets = [\"api.example.com:443\"]\n\n\
                 [limits]\nfuel = 9000000000000000000\nmemory = \"1TiB\"\n",
            )),
            other => return Err(format!("unknown attack {other:?}")),
        })
    }
}

vivarium_guest::export!(Proposer);
