"""The verdict on a request: the head's facts put to the core decision, in the contract's
order (ambiguity first, then the key and scope checks, then what reading the body needs).
Pure: the data path looks up the route and the key, and acts on what this returns.
"""

from __future__ import annotations

from gateway.core import decision as decide
from gateway.core.decision import Decision, Deny, KeySnapshot
from gateway.core.routes import RouteMatch
from gateway.wire.ambiguous import AMBIGUOUS, body_app_id, header_app_id, is_json_media_type, query_app_id
from gateway.wire.request import RequestHead

# What to do (a Deny, ALLOW or NEED_BODY) and the app id the decision read (for the log).
Verdict = tuple[Decision, str | None]
AMBIGUOUS_VERDICT: Verdict = (decide.AMBIGUOUS_REQUEST, None)


def app_id_in_head(head: RequestHead, route: RouteMatch) -> object:
    """The app id where the route says the head holds it: a str, None, or AMBIGUOUS."""
    if route.app_source == "path":
        return route.app_id
    if route.app_source == "query":
        return _in_query(head, route.app_key or "")
    if route.app_source == "header":
        return _in_headers(head, route.app_key or "")
    return None


def _in_query(head: RequestHead, name: str) -> object:
    query = head.url.partition(b"?")[2]
    if not query or (b"%" not in query and name.lower().encode() not in query.lower()):
        return None  # (the common case, without parsing)
    return query_app_id(query.decode("latin-1"), name)


def _in_headers(head: RequestHead, name: str) -> object:
    if not head.app_headers:
        return None
    wanted = name.lower().replace("_", "-").encode()
    return header_app_id([value for canon, value in head.app_headers if canon == wanted])


def second_places(head: RequestHead, route: RouteMatch) -> object:
    """The app id a backend could read instead of the route's: the query parameter or the
    header named like the route's app key, where the route does not read it. A str, None
    (no second place holds one) or AMBIGUOUS (they disagree, or one repeats)."""
    name = route.app_key or ""
    found = []
    for source, read in (("query", _in_query), ("header", _in_headers)):
        if route.app_source != source:
            value = read(head, name)
            if value is AMBIGUOUS:
                return AMBIGUOUS
            if value is not None:
                found.append(value)
    if not found:
        return None
    return found[0] if all(value == found[0] for value in found) else AMBIGUOUS


def elsewhere_differs(head: RequestHead, route: RouteMatch, app_id: object) -> bool:
    """Whether a second place (`second_places`) holds another app id than `app_id`, the one
    read where the route says; only a request with a query or an app-id header can."""
    if not (head.app_headers or b"?" in head.url):
        return False
    second = second_places(head, route)
    return second is AMBIGUOUS or (second is not None and app_id != second)


def judge_head(
    head: RequestHead,
    route: RouteMatch | None,
    key: KeySnapshot | None,
    ip: int | None,
    unknown_allowed: bool,
    max_inspect: int,
    malformed_key: Deny = decide.INVALID_KEY,
    now: float = 0.0,
) -> Verdict:
    """Decide what the head alone can decide. NEED_BODY: read at most `max_inspect` bytes
    of the body, then `judge_body`."""
    if head.ambiguous:
        return AMBIGUOUS_VERDICT
    app_id = None
    if route is not None and route.app_source is not None:
        app_id = app_id_in_head(head, route)
        if app_id is AMBIGUOUS:
            return AMBIGUOUS_VERDICT
        if route.app_source != "body" and elsewhere_differs(head, route, app_id):
            return AMBIGUOUS_VERDICT
    found = app_id if isinstance(app_id, str) else None
    decision = decide.authorize(key, head.key_sent, ip, head.plugin, route, found, unknown_allowed, now)
    if decision is decide.INVALID_KEY and not head.presented:  # a key header without the scheme
        decision = malformed_key
    elif decision is decide.NEED_BODY:
        if head.content_length is not None and head.content_length > max_inspect:
            decision = decide.BODY_TOO_LARGE
        elif head.has_body and (head.content_encoded or not is_json_media_type(head.content_types)):
            decision = decide.UNSUPPORTED_MEDIA_TYPE
    return decision, found


def judge_body(body: bytes, route: RouteMatch, key: KeySnapshot, head: RequestHead) -> Verdict:
    """The app check once the whole (inspected) body is in hand."""
    app_id = body_app_id(body, route.app_key or "")
    if app_id is AMBIGUOUS:
        return AMBIGUOUS_VERDICT
    if elsewhere_differs(head, route, app_id):
        return AMBIGUOUS_VERDICT
    found = app_id if isinstance(app_id, str) else None
    return decide.authorize_app(key, found), found
