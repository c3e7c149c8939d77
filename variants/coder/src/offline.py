"""What `coder` does with no model: honest, small and deterministic.

`solve` answers from the prompt's docstring examples (`>>> f(args)` and the
result on the next line): a lookup table, right only on those arguments.
`rule_edit` is the meta-agent's fallback: one rule-based edit of the task
agent's knobs, no model involved.
"""

import ast
import re


def _params(prompt, entry):
    for node in ast.walk(ast.parse(prompt)):
        if isinstance(node, ast.FunctionDef) and node.name == entry:
            return [a.arg for a in node.args.args]
    return []


def _examples(prompt, entry):
    table = {}
    lines = prompt.splitlines()
    for i, line in enumerate(lines[:-1]):
        m = re.match(r"\s*>>>\s*" + re.escape(entry) + r"\((.*)\)\s*$", line)
        if not m:
            continue
        try:
            args = ast.literal_eval("(" + m.group(1) + ",)")
            result = ast.literal_eval(lines[i + 1].strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        table[repr(args)] = repr(result)
    return table


def solve(task, entry):
    """A body returning the documented result for the documented arguments."""
    try:
        params = _params(task.input, entry)
    except SyntaxError:
        params = []
    table = _examples(task.input, entry)
    key = "(" + "".join(f"{p}, " for p in params) + ")"
    body = "    _table = {\n"
    for args, result in sorted(table.items()):
        body += f"        {args!r}: {result},\n"
    body += "    }\n"
    body += f"    return _table.get(repr({key}))\n"
    return body


def rule_edit(text):
    """(search, replace, why) for the one rule this fallback knows: one
    more attempt per task, up to 4; None when there is nothing left to do."""
    m = re.search(r"^ATTEMPTS = (\d+)$", text, re.M)
    if not m or int(m.group(1)) >= 4:
        return None
    n = int(m.group(1))
    return m.group(0), f"ATTEMPTS = {n + 1}", f"offline rule: attempts per task {n} -> {n + 1}"
