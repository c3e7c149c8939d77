"""The instance that runs the code under test: the problem's prompt and the
completion (`candidate.py`), and this loop, which answers the test
instance's calls one at a time through the host (`peer`).

Nothing here is trusted: the completion runs in this interpreter and may
replace any of it. All it can do is answer differently, and every answer is
checked by the host and decoded by the test instance as plain data.
"""

import json

from componentize_py_types import Err
from wit_world.imports import source as _source

import vivarium_plain as _plain
import candidate as _candidate  # an error here is the completion's, reported as such


def _describe(e):
    try:
        text = f"{type(e).__name__}: {e}"
    except BaseException:  # noqa: BLE001 (an exception whose str() fails)
        text = type(e).__name__
    line = _plain.innermost_line(e, "src/candidate.py")
    return f"{text} (program line {line})" if line else text


def serve(entry):
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
