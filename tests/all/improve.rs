//! Guarded self-modification: each hostile proposal is refused with the
//! named rule and nothing is written outside the child directory; an honest
//! one yields a child that builds and runs; an escalation waits for a
//! person.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vivarium::audit::EventKind;
use vivarium::home::Home;
use vivarium::improve::{improve, ImproveRequest};
use vivarium::variant::Session;
use vivarium::{Error, GuestFailureKind};
use vivarium_tests::*;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    parent: PathBuf,
    session: Session,
}

/// A copy of the proposer guest as the parent, and a session on a fresh home.
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let src = workspace_root().join("tests/guests/proposer");
    let parent = root.join("parent");
    std::fs::create_dir_all(parent.join("src")).unwrap();
    for f in ["Cargo.toml", "Cargo.lock", "variant.toml", "src/lib.rs"] {
        std::fs::copy(src.join(f), parent.join(f)).unwrap();
    }
    vivarium::improve::rebase_path_dependencies(&src, &parent).unwrap();
    let mut session = Session::open(Home::at(root.join("home"))).unwrap();
    // Sessions build sandboxed, into a directory no unsandboxed build uses.
    session.guest_target_dir = guest_target();
    Setup { _tmp: tmp, root, parent, session }
}

/// Every file under `dir` with its contents (skipping the home).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.file_name().is_some_and(|n| n == "home") {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

async fn attempt(s: &Setup, attack: &str) -> vivarium::Result<vivarium::improve::ImproveOutcome> {
    let req = ImproveRequest {
        parent: s.parent.clone(),
        out: s.root.join("child"),
        feedback: attack.into(),
        iterations_left: 1,
        ..ImproveRequest::default()
    };
    improve(&s.session, &req).await
}

/// Run `attack`, expect a guard refusal naming `rule` and `path`, and check
/// that nothing was written anywhere.
async fn assert_refused(attack: &str, rule: &str, path: &str) -> Setup {
    let s = setup();
    let before = snapshot(&s.root);
    match attempt(&s, attack).await {
        Err(Error::Refused { what, detail }) => {
            assert!(what.iter().any(|w| w == &format!("{rule}: {path}")), "{attack}: {what:?} / {detail}");
        }
        Err(e) => panic!("{attack}: expected a refusal, got {e}"),
        Ok(o) => panic!("{attack}: accepted {o:?}"),
    }
    assert_eq!(snapshot(&s.root), before, "{attack}: something was written");
    assert!(!s.root.join("child").exists());
    let verdicts = s.session.audit.query(&vivarium::audit::Filter::new().event(EventKind::Proposal)).unwrap();
    assert_eq!(verdicts.last().unwrap().details["verdict"], "refused", "{attack}: the verdict is audited");
    s
}

#[tokio::test]
async fn an_honest_proposal_yields_a_child_that_builds_and_runs() {
    let s = setup();
    let o = attempt(&s, "honest").await.expect("accepted");
    assert_eq!(o.edits, 1);
    let child = s.root.join("child");
    assert!(std::fs::read_to_string(child.join("src/lib.rs")).unwrap().contains("const GENERATION: u32 = 1;"));
    let opened = s.session.open_target(&child, None, &Default::default()).await.unwrap();
    assert_eq!(opened.loaded.sha256, o.child);
    let p = s.session.prepare(&opened).unwrap();
    let r = s.session.solve(&p, &task("x", ""), &Default::default()).await.unwrap();
    assert_eq!(ok_output(&r).output, "generation 1");
    let rec = s.session.audit.query(&vivarium::audit::Filter::new().event(EventKind::Proposal)).unwrap();
    let d = &rec.last().unwrap().details;
    assert_eq!(d["verdict"], "accepted");
    assert_eq!(d["proposal_digest"], o.proposal_digest.as_str());
    assert_eq!(d["child"], o.child.as_str());
    assert_eq!(d["parent"], o.parent.as_str());
}

#[tokio::test]
async fn a_parent_dir_path_is_refused() {
    assert_refused("parent-dir", "path-parent", "../x").await;
}

#[tokio::test]
async fn an_absolute_path_is_refused() {
    assert_refused("absolute", "path-absolute", "/tmp/vivarium-escape-x").await;
    assert!(!Path::new("/tmp/vivarium-escape-x").exists());
}

