"""The error a service's refusal raises."""


class ServiceError(Exception):
    """A host service refused or failed a request.

    `service` is its name (`llm`, `memory`, …), `kind` the WIT error case
    (`budget-exhausted`, `quota-exceeded`, `denied`, …), `message` the
    host's words."""

    def __init__(self, service, kind, message):
        super().__init__(f"{service}: {kind}: {message}")
        self.service = service
        self.kind = kind
        self.message = message


def _kind(case):
    # `Error_BudgetExhausted` -> `budget-exhausted`
    name = type(case).__name__.split("_", 1)[-1]
    out = []
    for i, c in enumerate(name):
        if c.isupper() and i:
            out.append("-")
        out.append(c.lower())
    return "".join(out)


def call(service, fn, *args):
    """`fn(*args)`, with a WIT `err` turned into `ServiceError`."""
    from componentize_py_types import Err

    try:
        return fn(*args)
    except Err as e:
        case = e.value
        raise ServiceError(service, _kind(case), str(getattr(case, "value", case))) from None
