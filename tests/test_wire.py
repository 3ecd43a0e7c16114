"""The HTTP rules as pure code, as tables: reading a request head, writing the upstream's
head, planning the client's response head, walking X-Forwarded-For."""

from __future__ import annotations

import httptools
import pytest

from gateway.wire.forwarded import TrustedProxies
from gateway.wire.refusals import status_line
from gateway.wire.request import FramingError, HeadRules, RequestHead, read_head, request_shape, upstream_head
from gateway.wire.response import LAST_CHUNK, SHAPE_MAX_HEAD, ResponseShapes, chunk, plan_response

RULES = HeadRules("Authorization", "Bearer", "X-Plugin-Id", upstream_host=b"up:9000")


def head_of(*headers: tuple[bytes, bytes], method: bytes = b"POST", version: str = "1.1", **kw) -> RequestHead:
    return read_head(method, kw.get("url", b"/a"), version, list(headers), True, RULES, kw.get("trusted", False))


@pytest.mark.parametrize(
    ("headers", "version", "length", "chunked"),
    [
        ([], "1.1", None, False),
        ([(b"Content-Length", b"5")], "1.1", 5, False),
        ([(b"Content-Length", b" 5 ")], "1.1", 5, False),
        ([(b"Content-Length", b"5"), (b"content-length", b"5")], "1.1", 5, False),
        ([(b"Content-Length", b"0005")], "1.1", 5, False),
        ([(b"Transfer-Encoding", b"chunked")], "1.1", None, True),
        ([(b"Transfer-Encoding", b"Chunked")], "1.1", None, True),
    ],
)
def test_framing_that_is_clear(headers, version, length, chunked) -> None:
    head = head_of(*headers, version=version)
    assert (head.content_length, head.chunked) == (length, chunked)


