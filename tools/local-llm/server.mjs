// A small OpenAI-compatible chat-completions server over node-llama-cpp,
// for Vivarium's local model (see scripts/local-llm.sh and docs/services.md).
//
//   node server.mjs --model FILE [--host 127.0.0.1] [--port 8765] [--ctx 4096]
//                   [--threads N] [--name qwen2.5-coder-0.5b-instruct]
//                   [--port-file F] [--exit-on-stdin-close]
//
// Endpoints: GET /v1/models, POST /v1/chat/completions, GET /health.
//
// What it speaks of the OpenAI API: `messages` with roles system, user,
// assistant (with `content` and/or `tool_calls`) and tool (`tool_call_id`,
// `content`); `tools` (`type: "function"`, JSON-schema `parameters`);
// `tool_choice` "auto" (default), "none", "required" or
// `{"type": "function", "function": {"name"}}`; `max_tokens` (or
// `max_completion_tokens`), `temperature`, `top_p`, `seed`, `stop`. Tool
// calls go through the model's own chat template (node-llama-cpp's chat
// wrapper for the model; for Qwen2.5 the `<tool_call>` format): `LlamaChat`
// returns the calls without running them, and they are answered as
// `message.tool_calls` with `finish_reason: "tool_calls"`. Not supported
// (400): `stream: true`, `n` > 1. A forced `tool_choice` ("required" or a
// named tool) is kept by a grammar: the reply is generated under the JSON
// schema `{"name": <an allowed tool>, "arguments": <its parameters>}`, so
// the model cannot answer with anything but a call (llama.cpp's own server
// forces calls the same way).
//
// Requests are answered one at a time (one context sequence; inference is
// CPU-bound anyway). The server binds only where it is told (127.0.0.1 by
// default) and has no authentication: it is for one machine.

import fs from "node:fs";
import http from "node:http";
import { parseArgs } from "node:util";
import { getLlama, LlamaChat } from "node-llama-cpp";

const { values: opt } = parseArgs({
  options: {
    model: { type: "string" },
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8765" },
    ctx: { type: "string", default: "4096" },
    threads: { type: "string", default: "0" },
    name: { type: "string", default: "qwen2.5-coder-0.5b-instruct" },
    "port-file": { type: "string" },
    "exit-on-stdin-close": { type: "boolean", default: false },
  },
});
if (!opt.model) {
  console.error("local-llm: --model FILE is required");
  process.exit(2);
}

/** Largest request body read; a bigger one is answered 413. */
const MAX_BODY = 64 << 20;

const llama = await getLlama({ gpu: false, build: "never", progressLogs: false, logLevel: "error" });
const model = await llama.loadModel({ modelPath: opt.model, gpuLayers: 0 });
const threads = Number(opt.threads) || undefined;
const context = await model.createContext({ contextSize: Number(opt.ctx), threads, sequences: 1 });
const sequence = context.getSequence();
const chat = new LlamaChat({ contextSequence: sequence, autoDisposeSequence: false });
const created = Math.floor(Date.now() / 1000);
let served = 0;

class HttpError extends Error {
  constructor(status, message, type = "invalid_request_error") {
    super(message);
    this.status = status;
    this.type = type;
  }
}

const bad = (message) => new HttpError(400, message);

/** `content` as text: a string, null, or an array of `{type: "text", text}` parts. */
function text(content, where) {
  if (content == null) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content
      .map((p) => {
        if (p && p.type === "text" && typeof p.text === "string") return p.text;
        throw bad(`${where}: only text content parts are supported`);
      })
      .join("");
  }
  throw bad(`${where}: content must be a string`);
}