#[tokio::test]
async fn a_path_through_a_planted_symlink_is_refused() {
    let s = setup();
    std::os::unix::fs::symlink(s.root.join("home"), s.parent.join("link")).unwrap();
    let before = snapshot(&s.root);
    match attempt(&s, "through-symlink").await {
        Err(Error::Refused { what, .. }) => assert!(what.contains(&"path-symlink: link".to_string()), "{what:?}"),
        other => panic!("expected a refusal, got {:?}", other.map(|o| o.child)),
    }
    assert_eq!(snapshot(&s.root), before);
    assert!(!s.root.join("home/x").exists());
}

#[tokio::test]
async fn a_hundred_thousand_edits_are_refused() {
    assert_refused("many-edits", "too-many-edits", "src/f256.rs").await;
}

#[tokio::test]
async fn a_200_mb_edit_never_reaches_the_host() {
    let s = setup();
    let before = snapshot(&s.root);
    match attempt(&s, "huge-edit").await {
        Err(Error::Guest(f)) => {
            assert_eq!(f.kind, GuestFailureKind::MemoryLimit, "{f}");
            assert!(f.detail.contains("more than"), "{f}");
        }
        other => panic!("expected a memory-limit, got {:?}", other.map(|o| o.child)),
    }
    assert_eq!(snapshot(&s.root), before);
}

#[tokio::test]
async fn raising_capabilities_in_the_manifest_is_refused() {
    assert_refused("raise-capabilities", "protected-manifest-section", "variant.toml").await;
}

#[tokio::test]
async fn a_new_dependency_in_cargo_toml_is_refused() {
    assert_refused("new-dependency", "protected-file", "Cargo.toml").await;
}

#[tokio::test]
async fn a_new_build_rs_is_refused() {
    assert_refused("build-rs", "protected-file", "build.rs").await;
}

#[tokio::test]
async fn include_str_of_etc_passwd_fails_in_the_build_sandbox() {
    let s = setup();
    let before = snapshot(&s.root);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let secret_line = passwd.lines().next().unwrap().to_string();
    match attempt(&s, "include-passwd").await {
        Err(e @ Error::Refused { .. }) => {
            let text = e.to_string();
            assert!(text.contains("outside the build sandbox"), "{text}");
            assert!(text.contains("couldn't read `/etc/passwd`: Permission denied"), "the compiler's message: {text}");
            assert!(!text.contains(&secret_line), "no byte of the file in the error");
        }
        other => panic!("expected the build to fail, got {:?}", other.map(|o| o.child)),
    }
    assert_eq!(snapshot(&s.root), before, "the child was removed");
    let log = std::fs::read_to_string(s.root.join("home/audit/audit.jsonl")).unwrap();
    assert!(!log.contains(&secret_line), "no byte of the file in the audit log");
    let rec = s.session.audit.query(&vivarium::audit::Filter::new().event(EventKind::Proposal)).unwrap();
    assert_eq!(rec.last().unwrap().details["verdict"], "build-refused");
}

#[tokio::test]
async fn an_escalation_waits_for_a_person() {
    let s = setup();
    let o = attempt(&s, "escalate").await.expect("the child is written with its parent's capabilities");
    let id = o.escalation.clone().expect("a pending request");
    let child = s.root.join("child");
    assert!(!std::fs::read_to_string(child.join("variant.toml")).unwrap().contains("bytes"));
    assert!(!child.join("escalation.toml").exists());
    let store = vivarium::guard::EscalationStore::open(s.session.home.approvals_dir()).unwrap();
    let pending = store.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, id);
    assert!(pending[0].exceeding.iter().any(|l| l.contains("memory")), "{:?}", pending[0].exceeding);
    let esc = s.session.audit.query(&vivarium::audit::Filter::new().event(EventKind::Escalation)).unwrap();
    assert_eq!(esc[0].details["request"], id.as_str());

    let approved = vivarium::improve::approve(&store, &id, "tester").unwrap();
    assert_eq!(approved.status, vivarium::guard::Status::Approved);
    assert!(std::fs::read_to_string(child.join("variant.toml")).unwrap().contains("bytes = \"1MiB\""));
    // The child's grant now has the approved capability.
    let opened = s.session.open_target(&child, None, &Default::default()).await.unwrap();
    assert!(opened.resolution.grant.service_granted("memory"));
    assert_eq!(opened.loaded.sha256, o.child);
    let g = vivarium::audit::latest_grant(&s.session.audit, &o.child[..16]).unwrap();
    assert!(g.grant.service_granted("memory"), "{g:?}");
    assert!(vivarium::improve::approve(&store, &id, "tester").is_err(), "decided once");
}

