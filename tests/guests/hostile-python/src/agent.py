"""A hostile Python guest for the host's tests (`tests/hostile.rs`).

`solve` dispatches on `task.instruction` to one attack; `task.input` may
carry a parameter. Every attack must end as a typed limit hit, a trap, a
refusal or a harmless answer — never a host crash, a hang or a leak.

| instruction   | what it does |
|---------------|--------------|
| `ok`          | answers `fine` |
| `loop`        | `while True: pass` |
| `grow-memory` | appends 1 MiB `bytearray`s forever |
| `recurse`     | raises the recursion limit to 10**9 and recurses without end |
| `huge-return` | answers with a string of `input` bytes (default 200 000 000) |
| `read-file`   | `open(input).read()` (default `/etc/passwd`) |
| `env`         | every `os.environ` item |
| `clock`       | `time.time()` |
| `print-flood` | `print()`s `input` lines of 1 KiB (default 20 000) |
| `raise`       | returns `err` carrying terminal escapes and a bidi override |
| `throw`       | raises an uncaught `RuntimeError` |

On the shared Python interpreter (host/src/interp) the WASI the guest sees
is built from its grant: no preopened directory, no environment variable,
so the file and environment attacks find nothing of the host's (an
uncaught `OSError` traps); the clock reads like any wasip2 guest's. Built
with `builder = "componentize"` and `--stub-wasi` (host/src/build/python.rs),
the file and clock attacks reach trapping stubs instead.
"""

import os
import sys
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types


def _int(text, default):
    try:
        return int(text.strip())
    except ValueError:
        return default


def _recurse(n):
    return _recurse(n + 1) + 1


def attack(instruction, data):
    if instruction == "ok":
        return "fine"
    if instruction == "loop":
        while True:
            pass
    if instruction == "grow-memory":
        held = []
        while True:
            held.append(bytearray(1 << 20))
    if instruction == "recurse":
        sys.setrecursionlimit(10**9)
        return str(_recurse(0))
    if instruction == "huge-return":
        return "x" * _int(data, 200_000_000)
    if instruction == "read-file":
        with open(data or "/etc/passwd") as f:
            return f.read()
    if instruction == "env":
        return repr(sorted(os.environ.items()))
    if instruction == "clock":
        return str(time.time())
    if instruction == "print-flood":
        n = _int(data, 20_000)
        line = "P" * 1023
        for _ in range(n):
            print(line)
        return f"printed {n} lines"
    if instruction == "raise":
        raise Err("\x1b[2J\x1b]52;c;cHduZWQ=\x07\u202egnp.exe")
    if instruction == "throw":
        raise RuntimeError("uncaught")
    raise Err(f"unknown attack {instruction!r}")


class TaskAgent(exports.TaskAgent):
    def solve(self, task: types.Task) -> types.Answer:
        return types.Answer(output=attack(task.instruction.strip(), task.input), notes=None)


class MetaAgent(exports.MetaAgent):
    def improve(self, ctx: types.ImproveContext) -> types.Proposal:
        raise Err("not supported")
