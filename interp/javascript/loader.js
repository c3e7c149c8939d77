// The JavaScript interpreter's loader: what every JavaScript variant on the
// interpreter path runs inside.
//
// The host builds this app once per machine with ComponentizeJS
// (StarlingMonkey, pre-initialized with Wizer; host/src/build/interpreter.rs),
// next to `acorn.mjs` (the acorn parser, from tools/js's pinned install).
// At run time — a fresh instance per call — the first export entered loads
// the variant: it asks the host for the source tree through
// `vivarium:interp/source` (read-only data, nothing else of the host), turns
// each ES module under `src/` into a function (acorn parses it; its
// `import` and `export` declarations are rewritten in place, so every line
// keeps its number) and evaluates the entry module, `src/agent.js`, under
// the call's fuel, memory and wall-clock limits.
//
// What a variant's modules may import: each other (`./util.js`, relative to
// the importing file, `.js` added when missing), the `vivarium` SDK
// (`log`, `llm`, `memory`: typed wrappers; `NotGranted` and `ServiceError`
// by name) and the host's interfaces by their WIT names
// (`vivarium:agent/log@0.1.0`, `…/llm@0.1.0`, …); a service the grant
// does not include throws, naming it, when called. `console` goes to the
// host log.
// A module's exports are getters, so `import * as m` sees a `let` that
// changes later; a named import (`import { x }`) is the value at import
// time, as in CommonJS. Not supported: top-level `await`, `import.meta`,
// dynamic `import()` (each a load error naming the line).
//
// A syntax error or an exception while loading is not a trap: `solve` and
// `improve` fail with the file, line and message; the `check` mode answers
// `load-error` with them as JSON, as the Python interpreter does.

import * as acorn from "./acorn.mjs";
import { files, entry, granted, compiled, offerCompiled } from "vivarium:interp/source@0.1.0";
import * as logIface from "vivarium:agent/log@0.1.0";
import * as llmIface from "vivarium:agent/llm@0.1.0";
import * as trainerIface from "vivarium:agent/trainer@0.1.0";
import * as simulatorIface from "vivarium:agent/simulator@0.1.0";
import * as memoryIface from "vivarium:agent/memory@0.1.0";
import * as archiveIface from "vivarium:agent/archive@0.1.0";

const AGENT_VERSION = "0.1.0";
const SERVICES = { llm: llmIface, trainer: trainerIface, simulator: simulatorIface, memory: memoryIface, archive: archiveIface };

/** Why the variant did not load; `kind` as the Python loader's. */
class LoadError extends Error {
  constructor(kind, message, file = "", line = 0) {
    super(message);
    this.kind = kind;
    this.file = file;
    this.line = line;
  }
  json() {
    // Sorted keys, as the Python loader writes them.
    return JSON.stringify({ file: this.file, kind: this.kind, line: this.line, message: this.message });
  }
  toString() {
    const where = this.file && this.line ? `${this.file}:${this.line}` : this.file;
    return `the variant did not load (${this.kind}): ${where ? where + ": " : ""}${this.message}`;
  }
}

/** A module object whose every function throws: a service not granted. */
function notGranted(name, iface) {
  const out = {};
  for (const key of Object.keys(iface)) {
    out[key] = () => {
      throw new Error(`capability \`${name}\` is not granted to this variant (it called ${key})`);
    };
  }
  return Object.freeze(out);
}

/** `log(level, …parts)` as a function of the parts. */
const logAt = (level) => (...parts) => logIface.log(level, parts.map(String).join(" "));

/** A host service's refusal (`denied`, `budget-exhausted`, …). */
class ServiceError extends Error {
  constructor(service, kind, message) {
    super(`${service} ${kind}: ${message}`);
    this.name = "ServiceError";
    this.service = service;
    this.kind = kind;
  }
}

