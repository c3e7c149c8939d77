//! What a Ray cluster costs and gives, measured in one run on this machine
//! (`cargo bench -p vivarium --bench cluster`; it starts its own local
//! clusters from the Ray that `scripts/setup.sh` installs):
//!
//! * the overhead a Ray evaluation adds per task: one task graded through
//!   [`RayCluster::run_tasks`] (warm worker) against the same task graded
//!   locally ([`tasks::run_tasks`]), medians of repeated calls;
//! * the throughput of a suite's evaluation (the arith suite's 18 tasks,
//!   both splits) locally, on one worker node and on two (a head plus N
//!   one-CPU worker nodes, `slots` = N).
//!
//! The variant spins a fixed number of loop iterations per task (about as
//! much work as a small model-written solution) and answers a constant, so
//! the work per task is the same everywhere.

use std::time::{Duration, Instant};

use vivarium::caps::{Grant, Limits};
use vivarium::cluster::local::LocalCluster;
use vivarium::cluster::{ClusterConfig, Engine, RayCluster};
use vivarium::runtime::{CallOptions, Prepared};
use vivarium::tasks::{self, GradedTask, Suite};
use vivarium::variant::Session;

/// Loop iterations per `solve`.
const SPIN: u32 = 3_000_000;
/// Single-task calls per median.
const CALLS: usize = 30;
/// Suite evaluations per median.
const SUITES: usize = 5;

fn spinner() -> Vec<u8> {
    let wat = include_str!("../src/cluster/spinner.wat").replace("ANSWER", "0").replace("SPIN", &SPIN.to_string());
    vivarium::componentize::from_core_module(wat.as_bytes(), true).expect("the spinner componentizes")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn local(session: &Session, p: &Prepared, suite: &Suite, t: &[GradedTask], held: bool) -> Duration {
    let start = Instant::now();
    let (r, _) = tasks::run_tasks(session, p, suite, t, held, &CallOptions::default()).await.unwrap();
    assert_eq!(r.len(), t.len());
    start.elapsed()
}

async fn remote(
    c: &RayCluster,
    session: &Session,
    bytes: &[u8],
    p: &Prepared,
    suite: &Suite,
    t: &[GradedTask],
    held: bool,
) -> Duration {
    let start = Instant::now();
    let (r, _) = c.run_tasks(&session.audit, None, bytes, p, suite, t, held, &CallOptions::default()).await.unwrap();
    assert_eq!(r.len(), t.len());
    start.elapsed()
}

/// Both splits of the suite, as an evaluation grades them.
async fn suite_local(session: &Session, p: &Prepared, suite: &Suite) -> Duration {
    local(session, p, suite, &suite.visible, false).await + local(session, p, suite, &suite.held_out, true).await
}

async fn suite_remote(c: &RayCluster, session: &Session, bytes: &[u8], p: &Prepared, suite: &Suite) -> Duration {
    // The splits go out together, as a staged evaluation's second stage does.
    let start = Instant::now();
    futures::join!(
        remote(c, session, bytes, p, suite, &suite.visible, false),
        remote(c, session, bytes, p, suite, &suite.held_out, true)
    );
    start.elapsed()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let session = Session::open(vivarium::home::Home::at(tmp.path())).unwrap();
        let bytes = spinner();
        let loaded = session.runtime.load(&bytes).await.unwrap();
        let limits = Limits { fuel: 1_000_000_000, ..Limits::default() };
        let p = session.runtime.prepare(&loaded, Grant::minimal(limits)).unwrap();
        let suite = tasks::arith::suite();
        let one = &suite.visible[..1];
        let n_tasks = suite.visible.len() + suite.held_out.len();

        local(&session, &p, &suite, one, false).await; // warm

        // Each Ray figure is taken interleaved with the same local figure,
        // so both see the same machine (this one is shared and its load
        // moves).
        let mut rows = Vec::new();
        for nodes in [1u32, 2] {
            let started = Instant::now();
            let cluster = LocalCluster::start(nodes).expect("a local Ray cluster (scripts/setup.sh installs Ray)");
            let config = ClusterConfig {
                engine: Engine::Ray,
                address: Some(cluster.address.clone()),
                slots: Some(nodes),
                worker_command: Some(env!("CARGO_BIN_EXE_vivarium").into()),
                ..ClusterConfig::default()
            };
            let c = RayCluster::connect(&config, &tmp.path().join(format!("driver-{nodes}"))).await.unwrap();
            println!("{nodes} worker node(s) up and connected in {:.1} s", started.elapsed().as_secs_f64());
            // Warm every worker: a suite spreads over all slots.
            for _ in 0..2 {
                suite_remote(&c, &session, &bytes, &p, &suite).await;
            }
            if nodes == 1 {
                let (mut l, mut r) = (Vec::new(), Vec::new());
                for _ in 0..CALLS {
                    l.push(local(&session, &p, &suite, one, false).await);
                    r.push(remote(&c, &session, &bytes, &p, &suite, one, false).await);
                }
                let (l, r) = (median(l), median(r));
                println!(
                    "one task: local {:.2} ms, ray (1 node) {:.2} ms: {:+.2} ms per task ({:.2}x)",
                    ms(l),
                    ms(r),
                    ms(r) - ms(l),
                    ms(r) / ms(l)
                );
            }
            let (mut l, mut r) = (Vec::new(), Vec::new());
            for _ in 0..SUITES {
                l.push(suite_local(&session, &p, &suite).await);
                r.push(suite_remote(&c, &session, &bytes, &p, &suite).await);
            }
            let (l, r) = (median(l), median(r));
            let rate = |d: Duration| n_tasks as f64 / d.as_secs_f64();
            println!(
                "the suite ({n_tasks} tasks): local {:.0} ms ({:.1} tasks/s), ray on {nodes} node(s) {:.0} ms ({:.1} tasks/s)",
                ms(l),
                rate(l),
                ms(r),
                rate(r)
            );
            rows.push((rate(l), rate(r)));
            drop(c);
            drop(cluster);
        }
        println!(
            "throughput: 1 node {:.1} tasks/s (local then {:.1}); 2 nodes {:.1} tasks/s (local then {:.1}); 2 nodes / 1 node {:.2}x",
            rows[0].1,
            rows[0].0,
            rows[1].1,
            rows[1].0,
            rows[1].1 / rows[0].1
        );
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
