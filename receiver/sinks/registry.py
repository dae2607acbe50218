"""The sink registry: a ``[sources.NAME.sink]`` table's ``type`` → the package that implements it.

Adding a destination = one package under ``receiver/sinks/`` (see :mod:`receiver.sinks`) + one line in
:data:`PACKAGES`. A package may also export ``prepare_source(table) -> table``, applied to its raw
``[sources.NAME]`` table before loading.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from marshmallow import INCLUDE, Schema, fields, post_load, validate

from receiver.outcomes import Waiting
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


#: Why an entry waits when its source has no ``[sources.NAME.sink]`` table (French, for the Paheko admin).
NO_SINK = ("Aucune destination configurée pour cette source : la session attend. Ajoutez la section "
           "[sources.{source}.sink] (type « recyclic », « webhook » ou « file ») à la configuration du récepteur "
           "et redémarrez le worker ; elle partira alors d'elle-même.")


class NoSink(Waiting):
    """The source has no sink: its sessions wait (re-read, not mapped or sent) until one is configured."""

    def __init__(self, source: str):
        super().__init__(NO_SINK.format(source=source), f"source {source!r} has no [sink] table", NO_SINK_RECHECK)


#: Seconds between two looks at a session waiting for a destination.
NO_SINK_RECHECK = 300.0


def prepare_source(source: Any) -> Any:
    """A raw ``[sources.NAME]`` table as its sink package wants it before loading (optional hook
    ``prepare_source`` of a package: e.g. Recyclic's ``profile`` shared by its sink and mapping tables)."""
    sink = source.get("sink") if isinstance(source, dict) else None
    package = SINKS.get(sink.get("type")) if isinstance(sink, dict) else None
    hook = getattr(package, "prepare_source", None)
    return hook(source) if hook else source


def kind_of(config: SinkConfig) -> str:
    """The ``type`` of a loaded sink table."""
    for package in PACKAGES:
        if isinstance(config, package.Config):
            return package.KIND
    raise TypeError(f"not a sink configuration: {config!r}")


def build_sink(config: SinkConfig, *, source_name: str, ledger: Ledger) -> Sink:
    """The sink of one source, from its loaded ``[sink]`` table."""
    return SINKS[kind_of(config)].build(config, source_name=source_name, ledger=ledger)


class SinkPool:
    """One sink per source for a whole process, shared by its worker threads (so a sink's connection and
    login — one Recyclic login per process — are shared too). Thread-safe."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self._sinks: dict[str, Sink] = {}
        self._lock = threading.Lock()

    def get(self, source: Source) -> Sink:
        """The source's sink; :class:`NoSink` (a :class:`~receiver.outcomes.Waiting`) when it has none."""
        if source.sink is None:
            raise NoSink(source.name)
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
