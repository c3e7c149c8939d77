//! Acrobot-v1, as Gymnasium defines it (`acrobot.py`): the "book"
//! dynamics (Sutton & Barto), one RK4 step over `dt = 0.2`, torques
//! −1/0/+1 on the second joint, angles wrapped to [−π, π], velocities
//! bounded by 4π and 9π, done when the tip is one link length above the
//! pivot (`−cos θ₁ − cos(θ₁+θ₂) > 1`), reward −1 per step and 0 on the
//! step that reaches the goal, 500 steps.

use std::f64::consts::PI;

use super::{Env, EnvKind, Rng};

const DT: f64 = 0.2;
const LINK_LENGTH_1: f64 = 1.0;
const LINK_MASS_1: f64 = 1.0;
const LINK_MASS_2: f64 = 1.0;
const LINK_COM_POS_1: f64 = 0.5;
const LINK_COM_POS_2: f64 = 0.5;
const LINK_MOI: f64 = 1.0;
const MAX_VEL_1: f64 = 4.0 * PI;
const MAX_VEL_2: f64 = 9.0 * PI;
const AVAIL_TORQUE: [f64; 3] = [-1.0, 0.0, 1.0];

/// The acrobot state `[theta1, theta2, dtheta1, dtheta2]`.
#[derive(Debug, Clone, Default)]
pub struct Acrobot {
    /// `[theta1, theta2, dtheta1, dtheta2]`.
    pub state: [f64; 4],
}

/// Gymnasium's `wrap(x, m, M)`: shift by `M − m` until `x` is in `[m, M]`.
fn wrap(mut x: f64, m: f64, big_m: f64) -> f64 {
    let diff = big_m - m;
    while x > big_m {
        x -= diff;
    }
    while x < m {
        x += diff;
    }
    x
}

/// The time derivative of `[θ₁, θ₂, θ̇₁, θ̇₂]` under torque `a` ("book" dynamics).
fn dsdt(s: [f64; 4], a: f64) -> [f64; 4] {
    let (m1, m2, l1, lc1, lc2, i1, i2, g) =
        (LINK_MASS_1, LINK_MASS_2, LINK_LENGTH_1, LINK_COM_POS_1, LINK_COM_POS_2, LINK_MOI, LINK_MOI, 9.8);
    let [theta1, theta2, dtheta1, dtheta2] = s;
    let d1 = m1 * lc1 * lc1 + m2 * (l1 * l1 + lc2 * lc2 + 2.0 * l1 * lc2 * theta2.cos()) + i1 + i2;
    let d2 = m2 * (lc2 * lc2 + l1 * lc2 * theta2.cos()) + i2;
    let phi2 = m2 * lc2 * g * (theta1 + theta2 - PI / 2.0).cos();
    let phi1 = -m2 * l1 * lc2 * dtheta2 * dtheta2 * theta2.sin()
        - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * theta2.sin()
        + (m1 * lc1 + m2 * l1) * g * (theta1 - PI / 2.0).cos()
        + phi2;
    let ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1 * dtheta1 * theta2.sin() - phi2)
        / (m2 * lc2 * lc2 + i2 - d2 * d2 / d1);
    let ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
    [dtheta1, dtheta2, ddtheta1, ddtheta2]
}

/// One classic RK4 step of size `dt` (Gymnasium's `rk4(derivs, y0, [0, dt])`).
fn rk4(s: [f64; 4], a: f64, dt: f64) -> [f64; 4] {
    let add = |y: [f64; 4], k: [f64; 4], h: f64| [y[0] + h * k[0], y[1] + h * k[1], y[2] + h * k[2], y[3] + h * k[3]];
    let k1 = dsdt(s, a);
    let k2 = dsdt(add(s, k1, dt / 2.0), a);
    let k3 = dsdt(add(s, k2, dt / 2.0), a);
    let k4 = dsdt(add(s, k3, dt), a);
    let mut out = s;
    for i in 0..4 {
        out[i] = s[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
    }
    out
}

impl Acrobot {
    fn terminal(&self) -> bool {
        let [t1, t2, ..] = self.state;
        -t1.cos() - (t2 + t1).cos() > 1.0
    }
}

impl Env for Acrobot {
    fn kind(&self) -> EnvKind {
        EnvKind::Acrobot
    }

    fn reset(&mut self, rng: &mut Rng) {
        for s in &mut self.state {
            *s = rng.uniform(-0.1, 0.1);
        }
    }

    fn observe(&self, out: &mut [f64]) {
        let [t1, t2, d1, d2] = self.state;
        out[..6].copy_from_slice(&[t1.cos(), t1.sin(), t2.cos(), t2.sin(), d1, d2]);
    }

    fn step(&mut self, action: &[f64]) -> (f64, bool) {
        let action = action[0];
        let torque = AVAIL_TORQUE[(action as usize).min(2)];
        let mut ns = rk4(self.state, torque, DT);
        ns[0] = wrap(ns[0], -PI, PI);
        ns[1] = wrap(ns[1], -PI, PI);
        ns[2] = ns[2].clamp(-MAX_VEL_1, MAX_VEL_1);
        ns[3] = ns[3].clamp(-MAX_VEL_2, MAX_VEL_2);
        self.state = ns;
        let terminated = self.terminal();
        (if terminated { 0.0 } else { -1.0 }, terminated)
    }
}
