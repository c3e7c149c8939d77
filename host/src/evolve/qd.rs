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
//! | `reported:<name>` | what the variant itself reports (below) | [0, 1] |
//!
//! # A variant-reported descriptor
//!
//! A variant may describe itself: a line `descriptor: <name>=<value>` in
//! the notes of its `solve` answers (`answer.notes`, which no grader
//! scores) is kept in that task's stored note as `reported <name>=<value>`
//! ([`crate::tasks::reported`]: names of `a-z 0-9 - _`, values clamped to
//! [0, 1], at most eight per answer). `reported:<name>` is the mean of the
//! values over the visible tasks whose answer reported it; 0 (the edge
//! cell) when none did. Held-out answers never count.
//!
//! The value only places the variant in a cell. It cannot raise its score
//! (graders read the output, never the notes), and it cannot make the
//! variant an elite over a better one in the same cell; the most a lying
//! variant gains is a cell of its own, which `grid_parents` draws from as
//! often as any other — one of at most `bins^n`.
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

/// The prefix of a variant-reported descriptor's name in `run.toml`.
pub const REPORTED: &str = "reported:";

/// Whether `name` is a well-formed variant-reported descriptor
/// (`reported:` and 1–32 of `a-z 0-9 - _`); every suite has these.
pub fn is_reported(name: &str) -> bool {
    name.strip_prefix(REPORTED).is_some_and(crate::tasks::is_descriptor_name)
}

/// Every descriptor suite `suite` supports, in a stable order, besides
/// the variant-reported ones ([`is_reported`]).
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
        _ if name.starts_with(REPORTED) => {
            let key = format!("{}{}=", crate::tasks::REPORTED, &name[REPORTED.len()..]);
            let values: Vec<f64> = results
                .iter()
                .filter(|r| r.split == Split::Visible)
                .filter_map(|r| r.note.lines().find_map(|l| l.strip_prefix(key.as_str())?.parse::<f64>().ok()))
                .collect();
            if values.is_empty() {
                0.0
            } else {
                values.iter().sum::<f64>() / values.len() as f64
            }
        }
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
    fn a_reported_descriptor_is_read_from_visible_notes_only_and_never_scored() {
        let notes = "arith generation 3\ndescriptor: ones=0.25\ndescriptor: Bad Name=1\ndescriptor: big=7\n\
                     descriptor: ones=0.9\ndescriptor: nan=NaN";
        let kept = crate::tasks::reported(Some(notes));
        // The first `ones` stands, values are clamped, bad names and
        // non-finite values are dropped, the free text is not kept.
        assert_eq!(kept, "reported ones=0.250000\nreported big=1.000000");
        assert_eq!(crate::tasks::reported(None), "");
        let many: String = (0..20).map(|i| format!("descriptor: d{i}=0.5\n")).collect();
        assert_eq!(crate::tasks::reported(Some(&many)).lines().count(), crate::tasks::MAX_REPORTED);
        let mut rs = vec![
            TaskResult { note: kept.clone(), ..r("trap-v-block0", 0.3) },
            TaskResult { note: "reported ones=0.750000".into(), ..r("trap-v-block1", 0.6) },
            TaskResult { note: String::new(), ..r("trap-v-block2", 1.0) },
        ];
        assert_eq!(value("trap", "reported:ones", 0, 0.0, &rs), Some(0.5));
        assert_eq!(value("trap", "reported:big", 0, 0.0, &rs), Some(1.0));
        assert_eq!(value("trap", "reported:absent", 0, 0.0, &rs), Some(0.0), "not reported: the edge cell");
        // A held-out answer's report does not count.
        rs.push(TaskResult { note: "reported ones=1.0".into(), split: Split::HeldOut, ..r("trap-h-all", 1.0) });
        assert_eq!(value("trap", "reported:ones", 0, 0.0, &rs), Some(0.5));
        assert!(is_reported("reported:ones-0") && !is_reported("reported:") && !is_reported("reported:A"));
        assert!(!is_reported("ones") && !is_reported(&format!("reported:{}", "x".repeat(33))));
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
