# The compiled datagram transport of fastnet.Loop (included by _loop_c.pyx).
#
# Behaviour follows asyncio's _SelectorDatagramTransport; the socket is registered once,
# edge-triggered, and each read edge is drained with recvfrom() into the loop's buffer until EAGAIN.
# sendto() calls sendto(2) (send(2) when connected) straight from the caller's buffer; a numeric
# address is converted to a sockaddr once and kept while the caller passes the same object; any
# other address (a name, "<broadcast>", a wrong type) goes through Python's socket.sendto.


cdef object _sockaddr_to_py(sockaddr_storage *addr, socklen_t addrlen=sizeof(sockaddr_storage)):
    """The Python form of a socket address, as the socket module gives it; None for a family
    other than IPv4, IPv6 and Unix."""
    cdef char host[64]
    cdef sockaddr_in *sin
    cdef sockaddr_in6 *sin6
    cdef const char *path
    cdef Py_ssize_t n
    if addr.ss_family == AF_INET:
        sin = <sockaddr_in *>addr
        inet_ntop(AF_INET, &sin.sin_addr, host, sizeof(host))
        return (host.decode("ascii"), ntohs(sin.sin_port))
    if addr.ss_family == AF_INET6:
        sin6 = <sockaddr_in6 *>addr
        inet_ntop(AF_INET6, &sin6.sin6_addr, host, sizeof(host))
        return (host.decode("ascii"), ntohs(sin6.sin6_port), ntohl(sin6.sin6_flowinfo), sin6.sin6_scope_id)
    if addr.ss_family == AF_UNIX:
        path = (<const char *>addr) + sizeof(sa_family_t)   # sun_path
        n = <Py_ssize_t>addrlen - <Py_ssize_t>sizeof(sa_family_t)
        if n > 0 and path[0] == 0:
            return PyBytes_FromStringAndSize(path, n)   # Linux's abstract namespace: bytes
        n = strnlen(path, n) if n > 0 else 0            # a path ('' for an unbound sender)
        return os.fsdecode(PyBytes_FromStringAndSize(path, n))
    return None


# asyncio drops an empty datagram up to Python 3.12 and sends it from 3.13 on (gh-113812)
cdef bint _SEND_EMPTY_DATAGRAMS = sys.version_info >= (3, 13)


