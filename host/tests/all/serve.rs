//! `vivarium serve`: the real binary on 127.0.0.1:0, driven over HTTP
//! (reqwest, raw TCP for the flood) and in headless Chromium through
//! chromedriver's WebDriver protocol. Runs are real `vivarium evolve`
//! processes on the in-process-built `arith-wat` variant.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN: &str = "test-token-0123456789abcdef";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A `vivarium serve` process; killed when dropped.
struct Serve {
    child: Child,
    url: String,
    actor: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(home: &Path) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vivarium"))
            .args(["serve", "--listen", "127.0.0.1:0", "--json"])
            .env("VIVARIUM_HOME", home)
            .env("VIVARIUM_SERVE_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("vivarium serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert_eq!(v["status"], "listening");
        assert_eq!(v["token_source"], "env");
        assert!(v.get("token").is_none(), "a token the operator gave is not printed: {v}");
        Serve { child, url: v["url"].as_str().unwrap().to_string(), actor: v["actor"].as_str().unwrap().to_string() }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    let r = c.get(url).bearer_auth(TOKEN).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

/// A run file for `arith-wat`, one child per generation, with budgets
/// large enough never to stop it (the page shows them as bars).
fn run_toml(dir: &Path, name: &str, generations: u32) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[run]\nname = \"{name}\"\nsuite = \"arith\"\nseed = 5\ngenerations = {generations}\n\
             children_per_generation = 1\ninitial = [\"{}\"]\n\n[budget]\nwall = \"1h\"\nfuel = 500_000_000_000\n",
            root().join("variants/arith-wat").display()
        ),
    )
    .unwrap();
    path
}

