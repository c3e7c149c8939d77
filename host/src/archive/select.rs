//! Parent selection: pure, seeded functions over the archive's candidates.
//!
//! | method | weight of a candidate with score `s` and `c` children |
//! |---|---|
//! | `dgm` | `sigmoid(10·(s − 0.5)) × 1/(1 + c)` (Darwin Gödel Machine) |
//! | `dgm-h` | `sigmoid(10·(s − m)) × exp(−(c/8)³)`, `m` = mean of the top three scores (of all, when fewer than three) (DGM-H) |
//! | `greedy` | 1 for the best score (ties → the earliest candidate), 0 for the rest (autoresearch's keep-if-better) |
//! | `random` | 1 for every candidate |
//!
//! The probability of a candidate is its weight over the sum. A candidate
//! whose score is not finite gets weight 0; when every weight is 0 (or the
//! sum is not a positive finite number — e.g. all `exp(−(c/8)³)` underflow)
//! the draw falls back to uniform, so a non-empty candidate list always
//! yields a parent.
//!
//! `dgm`'s midpoint 0.5 assumes scores in `[0, 1]`: normalize a suite's
//! score (e.g. divide by a reference value) before selecting, or every
//! weight saturates and only the children term is left.
//!
//! # Determinism
//!
//! [`choose`] draws from a [`SplitMix64`] seeded by [`SplitMix64::for_step`]
//! from the run's seed and a step number (e.g. the index of the child being
//! made: `generation × children_per_generation + k`), never from a shared
//! stream — so a resumed run, re-deriving the same step numbers from the
//! archive, makes exactly the same choices whatever happened in between.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::VariantId;
use crate::error::{Error, Result};

/// A parent-selection method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Selection {
    /// `sigmoid(10·(score − 0.5)) × 1/(1 + children)`.
    #[serde(rename = "dgm")]
    Dgm,
    /// `sigmoid(10·(score − mean of top three)) × exp(−(children/8)³)`.
    #[serde(rename = "dgm-h")]
    DgmH,
    /// The best score; ties go to the earliest candidate.
    #[serde(rename = "greedy")]
    Greedy,
    /// Uniform.
    #[serde(rename = "random")]
    Random,
}

impl Selection {
    /// Every method, in documentation order.
    pub const ALL: [Selection; 4] = [Selection::Dgm, Selection::DgmH, Selection::Greedy, Selection::Random];

    /// The method's name in `run.toml` (`dgm`, `dgm-h`, `greedy`, `random`).
    pub fn as_str(self) -> &'static str {
        match self {
            Selection::Dgm => "dgm",
            Selection::DgmH => "dgm-h",
            Selection::Greedy => "greedy",
            Selection::Random => "random",
        }
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Selection {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Selection::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
            Error::invalid(format!("unknown parent selection {s:?} (expected dgm, dgm-h, greedy or random)"))
        })
    }
}

/// A variant that may be chosen as a parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The variant.
    pub id: VariantId,
    /// Its visible score (never the held-out one).
    pub score: f64,
    /// How many children it already has.
    pub children: u32,
}

/// The logistic function `1 / (1 + e^(−x))`, computed without overflow.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Unnormalized weights, one per candidate, in order (see the module table).
pub fn weights(method: Selection, candidates: &[Candidate]) -> Vec<f64> {
    match method {
        Selection::Dgm => candidates
            .iter()
            .map(|c| finite_or_zero(c.score, sigmoid(10.0 * (c.score - 0.5)) / (1.0 + f64::from(c.children))))
            .collect(),
        Selection::DgmH => {
            let mid = top_three_mean(candidates);
            candidates
                .iter()
                .map(|c| {
                    let n = f64::from(c.children) / 8.0;
                    finite_or_zero(c.score, sigmoid(10.0 * (c.score - mid)) * (-(n * n * n)).exp())
                })
                .collect()
        }
        Selection::Greedy => {
            let best = best_index(candidates);
            (0..candidates.len()).map(|i| if Some(i) == best { 1.0 } else { 0.0 }).collect()
        }
        Selection::Random => vec![1.0; candidates.len()],
    }
}

/// Selection probabilities, one per candidate, summing to 1 (empty for no
/// candidates); uniform when the weights give no usable distribution.
pub fn probabilities(method: Selection, candidates: &[Candidate]) -> Vec<f64> {
    let w = weights(method, candidates);
    let total: f64 = w.iter().sum();
    if candidates.is_empty() {
        return Vec::new();
    }
    if !(total.is_finite() && total > 0.0) {
        return vec![1.0 / candidates.len() as f64; candidates.len()];
    }
    w.into_iter().map(|x| x / total).collect()
}

/// Draw one parent: the index into `candidates`, or `None` when there are
/// none. Deterministic in `(method, candidates, seed, step)`.
pub fn choose(method: Selection, candidates: &[Candidate], seed: u64, step: u64) -> Option<usize> {
    let probs = probabilities(method, candidates);
    if probs.is_empty() {
        return None;
    }
    let u = SplitMix64::for_step(seed, step).next_f64();
    let mut cum = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cum += p;
        if u < cum {
            return Some(i);
        }
    }
    // Rounding left `u` just above the last partial sum: take the last
    // candidate that can be drawn at all.
    probs.iter().rposition(|p| *p > 0.0)
}

fn finite_or_zero(score: f64, weight: f64) -> f64 {
    if score.is_finite() && weight.is_finite() {
        weight
    } else {
        0.0
    }
}

/// Mean of the (up to) three highest finite scores; 0 when there are none.
fn top_three_mean(candidates: &[Candidate]) -> f64 {
    let mut scores: Vec<f64> = candidates.iter().map(|c| c.score).filter(|s| s.is_finite()).collect();
    if scores.is_empty() {
        return 0.0;
    }
    scores.sort_by(|a, b| b.total_cmp(a));
    let top = &scores[..scores.len().min(3)];
    top.iter().sum::<f64>() / top.len() as f64
}

/// Index of the highest finite score, the earliest on ties.
fn best_index(candidates: &[Candidate]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in candidates.iter().enumerate() {
        if !c.score.is_finite() {
            continue;
        }
        if best.is_none_or(|(_, s)| c.score > s) {
            best = Some((i, c.score));
        }
    }
    best.map(|(i, _)| i)
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, well-mixed PRNG,
/// enough for choosing parents; not for anything secret.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The generator for step `step` of a run seeded with `seed`: each
    /// (seed, step) pair gets its own, independent-looking stream.
    pub fn for_step(seed: u64, step: u64) -> Self {
        Self::new(mix64(seed ^ mix64(step.wrapping_add(GOLDEN))))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// A uniform float in `[0, 1)` (53 random bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n` (`n > 0`), by rejection so there is no
    /// modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}