/** `f()`, with a service's `err` (ComponentizeJS throws its payload) as a ServiceError. */
function serviceCall(service, f) {
  try {
    return f();
  } catch (e) {
    const p = e && typeof e === "object" && "payload" in e ? e.payload : e;
    if (p && typeof p === "object" && typeof p.tag === "string") throw new ServiceError(service, p.tag, String(p.val ?? ""));
    throw e;
  }
}

/**
 * The `vivarium` SDK module (`import { log, llm, memory } from "vivarium"`):
 * typed wrappers over the host's interfaces, as the Python SDK's.
 */
function sdk(allowed, host) {
  const require = (name) => {
    if (!allowed.has(name)) {
      const e = new Error(`capability \`${name}\` is not granted to this variant; ask for it in variant.toml [capabilities]`);
      e.name = "NotGranted";
      throw e;
    }
    return host.get(`vivarium:agent/${name}@${AGENT_VERSION}`);
  };
  const text = new TextDecoder();
  const bytes = new TextEncoder();
  const log = { trace: logAt("trace"), debug: logAt("debug"), info: logAt("info"), warn: logAt("warn"), error: logAt("error") };
  const llm = {
    /** One chat request: `messages` as `{role, content}`; the response (`content`, `usage`, …). */
    chat(messages, { model = "*", maxTokens = 1024, temperature } = {}) {
      const iface = require("llm");
      const req = { model, messages: messages.map((m) => ({ role: m.role, content: String(m.content) })), maxTokens, temperature };
      return serviceCall("llm", () => iface.chat(req));
    },
    /** The reply's text to one prompt (and an optional system prompt). */
    complete(prompt, { system, ...options } = {}) {
      const messages = system ? [{ role: "system", content: system }] : [];
      messages.push({ role: "user", content: prompt });
      return llm.chat(messages, options).content;
    },
    tokensLeft: () => require("llm").tokensLeft(),
  };
  const memory = {
    /** The bytes under `key` (a Uint8Array), or undefined. */
    get: (key) => require("memory").get(key) ?? undefined,
    getText: (key) => {
      const v = memory.get(key);
      return v === undefined ? undefined : text.decode(v);
    },
    getJson: (key) => {
      const v = memory.getText(key);
      return v === undefined ? undefined : JSON.parse(v);
    },
    /** Store a string or bytes under `key`. */
    set: (key, value) => {
      const iface = require("memory");
      const v = typeof value === "string" ? bytes.encode(value) : value;
      serviceCall("memory", () => iface.set(key, v));
    },
    setJson: (key, value) => memory.set(key, JSON.stringify(value)),
    delete: (key) => require("memory").delete(key),
    keys: (prefix = "") => require("memory").listKeys(prefix),
    bytesLeft: () => require("memory").bytesLeft(),
  };
  return Object.freeze({ log, llm, memory, ServiceError, granted: (name) => allowed.has(name) });
}

function hostModules() {
  const allowed = new Set(granted());
  const out = new Map();
  out.set(`vivarium:agent/log@${AGENT_VERSION}`, logIface);
  for (const [name, iface] of Object.entries(SERVICES)) {
    out.set(`vivarium:agent/${name}@${AGENT_VERSION}`, allowed.has(name) ? iface : notGranted(name, iface));
  }
  out.set("vivarium", sdk(allowed, out));
  return out;
}

// `console` goes to the host log, as `print()` does for Python (the engine's
// own stdio is off: the interpreter imports no WASI).
globalThis.console = { log: logAt("info"), info: logAt("info"), debug: logAt("debug"), warn: logAt("warn"), error: logAt("error") };

/** Every Identifier a declaration pattern binds. */
function boundNames(pattern, out = []) {
  switch (pattern.type) {
    case "Identifier":
      out.push(pattern.name);
      break;
    case "ObjectPattern":
      for (const p of pattern.properties) boundNames(p.type === "RestElement" ? p.argument : p.value, out);
      break;
    case "ArrayPattern":
      for (const e of pattern.elements) if (e) boundNames(e, out);
      break;
    case "RestElement":
      boundNames(pattern.argument, out);
      break;
    case "AssignmentPattern":
      boundNames(pattern.left, out);
      break;
  }
  return out;
}

