//! Dynamics checked against values computed by hand from Gymnasium's
//! equations and constants (a transcription of each `step` in Python,
//! independent of this Rust code), determinism, policies and CEM.

use super::*;

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-12, "{a:?} != {b:?}");
    }
}

#[test]
fn cartpole_matches_gymnasium() {
    let mut e = cartpole::CartPole { state: [0.01, -0.02, 0.03, 0.04] };
    assert_eq!(e.step(&[1.0]), (1.0, false));
    close(&e.state, &[0.009600000000000001, 0.17467919574755525, 0.030799999999999998, -0.2430687179600081]);
    assert_eq!(e.step(&[0.0]), (1.0, false));
    close(&e.state, &[0.013093583914951107, -0.020868848948191993, 0.025938625640799837, 0.0591679999394166]);
    // Past 12 degrees (0.2094 rad) or 2.4 m: terminated, and the step still pays 1.
    let mut e = cartpole::CartPole { state: [0.0, 0.0, 0.2094, 0.1] };
    assert_eq!(e.step(&[1.0]), (1.0, true));
    let mut e = cartpole::CartPole { state: [2.399, 1.0, 0.0, 0.0] };
    assert_eq!(e.step(&[1.0]), (1.0, true));
    // Truncated at 500 steps: a policy that balances (pushes against the
    // pole's fall) survives the whole episode, reward 1 per step.
    let balance = LinearPolicy::new(EnvKind::Cartpole, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]).unwrap();
    let r = rollout(EnvKind::Cartpole, 3, &balance, u32::MAX);
    assert_eq!((r.total_reward, r.steps, r.terminated), (500.0, 500, false));
}

#[test]
fn pendulum_matches_gymnasium() {
    let mut e = pendulum::Pendulum { state: [3.0, -0.5] };
    let (r, done) = e.step(&[1.5]);
    assert!(!done);
    assert!((r - -9.02725).abs() < 1e-12, "{r}");
    close(&e.state, &[2.991542000302245, -0.16915999395509962]);
    // Torque clipped to -2.
    let (r, _) = e.step(&[-5.0]);
    assert!((r - -8.956185049927841).abs() < 1e-12, "{r}");
    close(&e.state, &[2.973689808734025, -0.35704383136440176]);
    let mut obs = [0.0; 3];
    e.observe(&mut obs);
    close(&obs, &[-0.9859374009536194, 0.16711505438117166, -0.35704383136440176]);
    // Angle normalised in the cost only; speed clipped to 8.
    let mut e = pendulum::Pendulum { state: [7.0, 7.9] };
    let (r, _) = e.step(&[2.0]);
    assert!((r - -6.758823303843224).abs() < 1e-12, "{r}");
    close(&e.state, &[7.4, 8.0]);
    // 200 steps, never terminated.
    let zero = LinearPolicy::new(EnvKind::Pendulum, vec![0.0; 4]).unwrap();
    let r = rollout(EnvKind::Pendulum, 1, &zero, u32::MAX);
    assert_eq!((r.steps, r.terminated), (200, false));
}

