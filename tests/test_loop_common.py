"""Shared helpers of tests/test_loop*.py (no tests here): one scenario, three loops (fastnet, asyncio, uvloop).

asyncio is the oracle: every scenario must pass on stock asyncio and on uvloop too, so a test that
only fastnet passes is a test of fastnet's quirks, not of asyncio behaviour.
"""

from __future__ import annotations

import asyncio
import os

import pytest

LOOP_KINDS = ("fastnet", "asyncio", "uvloop")
TIMEOUT = 15.0  # seconds: the bound on every scenario


def loop_factory(kind: str):
    if kind == "fastnet":
        from fastnet import loop as fastnet_loop  # follows the session's implementation

        return fastnet_loop.Loop
    if kind == "asyncio":
        return asyncio.SelectorEventLoop
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.Loop
    raise ValueError(kind)


def run(loop: asyncio.AbstractEventLoop, coro, timeout: float = TIMEOUT):
    """Run *coro* on *loop*, bounded by *timeout* seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def is_compiled_fastnet(kind: str) -> bool:
    if kind != "fastnet":
        return False
    from fastnet import loop as fastnet_loop

    return fastnet_loop.IMPLEMENTATION == "c"


class EchoProtocol(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.lost = None
        self.closed = asyncio.get_event_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.lost = exc
        if not self.closed.done():
            self.closed.set_result(exc)


class CollectProtocol(asyncio.Protocol):
    """Client side: collects what it receives and records every callback, in order."""

    def __init__(self):
        loop = asyncio.get_event_loop()
        self.transport = None
        self.data = bytearray()
        self.events: list[str] = []
        self.eof = False
        self.lost = loop.create_future()
        self.grew = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.data += data
        self.grew.set()

    def eof_received(self):
        self.events.append("eof")
        self.eof = True
        return None

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)

    async def wait_for_size(self, size: int):
        while len(self.data) < size:
            self.grew.clear()
            if self.lost.done():
                break
            await self.grew.wait()
        return bytes(self.data)


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request) -> str:
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return request.param


@pytest.fixture
def loop(loop_kind):
    """A new loop of *loop_kind*, current for this thread, closed (and checked closed) at teardown."""
    new_loop = loop_factory(loop_kind)()
    asyncio.set_event_loop(new_loop)
    try:
        yield new_loop
    finally:
        if not new_loop.is_closed():
            if new_loop.is_running():  # pragma: no cover - a scenario left it running
                new_loop.stop()
            new_loop.run_until_complete(new_loop.shutdown_asyncgens())
            new_loop.close()
        asyncio.set_event_loop(None)
