"""A persistent key-value store shared by the variant's lineage (grant:
`[capabilities] memory`), with a byte quota."""

import json as _json

from wit_world.imports import memory as _memory

from . import _host
from .errors import call


def get(key):
    """The bytes under `key`, or None."""
    _host.require("memory")
    value = _memory.get(key)
    return None if value is None else bytes(value)


def get_text(key):
    value = get(key)
    return None if value is None else value.decode("utf-8")


def get_json(key):
    value = get(key)
    return None if value is None else _json.loads(value)


def set(key, value):
    """Store `value` (bytes or str) under `key`; `ServiceError`
    (`quota-exceeded`, `invalid-key`, `denied`) when refused."""
    _host.require("memory")
    if isinstance(value, str):
        value = value.encode("utf-8")
    call("memory", _memory.set, key, bytes(value))


def set_json(key, value):
    set(key, _json.dumps(value, sort_keys=True))


def delete(key):
    """True when the key existed."""
    _host.require("memory")
    return _memory.delete(key)


def keys(prefix=""):
    """Keys that start with `prefix`, sorted."""
    _host.require("memory")
    return list(_memory.list_keys(prefix))


def bytes_left():
    _host.require("memory")
    return _memory.bytes_left()
