"""The meta-agent: a bounded tool loop with the model over the task agent's
code, ending in a proposal made of patch edits.

Built for a small model (Qwen2.5-Coder-0.5B follows little more than a
one-shot example). The brief shows the exact current code of the task
agent's settings and the tasks it failed; the model never has to quote text
to replace. Its tools:

* `show(name)`: the current code of a setting or function of src/solve.py;
* `rewrite(name, code)`: replace that setting or function with new code,
  written whole (`SYSTEM = "..."`, `def extract(...): ...`). The meta-agent
  turns it into a search/replace edit itself, after checking it: a
  placeholder, code that does not parse, code that does not define `name`,
  code that changes nothing or drops a `{placeholder}` of the old text gets
  an error saying what to send instead;
* `try_candidate()`: the host's workbench builds the edited agent and runs
  it on visible tasks the current agent failed;
* `finish(summary)`.

The loop ends at `finish`, at `MAX_TURNS`, or when the model stops calling
tools. The proposal is the tried edit set that passed the most tasks (edits
not yet tried are tried first). Nothing the model reads names an archive id
or a build hash: the response cache is keyed by the request's exact bytes,
and a recorded run must replay after the interpreter is rebuilt.
"""

import ast
import json
import re

import vivarium
from vivarium import Err, source

import offline

MODEL = "coder"
MAX_TURNS = 6
MAX_TOKENS = 384
TEMPERATURE = 0.0
RETRY_TEMPERATURE = 0.8
# Visible tasks per workbench try: the current agent's failures.
TRY_LIMIT = 3
FAILURES_SHOWN = 4
RESULT_CHARS = 1200
SOLVER = "src/solve.py"
SELF = "src/agent.py"
# The task agent's settings the brief shows whole.
SETTINGS = ("SYSTEM", "PROMPT", "MAX_TOKENS", "ATTEMPTS")
# Rules the brief offers: a small model picks one far more reliably than
# it writes one (asked to write, it copies the nearest text).
RULES = ("Import every module you use.", "Handle empty inputs and edge cases.", "Make the docstring examples pass.")
# What small models send when they copy the schema instead of filling it.
PLACEHOLDERS = {"", "code", "new", "old", "name", "...", "string", "new code", "your code here"}

SYSTEM = (
    "You improve a Python agent that solves HumanEval problems by asking a small language model "
    "for each function. Its code is src/solve.py. Change one setting or function so that the model "
    "writes correct functions more often, try it, then finish.\n"
    "Example of a call:\n"
    '{"name": "add_rule", "arguments": {"name": "SYSTEM", "rule": "Import every module you use."}}'
)


def _schema(props, required):
    return json.dumps({"type": "object", "properties": props, "required": required})


_S = {"type": "string"}
TOOLS = [
    {"name": "show", "description": "Show the current code of a setting or function of src/solve.py.",
     "parameters": _schema({"name": _S}, ["name"])},
    {"name": "rewrite", "description": "Replace a setting or function of src/solve.py with new code, written whole.",
     "parameters": _schema({"name": _S, "code": _S}, ["name", "code"])},
    {"name": "add_rule", "description": "Append a rule to the text of SYSTEM or PROMPT.",
     "parameters": _schema({"name": _S, "rule": _S}, ["name", "rule"])},
    {"name": "try_candidate", "description": "Run the changed agent on tasks it failed before.",
     "parameters": _schema({}, [])},
    {"name": "finish", "description": "Propose the change.",
     "parameters": _schema({"summary": _S}, ["summary"])},
]


def failures(feedback):
    """(task id, entry point, why) of each failed task in the graders'
    feedback (`task ID `prompt`: score S: note` lines)."""
    out = []
    for m in re.finditer(r"^task (\S+) `(.*?)`: score ([0-9.]+): ([^\n]*)$", feedback, re.M | re.S):
        if float(m.group(3)) >= 1.0:
            continue
        defs = re.findall(r"^def (\w+)", m.group(2), re.M)
        why = m.group(4).strip()
        out.append((m.group(1), defs[-1] if defs else "?", why))
    return out


