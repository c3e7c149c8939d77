//! The `simulator` service, the `reward-model`
//! callback and the `reward-design` suite.
//!
//! The guest is `tests/guests/sim` (a `reward-designer` world component
//! built for wasm32-wasip2): `solve` runs a script of simulator calls, and
//! its reward function is honest for cart-pole and hostile for the other
//! environments (an endless loop, a panic, a memory bomb).

use vivarium::audit::EventKind;
use vivarium::caps::Grant;
use vivarium::home::Home;
use vivarium::runtime::reward::RewardInstance;
use vivarium::runtime::{CallOptions, Prepared, Runtime};
use vivarium::services::simulator::SimulatorGrant;
use vivarium::services::simulator::SimulatorUsage;
use vivarium::sim::{cem, EnvKind, Episode, LinearPolicy, Step, Transition};
use vivarium::tasks::{self, reward_design};
use vivarium::variant::Session;
use vivarium::{Error, GuestFailureKind};
use vivarium_tests::*;

const GUEST: &str = "tests/guests/sim";

fn sim_grant(envs: &[&str], steps: u64) -> Grant {
    Grant {
        simulator: Some(SimulatorGrant { envs: envs.iter().map(|s| s.to_string()).collect(), steps }),
        ..Grant::minimal(small_limits())
    }
}

async fn prepared(rt: &Runtime, g: Grant) -> Prepared {
    prepare(rt, &rust_guest(GUEST), g).await.expect("prepare")
}

async fn script(rt: &Runtime, p: &Prepared, s: &str) -> (Vec<String>, SimulatorUsage) {
    let r = rt.solve(p, &task("script", s), &CallOptions::default()).await.expect("host error");
    let lines = ok_output(&r).output.lines().map(str::to_string).collect();
    (lines, r.services.simulator.clone().expect("granted"))
}

fn nums(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(",")
}

#[tokio::test]
async fn steps_match_the_host_environment_and_are_deterministic() {
    let rt = shared_runtime();
    let p = prepared(rt, sim_grant(&["cartpole", "mountain-car"], 1000)).await;
    let s = "make cartpole 5\nreset 1\nstep 1 1\nstep 1 0\nmake mountain-car 2\nreset 2\nstep 2 2\nleft";
    let (a, usage) = script(rt, &p, s).await;
    let (b, _) = script(rt, &p, s).await;
    assert_eq!(a, b, "the same seed gives the same episode");
    assert_eq!(a[0], "ok 1 obs=4 act=2 discrete=true max=500 policy=10");
    assert_eq!(a[4], "ok 2 obs=2 act=3 discrete=true max=200 policy=9");
    // The guest sees exactly what the host's own environment computes.
    let mut ep = Episode::new(EnvKind::Cartpole, 5);
    ep.reset();
    assert_eq!(a[1], format!("ok {}", nums(&ep.observation())));
    let o = ep.step(&[1.0]);
    assert_eq!(a[2], format!("ok reward=1 term=false trunc=false obs={}", nums(&ep.observation())));
    assert!(!o.terminated);
    ep.step(&[0.0]);
    assert_eq!(a[3], format!("ok reward=1 term=false trunc=false obs={}", nums(&ep.observation())));
    assert!(a[6].starts_with("ok reward=-1 term=false trunc=false obs="), "{}", a[6]);
    assert_eq!(a[7], "997");
    assert_eq!(usage, SimulatorUsage { budget: 1000, steps: 3, envs_made: 2, resets: 2, ..SimulatorUsage::default() });
}

