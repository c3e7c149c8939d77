"""What the SDK and the loader share: the loaded tree, the grant's services,
and the writer that sends `print()` to the host's log."""

from wit_world.imports import log as _log
from wit_world.imports import source as _source

# The variant's tree as the host handed it (path -> bytes), filled by the
# loader when the instance starts. Read-only: a copy is handed out.
TREE = {}

_LEVELS = {
    "trace": _log.Level.TRACE,
    "debug": _log.Level.DEBUG,
    "info": _log.Level.INFO,
    "warn": _log.Level.WARN,
    "warning": _log.Level.WARN,
    "error": _log.Level.ERROR,
}

_granted = None


def level(name):
    try:
        return _LEVELS[name]
    except KeyError:
        raise ValueError(f"unknown log level {name!r}; use one of {sorted(_LEVELS)}") from None


def log(level_name, message):
    _log.log(level(level_name), str(message))


def granted():
    """The services the call's grant links besides `log` (a frozenset)."""
    global _granted
    if _granted is None:
        _granted = frozenset(_source.granted())
    return _granted


class NotGranted(PermissionError):
    """The variant called a service its grant does not include."""

    def __init__(self, service):
        super().__init__(
            f"the `{service}` service is not granted to this variant: request it under "
            f"[capabilities] in variant.toml (the operator's policy sets the ceiling)"
        )
        self.service = service


def require(service):
    if service not in granted():
        raise NotGranted(service)


class LogWriter:
    """A text stream whose lines go to the host's log at one level."""

    def __init__(self, level_name):
        self._level = level(level_name)
        self._buffer = ""

    def write(self, text):
        text = str(text)
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            _log.log(self._level, line)
        return len(text)

    def flush(self):
        if self._buffer:
            _log.log(self._level, self._buffer)
            self._buffer = ""

    def isatty(self):
        return False

    def writable(self):
        return True
