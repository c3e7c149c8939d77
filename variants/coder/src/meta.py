"""The meta-agent: a bounded tool loop with the model over this variant's
own tree, ending in a proposal made of patch edits.

The model sees a short brief (the visible score, the graders' feedback cut
short, the file list) and six tools. The tools run here, in the sandbox, on
an in-memory copy of the tree; `try_candidate` sends the edits made so far to
the host's workbench, which builds the candidate and runs it on a few
visible tasks. The loop ends at `finish`, at `MAX_TURNS`, or when the model
stops calling tools. What changed is proposed as search/replace edits, each
tried on the workbench at least once (the loop tries them itself when the
model did not).

Prompts stay short: the local model has an 8k context.
"""

import json
import re

import vivarium
from vivarium import Err, source

import offline

MODEL = "coder"
MAX_TURNS = 8
MAX_TOKENS = 512
TEMPERATURE = 0.0
# Visible tasks per workbench try.
TRY_LIMIT = 5
FEEDBACK_CHARS = 1200
VIEW_CHARS = 3000
RESULT_CHARS = 1500
SOLVER = "src/solve.py"
SELF = "src/agent.py"

SYSTEM = (
    "You improve a Python agent that solves HumanEval problems with a language model. "
    "Its strategy is src/solve.py. Use the tools: read the code, make one focused change "
    "with replace_text, check it with try_candidate, then call finish."
)


def _schema(props, required):
    return json.dumps({"type": "object", "properties": props, "required": required})


_S = {"type": "string"}
TOOLS = [
    {"name": "view_file", "description": "Show a file with line numbers.",
     "parameters": _schema({"path": _S}, ["path"])},
    {"name": "search", "description": "Lines of the tree containing a text.",
     "parameters": _schema({"text": _S}, ["text"])},
    {"name": "replace_text", "description": "Replace the one occurrence of old with new in a file.",
     "parameters": _schema({"path": _S, "old": _S, "new": _S}, ["path", "old", "new"])},
    {"name": "create_file", "description": "Create a new file under src/.",
     "parameters": _schema({"path": _S, "content": _S}, ["path", "content"])},
    {"name": "try_candidate", "description": "Build the edited agent and run it on a few visible tasks.",
     "parameters": _schema({}, [])},
    {"name": "finish", "description": "Propose the edits made so far.",
     "parameters": _schema({"summary": _S}, ["summary"])},
]