#[tokio::test]
async fn the_walker_takes_four_motor_commands_and_matches_the_host() {
    let rt = shared_runtime();
    let p = prepared(rt, sim_grant(&["walker"], 100)).await;
    let s = "make walker 3\nreset 1\nstep 1 0.5,-0.5,1,0\nstep 1 1\nstep 1 0,0,nan,0\nleft";
    let (a, usage) = script(rt, &p, s).await;
    assert_eq!(a, script(rt, &p, s).await.0, "the same seed gives the same episode");
    assert_eq!(a[0], "ok 1 obs=15 act=4 discrete=false max=250 policy=64");
    let mut ep = Episode::new(EnvKind::Walker, 3);
    ep.reset();
    assert_eq!(a[1], format!("ok {}", nums(&ep.observation())));
    let o = ep.step(&[0.5, -0.5, 1.0, 0.0]);
    let want = format!("ok reward={} term=false trunc=false obs={}", o.reward, nums(&ep.observation()));
    assert_eq!(a[2], want);
    assert_eq!(a[3], "err invalid-action: walker takes an action of 4 numbers; got 1");
    // "nan" parses as NaN in the guest: refused, nothing stepped.
    assert!(a[4].starts_with("err invalid-action: walker takes finite motor commands"), "{}", a[4]);
    assert_eq!(a[5], "99");
    assert_eq!(usage.steps, 1);
    assert_eq!(usage.invalid, 2);
}

#[tokio::test]
async fn step_budget_is_enforced_with_a_typed_error_and_audited() {
    let home = tempfile::tempdir().unwrap();
    let session = Session::open(Home::at(home.path())).unwrap();
    let loaded = session.runtime.load(&rust_guest(GUEST)).await.unwrap();
    let p = session.runtime.prepare(&loaded, sim_grant(&["cartpole"], 100)).unwrap();
    let s = "make cartpole 1\nrun 1 1 150\nleft\nstep 1 1\nrollout cartpole 1 500 0,0,0,0,0,0,0,0,0,0";
    let r = session.solve(&p, &task("script", s), &CallOptions::default()).await.unwrap();
    let out: Vec<&str> = ok_output(&r).output.lines().collect();
    assert!(
        out[1].starts_with("err budget-exhausted: the simulator step budget of 100 steps for this call is used up"),
        "{}",
        out[1]
    );
    assert!(out[1].ends_with("after 100"), "{}", out[1]);
    assert_eq!(out[2], "0");
    assert!(out[3].starts_with("err budget-exhausted") || out[3].starts_with("err needs-reset"), "{}", out[3]);
    assert!(out[4].starts_with("err budget-exhausted"), "{}", out[4]);
    let usage = r.services.simulator.clone().unwrap();
    assert_eq!((usage.steps, usage.budget), (100, 100));
    assert!(usage.budget_exhausted >= 2, "{usage:?}");
    // The call's one `use` record carries the simulator usage.
    let uses = session.audit.query(&vivarium::audit::Filter::new().event(EventKind::Use)).unwrap();
    let sim = &uses.last().unwrap().details["services"]["simulator"];
    assert_eq!(sim["steps"], 100);
    assert_eq!(sim["budget"], 100);
    assert_eq!(sim["budget_exhausted"], usage.budget_exhausted);
    assert!(session.audit.verify().unwrap().ok);

    // A call's cap tightens the grant's budget.
    let opts = CallOptions { sim_steps: Some(10), ..CallOptions::default() };
    let r = session.runtime.solve(&p, &task("script", "make cartpole 1\nrun 1 1 50"), &opts).await.unwrap();
    assert!(ok_output(&r).output.ends_with("after 10"), "{}", ok_output(&r).output);
}

