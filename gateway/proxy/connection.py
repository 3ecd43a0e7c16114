"""One client connection: parses requests with httptools, hands each head to an `Exchange`,
queues pipelined ones and writes answers strictly in order.

Bodies stream both ways: when one side's write buffer is full, reading from the other side
pauses. Every decision is made from memory (keyring, route table); the only await is opening
a new upstream connection when the pool has no idle one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import httptools

from gateway.core import decision as decide
from gateway.core.iprules import client_ip
from gateway.proxy.exchange import PIPELINE, Exchange
from gateway.proxy.seams import Requester
from gateway.wire.refusals import (
    BAD_REQUEST,
    HEADERS_TOO_LARGE,
    REQUEST_TIMEOUT,
    UPGRADE_NOT_SUPPORTED,
    deny_response,
)
from gateway.wire.request import FramingError, RequestHead, RequestShapes, asked_about, read_head

if TYPE_CHECKING:
    from gateway.proxy.shared import DataPath

LINGER = 2.0  # seconds a closing connection keeps draining what the client still sends
CLIENT_FULL = 8  # a reason to stop reading: the client does not read what we answer
OURS = ~CLIENT_FULL  # the other reasons are the gateway's own waiting (see check_timeouts)


class StopReading(Exception):
    """Raised from a parser callback: nothing after this point of the stream is a request to
    serve (the connection is closing, or the last request asked for `Connection: close`)."""


class ProtocolError(Exception):
    """Raised from a parser callback: the request breaks HTTP's rules; answer `deny`."""

    def __init__(self, deny: decide.Deny) -> None:
        self.deny = deny


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, queues pipelined ones, writes answers in order."""

    # slots: attribute reads stay fast (an instance dict of more than 30 keys loses CPython's
    # specialised lookups: 4,300 more instructions per request, measured with callgrind)
    __slots__ = (
        "asker",
        "closing",
        "corked",
        "counted",
        "current",
        "done",
        "head_bytes",
        "head_started",
        "headers",
        "heads",
        "in_head",
        "last_request",
        "last_seen",
        "linger_until",
        "max_header_bytes",
        "max_headers",
        "message_body",
        "message_framing",
        "out",
        "parser",
        "parsing",
        "paused",
        "peer",
        "peer_bytes",
        "peer_ip",
        "peer_trusted",
        "queue",
        "refusal",
        "server",
        "shapes",
        "stalled_since",
        "stepping",
        "transport",
        "url",
    )

    def __init__(self, server: DataPath) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.peer_bytes = b""
        self.peer_ip: int | None = None
        self.peer_trusted = False
        self.counted = False  # counted against the connection limits (see connection_made)
        self.asker = False  # a proxy whose checks name the request they ask about (forward_auth.trusted)
        self.current: Exchange | None = None  # the exchange being answered
        self.parsing: Exchange | None = None  # the exchange whose request is being read
        self.queue: deque[Exchange] = deque()
        self.paused = 0
        self.closing = False
        self.last_request = False  # a request that ends the connection has been read
        self.linger_until = 0.0
        self.refusal: decide.Deny | None = None  # answer owed once the requests before it are answered
        self.corked = False
        self.out: list[bytes] = []
        self.last_seen = server.now
        self.max_headers = server.limits.max_headers
        self.max_header_bytes = server.limits.max_header_bytes
        # per-request parse state
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.in_head = False  # from the first byte after a request (blank lines too) to the head's end
        self.head_started = 0.0
        self.heads = 0  # heads begun on this connection: tells whether a read held only one head's bytes
        self.stepping = False  # `finished` is moving the pipeline on (a loop, never a recursion)
        self.done: Requester | None = None  # answered while `finished` was stepping
        self.stalled_since = 0.0  # when the client stopped reading our answers (CLIENT_FULL)
        self.message_body = 0  # body bytes of the message being read
        self.message_framing = 0  # the rest of its bytes after its head: chunk sizes, extensions, trailers
        self.shapes = RequestShapes()  # requests recognised by their bytes (see wire.request)

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.peer_bytes = self.peer.encode()
        self.peer_ip = client_ip(self.peer)
        self.peer_trusted = bool(self.server.trusted) and self.server.trusted.trusts(self.peer)
        self.asker = bool(self.server.askers) and self.server.askers.trusts(self.peer)
        if not self.server.admit_connection(self.peer):
            self.closing = True  # over a connection limit: closed at once, nothing read or written
            transport.close()  # (nothing was written: closes at once)
            return
        self.counted = True
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        now = self.last_seen = self.server.now
        if self.closing or self.refusal is not None:
            return  # nothing after a request that broke HTTP's rules is read
        shapes = self.shapes
        shapes.chunk = None
        if not self.in_head and self.parsing is None and not self.last_request:  # the first bytes after a request
            if self.current is None and not self.asker:  # between requests: may be one whole request
                shape = shapes.shape
                found = shape.read(data) if shape is not None else None
                if found is not None:  # the same request as before but for its key and body: no parser
                    self.take(shape.with_key(*found), data)  # type: ignore[union-attr]
                    return
                shapes.missed(data)
            self.in_head = True  # blank lines before a head count against its timeout
            self.head_started = now
            self.head_bytes = 0
        heads = self.heads
        body_before = self.message_body
        self.corked = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.reject(UPGRADE_NOT_SUPPORTED)
            return
        except httptools.HttpParserError as err:
            cause = err.__context__
            if isinstance(cause, StopReading) or (self.last_request and self.parsing is None):
                if not self.closing and self.transport is not None:
                    self.transport.pause_reading()  # bytes after the last request are never read
                return
            self.reject(cause.deny if isinstance(cause, ProtocolError) else BAD_REQUEST)
            return
        finally:
            self.uncork()
        if self.in_head and self.heads == heads:  # the whole read belongs to the head being read
            self.head_bytes += len(data)  # (counted raw: what the callbacks do not see, such as padding)
            if self.head_bytes > self.max_header_bytes:
                self.reject(HEADERS_TOO_LARGE)
        elif self.parsing is not None and self.heads == heads and self.parsing.head.chunked:
            # a chunked body's framing is bounded like a head: long chunk extensions or trailers
            # cost the parser time and memory, and carry nothing we forward
            self.message_framing += len(data) - (self.message_body - body_before)
            if self.message_framing > self.max_header_bytes + self.message_body:
                self.reject(HEADERS_TOO_LARGE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.counted:
            self.counted = False
            self.server.connections.discard(self)
            self.server.release_connection(self.peer)
        for exchange in (self.current, *self.queue):
            if exchange is not None:
                exchange.on_client_lost()
        self.current = None
        self.queue.clear()

    def pause_writing(self) -> None:
        """The client reads slower than we answer: stop reading the upstream, and the client
        (a client that pipelines requests and never reads its answers would otherwise fill
        our memory with them)."""
        self.stalled_since = self.server.now
        self.pause_reading(CLIENT_FULL)
        if self.current is not None and self.current.relay is not None:
            self.current.relay.pause()

    def resume_writing(self) -> None:
        self.resume_reading(CLIENT_FULL)
        if self.current is not None and self.current.relay is not None:
            self.current.relay.resume()

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.closing or self.last_request:
            raise StopReading
        self.url = b""
        self.headers = []
        self.message_body = self.message_framing = 0
        self.heads += 1
        self.head_bytes = 0
        if not self.in_head:  # (a head that began this read keeps the time of its first byte)
            self.in_head = True
            self.head_started = self.server.now

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > self.max_header_bytes:
            raise ProtocolError(HEADERS_TOO_LARGE)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            return  # a trailer of a chunked request: never forwarded
        headers = self.headers
        headers.append((name, value))
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.max_header_bytes or len(headers) > self.max_headers:
            raise ProtocolError(HEADERS_TOO_LARGE)

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        try:
            head = read_head(
                parser.get_method(),
                self.url,
                parser.get_http_version(),
                self.headers,
                parser.should_keep_alive(),
                self.server.head_rules,
                self.peer_trusted,
            )
        except FramingError:
            raise ProtocolError(BAD_REQUEST) from None
        self.begin(head)

    def begin(self, head: RequestHead) -> None:
        """A request head is read: answer it now, or queue it behind the ones before it."""
        if head.upgrade:
            raise ProtocolError(UPGRADE_NOT_SUPPORTED)
        if not head.keep_alive:
            self.last_request = True
        if self.asker:  # a proxy's check: decide the request it names (forward authorization)
            head = asked_about(head)
        exchange = Exchange(self, head, self.server)
        self.parsing = exchange
        if self.current is None:
            self.current = exchange
            exchange.start()
        else:
            self.queue.append(exchange)
            self.pause_reading(PIPELINE)

    def on_body(self, body: bytes) -> None:
        self.message_body += len(body)
        exchange = self.parsing
        if exchange is not None:
            exchange.on_request_body(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        self.parsing = None
        shapes = self.shapes
        if shapes.chunk is not None:  # (a later request in this read did not begin it)
            if exchange is not None and exchange.key is not None:  # a real key's request
                shapes.learn(exchange.head, self.server.head_rules)
            shapes.chunk = None
        if exchange is not None:
            exchange.on_request_complete()

    def take(self, head: RequestHead, data: bytes) -> None:
        """A read that is one whole request of a known shape: what the parser's callbacks
        would do, without the parser (it stays between requests)."""
        self.corked = True
        try:
            self.begin(head)
            if head.content_length:
                self.on_body(data[len(data) - head.content_length :])
            self.on_message_complete()
        finally:
            self.corked = False
            if self.out:  # (an allowed request writes nothing to its client here)
                self.uncork()

    # the seam an exchange uses
    def cork(self) -> None:
        """Collect writes until `uncork`: a burst of parser callbacks leaves in one send."""
        self.corked = True

    def write(self, data: bytes) -> None:
        """Queue for the outbox, or collect while corked: one send per burst of callbacks."""
        if self.corked:
            self.out.append(data)
        elif self.transport is not None and not self.closing:
            self.server.outbox.send(self.transport, data)

    def uncork(self) -> None:
        self.corked = False
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if self.transport is not None and not self.closing:
                self.server.outbox.send(self.transport, data)

    def pause_reading(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.closing:
            self.transport.pause_reading()
        self.paused |= reason

    def resume_reading(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closing:
            self.transport.resume_reading()
            if self.in_head and reason & OURS:  # its clock ran while we would not read: it starts again
                self.head_started = self.server.now

    def refuse(self, deny: decide.Deny) -> None:
        """A protocol-level refusal: answer (if no answer is in progress) and close."""
        if self.closing:
            return
        exchange = self.current
        if exchange is None or not exchange.response_started:
            self.write(deny_response(deny, True, self.server.auth_scheme))
            if exchange is not None:
                exchange.record(deny.status, deny.reason)
            else:
                self.server.record(deny.status, deny.reason, self.peer)
        self.uncork()
        self.close()

    def reject(self, deny: decide.Deny) -> None:
        """The request being read breaks HTTP's rules. If requests read before it are still
        being answered, they finish first and the refusal follows them; nothing after it is read."""
        current = self.current
        if current is None or not current.request_complete:
            self.refuse(deny)  # the broken request is the one being answered
            return
        broken = self.parsing
        if broken is not None and broken in self.queue:
            self.queue.remove(broken)  # never started: nothing to undo
        self.parsing = None
        self.in_head = False
        self.last_request = True
        self.refusal = deny
        if self.transport is not None:
            self.transport.pause_reading()

    def close(self) -> None:
        """Close after what was written. Lingering: send FIN, then read and discard until the
        client closes (or LINGER seconds pass), so a client still sending a body we refused
        reads our answer instead of losing it to a reset."""
        if self.closing:
            return
        self.uncork()
        self.closing = True
        for exchange in (self.current, *self.queue):
            if exchange is not None:
                exchange.on_client_lost()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.server.outbox.flush()  # what is queued goes before the FIN
        if transport.can_write_eof():
            transport.write_eof()
            self.linger_until = self.server.now + LINGER
            transport.resume_reading()
        else:
            transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def finished(self, exchange: Requester) -> None:
        """`exchange` has been answered in full: close, or start the next request.

        Starting the next one may answer it at once (a refusal), which calls this again: that
        call only records the exchange, and the loop below moves on, so a pipeline of any
        length runs in constant stack depth."""
        if exchange is not self.current:
            return
        self.current = None
        if self.stepping:
            self.done = exchange
            return
        if not self.queue and self.refusal is None and exchange.reusable and not self.server.draining:
            if self.paused:  # the common case, nothing waits: no loop needed
                self.resume_reading(PIPELINE)
            self.last_seen = self.server.now
            return
        self.done = exchange
        self.stepping = True
        try:
            while self.done is not None:
                done, self.done = self.done, None
                if not done.reusable or self.server.draining:
                    self.close()
                elif self.queue:
                    self.current = self.queue.popleft()
                    if not self.queue:
                        self.resume_reading(PIPELINE)
                    self.current.start()  # may finish at once: self.done is set again
                elif self.refusal is not None:
                    self.refuse(self.refusal)
                else:
                    if self.paused:
                        self.resume_reading(PIPELINE)
                    self.last_seen = self.server.now
        finally:
            self.stepping = False

    @property
    def busy(self) -> bool:
        """A request is being read or answered (a stop lets it finish)."""
        return self.current is not None or self.in_head

    def check_timeouts(self, now: float) -> None:
        limits = self.server.limits
        if self.closing:
            if now > self.linger_until and self.transport is not None:
                self.transport.abort()  # (close would wait for a client that never reads)
            return
        if self.paused & CLIENT_FULL and now - self.stalled_since > limits.idle_timeout:
            self.abort()  # the client has not read our answers for a whole idle timeout
            return
        if self.in_head and not self.paused & OURS and now - self.head_started > limits.header_timeout:
            self.reject(REQUEST_TIMEOUT)
            return
        exchange = self.current
        if exchange is None:
            if not self.in_head and now - self.last_seen > limits.idle_timeout:
                self.close()
            return
        if exchange.expired(now, self.last_seen) and not self.paused & OURS:
            self.refuse(REQUEST_TIMEOUT)
