//! The real local model (Qwen2.5-Coder-0.5B-Instruct, served by
//! `scripts/local-llm.sh serve`), called by real variants through the
//! host's `llm` service: a plain answer with code, its audit record, the
//! cache, replay with no server, and a tool call.
//!
//! These tests need the model installed (`bash scripts/setup.sh`, which runs
//! `bash scripts/local-llm.sh install`); without it they fail and say so —
//! they never skip. One server is started per test binary, on a free port,
//! and exits with the binary (it holds the server's stdin). The model is
//! small and slow (one CPU thread): requests are few and short, and the
//! assertions on what it says are loose.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use vivarium::caps::Grant;
use vivarium::home::Home;
use vivarium::runtime::{CallOptions, CallReport};
use vivarium::services::llm::LlmGrant;
use vivarium::units::{ByteSize, HumanDuration};
use vivarium::variant::Session;
use vivarium_tests::*;

/// The local server's model name.
const MODEL: &str = "qwen2.5-coder-0.5b-instruct";

struct LocalModel {
    port: u16,
    _child: Mutex<Child>,
}

impl LocalModel {
    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Requests the server has answered (its `/health`).
    fn served(&self) -> u64 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("the local model's port");
        use std::io::Write;
        write!(s, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = &text[text.find("\r\n\r\n").expect("an HTTP answer") + 4..];
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON from /health");
        v["served"].as_u64().expect("served")
    }
}

