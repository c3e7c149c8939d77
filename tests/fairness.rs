//! One variant cannot starve another.
//!
//! 100 hostile calls — endless loops, memory growth, blocking sleeps and
//! clock spinning, each under a wall-clock limit — run concurrently on one
//! [`Runtime`] driven by a multi-thread tokio runtime with 2 workers, while a
//! well-behaved agent is called again and again on the same runtime. Its
//! median latency must stay within 2× of its median latency measured alone,
//! just before, in the same test; the process's resident memory must stay
//! under [`RSS_BOUND`].
//!
//! Timing on a small shared machine is noisy, so the comparison is of
//! medians over hundreds of calls, spaced like requests rather than fired
//! back to back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vivarium::caps::{Grant, Limits};
use vivarium::runtime::{CallOptions, CallOutcome, Prepared, Runtime, RuntimeConfig};
use vivarium::units::{ByteSize, HumanDuration};
use vivarium::GuestFailureKind as K;
use vivarium_tests::*;

/// The most resident memory the host process may reach during the test.
const RSS_BOUND: u64 = 1 << 30;
/// Concurrent hostile calls.
const HOSTILE_CALLS: usize = 100;
/// How long the hostile load lasts; each hostile call is bounded by it.
const WINDOW: Duration = Duration::from_secs(4);
/// Pause between two calls of the well-behaved agent.
const SPACING: Duration = Duration::from_millis(2);

/// The well-behaved agent: a little honest work (a short loop), then its
/// input back.
const WORKER_BODY: &str = r#"
    (local.set 8 (i32.const 20000))
    (loop $l
      (local.set 8 (i32.sub (local.get 8) (i32.const 1)))
      (br_if $l (local.get 8)))
    (call $answer (local.get 6) (local.get 7))"#;

fn worker_wat() -> String {
    agent_wat(false, "", WORKER_BODY).replacen(
        "(param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)",
        "(param i32 i32 i32 i32 i32 i32 i32 i32) (result i32) (local i32)",
        1,
    )
}