#[tokio::test]
async fn refusals_are_typed_and_say_what_to_do() {
    let rt = shared_runtime();
    let p = prepared(rt, sim_grant(&["cartpole"], 1000)).await;
    let s = "make acrobot 1\nmake humanoid 1\nmake cartpole 1\nstep 1 1\nreset 1\nstep 1 2\nstep 1 0.5\nstep 9 1\n\
             rollout cartpole 1 10 1,2,3\nrollout cartpole 3 500 0,0,0,0,0,0,1,1,1,0\nclose 1\nreset 1";
    let (out, usage) = script(rt, &p, s).await;
    assert!(out[0].starts_with("err denied: environment `acrobot` is not in this variant's grant"), "{}", out[0]);
    assert!(out[0].contains("simulator.envs"), "{}", out[0]);
    assert!(out[1].starts_with("err denied: `humanoid` is not an environment of this host"), "{}", out[1]);
    assert!(out[3].starts_with("err needs-reset:"), "{}", out[3]);
    assert!(out[5].starts_with("err invalid-action: cartpole takes a discrete action 0..2"), "{}", out[5]);
    assert!(out[6].starts_with("err invalid-action:"), "{}", out[6]);
    assert_eq!(out[7], "err unknown-handle: 9");
    assert!(
        out[8].starts_with("err invalid-action: a linear policy for cartpole has 10 parameters; got 3"),
        "{}",
        out[8]
    );
    // A balancing linear policy, rolled out by the host: the same as the host's own rollout.
    let policy = LinearPolicy::new(EnvKind::Cartpole, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]).unwrap();
    let host = vivarium::sim::rollout(EnvKind::Cartpole, 3, &policy, 500);
    assert_eq!(out[9], format!("ok total={} steps={} term={}", host.total_reward, host.steps, host.terminated));
    assert_eq!(out[9], "ok total=500 steps=500 term=false");
    assert_eq!(out[11], "err unknown-handle: 1");
    assert_eq!((usage.denied, usage.invalid, usage.rollouts, usage.steps), (2, 6, 1, 500));
}

#[tokio::test]
async fn simulator_import_without_grant_is_refused_at_load() {
    let rt = shared_runtime();
    let e = prepare(rt, &rust_guest(GUEST), Grant::minimal(small_limits())).await.err().expect("refused");
    let Error::Refused { what, detail } = e else { panic!("expected a refusal, got {e:?}") };
    assert_eq!(what, vec!["vivarium:agent/simulator@0.1.0".to_string()]);
    assert!(detail.contains("capability `simulator` is not granted to this variant"), "{detail}");
}

