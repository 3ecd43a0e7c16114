"""Requests that a parser behind the gateway could read differently from the gateway. Pure.

An authorization decision is only as good as the agreement between the gateway and the
upstream on what the request says. Each function here reads one part of a request the
strictest way, and answers `AMBIGUOUS` where two common parsers would disagree, so the
request is refused instead of authorized on one reading and executed on another.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from typing import Final
from urllib.parse import unquote_plus, unquote_to_bytes

from gateway.core.memo import remember


class _Ambiguous:
    def __repr__(self) -> str:
        return "AMBIGUOUS"


AMBIGUOUS: Final = _Ambiguous()

# Replayed on a fresh upstream connection when the pooled one closed before answering.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
METHOD_OVERRIDES = frozenset({b"x-http-method-override", b"x-http-method", b"x-method-override"})
JSON_TYPES = frozenset({b"application/json"})
# What a server may trim around a path segment: C0 controls, space, DEL and Unicode spaces.
WHITESPACE = "".join(chr(c) for c in range(0x21)) + "\x7f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
WHITESPACE += "\u2005\u2006\u2007\u2008\u2009\u200a\u200b\u2028\u2029\u202f\u205f\u3000\ufeff"


def canonical(lower: bytes) -> bytes:
    """A lower-cased header name with `_` read as `-`: CGI-style servers map both to one variable."""
    return lower.replace(b"_", b"-") if b"_" in lower else lower


def target_is_ambiguous(url: bytes) -> bool:
    """Anything but a plain origin-form target: absolute URLs, `*`, `//host`, a `#` fragment,
    a `;` path parameter (servlet containers strip it, so `..;` acts as `..`), an encoded
    `%` (an upstream that decodes twice would see another path), or a segment some server
    would resolve as a dot segment (see `dot_segment`)."""
    if not url.startswith(b"/") or url.startswith(b"//") or b"#" in url:
        return True
    path = url.partition(b"?")[0]
    if b";" in path:
        return True
    if b"%" in path:
        lowered = path.lower()
        if b"%3b" in lowered or b"%25" in lowered:
            return True
    elif b"." not in path and path.isascii():
        return False  # the common case: nothing below could match
    return any(dot_segment(segment) for segment in path.split(b"/"))


def dot_segment(segment: bytes) -> bool:
    """Whether a server could read the segment as `.` or `..`: after percent-decoding, then
    trimming whitespace (`..%20`, `..%09`) or NFKC normalisation (fullwidth full stops, U+FF0E)."""
    if b"%" in segment:
        segment = unquote_to_bytes(segment)
    if segment in (b".", b".."):
        return True
    if len(segment) > 64:
        return False  # no spelling of a dot segment is this long
    text = unicodedata.normalize("NFKC", segment.decode("utf-8", "replace"))
    return text.strip(WHITESPACE) in (".", "..")


def query_app_id(query: str, name: str) -> str | _Ambiguous | None:
    """The one value of parameter `name`, its case ignored (ASP.NET and others match names so);
    AMBIGUOUS if it appears twice (first-wins and last-wins parsers would disagree) or if `;`
    could split it (older parsers treat `;` like `&`)."""
    found: list[str] = []
    wanted = name.casefold()
    for part in query.split("&"):
        for piece in part.split(";"):
            key, _, value = piece.partition("=")
            if unquote_plus(key).casefold() == wanted:
                if ";" in part:
                    return AMBIGUOUS
                found.append(value)
    if len(found) > 1:
        return AMBIGUOUS
    return unquote_plus(found[0]) if found else None


def header_app_id(values: list[bytes]) -> str | _Ambiguous | None:
    """The app id from the header occurrences (dash and underscore spellings together)."""
    if not values:
        return None
    if len(values) > 1 or b"," in values[0]:  # a list-valued reading would see several ids
        return AMBIGUOUS
    return values[0].strip().decode("latin-1")


_media_types: dict[bytes, bool] = {}  # Content-Type value -> JSON or not, for short values


def is_json_media_type(content_types: Sequence[bytes]) -> bool:
    """No Content-Type, or exactly one naming JSON (`application/json`, `*/*+json`), with
    at most a UTF-8 charset: an upstream that honours the header must parse what we parsed."""
    if not content_types:
        return True
    if len(content_types) > 1:
        return False
    value = content_types[0]
    known = _media_types.get(value)
    if known is None:
        known = _is_json(value)
        if len(value) <= 64:
            remember(_media_types, value, known, 256)
    return known


def _is_json(value: bytes) -> bool:
    media, *params = value.split(b";")
    media = media.strip().lower()
    if media not in JSON_TYPES and not (media.endswith(b"+json") and media.count(b"/") == 1):
        return False
    for param in params:
        name, _, value = param.partition(b"=")
        if name.strip().lower() == b"charset" and value.strip().strip(b'"').lower() not in (b"utf-8", b"utf8"):
            return False
    return True


class _Members(list[tuple[str, object]]):
    """The members of a JSON object in document order (a top-level array stays a plain list)."""


# The C scanner of a decoder built once (json.loads(..., hook) builds a decoder per call), called
# directly: JSONDecoder.decode wraps it in Python and two regex matches for the whitespace.
_SCAN = json.JSONDecoder(object_pairs_hook=_Members).scan_once  # type: ignore[attr-defined]
JSON_SPACE = " \t\n\r"  # what JSON allows around a document


def body_app_id(body: bytes, name: str) -> str | _Ambiguous | None:
    """The string member `name` of a JSON object body, or None when there is none.

    The body is decoded as strict UTF-8 (no BOM, no UTF-16 guessing). Members whose names
    are equal after unescaping, or equal but for case (Go's decoder matches names that way),
    are AMBIGUOUS: first-wins and last-wins parsers would pick different values.
    """
    try:
        text = body.decode("utf-8").strip(JSON_SPACE)
        document, end = _SCAN(text, 0)
    except (ValueError, RecursionError, StopIteration):  # StopIteration: no document at all
        return None
    if end != len(text) or not isinstance(document, _Members):  # trailing data: not one document
        return None
    wanted = name.casefold()
    found: object = None
    seen = False
    for key, value in document:
        if key.casefold() == wanted:
            if seen:
                return AMBIGUOUS
            found, seen = value, True
    return found if isinstance(found, str) else None
