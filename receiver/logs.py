"""Logs on standard error, never a secret: one JSON object per line for services, readable lines at a terminal.

Every record carries ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``event`` and ``message``, plus
whatever the caller passed in ``extra=`` (``source``, ``session_id``, ``state``, ``duration_ms``, …).
Before a line is written, every configured secret value, every :class:`~receiver.config.Secret`,
``Authorization``/``Basic``/``Bearer`` credentials and passwords inside URLs are replaced by ``***``.

The receiver (app factory, and its server: ``receiver.serve``) and the worker all log through
:class:`JsonFormatter`; :func:`configure_logging` installs it for the process. Standard output is left
to the commands' own output (tables, progress), so logs never break it. When standard error is a
terminal, :class:`ReadableFormatter` writes ``HH:MM:SS level message key=value`` instead (same
masking); ``$PAHEKO_RECYCLIC_LOG_FORMAT`` (``json`` or ``text``) overrides the choice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from receiver.config import Config, Secret

LOG_LEVEL_ENV = "PAHEKO_RECYCLIC_LOG_LEVEL"
LOG_FORMAT_ENV = "PAHEKO_RECYCLIC_LOG_FORMAT"
MASK = "***"

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

_CREDENTIAL_PATTERNS = (
    # Authorization: Basic xxx / Bearer xxx, in headers, reprs or prose
    re.compile(r"\b(Basic|Bearer|basic|bearer)(\s+)[A-Za-z0-9._~+/=-]{4,}"),
    # key=value / "key": "value" for names that are always secret
    re.compile(r"""(?i)\b(authorization|password|passwd|secret|api[_-]?key|[a-z_]*token)(["']?\s*[:=]\s*["']?)[^\s"',;}&]+"""),
    # scheme://user:password@host
    re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@"),
)


def secrets_of(value: Any) -> set[str]:
    """Every :class:`Secret` value reachable from a configuration object (dataclasses, dicts, tuples)."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Secret):
            found.add(item.reveal())
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return found


class JsonFormatter(logging.Formatter):
    """Format a record as one line of JSON, with secrets masked."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        # Longest first, so a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        text = _CREDENTIAL_PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        text = _CREDENTIAL_PATTERNS[1].sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        return _CREDENTIAL_PATTERNS[2].sub(lambda m: f"{m.group(1)}:{MASK}@", text)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, Secret):
            return MASK
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {str(k): MASK if str(k).lower() == "authorization" else self._clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self._clean(v) for v in value]
        return self.redact(str(value))

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "message": self.redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in line:
                line[key] = self._clean(value)
        if record.exc_info:
            line["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class ReadableFormatter(JsonFormatter):
    """The same record as :class:`JsonFormatter`, as one line for a person: time, level, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = json.loads(super().format(record))
        moment = datetime.fromisoformat(line.pop("time")).astimezone().strftime("%H:%M:%S")
        level, message = line.pop("level"), line.pop("message")
        exception = line.pop("exception", None)
        for key in ("logger", "event"):
            line.pop(key, None)
        extra = " ".join(f"{k}={v}" for k, v in line.items() if v is not None)
        text = f"{moment} {level:<7} {message}" + (f"  [{extra}]" if extra else "")
        return text + (f"\n{exception}" if exception else "")


class _StderrHandler(logging.StreamHandler):
    """A stream handler bound to whatever ``sys.stderr`` is at emit time (redirections, test capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def wants_readable_logs() -> bool:
    """Readable lines for a person at a terminal, JSON for journald, docker and files."""
    chosen = os.environ.get(LOG_FORMAT_ENV, "").lower()
    if chosen in ("json", "text"):
        return chosen == "text"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(config: Config | None = None, *, level: str | int | None = None) -> logging.Handler:
    """Write log records to stderr (JSON, or readable at a terminal), masking ``config``'s secrets.

    The handler sits on the root logger, so libraries' warnings come out the same way; the level
    (``level``, else ``$PAHEKO_RECYCLIC_LOG_LEVEL``, else INFO) applies to the ``receiver`` loggers,
    libraries stay at the root's level (WARNING). Idempotent: a second call replaces the handler.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    secrets = secrets_of(config) if config else ()
    handler.setFormatter(ReadableFormatter(secrets) if wants_readable_logs() else JsonFormatter(secrets))
    root.addHandler(handler)
    chosen = level or os.environ.get(LOG_LEVEL_ENV, "INFO")
    logging.getLogger("receiver").setLevel(chosen.upper() if isinstance(chosen, str) else chosen)
    return handler
