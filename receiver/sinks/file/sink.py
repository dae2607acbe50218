"""The file sink: one JSON line per mapped session, appended and fsync'd (audits, local work).

The ledger's forward log makes it idempotent: ``sending`` is recorded before the line is written and
``done`` after the fsync. A ``sending`` record found later is settled by looking for the document's id in
the file. A line cut by a crash is closed off with a newline before the next one, so readers can skip it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path

from receiver.forward import Delivery, DeliveryRetry
from receiver.forward.document import session_document
from receiver.ledger import Entry, Ledger
from receiver.mapping.model import MappedSession


class FileSink:
    kind = "file"

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def close(self) -> None:
        """Nothing stays open between deliveries."""

    def deliver(self, entry: Entry, mapped: MappedSession, ledger: Ledger) -> Delivery:
        document = session_document(entry, mapped)
        record = ledger.forwards_of(entry.id).get(("document", mapped.session_id))
        same = record is not None and record.idempotency_key == document.id
        if same and record.status == "done":
            return Delivery(self.kind, document.id)
        if not (same and self._contains(document.id)):  # a "sending" record: was the line written?
            ledger.record_forward(entry.id, "document", mapped.session_id, status="sending",
                                  idempotency_key=document.id, detail=str(self.path))
            try:
                self._append(document.body)
            except OSError as exc:  # disk full, permissions, missing mount: retried, then dead after ~3 days
                raise DeliveryRetry(f"cannot append to {self.path}: {exc}") from None
        ledger.record_forward(entry.id, "document", mapped.session_id, status="done", sink_id=document.id,
                              idempotency_key=document.id, detail=str(self.path))
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
