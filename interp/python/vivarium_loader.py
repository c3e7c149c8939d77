"""The Python interpreter's loader: what every Python variant runs inside.

The host builds this app once per machine with componentize-py (see
host/src/build/interpreter.rs). componentize-py runs the module's top level
at build time and snapshots the interpreter, so:

* everything the standard library offers a variant is imported *here*
  (`PRELOADED`): at run time the component has no file system, and a module
  that was not loaded at build time cannot be found;
* the import system is then closed: no path finder, no `sys.path`, so an
  import of anything else ends in `ModuleNotFoundError` naming the module
  (the instance's file system holds nothing but what the grant preopens).

At run time (a fresh instance per call) the first export entered loads the
variant: it asks the host for the source tree (`vivarium:interp/source`,
read-only data, nothing else of the host), serves the tree's `src/` as
modules (`src/agent.py` is `agent`, `src/pkg/__init__.py` is `pkg`), and
imports the entry module. A syntax error or an exception at import becomes a
`load-error` with file, line and message: `check` returns it, `solve` and
`improve` answer `err` with it in words.
"""

import sys

# --- Build time: preload the standard library a variant may use. ----------

PRELOADED_NAMES = [
    "abc", "argparse", "array", "ast", "base64", "binascii", "bisect", "builtins", "calendar",
    "cmath", "codecs", "collections", "collections.abc", "colorsys", "contextlib", "contextvars",
    "copy", "copyreg", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis", "enum",
    "errno", "fnmatch", "fractions", "functools", "gc", "graphlib", "hashlib", "heapq", "hmac",
    "html", "html.entities", "html.parser", "inspect", "io", "ipaddress", "itertools", "json",
    "json.decoder", "json.encoder", "keyword", "linecache", "locale", "logging", "math",
    "numbers", "operator", "os", "os.path", "pprint", "queue", "random", "re", "reprlib",
    "secrets", "shlex", "statistics", "string", "struct", "sys", "textwrap", "time", "timeit",
    "token", "tokenize", "traceback", "types", "typing", "unicodedata", "unittest", "uuid",
    "warnings", "weakref", "zlib", "encodings.idna", "encodings.ascii", "encodings.latin_1",
    "encodings.utf_8", "encodings.utf_16", "encodings.utf_32", "urllib.parse", "string.templatelib",
    "importlib", "importlib.abc", "importlib.machinery", "importlib.util", "fractions", "zipfile",
    "gzip", "bz2", "lzma", "xml.etree.ElementTree", "email", "email.message", "tomllib",
    "difflib", "doctest", "pickle", "shutil", "tempfile", "glob", "pathlib", "codeop", "code",
]

PRELOADED = []
MISSING = []
for _name in PRELOADED_NAMES:
    try:
        __import__(_name)
        PRELOADED.append(_name)
    except Exception:  # not in this build of CPython (e.g. no C extension)
        MISSING.append(_name)
del _name
# The build's log says what is in (componentize-py runs this at build time).
print(f"vivarium_loader: preloaded {len(PRELOADED)} modules; not available: {MISSING}", flush=True)

import importlib.abc  # noqa: E402
import importlib.machinery  # noqa: E402
import importlib.util  # noqa: E402
import linecache  # noqa: E402
import traceback  # noqa: E402

from componentize_py_types import Err  # noqa: E402
from wit_world import exports  # noqa: E402
import json  # noqa: E402
import marshal  # noqa: E402
from wit_world.imports import source as _source  # noqa: E402
from wit_world.imports import edits as _edits  # noqa: E402
import wit_world.imports as _imports  # noqa: E402
from wit_world.imports import vivarium_agent_llm_0_1_0 as _llm_0_1  # noqa: E402

# The interpreter imports two versions of `llm` and exports two of
# `meta-agent`, so componentize-py names them by version. Code written
# before that (`from wit_world.imports import llm`, `exports.MetaAgent`)
# keeps its names: 0.1.0's `llm`, and the 0.2.0 meta-agent protocol.
_imports.llm = _llm_0_1
sys.modules["wit_world.imports.llm"] = _llm_0_1
exports.MetaAgent = exports.VivariumAgentMetaAgent020

