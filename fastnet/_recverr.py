"""ICMP errors on unconnected UDP sockets, from the socket's error queue (Linux ``IP_RECVERR``).

An unconnected UDP socket hears nothing of the ICMP errors its datagrams cause unless
``IP_RECVERR`` (``IPV6_RECVERR``) is on.  With it, the kernel reports each error once, as the
failure of the *next* call on the socket, whichever it is (a ``recvfrom`` or a ``sendto``, which
then sends nothing), and queues the details: the error and the address the failed datagram was
sent to.  :func:`drain` reads them, so that a program can tell "the peer's port is closed" from
"some other address we wrote to is" (a stranger answered with an ERROR, say) and act only on the
first.  Reading the queue also matters for a level-triggered poller: while the queue holds an
error, the socket polls as ready (``EPOLLERR``) and the poller spins.

The compiled TFTP engine (``src_c/tftp_engine.c``) does the same in C.
"""

from __future__ import annotations

import errno
import socket
import struct

__all__ = ["LATE_ERRNOS", "enable", "drain", "refused_by", "refused", "send_again"]

#: errno values an ICMP error arrives as (``icmp_err_convert`` in the kernel): a send or receive
#: that fails with one of them may be reporting an error for an earlier datagram
LATE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENONET, errno.EPROTO}
)

# (level, type) of the control message that carries an error, and the start of struct
# sock_extended_err: ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_KINDS = ((socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR))
_extended_err = struct.Struct("=IBBBBII")
_MAX_DRAIN = 64  # errors read at once: the queue is bounded by the socket's receive buffer anyway


def enable(sock: socket.socket) -> bool:
    """Turn the error queue on for *sock* (both families on an IPv6 socket, which may carry
    IPv4-mapped traffic); False where the system has no such option."""
    on = False
    levels = [(socket.IPPROTO_IP, _IP_RECVERR)]
    if sock.family == socket.AF_INET6:
        levels.insert(0, (socket.IPPROTO_IPV6, _IPV6_RECVERR))
    for level, option in levels:
        try:
            sock.setsockopt(level, option, 1)
            on = True
        except OSError:
            pass
    return on


def drain(sock: socket.socket) -> list[tuple[int, tuple | None]]:
    """Read every queued error of *sock*: ``(errno, address the failed datagram went to)`` each,
    oldest first; an empty list when nothing was queued (the failure was not an ICMP error)."""
    errors: list[tuple[int, tuple | None]] = []
    try:
        timeout = sock.gettimeout()
    except OSError:  # closed
        return errors
    if timeout != 0.0:
        # a Python-level timeout makes recvmsg poll for data first, MSG_DONTWAIT or not
        sock.settimeout(0.0)
    try:
        for _ in range(_MAX_DRAIN):
            try:
                _, ancdata, _, addr = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except InterruptedError:
                continue
            except OSError:
                break
            for level, kind, data in ancdata:
                if (level, kind) in _KINDS and len(data) >= _extended_err.size:
                    errors.append((_extended_err.unpack_from(data)[0], addr))
    finally:
        if timeout != 0.0:
            sock.settimeout(timeout)
    return errors


def send_again(sock: socket.socket, data: bytes, addr: tuple, exc: OSError) -> bool:
    """After ``sock.sendto(data, addr)`` failed with *exc*: when *exc* reports an earlier
    datagram's ICMP error, the kernel sent nothing; send once more and return True (the caller
    reads the queue next).  False for any other failure.  A failure of the second send is not
    raised: that datagram is lost, as datagrams may be, and the protocol's timeout resends it."""
    if exc.errno not in LATE_ERRNOS:
        return False
    try:
        sock.sendto(data, addr)
    except OSError:
        pass
    return True


def refused(sock: socket.socket, address: tuple) -> bool:
    """Read the queue of *sock* (:func:`drain`): whether it held a port unreachable for *address*."""
    return refused_by(drain(sock), address)


def refused_by(errors: list[tuple[int, tuple | None]], address: tuple) -> bool:
    """Whether *errors* (from :func:`drain`) hold a port unreachable for *address*."""
    host, port = address[0], address[1]
    return any(
        code == errno.ECONNREFUSED and addr is not None and addr[1] == port and addr[0] == host
        for code, addr in errors
    )
