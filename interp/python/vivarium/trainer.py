"""Training jobs run by the host (grant: `[capabilities] trainer`),
budgeted in seconds."""

import json as _json

from wit_world.imports import trainer as _trainer

from . import _host
from .errors import call

JobSpec = _trainer.JobSpec
JobStatus = _trainer.JobStatus
Phase = _trainer.Phase


def submit(recipe, config, budget_seconds, script=None):
    """Submit a job; returns its id. `config` is a dict or a JSON string."""
    _host.require("trainer")
    if not isinstance(config, str):
        config = _json.dumps(config)
    spec = _trainer.JobSpec(recipe=recipe, config_json=config, script=script, budget_seconds=float(budget_seconds))
    return call("trainer", _trainer.submit, spec)


def poll(job):
    _host.require("trainer")
    return call("trainer", _trainer.poll, job)


def wait(job, timeout_ms=60_000):
    _host.require("trainer")
    return call("trainer", _trainer.wait, job, int(timeout_ms))


def cancel(job):
    _host.require("trainer")
    return call("trainer", _trainer.cancel, job)


def metrics(status):
    """A job status's metrics as a dict."""
    return {m.name: m.value for m in status.metrics}


def seconds_left():
    _host.require("trainer")
    return _trainer.seconds_left()
