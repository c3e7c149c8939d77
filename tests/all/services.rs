//! The host services `memory`, `archive` (read-only view) and `llm`.
//!
//! The guest is a real Rust component, `tests/guests/services`, that runs a
//! script of service calls and answers one line per call. The `llm` tests
//! talk to a fake OpenAI-compatible server started by the test on a real
//! loopback socket (`127.0.0.1:0`): it speaks HTTP/1.1, records every request
//! with its headers, and answers from a script (a completion, a 429, a body
//! that never comes, malformed JSON, a 50 MB body, an error that echoes the
//! `Authorization` header back).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vivarium::archive::{Archive, NewVariant, Split, TaskResult, VariantId, VariantStatus};
use vivarium::caps::Grant;
use vivarium::home::Home;
use vivarium::ledger::Resource;
use vivarium::runtime::{CallOptions, CallReport, Prepared, Runtime};
use vivarium::services::archive_view::ArchiveSource;
use vivarium::services::llm::LlmGrant;
use vivarium::services::llm::{CacheMode, LlmConfig, LlmService};
use vivarium::services::memory::MemoryStore;
use vivarium::services::HostServices;
use vivarium::services::{archive_view::ArchiveGrant, memory::MemoryGrant};
use vivarium::units::{ByteSize, HumanDuration, Usd};
use vivarium::variant::Session;
use vivarium::{Error, GuestFailureKind};
use vivarium_tests::*;

const GUEST: &str = "tests/guests/services";
/// The host environment variable holding the fake API key.
const KEY_VAR: &str = LLM_KEY_VAR;
/// The fake API key: must reach the server's `Authorization` header and
/// nothing else.
const KEY: &str = LLM_KEY;

/// Set the key in the host environment ([`TEST_ENV`]) before any call
/// reads it (every test calls this first).
fn init() {
    init_env();
}

fn guest() -> Vec<u8> {
    rust_guest(GUEST)
}

fn llm_grant(tokens: u64) -> LlmGrant {
    LlmGrant {
        models: vec!["small".into()],
        tokens,
        max_request_bytes: ByteSize(16 << 10),
        requests_per_minute: 60,
        usd: None,
    }
}

/// All three services: the guest imports all of them.
fn grant(llm: LlmGrant, memory_bytes: u64) -> Grant {
    Grant {
        llm: Some(llm),
        memory: Some(MemoryGrant { bytes: ByteSize(memory_bytes) }),
        archive: Some(ArchiveGrant {}),
        ..Grant::minimal(small_limits())
    }
}

async fn prepared(rt: &Runtime, g: Grant) -> Prepared {
    prepare(rt, &guest(), g).await.expect("prepare")
}

/// Run `script` (one command per line) and return the answer's lines.
async fn script(
    rt: &Runtime,
    p: &Prepared,
    opts: &CallOptions,
    script: &str,
) -> (Vec<String>, CallReport<vivarium::runtime::bindings::Answer>) {
    let r = rt.solve(p, &task("script", script), opts).await.expect("host error");
    let lines = ok_output(&r).output.split('\n').map(str::to_string).collect();
    (lines, r)
}

// ---------------------------------------------------------------------------
// A fake OpenAI-compatible server.

/// One request as the server received it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the server answers next.
#[allow(dead_code)]
enum Reply {
    /// A normal completion: `echo: <last message>`, 10 prompt and 5
    /// completion tokens.
    Completion,
    /// This status and JSON body.
    Json(u16, String),
    /// Headers and nothing else: the body never comes.
    Hang,
    /// A 200 whose body is not JSON.
    Malformed,
    /// A 200 announcing and streaming this many bytes.
    Huge(usize),
    /// A 200 streaming this many bytes in chunks, with no length announced.
    HugeChunked(usize),
    /// This status with the request's `Authorization` header in the body.
    EchoAuth(u16),
}

