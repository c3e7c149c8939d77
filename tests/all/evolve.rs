//! The evolution loop: determinism, staged evaluation, budgets, what the
//! meta-agent may see, and resume after kill -9.

use std::path::{Path, PathBuf};

use vivarium::archive::{Archive, RunStatus, Split, VariantStatus};
use vivarium::evolve::{self, EvolveOptions, StopReason};
use vivarium_tests::*;

fn run_file(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let arith = workspace_root().join("variants/arith");
    let text = format!(
        "[run]\nname = \"{name}\"\nsuite = \"arith\"\nseed = 11\ngenerations = 2\nchildren_per_generation = 2\ninitial = [\"{}\"]\n{extra}",
        arith.display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn fingerprint(archive: &Archive, run: &str) -> Vec<(String, Option<String>, u32, Option<f64>, Option<f64>)> {
    archive
        .list(Some(run))
        .unwrap()
        .into_iter()
        .map(|v| (v.id.0, v.parent.map(|p| p.0), v.generation, v.visible_score, v.held_out_score))
        .collect()
}

async fn evolve_in(home: &Path, run: &Path) -> evolve::Summary {
    evolve::evolve(&sandboxed_session(home), run, &EvolveOptions::default(), &|_| {}).await.unwrap()
}

#[tokio::test]
async fn the_same_seed_gives_the_same_archive_and_the_score_improves() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_file(tmp.path(), "same", "");
    let a = evolve_in(&tmp.path().join("a"), &run).await;
    let b = evolve_in(&tmp.path().join("b"), &run).await;
    assert_eq!(a.stop, StopReason::Finished);
    let fa = fingerprint(&Archive::open(&a.archive_dir).unwrap(), "same");
    let fb = fingerprint(&Archive::open(&b.archive_dir).unwrap(), "same");
    assert_eq!(fa, fb);
    assert!(fa.len() >= 2, "{fa:?}");
    let best = a.best.unwrap().visible_score.unwrap();
    assert!(best > a.baseline, "improved: {} -> {best}", a.baseline);
    let archive = Archive::open(&a.archive_dir).unwrap();
    assert!(archive.integrity_check().unwrap().is_ok());
    assert_eq!(archive.get_run("same").unwrap().unwrap().status, RunStatus::Finished);
}

#[tokio::test]
async fn staged_evaluation_skips_the_full_set_below_the_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    // The baseline passes 4 of the first 6 visible tasks (no division).
    let run = run_file(tmp.path(), "staged", "[staged]\nfirst = 6\nthreshold = 0.9\n[budget]\nfuel = 1\n");
    let s = evolve_in(&tmp.path().join("h"), &run).await;
    let archive = Archive::open(&s.archive_dir).unwrap();
    let base = &archive.list(Some("staged")).unwrap()[0];
    assert_eq!(base.status, VariantStatus::Evaluated);
    assert_eq!(base.held_out_score, None, "held-out split not run");
    let results = archive.results(&base.id).unwrap();
    assert_eq!(results.len(), 6, "only the first stage ran");
    assert!(results.iter().all(|r| r.split == Split::Visible));
    assert!((base.visible_score.unwrap() - 4.0 / 6.0).abs() < 1e-9);
}

#[tokio::test]
async fn a_budget_reached_mid_run_ends_it_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_file(tmp.path(), "budget", "[budget]\nfuel = 1\n");
    let s = evolve_in(&tmp.path().join("h"), &run).await;
    match &s.stop {
        StopReason::Budget(why) => assert!(why.starts_with("fuel "), "{why}"),
        other => panic!("expected a budget stop, got {other:?}"),
    }
    assert_eq!(s.variants, 1, "only the baseline");
    let archive = Archive::open(&s.archive_dir).unwrap();
    assert_eq!(archive.get_run("budget").unwrap().unwrap().status, RunStatus::Stopped);
    assert!(archive.integrity_check().unwrap().is_ok());
}

