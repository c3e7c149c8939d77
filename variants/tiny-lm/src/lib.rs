//! The tiny-lm variant: chooses how the host trains a small byte-level
//! language model (the `tiny-lm` suite), and tunes that choice itself.
//!
//! `solve` answers with a JSON config of the `char-lm` recipe built from the
//! constants below. The host trains it for two seconds and scores the
//! validation bits per byte; the feedback carries the raw `bpb`.
//!
//! `improve` is a deterministic hill climber over its own source, no LLM:
//! it reads this generation's mean bpb from the feedback, compares it with
//! the bpb its parent had (`PARENT_BPB_MILLI`), and
//!
//! * when the last move helped (or there was none), keeps it and applies
//!   the next move of `MOVES` (e.g. triple the learning rate, double the
//!   width);
//! * when it hurt, undoes it and applies the move after it instead;
//! * when training diverged (no bpb), halves the learning rate.
//!
//! Each proposal rewrites the constants with `source::set_const` and bumps
//! `GENERATION`.

use vivarium_guest::{log, source, Answer, ImproveContext, MetaAgent, Proposal, Task, TaskAgent};

/// How many times this variant has improved itself; `improve` rewrites it.
const GENERATION: u32 = 0;

// The training config `solve` answers with; `improve` rewrites these.
/// Learning rate, in thousandths.
const LR_MILLI: u32 = 1;
/// Model width.
const D_MODEL: u32 = 32;
/// Transformer blocks.
const LAYERS: u32 = 1;
/// Attention heads.
const HEADS: u32 = 2;
/// Bytes of context.
const CONTEXT: u32 = 32;
/// Sequences per step.
const BATCH: u32 = 8;

// The hill climber's memory.
/// The next entry of `MOVES` to try.
const NEXT_MOVE: u32 = 0;
/// The move that made this generation from its parent (`NO_MOVE`: none).
const LAST_MOVE: u32 = 9999;
/// The parent's mean bpb, in thousandths (0: unknown).
const PARENT_BPB_MILLI: u32 = 0;

const NO_MOVE: u32 = 9999;

/// The file `improve` edits.
const SELF_PATH: &str = "src/lib.rs";

/// Moves: (constant, multiply by, divide by, lowest, highest).
const MOVES: [(&str, u32, u32, u32, u32); 7] = [
    ("LR_MILLI", 3, 1, 1, 300),
    ("LR_MILLI", 3, 1, 1, 300),
    ("CONTEXT", 2, 1, 4, 256),
    ("D_MODEL", 2, 1, 8, 512),
    ("BATCH", 2, 1, 1, 256),
    ("LAYERS", 2, 1, 1, 8),
    ("LR_MILLI", 1, 3, 1, 300),
];

fn config_json() -> String {
    format!(
        "{{\"d_model\": {D_MODEL}, \"layers\": {LAYERS}, \"heads\": {HEADS}, \"context\": {CONTEXT}, \
         \"batch\": {BATCH}, \"lr\": {}}}",
        LR_MILLI as f64 / 1000.0
    )
}

struct TinyLm;

impl TaskAgent for TinyLm {
    fn solve(_task: Task) -> Result<Answer, String> {
        Ok(Answer::new(config_json()).with_notes(format!("tiny-lm generation {GENERATION}")))
    }
}

