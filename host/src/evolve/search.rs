//! The search around each step: which parent (islands, the MAP-Elites
//! grid, `run.selection` with HGM's clades), whether a second parent's
//! sources come along (crossover), whether the child is new enough to
//! evaluate (novelty), and how it is evaluated (repeats, interval, cell).
//!
//! Every draw here comes from its own [`SplitMix64`] stream, seeded by the
//! run's seed, the step number and a salt per decision, and reads only
//! variants of earlier generations, so the same seed gives the same run and
//! a resumed run makes the same choices as an uninterrupted one (see the
//! [parent module](super)).

use std::collections::HashMap;

use super::{islands, models, noise, novelty, qd, Ctx};
use crate::archive::{self, Candidate, Clade, SearchFields, SplitMix64, VariantId, VariantRow, VariantStatus};
use crate::error::Result;

/// Salts of the per-decision streams (any fixed, distinct values).
const GRID_SALT: u64 = 0x6772_6964; // "grid"
const CROSS_SALT: u64 = 0x6372_6f73; // "cros"

/// The prefix the feedback gives a second parent's files (crossover), so
/// they read as another tree, not the meta-agent's own.
pub const CROSSOVER_DIR: &str = ".crossover";

/// What a child step decided before `improve`.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// The parent.
    pub parent: VariantId,
    /// The island the step works for (its child lives there).
    pub island: u32,
    /// A second parent whose sources the meta-agent may borrow from.
    pub second: Option<VariantId>,
}

/// Per variant of `rows`, its HGM clade: itself and every descendant in
/// `rows` with a score (rows of earlier generations only, so the clade is
/// what an uninterrupted run saw too), plus, per refused proposal in
/// `refused` (parent id → how many), a member scoring 0 under that parent:
/// a lineage whose proposals keep being refused is not productive,
/// however well its root scores.
pub fn clades(rows: &[&VariantRow], refused: &HashMap<String, u32>) -> HashMap<String, Clade> {
    let parent: HashMap<&str, &str> =
        rows.iter().filter_map(|v| v.parent.as_ref().map(|p| (v.id.0.as_str(), p.0.as_str()))).collect();
    let mut out: HashMap<String, Clade> = HashMap::new();
    let members = rows
        .iter()
        .filter_map(|v| v.selection_score().map(|s| (v.id.0.as_str(), s, 1)))
        .chain(refused.iter().map(|(p, n)| (p.as_str(), 0.0, *n)));
    for (start, s, times) in members {
        let mut at = Some(start);
        // A lineage is a chain of ids: bounded by the number of rows.
        let mut hops = 0;
        while let Some(id) = at {
            let c = out.entry(id.to_string()).or_default();
            for _ in 0..times {
                *c = c.with(s);
            }
            at = parent.get(id).copied();
            hops += 1;
            if hops > rows.len() {
                break;
            }
        }
    }
    out
}

