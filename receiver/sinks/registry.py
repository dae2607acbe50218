"""The sink registry: a ``[sources.NAME.sink]`` table's ``type`` → the package that implements it.

Adding a destination = one package under ``receiver/sinks/`` (see :mod:`receiver.sinks`) + one line in
:data:`PACKAGES`.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from marshmallow import INCLUDE, Schema, fields, post_load, validate

from receiver.sinks import file, recyclic, webhook

if TYPE_CHECKING:
    from receiver.config import Source
    from receiver.ledger import Ledger
    from receiver.sinks import Sink

#: Every sink package (``KIND``, ``Config``, ``ConfigSchema``, ``build``).
PACKAGES: tuple[ModuleType, ...] = (
    recyclic,
    webhook,
    file,
)
SINKS: dict[str, ModuleType] = {package.KIND: package for package in PACKAGES}
SINK_TYPES: tuple[str, ...] = tuple(SINKS)

#: A loaded sink table: the ``Config`` dataclass of one of the packages.
SinkConfig = Any


class SinkSchema(Schema):
    """Reads ``type``, then the keys of that sink type (with that package's schema, which refuses unknown
    keys)."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True, validate=validate.OneOf(SINK_TYPES))

    @post_load
    def make(self, data, **kwargs) -> SinkConfig:
        kind = data.pop("type")
        return SINKS[kind].ConfigSchema().load(data)


def kind_of(config: SinkConfig | None) -> str:
    """The ``type`` of a loaded sink table (``file`` for none: the default)."""
    if config is None:
        return file.KIND
    for package in PACKAGES:
        if isinstance(config, package.Config):
            return package.KIND
    raise TypeError(f"not a sink configuration: {config!r}")


def build_sink(config: SinkConfig | None, *, source_name: str, ledger: Ledger) -> Sink:
    """The sink of one source (``None``: the default file sink, beside a SQLite ledger)."""
    kind = kind_of(config)
    return SINKS[kind].build(config if config is not None else file.Config(), source_name=source_name,
                             ledger=ledger)


class SinkPool:
    """One sink per source for a whole process, shared by its worker threads (so a sink's connection and
    login — one Recyclic login per process — are shared too). Thread-safe."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self._sinks: dict[str, Sink] = {}
        self._lock = threading.Lock()

    def get(self, source: Source) -> Sink:
        with self._lock:
            sink = self._sinks.get(source.name)
            if sink is None:
                sink = self._sinks[source.name] = build_sink(source.sink, source_name=source.name,
                                                             ledger=self.ledger)
            return sink

    def close(self) -> None:
        with self._lock:
            sinks, self._sinks = list(self._sinks.values()), {}
        for sink in sinks:
            sink.close()
