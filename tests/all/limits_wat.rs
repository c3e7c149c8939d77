//! Runtime limits against hand-written core-WAT agents: each test asserts
//! the exact typed failure, then that a well-behaved agent on the same
//! runtime still answers.

use vivarium::caps::{Grant, Limits};
use vivarium::runtime::{CallOptions, CallOutcome};
use vivarium::{Error, GuestFailureKind as K};
use vivarium_tests::*;

const ECHO: &str = "(call $answer (local.get 6) (local.get 7))";

async fn assert_host_still_serves(rt: &vivarium::runtime::Runtime) {
    let echo = prepare(rt, &wat_component(&agent_wat(false, "", ECHO)), Grant::minimal(small_limits())).await.unwrap();
    let r = solve(rt, &echo, &task("echo", "still here")).await;
    assert_eq!(ok_output(&r).output, "still here");
}

async fn run_attack(
    extra: &str,
    body: &str,
    log: bool,
) -> (vivarium::runtime::Runtime, vivarium::runtime::CallReport<vivarium::runtime::bindings::Answer>) {
    let rt = runtime();
    let p = prepare(&rt, &wat_component(&agent_wat(log, extra, body)), Grant::minimal(small_limits())).await.unwrap();
    let r = solve(&rt, &p, &task("attack", "x")).await;
    (rt, r)
}

#[tokio::test]
async fn echo_answers_and_reports_usage() {
    let rt = runtime();
    let p = prepare(&rt, &wat_component(&agent_wat(false, "", ECHO)), Grant::minimal(small_limits())).await.unwrap();
    let r = solve(&rt, &p, &task("echo", "hello")).await;
    assert_eq!(ok_output(&r).output, "hello");
    assert!(r.usage.fuel > 0, "fuel is metered: {:?}", r.usage);
    assert_eq!(r.usage.memory_peak, 65536, "one page of memory");
}

#[tokio::test]
async fn endless_loop_runs_out_of_fuel() {
    let (rt, r) = run_attack("", "(loop $l (br $l)) unreachable", false).await;
    let f = failure(&r);
    assert_eq!(f.kind, K::OutOfFuel, "{f}");
    assert_eq!(r.usage.fuel, small_limits().fuel, "all fuel consumed");
    assert_host_still_serves(&rt).await;
}

#[tokio::test]
async fn endless_loop_with_huge_fuel_hits_the_deadline() {
    let rt = runtime();
    let mut limits = small_limits();
    limits.fuel = u64::MAX / 2;
    limits.wall = vivarium::units::HumanDuration(std::time::Duration::from_millis(300));
    let p =
        prepare(&rt, &wat_component(&agent_wat(false, "", "(loop $l (br $l)) unreachable")), Grant::minimal(limits))
            .await
            .unwrap();
    let r = solve(&rt, &p, &task("attack", "")).await;
    assert_eq!(failure(&r).kind, K::Deadline);
    assert!(r.usage.wall_ms >= 300 && r.usage.wall_ms < 300 + 2000, "ended near the wall limit: {:?}", r.usage);
    assert_host_still_serves(&rt).await;
}

#[tokio::test]
async fn memory_growth_hits_the_memory_limit() {
    let body =
        "(loop $l (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable)) (br $l)) unreachable";
    let (rt, r) = run_attack("", body, false).await;
    let f = failure(&r);
    assert_eq!(f.kind, K::MemoryLimit, "{f}");
    assert!(r.usage.memory_peak <= 64 << 20, "peak within the limit: {:?}", r.usage);
    assert!(f.detail.contains("the limit is 67108864 bytes"), "{f}");
    assert_host_still_serves(&rt).await;
}

#[tokio::test]
async fn unbounded_recursion_overflows_the_stack() {
    let extra =
        "(func $r (param i32) (result i32) (i32.add (call $r (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))";
    let (rt, r) = run_attack(extra, "(drop (call $r (i32.const 0))) unreachable", false).await;
    assert_eq!(failure(&r).kind, K::StackOverflow);
    assert_host_still_serves(&rt).await;
}

