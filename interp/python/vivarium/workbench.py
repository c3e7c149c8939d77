"""Trying a candidate before proposing it (grant: `[capabilities]
workbench`; `vivarium:agent/workbench@0.2.0`), during `improve` inside
`vivarium evolve`.

    edits = [source.search_replace("src/agent.py", "RETRIES = 1", "RETRIES = 3")]
    trial = workbench.try_candidate(edits, limit=3)
    if trial.built and trial.score > best:
        return source.proposal("retry more", edits)
    for o in trial.outcomes:              # .task_id, .passed, .score, .feedback
        log.info(f"{o.task_id}: {o.feedback}")

The host applies the edits to a scratch copy of this variant's tree
through the guard (the same refusals as a proposal), builds it, and runs
the candidate's task agent on up to `limit` visible tasks (those named in
`task_ids`, or the first `limit` of the visible split), under the
candidate's own limits and grant. A held-out task id is `denied`; the
grader's code and expected answers never come back, only each task's
feedback line. Nothing tried enters the archive unless it is proposed.

Refusals raise `ServiceError` with `kind` `denied`, `budget-exhausted`
(tries, tasks, build seconds or fuel of the grant spent), `unavailable`
(outside `evolve`: no suite) or `invalid-request`; without the grant,
`NotGranted`.
"""

from wit_world.imports import workbench as _wb

from . import _host
from .errors import call

Trial = _wb.Trial
Outcome = _wb.Outcome


def try_candidate(edits, task_ids=(), limit=5):
    """Build the candidate `edits` make of this variant and run it on up
    to `limit` visible tasks; returns a `Trial`: `.built`, `.error` (the
    guard's, build's or load's error text, or None), `.outcomes`, `.score`
    (the mean over the outcomes), `.fuel`."""
    _host.require("workbench")
    return call("workbench", _wb.try_candidate, list(edits), [str(t) for t in task_ids], int(limit))


def tries_left():
    """Tries left in this `improve` call."""
    _host.require("workbench")
    return _wb.tries_left()
