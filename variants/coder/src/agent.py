"""`coder`: a self-improving coding agent on HumanEval (DGM's loop, in the
sandbox).

The task agent (`solve.py`) asks the host's model for each completion: its
prompt, the extraction of code from the answer, the self-check and the
retries are all in this tree, which the meta-agent may rewrite. Without a
model it answers offline (`offline.py`) and says so in its notes.

The meta-agent (`meta.py`) runs a bounded tool loop with the model over its
own files — view, search, replace text, create a file, try the candidate on
the host's workbench, finish — and proposes what it changed as patch edits
(search/replace), never as whole-file rewrites. Without a model it makes one
small rule-based edit (`offline.py`), and its summary says it is one.
"""

import vivarium
from vivarium import Err, types

import meta
import solve

# How many times this variant has improved itself; `improve` raises it.
GENERATION = 0


class TaskAgent(vivarium.TaskAgent):
    def solve(self, task: types.Task) -> types.Answer:
        completion, notes = solve.solve(task)
        return types.Answer(completion, f"generation {GENERATION}: {notes}")


class MetaAgent(vivarium.MetaAgent):
    def improve(self, ctx: types.ImproveContext) -> types.Proposal:
        return meta.improve(ctx, GENERATION)
