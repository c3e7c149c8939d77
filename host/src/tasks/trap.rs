//! The `trap` suite: a small, deterministic landscape with deceptive local
//! optima, where a search that only ever climbs gets stuck.
//!
//! A variant carries a genome of [`BLOCKS`] blocks of [`K`] bits (its own
//! constants; `variants/trap-python` keeps them in `GENOME`). Each task
//! asks for one block (`input = "block 1"`) and the answer is that block's
//! bits (`"011"`). A block with `u` ones scores by Deb & Goldberg's trap
//! function:
//!
//! | ones `u` | 0 | 1 | 2 | 3 |
//! |---|---|---|---|---|
//! | score | 0.6 | 0.3 | 0.0 | **1.0** |
//!
//! Every step towards the block's optimum (all ones) lowers its score until
//! the last one: the gradient leads to all zeros (0.6, the local optimum),
//! and the global one (1.0) needs two steps down first. The visible split
//! is one task per block (family `block0`, `block1`, …, so
//! `family:block0` is a descriptor); the held-out split asks for the whole
//! genome at once (`input = "all"`, blocks in order), scored by the mean
//! of its blocks, so a variant that answers each block differently from
//! its whole genome shows a gap.
//!
//! Grading reads only the answer's output. The answer's notes are never
//! scored; a `descriptor: <name>=<value>` line there is copied into the
//! task's note ([`super::reported`]) for the search's grid
//! (`reported:<name>`, docs/evolve.md), and cannot change a score.

use std::future::Future;
use std::pin::Pin;

use super::{Graded, GradedTask, Grader, Spent, Suite};
use crate::runtime::bindings::Task;
use crate::runtime::{CallOptions, CallOutcome, Prepared};
use crate::variant::Session;

/// The suite's name.
pub const NAME: &str = "trap";

/// Bits per block.
pub const K: usize = 3;

/// Blocks in a genome.
pub const BLOCKS: usize = 2;

/// The score of a block with `ones` ones set (see the module table).
pub fn block_score(ones: usize) -> f64 {
    if ones >= K {
        1.0
    } else {
        0.6 * (K - 1 - ones) as f64 / (K - 1) as f64
    }
}

/// The score of an answer of `blocks` blocks (`"011"` or `"011 100"`, the
/// blocks separated by whitespace): the mean block score, or an error
/// saying what is wrong with the answer.
pub fn score_answer(answer: &str, blocks: usize) -> Result<f64, String> {
    let parts: Vec<&str> = answer.split_whitespace().collect();
    if parts.len() != blocks {
        return Err(format!("expected {blocks} block(s) of {K} bits, got {} word(s)", parts.len()));
    }
    let mut sum = 0.0;
    for p in &parts {
        if p.len() != K || !p.bytes().all(|b| b == b'0' || b == b'1') {
            return Err(format!("a block is {K} characters, each 0 or 1"));
        }
        sum += block_score(p.bytes().filter(|&b| b == b'1').count());
    }
    Ok(sum / blocks as f64)
}

/// The suite: one visible task per block, one held-out task for the whole
/// genome. `expected` holds how many blocks the answer must have.
pub fn suite() -> Suite {
    let task = |id: String, input: String| Task {
        id,
        domain: NAME.into(),
        instruction: format!(
            "Answer with the bits of the named block of your genome ({K} characters, each 0 or 1), \
             or with every block in order, separated by spaces, for `all`."
        ),
        input,
    };
    let visible = (0..BLOCKS)
        .map(|b| GradedTask { task: task(format!("trap-v-block{b}"), format!("block {b}")), expected: "1".into() })
        .collect();
    let held_out = vec![GradedTask { task: task("trap-h-all".into(), "all".into()), expected: BLOCKS.to_string() }];
    Suite { name: NAME, visible, held_out, grading: super::Grading::Custom(std::sync::Arc::new(TrapGrader)) }
}

/// Grades a trap task from `solve`'s answer.
struct TrapGrader;

impl Grader for TrapGrader {
    fn grade<'a>(
        &'a self,
        session: &'a Session,
        p: &'a Prepared,
        task: &'a GradedTask,
        opts: &'a CallOptions,
    ) -> Pin<Box<dyn Future<Output = crate::Result<Graded>> + Send + 'a>> {
        Box::pin(async move {
            let r = session.solve(p, &task.task, opts).await?;
            let spent = Spent { fuel: r.usage.fuel, ..Spent::default() };
            let blocks: usize = task.expected.parse().unwrap_or(1);
            let (score, note) = match &r.outcome {
                CallOutcome::Ok(a) => match score_answer(&a.output, blocks) {
                    Ok(s) => (s, super::reported(a.notes.as_deref())),
                    Err(why) => (
                        0.0,
                        super::join_note(
                            format!(
                                "answered {:?}: {why}",
                                crate::services::log::sanitize(&a.output.as_bytes()[..a.output.len().min(60)])
                            ),
                            super::reported(a.notes.as_deref()),
                        ),
                    ),
                },
                CallOutcome::GuestError(m) => (0.0, format!("failed: {m}")),
                CallOutcome::Failed(f) => (0.0, format!("{}: {}", f.kind, f.detail)),
            };
            Ok(Graded { score, passed: score >= 1.0, note, spent })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gradient_leads_away_from_the_global_optimum() {
        let s: Vec<f64> = (0..=K).map(block_score).collect();
        assert_eq!(s, vec![0.6, 0.3, 0.0, 1.0]);
        assert_eq!(score_answer("000", 1), Ok(0.6));
        assert_eq!(score_answer(" 111\n", 1), Ok(1.0));
        assert_eq!(score_answer("111 010", 2), Ok(0.65));
    }

    #[test]
    fn a_malformed_answer_scores_nothing_and_says_why() {
        assert!(score_answer("11", 1).unwrap_err().contains("3 characters"));
        assert!(score_answer("1a1", 1).unwrap_err().contains("0 or 1"));
        assert!(score_answer("111", 2).unwrap_err().contains("expected 2 block(s)"));
        assert!(score_answer("", 1).is_err());
    }

    #[test]
    fn each_block_is_a_task_family() {
        let s = suite();
        assert_eq!(s.visible.len(), BLOCKS);
        let fams: Vec<String> = s.visible.iter().map(|t| crate::evolve::qd::family(NAME, &t.task.id)).collect();
        assert_eq!(fams, vec!["block0", "block1"]);
        assert_eq!(s.held_out[0].task.input, "all");
    }
}