#[tokio::test]
async fn reward_callback_runs_in_one_instance_and_hostile_ones_end_typed() {
    let rt = shared_runtime();
    let p = prepared(rt, sim_grant(&["*"], 10)).await;
    let (rt2, p2) = (rt, p.clone());
    tokio::task::spawn_blocking(move || {
        // Honest: one instance for a whole training run; one call per chunk
        // of at most `cem::CHUNK` transitions.
        let mut inst = RewardInstance::for_prepared(rt2, &p2, None).unwrap().unwrap();
        let cfg = cem::CemConfig { iterations: 2, population: 4, ..cem::CemConfig::default() };
        let trained = cem::train_batched(EnvKind::Cartpole, &cfg, &mut |env, s| inst.rewards(env, s)).unwrap();
        let usage = inst.usage();
        assert_eq!(usage.transitions, trained.steps);
        assert!(usage.fuel > 0);
        // The guest's reward is the environment's own: the same training as
        // the host's, in the same chunks (and the same as asking per step).
        let (mut host_calls, mut biggest) = (0u64, 0usize);
        let host = cem::train_batched::<()>(EnvKind::Cartpole, &cfg, &mut |env, s| {
            host_calls += 1;
            biggest = biggest.max(s.len());
            Ok(s.iter().map(|s| s.transition(env).env_reward).collect())
        })
        .unwrap();
        assert_eq!(trained, host);
        // Two iterations of four candidates whose episodes are all short (the
        // longest 10 steps): one call per candidate.
        assert_eq!((usage.calls, host_calls, biggest), (8, 8, 10));
        assert_eq!(cem::train::<()>(EnvKind::Cartpole, &cfg, &mut |t| Ok(t.env_reward)).unwrap(), host);

        // Hostile: each ends its training run with a typed failure.
        for (kind, want, first_chunk) in [
            (EnvKind::MountainCar, GuestFailureKind::OutOfFuel, 200),
            (EnvKind::Pendulum, GuestFailureKind::Trap, 200),
            (EnvKind::Acrobot, GuestFailureKind::MemoryLimit, 256),
        ] {
            let mut inst = RewardInstance::for_prepared(rt2, &p2, None).unwrap().unwrap();
            let stop = cem::train_batched(kind, &cfg, &mut |env, s| inst.rewards(env, s)).unwrap_err();
            assert_eq!(stop.error.kind, want, "{kind}: {}", stop.error.detail);
            // The first call failed: the first candidate's first chunk (a
            // 200-step episode for mountain car and pendulum, a full chunk
            // of acrobot's 500-step one).
            assert_eq!(stop.steps, first_chunk, "{kind}");
            assert_eq!(inst.usage().calls, 0, "{kind}");
            if kind == EnvKind::Pendulum {
                assert!(stop.error.detail.contains("the pendulum reward is not written yet"), "{}", stop.error.detail);
            }
        }
        // A service called from inside the reward function traps, naming it.
        let mut inst = RewardInstance::for_prepared(rt2, &p2, None).unwrap().unwrap();
        let odd = [1234.0, 0.0, 0.0, 0.0];
        let t = Transition {
            env: EnvKind::Cartpole,
            obs: &odd,
            action: 0.0,
            next_obs: &odd,
            terminated: false,
            env_reward: 1.0,
        };
        let f = inst.reward(&t).unwrap_err();
        assert_eq!(f.kind, GuestFailureKind::Trap);
        assert!(f.detail.contains("cannot be called from the reward function; only `log` can"), "{}", f.detail);
        assert!(f.detail.contains("vivarium:agent/simulator@0.1.0#steps-left"), "{}", f.detail);
        // A guest answering the wrong number of rewards fails typed, saying so.
        for (o0, n, want) in [
            (4321.0, 1, "`rewards` returned 0 rewards for 1 transitions; it must return exactly one per transition"),
            (4322.0, 2, "`rewards` returned 3 rewards for 2 transitions; it must return exactly one per transition"),
        ] {
            let mut inst = RewardInstance::for_prepared(rt2, &p2, None).unwrap().unwrap();
            let mut step = Step::default();
            step.obs[0] = o0;
            let f = inst.rewards(EnvKind::Cartpole, &vec![step; n]).unwrap_err();
            assert_eq!((f.kind, f.detail.as_str()), (GuestFailureKind::Trap, want));
            assert_eq!((inst.usage().calls, inst.usage().transitions), (0, 0));
        }
        // The host is fine afterwards: a new instance works, one transition a call too.
        let mut inst = RewardInstance::for_prepared(rt2, &p2, None).unwrap().unwrap();
        let one = cem::train(EnvKind::Cartpole, &cfg, &mut |t| inst.reward(t)).unwrap();
        assert_eq!(one, host);
        assert_eq!(inst.usage().calls, host.steps);
    })
    .await
    .unwrap();
    // And a plain call too.
    let (out, _) = script(rt, &p, "left").await;
    assert_eq!(out, ["10"]);
}

#[tokio::test]
async fn a_component_without_reward_model_is_refused_with_a_reason() {
    let rt = shared_runtime();
    let p = prepare(rt, &rust_guest("variants/echo"), Grant::minimal(small_limits())).await.unwrap();
    let rt2 = rt;
    let e =
        tokio::task::spawn_blocking(move || RewardInstance::for_prepared(rt2, &p, None).err().unwrap()).await.unwrap();
    assert!(e.to_string().contains("reward-designer"), "{e}");
}

