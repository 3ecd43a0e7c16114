"""The client's response head, planned from the upstream's. Pure: the framing rules as code.

The upstream's framing never passes through: hop-by-hop headers are dropped and the body is
re-framed for the client. A body with a Content-Length keeps it; a chunked or close-delimited
body goes out chunked to an HTTP/1.1 client and close-delimited to an HTTP/1.0 one; HEAD, 204
and 304 answers have no body.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.core.memo import remember
from gateway.wire.refusals import status_line
from gateway.wire.request import HOP_BY_HOP, LEARN_EVERY, tokens, whole_head

RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}
SHAPE_MEMO_ENTRIES = 256
SHAPE_MAX_HEAD = 2048  # bytes of a response head beyond which it is never remembered
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class ResponsePlan:
    """The head to send and how the body that follows is framed."""

    __slots__ = ("chunked", "close_delimited", "head", "keep_alive", "open")

    def __init__(self, head: bytes, chunked: bool, close_delimited: bool, keep_alive: bool) -> None:
        self.head = head
        self.open = head[:-2]  # without the blank line that ends it
        self.chunked = chunked  # re-chunk each piece of the upstream's body
        self.close_delimited = close_delimited  # the upstream's body ends when it closes
        self.keep_alive = keep_alive  # the client connection may serve another request

    def head_with(self, ending: bytes) -> bytes:
        """The head with the gateway's own lines (RateLimit-*, different for every request) at
        its end: `ending` is those lines and the blank line, or empty."""
        return self.open + ending if ending else self.head


PLAN_MEMO_ENTRIES = 512
PLAN_MEMO_MAX_HEAD = 2048  # bytes of upstream headers beyond which a head is planned afresh
_plans: dict[tuple[object, ...], ResponsePlan] = {}


def plan_response(
    method: bytes,
    version: bytes,
    status: int,
    reason: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    keep_alive: bool,
) -> ResponsePlan:
    """`plan_response_afresh`, remembered: an upstream answers most requests with the same
    header set (its Date changes once a second), so most heads are planned once. The memo is
    bounded in entries, and only small heads enter it. The gateway's own lines are added when
    the head is written (`ResponsePlan.head_with`)."""
    memo = (method, version, status, reason, tuple(headers), keep_alive)
    plan = _plans.get(memo)
    if plan is None:
        plan = plan_response_afresh(method, version, status, reason, headers, keep_alive)
        if len(plan.head) <= PLAN_MEMO_MAX_HEAD:
            remember(_plans, memo, plan, PLAN_MEMO_ENTRIES)
    return plan


def plan_response_afresh(
    method: bytes,
    version: bytes,
    status: int,
    reason: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    keep_alive: bool,
) -> ResponsePlan:
    """`method`, `version`: the client's request; `keep_alive`: whether the client connection
    may stay open after this answer (its request asked so and was read in full)."""
    lowers = [name.lower() for name, _ in headers]
    length: bytes | None = None
    upstream_chunked = False
    dropped: set[bytes] = set()
    for (_, value), lower in zip(headers, lowers, strict=True):
        if lower == b"content-length":
            length = value.strip()
        elif lower == b"transfer-encoding":
            upstream_chunked = True
        elif lower == b"connection":
            dropped |= tokens(value)
    lines = [status_line(status, reason)]
    append = lines.append
    for (name, value), lower in zip(headers, lowers, strict=True):
        if lower not in RESPONSE_DROP and lower not in dropped:
            append(b"%s: %s\r\n" % (name, value))
    chunked = close_delimited = False
    if method == b"HEAD" or status in (204, 304):  # no body follows
        if length is not None and status != 204:
            append(b"Content-Length: %s\r\n" % length)
    elif length is not None and not upstream_chunked:
        append(b"Content-Length: %s\r\n" % length)
    else:
        close_delimited = not upstream_chunked
        if version == b"1.1":
            chunked = True
            append(b"Transfer-Encoding: chunked\r\n")
        else:
            keep_alive = False
    if not keep_alive:
        append(b"Connection: close\r\n")
    elif version == b"1.0":
        append(b"Connection: keep-alive\r\n")
    append(b"\r\n")
    return ResponsePlan(b"".join(lines), chunked, close_delimited, keep_alive)


class ResponseShape:
    """A final Content-Length response head as the parser read it once, with the client heads
    planned from it (by the request's method, version and whether the connection stays)."""

    __slots__ = ("headers", "keep_alive", "length", "plans", "reason", "status")

    def __init__(
        self, status: int, reason: bytes, headers: tuple[tuple[bytes, bytes], ...], keep_alive: bool, length: int
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.keep_alive = keep_alive  # the upstream keeps the connection open after it
        self.length = length  # of the body that follows
        self.plans: dict[tuple[bool, bytes, bool], ResponsePlan] = {}  # a few: see `plan`

    def plan(self, method: bytes, version: bytes, keep_alive: bool) -> ResponsePlan:
        """`plan_response` for this head, remembered here instead of in the shared memo (a plan
        depends on the method only through HEAD, so this holds a handful of plans at most)."""
        key = (method == b"HEAD", version, keep_alive)
        plan = self.plans.get(key)
        if plan is None:
            plan = plan_response_afresh(method, version, self.status, self.reason, self.headers, keep_alive)
            if len(self.plans) < 8:
                self.plans[key] = plan
        return plan


class ResponseShapes:
    """Upstream response heads by their bytes: the same head bytes read from a parser's start
    state mean the same status, headers and body length, so an answer that arrives whole in
    one read, with a head seen before, needs no parser. Most upstreams repeat their heads
    (the Date header changes once a second). Bounded in entries and in head size."""

    __slots__ = ("_memo", "misses")

    def __init__(self) -> None:
        self._memo: dict[bytes, ResponseShape] = {}
        self.misses = 0

    def whole(self, data: bytes) -> tuple[ResponseShape, bytes] | None:
        """`data` as one whole response with a known head: its shape and its body."""
        end = data.find(b"\r\n\r\n") + 4
        shape = self._memo.get(data[:end]) if end >= 4 else None
        if shape is None:
            self.misses += 1
            return None
        if len(data) - end != shape.length:
            return None
        return shape, data[end:]

    def learning(self) -> bool:
        """Whether the parser's reading of the next unknown head should be remembered."""
        return self.misses % LEARN_EVERY == 1

    def learn(
        self,
        data: bytes,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        body_size: int,
    ) -> None:
        """The parser read all of `data`, from its start state, as one final response with
        `body_size` body bytes: remember its head if the framing was plain Content-Length."""
        head = whole_head(data, SHAPE_MAX_HEAD, body_size)
        if head is None or status < 200 or status in (204, 304):
            return
        lengths = [value.strip() for name, value in headers if name.lower() == b"content-length"]
        if len(lengths) != 1 or lengths[0] != b"%d" % body_size:
            return
        if any(name.lower() == b"transfer-encoding" for name, _ in headers):
            return
        shape = ResponseShape(status, reason, tuple(headers), keep_alive, body_size)
        remember(self._memo, head, shape, SHAPE_MEMO_ENTRIES)
