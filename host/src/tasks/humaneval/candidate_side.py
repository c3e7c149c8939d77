"""The instance that runs the code under test: the problem's prompt and the
completion (`candidate.py`), and this loop, which answers the test
instance's calls one at a time through the host (`peer`).

Nothing here is trusted: the completion runs in this interpreter and may
replace any of it. All it can do is answer differently, and every answer is
checked by the host and decoded by the test instance as plain data.

The interpreter imports this module at build time (it is in its snapshot,
as `vivarium_humaneval.candidate_side`), so no instance compiles it; the
program is imported when `serve` starts.
"""

import json

from componentize_py_types import Err
from wit_world.imports import source as _source

from vivarium_humaneval import plain as _plain


def _describe(e):
    try:
        text = f"{type(e).__name__}: {e}"
    except BaseException:  # noqa: BLE001 (an exception whose str() fails)
        text = type(e).__name__
    line = _plain.innermost_line(e, "src/candidate.py")
    return f"{text} (program line {line})" if line else text


def serve(entry):
    # The program is imported as the loader imports a variant's entry
    # module, so a syntax error or an exception at import is reported the
    # same way (its kind, file and line); it is the completion's error.
    import vivarium_loader as _loader

    try:
        _candidate = _loader._import("candidate")
    except _loader.LoadError as e:
        raise Err(str(e)) from None
    fn = getattr(_candidate, entry, None)
    if not callable(fn):
        raise NameError(f"the program defines no function {entry!r}")
    reply = ""
    while True:
        try:
            request = _source.peer(reply)
        except Err:
            return "done"
        try:
            args, kwargs = _plain.decode(json.loads(request))
            reply = json.dumps({"ok": _plain.encode(fn(*args, **kwargs))})
        except MemoryError:
            raise
        except BaseException as e:  # noqa: BLE001 (SystemExit too: the call failed)
            reply = json.dumps({"err": _describe(e)})