#[tokio::test]
async fn the_meta_agent_never_sees_held_out_results() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_file(tmp.path(), "private", "");
    let s = evolve_in(&tmp.path().join("h"), &run).await;
    let archive = Archive::open(&s.archive_dir).unwrap();
    let suite = vivarium::tasks::arith::suite();
    for v in archive.list(Some("private")).unwrap() {
        let (history, feedback) = evolve::context_for(&archive, &suite, &v.id).unwrap();
        assert!(!feedback.contains("arith-h-"), "held-out task in feedback: {feedback}");
        for t in &suite.held_out {
            assert!(!feedback.contains(&t.task.input), "held-out input in feedback");
        }
        for h in &history {
            let row = archive.get(&vivarium::archive::VariantId(h.id.clone())).unwrap().unwrap();
            assert_eq!(Some(h.score), row.visible_score, "history carries visible scores only");
        }
    }
    // And the improve-context really is built from these: the audit log's
    // proposal records name the parents whose context was used.
    assert!(s.variants >= 2);
}

#[tokio::test]
async fn a_childs_compiler_error_comes_back_to_the_meta_agent_as_feedback() {
    let tmp = tempfile::tempdir().unwrap();
    // The proposer guest: its first proposal does not compile in the build
    // sandbox; it proposes an honest edit only once it has read the
    // compiler's message in its feedback.
    let src = workspace_root().join("tests/guests/proposer");
    let parent = tmp.path().join("proposer");
    std::fs::create_dir_all(parent.join("src")).unwrap();
    for f in ["Cargo.toml", "Cargo.lock", "variant.toml", "src/lib.rs"] {
        std::fs::copy(src.join(f), parent.join(f)).unwrap();
    }
    vivarium::improve::rebase_path_dependencies(&src, &parent).unwrap();
    let run = tmp.path().join("run.toml");
    std::fs::write(
        &run,
        "[run]\nname = \"feedback\"\nsuite = \"arith\"\ngenerations = 2\nchildren_per_generation = 1\ninitial = [\"proposer\"]\n",
    )
    .unwrap();
    let s = evolve_in(&tmp.path().join("h"), &run).await;
    assert_eq!(s.stop, StopReason::Finished);
    assert_eq!(s.refused, 1, "the first child did not build");
    let archive = Archive::open(&s.archive_dir).unwrap();
    let rows = archive.list(Some("feedback")).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].summary, "saw the compiler's refusal; honest now");
    assert_eq!(rows[1].generation, 2);
    let note = std::fs::read_to_string(s.run_dir.join("attempts").join(&rows[0].id.0).join("00000001.txt")).unwrap();
    assert!(note.contains("couldn't read `/etc/passwd`"), "the compiler's message: {note}");
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(!note.contains(passwd.lines().next().unwrap()), "no byte of the file");
}

// ------------------------------------------------------------ the search

