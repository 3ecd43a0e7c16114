"""The data path's shortcuts are its general path, faster: a differential test.

A connection that learnt its client's request shape reads the next request without the
parser, and an upstream head seen before is read without the response parser. For mutated
variants of learnt messages (a new key or foreign bytes in its slot, new length digits, twins
of header names spelt with `_`, bare LF, obs-fold, a request pipelined behind, a message cut
short), the shortcut must give exactly what the general path gives:
- pure: wherever a shortcut accepts bytes, the parser reads the same message, facts, body and
  upstream head from them (tests/differential.py);
- over real sockets: the same bytes on a connection that learnt the base request and on a
  fresh one get the same answers, and the same requests reach a recording upstream.
bench/fuzz_shapes.py runs the same checks for 100,000 cases and more.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket

import httptools
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests import test_request_properties as properties
from tests.differential import (
    SHORTCUT,
    base_request,
    base_response,
    check_request,
    check_response,
    response_variant,
    variant,
)
from tests.test_request_properties import CLOSE_WITHIN, Live

live = properties.live  # the module's gateway and recording upstream (a fixture)

EXAMPLES = int(os.environ.get("GATEWAY_PROPERTY_EXAMPLES", "80"))


@settings(max_examples=EXAMPLES * 25, deadline=None, derandomize=True)
@given(rng=st.randoms(use_true_random=False))
def test_a_learnt_request_shape_accepts_only_what_the_parser_reads_the_same(rng: random.Random) -> None:
    base = base_request(rng)
    event(check_request(base, variant(rng, base)))


@settings(max_examples=EXAMPLES * 25, deadline=None, derandomize=True)
@given(rng=st.randoms(use_true_random=False))
def test_a_known_response_head_accepts_only_what_the_parser_reads_the_same(rng: random.Random) -> None:
    base = base_response(rng)
    event(check_response(base, response_variant(rng, base)))


def test_the_pure_checks_see_the_shortcut_taken() -> None:
    """Not a vacuous property: a good share of the variants goes through each shortcut."""
    rng = random.Random(7)
    requests = [check_request(b, variant(rng, b)) for b in (base_request(rng) for _ in range(3000))]
    responses = [check_response(b, response_variant(rng, b)) for b in (base_response(rng) for _ in range(3000))]
    assert requests.count(SHORTCUT) > 150 and responses.count(SHORTCUT) > 300


class Conversation:
    """Raw bytes in, whole answers out (status, headers and body as the client reads them)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.answers: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []
        self.current: list = []
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False

    def on_message_begin(self) -> None:
        self.current = [0, [], b""]

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current[1].append((name, value))

    def on_body(self, body: bytes) -> None:
        self.current[2] += body

    def on_message_complete(self) -> None:
        self.current[0] = self.parser.get_status_code()
        if self.current[0] < 200:
            return  # an interim answer (100 Continue): the final one follows
        self.answers.append((self.current[0], self.current[1], self.current[2]))

    def send(self, data: bytes, answers: int, timeout: float) -> None:
        """Send, then read until `answers` answers in all arrived, the gateway closed, or `timeout`."""
        if self.closed:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True
            return
        self.sock.settimeout(timeout)
        while len(self.answers) < answers:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.closed = True
                return

    def close(self) -> None:
        self.sock.close()


def learnt_connection(live: Live, port_key: bytes, base: bytes) -> tuple[Conversation, bool]:
    """A connection that sent `base` once; whether it learnt the shape of it."""
    conversation = Conversation(live.port)
    conversation.send(base, 1, CLOSE_WITHIN)
    if not conversation.answers or (b"Connection", b"close") in conversation.answers[0][1]:
        conversation.closed = True
    local = conversation.sock.getsockname()

    async def shape_learnt() -> bool:
        for conn in list(live.gateway.proxy.connections):
            if conn.transport is not None and conn.transport.get_extra_info("peername") == local:
                return conn.shapes.shape is not None
        return False

    return conversation, live.call(shape_learnt())


def converse(live: Live, conversation: Conversation, variant_bytes: bytes) -> tuple[list, list, bool]:
    """The variant (its own write), then a plain request as a sentinel; the answers to both,
    what reached the upstream, and whether the gateway closed the connection."""
    sentinel = b"GET /api/v5/app/list?sentinel HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n\r\n"
    before, answered = len(live.upstream.seen), len(conversation.answers)
    conversation.send(variant_bytes, answered + 1, 0.15)
    conversation.send(sentinel % live.key.encode(), answered + 2, CLOSE_WITHIN)
    seen = [(s.method, s.url, s.headers, s.body, s.complete) for s in live.upstream.seen[before:]]
    return conversation.answers[answered:], seen, conversation.closed


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rng=st.randoms(use_true_random=False))
def test_a_learnt_connection_answers_and_forwards_as_a_fresh_one(live: Live, rng: random.Random) -> None:
    key = live.key.encode()
    base = base_request(rng, key, (b"/api/v5/app/list", b"/api/v5/app/entry/data/list", b"/q/1?app_id=A1"))
    mutated = variant(rng, base, key_change=0.3)  # mostly the live key: forwarded, not refused
    learnt, taught = learnt_connection(live, key, base)
    if learnt.closed:  # the base itself ended its connection (a refusal that closes): nothing to compare
        learnt.close()
        event("the base request closed its connection")
        return
    try:
        on_learnt = converse(live, learnt, mutated)
    finally:
        learnt.close()
    fresh = Conversation(live.port)
    try:
        on_fresh = converse(live, fresh, mutated)
    finally:
        fresh.close()
    event(f"shape learnt: {taught}; answers: {[a[0] for a in on_fresh[0]]}")
    assert on_learnt == on_fresh, mutated


async def test_the_learnt_content_length_twin_cannot_smuggle_a_request(start_gateway, tmp_path) -> None:
    """The reported attack, as sent: a workflow-only key, `Content_Length: N` and no body, then
    the same head followed by N bytes that hold a request with forged identity headers."""
    from tests.rawupstream import RawUpstream
    from tests.test_adversarial import Gate

    upstream = RawUpstream()
    await upstream.start()
    try:
        running = await start_gateway(upstream={"url": upstream.url})
        gate = Gate(running.gateway.proxy.port, running.admin, upstream)
        key = await gate.key(interfaces=["workflow"])
        smuggled = (
            b"POST /api/v5/app/entry/data/delete HTTP/1.1\r\nHost: a\r\nX-Gateway-Account: victim\r\n"
            b"X-Gateway-Key-Id: k_victim\r\nContent-Length: 2\r\n\r\n{}"
        )
        head = b"POST /api/v5/workflow/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\nContent_Length: %d\r\n\r\n"
        first = head % (key.encode(), len(smuggled))
        answers, closed = await gate.exchange(first, first + smuggled, count=2, linger=0.3)
        assert [a.status for a in answers] == [400]
        assert closed and upstream.seen == []
        await asyncio.sleep(0.05)
        assert upstream.seen == []
    finally:
        await upstream.stop()