def why_failed(feedback):
    """The grader's note on one task, without the task's prompt (which a
    feedback line quotes first)."""
    text = feedback or "failed"
    m = re.search(r"`: score [0-9.]+: ([^\n]*)", text)
    return (m.group(1) if m else text.split("\n")[0]).strip()[:150]


def definition(text, name):
    """(start, end) lines (0-based, end exclusive) of the top-level
    function or assignment `name` in `text`, or None."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return start - 1, node.end_lineno
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return node.lineno - 1, node.end_lineno
    return None


def defines(tree, name):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


class Work:
    """The in-memory tree, the edits made to it, and the workbench tries."""

    def __init__(self, ctx):
        self.files = {}
        for f in ctx.sources:
            try:
                self.files[f.path] = bytes(f.contents).decode("utf-8")
            except UnicodeDecodeError:
                pass
        self.failed = failures(ctx.feedback)
        self.edits = []  # ("replace", path, old, new)
        self.notes = []  # what each edit did, in words (the summary's)
        self.tries = []  # (edits tried, tasks passed, tasks run)
        self.summary = None

    def patch_edits(self, n=None):
        return [source.search_replace(p, old, new) for _, p, old, new in self.edits[: len(self.edits) if n is None else n]]

    def names(self):
        text = self.files.get(SOLVER, "")
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return []
        out = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append(node.name)
            elif isinstance(node, ast.Assign):
                out += [t.id for t in node.targets if isinstance(t, ast.Name)]
        return out

    def code_of(self, name):
        text = self.files.get(SOLVER, "")
        span = definition(text, name)
        if span is None:
            return None
        return "\n".join(text.split("\n")[span[0] : span[1]])

    # The tools. Each returns the text the model reads back.

    def show(self, name):
        code = self.code_of(name)
        if code is None:
            return f"src/solve.py has no {name!r}. Names: {', '.join(self.names())}."
        return code

    def rewrite(self, name, code, note=None):
        name = name.strip()
        old = self.code_of(name)
        if old is None:
            return f"Error: src/solve.py has no {name!r}. Names: {', '.join(self.names())}."
        code = code.replace("\t", "    ").strip("\n")
        if code.strip().lower() in PLACEHOLDERS:
            return (
                f"Error: code must be the whole new Python code of {name}, not a placeholder. "
                f"Its current code is:\n{old}"
            )
        try:
            tree = ast.parse(code)
        except SyntaxError as e:
            return f"Error: the code does not parse (line {e.lineno}: {e.msg}). Send valid Python."
        if not defines(tree, name):
            if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant):
                # A bare value: the assignment is meant.
                code = f"{name} = {code.strip()}"
                tree = ast.parse(code)
            else:
                return f"Error: the code must define {name} (`{name} = ...` or `def {name}(...)`)."
        if ast.dump(tree) == ast.dump(ast.parse(old)):
            if any(e[3] == old for e in self.edits):
                return f"Error: {name} already is that code (your rewrite). Call finish to propose it, or change it again."
            return (
                f"Error: that is the same as the current {name}. Change it, or call add_rule to add a "
                "sentence to SYSTEM."
            )
        lost = sorted(set(re.findall(r"\{\w+\}", old)) - set(re.findall(r"\{\w+\}", code)))
        if lost:
            return f"Error: keep {', '.join(lost)} in {name}: the agent fills it in."
        text = self.files[SOLVER]
        new_text = text.replace(old, code, 1)
        try:
            compile(new_text, SOLVER, "exec")
        except SyntaxError as e:
            return f"Error: src/solve.py would not compile (line {e.lineno}: {e.msg})."
        if text.count(old) != 1:
            return f"Error: {name}'s code occurs {text.count(old)} times; rewrite another name."
        self.files[SOLVER] = new_text
        self.edits.append(("replace", SOLVER, old, code))
        self.notes.append(note or f"rewrote {name}")
        if not self.bench():
            return f"Rewrote {name}. Call finish to propose it."
        # Every change is tried at once: a small model rarely asks.
        return f"Rewrote {name} and tried it. {self.try_candidate()}"

    def bench(self):
        return getattr(vivarium, "workbench", None) is not None and "workbench" in vivarium.granted()

    def add_rule(self, name, rule):
        """`rewrite` of a text setting with one sentence added: what a small
        model can do without copying the old text."""
        name, rule = name.strip(), " ".join(rule.split())
        old = self.code_of(name)
        try:
            value = ast.literal_eval(old.split("=", 1)[1].strip()) if old else None
        except (ValueError, SyntaxError):
            value = None
        if not isinstance(value, str):
            return "Error: name must be SYSTEM or PROMPT (a text setting of src/solve.py)."
        if rule.lower().strip(".") in PLACEHOLDERS or len(rule) < 8 or len(rule) > 300:
            return "Error: rule must be one new sentence (8 to 300 characters) for the model, not a placeholder."
        if re.search(r"add_rule|rewrite|try_candidate|SYSTEM|PROMPT|Error", rule):
            # Small models echo the brief or the last tool answer.
            return f"Error: write a rule for the model that writes the functions, such as: {RULES[1]}"
        if "{" in rule or "}" in rule:
            return "Error: a rule may not contain { or }."
        if rule in value:
            return f"Error: {name} already says that. Add a different rule, or call finish."
        # Before the task's code in a prompt that carries it; else at the end.
        at = value.find("\n\n") if "{" in value else -1
        new = value[:at] + " " + rule + value[at:] if at >= 0 else value.rstrip() + " " + rule
        return self.rewrite(name, f"{name} = {json.dumps(new)}", f"{name} gains the rule {rule!r}")

    def try_candidate(self):
        if not self.edits:
            return "Nothing changed yet: call rewrite first."
        if self.tries and self.tries[-1][0] == len(self.edits):
            return "Already tried; rewrite something or finish."
        if not self.bench():
            return "No workbench here: finish."
        wb = vivarium.workbench
        ids = [t for t, _, _ in self.failed][:TRY_LIMIT]
        try:
            trial = wb.try_candidate(self.patch_edits(), task_ids=ids, limit=TRY_LIMIT)
        except vivarium.ServiceError as e:
            return f"The workbench refused: {e.kind}: {e.message}"[:RESULT_CHARS]
        if not trial.built:
            self.tries.append((len(self.edits), -1, 0))
            return f"The changed agent does not build: {trial.error}"[:RESULT_CHARS]
        passed = sum(1 for o in trial.outcomes if o.passed)
        self.tries.append((len(self.edits), passed, len(trial.outcomes)))
        of = "tasks the current agent failed" if ids else "visible tasks"
        lines = [f"Passed {passed} of {len(trial.outcomes)} {of}."]
        for o in trial.outcomes:
            lines.append(f"{o.task_id}: " + ("passed" if o.passed else why_failed(o.feedback)))
        if passed == 0:
            lines.append("It fixed none of them: add a different rule, or rewrite something else.")
        else:
            lines.append("Call finish to propose it, or change it again.")
        return "\n".join(lines)[:RESULT_CHARS]

    def run(self, call):
        """The tool's answer to one call, and whether it was `finish`."""
        try:
            args = json.loads(call.arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments must be an object")
        except ValueError as e:
            return f"Error: the arguments are not a JSON object ({e}).", False
        try:
            if call.name == "show":
                return self.show(str(args["name"])), False
            if call.name == "rewrite":
                return self.rewrite(str(args["name"]), str(args["code"])), False
            if call.name == "add_rule":
                return self.add_rule(str(args["name"]), str(args["rule"])), False
            if call.name == "try_candidate":
                return self.try_candidate(), False
            if call.name == "finish":
                self.summary = str(args.get("summary", "")).strip()[:200]
                return "Done.", True
        except KeyError as e:
            return f"Error: missing argument {e}.", False
        return f"Error: no tool {call.name}; use show, rewrite, add_rule, try_candidate or finish.", False

    def best(self):
        """How many of the edits to propose: the tried edit set that passed
        the most tasks (the later one on a tie), else all of them."""
        built = [t for t in self.tries if t[1] >= 0]
        if not built:
            return len(self.edits)
        return max(built, key=lambda t: (t[1], t[0]))[0]


def brief(ctx, work):
    """What the model reads first: the score, the failures, the settings.
    No ids or hashes (see the module's doc)."""
    mine = [h for h in ctx.history if h.id == ctx.self_id]
    score = f"{mine[-1].score:.2f}" if mine else "not measured yet"
    failed = "\n".join(f"- {t} {entry}: {why[:160]}" for t, entry, why in work.failed[:FAILURES_SHOWN]) or "- none shown"
    settings = "\n".join(c for c in (work.code_of(n) for n in SETTINGS) if c)
    names = ", ".join(work.names())
    return (
        f"The agent's visible pass rate: {score}.\n"
        f"Some tasks it failed:\n{failed}\n"
        f"Its settings in src/solve.py:\n{settings}\n"
        f"Other names in src/solve.py (show one to read it): {names}.\n"
        f"Rules that often help: {' '.join(RULES)}\n"
        "Add the rule that fits the failures above to SYSTEM with add_rule, or rewrite a setting or function."
    )


def _message_call(c):
    return {"id": c.id, "name": c.name, "arguments": c.arguments}


def tool_loop(ctx, work):
    """Run the loop with the model; raises ServiceError when the model is
    not there (the caller falls back)."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": brief(ctx, work)}]
    refused, last = False, None
    for turn in range(MAX_TURNS):
        # Greedy decoding repeats a refused call word for word: after a
        # refusal the model samples.
        r = vivarium.llm.chat(
            messages,
            model=MODEL,
            max_tokens=MAX_TOKENS,
            temperature=RETRY_TEMPERATURE if refused else TEMPERATURE,
            tools=TOOLS,
            tool_choice="required",
        )
        if not r.tool_calls:
            messages.append({"role": "assistant", "content": r.content})
            messages.append({"role": "user", "content": "Answer with a tool call."})
            continue
        messages.append({"role": "assistant", "content": r.content, "tool_calls": [_message_call(c) for c in r.tool_calls]})
        done = False
        call = [(c.name, c.arguments) for c in r.tool_calls]
        if refused and call == last and work.edits:
            # The same refused call twice: the model is stuck; what it
            # changed before is proposed.
            vivarium.log.info(f"coder meta turn {turn + 1}: the refused call again; ending the loop")
            return
        last = call
        for c in r.tool_calls:
            result, finished = work.run(c)
            vivarium.log.info(f"coder meta turn {turn + 1}: {c.name} -> {result.splitlines()[0][:120] if result else ''}")
            messages.append({"role": "tool", "content": result, "tool_call_id": c.id})
            done = done or finished
            refused = result.startswith("Error")
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
        # The loop's time is not hidden: the summary says the model made
        # no usable edit and the offline rule's is proposed instead.
        how = "the model made no usable edit"
    if how != "model":
        edit = offline.rule_edit(work.files.get(SOLVER, ""))
        if edit is None:
            raise Err(f"{how}, and the offline rule has nothing left to change")
        text = work.files[SOLVER]
        work.files[SOLVER] = text.replace(edit[0], edit[1], 1)
        work.edits.append(("replace", SOLVER, edit[0], edit[1]))
        work.notes.append(edit[2])
        work.summary = f"{how}; {edit[2]}"
    if not work.tries or work.tries[-1][0] != len(work.edits):
        result = work.try_candidate()
        vivarium.log.info(f"coder meta: final try -> {result.splitlines()[0][:160]}")
    keep = work.best()
    if keep < len(work.edits):
        vivarium.log.info(f"coder meta: proposing the first {keep} of {len(work.edits)} edits (the best try)")
    edits = work.patch_edits(keep)
    bump = f"GENERATION = {generation}\n"
    if work.files.get(SELF, "").count(bump) == 1:
        edits.append(source.search_replace(SELF, bump, f"GENERATION = {generation + 1}\n"))
    # The model's own summary when it called finish; else what the edits did
    # and what their try showed.
    summary = work.summary or "; ".join(work.notes[:keep]) or "edits from the tool loop"
    tried = [t for t in work.tries if t[0] == keep and t[1] >= 0]
    if tried and not work.summary:
        of = "tasks the parent failed" if work.failed else "visible tasks"
        summary += f" (its try passed {tried[-1][1]} of {tried[-1][2]} {of})"
    return source.proposal(f"coder generation {generation + 1}: {summary}", edits)