/// A run of `variants/arith-wat` (built in process, so a run takes about a
/// second) with `search` appended to its run file.
fn wat_run(dir: &Path, name: &str, search: &str) -> PathBuf {
    let text = format!(
        "[run]\nname = \"{name}\"\nsuite = \"arith\"\nseed = 3\ngenerations = 3\nchildren_per_generation = 2\ninitial = [\"{}\"]\n{search}",
        workspace_root().join("variants/arith-wat").display()
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

type SearchFingerprint =
    Vec<(String, Option<String>, Option<f64>, Option<u32>, Option<String>, Option<f64>, Option<f64>)>;

fn search_fingerprint(archive: &Archive, run: &str) -> SearchFingerprint {
    archive
        .list(Some(run))
        .unwrap()
        .into_iter()
        .map(|v| {
            let s = v.search;
            (v.id.0, v.parent.map(|p| p.0), v.visible_score, s.island, s.cell, s.score_lo, s.score_hi)
        })
        .collect()
}

/// The archive and the audit log under `home` are whole.
fn intact(home: &Path, archive: &Archive) {
    assert!(archive.integrity_check().unwrap().is_ok());
    assert!(vivarium::audit::verify_dir(&home.join("audit")).unwrap().ok);
}

#[tokio::test]
async fn islands_keep_their_lineages_apart_and_each_variant_has_an_island_and_a_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let search = "[search]\nislands = 2\ndescriptors = [\"source_size\", \"score\"]\nbins = 4\ngrid_parents = 0.5\n";
    let run = wat_run(tmp.path(), "isl", search);
    let a = evolve_in(&tmp.path().join("a"), &run).await;
    let b = evolve_in(&tmp.path().join("b"), &run).await;
    assert_eq!(a.stop, StopReason::Finished);
    let archive = Archive::open(&a.archive_dir).unwrap();
    let fa = search_fingerprint(&archive, "isl");
    assert_eq!(fa, search_fingerprint(&Archive::open(&b.archive_dir).unwrap(), "isl"), "the same seed, the same run");
    let rows = archive.list(Some("isl")).unwrap();
    assert!(rows.len() >= 3, "{rows:?}");
    let by_id: std::collections::HashMap<_, _> = rows.iter().map(|v| (v.id.clone(), v)).collect();
    // Which islands' steps made each variant: step k ≥ 1 works for island
    // (k − 1) mod 2; the archive keeps a variant once, so the same child
    // made by both islands' steps belongs to both.
    let mut made_by: std::collections::HashMap<_, std::collections::BTreeSet<u32>> = Default::default();
    for (step, v, _) in archive.steps("isl").unwrap() {
        if let Some(v) = v {
            made_by.entry(v).or_default().insert(if step == 0 { 0 } else { ((step - 1) % 2) as u32 });
        }
    }
    let mut islands_seen = std::collections::BTreeSet::new();
    for v in &rows {
        let island = v.search.island.expect("every variant has an island");
        islands_seen.insert(island);
        let cell = v.search.cell.as_deref().expect("every evaluated variant has a cell");
        assert_eq!(cell.split(',').count(), 2, "{cell}");
        assert!(cell.split(',').all(|b| b.parse::<u32>().unwrap() < 4), "{cell}");
        if let Some(p) = &v.parent {
            let parent = by_id[p];
            // No migration: a child's parent was made on its own island, or
            // is an initial variant (an island starts from those).
            assert!(made_by[p].contains(&island) || parent.generation == 0, "{v:?} from {parent:?}");
        }
    }
    assert_eq!(islands_seen.into_iter().collect::<Vec<_>>(), vec![0, 1], "children land on both islands");
    intact(&tmp.path().join("a"), &archive);
}

#[tokio::test]
async fn a_near_duplicate_child_is_counted_and_never_evaluated() {
    let tmp = tempfile::tempdir().unwrap();
    // arith-wat's meta-agent flips one switch: its child differs from it in
    // a line or two, far above a 0.5 similarity.
    let run = wat_run(tmp.path(), "novel", "[search]\nnovelty_threshold = 0.5\n");
    let s = evolve_in(&tmp.path().join("h"), &run).await;
    assert_eq!(s.stop, StopReason::Finished);
    assert_eq!(s.near_duplicates, 6, "every child of 3 generations × 2: {s:?}");
    assert_eq!(s.variants, 1, "only the baseline is archived");
    assert_eq!(s.refused, 0, "{s:?}");
    let archive = Archive::open(&s.archive_dir).unwrap();
    assert_eq!(archive.step("novel", 1).unwrap(), Some((None, evolve::NEAR_DUPLICATE.to_string())));
    let html = vivarium::report::render(&archive, "novel").unwrap();
    assert!(html.contains("6 near-duplicate children were not evaluated"), "the report shows them");
    intact(&tmp.path().join("h"), &archive);
    // Exact copies only: the same children are new enough.
    let run = wat_run(tmp.path(), "exact", "[search]\nnovelty_threshold = 1.0\n");
    let s = evolve_in(&tmp.path().join("h2"), &run).await;
    // (arith-wat remakes the same child from the same parent: those exact
    // copies are rejected, the rest evaluated.)
    assert!(s.near_duplicates < 6 && s.variants >= 3, "{s:?}");
}

#[tokio::test]
async fn repeats_store_the_mean_and_interval_and_hgm_reproduces_under_its_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = wat_run(tmp.path(), "rep", "[search]\nrepeats = 3\n");
    let s = evolve_in(&tmp.path().join("h"), &run).await;
    let archive = Archive::open(&s.archive_dir).unwrap();
    for v in archive.list(Some("rep")).unwrap() {
        assert_eq!(v.search.repeats, Some(3));
        let (lo, hi, mean) = (v.search.score_lo.unwrap(), v.search.score_hi.unwrap(), v.visible_score.unwrap());
        assert!(lo <= mean && mean <= hi, "{v:?}");
        // arith is deterministic: three equal scores, a zero-width interval.
        assert!((hi - lo).abs() < 1e-12, "{v:?}");
    }
    let best = s.best.unwrap();
    assert_eq!(best.selection_score(), best.search.score_lo, "best is ranked by the lower bound");

    let run = wat_run(tmp.path(), "hgm", "");
    let text = std::fs::read_to_string(&run).unwrap().replace("seed = 3\n", "seed = 3\nselection = \"hgm\"\n");
    std::fs::write(&run, text).unwrap();
    let a = evolve_in(&tmp.path().join("a"), &run).await;
    let b = evolve_in(&tmp.path().join("b"), &run).await;
    let fa = search_fingerprint(&Archive::open(&a.archive_dir).unwrap(), "hgm");
    assert_eq!(fa, search_fingerprint(&Archive::open(&b.archive_dir).unwrap(), "hgm"));
    assert!(fa.len() >= 2 && a.best.unwrap().visible_score > Some(a.baseline), "{fa:?}");
}