import vivarium  # noqa: E402  (the SDK; preloaded so variants can import it)
import vivarium._host as _host  # noqa: E402

# The HumanEval grader's harness (host/src/tasks/humaneval/*.py, shipped
# here as `vivarium_humaneval`): imported now, at build time, so a grading
# instance finds it compiled and loaded instead of compiling ~150 lines of
# Python on every start. Its instances' trees hold only the program.
import vivarium_humaneval.candidate_side  # noqa: E402, F401
import vivarium_humaneval.plain  # noqa: E402, F401
import vivarium_humaneval.test_side  # noqa: E402, F401

import logging  # noqa: E402

# A log record needs no process or thread of the host's.
logging.logProcesses = False
logging.logThreads = False
logging.logMultiprocessing = False

# stdout and stderr go to the host's log, line by line.
sys.stdout = _host.LogWriter("info")
sys.stderr = _host.LogWriter("warn")

# Close the import system: built-in and frozen modules, what is already
# loaded, and the variant's own tree (added at run time); nothing is looked
# for in files.
sys.path = []
sys.path_hooks = []
sys.path_importer_cache.clear()


class _MissingModuleFinder(importlib.abc.MetaPathFinder):
    """Last on the path: a module found nowhere is refused by name."""

    def find_spec(self, fullname, path=None, target=None):
        raise ModuleNotFoundError(
            f"No module named {fullname!r}: the Python interpreter offers the variant's own "
            f"files under src/, the `vivarium` SDK and the standard library modules it "
            f"preloads (docs/languages.md), not {fullname!r}",
            name=fullname,
        )


class _TreeLoader(importlib.abc.Loader):
    def __init__(self, path, text, code):
        self.path = path
        self.text = text
        self.code = code

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        code = self.code
        if code is None:
            code = compile(self.text, self.path, "exec", dont_inherit=True)
        exec(code, module.__dict__)


class _TreeFinder(importlib.abc.MetaPathFinder):
    """The variant's `src/` as modules, from the data the host handed over."""

    def __init__(self):
        self.modules = {}

    def find_spec(self, fullname, path=None, target=None):
        found = self.modules.get(fullname)
        if found is None:
            return None
        path, text, is_package, code = found
        spec = importlib.util.spec_from_loader(
            fullname, _TreeLoader(path, text, code), origin=path, is_package=is_package
        )
        spec.has_location = True
        return spec


_TREE = _TreeFinder()
sys.meta_path = [
    importlib.machinery.BuiltinImporter,
    importlib.machinery.FrozenImporter,
    _TREE,
    _MissingModuleFinder(),
]


# linecache reads files for tracebacks; there are none: it serves the
# variant's tree from memory and knows nothing else.
def _getlines(filename, module_globals=None):
    entry = linecache.cache.get(filename)
    # Lazy entries (one-tuples) are for modules whose loader could read
    # the source; none can here.
    return entry[2] if entry and len(entry) >= 3 else []


linecache.getlines = _getlines
linecache.checkcache = lambda filename=None: None
linecache.updatecache = lambda filename, module_globals=None: []


def _module_name(rel):
    """`src/pkg/mod.py` -> (`pkg.mod`, False); `src/pkg/__init__.py` ->
    (`pkg`, True); None for anything that is not a module under src/."""
    if not rel.startswith("src/") or not rel.endswith(".py"):
        return None
    parts = rel[len("src/") : -len(".py")].split("/")
    if not all(p.isidentifier() for p in parts):
        return None
    if parts[-1] == "__init__":
        parts = parts[:-1]
        if not parts:
            return None
        return ".".join(parts), True
    return ".".join(parts), False


# --- Run time: load the variant once per instance. ------------------------


class LoadError(Exception):
    """Why the variant's code did not load: `kind` is `syntax-error`,
    `missing-module`, `exception` (raised by its top level) or
    `missing-agent`; `file` and `line` say where, when known."""

    def __init__(self, kind, message, file="", line=0):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.file = file or ""
        self.line = max(0, int(line or 0))

    def as_json(self):
        return json.dumps(
            {"kind": self.kind, "file": self.file, "line": self.line, "message": self.message},
            sort_keys=True,
        )

    def __str__(self):
        where = self.file
        if where and self.line:
            where = f"{where}:{self.line}"
        prefix = f"{where}: " if where else ""
        return f"the variant did not load ({self.kind}): {prefix}{self.message}"


