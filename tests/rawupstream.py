"""An upstream that records exactly what reached it: the raw bytes of every request.

The adversarial tests ask what the upstream saw, not what a framework made of it, so this
server parses with httptools only to find where one request ends, and keeps the raw head,
the headers as sent and the body. It answers 200 with a small JSON body and keeps the
connection alive. A path containing `drop-once` is received and recorded, then the
connection is closed without an answer, the first time only (a stale pooled connection).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import httptools


@dataclass
class Seen:
    method: str
    url: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    connection: int = 0
    complete: bool = False

    def header(self, name: str) -> list[bytes]:
        """Every value of a header, by case-insensitive exact name."""
        wanted = name.lower().encode()
        return [value for key, value in self.headers if key.lower() == wanted]

    def names(self) -> set[str]:
        return {key.decode().lower() for key, _ in self.headers}


@dataclass
class RawUpstream:
    seen: list[Seen] = field(default_factory=list)
    dropped: set[bytes] = field(default_factory=set)
    port: int = 0
    connections: int = 0
    _server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_in_thread(self) -> None:
        """Serve from a thread of its own, for tests that drive a gateway process synchronously."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)


class _Connection(asyncio.Protocol):
    def __init__(self, upstream: RawUpstream) -> None:
        self.upstream = upstream
        upstream.connections += 1
        self.number = upstream.connections
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.current: Seen | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.current = Seen("", b"", [], connection=self.number)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.method = self.parser.get_method().decode()
        self.current.url = self.url
        self.upstream.seen.append(self.current)

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        assert self.current is not None and self.transport is not None
        self.current.complete = True
        url = self.current.url
        if b"drop-once" in url and url not in self.upstream.dropped:
            self.upstream.dropped.add(url)
            self.transport.close()
            return
        body = b'{"upstream": "raw"}'
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        self.transport.write(head if self.current.method == "HEAD" else head + body)