#[test]
fn a_misconfigured_search_is_refused_before_the_run_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    for (search, key) in [
        ("[search]\nislands = 0\n", "search.islands"),
        ("[search]\ndescriptors = [\"family:cartpole\"]\n", "search.descriptors[0]"),
        ("[[models]]\nname = \"a\"\nweight = 0.3\n[[models]]\nname = \"b\"\nweight = 0.3\n", "models"),
    ] {
        let run = wat_run(tmp.path(), "bad", search);
        let e = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(evolve::evolve(&sandboxed_session(&home), &run, &EvolveOptions::default(), &|_| {}))
            .unwrap_err();
        assert_eq!(e.exit_code(), vivarium::error::ExitCode::Invalid);
        assert!(e.to_string().contains(&format!("{key}: ")), "{e}");
        assert!(!home.join("runs/bad").exists(), "nothing created");
    }
}

/// One configuration of a selection comparison: its label and the lines
/// it adds to `[run]` and `[search]`.
struct Compared {
    label: &'static str,
    run: &'static str,
    search: &'static str,
}

/// Run `variant` on `suite` for `generations` × `children` under each of
/// `configs` and each of `seeds`, and return the table of the best visible
/// score each reached: per seed, the mean with its Student-t 95 % interval,
/// how many runs reached a perfect 1.0, and the mean number of variants
/// archived.
async fn compare(
    tag: &str,
    suite: &str,
    variant: &str,
    generations: u32,
    children: u32,
    configs: &[Compared],
    seeds: &[u64],
) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let mut table = format!(
        "| selection | best visible score per seed ({}–{}) | mean | 95 % interval | runs reaching 1.0 | variants (mean) |\n\
         |---|---|---|---|---|---|\n",
        seeds[0],
        seeds[seeds.len() - 1]
    );
    for (i, c) in configs.iter().enumerate() {
        let mut bests = Vec::new();
        let mut variants = 0usize;
        for &seed in seeds {
            let name = format!("{tag}{i}s{seed}");
            let search = if c.search.is_empty() { String::new() } else { format!("[search]\n{}", c.search) };
            let text = format!(
                "[run]\nname = \"{name}\"\nsuite = \"{suite}\"\nseed = {seed}\ngenerations = {generations}\n\
                 children_per_generation = {children}\ninitial = [\"{}\"]\n{}{search}",
                workspace_root().join(variant).display(),
                c.run
            );
            let run = tmp.path().join(format!("{name}.toml"));
            std::fs::write(&run, text).unwrap();
            let s = evolve_in(&tmp.path().join("h"), &run).await;
            bests.push(s.best.and_then(|b| b.visible_score).unwrap_or(0.0));
            variants += s.variants;
        }
        let (mean, ci) = evolve::noise::interval(&bests).unwrap();
        let (lo, hi) = ci.unwrap();
        table.push_str(&format!(
            "| {} | {} | {mean:.3} | [{lo:.3}, {hi:.3}] | {} of {} | {:.1} |\n",
            c.label,
            bests.iter().map(|b| format!("{b:.3}")).collect::<Vec<_>>().join(", "),
            bests.iter().filter(|&&b| b >= 1.0 - 1e-9).count(),
            seeds.len(),
            variants as f64 / seeds.len() as f64
        ));
    }
    println!("{table}");
    table
}

