//! Task files (`vivarium run --task`): any bytes either parse to a task or
//! are refused with a typed error; a parsed task round-trips; grading any
//! output against the suite never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vivarium::task::TaskSpec;
use vivarium::tasks;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(t) = TaskSpec::parse(text, "task.json") {
        let json = serde_json::to_string(&t).expect("a task serializes");
        assert_eq!(TaskSpec::parse(&json, "again.json").expect("a parsed task writes back"), t);
    }
    // The same bytes as a guest's answer, graded by the host.
    let suite = tasks::suite("arith").expect("the arith suite exists");
    for t in suite.visible.iter().chain(&suite.held_out).take(4) {
        let _ = tasks::grade(t, text);
    }
});