class _Loaded:
    def __init__(self):
        self.module = None
        self.mode = None
        self.error = None  # a LoadError


_STATE = None


def _innermost_tree_frame(exc):
    """File and line of the innermost traceback frame in the variant's tree."""
    file, line = "", 0
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename in _host.TREE:
            file, line = code.co_filename, tb.tb_lineno or 0
        tb = tb.tb_next
    return file, line


def _import(entry_module):
    try:
        return importlib.import_module(entry_module)
    except SyntaxError as e:
        message = f"{type(e).__name__}: {e.msg}"
        if e.text:
            message += f"\n    {e.text.rstrip()}"
            if e.offset:
                message += "\n    " + " " * max(0, e.offset - 1 - (len(e.text) - len(e.text.lstrip()))) + "^"
        raise LoadError("syntax-error", message, e.filename, e.lineno) from None
    except ModuleNotFoundError as e:
        file, line = _innermost_tree_frame(e)
        if e.name == entry_module and not file:
            raise LoadError(
                "missing-agent",
                f"the tree has no module {entry_module!r} (src/{entry_module.replace('.', '/')}.py)",
            ) from None
        raise LoadError("missing-module", f"{type(e).__name__}: {e}", file, line) from None
    except MemoryError:
        # The host refused memory: let the call end as the limit it hit.
        raise
    except Exception as e:  # noqa: BLE001 (a variant may raise anything)
        file, line = _innermost_tree_frame(e)
        raise LoadError("exception", f"{type(e).__name__}: {e}", file, line) from None


def _compiled_by_host():
    """Code objects the host kept from an earlier instance, by path."""
    out = {}
    for f in _source.compiled():
        try:
            out[f.path] = marshal.loads(bytes(f.contents))
        except Exception:  # noqa: BLE001 (compile instead)
            pass
    return out


def _index_tree():
    """Serve the tree's modules. Their code comes compiled from the host
    when an earlier instance offered it; otherwise every module is compiled
    now, before any of it runs, and offered to the host (a module that does
    not compile is compiled again when imported, to raise its error)."""
    cached = _compiled_by_host()
    fresh = []
    for f in _source.files():
        data = bytes(f.contents)
        _host.TREE[f.path] = data
        named = _module_name(f.path)
        if named is None:
            continue
        name, is_package = named
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise LoadError("syntax-error", f"the file is not UTF-8 text: {e}", f.path, 1) from None
        code = cached.get(f.path)
        if code is None and not cached:
            try:
                code = compile(text, f.path, "exec", dont_inherit=True)
                fresh.append((f.path, marshal.dumps(code)))
            except (SyntaxError, ValueError, RecursionError):
                code = None
        _TREE.modules[name] = (f.path, text, is_package, code)
        linecache.cache[f.path] = (len(data), None, text.splitlines(keepends=True), f.path)
    if fresh:
        _source.offer_compiled([_source.File(path=p, contents=c) for p, c in fresh])


def _load():
    """Load the variant (once per instance); the state, with `error` set
    when it did not load."""
    global _STATE
    if _STATE is not None:
        return _STATE
    state = _Loaded()
    _STATE = state
    entry = _source.entry()
    state.mode = entry.mode
    try:
        _index_tree()
        state.module = _import(entry.module)
        if isinstance(entry.mode, _source.Mode_Function):
            fn = getattr(state.module, entry.mode.value, None)
            if not callable(fn):
                raise LoadError("missing-agent", f"module {entry.module!r} has no function {entry.mode.value!r}")
    except LoadError as e:
        state.error = e
    return state


def _agent(kind):
    """An instance of the variant's `kind` class; `Err` when the variant
    did not load or has no such class."""
    state = _load()
    if state.error is not None:
        print(str(state.error), file=sys.stderr)
        raise Err(str(state.error))
    cls = getattr(state.module, kind, None)
    if cls is None:
        raise Err(
            str(LoadError("missing-agent", f"the module {state.module.__name__!r} defines no {kind} class"))
        )
    return cls()