/// The mean of the `bpb <number>` values in `feedback`, if any.
fn mean_bpb(feedback: &str) -> Option<f64> {
    let values: Vec<f64> = feedback
        .match_indices("bpb ")
        .filter_map(|(at, m)| {
            let rest = &feedback[at + m.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// `value` after move `m` forwards (`undo = false`) or backwards; `None`
/// when the result leaves the move's range or is not exact.
fn apply(value: u32, m: (&str, u32, u32, u32, u32), undo: bool) -> Option<u32> {
    let (_, mul, div, lo, hi) = m;
    let (mul, div) = if undo { (div, mul) } else { (mul, div) };
    let v = value.checked_mul(mul)?;
    (v % div == 0).then_some(v / div).filter(|v| (lo..=hi).contains(v))
}

/// The current value of a tuned constant.
fn current(name: &str) -> u32 {
    match name {
        "LR_MILLI" => LR_MILLI,
        "CONTEXT" => CONTEXT,
        "D_MODEL" => D_MODEL,
        "BATCH" => BATCH,
        "LAYERS" => LAYERS,
        _ => 0,
    }
}

/// What the hill climber remembers, read from the constants.
#[derive(Debug, Clone, PartialEq)]
struct Climber {
    /// The tuned constants' current values.
    values: Vec<(&'static str, u32)>,
    last_move: u32,
    next_move: u32,
    parent_bpb_milli: u32,
    lr_milli: u32,
}

impl Climber {
    fn current() -> Self {
        let mut values: Vec<(&'static str, u32)> = Vec::new();
        for m in MOVES {
            if !values.iter().any(|(k, _)| *k == m.0) {
                values.push((m.0, current(m.0)));
            }
        }
        Self {
            values,
            last_move: LAST_MOVE,
            next_move: NEXT_MOVE,
            parent_bpb_milli: PARENT_BPB_MILLI,
            lr_milli: LR_MILLI,
        }
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.values.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    fn set(&mut self, name: &str, v: u32) {
        if let Some(e) = self.values.iter_mut().find(|(k, _)| *k == name) {
            e.1 = v;
        }
    }
}

/// The plan for the next generation: constant edits, the move made, the
/// next move, the bpb to remember, and a summary.
fn plan(feedback: &str, mut c: Climber) -> (Vec<(&'static str, u32)>, u32, u32, u32, String) {
    let mut edits: Vec<(&'static str, u32)> = Vec::new();
    let Some(bpb) = mean_bpb(feedback) else {
        let lr = (c.lr_milli / 2).max(1);
        edits.push(("LR_MILLI", lr));
        let summary = format!("no bpb in the feedback: lr to {lr}/1000");
        return (edits, NO_MOVE, c.next_move, c.parent_bpb_milli, summary);
    };
    let bpb_milli = (bpb * 1000.0).round() as u32;
    let mut remembered = bpb_milli;
    let mut summary = String::new();
    let mut undone = None;
    if c.last_move != NO_MOVE && c.parent_bpb_milli != 0 && bpb_milli >= c.parent_bpb_milli {
        // The last move did not help: undo it; the parent's bpb stands.
        let m = MOVES[c.last_move as usize % MOVES.len()];
        if let Some(v) = c.get(m.0).and_then(|v| apply(v, m, true)) {
            c.set(m.0, v);
            edits.push((m.0, v));
        }
        remembered = c.parent_bpb_milli;
        undone = Some(m);
        summary.push_str(&format!("undo move {} ({} did not help: bpb {bpb:.3}); ", c.last_move, m.0));
    }
    // The next move that stays in range.
    for k in 0..MOVES.len() as u32 {
        let index = (c.next_move + k) % MOVES.len() as u32;
        let m = MOVES[index as usize];
        if undone == Some(m) {
            continue; // the same move just failed
        }
        if let Some(v) = c.get(m.0).and_then(|v| apply(v, m, false)) {
            edits.retain(|(n, _)| *n != m.0);
            edits.push((m.0, v));
            summary.push_str(&format!("move {index}: {} to {v}", m.0));
            return (edits, index, (index + 1) % MOVES.len() as u32, remembered, summary);
        }
    }
    summary.push_str("no move left in range");
    (edits, NO_MOVE, c.next_move, remembered, summary)
}

impl MetaAgent for TinyLm {
    fn improve(ctx: ImproveContext) -> Result<Proposal, String> {
        let (edits, last, next, parent_bpb, summary) = plan(&ctx.feedback, Climber::current());
        let generation = GENERATION + 1;
        let edit = ctx.edit_text(SELF_PATH, |text| {
            let mut text = text.to_string();
            for (name, value) in &edits {
                text = source::set_const(&text, name, &value.to_string())?;
            }
            text = source::set_const(&text, "LAST_MOVE", &last.to_string())?;
            text = source::set_const(&text, "NEXT_MOVE", &next.to_string())?;
            text = source::set_const(&text, "PARENT_BPB_MILLI", &parent_bpb.to_string())?;
            source::set_const(&text, "GENERATION", &generation.to_string())
        })?;
        log::info(&format!("tiny-lm generation {GENERATION}: {summary}"));
        Ok(Proposal::new(format!("tiny-lm: {summary} (generation {generation})")).with_edit(edit))
    }
}

vivarium_guest::export!(TinyLm);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_mean_bpb_of_the_feedback() {
        let fb = "task a `x`: score 0.5: bpb 3.0000 (steps 10)\ntask b `y`: score 0.5: bpb 4.5 (steps 9)\n";
        assert_eq!(mean_bpb(fb), Some(3.75));
        assert_eq!(mean_bpb("failed: nothing"), None);
    }

    #[test]
    fn the_first_move_triples_the_learning_rate() {
        let (edits, last, next, parent, _) = plan("bpb 4.000 (steps 10)", Climber::current());
        assert_eq!(edits, vec![("LR_MILLI", 3)]);
        assert_eq!((last, next, parent), (0, 1, 4000));
    }

    #[test]
    fn a_move_that_did_not_help_is_undone_and_not_retried() {
        let mut c = Climber::current();
        c.set("LR_MILLI", 3);
        (c.last_move, c.next_move, c.parent_bpb_milli, c.lr_milli) = (0, 1, 4000, 3);
        let (edits, last, next, parent, summary) = plan("bpb 4.500", c);
        // LR back to 1, move 1 (the same x3) skipped, move 2 doubles the context.
        assert_eq!(edits, vec![("LR_MILLI", 1), ("CONTEXT", 64)]);
        assert_eq!((last, next, parent), (2, 3, 4000));
        assert!(summary.starts_with("undo move 0"), "{summary}");
    }

    #[test]
    fn a_diverged_run_halves_the_learning_rate() {
        let mut c = Climber::current();
        c.lr_milli = 9;
        let (edits, last, _, _, _) = plan("training did not produce a score", c);
        assert_eq!((edits, last), (vec![("LR_MILLI", 4)], NO_MOVE));
    }

    #[test]
    fn moves_stay_in_range_and_undo_exactly() {
        let m = MOVES[6];
        assert_eq!(apply(1, m, false), None, "1/3 is not exact");
        assert_eq!(apply(9, m, false), Some(3));
        assert_eq!(apply(3, m, true), Some(9));
        assert_eq!(apply(256, MOVES[2], false), None);
    }

    #[test]
    fn solve_answers_a_json_config() {
        assert_eq!(
            config_json(),
            "{\"d_model\": 32, \"layers\": 1, \"heads\": 2, \"context\": 32, \"batch\": 8, \"lr\": 0.001}"
        );
    }
}
