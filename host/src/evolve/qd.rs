//! Quality-diversity: a MAP-Elites grid over named behaviour descriptors.
//!
//! Beside the plain archive, a run with `[search] descriptors = [...]`
//! places every evaluated variant in one cell of a grid with `bins` cells
//! per descriptor; the best variant of a cell (its *elite*) is what the
//! cell keeps (Mouret & Clune 2015; OpenEvolve's feature grid). With
//! `grid_parents = p`, a fraction `p` of the parents (decided per step by
//! the step's seeded draw) is an elite drawn uniformly among the occupied
//! cells, so a lineage that is good at something else — small, or strong on
//! one task family — keeps being explored even when its mean score lags.
//!
//! # Descriptors
//!
//! | name | value | range mapped to bins |
//! |---|---|---|
//! | `source_size` | bytes of the variant's source tree | `log2` in [8, 24] (256 B … 16 MiB) |
//! | `score` | the visible score | [0, 1] |
//! | `family:<f>` | mean visible score on task family `f` | [0, 1] |
//!
//! A task's family is the part of its id after the split (`-v-`) without a
//! trailing number (`rd-v-cartpole-3` → `cartpole`), or the suite's name
//! when nothing is left (`arith-v-3` → `arith`); [`available`] lists a
//! suite's. Values outside a range go to the edge cell.
//!
//! A cell is stored as its bin indices joined by `,` (`"2,0"`), computed
//! from stored data only (tree, results), so it is the same on resume.

use std::collections::BTreeMap;

use crate::archive::{Split, TaskResult};
use crate::tasks::Suite;

/// The descriptors every suite has.
pub const COMMON: [&str; 2] = ["source_size", "score"];

/// The task family of task `id` in suite `suite` (see the module docs).
pub fn family(suite: &str, id: &str) -> String {
    let rest = id.split_once("-v-").or_else(|| id.split_once("-h-")).map(|(_, r)| r).unwrap_or("");
    let rest = match rest.rsplit_once('-') {
        Some((head, tail)) if tail.chars().all(|c| c.is_ascii_digit()) => head,
        _ if rest.chars().all(|c| c.is_ascii_digit()) => "",
        _ => rest,
    };
    if rest.is_empty() {
        suite.to_string()
    } else {
        rest.to_string()
    }
}

/// Every descriptor suite `suite` supports, in a stable order.
pub fn available(suite: &Suite) -> Vec<String> {
    let mut out: Vec<String> = COMMON.iter().map(|s| s.to_string()).collect();
    for t in &suite.visible {
        let f = format!("family:{}", family(suite.name, &t.task.id));
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// The value of descriptor `name` for a variant whose tree holds
/// `source_bytes` bytes, with visible score `score` and `results`, scaled
/// to `[0, 1]`; `None` for a name that is not a descriptor (the run file
/// was checked against [`available`]).
pub fn value(suite: &str, name: &str, source_bytes: u64, score: f64, results: &[TaskResult]) -> Option<f64> {
    let v = match name {
        "source_size" => ((source_bytes.max(1) as f64).log2() - 8.0) / 16.0,
        "score" => score,
        _ => {
            let f = name.strip_prefix("family:")?;
            let scores: Vec<f64> = results
                .iter()
                .filter(|r| r.split == Split::Visible && family(suite, &r.task_id) == f)
                .map(|r| r.score)
                .collect();
            if scores.is_empty() {
                0.0
            } else {
                scores.iter().sum::<f64>() / scores.len() as f64
            }
        }
    };
    Some(if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 })
}

/// The cell of `values` (each in `[0, 1]`) on a grid of `bins` per
/// descriptor: the bin indices joined by `,`.
pub fn cell(values: &[f64], bins: u32) -> String {
    values
        .iter()
        .map(|v| (((v * f64::from(bins)).floor() as i64).clamp(0, i64::from(bins) - 1)).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The elites: per occupied cell, the index into `members` of its best
/// score (the earliest on ties), in cell order. `members` are
/// `(cell, score)`.
pub fn elites(members: &[(String, f64)]) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (c, s)) in members.iter().enumerate() {
        if !s.is_finite() {
            continue;
        }
        match out.get(c) {
            Some(&j) if members[j].1 >= *s => {}
            _ => {
                out.insert(c.clone(), i);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, score: f64) -> TaskResult {
        TaskResult { task_id: id.into(), split: Split::Visible, passed: score > 0.5, score, note: String::new() }
    }

    #[test]
    fn families_come_from_task_ids() {
        assert_eq!(family("reward-design", "rd-v-cartpole-3"), "cartpole");
        assert_eq!(family("reward-design", "rd-v-mountain-car-1"), "mountain-car");
        assert_eq!(family("arith", "arith-v-3"), "arith");
        assert_eq!(family("tiny-lm", "tiny-lm-v-5"), "tiny-lm");
        let suite = crate::tasks::suite("reward-design").unwrap();
        let a = available(&suite);
        assert_eq!(&a[..2], &["source_size".to_string(), "score".to_string()]);
        assert!(a.len() > 2 && a[2..].iter().all(|d| d.starts_with("family:")), "{a:?}");
        assert_eq!(available(&crate::tasks::suite("arith").unwrap()), vec!["source_size", "score", "family:arith"]);
    }

    #[test]
    fn values_scale_to_the_unit_interval_and_cells_clamp_to_the_edges() {
        assert_eq!(value("s", "source_size", 256, 0.0, &[]), Some(0.0));
        assert_eq!(value("s", "source_size", 1 << 16, 0.0, &[]), Some(0.5));
        assert_eq!(value("s", "source_size", 1 << 30, 0.0, &[]), Some(1.0));
        assert_eq!(value("s", "score", 0, f64::NAN, &[]), Some(0.0));
        let rs = [r("rd-v-cartpole-1", 1.0), r("rd-v-cartpole-2", 0.5), r("rd-v-acrobot-1", 0.0)];
        assert_eq!(value("rd", "family:cartpole", 0, 0.0, &rs), Some(0.75));
        assert_eq!(value("rd", "bogus", 0, 0.0, &rs), None);
        assert_eq!(cell(&[0.0, 0.5, 1.0], 4), "0,2,3");
        assert_eq!(cell(&[0.999], 4), "3");
    }

    #[test]
    fn an_elite_is_the_best_of_its_cell_and_the_earliest_on_ties() {
        let m = vec![("0".to_string(), 0.5), ("1".to_string(), 0.2), ("0".to_string(), 0.7), ("0".to_string(), 0.7)];
        let e = elites(&m);
        assert_eq!(e.len(), 2);
        assert_eq!(e["0"], 2);
        assert_eq!(e["1"], 1);
    }
}