#[tokio::test]
async fn unreachable_is_a_trap_with_its_message() {
    let (rt, r) = run_attack("", "unreachable", false).await;
    let f = failure(&r);
    assert_eq!(f.kind, K::Trap);
    assert!(f.detail.contains("unreachable"), "{f}");
    assert_host_still_serves(&rt).await;
}

#[tokio::test]
async fn a_loop_in_the_start_function_is_bounded() {
    let extra = "(func $start (loop $l (br $l))) (start $start)";
    let (rt, r) = run_attack(extra, ECHO, false).await;
    assert_eq!(failure(&r).kind, K::OutOfFuel);
    assert_host_still_serves(&rt).await;
}

#[tokio::test]
async fn a_return_value_over_the_output_cap_is_refused() {
    // Just over the 1 MiB cap: lifted, measured, refused.
    let body = "(drop (memory.grow (i32.const 20))) (call $answer (i32.const 65536) (i32.const 1100000))";
    let (rt, r) = run_attack("", body, false).await;
    let f = failure(&r);
    assert_eq!(f.kind, K::MemoryLimit);
    assert_eq!(f.detail, "the guest returned 1100000 bytes; the output cap is 1048576 bytes");
    // 32 MiB: refused while copying, before the host allocates it.
    let body = "(drop (memory.grow (i32.const 520))) (call $answer (i32.const 65536) (i32.const 33554432))";
    let (_, r) = run_attack("", body, false).await;
    let f = failure(&r);
    assert_eq!(f.kind, K::MemoryLimit);
    assert_eq!(f.detail, "the guest tried to hand the host more than 1114112 bytes at once (output cap 1048576 bytes)");
    assert_host_still_serves(&rt).await;
}

#[tokio::test]
async fn an_out_of_bounds_return_pointer_is_a_trap() {
    let (rt, r) = run_attack("", "(call $answer (i32.const 65000) (i32.const 200000000))", false).await;
    assert_eq!(failure(&r).kind, K::Trap);
    assert_host_still_serves(&rt).await;
}

#[tokio::test]
async fn a_log_flood_is_capped_and_counted() {
    // 100_000 messages of 4 KiB each (400 MB offered); the log keeps its caps.
    let body = r#"(local $i i32)
      (loop $l
        (call $log (i32.const 2) (i32.const 0) (i32.const 4096))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (i32.const 100000))))
      (call $answer (local.get 6) (local.get 7))"#;
    let body = body.replacen("(local $i i32)", "", 1);
    let extra = "";
    let wat = agent_wat(true, extra, &body).replace(
        "(param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)",
        "(param i32 i32 i32 i32 i32 i32 i32 i32) (result i32) (local $i i32)",
    );
    let rt = runtime();
    // Fuel for the host's work of taking 400 MB in (one per byte).
    let limits = Limits { fuel: 1_000_000_000, ..small_limits() };
    let p = prepare(&rt, &wat_component(&wat), Grant::minimal(limits)).await.unwrap();
    let r = solve(&rt, &p, &task("flood", "done")).await;
    assert_eq!(ok_output(&r).output, "done");
    assert!(r.usage.fuel > 100_000 * 4096, "the host's work is in the fuel used: {:?}", r.usage);
    let kept: usize = r.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= 64 << 10, "kept bytes capped: {kept}");
    assert_eq!(r.log_usage.calls, 100_000);
    assert_eq!(r.log_usage.bytes, 100_000 * 4096);
    assert!(r.log_usage.dropped >= 100_000 - 1000, "{:?}", r.log_usage);
    assert_host_still_serves(&rt).await;
}

