# cython: language_level=3, embedsignature=True
"""Compiled echo relay: the per-message loop is ``relay_serve`` in ``src_c/relay.c``, run with the
GIL released.  Binding, signals, workers and :class:`EchoRelay` are shared with the twin
(``fastnet._relay_py``), which passes its Python loop where this module passes the C one."""

from libc.errno cimport errno
from libc.string cimport memset

from relay_sys cimport relay_serve, relay_stats

import os

from fastnet import _relay_py

__all__ = ["serve_echo", "EchoRelay", "RelayStats"]

RelayStats = _relay_py.RelayStats
DEFAULT_BACKLOG = _relay_py.DEFAULT_BACKLOG


def _serve_socket(sock, bint udp, int stop_fd, int signal_fd):
    """Serve *sock* with the C loop until *stop_fd* is readable or SIGINT/SIGTERM hits *signal_fd*."""
    cdef relay_stats st
    cdef int fd = sock.fileno()
    cdef int rc
    cdef int err = 0
    memset(&st, 0, sizeof(st))
    with nogil:
        rc = relay_serve(fd, udp, stop_fd, signal_fd, &st)
        if rc != 0:
            err = errno
    if rc != 0:
        raise OSError(err, f"echo relay loop failed: {os.strerror(err)}")
    return RelayStats(
        connections=st.connections,
        messages=st.messages,
        bytes=st.bytes,
        accept_pauses=st.accept_pauses,
        dropped=st.dropped,
    )


def serve_echo(host, port, *, udp=False, workers=1, backlog=DEFAULT_BACKLOG, ready=None, duration=None):
    """Echo every TCP byte (or UDP datagram) received on (host, port) until stopped.

    Blocks; SIGINT or SIGTERM (when called in the main thread) stop it, and it returns the
    :class:`RelayStats`.  *ready*, if given, is called with the bound ``(host, port)`` once the
    socket listens (so ``port=0`` works).  ``workers=N`` forks N processes sharing the port with
    SO_REUSEPORT; a worker that dies is logged and restarted.  With *duration* it also stops by
    itself that many seconds after it started serving, as on SIGTERM.
    """
    return _relay_py._serve_echo(_serve_socket, host, port, udp=udp, workers=workers, backlog=backlog, ready=ready,
                                 duration=duration)


class EchoRelay(_relay_py.EchoRelay):
    __doc__ = _relay_py.EchoRelay.__doc__
    _loop = staticmethod(_serve_socket)
