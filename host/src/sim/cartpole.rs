//! CartPole-v1, as Gymnasium defines it (`gymnasium/envs/classic_control/cartpole.py`):
//! Euler integration with `tau = 0.02`, a force of ±10 N, termination past
//! 12° or 2.4 m, reward 1 for every step including the one that
//! terminates, 500 steps at most.

use super::{Env, EnvKind, Rng};

const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASS_POLE + MASS_CART;
/// Half the pole's length.
const LENGTH: f64 = 0.5;
const POLE_MASS_LENGTH: f64 = MASS_POLE * LENGTH;
const FORCE_MAG: f64 = 10.0;
const TAU: f64 = 0.02;
/// 12 degrees, as Gymnasium writes it.
pub const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
/// Cart position past which the episode ends.
pub const X_THRESHOLD: f64 = 2.4;

/// The cart-pole state `[x, x_dot, theta, theta_dot]`.
#[derive(Debug, Clone, Default)]
pub struct CartPole {
    /// The state, as Gymnasium orders it.
    pub state: [f64; 4],
}

impl Env for CartPole {
    fn kind(&self) -> EnvKind {
        EnvKind::Cartpole
    }

    fn reset(&mut self, rng: &mut Rng) {
        for s in &mut self.state {
            *s = rng.uniform(-0.05, 0.05);
        }
    }

    fn observe(&self, out: &mut [f64]) {
        out[..4].copy_from_slice(&self.state);
    }

    fn step(&mut self, action: &[f64]) -> (f64, bool) {
        let action = action[0];
        let [x, x_dot, theta, theta_dot] = self.state;
        let force = if action as i64 == 1 { FORCE_MAG } else { -FORCE_MAG };
        let (sin, cos) = theta.sin_cos();
        let temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / TOTAL_MASS;
        let theta_acc = (GRAVITY * sin - cos * temp) / (LENGTH * (4.0 / 3.0 - MASS_POLE * cos * cos / TOTAL_MASS));
        let x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS;
        // Gymnasium's default "euler": positions from the old velocities.
        self.state = [x + TAU * x_dot, x_dot + TAU * x_acc, theta + TAU * theta_dot, theta_dot + TAU * theta_acc];
        let [x, _, theta, _] = self.state;
        let terminated =
            !(-X_THRESHOLD..=X_THRESHOLD).contains(&x) || !(-THETA_THRESHOLD..=THETA_THRESHOLD).contains(&theta);
        (1.0, terminated)
    }
}
