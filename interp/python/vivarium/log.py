"""The host's log: one message at a level. The host caps message size and
count per call and strips control characters; what is over the cap is
dropped and counted, never an error."""

import logging as _logging

from . import _host


def trace(message):
    _host.log("trace", message)


def debug(message):
    _host.log("debug", message)


def info(message):
    _host.log("info", message)


def warn(message):
    _host.log("warn", message)


warning = warn


def error(message):
    _host.log("error", message)


def log(level, message):
    """`level` is `trace`, `debug`, `info`, `warn` or `error`."""
    _host.log(level, message)


class _Handler(_logging.Handler):
    _MAP = {
        _logging.DEBUG: "debug",
        _logging.INFO: "info",
        _logging.WARNING: "warn",
        _logging.ERROR: "error",
        _logging.CRITICAL: "error",
    }

    def emit(self, record):
        try:
            level = self._MAP.get(record.levelno)
            if level is None:
                level = "error" if record.levelno > _logging.ERROR else "debug"
            _host.log(level, self.format(record))
        except Exception:  # noqa: BLE001 (logging must not raise)
            self.handleError(record)


# The `logging` module's root logger writes to the host's log.
handler = _Handler()
handler.setFormatter(_logging.Formatter("%(name)s: %(message)s"))
_logging.getLogger().addHandler(handler)
_logging.getLogger().setLevel(_logging.INFO)
