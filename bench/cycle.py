"""The Python work of one proxied request, with the sockets taken away, and what each step
costs in the middle of it.

    .venv/bin/python bench/cycle.py [--requests 100000] [--rate-limits]

Drives the real `ClientConnection` and `UpstreamConnection` of one process with 1,000 keys
(scoped as bench/run.py's) by calling their `data_received` with bench/run.py's request and an
nginx answer; the transports only collect what is written. No kernel, no event loop, no other
process: the numbers are steadier than bench/run.py's, and they leave out everything the
kernel and uvloop do. Use them to compare two versions of the Python path, never as a result.

Then each pure step (reading the head, the head's verdict, the body's verdict, the upstream
head) is replaced in turn by a memo of its own answers, and the cycle is timed again: the
difference is what that step costs in place. It is larger than the step's cost in a tight
loop of its own (a long path keeps less of it in the CPU's caches), which is why this exists.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import SECRET
from setup_keys import make_keys

from gateway.config import parse_config
from gateway.core import sealing
from gateway.core.routes import compile_routes
from gateway.keyring.index import Keyring, Usage
from gateway.observe.accesslog import AccessLog
from gateway.observe.metrics import Metrics
from gateway.proxy import connection, exchange, relay
from gateway.proxy.connection import ClientConnection
from gateway.proxy.shared import DataPath
from gateway.proxy.upstream import UpstreamConnection

BODY = b'{"app_id":"app7","entry_id":"e1"}'
REQUEST = (
    b"POST /api/v5/app/entry/data/list HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer %s\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
)
ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Fri, 27 Nov 2026 18:31:10 GMT\r\nContent-Type: application/json\r\n"
    b'Content-Length: 41\r\nConnection: keep-alive\r\n\r\n{"code":0,"msg":"ok","data":{"id":"abc"}}'
)


class Collector:
    """A transport that keeps what is written (and forgets it every few thousand requests)."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.written: list[bytes] = []
        self.peer = peer

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Direct:
    """The outbox without the event loop: a write goes to its transport at once."""

    def send(self, transport: Collector, data: bytes) -> None:
        transport.write(data)

    def flush(self) -> None: ...


def build(rate_limits: bool) -> tuple[Callable[[int], None], Callable[[], None]]:
    raw: dict[str, Any] = {"upstream": {"url": "http://127.0.0.1:9000"}}
    if rate_limits:
        raw["rate_limits"] = {"default_per_key": [{"requests": 1_000_000, "per": "second"}]}
    config = parse_config(raw, {})
    box = sealing.SecretBox(SECRET)
    made = make_keys(box, 1000)
    keyring = Keyring(box.raw_digest)
    keyring.replace_all([key for key, _, _ in made])
    access = AccessLog(True)
    shared = DataPath(config, keyring, compile_routes(config.routes), Usage(), Metrics(0), access)
    shared.outbox = shared.pool.outbox = Direct()  # type: ignore[assignment]
    client, to_client = ClientConnection(shared), Collector(("127.0.0.1", 40000))
    client.connection_made(to_client)  # type: ignore[arg-type]
    upstream, to_upstream = UpstreamConnection(shared.pool), Collector(("127.0.0.1", 9000))
    upstream.connection_made(to_upstream)  # type: ignore[arg-type]
    shared.pool.idle.append(upstream)
    requests = [REQUEST % (secret.encode(), len(BODY), BODY) for _, _, secret in made]

    def cycle(i: int) -> None:
        client.data_received(requests[i % len(requests)])
        upstream.data_received(ANSWER)

    def forget() -> None:
        access.pending.clear()
        to_client.written.clear()
        to_upstream.written.clear()

    cycle(0)
    assert to_client.written[-1].startswith(b"HTTP/1.1 200 OK") and b"X-Gateway-Key-Id" in to_upstream.written[-1]
    return cycle, forget


def timed(cycle: Callable[[int], None], forget: Callable[[], None], requests: int, passes: int = 3) -> float:
    """The best of `passes` runs, in microseconds per request."""
    best = float("inf")
    for _ in range(passes):
        gc.collect()
        start = time.perf_counter()
        for i in range(requests):
            cycle(i)
            if i % 4096 == 0:
                forget()
        best = min(best, (time.perf_counter() - start) / requests * 1e6)
    return best


def remembered(module: Any, name: str, key: Callable[..., Any]) -> None:
    """Replace module.name by a memo of its answers, keyed by `key(*args)`."""
    real, memo = getattr(module, name), {}

    def answer(*args: Any) -> Any:
        found = memo.get(key(*args))
        if found is None:
            found = memo[key(*args)] = real(*args)
        return found

    setattr(module, name, answer)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rate-limits", action="store_true", help="every key limited (never reached)")
    args = parser.parse_args()
    cycle, forget = build(args.rate_limits)
    timed(cycle, forget, 5000, 1)  # warm-up: memos, pools
    total = timed(cycle, forget, args.requests)
    print(f"one request, Python only: {total:.2f} us")
    steps = [  # (what, module, function, memo key): replaced one after the other
        ("reading the head", connection, "read_head", lambda *a: a[3][1][1]),  # by the key header
        ("the head's verdict", exchange, "judge_head", lambda head, *a: head.presented),
        ("the body's verdict", exchange, "judge_body", lambda body, *a: body),
        ("the upstream head", relay, "upstream_head", lambda head, *a: head.presented),
    ]
    before = total
    for what, module, name, key in steps:
        remembered(module, name, key)
        after = timed(cycle, forget, args.requests)
        print(f"  {what:<20} {before - after:5.2f} us in place")
        before = after
    print(f"  {'everything else':<20} {before:5.2f} us (parsers, connection, exchange, relay, outbox, log)")


if __name__ == "__main__":
    main()
