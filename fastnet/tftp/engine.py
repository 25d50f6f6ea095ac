"""The TFTP transfer engine: the DATA/ACK exchange of one transfer, packet for packet.

The names below come from the compiled module ``fastnet.tftp._engine_c`` (C loop in
``src_c/tftp_engine.c``: ``sendmmsg``/``recvmmsg``, ``pread``, the GIL released for the whole
transfer) or from its pure-Python twin ``fastnet.tftp._engine_py``; ``engine.IMPLEMENTATION``
says which.  The server and the client hand an octet transfer to an :class:`Session` once the
request and the option negotiation are done, and take it back at its end (outcome, statistics,
the packet that stopped it).  ``FASTNET_TFTP_ENGINE=0`` in the environment keeps every transfer
on the older per-packet Python path of ``server.py``/``client.py``.

    s = engine.Session(engine.SENDER, sock, fd, peer, blksize=1468, windowsize=16, timeout=1.0, retries=5)
    outcome = s.run()          # engine.DONE, TIMEOUT, STOP (s.stop_packet), IO_ERROR (s.error_errno) ...
    s.close()
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .. import _compat

__all__ = [
    "Session",
    "SENDER",
    "RECEIVER",
    "DONE",
    "TIMEOUT",
    "STOP",
    "IO_ERROR",
    "CANCELLED",
    "SOCK_ERROR",
    "PROGRESS",
    "REFUSED",
    "FIRST_MAX",
]


def enabled() -> bool:
    """Whether octet transfers go through the engine (``FASTNET_TFTP_ENGINE=0`` turns it off)."""
    return os.environ.get("FASTNET_TFTP_ENGINE", "1").strip().lower() not in ("0", "no", "off", "false")


if TYPE_CHECKING:
    from ._engine_py import (
        CANCELLED,
        DONE,
        FIRST_MAX,
        IO_ERROR,
        PROGRESS,
        RECEIVER,
        REFUSED,
        SENDER,
        SOCK_ERROR,
        STOP,
        TIMEOUT,
        Session,
    )
else:
    _compat.bind(__name__, "fastnet.tftp._engine_c", "fastnet.tftp._engine_py", __all__)
