//! The CPU-heavy guest of the runtime benchmark (`host/benches/runtime.rs`).
//!
//! `solve` parses `task.input` as `n` (a `u32`) and answers with
//! `kernel(n)` in decimal. The kernel lives in `kernel.rs`, which the
//! benchmark also compiles natively, so both sides run the same source.
//! `improve` answers `Err("not supported")`.

mod kernel;

use vivarium_guest::{Answer, ImproveContext, MetaAgent, Proposal, Task, TaskAgent};

struct Kernel;

impl TaskAgent for Kernel {
    fn solve(task: Task) -> Result<Answer, String> {
        let n: u32 =
            task.input.trim().parse().map_err(|e| format!("the input must be a u32 `n`, got {:?}: {e}", task.input))?;
        Ok(Answer::new(kernel::kernel(n).to_string()))
    }
}

impl MetaAgent for Kernel {
    fn improve(_ctx: ImproveContext) -> Result<Proposal, String> {
        Err("not supported".into())
    }
}

vivarium_guest::export!(Kernel);