struct FakeServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    stop: Arc<AtomicBool>,
    /// Connections whose peer closed while the server was hanging.
    hangups: Arc<AtomicU64>,
    /// Bytes of `Huge` bodies written.
    huge_written: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let hangups = Arc::new(AtomicU64::new(0));
        let huge_written = Arc::new(AtomicU64::new(0));
        let thread = {
            let (received, script, stop, hangups, huge_written) =
                (received.clone(), script.clone(), stop.clone(), hangups.clone(), huge_written.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (received, script, stop, hangups, huge_written) =
                        (received.clone(), script.clone(), stop.clone(), hangups.clone(), huge_written.clone());
                    std::thread::spawn(move || serve(conn, &received, &script, &stop, &hangups, &huge_written));
                }
            })
        };
        Self { addr, received, script, stop, hangups, huge_written, thread: Some(thread) }
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn push(&self, r: Reply) {
        self.script.lock().unwrap().push_back(r);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Stop accepting and close the port.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(
    mut conn: TcpStream,
    received: &Mutex<Vec<Received>>,
    script: &Mutex<VecDeque<Reply>>,
    stop: &AtomicBool,
    hangups: &AtomicU64,
    huge_written: &AtomicU64,
) {
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or("").to_string(), first.next().unwrap_or("").to_string());
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let req = Received { method, path, headers, body: String::from_utf8_lossy(&body).into_owned() };
    received.lock().unwrap().push(req.clone());
    let reply = script.lock().unwrap().pop_front().unwrap_or(Reply::Completion);
    let respond = |conn: &mut TcpStream, status: u16, body: &str| {
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            429 => "Too Many Requests",
            500 => "Internal Server Error",
            _ => "Other",
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    match reply {
        Reply::Completion => {
            let v: serde_json::Value = serde_json::from_str(&req.body).unwrap_or_default();
            let last = v["messages"]
                .as_array()
                .and_then(|m| m.last())
                .map(|m| m["content"].as_str().unwrap_or("").to_string());
            let body = serde_json::json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                "model": format!("{}-served", v["model"].as_str().unwrap_or("?")),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {}", last.unwrap_or_default())}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            });
            respond(&mut conn, 200, &body.to_string());
        }
        Reply::Json(status, body) => respond(&mut conn, status, &body),
        Reply::EchoAuth(status) => {
            let auth = req.header("authorization").unwrap_or("").to_string();
            respond(
                &mut conn,
                status,
                &serde_json::json!({"error": {"message": format!("invalid key: {auth}")}}).to_string(),
            );
        }
        Reply::Malformed => {
            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{{not json");
        }
        Reply::Hang => {
            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n");
            // Wait for the peer to give up (EOF) or the test to end.
            let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) && !stop.load(Ordering::SeqCst) {
                match conn.read(&mut chunk) {
                    Ok(0) => {
                        hangups.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => {
                        hangups.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
        Reply::Huge(n) => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
            );
            let block = vec![b' '; 64 << 10];
            let mut sent = 0;
            while sent < n {
                let k = block.len().min(n - sent);
                if conn.write_all(&block[..k]).is_err() {
                    break;
                }
                sent += k;
                huge_written.store(sent as u64, Ordering::SeqCst);
            }
        }
        Reply::HugeChunked(n) => {
            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
            let block = vec![b' '; 64 << 10];
            let mut sent = 0;
            while sent < n {
                let k = block.len().min(n - sent);
                if write!(conn, "{k:x}\r\n").is_err()
                    || conn.write_all(&block[..k]).is_err()
                    || conn.write_all(b"\r\n").is_err()
                {
                    break;
                }
                sent += k;
                huge_written.store(sent as u64, Ordering::SeqCst);
            }
            let _ = conn.write_all(b"0\r\n\r\n");
        }
    }
}

/// An LLM configuration for `server` with fast retries, no cache.
fn config(server: &FakeServer) -> LlmConfig {
    let mut c = LlmConfig::new(server.base_url());
    c.api_key_env = Some(KEY_VAR.into());
    c.backoff = HumanDuration(Duration::from_millis(10));
    c.max_backoff = HumanDuration(Duration::from_millis(50));
    c.timeout = HumanDuration(Duration::from_secs(20));
    c.cache = CacheMode::Off;
    c
}

fn llm_runtime(c: LlmConfig, home: Option<&Path>) -> Runtime {
    let service = LlmService::new(c, home, None).expect("llm service");
    runtime().with_services(HostServices { llm: Some(Arc::new(service)), ..HostServices::default() })
}

/// The error kind of a guest result line (`err KIND: …`).
fn err_kind(line: &str) -> &str {
    line.strip_prefix("err ").and_then(|l| l.split(':').next()).unwrap_or_else(|| panic!("not an error: {line}"))
}

// ---------------------------------------------------------------------------
// memory

#[tokio::test]
async fn memory_quota_keys_and_usage() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::open(dir.path().join("memory.sqlite")).unwrap());
    let rt = runtime().with_services(HostServices { memory: Some(store.clone()), ..HostServices::default() });
    let p = prepared(&rt, grant(llm_grant(0), 64)).await;
    let opts = CallOptions { lineage: Some("L1".into()), ..CallOptions::default() };
    let (out, r) = script(
        &rt,
        &p,
        &opts,
        "mem-set notes hello\nmem-set-n big 100\nmem-get big\nmem-set  empty-key\nmem-set bad\\ekey v\n\
         mem-set nl\\nkey v\nmem-left\nmem-set-n fill 50\nmem-set-n more 1\nmem-list \nmem-del notes\nmem-del notes\n\
         mem-left\nmem-get notes",
    )
    .await;
    assert_eq!(out[0], "ok");
    assert_eq!(err_kind(&out[1]), "quota-exceeded", "{}", out[1]);
    assert!(out[1].contains("64-byte quota"), "{}", out[1]);
    assert_eq!(out[2], "none", "a refused set writes nothing");
    assert_eq!(err_kind(&out[3]), "invalid-key", "empty key");
    assert_eq!(err_kind(&out[4]), "invalid-key", "escape character");
    assert_eq!(err_kind(&out[5]), "invalid-key", "newline");
    assert_eq!(out[6], "54", "notes + hello = 10 of 64 bytes");
    assert_eq!(out[7], "ok", "fill + 50 bytes = 54: exactly the quota");
    assert_eq!(err_kind(&out[8]), "quota-exceeded");
    assert_eq!(out[9], "fill,notes");
    assert_eq!(out[10..13], ["true", "false", "10"]);
    assert_eq!(out[13], "none");
    // What the call did is in its usage, and the store holds it.
    let m = r.services.memory.as_ref().expect("memory usage");
    assert_eq!(m.lineage, "L1");
    assert_eq!((m.sets, m.gets, m.deletes, m.lists), (7, 2, 2, 1));
    assert_eq!((m.quota_exceeded, m.invalid_keys, m.errors), (2, 3, 0));
    assert_eq!(m.bytes_written, 10 + 54);
    assert!(r.services.llm.is_some() && r.services.archive.is_some());
    assert_eq!(store.used("L1").unwrap(), 54);
    assert_eq!(store.entries("L1").unwrap(), vec![("fill".to_string(), vec![b'x'; 50])]);
}

/// A runtime whose `memory` store lives in a fresh directory.
fn memory_runtime() -> (tempfile::TempDir, Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::lazy(dir.path().join("memory.sqlite"));
    let rt = runtime().with_services(HostServices { memory: Some(Arc::new(store)), ..HostServices::default() });
    (dir, rt)
}

#[tokio::test]
async fn memory_persists_per_lineage_and_a_child_gets_a_snapshot() {
    init();
    let (dir, rt) = memory_runtime();
    let path = dir.path().join("memory.sqlite");
    let p = prepared(&rt, grant(llm_grant(0), 1 << 20)).await;
    let lineage = |l: &str| CallOptions { lineage: Some(l.into()), ..CallOptions::default() };

    let (out, _) = script(&rt, &p, &lineage("parent"), "mem-set plan v1\nmem-set shared base").await;
    assert_eq!(out, ["ok", "ok"]);
    // Another call of the same lineage sees it (persistent); another lineage does not.
    let (out, _) = script(&rt, &p, &lineage("parent"), "mem-get plan").await;
    assert_eq!(out, ["some v1"]);
    let (out, _) = script(&rt, &p, &lineage("stranger"), "mem-get plan\nmem-list ").await;
    assert_eq!(out, ["none", ""]);

    // The evolution loop forks the child's memory from its parent's.
    let store = MemoryStore::open(&path).unwrap();
    assert!(store.fork("parent", "child").unwrap());
    let (out, _) =
        script(&rt, &p, &lineage("child"), "mem-get plan\nmem-set plan child-v2\nmem-set mine 1\nmem-get plan").await;
    assert_eq!(out, ["some v1", "ok", "ok", "some child-v2"]);
    // The child's writes do not change the parent's memory.
    let (out, _) = script(&rt, &p, &lineage("parent"), "mem-get plan\nmem-get mine\nmem-list ").await;
    assert_eq!(out, ["some v1", "none", "plan,shared"]);
    // Forking again (a resumed run) changes nothing.
    assert!(!store.fork("parent", "child").unwrap());
    let (out, _) = script(&rt, &p, &lineage("child"), "mem-get plan").await;
    assert_eq!(out, ["some child-v2"]);

    // Without a lineage, a variant gets its own memory, keyed by its sha256.
    let (out, r) = script(&rt, &p, &CallOptions::default(), "mem-set own yes").await;
    assert_eq!(out, ["ok"]);
    assert_eq!(r.services.memory.as_ref().unwrap().lineage, p.sha256);
    assert_eq!(store.entries(&p.sha256).unwrap(), vec![("own".to_string(), b"yes".to_vec())]);
}

/// A call on a held-out task reads its lineage's memory, but nothing it
/// writes outlives the call: not in the lineage, not in a child forked
/// from it, not in a stray lineage of the store.
#[tokio::test]
async fn a_sealed_call_leaves_no_trace_in_memory() {
    init();
    let (dir, rt) = memory_runtime();
    let path = dir.path().join("memory.sqlite");
    let p = prepared(&rt, grant(llm_grant(0), 1 << 20)).await;
    let visible = CallOptions { lineage: Some("v".into()), ..CallOptions::default() };
    let held_out = visible.sealed();

    let (out, _) = script(&rt, &p, &visible, "mem-set seen visible-input").await;
    assert_eq!(out, ["ok"]);
    let (out, r) =
        script(&rt, &p, &held_out, "mem-get seen\nmem-set stolen held-out-input\nmem-get stolen\nmem-del seen").await;
    assert_eq!(out, ["some visible-input", "ok", "some held-out-input", "true"], "the call itself works as usual");
    assert!(r.services.memory.as_ref().unwrap().lineage.starts_with("sealed:"));
    let (out, _) = script(&rt, &p, &visible, "mem-get stolen\nmem-list \nmem-get seen").await;
    assert_eq!(out, ["none", "seen", "some visible-input"], "nothing the held-out call did persists");
    let store = MemoryStore::open(&path).unwrap();
    assert!(store.fork("v", "child").unwrap());
    assert_eq!(store.entries("child").unwrap(), vec![("seen".to_string(), b"visible-input".to_vec())]);
    assert_eq!(store.lineages().unwrap(), ["child", "v"], "no sealed lineage left behind");
}

/// Every graded call on a held-out task is sealed: what `solve` stores in
/// memory while graded on a visible task persists, on a held-out one not.
#[tokio::test]
async fn held_out_tasks_are_graded_in_sealed_calls() {
    use vivarium::tasks::{run_tasks, GradedTask, Grading, Suite};
    init();
    let dir = tempfile::tempdir().unwrap();
    let session = vivarium::variant::Session::open(Home::at(dir.path())).unwrap();
    let p = prepare(&session.runtime, &guest(), grant(llm_grant(0), 1 << 20)).await.unwrap();
    let graded = |input: &str| GradedTask { task: task("script", input), expected: "ok".into() };
    let suite = Suite {
        name: "snoop",
        visible: vec![graded("mem-set seen-v1 visible")],
        held_out: vec![graded("mem-set seen-h1 held-out")],
        grading: Grading::Exact,
    };
    let opts = CallOptions { lineage: Some("lineage".into()), ..CallOptions::default() };
    let (v, _) = run_tasks(&session, &p, &suite, &suite.visible, false, &opts).await.unwrap();
    let (h, _) = run_tasks(&session, &p, &suite, &suite.held_out, true, &opts).await.unwrap();
    assert!(v[0].passed && h[0].passed, "both calls ran: {v:?} {h:?}");
    let store = MemoryStore::open(dir.path().join(vivarium::services::memory::STORE_FILE)).unwrap();
    assert_eq!(store.entries("lineage").unwrap(), vec![("seen-v1".to_string(), b"visible".to_vec())]);
    assert_eq!(store.lineages().unwrap(), ["lineage"]);
}

#[tokio::test]
async fn memory_without_a_store_is_denied_and_ungranted_memory_is_refused() {
    init();
    let rt = runtime();
    let p = prepared(&rt, grant(llm_grant(0), 1 << 20)).await;
    let (out, r) = script(&rt, &p, &CallOptions::default(), "mem-set k v\nmem-get k\nmem-left").await;
    assert_eq!(err_kind(&out[0]), "denied");
    assert_eq!(out[1..], ["none", "0"]);
    assert_eq!(r.services.memory.as_ref().unwrap().errors, 3);

    // A component that imports memory is refused before it runs when the
    // grant does not name it.
    let mut g = grant(llm_grant(0), 1);
    g.memory = None;
    match prepare(&rt, &guest(), g).await {
        Err(Error::Refused { what, detail }) => {
            assert_eq!(what, ["vivarium:agent/memory@0.1.0"]);
            assert!(detail.contains("capability `memory` is not granted"), "{detail}");
        }
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal"),
    }
}

// ---------------------------------------------------------------------------
// archive view

/// Distinctive held-out scores: they must never reach the guest.
const HELD_OUT: [f64; 3] = [0.123457, 0.234568, 0.345679];

fn archived(
    archive: &Archive,
    run: &str,
    tag: &str,
    parent: Option<&VariantId>,
    generation: u32,
    scores: (f64, f64),
) -> VariantId {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("src")).unwrap();
    std::fs::write(src.path().join("variant.toml"), format!("[variant]\nname = \"{tag}\"\nlanguage = \"rust\"\n"))
        .unwrap();
    std::fs::write(src.path().join("src/lib.rs"), format!("// {tag}\n")).unwrap();
    let tree_sha = archive.put_tree(src.path()).unwrap();
    let component_sha = Some(archive.put(format!("component {tag}").as_bytes()).unwrap());
    let id = archive
        .add_variant(&NewVariant {
            run_id: run.into(),
            parent: parent.cloned(),
            generation,
            language: "rust".into(),
            component_sha,
            tree_sha,
            grant_digest: "g".into(),
            status: VariantStatus::Pending,
            summary: format!("variant {tag}"),
        })
        .unwrap();
    let result =
        |split, score| TaskResult { task_id: "t1".into(), split, passed: true, score, note: "grader note".into() };
    archive
        .record_results(
            &id,
            &[result(Split::Visible, scores.0), result(Split::HeldOut, scores.1)],
            Some(scores.0),
            Some(scores.1),
            VariantStatus::Evaluated,
        )
        .unwrap();
    id
}

#[tokio::test]
async fn archive_view_shows_one_run_and_never_a_held_out_score() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let archive = Arc::new(Archive::open(&dir.path().join("archive")).unwrap());
    archive.begin_run("run-a", &serde_json::json!({})).unwrap();
    archive.begin_run("run-b", &serde_json::json!({})).unwrap();
    let root = archived(&archive, "run-a", "root", None, 0, (0.5, HELD_OUT[0]));
    let child = archived(&archive, "run-a", "child", Some(&root), 1, (0.75, HELD_OUT[1]));
    let other = archived(&archive, "run-b", "other", None, 0, (0.25, HELD_OUT[2]));
    let rt = runtime().with_services(HostServices {
        archive: Some(Arc::new(ArchiveSource::Shared(archive.clone()))),
        ..HostServices::default()
    });
    let p = prepared(&rt, grant(llm_grant(0), 1)).await;
    let run_a = CallOptions { run: Some("run-a".into()), ..CallOptions::default() };

    let (out, r) = script(
        &rt,
        &p,
        &run_a,
        &format!(
            "ar-list 0 100\nar-get {child}\nar-lineage {child}\nar-sources {child}\nar-get {other}\nar-lineage {other}\n\
             ar-sources {other}\nar-get {}\nar-get %\nar-list 1 1\nar-list 5 5",
            &root.0[..6]
        ),
    )
    .await;
    assert_eq!(out[0], format!("{root}:0.5,{child}:0.75"));
    assert_eq!(out[1], format!("some {child} parent={root} gen=1 lang=rust score=0.75 children=0"));
    assert_eq!(out[2], format!("{root},{child}"));
    let mut files: Vec<&str> = out[3].split(',').collect();
    files.sort();
    let toml_len = "[variant]\nname = \"child\"\nlanguage = \"rust\"\n".len();
    assert_eq!(files, ["src/lib.rs:9".to_string(), format!("variant.toml:{toml_len}")]);
    // Another run's variant answers exactly like an id that does not exist.
    assert_eq!(out[4], "none");
    assert_eq!(out[5], "");
    assert!(out[6].starts_with("err no variant") && !out[6].contains("run-b"), "{}", out[6]);
    assert_eq!(out[7], "none", "no prefix lookup");
    assert_eq!(out[8], "none");
    assert_eq!(out[9], format!("{child}:0.75"));
    assert_eq!(out[10], "");
    let everything = ok_output(&r).output.clone();
    for h in HELD_OUT {
        assert!(!everything.contains(&h.to_string()), "held-out score {h} leaked: {everything}");
    }
    assert!(!everything.contains("grader note"));
    let a = r.services.archive.as_ref().unwrap();
    assert_eq!(a.run.as_deref(), Some("run-a"));
    assert_eq!((a.gets, a.lists, a.lineages, a.sources), (4, 3, 2, 2));
    assert_eq!(a.not_found, 5);
    assert_eq!(a.errors, 0);

    // No run in the call options: an empty view.
    let (out, _) = script(&rt, &p, &CallOptions::default(), &format!("ar-list 0 100\nar-get {root}")).await;
    assert_eq!(out, ["", "none"]);
    // Run b sees only its own variant.
    let run_b = CallOptions { run: Some("run-b".into()), ..CallOptions::default() };
    let (out, _) = script(&rt, &p, &run_b, &format!("ar-list 0 100\nar-get {root}")).await;
    assert_eq!(out, [format!("{other}:0.25"), "none".to_string()]);
}

#[tokio::test]
async fn archive_view_of_a_home_without_an_archive_is_empty_and_creates_nothing() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    let rt = runtime().with_services(HostServices::for_home(&home).unwrap());
    let p = prepared(&rt, grant(llm_grant(0), 1)).await;
    let opts = CallOptions { run: Some("run-a".into()), ..CallOptions::default() };
    let (out, _) = script(&rt, &p, &opts, "ar-list 0 10\nar-get 0123456789ab").await;
    assert_eq!(out, ["", "none"]);
    assert!(!home.archive_dir().exists());
}

