"""Pure-Python twin of ``fastnet._loop_c``: asyncio's selector event loop over epoll.

Same public API as the compiled loop: ``Loop``, ``EventLoopPolicy``, ``new_event_loop``,
``install`` and ``run``.
"""

from __future__ import annotations

import asyncio
import selectors
import sys
from typing import Any, Awaitable, Callable, TypeVar

__all__ = ["Loop", "EventLoopPolicy", "new_event_loop", "install", "run"]

_T = TypeVar("_T")


class Loop(asyncio.SelectorEventLoop):
    """asyncio's selector loop, pinned to epoll (the notes' "epoll 版" server model)."""

    def __init__(self) -> None:
        super().__init__(selectors.EpollSelector())


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
    if sys.version_info >= (3, 12):
        return asyncio.run(main, debug=debug, loop_factory=Loop, **run_kwargs)
    with asyncio.Runner(debug=debug, loop_factory=Loop) as runner:
        return runner.run(main)
