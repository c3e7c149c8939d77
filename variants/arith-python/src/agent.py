"""The arith variant in Python: evaluates integer arithmetic expressions.

`solve` reads an expression such as `(3+4)*12 - 7` from `task.input` and
answers with its value (`77`), computed with checked 64-bit integers (the
same results and errors as variants/arith in Rust).

The strategy is deliberately improvable. The baseline knows `+`, `-`, `*`
and parentheses; the switches below turn on one more piece of the grammar
each. When `solve` meets something it cannot handle, its error names the
switch it needs ("needs DIVISION"), which the host passes back to `improve`
as feedback. `improve` edits this very file: it turns on the switch the
feedback asks for most (or else the next one that is off) and bumps
GENERATION.

The input `spin` makes `solve` loop forever: the conformance suite's probe
that the host's fuel and deadline limits stop a runaway guest.

It runs on the host's shared Python interpreter and uses the `vivarium`
SDK (logging, the contract's types, and the `source` helpers that edit
its own tree).
"""

import sys

import vivarium
from vivarium import Err, source, types

# How many times this variant has improved itself; `improve` rewrites it.
GENERATION = 0

# The grammar switches `improve` flips, one per generation.
# `/`: integer division (truncating; division by zero is an error).
DIVISION = False
# `%`: remainder (the sign of the dividend).
REMAINDER = False
# Unary minus: `-5`, `-(2+3)`, `3*-2`.
UNARY_MINUS = False
# `^`: exponentiation, right-associative, binds tighter than `*`.
POWER = False

# The switches in the order `improve` turns them on when feedback is silent.
SWITCHES = [
    ("DIVISION", DIVISION),
    ("REMAINDER", REMAINDER),
    ("UNARY_MINUS", UNARY_MINUS),
    ("POWER", POWER),
]

# The file `improve` edits (relative to the variant's tree).
SELF_PATH = "src/agent.py"

# Deepest parenthesis/unary nesting accepted, so hostile input cannot
# exhaust the stack.
MAX_DEPTH = 200

# Longest input accepted, in bytes.
MAX_INPUT = 64 * 1024

# Five Python frames per nesting level: let MAX_DEPTH, not Python's
# default recursion limit (1000), be what stops deep input.
sys.setrecursionlimit(6 * MAX_DEPTH + 200)

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1


class EvalError(Exception):
    pass


def checked(value):
    if value < I64_MIN or value > I64_MAX:
        raise EvalError("overflow")
    return value


def tokenize(text):
    tokens = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif "0" <= c <= "9":
            start = i
            value = 0
            while i < len(text) and "0" <= text[i] <= "9":
                value = value * 10 + ord(text[i]) - ord("0")
                if value > I64_MAX:
                    raise EvalError(f"number at byte {start} is too large")
                i += 1
            tokens.append(("num", value))
        elif c in "+-*/%^":
            tokens.append(("op", c))
            i += 1
        elif c == "(":
            tokens.append(("open", c))
            i += 1
        elif c == ")":
            tokens.append(("close", c))
            i += 1
        else:
            raise EvalError(f"unexpected character {c!r} at byte {len(text[:i].encode())}")
    return tokens


def trunc_div(a, b):
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def checked_pow(base, exponent):
    result = 1
    while exponent > 0:
        if exponent & 1:
            result = checked(result * base)
        exponent >>= 1
        if exponent:
            base = checked(base * base)
    return result


