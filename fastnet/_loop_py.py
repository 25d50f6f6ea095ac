"""Pure-Python twin of ``fastnet._loop_c``: asyncio's selector event loop over epoll.

Same public API as the compiled loop: ``Loop``, ``EventLoopPolicy``, ``new_event_loop``,
``install`` and ``run``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import selectors
import sys
from typing import Any, Awaitable, Callable, TypeVar

__all__ = ["Loop", "EventLoopPolicy", "new_event_loop", "install", "run"]

_T = TypeVar("_T")

logger = logging.getLogger("asyncio")  # asyncio's logger, as the compiled loop uses
ACCEPT_RETRY_DELAY = 0.5  # seconds a listener rests when accept() runs out of resources (asyncio's, the compiled loop's)


class Loop(asyncio.SelectorEventLoop):
    """asyncio's selector loop, pinned to epoll (the notes' "epoll 版" server model)."""

    def __init__(self) -> None:
        super().__init__(selectors.EpollSelector())

    def _accept_connection(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *timeouts):
        # asyncio's own, but for one thing: out of descriptors (or memory), CPython's goes on
        # trying the other backlog - 1 accepts of the round, each failing the same way, logging
        # it and scheduling one more restart of the listener: with a backlog of 1024, a server
        # spins at full CPU writing a traceback per try.  Here the first failure ends the round,
        # as in the compiled loop: reported once, the listener rests ACCEPT_RETRY_DELAY seconds.
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # nothing more waiting
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise  # logged by the loop, which goes on
                self.call_exception_handler({
                    "message": "socket.accept() out of system resource",
                    "exception": exc,
                    "socket": sock,
                })
                self._remove_reader(sock.fileno())
                self.call_later(ACCEPT_RETRY_DELAY, self._start_serving, protocol_factory, sock, sslcontext,
                                server, backlog, *timeouts)
                return
            if self._debug:
                logger.debug("%r got a new connection from %r: %r", server, addr, conn)
            self.create_task(self._accept_connection2(protocol_factory, conn, {"peername": addr}, sslcontext,
                                                      server, *timeouts))


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An event loop policy whose loops are :class:`Loop`."""

    def _loop_factory(self) -> Loop:  # asyncio's policy calls this for new loops
        return Loop()

    def new_event_loop(self) -> Loop:
        return Loop()


def new_event_loop() -> Loop:
    return Loop()


def install() -> None:
    """Make :class:`Loop` the default for ``asyncio.run`` / ``asyncio.new_event_loop``."""
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main: Awaitable[_T], *, debug: bool | None = None, **run_kwargs: Any) -> _T:
    """Run the coroutine *main* on a new :class:`Loop`, like ``uvloop.run``."""
    return _run_with(Loop, main, debug, run_kwargs)


def _run_with(loop_factory: Callable[[], asyncio.AbstractEventLoop], main: Awaitable[_T],
              debug: bool | None, run_kwargs: dict) -> _T:
    """``asyncio.run(main, loop_factory=...)`` on every Python fastnet supports (3.10+)."""
    if sys.version_info >= (3, 12):
        return asyncio.run(main, debug=debug, loop_factory=loop_factory, **run_kwargs)
    if run_kwargs:
        raise TypeError(f"run() got unexpected keyword arguments {sorted(run_kwargs)}")
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=loop_factory) as runner:
            return runner.run(main)
    return _run_310(loop_factory, main, debug)


def _run_310(loop_factory, main, debug):  # pragma: no cover - Python 3.10 has no asyncio.Runner
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError("fastnet.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = loop_factory()
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            to_cancel = asyncio.all_tasks(loop)
            for task in to_cancel:
                task.cancel()
            if to_cancel:
                loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
            for task in to_cancel:
                if not task.cancelled() and task.exception() is not None:
                    loop.call_exception_handler({
                        "message": "unhandled exception during fastnet.run() shutdown",
                        "exception": task.exception(),
                        "task": task,
                    })
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
