"""A request head as the decision and the upstream need it. Pure: bytes in, facts and bytes out.

`read_head` makes one pass over the client's headers and keeps what later steps ask for;
it refuses framing that two parsers could split differently (`FramingError`) and marks the
head `ambiguous` when the upstream could read its key, method or host another way.
`upstream_head` writes the head the upstream receives.
"""

from __future__ import annotations

from gateway.core.decision import malformed_key
from gateway.core.memo import remember
from gateway.core.routes import RouteMatch
from gateway.wire.ambiguous import METHOD_OVERRIDES, canonical, target_is_ambiguous

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
# Request headers the gateway sets itself (framing, forwarding, identity), compared after
# `canonical` so that `X_Forwarded_For` goes with `X-Forwarded-For`.
REQUEST_DROP = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"forwarded",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-real-ip",
    # client addresses other proxies and CDNs set: an upstream that believes one must not get a forged one
    b"true-client-ip",
    b"cf-connecting-ip",
    b"x-client-ip",
    b"x-cluster-client-ip",
    b"fastly-client-ip",
    b"x-originating-ip",
    b"x-remote-ip",
    b"x-remote-addr",
    b"client-ip",
    # targets and hosts some frameworks route by instead of the request line (IIS, Symfony, Zend)
    b"x-original-url",
    b"x-rewrite-url",
    b"x-host",
}
# Names that may not be spelt with `_` for `-`: a CGI-style server reads `Content_Length` as
# Content-Length while the gateway and most parsers ignore it, so such a request is ambiguous.
# (The key header and every X-Gateway-* and X-Forwarded-* name are checked too.)
TWIN_GUARDED = HOP_BY_HOP | REQUEST_DROP
SET_BY_US = (b"x-gateway-", b"x-forwarded-")  # name prefixes the gateway alone writes upstream
NO_TOKENS: frozenset[bytes] = frozenset()
NAME_MEMO_ENTRIES = 1024
NAME_MEMO_LENGTH = 64

# What a header is to `read_head`, decided once per spelling of its name (see HeadRules.role).
OTHER, KEY, HOST, LENGTH, CODING, CONNECTION, TYPE, ENCODING, PLUGIN, FORWARDED_FOR, UPGRADE = range(11)
EXPECT, OVERRIDE, FORWARDED_PROTO, FORWARDED_HOST, TWIN, APP = range(11, 17)
ROLES_BY_LOWER = {
    b"host": HOST,
    b"content-length": LENGTH,
    b"transfer-encoding": CODING,
    b"connection": CONNECTION,
    b"content-type": TYPE,
    b"content-encoding": ENCODING,
}
LATER_ROLES_BY_LOWER = {  # after the plugin header: a plugin header of such a name wins
    b"x-forwarded-for": FORWARDED_FOR,
    b"upgrade": UPGRADE,
    b"expect": EXPECT,
    b"x-forwarded-proto": FORWARDED_PROTO,
    b"x-forwarded-host": FORWARDED_HOST,
}


class FramingError(Exception):
    """Where the body ends is unclear (CL with TE, differing CLs, a TE other than `chunked`)."""


class HeadRules:
    """What reading and rewriting a head needs to know of the configuration, as bytes, and
    what each spelling of a header name means under it (memoised: clients repeat names)."""

    __slots__ = (
        "app_headers",
        "auth_header",
        "auth_scheme",
        "drop",
        "malformed_key",
        "names",
        "plugin_header",
        "preserve_host",
        "scheme",
        "strip_auth",
        "upstream_host",
    )

    def __init__(
        self,
        auth_header: str,
        auth_scheme: str,
        plugin_header: str,
        strip_auth: bool = True,
        preserve_host: bool = False,
        upstream_host: bytes = b"",
        scheme: bytes = b"http",
        app_headers: frozenset[bytes] = frozenset(),
    ) -> None:
        """`app_headers`: canonical names of headers that may hold an app id (the routes' app
        keys), collected so an app id sent in a second place is seen (wire.verdict)."""
        self.app_headers = app_headers
        self.auth_header = canonical(auth_header.lower().encode())
        self.auth_scheme = auth_scheme.lower().encode()
        self.plugin_header = canonical(plugin_header.lower().encode())
        self.strip_auth = strip_auth
        self.preserve_host = preserve_host
        self.upstream_host = upstream_host
        self.scheme = scheme
        self.malformed_key = malformed_key(auth_header, auth_scheme)
        # canonical names never forwarded (the key header too, when it is stripped)
        self.drop = REQUEST_DROP | {self.auth_header} if strip_auth else REQUEST_DROP
        self.names: dict[bytes, tuple[bytes, int]] = {}  # name as sent -> (canonical, role)

    def role(self, name: bytes) -> tuple[bytes, int]:
        """A header name's canonical spelling and its role; short names are memoised."""
        found = self.names.get(name)
        if found is None:
            lower = name.lower()
            canon = canonical(lower)
            if canon != lower and (canon in TWIN_GUARDED or canon == self.auth_header or canon.startswith(SET_BY_US)):
                role = TWIN
            elif canon == self.auth_header:
                role = KEY
            elif lower in ROLES_BY_LOWER:
                role = ROLES_BY_LOWER[lower]
            elif canon == self.plugin_header:
                role = PLUGIN
            elif lower in LATER_ROLES_BY_LOWER:
                role = LATER_ROLES_BY_LOWER[lower]
            elif canon in METHOD_OVERRIDES:
                role = OVERRIDE
            elif canon in self.app_headers:
                role = APP
            else:
                role = OTHER
            found = (canon, role)
            if len(name) <= NAME_MEMO_LENGTH:
                remember(self.names, name, found, NAME_MEMO_ENTRIES)
        return found


