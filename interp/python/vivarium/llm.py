"""Chat completions through the host (grant: `[capabilities] llm`), with
tool calling (`vivarium:agent/llm@0.2.0`). Keys stay in the host; every
token counts against the grant's budget. The host never runs a tool: the
model asks for calls, the variant runs them and sends the results back as
`tool` messages.

    tools = [{"name": "view", "description": "show a file",
              "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}]
    messages = [("system", "You edit code."), ("user", "Fix src/agent.py")]
    r = llm.chat(messages, tools=tools)
    for call in r.tool_calls:                  # .id, .name, .arguments (JSON text)
        result = run_tool(call.name, json.loads(call.arguments))
        messages.append({"role": "assistant", "content": r.content, "tool_calls": r.tool_calls})
        messages.append({"role": "tool", "content": result, "tool_call_id": call.id})
"""

import json

from wit_world.imports import vivarium_agent_llm_0_2_0 as _llm

from . import _host
from .errors import call

Message = _llm.Message
Role = _llm.Role
Response = _llm.Response
ToolCall = _llm.ToolCall
Tool = _llm.Tool

_ROLES = {
    "system": _llm.Role.SYSTEM,
    "user": _llm.Role.USER,
    "assistant": _llm.Role.ASSISTANT,
    "tool": _llm.Role.TOOL,
}


def _get(obj, name, default=None):
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _tool_call(c):
    """A `ToolCall` from a `ToolCall`, a `{"id", "name", "arguments"}` dict
    or an OpenAI-style `{"id", "function": {"name", "arguments"}}` dict;
    arguments that are not text are sent as JSON."""
    if isinstance(c, _llm.ToolCall):
        return c
    fn = _get(c, "function")
    name = _get(fn, "name") if fn is not None else _get(c, "name")
    arguments = _get(fn, "arguments") if fn is not None else _get(c, "arguments", "{}")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    if not name:
        raise ValueError(f"a tool call needs a name: {c!r}")
    return _llm.ToolCall(id=str(_get(c, "id", "") or ""), name=str(name), arguments=arguments)


def _message(m):
    if isinstance(m, _llm.Message):
        return m
    tool_calls, tool_call_id = [], None
    if isinstance(m, dict):
        role, content = m["role"], m.get("content")
        tool_calls = [_tool_call(c) for c in (m.get("tool_calls") or [])]
        tool_call_id = m.get("tool_call_id")
    elif hasattr(m, "role") and hasattr(m, "content"):
        # A 0.1.0 `Message`, or anything shaped like one.
        role, content = m.role, m.content
        tool_calls = [_tool_call(c) for c in (getattr(m, "tool_calls", None) or [])]
        tool_call_id = getattr(m, "tool_call_id", None)
    else:
        role, content = m
    if isinstance(role, str):
        try:
            role = _ROLES[role]
        except KeyError:
            raise ValueError(f"unknown role {role!r}; use system, user, assistant or tool") from None
    elif not isinstance(role, _llm.Role):
        role = _ROLES[str(getattr(role, "name", role)).lower()]
    return _llm.Message(
        role=role,
        content="" if content is None else str(content),
        tool_calls=tool_calls,
        tool_call_id=None if tool_call_id is None else str(tool_call_id),
    )


def _tool(t):
    if isinstance(t, _llm.Tool):
        return t
    params = _get(t, "parameters", {"type": "object", "properties": {}})
    if not isinstance(params, str):
        params = json.dumps(params)
    return _llm.Tool(name=str(_get(t, "name")), description=str(_get(t, "description", "") or ""), parameters=params)


def _tool_choice(choice):
    if choice is None or choice == "auto":
        return _llm.ToolChoice_Auto()
    if choice == "none":
        return _llm.ToolChoice_None_()
    if choice == "required":
        return _llm.ToolChoice_Required()
    if isinstance(choice, str):
        return _llm.ToolChoice_Named(choice)
    return choice


def chat(messages, model="*", max_tokens=1024, temperature=None, tools=None, tool_choice="auto"):
    """Send one request; returns the `Response`: `.content`, `.tool_calls`
    (each `.id`, `.name`, `.arguments` as JSON text), `.finish_reason`
    (`tool_calls` when the model asked for calls), `.usage`, `.model`.

    `messages`: `Message`s, `(role, content)` pairs or dicts, including
    `{"role": "assistant", "content": ..., "tool_calls": [{"id", "name",
    "arguments"}]}` and `{"role": "tool", "content": ..., "tool_call_id":
    ...}`. `tools`: dicts `{"name", "description", "parameters"}`
    (`parameters` a JSON Schema as a dict or JSON text). `tool_choice`:
    `"auto"`, `"none"`, `"required"` or a tool's name.

    Raises `NotGranted` without the grant and `ServiceError` (`denied`,
    `budget-exhausted`, `rate-limited`, `unavailable`, `invalid-request`,
    `bad-response`) when the host refuses."""
    _host.require("llm")
    req = _llm.Request(
        model=model,
        messages=[_message(m) for m in messages],
        tools=[_tool(t) for t in (tools or [])],
        tool_choice=_tool_choice(tool_choice),
        max_tokens=int(max_tokens),
        temperature=None if temperature is None else float(temperature),
    )
    return call("llm", _llm.chat, req)


def complete(prompt, system=None, **kwargs):
    """The reply's text to one user prompt (and an optional system prompt)."""
    messages = [("system", system)] if system else []
    messages.append(("user", prompt))
    return chat(messages, **kwargs).content


def tokens_left():
    _host.require("llm")
    return _llm.tokens_left()
