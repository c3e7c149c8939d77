//! Pendulum-v1, as Gymnasium defines it (`pendulum.py`): `g = 10`,
//! `m = l = 1`, `dt = 0.05`, speed clipped to ±8, torque to ±2, reward
//! `−(θ² + 0.1·θ̇² + 0.001·u²)` with θ normalised to [−π, π), observation
//! `[cos θ, sin θ, θ̇]`, 200 steps, never terminates.

use std::f64::consts::PI;

use super::{Env, EnvKind, Rng};

const MAX_SPEED: f64 = 8.0;
/// The largest torque; actions are clipped to ±this.
pub const MAX_TORQUE: f64 = 2.0;
const DT: f64 = 0.05;
const G: f64 = 10.0;
const M: f64 = 1.0;
const L: f64 = 1.0;

/// The pendulum state `[theta, theta_dot]` (θ = 0 is upright).
#[derive(Debug, Clone, Default)]
pub struct Pendulum {
    /// `[theta, theta_dot]`.
    pub state: [f64; 2],
}

/// Gymnasium's `angle_normalize`: `((x + π) mod 2π) − π`, Python's modulo
/// (the result has the divisor's sign).
pub fn angle_normalize(x: f64) -> f64 {
    (x + PI).rem_euclid(2.0 * PI) - PI
}

impl Env for Pendulum {
    fn kind(&self) -> EnvKind {
        EnvKind::Pendulum
    }

    fn reset(&mut self, rng: &mut Rng) {
        self.state = [rng.uniform(-PI, PI), rng.uniform(-1.0, 1.0)];
    }

    fn observe(&self, out: &mut [f64]) {
        let [th, thdot] = self.state;
        out[0] = th.cos();
        out[1] = th.sin();
        out[2] = thdot;
    }

    fn step(&mut self, action: &[f64]) -> (f64, bool) {
        let action = action[0];
        let [th, thdot] = self.state;
        let u = if action.is_nan() { 0.0 } else { action.clamp(-MAX_TORQUE, MAX_TORQUE) };
        let cost = angle_normalize(th).powi(2) + 0.1 * thdot * thdot + 0.001 * u * u;
        let new_thdot =
            (thdot + (3.0 * G / (2.0 * L) * th.sin() + 3.0 / (M * L * L) * u) * DT).clamp(-MAX_SPEED, MAX_SPEED);
        self.state = [th + new_thdot * DT, new_thdot];
        (-cost, false)
    }
}