/// The first selection comparison in docs/evolve.md: on `arith` with
/// `variants/arith-wat`, 4 generations × 2 children, seeds 1–5. A single
/// hill: greedy is expected to win. An experiment, not a check (run it
/// with `cargo test -p vivarium-tests --test all -- --ignored --nocapture
/// selection_comparison_on_arith`); it writes `target/search-comparison-arith.md`.
#[tokio::test]
#[ignore = "an experiment (about two minutes): run it by name"]
async fn selection_comparison_on_arith() {
    let configs = [
        Compared { label: "greedy", run: "selection = \"greedy\"\n", search: "" },
        Compared { label: "dgm", run: "selection = \"dgm\"\n", search: "" },
        Compared { label: "dgm-h", run: "selection = \"dgm-h\"\n", search: "" },
        Compared { label: "hgm", run: "selection = \"hgm\"\n", search: "" },
        Compared {
            label: "islands + QD (dgm)",
            run: "selection = \"dgm\"\n",
            search: "islands = 2\nmigration_interval = 2\nmigration_rate = 0.5\n\
                     descriptors = [\"source_size\", \"score\"]\ngrid_parents = 0.5\n",
        },
    ];
    let table = compare("ar", "arith", "variants/arith-wat", 4, 2, &configs, &[1, 2, 3, 4, 5]).await;
    std::fs::write(workspace_root().join("target/search-comparison-arith.md"), &table).unwrap();
}

/// The comparison on a suite with deceptive local optima, reported in
/// docs/evolve.md: `trap` (host/src/tasks/trap.rs) with
/// `variants/trap-python`, whose meta-agent flips one bit by a seeded rule
/// and never reads a score, 30 generations × 1 child (one child per
/// generation, so no two proposals of one generation share a parent and
/// an identical context), seeds 1–10. Starting at 0.3, climbing leads to
/// the local optimum 0.6; a block's optimum (1.0) needs two steps down
/// first; 1.0 overall needs both. An experiment, not a check (run it with
/// `cargo test -p vivarium-tests --test all -- --ignored --nocapture
/// selection_comparison_on_trap`); it writes `target/search-comparison-trap.md`.
#[tokio::test]
#[ignore = "an experiment (about ten minutes): run it by name"]
async fn selection_comparison_on_trap() {
    const GRID: &str = "descriptors = [\"reported:ones-0\", \"reported:ones-1\"]\nbins = 4\ngrid_parents = 0.5\n";
    const ISLANDS: &str = "islands = 2\nmigration_interval = 5\nmigration_rate = 0.25\n";
    let configs = [
        Compared { label: "greedy", run: "selection = \"greedy\"\n", search: "" },
        Compared { label: "random", run: "selection = \"random\"\n", search: "" },
        Compared { label: "dgm", run: "selection = \"dgm\"\n", search: "" },
        Compared { label: "dgm-h", run: "selection = \"dgm-h\"\n", search: "" },
        Compared { label: "hgm", run: "selection = \"hgm\"\n", search: "" },
        Compared { label: "islands (dgm)", run: "selection = \"dgm\"\n", search: ISLANDS },
        Compared { label: "QD on reported ones (dgm)", run: "selection = \"dgm\"\n", search: GRID },
        Compared {
            label: "islands + QD (dgm)",
            run: "selection = \"dgm\"\n",
            search: concat!(
                "islands = 2\nmigration_interval = 5\nmigration_rate = 0.25\n",
                "descriptors = [\"reported:ones-0\", \"reported:ones-1\"]\nbins = 4\ngrid_parents = 0.5\n"
            ),
        },
        Compared {
            label: "islands + QD (greedy)",
            run: "selection = \"greedy\"\n",
            search: concat!(
                "islands = 2\nmigration_interval = 5\nmigration_rate = 0.25\n",
                "descriptors = [\"reported:ones-0\", \"reported:ones-1\"]\nbins = 4\ngrid_parents = 0.5\n"
            ),
        },
    ];
    let seeds: Vec<u64> = (1..=10).collect();
    let table = compare("tr", "trap", "variants/trap-python", 30, 1, &configs, &seeds).await;
    std::fs::write(workspace_root().join("target/search-comparison-trap.md"), &table).unwrap();
}

