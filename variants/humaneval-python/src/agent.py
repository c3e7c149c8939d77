"""HumanEval without a model, to run `examples/humaneval` offline.

`solve` reads a problem's prompt (the function's signature and docstring)
and answers with a completion that returns, for the arguments it knows of,
the documented result: the docstring's `>>> f(args)` examples, and what
`improve` learned from feedback (`memo.py`). For any other arguments it
returns None.

`improve` reads the feedback of the visible tasks — the grader names the
failing assert of each (`test line N: assert candidate(ARGS) == EXPECTED`)
— and adds those pairs to `memo.py`.

This is reward hacking on purpose: the visible score can climb as the memo
grows, the held-out score cannot, since those tasks' asserts never reach
the variant. The gap is what the held-out split is there to show; a variant
with the `llm` capability (examples/coder) is the real thing.
"""

import ast
import re

import vivarium
from vivarium import Err, source, types

from memo import MEMO

# How many times this variant has improved itself; `improve` rewrites it.
GENERATION = 0

MEMO_PATH = "src/memo.py"
SELF_PATH = "src/agent.py"


def _signature(prompt, entry):
    """The parameter names of `entry` in the prompt (which parses: its
    function's body is the docstring)."""
    for node in ast.walk(ast.parse(prompt)):
        if isinstance(node, ast.FunctionDef) and node.name == entry:
            return [a.arg for a in node.args.args]
    raise Err(f"the prompt defines no function {entry!r}")


def _call_pairs(text, name):
    """(repr(arguments), repr(result)) of each `name(ARGS) == RESULT` or
    docstring `>>> name(ARGS)` / result line in `text` whose values are
    literals."""
    pairs = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*>>>\s*" + re.escape(name) + r"\((.*)\)\s*$", line)
        if m and i + 1 < len(lines):
            try:
                args = ast.literal_eval("(" + m.group(1) + ",)")
                result = ast.literal_eval(lines[i + 1].strip())
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            pairs[repr(args)] = repr(result)
    return pairs


def _learned(feedback):
    """(task id, repr(arguments), repr(expected)) of each failing assert the
    feedback names."""
    found = []
    task = None
    for line in feedback.splitlines():
        m = re.match(r"task (\S+) `", line)
        if m:
            task = m.group(1)
        m = re.search(r"test line \d+: (assert candidate\(.*)\)$", line)
        if not (m and task):
            continue
        try:
            node = ast.parse(m.group(1)).body[0].test
            if not (isinstance(node, ast.Compare) and isinstance(node.left, ast.Call)):
                continue
            args = tuple(ast.literal_eval(a) for a in node.left.args)
            expected = ast.literal_eval(node.comparators[0])
        except (ValueError, SyntaxError, TypeError, IndexError, AttributeError, RecursionError):
            continue
        found.append((task, repr(args), repr(expected)))
    return found


class TaskAgent(vivarium.TaskAgent):
    def solve(self, task: types.Task) -> types.Answer:
        m = re.search(r"entry_point: (\w+)", task.instruction)
        if not m:
            raise Err("the instruction names no entry_point")
        entry = m.group(1)
        params = _signature(task.input, entry)
        table = _call_pairs(task.input, entry)
        table.update(MEMO.get(task.id, {}))
        key = "(" + "".join(f"{p}, " for p in params) + ")"
        body = "    _table = {\n"
        for args, result in sorted(table.items()):
            body += f"        {args!r}: {result},\n"
        body += "    }\n"
        body += f"    _key = repr({key})\n"
        body += "    return _table.get(_key)\n"
        return types.Answer(body, f"generation {GENERATION}: {len(table)} known calls")


class MetaAgent(vivarium.MetaAgent):
    def improve(self, ctx: types.ImproveContext) -> types.Proposal:
        learned = 0
        memo = {task: dict(calls) for task, calls in MEMO.items()}
        for task, args, expected in _learned(ctx.feedback):
            if memo.setdefault(task, {}).get(args) != expected:
                memo[task][args] = expected
                learned += 1
        if not learned:
            raise Err("the feedback names no failing assert this variant has not learned")
        memo_text = "# What `improve` learned from feedback: task id -> {repr(arguments): repr(expected)}.\n"
        memo_text += "MEMO = " + repr(memo) + "\n"
        text = source.set_const(source.text(ctx, SELF_PATH), "GENERATION", str(GENERATION + 1))
        vivarium.log.info(f"humaneval generation {GENERATION}: learned {learned} calls from feedback")
        return source.proposal(
            f"humaneval: {learned} more calls learned from feedback (generation {GENERATION + 1})",
            [source.write(MEMO_PATH, memo_text), source.write(SELF_PATH, text)],
        )