const keyName = (node) => (node.type === "Identifier" ? node.name : String(node.value));

/**
 * The module `text` (at `path`) as the source of a function
 * `(__import, __exports) => void`, every line where it was.
 */
function transform(path, text) {
  let ast;
  try {
    ast = acorn.parse(text, { ecmaVersion: "latest", sourceType: "module", locations: true, allowHashBang: true });
  } catch (e) {
    const line = e.loc ? e.loc.line : 0;
    const shown = line ? `\n    ${text.split("\n")[line - 1] ?? ""}` : "";
    throw new LoadError("syntax-error", `SyntaxError: ${e.message.replace(/ \(\d+:\d+\)$/, "")}${shown}`, path, line);
  }
  const edits = []; // [start, end, replacement]
  const exported = []; // [exported name, local name]
  const tail = [];
  let n = 0;
  const unsupported = (node, what) => {
    throw new LoadError("syntax-error", `${what} is not supported on the JavaScript interpreter`, path, node.loc.start.line);
  };
  for (const node of ast.body) {
    switch (node.type) {
      case "ImportDeclaration": {
        const spec = JSON.stringify(node.source.value);
        const parts = [];
        for (const s of node.specifiers) {
          if (s.type === "ImportNamespaceSpecifier") parts.push(`const ${s.local.name} = __import(${spec});`);
          else if (s.type === "ImportDefaultSpecifier") parts.push(`const ${s.local.name} = __import(${spec}).default;`);
          else parts.push(`const ${s.local.name} = __import(${spec})[${JSON.stringify(keyName(s.imported))}];`);
        }
        if (parts.length === 0) parts.push(`__import(${spec});`);
        edits.push([node.start, node.end, parts.join(" ")]);
        break;
      }
      case "ExportNamedDeclaration": {
        if (node.declaration) {
          const d = node.declaration;
          edits.push([node.start, d.start, ""]);
          const names = d.type === "VariableDeclaration" ? d.declarations.flatMap((x) => boundNames(x.id)) : [d.id.name];
          for (const name of names) exported.push([name, name]);
        } else if (node.source) {
          const tmp = `__reexport${n++}`;
          edits.push([node.start, node.end, `const ${tmp} = __import(${JSON.stringify(node.source.value)});`]);
          for (const s of node.specifiers) {
            tail.push(`__live(${JSON.stringify(keyName(s.exported))}, () => ${tmp}[${JSON.stringify(keyName(s.local))}]);`);
          }
        } else {
          edits.push([node.start, node.end, ""]);
          for (const s of node.specifiers) exported.push([keyName(s.exported), s.local.name]);
        }
        break;
      }
      case "ExportDefaultDeclaration": {
        const d = node.declaration;
        if ((d.type === "FunctionDeclaration" || d.type === "ClassDeclaration") && d.id) {
          edits.push([node.start, d.start, ""]);
          exported.push(["default", d.id.name]);
        } else {
          edits.push([node.start, d.start, "const __default = "]);
          exported.push(["default", "__default"]);
        }
        break;
      }
      case "ExportAllDeclaration": {
        const tmp = `__reexport${n++}`;
        edits.push([node.start, node.end, `const ${tmp} = __import(${JSON.stringify(node.source.value)});`]);
        if (node.exported) tail.push(`__live(${JSON.stringify(keyName(node.exported))}, () => ${tmp});`);
        else tail.push(`for (const k of Object.keys(${tmp})) if (k !== "default") __live(k, () => ${tmp}[k]);`);
        break;
      }
    }
  }
  // Forms acorn accepts in a module that a function body cannot hold.
  const scan = (node) => {
    if (!node || typeof node.type !== "string") return;
    if (node.type === "ImportExpression") unsupported(node, "dynamic import()");
    if (node.type === "MetaProperty" && node.meta.name === "import") unsupported(node, "import.meta");
    if (node.type === "AwaitExpression" || (node.type === "ForOfStatement" && node.await)) {
      if (!scan.inFunction) unsupported(node, "top-level await");
    }
    const fn = /Function/.test(node.type);
    const saved = scan.inFunction;
    if (fn) scan.inFunction = true;
    for (const key of Object.keys(node)) {
      const v = node[key];
      if (Array.isArray(v)) v.forEach(scan);
      else if (v && typeof v.type === "string") scan(v);
    }
    scan.inFunction = saved;
  };
  scan.inFunction = false;
  scan(ast);
  let out = text;
  for (const [start, end, replacement] of edits.sort((a, b) => b[0] - a[0])) {
    // Keep the replaced text's newlines, so later lines keep their numbers.
    const newlines = out.slice(start, end).split("\n").length - 1;
    out = out.slice(0, start) + replacement + "\n".repeat(newlines) + out.slice(end);
  }
  for (const [name, local] of exported) tail.push(`__live(${JSON.stringify(name)}, () => ${local});`);
  // One line of prologue, on the module's first line: `"use strict"` (a
  // module is strict) and the export helper.
  const prologue = `"use strict"; const __live = (k, get) => Object.defineProperty(__exports, k, { get, enumerable: true });`;
  return `${prologue}${out}\n;${tail.join("\n")}`;
}

