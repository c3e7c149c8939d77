//! A planar legged walker on [rapier2d]: the locomotion environment.
//!
//! A torso (a 1 m × 0.16 m box) on two legs, one at each end — a planar
//! quadruped, each leg standing for a pair — each leg a thigh and a shin
//! (capsules, 0.4 m each) joined at the hip and the knee by revolute
//! joints. Each of the four joints has a position motor: the action is four
//! numbers in [−1, 1], each the target angle of one joint (back hip, back
//! knee, front hip, front knee) in units of [`MAX_ANGLE`], held with a
//! capped torque. Only the legs touch the ground; the body never collides
//! with itself.
//!
//! * **Step.** [`DT`] = 0.02 s of simulated time; at most [`MAX_STEPS`]
//!   steps (5 s).
//! * **Reward (the true objective).** Forward progress of the torso in
//!   metres per step, so an episode's return is the distance walked.
//! * **Termination.** The torso falls below [`MIN_HEIGHT`] or tilts past
//!   [`MAX_TILT`].
//! * **Observation** (15 numbers): torso height, angle, x-velocity,
//!   y-velocity, angular velocity; the four joint angles; the four joint
//!   speeds; and the sine and cosine of a gait clock of period
//!   [`GAIT_PERIOD`] s, so a linear policy can express a rhythm.
//! * **Reward-model view** (the six numbers a `reward-model` export sees,
//!   [`Env::features`]): x position, x-velocity, height, angle, angular
//!   velocity, mean joint speed; the transition's `action` is the mean
//!   squared motor command (effort, in [0, 1]).
//! * **Randomness.** Each reset draws a small initial velocity of the
//!   torso and of every leg segment from the seed; the dynamics have no
//!   other randomness, so the same seed gives the same rollout.
//!
//! The world is rebuilt on every reset, so no state carries over between
//! episodes.

use rapier2d::prelude::*;

use super::{Env, EnvKind, Rng, FEATURES};

/// Simulated seconds per step.
pub const DT: f64 = 0.02;
/// Steps after which an episode is truncated.
pub const MAX_STEPS: u32 = 250;
/// The torso's centre below this height (m) ends the episode.
pub const MIN_HEIGHT: f64 = 0.35;
/// The torso tilted past this angle (rad) ends the episode.
pub const MAX_TILT: f64 = 1.0;
/// A motor command of ±1 targets this joint angle (rad).
pub const MAX_ANGLE: f64 = 0.9;
/// The period of the gait clock in the observation (s).
pub const GAIT_PERIOD: f64 = 0.8;
/// Observation length.
pub const OBS: usize = 15;
/// Motorised joints (the action's length).
pub const JOINTS: usize = 4;

/// Half extents of the torso box.
const TORSO: (f32, f32) = (0.5, 0.08);
/// Half length of a leg segment's straight part, and its radius.
const SEGMENT: (f32, f32) = (0.17, 0.035);
/// Centre-to-joint distance along a segment.
const HALF_LEG: f32 = 0.2;
/// Hips sit this far from the torso's centre, front and back.
const HIP_X: f32 = 0.4;
/// Initial torso height: legs straight, feet 2 cm above the ground.
const START_HEIGHT: f32 = TORSO.1 + 4.0 * HALF_LEG + 0.02;
const DENSITY: f32 = 10.0;
const STIFFNESS: f32 = 60.0;
const DAMPING: f32 = 3.0;
const MAX_TORQUE: f32 = 30.0;
const FRICTION: f32 = 1.0;

/// The walker's world and the handles into it.
pub struct Walker {
    world: PhysicsWorld,
    torso: RigidBodyHandle,
    /// Back thigh, back shin, front thigh, front shin.
    segments: [RigidBodyHandle; JOINTS],
    /// The joint above each segment (hip, knee, hip, knee).
    joints: [ImpulseJointHandle; JOINTS],
    /// Steps since the reset (the gait clock).
    t: u32,
}

impl std::fmt::Debug for Walker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = self.observation();
        f.debug_struct("Walker").field("t", &self.t).field("height", &o[0]).field("x", &self.x()).finish()
    }
}

impl Default for Walker {
    fn default() -> Self {
        Self::build(&[0.0; 2 + 3 * JOINTS])
    }
}

fn creature_groups() -> InteractionGroups {
    // Members of group 2 that meet only group 1 (the ground): no self-collision.
    InteractionGroups::new(Group::GROUP_2, Group::GROUP_1, InteractionTestMode::And)
}

