//! The `llm` service end to end: `vivarium evolve` on `variants/arith-llm`, whose
//! meta-agent asks the host's LLM for a rewrite of its own source. The LLM
//! is a local server speaking the OpenAI chat-completions protocol on a real
//! loopback socket; it answers every request with a fixed rewrite. The run's
//! token budget is spent by the first rewrite and ends the run cleanly; the
//! key reaches the server and nothing else; `vivarium --replay evolve`
//! reproduces the run from the response cache with the server gone. Priced,
//! the same run stops cleanly at its dollar budget (`budget.usd`), and its
//! dollars survive a kill -9 in the middle of a request and a resume.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use vivarium::archive::Archive;

const KEY_VAR: &str = "VIVARIUM_LLM_EVOLVE_TEST_KEY";
const KEY: &str = "sk-llm-evolve-7e5t-k3y-9876543210";

pub(super) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The rewrite the "model" proposes: the variant's own source with `/` and
/// `%` learned at once.
fn rewrite() -> String {
    let src = std::fs::read_to_string(root().join("variants/arith-llm/src/lib.rs")).unwrap();
    let new = src
        .replace("const OPERATORS: &str = \"+-*\";", "const OPERATORS: &str = \"+-*/%\";")
        .replace("const GENERATION: u32 = 0;", "const GENERATION: u32 = 1;");
    assert_ne!(new, src, "the variant's source changed shape; update this test");
    format!("Here is the improved file.\n\n```rust\n{new}```\n")
}

/// Chat completions on a loopback port: each request is recorded (head and
/// body) and answered with `content` and fixed usage (4000 prompt + 3000
/// completion tokens), until the test ends. While `hold` names a request
/// (1-based), that one is read and recorded but never answered: the
/// connection stays open, as a slow provider's would.
struct Server {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
    hold: Arc<Mutex<Option<usize>>>,
}

impl Server {
    fn start(content: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(Mutex::new(None));
        let (log, held) = (seen.clone(), hold.clone());
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let req = read_request(&mut conn);
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(req);
                    log.len()
                };
                if *held.lock().unwrap() == Some(n) {
                    kept.push(conn);
                    continue;
                }
                let body = serde_json::json!({
                    "id": "chatcmpl-evolve", "object": "chat.completion", "created": 1, "model": "small-served",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 4000, "completion_tokens": 3000, "total_tokens": 7000}
                })
                .to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { url, seen, hold }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// One HTTP request, head and body.
fn read_request(conn: &mut std::net::TcpStream) -> String {
    let mut req = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = conn.read(&mut buf).unwrap_or(0);
        req.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&req);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if req.len() >= end + 4 + len || n == 0 {
                break;
            }
        } else if n == 0 {
            break;
        }
    }
    String::from_utf8_lossy(&req).into_owned()
}

fn vivarium(home: &Path, llm_config: &Path) -> Command {
    vivarium_keyed(home, llm_config, (KEY_VAR, KEY))
}

/// `vivarium` in `home` with `llm_config` and the provider key `key` in the
/// host's environment, never in a variant's. One guest target for every
/// home: the Python interpreter component is built once, so runs in
/// different homes have the same component sha256.
pub(super) fn vivarium_keyed(home: &Path, llm_config: &Path, key: (&str, &str)) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vivarium"));
    c.env("VIVARIUM_HOME", home)
        .env("VIVARIUM_GUEST_TARGET_DIR", root().join("target/guests-sandboxed"))
        .env("VIVARIUM_LLM_CONFIG", llm_config)
        .env(key.0, key.1)
        .env_remove("VIVARIUM_LLM_REPLAY")
        .stdin(Stdio::null());
    c
}

type Row = (String, Option<String>, u32, Option<f64>, String);

fn fingerprint(home: &Path) -> Vec<Row> {
    fingerprint_of(home, "llm-evolve")
}

/// No file under `dir` holds `key`'s bytes.
pub(super) fn assert_no_key_in(dir: &Path, key: &str) {
    for f in files(dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "key in {}", f.display());
    }
}

