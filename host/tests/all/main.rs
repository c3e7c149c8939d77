//! Tests of the `vivarium` binary as a user runs it: one binary, so the
//! host library is linked once for all of them. Each module is one subject.
//!
//! What goes where (CONTRIBUTING.md has the rule): a test that drives the
//! built `vivarium` executable (its CLI contract, `serve`, `evolve` killed
//! and resumed) or needs a child process of it lives here; a test that runs
//! variants in process through the library lives in `tests/all`; unit tests
//! live next to their code.
//!
//! Run one subject with `cargo test -p vivarium --test all <module>::`.

/// The CLI contract: `--json` shapes, exit codes, `$VIVARIUM_HOME`.
mod cli;
/// `evolve` on a real local Ray cluster (`[cluster] engine = "ray"`),
/// compared with the same run on `local`; workers and the coordinator killed.
mod cluster;
/// `variants/coder` evolving on HumanEval against the scripted server:
/// patch edits, workbench tries, the key kept in the host, replay; the
/// meta-agent's answers to unusable tool calls.
mod coder_evolve;
/// Out-of-process compilation in a `vivarium __compile` child.
mod compile;
/// `vivarium evolve` killed with SIGKILL and resumed, repeatedly.
mod evolve_resume;
/// `vivarium evolve` with a variant that asks the `llm` service for rewrites.
mod llm_evolve;
/// A home written by an earlier `vivarium` (`host/tests/fixtures/`):
/// verified, listed, reported and resumed by today's.
mod old_home;
/// `vivarium report`, the archive commands and `export-git`.
mod report;
/// `vivarium serve` over HTTP and in headless Chromium.
mod serve;
