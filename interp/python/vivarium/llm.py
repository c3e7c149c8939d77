"""Chat completions through the host (grant: `[capabilities] llm`). Keys
stay in the host; every token counts against the grant's budget."""

from wit_world.imports import llm as _llm

from . import _host
from .errors import call

Message = _llm.Message
Role = _llm.Role
Response = _llm.Response

_ROLES = {"system": _llm.Role.SYSTEM, "user": _llm.Role.USER, "assistant": _llm.Role.ASSISTANT}


def _message(m):
    if isinstance(m, _llm.Message):
        return m
    if isinstance(m, dict):
        role, content = m["role"], m["content"]
    else:
        role, content = m
    if isinstance(role, str):
        try:
            role = _ROLES[role]
        except KeyError:
            raise ValueError(f"unknown role {role!r}; use system, user or assistant") from None
    return _llm.Message(role=role, content=str(content))


def chat(messages, model="*", max_tokens=1024, temperature=None):
    """Send one request; returns the `Response` (`.content`, `.usage`, …).

    `messages`: `Message`s, `{"role": ..., "content": ...}` dicts or
    `(role, content)` pairs. Raises `NotGranted` without the grant and
    `ServiceError` (`denied`, `budget-exhausted`, `rate-limited`,
    `unavailable`, `invalid-request`) when the host refuses."""
    _host.require("llm")
    req = _llm.Request(
        model=model,
        messages=[_message(m) for m in messages],
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
