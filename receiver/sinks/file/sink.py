"""The file sink: one JSON line per mapped session, appended and fsync'd (audits, local work).

Exactly once through :class:`~receiver.sinks.exactly.ForwardLog`: before a line is written, the file is
searched for the document's id (a restored or deleted ledger, or a ``sending`` record whose write was cut,
never writes the line twice). A line cut by a crash is closed off with a newline before the next one, so
readers can skip it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path

from receiver.ledger import Entry
from receiver.outcomes import RetryLater
from receiver.sinks import Delivery
from receiver.sinks.document import DocumentSink, session_document
from receiver.sinks.exactly import ForwardLog


class FileSink(DocumentSink):
    kind = "file"

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def close(self) -> None:
        """Nothing stays open between deliveries."""

    def deliver(self, entry: Entry, log: ForwardLog) -> Delivery:
        document = session_document(entry)
        def write() -> str:
            try:
                self._append(document.body)
            except OSError as exc:  # disk full, permissions, missing mount: retried, then dead after ~3 days
                raise RetryLater(f"Écriture impossible dans le fichier {self.path} ; nouvel essai programmé.",
                                 f"cannot append to {self.path}: {exc}") from None
            return document.id

        log.once("document", document.session_id, key=document.id, create=write,
                 find=lambda: document.id if self._contains(document.id) else None)
        return Delivery(self.kind, document.id)

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with self._lock, open(self.path, "ab") as out:
            fcntl.flock(out, fcntl.LOCK_EX)  # other processes append to the same file
            try:
                if out.seek(0, os.SEEK_END) and _last_byte(self.path) != b"\n":
                    out.write(b"\n")  # close off a line cut by a crash
                out.write(line.encode() + b"\n")
                out.flush()
                os.fsync(out.fileno())
            finally:
                fcntl.flock(out, fcntl.LOCK_UN)
        if created:
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def _contains(self, document_id: str) -> bool:
        if not self.path.exists():
            return False
        with open(self.path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if document_id not in line:  # most lines: no JSON to parse
                    continue
                try:
                    if json.loads(line).get("id") == document_id:
                        return True
                except (ValueError, AttributeError):
                    continue  # a line cut by a crash
        return False


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as data:
        data.seek(-1, os.SEEK_END)
        return data.read(1)
