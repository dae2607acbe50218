"""The Recyclic sink: everything this project knows about Recyclic lives in this package.

- :mod:`.mapping` — Paheko's session in Recyclic's model (categories, methods, policies, reconciliation);
- :mod:`.client` — the HTTP client (login, tokens, typed errors);
- :mod:`.profiles` — what differs between Recyclic 1.3 (``legacy``) and 1.4+ (``v2``) on the wire;
- :mod:`.sink` — delivery: find what Recyclic already holds, adopt it, create only what is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from receiver.sinks.recyclic.config import RecyclicSinkConfig, prepare_source
from receiver.sinks.recyclic.config import RecyclicSinkSchema as ConfigSchema

if TYPE_CHECKING:
    from receiver.ledger import Ledger
    from receiver.sinks.recyclic.sink import RecyclicSink

KIND = "recyclic"
Config = RecyclicSinkConfig

__all__ = ["KIND", "Config", "ConfigSchema", "build", "prepare_source"]


def build(config: RecyclicSinkConfig, *, source_name: str, ledger: Ledger) -> RecyclicSink:
    from receiver.sinks.recyclic.sink import RecyclicSink

    return RecyclicSink(config, ledger=ledger)
