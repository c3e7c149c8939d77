//! MountainCar-v0, as Gymnasium defines it (`mountain_car.py`): force
//! 0.001, gravity 0.0025, speed clipped to ±0.07, position to
//! [−1.2, 0.6] (the left wall stops the car), goal at 0.5, reward −1 per
//! step, 200 steps.

use super::{Env, EnvKind, Rng};

const MIN_POSITION: f64 = -1.2;
const MAX_POSITION: f64 = 0.6;
const MAX_SPEED: f64 = 0.07;
/// The position the car must reach.
pub const GOAL_POSITION: f64 = 0.5;
const GOAL_VELOCITY: f64 = 0.0;
const FORCE: f64 = 0.001;
const GRAVITY: f64 = 0.0025;

/// The car's state `[position, velocity]`.
#[derive(Debug, Clone, Default)]
pub struct MountainCar {
    /// `[position, velocity]`.
    pub state: [f64; 2],
}

impl Env for MountainCar {
    fn kind(&self) -> EnvKind {
        EnvKind::MountainCar
    }

    fn reset(&mut self, rng: &mut Rng) {
        self.state = [rng.uniform(-0.6, -0.4), 0.0];
    }

    fn observe(&self, out: &mut [f64]) {
        out[..2].copy_from_slice(&self.state);
    }

    fn step(&mut self, action: &[f64]) -> (f64, bool) {
        let action = action[0];
        let [mut position, mut velocity] = self.state;
        velocity += (action - 1.0) * FORCE + (3.0 * position).cos() * (-GRAVITY);
        velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED);
        position += velocity;
        position = position.clamp(MIN_POSITION, MAX_POSITION);
        if position == MIN_POSITION && velocity < 0.0 {
            velocity = 0.0;
        }
        self.state = [position, velocity];
        (-1.0, position >= GOAL_POSITION && velocity >= GOAL_VELOCITY)
    }
}
