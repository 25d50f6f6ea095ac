"""``fastnet.relay``: an echo relay whose per-message path never enters Python.

    from fastnet import relay
    stats = relay.serve_echo("127.0.0.1", 7788)          # blocks; Ctrl-C / SIGTERM stop it
    with relay.EchoRelay("127.0.0.1", 0) as r:           # or in a background thread
        host, port = r.address

The compiled loop (``fastnet._relay_c`` over ``src_c/relay.c``) runs with the GIL released; the
pure-Python twin (``fastnet._relay_py``) does the same with ``select.epoll``.  ``RelayStats`` holds
``connections``, ``messages`` (TCP: successful reads echoed; UDP: datagrams echoed), ``bytes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _compat

__all__ = ["serve_echo", "EchoRelay", "RelayStats"]

if TYPE_CHECKING:
    from ._relay_py import EchoRelay, RelayStats, serve_echo
else:
    _compat.bind(__name__, "fastnet._relay_c", "fastnet._relay_py", __all__)
