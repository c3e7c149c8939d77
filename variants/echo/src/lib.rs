//! The echo variant: the smallest complete Vivarium agent.
//!
//! `solve` answers with the task's input unchanged. `improve` makes one real,
//! small self-modification: it bumps `GENERATION` below in its own source, so
//! every child differs from its parent by exactly one line.

use vivarium_guest::{
    log, source, Answer, ImproveContext, MetaAgent, Proposal, Task, TaskAgent,
};

/// How many times this variant has improved itself; `improve` rewrites it.
const GENERATION: u32 = 0;

/// The file `improve` edits (relative to the variant's tree).
const SELF_PATH: &str = "src/lib.rs";

struct Echo;

impl TaskAgent for Echo {
    fn solve(task: Task) -> Result<Answer, String> {
        log::debug(&format!("echo generation {GENERATION}: task {}", task.id));
        Ok(Answer::new(task.input).with_notes(format!("echo generation {GENERATION}")))
    }
}

impl MetaAgent for Echo {
    fn improve(ctx: ImproveContext) -> Result<Proposal, String> {
        let edit = ctx.edit_text(SELF_PATH, |text| {
            let current: u32 = source::const_value(text, "GENERATION")
                .ok_or("src/lib.rs has no `const GENERATION` item")?
                .parse()
                .map_err(|e| format!("GENERATION is not a u32: {e}"))?;
            let next = current.checked_add(1).ok_or("GENERATION overflowed")?;
            source::set_const(text, "GENERATION", &next.to_string())
        })?;
        log::info(&format!("echo generation {GENERATION}: proposing generation {}", GENERATION + 1));
        Ok(Proposal::new(format!("echo: bump GENERATION to {}", GENERATION + 1)).with_edit(edit))
    }
}

vivarium_guest::export!(Echo);
