//! Parent selection: pure, seeded functions over the archive's candidates.
//!
//! | method | weight of a candidate with score `s` and `c` children |
//! |---|---|
//! | `dgm` | `sigmoid(10·(s − 0.5)) × 1/(1 + c)` (Darwin Gödel Machine) |
//! | `dgm-h` | `sigmoid(10·(s − m)) × exp(−(c/8)³)`, `m` = mean of the top three scores (of all, when fewer than three) (DGM-H) |
//! | `greedy` | 1 for the best score (ties → the earliest candidate), 0 for the rest (autoresearch's keep-if-better) |
//! | `random` | 1 for every candidate |
//! | `hgm` | no closed form: Thompson sampling on clade-metaproductivity (below) |
//!
//! # `hgm`: the Huxley-Gödel Machine's clade-metaproductivity
//!
//! HGM (Wang et al. 2025) values a parent not by its own score but by how
//! its whole *clade* — itself and every descendant evaluated so far — has
//! done: a lineage that keeps producing good children is worth expanding
//! even when its root scores less. Each candidate's clade gives pseudo
//! counts `successes = Σ s`, `failures = Σ (1 − s)` over the clade's
//! scores `s ∈ [0, 1]`; [`choose_hgm`] draws `θ ~ Beta(1 + successes, 1 +
//! failures)` per candidate and takes the largest draw (Thompson sampling),
//! so a clade with few evaluations is still explored and one with many
//! good ones is exploited. Scores outside `[0, 1]` are clamped. Without
//! clade data ([`choose`] with `hgm`), each candidate is its own clade.
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
    /// Thompson sampling on clade-metaproductivity (Huxley-Gödel Machine).
    #[serde(rename = "hgm")]
    Hgm,
}

impl Selection {
    /// Every method, in documentation order.
    pub const ALL: [Selection; 5] =
        [Selection::Dgm, Selection::DgmH, Selection::Greedy, Selection::Random, Selection::Hgm];

    /// The method's name in `run.toml` (`dgm`, `dgm-h`, `greedy`, `random`, `hgm`).
    pub fn as_str(self) -> &'static str {
        match self {
            Selection::Dgm => "dgm",
            Selection::DgmH => "dgm-h",
            Selection::Greedy => "greedy",
            Selection::Random => "random",
            Selection::Hgm => "hgm",
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
            Error::invalid(format!("unknown parent selection {s:?} (expected dgm, dgm-h, greedy, random or hgm)"))
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
        // Each candidate's chance is that its Beta draw is the largest: no
        // closed form; its mean is the weight the report can show.
        Selection::Hgm => {
            candidates.iter().map(|c| finite_or_zero(c.score, (1.0 + c.score.clamp(0.0, 1.0)) / 3.0)).collect()
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
    if method == Selection::Hgm {
        let own: Vec<Clade> = candidates.iter().map(|c| Clade::default().with(c.score)).collect();
        return choose_hgm(candidates, &own, seed, step);
    }
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

/// What a candidate's clade (itself and its evaluated descendants) has
/// scored, as `hgm`'s pseudo counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Clade {
    /// Σ score over the clade.
    pub successes: f64,
    /// Σ (1 − score) over the clade.
    pub failures: f64,
    /// Variants in the clade.
    pub size: u32,
}

impl Clade {
    /// This clade with one more member scoring `score` (clamped to
    /// `[0, 1]`; a non-finite score counts as 0).
    pub fn with(mut self, score: f64) -> Self {
        let s = if score.is_finite() { score.clamp(0.0, 1.0) } else { 0.0 };
        self.successes += s;
        self.failures += 1.0 - s;
        self.size += 1;
        self
    }

    /// The clade-metaproductivity estimate: the mean of its Beta posterior.
    pub fn mean(&self) -> f64 {
        (1.0 + self.successes) / (2.0 + self.successes + self.failures)
    }
}

/// `hgm`: per candidate a draw from `Beta(1 + successes, 1 + failures)` of
/// its clade (`clades[i]` for `candidates[i]`), the index of the largest
/// (the earliest on ties); `None` for no candidates. Deterministic in
/// `(clades, seed, step)`.
pub fn choose_hgm(candidates: &[Candidate], clades: &[Clade], seed: u64, step: u64) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    let mut rng = SplitMix64::for_step(seed, step);
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in clades.iter().enumerate().take(candidates.len()) {
        let theta = beta(&mut rng, 1.0 + c.successes, 1.0 + c.failures);
        if best.is_none_or(|(_, b)| theta > b) {
            best = Some((i, theta));
        }
    }
    best.map(|(i, _)| i)
}

/// A `Beta(a, b)` draw (`a, b ≥ 1`) as `X / (X + Y)` of two Gamma draws.
fn beta(rng: &mut SplitMix64, a: f64, b: f64) -> f64 {
    let x = gamma(rng, a);
    let y = gamma(rng, b);
    if x + y > 0.0 {
        x / (x + y)
    } else {
        0.5
    }
}

/// A `Gamma(shape, 1)` draw for `shape ≥ 1` (Marsaglia & Tsang 2000).
fn gamma(rng: &mut SplitMix64, shape: f64) -> f64 {
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let (x, v) = loop {
            let x = normal(rng);
            let v = 1.0 + c * x;
            if v > 0.0 {
                break (x, v * v * v);
            }
        };
        let u = rng.next_f64();
        if u < 1.0 - 0.0331 * x.powi(4) || u.max(f64::MIN_POSITIVE).ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut SplitMix64) -> f64 {
    let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
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
