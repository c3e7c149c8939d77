"""A read-only view of the archive (grant: `[capabilities] archive`):
variants, visible scores, lineage, sources."""

from wit_world.imports import archive as _archive

from . import _host

VariantInfo = _archive.VariantInfo


def get(id):
    _host.require("archive")
    return _archive.get(id)


def list(offset=0, limit=100):
    _host.require("archive")
    return _archive.list(offset, limit)


def lineage(id):
    """Ancestors of `id`, oldest first, ending with `id`."""
    _host.require("archive")
    return _archive.lineage(id)


def sources(id):
    """The variant's editable tree as {path: bytes}."""
    _host.require("archive")
    from componentize_py_types import Err
    from .errors import ServiceError

    try:
        files = _archive.sources(id)
    except Err as e:
        raise ServiceError("archive", "not-found", str(e.value)) from None
    return {f.path: bytes(f.contents) for f in files}
