"""uvicorn's httptools protocol with the limits a public service needs (uvicorn has none of these by default).

- request line + headers at most ``max_header_bytes`` (431 and close above: 4 headers of 64 MB once took the
  process from 103 to 399 MB);
- a request must arrive whole within ``read_timeout`` seconds of its first byte, and a new connection must start
  one within that time (slowloris: 36 connections sending a byte at a time were held for 75 s);
- idle keep-alive connections are closed by uvicorn's own ``timeout_keep_alive``; the number of concurrent
  connections is capped by uvicorn's ``limit_concurrency`` (503 beyond), both set by ``serve``.

``GuardedHttpToolsProtocol.configure(...)`` sets the limits (class attributes, so the class can be handed to
uvicorn by reference, also to worker processes).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _TooLarge(Exception):
    pass


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 16384
    read_timeout = 10.0

    @classmethod
    def configure(cls, max_header_bytes: int, read_timeout: float) -> type[GuardedHttpToolsProtocol]:
        cls.max_header_bytes, cls.read_timeout = max_header_bytes, read_timeout
        return cls

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._deadline = None
        self._rejected = False

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._rejected = True
            raise _TooLarge  # stops the parser; data_received answers through send_400_response

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._rejected:
            super().send_400_response(msg)
            return
        body = f'{{"detail": "request line and headers are over {self.max_header_bytes} bytes", "status": 431}}'
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}".encode()
        )
        self.transport.close()
