"""A sample upstream for trying the gateway: answers every path with what it received.

.venv/bin/python examples/upstream.py [port] [host]     # default 9000 on 127.0.0.1
"""

from __future__ import annotations

import sys

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    body = await request.text()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path_qs,
            "key_id": request.headers.get("X-Gateway-Key-Id"),
            "account": request.headers.get("X-Gateway-Account"),
            "forwarded_for": request.headers.get("X-Forwarded-For"),
            "body": body,
        }
    )


def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"  # 0.0.0.0 in a container
    web.run_app(app, host=host, port=port)


if __name__ == "__main__":
    main()
