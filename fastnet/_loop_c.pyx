# cython: language_level=3, embedsignature=True
"""fastnet.Loop, compiled: asyncio's event loop with its I/O core replaced by edge-triggered epoll.

What comes from asyncio unchanged (``asyncio.SelectorEventLoop``'s Python code): create_server,
create_connection, the Server object, streams, getaddrinfo's resolution, executors, async
generators, signals' bookkeeping, task factories and the exception handler.

What is compiled here:

* ``_Core``: one epoll instance.  Our own TCP transports are registered once per connection,
  edge-triggered for reading and writing (EPOLLIN|EPOLLOUT|EPOLLET); ``epoll_wait`` runs with the
  GIL released and events go straight to the transport's cdef methods (no selector keys, no Handle
  per I/O event).  Other file descriptors (``add_reader``/``add_writer``, ``sock_*``, listening
  sockets, UDP) keep asyncio's level-triggered semantics.
* ``_run_once``: the timer heap, the ready queue and the poll, in C.
* ``_TCPTransport``: recv() into one 256 KiB buffer owned by the loop (one ``bytes`` per message),
  send() straight from the caller's bytes when nothing is queued, sendmsg() over the queue.
* call_soon_threadsafe wakes the loop through an eventfd.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.string cimport memcpy, memset, strlen
from cpython.ref cimport Py_REFCNT
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.math cimport ceil

from loop_sys cimport *

import asyncio
import collections
import errno as _errno
import heapq
import inspect
import logging
import os
import selectors
import socket
import sys
import threading
import warnings
from asyncio import base_events, constants, events, futures
from typing import Any

__all__ = ["Loop", "EventLoopPolicy", "new_event_loop", "install", "run"]

logger = logging.getLogger("asyncio")  # asyncio's logger: same messages, same place as asyncio

cdef object _Future = asyncio.Future
# Python 3.13 made Server._attach/_detach take the transport (for close_clients/abort_clients)
cdef bint _SERVER_TRACKS_TRANSPORTS = len(inspect.signature(base_events.Server._attach).parameters) > 1
cdef bint _HAS_RUN_FOREVER_SETUP = hasattr(base_events.BaseEventLoop, "_run_forever_setup")
cdef object _heappop = heapq.heappop
cdef object _heappush = heapq.heappush
cdef object _heapify = heapq.heapify
cdef object _OSError = OSError
cdef object _socket_type = socket.socket
cdef object _set_result_unless_cancelled = futures._set_result_unless_cancelled
cdef object _SelectorKey = selectors.SelectorKey
cdef object _TransportSocket = asyncio.trsock.TransportSocket
cdef object _CONNLOST_THRESHOLD = constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES

cdef enum:
    READ_BUFFER_SIZE = 262144       # asyncio's max_size for one recv()
    MAX_EVENTS = 256
    MAX_READS_PER_EVENT = 16        # then yield to other connections (fairness)
    MAX_IOV = 64
    MIN_SCHEDULED_TIMER_HANDLES = 100

cdef double MAXIMUM_SELECT_TIMEOUT = 24 * 3600
#: seconds an accepting socket rests after EMFILE/ENFILE/ENOBUFS/ENOMEM before accepting again
ACCEPT_RETRY_DELAY = 0.5

cdef uint32_t ET_MASK = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
cdef uint32_t READISH = EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP
cdef uint32_t WRITEISH = EPOLLOUT | EPOLLERR | EPOLLHUP


cdef inline uint64_t _fd_tag(int fd) noexcept nogil:
    # epoll data of a plain fd registration: odd, so never mistaken for an (aligned) object address
    return ((<uint64_t>fd) << 1) | 1


cdef inline double _monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef object _oserror(int err):
    return OSError(err, os.strerror(err))


cdef int _fileno(object fd) except -1:
    cdef object n
    if isinstance(fd, int):
        n = fd
    else:
        try:
            n = int(fd.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fd!r}") from None
    if n < 0:
        raise ValueError(f"Invalid file descriptor: {n}")
    return n


cdef extern from *:
    """
    /* A bytes object nobody but the loop references any more may be refilled in place: its
       cached hash must be forgotten.  CPython only (and only with the GIL). */
    #if !defined(PYPY_VERSION) && !defined(Py_GIL_DISABLED) && PY_VERSION_HEX < 0x030F0000
    #define FASTNET_BYTES_REUSE 1
    static inline void fastnet_bytes_forget_hash(PyObject *o) {
    #if defined(__GNUC__)
    #pragma GCC diagnostic push
    #pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    #endif
        ((PyBytesObject *)o)->ob_shash = -1;
    #if defined(__GNUC__)
    #pragma GCC diagnostic pop
    #endif
    }
    #else
    #define FASTNET_BYTES_REUSE 0
    static inline void fastnet_bytes_forget_hash(PyObject *o) { (void)o; }
    #endif
    """
    enum: FASTNET_BYTES_REUSE
    void fastnet_bytes_forget_hash(object o)


cdef class _TCPTransport
cdef class _UDPTransport


@cython.final
cdef class _FdEntry:
    """A level-triggered registration made by add_reader/add_writer (asyncio semantics)."""
    cdef object reader
    cdef object writer
    cdef uint32_t mask


@cython.final
cdef class _Core:
    """The epoll instance, the eventfd and the fd -> owner map of one loop."""
    cdef int epfd
    cdef int efd
    cdef dict fds                   # fd -> _FdEntry | _TCPTransport
    cdef object ready               # the loop's _ready deque
    cdef epoll_event *events
    cdef char *rbuf                 # one read buffer for every transport of this loop
    cdef bint closed
    cdef list graveyard             # transports unregistered since the last poll (see poll())
    cdef object spare               # the last message's bytes, refilled when nobody kept it

    def __cinit__(self):
        self.epfd = -1
        self.efd = -1
        self.events = NULL
        self.rbuf = NULL
        self.closed = True

    def __init__(self):
        self.fds = {}
        self.graveyard = []
        self.events = <epoll_event *>malloc(sizeof(epoll_event) * MAX_EVENTS)
        self.rbuf = <char *>malloc(READ_BUFFER_SIZE)
        if self.events == NULL or self.rbuf == NULL:
            raise MemoryError()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise _oserror(errno)
        self.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.efd < 0:
            raise _oserror(errno)
        cdef epoll_event ev
        ev.events = EPOLLIN | EPOLLET
        ev.data.u64 = _fd_tag(self.efd)
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, self.efd, &ev) < 0:
            raise _oserror(errno)
        self.closed = False

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)
        if self.efd >= 0:
            close(self.efd)
        free(self.events)
        free(self.rbuf)

    # -- registration ------------------------------------------------------------------------
    cdef int _ctl(self, int fd, uint32_t mask, bint known, uint64_t data) except -1:
        """Register *fd* with *mask*: MOD when *known*, falling back to ADD (and vice versa)."""
        cdef epoll_event ev
        cdef int op = EPOLL_CTL_MOD if known else EPOLL_CTL_ADD
        ev.events = mask
        ev.data.u64 = data
        if epoll_ctl(self.epfd, op, fd, &ev) == 0:
            return 0
        if op == EPOLL_CTL_MOD and errno == ENOENT:
            op = EPOLL_CTL_ADD      # the fd was closed and reused behind our back
        elif op == EPOLL_CTL_ADD and errno == EEXIST:
            op = EPOLL_CTL_MOD
        else:
            raise _oserror(errno)
        if epoll_ctl(self.epfd, op, fd, &ev) < 0:
            raise _oserror(errno)
        return 0

    cdef void _unregister(self, int fd) noexcept:
        cdef epoll_event ev
        if self.epfd >= 0:
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, &ev)   # ENOENT/EBADF: already gone

    cdef object set_handler(self, int fd, object handle, bint write):
        """add_reader/add_writer: install *handle*, return the handle it replaces (or None)."""
        cdef object entry = self.fds.get(fd)
        cdef _FdEntry e
        cdef object old
        cdef uint32_t mask
        cdef bint known = entry is not None
        if type(entry) is not _FdEntry:
            e = _FdEntry()
            e.mask = 0
        else:
            e = <_FdEntry>entry
        if write:
            old = e.writer
            e.writer = handle
            mask = e.mask | EPOLLOUT
        else:
            old = e.reader
            e.reader = handle
            mask = e.mask | EPOLLIN
        if mask != e.mask or entry is not e:
            self._ctl(fd, mask, known, _fd_tag(fd))
            e.mask = mask
        self.fds[fd] = e
        return old

    cdef object clear_handler(self, int fd, bint write):
        """remove_reader/remove_writer: return the removed handle, or None."""
        cdef object entry = self.fds.get(fd)
        cdef _FdEntry e
        cdef object old
        cdef uint32_t mask
        if type(entry) is not _FdEntry:
            return None
        e = <_FdEntry>entry
        if write:
            old = e.writer
            e.writer = None
            mask = e.mask & ~EPOLLOUT
        else:
            old = e.reader
            e.reader = None
            mask = e.mask & ~EPOLLIN
        if mask == 0:
            del self.fds[fd]
            self._unregister(fd)
        elif mask != e.mask:
            try:
                self._ctl(fd, mask, True, _fd_tag(fd))
            except OSError:
                pass
            e.mask = mask
        return old

    cdef int add_transport(self, int fd, object transport) except -1:
        # the event carries the transport's address: no lookup per event.  self.fds holds the
        # reference that keeps the address valid while registered, and the graveyard until the
        # end of the batch in which it was unregistered
        old = self.fds.get(fd)
        if old is not None and type(old) is not _FdEntry:
            # its socket was closed behind its back and the number reused: forget it
            if type(old) is _TCPTransport:
                (<_TCPTransport>old)._registered = False
            else:
                (<_UDPTransport>old)._registered = False
            self.graveyard.append(old)
        self._ctl(fd, ET_MASK, old is not None, <uint64_t><void *>transport)
        self.fds[fd] = transport
        return 0

    cdef void remove_transport(self, int fd, object transport) noexcept:
        if self.fds.get(fd) is transport:
            del self.fds[fd]
            self._unregister(fd)
            self.graveyard.append(transport)

    # -- the selector facade asyncio's own transports use in their __repr__ ----------------------
    def get_key(self, fileobj):
        fd = _fileno(fileobj)
        entry = self.fds.get(fd)
        if entry is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if type(entry) is _FdEntry:
            e = <_FdEntry>entry
            events = (selectors.EVENT_READ if e.reader is not None else 0) | \
                     (selectors.EVENT_WRITE if e.writer is not None else 0)
            return _SelectorKey(fileobj, fd, events, (e.reader, e.writer))
        return _SelectorKey(fileobj, fd, selectors.EVENT_READ | selectors.EVENT_WRITE, None)

    def get_map(self):
        return {fd: self.get_key(fd) for fd in self.fds}

    def select(self, timeout=None):
        raise NotImplementedError("fastnet.Loop polls in _run_once; it has no selector to call")

    # -- wake-up -------------------------------------------------------------------------------
    cdef void wakeup(self) noexcept:
        # called with the GIL held, and it must stay held (see close())
        cdef uint64_t one = 1
        if self.efd >= 0:
            write(self.efd, &one, 8)

    # -- messages ------------------------------------------------------------------------------
    cdef inline object message(self, Py_ssize_t n):
        """rbuf[:n] as bytes.  Messages past pymalloc's small sizes (libc malloc and free per
        message otherwise) reuse the previous message's object when it has the same size and the
        loop holds its only reference (the protocol consumed it: an echo wrote it out)."""
        cdef object spare
        if n < 512 or not FASTNET_BYTES_REUSE:
            return PyBytes_FromStringAndSize(self.rbuf, n)
        spare = self.spare
        if spare is not None and PyBytes_GET_SIZE(spare) == n and Py_REFCNT(spare) == 2:
            # two references: self.spare and the local variable, nobody else
            memcpy(PyBytes_AS_STRING(spare), self.rbuf, n)
            fastnet_bytes_forget_hash(spare)
            return spare
        spare = PyBytes_FromStringAndSize(self.rbuf, n)
        self.spare = spare
        return spare

    # -- poll and dispatch ---------------------------------------------------------------------
    cdef int poll(self, int timeout_ms, object debug_loop) except -1:
        """Wait for events; a transport's are handled at once (its protocol's callbacks run here),
        other descriptors' handles go to the ready queue.  *debug_loop*: the loop in debug mode,
        whose slow_callback_duration the transports' callbacks are timed against too."""
        cdef int n, i, fd, err = 0
        cdef double t0, dt
        cdef uint32_t ev
        cdef uint64_t counter
        cdef object entry, ctx
        cdef bint tcp
        cdef _FdEntry e
        cdef int epfd = self.epfd
        cdef epoll_event *events = self.events
        cdef uint64_t data
        if self.graveyard:
            self.graveyard.clear()   # no event of the previous batch can name them any more
        with nogil:
            n = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms)
            if n < 0:
                err = errno
        if n < 0:
            if err == EINTR:
                # a signal: let Python run its handler now (asyncio.Runner's SIGINT handler ...);
                # an exception it raises (KeyboardInterrupt) propagates from here
                PyErr_CheckSignals()
                return 0
            raise _oserror(err)
        i = 0
        try:
            while i < n:
                data = events[i].data.u64
                ev = events[i].events
                i += 1
                if not (data & 1):
                    entry = <object><void *>data
                    if debug_loop is not None:
                        t0 = _monotonic()
                    tcp = type(entry) is _TCPTransport
                    # the protocol's callbacks run in the transport's own context
                    ctx = (<_TCPTransport>entry)._context if tcp else (<_UDPTransport>entry)._context
                    PyContext_Enter(ctx)
                    try:
                        if tcp:
                            (<_TCPTransport>entry)._on_events(ev)
                        else:
                            (<_UDPTransport>entry)._on_events(ev)
                    finally:
                        PyContext_Exit(ctx)
                    if debug_loop is not None:
                        dt = _monotonic() - t0
                        if dt >= debug_loop.slow_callback_duration:
                            logger.warning("Executing the events of %r took %.3f seconds", entry, dt)
                    continue
                fd = <int>(data >> 1)
                if fd == self.efd:
                    read(self.efd, &counter, 8)
                    continue
                entry = self.fds.get(fd)
                if type(entry) is not _FdEntry:
                    continue   # removed by an earlier callback of this batch
                e = <_FdEntry>entry
                if ev & (EPOLLIN | EPOLLERR | EPOLLHUP) and e.reader is not None:
                    if e.reader._cancelled:
                        self.clear_handler(fd, False)
                    else:
                        self.ready.append(e.reader)
                if ev & (EPOLLOUT | EPOLLERR | EPOLLHUP) and e.writer is not None:
                    if e.writer._cancelled:
                        self.clear_handler(fd, True)
                    else:
                        self.ready.append(e.writer)
        except BaseException:
            # KeyboardInterrupt from a protocol, say: edges already taken from epoll for the
            # rest of this batch would never come again, so keep them as pending work
            while i < n:
                self._defer(events[i].data.u64, events[i].events)
                i += 1
            raise
        return n

    cdef void _defer(self, uint64_t data, uint32_t ev) noexcept:
        if data & 1:
            return   # level-triggered: epoll reports it again
        entry = <object><void *>data
        try:
            if type(entry) is _TCPTransport:
                (<_TCPTransport>entry)._defer_events(ev)
            elif type(entry) is _UDPTransport:
                (<_UDPTransport>entry)._defer_events(ev)
        except BaseException:
            pass

    def close(self):
        """Release every fd this loop still holds: live transports' sockets, epoll, eventfd.

        No race with call_soon_threadsafe() in another thread: wakeup() reads efd and writes to
        it without releasing the GIL, and this runs with the GIL held too.
        """
        if self.closed:
            return
        self.closed = True
        for fd, entry in list(self.fds.items()):
            if type(entry) is _TCPTransport:
                (<_TCPTransport>entry)._release()
            elif type(entry) is _UDPTransport:
                (<_UDPTransport>entry)._release()
        self.fds.clear()
        self.graveyard.clear()
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1
        if self.efd >= 0:
            close(self.efd)
            self.efd = -1