@pytest.mark.parametrize(
    ("headers", "version"),
    [
        ([(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")], "1.1"),
        ([(b"Content-Length", b"5"), (b"Content-Length", b"6")], "1.1"),
        ([(b"Content-Length", b"-5")], "1.1"),
        ([(b"Content-Length", b"5a")], "1.1"),
        ([(b"Transfer-Encoding", b"gzip, chunked")], "1.1"),
        ([(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")], "1.1"),
        ([(b"Transfer-Encoding", b"identity")], "1.1"),
        ([(b"Transfer-Encoding", b"chunked")], "1.0"),
        ([(b"Expect", b"200-ok")], "1.1"),
    ],
)
def test_framing_that_two_parsers_could_split_differently(headers, version) -> None:
    with pytest.raises(FramingError):
        head_of(*headers, version=version)


@pytest.mark.parametrize(
    ("headers", "presented", "key_sent", "ambiguous"),
    [
        ([(b"Authorization", b"Bearer abc")], b"abc", True, False),
        ([(b"authorization", b"bearer   abc  ")], b"abc", True, False),
        ([(b"Authorization", b"Basic abc")], b"", True, False),
        ([(b"Authorization", b"abc")], b"", True, False),
        ([(b"Authorization", b"  ")], b"", False, False),
        ([(b"Authorization", b"Bearer a"), (b"Authorization", b"Bearer a")], b"a", True, True),
        ([(b"Host", b"a"), (b"Host", b"b")], b"", False, True),
        ([(b"X-HTTP-Method-Override", b"DELETE")], b"", False, True),
        ([(b"X_Method_Override", b"post")], b"", False, False),
        ([(b"X-HTTP-Method", b"")], b"", False, True),
    ],
)
def test_key_and_ambiguity(headers, presented, key_sent, ambiguous) -> None:
    head = head_of(*headers)
    assert (head.presented, head.key_sent, head.ambiguous) == (presented, key_sent, ambiguous)


def test_facts_read_in_one_pass() -> None:
    head = head_of(
        (b"Host", b"api.example"),
        (b"X_Plugin_Id", b""),
        (b"Content-Type", b"application/json"),
        (b"Content-Encoding", b"gzip"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"Expect", b"100-continue"),
        (b"X-Forwarded-For", b"1.1.1.1"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X_App_Id", b"A1"),
        (b"X-App-Id", b"A2"),
        trusted=False,
    )
    assert head.host == b"api.example" and head.plugin and head.expect_continue
    assert head.content_types == (b"application/json",) and head.content_encoded
    assert head.connection_tokens == {b"keep-alive", b"x-hop"}
    assert head.forwarded_for == (b"1.1.1.1",) and head.forwarded_proto == b""  # untrusted: not believed
    assert head.values(b"x-app-id") == [b"A1", b"A2"]
    assert head_of((b"X-Forwarded-Proto", b"https"), trusted=True).forwarded_proto == b"https"


def test_header_roles_follow_each_configuration() -> None:
    """What a name means is remembered per configuration: the key header of one gateway is an
    ordinary header to another, and a plugin header named like a forwarding header wins."""
    custom = HeadRules("X-Api-Key", "", "X-Forwarded-For")
    for _ in range(2):  # the second pass reads the remembered roles
        mine = read_head(
            b"GET", b"/a", "1.1", [(b"X-Api-Key", b"k1"), (b"X-Forwarded-For", b"1.1.1.1")], True, custom, True
        )
        assert (mine.presented, mine.plugin, mine.forwarded_for) == (b"k1", True, ())
        other = head_of((b"X-Api-Key", b"k1"), (b"X-Forwarded-For", b"1.1.1.1"), trusted=True)
        assert (other.presented, other.plugin, other.forwarded_for) == (b"", False, (b"1.1.1.1",))


class Collected:
    """httptools' callbacks both directions share: how many messages began, their headers."""

    def __init__(self) -> None:
        self.messages = 0
        self.headers: list[tuple[bytes, bytes]] = []

    def on_message_begin(self) -> None:
        self.messages += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


class ParsedRequest(Collected):
    """What the client connection hands `request_shape`: httptools' reading of one read."""

    def __init__(self, data: bytes, rules: HeadRules = RULES) -> None:
        super().__init__()
        self.url, self.head = b"", None
        self.rules = rules
        self.parser = httptools.HttpRequestParser(self)
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        p = self.parser
        self.head = read_head(
            p.get_method(), self.url, p.get_http_version(), self.headers, p.should_keep_alive(), self.rules, False
        )


KEY = b"A" * 16 + b"b" * 15 + b"9"
SHAPED = b"POST /api/v5/app/list HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer %s\r\nContent-Length: 2\r\n\r\n{}"


def shape_of(data: bytes, rules: HeadRules = RULES):
    try:
        read = ParsedRequest(data, rules)
    except httptools.HttpParserError:
        return None  # the gateway refuses it
    return request_shape(data, read.head, rules) if read.head is not None and read.messages == 1 else None


LONGER = b"POST /api/v5/app/list HTTP/1.1\r\nContent-Length: %d\r\nHost: h\r\nAuthorization: Bearer %s\r\n\r\n%s"


@pytest.mark.parametrize(
    ("learnt", "data", "body"),
    [
        (SHAPED % KEY, (SHAPED % (b"Zz09_-" * 5 + b"xy"))[:-2] + b"[]", b"[]"),  # another key and body
        (LONGER % (12, KEY, b'{"a":"1234"}'), LONGER % (15, b"Q" * 32, b'{"a":"1234567"}'), b'{"a":"1234567"}'),
        (LONGER % (12, KEY, b'{"a":"1234"}'), LONGER % (10, KEY, b'{"a":"12"}'), b'{"a":"12"}'),
        (LONGER % (12, KEY, b'{"a":"1234"}'), (LONGER % (12, KEY, b"")).replace(b": 12", b": 05") + b"12345", b"12345"),
        (
            b"GET /a HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n" % KEY,
            b"GET /a HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n" % (b"x" * 32),
            b"",
        ),
    ],
)
def test_a_request_of_a_known_shape_is_read_with_its_own_key_and_body(learnt: bytes, data: bytes, body: bytes) -> None:
    shape = shape_of(learnt)
    assert shape is not None
    found = shape.read(data)
    assert found is not None and data[shape.head_length :] == body and int(found[1] or 0) == len(body)
    head = shape.with_key(*found)
    expected = ParsedRequest(data).head  # what the parser itself makes of it
    assert head.shape is shape and expected.shape is None  # (the shape it was read by: its memos)
    for fact in RequestHead.__slots__:
        if fact != "shape":
            assert getattr(head, fact) == getattr(expected, fact), fact
    assert shape.head.presented == KEY and shape.head.content_length == ParsedRequest(learnt).head.content_length


@pytest.mark.parametrize(
    "data",
    [
        LONGER % (123, KEY, b"x" * 123),  # more digits
        LONGER % (1, KEY, b"x"),  # fewer
        (LONGER % (12, KEY, b"")).replace(b": 12", b": +2") + b"xx",
        (LONGER % (12, KEY, b"")).replace(b": 12", b": 2 ") + b"xx",
        (LONGER % (12, KEY, b"")).replace(b": 12", b": -1"),
        (LONGER % (12, KEY, b"")).replace(b": 12", b": \xd9\xa1") + b"x",  # a non-ASCII digit
        LONGER % (12, KEY, b"x" * 11),  # the body is short
        LONGER % (12, KEY, b"x" * 13),  # or long: the start of another request
    ],
)
def test_a_length_slot_holding_anything_but_as_many_digits_is_not_that_shape(data: bytes) -> None:
    shape = shape_of(LONGER % (12, KEY, b'{"a":"1234"}'))
    assert shape is not None and shape.read(data) is None


@pytest.mark.parametrize(
    "key",
    [
        KEY[:-1] + b" ",  # a space: "Bearer AAA B" reads another way
        KEY[:10] + b" " + KEY[11:],
        KEY[:-3] + b"\r\nX",  # a line break: another header
        KEY[:-1] + b",",
        KEY[:-1] + b'"',
        KEY[:-1] + b"\xff",
        KEY[:-1],  # another length
        KEY + b"A",
    ],
)
def test_a_key_slot_holding_anything_but_key_bytes_is_not_that_shape(key: bytes) -> None:
    shape = shape_of(SHAPED % KEY)
    assert shape is not None and shape.read(SHAPED % key) is None


@pytest.mark.parametrize(
    "data",
    [
        SHAPED % KEY + b"GET / HTTP/1.1\r\n\r\n",  # a second request in the same read
        (SHAPED % KEY)[:-1],  # not all of the body
        (SHAPED % KEY).replace(b"Content-Length: 2", b"Transfer-Encoding: chunked")[:-2] + b"2\r\n{}\r\n0\r\n\r\n",
        (SHAPED % KEY).replace(b"HTTP/1.1", b"HTTP/1.0"),
        (SHAPED % KEY).replace(b"Host: h", b"Connection: close\r\nHost: h"),
        (SHAPED % KEY).replace(b"Host: h", b"Expect: 100-continue\r\nHost: h"),
        (SHAPED % KEY).replace(b"Host: h", b"Host: h\r\nHost: i"),  # ambiguous
        (SHAPED % KEY).replace(b"Host: h", b"Host: " + KEY),  # the key twice: which one is the slot?
        (SHAPED % KEY).replace(KEY, KEY + b" "),  # the key does not end its line
        (SHAPED % KEY).replace(b"Host: h\r\n", b"Host: h\n"),  # a bare LF
        (SHAPED % (b"a/b" + KEY[3:])),  # a key with other bytes is never learnt
        b"POST /api/v5/app/list HTTP/1.1\r\nHost: h\r\nX: "
        + b"x" * 5000
        + b"\r\nAuthorization: Bearer "
        + KEY
        + b"\r\nContent-Length: 0\r\n\r\n",  # too long a head
    ],
)
def test_requests_never_learnt_as_a_shape(data: bytes) -> None:
    assert shape_of(data) is None


def test_a_head_with_a_bare_line_feed_is_never_a_shape() -> None:
    """httptools refuses one; were a head with one handed over, it is still not learnt."""
    crlf = SHAPED % KEY
    head = ParsedRequest(crlf).head
    assert request_shape(crlf, head, RULES) is not None
    assert request_shape(crlf.replace(b"Host: h\r\n", b"Host: h \n"), head, RULES) is None


def test_requests_of_one_shape_share_their_upstream_head_but_not_the_identity() -> None:
    shape = shape_of(SHAPED % KEY)
    assert shape is not None
    first = upstream_head(shape.head, RULES, False, b"1.1.1.1", b"1.1.1.1", b"X-Gateway-Key-Id: k1\r\n")
    other = shape.with_key(b"B" * 32, b"2")
    again = upstream_head(other, RULES, False, b"1.1.1.1", b"1.1.1.1", b"X-Gateway-Key-Id: k2\r\n")
    assert again == first.replace(b"k1", b"k2") and b"Authorization" not in again
    elsewhere = upstream_head(other, RULES, False, b"2.2.2.2", b"2.2.2.2", b"")  # another client: written afresh
    assert b"X-Real-IP: 2.2.2.2" in elsewhere and b"1.1.1.1" not in elsewhere


def test_a_forwarded_key_header_is_never_shared() -> None:
    keeps = HeadRules("Authorization", "Bearer", "X-Plugin-Id", strip_auth=False)
    shape = shape_of(SHAPED % KEY, keeps)
    assert shape is not None
    assert KEY in upstream_head(shape.head, keeps, False, b"1.1.1.1", b"1.1.1.1", b"")
    other = upstream_head(shape.with_key(b"B" * 32, b"2"), keeps, False, b"1.1.1.1", b"1.1.1.1", b"")
    assert b"Authorization: Bearer " + b"B" * 32 in other and KEY not in other


def test_a_key_header_that_parsers_read_for_framing_is_never_a_slot() -> None:
    odd = HeadRules("Connection", "", "X-Plugin-Id")
    data = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keepalive1\r\n\r\n"
    assert ParsedRequest(data, odd).head.presented == b"keepalive1"
    assert shape_of(data, odd) is None


def test_upstream_head_drops_what_the_gateway_sets_and_keeps_order() -> None:
    head = head_of(
        (b"Host", b"api.example"),
        (b"Authorization", b"Bearer abc"),
        (b"X-One", b"1"),
        (b"X_Real_IP", b"6.6.6.6"),
        (b"Forwarded", b"for=x"),
        (b"X-Gateway-Account", b"evil"),
        (b"Connection", b"X-Hop"),
        (b"X-Hop", b"h"),
        (b"Keep-Alive", b"5"),
        (b"X-Two", b"2"),
        (b"Content-Length", b"3"),
        url=b"/a?b=1",
    )
    raw = upstream_head(head, RULES, False, b"10.0.0.9", b"10.0.0.9", b"X-Gateway-Account: acme\r\n")
    assert raw == (
        b"POST /a?b=1 HTTP/1.1\r\nHost: up:9000\r\nX-One: 1\r\nX-Two: 2\r\n"
        b"X-Forwarded-For: 10.0.0.9\r\nX-Real-IP: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
        b"X-Forwarded-Host: api.example\r\nX-Gateway-Account: acme\r\nContent-Length: 3\r\n\r\n"
    )


def test_upstream_head_from_a_trusted_proxy_keeps_its_chain() -> None:
    head = head_of((b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2"), (b"Transfer-Encoding", b"chunked"), trusted=True)
    raw = upstream_head(head, RULES, True, b"10.0.0.1", b"2.2.2.2", b"")
    assert b"X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.1\r\n" in raw
    assert b"X-Real-IP: 2.2.2.2\r\n" in raw and raw.endswith(b"Transfer-Encoding: chunked\r\n\r\n")


CL = [(b"Content-Length", b"5")]
TE = [(b"Transfer-Encoding", b"chunked")]


@pytest.mark.parametrize(
    ("method", "version", "status", "headers", "keep", "framing", "chunked", "close_delimited", "keep_after"),
    [
        (b"GET", b"1.1", 200, CL, True, b"Content-Length: 5\r\n", False, False, True),
        (b"GET", b"1.1", 200, TE, True, b"Transfer-Encoding: chunked\r\n", True, False, True),
        (b"GET", b"1.1", 200, CL + TE, True, b"Transfer-Encoding: chunked\r\n", True, False, True),
        (b"GET", b"1.1", 200, [], True, b"Transfer-Encoding: chunked\r\n", True, True, True),
        (b"GET", b"1.0", 200, [], True, b"Connection: close\r\n", False, True, False),
        (b"GET", b"1.0", 200, TE, True, b"Connection: close\r\n", False, False, False),
        (b"GET", b"1.0", 200, CL, True, b"Content-Length: 5\r\nConnection: keep-alive\r\n", False, False, True),
        (b"HEAD", b"1.1", 200, CL, True, b"Content-Length: 5\r\n", False, False, True),
        (b"HEAD", b"1.1", 200, TE, True, b"", False, False, True),
        (b"GET", b"1.1", 204, CL, True, b"", False, False, True),
        (b"GET", b"1.1", 304, CL, True, b"Content-Length: 5\r\n", False, False, True),
        (b"GET", b"1.1", 304, [], True, b"", False, False, True),
        (b"GET", b"1.1", 200, CL, False, b"Content-Length: 5\r\nConnection: close\r\n", False, False, False),
    ],
)
def test_response_framing(method, version, status, headers, keep, framing, chunked, close_delimited, keep_after):
    plan = plan_response(method, version, status, b"", [(b"X-A", b"1"), *headers], keep)
    assert plan.head == status_line(status) + b"X-A: 1\r\n" + framing + b"\r\n"
    assert (plan.chunked, plan.close_delimited, plan.keep_alive) == (chunked, close_delimited, keep_after)


def test_response_drops_hop_by_hop_and_connection_tokens() -> None:
    headers = [
        (b"Connection", b"close, X-Secret"),
        (b"X-Secret", b"s"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Authenticate", b"x"),
        (b"Upgrade", b"h2c"),
        (b"X-Kept", b"k"),
        (b"Content-Length", b"2"),
    ]
    plan = plan_response(b"GET", b"1.1", 200, b"OK", headers, True)
    assert plan.head == b"HTTP/1.1 200 OK\r\nX-Kept: k\r\nContent-Length: 2\r\n\r\n"


class ParsedOnce(Collected):
    """What the upstream connection hands `ResponseShapes.learn`: httptools' reading of one read."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.reason, self.body_size = b"", 0
        self.parser = httptools.HttpResponseParser(self)
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        self.status, self.keep = self.parser.get_status_code(), self.parser.should_keep_alive()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)


def learnt(data: bytes) -> ResponseShapes:
    shapes = ResponseShapes()
    read = ParsedOnce(data)
    shapes.learn(data, read.status, read.reason, read.headers, read.keep, read.body_size)
    return shapes


OK_HEAD = b"HTTP/1.1 200 OK\r\nDate: Fri, 27 Nov 2026 10:00:00 GMT\r\nContent-Length: 5\r\n\r\n"


def test_a_known_response_head_is_read_without_a_parser() -> None:
    shapes = learnt(OK_HEAD + b"hello")
    shape, body = shapes.whole(OK_HEAD + b"world") or (None, b"")
    assert shape is not None and body == b"world"
    assert (shape.status, shape.reason, shape.length, shape.keep_alive) == (200, b"OK", 5, True)
    assert shape.headers == ((b"Date", b"Fri, 27 Nov 2026 10:00:00 GMT"), (b"Content-Length", b"5"))
    assert shapes.whole(OK_HEAD + b"hell") is None  # not all of the body: the parser reads it
    assert shapes.whole(OK_HEAD + b"hello" + OK_HEAD + b"again") is None  # two answers in one read
    assert shapes.whole(OK_HEAD.replace(b"10:00:00", b"10:00:01") + b"hello") is None  # another head


def test_a_known_head_plans_the_client_head_as_the_parser_path_does() -> None:
    answer = OK_HEAD.replace(b"Content-Length", b"Connection: close\r\nX-A: 1\r\nContent-Length") + b"hello"
    shape, _ = learnt(answer).whole(answer) or (None, b"")
    assert shape is not None
    for method in (b"GET", b"POST", b"HEAD"):
        for version in (b"1.0", b"1.1"):
            for keep in (True, False):
                plan = shape.plan(method, version, keep)
                expected = plan_response(method, version, 200, b"OK", list(shape.headers), keep)
                assert (plan.head, plan.chunked, plan.keep_alive) == (
                    expected.head,
                    expected.chunked,
                    expected.keep_alive,
                )
    assert len(shape.plans) == 8


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",  # not Content-Length
        b"HTTP/1.1 200 OK\r\n\r\nhello",  # ends when the upstream closes
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        OK_HEAD + b"hello" + OK_HEAD + b"again",  # the parser read two answers
        OK_HEAD + b"hel",  # the parser has not seen the whole body
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * SHAPE_MAX_HEAD + b"\r\nContent-Length: 5\r\n\r\nhello",
    ],
)
def test_response_heads_never_remembered(data: bytes) -> None:
    shapes = learnt(data)
    assert shapes.whole(data) is None and shapes.whole(data[: data.find(b"\r\n\r\n") + 4] + b"hello") is None


def test_a_head_with_a_bare_line_feed_is_never_remembered() -> None:
    """A lenient reader could end such a head elsewhere; `learn` is told a body it cannot place."""
    shapes = ResponseShapes()
    data = b"HTTP/1.1 200 OK\nContent-Length: 5\r\n\r\nhello"
    shapes.learn(data, 200, b"OK", [(b"Content-Length", b"5")], True, 5)
    assert shapes.whole(data) is None


def test_learning_stays_cheap_for_heads_that_never_repeat() -> None:
    shapes = ResponseShapes()
    asked = []
    for n in range(32):
        assert shapes.whole(b"HTTP/1.1 200 OK\r\nX-Request-Id: %d\r\nContent-Length: 0\r\n\r\n" % n) is None
        asked.append(shapes.learning())
    assert asked.count(True) == 4 and asked[0] is True  # the first miss learns, then one in eight


def test_the_gateways_own_lines_end_the_head() -> None:
    plan = plan_response(b"GET", b"1.1", 200, b"OK", [(b"X-A", b"1"), (b"Content-Length", b"2")], True)
    assert plan.head_with(b"") is plan.head
    assert plan.head_with(b"RateLimit-Limit: 5\r\n\r\n") == (
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\nRateLimit-Limit: 5\r\n\r\n"
    )


def test_chunks() -> None:
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("chain", "client"),
    [
        ("1.1.1.1", "1.1.1.1"),
        ("1.1.1.1, 10.0.0.2", "1.1.1.1"),
        ("1.1.1.1, 2.2.2.2, 10.0.0.2", "2.2.2.2"),
        ("10.0.0.3, 10.0.0.2", "10.0.0.3"),
        ("1.1.1.1, garbage, 10.0.0.2", "10.0.0.2"),
        ("garbage", "10.0.0.1"),
        ("::ffff:10.0.0.2, ::1", "::1"),
    ],
)
def test_forwarded_for_walk(chain: str, client: str) -> None:
    assert TrustedProxies(["10.0.0.0/8"]).client("10.0.0.1", chain) == client