#[tokio::test]
async fn an_import_the_host_does_not_provide_is_refused_before_instantiation() {
    let rt = runtime();
    let bytes = wat::parse_str(
        r#"(component
             (import "evil:corp/backdoor" (instance (export "open" (func))))
             (import "vivarium:agent/teleporter@0.1.0" (instance)))"#,
    )
    .unwrap();
    let loaded = rt.load(&bytes).await.unwrap();
    match rt.prepare(&loaded, Grant::minimal(small_limits())) {
        Err(Error::Refused { what, detail }) => {
            assert_eq!(what, ["evil:corp/backdoor", "vivarium:agent/teleporter@0.1.0"]);
            assert!(detail.contains("package `evil:corp` is not provided by this host"), "{detail}");
            assert!(detail.contains("`teleporter` is not an interface of vivarium:agent@0.1.0"), "{detail}");
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal"),
    }
    assert_host_still_serves(&rt).await;
}

#[tokio::test]
async fn bytes_that_are_not_a_component_are_invalid_input() {
    let rt = runtime();
    for (bytes, needle) in [
        (&b"hello world"[..], "not a WebAssembly component"),
        (&b"\0asm\x01\0\0\0"[..], "core WebAssembly module, not a component"),
        (&b"(component (oops))"[..], "not valid WebAssembly text"),
    ] {
        match rt.load(bytes).await {
            Err(e @ Error::Invalid(_)) => {
                assert_eq!(e.exit_code() as i32, 2);
                assert!(e.to_string().contains(needle), "{e}");
            }
            Err(other) => panic!("expected invalid input, got {other}"),
            Ok(_) => panic!("expected invalid input"),
        }
    }
    assert_host_still_serves(&rt).await;
}

#[tokio::test]
async fn limits_can_only_be_tightened_per_call() {
    let rt = runtime();
    let p = prepare(
        &rt,
        &wat_component(&agent_wat(false, "", "(loop $l (br $l)) unreachable")),
        Grant::minimal(small_limits()),
    )
    .await
    .unwrap();
    let mut looser = small_limits();
    looser.fuel = u64::MAX / 2;
    let r = rt
        .solve(&p, &task("x", ""), &CallOptions { limits: Some(looser), scratch: None, ..CallOptions::default() })
        .await
        .unwrap();
    assert_eq!(r.limits.fuel, small_limits().fuel, "the grant's fuel stays the ceiling");
    assert!(matches!(r.outcome, CallOutcome::Failed(ref f) if f.kind == K::OutOfFuel));
}

/// Fuel is the deterministic measure of a call: the same loop costs the
/// same fuel on a runtime whose epoch ticks every 50 ms as on one ticking
/// every 20 µs (thousands more ticks, each a libcall through the host's
/// call hook). Charging the ticks made fuel vary with the machine's load.
#[tokio::test]
async fn fuel_does_not_depend_on_how_often_the_epoch_ticks() {
    let body = r#"
      (local.set 0 (i32.const 15000000))
      (loop $l
        (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
        (br_if $l (local.get 0)))
      (call $answer (local.get 6) (local.get 7))"#;
    let bytes = wat_component(&agent_wat(false, "", body));
    let mut fuel = Vec::new();
    for tick in [std::time::Duration::from_millis(50), std::time::Duration::from_micros(20)] {
        let rt = vivarium::runtime::Runtime::new(vivarium::runtime::RuntimeConfig {
            epoch_tick: tick,
            ..Default::default()
        })
        .unwrap();
        let p = prepare(&rt, &bytes, Grant::minimal(small_limits())).await.unwrap();
        let r = solve(&rt, &p, &task("count", "done")).await;
        assert_eq!(ok_output(&r).output, "done");
        assert!(r.usage.wall_ms >= 1, "the loop runs across several ticks: {:?}", r.usage);
        fuel.push(r.usage.fuel);
    }
    assert_eq!(fuel[0], fuel[1], "the same call, the same fuel, however often the epoch ticked");
    assert!(fuel[0] > 45_000_000, "the loop's instructions are counted: {fuel:?}");
}
