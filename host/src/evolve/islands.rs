//! Islands: separate populations that exchange their best variants every
//! few generations (the island model of OpenEvolve and FunSearch).
//!
//! * Initial variant `i` lives on island `i mod islands`; child step `k`
//!   of the run (counted from the first child, `k = 0, 1, …`) works for
//!   island `k mod islands`, so every island gets children in turn —
//!   whatever `children_per_generation` is — and its child lives there.
//!   The archive keeps a variant once (by run, content and parent), so
//!   when steps of two islands make the same child it is a member of both;
//!   its stored `island` is the first one's.
//! * A step of island `j` chooses its parent among island `j`'s variants
//!   of earlier generations and the migrants it received. An island with
//!   none yet (more islands than initial variants) starts from the initial
//!   variants, as OpenEvolve seeds every island with the initial program.
//! * Migration happens after every `migration_interval`-th generation `e`:
//!   each island sends its best `⌈rate × size⌉` variants of generations
//!   `≤ e` (its own and those it received) to the next island in a ring
//!   (`j → j + 1 mod islands`). A migrant is not copied: it stays one
//!   variant of its home island and becomes a candidate parent of the next.
//!
//! Membership is computed from the archive (each variant's island,
//! generation and score) and the run file only, so a resumed run sees the
//! same populations as an uninterrupted one; there is no migration state to
//! lose.

use std::collections::BTreeSet;

/// What islands need to know of a candidate parent.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The islands whose steps made it (usually one; several when two
    /// islands' steps made the same variant, which the archive keeps once).
    pub islands: Vec<u32>,
    /// The generation that made it.
    pub generation: u32,
    /// Its selection score (the visible score, or its lower bound).
    pub score: f64,
}

/// The island an initial variant (`index` among `run.initial`) lives on.
pub fn initial_island(index: u64, islands: u32) -> u32 {
    (index % u64::from(islands.max(1))) as u32
}

/// The island child step `child_index` (0 for the run's first child)
/// works for.
pub fn child_island(child_index: u64, islands: u32) -> u32 {
    (child_index % u64::from(islands.max(1))) as u32
}

/// Indices into `members` that island `island` chooses a parent of
/// generation `generation` from (see the module docs), in `members` order.
pub fn population(
    members: &[Member],
    islands: u32,
    interval: u32,
    rate: f64,
    island: u32,
    generation: u32,
) -> Vec<usize> {
    let islands = islands.max(1);
    if islands == 1 {
        return (0..members.len()).collect();
    }
    // received[j]: the migrants island j holds so far.
    let mut received: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); islands as usize];
    if interval > 0 {
        let mut epoch = interval;
        // Migration after generation `epoch` reaches generations > epoch.
        while epoch < generation {
            let mut sends: Vec<(usize, Vec<usize>)> = Vec::new();
            for j in 0..islands {
                let mut pop: Vec<usize> = (0..members.len())
                    .filter(|&i| {
                        members[i].generation <= epoch
                            && (members[i].islands.contains(&j) || received[j as usize].contains(&i))
                    })
                    .collect();
                // Best first; the earliest on ties, so the choice is fixed.
                pop.sort_by(|&a, &b| members[b].score.total_cmp(&members[a].score).then(a.cmp(&b)));
                let n = ((rate * pop.len() as f64).ceil() as usize).min(pop.len());
                sends.push((((j + 1) % islands) as usize, pop[..n].to_vec()));
            }
            for (to, ids) in sends {
                received[to].extend(ids.into_iter().filter(|&i| !members[i].islands.contains(&(to as u32))));
            }
            epoch += interval;
        }
    }
    let own: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].islands.contains(&island) || received[island as usize].contains(&i))
        .collect();
    if own.is_empty() {
        (0..members.len()).filter(|&i| members[i].generation == 0).collect()
    } else {
        own
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(island: u32, generation: u32, score: f64) -> Member {
        Member { islands: vec![island], generation, score }
    }

    #[test]
    fn children_rotate_over_every_island() {
        let got: Vec<u32> = (0..7).map(|k| child_island(k, 3)).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(initial_island(4, 3), 1);
        assert_eq!(child_island(5, 1), 0);
    }

    #[test]
    fn islands_are_separate_until_a_migration_and_then_receive_the_best() {
        // Island 0: scores 0.1, 0.9 (gen 1); island 1: 0.5 (gen 1).
        let ms = [m(0, 0, 0.1), m(1, 1, 0.5), m(0, 1, 0.9)];
        assert_eq!(population(&ms, 2, 0, 0.5, 0, 5), vec![0, 2], "no migration");
        assert_eq!(population(&ms, 2, 0, 0.5, 1, 5), vec![1]);
        // Interval 1: after generation 1 island 0's best half (1 of 2: the
        // 0.9) goes to island 1, island 1's (the 0.5) to island 0.
        assert_eq!(population(&ms, 2, 1, 0.5, 1, 2), vec![1, 2]);
        assert_eq!(population(&ms, 2, 1, 0.5, 0, 2), vec![0, 1, 2]);
        // Not before generation 2 chooses.
        assert_eq!(population(&ms, 2, 1, 0.5, 1, 1), vec![1]);
    }

    #[test]
    fn an_empty_island_starts_from_the_initial_variants() {
        let ms = [m(0, 0, 0.1), m(0, 1, 0.9)];
        assert_eq!(population(&ms, 3, 0, 0.1, 2, 2), vec![0]);
        assert_eq!(population(&ms, 1, 0, 0.1, 0, 2), vec![0, 1], "one island is everyone");
    }
}
