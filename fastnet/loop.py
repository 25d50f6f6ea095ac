"""``fastnet.Loop``: an asyncio event loop over edge-triggered epoll.

The compiled loop lives in ``fastnet._loop_c``; its pure-Python twin (``fastnet._loop_py``) is
asyncio's own selector loop over an epoll selector, so every program keeps working with
``FASTNET_NO_EXTENSIONS=1``.

    import fastnet
    fastnet.run(main())                                   # like asyncio.run / uvloop.run
    asyncio.Runner(loop_factory=fastnet.Loop)             # or explicitly
    fastnet.install()                                     # or as the default policy
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _compat

__all__ = ["Loop", "EventLoopPolicy", "new_event_loop", "install", "run"]

if TYPE_CHECKING:
    from ._loop_py import EventLoopPolicy, Loop, install, new_event_loop, run
else:
    _compat.bind(__name__, "fastnet._loop_c", "fastnet._loop_py", __all__)
