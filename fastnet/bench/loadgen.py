"""Closed-loop echo load generator (``python -m fastnet.bench echo``).

The load loop is C (``src_c/loadgen.c``, driven by ``fastnet.bench._loadgen_c`` with the GIL
released) so that the generator is never the bottleneck; ``fastnet.bench._loadgen_py`` is its
pure-Python twin (same API, same bytes on the wire, slow).

``run_echo(host, port, *, conns=1, size=1024, secs=5.0, udp=False, pipeline=1, udp_timeout=0.2)``
keeps *pipeline* messages in flight on each of *conns* connections (connected UDP sockets with
``udp=True``), checks every echoed byte and returns a dict.  *port* is 1..65535; *secs* (and
*udp_timeout*) finite, above 0 and at most a day, else ValueError.  Connecting counts against
*secs*: when the first connections are not all made by then, the run raises TimeoutError
(``connect: Connection timed out``), as it raises ConnectionRefusedError when refused.

- ``requests``: messages echoed back whole; ``requests_per_sec``; ``bytes`` echoed back; ``mb_per_sec``
  (echoed bytes received per second, 10**6 bytes per MB)
- ``latency_us``: ``min``, ``mean``, ``p50``, ``p90``, ``p99``, ``p99.9``, ``max`` round trip in
  microseconds (the compiled generator buckets latencies at ~3 % resolution; the twin is exact)
- ``errors`` (resets, unexpected EOF: the connection is reopened; a reopening that fails, or is
  still not made when the run ends), ``mismatches`` (echoed messages
  whose bytes differ from those sent, or bytes nobody sent), ``losses`` (UDP datagrams unanswered
  after *udp_timeout* seconds: a new one is sent), ``late`` (UDP replies after being counted lost),
  ``stalled`` (TCP connections still waiting at the end for an echo that sent no byte back for a
  second or more: a server that lost bytes, or stopped answering)
- ``implementation``, ``proto``, ``host``, ``port``, ``conns``, ``size``, ``pipeline``, ``elapsed``

Every message starts with an 8-byte stamp (connection << 40 | sequence, little-endian) followed by a
64 KiB pseudo-random pattern read from a per-message offset, so that a lost, repeated, reordered or
altered byte is a mismatch.  UDP sizes are 8..65507 bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _compat

__all__ = ["run_echo", "IMPLEMENTATION_NAME"]

if TYPE_CHECKING:
    from ._loadgen_py import IMPLEMENTATION_NAME, run_echo
else:
    _compat.bind(__name__, "fastnet.bench._loadgen_c", "fastnet.bench._loadgen_py", __all__)
