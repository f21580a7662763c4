"""A complete provider for newsletter in one module: the ``acme`` "service" appends
each message to a JSON-lines file.  Registered by the entry point in pyproject.toml::

    [project.entry-points."newsletter.providers"]
    acme = "acme_provider:AcmeProvider"

and chosen in config.toml with ``[provider] kind = "acme"``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from newsletter.errors import ConfigError
from newsletter.interfaces import OutgoingMessage, SendResult


class AcmeProvider:
    name = "acme"
    max_batch = 100

    def __init__(self, outbox: Path):
        self.outbox = outbox

    @classmethod
    def from_config(cls, options: Mapping[str, object], base_dir: Path) -> AcmeProvider:
        unknown = set(options) - {"outbox"}
        if unknown:
            raise ConfigError(f"provider.{sorted(unknown)[0]}: unknown option for the 'acme' provider")
        return cls(Path(base_dir) / str(options.get("outbox", "acme-outbox.jsonl")))

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        with self.outbox.open("a", encoding="utf-8") as f:
            for m in batch:
                f.write(json.dumps({"delivery_id": m.delivery_id, "to": m.recipient,
                                    "message_id": m.message_id, "size": len(m.data)}) + "\n")
        return [SendResult(m.delivery_id, "accepted", provider_id=f"acme-{m.delivery_id}") for m in batch]

    def close(self) -> None:
        pass