@cython.final
cdef class _UDPTransport:
    cdef object _loop
    cdef _Core _core
    cdef object _sock
    cdef readonly int _sock_fd
    cdef object _protocol
    cdef readonly object _context  # every protocol callback runs in it (see poll())
    cdef dict _extra
    cdef object _address           # the connected peer (remote_addr), or None
    cdef bint _closing
    cdef bint _reading
    cdef bint _started
    cdef bint _read_pending
    cdef bint _resume_scheduled
    cdef bint _registered
    cdef bint _protocol_paused
    cdef Py_ssize_t _conn_lost
    cdef object _buffer            # deque of (bytes, addr)
    cdef Py_ssize_t _buffer_size
    cdef Py_ssize_t _high_water
    cdef Py_ssize_t _low_water
    cdef bint _connected           # peername set: send(), no address
    cdef int _family
    cdef object _last_addr         # the address object last converted into _sa (None: nothing)
    cdef sockaddr_storage _sa
    cdef socklen_t _salen
    cdef object __weakref__

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        self._loop = loop
        self._core = <_Core>loop._core
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._extra = {} if extra is None else dict(extra)
        self._extra["socket"] = _TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._connected = bool(self._extra["peername"])
        self._family = sock.family
        self._last_addr = None
        self._salen = 0
        self._protocol = protocol
        self._address = address
        self._closing = False
        self._reading = True
        self._started = False
        self._read_pending = False
        self._resume_scheduled = False
        self._protocol_paused = False
        self._conn_lost = 0
        self._buffer = collections.deque()
        self._buffer_size = 0
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024
        loop._transports[self._sock_fd] = self
        self._core.add_transport(self._sock_fd, self)
        self._registered = True
        # one context for the life of the connection, copied from its creator's (for an
        # accepted one, the server's), as uvloop does: a ContextVar a callback sets is seen
        # by the connection's later callbacks, never by another connection's
        self._context = PyContext_CopyCurrent()
        loop.call_soon(self._protocol.connection_made, self, context=self._context)
        loop.call_soon(self._start_reading, context=self._context)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        state = "closed" if self._sock is None else ("closing" if self._closing else "open")
        return f"<_UDPTransport {state} fd={self._sock_fd}>"

    def get_extra_info(self, name, default=None):
        return self._extra.get(name, default)

    def set_protocol(self, protocol):
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    def is_reading(self):
        return not self._closing and self._reading

    def pause_reading(self):
        if not self._closing:
            self._reading = False

    def resume_reading(self):
        if self._closing or self._reading:
            return
        self._reading = True
        if self._started:
            self._schedule_read()

    def _start_reading(self):
        self._started = True
        if self._reading and not self._closing:
            self._schedule_read()

    cdef int _schedule_read(self) except -1:
        if self._read_pending and not self._resume_scheduled:
            self._resume_scheduled = True
            self._loop.call_soon(self._pending_read, context=self._context)
        return 0

    def _pending_read(self):
        self._resume_scheduled = False
        if self._read_pending and self._started and self._reading and not self._closing:
            self._do_read()

    def get_write_buffer_size(self):
        return self._buffer_size

    def get_write_buffer_limits(self):
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()

    cdef int _defer_events(self, uint32_t ev) except -1:
        """An event that could not be handled in its batch: handle it on the next iteration."""
        if not self._registered:
            return 0
        if ev & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP):
            self._read_pending = True
            if self._started and self._reading and not self._closing:
                self._schedule_read()
        if ev & (EPOLLOUT | EPOLLERR | EPOLLHUP) and self._buffer_size and self._loop is not None:
            self._loop.call_soon(self._write_ready, context=self._context)
        return 0

    def _write_ready(self):
        if self._buffer_size and self._sock is not None:
            self._sendto_ready()

    cdef int _on_events(self, uint32_t ev) except -1:
        if not self._registered:
            return 0   # a stale event of this batch: unregistered by an earlier callback
        if ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
            self._read_pending = True
            if self._started and self._reading and not self._closing:
                self._do_read()
        if ev & (EPOLLOUT | EPOLLERR) and self._buffer_size and self._sock is not None:
            self._sendto_ready()
        return 0

    cdef int _do_read(self) except -1:
        cdef sockaddr_storage addr
        cdef socklen_t addrlen
        cdef ssize_t n
        cdef int i, err
        cdef char *rbuf = self._core.rbuf
        for i in range(64):
            addrlen = sizeof(addr)
            n = recvfrom(self._sock_fd, rbuf, READ_BUFFER_SIZE, 0, <sockaddr *>&addr, &addrlen)
            if n < 0:
                err = errno
                if err == EAGAIN:
                    self._read_pending = False
                    return 0
                if err == EINTR:
                    continue
                # ICMP errors (ECONNREFUSED ...) belong to one datagram, not to the endpoint
                try:
                    self._protocol.error_received(_oserror(err))
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self._callback_failed(exc, "error_received")
            else:
                if addrlen == 0 or self._address is not None:
                    peer = self._extra["peername"] if self._address is not None else None
                else:
                    peer = _sockaddr_to_py(&addr, addrlen)
                try:
                    self._protocol.datagram_received(PyBytes_FromStringAndSize(rbuf, n), peer)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self._callback_failed(exc, "datagram_received")
            if not self._reading or self._closing:
                return 0
        self._schedule_read()
        return 0

    cdef int _callback_failed(self, object exc, str name) except -1:
        """A protocol callback raised: one datagram's problem, as in asyncio, where the exception
        reaches the loop's exception handler and the endpoint goes on serving."""
        self._loop.call_exception_handler({
            "message": f"Exception in callback {type(self._protocol).__qualname__}.{name}()",
            "exception": exc, "transport": self, "protocol": self._protocol,
        })
        return 0

    cdef bint _convert(self, object addr) except -1:
        """Fill _sa from *addr* if it is a numeric address of the socket's family; False else."""
        cdef Py_ssize_t n, hlen
        cdef const char *host
        cdef sockaddr_in *sin
        cdef sockaddr_in6 *sin6
        cdef long port, flowinfo = 0, scope_id = 0
        if type(addr) is not tuple:
            return False
        n = len(<tuple>addr)
        h = (<tuple>addr)[0]
        p = (<tuple>addr)[1] if n > 1 else None
        if type(h) is not str or type(p) is not int:
            return False
        port = p
        if port < 0 or port > 65535:
            return False
        try:
            host = PyUnicode_AsUTF8AndSize(h, &hlen)
        except UnicodeError:
            return False   # lone surrogates ...: Python's own error
        if <size_t>hlen != strlen(host):
            return False   # an embedded NUL: Python's own error
        if self._family == AF_INET and n == 2:
            sin = <sockaddr_in *>&self._sa
            memset(sin, 0, sizeof(sockaddr_in))
            if inet_pton(AF_INET, host, &sin.sin_addr) != 1:
                return False
            sin.sin_family = AF_INET
            sin.sin_port = htons(<unsigned short>port)
            self._salen = sizeof(sockaddr_in)
        elif self._family == AF_INET6 and 2 <= n <= 4:
            if n > 2:
                if type((<tuple>addr)[2]) is not int:
                    return False
                flowinfo = (<tuple>addr)[2]
                if flowinfo < 0 or flowinfo > 0xfffff:
                    return False
            if n > 3:
                if type((<tuple>addr)[3]) is not int:
                    return False
                scope_id = (<tuple>addr)[3]
                if scope_id < 0 or scope_id > 0xffffffff:
                    return False
            sin6 = <sockaddr_in6 *>&self._sa
            memset(sin6, 0, sizeof(sockaddr_in6))
            if inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1:
                return False
            sin6.sin6_family = AF_INET6
            sin6.sin6_port = htons(<unsigned short>port)
            sin6.sin6_flowinfo = htonl(<uint32_t>flowinfo)
            sin6.sin6_scope_id = <uint32_t>scope_id
            self._salen = sizeof(sockaddr_in6)
        else:
            return False
        self._last_addr = addr
        return True

    cdef int _send_one(self, object data, const char *buf, Py_ssize_t size, object addr) except -1:
        """One datagram with sendto(2)/send(2): 0 sent, 1 would block; other errors raised as
        Python's socket methods raise them (an address we cannot convert goes through them)."""
        cdef ssize_t n
        cdef int err
        if self._connected:
            n = send(self._sock_fd, buf, size, 0)
        else:
            if addr is not self._last_addr or self._salen == 0:
                self._last_addr = None
                if not self._convert(addr):
                    # a name to resolve, "<broadcast>", a bad address ...: Python's own way
                    self._sock.sendto(data, addr)
                    return 0
            n = sendto(self._sock_fd, buf, size, 0, <sockaddr *>&self._sa, self._salen)
        if n >= 0:
            return 0
        err = errno
        if err == EAGAIN or err == EINTR:
            return 1
        raise _oserror(err)

    def sendto(self, data, addr=None):
        cdef Py_buffer pybuf
        cdef int r
        if PyBytes_CheckExact(data):
            if PyBytes_GET_SIZE(data) == 0 and not _SEND_EMPTY_DATAGRAMS:
                return
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        elif not data and not _SEND_EMPTY_DATAGRAMS:
            return
        if self._address is not None:
            if addr is not None and addr is not self._address and addr != self._address:
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        if self._conn_lost and (self._address is not None or self._sock is None):
            # closed: its descriptor may already be another socket's, so nothing goes out
            if self._conn_lost >= _CONNLOST_THRESHOLD:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer_size:
            try:
                if PyBytes_CheckExact(data):
                    r = self._send_one(data, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), addr)
                else:
                    try:
                        PyObject_GetBuffer(data, &pybuf, PyBUF_SIMPLE)
                    except BufferError:
                        # not contiguous: Python's socket methods say what asyncio would say
                        if self._connected:
                            self._sock.send(data)
                        else:
                            self._sock.sendto(data, addr)
                        return
                    try:
                        r = self._send_one(data, <const char *>pybuf.buf, pybuf.len, addr)
                    finally:
                        PyBuffer_Release(&pybuf)
                if r == 0:
                    return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._buffer.append((bytes(data), addr))
        self._buffer_size += len(data)
        self._maybe_pause_protocol()

    def _sendto_ready(self):
        cdef int r
        while self._buffer:
            data, addr = self._buffer.popleft()
            self._buffer_size -= PyBytes_GET_SIZE(data)
            try:
                r = self._send_one(data, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), addr)
            except (BlockingIOError, InterruptedError):
                r = 1
            except OSError as exc:
                # that datagram's error (EMSGSIZE, an ICMP error of an earlier one ...): report it
                # and go on with the rest; edge-triggered, a return here with the socket writable
                # would leave the queue waiting for an EPOLLOUT edge that never comes
                try:
                    self._protocol.error_received(exc)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as cb_exc:
                    self._callback_failed(cb_exc, "error_received")
                if self._conn_lost:
                    return   # the protocol closed or aborted it: connection_lost is on its way
                continue
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
            if r:
                self._buffer.appendleft((data, addr))
                self._buffer_size += PyBytes_GET_SIZE(data)
                break
        self._maybe_resume_protocol()
        if not self._buffer and self._closing:
            self._call_connection_lost(None)

    cdef _maybe_pause_protocol(self):
        if self._buffer_size <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": "protocol.pause_writing() failed", "exception": exc,
                "transport": self, "protocol": self._protocol,
            })

    cdef _maybe_resume_protocol(self):
        if self._protocol_paused and self._buffer_size <= self._low_water:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler({
                    "message": "protocol.resume_writing() failed", "exception": exc,
                    "transport": self, "protocol": self._protocol,
                })

    def close(self):
        if self._closing:
            return
        self._closing = True
        if not self._buffer:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None, context=self._context)

    def abort(self):
        self._force_close(None)

    def _fatal_error(self, exc, message="Fatal error on transport"):
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                "message": message, "exception": exc, "transport": self, "protocol": self._protocol,
            })
        self._force_close(exc)

    def _force_close(self, exc):
        if self._conn_lost:
            return
        self._buffer.clear()
        self._buffer_size = 0
        self._closing = True
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc, context=self._context)

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._release()
            self._protocol = None
            self._loop = None

    cdef void _release(self) noexcept:
        self._closing = True
        if not self._conn_lost:
            self._conn_lost = 1
        self._buffer.clear()
        self._buffer_size = 0
        if self._registered:
            self._registered = False
            self._core.remove_transport(self._sock_fd, self)
        if self._sock is not None:
            try:
                self._sock.close()
            except BaseException:
                pass
            self._sock = None
