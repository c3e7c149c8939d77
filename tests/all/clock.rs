//! The `clock` service (`vivarium:agent/clock@0.2.0`) through a real guest:
//! a hand-written core-WAT agent importing it next to the 0.1.0 world,
//! answered in deterministic mode (so its readings are exact), counted in
//! the call's usage, and refused before instantiation when not granted.

use vivarium::caps::Grant;
use vivarium::services::clock::{ClockGrant, ClockUsage};
use vivarium_tests::*;

/// An agent that reads `elapsed`, `elapsed` again and `remaining`, and
/// answers the three readings as 16-digit hex numbers separated by spaces.
fn clock_agent() -> Vec<u8> {
    // Imports come before every function of the module.
    let imports = r#"(module
  (import "vivarium:agent/clock@0.2.0" "elapsed" (func $elapsed (result i64)))
  (import "vivarium:agent/clock@0.2.0" "remaining" (func $remaining (result i64)))"#;
    let extra = r#"
  (data (i32.const 512) "0123456789abcdef")
  (func $hex (param $v i64) (param $at i32)
    (local $i i32)
    (local.set $i (i32.const 15))
    (loop $digit
      (i32.store8 (i32.add (local.get $at) (local.get $i))
        (i32.load8_u offset=512 (i32.wrap_i64 (i64.and (local.get $v) (i64.const 15)))))
      (local.set $v (i64.shr_u (local.get $v) (i64.const 4)))
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br_if $digit (i32.ge_s (local.get $i) (i32.const 0)))))"#;
    let solve = r#"
    (call $hex (call $elapsed) (i32.const 600))
    (i32.store8 (i32.const 616) (i32.const 32))
    (call $hex (call $elapsed) (i32.const 617))
    (i32.store8 (i32.const 633) (i32.const 32))
    (call $hex (call $remaining) (i32.const 634))
    (call $answer (i32.const 600) (i32.const 50))"#;
    let core = agent_wat(false, extra, solve).replacen("(module", imports, 1);
    // The host embeds only the 0.1.0 world; this agent's world adds the
    // 0.2.0 `clock` import to it.
    let (mut resolve, _) = vivarium::wit::resolve().expect("the embedded WIT resolves");
    resolve.push_str("clock.wit", include_str!("../../wit-0.2.0/clock.wit")).expect("clock.wit parses");
    let pkg = resolve
        .push_str(
            "agent-with-clock.wit",
            "package test:clock;\nworld agent-with-clock {\n  include vivarium:agent/agent@0.1.0;\n  import vivarium:agent/clock@0.2.0;\n}\n",
        )
        .expect("the test world resolves");
    let world = resolve.select_world(&[pkg], Some("agent-with-clock")).unwrap();
    let mut module = wat::parse_str(&core).expect("the agent's core text parses");
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8).unwrap();
    wit_component::ComponentEncoder::default().validate(true).module(&module).unwrap().encode().unwrap()
}

fn clock_grant() -> Grant {
    Grant { limits: small_limits(), deterministic: Some(1), clock: Some(ClockGrant {}), ..Grant::default() }
}

#[tokio::test]
async fn a_guest_reads_the_calls_virtual_clock_in_deterministic_mode() {
    let rt = shared_runtime();
    let bytes = clock_agent();
    let loaded = rt.load(&bytes).await.unwrap();
    assert!(loaded.imports.iter().any(|i| i == "vivarium:agent/clock@0.2.0"), "{:?}", loaded.imports);
    let p = rt.prepare(&loaded, clock_grant()).unwrap();
    let wall = small_limits().wall.0.as_nanos() as u64;
    for _ in 0..2 {
        let r = solve(rt, &p, &task("what time is it", "")).await;
        // 1 ms a reading; `remaining` is the wall limit less the virtual time.
        let expected = format!("{:016x} {:016x} {:016x}", 1_000_000, 2_000_000, wall - 3_000_000);
        assert_eq!(ok_output(&r).output, expected, "every call starts its clock at 0");
        assert_eq!(r.services.clock, Some(ClockUsage { readings: 3 }));
    }
}

#[tokio::test]
async fn a_guest_importing_the_clock_without_the_grant_is_refused_and_the_host_carries_on() {
    let rt = shared_runtime();
    let bytes = clock_agent();
    let loaded = rt.load(&bytes).await.unwrap();
    let no_clock = Grant { clock: None, ..clock_grant() };
    match rt.prepare(&loaded, no_clock) {
        Err(vivarium::Error::Refused { what, detail }) => {
            assert_eq!(what, ["vivarium:agent/clock@0.2.0"]);
            assert!(detail.contains("capability `clock` is not granted to this variant"), "{detail}");
        }
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("an ungranted clock import was linked"),
    }
    // The same component under the grant still runs on the same runtime.
    let p = rt.prepare(&loaded, clock_grant()).unwrap();
    let r = solve(rt, &p, &task("again", "")).await;
    assert_eq!(r.services.clock, Some(ClockUsage { readings: 3 }));
}