/** OpenAI `tools` → node-llama-cpp functions (name → {description, params}). */
function functionsOf(tools) {
  if (tools == null) return undefined;
  if (!Array.isArray(tools)) throw bad("tools must be an array");
  if (tools.length === 0) return undefined;
  const out = {};
  tools.forEach((t, i) => {
    if (!t || t.type !== "function" || !t.function || typeof t.function.name !== "string") {
      throw bad(`tools[${i}] must be {"type": "function", "function": {"name": ...}}`);
    }
    const f = t.function;
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(f.name)) throw bad(`tools[${i}].function.name ${JSON.stringify(f.name)} is not a valid name`);
    if (out[f.name]) throw bad(`tools[${i}]: the tool ${f.name} is offered twice`);
    out[f.name] = { description: typeof f.description === "string" ? f.description : undefined, params: f.parameters ?? undefined };
  });
  return out;
}

/** OpenAI messages → node-llama-cpp chat history. */
function historyOf(messages) {
  if (!Array.isArray(messages) || messages.length === 0) throw bad("messages must be a non-empty array");
  const history = [];
  const pending = new Map(); // tool_call_id → the functionCall item awaiting its result
  messages.forEach((m, i) => {
    const where = `messages[${i}]`;
    if (!m || typeof m !== "object") throw bad(`${where} must be an object`);
    switch (m.role) {
      case "system":
      case "developer":
        history.push({ type: "system", text: text(m.content, where) });
        break;
      case "user":
        history.push({ type: "user", text: text(m.content, where) });
        break;
      case "assistant": {
        const response = [];
        const content = text(m.content, where);
        if (content !== "") response.push(content);
        for (const [j, call] of (m.tool_calls ?? []).entries()) {
          const w = `${where}.tool_calls[${j}]`;
          if (!call || call.type !== "function" || !call.function || typeof call.function.name !== "string") {
            throw bad(`${w} must be {"id", "type": "function", "function": {"name", "arguments"}}`);
          }
          let params;
          try {
            params = call.function.arguments ? JSON.parse(call.function.arguments) : undefined;
          } catch (e) {
            throw bad(`${w}.function.arguments is not JSON: ${e.message}`);
          }
          const item = { type: "functionCall", name: call.function.name, params, result: undefined, startsNewChunk: j === 0 };
          response.push(item);
          if (typeof call.id === "string") pending.set(call.id, item);
        }
        history.push({ type: "model", response });
        break;
      }
      case "tool": {
        const item = pending.get(m.tool_call_id);
        if (!item) throw bad(`${where}: tool_call_id ${JSON.stringify(m.tool_call_id)} answers no earlier assistant tool call`);
        pending.delete(m.tool_call_id);
        const result = text(m.content, where);
        try {
          item.result = JSON.parse(result);
        } catch {
          item.result = result;
        }
        break;
      }
      default:
        throw bad(`${where}.role ${JSON.stringify(m.role)} is not one of system, user, assistant, tool`);
    }
  });
  for (const [id, item] of pending) {
    // A call whose result never came: the template still needs one.
    if (item.result === undefined) throw bad(`the tool call ${JSON.stringify(id)} has no tool message with its result`);
  }
  return history;
}

/**
 * Tool calls written without the template's `<tool_call>` tags: small models
 * (Qwen2.5-Coder-0.5B among them) often answer a tool request with just
 * `{"name": ..., "arguments": {...}}`, optionally in a ```json fence, or
 * several of them. Such a reply is taken as calls only when all of it
 * parses and every object names an offered tool; otherwise it stays text.
 */
