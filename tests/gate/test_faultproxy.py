"""The fault-injection proxy over plain sockets: an echo server behind it, switched while in use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from roost.testing.faultproxy import FaultProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with FaultProxy(echo.sockets[0].getsockname()[:2]) as proxy:
        yield proxy
    echo.close()
    await echo.wait_closed()


async def connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*proxy.address)


async def test_bytes_pass_through_both_ways_and_are_counted(proxy: FaultProxy) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"
    stats = await proxy.wait_for(lambda s: s.downstream == 5)
    assert (stats.mode, stats.open, stats.accepted, stats.upstream) == ("pass", 1, 1, 5)
    writer.write_eof()  # a half-close goes through, and the echo server's close comes back
    assert await reader.read() == b""
    await proxy.wait_for(lambda s: s.open == 0)
    writer.close()


async def test_a_stall_holds_bytes_and_keeps_the_connection_open_until_healed(
    proxy: FaultProxy,
) -> None:
    reader, writer = await connect(proxy)
    await proxy.wait_for(lambda s: s.open == 1)
    proxy.stall()
    writer.write(b"one ")
    writer.write(b"two")
    await proxy.wait_for(lambda s: s.held > 0)
    assert proxy.statistics().upstream == 0
    late_reader, late_writer = await connect(proxy)  # accepted while stalled, and held
    late_writer.write(b"late")
    await proxy.wait_for(lambda s: s.open == 2 and s.held >= 5)
    assert "stall" in repr(proxy)
    proxy.heal()
    assert await reader.readexactly(7) == b"one two"  # in order, nothing lost
    assert await late_reader.readexactly(4) == b"late"
    writer.close()
    late_writer.close()


async def test_a_delay_holds_each_chunk_until_it_ends_or_the_proxy_heals(
    proxy: FaultProxy,
) -> None:
    reader, writer = await connect(proxy)
    proxy.delay(3600.0)
    writer.write(b"slow")
    await proxy.wait_for(lambda s: s.held == 4)
    assert "delay 3600s" in repr(proxy)
    proxy.heal()
    assert await reader.readexactly(4) == b"slow"
    proxy.delay(0.0)  # no delay at all: as pass-through
    writer.write(b"fast")
    assert await reader.readexactly(4) == b"fast"
    writer.close()
    with pytest.raises(ValueError):
        proxy.delay(-1)


async def test_a_reset_aborts_open_connections_and_refuses_new_ones_until_healed(
    proxy: FaultProxy,
) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    proxy.reset()
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await reader.readexactly(1)
    writer.close()
    reader, writer = await connect(proxy)  # accepted by the kernel, then reset
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await reader.readexactly(1)
    writer.close()
    stats = await proxy.wait_for(lambda s: s.open == 0)
    assert (stats.reset, stats.refused) == (1, 1)
    proxy.heal()
    reader, writer = await connect(proxy)
    writer.write(b"back")
    assert await reader.readexactly(4) == b"back"
    writer.close()


async def test_a_target_that_refuses_is_a_reset_for_the_client() -> None:
    listener = await asyncio.start_server(_echo, "127.0.0.1", 0)
    address = listener.sockets[0].getsockname()[:2]
    listener.close()
    await listener.wait_closed()  # nobody listens there any more
    async with FaultProxy(address) as proxy:
        reader, writer = await connect(proxy)
        with pytest.raises(ConnectionResetError):
            await reader.read()
        stats = await proxy.wait_for(lambda s: s.refused == 1 and s.open == 0)
        assert stats.accepted == 1
        writer.close()
