"""Reading one's own source and writing a proposal's edits: what a
meta-agent does in `improve` (the Rust SDK's `source` module, in Python).

    text = source.text(ctx, "src/agent.py")
    text = source.set_const(text, "GENERATION", "2")
    return source.proposal("next generation", [source.write("src/agent.py", text)])

Besides whole-file `write`s and `delete`s, a proposal may carry patch
edits (`vivarium:agent@0.2.0`), which the host's guard applies exactly to
the parent's tree, in order, and then checks like writes:

    source.search_replace("src/agent.py", "RETRIES = 1", "RETRIES = 3")
    source.patch(unified_diff_text)    # `--- a/…`, `+++ b/…`, hunks; no fuzz

A search text must occur exactly once; a hunk must match the file's lines
at its own line number. One that does not is refused with the path and
what did not match (the hunk's header and its first mismatching line).
The same edits go to `vivarium.workbench.try_candidate`.
"""

from componentize_py_types import Err
from wit_world.imports import edits as types

from . import _host


def tree():
    """The tree this instance was loaded from, {path: bytes} (a copy)."""
    return dict(_host.TREE)


def files(ctx):
    """The improve context's sources as {path: bytes}."""
    return {f.path: bytes(f.contents) for f in ctx.sources}


def text(ctx, path):
    """The text of `path` among the improve context's sources; `Err` when
    it is missing or not UTF-8 (the meta-agent's call fails gracefully)."""
    for f in ctx.sources:
        if f.path == path:
            try:
                return bytes(f.contents).decode("utf-8")
            except UnicodeDecodeError:
                raise Err(f"{path} is not UTF-8 text") from None
    raise Err(f"{path} is not among the sources")


def write(path, contents):
    """An edit that creates or replaces `path` (str is written as UTF-8)."""
    if isinstance(contents, str):
        contents = contents.encode("utf-8")
    return types.Edit_Write(types.SourceFile(path=path, contents=bytes(contents)))


def delete(path):
    """An edit that removes `path`."""
    return types.Edit_Delete(path)


def search_replace(path, search, replace):
    """An edit that replaces the one occurrence of `search` in `path` with
    `replace` (refused by the guard when `search` occurs zero or several
    times)."""
    return types.Edit_SearchReplace(types.SearchReplace(path=str(path), search=str(search), replace=str(replace)))


def patch(diff_text):
    """An edit that applies a unified diff (one or several files; `---
    /dev/null` creates a file, `+++ /dev/null` removes one), exactly."""
    if isinstance(diff_text, (bytes, bytearray)):
        diff_text = bytes(diff_text).decode("utf-8")
    return types.Edit_Patch(str(diff_text))


def proposal(summary, edits):
    """The proposal to return from `improve`: a summary and the edits, in
    the order they apply."""
    return types.Proposal(summary=str(summary), edits=list(edits))


def replace(text, old, new):
    """`text` with the one occurrence of `old` replaced; `Err` when `old`
    occurs zero or several times."""
    n = text.count(old)
    if n != 1:
        raise Err(f"expected exactly one occurrence of {old!r}, found {n}")
    return text.replace(old, new, 1)


def _const_line(text, name):
    prefix = f"{name} = "
    lines = text.split("\n")
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    if len(hits) != 1:
        raise Err(f"expected exactly one line `{prefix}...`, found {len(hits)}")
    return lines, hits[0], prefix


def const_value(text, name):
    """The text after `NAME = ` on the one line that starts with it (a
    trailing `# comment` removed)."""
    lines, i, prefix = _const_line(text, name)
    return lines[i][len(prefix):].split("#", 1)[0].strip()


def set_const(text, name, value):
    """`text` with the one line `NAME = ...` rewritten to `NAME = value`."""
    lines, i, prefix = _const_line(text, name)
    lines[i] = prefix + str(value)
    return "\n".join(lines)