/** `./x` from `src/a/b.js` → `src/a/x.js`; null outside the tree. */
function resolve(from, spec) {
  const parts = from.split("/").slice(0, -1);
  for (const p of spec.split("/")) {
    if (p === "." || p === "") continue;
    if (p === "..") {
      if (parts.length === 0) return null;
      parts.pop();
    } else parts.push(p);
  }
  let path = parts.join("/");
  if (!/\.(m?js)$/.test(path)) path += ".js";
  return path;
}

/** The file and line of the innermost frame of the tree in `e`'s stack. */
function whereIn(e, tree) {
  const stack = typeof e?.stack === "string" ? e.stack : "";
  for (const frame of stack.split("\n")) {
    const m = /@(.*?):(\d+):\d+$/.exec(frame.trim());
    if (m && tree.has(m[1])) return [m[1], Number(m[2])];
  }
  if (e && tree.has(e.fileName)) return [e.fileName, e.lineNumber ?? 0];
  return ["", 0];
}

let state = null;

/** Load the variant (once per instance). */
function load() {
  if (state) return state;
  const tree = new Map();
  state = { module: null, mode: null, error: null, tree };
  for (const f of files()) tree.set(f.path, f.contents);
  const ep = entry();
  state.mode = ep.mode;
  const host = hostModules();
  const modules = new Map(); // path → exports
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const encoder = new TextEncoder();
  // Parsing with acorn is most of a load: the transformed modules of this
  // tree come from the host when an earlier instance offered them;
  // otherwise every module is transformed now, before any of it runs, and
  // offered (one that does not parse raises its error when imported).
  const transformed = new Map();
  for (const f of compiled()) transformed.set(f.path, decoder.decode(f.contents));
  if (transformed.size === 0) {
    const fresh = [];
    for (const [path, bytes] of tree) {
      if (!path.startsWith("src/") || !/\.m?js$/.test(path)) continue;
      try {
        const body = transform(path, decoder.decode(bytes));
        transformed.set(path, body);
        fresh.push({ path, contents: encoder.encode(body) });
      } catch {
        // Raised again, with its line, when the module is imported.
      }
    }
    if (fresh.length) offerCompiled(fresh);
  }
  const importFrom = (from) => (spec) => {
    if (host.has(spec)) return host.get(spec);
    const path = spec.startsWith(".") ? resolve(from, spec) : null;
    if (!path || !tree.has(path)) {
      const hint = spec.startsWith("vivarium:") ? ` (the host's interfaces are @${AGENT_VERSION})` : "";
      throw new LoadError("missing-module", `no module ${JSON.stringify(spec)}${hint}: a variant imports its own files under src/ and vivarium:agent interfaces`, from, 0);
    }
    return evaluate(path);
  };
  const evaluate = (path) => {
    if (modules.has(path)) return modules.get(path);
    const exports = {};
    modules.set(path, exports);
    let text;
    try {
      text = decoder.decode(tree.get(path));
    } catch (e) {
      throw new LoadError("syntax-error", `the file is not UTF-8 text: ${e.message}`, path, 1);
    }
    const body = transformed.get(path) ?? transform(path, text);
    let fn;
    try {
      // Indirect eval: global scope; the wrapper sits on line 1, so the
      // module's lines keep their numbers.
      fn = (0, eval)(`(function (__import, __exports) {${body}\n})\n//# sourceURL=${path}`);
    } catch (e) {
      throw new LoadError("syntax-error", `${e.name}: ${e.message}`, path, e.lineNumber ?? 0);
    }
    fn(importFrom(path), exports);
    return exports;
  };
  const entryPath = `src/${ep.module.replace(/\./g, "/")}.js`;
  try {
    if (!tree.has(entryPath)) throw new LoadError("missing-agent", `the tree has no module ${JSON.stringify(ep.module)} (${entryPath})`);
    state.module = evaluate(entryPath);
    if (ep.mode.tag === "function" && typeof state.module[ep.mode.val] !== "function") {
      throw new LoadError("missing-agent", `module ${JSON.stringify(ep.module)} has no function ${JSON.stringify(ep.mode.val)}`);
    }
  } catch (e) {
    if (e instanceof LoadError) state.error = e;
    else if (e instanceof RangeError && /memory/i.test(e.message)) throw e; // a limit: let it end the call
    else {
      const [file, line] = whereIn(e, tree);
      state.error = new LoadError("exception", `${e?.name ?? "Error"}: ${e?.message ?? String(e)}`, file, line);
    }
  }
  return state;
}

