"""Type stub of the compiled fastnet._loop_c (same API as fastnet._loop_py)."""

import asyncio
from typing import Any, Awaitable, Callable, TypeVar

__all__ = ["Loop", "EventLoopPolicy", "new_event_loop", "install", "run"]

_T = TypeVar("_T")

#: seconds an accepting socket rests after EMFILE/ENFILE/ENOBUFS/ENOMEM
ACCEPT_RETRY_DELAY: float

class Handle(asyncio.Handle):
    """The handle call_soon returns (compiled; same methods as asyncio.Handle)."""

class Loop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose I/O core is edge-triggered epoll, compiled.

    TLS, Unix sockets, pipes, subprocesses and sendfile raise NotImplementedError.
    """

    def __init__(self) -> None: ...

class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> Loop: ...

def new_event_loop() -> Loop: ...
def install() -> None: ...
def run(main: Awaitable[_T], *, debug: bool | None = None, **run_kwargs: Any) -> _T: ...