class Work:
    """The in-memory tree, the edits made to it, and the workbench tries."""

    def __init__(self, ctx):
        self.files = {}
        for f in ctx.sources:
            try:
                self.files[f.path] = bytes(f.contents).decode("utf-8")
            except UnicodeDecodeError:
                pass
        self.edits = []  # ("replace", path, old, new) | ("create", path, content)
        self.tried = 0
        self.tried_edits = -1
        self.summary = None

    def patch_edits(self):
        out = []
        for e in self.edits:
            if e[0] == "replace":
                out.append(source.search_replace(e[1], e[2], e[3]))
            else:
                out.append(source.write(e[1], e[2]))
        return out

    # The tools. Each returns the text the model reads back.

    def view_file(self, path):
        text = self.files.get(path)
        if text is None:
            return f"no file {path}; files: {', '.join(sorted(self.files))}"
        numbered = "\n".join(f"{i + 1:4} {l}" for i, l in enumerate(text.split("\n")))
        return numbered[:VIEW_CHARS] + ("\n[cut]" if len(numbered) > VIEW_CHARS else "")

    def search(self, text):
        hits = []
        for path in sorted(self.files):
            for i, line in enumerate(self.files[path].split("\n")):
                if text and text in line:
                    hits.append(f"{path}:{i + 1}: {line.strip()}")
        return "\n".join(hits[:20]) or f"{text!r} is not in the tree"

    def replace_text(self, path, old, new):
        text = self.files.get(path)
        if text is None:
            return f"no file {path}"
        n = text.count(old) if old else 0
        if n == 0 and old:
            # Small models copy view_file's line numbers into `old`.
            unnumbered = "\n".join(re.sub(r"^\s*\d+ ", "", l, count=1) for l in old.split("\n"))
            if text.count(unnumbered) == 1:
                old, n = unnumbered, 1
        if n != 1:
            return f"old must occur exactly once in {path}; it occurs {n} times"
        self.files[path] = text.replace(old, new, 1)
        self.edits.append(("replace", path, old, new))
        return f"replaced in {path}"

    def create_file(self, path, content):
        if not re.fullmatch(r"src/[A-Za-z0-9_/]+\.py", path or "") or ".." in path:
            return "path must be src/NAME.py"
        if path in self.files:
            return f"{path} exists; use replace_text"
        self.files[path] = content
        self.edits.append(("create", path, content))
        return f"created {path}"

    def try_candidate(self):
        if not self.edits:
            return "nothing changed yet"
        wb = getattr(vivarium, "workbench", None)
        if wb is None or "workbench" not in vivarium.granted():
            return "no workbench granted"
        try:
            trial = wb.try_candidate(self.patch_edits(), limit=TRY_LIMIT)
        except vivarium.ServiceError as e:
            return f"workbench refused: {e.kind}: {e.message}"[:RESULT_CHARS]
        self.tried += 1
        self.tried_edits = len(self.edits)
        if not trial.built:
            return f"build failed: {trial.error}"[:RESULT_CHARS]
        lines = [f"score {trial.score:.2f}" + (f"; error: {trial.error}" if trial.error else "")]
        for o in trial.outcomes:
            verdict = "passed" if o.passed else "failed"
            lines.append(f"{o.task_id} {verdict} {(o.feedback or '')[:160]}")
        return "\n".join(lines)[:RESULT_CHARS]

    def run(self, call):
        """The tool's answer to one call, and whether it was `finish`."""
        try:
            args = json.loads(call.arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments must be an object")
        except ValueError as e:
            return f"arguments are not a JSON object: {e}", False
        try:
            if call.name == "view_file":
                return self.view_file(str(args["path"])), False
            if call.name == "search":
                return self.search(str(args["text"])), False
            if call.name == "replace_text":
                return self.replace_text(str(args["path"]), str(args["old"]), str(args["new"])), False
            if call.name == "create_file":
                return self.create_file(str(args["path"]), str(args["content"])), False
            if call.name == "try_candidate":
                return self.try_candidate(), False
            if call.name == "finish":
                self.summary = str(args.get("summary", "")).strip()[:200]
                return "done", True
        except KeyError as e:
            return f"missing argument {e}", False
        return f"unknown tool {call.name}", False


def brief(ctx, work):
    mine = [h for h in ctx.history if h.id == ctx.self_id]
    score = f"{mine[-1].score:.2f}" if mine else "unknown"
    files = ", ".join(f"{p} ({t.count(chr(10))} lines)" for p, t in sorted(work.files.items()) if p.endswith(".py"))
    feedback = ctx.feedback.strip()[:FEEDBACK_CHARS] or "none"
    knobs = "\n".join(
        l for l in work.files.get(SOLVER, "").split("\n") if re.match(r"(MAX_TOKENS|ATTEMPTS|TEMPERATURE|SYSTEM) = ", l)
    )
    return (
        f"Visible pass rate: {score}.\nFiles: {files}.\n"
        f"Failures seen:\n{feedback}\n"
        f"Settings in {SOLVER}:\n{knobs}\n"
        "Make one change that should solve more problems. In replace_text, copy `old` exactly."
    )


def _message_call(c):
    return {"id": c.id, "name": c.name, "arguments": c.arguments}


def tool_loop(ctx, work):
    """Run the loop with the model; raises ServiceError when the model is
    not there (the caller falls back)."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": brief(ctx, work)}]
    for turn in range(MAX_TURNS):
        r = vivarium.llm.chat(
            messages, model=MODEL, max_tokens=MAX_TOKENS, temperature=TEMPERATURE, tools=TOOLS, tool_choice="required"
        )
        if not r.tool_calls:
            messages.append({"role": "assistant", "content": r.content})
            messages.append({"role": "user", "content": "Answer with a tool call."})
            continue
        messages.append({"role": "assistant", "content": r.content, "tool_calls": [_message_call(c) for c in r.tool_calls]})
        done = False
        for c in r.tool_calls:
            result, finished = work.run(c)
            vivarium.log.info(f"coder meta turn {turn + 1}: {c.name} -> {result.splitlines()[0][:120] if result else ''}")
            messages.append({"role": "tool", "content": result, "tool_call_id": c.id})
            done = done or finished
        if done:
            return


def improve(ctx, generation):
    work = Work(ctx)
    how = "model"
    if "llm" in vivarium.granted():
        try:
            tool_loop(ctx, work)
        except vivarium.ServiceError as e:
            if work.edits:
                vivarium.log.warn(f"coder meta: the model stopped answering ({e.kind}); proposing what was made")
            else:
                how = f"offline ({e.kind})"
        except TypeError as e:
            # An SDK without tool calls (llm@0.1.0 only).
            vivarium.log.warn(f"coder meta: no tool calls in this host's llm ({e}); offline rule")
            how = "offline (no tool calls)"
    else:
        how = "offline (no llm grant)"
    if how == "model" and not work.edits:
        # A small model often cannot quote the text it means to replace;
        # the loop's time is not wasted on nothing, and the summary says so.
        how = "the model made no usable edit"
    if how != "model":
        edit = offline.rule_edit(work.files.get(SOLVER, ""))
        if edit is None:
            raise Err(f"{how}, and the offline rule has nothing left to change")
        work.replace_text(SOLVER, edit[0], edit[1])
        work.summary = f"{how}; {edit[2]}"
    if work.tried_edits != len(work.edits):
        result = work.try_candidate()
        vivarium.log.info(f"coder meta: final try -> {result.splitlines()[0][:160]}")
    bump = f"GENERATION = {generation}\n"
    if work.files.get(SELF, "").count(bump) == 1:
        work.edits.append(("replace", SELF, bump, f"GENERATION = {generation + 1}\n"))
    summary = work.summary or "edits from the tool loop"
    return source.proposal(f"coder generation {generation + 1}: {summary}", work.patch_edits())
