# cython: language_level=3, embedsignature=True
"""TFTP transfer engine, compiled: the DATA/ACK loop of one transfer in C (``src_c/tftp_engine.c``).

Import it through the selector, ``from fastnet.tftp import engine``.  :meth:`Session.run` blocks
in C with the GIL released until the transfer ends (or a progress report is due, or
:meth:`Session.cancel` was called from another thread); the pure-Python twin
``fastnet.tftp._engine_py`` behaves the same, packet for packet.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from fastnet.includes.tftp_engine_sys cimport *

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

SENDER = "send"
RECEIVER = "receive"
DONE = TFTP_ENGINE_DONE
TIMEOUT = TFTP_ENGINE_TIMEOUT
STOP = TFTP_ENGINE_STOP
IO_ERROR = TFTP_ENGINE_IO_ERROR
CANCELLED = TFTP_ENGINE_CANCELLED
SOCK_ERROR = TFTP_ENGINE_SOCK_ERROR
PROGRESS = TFTP_ENGINE_PROGRESS
REFUSED = TFTP_ENGINE_REFUSED
FIRST_MAX = TFTP_ENGINE_FIRST_MAX


cdef int _set_peer(tftp_session *s, tuple peer) except -1:
    cdef bytes host = peer[0].encode("ascii")
    cdef int port = peer[1]
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    memset(&s.peer, 0, sizeof(s.peer))
    if b":" in host:
        v6 = <sockaddr_in6 *>&s.peer
        v6.sin6_family = AF_INET6
        v6.sin6_port = htons(port)
        if inet_pton(AF_INET6, host, &v6.sin6_addr) != 1:
            raise ValueError(f"bad IPv6 address {peer[0]!r}")
        if len(peer) > 3:
            v6.sin6_scope_id = peer[3]
        s.peer_len = sizeof(sockaddr_in6)
    else:
        v4 = <sockaddr_in *>&s.peer
        v4.sin_family = AF_INET
        v4.sin_port = htons(port)
        if inet_pton(AF_INET, host, &v4.sin_addr) != 1:
            raise ValueError(f"bad IPv4 address {peer[0]!r}")
        s.peer_len = sizeof(sockaddr_in)
    return 0


cdef class Session:
    """One transfer's DATA/ACK exchange on *sock* (a UDP socket object) with the file descriptor *fd*.

    *role* is ``"send"`` (DATA out, ACKs in) or ``"receive"``; *peer* the peer's address tuple.
    *first*: for a sender, an OACK to (re)send until ACK 0 arrives (None: the first window goes
    out at once); for a receiver, the packet re-sent on timeout before block 1 arrives (OACK or
    ACK 0).  *first_sent*: the caller already sent it.  *file_start*: the sender's file offset
    of block 1; *start_block*: the first block to send / expect.  *strict*: an RRQ/WRQ from the peer ends the run (STOP) instead of being ignored.
    With ``IP_RECVERR`` on *sock*, a port unreachable for *peer* ends the run with REFUSED
    (``fastnet._recverr`` explains the kernel's side), unless an ERROR from *peer* is already
    queued on the socket (it sent one, then closed its port): then STOP with that ERROR.  *ack_last*: a receiver sends the final ACK itself.  *oack_reack*: a receiver answers a
    repeated OACK before block 1 with *first*.  *report_interval* > 0: :meth:`run` returns
    PROGRESS that often.  *zero_copy* (a windowed sender of blocks of 32768 bytes or more from a regular
    file): the blocks go from the page cache to the socket by ``splice()``; False reads them with
    ``pread()`` as smaller blocks are.  The bytes on the wire are the same either way.
    """

    cdef tftp_session *_s
    cdef object _sock
    cdef bint _running
    cdef object _stop
    cdef readonly str role

    def __cinit__(self):
        self._s = <tftp_session *>calloc(1, sizeof(tftp_session))
        if self._s == NULL:
            raise MemoryError()

    def __init__(self, str role, sock, int fd, tuple peer, *, int blksize, int windowsize, double timeout,
                 int retries, double max_backoff=8.0, first=None, bint first_sent=False, long long file_start=0,
                 unsigned long long start_block=1,
                 bint strict=False, bint ack_last=False, bint oack_reack=False, double report_interval=0.0,
                 bint zero_copy=True, bint guard_first_window=False):
        cdef tftp_session *s = self._s
        cdef const unsigned char[:] view
        if role == SENDER:
            s.role = TFTP_ENGINE_SENDER
        elif role == RECEIVER:
            s.role = TFTP_ENGINE_RECEIVER
        else:
            raise ValueError(f"role must be {SENDER!r} or {RECEIVER!r}")
        self.role = role
        self._sock = sock
        s.sock = sock.fileno()
        s.fd = fd
        _set_peer(s, peer)
        s.blksize = blksize
        s.window = windowsize
        s.timeout = timeout
        s.max_backoff = max_backoff
        s.retries = retries
        s.report_interval = report_interval
        s.file_start = file_start
        s.base = start_block
        if first is not None:
            if len(first) > TFTP_ENGINE_FIRST_MAX:
                raise ValueError("first packet too long")
            view = first
            if len(first):
                memcpy(s.first, &view[0], len(first))
            s.first_len = len(first)
        s.first_sent = first_sent
        s.flags = ((TFTP_ENGINE_FLAG_STRICT if strict else 0) | (TFTP_ENGINE_FLAG_ACK_LAST if ack_last else 0)
                   | (TFTP_ENGINE_FLAG_OACK_REACK if oack_reack else 0)
                   | (0 if zero_copy else TFTP_ENGINE_FLAG_NO_SPLICE)
                   | (TFTP_ENGINE_FLAG_GUARD_FIRST if guard_first_window else 0))
        if tftp_session_init(s) < 0:
            raise OSError(s.error_errno or 22, "cannot start the transfer engine")

    def __dealloc__(self):
        if self._s != NULL:
            if not self._running:
                # Not closed: the socket may be closed by now and its number given to another
                # descriptor, which must not get this one's flags and timeout "back".  Only
                # close() restores the socket; here the memory alone is freed.
                self._s.sock = -1
                tftp_session_free(self._s)
                free(self._s)
            self._s = NULL

    def run(self) -> int:
        """Go on with the transfer until an outcome (DONE, TIMEOUT, STOP, ...); the GIL is released."""
        cdef int r
        cdef tftp_session *s = self._s
        if s == NULL or self._running:
            raise RuntimeError("session closed or already running")
        if s.outcome != TFTP_ENGINE_RUNNING:
            return s.outcome
        self._running = True
        try:
            with nogil:
                r = tftp_session_run(s)
        finally:
            self._running = False
        return r

    def cancel(self) -> None:
        """Make a running :meth:`run` return CANCELLED soon (thread-safe)."""
        if self._s != NULL:
            self._s.cancel = 1

    def close(self) -> None:
        """Free the buffers and give the socket its blocking mode and timeout back."""
        if self._s != NULL and not self._running:
            if self._s.stop_packet != NULL:
                self._stop = PyBytes_FromStringAndSize(<char *>self._s.stop_packet, self._s.stop_len)
            tftp_session_free(self._s)

    @property
    def outcome(self) -> int:
        return self._s.outcome

    @property
    def bytes(self) -> int:
        return self._s.bytes

    @property
    def blocks(self) -> int:
        return self._s.blocks

    @property
    def retransmissions(self) -> int:
        return self._s.retransmissions

    @property
    def next_block(self) -> int:
        """Sender: the first block not yet acknowledged; receiver: the next block expected."""
        return self._s.base

    @property
    def error_errno(self) -> int:
        return self._s.error_errno

    @property
    def stop_packet(self):
        """The datagram that ended the run with STOP (None otherwise)."""
        if self._s.stop_packet == NULL:
            return self._stop
        return PyBytes_FromStringAndSize(<char *>self._s.stop_packet, self._s.stop_len)
