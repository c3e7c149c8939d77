//! The meta-agent's `workbench` (`vivarium:agent/workbench@0.2.0`): a
//! Python meta-agent tries a candidate on the `arith` suite's visible tasks
//! during `improve`, then proposes it; and the hostile uses — a loop of
//! tries, a candidate that never terminates, a held-out task id, a
//! candidate that reads the grader's source — each end in a typed refusal
//! or a limit, with the host, the scratch area and the audit chain intact.
//!
//! The meta-agent reports what the workbench answered in its proposal's
//! summary (JSON), which `improve` hands back.

use std::path::Path;
use std::sync::Arc;

use vivarium::audit::{EventKind, Filter};
use vivarium::improve::{improve, ImproveOutcome, ImproveRequest};
use vivarium::variant::{Session, MANIFEST};
use vivarium_tests::workspace_root;

use crate::interp::{session, warm};

/// `MODE` picks what the meta-agent does; `MAGIC`, `LOOP` and `GRADER`
/// are what a candidate flips.
const AGENT: &str = r#"import json
import vivarium
from vivarium import types, source, workbench

MODE = "propose"
MAGIC = 0
LOOP = False
GRADER = False
GRADER_PATH = "@GRADER@"


class TaskAgent(vivarium.TaskAgent):
    def solve(self, task):
        if LOOP:
            while True:
                pass
        if GRADER:
            try:
                return types.Answer(output=open(GRADER_PATH).read()[:300], notes=None)
            except Exception as e:
                return types.Answer(output=f"{type(e).__name__}", notes=None)
        if MAGIC == 1:
            expr = task.input.replace("^", "**").replace("/", "//")
            return types.Answer(output=str(eval(expr)), notes=None)
        return types.Answer(output="0", notes=None)


def flip(name, old, new):
    return [source.search_replace("src/agent.py", f"\n{name} = {old}\n", f"\n{name} = {new}\n")]


def report(trial):
    return {
        "built": trial.built, "error": trial.error, "score": trial.score, "fuel": trial.fuel,
        "outcomes": [[o.task_id, o.passed, o.feedback] for o in trial.outcomes],
        "left": workbench.tries_left(),
    }


class MetaAgent(vivarium.MetaAgent):
    def improve(self, ctx):
        better = flip("MAGIC", 0, 1)
        out = {}
        try:
            if MODE == "propose":
                out = report(workbench.try_candidate(better, limit=4))
            elif MODE == "loop":
                n = 0
                while True:
                    workbench.try_candidate(better, limit=1)
                    n += 1
            elif MODE == "forever":
                out = report(workbench.try_candidate(flip("LOOP", False, True), limit=1))
            elif MODE == "heldout":
                out = report(workbench.try_candidate(better, task_ids=["arith-v-0", "arith-h-0"]))
            elif MODE == "grader":
                out = report(workbench.try_candidate(flip("GRADER", False, True), limit=1))
            elif MODE == "evolve":
                # Try one candidate, propose another: only the proposed one
                # may reach the archive.
                out = report(workbench.try_candidate(flip("GRADER", False, True), limit=2))
                out = {"tried": out["built"]}
            elif MODE == "tried-then-refused":
                # Try a candidate, then propose a patch that does not apply.
                workbench.try_candidate(better, limit=2)
                return source.proposal("stale", [source.search_replace("src/agent.py", "NOT IN " + "THE FILE", "x")])
            elif MODE == "refused":
                out = report(workbench.try_candidate([source.search_replace("variant.toml", "tries = 3", "tries = 300")]))
        except vivarium.ServiceError as e:
            out = {"kind": e.kind, "message": e.message, "tries": locals().get("n")}
        return source.proposal(json.dumps(out), better)
"#;

const MANIFEST_TEXT: &str = "[variant]\nname = \"wb\"\nlanguage = \"python\"\n\n\
[limits]\nfuel = 1_000_000_000\nmemory = \"128MiB\"\nwall = \"60s\"\n\n\
[capabilities]\nworkbench = { tries = 3, tasks = 4, build_seconds = 60, fuel = 5_000_000_000 }\n";

fn grader_path() -> String {
    workspace_root().join("host/src/tasks/arith.rs").display().to_string()
}