/// Held by each test for its whole run: the server's request count is
/// asserted on, and one CPU thread serves one request at a time anyway.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The one server of this test binary.
fn local_model() -> &'static LocalModel {
    static SERVER: OnceLock<LocalModel> = OnceLock::new();
    SERVER.get_or_init(|| {
        let root = workspace_root();
        let dir = tempfile::tempdir().unwrap().keep();
        let port_file: PathBuf = dir.join("port");
        let mut child = Command::new("bash")
            .arg(root.join("scripts/local-llm.sh"))
            .args(["serve", "--port", "0", "--exit-on-stdin-close", "--port-file"])
            .arg(&port_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash scripts/local-llm.sh serve");
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                if let Ok(port) = text.trim().parse() {
                    // Keep reading its log so the pipe never fills.
                    let mut err = child.stderr.take().unwrap();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while matches!(err.read(&mut buf), Ok(n) if n > 0) {}
                    });
                    return LocalModel { port, _child: Mutex::new(child) };
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!(
                    "the local model did not start ({status}): {}\n\
                     These tests need it installed: run `bash scripts/setup.sh` (or `bash scripts/local-llm.sh install`).",
                    err.trim()
                );
            }
            assert!(started.elapsed() < Duration::from_secs(180), "the local model did not start within 180 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// A home whose `llm.toml` maps the grant's model `coder` to the local
/// server's model, with the cache at `cache` (shared between homes).
fn home_with(dir: &std::path::Path, name: &str, base_url: &str, cache: &std::path::Path, replay: bool) -> Home {
    let home = Home::at(dir.join(name));
    std::fs::create_dir_all(home.root()).unwrap();
    std::fs::write(
        home.root().join("llm.toml"),
        format!(
            "base_url = \"{base_url}\"\nreplay = {replay}\ncache_dir = \"{}\"\nretries = 0\ntimeout = \"120s\"\n\n[models]\ncoder = \"{MODEL}\"\n",
            cache.display()
        ),
    )
    .unwrap();
    home
}

fn coder_grant() -> Grant {
    Grant {
        llm: Some(LlmGrant {
            models: vec!["coder".into()],
            tokens: 10_000,
            max_request_bytes: ByteSize(64 << 10),
            requests_per_minute: 60,
            usd: None,
        }),
        memory: Some(vivarium::services::memory::MemoryGrant { bytes: ByteSize(1 << 10) }),
        archive: Some(vivarium::services::archive_view::ArchiveGrant {}),
        ..Grant::minimal(slow_limits())
    }
}

/// Limits for a call that waits on the model.
fn slow_limits() -> vivarium::caps::Limits {
    vivarium::caps::Limits { wall: HumanDuration(Duration::from_secs(150)), ..small_limits() }
}

/// The services guest's answer to one `llm` line: (content, prompt, completion, finish).
fn parse_llm_line(line: &str) -> (String, u64, u64, String) {
    let rest = line.strip_prefix("ok ").unwrap_or_else(|| panic!("the model call failed: {line}"));
    let parts: Vec<&str> = rest.rsplitn(5, '|').collect();
    assert_eq!(parts.len(), 5, "{line}");
    let (finish, completion, prompt, content) = (parts[0], parts[1], parts[2], parts[4]);
    (content.to_string(), prompt.parse().unwrap(), completion.parse().unwrap(), finish.to_string())
}

fn last_use(session: &Session) -> serde_json::Value {
    session
        .audit
        .records()
        .unwrap()
        .into_iter()
        .rev()
        .find(|r| r.event.as_str() == "use")
        .expect("a use record")
        .details["services"]["llm"]
        .clone()
}

/// Run a one-command script; the answer whole (a model's answer has newlines).
async fn ask(session: &Session, script: &str) -> (String, CallReport<vivarium::runtime::bindings::Answer>) {
    let loaded = session.runtime.load(&rust_guest("tests/guests/services")).await.unwrap();
    let p = session.runtime.prepare(&loaded, coder_grant()).unwrap();
    let opts = CallOptions { run: Some("local-model".into()), ..CallOptions::default() };
    let r = session.solve(&p, &task("script", script), &opts).await.unwrap();
    (ok_output(&r).output.clone(), r)
}

#[tokio::test]
async fn the_local_model_writes_code_for_a_variant_audited_then_cached_then_replayed_with_no_server() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = local_model();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("llm-cache");
    let script = "llm coder 48 Write a Python function add(a, b) that returns the sum. Reply with code only.";

    // A live answer from the real model, through the variant's llm import.
    let session = Session::open(home_with(dir.path(), "live", &server.base_url(), &cache, false)).unwrap();
    let before = server.served();
    let (out, r) = ask(&session, script).await;
    let (content, prompt, completion, finish) = parse_llm_line(&out);
    assert!(content.contains("def add"), "the model wrote no Python function: {content:?}");
    assert!(content.contains("return"), "{content:?}");
    assert!(prompt > 10 && completion > 5, "usage comes from the server: {prompt} + {completion}");
    assert!(finish == "stop" || finish == "length", "{finish}");
    assert_eq!(server.served(), before + 1, "one request reached the server");

    // The request and its usage are in the audit log.
    let u = r.services.llm.as_ref().unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (prompt, completion));
    let audited = last_use(&session);
    assert_eq!(audited["calls"][0]["source"], "live");
    assert_eq!(audited["calls"][0]["provider_model"], MODEL);
    assert_eq!(audited["calls"][0]["prompt_tokens"], prompt);
    assert_eq!(audited["calls"][0]["completion_tokens"], completion);
    assert_eq!(audited["calls"][0]["digest"], serde_json::json!(u.calls[0].digest));
    assert!(session.audit.verify().unwrap().ok, "the audit chain verifies");

    // The same request again: answered from the cache, the server not asked.
    let (again, r2) = ask(&session, script).await;
    assert_eq!(again, out, "the cached answer is the same, usage included");
    assert_eq!(r2.services.llm.as_ref().unwrap().calls[0].source, "cache");
    assert_eq!(last_use(&session)["calls"][0]["source"], "cache");
    assert_eq!(server.served(), before + 1, "the cache answered");

    // Replay with no server at the configured address (a port nothing
    // listens on): the same answer, never a connection.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let replay = Session::open(home_with(dir.path(), "replay", &format!("http://{closed}/v1"), &cache, true)).unwrap();
    let (replayed, r3) = ask(&replay, script).await;
    assert_eq!(replayed, out);
    let u3 = r3.services.llm.as_ref().unwrap();
    assert_eq!((u3.calls[0].source, u3.attempts), ("replay", 0));
    assert_eq!(server.served(), before + 1);
}

