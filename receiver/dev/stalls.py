"""Stalled HTTP clients, for tests and benches: sockets that send part of a request and then wait.

Two variants from issue 13: a request head that never ends (``head``), and a body with valid
credentials sent one byte at a time (``trickling_body``): the trickle keeps every socket busy, so a
server that times out idle sockets still has to hold them.
"""

from __future__ import annotations

import socket
import threading


def head(path: str = "/healthz") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode()


def trickling_body(path: str, authorization: str, length: int = 100) -> bytes:
    """The head of a POST announcing ``length`` bytes, and its first byte."""
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{").encode()


class StalledClients:
    """``count`` sockets to ``host:port``, each sent ``first_bytes``; a context manager.

    With ``trickle``, one more byte goes to every socket every ``every`` seconds (a space: the body
    never completes within any test). :meth:`held` counts those the server still holds unanswered.
    """

    def __init__(self, host: str, port: int, first_bytes: bytes, count: int, *, trickle: bool = False,
                 every: float = 0.2):
        self.address = (host, port)
        self.first_bytes = first_bytes
        self.count = count
        self.trickle = trickle
        self.every = every
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, name="stalled-clients", daemon=True)

    def __enter__(self) -> "StalledClients":
        for _ in range(self.count):
            sock = socket.create_connection(self.address, timeout=10)
            sock.sendall(self.first_bytes)
            self.sockets.append(sock)
        if self.trickle:
            self._thread.start()
        return self

    def _trickle(self) -> None:
        while not self._stop.wait(self.every):
            for sock in self.sockets:
                try:
                    sock.sendall(b" ")
                except OSError:
                    pass

    def held(self) -> int:
        """Sockets with nothing to read and not closed: the server still waits for the rest."""
        waiting = 0
        for sock in self.sockets:
            sock.setblocking(False)
            try:
                sock.recv(1)  # an answer, or b"" once the server closed it
            except BlockingIOError:
                waiting += 1
            except OSError:
                pass
            finally:
                sock.setblocking(True)
        return waiting

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for sock in self.sockets:
            sock.close()
