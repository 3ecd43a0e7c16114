"""A raw HTTP/1.1 client over a real socket, for what ordinary clients cannot send."""

from __future__ import annotations

import asyncio
import contextlib

import httptools


class Response:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.raw_headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.complete = False


class _Collector:
    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.parser: httptools.HttpResponseParser | None = None

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.responses[-1].status = self.parser.get_status_code()

    def on_message_begin(self) -> None:
        self.responses.append(Response())

    def on_header(self, name: bytes, value: bytes) -> None:
        pair = (name.decode().lower(), value.decode())
        self.responses[-1].raw_headers.append(pair)
        self.responses[-1].headers[pair[0]] = pair[1]

    def on_body(self, body: bytes) -> None:
        self.responses[-1].body += body

    def on_message_complete(self) -> None:
        self.responses[-1].complete = True


class RawClient:
    """Write bytes, read parsed responses; `closed` tells whether the server hung up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.collector = _Collector()
        self.parser = httptools.HttpResponseParser(self.collector)
        self.collector.parser = self.parser
        self.closed = False
        self.raw = b""

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.1") -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    def reset_parser(self) -> None:
        """After a HEAD answer: a response parser cannot know that no body follows."""
        self.parser = httptools.HttpResponseParser(self.collector)
        self.collector.parser = self.parser
        for response in self.collector.responses:
            response.complete = True

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_responses(self, count: int, timeout: float = 10.0, head_only: bool = False) -> list[Response]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            done = [r for r in self.collector.responses if r.complete or (head_only and r.status)]
            if len(done) >= count or self.closed:
                return self.collector.responses
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"got {len(done)} of {count} responses: {self.raw[:500]!r}")
            try:
                data = await asyncio.wait_for(self.reader.read(65536), remaining)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                self.closed = True
                continue
            if len(self.raw) < 65536:
                self.raw += data
            self.parser.feed_data(data)

    async def wait_closed(self, timeout: float = 5.0) -> bool:
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
                self.raw += data
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await self.writer.wait_closed()
