//! Several models: which one a proposal's `llm` calls go to.
//!
//! A run may list `[[models]]`. Each child step picks one, and every `llm`
//! request of that step's meta-agent call is routed to it
//! ([`CallOptions::llm_model`](crate::runtime::CallOptions::llm_model); the
//! variant's grant must allow it). The archive keeps, per child, the model
//! and the tokens its proposal spent; the report sums them per model.
//!
//! * `model_selection = "weights"`: drawn by the weights (equal when none
//!   are given) from the step's own seeded stream.
//! * `model_selection = "ucb"`: UCB1 (Auer et al. 2002) on *improvement
//!   per thousand tokens*: a child's reward is `max(0, child − parent) /
//!   (1 + tokens/1000)` on visible scores in `[0, 1]`, so a model that
//!   improves as much for fewer tokens earns more, and a model that spends
//!   nothing (an offline fallback) is judged on improvement alone. A model
//!   not tried yet is tried first (in list order); then the arm with the
//!   highest `mean + √(2 ln N / n)`, the earliest on ties.
//!
//! The bandit's state is not stored anywhere: it is recomputed at each step
//! from the children of earlier generations in the archive (their model,
//! tokens and scores), so a resumed run — however it was killed — sees the
//! same counts as an uninterrupted one. A proposal that was refused leaves
//! no child and does not count.

use super::config::{ModelEntry, ModelSelection};
use crate::archive::SplitMix64;

/// Salt of the model draw's stream.
const MODEL_SALT: u64 = 0x6d6f_6465; // "mode"

/// One finished proposal: the model, the tokens it spent, and the child's
/// and parent's visible scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Pull {
    /// The model it went to.
    pub model: String,
    /// Tokens spent.
    pub tokens: u64,
    /// The child's visible score minus its parent's.
    pub gain: f64,
}

/// The reward of one pull (see the module docs), in `[0, 1]` for scores
/// in `[0, 1]`.
pub fn reward(p: &Pull) -> f64 {
    let g = if p.gain.is_finite() { p.gain.max(0.0) } else { 0.0 };
    g / (1.0 + p.tokens as f64 / 1000.0)
}

/// The model for step `step` of a run seeded `seed`, given the pulls of
/// earlier generations; `None` when the run lists no models.
pub fn choose(models: &[ModelEntry], how: ModelSelection, pulls: &[Pull], seed: u64, step: u64) -> Option<String> {
    if models.is_empty() {
        return None;
    }
    let i = match how {
        ModelSelection::Weights => {
            let w: Vec<f64> = models.iter().map(|m| m.weight.unwrap_or(1.0)).collect();
            let total: f64 = w.iter().sum();
            let u = SplitMix64::for_step(seed ^ MODEL_SALT, step).next_f64() * total;
            let mut cum = 0.0;
            let mut pick = w.iter().rposition(|x| *x > 0.0).unwrap_or(0);
            for (i, x) in w.iter().enumerate() {
                cum += x;
                if u < cum {
                    pick = i;
                    break;
                }
            }
            pick
        }
        ModelSelection::Ucb => {
            let stats: Vec<(u64, f64)> = models
                .iter()
                .map(|m| {
                    let mine: Vec<&Pull> = pulls.iter().filter(|p| p.model == m.name).collect();
                    (mine.len() as u64, mine.iter().map(|p| reward(p)).sum())
                })
                .collect();
            match stats.iter().position(|(n, _)| *n == 0) {
                Some(untried) => untried,
                None => {
                    let total: u64 = stats.iter().map(|(n, _)| n).sum();
                    let ln = (total as f64).ln();
                    let mut best = (0, f64::NEG_INFINITY);
                    for (i, (n, sum)) in stats.iter().enumerate() {
                        let v = sum / *n as f64 + (2.0 * ln / *n as f64).sqrt();
                        if v > best.1 {
                            best = (i, v);
                        }
                    }
                    best.0
                }
            }
        }
    };
    Some(models[i].name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, weight: Option<f64>) -> ModelEntry {
        ModelEntry { name: name.into(), weight }
    }
    fn pull(model: &str, tokens: u64, gain: f64) -> Pull {
        Pull { model: model.into(), tokens, gain }
    }

    #[test]
    fn weights_give_shares_and_the_same_step_the_same_model() {
        let ms = [m("a", Some(0.75)), m("b", Some(0.25))];
        let n = 8000;
        let a = (0..n).filter(|&s| choose(&ms, ModelSelection::Weights, &[], 9, s).as_deref() == Some("a")).count();
        let share = a as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.02, "{share}");
        assert_eq!(choose(&ms, ModelSelection::Weights, &[], 9, 5), choose(&ms, ModelSelection::Weights, &[], 9, 5));
        assert_eq!(choose(&[], ModelSelection::Ucb, &[], 9, 5), None);
    }

    #[test]
    fn ucb_tries_every_model_then_favours_improvement_per_token() {
        let ms = [m("big", None), m("small", None)];
        assert_eq!(choose(&ms, ModelSelection::Ucb, &[], 1, 1).as_deref(), Some("big"), "untried first");
        let one = [pull("big", 4000, 0.2)];
        assert_eq!(choose(&ms, ModelSelection::Ucb, &one, 1, 2).as_deref(), Some("small"));
        // Same gains, a fifth of the tokens: small earns more per token.
        let mut pulls = Vec::new();
        for _ in 0..20 {
            pulls.push(pull("big", 4000, 0.2));
            pulls.push(pull("small", 800, 0.2));
        }
        assert_eq!(choose(&ms, ModelSelection::Ucb, &pulls, 1, 3).as_deref(), Some("small"));
        assert!((reward(&pull("x", 1000, 0.5)) - 0.25).abs() < 1e-12);
        assert_eq!(reward(&pull("x", 0, -0.3)), 0.0, "a loss earns nothing");
    }
}