/// `vivarium --json --replay evolve RUN` in the fresh home `replayed`,
/// holding only `live`'s response cache (`command` makes the `vivarium`
/// command for a home): the run's JSON summary.
pub(super) fn replay_with_cache_of(
    live: &Path,
    replayed: &Path,
    run: &Path,
    command: impl Fn(&Path) -> Command,
) -> serde_json::Value {
    std::fs::create_dir_all(replayed).unwrap();
    let status = Command::new("cp").arg("-r").arg(live.join("llm-cache")).arg(replayed).status().unwrap();
    assert!(status.success());
    let out = command(replayed).args(["--json", "--replay", "evolve"]).arg(run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file under `dir`, for the key search.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn an_llm_rewrite_spends_the_run_budget_and_replays_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(rewrite());
    let url = &server.url;
    let llm_config = tmp.path().join("llm.toml");
    std::fs::write(
        &llm_config,
        format!("base_url = \"{url}\"\napi_key_env = \"{KEY_VAR}\"\ntimeout = \"60s\"\nretries = 0\n"),
    )
    .unwrap();
    let run = tmp.path().join("run.toml");
    std::fs::write(
        &run,
        format!(
            "[run]\nname = \"llm-evolve\"\nsuite = \"arith\"\nseed = 3\ngenerations = 3\nchildren_per_generation = 1\n\
             selection = \"greedy\"\ninitial = [\"{}\"]\npolicy = \"{}\"\n[budget]\ntokens = 7000\n",
            root().join("variants/arith-llm").display(),
            root().join("examples/llm/policy.toml").display()
        ),
    )
    .unwrap();

    let live = tmp.path().join("live");
    let out = vivarium(&live, &llm_config).args(["--json", "evolve"]).arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // The first rewrite spent the whole budget: the run ended cleanly after
    // generation 1, with a summary saying why.
    assert_eq!(summary["stop"]["budget"], "llm tokens 7000 of 7000", "{summary}");
    assert_eq!(summary["llm_tokens"], 7000);
    let rows = fingerprint(&live);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (baseline, child) = (&rows[0], &rows[1]);
    assert_eq!(child.1.as_deref(), Some(baseline.0.as_str()));
    assert!(child.4.starts_with("arith-llm: LLM rewrite by small-served (7000 tokens)"), "{}", child.4);
    assert!(child.3.unwrap() > baseline.3.unwrap(), "the rewrite learned / and %: {rows:?}");

    // One request, carrying the key; the key is nowhere in the home.
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].to_ascii_lowercase().contains(&format!("authorization: bearer {}", KEY.to_ascii_lowercase())));
    assert!(requests[0].contains("operator '/' is not supported"), "the prompt carries the visible failures");
    assert_no_key_in(&live, KEY);

    // Replay: a fresh home with the response cache only; the server is not asked.
    let replayed = tmp.path().join("replayed");
    let again = replay_with_cache_of(&live, &replayed, &run, |home| vivarium(home, &llm_config));
    assert_eq!(again["stop"], summary["stop"]);
    assert_eq!(fingerprint(&replayed), rows, "the replayed run is the recorded one");
    assert_eq!(server.requests().len(), 1, "replay never connects");
}

/// An `llm.toml` for `url` pricing `small` at $10 per million prompt tokens
/// and $20 per million completion tokens: each answer (4000 + 3000 tokens)
/// costs $0.10; each request's worst case is its estimated prompt plus
/// arith-llm's 3000 `max-tokens` ($0.06) at those prices.
fn priced_config(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("llm.toml");
    std::fs::write(
        &path,
        format!(
            "base_url = \"{url}\"\napi_key_env = \"{KEY_VAR}\"\ntimeout = \"60s\"\nretries = 0\n\
             [prices.small]\nprompt = 10\ncompletion = 20\n"
        ),
    )
    .unwrap();
    path
}

/// A run of arith-llm named `name` with `budget.usd = usd`.
fn dollar_run(dir: &Path, name: &str, generations: u32, usd: f64) -> PathBuf {
    let run = dir.join(format!("{name}.toml"));
    std::fs::write(
        &run,
        format!(
            "[run]\nname = \"{name}\"\nsuite = \"arith\"\nseed = 3\ngenerations = {generations}\nchildren_per_generation = 1\n\
             selection = \"greedy\"\ninitial = [\"{}\"]\npolicy = \"{}\"\n[budget]\nusd = {usd}\n",
            root().join("variants/arith-llm").display(),
            root().join("examples/llm/policy.toml").display()
        ),
    )
    .unwrap();
    run
}

/// Dollars the home's ledger holds for `run`, in nano-dollars.
fn ledger_nanos(home: &Path, run: &str) -> u64 {
    let ledger = vivarium::ledger::Ledger::for_home(&vivarium::home::Home::at(home));
    ledger.spent_in_run(run, vivarium::ledger::Resource::Usd).unwrap()
}

const TEN_CENTS: u64 = 100_000_000;