function agent(kind) {
  const s = load();
  if (s.error) {
    logIface.log("warn", String(s.error));
    throw String(s.error);
  }
  const a = s.module[kind];
  if (!a) throw String(new LoadError("missing-agent", `the module does not export ${kind}`));
  return a;
}

/** What a thrown value says as the `err` of a result: ComponentizeJS
 * answers a thrown string as `err` and traps on anything else. */
function failure(e) {
  if (typeof e === "string") return e;
  const [file, line] = whereIn(e, state ? state.tree : new Map());
  return `${e?.name ?? "Error"}: ${e?.message ?? String(e)}${file ? ` (${file}:${line})` : ""}`;
}

export const taskAgent = {
  solve(task) {
    const s = load();
    const mode = s.mode;
    if (mode.tag === "check") {
      if (!s.error) {
        for (const kind of ["taskAgent", "metaAgent"]) {
          if (!s.module[kind]) {
            s.error = new LoadError("missing-agent", `the module does not export ${kind}`, "src/agent.js");
            break;
          }
        }
      }
      return s.error ? { output: "load-error", notes: s.error.json() } : { output: "loaded" };
    }
    if (mode.tag === "function") {
      if (s.error) throw String(s.error);
      let result;
      try {
        result = s.module[mode.val](task.input);
      } catch (e) {
        throw failure(e);
      }
      return { output: result == null ? "" : String(result) };
    }
    const a = agent("taskAgent");
    try {
      return a.solve(task);
    } catch (e) {
      throw failure(e);
    }
  },
};

export const metaAgent = {
  improve(ctx) {
    const a = agent("metaAgent");
    try {
      return a.improve(ctx);
    } catch (e) {
      throw failure(e);
    }
  },
};

export const rewardModel = {
  rewards(env, transitions) {
    const s = load();
    if (s.error) throw new Error(String(s.error));
    const model = s.module.rewardModel;
    if (!model || typeof model.rewards !== "function") {
      throw new Error(String(new LoadError("missing-agent", "the module does not export rewardModel (a reward-design task calls it)")));
    }
    const out = Array.from(model.rewards(env, transitions));
    if (out.some((x) => typeof x !== "number")) throw new Error("rewardModel.rewards must return numbers, one per transition");
    return Float64Array.from(out);
  },
};
