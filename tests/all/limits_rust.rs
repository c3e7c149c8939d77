//! Runtime limits and containment against a hostile Rust guest
//! (`tests/guests/hostile`), built with the real toolchain for
//! `wasm32-wasip2`. Every test asserts the exact outcome, then that a
//! well-behaved call on the same host succeeds.

use std::time::Duration;

use vivarium::caps::{Grant, Limits};
use vivarium::runtime::Prepared;
use vivarium::units::{ByteSize, HumanDuration};
use vivarium::GuestFailureKind as K;
use vivarium_tests::*;

async fn hostile(limits: Limits) -> Prepared {
    let bytes = rust_guest("tests/guests/hostile");
    prepare(shared_runtime(), &bytes, Grant::minimal(limits)).await.expect("hostile guest loads")
}

async fn attack(
    instruction: &str,
    input: &str,
    limits: Limits,
) -> vivarium::runtime::CallReport<vivarium::runtime::bindings::Answer> {
    let p = hostile(limits).await;
    let r = solve(shared_runtime(), &p, &task(instruction, input)).await;
    // The host carries on: a well-behaved call right after succeeds.
    let ok = solve(shared_runtime(), &p, &task("ok", "")).await;
    assert_eq!(ok_output(&ok).output, "fine");
    r
}

fn short_wall(ms: u64) -> Limits {
    Limits { fuel: u64::MAX / 4, wall: HumanDuration(Duration::from_millis(ms)), ..small_limits() }
}

#[tokio::test]
async fn endless_loop_is_out_of_fuel() {
    let r = attack("loop", "", small_limits()).await;
    assert_eq!(failure(&r).kind, K::OutOfFuel);
}

#[tokio::test]
async fn memory_growth_is_a_memory_limit() {
    let r = attack("grow-memory", "", small_limits()).await;
    let f = failure(&r);
    assert_eq!(f.kind, K::MemoryLimit, "{f}");
    assert!(r.usage.memory_peak <= 64 << 20);
}

#[tokio::test]
async fn unbounded_recursion_is_a_stack_overflow() {
    let r = attack("recurse", "", small_limits()).await;
    assert_eq!(failure(&r).kind, K::StackOverflow);
}

#[tokio::test]
async fn a_panic_is_a_trap_carrying_the_guest_message() {
    let r = attack("panic", "boom", small_limits()).await;
    let f = failure(&r);
    assert_eq!(f.kind, K::Trap);
    assert!(f.detail.contains("hostile panic: boom"), "{f}");
}

#[tokio::test]
async fn process_exit_is_a_trap() {
    let r = attack("exit", "3", small_limits()).await;
    assert_eq!(failure(&r).kind, K::Trap);
}

#[tokio::test]
async fn an_hour_of_blocking_sleep_ends_at_the_deadline() {
    let r = attack("sleep", "", short_wall(1000)).await;
    assert_eq!(failure(&r).kind, K::Deadline);
    assert!(r.usage.wall_ms >= 1000 && r.usage.wall_ms < 1000 + 1500, "{:?}", r.usage);
}

#[tokio::test]
async fn spinning_on_the_clock_ends_at_the_deadline() {
    let r = attack("clock-spin", "3600", short_wall(1000)).await;
    assert_eq!(failure(&r).kind, K::Deadline);
    assert!(r.usage.wall_ms < 1000 + 1500, "{:?}", r.usage);
}

#[tokio::test]
async fn etc_passwd_is_not_reachable() {
    let r = attack("read-file", "/etc/passwd", small_limits()).await;
    let out = &ok_output(&r).output;
    assert!(out.starts_with("error: "), "{out}");
    assert!(!out.contains("root:"), "{out}");
}

#[tokio::test]
async fn the_root_directory_cannot_be_listed() {
    let r = attack("list-dir", "/", small_limits()).await;
    let out = &ok_output(&r).output;
    assert!(out.starts_with("error: "), "{out}");
}

#[tokio::test]
async fn the_host_environment_does_not_reach_the_guest() {
    // The host has a secret in its environment (`VIVARIUM_TEST_SECRET_TOKEN`).
    init_env();
    assert_eq!(std::env::var("VIVARIUM_TEST_SECRET_TOKEN").as_deref(), Ok("hunter2"));
    let r = attack("env", "", small_limits()).await;
    assert_eq!(ok_output(&r).output, "vars: []\nargs: []");
}

#[tokio::test]
async fn a_200_mb_return_value_is_refused() {
    let mut limits = small_limits();
    limits.memory = ByteSize(512 << 20);
    limits.fuel = 20_000_000_000;
    let r = attack("huge-return", "200000000", limits).await;
    let f = failure(&r);
    assert_eq!(f.kind, K::MemoryLimit, "{f}");
    assert_eq!(f.detail, "the guest tried to hand the host more than 1114112 bytes at once (output cap 1048576 bytes)");
}

#[tokio::test]
async fn a_200_mb_return_value_under_a_small_memory_limit_never_exists() {
    let r = attack("huge-return", "200000000", small_limits()).await;
    let f = failure(&r);
    assert_eq!(f.kind, K::MemoryLimit, "{f}");
    assert!(f.detail.contains("the limit is 67108864 bytes"), "{f}");
}

#[tokio::test]
async fn a_log_flood_is_bounded() {
    // 1.3 GB offered: the host's work taking it in is charged to fuel (one
    // per byte, 1000 per call), so the call needs fuel for it.
    let r = attack("log-flood", "20000:65536", Limits { fuel: 2_000_000_000, ..small_limits() }).await;
    assert_eq!(ok_output(&r).output, "logged 20000 messages of 65536 bytes");
    assert!(r.usage.fuel > 20_000 * 65_536, "the host's work is in the fuel used: {:?}", r.usage);
    assert_eq!(r.log_usage.calls, 20000);
    let kept: usize = r.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= 64 << 10, "{kept}");
    assert!(r.log_usage.dropped >= 20000 - 1000);
}

#[tokio::test]
async fn a_stdout_flood_is_bounded() {
    let limits = Limits { fuel: 20_000_000_000, ..small_limits() };
    let r = attack("stdout-flood", "20000", limits).await;
    assert_eq!(ok_output(&r).output, "printed 20000 lines");
    let kept: usize = r.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= 64 << 10, "{kept}");
    assert!(r.logs.iter().all(|l| l.level == "stdout"));
    assert!(r.log_usage.dropped > 19000, "{:?}", r.log_usage);
}