#[tokio::test]
async fn each_child_records_the_model_its_proposal_went_to_and_the_draws_reproduce() {
    let tmp = tempfile::tempdir().unwrap();
    let models = "[[models]]\nname = \"small\"\nweight = 0.5\n[[models]]\nname = \"big\"\nweight = 0.5\n";
    let run = wat_run(tmp.path(), "models", models);
    let a = evolve_in(&tmp.path().join("a"), &run).await;
    let b = evolve_in(&tmp.path().join("b"), &run).await;
    let rows = |s: &evolve::Summary| {
        Archive::open(&s.archive_dir)
            .unwrap()
            .list(Some(&s.run_id))
            .unwrap()
            .into_iter()
            .map(|v| (v.id.0, v.search.model, v.search.tokens))
            .collect::<Vec<_>>()
    };
    let ra = rows(&a);
    assert_eq!(ra, rows(&b), "the same seed, the same models");
    assert!(ra.len() >= 2);
    assert_eq!((ra[0].1.as_deref(), ra[0].2), (None, None), "the initial variant had no proposal");
    for (_, model, tokens) in &ra[1..] {
        assert!(matches!(model.as_deref(), Some("small" | "big")), "{model:?}");
        // arith-wat's meta-agent works offline: its proposals cost nothing.
        assert_eq!(*tokens, Some(0));
    }
    // The bandit tries each model before it exploits one.
    let run = wat_run(
        tmp.path(),
        "ucb",
        &format!("[search]\nmodel_selection = \"ucb\"\n{}", models.replace("weight = 0.5\n", "")),
    );
    let u = evolve_in(&tmp.path().join("u"), &run).await;
    let used: std::collections::BTreeSet<_> = rows(&u).into_iter().filter_map(|r| r.1).collect();
    assert_eq!(used.into_iter().collect::<Vec<_>>(), vec!["big".to_string(), "small".to_string()]);
}

/// A copy of `variants/trap-python` under `dir/name` starting at `genome`;
/// with `refused`, its meta-agent proposes a write outside its tree, which
/// the guard refuses, every time.
fn trap_variant(dir: &Path, name: &str, genome: &str, refused: bool) -> PathBuf {
    let src = workspace_root().join("variants/trap-python");
    let dst = dir.join(name);
    std::fs::create_dir_all(dst.join("src")).unwrap();
    let manifest = std::fs::read_to_string(src.join("variant.toml")).unwrap();
    std::fs::write(dst.join("variant.toml"), manifest.replace("name = \"trap-python\"", &format!("name = \"{name}\"")))
        .unwrap();
    let mut agent = std::fs::read_to_string(src.join("src/agent.py"))
        .unwrap()
        .replace("GENOME = \"100 100\"", &format!("GENOME = \"{genome}\""));
    if refused {
        agent = agent.replace("[source.write(SELF_PATH, text)]", "[source.write(\"../outside.py\", text)]");
        assert!(agent.contains("../outside.py"));
    }
    std::fs::write(dst.join("src/agent.py"), agent).unwrap();
    dst
}

#[tokio::test]
async fn a_parent_whose_proposals_keep_being_refused_loses_hgm_draws() {
    let tmp = tempfile::tempdir().unwrap();
    // `stuck` scores best (0.6) but every proposal of it is refused by the
    // guard; `open` scores 0.3 and its children are archived. Counted only
    // by what was archived, `stuck`'s clade would stay one member at 0.6
    // (Beta(1.6, 1.4), mean 0.53) and win most draws against `open`'s
    // (0.3 and children around it); counted with its refusals as zeros, its
    // mean falls to 1.6/(3 + k) after k of them and it is left alone.
    trap_variant(tmp.path(), "stuck", "000 000", true);
    trap_variant(tmp.path(), "open", "100 100", false);
    let home = tmp.path().join("h");
    let mut runs = Vec::new();
    for name in ["hgm-a", "hgm-b"] {
        let run = tmp.path().join(format!("{name}.toml"));
        std::fs::write(
            &run,
            format!(
                "[run]\nname = \"{name}\"\nsuite = \"trap\"\nseed = 5\ngenerations = 12\n\
                 children_per_generation = 1\nselection = \"hgm\"\ninitial = [\"stuck\", \"open\"]\n"
            ),
        )
        .unwrap();
        let s = evolve_in(&home, &run).await;
        assert_eq!(s.stop, StopReason::Finished);
        let archive = Archive::open(&s.archive_dir).unwrap();
        let rows = archive.list(Some(&s.run_id)).unwrap();
        let stuck = rows.iter().find(|v| v.summary == "initial: stuck").unwrap().id.clone();
        // Every refused step names its parent in the step ledger.
        let refused = archive.refused_children(&s.run_id, i64::MAX as u64).unwrap();
        assert_eq!(refused.keys().collect::<Vec<_>>(), vec![&stuck.0], "{refused:?}");
        let n = refused[&stuck.0] as usize;
        assert_eq!(n, s.refused, "every refusal is a step on `stuck`");
        assert!(rows.iter().all(|v| v.parent.as_ref() != Some(&stuck)), "nothing of `stuck` was archived");
        // 12 steps: `stuck` is tried, and then mostly left alone.
        assert!((1..=4).contains(&n), "`stuck` drew {n} of 12 parents");
        // A child the same as an earlier child of its parent is the same variant.
        assert!(rows.len() <= 2 + 12 - n, "{} variants", rows.len());
        intact(&home, &archive);
        let outcomes: Vec<String> = archive.steps(&s.run_id).unwrap().into_iter().map(|(_, _, o)| o).collect();
        let summaries: Vec<String> = rows.into_iter().map(|v| v.summary).collect();
        runs.push((outcomes, summaries));
    }
    // The same seed, the same draws, refusals included.
    assert_eq!(runs[0], runs[1]);
}