#[test]
fn a_run_stops_cleanly_at_its_dollar_budget_and_a_resume_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(rewrite());
    let config = priced_config(tmp.path(), &server.url);
    let run = dollar_run(tmp.path(), "dollars", 4, 0.15);
    let home = tmp.path().join("home");

    let out = vivarium(&home, &config).args(["--json", "evolve"]).arg(&run).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "a budget stop is a clean end: {}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Generation 1 spent $0.10; generation 2's request could cost more than
    // the $0.05 left, so it was refused before it was sent (the variant fell
    // back to its offline strategy); the run stopped before generation 3.
    assert_eq!(server.requests().len(), 1, "{summary}");
    let why = summary["stop"]["budget"].as_str().unwrap_or_default().to_string();
    assert!(why.starts_with("llm dollars $0.10 of $0.15: a request's worst case of $0.0"), "{summary}");
    assert!(why.ends_with(" did not fit in what was left"), "{why}");
    assert_eq!(summary["usd"], 0.1);
    let baseline = &fingerprint_of(&home, "dollars")[0];
    assert_eq!(summary["usd_by_variant"], serde_json::json!([{ "variant": baseline.0, "usd": 0.1 }]), "{summary}");
    // The baseline and the rewrite; generation 2's offline fallback had
    // nothing left to learn (the rewrite learned every operator).
    let rows = fingerprint_of(&home, "dollars");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(ledger_nanos(&home, "dollars"), TEN_CENTS);

    // A resume stops at once, saying why, and sends nothing.
    let out = vivarium(&home, &config).args(["evolve", "--resume"]).arg(&run).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("stopped: budget reached ({why})")), "{text}");
    assert!(text.contains("llm dollars              $0.10\n"), "{text}");
    assert!(text.contains(&format!("    {:<22} $0.10\n", baseline.0)), "{text}");
    assert_eq!(server.requests().len(), 1);
    assert_eq!(fingerprint_of(&home, "dollars"), rows);

    // The report shows the run's dollars and each variant's.
    let html = tmp.path().join("report.html");
    let out =
        vivarium(&home, &config).arg("report").arg(home.join("runs/dollars")).arg("-o").arg(&html).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&html).unwrap();
    assert!(html.contains("<dt>LLM dollars</dt><dd>$0.10</dd>"), "the run's dollars");
    let row = html.split(&format!("<tr id=\"row-{}\"", rows[0].0)).nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(row.contains("<td class=\"num\">$0.10</td>"), "the baseline's dollars: {row}");
    let row = html.split(&format!("<tr id=\"row-{}\"", rows[1].0)).nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(row.contains("<td class=\"num\">$0.00</td>"), "the child spent nothing: {row}");
}

#[test]
fn the_dollar_ledger_survives_a_kill_mid_request_and_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(rewrite());
    let config = priced_config(tmp.path(), &server.url);
    let budget = 0.35;
    let run = dollar_run(tmp.path(), "killed", 5, budget);
    let home = tmp.path().join("home");

    // The second request is never answered; the run is killed while it waits.
    *server.hold.lock().unwrap() = Some(2);
    let mut child = vivarium(&home, &config)
        .args(["--json", "evolve"])
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    while server.requests().len() < 2 {
        assert!(waited.elapsed().as_secs() < 300, "the run never sent its second request");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its second request");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    *server.hold.lock().unwrap() = None;

    // The first answer is settled at $0.10; the request in flight stays
    // reserved at its worst case, at least its 3000 max tokens' $0.06.
    let before = ledger_nanos(&home, "killed");
    let in_flight = before - TEN_CENTS;
    assert!((60_000_000..TEN_CENTS).contains(&in_flight), "{before}");

    let out = vivarium(&home, &config).args(["--json", "evolve", "--resume"]).arg(&run).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The resume redid generation 2 (one more answer, $0.10), then the next
    // worst case did not fit: spent before + after = the total, within the budget.
    assert_eq!(server.requests().len(), 3, "{summary}");
    let total = ledger_nanos(&home, "killed");
    assert_eq!(total, before + TEN_CENTS);
    assert!(total <= (budget * 1e9) as u64, "{total}");
    assert_eq!(summary["usd"], total as f64 / 1e9);
    assert!(summary["stop"]["budget"].as_str().unwrap_or_default().starts_with("llm dollars"), "{summary}");
}

fn fingerprint_of(home: &Path, run: &str) -> Vec<Row> {
    let a = Archive::open(&home.join("archive")).unwrap();
    a.list(Some(run))
        .unwrap()
        .into_iter()
        .map(|v| (v.id.0, v.parent.map(|p| p.0), v.generation, v.visible_score, v.summary))
        .collect()
}
