//! `vivarium evolve examples/coder/run.toml`: `variants/coder`, a tool-using
//! coding agent, evolving on HumanEval against the scripted server
//! (`tools/scripted-llm/server.py` replaying `examples/coder/script.json`
//! over a loopback socket). The meta-agent's tool loop reads its task
//! agent's system prompt, rewrites it (a search/replace edit, tried on the
//! workbench at once) and finishes; the child scores higher. The key reaches the
//! server and nothing else; `--replay` reproduces the run with the server
//! gone.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vivarium::archive::Archive;

use super::llm_evolve::{assert_no_key_in, replay_with_cache_of, root, vivarium_keyed};

const KEY_VAR: &str = "VIVARIUM_CODER_TEST_KEY";
const KEY: &str = "sk-coder-7e5t-k3y-0f-the-h0st-4242";

/// The scripted server on a free port; it exits when `stdin` closes.
struct Scripted {
    child: Child,
    url: String,
    record: PathBuf,
}

impl Scripted {
    fn start(dir: &Path) -> Self {
        let port_file = dir.join("port");
        let record = dir.join("requests.jsonl");
        let mut child = Command::new("python3")
            .arg(root().join("tools/scripted-llm/server.py"))
            .arg("--script")
            .arg(root().join("examples/coder/script.json"))
            .args(["--port", "0", "--api-key-env", KEY_VAR, "--exit-on-stdin-close", "--port-file"])
            .arg(&port_file)
            .arg("--record")
            .arg(&record)
            .env(KEY_VAR, KEY)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 tools/scripted-llm/server.py");
        let started = Instant::now();
        let port: u16 = loop {
            if let Some(p) = std::fs::read_to_string(&port_file).ok().and_then(|t| t.trim().parse().ok()) {
                break p;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the scripted server did not start");
            assert!(child.try_wait().unwrap().is_none(), "the scripted server exited");
            std::thread::sleep(Duration::from_millis(50));
        };
        Self { child, url: format!("http://127.0.0.1:{port}/v1"), record }
    }

    /// An `llm.toml` in `dir` pointing at it with the key's variable, the
    /// model `coder` mapped to `scripted`, and `extra` appended.
    fn llm_toml(&self, dir: &Path, extra: &str) -> PathBuf {
        let path = dir.join("llm.toml");
        let text = format!(
            "base_url = \"{}\"\napi_key_env = \"{KEY_VAR}\"\ntimeout = \"30s\"\nretries = 0\n[models]\ncoder = \"scripted\"\n{extra}",
            self.url
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Close its stdin and wait for it to exit.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        self.child.wait().unwrap();
    }

    /// The request bodies it received, with whether each carried the key.
    fn requests(&self) -> Vec<(bool, serde_json::Value)> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["auth_ok"].as_bool().unwrap(), v["body"].clone())
            })
            .collect()
    }
}

fn vivarium(home: &Path, llm_config: &Path) -> Command {
    vivarium_keyed(home, llm_config, (KEY_VAR, KEY))
}

type Row = (String, Option<String>, u32, Option<f64>, Option<f64>, String);

fn fingerprint(home: &Path) -> Vec<Row> {
    let a = Archive::open(&home.join("archive")).unwrap();
    a.list(Some("coder"))
        .unwrap()
        .into_iter()
        .map(|v| (v.id.0, v.parent.map(|p| p.0), v.generation, v.visible_score, v.held_out_score, v.summary))
        .collect()
}

