"""The pure ambiguity rules, as tables: each row one reading two parsers could disagree on."""

from __future__ import annotations

import pytest

from gateway.wire.ambiguous import (
    AMBIGUOUS,
    body_app_id,
    canonical,
    header_app_id,
    is_json_media_type,
    query_app_id,
    target_is_ambiguous,
)


@pytest.mark.parametrize(
    ("target", "ambiguous"),
    [
        (b"/api/v5/app/list", False),
        (b"/api/v5/app/list?a=1;b=2", False),
        (b"/api/v5/app/list?x=%3B%23%25", False),
        (b"/api/v5/app/l%69st", False),
        (b"/", False),
        (b"/api/v5/app/list;", True),
        (b"/api/v5/app;a=b/list", True),
        (b"/..;/x", True),
        (b"/a%3bb", True),
        (b"/a%3Bb", True),
        (b"/a%25b", True),
        (b"/a%252e", True),
        (b"/a#b", True),
        (b"/a?b#c", True),
        (b"*", True),
        (b"http://h/a", True),
        (b"h:443", True),
        (b"//h/a", True),
        (b"", True),
        (b"/a/../b", True),
        (b"/a/./b", True),
        (b"/a/..", True),
        (b"/a/%2E%2e/b", True),
        (b"/a/..%20/b", True),
        (b"/a/%09../b", True),
        (b"/a/..%0d%0a/b", True),
        (b"/a/%ef%bc%8e%ef%bc%8e/b", True),  # fullwidth full stops: NFKC makes them `..`
        (b"/a/%e2%80%a4%e2%80%a4/b", True),  # one dot leaders
        (b"/a/..%c2%a0/b", True),  # a no-break space
        (b"/a/...", False),
        (b"/a/.json", False),
        (b"/a/x.y", False),
        (b"/a/.%e2%80%8b./b", False),  # a zero-width space between the dots: not trimmed
        (b"/a/%2e%2e%2e/b", False),
        (b"/a?x=..", False),  # the query is not a path
    ],
)
def test_targets(target: bytes, ambiguous: bool) -> None:
    assert target_is_ambiguous(target) is ambiguous


@pytest.mark.parametrize(
    ("name", "expected"),
    [(b"x-real-ip", b"x-real-ip"), (b"x_real_ip", b"x-real-ip"), (b"authorization", b"authorization")],
)
def test_header_names_read_underscore_as_dash(name: bytes, expected: bytes) -> None:
    assert canonical(name) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("app_id=A1", "A1"),
        ("x=1&app_id=A1&y=2", "A1"),
        ("app_id=A%31", "A1"),
        ("app_id=A+1", "A 1"),
        ("app%5Fid=A1", "A1"),
        ("app_id=", ""),
        ("", None),
        ("app_idx=A1", None),
        ("app_id=A1&app_id=A2", AMBIGUOUS),
        ("app_id=A1&app_id=A1", AMBIGUOUS),
        ("app_id=A1&app%5fid=A2", AMBIGUOUS),
        ("app_id=A1;app_id=A2", AMBIGUOUS),
        ("app_id=A1;x=1", AMBIGUOUS),
        ("x=1;app_id=A1", AMBIGUOUS),
        ("x=1;y=2&app_id=A1", "A1"),
    ],
)
def test_query_app_ids(query: str, expected: object) -> None:
    assert query_app_id(query, "app_id") == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([b" A1 "], "A1"), ([b"A1", b"A1"], AMBIGUOUS), ([b"A1", b"A2"], AMBIGUOUS), ([b"A1,A2"], AMBIGUOUS)],
)
def test_header_app_ids(values: list[bytes], expected: object) -> None:
    assert header_app_id(values) == expected


@pytest.mark.parametrize(
    ("types", "json"),
    [
        ([], True),
        ([b"application/json"], True),
        ([b"APPLICATION/JSON ; charset=UTF-8"], True),
        ([b'application/json; charset="utf-8"'], True),
        ([b"application/json; charset=utf8; foo=bar"], True),
        ([b"application/vnd.api+json"], True),
        ([b"text/x+json"], True),
        ([b"application/json; charset=utf-16"], False),
        ([b"application/json; charset=latin1"], False),
        ([b"application/jsonx"], False),
        ([b"application/x-www-form-urlencoded"], False),
        ([b"text/plain"], False),
        ([b"+json"], False),
        ([b"a/b/c+json"], False),
        ([b""], False),
        ([b"application/json", b"application/json"], False),
    ],
)
def test_json_media_types(types: list[bytes], json: bool) -> None:
    assert is_json_media_type(types) is json


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"app_id": "A1"}', "A1"),
        (b' \n{"app_id": "A1", "x": {"app_id": "A2"}}\n', "A1"),
        (b'{"app_id": "\\u0041\\u0031"}', "A1"),
        (b'{"app_id": "\xe6\x95\xb0"}', "\u6570"),
        (b'{"x": 1}', None),
        (b'{"app_id": 1}', None),
        (b'{"app_id": null}', None),
        (b'{"app_id": ["A1"]}', None),
        (b'{"app_id": {"id": "A1"}}', None),
        (b'[{"app_id": "A1"}]', None),
        (b'[["app_id", "A1"]]', None),
        (b'"app_id"', None),
        (b"", None),
        (b"{", None),
        (b'{"app_id": "A1"}x', None),
        (b'{"app_id": "A1"}{"app_id": "A2"}', None),  # two documents: a streaming reader takes either
        (b'{"app_id": "A1"} \t\r\n', "A1"),
        (b'{"app_id": "A1"}\x0c', None),  # form feed is not JSON whitespace
        (b" \t\r\n", None),
        (b'{"app_id": NaN}', None),
        (b"\xef\xbb\xbf" + b'{"app_id": "A1"}', None),
        ('{"app_id": "A1"}'.encode("utf-16"), None),
        (b'{"app_id": "\xff"}', None),
        (b"[" * 100_000, None),
        (b'{"app_id": "A1", "app_id": "A1"}', AMBIGUOUS),
        (b'{"app_id": "A1", "app_id": "A2"}', AMBIGUOUS),
        (b'{"app_id": "A1", "app\\u005Fid": "A2"}', AMBIGUOUS),
        (b'{"app_id": "A1", "APP_ID": "A2"}', AMBIGUOUS),
        (b'{"app_id": "A1", "App_Id": 5}', AMBIGUOUS),
    ],
)
def test_body_app_ids(body: bytes, expected: object) -> None:
    assert body_app_id(body, "app_id") == expected
