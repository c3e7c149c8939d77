//! The control room in headless Chromium, clicked through chromedriver's
//! WebDriver protocol (plain HTTP + JSON, spoken with reqwest).
//! `scripts/setup.sh` installs `chromium` and `chromium-driver`; without
//! them this test says SKIPPED and checks nothing.
//!
//! `VIVARIUM_SCREENSHOT=<path.png>` saves a screenshot of the live page
//! (README's is made so).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{evolve, pending_escalation, request_status, run_toml, Serve, TOKEN};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    process: Child,
    base: String,
    session: String,
    client: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn which(name: &str) -> Option<String> {
    let o = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().ok()?;
    let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && !p.is_empty()).then_some(p)
}

impl Driver {
    /// chromedriver with a headless Chromium session, or `None` when either
    /// is not installed.
    async fn start(profile: &Path) -> Option<Driver> {
        let driver = which("chromedriver")?;
        let chromium = which("chromium").or_else(|| which("chromium-browser"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let process = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let start = Instant::now();
        while client.get(format!("{base}/status")).send().await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--no-first-run", "--window-size=1400,1000",
                     format!("--user-data-dir={}", profile.display())],
        }}}});
        let r: Value = client.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_string();
        Some(Driver { process, base, session, client })
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.client.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"].get("error").is_some() {
            panic!("webdriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// Run `script` (a function body that returns) in the page.
    async fn js(&self, script: &str) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": [] }))).await
    }

    /// Click the element `css` selects, as a person would. The page is
    /// live (a list re-rendered between finding and clicking leaves a
    /// stale element), so a stale element is found again, a few times.
    async fn click(&self, css: &str) {
        for _ in 0..10 {
            let e = self
                .cmd(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css })))
                .await;
            let id = e[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {e}")).to_string();
            let url = format!("{}/session/{}/element/{id}/click", self.base, self.session);
            let v: Value = self.client.post(url).json(&json!({})).send().await.unwrap().json().await.unwrap();
            match v["value"]["error"].as_str() {
                None => return,
                Some("stale element reference") => tokio::time::sleep(Duration::from_millis(50)).await,
                Some(_) => panic!("webdriver click on {css}: {}", v["value"]),
            }
        }
        panic!("{css} went stale ten times");
    }

    async fn wait(&self, what: &str, limit: Duration, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script).await;
            if v.as_bool() != Some(false) && !v.is_null() {
                return v;
            }
            if start.elapsed() >= limit {
                let page = self.js("return location.href + ' | ' + document.title + ' | ' + document.body.innerText.slice(0, 2000)").await;
                panic!("waited {limit:?} in the browser for {what}; the page: {page}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self) -> Vec<u8> {
        base64(self.cmd(reqwest::Method::GET, "/screenshot", None).await.as_str().unwrap())
    }
}

fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &c)| n | (u32::from(val(c)) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Open the page without the token (refused), then with it: a running
/// run's lineage grows live, a pending escalation is approved by a click
/// and leaves the list (the child's manifest gets the grant), and the stop
/// button ends the run as `stopped`.
#[tokio::test(flavor = "multi_thread")]
async fn the_control_room_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("profile");
    let Some(d) = Driver::start(&profile).await else {
        println!("SKIPPED the browser test: no chromium and chromedriver on PATH (scripts/setup.sh installs them)");
        return;
    };
    let home = tmp.path().join("home");
    let (request, child) = pending_escalation(&home, tmp.path());
    let s = Serve::start(&home);

    // Without the token: the login form, and the API refuses the page.
    d.goto(&s.url).await;
    let title = d.js("return document.title").await;
    assert!(title.as_str().unwrap().contains("access token required"), "{title}");
    assert_eq!(d.js("return document.getElementById('runs') === null").await, json!(true));
    let status =
        d.js("const r = new XMLHttpRequest(); r.open('GET', '/api/runs', false); r.send(); return r.status").await;
    assert_eq!(status, json!(401));

    // With the token (the link `vivarium serve` prints): the control room.
    d.goto(&format!("{}/#token={TOKEN}", s.url)).await;
    d.wait(
        "the live stream",
        Duration::from_secs(20),
        "return document.getElementById('live')?.textContent === '● live'",
    )
    .await;
    assert_eq!(d.js("return location.hash").await, json!(""), "the token left the address bar");
    assert_eq!(d.js("return document.getElementById('runs-empty').hidden").await, json!(false), "no run yet");
    // The run starts while the page is open: it appears, and its lineage
    // grows, with no reload (the event stream brings it).
    d.js("window.loadedOnce = true; return true").await;
    let mut run = evolve(&home, &run_toml(tmp.path(), "overnight", 100_000));
    d.wait(
        "the run in the runs list",
        Duration::from_secs(120),
        "return document.querySelector('tr[data-run=\"overnight\"]') !== null",
    )
    .await;
    d.click("tr[data-run=\"overnight\"]").await;
    d.wait("a lineage", Duration::from_secs(60), "return document.querySelectorAll('#lineage .node').length >= 1")
        .await;
    d.wait(
        "the lineage to grow",
        Duration::from_secs(60),
        "return document.querySelectorAll('#lineage .node').length >= 4",
    )
    .await;
    assert_eq!(d.js("return window.loadedOnce === true").await, json!(true), "the page was not reloaded");
    d.wait(
        "the budget bars",
        Duration::from_secs(20),
        "return document.querySelector('.budget[data-budget=\"fuel\"] .label')?.textContent.includes('of 500.0G fuel')",
    )
    .await;
    // A variant's panel: its diff and grant.
    d.click("#lineage .node:nth-of-type(2)").await;
    d.wait("the variant panel", Duration::from_secs(20), "return !document.getElementById('variant-panel').hidden && document.querySelectorAll('#variant-grant li').length > 0").await;

    // The escalation: its reason is shown as text, not markup.
    let sel = format!("li.request[data-request=\"{request}\"]");
    d.wait("the pending request", Duration::from_secs(20), &format!("return document.querySelector('{sel}') !== null"))
        .await;
    let reason = d.js(&format!("return document.querySelector('{sel} blockquote').textContent")).await;
    assert_eq!(reason, json!("<img src=x onerror=alert(1)> a cache across tasks"));
    assert_eq!(d.js("return document.querySelectorAll('img').length").await, json!(0), "guest text is never markup");
    if let Ok(path) = std::env::var("VIVARIUM_SCREENSHOT") {
        std::fs::write(&path, d.screenshot().await).unwrap();
    }
    d.click(&format!("button.approve[data-request=\"{request}\"]")).await;
    d.wait(
        "the request to leave the list",
        Duration::from_secs(20),
        &format!("return document.querySelector('{sel}') === null"),
    )
    .await;
    assert_eq!(request_status(&home, &request), "approved");
    assert!(std::fs::read_to_string(child.join("variant.toml")).unwrap().contains("bytes = \"1MiB\""));

    // Stop: the run ends as stopped, and the page shows it.
    d.click("button.stop[data-run=\"overnight\"]").await;
    d.wait(
        "the run to show as stopped",
        Duration::from_secs(60),
        "return document.querySelector('tr[data-run=\"overnight\"] .state')?.dataset.state === 'stopped'",
    )
    .await;
    let start = Instant::now();
    while run.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "the evolve process did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run.wait_with_output().unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["stop"]["requested"], s.actor.as_str());
    let _ = d.cmd(reqwest::Method::DELETE, "", None).await;
}
