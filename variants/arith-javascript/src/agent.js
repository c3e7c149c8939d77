// The arith variant in JavaScript: evaluates integer arithmetic expressions.
//
// `solve` reads an expression such as `(3+4)*12 - 7` from `task.input` and
// answers with its value (`77`), computed with checked 64-bit integers
// (BigInt, range-checked: the same results and errors as variants/arith in
// Rust).
//
// The strategy is deliberately improvable. The baseline knows `+`, `-`, `*`
// and parentheses; the switches below turn on one more piece of the grammar
// each. When `solve` meets something it cannot handle, its error names the
// switch it needs ("needs DIVISION"), which the host passes back to
// `improve` as feedback. `improve` edits this very file: it turns on the
// switch the feedback asks for most (or else the next one that is off) and
// bumps GENERATION.
//
// The input `spin` makes `solve` loop forever: the conformance suite's probe
// that the host's fuel and deadline limits stop a runaway guest.

import { log } from 'vivarium:agent/log@0.1.0';

// How many times this variant has improved itself; `improve` rewrites it.
const GENERATION = 0;

// The grammar switches `improve` flips, one per generation.
// `/`: integer division (truncating; division by zero is an error).
const DIVISION = false;
// `%`: remainder (the sign of the dividend).
const REMAINDER = false;
// Unary minus: `-5`, `-(2+3)`, `3*-2`.
const UNARY_MINUS = false;
// `^`: exponentiation, right-associative, binds tighter than `*`.
const POWER = false;

// The switches in the order `improve` turns them on when feedback is silent.
const SWITCHES = [
  ['DIVISION', DIVISION],
  ['REMAINDER', REMAINDER],
  ['UNARY_MINUS', UNARY_MINUS],
  ['POWER', POWER],
];

// The file `improve` edits (relative to the variant's tree).
const SELF_PATH = 'src/agent.js';

// Deepest parenthesis/unary nesting accepted, so hostile input cannot
// exhaust the stack.
const MAX_DEPTH = 200;

// Longest input accepted, in bytes.
const MAX_INPUT = 64 * 1024;

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

class EvalError extends Error {}

function checked(value) {
  if (value < I64_MIN || value > I64_MAX) throw new EvalError('overflow');
  return value;
}

function tokenize(text) {
  const tokens = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (/\s/.test(c)) {
      i += 1;
    } else if (c >= '0' && c <= '9') {
      const start = i;
      let value = 0n;
      while (i < text.length && text[i] >= '0' && text[i] <= '9') {
        value = value * 10n + BigInt(text.charCodeAt(i) - 48);
        if (value > I64_MAX) throw new EvalError(`number at byte ${start} is too large`);
        i += 1;
      }
      tokens.push({ kind: 'num', value });
    } else if ('+-*/%^'.includes(c)) {
      tokens.push({ kind: 'op', value: c });
      i += 1;
    } else if (c === '(' || c === ')') {
      tokens.push({ kind: c === '(' ? 'open' : 'close', value: c });
      i += 1;
    } else {
      throw new EvalError(`unexpected character '${c}' at byte ${i}`);
    }
  }
  return tokens;
}

function checkedPow(base, exponent) {
  let result = 1n;
  while (exponent > 0n) {
    if (exponent & 1n) result = checked(result * base);
    exponent >>= 1n;
    if (exponent > 0n) base = checked(base * base);
  }
  return result;
}

class Parser {
  constructor(tokens) {
    this.tokens = tokens;
    this.pos = 0;
  }

  peek() {
    return this.tokens[this.pos];
  }

  isOp(...ops) {
    const t = this.peek();
    return t !== undefined && t.kind === 'op' && ops.includes(t.value);
  }

  next() {
    const t = this.peek();
    this.pos += 1;
    return t;
  }

  // expr := term (('+' | '-') term)*
  expr(depth) {
    let value = this.term(depth);
    while (this.isOp('+', '-')) {
      const op = this.next().value;
      const rhs = this.term(depth);
      value = checked(op === '+' ? value + rhs : value - rhs);
    }
    return value;
  }

  // term := unary (('*' | '/' | '%') unary)*
  term(depth) {
    let value = this.unary(depth);
    while (this.isOp('*', '/', '%')) {
      const op = this.peek().value;
      if (op === '/' && !DIVISION) throw new EvalError("operator '/' is not supported: needs DIVISION");
      if (op === '%' && !REMAINDER) throw new EvalError("operator '%' is not supported: needs REMAINDER");
      this.next();
      const rhs = this.unary(depth);
      if (op === '*') {
        value = checked(value * rhs);
      } else if (rhs === 0n) {
        throw new EvalError('division by zero');
      } else if (op === '/') {
        value = checked(value / rhs); // BigInt division truncates, like Rust
      } else {
        if (value === I64_MIN && rhs === -1n) throw new EvalError('overflow');
        value = value % rhs; // the sign of the dividend, like Rust
      }
    }
    return value;
  }