cdef int _loop_run_once(object loop, _Core core) except -1:
    """One iteration: drop cancelled timers, poll (GIL released), run due timers and ready callbacks."""
    cdef list scheduled = loop._scheduled
    cdef object ready = core.ready
    cdef Py_ssize_t sched_count = len(scheduled)
    cdef Py_ssize_t ntodo, i
    cdef object handle
    cdef double timeout, end_time, t0, dt
    cdef int timeout_ms
    cdef bint debug

    if sched_count > MIN_SCHEDULED_TIMER_HANDLES and \
            loop._timer_cancelled_count / sched_count > 0.5:
        new_scheduled = []
        for handle in scheduled:
            if handle._cancelled:
                handle._scheduled = False
            else:
                new_scheduled.append(handle)
        _heapify(new_scheduled)
        loop._scheduled = scheduled = new_scheduled
        loop._timer_cancelled_count = 0
    else:
        while scheduled and scheduled[0]._cancelled:
            loop._timer_cancelled_count -= 1
            handle = _heappop(scheduled)
            handle._scheduled = False

    if ready or loop._stopping:
        timeout_ms = 0
    elif scheduled:
        timeout = <double>scheduled[0]._when - _monotonic()
        if timeout <= 0:
            timeout_ms = 0
        else:
            if timeout > MAXIMUM_SELECT_TIMEOUT:
                timeout = MAXIMUM_SELECT_TIMEOUT
            timeout_ms = <int>ceil(timeout * 1000.0)   # round up, or we would spin until due
    else:
        timeout_ms = -1

    core.poll(timeout_ms, loop if loop._debug else None)

    if scheduled:
        end_time = _monotonic() + <double>loop._clock_resolution
        while scheduled:
            handle = scheduled[0]
            if type(handle) is TimerHandle:
                if (<TimerHandle>handle)._when >= end_time:
                    break
                handle = _heappop(scheduled)
                (<TimerHandle>handle)._scheduled = False
            else:
                if <double>handle._when >= end_time:
                    break
                handle = _heappop(scheduled)
                handle._scheduled = False
            ready.append(handle)

    ntodo = len(ready)
    if ntodo == 0:
        return 0
    debug = loop._debug
    for i in range(ntodo):
        handle = ready.popleft()
        if isinstance(handle, Handle):
            if (<Handle>handle)._cancelled:
                continue
            if not debug:
                (<Handle>handle).run_c()
                continue
        elif handle._cancelled:
            continue
        if debug:
            try:
                loop._current_handle = handle
                t0 = loop.time()
                handle._run()
                dt = loop.time() - t0
                if dt >= loop.slow_callback_duration:
                    logger.warning("Executing %s took %.3f seconds", base_events._format_handle(handle), dt)
            finally:
                loop._current_handle = None
        else:
            handle._run()
    return 0


