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
