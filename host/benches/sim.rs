//! The simulator's hot path: the host → guest reward callback, and
//! simulation steps per second with and without it.
//!
//! `cargo bench -p vivarium --bench sim` builds `variants/reward-shaper`
//! (wasm32-unknown-unknown, no WASI), instantiates its `reward-model` once
//! (as the `reward-design` suite does for a training run) and measures:
//!
//! * the per-transition cost of the guest's reward, under fuel and an
//!   epoch deadline (target: under 200 ns, DESIGN.md): one `rewards` call
//!   per transition (a batch of 1) and one per chunk of `cem::CHUNK` (256)
//!   transitions, as CEM training calls it;
//! * the same reward computed natively (a Rust closure), for the ratio;
//! * cart-pole and walker (rapier2d) steps per second of CEM training,
//!   with the environment's reward and with the guest's (batched).
//!
//! Besides criterion's report it prints the figures as one table.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use vivarium::build::{build_rust, RustTarget};
use vivarium::caps::{Grant, Limits};
use vivarium::runtime::reward::RewardInstance;
use vivarium::runtime::{Runtime, RuntimeConfig};
use vivarium::sim::{cem, EnvKind, Step, Transition};

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

/// Steps per second of CEM training on `kind` with `rewards`, and the steps.
fn training_steps_per_second(
    kind: EnvKind,
    rewards: &mut dyn FnMut(EnvKind, &[Step]) -> Result<Vec<f64>, ()>,
) -> (f64, u64) {
    let cfg = cem::CemConfig { seed: 4, ..cem::CemConfig::default() };
    let t = Instant::now();
    let mut steps = 0u64;
    while t.elapsed() < Duration::from_millis(1000) {
        steps += cem::train_batched(kind, &cfg, rewards).expect("reward").steps;
    }
    (steps as f64 / t.elapsed().as_secs_f64(), steps)
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
    assert_eq!(inst.reward(&t).expect("reward"), 1.0 - 0.0 * (NEXT[2] / 0.2095).powi(2));
    let mut step = Step { action: 1.0, env_reward: 1.0, ..Step::default() };
    step.obs[..4].copy_from_slice(&OBS);
    step.next_obs[..4].copy_from_slice(&NEXT);
    let chunk = vec![step; cem::CHUNK];
    assert_eq!(inst.rewards(EnvKind::Cartpole, &chunk).expect("rewards").len(), cem::CHUNK);

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("reward_callback/guest_single", |b| b.iter(|| black_box(inst.reward(black_box(&t)).unwrap())));
    c.bench_function("reward_callback/guest_chunk_256", |b| {
        b.iter(|| black_box(inst.rewards(EnvKind::Cartpole, black_box(&chunk)).unwrap()))
    });
    c.bench_function("reward_callback/native", |b| b.iter(|| black_box(native_reward(black_box(&t)))));
    c.final_summary();
    if !measuring {
        return;
    }

    let single_ns = median_ns(15, 100_000, || {
        black_box(inst.reward(black_box(&t)).unwrap());
    });
    let chunk_ns = median_ns(15, 1_000, || {
        black_box(inst.rewards(EnvKind::Cartpole, black_box(&chunk)).unwrap());
    }) / cem::CHUNK as f64;
    let native_ns = median_ns(15, 200_000, || {
        black_box(native_reward(black_box(&t)));
    });
    let env_reward = |env: EnvKind, s: &[Step]| Ok(s.iter().map(|s| s.transition(env).env_reward).collect());
    let (plain, _) = training_steps_per_second(EnvKind::Cartpole, &mut { env_reward });
    let before = inst.usage();
    let (with_guest, guest_steps) =
        training_steps_per_second(EnvKind::Cartpole, &mut |env, s| inst.rewards(env, s).map_err(|_| ()));
    let usage = inst.usage();
    let (walker_plain, _) = training_steps_per_second(EnvKind::Walker, &mut { env_reward });
    let (walker_guest, _) =
        training_steps_per_second(EnvKind::Walker, &mut |env, s| inst.rewards(env, s).map_err(|_| ()));
    println!();
    println!("simulator hot path (reward-shaper, wasm32-unknown-unknown, fuel + epoch deadline on)");
    println!("  reward, one call per transition     {single_ns:>9.1} ns/transition");
    println!(
        "  reward, one call per 256 (batched)  {chunk_ns:>9.1} ns/transition   target < 200 ns: {}",
        if chunk_ns < 200.0 { "met" } else { "MISSED" }
    );
    println!(
        "  the same reward, native Rust        {native_ns:>9.1} ns/transition   batched guest/native {:.0}x",
        chunk_ns / native_ns
    );
    println!("  CEM on cart-pole, env reward        {:>9.2} M steps/s", plain / 1e6);
    println!(
        "  CEM on cart-pole, guest reward      {:>9.2} M steps/s   ({:.1} ns/step)",
        with_guest / 1e6,
        1e9 / with_guest
    );
    println!(
        "  fuel per transition (batched)       {:>9.0}",
        (usage.fuel - before.fuel) as f64 / guest_steps.max(1) as f64
    );
    println!(
        "  CEM on the walker, env reward       {:>9.0} k steps/s   ({:.1} µs/step)",
        walker_plain / 1e3,
        1e6 / walker_plain
    );
    println!(
        "  CEM on the walker, guest reward     {:>9.0} k steps/s   (the callback adds {:.1} %)",
        walker_guest / 1e3,
        100.0 * (walker_plain / walker_guest - 1.0)
    );
}
