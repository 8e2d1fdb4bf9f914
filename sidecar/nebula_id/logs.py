"""Process logging for the sidecar and the operator: human-readable or JSON lines.

`--log-format json` (env `NEBULA_LOG_FORMAT`, config `[app] log_format`) makes
every line one JSON object with stable keys, so a log pipeline can parse it
without rules: ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
``message``, ``pool`` (``namespace/name``, or null), plus ``exception`` when
there is a traceback.  A record can add fields of its own through
``extra={"fields": {...}}`` (the audit log's request fields) and name its pool
through ``extra={"pool": ...}``; kopf's per-object loggers name it through their
``k8s_ref``.  The default stays the text format.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Mapping
from typing import TextIO

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
KEYS = ("time", "level", "logger", "message", "pool")


def _pool_of(record: logging.LogRecord, default: str | None) -> str | None:
    pool = getattr(record, "pool", None)
    if isinstance(pool, str):
        return pool
    ref = getattr(record, "k8s_ref", None)  # kopf's object loggers
    if isinstance(ref, Mapping) and ref.get("name"):
        namespace = ref.get("namespace")
        return f"{namespace}/{ref['name']}" if namespace else str(ref["name"])
    return default


class JsonFormatter(logging.Formatter):
    """One JSON object per record, keys in `KEYS` first, then the record's `fields`."""

    def __init__(self, *, pool: str | None = None) -> None:
        super().__init__()
        self.pool = pool

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        entry: dict[str, object] = {  # any field a caller logs; json.dumps falls back to str
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pool": _pool_of(record, self.pool),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            entry.update((k, v) for k, v in fields.items() if k not in KEYS)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(log_format: str, *, pool: str | None = None) -> logging.Formatter:
    """The formatter of `log_format` ("text" or "json")."""
    if log_format == "json":
        return JsonFormatter(pool=pool)
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {log_format!r}")


def configure(
    level: str, log_format: str, *, pool: str | None = None, stream: TextIO | None = None
) -> None:
    """Send the root logger to `stream` (stderr) at `level` in `log_format`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format, pool=pool))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
