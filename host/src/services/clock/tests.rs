use std::time::Duration;

use super::wit::Host;
use super::*;
use crate::caps::Denial;
use crate::services::testing::TestEnvironment;

fn clock_env() -> TestEnvironment {
    TestEnvironment::new().manifest("clock = {}").policy("clock = true")
}

/// Asked for and allowed: granted, with its provenance line; the grant's
/// `as_request` asks for it again.
#[test]
fn the_clock_is_granted_when_asked_for_and_allowed() {
    let r = clock_env().resolve();
    assert!(r.refusal().is_none(), "{:?}", r.denials);
    assert_eq!(r.grant.clock, Some(ClockGrant {}));
    assert!(r.grant.service_granted("clock"));
    let line = r.provenance_of("clock").expect("a provenance line");
    assert_eq!(line.value, "the call's elapsed and remaining time");
    assert_eq!(r.grant.as_request().0.clock, Some(ClockRequest {}));
}

/// A policy that does not allow it denies it, naming the service.
#[test]
fn a_policy_without_the_clock_denies_it() {
    let r = TestEnvironment::new().manifest("clock = {}").resolve();
    assert_eq!(r.grant.clock, None);
    assert_eq!(
        r.denials,
        [Denial {
            capability: "clock".into(),
            requested: "the call's elapsed and remaining time".into(),
            reason: "the policy does not allow the clock service".into(),
        }]
    );
    assert!(r.refusal().is_some());
}

/// Not asked for: not granted, no usage, even where the policy allows it.
#[tokio::test]
async fn a_clock_not_asked_for_reports_no_usage() {
    let call = TestEnvironment::new().policy("clock = true").call();
    assert_eq!(call.grant.clock, None);
    assert_eq!(call.services.clock.usage(), None);
    assert!(call.services.finish().await.clock.is_none());
}

/// Real time: `elapsed` never goes back, and `elapsed + remaining` stays
/// within the call's wall limit; every reading is counted.
#[tokio::test]
async fn elapsed_is_monotonic_and_remaining_ends_at_the_wall_limit() {
    let mut env = clock_env();
    env.wall = Duration::from_secs(2);
    let call = env.call();
    let mut clock = call.services.clock.clone();
    let mut last = 0;
    for _ in 0..100 {
        let e = clock.elapsed().await.unwrap();
        assert!(e >= last, "{e} < {last}");
        last = e;
    }
    std::thread::sleep(Duration::from_millis(5));
    let e = clock.elapsed().await.unwrap();
    assert!(e >= last + 5_000_000, "5 ms slept, {e} ns read after {last}");
    let left = clock.remaining().await.unwrap();
    assert!(left <= 2_000_000_000 - e, "{left} left after {e}");
    assert!(left > 1_000_000_000, "{left}: most of the 2 s is left");
    assert_eq!(call.services.clock.usage(), Some(ClockUsage { readings: 102 }));
    assert_eq!(call.services.finish().await.clock, Some(ClockUsage { readings: 102 }));
}

/// Deterministic mode: the clock is virtual, 1 ms a reading, and two calls
/// read the same values.
#[tokio::test]
async fn in_deterministic_mode_two_calls_read_the_same_virtual_time() {
    let mut env = TestEnvironment::new().manifest("clock = {}\ndeterministic = { seed = 3 }").policy("clock = true");
    env.wall = Duration::from_secs(1);
    let mut readings = Vec::new();
    for _ in 0..2 {
        let call = env.call();
        assert_eq!(call.grant.deterministic, Some(3));
        let mut clock = call.services.clock.clone();
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(clock.elapsed().await.unwrap());
            seen.push(clock.remaining().await.unwrap());
        }
        readings.push(seen);
    }
    assert_eq!(readings[0], [1_000_000, 998_000_000, 3_000_000, 996_000_000, 5_000_000, 994_000_000]);
    assert_eq!(readings[0], readings[1]);
}

/// Past the deadline `remaining` is 0, not an underflow, and the call
/// goes on reading.
#[tokio::test]
async fn past_the_deadline_remaining_is_zero() {
    let mut env = clock_env();
    env.wall = Duration::ZERO;
    let call = env.call();
    let mut clock = call.services.clock.clone();
    std::thread::sleep(Duration::from_millis(1));
    assert_eq!(clock.remaining().await.unwrap(), 0);
    assert!(clock.elapsed().await.unwrap() >= 1_000_000);
}
