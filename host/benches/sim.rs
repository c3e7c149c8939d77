//! The simulator's hot path: the host → guest reward callback, and
//! simulation steps per second with and without it.
//!
//! `cargo bench -p vivarium --bench sim` builds `variants/reward-shaper`
//! (wasm32-unknown-unknown, no WASI), instantiates its `reward-model` once
//! (as the `reward-design` suite does for a training run) and measures:
//!
//! * one `reward` call from the host, under fuel and an epoch deadline
//!   (target: under 200 ns, DESIGN.md);
//! * the same reward computed natively (a Rust closure), for the ratio;
//! * cart-pole steps per second with a linear policy, alone and with the
//!   guest's reward called on every step (what CEM training does).
//!
//! Besides criterion's report it prints the figures as one table.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use vivarium::build::{build_rust, RustTarget};
use vivarium::caps::{Grant, Limits};
use vivarium::runtime::{Runtime, RuntimeConfig};
use vivarium::sim::reward::RewardInstance;
use vivarium::sim::{run_episode, EnvKind, Episode, LinearPolicy, Transition};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Limits that a long benchmark cannot reach.
fn limits() -> Limits {
    Limits { fuel: u64::MAX / 4, wall: vivarium::units::HumanDuration(Duration::from_secs(3600)), ..Limits::default() }
}

const OBS: [f64; 4] = [0.01, -0.02, 0.03, 0.04];
const NEXT: [f64; 4] = [0.0096, 0.17, 0.0308, -0.24];

fn transition() -> Transition<'static> {
    Transition { env: EnvKind::Cartpole, obs: &OBS, action: 1.0, next_obs: &NEXT, terminated: false, env_reward: 1.0 }
}

/// The native twin of the variant's cart-pole reward (coefficient 0.3).
fn native_reward(t: &Transition<'_>) -> f64 {
    let th = t.next_obs[2] / 0.2095;
    1.0 - 0.3 * th * th
}

/// Median nanoseconds per iteration of `f`, over `rounds` rounds of `n`.
fn median_ns(rounds: usize, n: u64, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Steps per second of episodes of `policy`, `reward` called on each step.
fn steps_per_second(policy: &LinearPolicy, reward: &mut dyn FnMut(&Transition<'_>) -> Result<f64, ()>) -> f64 {
    let mut ep = Episode::new(EnvKind::Cartpole, 1);
    let mut steps = 0u64;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        steps += u64::from(run_episode(&mut ep, policy, 500, reward).expect("reward").steps);
    }
    steps as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let measuring = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list");
    let root = workspace_root();
    let component = build_rust(
        &root.join("variants/reward-shaper"),
        &vivarium::build::default_guest_target_dir(&root),
        RustTarget::Unknown,
        Duration::from_secs(900),
    )
    .expect("building variants/reward-shaper")
    .component;
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let loaded = tokio.block_on(rt.load(&component)).expect("load");
    let grant = Grant::minimal(limits());
    let p = rt.prepare(&loaded, grant.clone()).expect("prepare");
    let mut inst = RewardInstance::for_prepared(&rt, &p, None).expect("host").expect("instantiate");
    let t = transition();
    assert_eq!(inst.call(&t).expect("reward"), 1.0 - 0.0 * (NEXT[2] / 0.2095).powi(2));

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("reward_callback/guest", |b| b.iter(|| black_box(inst.call(black_box(&t)).unwrap())));
    c.bench_function("reward_callback/native", |b| b.iter(|| black_box(native_reward(black_box(&t)))));
    c.final_summary();
    if !measuring {
        return;
    }

    let guest_ns = median_ns(15, 200_000, || {
        black_box(inst.call(black_box(&t)).unwrap());
    });
    let native_ns = median_ns(15, 200_000, || {
        black_box(native_reward(black_box(&t)));
    });
    let policy = LinearPolicy::new(EnvKind::Cartpole, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]).unwrap();
    let plain = steps_per_second(&policy, &mut |t| Ok(t.env_reward));
    let with_guest = steps_per_second(&policy, &mut |t| inst.call(t).map_err(|_| ()));
    let usage = inst.usage();
    println!();
    println!("simulator hot path (reward-shaper, wasm32-unknown-unknown, fuel + epoch deadline on)");
    println!(
        "  reward callback, host -> guest      {guest_ns:>9.1} ns/call   target < 200 ns: {}",
        if guest_ns < 200.0 { "met" } else { "MISSED" }
    );
    println!(
        "  the same reward, native Rust        {native_ns:>9.1} ns/call   guest/native {:.0}x",
        guest_ns / native_ns
    );
    println!("  cart-pole steps, env reward only    {:>9.2} M steps/s", plain / 1e6);
    println!(
        "  cart-pole steps, guest reward each  {:>9.2} M steps/s   ({:.1} ns/step)",
        with_guest / 1e6,
        1e9 / with_guest
    );
    println!("  fuel per reward call                {:>9.0}", usage.fuel as f64 / usage.calls.max(1) as f64);
}