// ---------------------------------------------------------------------------
// llm

#[tokio::test]
async fn llm_completion_carries_the_key_to_the_server_and_nowhere_else() {
    init();
    let server = FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));
    std::fs::create_dir_all(home.root()).unwrap();
    std::fs::write(
        home.root().join("llm.toml"),
        format!(
            "base_url = \"{}\"\napi_key_env = \"{KEY_VAR}\"\nbackoff = \"10ms\"\n\n[models]\nsmall = \"provider-small\"\n",
            server.base_url()
        ),
    )
    .unwrap();
    // A session on the home: the audit log records the call.
    let session = Session::open(home.clone()).unwrap();
    let loaded = session.runtime.load(&guest()).await.unwrap();
    let p = session.runtime.prepare(&loaded, grant(llm_grant(1000), 1 << 20)).unwrap();
    server.push(Reply::EchoAuth(401));
    let opts = CallOptions { run: Some("run-x".into()), ..CallOptions::default() };
    let r = session
        .solve(
            &p,
            &task("script", "llm small 50 Say hi.\nllm small 50 Say hi again.\nenv\nllm-left\nllm large 5 no"),
            &opts,
        )
        .await
        .unwrap();
    let out: Vec<&str> = ok_output(&r).output.lines().collect();

    // The provider's refusal echoed the key: the guest sees it scrubbed.
    assert_eq!(err_kind(out[0]), "unavailable");
    assert!(out[0].contains("401") && out[0].contains("[redacted]"), "{}", out[0]);
    assert_eq!(out[1], "ok echo: Say hi again.|provider-small-served|10|5|stop");
    assert!(out[2].starts_with("vars=["), "{}", out[2]);
    assert_eq!(err_kind(out[4]), "denied");

    // The server got the key in the Authorization header, and the request
    // in the OpenAI shape with the mapped model.
    let got = server.received();
    assert_eq!(got.len(), 2);
    for g in &got {
        assert_eq!((g.method.as_str(), g.path.as_str()), ("POST", "/v1/chat/completions"));
        assert_eq!(g.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
        assert_eq!(g.header("content-type"), Some("application/json"));
    }
    let body: serde_json::Value = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(body["model"], "provider-small");
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1], serde_json::json!({"role": "user", "content": "Say hi again."}));

    // Usage: counted from the response; the refused 401 was refunded.
    let u = r.services.llm.as_ref().unwrap();
    assert_eq!((u.requests, u.refused, u.failed, u.attempts), (3, 1, 1, 2));
    assert_eq!((u.prompt_tokens, u.completion_tokens, u.pending_tokens), (10, 5, 0));
    assert_eq!(out[3], (1000 - 15).to_string());
    assert_eq!(u.calls.len(), 3);
    let ok = &u.calls[1];
    assert_eq!(
        (ok.model.as_str(), ok.provider_model.as_deref(), ok.source, ok.outcome),
        ("small", Some("provider-small"), "live", "ok")
    );
    assert_eq!(ok.digest.as_ref().unwrap().len(), 64);

    // The key is in no guest-visible value, no log line, no audit record,
    // no file under the home.
    assert!(!ok_output(&r).output.contains(KEY));
    assert!(!format!("{:?}", r.logs).contains(KEY));
    let audit = std::fs::read_to_string(session.audit.log_path()).unwrap();
    assert!(!audit.contains(KEY), "the key leaked into the audit log");
    assert!(!audit.contains(KEY_VAR), "not even its variable's name");
    let use_record = session
        .audit
        .records()
        .unwrap()
        .into_iter()
        .rev()
        .find(|rec| rec.event.as_str() == "use")
        .expect("a use record");
    let llm = &use_record.details["services"]["llm"];
    assert_eq!(llm["prompt_tokens"], 10);
    assert_eq!(llm["calls"][1]["digest"], serde_json::json!(ok.digest));
    assert_eq!(llm["calls"][1]["provider_model"], "provider-small");
    assert!(llm["calls"][1]["latency_ms"].is_u64());
    for entry in walk(home.root()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(KEY), "the key leaked into {}", entry.display());
    }
    // The response was cached under the home (default cache mode).
    assert!(home.root().join("llm-cache").exists());
    assert_eq!(session.runtime.services().llm.as_ref().unwrap().spent(&format!("run-x/{}", p.sha256)).unwrap(), 15);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn llm_budget_is_refused_before_sending_and_ends_a_run_cleanly() {
    init();
    let server = FakeServer::start();
    let rt = llm_runtime(config(&server), None);
    // Each request may use 3 + (14/4 + 4) + (8/4 + 4) + 20 = 37 tokens
    // (estimate); each really uses 15.
    let p = prepared(&rt, grant(llm_grant(60), 1)).await;
    let (out, r) = script(
        &rt,
        &p,
        &CallOptions::default(),
        "llm small 20 question\nllm small 20 question\nllm small 20 question\nllm-left",
    )
    .await;
    assert!(out[0].starts_with("ok ") && out[1].starts_with("ok "), "{out:?}");
    assert_eq!(err_kind(&out[2]), "budget-exhausted", "{}", out[2]);
    assert!(out[2].contains("30 of the budget of 60 are left"), "{}", out[2]);
    assert_eq!(out[3], "30");
    assert_eq!(server.received().len(), 2, "the refused request was never sent");
    let u = r.services.llm.as_ref().unwrap();
    assert_eq!((u.requests, u.refused, u.prompt_tokens + u.completion_tokens), (3, 1, 30));
    assert_eq!(u.calls[2].outcome, "budget-exhausted");

    // A request that alone exceeds the budget is refused with nothing sent.
    let p = prepared(&rt, grant(llm_grant(20), 1)).await;
    let (out, _) = script(&rt, &p, &CallOptions::default(), "llm small 100 hello").await;
    assert_eq!(err_kind(&out[0]), "budget-exhausted");
    assert_eq!(server.received().len(), 2);

    // The budget spans calls (the variant's life in the run), and the
    // caller's per-call cap tightens it further.
    let p = prepared(&rt, grant(llm_grant(1000), 1)).await;
    let run = |n: u64| CallOptions { run: Some("r".into()), llm_tokens: Some(n), ..CallOptions::default() };
    let (out, _) = script(&rt, &p, &run(50), "llm small 20 question\nllm small 20 question").await;
    assert!(out[0].starts_with("ok "));
    assert_eq!(err_kind(&out[1]), "budget-exhausted", "15 used + 37 > the call's 50");
    let (out, _) = script(&rt, &p, &run(1000), "llm-left").await;
    assert_eq!(out, ["985"]);
}

