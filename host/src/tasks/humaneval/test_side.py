"""The test instance: the problem's prompt and test (`humaneval_test.py`),
which only the grader wrote, and `candidate`, a stand-in for the
completion's function that asks the host to call it in the other instance.

No code of the completion's runs here: what comes back from it is plain data
(`vivarium_plain`), decoded into fresh built-in objects. `run` answers with
JSON the host reads: `{"passed": true}` or where and why the test failed.

The interpreter imports this module at build time (it is in its snapshot,
as `vivarium_humaneval.test_side`), so no instance compiles it.
"""

import json

from componentize_py_types import Err
from wit_world.imports import source as _source

from vivarium_humaneval import plain as _plain


class CandidateError(Exception):
    """The completion raised, answered something that is not data, or its
    instance ended (the host says which)."""


def _candidate(*args, **kwargs):
    try:
        reply = _source.peer(json.dumps(_plain.encode([list(args), kwargs])))
    except Err as e:
        raise CandidateError(str(e.value)) from None
    message = json.loads(reply)
    if "err" in message:
        raise CandidateError(message["err"])
    return _plain.decode(message["ok"])


def _test_line(e):
    return _plain.innermost_line(e, "src/humaneval_test.py")


def run(entry):
    import humaneval_test as t

    setattr(t, entry, _candidate)
    try:
        t.check(_candidate)
    except MemoryError:
        raise
    except CandidateError as e:
        return json.dumps({"passed": False, "kind": "candidate", "message": str(e), "line": _test_line(e)})
    except Exception as e:  # noqa: BLE001 (the assert's, or anything the test raised)
        return json.dumps(
            {"passed": False, "kind": type(e).__name__, "message": str(e), "line": _test_line(e)}
        )
    return json.dumps({"passed": True})
