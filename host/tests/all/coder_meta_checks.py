"""The checks `variants/coder`'s meta-agent makes on a model's tool calls
before it edits anything (run by coder_evolve.rs with python3).

`meta.py` runs on the host's interpreter, where `vivarium` is the guest SDK
over the WIT imports; these checks are plain Python over an in-memory tree,
so a minimal stand-in for the SDK's names they touch (no model, no
workbench granted) is enough to run them here. Each case asserts the exact
answer the model reads back and that a refused call changed nothing.
"""

import json
import pathlib
import sys
import types

root = pathlib.Path(sys.argv[1])
sdk = types.ModuleType("vivarium")
sdk.Err = type("Err", (Exception,), {})
sdk.ServiceError = type("ServiceError", (Exception,), {})
sdk.granted = lambda: set()
sdk.source = types.SimpleNamespace(
    search_replace=lambda p, a, b: ("search-replace", p, a, b),
    write=lambda p, c: ("write", p, c),
    proposal=lambda s, e: (s, e),
)
sys.modules["vivarium"] = sdk
sys.path.insert(0, str(root / "variants/coder/src"))
import meta  # noqa: E402

solver = (root / "variants/coder/src/solve.py").read_text()


class File:
    def __init__(self, path, text):
        self.path, self.contents = path, text.encode()


FEEDBACK = (
    "task HumanEval/10 `\ndef make_palindrome(string: str) -> str:\n    \"\"\" x `y` \"\"\"\n`: score 0.0000: "
    "failed: AssertionError (test line 11)\n"
    "task HumanEval/2 `\ndef truncate(n):\n`: score 1.0000: passed with a note\n"
    "task HumanEval/3 `\ndef below_zero(ops):\n`: score 0.0000: failed: NameError\n"
)
ctx = types.SimpleNamespace(
    sources=[File("src/solve.py", solver)],
    feedback=FEEDBACK,
    history=[types.SimpleNamespace(id="a1b2c3d4e5f6", score=0.5)],
    self_id="a1b2c3d4e5f6",
)


def call(work, tool, **args):
    return work.run(types.SimpleNamespace(name=tool, arguments=json.dumps(args), id="c"))[0]


def refused(work, answer, expected):
    assert answer == expected, f"{answer!r} != {expected!r}"
    assert work.edits == [] and work.files["src/solve.py"] == solver, "a refused call changed the tree"


# The feedback's failures, a backtick inside a prompt included; a passed task is not one.
work = meta.Work(ctx)
assert work.failed == [
    ("HumanEval/10", "make_palindrome", "failed: AssertionError (test line 11)"),
    ("HumanEval/3", "below_zero", "failed: NameError"),
], work.failed

# The brief: the parent's score found by its archive id, no id in the text.
brief = meta.brief(ctx, work)
assert "The agent's visible pass rate: 0.50." in brief, brief
assert "a1b2c3d4e5f6" not in brief
assert 'SYSTEM = "You are an expert Python programmer. Reply with code only."' in brief

# What a 0.5B model sent last session: the schema's own words.
refused(
    work,
    call(work, "rewrite", name="SYSTEM", code="code"),
    "Error: code must be the whole new Python code of SYSTEM, not a placeholder. Its current code is:\n"
    'SYSTEM = "You are an expert Python programmer. Reply with code only."',
)
refused(
    work,
    call(work, "rewrite", name="old", code="x = 1"),
    "Error: src/solve.py has no 'old'. Names: MODEL, MAX_TOKENS, ATTEMPTS, TEMPERATURE, SYSTEM, PROMPT, "
    "entry_point, fenced, extract, definitions, check, ask, solve.",
)
refused(
    work,
    call(work, "rewrite", name="SYSTEM", code='SYSTEM = "unclosed'),
    "Error: the code does not parse (line 1: unterminated string literal (detected at line 1)). Send valid Python.",
)
refused(work, call(work, "rewrite", name="ATTEMPTS", code="TRIES = 3"),
        "Error: the code must define ATTEMPTS (`ATTEMPTS = ...` or `def ATTEMPTS(...)`).")
refused(
    work,
    call(work, "rewrite", name="SYSTEM", code="SYSTEM = 'You are an expert Python programmer. Reply with code only.'"),
    "Error: that is the same as the current SYSTEM. Change it, or call add_rule to add a sentence to SYSTEM.",
)
refused(work, call(work, "rewrite", name="PROMPT", code='PROMPT = "Complete it."'),
        "Error: keep {prompt} in PROMPT: the agent fills it in.")
refused(work, call(work, "add_rule", name="ATTEMPTS", rule="Be careful."),
        "Error: name must be SYSTEM or PROMPT (a text setting of src/solve.py).")
refused(work, call(work, "add_rule", name="SYSTEM", rule="rule"),
        "Error: rule must be one new sentence (8 to 300 characters) for the model, not a placeholder.")
refused(work, call(work, "add_rule", name="SYSTEM", rule="Add a rule to SYSTEM with add_rule."),
        "Error: write a rule for the model that writes the functions, such as: Handle empty inputs and edge cases.")
refused(work, call(work, "view_file", path="src/solve.py"),
        "Error: no tool view_file; use show, rewrite, add_rule, try_candidate or finish.")
refused(work, call(work, "rewrite", name="SYSTEM"), "Error: missing argument 'code'.")

# A bare value for a setting is taken as its assignment; the edit is an
# exact search/replace of the setting's whole code.
answer = call(work, "rewrite", name="ATTEMPTS", code="3")
assert answer == "Rewrote ATTEMPTS. Call finish to propose it.", answer
assert work.edits == [("replace", "src/solve.py", "ATTEMPTS = 2", "ATTEMPTS = 3")], work.edits

# A rule lands inside the prompt's text, before the task's code.
answer = call(work, "add_rule", name="PROMPT", rule="Handle empty inputs.")
assert answer == "Rewrote PROMPT. Call finish to propose it.", answer
prompt = work.edits[-1][3]
assert "do not repeat the docstring. Handle empty inputs.\\n\\n```python\\n{prompt}```" in prompt, prompt
compile(work.files["src/solve.py"], "solve.py", "exec")
refused_again = call(work, "add_rule", name="PROMPT", rule="Handle empty inputs.")
assert refused_again == "Error: PROMPT already says that. Add a different rule, or call finish.", refused_again
assert len(work.edits) == 2

# A function rewritten whole.
answer = call(work, "rewrite", name="check", code="def check(prompt, completion):\n    return None\n")
assert answer.startswith("Rewrote check."), answer
assert work.edits[-1][2].startswith("def check(prompt, completion):\n    \"\"\"Why the program"), work.edits[-1]
print("ok")