include "_loop_handle.pxi"
include "_loop_tcp.pxi"
include "_loop_udp.pxi"


cdef object _accept_batch(object loop, object protocol_factory, object sock, object server, int backlog):
    """accept4(SOCK_NONBLOCK|SOCK_CLOEXEC) until EAGAIN: no Python accept() and setblocking() per
    connection; the socket object is made from the fd (type | SOCK_NONBLOCK: timeout 0.0, no
    syscall)."""
    cdef int lfd = sock.fileno()
    cdef int fd, err, i
    cdef sockaddr_storage addr
    cdef socklen_t addrlen
    if lfd < 0:
        return None
    family = sock.family
    stype = sock.type | SOCK_NONBLOCK
    proto = sock.proto
    i = 0
    while i < backlog:
        addrlen = sizeof(addr)
        fd = accept4(lfd, <sockaddr *>&addr, &addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC)
        if fd < 0:
            err = errno
            if err == EINTR:
                continue
            if err == EAGAIN or err == ECONNABORTED:
                return None
            exc = _oserror(err)
            if err == EMFILE or err == ENFILE or err == ENOBUFS or err == ENOMEM:
                # Out of descriptors: the pending connection stays in the backlog and the
                # level-triggered socket would wake us at once, forever.  Stop accepting for
                # a while instead; existing connections are untouched.
                loop.call_exception_handler({
                    "message": "socket.accept() out of system resource",
                    "exception": exc,
                    "socket": _TransportSocket(sock),
                })
                loop._remove_reader(lfd)
                loop.call_later(ACCEPT_RETRY_DELAY, loop._resume_accepting,
                                protocol_factory, sock, server, backlog)
                return None
            raise exc  # logged by the loop's exception handler, the loop goes on
        i += 1
        try:
            conn = _socket_type(family, stype, proto, fd)
        except BaseException:
            close(fd)
            raise
        peer = _sockaddr_to_py(&addr, addrlen) if addrlen else None
        if peer is None and family != AF_INET and family != AF_INET6:
            try:
                peer = conn.getpeername()   # e.g. an AF_UNIX server passed as sock=: '' or a path
            except OSError:
                pass
        try:
            protocol = protocol_factory()
        except (SystemExit, KeyboardInterrupt):
            conn.close()
            raise
        except BaseException as exc:
            conn.close()
            loop.call_exception_handler({
                "message": "Error on transport creation for incoming connection",
                "exception": exc,
            })
            continue
        _TCPTransport(loop, conn, protocol, None, {"peername": peer}, server)
    return None