  // unary := '-' unary | power
  unary(depth) {
    if (depth > MAX_DEPTH) throw new EvalError(`nested deeper than ${MAX_DEPTH}`);
    if (this.isOp('-')) {
      if (!UNARY_MINUS) throw new EvalError("unary '-' is not supported: needs UNARY_MINUS");
      this.next();
      return checked(-this.unary(depth + 1));
    }
    return this.power(depth);
  }

  // power := atom ('^' unary)?
  power(depth) {
    const base = this.atom(depth);
    if (this.isOp('^')) {
      if (!POWER) throw new EvalError("operator '^' is not supported: needs POWER");
      this.next();
      const exponent = this.unary(depth + 1);
      if (exponent < 0n || exponent > 0xffffffffn) {
        throw new EvalError(`exponent ${exponent} is negative or too large`);
      }
      return checkedPow(base, exponent);
    }
    return base;
  }

  // atom := number | '(' expr ')'
  atom(depth) {
    const t = this.next();
    if (t === undefined) throw new EvalError('unexpected end of expression');
    if (t.kind === 'num') return t.value;
    if (t.kind === 'open') {
      const inner = this.expr(depth + 1);
      const close = this.next();
      if (close === undefined || close.kind !== 'close') throw new EvalError("missing ')'");
      return inner;
    }
    if (t.kind === 'op') throw new EvalError(`unexpected operator '${t.value}'`);
    throw new EvalError("unexpected ')'");
  }
}

// Evaluate one expression with this generation's grammar.
export function evaluate(text) {
  if (new TextEncoder().encode(text).length > MAX_INPUT) {
    throw new EvalError(`expression longer than ${MAX_INPUT} bytes`);
  }
  const parser = new Parser(tokenize(text));
  const value = parser.expr(0);
  if (parser.peek() !== undefined) {
    throw new EvalError(`unexpected '${parser.peek().value}' after the expression`);
  }
  return value;
}

function enabledSwitches() {
  return SWITCHES.filter(([, on]) => on).map(([name]) => name);
}

export const taskAgent = {
  solve(task) {
    if (task.input === 'spin') {
      for (;;) {}
    }
    let value;
    try {
      value = evaluate(task.input);
    } catch (e) {
      const message = e instanceof EvalError ? e.message : `nested deeper than ${MAX_DEPTH}`;
      log('warn', `task ${task.id}: ${message}`);
      throw message; // the `err` of result<answer, string>
    }
    return {
      output: value.toString(),
      notes: `arith generation ${GENERATION}, switches on: [${enabledSwitches().join(', ')}]`,
    };
  },
};

// The switch to turn on next: the one the feedback names most often among
// those still off (ties go to SWITCHES order), else the first one still off.
export function nextSwitch(feedback) {
  const off = SWITCHES.filter(([, on]) => !on).map(([name]) => name);
  let best;
  let bestCount = 0;
  for (const name of off) {
    const count = feedback.split(`needs ${name}`).length - 1;
    if (count > bestCount) {
      best = name;
      bestCount = count;
    }
  }
  return best ?? off[0];
}

// Rewrite the line `const NAME = ...;` (exactly one) to `const NAME = value;`.
function setConst(text, name, value) {
  const prefix = `const ${name} = `;
  const lines = text.split('\n');
  const hits = lines.flatMap((line, i) => (line.startsWith(prefix) ? [i] : []));
  if (hits.length !== 1) {
    throw `${SELF_PATH} has ${hits.length} lines \`${prefix}...\`, expected exactly one`;
  }
  lines[hits[0]] = `${prefix}${value};`;
  return lines.join('\n');
}

export const metaAgent = {
  improve(ctx) {
    const which = nextSwitch(ctx.feedback);
    if (which === undefined) throw 'every grammar switch is already on; nothing left to improve';
    const own = ctx.sources.find((f) => f.path === SELF_PATH);
    if (own === undefined) throw `${SELF_PATH} is not among the sources`;
    let text = new TextDecoder().decode(own.contents);
    const nextGeneration = GENERATION + 1;
    text = setConst(text, which, 'true');
    text = setConst(text, 'GENERATION', String(nextGeneration));
    log('info', `arith generation ${GENERATION}: turning on ${which}`);
    return {
      summary: `arith: turn on ${which} (generation ${nextGeneration})`,
      edits: [{ tag: 'write', val: { path: SELF_PATH, contents: new TextEncoder().encode(text) } }],
    };
  },
};