class RequestHead:
    """The facts of one request head; `names` holds each header's canonical name."""

    __slots__ = (
        "ambiguous",
        "app_headers",
        "chunked",
        "connection_tokens",
        "content_encoded",
        "content_length",
        "content_types",
        "expect_continue",
        "forwarded_for",
        "forwarded_host",
        "forwarded_proto",
        "headers",
        "host",
        "keep_alive",
        "key_sent",
        "method",
        "names",
        "plugin",
        "presented",
        "shape",
        "upgrade",
        "url",
        "version",
    )

    def __init__(self, method: bytes, url: bytes, version: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.method = method
        self.url = url
        self.version = version
        self.headers = headers
        self.names: list[bytes] = []
        self.keep_alive = True
        self.ambiguous = target_is_ambiguous(url)
        self.presented = b""
        self.key_sent = False
        self.plugin = False
        self.host = b""
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.upgrade = False
        self.connection_tokens: frozenset[bytes] | set[bytes] = NO_TOKENS
        self.content_types: tuple[bytes, ...] = ()
        self.content_encoded = False
        self.forwarded_for: tuple[bytes, ...] = ()
        self.forwarded_proto = b""
        self.forwarded_host = b""
        self.app_headers: tuple[tuple[bytes, bytes], ...] = ()  # (canonical name, value) of app-id headers
        self.shape: RequestShape | None = None  # the shape it was read by, when it was (its memos)

    def copy(self, headers: list[tuple[bytes, bytes]], presented: bytes) -> RequestHead:
        """The same facts for the same request with another key (see RequestShape)."""
        head = RequestHead.__new__(RequestHead)
        head.method, head.url, head.version, head.headers = self.method, self.url, self.version, headers
        head.names, head.keep_alive, head.ambiguous = self.names, self.keep_alive, self.ambiguous
        head.presented, head.key_sent, head.plugin, head.host = presented, self.key_sent, self.plugin, self.host
        head.content_length, head.chunked = self.content_length, self.chunked
        head.expect_continue, head.upgrade = self.expect_continue, self.upgrade
        head.connection_tokens, head.content_types = self.connection_tokens, self.content_types
        head.content_encoded, head.forwarded_for = self.content_encoded, self.forwarded_for
        head.forwarded_proto, head.forwarded_host = self.forwarded_proto, self.forwarded_host
        head.app_headers, head.shape = self.app_headers, self.shape
        return head

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def path(self) -> bytes:
        return self.url.partition(b"?")[0]

    def values(self, name: bytes) -> list[bytes]:
        """Every value of a header, by canonical name (`_` and `-` alike)."""
        return [value for (_, value), canon in zip(self.headers, self.names, strict=True) if canon == name]


def tokens(value: bytes) -> set[bytes]:
    """The lower-cased tokens of a comma-separated header such as Connection."""
    return {token.strip().lower() for token in value.split(b",")}


def presented_key(value: bytes, scheme: bytes) -> bytes:
    """The key in a key header's value: after the scheme word when one is configured."""
    if not scheme:
        return value
    given, _, rest = value.partition(b" ")
    if given.lower() != scheme:
        return b""
    return rest.strip()


def read_head(
    method: bytes,
    url: bytes,
    version: str,
    headers: list[tuple[bytes, bytes]],
    keep_alive: bool,
    rules: HeadRules,
    trusted: bool,
) -> RequestHead:
    """One pass over the headers. `trusted`: the peer is a proxy whose X-Forwarded-* we believe."""
    head = RequestHead(method, url, b"1.1" if version == "1.1" else version.encode(), headers)
    head.keep_alive = keep_alive
    if method == b"CONNECT":  # a tunnel: never forwarded, whatever its target looks like
        head.ambiguous = True
    names = head.names
    known = rules.names
    lengths: list[bytes] = []
    codings = []
    key_headers = hosts = 0
    for name, value in headers:
        canon, role = known.get(name) or rules.role(name)
        names.append(canon)
        if not role:
            continue
        if role == KEY:
            key_headers += 1
            stripped = value.strip()
            head.key_sent = bool(stripped)
            head.presented = presented_key(stripped, rules.auth_scheme)
        elif role == HOST:
            hosts += 1
            head.host = value
        elif role == LENGTH:
            lengths.append(value.strip())
        elif role == TYPE:
            head.content_types = (*head.content_types, value)
        elif role == CODING:
            codings.append(value.strip().lower())
        elif role == CONNECTION:
            head.connection_tokens = head.connection_tokens | tokens(value)
        elif role == ENCODING:
            head.content_encoded = True
        elif role == PLUGIN:
            head.plugin = True  # present, even empty
        elif role == FORWARDED_FOR:
            head.forwarded_for = (*head.forwarded_for, value)
        elif role == UPGRADE:
            head.upgrade = True
        elif role == EXPECT:
            if value.strip().lower() != b"100-continue":
                raise FramingError
            head.expect_continue = version == "1.1"
        elif role == OVERRIDE:
            if value.strip().upper() != method:
                head.ambiguous = True
        elif role == TWIN:
            head.ambiguous = True
        elif role == APP:
            head.app_headers = (*head.app_headers, (canon, value))
        elif trusted and role == FORWARDED_PROTO:
            head.forwarded_proto = value
        elif trusted and role == FORWARDED_HOST:
            head.forwarded_host = value
    if key_headers > 1 or hosts > 1:
        head.ambiguous = True
    if codings:
        if lengths or codings != [b"chunked"] or version != "1.1":
            raise FramingError
        head.chunked = True
    elif lengths:
        text = lengths[0]
        if lengths.count(text) != len(lengths) or not text.isdigit():
            raise FramingError
        head.content_length = int(text)
    return head


def upstream_head(
    head: RequestHead, rules: HeadRules, trusted: bool, peer: bytes, client: bytes, identity: bytes
) -> bytes:
    """The head the upstream receives: the client's end-to-end headers in order, minus what
    the gateway sets itself, then forwarding and identity headers and the framing.

    `trusted`: the peer's X-Forwarded-For chain is kept (the peer appended to it); `client`:
    the client IP the decision used; `identity`: the X-Gateway-* lines of the key. All but the
    identity is kept by the head's shape when the head holds no key (the key header is
    stripped), so the requests of one shape (see RequestShape), which share every other fact,
    write it once.
    """
    shape = head.shape
    if shape is not None:
        kept = shape.upstream
        if kept is not None and kept[0] == (peer, client, trusted, rules.upstream_host):
            return kept[1] + identity + (kept[3] if head.content_length == kept[2] else framing_of(head))
    host = head.host
    drop = rules.drop
    dropped = head.connection_tokens
    lines = [
        b"%s %s HTTP/1.1\r\nHost: %s\r\n"
        % (head.method, head.url, host if rules.preserve_host and host else rules.upstream_host)
    ]
    lines += [
        b"%s: %s\r\n" % (name, value)
        for (name, value), canon in zip(head.headers, head.names, strict=True)
        if not (canon in drop or canon.startswith(SET_BY_US) or canon in dropped)
    ]
    chain = b", ".join(head.forwarded_for) if trusted else b""
    lines.append(
        b"X-Forwarded-For: %s\r\nX-Real-IP: %s\r\nX-Forwarded-Proto: %s\r\n"
        % (chain + b", " + peer if chain else peer, client, head.forwarded_proto or rules.scheme)
    )
    if head.forwarded_host or host:
        lines.append(b"X-Forwarded-Host: %s\r\n" % (head.forwarded_host or host))
    forwarded, framing = b"".join(lines), framing_of(head)
    if shape is not None and rules.strip_auth:
        shape.upstream = ((peer, client, trusted, rules.upstream_host), forwarded, head.content_length, framing)
    return forwarded + identity + framing


def framing_of(head: RequestHead) -> bytes:
    """The upstream head's last lines: how its body is framed."""
    if head.chunked:
        return b"Transfer-Encoding: chunked\r\n\r\n"
    if head.content_length is not None:
        return b"Content-Length: %d\r\n\r\n" % head.content_length
    return b"\r\n"


LEARN_EVERY = 8  # a peer whose messages never repeat their shape pays for learning on one miss in 8


def whole_head(data: bytes, limit: int, body: int) -> bytes | None:
    """The head `data` starts with (through its blank line) when it is at most `limit` bytes,
    `body` bytes follow it to the end of `data`, and every line ends in CRLF: a bare LF could end
    a line elsewhere for a lenient reader, so such a head is never recognised by its bytes."""
    end = data.find(b"\r\n\r\n") + 4
    if end < 4 or end > limit or end + body != len(data):
        return None
    head = data[:end]
    return head if head.count(b"\n") == head.count(b"\r\n") else None


# Bytes a key may hold for a head to be recognised by its shape: letters, digits, `_` and `-`
# are ordinary bytes of a header value to every HTTP parser (no space, comma, quote or CR/LF).
KEY_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
SHAPE_MAX_HEAD = 4096  # bytes of a request head beyond which it is never remembered
# Headers whose values HTTP parsers read for framing or the connection: never the key's slot.
PARSER_READ = frozenset({b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"proxy-connection"})


class RequestShape:
    """A request head as the parser read it once, with its variable parts cut out: the key
    (KEY_BYTES only) and, for a request with a body, its Content-Length digits (as many as
    before). A read that is the same fixed bytes around such slots, then exactly that many body
    bytes, is the same request with another key and body: every byte a parser could read
    differently is the same."""

    __slots__ = (
        "digits_end",
        "digits_start",
        "first",
        "head",
        "head_length",
        "key_end",
        "key_header",
        "key_start",
        "length_header",
        "route",
        "route_known",
        "second",
        "second_at",
        "third",
        "third_at",
        "upstream",
    )

    def __init__(
        self,
        head: RequestHead,
        raw: bytes,
        key: tuple[int, int],
        digits: tuple[int, int] | None,
        key_header: int,
        length_header: int | None,
    ) -> None:
        """`raw`: the head's bytes; `key`, `digits`: where the slots are in it (start, end);
        `key_header`, `length_header`: the headers' indexes in head.headers."""
        self.head = head.copy(head.headers, head.presented)
        self.head.shape = self
        # memos the requests of this shape share: they depend only on the fixed bytes
        self.route: RouteMatch | None = None  # the route of its method and path, once `route_known`
        self.route_known = False
        # (peer, client IP, trusted, upstream Host) -> the upstream head without identity and framing
        self.upstream: tuple[tuple[bytes, bytes, bool, bytes], bytes, int | None, bytes] | None = None
        self.key_header = key_header
        self.length_header = length_header
        self.head_length = len(raw)
        self.key_start, self.key_end = key
        self.digits_start, self.digits_end = digits or (0, 0)
        edges = [0, *(edge for slot in sorted([key, *([digits] if digits else [])]) for edge in slot), len(raw)]
        fixed = [(edges[i], raw[edges[i] : edges[i + 1]]) for i in range(0, len(edges), 2)]  # around the slots
        self.first = fixed[0][1]
        self.second_at, self.second = fixed[1]
        third: tuple[int, bytes | None] = fixed[2] if len(fixed) > 2 else (0, None)
        self.third_at, self.third = third

    def read(self, data: bytes) -> tuple[bytes, bytes] | None:
        """(key, Content-Length digits or b"") if `data` is one whole request of this shape."""
        if not (data.startswith(self.first) and data.startswith(self.second, self.second_at)):
            return None
        if self.third is not None and not data.startswith(self.third, self.third_at):
            return None
        key = data[self.key_start : self.key_end]
        if key.translate(None, KEY_BYTES):
            return None
        if not self.digits_end:
            return (key, b"") if len(data) == self.head_length else None
        digits = data[self.digits_start : self.digits_end]
        if not digits.isdigit() or len(data) != self.head_length + int(digits):  # isdigit: ASCII only
            return None
        return key, digits

    def with_key(self, key: bytes, digits: bytes) -> RequestHead:
        """The head of a request of this shape that presented `key`, with a body of `digits` bytes."""
        headers = self.head.headers.copy()
        name, value = headers[self.key_header]
        headers[self.key_header] = (name, value[: -len(key)] + key)
        head = self.head.copy(headers, key)
        at = self.length_header
        if at is not None and headers[at][1] != digits:
            headers[at] = (headers[at][0], digits)
            head.content_length = int(digits)
        return head


def request_shape(data: bytes, head: RequestHead, rules: HeadRules) -> RequestShape | None:
    """The shape of `data`, which the parser read, from its start state, as exactly the one
    request `head` (with a Content-Length body or none): None unless the head is plain enough
    to be recognised by its bytes."""
    key = head.presented
    raw = whole_head(data, SHAPE_MAX_HEAD, head.content_length or 0)
    if (
        raw is None
        or not key
        or head.ambiguous
        or head.chunked
        or head.upgrade
        or head.expect_continue
        or not head.keep_alive
        or head.version != b"1.1"
        or key.translate(None, KEY_BYTES)
        or raw.count(key) != 1
    ):
        return None
    start = raw.find(key)
    if raw[start - 1 : start] != b" " or raw[start + len(key) : start + len(key) + 2] != b"\r\n":
        return None  # the key must end its line, after the scheme's space
    keys = [i for i, canon in enumerate(head.names) if canon == rules.auth_header]
    if len(keys) != 1 or head.names[keys[0]] in PARSER_READ or not head.headers[keys[0]][1].endswith(key):
        return None
    # the Content-Length the parser framed the body by: its exact name, not a `_` twin
    lengths = [i for i, (name, _) in enumerate(head.headers) if name.lower() == b"content-length"]
    if not lengths:
        if head.content_length is not None:
            return None
        return RequestShape(head, raw, (start, start + len(key)), None, keys[0], None)
    name, digits = head.headers[lengths[0]]
    line = b"\r\n" + name + b": " + digits + b"\r\n"  # exactly one space, digits only
    if len(lengths) != 1 or not digits.isdigit() or raw.count(line) != 1 or head.content_length != int(digits):
        return None
    at = raw.find(line) + len(line) - 2 - len(digits)
    return RequestShape(head, raw, (start, start + len(key)), (at, at + len(digits)), keys[0], lengths[0])


class RequestShapes:
    """One client connection's learnt request shape (mirrors wire.response.ResponseShapes):
    a read that `shape.read` accepts is one whole request of it, read without the parser;
    `missed` and `learn` let the parser's reading of a read teach the shape, on one miss in
    LEARN_EVERY. (The connection calls `shape.read` itself: one call less per request.)"""

    __slots__ = ("chunk", "misses", "shape")

    def __init__(self) -> None:
        self.shape: RequestShape | None = None
        self.chunk: bytes | None = None  # the read being parsed, when it began between requests
        self.misses = 0

    def missed(self, data: bytes) -> None:
        """`data`, read between requests, was not of the shape: the parser reads it."""
        self.misses += 1
        if self.misses % LEARN_EVERY == 1:
            self.chunk = data  # the parser's reading of it may teach the shape

    def learn(self, head: RequestHead, rules: HeadRules) -> None:
        """The parser read `head` (a real key's request) as the whole of the offered read."""
        chunk, self.chunk = self.chunk, None
        if chunk is not None:
            self.shape = request_shape(chunk, head, rules) or self.shape


# The request a proxy asks about on the forward-authorization port: (method, target) header
# pairs, Traefik's ForwardAuth first, then nginx's auth_request (and ingress-nginx).
ASKED_ABOUT = ((b"x-forwarded-method", b"x-forwarded-uri"), (b"x-original-method", b"x-original-uri"))


def asked_about(head: RequestHead) -> RequestHead:
    """The request a trusted proxy's check names in its headers, as a head to decide on (the
    check's own head when it names none). A pair sent twice, or two pairs naming different
    requests, is ambiguous: which one the proxy acts on is not ours to guess."""
    named = set()
    for method_name, target_name in ASKED_ABOUT:
        methods, targets = head.values(method_name), head.values(target_name)
        if methods or targets:
            if len(methods) != 1 or len(targets) != 1:
                named.add((b"", b""))  # half a pair, or a repeated one
            else:
                named.add((methods[0].strip().upper(), targets[0].strip()))
    if not named:
        return head
    ((method, url), *others) = named
    asked = head.copy(head.headers, head.presented)
    asked.method, asked.url, asked.shape = method, url, None
    asked.ambiguous = bool(others) or not method or head.ambiguous or target_is_ambiguous(url) or method == b"CONNECT"
    return asked