def _not_implemented(what):
    raise NotImplementedError(f"fastnet.Loop does not support {what}; use asyncio's default loop for it")


class Loop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose I/O core is edge-triggered epoll, compiled.

    Out of scope (raise NotImplementedError): TLS (``ssl=``), Unix sockets, pipes, subprocesses,
    sendfile.
    """

    def __init__(self):
        core = _Core()
        self._core = core
        super().__init__(core)
        core.ready = self._ready

    # -- the loop itself -----------------------------------------------------------------------
    def call_soon(self, callback, *args, context=None):
        if self._debug:  # asyncio's checks and creation tracebacks
            return super().call_soon(callback, *args, context=context)
        if self._closed:
            raise RuntimeError("Event loop is closed")
        handle = _new_handle(callback, args, self, context)
        (<_Core>self._core).ready.append(handle)
        return handle

    def call_later(self, delay, callback, *args, context=None):
        if delay is None:
            raise TypeError("delay must not be None")
        if self._debug:
            return super().call_later(delay, callback, *args, context=context)
        return self._call_at(_monotonic() + delay, callback, args, context)

    def call_at(self, when, callback, *args, context=None):
        if when is None:
            raise TypeError("when cannot be None")
        if self._debug:
            return super().call_at(when, callback, *args, context=context)
        return self._call_at(when, callback, args, context)

    def _call_at(self, double when, callback, tuple args, context):
        if self._closed:
            raise RuntimeError("Event loop is closed")
        timer = _new_timer(when, callback, args, self, context)
        _heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer

    def time(self):
        return _monotonic()

    def _call_soon(self, callback, args, context):
        if self._debug:
            return super()._call_soon(callback, args, context)
        handle = _new_handle(callback, args, self, context)
        (<_Core>self._core).ready.append(handle)
        return handle

    def _run_once(self):
        _loop_run_once(self, <_Core>self._core)

    def run_forever(self):
        """Run until stop() is called (asyncio's, with the iteration loop in C)."""
        cdef _Core core = <_Core>self._core
        if _HAS_RUN_FOREVER_SETUP:          # Python 3.12+
            self._run_forever_setup()
            try:
                while True:
                    _loop_run_once(self, core)
                    if self._stopping:
                        break
            finally:
                self._run_forever_cleanup()
            return
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            events._set_running_loop(self)
            while True:
                _loop_run_once(self, core)
                if self._stopping:
                    break
        finally:
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def _process_events(self, event_list):
        raise NotImplementedError("fastnet.Loop dispatches events in _run_once")

    def create_future(self):
        return _Future(loop=self)

    def get_debug(self):
        return self._debug

    def _write_to_self(self):
        # from any thread, also after close(): the eventfd is -1 then and nothing is written
        (<_Core>self._core).wakeup()

    # -- level-triggered readers and writers (asyncio semantics) --------------------------------
    def _add_reader(self, fd, callback, *args):
        self._check_closed()
        handle = events.Handle(callback, args, self, None)
        old = (<_Core>self._core).set_handler(_fileno(fd), handle, False)
        if old is not None:
            old.cancel()
        return handle

    def _remove_reader(self, fd):
        if self.is_closed():
            return False
        old = (<_Core>self._core).clear_handler(_fileno(fd), False)
        if old is None:
            return False
        old.cancel()
        return True

    def _add_writer(self, fd, callback, *args):
        self._check_closed()
        handle = events.Handle(callback, args, self, None)
        old = (<_Core>self._core).set_handler(_fileno(fd), handle, True)
        if old is not None:
            old.cancel()
        return handle

    def _remove_writer(self, fd):
        if self.is_closed():
            return False
        old = (<_Core>self._core).clear_handler(_fileno(fd), True)
        if old is None:
            return False
        old.cancel()
        return True

    # -- transports ----------------------------------------------------------------------------
    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        return _TCPTransport(self, sock, protocol, waiter, extra, server)

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        return _UDPTransport(self, sock, protocol, address, waiter, extra)

    def _make_ssl_transport(self, *args, **kwargs):
        _not_implemented("TLS (ssl=)")

    def _accept_connection(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100,
                           ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        # One call per readiness of the listening socket: accept4() until EAGAIN (at most
        # backlog), and build each transport right here (asyncio spawns a Task per connection).
        _accept_batch(self, protocol_factory, sock, server, backlog)
        return None

    def _resume_accepting(self, protocol_factory, sock, server, backlog):
        if sock.fileno() < 0 or self.is_closed():
            return  # the server was closed while we rested
        if server is not None and not server.is_serving():
            return
        self._start_serving(protocol_factory, sock, None, server, backlog)

    # -- fast paths for numeric addresses ------------------------------------------------------
    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        try:
            return socket.getaddrinfo(host, port, family, type, proto,
                                      flags | socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
        except (socket.gaierror, UnicodeError, TypeError):
            pass  # a name to resolve: asyncio's way, in the executor
        return await super().getaddrinfo(host, port, family=family, type=type, proto=proto, flags=flags)

    async def getnameinfo(self, sockaddr, flags=0):
        wanted = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        if flags & wanted == wanted:
            return socket.getnameinfo(sockaddr, flags)
        return await super().getnameinfo(sockaddr, flags)

    # -- out of scope --------------------------------------------------------------------------
    async def create_connection(self, protocol_factory, host=None, port=None, *, ssl=None, **kwargs):
        if ssl:
            _not_implemented("TLS (ssl=)")
        return await super().create_connection(protocol_factory, host, port, ssl=ssl, **kwargs)

    async def create_server(self, protocol_factory, host=None, port=None, *, ssl=None, **kwargs):
        if ssl:
            _not_implemented("TLS (ssl=)")
        return await super().create_server(protocol_factory, host, port, ssl=ssl, **kwargs)

    async def connect_accepted_socket(self, protocol_factory, sock, *, ssl=None, **kwargs):
        if ssl:
            _not_implemented("TLS (ssl=)")
        return await super().connect_accepted_socket(protocol_factory, sock, ssl=ssl, **kwargs)

    async def start_tls(self, *args, **kwargs):
        _not_implemented("TLS (start_tls)")

    async def create_unix_connection(self, *args, **kwargs):
        _not_implemented("Unix sockets (create_unix_connection)")

    async def create_unix_server(self, *args, **kwargs):
        _not_implemented("Unix sockets (create_unix_server)")

    async def connect_read_pipe(self, *args, **kwargs):
        _not_implemented("pipes (connect_read_pipe)")

    async def connect_write_pipe(self, *args, **kwargs):
        _not_implemented("pipes (connect_write_pipe)")

    async def subprocess_exec(self, *args, **kwargs):
        _not_implemented("subprocesses (subprocess_exec)")

    async def subprocess_shell(self, *args, **kwargs):
        _not_implemented("subprocesses (subprocess_shell)")

    async def sendfile(self, *args, **kwargs):
        _not_implemented("sendfile")

    async def sock_sendfile(self, *args, **kwargs):
        _not_implemented("sendfile (sock_sendfile)")


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An event loop policy whose loops are :class:`Loop`."""

    def _loop_factory(self):
        return Loop()

    def new_event_loop(self):
        return Loop()


def new_event_loop():
    return Loop()


def install():
    """Make :class:`Loop` the default for ``asyncio.run`` / ``asyncio.new_event_loop``."""
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=None, **run_kwargs):
    """Run the coroutine *main* on a new :class:`Loop`, like ``uvloop.run``."""
    from fastnet import _loop_py
    return _loop_py._run_with(Loop, main, debug, run_kwargs)