def _answer(output, notes=None):
    return vivarium.types.Answer(output=output, notes=notes)


class TaskAgent(exports.TaskAgent):
    def solve(self, task):
        state = _load()
        if isinstance(state.mode, _source.Mode_Check):
            if state.error is None:
                for kind in ("TaskAgent", "MetaAgent"):
                    if getattr(state.module, kind, None) is None:
                        state.error = LoadError(
                            "missing-agent",
                            f"the module {state.module.__name__!r} defines no {kind} class",
                            getattr(state.module, "__file__", "") or "",
                        )
                        break
            if state.error is not None:
                return _answer("load-error", state.error.as_json())
            return _answer("loaded")
        if isinstance(state.mode, _source.Mode_Function):
            if state.error is not None:
                raise Err(str(state.error))
            try:
                result = getattr(state.module, state.mode.value)(task.input)
            except MemoryError:
                raise
            except Exception as e:  # noqa: BLE001 (the code may raise anything)
                file, line = _innermost_tree_frame(e)
                where = f" ({file}:{line})" if file else ""
                raise Err(f"{type(e).__name__}: {e}{where}") from None
            return _answer("" if result is None else str(result))
        return _agent("TaskAgent").solve(task)


def _proposal_as(module, proposal):
    """The variant's proposal in `module`'s types (0.1.0's `types` or
    0.2.0's `edits`), whichever version's types the variant built it
    with. 0.1.0 has no patch edits: a proposal carrying one is an `err`
    there (only a host without the 0.2.0 `improve` calls that one)."""
    out = []
    for e in getattr(proposal, "edits", None) or []:
        kind = type(e).__name__
        if kind == "Edit_Write":
            f = e.value
            out.append(module.Edit_Write(module.SourceFile(path=f.path, contents=bytes(f.contents))))
        elif kind == "Edit_Delete":
            out.append(module.Edit_Delete(e.value))
        elif hasattr(module, kind):
            v = e.value
            if kind == "Edit_SearchReplace":
                v = module.SearchReplace(path=v.path, search=v.search, replace=v.replace)
            out.append(getattr(module, kind)(v))
        else:
            raise Err(f"a {kind} edit needs vivarium:agent@0.2.0's improve, which this host does not call")
    return module.Proposal(summary=str(getattr(proposal, "summary", "")), edits=out)


class VivariumAgentMetaAgent010(exports.VivariumAgentMetaAgent010):
    def improve(self, ctx):
        return _proposal_as(vivarium.types, _agent("MetaAgent").improve(ctx))


class VivariumAgentMetaAgent020(exports.VivariumAgentMetaAgent020):
    """What the host calls (the interpreter exports 0.2.0's `improve`):
    the variant's `MetaAgent` may return 0.1.0 or 0.2.0 edits."""

    def improve(self, ctx):
        return _proposal_as(_edits, _agent("MetaAgent").improve(ctx))


class RewardModel(exports.RewardModel):
    """The `reward-designer` world's export: the variant's `RewardModel`
    class, made once per instance (a training run calls `rewards` once per
    chunk of transitions on one instance, so the variant may keep state).
    `rewards` has no error case in the contract: a variant that did not
    load, has no `RewardModel`, raises, or answers something other than
    numbers ends the call as a trap, its reason in the log."""

    def rewards(self, env, transitions):
        state = _load()
        if state.error is not None:
            raise RuntimeError(str(state.error))
        model = getattr(state, "reward_model", None)
        if model is None:
            cls = getattr(state.module, "RewardModel", None)
            if cls is None:
                raise RuntimeError(
                    str(
                        LoadError(
                            "missing-agent",
                            f"the module {state.module.__name__!r} defines no RewardModel class "
                            "(a reward-design task calls it)",
                        )
                    )
                )
            model = cls()
            state.reward_model = model
        out = model.rewards(env, transitions)
        try:
            return [float(r) for r in out]
        except (TypeError, ValueError) as e:
            raise RuntimeError(f"RewardModel.rewards must return numbers, one per transition: {e}") from None
