"""Simulation environments stepped by the host (grant: `[capabilities]
simulator`), budgeted in steps per call."""

from wit_world.imports import simulator as _sim

from . import _host
from .errors import call

EnvInfo = _sim.EnvInfo
StepResult = _sim.StepResult
RolloutResult = _sim.RolloutResult


def make(env, seed=0):
    """(handle, EnvInfo) for a new environment; reset it before stepping."""
    _host.require("simulator")
    return call("simulator", _sim.make, env, int(seed))


def reset(handle):
    _host.require("simulator")
    return list(call("simulator", _sim.reset, handle))


def step(handle, action):
    """One step; `action` is a number (a discrete action's index) or a list."""
    _host.require("simulator")
    if not isinstance(action, (list, tuple)):
        action = [action]
    return call("simulator", _sim.step, handle, [float(a) for a in action])


def rollout(env, seed, policy, max_steps):
    _host.require("simulator")
    return call("simulator", _sim.rollout, env, int(seed), [float(p) for p in policy], int(max_steps))


def close(handle):
    _host.require("simulator")
    _sim.close(handle)


def steps_left():
    _host.require("simulator")
    return _sim.steps_left()
