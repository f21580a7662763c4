"""Log output: one line per event, as text or as JSON lines (``--log-format json``).

Events carry their facts as ``extra`` fields (``event``, ``publication``,
``edition``, ``number``, ``slot``, ``counts``, ``rate``, ``eta``, ``reason``), so a
JSON line can be filtered on them without parsing the message::

    {"ts": "2026-05-12T00:00:01.204Z", "level": "INFO", "logger": "newsletter.scheduling",
     "event": "edition.created", "publication": "weekly", "edition": 7, "number": 7,
     "counts": {"articles": 12, "pending": 2990, "skipped": 10}, "msg": "schedule weekly: ..."}

The text format keeps the same facts in the message itself.  Every line says
its time with its offset from UTC (ISO 8601): the text format in the process's
local time (``2026-05-12T09:00:01.204+09:00``), JSON in UTC (``Z``), so lines
from machines in different zones, or from before and after a DST change, can be
put in order without guessing.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Extra fields a record may carry, in the order they are written.
FIELDS = ("event", "publication", "edition", "number", "slot", "counts", "rate", "eta", "reason", "pid")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; non-ASCII kept as is (第3号, not \\u7b2c3\\u53f7)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # A message never spans lines: newlines inside strings are escaped by json.
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` with an ISO 8601 time that carries its UTC offset."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


def configure(log_format: str = "text", *, debug: bool = False) -> None:
    """Root handler on stderr (libraries at WARNING unless ``debug``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