/// improve of the [`AGENT`] in `mode`, with the `arith` suite when
/// `suite`: the session, the outcome and the summary's JSON.
async fn run(home: &Path, mode: &str, suite: bool) -> (Session, ImproveOutcome, serde_json::Value) {
    warm().await;
    let s = session(&home.join("home"));
    let dir = home.join("v");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join(MANIFEST), MANIFEST_TEXT).unwrap();
    let agent = AGENT.replace("MODE = \"propose\"", &format!("MODE = {mode:?}")).replace("@GRADER@", &grader_path());
    std::fs::write(dir.join("src/agent.py"), agent).unwrap();
    let req = ImproveRequest {
        parent: dir,
        out: home.join("child"),
        bench: suite.then(|| Arc::new(vivarium::tasks::suite("arith").unwrap())),
        ..Default::default()
    };
    let outcome = improve(&s, &req).await.unwrap_or_else(|e| panic!("improve ({mode}): {e}"));
    let summary = serde_json::from_str(&outcome.summary).unwrap_or_else(|e| panic!("{e}: {}", outcome.summary));
    (s, outcome, summary)
}

fn tries(s: &Session) -> Vec<serde_json::Value> {
    s.audit
        .query(&Filter::new().event(EventKind::Other("workbench-try".into())))
        .unwrap()
        .into_iter()
        .map(|r| r.details)
        .collect()
}