#[tokio::test]
async fn llm_retries_a_429_then_succeeds() {
    init();
    let server = FakeServer::start();
    server.push(Reply::Json(429, r#"{"error":{"message":"slow down"}}"#.into()));
    server.push(Reply::Json(503, r#"{"error":{"message":"busy"}}"#.into()));
    let rt = llm_runtime(config(&server), None);
    let p = prepared(&rt, grant(llm_grant(1000), 1)).await;
    let (out, r) = script(&rt, &p, &CallOptions::default(), "llm small 10 hi").await;
    assert_eq!(out, ["ok echo: hi|small-served|10|5|stop"]);
    assert_eq!(server.received().len(), 3);
    let u = r.services.llm.as_ref().unwrap();
    assert_eq!((u.attempts, u.calls[0].attempts), (3, 3));

    // Retries run out: unavailable, refunded, and the next request works.
    let mut c = config(&server);
    c.retries = 1;
    let rt = llm_runtime(c, None);
    let p = prepared(&rt, grant(llm_grant(1000), 1)).await;
    server.push(Reply::Json(500, "{}".into()));
    server.push(Reply::Json(500, "{}".into()));
    let (out, r) = script(&rt, &p, &CallOptions::default(), "llm small 10 hi\nllm-left\nllm small 10 hi").await;
    assert_eq!(err_kind(&out[0]), "unavailable");
    assert!(out[0].contains("after 2 attempt(s)") && out[0].contains("500"), "{}", out[0]);
    assert_eq!(out[1], "1000");
    assert!(out[2].starts_with("ok "));
    assert_eq!(r.services.llm.as_ref().unwrap().attempts, 3);
}

#[tokio::test]
async fn llm_server_that_never_answers_ends_at_the_deadline() {
    init();
    let server = FakeServer::start();
    server.push(Reply::Hang);
    let rt = llm_runtime(config(&server), None);
    let mut g = grant(llm_grant(1000), 1);
    g.limits.wall = HumanDuration(Duration::from_secs(2));
    let p = prepared(&rt, g).await;
    let start = Instant::now();
    let r = rt.solve(&p, &task("script", "llm small 10 hi"), &CallOptions::default()).await.unwrap();
    let took = start.elapsed();
    assert_eq!(failure(&r).kind, GuestFailureKind::Deadline, "{:?}", r.outcome);
    assert!(took < Duration::from_secs(4), "took {took:?}");
    // The host dropped the connection when the call ended.
    let until = Instant::now() + Duration::from_secs(5);
    while server.hangups.load(Ordering::SeqCst) == 0 && Instant::now() < until {
        // Sleep on the runtime: the HTTP connection's own task closes it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.hangups.load(Ordering::SeqCst), 1, "the request outlived the call");
    // The cut-off request stays charged at its estimate (the provider may
    // have billed it), and shows as pending.
    let u = r.services.llm.as_ref().unwrap();
    assert_eq!((u.requests, u.pending_tokens), (1, 3 + 8 + 5 + 10));
    assert_eq!(rt.services().llm.as_ref().unwrap().spent(&format!("-/{}", p.sha256)).unwrap(), 26);
}

#[tokio::test]
async fn llm_malformed_and_huge_responses_are_typed_errors() {
    init();
    let server = FakeServer::start();
    server.push(Reply::Malformed);
    server.push(Reply::Huge(50 << 20));
    server.push(Reply::Json(200, r#"{"choices":[]}"#.into()));
    let rt = llm_runtime(config(&server), None);
    let p = prepared(&rt, grant(llm_grant(10_000), 1)).await;
    let (out, r) =
        script(&rt, &p, &CallOptions::default(), "llm small 10 a\nllm small 10 b\nllm small 10 c\nllm small 10 d")
            .await;
    assert_eq!(err_kind(&out[0]), "unavailable");
    assert!(out[0].contains("malformed") && out[0].contains("not JSON"), "{}", out[0]);
    assert_eq!(err_kind(&out[1]), "unavailable");
    assert!(out[1].contains("over 8388608 bytes"), "{}", out[1]);
    assert_eq!(err_kind(&out[2]), "unavailable");
    assert!(out[2].contains("choices"), "{}", out[2]);
    assert!(out[3].starts_with("ok "), "the service still works: {}", out[3]);
    // Not retried: one attempt each.
    assert_eq!(server.received().len(), 4);
    assert_eq!(r.services.llm.as_ref().unwrap().failed, 3);
    // The 50 MB body was refused from its Content-Length: the host stopped
    // reading long before the server could send it all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.huge_written.load(Ordering::SeqCst) < 50 << 20);

    // Without a Content-Length, the body is cut off while streaming.
    let mut c = config(&server);
    c.max_response_bytes = ByteSize(1 << 20);
    let rt = llm_runtime(c, None);
    let p = prepared(&rt, grant(llm_grant(10_000), 1)).await;
    server.huge_written.store(0, Ordering::SeqCst);
    server.push(Reply::HugeChunked(50 << 20));
    let (out, _) = script(&rt, &p, &CallOptions::default(), "llm small 10 a").await;
    assert!(out[0].contains("over 1048576 bytes"), "{}", out[0]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.huge_written.load(Ordering::SeqCst) < 50 << 20);
}

#[tokio::test]
async fn llm_grant_models_rate_and_request_size() {
    init();
    let server = FakeServer::start();
    let mut c = config(&server);
    c.model_map = [("small".to_string(), "p-small".to_string()), ("large".to_string(), "p-large".to_string())].into();
    let rt = llm_runtime(c, None);
    let mut l = llm_grant(100_000);
    l.models = vec!["small".into(), "tiny".into()];
    l.requests_per_minute = 2;
    l.max_request_bytes = ByteSize(200);
    let p = prepared(&rt, grant(l, 1)).await;
    let long = "x".repeat(300);
    let (out, r) = script(
        &rt,
        &p,
        &CallOptions::default(),
        &format!("llm large 5 hi\nllm tiny 5 hi\nllm small 0 hi\nllm small 5 {long}\nllm small 5 one\nllm small 5 two\nllm small 5 three"),
    )
    .await;
    assert_eq!(err_kind(&out[0]), "denied", "not in the grant");
    assert!(out[0].contains("not in this variant's grant"));
    assert_eq!(err_kind(&out[1]), "denied", "not in the host's model map");
    assert!(out[1].contains("not offered by this host"));
    assert_eq!(err_kind(&out[2]), "invalid-request");
    assert_eq!(err_kind(&out[3]), "invalid-request");
    assert!(out[3].contains("the grant allows 200 bytes"), "{}", out[3]);
    assert!(out[4].starts_with("ok ") && out[5].starts_with("ok "));
    assert_eq!(err_kind(&out[6]), "rate-limited");
    assert_eq!(server.received().len(), 2);
    assert_eq!(r.services.llm.as_ref().unwrap().refused, 5);
}

#[tokio::test]
async fn a_routed_call_sends_every_request_to_the_routed_model_within_the_grant() {
    init();
    let server = FakeServer::start();
    let mut c = config(&server);
    c.model_map = [("small".to_string(), "p-small".to_string()), ("large".to_string(), "p-large".to_string())].into();
    let rt = llm_runtime(c, None);
    let mut l = llm_grant(100_000);
    l.models = vec!["small".into()];
    let p = prepared(&rt, grant(l, 1)).await;
    // The guest names `large`, which its grant lacks; the run routes the
    // call to `small`, which it has: the request goes out as `p-small`.
    let to_small = CallOptions { llm_model: Some("small".into()), ..CallOptions::default() };
    let (out, _) = script(&rt, &p, &to_small, "llm large 5 hi").await;
    assert!(out[0].starts_with("ok "), "{}", out[0]);
    let sent = server.received();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].body.contains("\"p-small\""), "{}", sent[0].body);
    // Routed to a model outside the grant: refused like the guest's own ask.
    let to_large = CallOptions { llm_model: Some("large".into()), ..CallOptions::default() };
    let (out, _) = script(&rt, &p, &to_large, "llm small 5 hi").await;
    assert_eq!(err_kind(&out[0]), "denied");
    assert!(out[0].contains("\"large\" is not in this variant's grant"), "{}", out[0]);
    assert_eq!(server.received().len(), 1, "nothing more was sent");
}

#[tokio::test]
async fn llm_without_a_configured_provider_is_unavailable() {
    init();
    let rt = runtime();
    let p = prepared(&rt, grant(llm_grant(100), 1)).await;
    let (out, _) = script(&rt, &p, &CallOptions::default(), "llm small 5 hi\nllm-left").await;
    assert_eq!(out[0], "err unavailable: no LLM is configured on this host");
    assert_eq!(out[1], "100");
}

#[tokio::test]
async fn llm_replay_reproduces_a_recorded_run_with_the_server_stopped() {
    init();
    let mut server = FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&server);
    c.cache = CacheMode::Record;
    let rt = llm_runtime(c.clone(), Some(dir.path()));
    let p = prepared(&rt, grant(llm_grant(60), 1)).await;
    let run = "llm small 20 first\nllm small 20 second\nllm small 20 third\nllm-left";
    let (recorded, r1) = script(&rt, &p, &CallOptions::default(), run).await;
    assert_eq!(err_kind(&recorded[2]), "budget-exhausted");
    assert_eq!(server.received().len(), 2);
    server.stop();
    assert!(TcpStream::connect(server.addr).is_err(), "the server is stopped");

    // Replay: no connection at all, same answers, same budget decisions.
    let mut replay = c.clone();
    replay.replay = true;
    replay.base_url = None;
    let rt = llm_runtime(replay, Some(dir.path()));
    let p = prepared(&rt, grant(llm_grant(60), 1)).await;
    let (replayed, r2) = script(&rt, &p, &CallOptions::default(), run).await;
    assert_eq!(replayed, recorded);
    let (u1, u2) = (r1.services.llm.unwrap(), r2.services.llm.unwrap());
    assert_eq!(u2.cache_hits, 2);
    assert_eq!(u2.attempts, 0);
    let digests = |u: &vivarium::services::llm::LlmUsage| u.calls.iter().map(|c| c.digest.clone()).collect::<Vec<_>>();
    assert_eq!(digests(&u1), digests(&u2));
    assert_eq!(u2.calls.iter().map(|c| c.source).collect::<Vec<_>>(), ["replay", "replay", "none"]);
    assert_eq!((u1.prompt_tokens, u1.completion_tokens), (u2.prompt_tokens, u2.completion_tokens));

    // A request that was never recorded is unavailable in replay mode.
    let (out, _) = script(&rt, &p, &CallOptions::default(), "llm small 5 never asked").await;
    assert!(out[0].starts_with("err unavailable: replay: no recorded response for request "), "{}", out[0]);
}

// ---------------------------------------------------------------------------
// llm@0.2.0: tools, tool calls, multi-turn (the guest `tests/guests/tools`,
// which imports `vivarium:agent/llm@0.2.0`)

/// A home under `dir` whose `llm.toml` points at `server`.
fn llm_home(dir: &Path, server: &FakeServer) -> Home {
    let home = Home::at(dir.join("home"));
    std::fs::create_dir_all(home.root()).unwrap();
    std::fs::write(home.root().join("llm.toml"), format!("base_url = \"{}\"\n", server.base_url())).unwrap();
    home
}

fn tools_guest() -> Vec<u8> {
    rust_guest("tests/guests/tools")
}

fn tools_grant() -> Grant {
    Grant {
        llm: Some(LlmGrant {
            models: vec!["small".into()],
            tokens: 1_000_000,
            max_request_bytes: ByteSize(256 << 10),
            requests_per_minute: 600,
            usd: None,
        }),
        // Room for the guest to build a 100 MB argument.
        ..Grant::minimal(vivarium::caps::Limits {
            memory: ByteSize(512 << 20),
            fuel: 20_000_000_000,
            wall: HumanDuration(Duration::from_secs(60)),
            ..small_limits()
        })
    }
}

/// A 200 answer with these tool calls (OpenAI shape).
fn tool_calls_reply(calls: serde_json::Value) -> Reply {
    Reply::Json(
        200,
        serde_json::json!({
            "id": "c", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": calls}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12}
        })
        .to_string(),
    )
}

const WEATHER_TOOL: &str = r#"{"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}"#;

#[tokio::test]
async fn a_multi_turn_tool_conversation_round_trips_exactly_and_is_audited() {
    init();
    let server = FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let home = llm_home(dir.path(), &server);
    let session = Session::open(home.clone()).unwrap();
    let loaded = session.runtime.load(&tools_guest()).await.unwrap();
    assert!(loaded.imports.iter().any(|i| i == "vivarium:agent/llm@0.2.0"), "{:?}", loaded.imports);
    let p = session.runtime.prepare(&loaded, tools_grant()).unwrap();

    // Turn 1: the model asks for two calls; turn 2 sends their results back.
    server.push(tool_calls_reply(serde_json::json!([
        {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"id": "call_b2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}
    ])));
    let turn1 = format!(
        r#"chat {{"model": "small", "max_tokens": 40, "tools": [{WEATHER_TOOL}], "messages": [{{"role": "user", "content": "Weather in Paris and Oslo?"}}]}}"#
    );
    let turn2 = format!(
        r#"chat {{"model": "small", "max_tokens": 40, "tools": [{WEATHER_TOOL}], "messages": [{{"role": "user", "content": "Weather in Paris and Oslo?"}}, {{"role": "assistant", "content": "", "tool_calls": [{{"id": "call_a1", "name": "get_weather", "arguments": "{{\"city\": \"Paris\"}}"}}, {{"id": "call_b2", "name": "get_weather", "arguments": "{{\"city\":\"Oslo\"}}"}}]}}, {{"role": "tool", "tool_call_id": "call_a1", "content": "{{\"temp_c\": 21}}"}}, {{"role": "tool", "tool_call_id": "call_b2", "content": "{{\"temp_c\": 4}}"}}]}}"#
    );
    let r = session.solve(&p, &task("script", &format!("{turn1}\n{turn2}")), &CallOptions::default()).await.unwrap();
    let out: Vec<&str> = ok_output(&r).output.lines().collect();
    let first: serde_json::Value = serde_json::from_str(out[0].strip_prefix("ok ").expect(out[0])).unwrap();
    assert_eq!(first["finish_reason"], "tool_calls");
    assert_eq!(
        first["tool_calls"],
        serde_json::json!([
            {"id": "call_a1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
            {"id": "call_b2", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}
        ]),
        "ids and arguments reach the guest byte for byte"
    );
    assert!(out[1].starts_with("ok "), "{}", out[1]);

    // What the server got: tools offered, and turn 2 carries the calls and
    // their results exactly as the guest sent them.
    let got = server.received();
    let b1: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(b1["tools"][0]["type"], "function");
    assert_eq!(b1["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(b1["tools"][0]["function"]["parameters"]["required"], serde_json::json!(["city"]));
    assert_eq!(b1["tool_choice"], "auto");
    let b2: serde_json::Value = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(
        b2["messages"],
        serde_json::json!([
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"id": "call_b2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}
            ]},
            {"role": "tool", "content": "{\"temp_c\": 21}", "tool_call_id": "call_a1"},
            {"role": "tool", "content": "{\"temp_c\": 4}", "tool_call_id": "call_b2"}
        ])
    );

    // The audit record names the tools offered and called.
    let use_record =
        session.audit.records().unwrap().into_iter().rev().find(|rec| rec.event.as_str() == "use").unwrap();
    let calls = &use_record.details["services"]["llm"]["calls"];
    assert_eq!(calls[0]["tools_offered"], serde_json::json!(["get_weather"]));
    assert_eq!(calls[0]["tools_offered_count"], 1);
    assert_eq!(calls[0]["tools_called"], serde_json::json!(["get_weather", "get_weather"]));
    assert!(calls[1].get("tools_called").is_none());

    // The cache keys on the whole request, tools included: the same turn
    // with another tool set is a new request, the same one is a hit.
    let (cached, _) = {
        let r = session.solve(&p, &task("script", &turn1), &CallOptions::default()).await.unwrap();
        (ok_output(&r).output.clone(), r)
    };
    assert_eq!(cached, out[0], "answered from the cache");
    assert_eq!(server.received().len(), 2);
    let other = turn1.replace("Weather of a city", "The weather");
    let r = session.solve(&p, &task("script", &other), &CallOptions::default()).await.unwrap();
    assert!(ok_output(&r).output.starts_with("ok "));
    assert_eq!(server.received().len(), 3, "another tool description is another request");
}

#[tokio::test]
async fn malformed_tool_calls_huge_tool_lists_and_100_mb_arguments_are_typed_errors_and_the_host_carries_on() {
    init();
    let server = FakeServer::start();
    let rt = llm_runtime(config(&server), None);
    let p = prepare(&rt, &tools_guest(), tools_grant()).await.expect("prepare");
    let ask = format!(
        r#"chat {{"model": "small", "max_tokens": 20, "tools": [{WEATHER_TOOL}], "messages": [{{"role": "user", "content": "hi"}}]}}"#
    );
    // Malformed: not an array; a call without an id; a tool not offered.
    server.push(tool_calls_reply(serde_json::json!({"oops": 1})));
    server.push(tool_calls_reply(
        serde_json::json!([{"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]),
    ));
    server.push(tool_calls_reply(
        serde_json::json!([{"id": "x", "type": "function", "function": {"name": "rm_rf", "arguments": "{}"}}]),
    ));
    // A 100 MB argument in the answer: cut off at max_response_bytes.
    let big = "a".repeat(100 << 20);
    server.push(tool_calls_reply(
        serde_json::json!([{"id": "x", "type": "function", "function": {"name": "get_weather", "arguments": big}}]),
    ));
    drop(big);
    let script = format!(
        "{ask}\n{ask}\n{ask}\n{ask}\nchat-many-tools 10000 {{\"model\": \"small\", \"max_tokens\": 5, \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}\n\
         chat-big-argument 300000 {{\"model\": \"small\", \"max_tokens\": 5, \"tools\": [{{\"name\": \"f\", \"parameters\": {{\"type\": \"object\"}}}}], \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}\n\
         chat {{\"model\": \"small\", \"max_tokens\": 5, \"messages\": [{{\"role\": \"tool\", \"tool_call_id\": \"nope\", \"content\": \"x\"}}]}}\n\
         {ask}"
    );
    let r = rt.solve(&p, &task("script", &script), &CallOptions::default()).await.expect("host error");
    let out: Vec<&str> = ok_output(&r).output.lines().collect();
    assert_eq!(err_kind(out[0]), "bad-response", "{}", out[0]);
    assert!(out[0].contains("tool_calls"), "{}", out[0]);
    assert_eq!(err_kind(out[1]), "bad-response", "{}", out[1]);
    assert_eq!(err_kind(out[2]), "bad-response", "{}", out[2]);
    assert!(out[2].contains("rm_rf") && out[2].contains("did not offer"), "{}", out[2]);
    assert_eq!(err_kind(out[3]), "unavailable", "{}", out[3]);
    assert!(out[3].contains("cut off"), "{}", out[3]);
    assert_eq!(err_kind(out[4]), "invalid-request", "{}", out[4]);
    assert!(out[4].contains("10000 tools"), "{}", out[4]);
    assert_eq!(err_kind(out[5]), "invalid-request", "{}", out[5]);
    assert!(out[5].contains("bytes; the grant allows"), "{}", out[5]);
    assert_eq!(err_kind(out[6]), "invalid-request", "{}", out[6]);
    // The host carries on: the next request is answered.
    assert!(out[7].starts_with("ok "), "{}", out[7]);
    assert_eq!(server.received().len(), 5, "the refused requests were never sent");

    // A 100 MB argument from the guest: the host will not take that much
    // from a guest at once, and the call ends with a typed limit.
    let r = rt
        .solve(
            &p,
            &task("script", "chat-big-argument 104857600 {\"model\": \"small\", \"max_tokens\": 5, \"tools\": [{\"name\": \"f\", \"parameters\": {\"type\": \"object\"}}], \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}"),
            &CallOptions::default(),
        )
        .await
        .expect("host error");
    assert_eq!(failure(&r).kind, GuestFailureKind::MemoryLimit, "{:?}", r.outcome);
    let r = rt.solve(&p, &task("script", &ask), &CallOptions::default()).await.expect("host error");
    assert!(ok_output(&r).output.starts_with("ok "), "the host carries on");
    assert_eq!(server.received().len(), 6);
}

#[tokio::test]
async fn a_0_1_0_component_still_links_and_its_requests_are_unchanged_by_tools() {
    init();
    let server = FakeServer::start();
    let rt = llm_runtime(config(&server), None);
    let p = prepared(&rt, grant(llm_grant(1000), 1)).await;
    let (out, _) = script(&rt, &p, &CallOptions::default(), "llm small 20 hello").await;
    assert_eq!(out[0], "ok echo: hello|small-served|10|5|stop");
    let body: serde_json::Value = serde_json::from_str(&server.received()[0].body).unwrap();
    assert!(body.get("tools").is_none() && body.get("tool_choice").is_none(), "{body}");
    assert_eq!(body["messages"][1], serde_json::json!({"role": "user", "content": "hello"}));
}

// ---------------------------------------------------------------------------
// llm@0.2.0 from Python: the SDK's `chat(..., tools=..., tool_choice=...)`
// on the shared interpreter, against the same scripted server.

const PY_TOOLS_AGENT: &str = r#"
import json
import vivarium
from vivarium import llm, types

WEATHER = {"name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


class TaskAgent(vivarium.TaskAgent):
    def solve(self, task):
        out = []
        messages = [("user", "Weather in Paris?")]
        r = llm.chat(messages, model="small", max_tokens=40, tools=[WEATHER])
        out.append(r.finish_reason)
        out += [f"{c.id} {c.name} {c.arguments}" for c in r.tool_calls]
        messages.append({"role": "assistant", "content": r.content, "tool_calls": r.tool_calls})
        for c in r.tool_calls:
            messages.append({"role": "tool", "content": json.dumps({"temp_c": 21}), "tool_call_id": c.id})
        r = llm.chat(messages, model="small", max_tokens=40, tools=[dict(WEATHER, parameters=json.dumps(WEATHER["parameters"]))],
                     tool_choice="get_weather")
        out.append(r.content)
        out.append(llm.complete("hello", model="small", max_tokens=20))
        try:
            llm.chat([("user", "x")], model="gpt-9", max_tokens=5)
        except vivarium.ServiceError as e:
            out.append(f"{e.service} {e.kind}")
        return types.Answer(output="\n".join(out), notes=None)


class MetaAgent(vivarium.MetaAgent):
    def improve(self, ctx):
        raise vivarium.Err("no")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_python_variant_calls_tools_through_the_sdk_and_the_messages_round_trip() {
    init();
    let server = FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let home = llm_home(dir.path(), &server);
    let mut session = sandboxed_session(home.root());
    session.runtime = Runtime::new(vivarium::runtime::RuntimeConfig {
        cache_dir: Some(workspace_root().join("target/conformance-cache")),
        ..vivarium::runtime::RuntimeConfig::default()
    })
    .unwrap()
    .with_services(HostServices::for_home(&home).unwrap());
    let v = dir.path().join("v");
    std::fs::create_dir_all(v.join("src")).unwrap();
    std::fs::write(
        v.join("variant.toml"),
        "[variant]\nname = \"py-tools\"\nlanguage = \"python\"\n\n[capabilities]\nllm = { models = [\"small\"], tokens = 10000 }\n",
    )
    .unwrap();
    std::fs::write(v.join("src/agent.py"), PY_TOOLS_AGENT).unwrap();
    let opened = session.open_target(&v, None, &vivarium::caps::Overrides::default()).await.unwrap();
    let p = session.runtime.prepare(&opened.loaded, tools_grant()).unwrap();

    server.push(tool_calls_reply(serde_json::json!([
        {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
    ])));
    let r = session.solve(&p, &task("", ""), &CallOptions::default()).await.unwrap();
    let out: Vec<&str> = ok_output(&r).output.lines().collect();
    assert_eq!(out[0], "tool_calls");
    assert_eq!(out[1], "call_a1 get_weather {\"city\": \"Paris\"}", "the id and arguments reach Python byte for byte");
    assert!(out[2].starts_with("echo: "), "{}", out[2]);
    assert_eq!(out[3], "echo: hello", "the old `complete` keeps working");
    assert_eq!(out[4], "llm denied", "a refusal is a ServiceError with its kind");

    let got = server.received();
    let b2: serde_json::Value = serde_json::from_str(&got[1].body).unwrap();
    assert_eq!(
        b2["messages"],
        serde_json::json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
            ]},
            {"role": "tool", "content": "{\"temp_c\": 21}", "tool_call_id": "call_a1"}
        ])
    );
    assert_eq!(b2["tool_choice"], serde_json::json!({"type": "function", "function": {"name": "get_weather"}}));
    assert_eq!(b2["tools"][0]["function"]["parameters"]["required"], serde_json::json!(["city"]));
    let b3: serde_json::Value = serde_json::from_str(&got[2].body).unwrap();
    assert!(b3.get("tools").is_none(), "a plain request offers no tools: {b3}");
    assert_eq!(got.len(), 3, "the denied model was never sent");
}

// ---------------------------------------------------------------------------
// llm dollars

/// `config` with `small` priced at $1000 per million prompt tokens and
/// $2000 per million completion tokens: a fake completion (10 prompt + 5
/// completion tokens) costs $0.02, and `llm small 20 question` may cost up
/// to 17 × $0.001 + 20 × $0.002 = $0.057 (its estimated prompt and every
/// `max-tokens`).
fn priced(server: &FakeServer) -> LlmConfig {
    let mut c = config(server);
    c.prices.insert("small".into(), vivarium::services::llm::Price { prompt: 1000.0, completion: 2000.0 });
    c
}

fn dollars(d: f64) -> Usd {
    Usd::from_dollars(d).unwrap()
}

#[tokio::test]
async fn a_request_whose_worst_case_cost_passes_the_dollar_budget_is_refused_before_it_is_sent() {
    init();
    let server = FakeServer::start();
    let rt = llm_runtime(priced(&server), None);
    let p = prepared(&rt, grant(LlmGrant { usd: Some(dollars(0.10)), ..llm_grant(100_000) }, 1)).await;
    let (out, r) = script(
        &rt,
        &p,
        &CallOptions::default(),
        "llm small 20 question\nllm small 20 question\nllm small 20 question\nllm small 20 question",
    )
    .await;
    // $0.02 settled per answer; the fourth's worst case ($0.057) does not
    // fit in the $0.04 left.
    assert!(out[..3].iter().all(|l| l.starts_with("ok ")), "{out:?}");
    assert_eq!(err_kind(&out[3]), "budget-exhausted", "{}", out[3]);
    assert!(
        out[3].contains(
            "may cost up to $0.057 (about 17 prompt tokens at $1000/M + 20 max completion tokens at $2000/M); \
             $0.04 of this variant's dollar budget (llm.usd) of $0.10 is left"
        ),
        "{}",
        out[3]
    );
    assert_eq!(server.received().len(), 3, "the refused request was never sent");
    let u = r.services.llm.as_ref().unwrap();
    assert_eq!((u.usd, u.pending_usd, u.refused), (dollars(0.06), Usd(0), 1));
    assert_eq!(u.calls[0].usd, dollars(0.02));
    assert_eq!(u.calls[3].outcome, "budget-exhausted");
}

/// How a workbench try's candidate is charged (`CallOptions::budget_of`):
/// its requests spend the trying parent's per-variant budget, so a try
/// never opens a fresh one.
#[tokio::test]
async fn a_call_charged_to_another_variant_spends_that_variants_budget() {
    init();
    let server = FakeServer::start();
    let service = Arc::new(LlmService::new(priced(&server), None, None).unwrap());
    let rt = runtime().with_services(HostServices { llm: Some(service.clone()), ..HostServices::default() });
    let p = prepared(&rt, grant(LlmGrant { usd: Some(dollars(0.10)), ..llm_grant(100_000) }, 1)).await;
    let parent = "0".repeat(64);
    let as_parent = CallOptions { run: Some("r".into()), budget_of: Some(parent.clone()), ..CallOptions::default() };
    let (out, _) = script(&rt, &p, &as_parent, "llm small 20 question\nllm small 20 question").await;
    assert!(out.iter().all(|l| l.starts_with("ok ")), "{out:?}");
    let ledger = service.ledger();
    assert_eq!(ledger.by_variant("r", Resource::Usd).unwrap(), vec![(parent.clone(), dollars(0.04).0)]);
    // A second call charged to the parent finds $0.06 of its $0.10 left:
    // one more answer ($0.02), then the worst case ($0.057) does not fit.
    let (out, _) = script(&rt, &p, &as_parent, "llm small 20 question\nllm small 20 question").await;
    assert!(out[0].starts_with("ok "), "{out:?}");
    assert_eq!(err_kind(&out[1]), "budget-exhausted", "{}", out[1]);
    assert!(out[1].ends_with("$0.04 of this variant's dollar budget (llm.usd) of $0.10 is left"), "{}", out[1]);
    // The called variant's own budget is untouched.
    let own = CallOptions { run: Some("r".into()), ..CallOptions::default() };
    let (out, _) = script(&rt, &p, &own, "llm small 20 question").await;
    assert!(out[0].starts_with("ok "), "{out:?}");
    assert_eq!(ledger.by_variant("r", Resource::Usd).unwrap().len(), 2);
    assert_eq!(server.received().len(), 4);
}

#[tokio::test]
async fn a_runs_dollar_budget_spans_its_variants_and_an_unpriced_model_is_refused_under_one() {
    init();
    let server = FakeServer::start();
    let service = Arc::new(LlmService::new(priced(&server), None, None).unwrap());
    let rt = runtime().with_services(HostServices { llm: Some(service.clone()), ..HostServices::default() });
    let p = prepared(&rt, grant(llm_grant(100_000), 1)).await;
    let run = CallOptions { run: Some("r".into()), run_usd: Some(dollars(0.07)), ..CallOptions::default() };
    let (out, _) = script(&rt, &p, &run, "llm small 20 question\nllm small 20 question").await;
    assert!(out[0].starts_with("ok "), "{out:?}");
    assert_eq!(err_kind(&out[1]), "budget-exhausted", "{}", out[1]);
    assert!(out[1].ends_with("$0.05 of the run's dollar budget (budget.usd) of $0.07 is left"), "{}", out[1]);
    assert_eq!(server.received().len(), 1);
    // The ledger remembers that the run reached its budget, for `evolve`.
    let ledger = service.ledger();
    assert_eq!(ledger.spent_in_run("r", Resource::Usd).unwrap(), dollars(0.02).0);
    let x = ledger.exhausted("r", Resource::Usd, dollars(0.07).0).unwrap().expect("exhausted");
    assert_eq!((x.spent, x.asked), (dollars(0.02).0, dollars(0.057).0));
    // Another variant of the same run meets the same run budget.
    let other = Grant { llm: Some(llm_grant(99_999)), ..grant(llm_grant(1), 1) };
    let q = prepared(&rt, other).await;
    let (out, _) = script(&rt, &q, &run, "llm small 20 question").await;
    assert_eq!(err_kind(&out[0]), "budget-exhausted", "{}", out[0]);
    assert_eq!(server.received().len(), 1);

    // A model with no price cannot be bounded by dollars: refused under a
    // dollar budget, free (and sent) without one.
    let rt = llm_runtime(config(&server), None);
    let p = prepared(&rt, grant(LlmGrant { usd: Some(dollars(1.0)), ..llm_grant(100_000) }, 1)).await;
    let (out, _) = script(&rt, &p, &CallOptions::default(), "llm small 20 question").await;
    assert_eq!(err_kind(&out[0]), "denied", "{}", out[0]);
    assert!(out[0].contains("has no price in the host's llm.toml"), "{}", out[0]);
    assert_eq!(server.received().len(), 1);
    let p = prepared(&rt, grant(llm_grant(100_000), 1)).await;
    let (out, r) = script(&rt, &p, &CallOptions::default(), "llm small 20 question").await;
    assert!(out[0].starts_with("ok "), "{out:?}");
    assert_eq!(r.services.llm.as_ref().unwrap().usd, Usd(0));
    assert_eq!(server.received().len(), 2);
}
