"""fastnet: Python networking whose hot paths are C.

- ``fastnet.Loop``: an asyncio event loop over edge-triggered epoll (``fastnet.run(main())``).
- ``fastnet.tftp``: a TFTP packet codec, client and server.
- ``fastnet.relay``: an echo relay whose per-message path never enters Python.

``fastnet.IMPLEMENTATION`` is ``"c"`` when the compiled modules are in use and ``"python"`` when
the pure-Python twins are (``FASTNET_NO_EXTENSIONS=1``, or a compiled module failed to import).
"""

from __future__ import annotations

from . import _compat

__version__ = "0.1.0"

__all__ = ["__version__", "IMPLEMENTATION", "Loop", "EventLoopPolicy", "run", "install", "new_event_loop"]

_LOOP_NAMES = ("Loop", "EventLoopPolicy", "run", "install", "new_event_loop")


def __getattr__(name: str):
    # Resolved on each access, so that fastnet._compat.activate() is seen here too.
    if name == "IMPLEMENTATION":
        return _compat.overall()
    if name in _LOOP_NAMES:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'fastnet' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