impl Ctx<'_> {
    /// The island of initial variant `index`.
    pub(super) fn initial_island(&self, index: u64) -> u32 {
        islands::initial_island(index, self.config.search.islands)
    }

    /// Choose the parent of child step `step` of generation `generation`
    /// (and a second parent for crossover); `None` when there is no
    /// candidate. `children` counts each variant's children from finished
    /// steps of earlier generations, refused proposals included; `refused`
    /// counts the refused ones alone (they join `hgm`'s clades as zeros).
    pub(super) fn plan(
        &self,
        step: u64,
        generation: u32,
        children: &HashMap<String, u32>,
        refused: &HashMap<String, u32>,
    ) -> Result<Option<Plan>> {
        let search = &self.config.search;
        let run = &self.config.run;
        let island = islands::child_island(step - run.initial.len() as u64, search.islands);
        let rows = self.archive.list(Some(&self.run_id))?;
        let earlier: Vec<&VariantRow> =
            rows.iter().filter(|v| v.generation < generation && v.status == VariantStatus::Evaluated).collect();
        let pool: Vec<&VariantRow> = earlier.iter().copied().filter(|v| self.keeps(v)).collect();
        let pool: Vec<(&VariantRow, f64)> =
            pool.into_iter().filter_map(|v| v.selection_score().map(|s| (v, s))).collect();
        // Which islands' steps made each variant: the step ledger of
        // earlier generations (finished steps only, as for `children`).
        let n_init = run.initial.len() as u64;
        let mut made_by: HashMap<String, Vec<u32>> = HashMap::new();
        let first_of_generation = n_init + u64::from(generation - 1) * u64::from(run.children_per_generation);
        for (s, v, _) in self.archive.steps(&self.run_id)? {
            let Some(v) = v.filter(|_| s < first_of_generation) else { continue };
            let isl = if s < n_init {
                islands::initial_island(s, search.islands)
            } else {
                islands::child_island(s - n_init, search.islands)
            };
            let e = made_by.entry(v.0).or_default();
            if !e.contains(&isl) {
                e.push(isl);
            }
        }
        let members: Vec<islands::Member> = pool
            .iter()
            .map(|(v, s)| islands::Member {
                islands: made_by.get(&v.id.0).cloned().unwrap_or_else(|| vec![v.search.island.unwrap_or(0)]),
                generation: v.generation,
                score: *s,
            })
            .collect();
        let on_island = islands::population(
            &members,
            search.islands,
            search.migration_interval,
            search.migration_rate,
            island,
            generation,
        );
        let candidates: Vec<Candidate> = on_island
            .iter()
            .map(|&i| Candidate {
                id: pool[i].0.id.clone(),
                score: pool[i].1,
                children: children.get(&pool[i].0.id.0).copied().unwrap_or(0),
            })
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let mut grid_rng = SplitMix64::for_step(run.seed ^ GRID_SALT, step);
        let from_grid = !search.descriptors.is_empty() && grid_rng.next_f64() < search.grid_parents;
        let elites: Vec<usize> = if from_grid {
            let cells: Vec<(String, f64)> =
                on_island.iter().map(|&i| (pool[i].0.search.cell.clone().unwrap_or_default(), pool[i].1)).collect();
            qd::elites(&cells).into_values().collect()
        } else {
            Vec::new()
        };
        let index = if !elites.is_empty() {
            elites[grid_rng.below(elites.len() as u64) as usize]
        } else if run.selection == archive::Selection::Hgm {
            let cl = clades(&earlier, refused);
            let per: Vec<Clade> = candidates.iter().map(|c| cl.get(&c.id.0).copied().unwrap_or_default()).collect();
            match archive::choose_hgm(&candidates, &per, run.seed, step) {
                Some(i) => i,
                None => return Ok(None),
            }
        } else {
            match archive::choose(run.selection, &candidates, run.seed, step) {
                Some(i) => i,
                None => return Ok(None),
            }
        };
        let parent = candidates[index].id.clone();
        let mut cross = SplitMix64::for_step(run.seed ^ CROSS_SALT, step);
        let second = if search.crossover > 0.0 && candidates.len() > 1 && cross.next_f64() < search.crossover {
            // The second parent: drawn by the run's own selection among the
            // island's other candidates (HGM's own-clade form without clades).
            let others: Vec<Candidate> = candidates.iter().filter(|c| c.id != parent).cloned().collect();
            archive::choose(run.selection, &others, run.seed ^ CROSS_SALT, step).map(|i| others[i].id.clone())
        } else {
            None
        };
        Ok(Some(Plan { parent, island, second }))
    }

    /// The model child step `step` routes its proposal to (`[[models]]`),
    /// from the children that finished steps before `first_of_generation`
    /// made; `None` when the run lists none.
    pub(super) fn choose_model(&self, step: u64, first_of_generation: u64) -> Result<Option<String>> {
        let c = &self.config;
        if c.models.is_empty() {
            return Ok(None);
        }
        let rows = self.archive.list(Some(&self.run_id))?;
        let score: HashMap<&str, f64> =
            rows.iter().filter_map(|v| v.visible_score.map(|s| (v.id.0.as_str(), s))).collect();
        let by_id: HashMap<&str, &VariantRow> = rows.iter().map(|v| (v.id.0.as_str(), v)).collect();
        let mut pulls = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (s, v, _) in self.archive.steps(&self.run_id)? {
            let Some(v) = v.filter(|_| s < first_of_generation) else { continue };
            let Some(row) = by_id.get(v.0.as_str()) else { continue };
            let (Some(model), Some(parent)) = (&row.search.model, &row.parent) else { continue };
            if !seen.insert(v.0.clone()) {
                continue;
            }
            if let (Some(cs), Some(ps)) = (row.visible_score, score.get(parent.0.as_str())) {
                pulls.push(models::Pull {
                    model: model.clone(),
                    tokens: row.search.tokens.unwrap_or(0),
                    gain: cs - ps,
                });
            }
        }
        Ok(models::choose(&c.models, c.search.model_selection, &pulls, c.run.seed, step))
    }

    /// The most similar variant of earlier generations to the tree
    /// `tree_sha`, when it is at least `novelty_threshold` similar
    /// ([`novelty`]); `None` when novelty rejection is off or nothing is.
    pub(super) fn near_duplicate(&self, tree_sha: &str, generation: u32) -> Result<Option<(VariantId, f64)>> {
        let Some(threshold) = self.config.search.novelty_threshold else { return Ok(None) };
        let child = self.shingles(tree_sha)?;
        let mut best: Option<(VariantId, f64)> = None;
        for v in self.archive.list(Some(&self.run_id))? {
            if v.generation >= generation {
                continue;
            }
            let s = novelty::similarity(&child, &*self.shingles(&v.tree_sha)?);
            if s >= threshold && best.as_ref().is_none_or(|(_, b)| s > *b) {
                best = Some((v.id, s));
            }
        }
        Ok(best)
    }

    /// The shingles of a stored tree, computed once per invocation.
    fn shingles(&self, tree_sha: &str) -> Result<std::sync::Arc<novelty::Shingles>> {
        let mut cache = self.shingle_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = cache.get(tree_sha) {
            return Ok(s.clone());
        }
        let files = self.archive.tree_contents(tree_sha)?;
        let s = std::sync::Arc::new(novelty::shingles(files.iter().map(|(e, b)| (e.path.as_str(), b.as_slice()))));
        cache.insert(tree_sha.to_string(), s.clone());
        Ok(s)
    }

    /// Evaluate variant `id` `repeats` times, store its search fields
    /// (island, cell, interval, model) and then its results — in that order,
    /// so a variant marked evaluated always has them; a kill in between
    /// leaves it pending and a resume evaluates it again.
    pub(super) async fn evaluate_search(
        &self,
        id: &VariantId,
        p: &crate::runtime::Prepared,
        island: u32,
        model: Option<(String, u64)>,
    ) -> Result<()> {
        let search = &self.config.search;
        let mut runs = Vec::new();
        for repeat in 0..search.repeats {
            runs.push(self.measure(id, p, repeat).await?);
        }
        let scores: Vec<f64> = runs.iter().map(|m| m.visible).collect();
        let (mean, ci) = noise::interval(&scores).expect("at least one evaluation");
        let held_out = if runs.iter().all(|m| m.held_out.is_some()) {
            noise::interval(&runs.iter().filter_map(|m| m.held_out).collect::<Vec<_>>()).map(|(m, _)| m)
        } else {
            None
        };
        // Per task: the mean score over the repeats; passed when it passed
        // in most of them; the first repeat's note.
        let mut rows = runs[0].rows.clone();
        if runs.len() > 1 {
            for r in &mut rows {
                let same: Vec<&archive::TaskResult> = runs
                    .iter()
                    .filter_map(|m| m.rows.iter().find(|x| x.task_id == r.task_id && x.split == r.split))
                    .collect();
                r.score = same.iter().map(|x| x.score).sum::<f64>() / same.len() as f64;
                r.passed = 2 * same.iter().filter(|x| x.passed).count() > same.len();
            }
        }
        let row =
            self.archive.get(id)?.ok_or_else(|| crate::error::Error::Internal(anyhow::anyhow!("variant vanished")))?;
        let cell = if search.descriptors.is_empty() {
            None
        } else {
            let bytes: u64 = self.archive.tree_contents(&row.tree_sha)?.iter().map(|(_, b)| b.len() as u64).sum();
            let values: Vec<f64> = search
                .descriptors
                .iter()
                .map(|d| qd::value(self.suite.name, d, bytes, mean, &rows).unwrap_or(0.0))
                .collect();
            Some(qd::cell(&values, search.bins))
        };
        let (model, tokens) = match model {
            Some((m, t)) => (Some(m), Some(t)),
            None => (None, None),
        };
        self.archive.set_search(
            id,
            &SearchFields {
                island: Some(island),
                cell,
                repeats: Some(search.repeats),
                score_lo: ci.map(|c| c.0),
                score_hi: ci.map(|c| c.1),
                model,
                tokens,
            },
        )?;
        self.archive.record_results(id, &rows, Some(mean), held_out, VariantStatus::Evaluated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, parent: Option<&str>, score: f64) -> VariantRow {
        VariantRow {
            id: VariantId(id.into()),
            run_id: "r".into(),
            parent: parent.map(|p| VariantId(p.into())),
            generation: 0,
            language: "wat".into(),
            component_sha: None,
            tree_sha: String::new(),
            grant_digest: String::new(),
            visible_score: Some(score),
            held_out_score: None,
            status: VariantStatus::Evaluated,
            summary: String::new(),
            created: String::new(),
            updated: String::new(),
            children: 0,
            search: SearchFields::default(),
        }
    }

    #[test]
    fn a_clade_sums_a_variant_and_all_its_descendants() {
        // a ← b ← c, a ← d; e alone.
        let rows = [
            row("a", None, 0.2),
            row("b", Some("a"), 0.6),
            row("c", Some("b"), 1.0),
            row("d", Some("a"), 0.0),
            row("e", None, 0.5),
        ];
        let refs: Vec<&VariantRow> = rows.iter().collect();
        let cl = clades(&refs, &HashMap::new());
        assert_eq!(cl["a"].size, 4);
        assert!((cl["a"].successes - 1.8).abs() < 1e-12 && (cl["a"].failures - 2.2).abs() < 1e-12, "{:?}", cl["a"]);
        assert_eq!(cl["b"].size, 2);
        assert!((cl["b"].successes - 1.6).abs() < 1e-12);
        assert_eq!((cl["c"].size, cl["d"].size, cl["e"].size), (1, 1, 1));
        // Two refused proposals of `b` are two members scoring 0 in the
        // clades of `b` and of `a`, and leave `c`, `d` and `e` alone.
        let refused: HashMap<String, u32> = [("b".to_string(), 2)].into();
        let with = clades(&refs, &refused);
        assert_eq!((with["a"].size, with["b"].size, with["c"].size), (6, 4, 1));
        assert!((with["b"].successes - 1.6).abs() < 1e-12 && (with["b"].failures - 2.4).abs() < 1e-12);
        assert!(with["b"].mean() < cl["b"].mean(), "refusals lower the clade's estimate");
        // A refused proposal of a variant with no evaluated member yet still
        // starts its clade.
        let only: HashMap<String, u32> = [("e".to_string(), 1)].into();
        assert_eq!(clades(&refs, &only)["e"].size, 2);
        // A lower bound from repeats is what counts.
        let mut noisy = row("n", None, 0.9);
        noisy.search = SearchFields { repeats: Some(3), score_lo: Some(0.4), ..SearchFields::default() };
        assert!((clades(&[&noisy], &HashMap::new())["n"].successes - 0.4).abs() < 1e-12);
    }
}
