# The compiled stream transport of fastnet.Loop (included by _loop_c.pyx).
#
# Behaviour follows asyncio's _SelectorSocketTransport (selector_events.py) method by method, so
# that asyncio stays the oracle; the I/O underneath is edge-triggered: the socket is registered
# once (EPOLLIN|EPOLLOUT|EPOLLET) and we remember whether a read may still find data.


@cython.final
cdef class _TCPTransport:
    cdef object _loop
    cdef _Core _core
    cdef object _sock
    cdef readonly int _sock_fd
    cdef object _protocol
    cdef readonly object _context  # every protocol callback runs in it (see poll())
    cdef object _data_received     # the protocol's bound methods, looked up once
    cdef object _get_buffer
    cdef object _buffer_updated
    cdef bint _buffered            # the protocol is an asyncio.BufferedProtocol
    cdef dict _extra
    cdef object _server
    cdef bint _closing
    cdef bint _reading             # not paused by pause_reading()
    cdef bint _read_pending        # an edge was seen and not drained to EAGAIN yet
    cdef bint _eof_received
    cdef bint _peer_shut           # EPOLLRDHUP/HUP seen: a short read no longer means drained
    cdef bint _eof                 # write_eof() called
    cdef bint _registered
    cdef bint _protocol_connected
    cdef bint _protocol_paused
    cdef bint _resume_scheduled
    cdef bint _started             # connection_made() has run: reads may be delivered
    cdef Py_ssize_t _conn_lost
    cdef list _buffer              # queued bytes objects; the first one is sent from _buffer_offset
    cdef Py_ssize_t _buffer_offset
    cdef Py_ssize_t _buffer_size
    cdef Py_ssize_t _high_water
    cdef Py_ssize_t _low_water
    cdef object __weakref__

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        self._loop = loop
        self._core = <_Core>loop._core
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._extra = {} if extra is None else dict(extra)
        self._extra["socket"] = _TransportSocket(sock)
        if "sockname" not in self._extra:
            try:
                self._extra["sockname"] = sock.getsockname()
            except OSError:
                self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._buffer = []
        self._buffer_offset = 0
        self._buffer_size = 0
        self._conn_lost = 0
        self._closing = False
        self._reading = True
        self._read_pending = False
        self._eof_received = False
        self._peer_shut = False
        self._eof = False
        self._protocol_paused = False
        self._resume_scheduled = False
        self._set_write_buffer_limits(None, None)
        self.set_protocol(protocol)
        self._server = server
        base_events._set_nodelay(sock)
        if server is not None:
            if _SERVER_TRACKS_TRANSPORTS:
                server._attach(self)
            else:
                server._attach()
        loop._transports[self._sock_fd] = self
        # registered now, so that a write() from connection_made() can wait for EPOLLOUT; reads
        # are held back (_read_pending) until connection_made() has run, as asyncio does
        self._core.add_transport(self._sock_fd, self)
        self._registered = True
        self._started = False
        # one context for the life of the connection, copied from its creator's (for an
        # accepted one, the server's), as uvloop does: a ContextVar a callback sets is seen
        # by the connection's later callbacks, never by another connection's
        self._context = PyContext_CopyCurrent()
        loop.call_soon(self._protocol.connection_made, self, context=self._context)
        loop.call_soon(self._start_reading, context=self._context)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._sock is not None:
            info.append("read=" + ("polling" if self.is_reading() else "idle"))
            info.append(f"write=<{'polling' if self._buffer_size else 'idle'}, bufsize={self._buffer_size}>")
        return "<{}>".format(" ".join(info))

    # -- BaseTransport ------------------------------------------------------------------------
    def get_extra_info(self, name, default=None):
        return self._extra.get(name, default)

    def set_protocol(self, protocol):
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._protocol = protocol
        if self._buffered:
            self._get_buffer = protocol.get_buffer
            self._buffer_updated = protocol.buffer_updated
            self._data_received = None
        else:
            self._data_received = protocol.data_received
            self._get_buffer = self._buffer_updated = None
        self._protocol_connected = True

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    def close(self):
        if self._closing:
            return
        self._closing = True
        if not self._buffer_size:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None, context=self._context)

    def abort(self):
        self._force_close(None)

    # -- ReadTransport ------------------------------------------------------------------------
    def is_reading(self):
        return not self._closing and self._reading

    def pause_reading(self):
        if not self.is_reading():
            return
        self._reading = False
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self._closing or self._reading:
            return
        self._reading = True
        if self._started:
            self._schedule_read()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

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
        if self._read_pending and self._started and self._reading and not self._closing \
                and not self._eof_received:
            self._do_read()

    # -- events from the core -------------------------------------------------------------------
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
            self._do_write()

    cdef int _on_events(self, uint32_t ev) except -1:
        if not self._registered:
            return 0   # a stale event of this batch: unregistered by an earlier callback
        if ev & READISH:
            self._read_pending = True
            if ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR):
                self._peer_shut = True   # FIN/RST may sit behind the data: read to the end
            if self._started and self._reading and not self._closing and not self._eof_received:
                self._do_read()
        if ev & WRITEISH and self._buffer_size and self._sock is not None:
            self._do_write()
        return 0

    cdef int _do_read(self) except -1:
        cdef ssize_t n
        cdef int i, err
        cdef Py_buffer pybuf
        cdef Py_ssize_t size
        cdef char *rbuf = self._core.rbuf
        for i in range(MAX_READS_PER_EVENT):
            if self._buffered:
                try:
                    buf = self._get_buffer(-1)
                    PyObject_GetBuffer(buf, &pybuf, PyBUF_WRITABLE)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
                    return 0
                size = pybuf.len
                if size == 0:
                    PyBuffer_Release(&pybuf)
                    self._fatal_error(RuntimeError("get_buffer() returned an empty buffer"),
                                      "Fatal error: protocol.get_buffer() call failed.")
                    return 0
                n = recv(self._sock_fd, pybuf.buf, size, 0)
                err = errno
                PyBuffer_Release(&pybuf)
            else:
                size = READ_BUFFER_SIZE
                n = recv(self._sock_fd, rbuf, READ_BUFFER_SIZE, 0)
                err = errno
            if n < 0:
                if err == EAGAIN:
                    self._read_pending = False
                    return 0
                if err == EINTR:
                    continue
                self._fatal_error(_oserror(err), "Fatal read error on socket transport")
                return 0
            if n == 0:
                self._read_pending = False
                self._read_ready__on_eof()
                return 0
            try:
                if self._buffered:
                    self._buffer_updated(n)
                else:
                    self._data_received(self._core.message(n))
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                if self._buffered:
                    self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
                else:
                    self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                return 0
            if n < size and not self._peer_shut:
                # a short read drained the socket: new data (or FIN) will raise a new edge
                self._read_pending = False
                return 0
            if not self._reading or self._closing:
                return 0   # _read_pending stays set for resume_reading()
        # more may be waiting: come back after the others had their turn
        self._schedule_read()
        return 0

    def _read_ready__on_eof(self):
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        self._eof_received = True
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    # -- WriteTransport -----------------------------------------------------------------------
    def write(self, data):
        cdef Py_buffer pybuf
        cdef ssize_t n
        cdef Py_ssize_t size
        cdef int err
        if PyBytes_CheckExact(data):
            if self._eof:
                raise RuntimeError("Cannot call write() after write_eof()")
            if PyBytes_GET_SIZE(data) == 0:
                return
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        else:
            if self._eof:
                raise RuntimeError("Cannot call write() after write_eof()")
            if not data:
                return
        if self._conn_lost:
            if self._conn_lost >= _CONNLOST_THRESHOLD:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if self._buffer_size == 0 and PyBytes_CheckExact(data):
            # nothing queued: straight from the caller's bytes
            size = PyBytes_GET_SIZE(data)
            n = send(self._sock_fd, PyBytes_AS_STRING(data), size, MSG_NOSIGNAL)
            if n == size:
                return
            if n < 0:
                err = errno
                if err == EAGAIN or err == EINTR:
                    n = 0
                else:
                    self._fatal_error(_oserror(err), "Fatal write error on socket transport")
                    return
            self._buffer.append(data)   # immutable: the caller's object and an offset, no copy
            self._buffer_offset = n
            self._buffer_size = size - n
        elif self._buffer_size == 0:
            # nothing queued: straight from the caller's buffer
            PyObject_GetBuffer(data, &pybuf, PyBUF_SIMPLE)
            size = pybuf.len
            n = send(self._sock_fd, pybuf.buf, size, MSG_NOSIGNAL)
            err = errno
            if n == size:
                PyBuffer_Release(&pybuf)
                return
            if n < 0:
                if err == EAGAIN or err == EINTR:
                    n = 0
                else:
                    PyBuffer_Release(&pybuf)
                    self._fatal_error(_oserror(err), "Fatal write error on socket transport")
                    return
            self._buffer.append(PyBytes_FromStringAndSize(<char *>pybuf.buf + n, size - n))
            self._buffer_offset = 0
            self._buffer_size = size - n
            PyBuffer_Release(&pybuf)
        else:
            if not PyBytes_CheckExact(data):
                data = bytes(data)   # the caller may reuse a bytearray/memoryview
            self._buffer.append(data)
            self._buffer_size += PyBytes_GET_SIZE(data)
        self._maybe_pause_protocol()

    def writelines(self, list_of_data):
        self.write(b"".join(list_of_data))

    cdef int _do_write(self) except -1:
        """Send from the queue until it is empty or the socket is full.

        Edge-triggered: EPOLLOUT comes again only after the socket has been full, so a call that
        stopped with the socket still writable would leave the rest of the queue waiting for an
        event that never comes.  Hence the loop over batches of MAX_IOV items."""
        cdef iovec iov[MAX_IOV]
        cdef msghdr msg
        cdef Py_ssize_t count, i, sent, left, total
        cdef ssize_t n
        cdef int err
        cdef object item
        while True:
            if self._conn_lost:
                return 0
            count = len(self._buffer)
            if count == 0:
                break
            if count > MAX_IOV:
                count = MAX_IOV
            total = -self._buffer_offset
            for i in range(count):
                item = self._buffer[i]
                iov[i].iov_base = PyBytes_AS_STRING(item)
                iov[i].iov_len = PyBytes_GET_SIZE(item)
                total += PyBytes_GET_SIZE(item)
            iov[0].iov_base = <char *>iov[0].iov_base + self._buffer_offset
            iov[0].iov_len -= self._buffer_offset
            if count == 1:
                n = send(self._sock_fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
            else:
                memset_msghdr(&msg)
                msg.msg_iov = iov
                msg.msg_iovlen = count
                n = sendmsg(self._sock_fd, &msg, MSG_NOSIGNAL)
            err = errno
            if n < 0:
                if err == EINTR:
                    continue
                if err == EAGAIN:
                    return 0
                self._buffer.clear()
                self._buffer_size = 0
                self._buffer_offset = 0
                self._fatal_error(_oserror(err), "Fatal write error on socket transport")
                return 0
            # consume n bytes from the queue
            self._buffer_size -= n
            sent = n
            while sent:
                left = PyBytes_GET_SIZE(self._buffer[0]) - self._buffer_offset
                if sent >= left:
                    sent -= left
                    del self._buffer[0]
                    self._buffer_offset = 0
                else:
                    self._buffer_offset += sent
                    sent = 0
            if n < total:
                break   # the socket is full: EPOLLOUT says when it has room again
        self._maybe_resume_protocol()   # may append to the buffer
        if not self._buffer_size:
            if self._closing:
                self._call_connection_lost(None)
            elif self._eof:
                shutdown(self._sock_fd, SHUT_WR)
        return 0

    def write_eof(self):
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer_size:
            shutdown(self._sock_fd, SHUT_WR)

    def can_write_eof(self):
        return True

    def get_write_buffer_size(self):
        return self._buffer_size

    def get_write_buffer_limits(self):
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        self._set_write_buffer_limits(high, low)
        self._maybe_pause_protocol()

    def _set_write_buffer_limits(self, high=None, low=None):
        if high is None:
            if low is None:
                high = 64 * 1024
            else:
                high = 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low

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
                "message": "protocol.pause_writing() failed",
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
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
                    "message": "protocol.resume_writing() failed",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                })

    # -- endings --------------------------------------------------------------------------------
    def _fatal_error(self, exc, message="Fatal error on transport"):
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })
        self._force_close(exc)

    def _force_close(self, exc):
        if self._conn_lost:
            return
        if self._buffer_size:
            self._buffer.clear()
            self._buffer_size = 0
            self._buffer_offset = 0
        self._closing = True
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc, context=self._context)

    def _call_connection_lost(self, exc):
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._release()
            self._protocol = None
            self._loop = None
            server = self._server
            if server is not None:
                if _SERVER_TRACKS_TRANSPORTS:
                    server._detach(self)
                else:
                    server._detach()
                self._server = None

    cdef void _release(self) noexcept:
        """Forget the fd in epoll and close the socket (also used by Loop.close())."""
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

    def __del__(self):
        if self._sock is not None:
            warnings.warn(f"unclosed transport {self!r}", ResourceWarning)
            self._release()


cdef inline void memset_msghdr(msghdr *msg) noexcept:
    msg.msg_name = NULL
    msg.msg_namelen = 0
    msg.msg_iov = NULL
    msg.msg_iovlen = 0
    msg.msg_control = NULL
    msg.msg_controllen = 0
    msg.msg_flags = 0
