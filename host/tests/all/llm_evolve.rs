//! The `llm` service end to end: `vivarium evolve` on `variants/arith-llm`, whose
//! meta-agent asks the host's LLM for a rewrite of its own source. The LLM
//! is a local server speaking the OpenAI chat-completions protocol on a real
//! loopback socket; it answers every request with a fixed rewrite. The run's
//! token budget is spent by the first rewrite and ends the run cleanly; the
//! key reaches the server and nothing else; `vivarium --replay evolve`
//! reproduces the run from the response cache with the server gone.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use vivarium::archive::Archive;

const KEY_VAR: &str = "VIVARIUM_LLM_EVOLVE_TEST_KEY";
const KEY: &str = "sk-llm-evolve-7e5t-k3y-9876543210";

fn root() -> PathBuf {
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

/// Serve chat completions on a loopback port: each request is recorded
/// (head and body) and answered with `content` and fixed usage.
fn serve(content: String) -> (String, Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handle = std::thread::spawn(move || {
        // One request is all the run may send; then the server is gone.
        let Ok((mut conn, _)) = listener.accept() else { return };
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
        log.lock().unwrap().push(String::from_utf8_lossy(&req).into_owned());
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
    });
    (url, seen, handle)
}

fn vivarium(home: &Path, llm_config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vivarium"));
    c.env("VIVARIUM_HOME", home)
        .env("VIVARIUM_GUEST_TARGET_DIR", root().join("target/guests-sandboxed"))
        .env("VIVARIUM_LLM_CONFIG", llm_config)
        .env(KEY_VAR, KEY)
        .env_remove("VIVARIUM_LLM_REPLAY")
        .stdin(Stdio::null());
    c
}

type Row = (String, Option<String>, u32, Option<f64>, String);

fn fingerprint(home: &Path) -> Vec<Row> {
    let a = Archive::open(&home.join("archive")).unwrap();
    a.list(Some("llm-evolve"))
        .unwrap()
        .into_iter()
        .map(|v| (v.id.0, v.parent.map(|p| p.0), v.generation, v.visible_score, v.summary))
        .collect()
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
    let (url, seen, server) = serve(rewrite());
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
    server.join().unwrap();

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
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].to_ascii_lowercase().contains(&format!("authorization: bearer {}", KEY.to_ascii_lowercase())));
    assert!(requests[0].contains("operator '/' is not supported"), "the prompt carries the visible failures");
    for f in files(&live) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "key in {}", f.display());
    }

    // Replay: a fresh home with the response cache only; the server is gone.
    let replayed = tmp.path().join("replayed");
    std::fs::create_dir_all(&replayed).unwrap();
    let status = Command::new("cp").arg("-r").arg(live.join("llm-cache")).arg(&replayed).status().unwrap();
    assert!(status.success());
    let out = vivarium(&replayed, &llm_config).args(["--json", "--replay", "evolve"]).arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["stop"], summary["stop"]);
    assert_eq!(fingerprint(&replayed), rows, "the replayed run is the recorded one");
}