impl Walker {
    /// The world standing at the origin with initial velocities `v`: the
    /// torso's (x, y), then (x, y, angular) for each segment.
    fn build(v: &[f64; 2 + 3 * JOINTS]) -> Self {
        let mut world = PhysicsWorld::new();
        world.integration_parameters.dt = DT as f32;
        let ground = RigidBodyBuilder::fixed().translation(Vec2::new(0.0, -0.5));
        let ground_groups = InteractionGroups::new(Group::GROUP_1, Group::GROUP_2, InteractionTestMode::And);
        world.insert(ground, ColliderBuilder::cuboid(10_000.0, 0.5).friction(FRICTION).collision_groups(ground_groups));

        let torso_body = RigidBodyBuilder::dynamic()
            .translation(Vec2::new(0.0, START_HEIGHT))
            .linvel(Vec2::new(v[0] as f32, v[1] as f32))
            .can_sleep(false);
        let torso_collider =
            ColliderBuilder::cuboid(TORSO.0, TORSO.1).density(DENSITY).collision_groups(creature_groups());
        let (torso, _) = world.insert(torso_body, torso_collider);

        let mut segments = [torso; JOINTS];
        let mut joints = [ImpulseJointHandle::invalid(); JOINTS];
        for (leg, hip_x) in [-HIP_X, HIP_X].into_iter().enumerate() {
            let mut parent = torso;
            let mut anchor = Vec2::new(hip_x, -TORSO.1);
            let mut top = START_HEIGHT - TORSO.1;
            for part in 0..2 {
                let i = 2 * leg + part;
                let w = &v[2 + 3 * i..5 + 3 * i];
                let body = RigidBodyBuilder::dynamic()
                    .translation(Vec2::new(hip_x, top - HALF_LEG))
                    .linvel(Vec2::new(w[0] as f32, w[1] as f32))
                    .angvel(w[2] as f32)
                    .can_sleep(false);
                let collider = ColliderBuilder::capsule_y(SEGMENT.0, SEGMENT.1)
                    .density(DENSITY)
                    .friction(FRICTION)
                    .collision_groups(creature_groups());
                let (handle, _) = world.insert(body, collider);
                let joint = RevoluteJointBuilder::new()
                    .local_anchor1(anchor)
                    .local_anchor2(Vec2::new(0.0, HALF_LEG))
                    .limits([-(MAX_ANGLE as f32) - 0.2, MAX_ANGLE as f32 + 0.2])
                    .motor_model(MotorModel::ForceBased)
                    .motor_position(0.0, STIFFNESS, DAMPING)
                    .motor_max_force(MAX_TORQUE)
                    .contacts_enabled(false);
                joints[i] = world.impulse_joints.insert(parent, handle, joint, true);
                segments[i] = handle;
                parent = handle;
                anchor = Vec2::new(0.0, -HALF_LEG);
                top -= 2.0 * HALF_LEG;
            }
        }
        Self { world, torso, segments, joints, t: 0 }
    }

    /// The torso's x position (m).
    pub fn x(&self) -> f64 {
        f64::from(self.world.bodies[self.torso].translation().x)
    }

    /// The body above joint `i`: the torso for a hip, the thigh for a knee.
    fn parent(&self, i: usize) -> RigidBodyHandle {
        if i % 2 == 0 {
            self.torso
        } else {
            self.segments[i - 1]
        }
    }

    /// The angle of joint `i`: the child segment's rotation relative to its parent.
    fn joint_angle(&self, i: usize) -> f64 {
        let (child, parent) = (&self.world.bodies[self.segments[i]], &self.world.bodies[self.parent(i)]);
        let a = child.rotation().angle() - parent.rotation().angle();
        // Wrapped into (−π, π].
        f64::from(a.sin().atan2(a.cos()))
    }

    /// The speed of joint `i` (rad/s).
    fn joint_speed(&self, i: usize) -> f64 {
        f64::from(self.world.bodies[self.segments[i]].angvel() - self.world.bodies[self.parent(i)].angvel())
    }

    fn observation(&self) -> [f64; OBS] {
        let torso = &self.world.bodies[self.torso];
        let mut o = [0.0; OBS];
        o[0] = f64::from(torso.translation().y);
        o[1] = f64::from(torso.rotation().angle());
        o[2] = f64::from(torso.linvel().x);
        o[3] = f64::from(torso.linvel().y);
        o[4] = f64::from(torso.angvel());
        for i in 0..JOINTS {
            o[5 + i] = self.joint_angle(i);
            o[9 + i] = self.joint_speed(i);
        }
        let phase = 2.0 * std::f64::consts::PI * f64::from(self.t) * DT / GAIT_PERIOD;
        o[13] = phase.sin();
        o[14] = phase.cos();
        o
    }
}

impl Env for Walker {
    fn kind(&self) -> EnvKind {
        EnvKind::Walker
    }

    fn reset(&mut self, rng: &mut Rng) {
        let mut v = [0.0; 2 + 3 * JOINTS];
        for x in &mut v {
            *x = rng.uniform(-0.1, 0.1);
        }
        *self = Self::build(&v);
    }

    fn observe(&self, out: &mut [f64]) {
        out[..OBS].copy_from_slice(&self.observation());
    }

    fn features(&self, out: &mut [f64; FEATURES]) {
        let o = self.observation();
        let joint_speed = o[9..13].iter().map(|s| s.abs()).sum::<f64>() / JOINTS as f64;
        *out = [self.x(), o[2], o[0], o[1], o[4], joint_speed];
    }

    fn effort(&self, action: &[f64]) -> f64 {
        let squared = |a: &f64| if a.is_finite() { a.clamp(-1.0, 1.0).powi(2) } else { 0.0 };
        action.iter().map(squared).sum::<f64>() / JOINTS as f64
    }

    fn step(&mut self, action: &[f64]) -> (f64, bool) {
        let before = self.x();
        for (i, a) in action.iter().enumerate().take(JOINTS) {
            // A policy with huge weights can give NaN (∞ − ∞); hold the joint.
            let a = if a.is_finite() { a.clamp(-1.0, 1.0) } else { 0.0 };
            let target = (a * MAX_ANGLE) as f32;
            if let Some(j) = self.world.impulse_joints.get_mut(self.joints[i], false) {
                j.data.set_motor_position(JointAxis::AngX, target, STIFFNESS, DAMPING);
            }
        }
        self.world.step();
        self.t += 1;
        let torso = &self.world.bodies[self.torso];
        let (height, tilt) = (f64::from(torso.translation().y), f64::from(torso.rotation().angle()));
        // A physics blow-up (non-finite state) ends the episode like a fall.
        let fallen = !(height >= MIN_HEIGHT && tilt.abs() <= MAX_TILT);
        let progress = self.x() - before;
        (if progress.is_finite() { progress } else { 0.0 }, fallen)
    }
}
