//! A request flood against `vivarium serve` next to a running `evolve`:
//! how much longer the run's steps take while the control room is flooded
//! (the bound: within 2× the quiet step time), in one run.
//!
//! Three real `vivarium evolve` runs of the same seeded `arith-wat` run
//! file, each in a fresh home so that none reuses another's variants:
//! **quiet**, **flooded** (a `vivarium serve` on that home, kept at 1,000
//! concurrent connections for as long as the run lasts: half
//! authenticated reads of `/api/runs`, a quarter refused, a quarter idle
//! connections that never send a byte), and **quiet** again, to show the
//! machine's own noise. A step's time is the run's wall time over its
//! steps.
//!
//! The flood's client is this process, which drops to the lowest priority
//! (nice 19) before it starts: on a real deployment the flood comes from
//! elsewhere, and what this measures is what the server's work costs the
//! run, not what a second CPU-bound program on the same two cores would.
//! The server lowers its own priority (nice 10) as `vivarium serve` always
//! does.
//!
//! Run with `cargo bench -p vivarium --bench serve` (add `--profile dev`
//! to skip the release build; the README says which it reports).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "bench-token-0123456789abcdef";
const GENERATIONS: u32 = 120;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn run_toml(dir: &Path) -> PathBuf {
    let path = dir.join("run.toml");
    std::fs::write(
        &path,
        format!(
            "[run]\nname = \"bench\"\nsuite = \"arith\"\nseed = 5\ngenerations = {GENERATIONS}\n\
             children_per_generation = 1\ninitial = [\"{}\"]\n\n[budget]\nwall = \"1h\"\n",
            root().join("variants/arith-wat").display()
        ),
    )
    .expect("writing the run file");
    path
}

/// A `vivarium evolve` in `home` to its end: seconds per step, from the
/// run's own summary.
fn evolve(home: &Path, run: &Path) -> f64 {
    let out = Command::new(env!("CARGO_BIN_EXE_vivarium"))
        .args(["evolve", run.to_str().expect("utf-8 path"), "--json"])
        .env("VIVARIUM_HOME", home)
        .output()
        .expect("vivarium evolve starts");
    assert!(out.status.success(), "evolve failed: {}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("evolve --json prints its summary");
    let steps = 1 + GENERATIONS;
    summary["seconds"].as_f64().expect("seconds in the summary") / f64::from(steps)
}

/// 1,000 connections kept open against `addr` until `stop`: each of 1,000
/// clients connects, sends its request, reads the answer and connects
/// again at once.
async fn flood(addr: String, stop: Arc<AtomicBool>, answered: Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut clients = Vec::with_capacity(1000);
    for i in 0..1000 {
        let (addr, stop, answered) = (addr.clone(), stop.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else { continue };
                let req = match i % 4 {
                    0 | 1 => format!(
                        "GET /api/runs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
                    ),
                    2 => format!("GET /api/runs HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
                    _ => {
                        // Idle: holds a connection and sends nothing.
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                };
                if s.write_all(req.as_bytes()).await.is_ok() {
                    let mut buf = Vec::new();
                    if tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await.is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for c in clients {
        let _ = c.await;
    }
}

fn main() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let run = run_toml(tmp.path());
    // Compile arith-wat once in a throwaway home, so that no measured run
    // pays more of the engine's first-use costs than another.
    let _ = evolve(&tmp.path().join("warm"), &run);

    let quiet_a = evolve(&tmp.path().join("quiet-a"), &run);

    let home = tmp.path().join("flooded");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_vivarium"))
        .args(["serve", "--listen", "127.0.0.1:0", "--json"])
        .env("VIVARIUM_HOME", &home)
        .env("VIVARIUM_SERVE_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .expect("vivarium serve starts");
    let mut line = String::new();
    BufReader::new(serve.stdout.take().expect("piped")).read_line(&mut line).expect("serve's first line");
    let listening: Value = serde_json::from_str(&line).expect("serve prints JSON");
    let addr = listening["addr"].as_str().expect("the address").to_string();

    // The evolve starts at normal priority; this process then drops to the
    // lowest before its flood threads start (they inherit it).
    let run_path = run.clone();
    let flooded_home = home.clone();
    let evolving = std::thread::spawn(move || evolve(&flooded_home, &run_path));
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: setpriority on the calling thread only; no memory is passed.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let flood_rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let flooding = flood_rt.spawn(flood(addr, stop.clone(), answered.clone()));
    let started = Instant::now();
    let flooded = evolving.join().expect("the flooded evolve");
    let flood_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = flood_rt.block_on(flooding);
    let _ = serve.kill();
    let _ = serve.wait();

    let quiet_b = evolve(&tmp.path().join("quiet-b"), &run);
    let quiet = (quiet_a + quiet_b) / 2.0;
    let answered = answered.load(Ordering::Relaxed);
    println!("serve flood vs evolve ({GENERATIONS} generations of arith-wat, 2 cores shared):");
    println!("  quiet step        {:.1} ms  (runs: {:.1} ms, {:.1} ms)", quiet * 1e3, quiet_a * 1e3, quiet_b * 1e3);
    println!(
        "  flooded step      {:.1} ms  ({answered} requests answered in {flood_secs:.1} s, {:.0}/s)",
        flooded * 1e3,
        answered as f64 / flood_secs
    );
    println!("  ratio             {:.2}x  (bound: 2x)", flooded / quiet);
}