#[tokio::test]
async fn reward_design_suite_grades_against_the_reference_and_audits_training() {
    let home = tempfile::tempdir().unwrap();
    let session = Session::open(Home::at(home.path())).unwrap();
    let suite = tasks::suite(reward_design::NAME).unwrap();
    assert!(tasks::SUITES.contains(&"reward-design"));

    // The hostile guest: cart-pole tasks train (its reward is the true one),
    // mountain car loops forever and scores 0 with the limit in the note.
    let loaded = session.runtime.load(&rust_guest(GUEST)).await.unwrap();
    let p = session.runtime.prepare(&loaded, sim_grant(&["*"], 10)).unwrap();
    let score = tasks::evaluate(&session, &p, &suite).await.unwrap();
    let by_id = |id: &str| score.results.iter().find(|r| r.id == id).unwrap().clone();
    let cart = by_id("rd-v-cartpole-1");
    assert!(cart.note.starts_with("cartpole: trained return "), "{}", cart.note);
    assert!(cart.note.contains("reference reward return"), "{}", cart.note);
    let car = by_id("rd-v-mountain-car-1");
    assert_eq!(car.score, 0.0);
    assert!(car.note.contains("the reward function failed (out-of-fuel"), "{}", car.note);
    let acro = by_id("rd-h-acrobot-1");
    assert!(acro.note.contains("memory-limit"), "{}", acro.note);
    assert!(score.spent.sim_steps > 0);
    // Held-out notes never reach the feedback.
    assert!(score.feedback.contains("rd-v-mountain-car-1") && !score.feedback.contains("rd-h-"));
    // Each training is one `use` record; each failure a `limit-hit`.
    let records = session.audit.records().unwrap();
    let trainings: Vec<_> = records.iter().filter(|r| r.details["call"] == "reward-model").collect();
    assert_eq!(trainings.iter().filter(|r| r.event == EventKind::Use).count(), 7);
    let hits = trainings.iter().filter(|r| r.event == EventKind::LimitHit).count();
    assert_eq!(hits, 4, "two mountain-car visible, one held-out, one acrobot");
    let ok_use = trainings.iter().find(|r| r.event == EventKind::Use && r.details["outcome"] == "ok").unwrap();
    assert!(ok_use.details["usage"]["calls"].as_u64().unwrap() > 0);
    assert!(session.audit.verify().unwrap().ok);
}

#[tokio::test]
async fn evolving_the_reward_shaper_beats_its_baseline() {
    use vivarium::evolve::{self, EvolveOptions, StopReason};
    let tmp = tempfile::tempdir().unwrap();
    let session = evolve_session(tmp.path());
    let run = shaper_run(tmp.path(), "rd", reward_design::NAME, 1, "");
    let s = evolve::evolve(&session, &run, &EvolveOptions::default(), &|_| {}).await.unwrap();
    assert_eq!(s.stop, StopReason::Finished);
    let best = s.best.clone().unwrap();
    assert_eq!(best.generation, 1, "{best:?}");
    assert!(best.visible_score.unwrap() > s.baseline + 0.1, "{} -> {:?}", s.baseline, best.visible_score);
    assert!(best.summary.contains("MOUNTAIN_CAR_ENERGY = 10"), "{}", best.summary);
    assert!(session.audit.verify().unwrap().ok);
}

/// A session for an evolution run under `dir`, building guests in the
/// same sandboxed directory as `vivarium build` with
/// VIVARIUM_GUEST_TARGET_DIR=target/guests, so the SDK is built once.
fn evolve_session(dir: &std::path::Path) -> Session {
    let mut session = Session::open(Home::at(dir.join("home"))).unwrap();
    session.guest_target_dir = workspace_root().join("target/guests");
    session
}

/// `run.toml` for the reward-shaper on `suite` (seed 7, one child per
/// generation, greedy), with extra `[budget]` lines.
fn shaper_run(dir: &std::path::Path, name: &str, suite: &str, generations: u32, budget: &str) -> std::path::PathBuf {
    let run = dir.join(format!("{name}.toml"));
    std::fs::write(
        &run,
        format!(
            "[run]\nname = \"{name}\"\nsuite = \"{suite}\"\nseed = 7\ngenerations = {generations}\n\
             children_per_generation = 1\nselection = \"greedy\"\ninitial = [\"{}\"]\n\n[budget]\n{budget}",
            workspace_root().join("variants/reward-shaper").display()
        ),
    )
    .unwrap();
    run
}

