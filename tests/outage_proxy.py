"""A TCP proxy in front of the test S3 server that can refuse connections: an outage.

``down()`` closes the listening socket and every open connection (clients then get
"connection refused", as from a stopped server); ``up()`` listens on the same port again.
"""

from __future__ import annotations

import socket
import threading


class OutageProxy:
    """Forward ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``, with outages on demand."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listen()

    def _listen(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        threading.Thread(target=self._accept, args=(self.sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        self.sock.close()
        with self._lock:
            for conn in self._conns:
                _close(conn)
            self._conns = []

    def up(self) -> None:
        """Accept connections again, on the same port."""
        self._listen()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        _close(a)
        _close(b)


def _close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()
