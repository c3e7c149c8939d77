//! The run report (`vivarium report`), the archive commands (`vivarium
//! archive list|show|lineage`) and `vivarium export-git`, on an archive
//! built by hand through the archive API (no evolution run).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vivarium::archive::{Archive, NewVariant, Split, TaskResult, VariantId, VariantStatus};

const RUN: &str = "hand-run";
const HOSTILE: &str = "<script>alert('pwned')</script> & <img src=x onerror=alert(1)>";

/// (name, parent, generation, visible, held-out, status, summary)
type Spec = (&'static str, Option<&'static str>, u32, Option<f64>, Option<f64>, VariantStatus, &'static str);

const SPECS: &[Spec] = &[
    ("a", None, 0, Some(0.40), Some(0.38), VariantStatus::Evaluated, "baseline: greedy ring packing"),
    ("b", None, 0, Some(0.35), Some(0.34), VariantStatus::Evaluated, "baseline: grid packing"),
    ("c", Some("a"), 1, Some(0.50), Some(0.47), VariantStatus::Evaluated, "shrink radii until no overlap"),
    ("d", Some("a"), 1, Some(0.45), Some(0.44), VariantStatus::Evaluated, "two rings instead of one"),
    ("e", Some("b"), 1, None, None, VariantStatus::Failed, "rewrite in a hurry\n\ndid not build: missing semicolon"),
    ("f", Some("c"), 2, Some(0.62), Some(0.58), VariantStatus::Evaluated, "local search on centres, 200 steps"),
    ("g", Some("c"), 2, None, None, VariantStatus::Refused, HOSTILE),
    ("h", Some("d"), 2, Some(0.50), Some(0.49), VariantStatus::Evaluated, "hex lattice seed"),
    ("i", Some("f"), 3, Some(0.80), Some(0.55), VariantStatus::Evaluated, "special-case the visible n values"),
    ("j", Some("f"), 3, Some(0.66), Some(0.63), VariantStatus::Evaluated, "simulated annealing, slow cooling"),
    ("k", Some("h"), 3, Some(0.52), Some(0.50), VariantStatus::Evaluated, "jitter the lattice"),
    (
        "l",
        Some("i"),
        4,
        Some(0.85),
        Some(0.50),
        VariantStatus::Evaluated,
        "hard-code the best known layouts for the visible n",
    ),
    ("m", Some("j"), 4, Some(0.70), Some(0.68), VariantStatus::Evaluated, "annealing + final radius LP"),
    ("n", Some("j"), 4, None, None, VariantStatus::Pending, "annealing with restarts (evaluating)"),
];

struct Fixture {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    run_dir: PathBuf,
    ids: Vec<(&'static str, VariantId)>,
}

impl Fixture {
    fn id(&self, name: &str) -> &VariantId {
        &self.ids.iter().find(|(n, _)| *n == name).expect("known variant").1
    }
    fn archive(&self) -> Archive {
        Archive::open(&self.home.join("archive")).expect("archive opens")
    }
    fn tmp(&self) -> &Path {
        self._tmp.path()
    }
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let archive_dir = home.join("archive");
    let archive = Archive::open(&archive_dir).expect("archive opens");
    let config = json!({ "run": { "name": RUN, "suite": "circle-packing", "seed": 7 } });
    archive.begin_run(RUN, &config).expect("run begins");
    let mut ids: Vec<(&'static str, VariantId)> = Vec::new();
    for (k, &(name, parent, generation, visible, held, status, summary)) in SPECS.iter().enumerate() {
        let src = tmp.path().join("trees").join(name);
        std::fs::create_dir_all(src.join("src")).unwrap();
        std::fs::write(src.join("variant.toml"), "[variant]\nname = \"packer\"\nlanguage = \"rust\"\n").unwrap();
        std::fs::write(src.join("src/lib.rs"), format!("// variant {name}\npub fn radius() -> f64 {{ 0.{k} }}\n"))
            .unwrap();
        std::fs::write(src.join("src/notes with space.md"), format!("step {k}: {summary}\n")).unwrap();
        let tree_sha = archive.put_tree(&src).expect("tree stored");
        let component_sha = (status != VariantStatus::Refused && status != VariantStatus::Failed)
            .then(|| archive.put(format!("component of {name}").as_bytes()).expect("component stored"));
        let parent = parent.map(|p| ids.iter().find(|(n, _)| *n == p).unwrap().1.clone());
        let id = archive
            .add_variant(&NewVariant {
                run_id: RUN.into(),
                parent,
                generation,
                language: "rust".into(),
                component_sha,
                tree_sha,
                grant_digest: "grant-digest".into(),
                status: VariantStatus::Pending,
                summary: summary.into(),
            })
            .expect("variant added");
        let mut results = Vec::new();
        if let Some(v) = visible {
            for t in 0..3 {
                results.push(TaskResult {
                    task_id: format!("pack-n{}", 24 + t),
                    split: Split::Visible,
                    passed: true,
                    score: v,
                    note: String::new(),
                });
            }
        }
        if let Some(h) = held {
            results.push(TaskResult {
                task_id: "pack-n31".into(),
                split: Split::HeldOut,
                passed: h > 0.5,
                score: h,
                note: "held out".into(),
            });
        }
        archive.record_results(&id, &results, visible, held, status).expect("results recorded");
        ids.push((name, id));
    }
    let run_dir = home.join("runs").join(RUN);
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(
        run_dir.join("run.json"),
        serde_json::to_string_pretty(&json!({ "run_id": RUN, "archive": archive_dir, "config": config })).unwrap(),
    )
    .unwrap();
    Fixture { _tmp: tmp, home, run_dir, ids }
}

fn vivarium(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vivarium")).args(args).env("VIVARIUM_HOME", home).output().expect("vivarium runs")
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every element opened is closed in order (void elements and `/>` aside);
/// the raw text of `<script>` and `<style>` is skipped.
fn assert_balanced(html: &str) {
    const VOID: &[&str] = &["meta", "br", "hr", "img", "input", "link", "wbr"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start..];
        if rest.starts_with("<!") {
            rest = &rest[rest.find('>').expect("doctype closes") + 1..];
            continue;
        }
        let end = rest.find('>').unwrap_or_else(|| panic!("unclosed tag at {:?}", &rest[..rest.len().min(60)]));
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(open, name.trim(), "</{name}> closes <{open}>");
            continue;
        }
        let name: String = tag.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        assert!(!name.is_empty(), "bad tag <{tag}>");
        if tag.ends_with('/') || VOID.contains(&name.as_str()) {
            continue;
        }
        if name == "script" || name == "style" {
            let close = format!("</{name}>");
            let at = rest.find(&close).unwrap_or_else(|| panic!("<{name}> not closed"));
            rest = &rest[at + close.len()..];
            continue;
        }
        stack.push(name);
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
}

#[test]
fn render_draws_every_variant_and_escapes_summaries() {
    let fx = fixture();
    let archive = fx.archive();
    let html = vivarium::report::render(&archive, RUN).expect("renders");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_balanced(&html);

    // One SVG node per variant, each with its id.
    assert_eq!(html.matches("<g class=\"node").count(), SPECS.len());
    for (_, id) in &fx.ids {
        assert!(html.contains(&format!("id=\"node-{id}\"")), "node of {id}");
        assert!(html.contains(&format!("id=\"row-{id}\"")), "row of {id}");
    }
    // The best path: a → c → f → i → l, with l the best.
    let best = archive.best(RUN).unwrap().unwrap();
    assert_eq!(&best.id, fx.id("l"));
    let path = ["a", "c", "f", "i", "l"];
    assert_eq!(html.matches("<g class=\"node").count(), SPECS.len());
    for name in path {
        let id = fx.id(name);
        let tag_start = html.find(&format!("id=\"node-{id}\"")).unwrap();
        let tag = &html[html[..tag_start].rfind('<').unwrap()..tag_start];
        assert!(tag.contains("best-path"), "{name} is on the best path: {tag}");
    }
    assert_eq!(html.matches("class=\"edge best-path\"").count(), path.len() - 1);
    assert_eq!(html.matches("class=\"node status-evaluated best-path best\"").count(), 1);
    // Labels: id prefix and score.
    assert!(html.contains(&format!(">{}</text>", &fx.id("l").0[..8])));
    assert!(html.contains(">0.850</text>"));

    // The hostile summary is escaped everywhere it appears.
    assert!(!html.contains(HOSTILE));
    assert!(!html.contains("<script>alert"));
    assert!(!html.contains("<img"));
    assert!(
        html.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;")
    );
    assert_eq!(html.matches("<script").count(), 1, "only the report's own script");

    // Self-contained: nothing fetched from elsewhere.
    for needle in ["src=\"", "href=\"http", "url(http", "@import", "<link"] {
        assert!(!html.contains(needle), "external resource {needle:?}");
    }
    // The score chart with both series and the gap band; the gap of the best
    // (0.35, up from its root's 0.02) is flagged.
    assert!(html.contains("<svg id=\"score-chart\""));
    assert!(html.contains("class=\"line visible\""));
    assert!(html.contains("class=\"line held-out\""));
    assert!(html.contains("<polygon class=\"gap-band\""));
    assert!(html.contains("class=\"card gap warn\""));
    assert!(html.contains("final gap 0.3500"));
    assert!(html.contains(&format!("<tr id=\"row-{}\" class=\"status-evaluated best-path best gap-warn\"", fx.id("l"))));
    // Deterministic.
    assert_eq!(html, vivarium::report::render(&archive, RUN).unwrap());
    // An unknown run is invalid input.
    let err = vivarium::report::render(&archive, "nope").unwrap_err();
    assert_eq!(err.exit_code(), vivarium::ExitCode::Invalid);
}

#[test]
fn render_handles_an_empty_run() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = Archive::open(tmp.path()).unwrap();
    archive.begin_run("empty", &json!({})).unwrap();
    let html = vivarium::report::render(&archive, "empty").unwrap();
    assert_balanced(&html);
    assert!(html.contains("No variants archived"));
    assert_eq!(html.matches("<g class=\"node").count(), 0);
}

fn find_chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
        if let Ok(o) = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output() {
            if o.status.success() {
                let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if !p.is_empty() {
                    return Some(PathBuf::from(p));
                }
            }
        }
    }
    None
}

