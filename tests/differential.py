"""The shortcuts of the data path against the general path, byte for byte (pure, no sockets).

A learnt request shape (`wire.request.RequestShape`) and a known response head
(`wire.response.ResponseShapes`) let the gateway skip the HTTP parser for bytes it has seen
before. They are only safe if, whenever they accept bytes, the parser would have read exactly
the same thing from them: one whole message with the same facts, the same body, nothing after
it, and so the same head for the upstream. `check_request` and `check_response` take a base
message (which teaches the shortcut) and a variant of it, and say whether the shortcut
accepted the variant; where it did, they assert that the parser agrees. `variant` makes the
mutations an attacker would try. Used by tests/test_shape_differential.py (hypothesis) and
bench/fuzz_shapes.py (the long run).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import httptools

from gateway.wire.request import (
    KEY_BYTES,
    FramingError,
    HeadRules,
    RequestHead,
    read_head,
    request_shape,
    upstream_head,
)
from gateway.wire.response import ResponseShapes

RULES = HeadRules(
    "Authorization", "Bearer", "X-Plugin-Id", upstream_host=b"up:9000", app_headers=frozenset({b"app-id"})
)
PEER = b"127.0.0.1"
IDENTITY = b"X-Gateway-Key-Id: k_1\r\nX-Gateway-Account: acme\r\n"

# outcomes of one check
UNLEARNT, GENERAL, SHORTCUT = "unlearnt", "general", "shortcut"


@dataclass
class Message:
    head: RequestHead | None = None
    status: int = 0
    reason: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    keep_alive: bool = True
    body: bytes = b""
    complete: bool = False


class Reading:
    """What httptools makes of some bytes from its start state: the messages and any error.
    Requests go through `read_head`, as on the general path."""

    def __init__(self, data: bytes, response: bool = False) -> None:
        self.messages: list[Message] = []
        self.error: str | None = None
        self.url = b""
        self.in_head = False
        self.parser = httptools.HttpResponseParser(self) if response else httptools.HttpRequestParser(self)
        self.response = response
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.error = "upgrade"
        except httptools.HttpParserError as err:
            self.error = f"{type(err.__context__ or err).__name__}"

    def on_message_begin(self) -> None:
        self.messages.append(Message())
        self.url = b""
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, reason: bytes) -> None:
        self.messages[-1].reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_head:
            self.messages[-1].headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        message = self.messages[-1]
        message.keep_alive = self.parser.should_keep_alive()
        if self.response:
            message.status = self.parser.get_status_code()
            return
        parser = self.parser
        assert isinstance(parser, httptools.HttpRequestParser)
        try:
            message.head = read_head(
                parser.get_method(),
                self.url,
                parser.get_http_version(),
                message.headers,
                message.keep_alive,
                RULES,
                False,
            )
        except FramingError:
            raise ValueError("framing") from None

    def on_body(self, body: bytes) -> None:
        self.messages[-1].body += body

    def on_message_complete(self) -> None:
        self.messages[-1].complete = True

    def one(self) -> Message | None:
        """The message, when the bytes held exactly one whole message and nothing else."""
        if self.error or len(self.messages) != 1 or not self.messages[0].complete:
            return None
        return self.messages[0]


def facts(head: RequestHead, body: bytes) -> dict[str, object]:
    """Everything the decision and the upstream get from a request."""
    return {
        "method": head.method,
        "url": head.url,
        "version": head.version,
        "headers": list(head.headers),
        "names": list(head.names),
        "keep_alive": head.keep_alive,
        "ambiguous": head.ambiguous,
        "presented": head.presented,
        "key_sent": head.key_sent,
        "plugin": head.plugin,
        "host": head.host,
        "content_length": head.content_length,
        "chunked": head.chunked,
        "expect_continue": head.expect_continue,
        "upgrade": head.upgrade,
        "connection_tokens": set(head.connection_tokens),
        "content_types": head.content_types,
        "content_encoded": head.content_encoded,
        "forwarded_for": head.forwarded_for,
        "app_headers": head.app_headers,
        "upstream_head": upstream_head(head, RULES, False, PEER, PEER, IDENTITY),
        "body": body,
    }


def check_request(base: bytes, variant: bytes) -> str:
    """Teach a request shape with `base` as the connection does, offer it `variant`, and where
    the shape accepts it, assert the parser reads the same request from the same bytes."""
    learnt = Reading(base).one()
    if learnt is None or learnt.head is None or not learnt.head.presented:
        return UNLEARNT
    shape = request_shape(base, learnt.head, RULES)
    if shape is None:
        return UNLEARNT
    facts(learnt.head, learnt.body)  # as in production, the learnt head has written its upstream head
    found = shape.read(variant)
    if found is None:
        return GENERAL
    shaped = facts(shape.with_key(*found), variant[shape.head_length :])
    again = facts(shape.with_key(*found), variant[shape.head_length :])  # from the shape's memos
    assert again == shaped, f"the shape's memos changed the reading of {variant!r}"
    general = Reading(variant)
    message = general.one()
    assert message is not None and message.head is not None, (
        f"the shape took {variant!r}, which the parser reads as {general.error or general.messages}"
    )
    expected = facts(message.head, message.body)
    differing = {name: (shaped[name], expected[name]) for name in expected if shaped[name] != expected[name]}
    assert not differing, f"shape and parser differ on {variant!r}: {differing}"
    return SHORTCUT


def check_response(base: bytes, variant: bytes) -> str:
    """The same for a known response head (ResponseShapes), against the response parser."""
    shapes = ResponseShapes()
    shapes.whole(base)  # a miss: the next parse is learnt, as on an upstream connection
    learnt = Reading(base, response=True).one()
    if learnt is None or not shapes.learning():
        return UNLEARNT
    shapes.learn(base, learnt.status, learnt.reason, learnt.headers, learnt.keep_alive, len(learnt.body))
    found = shapes.whole(variant)
    if found is None:
        return GENERAL
    shape, body = found
    general = Reading(variant, response=True)
    message = general.one()
    assert message is not None, f"the known head took {variant!r}, which the parser reads as {general.messages}"
    assert message.status >= 200 and message.status not in (204, 304)
    shaped = (shape.status, shape.reason, list(shape.headers), shape.keep_alive, body)
    expected = (message.status, message.reason, message.headers, message.keep_alive, message.body)
    assert shaped == expected, f"known head and parser differ on {variant!r}: {shaped} != {expected}"
    return SHORTCUT


# -- what an attacker would send -------------------------------------------------------------

ODD = b' ,;:\t\r\n"\\\x00\x7f\x80\xff_-=%'
EXTRA_HEADERS = [
    b"Accept: */*",
    b"Content-Type: application/json",
    b"Content_Length: 5",
    b"Content-length: 5",
    b"Transfer_Encoding: chunked",
    b"Transfer-Encoding: chunked",
    b"X_Gateway_Account: victim",
    b"X-Gateway-Account: victim",
    b"X_Forwarded_For: 6.6.6.6",
    b"X-Plugin-Id: p",
    b"App-Id: A1",
    b"App_Id: A2",
    b"Connection: keep-alive",
    b"Connection: close",
    b"Expect: 100-continue",
    b"Upgrade: websocket",
    b" folded: continuation",
    b"X-Pad:   spaced   ",
    b"X-Empty:",
    b"Content-Length:5",
    b"Content-Length: 5 ",
    b"Content-Length: 05",
]
LENGTH_LINE = re.compile(rb"(?i)\ncontent[-_]length:[ \t]*(\d+)")
SMUGGLED = (
    b"POST /api/v5/app/entry/data/delete HTTP/1.1\r\nHost: a\r\nX-Gateway-Account: victim\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)


def key_of(rng: random.Random, length: int = 32) -> bytes:
    return bytes(rng.choice(KEY_BYTES) for _ in range(length))


PATHS = (b"/api/v5/workflow/x", b"/api/v5/app/entry/data/list", b"/api/v1/app/A1/entry/E/data")


def base_request(rng: random.Random, key: bytes | None = None, paths: tuple[bytes, ...] = PATHS) -> bytes:
    """A request a client could repeat: a key, perhaps a body, perhaps odd headers."""
    method = rng.choice([b"GET", b"POST", b"PUT", b"DELETE"])
    lines = [b"%s %s HTTP/1.1" % (method, rng.choice(paths)), b"Host: api.example"]
    scheme = rng.choice([b"Bearer "] * 5 + [b"bearer ", b"Bearer  ", b"Bearer\t"])
    key_line = b"Authorization: " + scheme + (key or key_of(rng)) + rng.choice([b""] * 6 + [b" ", b"\t"])
    extras = rng.sample(EXTRA_HEADERS, rng.choice([0, 0, 0, 1, 1, 2, 3]))
    lines += extras
    lines.insert(rng.randrange(2, len(lines) + 1), key_line)
    body = rng.choice([b"", b'{"app_id": "A1"}', b"hello", bytes(rng.randrange(256) for _ in range(rng.randrange(9)))])
    framing = rng.choice(["length", "length", "length", "none", "chunked"])
    if framing == "length" and (body or rng.random() < 0.3):
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked" and body:
        lines.append(b"Transfer-Encoding: chunked")
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        body = b""
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def variant(rng: random.Random, base: bytes, key_change: float = 0.9) -> bytes:
    """`base` with the changes that keep it close to its shape: a new key, new length digits,
    another body, and now and then an edit anywhere (a byte, a line ending, a `_` for `-`,
    a request pipelined behind it, the message split short)."""
    data = bytearray(base)
    head_end = base.find(b"\r\n\r\n") + 4
    at = base.find(b"Bearer")
    if at < 0:
        at = base.lower().find(b"bearer")
    if at >= 0 and rng.random() < key_change:  # the key slot: same length, often foreign bytes
        start = at + 7
        end = base.find(b"\r\n", start)
        alphabet = KEY_BYTES if rng.random() < 0.6 else KEY_BYTES + ODD
        data[start:end] = bytes(rng.choice(alphabet) for _ in range(end - start))
    lengths = list(LENGTH_LINE.finditer(bytes(data), 0, head_end))
    if lengths and rng.random() < 0.8:  # the digits of a length header (or its twin), and the body
        start, end = rng.choice(lengths).span(1)
        size = rng.choice([0, 1, 5, 9, 20, rng.randrange(100)])
        digits = b"%d" % size
        if rng.random() < 0.3:
            digits = digits.rjust(end - start, b"0")
        body = bytes(rng.choice(b"abc{}\r\n" + SMUGGLED[:8]) for _ in range(size))
        if rng.random() < 0.3:
            body = (SMUGGLED * 3)[:size]
        head = bytes(data[:start]) + digits + bytes(data[end:head_end])
        data = bytearray(head + body[: size + rng.choice([0, 0, 0, -1, 1, 5])])
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        edit = rng.randrange(6)
        if not data:
            break
        i = rng.randrange(len(data))
        if edit == 0:
            data[i : i + 1] = bytes([rng.choice(ODD + KEY_BYTES)])
        elif edit == 1:
            data.insert(i, rng.choice(ODD))
        elif edit == 2:
            del data[i]
        elif edit == 3:  # a bare LF, or a lone CR
            j = bytes(data).find(b"\r\n", i)
            if j >= 0:
                del data[j + rng.randrange(2)]
        elif edit == 4:  # `_` for `-` in a header name
            j = bytes(data).find(b"-", i)
            if 0 <= j < head_end:
                data[j] = ord("_")
        else:  # a second request behind it, or cut short
            if rng.random() < 0.5:
                data += SMUGGLED if rng.random() < 0.5 else base
            else:
                del data[i:]
    return bytes(data)


BASE_RESPONSE_HEADERS = [
    b"Content-Type: application/json",
    b"Date: Wed, 02 Dec 2026 10:00:00 GMT",
    b"Connection: keep-alive",
    b"Connection: close",
    b"Transfer-Encoding: chunked",
    b"Content_Length: 3",
    b"X-Pad:  x ",
]


def base_response(rng: random.Random) -> bytes:
    status = rng.choice([b"200 OK", b"201 Created", b"404 Not Found", b"204 No Content", b"100 Continue"])
    body = rng.choice([b"", b"ok", b'{"ok": true}'])
    lines = [rng.choice([b"HTTP/1.1 ", b"HTTP/1.0 "]) + status]
    lines += rng.sample(BASE_RESPONSE_HEADERS, rng.choice([0, 1, 2]))
    if rng.random() < 0.9:
        lines.insert(rng.randrange(1, len(lines) + 1), b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def response_variant(rng: random.Random, base: bytes) -> bytes:
    """The same head with another body, something after it, or an edit anywhere."""
    data = bytearray(base)
    head_end = base.find(b"\r\n\r\n") + 4
    if head_end >= 4 and rng.random() < 0.7:
        size = len(base) - head_end + rng.choice([0, 0, 0, -1, 1, 3])
        data = bytearray(base[:head_end] + bytes(rng.choice(b"abcHTTP/1.1 200\r\n") for _ in range(max(size, 0))))
    if rng.random() < 0.3:
        data += rng.choice([b"\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"XXXXX", base])
    if rng.random() < 0.3 and data:
        i = rng.randrange(len(data))
        data[i : i + 1] = bytes([rng.choice(ODD + KEY_BYTES)])
    return bytes(data)
