"""The task agent's strategy: prompt, extraction, self-check, retries.

Everything here is this variant's own code: the meta-agent may rewrite any
of it (the prompt, how code is cut out of the answer, how many attempts).
"""

import re

import vivarium
from vivarium import Err

import offline

# The model name the grant allows (llm.toml maps it to a provider model).
MODEL = "coder"
# Completion tokens per answer: a whole function with its docstring (which
# small models repeat) can pass 320 tokens; cut answers do not compile.
MAX_TOKENS = 512
# Attempts per task; the second one hears why the first was refused.
ATTEMPTS = 2
TEMPERATURE = 0.0

SYSTEM = "You are an expert Python programmer. Reply with code only."

PROMPT = (
    "Complete this Python function. Reply with the whole function, imports "
    "included, in one ```python block; do not repeat the docstring.\n\n```python\n{prompt}```"
)


def entry_point(task):
    m = re.search(r"entry_point: (\w+)", task.instruction)
    if not m:
        raise Err("the instruction names no entry_point")
    return m.group(1)


def fenced(text):
    """The code blocks of a markdown answer; an unclosed last block (an
    answer cut at max_tokens) counts."""
    blocks = re.findall(r"```[a-zA-Z0-9_+-]*\n(.*?)(?:```|\Z)", text, re.S)
    return [b for b in blocks if b.strip()]


def extract(text, entry):
    """The completion to append to the prompt: a whole function (with its
    imports and helpers) when the answer defines `entry`, else the answer
    as the function's body, indented."""
    blocks = fenced(text) or [text]
    code = next((b for b in blocks if re.search(rf"^\s*def {entry}\s*\(", b, re.M)), blocks[0])
    code = code.replace("\t", "    ").rstrip() + "\n"
    if re.search(rf"^def {entry}\s*\(", code, re.M):
        # A top-level definition after the prompt's docstring-only function
        # replaces it.
        return "\n" + definitions(code)
    lines = code.split("\n")
    first = next((l for l in lines if l.strip()), "")
    if first and not first.startswith((" ", "\t")):
        lines = [("    " + l) if l.strip() else l for l in lines]
    return "\n".join(lines)


def definitions(code):
    """`code` up to its first top-level statement that is not an import, a
    definition, a decorator or a comment: models append example calls
    (`print(f(...))`), which may fail, and an answer cut at `MAX_TOKENS`
    is usually cut inside them."""
    kept = []
    for line in code.split("\n"):
        top = line and not line[0].isspace()
        if top and not re.match(r"(def |async def |class |import |from |@|#|[A-Z_][A-Z0-9_]* = )", line):
            break
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


def check(prompt, completion):
    """Why the program would not even run (a syntax error), or None."""
    try:
        compile(prompt + completion, "<candidate>", "exec")
    except SyntaxError as e:
        return f"line {e.lineno}: {e.msg}"
    return None


def ask(messages):
    return vivarium.llm.chat(messages, model=MODEL, max_tokens=MAX_TOKENS, temperature=TEMPERATURE).content


def solve(task):
    """(completion, notes) for one HumanEval task."""
    entry = entry_point(task)
    if "llm" not in vivarium.granted():
        return offline.solve(task, entry), "offline (no llm grant)"
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": PROMPT.format(prompt=task.input)},
    ]
    completion, problem = None, None
    for attempt in range(ATTEMPTS):
        try:
            answer = ask(messages)
        except vivarium.ServiceError as e:
            if completion is None:
                return offline.solve(task, entry), f"offline ({e.kind})"
            break
        completion = extract(answer, entry)
        problem = check(task.input, completion)
        if problem is None:
            return completion, f"model, attempt {attempt + 1}"
        messages += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": f"That does not compile ({problem}). Reply with the corrected function."},
        ]
    return completion, f"model, does not compile: {problem}"