#[tokio::test]
async fn evolving_the_reward_shaper_teaches_the_walker_to_walk() {
    use vivarium::evolve::{self, EvolveOptions, StopReason};
    let tmp = tempfile::tempdir().unwrap();
    let session = evolve_session(tmp.path());
    let run = shaper_run(tmp.path(), "walk", reward_design::LOCOMOTION, 2, "");
    let s = evolve::evolve(&session, &run, &EvolveOptions::default(), &|_| {}).await.unwrap();
    assert_eq!(s.stop, StopReason::Finished);
    let best = s.best.clone().unwrap();
    eprintln!("locomotion: baseline {:.3}, best {best:?}", s.baseline);
    // The baseline rewards only staying up: its walker stands.
    assert!(s.baseline < 0.1, "{}", s.baseline);
    assert!(best.generation >= 1, "{best:?}");
    assert!(best.summary.contains("WALKER_SPEED = "), "{}", best.summary);
    assert!(best.visible_score.unwrap() > s.baseline + 0.2, "{} -> {:?}", s.baseline, best.visible_score);
    let archive = vivarium::archive::Archive::open(&session.home.archive_dir()).unwrap();
    let rows = archive.list(Some(&s.run_id)).unwrap();
    for r in &rows {
        eprintln!(
            "  gen {} visible {:?} held-out {:?}: {}",
            r.generation, r.visible_score, r.held_out_score, r.summary
        );
    }
    let base_held = rows.iter().find(|r| r.generation == 0).unwrap().held_out_score.unwrap();
    assert!(best.held_out_score.unwrap() > base_held + 0.05, "the gait carries over to held-out seeds: {best:?}");
    assert!(s.sim_steps > 0);
    // Every task's note names the reference reward's distance beside the variant's.
    let rows = archive.results(&best.id).unwrap();
    assert!(rows.iter().all(|r| r.note.starts_with("walker: trained return ") && r.note.contains("reference")));
    assert!(session.audit.verify().unwrap().ok);
}

#[tokio::test]
async fn a_run_stops_cleanly_at_its_simulator_step_budget_and_resumes_counting() {
    use vivarium::evolve::{self, EvolveOptions, StopReason};
    let tmp = tempfile::tempdir().unwrap();
    let session = evolve_session(tmp.path());
    // One evaluation of the baseline takes tens of thousands of steps.
    let run = shaper_run(tmp.path(), "steps", reward_design::LOCOMOTION, 3, "sim_steps = 1000\n");
    let s = evolve::evolve(&session, &run, &EvolveOptions::default(), &|_| {}).await.unwrap();
    let StopReason::Budget(why) = &s.stop else { panic!("expected the step budget to stop the run: {:?}", s.stop) };
    assert_eq!(why, &format!("simulator steps {} of 1000", s.sim_steps));
    assert_eq!(s.variants, 1, "only the initial variant, no child");
    // The steps are kept with the run: a resume stops at once, counting them.
    let again = evolve::evolve(&session, &run, &EvolveOptions { resume: true }, &|_| {}).await.unwrap();
    assert_eq!(again.sim_steps, s.sim_steps);
    assert!(matches!(again.stop, StopReason::Budget(_)), "{:?}", again.stop);
    assert_eq!(again.variants, 1);

    // A run from before the one budget ledger kept its steps only in
    // runs/<name>/spent.json: a resume reads them once, and counts them once.
    let ledger = vivarium::ledger::Ledger::for_home(&Home::at(tmp.path().join("home")));
    ledger.forget_run("steps").unwrap();
    assert_eq!(ledger.spent("steps", vivarium::ledger::Resource::SimSteps).unwrap(), 0);
    for _ in 0..2 {
        let old = evolve::evolve(&session, &run, &EvolveOptions { resume: true }, &|_| {}).await.unwrap();
        assert_eq!((old.sim_steps, old.variants), (s.sim_steps, 1));
        assert!(matches!(old.stop, StopReason::Budget(_)), "{:?}", old.stop);
    }
}