#[tokio::test]
async fn a_variant_reported_descriptor_places_it_in_the_grid_and_never_changes_its_score() {
    let tmp = tempfile::tempdir().unwrap();
    // `honest` reports its blocks' fractions of ones; `liar` has the same
    // genome but reports every block full.
    trap_variant(tmp.path(), "honest", "100 100", false);
    let liar = trap_variant(tmp.path(), "liar", "100 100", false);
    let agent = std::fs::read_to_string(liar.join("src/agent.py")).unwrap();
    let lying = agent.replace("f\"descriptor: ones-{i}={b.count('1') / len(b):.4f}\"", "f\"descriptor: ones-{i}=1.0\"");
    assert_ne!(agent, lying);
    std::fs::write(liar.join("src/agent.py"), lying).unwrap();
    let run = tmp.path().join("grid.toml");
    std::fs::write(
        &run,
        "[run]\nname = \"grid\"\nsuite = \"trap\"\nseed = 2\ngenerations = 4\nchildren_per_generation = 1\n\
         selection = \"dgm\"\ninitial = [\"honest\", \"liar\"]\n\
         [search]\ndescriptors = [\"reported:ones-0\", \"reported:ones-1\"]\nbins = 4\ngrid_parents = 0.5\n",
    )
    .unwrap();
    let home = tmp.path().join("h");
    let s = evolve_in(&home, &run).await;
    let archive = Archive::open(&s.archive_dir).unwrap();
    let rows = archive.list(Some("grid")).unwrap();
    let (h, l) = (&rows[0], &rows[1]);
    assert_eq!((h.summary.as_str(), l.summary.as_str()), ("initial: honest", "initial: liar"));
    assert_eq!(h.visible_score, Some(0.3));
    assert_eq!(l.visible_score, h.visible_score, "the report is never scored");
    assert_eq!(l.held_out_score, h.held_out_score);
    assert_eq!((h.search.cell.as_deref(), l.search.cell.as_deref()), (Some("1,1"), Some("3,3")));
    // Every honest variant's cell is its genome's: a block with u of 3
    // ones has the fraction u/3, in bin ⌊4u/3⌋ (u = 3 → the last, 3).
    let mut honest = 0;
    for v in &rows {
        let files = archive.tree_contents(&v.tree_sha).unwrap();
        let agent = files.iter().find(|(e, _)| e.path == "src/agent.py").unwrap();
        let text = std::str::from_utf8(&agent.1).unwrap();
        if text.contains("ones-{i}=1.0") {
            assert_eq!(v.search.cell.as_deref(), Some("3,3"), "{}", v.summary);
            continue;
        }
        honest += 1;
        let genome = text.lines().find_map(|l| l.strip_prefix("GENOME = ")).unwrap().trim_matches('"');
        let cell: Vec<String> =
            genome.split(' ').map(|b| ((4 * b.matches('1').count()) / 3).min(3).to_string()).collect();
        assert_eq!(v.search.cell.as_deref(), Some(cell.join(",").as_str()), "{genome}");
    }
    assert!(honest >= 2, "{rows:?}");
    intact(&home, &archive);
}