/// Grow linear memory a page at a time up to the limit, filling every
/// page (so it is resident), then keep it and spin: a call that holds all the memory it may for
/// as long as it may.
const HOARD_BODY: &str = r#"
    (block $full
      (loop $grow
        (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (memory.fill (i32.shl (i32.sub (memory.size) (i32.const 1)) (i32.const 16)) (i32.const 1) (i32.const 65536))
        (br $grow)))
    (loop $l (br $l))
    unreachable"#;

fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/self/status");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A client outside the executor, like a request arriving over the network:
/// it hands one call of the well-behaved agent to the runtime, waits for the
/// answer, and records the latency from hand-over to answer (queueing
/// included), then pauses [`SPACING`] — `n` times or until `stop`.
fn client(
    handle: tokio::runtime::Handle,
    rt: Arc<Runtime>,
    p: Prepared,
    n: usize,
    stop: Option<Arc<AtomicBool>>,
) -> std::thread::JoinHandle<(Vec<Duration>, u64)> {
    std::thread::spawn(move || {
        let mut latencies = Vec::with_capacity(n.min(10_000));
        let mut rss_peak = 0;
        while latencies.len() < n && stop.as_ref().is_none_or(|s| !s.load(Ordering::Relaxed)) {
            let (tx, rx) = std::sync::mpsc::channel();
            let (rt, p) = (rt.clone(), p.clone());
            let start = Instant::now();
            handle.spawn(async move {
                let r = rt.solve(&p, &task("work", "still fair"), &CallOptions::default()).await;
                let _ = tx.send(r);
            });
            let r = rx.recv().expect("the call ran").expect("no host error");
            latencies.push(start.elapsed());
            assert_eq!(ok_output(&r).output, "still fair");
            rss_peak = rss_peak.max(vm_rss());
            std::thread::sleep(SPACING);
        }
        (latencies, rss_peak)
    })
}

#[derive(Clone, Copy, Debug)]
enum Attack {
    /// Core WAT `loop br` with fuel to spare: only the deadline ends it.
    Loop,
    /// Core WAT: take all the memory the limit allows, then spin on it.
    Hoard,
    /// The Rust guest's blocking `sleep` of an hour.
    Sleep,
    /// The Rust guest spinning on `Instant::now()`.
    ClockSpin,
}

const ATTACKS: [Attack; 4] = [Attack::Loop, Attack::Hoard, Attack::Sleep, Attack::ClockSpin];

#[test]
fn a_hundred_hostile_calls_do_not_starve_a_well_behaved_one() {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let handle = tokio_rt.handle().clone();
    let rt = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let limits = Limits { fuel: u64::MAX / 4, wall: HumanDuration(WINDOW), ..small_limits() };
    // 25 hoarders at once may hold 25 × 16 MiB.
    let hoard_limits = Limits { memory: ByteSize(16 << 20), ..limits.clone() };
    let (worker, p_loop, p_hoard, p_rust) = tokio_rt.block_on(async {
        let worker = prepare(&rt, &wat_component(&worker_wat()), Grant::minimal(small_limits())).await.unwrap();
        let looping = wat_component(&agent_wat(false, "", "(loop $l (br $l)) unreachable"));
        let hoarding = wat_component(&agent_wat(false, "", HOARD_BODY));
        let hostile = rust_guest("tests/guests/hostile");
        (
            worker,
            prepare(&rt, &looping, Grant::minimal(limits.clone())).await.unwrap(),
            prepare(&rt, &hoarding, Grant::minimal(hoard_limits)).await.unwrap(),
            prepare(&rt, &hostile, Grant::minimal(limits.clone())).await.unwrap(),
        )
    });

    // Warm up, then the solo latency.
    client(handle.clone(), rt.clone(), worker.clone(), 50, None).join().unwrap();
    let (mut solo, _) = client(handle.clone(), rt.clone(), worker.clone(), 400, None).join().unwrap();
    let solo_median = median(&mut solo);
    let rss_before = vm_rss();

    // The hostile load: one call each, every one ended by its deadline.
    let started = Instant::now();
    let mut hostile = Vec::new();
    for i in 0..HOSTILE_CALLS {
        let attack = ATTACKS[i % ATTACKS.len()];
        let rt = rt.clone();
        let (p, t) = match attack {
            Attack::Loop => (p_loop.clone(), task("attack", "")),
            Attack::Hoard => (p_hoard.clone(), task("attack", "")),
            Attack::Sleep => (p_rust.clone(), task("sleep", "3600")),
            Attack::ClockSpin => (p_rust.clone(), task("clock-spin", "3600")),
        };
        hostile.push(handle.spawn(async move {
            let r = rt.solve(&p, &t, &CallOptions::default()).await.expect("no host error");
            match &r.outcome {
                CallOutcome::Failed(f) => assert_eq!(f.kind, K::Deadline, "{attack:?}: {f}"),
                other => panic!("{attack:?}: expected the deadline, got {other:?}"),
            }
            if let Attack::Hoard = attack {
                assert_eq!(r.usage.memory_peak, 16 << 20, "{attack:?}: {:?}", r.usage);
            }
            r.usage.wall_ms
        }));
    }

    // The well-behaved agent, called while the load lasts.
    std::thread::sleep(Duration::from_millis(200));
    let stop = Arc::new(AtomicBool::new(false));
    let c = client(handle.clone(), rt.clone(), worker.clone(), usize::MAX, Some(stop.clone()));
    std::thread::sleep(WINDOW - Duration::from_millis(600));
    stop.store(true, Ordering::Relaxed);
    let (mut loaded, mut rss_peak) = c.join().unwrap();
    let loaded_median = median(&mut loaded);
    let p90 = loaded[loaded.len() * 9 / 10];
    let walls: Vec<u64> = tokio_rt.block_on(async {
        let mut walls = Vec::new();
        for h in hostile {
            walls.push(h.await.expect("a hostile call's checks failed"));
        }
        walls
    });
    rss_peak = rss_peak.max(vm_rss());
    let total = started.elapsed();

    eprintln!(
        "fairness: solo median {solo_median:?} ({} calls); with {HOSTILE_CALLS} hostile calls running, median \
         {loaded_median:?} ({} calls, p90 {p90:?}); ratio {:.2}; hostile calls ended after {}..{} ms; RSS \
         {} MiB before the load, peak {} MiB; {total:?} in all",
        solo.len(),
        loaded.len(),
        loaded_median.as_secs_f64() / solo_median.as_secs_f64(),
        walls.iter().min().unwrap(),
        walls.iter().max().unwrap(),
        rss_before >> 20,
        rss_peak >> 20,
    );
    assert!(loaded.len() >= 200, "the well-behaved agent got only {} calls through", loaded.len());
    assert!(
        loaded_median <= solo_median * 2,
        "median latency under load {loaded_median:?} is more than 2× the solo median {solo_median:?}"
    );
    assert!(rss_peak < RSS_BOUND, "resident memory peaked at {} MiB", rss_peak >> 20);
    // Every hostile call ended at its deadline, not long after.
    assert!(*walls.iter().max().unwrap() < WINDOW.as_millis() as u64 + 2000, "{walls:?}");
    drop(tokio_rt);
}
