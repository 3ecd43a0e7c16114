"""The seams between the parts of the data path: what each part may ask of the one driving it.

    listener -> connection -> exchange -> relay -> upstream

Each part is handed the one above it typed as a Protocol from here, never as its class, so
the modules import strictly downwards and each part's reach into another is written down in
one place (as uvicorn hands its request cycle a transport, flow control and callbacks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from gateway.core.decision import Deny, KeySnapshot
from gateway.wire.request import RequestHead
from gateway.wire.response import ResponseShape


class Client(Protocol):
    """What an exchange asks of its client connection."""

    server: Any  # the process's `proxy.shared.Shared` (typed loosely: it sits above this module)
    peer: str
    peer_bytes: bytes
    peer_ip: int | None
    peer_trusted: bool

    def write(self, data: bytes) -> None: ...
    def cork(self) -> None: ...
    def uncork(self) -> None: ...
    def pause_reading(self, reason: int) -> None: ...
    def resume_reading(self, reason: int) -> None: ...
    def finished(self, exchange: object) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class Requester(Protocol):
    """What a relay asks of the exchange it forwards for."""

    conn: Client
    head: RequestHead
    key: KeySnapshot | None
    client: str
    request_complete: bool
    response_started: bool
    response_complete: bool
    status: int
    relay: object
    rate_headers: bytes

    @property
    def reusable(self) -> bool: ...
    def body_sent(self, keep: bool) -> list[bytes]: ...
    def answering(self, status: int, keep_alive: bool) -> None: ...
    def delivering(self, size: int) -> None: ...
    def answered(self) -> None: ...
    def refuse(self, deny: Deny) -> None: ...
    def record(self, status: int, reason: str) -> None: ...


class Receiver(Protocol):
    """What an upstream connection asks of the relay it carries."""

    head_only: bool  # the request was HEAD: its answer has no body, whatever its head says

    def receiving(self) -> None: ...
    def received(self) -> None: ...
    def on_response_head(
        self,
        status: int,
        reason: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        upstream_keep_alive: bool,
        shape: ResponseShape | None = None,
    ) -> None: ...
    def on_whole_response(self, shape: ResponseShape, body: bytes) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_complete(self) -> None: ...
    def on_upstream_lost(self) -> None: ...
    def upstream_full(self) -> None: ...
    def upstream_drained(self) -> None: ...
