"""The outbox: writes of one loop turn leave together at its end, in order, over real sockets."""

from __future__ import annotations

import asyncio

from gateway.proxy.outbox import Outbox


class Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.eof = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> None:
        self.eof.set_result(self.data)


async def pair() -> tuple[asyncio.Transport, Sink, asyncio.Server]:
    loop = asyncio.get_running_loop()
    sinks: list[Sink] = []

    def make() -> Sink:
        sinks.append(Sink())
        return sinks[-1]

    server = await loop.create_server(make, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    while not sinks:
        await asyncio.sleep(0.001)
    return transport, sinks[0], server  # type: ignore[return-value]


async def test_writes_wait_for_the_end_of_the_turn_and_keep_their_order() -> None:
    outbox = Outbox()
    (first, first_sink, s1), (second, second_sink, s2) = await pair(), await pair()
    outbox.send(first, b"a")
    outbox.send(second, b"x")
    outbox.send(first, b"b")
    assert first.get_write_buffer_size() == 0 and first_sink.data == b""  # nothing sent yet
    await asyncio.sleep(0)  # the turn ends: everything leaves
    outbox.send(first, b"c")  # a later turn
    first.write_eof()  # (without a flush the FIN would overtake "c": see the next test)
    second.write_eof()
    assert await asyncio.wait_for(second_sink.eof, 5) == b"x"
    assert await asyncio.wait_for(first_sink.eof, 5) == b"ab"
    first.close(), second.close(), s1.close(), s2.close()


async def test_flush_sends_at_once_and_skips_aborted_transports() -> None:
    outbox = Outbox()
    (kept, kept_sink, s1), (aborted, aborted_sink, s2) = await pair(), await pair()
    outbox.send(kept, b"answer")
    outbox.send(aborted, b"never")
    aborted.abort()
    outbox.flush()  # what a closing connection does before its FIN
    kept.write_eof()
    assert await asyncio.wait_for(kept_sink.eof, 5) == b"answer"
    await asyncio.sleep(0.05)
    assert aborted_sink.data == b""
    kept.close(), s1.close(), s2.close()