/// The example policy of docs/capabilities.md: broader than the one the
/// request was made under.
const BROAD_POLICY: &str = "[ceilings]\nfuel = 50_000_000_000\nmemory = \"1GiB\"\nwall = \"5m\"\n\n\
[capabilities]\nllm = { models = [\"small\", \"large\"], tokens = 1_000_000 }\nmemory = { bytes = \"16MiB\" }\n\
archive = true\nenv_allow = [\"LANG\", \"HF_TOKEN\"]\nsockets_allow = [\"api.example.com:443\"]\n";

#[tokio::test]
async fn an_approval_grants_exactly_what_was_shown_whatever_policy_comes_later() {
    let s = setup();
    let narrow = s.root.join("narrow.toml");
    std::fs::write(
        &narrow,
        "[ceilings]\nfuel = 10_000_000_000\nmemory = \"512MiB\"\n\n[capabilities]\nmemory = { bytes = \"4MiB\" }\n",
    )
    .unwrap();
    let req = ImproveRequest {
        parent: s.parent.clone(),
        out: s.root.join("child"),
        policy: Some(narrow),
        feedback: "escalate-wide".into(),
        iterations_left: 1,
        ..ImproveRequest::default()
    };
    let o = improve(&s.session, &req).await.expect("the child waits for a person");
    let id = o.escalation.clone().expect("a pending request");
    let store = vivarium::guard::EscalationStore::open(s.session.home.approvals_dir()).unwrap();
    let shown = store.get(&id).unwrap();
    // What the policy refused is shown as refused, and not in the grant.
    for cap in ["llm", "env", "sockets"] {
        assert!(shown.denied.iter().any(|d| d.starts_with(cap)), "{cap} shown as denied: {:?}", shown.denied);
        assert!(!shown.requested_grant.summary_lines().iter().any(|l| l.starts_with(&format!("{cap}:"))));
    }
    assert_eq!(shown.requested_grant.limits.fuel, 10_000_000_000);
    assert!(shown.requested_grant.service_granted("memory"));

    vivarium::improve::approve(&store, &id, "tester").unwrap();
    let child = s.root.join("child");
    let broad = s.root.join("broad.toml");
    std::fs::write(&broad, BROAD_POLICY).unwrap();
    let opened = s.session.open_target(&child, Some(&broad), &Default::default()).await.unwrap();
    let g = &opened.resolution.grant;
    assert_eq!((g.llm.as_ref(), g.env.len(), g.sockets.len()), (None, 0, 0), "nothing that was not shown: {g:?}");
    assert_eq!(g.memory, shown.requested_grant.memory);
    assert_eq!(g.limits.fuel, 10_000_000_000, "not the raw 9e18");
    assert_eq!(g.limits.memory, shown.requested_grant.limits.memory, "not the raw 1TiB");
    assert_eq!(g.summary_lines(), shown.requested_grant.summary_lines(), "exactly what was shown");
    assert!(s.session.audit.verify().unwrap().ok);
}

#[tokio::test]
async fn a_child_over_the_policys_component_size_is_refused() {
    let s = setup();
    let policy = s.root.join("policy.toml");
    std::fs::write(&policy, "[build]\nmax_component = \"4KiB\"\n").unwrap();
    let before = snapshot(&s.root);
    let req = ImproveRequest {
        parent: s.parent.clone(),
        out: s.root.join("child"),
        policy: Some(policy),
        feedback: "honest".into(),
        iterations_left: 1,
        ..ImproveRequest::default()
    };
    match improve(&s.session, &req).await {
        Err(Error::Refused { what, detail }) => {
            assert_eq!(what, ["build.max_component"]);
            assert!(detail.contains("the policy allows at most 4KiB (build.max_component)"), "{detail}");
        }
        other => panic!("expected a size refusal, got {:?}", other.map(|o| o.child)),
    }
    assert_eq!(snapshot(&s.root), before, "the child was removed");
    let rec = s.session.audit.query(&vivarium::audit::Filter::new().event(EventKind::Proposal)).unwrap();
    assert_eq!(rec.last().unwrap().details["verdict"], "build-refused");
}