#[tokio::test]
async fn the_local_model_calls_an_offered_tool_with_json_arguments() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = local_model();
    let dir = tempfile::tempdir().unwrap();
    let session =
        Session::open(home_with(dir.path(), "tools", &server.base_url(), &dir.path().join("cache"), false)).unwrap();
    let loaded = session.runtime.load(&rust_guest("tests/guests/tools")).await.unwrap();
    let p = session.runtime.prepare(&loaded, Grant { memory: None, archive: None, ..coder_grant() }).unwrap();
    let tool = r#"{"name": "read_file", "description": "Read a file of the project and return its text", "parameters": {"type": "object", "properties": {"path": {"type": "string", "description": "the file's path"}}, "required": ["path"]}}"#;
    let script = format!(
        r#"chat {{"model": "coder", "max_tokens": 64, "temperature": 0, "tools": [{tool}], "messages": [{{"role": "system", "content": "You are a coding agent. Use the tools."}}, {{"role": "user", "content": "Read the file src/main.rs with the read_file tool."}}]}}"#
    );
    let opts = CallOptions { run: Some("local-model".into()), ..CallOptions::default() };
    let r = session.solve(&p, &task("script", &script), &opts).await.unwrap();
    let out = &ok_output(&r).output;
    let v: serde_json::Value =
        serde_json::from_str(out.strip_prefix("ok ").unwrap_or_else(|| panic!("the model call failed: {out}")))
            .unwrap();
    // Loosely: the model is small. It called the offered tool, with JSON
    // arguments (an object), and the answer says so.
    assert_eq!(v["finish_reason"], "tool_calls", "{v}");
    let call = &v["tool_calls"][0];
    assert_eq!(call["name"], "read_file", "{v}");
    let args: serde_json::Value = serde_json::from_str(call["arguments"].as_str().unwrap()).expect("JSON arguments");
    assert!(args.is_object(), "{args}");
    assert!(!call["id"].as_str().unwrap().is_empty());
    let audited = last_use(&session);
    assert_eq!(audited["calls"][0]["tools_offered"], serde_json::json!(["read_file"]));
    assert_eq!(audited["calls"][0]["tools_called"], serde_json::json!(["read_file"]));
}

/// A forced `tool_choice` — a named tool, or `required` — is kept by the
/// local server's grammar: the answer is a call of that tool with JSON
/// arguments under the tool's schema, even to a question a model would
/// rather answer in words.
#[tokio::test]
async fn a_forced_tool_choice_gets_a_call_of_the_named_tool() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = local_model();
    let dir = tempfile::tempdir().unwrap();
    let session =
        Session::open(home_with(dir.path(), "forced", &server.base_url(), &dir.path().join("cache"), false)).unwrap();
    let loaded = session.runtime.load(&rust_guest("tests/guests/tools")).await.unwrap();
    let p = session.runtime.prepare(&loaded, Grant { memory: None, archive: None, ..coder_grant() }).unwrap();
    let read = r#"{"name": "read_file", "description": "Read a file", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}"#;
    let finish = r#"{"name": "finish", "description": "End the session", "parameters": {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}}"#;
    let opts = CallOptions { run: Some("local-model".into()), ..CallOptions::default() };
    for (choice, allowed) in
        [(r#"{"name": "finish"}"#, &["finish"][..]), (r#""required""#, &["read_file", "finish"][..])]
    {
        let script = format!(
            r#"chat {{"model": "coder", "max_tokens": 48, "temperature": 0, "tools": [{read}, {finish}], "tool_choice": {choice}, "messages": [{{"role": "user", "content": "Hello! What is 2+2?"}}]}}"#
        );
        let r = session.solve(&p, &task("script", &script), &opts).await.unwrap();
        let out = &ok_output(&r).output;
        let v: serde_json::Value =
            serde_json::from_str(out.strip_prefix("ok ").unwrap_or_else(|| panic!("{choice}: the call failed: {out}")))
                .unwrap();
        assert_eq!(v["finish_reason"], "tool_calls", "{choice}: {v}");
        let call = &v["tool_calls"][0];
        let name = call["name"].as_str().unwrap();
        assert!(allowed.contains(&name), "{choice}: called {name}");
        let args: serde_json::Value =
            serde_json::from_str(call["arguments"].as_str().unwrap()).expect("JSON arguments");
        let key = if name == "finish" { "summary" } else { "path" };
        assert!(args[key].is_string(), "{choice}: the arguments follow the tool's schema: {args}");
    }
}