class Parser:
    def __init__(self, tokens):
        self.tokens = tokens
        self.pos = 0

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self):
        t = self.peek()
        self.pos += 1
        return t

    # expr := term (('+' | '-') term)*
    def expr(self, depth):
        value = self.term(depth)
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.next()[1]
            rhs = self.term(depth)
            value = checked(value + rhs if op == "+" else value - rhs)
        return value

    # term := unary (('*' | '/' | '%') unary)*
    def term(self, depth):
        value = self.unary(depth)
        while self.peek() in (("op", "*"), ("op", "/"), ("op", "%")):
            op = self.peek()[1]
            if op == "/" and not DIVISION:
                raise EvalError("operator '/' is not supported: needs DIVISION")
            if op == "%" and not REMAINDER:
                raise EvalError("operator '%' is not supported: needs REMAINDER")
            self.next()
            rhs = self.unary(depth)
            if op == "*":
                value = checked(value * rhs)
            elif rhs == 0:
                raise EvalError("division by zero")
            elif op == "/":
                value = checked(trunc_div(value, rhs))
            elif value == I64_MIN and rhs == -1:
                raise EvalError("overflow")
            else:
                value = value - trunc_div(value, rhs) * rhs
        return value

    # unary := '-' unary | power
    def unary(self, depth):
        if depth > MAX_DEPTH:
            raise EvalError(f"nested deeper than {MAX_DEPTH}")
        if self.peek() == ("op", "-"):
            if not UNARY_MINUS:
                raise EvalError("unary '-' is not supported: needs UNARY_MINUS")
            self.next()
            return checked(-self.unary(depth + 1))
        return self.power(depth)

    # power := atom ('^' unary)?
    def power(self, depth):
        base = self.atom(depth)
        if self.peek() == ("op", "^"):
            if not POWER:
                raise EvalError("operator '^' is not supported: needs POWER")
            self.next()
            exponent = self.unary(depth + 1)
            if exponent < 0 or exponent > 0xFFFFFFFF:
                raise EvalError(f"exponent {exponent} is negative or too large")
            return checked_pow(base, exponent)
        return base

    # atom := number | '(' expr ')'
    def atom(self, depth):
        t = self.next()
        if t is None:
            raise EvalError("unexpected end of expression")
        kind, value = t
        if kind == "num":
            return value
        if kind == "open":
            inner = self.expr(depth + 1)
            if self.next() != ("close", ")"):
                raise EvalError("missing ')'")
            return inner
        if kind == "op":
            raise EvalError(f"unexpected operator '{value}'")
        raise EvalError("unexpected ')'")


def evaluate(text):
    """Evaluate one expression with this generation's grammar."""
    if len(text.encode()) > MAX_INPUT:
        raise EvalError(f"expression longer than {MAX_INPUT} bytes")
    parser = Parser(tokenize(text))
    value = parser.expr(0)
    if parser.peek() is not None:
        raise EvalError(f"unexpected {parser.peek()[1]!r} after the expression")
    return value


def enabled_switches():
    return [name for name, on in SWITCHES if on]


class TaskAgent(vivarium.TaskAgent):
    def solve(self, task: types.Task) -> types.Answer:
        if task.input == "spin":
            while True:
                pass
        try:
            value = evaluate(task.input)
        except (EvalError, RecursionError) as e:
            message = str(e) if isinstance(e, EvalError) else f"nested deeper than {MAX_DEPTH}"
            vivarium.log.warn(f"task {task.id}: {message}")
            raise Err(message)
        return types.Answer(
            str(value), f"arith generation {GENERATION}, switches on: {enabled_switches()}"
        )


def next_switch(feedback):
    """The switch to turn on next: the one the feedback names most often
    among those still off (ties go to SWITCHES order), else the first one
    still off."""
    off = [name for name, on in SWITCHES if not on]
    best, best_count = None, 0
    for name in off:
        count = feedback.count(f"needs {name}")
        if count > best_count:
            best, best_count = name, count
    if best is not None:
        return best
    return off[0] if off else None


class MetaAgent(vivarium.MetaAgent):
    def improve(self, ctx: types.ImproveContext) -> types.Proposal:
        switch = next_switch(ctx.feedback)
        if switch is None:
            raise Err("every grammar switch is already on; nothing left to improve")
        # `source.text` and `source.set_const` answer `Err` (a graceful
        # failure) when the file or the line is not there.
        text = source.text(ctx, SELF_PATH)
        next_generation = GENERATION + 1
        text = source.set_const(text, switch, "True")
        text = source.set_const(text, "GENERATION", str(next_generation))
        vivarium.log.info(f"arith generation {GENERATION}: turning on {switch}")
        return source.proposal(
            f"arith: turn on {switch} (generation {next_generation})",
            [source.write(SELF_PATH, text)],
        )