function bareCalls(reply, functions) {
  let t = reply.trim();
  const fence = /^```(?:json)?\s*\n([\s\S]*?)\n?```$/.exec(t);
  if (fence) t = fence[1].trim();
  if (!t.startsWith("{") && !t.startsWith("[")) return null;
  let items;
  try {
    items = [JSON.parse(t)];
  } catch {
    try {
      items = t.split(/\n\s*\n|\n(?=\{)/).map((x) => JSON.parse(x));
    } catch {
      return null;
    }
  }
  items = items.flat();
  if (items.length === 0) return null;
  const calls = [];
  for (const it of items) {
    if (!it || typeof it !== "object" || typeof it.name !== "string" || !Object.hasOwn(functions, it.name)) return null;
    const params = it.arguments ?? it.parameters ?? {};
    if (typeof params !== "object" || Array.isArray(params)) return null;
    calls.push({ name: it.name, params });
  }
  return calls;
}

/**
 * The tools a `tool_choice` forces a call of: null for "auto" and "none";
 * every offered tool for "required"; the named one for
 * `{"type": "function", "function": {"name"}}` (which must be offered).
 */
function forcedTools(choice, offered) {
  if (choice === "auto" || choice === "none") return null;
  const names = Object.keys(offered ?? {});
  if (choice === "required") {
    if (names.length === 0) throw bad('tool_choice "required" needs at least one tool in tools');
    return names;
  }
  if (choice && typeof choice === "object" && choice.type === "function" && typeof choice.function?.name === "string") {
    const name = choice.function.name;
    if (!names.includes(name)) throw bad(`tool_choice names the tool ${JSON.stringify(name)}, which tools does not offer`);
    return [name];
  }
  throw bad(`tool_choice ${JSON.stringify(choice)} must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}`);
}

/**
 * A grammar admitting exactly one call of one of `names`, with arguments
 * under the tool's JSON schema where the grammar generator supports it
 * (else any JSON object), and a system note describing the tools (without
 * `functions`, the chat template does not describe them).
 */
async function callGrammar(names, offered, history) {
  const argsOf = async (name) => {
    const params = offered[name].params;
    if (params && typeof params === "object") {
      try {
        await llama.createGrammarForJsonSchema(params);
        return params;
      } catch {
        // A schema keyword the generator lacks: keep the call, loosen the arguments.
      }
    }
    return { type: "object", additionalProperties: true };
  };
  const options = [];
  for (const name of names) {
    options.push({ type: "object", properties: { name: { const: name }, arguments: await argsOf(name) } });
  }
  const schema = options.length === 1 ? options[0] : { oneOf: options };
  const described = names.map((n) => ({ name: n, description: offered[n].description, parameters: offered[n].params ?? {} }));
  const note =
    `Answer with a call of ${names.length === 1 ? "the tool " + names[0] : "one of these tools"}, ` +
    `as JSON {"name": ..., "arguments": {...}}. Tools: ${JSON.stringify(described)}`;
  if (history[0]?.type === "system") history[0] = { type: "system", text: history[0].text + "\n\n" + note };
  else history.unshift({ type: "system", text: note });
  return llama.createGrammarForJsonSchema(schema);
}

let queue = Promise.resolve();
/** Run `f` after every earlier request (one context sequence). */
function serially(f) {
  const run = queue.then(f, f);
  queue = run.catch(() => {});
  return run;
}

async function complete(req) {
  if (req.stream) throw bad("stream: true is not supported by this server");
  if (req.n != null && req.n !== 1) throw bad("n must be 1");
  const history = historyOf(req.messages);
  const offered = functionsOf(req.tools);
  const forced = forcedTools(req.tool_choice ?? "auto", offered);
  const functions = forced || req.tool_choice === "none" ? undefined : offered;
  const grammar = forced ? await callGrammar(forced, offered, history) : undefined;
  const maxTokens = req.max_completion_tokens ?? req.max_tokens ?? 256;
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw bad("max_tokens must be a positive integer");
  const temperature = req.temperature ?? 0;
  const stop = req.stop == null ? [] : Array.isArray(req.stop) ? req.stop : [req.stop];

  return serially(async () => {
    const promptTokens = chat.chatWrapper
      .generateContextState({ chatHistory: [...history, { type: "model", response: [] }], availableFunctions: functions })
      .contextText.tokenize(model.tokenizer).length;
    if (promptTokens + maxTokens > context.contextSize) {
      throw bad(`the prompt is ${promptTokens} tokens; with max_tokens ${maxTokens} it does not fit the context of ${context.contextSize}`);
    }
    const before = sequence.tokenMeter.usedOutputTokens;
    const started = Date.now();
    const r = await chat.generateResponse(history, {
      ...(grammar ? { grammar } : { functions }),
      maxTokens,
      temperature,
      topP: req.top_p ?? undefined,
      seed: req.seed ?? undefined,
      customStopTriggers: stop.length ? stop : undefined,
      maxParallelFunctionCalls: 8,
    });
    const completionTokens = sequence.tokenMeter.usedOutputTokens - before;
    let found = (r.functionCalls ?? []).map((c) => ({ name: c.functionName, params: c.params }));
    let content = r.response;
    if (grammar) {
      // The grammar admits only a call; a reply cut short by max_tokens
      // is not one.
      let call;
      try {
        call = grammar.parse(content);
      } catch {
        throw new HttpError(500, `the forced tool call did not finish within max_tokens ${maxTokens}; raise max_tokens`);
      }
      [found, content] = [[{ name: call.name, params: call.arguments }], ""];
    } else if (found.length === 0 && functions) {
      const bare = bareCalls(content, functions);
      if (bare) [found, content] = [bare, ""];
    }
    const calls = found.map((c, i) => ({
      id: `call_${served + 1}_${i}`,
      type: "function",
      function: { name: c.name, arguments: JSON.stringify(c.params ?? {}) },
    }));
    const stopReason = r.metadata.stopReason;
    const finish = calls.length ? "tool_calls" : stopReason === "maxTokens" ? "length" : "stop";
    served += 1;
    const message = { role: "assistant", content: calls.length && content === "" ? null : content };
    if (calls.length) message.tool_calls = calls;
    const seconds = (Date.now() - started) / 1000;
    console.error(
      `local-llm: request ${served}: ${promptTokens} prompt + ${completionTokens} completion tokens in ${seconds.toFixed(2)} s (${(completionTokens / seconds).toFixed(1)} tokens/s), ${finish}`,
    );
    return {
      id: `chatcmpl-${served}`,
      object: "chat.completion",
      created: Math.floor(Date.now() / 1000),
      model: opt.name,
      choices: [{ index: 0, message, finish_reason: finish }],
      usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
    };
  });
}

function send(res, status, body) {
  const bytes = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { "content-type": "application/json", "content-length": bytes.length });
  res.end(bytes);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new HttpError(413, `the request body is over ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

const server = http.createServer(async (req, res) => {
  try {
    const path = new URL(req.url, "http://x").pathname.replace(/\/+$/, "");
    if (req.method === "GET" && (path === "/health" || path === "")) {
      return send(res, 200, { status: "ok", model: opt.name, served });
    }
    if (req.method === "GET" && path === "/v1/models") {
      return send(res, 200, { object: "list", data: [{ id: opt.name, object: "model", created, owned_by: "local" }] });
    }
    if (path === "/v1/chat/completions") {
      if (req.method !== "POST") throw new HttpError(405, "use POST");
      const raw = await readBody(req);
      let body;
      try {
        body = JSON.parse(raw.toString("utf8"));
      } catch (e) {
        throw bad(`the request body is not JSON: ${e.message}`);
      }
      if (!body || typeof body !== "object") throw bad("the request body must be a JSON object");
      return send(res, 200, await complete(body));
    }
    throw new HttpError(404, `no route ${req.method} ${path}`, "not_found_error");
  } catch (e) {
    const status = e instanceof HttpError ? e.status : 500;
    if (status === 500) console.error("local-llm:", e);
    send(res, status, { error: { message: String(e.message ?? e), type: e.type ?? "server_error" } });
  }
});

server.listen(Number(opt.port), opt.host, () => {
  const { port } = server.address();
  if (opt["port-file"]) {
    fs.writeFileSync(opt["port-file"] + ".tmp", `${port}\n`);
    fs.renameSync(opt["port-file"] + ".tmp", opt["port-file"]);
  }
  console.log(`local-llm: serving ${opt.name} on http://${opt.host}:${port}/v1 (context ${context.contextSize}, ${threads ?? "default"} threads)`);
});

const quit = () => {
  server.close();
  process.exit(0);
};
process.on("SIGTERM", quit);
process.on("SIGINT", quit);
if (opt["exit-on-stdin-close"]) {
  // The parent (a test binary) holds our stdin: when it exits, so do we.
  process.stdin.on("end", quit);
  process.stdin.on("close", quit);
  process.stdin.resume();
}