fn audit(home: &Path) -> Vec<serde_json::Value> {
    let mut text = String::new();
    std::fs::File::open(home.join("audit/audit.jsonl")).unwrap().read_to_string(&mut text).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn the_coder_improves_itself_through_patches_and_workbench_tries_and_replays_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Scripted::start(tmp.path());
    let llm_config = server.llm_toml(tmp.path(), "");
    let run = root().join("examples/coder/run.toml");

    let live = tmp.path().join("live");
    let out = vivarium(&live, &llm_config).args(["--json", "evolve"]).arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // The child beats its parent on the visible split (and, the scripted
    // model being honest, on the held-out one).
    let rows = fingerprint(&live);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (parent, child) = (&rows[0], &rows[1]);
    assert_eq!(child.1.as_deref(), Some(parent.0.as_str()));
    assert!(child.3.unwrap() > parent.3.unwrap(), "{rows:?}");
    assert_eq!(summary["best"]["id"], child.0.as_str(), "{summary}");
    assert!(child.5.contains("check the docstring examples"), "{}", child.5);

    // The child came through patch edits and at least one workbench try.
    let records = audit(&live);
    let proposal = records
        .iter()
        .find(|r| r["event"] == "proposal" && r["details"]["verdict"] == "accepted")
        .expect("an accepted proposal record");
    let kinds = &proposal["details"]["edit_kinds"];
    assert!(kinds["search-replace"].as_u64().unwrap() >= 1, "{proposal}");
    assert!(kinds.get("write").is_none(), "no whole-file write: {proposal}");

    // Every request carried the key; the key is in no file of the home and
    // in no request body (what the guest sent is what it could see).
    let requests = server.requests();
    assert!(requests.len() > 100, "{} requests", requests.len());
    assert!(requests.iter().all(|(auth, _)| *auth));
    assert!(requests.iter().any(|(_, b)| b["tools"].is_array()), "the meta-agent offered tools");
    for (_, body) in &requests {
        assert!(!body.to_string().contains(KEY));
    }
    // The meta-agent's brief knows its parent's visible score (its history
    // matched by archive id), and no request names an archive id: the
    // response cache is keyed by the request's bytes, so a recording must
    // not depend on ids that change when the interpreter is rebuilt.
    let brief = requests
        .iter()
        .find_map(|(_, b)| {
            b["tools"].is_array().then(|| b["messages"][1]["content"].as_str().unwrap_or("").to_string())
        })
        .unwrap();
    let score = format!("visible pass rate: {:.2}.", parent.3.unwrap());
    assert!(brief.contains(&score), "{score:?} not in the brief: {brief}");
    for (_, body) in &requests {
        let text = body.to_string();
        for row in &rows {
            assert!(!text.contains(&row.0[..12]), "the archive id {} reached the model", row.0);
        }
    }
    assert_no_key_in(&live, KEY);
    server.stop();

    // Replay: a fresh home with the response cache only; the server is gone.
    let replayed = tmp.path().join("replayed");
    let again = replay_with_cache_of(&live, &replayed, &run, |home| vivarium(home, &llm_config));
    assert_eq!(again["stop"], summary["stop"]);
    assert_eq!(again["llm_tokens"], summary["llm_tokens"]);
    assert_eq!(fingerprint(&replayed), rows, "the replayed run is the recorded one");

    // The child was tried on the workbench before it was proposed.
    let tries =
        records.iter().filter(|r| r["event"] == "use" && r["details"]["services"]["workbench"].is_object()).count();
    assert!(tries >= 1, "no workbench use in the audit log");
}

/// A run whose `budget.usd` cannot pay for one request: nothing is sent,
/// every task is answered offline, and the run stops cleanly naming the
/// dollar budget, its archive and audit chain intact.
#[test]
fn a_coder_run_ends_cleanly_at_its_dollar_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Scripted::start(tmp.path());
    let llm_config = server.llm_toml(tmp.path(), "[prices.\"scripted\"]\nprompt = 1000.0\ncompletion = 1000.0\n");
    let run = tmp.path().join("run.toml");
    let text = std::fs::read_to_string(root().join("examples/coder/run.toml")).unwrap();
    let text = text
        .replace("\"../../variants/coder\"", &format!("{:?}", root().join("variants/coder")))
        .replace("\"policy.toml\"", &format!("{:?}", root().join("examples/coder/policy.toml")))
        .replace("tokens = 2_000_000", "usd = 0.01");
    std::fs::write(&run, text).unwrap();

    let home = tmp.path().join("home");
    let out = vivarium(&home, &llm_config).args(["--json", "evolve"]).arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let why = summary["stop"]["budget"].as_str().unwrap_or_default();
    assert!(why.starts_with("llm dollars"), "{summary}");
    assert!(server.requests().is_empty(), "a request was sent past the dollar budget");
    let rows = fingerprint(&home);
    assert_eq!(rows.len(), 1, "only the baseline: {rows:?}");
    let verify = vivarium(&home, &llm_config).args(["--json", "audit", "verify"]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    server.stop();
}

/// The meta-agent's checks on a model's tool calls (`coder_meta_checks.py`):
/// placeholder arguments (what Qwen2.5-Coder-0.5B sent last session), code
/// that does not parse or define the name, a change that changes nothing,
/// a dropped `{prompt}`, an unknown tool — each answered with the exact
/// error the model reads, the tree unchanged — and the edits accepted calls
/// make; the brief's score found by archive id, no id in its text.
#[test]
fn the_coder_meta_agent_answers_unusable_tool_calls_with_what_to_send() {
    let out = Command::new("python3")
        .arg(root().join("host/tests/all/coder_meta_checks.py"))
        .arg(root())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
