"""Fixed HTTP responses of the data path, built once: status lines and JSON error answers."""

from __future__ import annotations

import functools
import http
import json

from gateway.core.decision import Deny

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Protocol-level refusals (not key decisions): same JSON shape, `code` is the status.
BAD_REQUEST = Deny(400, 400, "bad_request", "the request is not valid HTTP/1.1")
HEADERS_TOO_LARGE = Deny(431, 431, "headers_too_large", "the request headers are too large or too many")
REQUEST_TIMEOUT = Deny(408, 408, "request_timeout", "the request was not received in time")
UPGRADE_NOT_SUPPORTED = Deny(501, 501, "upgrade_not_supported", "protocol upgrades are not supported")


@functools.lru_cache(maxsize=256)
def status_line(status: int, reason: bytes = b"") -> bytes:
    """`HTTP/1.1 <status> <reason>\\r\\n`, memoised (bounded: the upstream picks the reason)."""
    if not reason:
        try:
            reason = http.HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


def deny_response(deny: Deny, close: bool, scheme: str = "Bearer", extra: bytes = b"") -> bytes:
    """The whole answer for a refusal: `{"code", "msg", "reason"}` as JSON; `extra` header
    lines (rate-limit numbers) make it one of a kind, so only plain refusals are memoised."""
    if not extra:
        return _plain_refusal(deny, close, scheme)
    head, _, body = _plain_refusal(deny, close, scheme).partition(b"\r\n\r\n")
    return head + b"\r\n" + extra + b"\r\n" + body


@functools.cache
def _plain_refusal(deny: Deny, close: bool, scheme: str) -> bytes:
    body = json.dumps({"code": deny.code, "msg": deny.msg, "reason": deny.reason}).encode()
    head = [
        status_line(deny.status),
        b"Content-Type: application/json\r\n",
        b"Content-Length: %d\r\n" % len(body),
        b"Cache-Control: no-store\r\n",
    ]
    if deny.status == 401:
        head.append(b'WWW-Authenticate: %s realm="api"\r\n' % (scheme or "ApiKey").encode())
    if close:
        head.append(b"Connection: close\r\n")
    return b"".join(head) + b"\r\n" + body