#[test]
fn mountain_car_matches_gymnasium() {
    let mut e = mountain_car::MountainCar { state: [-0.5, 0.0] };
    assert_eq!(e.step(&[2.0]), (-1.0, false));
    close(&e.state, &[-0.49917684300416926, 0.0008231569958307428]);
    // The left wall stops the car.
    let mut e = mountain_car::MountainCar { state: [-1.19, -0.02] };
    assert_eq!(e.step(&[0.0]), (-1.0, false));
    close(&e.state, &[-1.2, 0.0]);
    // The goal: terminated, still -1.
    let mut e = mountain_car::MountainCar { state: [0.49, 0.03] };
    assert_eq!(e.step(&[2.0]), (-1.0, true));
    close(&e.state, &[0.5207484356665326, 0.03074843566653267]);
    // Doing nothing never reaches the flag: -1 × 200.
    let idle = LinearPolicy::new(EnvKind::MountainCar, vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]).unwrap();
    let r = rollout(EnvKind::MountainCar, 1, &idle, u32::MAX);
    assert_eq!((r.total_reward, r.steps, r.terminated), (-200.0, 200, false));
    // Pushing along the velocity (the textbook policy) does.
    let pump = LinearPolicy::new(EnvKind::MountainCar, vec![0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap();
    let r = rollout(EnvKind::MountainCar, 1, &pump, u32::MAX);
    assert!(r.terminated && r.steps < 200, "{r:?}");
    assert_eq!(r.total_reward, -f64::from(r.steps));
}

#[test]
fn acrobot_matches_gymnasium() {
    let mut e = acrobot::Acrobot { state: [0.05, -0.03, 0.02, 0.01] };
    assert_eq!(e.step(&[2.0]), (-1.0, false));
    close(&e.state, &[0.03396426807716706, 0.014028356136744108, -0.175464650251537, 0.4197156022652691]);
    assert_eq!(e.step(&[0.0]), (-1.0, false));
    close(&e.state, &[0.010256406751987378, 0.061304367014462395, -0.05558414607650376, 0.0417371113112644]);
    // Tip above the line: terminated with reward 0.
    let mut e = acrobot::Acrobot { state: [3.0, 0.1, 0.0, 0.0] };
    assert_eq!(e.step(&[1.0]), (0.0, true));
    close(&e.state, &[2.9801010644913126, 0.12460838080578891, -0.20368049965045298, 0.25311378017408265]);
    let zero = LinearPolicy::new(EnvKind::Acrobot, vec![0.0; 21]).unwrap();
    let r = rollout(EnvKind::Acrobot, 1, &zero, u32::MAX);
    assert_eq!((r.total_reward, r.steps), (-500.0, 500));
}

#[test]
fn same_seed_same_rollout() {
    for kind in EnvKind::ALL {
        let n = LinearPolicy::param_count(kind);
        let params: Vec<f64> = (0..n).map(|i| ((i * 37 % 11) as f64 - 5.0) / 5.0).collect();
        let p = LinearPolicy::new(kind, params).unwrap();
        let trace = |seed| {
            let mut ep = Episode::new(kind, seed);
            let mut obs = Vec::new();
            let r: Result<_, std::convert::Infallible> = run_episode(&mut ep, &p, u32::MAX, &mut |t| {
                obs.extend_from_slice(t.next_obs);
                Ok(t.env_reward)
            });
            let Ok(r) = r;
            (r, obs)
        };
        let (a, b, c) = (trace(5), trace(5), trace(6));
        assert_eq!(a, b, "{kind}");
        assert_ne!(a.1, c.1, "{kind}: another seed, another episode");
        // Initial states follow Gymnasium's ranges.
        let mut ep = Episode::new(kind, 9);
        ep.reset();
        let o = ep.observation();
        match kind {
            EnvKind::Cartpole => assert!(o.iter().all(|v| v.abs() <= 0.05)),
            EnvKind::MountainCar => assert!((-0.6..-0.4).contains(&o[0]) && o[1] == 0.0),
            EnvKind::Acrobot => assert!(o[4].abs() <= 0.1 && o[5].abs() <= 0.1),
            EnvKind::Pendulum => assert!(o[2].abs() <= 1.0),
            // Standing at the origin, level, moving at most 0.1 m/s.
            EnvKind::Walker => assert!((o[0] - 0.9).abs() < 1e-6 && o[1] == 0.0 && o[2].abs() <= 0.1),
        }
    }
}

#[test]
fn actions_and_policies_are_checked() {
    assert_eq!(check_action(EnvKind::Cartpole, &[1.0]), Ok(()));
    for bad in [&[2.0][..], &[0.5], &[-1.0], &[], &[0.0, 1.0], &[f64::NAN]] {
        assert!(check_action(EnvKind::Cartpole, bad).is_err(), "{bad:?}");
    }
    assert_eq!(check_action(EnvKind::Pendulum, &[7.0]), Ok(()));
    assert!(check_action(EnvKind::Pendulum, &[f64::INFINITY]).is_err());
    assert_eq!(LinearPolicy::param_count(EnvKind::Acrobot), 21);
    assert!(LinearPolicy::new(EnvKind::Cartpole, vec![0.0; 9]).unwrap_err().contains("10 parameters"));
    assert!(LinearPolicy::new(EnvKind::Cartpole, vec![f64::NAN; 10]).is_err());
    assert_eq!(EnvKind::from_name("mountain-car"), Some(EnvKind::MountainCar));
    assert_eq!(EnvKind::from_name("walker"), Some(EnvKind::Walker));
    assert_eq!(EnvKind::from_name("humanoid"), None);
    assert_eq!(check_action(EnvKind::Walker, &[1.0, -1.0, 0.5, 3.0]), Ok(()));
    assert_eq!(check_action(EnvKind::Walker, &[1.0]).unwrap_err(), "walker takes an action of 4 numbers; got 1");
    assert!(check_action(EnvKind::Walker, &[0.0, 0.0, f64::NAN, 0.0]).unwrap_err().contains("finite"));
    assert_eq!(LinearPolicy::param_count(EnvKind::Walker), 4 * 16);
    assert_eq!(EnvKind::Cartpole.score(250.0), 0.5);
    assert_eq!(EnvKind::MountainCar.score(-90.0), 1.0);
    assert_eq!(EnvKind::MountainCar.score(f64::NAN), 0.0);
}

#[test]
fn cem_is_deterministic_and_learns_cartpole() {
    let cfg = cem::CemConfig { seed: 4, ..cem::CemConfig::default() };
    let mut calls = 0u64;
    let a = cem::train::<()>(EnvKind::Cartpole, &cfg, &mut |t| {
        calls += 1;
        Ok(t.env_reward)
    })
    .unwrap();
    let b = cem::train::<()>(EnvKind::Cartpole, &cfg, &mut |t| Ok(t.env_reward)).unwrap();
    assert_eq!(a, b);
    assert_eq!(calls, a.steps);
    assert!(a.steps <= cfg.max_steps(EnvKind::Cartpole));
    let (ret, _) = cem::evaluate(&a.policy, 99, 5);
    assert!(ret >= 450.0, "CEM on the true reward should balance the pole: {ret}");
    // The reward function's first error stops training, with the steps so far.
    let mut n = 0;
    let stop = cem::train(EnvKind::Cartpole, &cfg, &mut |_| {
        n += 1;
        if n == 10 {
            Err("boom")
        } else {
            Ok(1.0)
        }
    })
    .unwrap_err();
    assert_eq!(stop, cem::Stopped { error: "boom", steps: 10 });
}

#[test]
fn reference_reward_beats_the_plain_one_on_mountain_car() {
    use crate::tasks::reward_design::{cem_config, eval_seed, reference_return, EVAL_EPISODES};
    // Averaged over seeds: one seed's CEM run is noisy.
    let (mut plain_sum, mut ref_sum) = (0.0, 0.0);
    for seed in [1, 2, 3, 4] {
        let cfg = cem_config(EnvKind::MountainCar, seed);
        let plain = cem::train::<()>(EnvKind::MountainCar, &cfg, &mut |t| Ok(t.env_reward)).unwrap();
        let (plain_ret, _) = cem::evaluate(&plain.policy, eval_seed(seed), EVAL_EPISODES);
        let (ref_ret, _) = reference_return(EnvKind::MountainCar, seed);
        eprintln!("mountain-car seed {seed}: plain {plain_ret}, reference {ref_ret}");
        plain_sum += plain_ret;
        ref_sum += ref_ret;
    }
    assert!(ref_sum / 4.0 > plain_sum / 4.0 + 30.0, "plain {plain_sum}, reference {ref_sum}");
    assert!(ref_sum / 4.0 > -130.0, "the reference reward should nearly solve mountain car: {ref_sum}");
    for kind in [EnvKind::Cartpole, EnvKind::Acrobot] {
        for seed in [1, 2, 3] {
            let (r, steps) = reference_return(kind, seed);
            let plain = cem::train::<()>(kind, &cem_config(kind, seed), &mut |t| Ok(t.env_reward)).unwrap();
            let (plain_ret, _) = cem::evaluate(&plain.policy, eval_seed(seed), EVAL_EPISODES);
            eprintln!("{kind} seed {seed}: reference {r} ({steps} steps) plain {plain_ret}");
            assert!(kind.score(r) > 0.7, "{kind} seed {seed}: {r}");
        }
    }
}

#[test]
fn the_walker_stands_still_when_its_motors_hold_and_falls_when_they_let_go() {
    // Motors holding every joint at 0: it stands for the whole episode.
    let hold = LinearPolicy::new(EnvKind::Walker, vec![0.0; 64]).unwrap();
    let r = rollout(EnvKind::Walker, 1, &hold, u32::MAX);
    assert_eq!((r.steps, r.terminated), (walker::MAX_STEPS, false), "{r:?}");
    assert!(r.total_reward.abs() < 1.0, "standing still walks nowhere: {r:?}");
    // Hips swung fully back and knees fully bent (bias −∞ on every row): it collapses.
    let mut params = vec![0.0; 64];
    for row in 0..4 {
        params[row * 16 + 15] = -20.0;
    }
    let slump = LinearPolicy::new(EnvKind::Walker, params).unwrap();
    let r = rollout(EnvKind::Walker, 1, &slump, u32::MAX);
    assert!(r.terminated && r.steps < walker::MAX_STEPS, "{r:?}");
    // What a reward function sees: x, x-velocity, height, angle, angular
    // velocity, mean joint speed; the action's one number is its effort.
    let mut ep = Episode::new(EnvKind::Walker, 2);
    ep.reset();
    let mut f = [0.0; FEATURES];
    ep.features(&mut f);
    assert_eq!(f[0], 0.0);
    assert!((f[2] - 0.9).abs() < 1e-6, "{f:?}");
    assert_eq!(ep.effort(&[1.0, -1.0, 0.0, 0.0]), 0.5);
    assert_eq!(ep.effort(&[5.0, 5.0, 5.0, 5.0]), 1.0, "commands are clipped to ±1");
    // Weights so large that the policy's sums overflow (∞ − ∞ = NaN): the
    // host neither panics nor reports a non-finite distance.
    let wild: Vec<f64> = (0..64).map(|i| if i % 2 == 0 { 1e308 } else { -1e308 }).collect();
    let r = rollout(EnvKind::Walker, 4, &LinearPolicy::new(EnvKind::Walker, wild).unwrap(), u32::MAX);
    assert!(r.total_reward.is_finite() && r.steps >= 1, "{r:?}");
}

#[test]
fn the_reference_reward_teaches_the_walker_to_walk() {
    use crate::tasks::reward_design::{cem_config, eval_seed, reference_return, EVAL_EPISODES};
    let (mut stand_sum, mut ref_sum) = (0.0, 0.0);
    for seed in [1, 2] {
        // Only staying up is rewarded: the trained policy stands, or shuffles.
        let cfg = cem_config(EnvKind::Walker, seed);
        let stand = cem::train::<()>(EnvKind::Walker, &cfg, &mut |t| Ok(if t.terminated { 0.0 } else { 1.0 })).unwrap();
        let (stand_ret, _) = cem::evaluate(&stand.policy, eval_seed(seed), EVAL_EPISODES);
        let (ref_ret, steps) = reference_return(EnvKind::Walker, seed);
        eprintln!("walker seed {seed}: stand-up reward {stand_ret:.2} m, reference {ref_ret:.2} m ({steps} steps)");
        stand_sum += stand_ret;
        ref_sum += ref_ret;
    }
    assert!(ref_sum / 2.0 > 1.0, "the reference reward should walk a metre or more: {ref_sum}");
    assert!(ref_sum > stand_sum + 1.0, "stand-up {stand_sum}, reference {ref_sum}");
}
