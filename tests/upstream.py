"""A real aiohttp upstream for the data-path tests: it echoes what it received.

Behaviour is chosen with query parameters: `sleep` (seconds before answering), `size`
(stream that many response bytes), `slow_read` (seconds before reading the body), `status`,
`close_after` (write that many bytes then drop the connection), `chunked=1` (stream without
Content-Length).
"""

from __future__ import annotations

import asyncio
import hashlib
import json

from aiohttp import web


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.peers: set[int] = set()  # source ports the gateway used (one per connection)


RECORDER = web.AppKey("recorder", Recorder)


async def echo(request: web.Request) -> web.StreamResponse:
    recorder = request.app[RECORDER]
    query = request.query
    if "slow_read" in query:  # let the request body back up before reading it
        await asyncio.sleep(float(query["slow_read"]))
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    if request.transport is not None:
        recorder.peers.add(request.transport.get_extra_info("peername")[1])
    seen = {
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_size": size,
        "body_sha256": digest.hexdigest(),
        "body_chunked": request.headers.get("Transfer-Encoding") == "chunked",
    }
    if size <= 4096:
        await request.read()
    recorder.requests.append(seen)
    if "sleep" in query:
        await asyncio.sleep(float(query["sleep"]))
    status = int(query.get("status", "200"))
    if "size" in query or "close_after" in query:
        total = int(query.get("size", "0"))
        response = web.StreamResponse(status=status)
        if "chunked" not in query:
            response.content_length = total
        response.content_type = "application/octet-stream"
        await response.prepare(request)
        block = bytes(range(256)) * 256  # 64 KiB, a known pattern
        if "close_after" in query:
            await response.write(block[: int(query["close_after"])])
            assert request.transport is not None
            request.transport.abort()
            return response
        sent = 0
        while sent < total:
            piece = block[: min(len(block), total - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response
    body = json.dumps(seen).encode()
    if "chunked" in query:
        response = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        await response.write(body[len(body) // 2 :])
        await response.write_eof()
        return response
    return web.Response(
        status=status, body=body, content_type="application/json", headers={"X-Upstream": "yes", "Keep-Alive": "x"}
    )


def build_upstream() -> tuple[web.Application, Recorder]:
    app = web.Application(client_max_size=2**40)
    recorder = Recorder()
    app[RECORDER] = recorder
    app.router.add_route("*", "/{tail:.*}", echo)
    return app, recorder


def pattern(total: int) -> bytes:
    block = bytes(range(256)) * 256
    return (block * (total // len(block) + 1))[:total]