/// `vivarium evolve` of a run file, in the background.
fn evolve(home: &Path, run: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vivarium"))
        .args(["evolve", run.to_str().unwrap(), "--json"])
        .env("VIVARIUM_HOME", home)
        // Guest builds share the workspace's sandboxed guest target: a
        // Rust child compiles its own crate only.
        .env("VIVARIUM_GUEST_TARGET_DIR", root().join("target/guests-sandboxed"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vivarium evolve starts")
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A pending escalation request in `home`: a copy of `arith-wat` as the
/// child, asking for the `memory` service its parent was not granted.
fn pending_escalation(home: &Path, tmp: &Path) -> (String, PathBuf) {
    use vivarium::caps::{resolve, Manifest, Overrides, Policy};
    use vivarium::guard::{Escalation, EscalationStore, NewRequest};
    let child = tmp.join("child");
    std::fs::create_dir_all(child.join("src")).unwrap();
    let src = root().join("variants/arith-wat");
    std::fs::copy(src.join("variant.toml"), child.join("variant.toml")).unwrap();
    std::fs::copy(src.join("src/agent.wat"), child.join("src/agent.wat")).unwrap();
    let manifest = Manifest::load(child.join("variant.toml")).unwrap();
    let policy = Policy::default();
    let parent_grant = resolve(&manifest, &policy, &Overrides::default()).grant;
    let esc = Escalation::parse(
        "reason = \"<img src=x onerror=alert(1)> a cache across tasks\"\n\n[capabilities]\nmemory = { bytes = \"1MiB\" }\n",
        "escalation.toml",
    )
    .unwrap();
    let wanted = resolve(&esc.child_manifest(&manifest), &policy, &Overrides::default());
    let store = EscalationStore::open(home.join("approvals")).unwrap();
    let req = store
        .create(&NewRequest {
            parent_variant: "ab".repeat(32),
            child_tree: child.clone(),
            proposal_digest: None,
            escalation: esc,
            parent_grant,
            requested_grant: wanted.grant,
            denied: wanted.denials.iter().map(ToString::to_string).collect(),
        })
        .unwrap();
    (req.id, child)
}

fn request_status(home: &Path, id: &str) -> String {
    vivarium::guard::EscalationStore::open(home.join("approvals")).unwrap().get(id).unwrap().status.to_string()
}

fn audit_records(home: &Path) -> Vec<Value> {
    std::fs::read_to_string(home.join("audit/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every request needs the token; actions need POST, the action header and
/// a same origin; the approval goes through `vivarium approve`'s library
/// function and is audited with who did it.
#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_required_and_actions_need_post_and_the_csrf_header() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let (id, child) = pending_escalation(&home, tmp.path());
    let s = Serve::start(&home);
    let c = client();
    let u = |p: &str| format!("{}{p}", s.url);

    // No token, a wrong token, a wrong cookie: 401, and the page is the login form.
    for path in ["/", "/api/runs", "/api/approvals", "/api/audit", "/api/events", "/app.js"] {
        let r = c.get(u(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        let r = c.get(u(path)).bearer_auth("test-token-0123456789abcdeX").send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong token");
        let r = c.get(u(path)).header("cookie", "vivarium_token=nope-nope-nope-nope").send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong cookie");
    }
    let login_page = c.get(u("/")).send().await.unwrap().text().await.unwrap();
    assert!(login_page.contains("access token is required"), "{login_page}");
    assert!(!login_page.contains(TOKEN));
    let r = c
        .post(u("/api/approvals/{id}/approve").replace("{id}", &id))
        .header("x-vivarium-action", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an action without a token");
    // Another host name (DNS rebinding): refused before the token is looked at.
    let r = c.get(u("/api/runs")).bearer_auth(TOKEN).header("host", "evil.example:80").send().await.unwrap();
    assert_eq!(r.status(), 421);

    // With the token: the page, with a CSP that allows no inline script.
    let r = c.get(u("/")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(r.text().await.unwrap().contains("Vivarium control room"));
    let approvals = get_json(&c, &u("/api/approvals")).await;
    assert_eq!(approvals["pending"][0]["id"], id.as_str());
    assert_eq!(
        approvals["pending"][0]["reason"], "<img src=x onerror=alert(1)> a cache across tasks",
        "JSON stays exact"
    );
    assert!(approvals["pending"][0]["grants_if_approved"].to_string().contains("memory"));

    // GET cannot act.
    for path in [format!("/api/approvals/{id}/approve"), format!("/api/approvals/{id}/deny"), "/api/stop-all".into()] {
        let r = c.get(u(&path)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 405, "GET {path}");
    }
    assert_eq!(request_status(&home, &id), "pending");

    // The cookie the page gets: HttpOnly, SameSite=Strict.
    let r = c.post(u("/api/session")).bearer_auth(TOKEN).header("x-vivarium-action", "1").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie_pair = cookie.split(';').next().unwrap().to_string();
    let r = c.get(u("/api/runs")).header("cookie", &cookie_pair).send().await.unwrap();
    assert_eq!(r.status(), 200, "the cookie authenticates");

    // A POST without the action header (what a cross-site form sends), or
    // from another origin: 403, nothing decided.
    let approve = u(&format!("/api/approvals/{id}/approve"));
    let r = c.post(&approve).header("cookie", &cookie_pair).send().await.unwrap();
    assert_eq!(r.status(), 403, "a POST without the action header");
    let r = c
        .post(&approve)
        .header("cookie", &cookie_pair)
        .header("x-vivarium-action", "1")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a POST from another origin");
    assert_eq!(request_status(&home, &id), "pending");
    assert!(!std::fs::read_to_string(child.join("variant.toml")).unwrap().contains("bytes"));

    // The approval itself: the child's manifest gets the grant, the audit
    // log says who.
    let r = c.post(&approve).bearer_auth(TOKEN).header("x-vivarium-action", "1").send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(request_status(&home, &id), "approved");
    let manifest = std::fs::read_to_string(child.join("variant.toml")).unwrap();
    assert!(manifest.contains("bytes = \"1MiB\""), "{manifest}");
    let rec = audit_records(&home).into_iter().rev().find(|r| r["event"] == "approval").expect("an approval record");
    assert_eq!(rec["details"]["request"], id.as_str());
    assert_eq!(rec["details"]["by"], s.actor.as_str());
    assert!(s.actor.starts_with("serve:") && !s.actor.contains(TOKEN));
    let r = c.post(&approve).bearer_auth(TOKEN).header("x-vivarium-action", "1").send().await.unwrap();
    assert_eq!(r.status(), 409, "decided once");

    // Nothing the API answers holds the token.
    for path in ["/api/runs", "/api/approvals", "/api/audit?limit=500"] {
        let body = c.get(u(path)).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
        assert!(!body.contains(TOKEN), "{path} shows the token");
    }
    assert!(vivarium::audit::AuditLog::open(&home.join("audit")).unwrap().verify().unwrap().ok);
}

/// A listen address outside loopback needs --allow-remote, and says so.
#[test]
fn a_non_loopback_address_needs_allow_remote() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vivarium"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("VIVARIUM_HOME", tmp.path())
        .env("VIVARIUM_SERVE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a loopback address") && err.contains("--allow-remote"), "{err}");
}

/// Stop asks a running evolve to end before its next step: it ends as
/// `stopped`, its summary names who asked, and the audit log has the request.
/// The event stream reports the lineage growing and the state change.
#[tokio::test(flavor = "multi_thread")]
async fn stop_ends_a_running_evolve_as_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let s = Serve::start(&home);
    let c = client();
    let u = |p: &str| format!("{}{p}", s.url);
    let mut events = c.get(u("/api/events")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");

    let mut run = evolve(&home, &run_toml(tmp.path(), "long", 100_000));
    wait_for("the run to have 3 variants", Duration::from_secs(120), || {
        let c = c.clone();
        let url = u("/api/runs/long");
        async move {
            match c.get(&url).bearer_auth(TOKEN).send().await {
                Ok(r) if r.status() == 200 => {
                    let v: Value = r.json().await.unwrap();
                    v["state"] == "running" && v["variants"].as_u64().unwrap_or(0) >= 3
                }
                _ => false,
            }
        }
    })
    .await;

    // Live: `variant` events of the run arrive on the stream.
    let mut seen = String::new();
    let until = Instant::now() + Duration::from_secs(30);
    while !(seen.contains("event: variant") && seen.contains("\"run\":\"long\"")) {
        assert!(Instant::now() < until, "no variant event in: {seen}");
        if let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(5), events.chunk()).await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(seen.starts_with("event: hello"), "{seen}");

    let summary = get_json(&c, &u("/api/runs/long")).await;
    let fuel = summary["budgets"].as_array().unwrap().iter().find(|b| b["name"] == "fuel").expect("the fuel budget");
    assert_eq!(fuel["limit"], 500_000_000_000u64);
    assert!(fuel["spent"].as_u64().is_some_and(|f| f > 0), "fuel spent is recorded: {fuel}");
    let lineage = get_json(&c, &u("/api/runs/long/lineage")).await;
    let variants = lineage["variants"].as_array().unwrap();
    let child = variants.iter().find(|v| !v["parent"].is_null()).expect("a child");
    let detail = get_json(&c, &u(&format!("/api/variants/{}", child["id"].as_str().unwrap()))).await;
    assert_eq!(detail["variant"]["parent"], child["parent"]);
    assert!(detail["grant"]["summary"].is_array(), "{}", detail["grant"]);
    assert!(detail["audit"].as_array().is_some_and(|a| !a.is_empty()), "the variant's audit records");

    let r = c.post(u("/api/runs/long/stop")).bearer_auth(TOKEN).header("x-vivarium-action", "1").send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(st) = run.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the run did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = run.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["stop"], json!({ "requested": s.actor }), "{summary}");

    wait_for("the run to show as stopped", Duration::from_secs(10), || {
        let c = c.clone();
        let url = u("/api/runs/long");
        async move {
            c.get(&url).bearer_auth(TOKEN).send().await.unwrap().json::<Value>().await.unwrap()["state"] == "stopped"
        }
    })
    .await;
    let rec = audit_records(&home).into_iter().find(|r| r["event"] == "stop-request").expect("a stop-request record");
    assert_eq!(rec["details"], json!({ "run": "long", "by": s.actor }));
    // The state change reached the stream.
    let until = Instant::now() + Duration::from_secs(10);
    while !seen.contains("\"state\":\"stopped\"") {
        assert!(Instant::now() < until, "no stopped run event");
        if let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(5), events.chunk()).await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    // A run that is not running cannot be stopped.
    let r = c.post(u("/api/runs/long/stop")).bearer_auth(TOKEN).header("x-vivarium-action", "1").send().await.unwrap();
    assert_eq!(r.status(), 409);
}

/// An escalation raised by a child *inside* `evolve` is approved from the
/// control room: the request names the child where the run keeps it
/// (`variants/<id>`, not the staging directory it was proposed in),
/// approving writes the grant into that child's manifest, and the child
/// then runs with the memory it asked for.
#[tokio::test(flavor = "multi_thread")]
async fn an_escalation_raised_inside_evolve_is_approved_and_the_child_runs_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    // The proposer guest, marked to ask for memory from inside a run.
    let src = root().join("tests/guests/proposer");
    let parent = tmp.path().join("proposer");
    std::fs::create_dir_all(parent.join("src")).unwrap();
    for f in ["Cargo.toml", "Cargo.lock", "variant.toml", "src/lib.rs"] {
        std::fs::copy(src.join(f), parent.join(f)).unwrap();
    }
    std::fs::write(parent.join("escalate-in-evolve"), "").unwrap();
    vivarium::improve::rebase_path_dependencies(&src, &parent).unwrap();
    let run = tmp.path().join("esc.toml");
    std::fs::write(
        &run,
        "[run]\nname = \"esc\"\nsuite = \"arith\"\ngenerations = 1\nchildren_per_generation = 1\ninitial = [\"proposer\"]\n",
    )
    .unwrap();
    let done = evolve(&home, &run).wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let summary: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(summary["variants"], 2, "the child is archived: {summary}");

    let s = Serve::start(&home);
    let c = client();
    let u = |p: &str| format!("{}{p}", s.url);
    // Progress counts the loop's steps: the initial variant and one child.
    let run = get_json(&c, &u("/api/runs/esc")).await;
    assert_eq!(run["steps"]["done"], 2, "{run}");
    assert_eq!(run["steps"]["total"], 2, "{run}");
    assert_eq!(run["steps"]["accepted"], 1, "{run}");
    assert_eq!(run["generation"]["done"], 1, "{run}");
    let lineage = get_json(&c, &u("/api/runs/esc/lineage")).await;
    let child =
        lineage["variants"].as_array().unwrap().iter().find(|v| !v["parent"].is_null()).expect("a child").clone();
    let child_id = child["id"].as_str().unwrap();
    let approvals = get_json(&c, &u("/api/approvals")).await;
    let pending = approvals["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{approvals}");
    let request = pending[0]["id"].as_str().unwrap().to_string();
    let child_tree = PathBuf::from(pending[0]["child_tree"].as_str().unwrap());
    assert_eq!(
        child_tree,
        Path::new(summary["run_dir"].as_str().unwrap()).join("variants").join(child_id),
        "the request follows its child out of staging"
    );
    assert!(!std::fs::read_to_string(child_tree.join("variant.toml")).unwrap().contains("bytes = \"1MiB\""));

    let r = c
        .post(u(&format!("/api/approvals/{request}/approve")))
        .bearer_auth(TOKEN)
        .header("x-vivarium-action", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(request_status(&home, &request), "approved");
    let manifest = std::fs::read_to_string(child_tree.join("variant.toml")).unwrap();
    assert!(manifest.contains("bytes = \"1MiB\""), "{manifest}");

    // The child proceeds: it runs from where the run keeps it, granted memory.
    let task = tmp.path().join("task.json");
    std::fs::write(&task, r#"{"id":"t","domain":"arith","instruction":"evaluate","input":"1+1"}"#).unwrap();
    let ran = Command::new(env!("CARGO_BIN_EXE_vivarium"))
        .args(["run", child_tree.to_str().unwrap(), "--task", task.to_str().unwrap(), "--json"])
        .env("VIVARIUM_HOME", &home)
        .env("VIVARIUM_GUEST_TARGET_DIR", root().join("target/guests-sandboxed"))
        .output()
        .unwrap();
    let out: Value =
        serde_json::from_slice(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&ran.stderr)));
    assert_eq!(out["status"], "ok", "{out}");
    assert_eq!(out["output"], "generation 1", "the approved child is the honest one: {out}");
    let grant = audit_records(&home).into_iter().rev().find(|r| r["event"] == "grant").expect("the run's grant record");
    assert!(grant["details"]["grant"]["memory"].is_object(), "memory is granted: {}", grant["details"]["grant"]);
    assert!(vivarium::audit::AuditLog::open(&home.join("audit")).unwrap().verify().unwrap().ok);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 1,000 connections at once — authenticated reads, refused requests and
/// idle connections that never send a byte — finish in bounded time; a
/// request made in the middle of the flood is answered promptly; the
/// server's memory stays bounded.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_1000_connections_leaves_the_server_responsive_with_bounded_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    // A finished run, so that reads read something.
    let done = evolve(&home, &run_toml(tmp.path(), "small", 3)).wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let s = Serve::start(&home);
    let c = client();
    get_json(&c, &format!("{}/api/runs", s.url)).await;
    let rss_before = rss_kib(s.pid());
    // Every thread of the server yields to the runs it watches (Linux keeps
    // the nice value per thread).
    let tasks = std::fs::read_dir(format!("/proc/{}/task", s.pid())).unwrap();
    let mut threads = 0;
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        assert_eq!(fields[16], "10", "thread {:?} runs at nice {}", t.file_name(), fields[16]);
        threads += 1;
    }
    assert!(threads > 1, "a multi-threaded server");
    let addr = s.url.trim_start_matches("http://").to_string();

    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
            let req = match i % 4 {
                0 | 1 => format!("GET /api/runs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
                2 => format!("GET /api/audit HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
                // Idle: connects and says nothing; the server's header
                // timeout closes it.
                _ => String::new(),
            };
            stream.write_all(req.as_bytes()).await.ok()?;
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut buf)).await;
            Some(String::from_utf8_lossy(&buf).lines().next().unwrap_or_default().to_string())
        }));
    }
    // In the middle of the flood, a person's request is answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = Instant::now();
    let r = c.get(format!("{}/api/runs", s.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let probe_time = probe.elapsed();
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap().as_deref() {
            Some(l) if l.starts_with("HTTP/1.1 200") => ok += 1,
            Some(l) if l.starts_with("HTTP/1.1 401") => refused += 1,
            _ => {}
        }
    }
    let flood_time = start.elapsed();
    let rss_after = rss_kib(s.pid());
    eprintln!(
        "flood: {ok} answered, {refused} refused in {flood_time:?}; probe {probe_time:?}; rss {rss_before} -> {rss_after} KiB"
    );
    assert_eq!(ok, 500, "every authenticated read answered");
    assert_eq!(refused, 250, "every unauthenticated one refused");
    assert!(flood_time < Duration::from_secs(45), "the flood took {flood_time:?}");
    assert!(probe_time < Duration::from_secs(10), "a request during the flood took {probe_time:?}");
    assert!(rss_after < rss_before + 128 * 1024, "memory grew from {rss_before} to {rss_after} KiB");
    // And after it, as before.
    let probe = Instant::now();
    get_json(&c, &format!("{}/api/runs", s.url)).await;
    assert!(probe.elapsed() < Duration::from_secs(2));
}

#[path = "serve/browser.rs"]
mod browser;
