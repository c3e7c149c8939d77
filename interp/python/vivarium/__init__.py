"""The vivarium SDK for Python variants.

Every Python variant runs inside the host's Python interpreter, which
preloads this module: `import vivarium` needs nothing in the variant's tree.

    import vivarium
    from vivarium import Err, types

    class TaskAgent(vivarium.TaskAgent):
        def solve(self, task):
            vivarium.log.info(f"solving {task.id}")
            return types.Answer(output="42", notes=None)

    class MetaAgent(vivarium.MetaAgent):
        def improve(self, ctx):
            text = vivarium.source.text(ctx, "src/agent.py")
            text = vivarium.source.set_const(text, "GENERATION", "1")
            return vivarium.source.proposal("bump GENERATION", [vivarium.source.write("src/agent.py", text)])

What is here:

* `log`: `trace`/`debug`/`info`/`warn`/`error`; `print()` and `sys.stderr`
  already go to the host's log, and the `logging` module is routed there
  too (`vivarium.log.handler`).
* `llm`, `memory`, `archive`, `simulator`, `trainer`: typed wrappers of the
  host's services. A service the variant's grant does not include raises
  `NotGranted` (a `PermissionError`) naming it; a service's own refusal
  (budget, quota, denied model) raises `ServiceError` with its kind.
* `source`: read the variant's own tree and write the edits of a proposal
  (`text`, `write`, `delete`, `search_replace`, `patch`, `replace`,
  `set_const`, `const_value`, `proposal`), and `tree()`, the tree this
  instance was loaded from.
* `workbench`: `try_candidate(edits, task_ids=(), limit=5)` builds and runs
  a candidate on visible tasks during `evolve`, `tries_left()`.
* `Err`, `types`, `TaskAgent`, `MetaAgent`: the contract's types.
* `RewardModel` and `reward` (its `Env`, `Observation`, `Transition`): a
  reward-design variant defines `class RewardModel` with
  `rewards(self, env, transitions) -> list[float]`, one number per
  transition (the `reward-model` interface, wit/reward.wit):

      class RewardModel(vivarium.RewardModel):
          def rewards(self, env, transitions):
              if env == vivarium.reward.Env.CARTPOLE:
                  return [1.0 - abs(t.next_obs.o2) for t in transitions]
              return [0.0 for _ in transitions]
"""

from componentize_py_types import Err
from wit_world import exports as _exports
from wit_world.imports import types
from wit_world.exports import reward_model as reward

from ._host import NotGranted, granted
from .errors import ServiceError
from . import log, llm, memory, archive, simulator, trainer, source, workbench

TaskAgent = _exports.TaskAgent
# The 0.2.0 meta-agent (patch edits); the loader serves 0.1.0's from it too.
MetaAgent = _exports.VivariumAgentMetaAgent020
RewardModel = _exports.RewardModel

__all__ = [
    "Err", "types", "TaskAgent", "MetaAgent", "RewardModel", "reward", "NotGranted", "ServiceError", "granted",
    "log", "llm", "memory", "archive", "simulator", "trainer", "source", "workbench",
]