/// The host is fine afterwards: the chain verifies and no scratch tree of
/// a try is left.
fn intact(s: &Session) {
    let report = s.audit.verify().unwrap();
    assert!(report.ok, "{report}");
    let left: Vec<_> = std::fs::read_dir(s.home.scratch_dir())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(left.iter().all(|n| !n.starts_with("workbench-")), "a try's scratch tree is left: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_meta_agent_tries_a_candidate_on_visible_tasks_then_proposes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, outcome, got) = run(tmp.path(), "propose", true).await;
    assert_eq!(got["built"], true, "{got}");
    assert_eq!(got["error"], serde_json::Value::Null);
    let outcomes = got["outcomes"].as_array().unwrap();
    let ids: Vec<&str> = outcomes.iter().map(|o| o[0].as_str().unwrap()).collect();
    assert_eq!(ids, ["arith-v-0", "arith-v-1", "arith-v-2", "arith-v-3"], "the first `limit` visible tasks");
    assert!(got["score"].as_f64().unwrap() >= 0.75, "the candidate solves what the parent does not: {got}");
    for o in outcomes {
        // A failed task's line is the grader's feedback as `evolve` gives it; a passed one has none.
        let (passed, line) = (o[1].as_bool().unwrap(), o[2].as_str().unwrap());
        assert_eq!(passed, line.is_empty(), "{o}");
    }
    assert_eq!(got["left"], 2);
    assert!(got["fuel"].as_u64().unwrap() > 0);
    assert_eq!(Some(outcome.workbench_fuel), got["fuel"].as_u64(), "the tries' fuel is reported to the run");
    // One audit record for the try, naming its paths and tasks.
    let recs = tries(&s);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["paths"], serde_json::json!(["src/agent.py"]));
    assert_eq!(recs[0]["tasks"], serde_json::json!(ids));
    assert_eq!(recs[0]["built"], true);
    // The call's use record counts it.
    let uses = s.audit.query(&Filter::new().event(EventKind::Use)).unwrap();
    let wb = uses.iter().rev().find_map(|r| r.details["services"].get("workbench").cloned()).expect("workbench usage");
    assert_eq!((wb["tries"].as_u64(), wb["refused"].as_u64()), (Some(1), Some(0)));
    // The proposal is the child; the try itself left nothing behind.
    let child = std::fs::read_to_string(outcome.child_dir.join("src/agent.py")).unwrap();
    assert!(child.contains("\nMAGIC = 1\n"));
    intact(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_of_tries_ends_in_budget_exhausted_after_the_grants_tries() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _, got) = run(tmp.path(), "loop", true).await;
    assert_eq!(got["kind"], "budget-exhausted", "{got}");
    assert_eq!(got["tries"], 3);
    assert_eq!(
        got["message"],
        "all 3 tries of this improve call are used (workbench.tries); propose the best candidate"
    );
    assert_eq!(tries(&s).len(), 3);
    intact(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_that_never_terminates_ends_on_its_fuel_and_the_try_reports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _, got) = run(tmp.path(), "forever", true).await;
    assert_eq!(got["built"], true, "{got}");
    let o = &got["outcomes"][0];
    assert_eq!(o[1], false);
    assert!(o[2].as_str().unwrap().contains("out-of-fuel"), "{o}");
    assert!(got["fuel"].as_u64().unwrap() >= 1_000_000_000, "the candidate's own fuel limit: {got}");
    intact(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_out_task_id_is_denied_by_name_and_nothing_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _, got) = run(tmp.path(), "heldout", true).await;
    assert_eq!(got["kind"], "denied", "{got}");
    assert_eq!(
        got["message"],
        "`arith-h-0` is not a visible task of the suite `arith`; the workbench runs visible tasks only"
    );
    assert!(tries(&s).is_empty(), "nothing was built or run");
    intact(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_cannot_read_the_graders_code() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _, got) = run(tmp.path(), "grader", true).await;
    let line = got["outcomes"][0][2].as_str().unwrap().to_string();
    // The candidate runs with its own grant: no preopened directory.
    assert!(line.contains("answered") && line.contains("Error"), "{line}");
    let grader = std::fs::read_to_string(grader_path()).unwrap();
    assert!(grader.contains("const HELD_OUT"));
    assert!(!got.to_string().contains("HELD_OUT") && !got.to_string().contains("pub fn suite"), "{got}");
    intact(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_try_the_guard_refuses_reports_the_refusal_and_builds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _, got) = run(tmp.path(), "refused", true).await;
    assert_eq!(got["built"], false, "{got}");
    let error = got["error"].as_str().unwrap();
    assert!(error.contains("protected-manifest-section") && error.contains("variant.toml"), "{error}");
    intact(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_evolve_the_workbench_is_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _, got) = run(tmp.path(), "propose", false).await;
    assert_eq!(got["kind"], "unavailable", "{got}");
    assert!(got["message"].as_str().unwrap().contains("needs a suite"), "{got}");
    assert!(tries(&s).is_empty());
    intact(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_evolve_a_tried_candidate_enters_the_archive_only_if_proposed() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join(MANIFEST), MANIFEST_TEXT).unwrap();
    let agent = AGENT.replace("MODE = \"propose\"", "MODE = \"evolve\"").replace("@GRADER@", &grader_path());
    std::fs::write(dir.join("src/agent.py"), agent).unwrap();
    let run = tmp.path().join("run.toml");
    std::fs::write(
        &run,
        format!(
            "[run]\nname = \"wb\"\nsuite = \"arith\"\nseed = 3\ngenerations = 1\nchildren_per_generation = 1\ninitial = [\"{}\"]\n",
            dir.display()
        ),
    )
    .unwrap();
    let s = session(&tmp.path().join("home"));
    let summary = vivarium::evolve::evolve(&s, &run, &vivarium::evolve::EvolveOptions::default(), &|_| {})
        .await
        .unwrap_or_else(|e| panic!("evolve: {e}"));
    let archive = vivarium::archive::Archive::open(&summary.archive_dir).unwrap();
    let variants = archive.list(Some("wb")).unwrap();
    assert_eq!(variants.len(), 2, "the initial variant and its one proposed child");
    let child = variants.iter().find(|v| v.parent.is_some()).expect("a child");
    assert!(child.visible_score.unwrap() > summary.baseline, "the proposed candidate scores better");
    for v in &variants {
        for (entry, bytes) in archive.tree_contents(&v.tree_sha).unwrap() {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("\nGRADER = True\n"), "the tried, unproposed candidate is archived: {}", entry.path);
        }
    }
    let recs = tries(&s);
    assert_eq!(recs.len(), 1, "one try, one audit record");
    assert_eq!(recs[0]["tasks"], serde_json::json!(["arith-v-0", "arith-v-1"]));
    assert!(archive.integrity_check().unwrap().is_ok());
    intact(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fuel_of_tries_is_reported_even_when_the_proposal_is_refused() {
    warm().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = session(&tmp.path().join("home"));
    let dir = tmp.path().join("v");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join(MANIFEST), MANIFEST_TEXT).unwrap();
    let agent =
        AGENT.replace("MODE = \"propose\"", "MODE = \"tried-then-refused\"").replace("@GRADER@", &grader_path());
    std::fs::write(dir.join("src/agent.py"), agent).unwrap();
    let req = ImproveRequest {
        parent: dir,
        out: tmp.path().join("child"),
        bench: Some(Arc::new(vivarium::tasks::suite("arith").unwrap())),
        ..Default::default()
    };
    let e = improve(&s, &req).await.unwrap_err();
    assert!(e.to_string().contains("not found"), "the stale patch is refused: {e}");
    let recs = tries(&s);
    assert_eq!(recs.len(), 1);
    let tried = recs[0]["fuel"].as_u64().unwrap();
    assert!(tried > 0);
    // What `evolve` adds to the run's fuel: a meta-agent cannot run
    // candidates for free by proposing nothing acceptable.
    assert_eq!(req.workbench_spent.load(std::sync::atomic::Ordering::Relaxed), tried);
    intact(&s);
}