/// Run headless Chromium with `args`, killing it after `limit`.
fn chromium(bin: &Path, profile: &Path, args: &[String], limit: Duration) -> Option<Output> {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("chromium did not finish within {limit:?}");
                return None;
            }
        }
    }
}

#[test]
fn report_command_writes_a_file_that_chromium_renders() {
    let fx = fixture();
    let out_path = fx.tmp().join("out/report.html");
    let o = vivarium(&fx.home, &["report", fx.run_dir.to_str().unwrap(), "-o", out_path.to_str().unwrap()]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("report.html"));
    let html = std::fs::read_to_string(&out_path).expect("report written");
    assert_eq!(html, vivarium::report::render(&fx.archive(), RUN).unwrap());

    // --json, a bare run name, and the default output path.
    let o = vivarium(&fx.home, &["report", RUN, "--json"]);
    ok(&o);
    let v = json_of(&o);
    assert_eq!(v["run_id"], RUN);
    assert!(fx.run_dir.join("report.html").is_file());

    // Not a run directory: exit 2 with a reason.
    let o = vivarium(&fx.home, &["report", fx.tmp().to_str().unwrap(), "-o", "x.html"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("run.json"));

    let Some(bin) = find_chromium() else {
        println!("SKIPPED the browser check: no chromium on PATH (scripts/setup.sh installs it); the HTML was checked structurally");
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", out_path.display());
    let Some(dom) = chromium(&bin, profile.path(), &["--dump-dom".into(), url.clone()], Duration::from_secs(90)) else {
        println!("SKIPPED the browser check: chromium could not run");
        return;
    };
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    if !dom.status.success() || dom_text.trim().is_empty() {
        println!("SKIPPED the browser check: chromium failed: {}", String::from_utf8_lossy(&dom.stderr));
        return;
    }
    // The browser parsed every node and laid each one out (the report's
    // script counts nodes with a non-empty bounding box).
    for (_, id) in &fx.ids {
        assert!(dom_text.contains(&format!("id=\"node-{id}\"")), "DOM has node {id}");
    }
    assert!(
        dom_text.contains(&format!("data-rendered-nodes=\"{}\"", SPECS.len())),
        "all {} nodes rendered; DOM head: {}",
        SPECS.len(),
        &dom_text[..dom_text.len().min(300)]
    );
    // The hostile summary stayed text.
    assert!(!dom_text.contains("<img"));

    let shot = fx.tmp().join("report.png");
    let o = chromium(
        &bin,
        profile.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,1700".into(),
            "--hide-scrollbars".into(),
            url,
        ],
        Duration::from_secs(90),
    );
    assert!(o.is_some_and(|o| o.status.success()), "screenshot taken");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a real PNG ({} bytes)", png.len());
    if let Some(dest) = std::env::var_os("VIVARIUM_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, &dest).expect("screenshot copied");
        println!("screenshot written to {}", PathBuf::from(dest).display());
    }
}

#[test]
fn archive_commands_list_show_and_lineage() {
    let fx = fixture();
    let o = vivarium(&fx.home, &["archive", "list", "--json"]);
    ok(&o);
    let rows = json_of(&o);
    assert_eq!(rows.as_array().unwrap().len(), SPECS.len());
    assert_eq!(rows[0]["id"], fx.id("a").0);
    assert_eq!(rows[0]["children"], 2);

    let o = vivarium(&fx.home, &["archive", "list", "--run", RUN]);
    ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), SPECS.len() + 1, "header + one line per variant:\n{text}");
    assert!(text.contains(&fx.id("l").0[..12]));

    let o = vivarium(&fx.home, &["archive", "list", "--run", "nope"]);
    assert_eq!(o.status.code(), Some(2));

    // show, by a unique prefix.
    let l = fx.id("l");
    let o = vivarium(&fx.home, &["archive", "show", &l.0[..6], "--json"]);
    ok(&o);
    let v = json_of(&o);
    assert_eq!(v["variant"]["id"], l.0);
    assert_eq!(v["variant"]["visible_score"], 0.85);
    assert_eq!(v["results"].as_array().unwrap().len(), 4);
    assert_eq!(v["results"][3]["split"], "held-out");
    let lineage: Vec<&str> = v["lineage"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    let expected: Vec<&str> = ["a", "c", "f", "i", "l"].iter().map(|n| fx.id(n).0.as_str()).collect();
    assert_eq!(lineage, expected);
    assert!((v["held_out_gap"].as_f64().unwrap() - 0.35).abs() < 1e-9);
    assert_eq!(v["files"].as_array().unwrap().len(), 3);

    let o = vivarium(&fx.home, &["archive", "show", &l.0]);
    ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("held-out results (1/1 passed)") || text.contains("held-out results (0/1 passed)"), "{text}");
    assert!(text.contains("lineage (4 generations from the root)"), "{text}");

    // lineage, text and JSON.
    let o = vivarium(&fx.home, &["archive", "lineage", &l.0]);
    ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    let pos: Vec<usize> =
        expected.iter().map(|id| text.find(id).unwrap_or_else(|| panic!("{id} in\n{text}"))).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "root first:\n{text}");
    assert!(text.contains("(+0.0500)"), "score deltas:\n{text}");
    let o = vivarium(&fx.home, &["archive", "lineage", &l.0, "--json"]);
    ok(&o);
    assert_eq!(json_of(&o).as_array().unwrap().len(), 5);

    // Bad ids: exit 2.
    for bad in ["zz", "ffffffffffff", "0"] {
        let o = vivarium(&fx.home, &["archive", "show", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
    }
    let o = vivarium(&fx.home, &["archive", "runs", "--json"]);
    ok(&o);
    assert_eq!(json_of(&o)[0]["best"]["id"], l.0);

    // No archive: a clear exit-2 error, and nothing created.
    let empty = tempfile::tempdir().unwrap();
    for args in [&["archive", "list"][..], &["archive", "show", "abcd"], &["archive", "lineage", "abcd", "--json"]] {
        let o = vivarium(empty.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(said.contains("no archive at"), "{said}");
    }
    assert!(!empty.path().join("archive").exists());
}

fn git(repo: &Path, args: &[&str]) -> String {
    let o = Command::new("git").arg("-C").arg(repo).args(args).output().expect("git runs");
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn export_git_commits_follow_the_lineage() {
    let fx = fixture();
    let repo = fx.tmp().join("repo");
    let o = vivarium(&fx.home, &["export-git", fx.run_dir.to_str().unwrap(), repo.to_str().unwrap(), "--json"]);
    ok(&o);
    let s = json_of(&o);
    assert_eq!(s["commits"], SPECS.len());
    assert_eq!(s["initialised"], true);
    let branches: Vec<String> =
        s["branches"].as_array().unwrap().iter().map(|b| b["branch"].as_str().unwrap().to_string()).collect();
    // Leaves: e, g, k, l, m, n; plus best.
    let leaves = ["e", "g", "k", "l", "m", "n"];
    assert_eq!(branches.len(), leaves.len() + 1);
    for leaf in leaves {
        assert!(branches.contains(&format!("lineage/{}", fx.id(leaf))), "{leaf}");
    }

    // git log of a leaf branch: the lineage, leaf first.
    let l = fx.id("l");
    let log = git(&repo, &["log", "--format=%(trailers:key=Variant,valueonly)", &format!("lineage/{l}")]);
    let got: Vec<&str> = log.lines().filter(|s| !s.is_empty()).collect();
    let want: Vec<&str> = ["l", "i", "f", "c", "a"].iter().map(|n| fx.id(n).0.as_str()).collect();
    assert_eq!(got, want);
    let subjects = git(&repo, &["log", "--format=%s", "best"]);
    assert_eq!(subjects.lines().next(), Some("hard-code the best known layouts for the visible n"));
    let body = git(&repo, &["log", "-1", "--format=%B", &format!("variant/{}", fx.id("g"))]);
    assert!(body.contains(HOSTILE), "the summary is the message, verbatim: {body}");
    assert!(body.contains("Status: refused"));
    assert!(body.contains(&format!("Parent: {}", fx.id("c"))));
    let body = git(&repo, &["log", "-1", "--format=%B", "best"]);
    assert!(body.contains("Visible-Score: 0.85") && body.contains("Held-Out-Score: 0.5"), "{body}");
    // The root is a root commit; the diff along the lineage is the source change.
    assert_eq!(
        git(&repo, &["rev-list", "--max-parents=0", &format!("lineage/{l}")]).trim(),
        git(&repo, &["rev-parse", &format!("variant/{}", fx.id("a"))]).trim()
    );
    let diff = git(&repo, &["diff", &format!("variant/{}", fx.id("i")), "best", "--", "src/lib.rs"]);
    assert!(diff.contains("-// variant i") && diff.contains("+// variant l"), "{diff}");
    // The new repository has `best` checked out, files with spaces included.
    assert!(std::fs::read_to_string(repo.join("src/lib.rs")).unwrap().contains("variant l"));
    assert!(repo.join("src/notes with space.md").is_file());
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");

    // Deterministic: the same archive gives the same commits; re-exporting
    // into the same repository is fine.
    let again = fx.tmp().join("again");
    vivarium::export_git::export_run(&fx.run_dir, &again).expect("exports");
    assert_eq!(git(&repo, &["rev-parse", "best"]), git(&again, &["rev-parse", "best"]));
    let o = vivarium(&fx.home, &["export-git", fx.run_dir.to_str().unwrap(), repo.to_str().unwrap()]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("lineage/"));

    // A non-empty directory that is not a repository is refused.
    let junk = fx.tmp().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("keep.txt"), "mine").unwrap();
    let o = vivarium(&fx.home, &["export-git", fx.run_dir.to_str().unwrap(), junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a git repository"));
    assert!(!junk.join(".git").exists());
}
