"""Pure-Python twin of ``fastnet._relay_c``: the echo relay loop with ``select.epoll`` and ``socket``.

It also holds what both implementations share -- binding the sockets, the SIGINT/SIGTERM wake-up,
the ``workers=N`` supervisor, :class:`EchoRelay` -- parametrized by the per-worker loop: the
compiled module passes its C loop (``relay_serve`` in ``src_c/relay.c``), this module its Python one
(:func:`_serve_socket`), which follows the same rules:

- TCP: level-triggered epoll; a readable connection gets one ``recv`` (64 KiB buffer shared by the
  loop) and one ``send`` of what was read.  A partial send keeps the rest in a buffer of that
  connection and stops reading it (EPOLLOUT only) until the rest is out, then frees it.  EOF is
  seen only after everything read before it was echoed; then the connection closes.  An error
  closes that connection only.  EMFILE & co. on accept pause accepting for 100 ms (or until a
  connection closes).
- UDP: each datagram goes back to its sender (the C loop batches 64 per recvmmsg/sendmmsg).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import signal
import socket
import threading
import time
from typing import Any, Callable, Iterator

__all__ = ["serve_echo", "EchoRelay", "RelayStats"]

log = logging.getLogger("fastnet.relay")

BUF_SIZE = 65536
UDP_BATCH = 64
ACCEPT_BACKOFF = 0.1
DEFAULT_BACKLOG = 1024
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PAUSE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_RETRY_ACCEPT_ERRNOS = (errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR)


class RelayStats:
    """What a relay did: ``connections`` accepted (TCP), ``messages`` echoed -- for TCP one
    successful read echoed back (a read returns whatever the kernel has, so one client message
    can be several reads and several messages one read), for UDP one datagram -- and ``bytes``
    echoed.  Also ``accept_pauses`` (accepting paused on EMFILE & co.), ``dropped`` (UDP replies
    the kernel refused), ``workers_restarted`` (``workers=N``: workers that died and were replaced;
    a worker that died takes its counts with it)."""

    __slots__ = ("connections", "messages", "bytes", "accept_pauses", "dropped", "workers_restarted")

    def __init__(self, connections=0, messages=0, bytes=0, accept_pauses=0, dropped=0, workers_restarted=0):
        self.connections = int(connections)
        self.messages = int(messages)
        self.bytes = int(bytes)
        self.accept_pauses = int(accept_pauses)
        self.dropped = int(dropped)
        self.workers_restarted = int(workers_restarted)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __add__(self, other: "RelayStats") -> "RelayStats":
        return RelayStats(**{n: getattr(self, n) + getattr(other, n) for n in self.__slots__})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RelayStats) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return "RelayStats(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items()) + ")"

    def __str__(self) -> str:
        return f"{self.connections} connections, {self.messages} messages, {self.bytes} bytes"


# ---------------------------------------------------------------------------- the Python loop


def _stop_signal_arrived(signal_fd: int) -> bool:
    stop = False
    while True:
        try:
            data = os.read(signal_fd, 64)
        except (BlockingIOError, InterruptedError):
            return stop
        if not data:
            return stop
        if any(b in _STOP_SIGNALS for b in data):
            stop = True


def _serve_socket(sock: socket.socket, udp: bool, stop_fd: int, signal_fd: int) -> RelayStats:
    """Serve *sock* until *stop_fd* is readable or SIGINT/SIGTERM arrives on *signal_fd*."""
    stats = RelayStats()
    ep = select.epoll()
    try:
        lfd = sock.fileno()
        ep.register(lfd, select.EPOLLIN)
        if stop_fd >= 0:
            ep.register(stop_fd, select.EPOLLIN)
        if signal_fd >= 0:
            ep.register(signal_fd, select.EPOLLIN)
        if udp:
            _udp_loop(sock, ep, stop_fd, signal_fd, stats)
        else:
            _tcp_loop(sock, ep, stop_fd, signal_fd, stats)
    finally:
        ep.close()
    return stats


class _Conn:
    __slots__ = ("sock", "pend")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pend: memoryview | None = None  # rest of a partial send


def _tcp_loop(lsock, ep, stop_fd, signal_fd, stats) -> None:
    lfd = lsock.fileno()
    conns: dict[int, _Conn] = {}
    buf = bytearray(BUF_SIZE)
    view = memoryview(buf)
    paused_until: float | None = None

    def resume() -> None:
        nonlocal paused_until
        if paused_until is not None:
            paused_until = None
            ep.modify(lfd, select.EPOLLIN)

    def close(fd: int) -> None:
        conn = conns.pop(fd)
        ep.unregister(fd)
        conn.sock.close()
        resume()

    try:
        while True:
            timeout = -1.0
            if paused_until is not None:
                timeout = paused_until - time.monotonic()
                if timeout <= 0:
                    resume()
                    timeout = -1.0
            for fd, events in ep.poll(timeout, 256):
                if fd == stop_fd or (fd == signal_fd and _stop_signal_arrived(signal_fd)):
                    return
                if fd == signal_fd:
                    continue
                if fd == lfd:
                    for _ in range(256):
                        try:
                            csock, _addr = lsock.accept()
                        except BlockingIOError:
                            break
                        except OSError as exc:
                            if exc.errno in _RETRY_ACCEPT_ERRNOS:
                                continue
                            if exc.errno in _PAUSE_ERRNOS:
                                paused_until = time.monotonic() + ACCEPT_BACKOFF
                                stats.accept_pauses += 1
                                ep.modify(lfd, 0)
                            break
                        csock.setblocking(False)
                        try:
                            csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        except OSError:
                            pass
                        conns[csock.fileno()] = _Conn(csock)
                        ep.register(csock.fileno(), select.EPOLLIN)
                        stats.connections += 1
                    continue
                conn = conns.get(fd)
                if conn is None:
                    continue
                s = conn.sock
                if conn.pend is not None:
                    try:
                        while conn.pend:
                            w = s.send(conn.pend)
                            stats.bytes += w
                            conn.pend = conn.pend[w:]
                    except BlockingIOError:
                        continue
                    except OSError:
                        close(fd)
                        continue
                    conn.pend = None
                    ep.modify(fd, select.EPOLLIN)
                    continue
                try:
                    n = s.recv_into(buf)
                except BlockingIOError:
                    continue
                except OSError:
                    close(fd)
                    continue
                if n == 0:
                    close(fd)  # EOF: everything read before it was already echoed
                    continue
                stats.messages += 1
                try:
                    w = s.send(view[:n])
                except BlockingIOError:
                    w = 0
                except OSError:
                    close(fd)
                    continue
                stats.bytes += w
                if w < n:
                    conn.pend = memoryview(bytes(view[w:n]))
                    ep.modify(fd, select.EPOLLOUT)  # stop reading until the rest is out
    finally:
        for conn in conns.values():
            conn.sock.close()


def _udp_loop(sock, ep, stop_fd, signal_fd, stats) -> None:
    lfd = sock.fileno()
    buf = bytearray(BUF_SIZE)
    view = memoryview(buf)
    while True:
        for fd, _events in ep.poll(-1, 16):
            if fd == stop_fd or (fd == signal_fd and _stop_signal_arrived(signal_fd)):
                return
            if fd != lfd:
                continue
            for _ in range(UDP_BATCH * 8):
                try:
                    n, addr = sock.recvfrom_into(buf)
                except BlockingIOError:
                    break
                except OSError:
                    continue
                try:
                    sock.sendto(view[:n], addr)
                except OSError:
                    stats.dropped += 1
                    continue
                stats.messages += 1
                stats.bytes += n


# ---------------------------------------------------------------------------- shared machinery

LoopFn = Callable[[socket.socket, bool, int, int], RelayStats]


# Linux's <linux/in.h>; the socket module does not name them
IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3


def _loopback_df(sock: socket.socket) -> None:
    """Send with DF set: on 127.0.0.0/8 the datagrams never leave the host, so DF changes nothing
    on the wire, but the kernel then gives an unconnected socket's datagrams IP ID 0 instead of
    drawing every ID from its global generator, an atomic on a cache line shared by every CPU
    that sends UDP (5-6 % of the relay's CPU under load, by perf)."""
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
    except OSError:
        pass  # not Linux: the default is as good


def _bind(host: str, port: int, udp: bool, backlog: int, reuseport: bool) -> socket.socket:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    try:
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, kind, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(errno.EINVAL, f"cannot resolve {host!r}: {exc.strerror}") from None
    family, _, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if not udp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        if udp and family == socket.AF_INET and sockaddr[0].startswith("127."):
            _loopback_df(sock)
        if not udp:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Runner:
    """The bound sockets of one relay, and running them with one loop or N worker processes."""

    def __init__(self, loop: LoopFn, host: str, port: int, udp: bool, workers: int, backlog: int) -> None:
        if int(workers) < 1:
            raise ValueError("workers must be at least 1")
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"port must be 0..65535, not {port}")
        self.loop = loop
        self.udp = bool(udp)
        self.workers = int(workers)
        self.socks: list[socket.socket] = []
        try:
            first = _bind(host, int(port), self.udp, backlog, self.workers > 1)
            self.socks.append(first)
            bound = first.getsockname()
            for _ in range(self.workers - 1):
                self.socks.append(_bind(bound[0], bound[1], self.udp, backlog, True))
        except OSError:
            self.close()
            raise
        self.address: tuple[str, int] = (bound[0], bound[1])

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []

    def run(self, stop_fd: int, signal_fd: int) -> RelayStats:
        if self.workers == 1:
            return self.loop(self.socks[0], self.udp, stop_fd, signal_fd)
        return _Supervisor(self).run(stop_fd, signal_fd)


def _set_parent_death_signal() -> None:
    # A worker whose supervisor is gone (even SIGKILLed) gets SIGTERM rather than serving forever.
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - best effort
        pass


class _Supervisor:
    """``workers=N``: N forked processes, each with its own SO_REUSEPORT socket and epoll.

    The parent keeps every socket open, so connections arriving while a dead worker is being
    replaced wait in that socket's backlog for the new worker (forked with the same socket)."""

    def __init__(self, runner: _Runner) -> None:
        self.runner = runner
        self.children: dict[int, tuple[int, int, int]] = {}  # index -> (pid, pidfd, stats read fd)
        self.total = RelayStats()
        self.wake_fds: list[int] = []  # run()'s stop_fd and signal_fd: the supervisor's, not a worker's

    def _spawn(self, index: int) -> None:
        r, w = os.pipe()
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                # Close what the worker does not own.  A sibling's stats pipe held open here
                # would spare that sibling its EPIPE and keep a reader alive after the supervisor
                # died; its pidfd is the supervisor's business alone.
                os.close(r)
                for _, sibling_pidfd, sibling_r in self.children.values():
                    os.close(sibling_pidfd)
                    os.close(sibling_r)
                for fd in self.wake_fds:
                    os.close(fd)
                code = _worker_main(self.runner, index, w, supervisor)
            except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
                try:
                    log.exception("relay worker %d failed", index)
                except BaseException:
                    pass
            finally:
                os._exit(code)
        os.close(w)
        self.children[index] = (pid, os.pidfd_open(pid), r)

    def _collect(self, index: int) -> tuple[int, RelayStats | None]:
        pid, pidfd, r = self.children.pop(index)
        _, status = os.waitpid(pid, 0)
        os.close(pidfd)
        chunks = []
        while True:
            data = os.read(r, 65536)
            if not data:
                break
            chunks.append(data)
        os.close(r)
        stats = None
        if chunks:
            try:
                stats = RelayStats(**json.loads(b"".join(chunks)))
            except (ValueError, TypeError):
                stats = None
        return status, stats

    def run(self, stop_fd: int, signal_fd: int) -> RelayStats:
        self.wake_fds = [fd for fd in (stop_fd, signal_fd) if fd >= 0]
        try:
            for i in range(self.runner.workers):
                self._spawn(i)
            while True:
                watched = [fd for fd in (stop_fd, signal_fd) if fd >= 0]
                by_pidfd = {pidfd: i for i, (_, pidfd, _) in self.children.items()}
                ready, _, _ = select.select(watched + list(by_pidfd), [], [])
                if stop_fd in ready:
                    break
                if signal_fd in ready and _stop_signal_arrived(signal_fd):
                    break
                for fd in ready:
                    if fd in by_pidfd:
                        index = by_pidfd[fd]
                        pid = self.children[index][0]
                        status, stats = self._collect(index)
                        if stats is not None:
                            self.total = self.total + stats
                        log.warning(
                            "fastnet relay: worker %d (pid %d) died (%s); restarting it",
                            index,
                            pid,
                            _describe_status(status),
                        )
                        self.total.workers_restarted += 1
                        self._spawn(index)
        finally:
            self._stop_children()
        return self.total

    def _stop_children(self) -> None:
        for pid, _, _ in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for index in list(self.children):
            pid, pidfd, _ = self.children[index]
            left = deadline - time.monotonic()
            ready, _, _ = select.select([pidfd], [], [], max(left, 0))
            if not ready:
                log.warning("fastnet relay: worker %d (pid %d) did not stop; killing it", index, pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _, stats = self._collect(index)
            if stats is not None:
                self.total = self.total + stats


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _worker_main(runner: _Runner, index: int, stats_fd: int, supervisor: int) -> int:
    _set_parent_death_signal()
    if os.getppid() != supervisor:
        return 0  # the supervisor died before the death signal was armed: nobody to serve for
    # Ctrl-C reaches the whole process group: the supervisor alone decides, and sends SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sr, sw = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    inherited = signal.set_wakeup_fd(sw, warn_on_full_buffer=False)
    if inherited >= 0:
        os.close(inherited)  # the supervisor's (or its process's) wake-up pipe, not ours
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    for i, s in enumerate(runner.socks):
        if i != index:
            s.close()
    stats = runner.loop(runner.socks[index], runner.udp, -1, sr)
    try:
        os.write(stats_fd, json.dumps(stats.as_dict()).encode())
    except BrokenPipeError:
        pass  # the supervisor is gone (killed): the death signal stopped us, and nobody reads
    return 0


@contextlib.contextmanager
def _signal_wakeup() -> Iterator[int]:
    """In the main thread: SIGINT/SIGTERM write a byte to a pipe whose read end is yielded.

    The previous handlers and wakeup fd come back afterwards.  Elsewhere: yields -1."""
    if threading.current_thread() is not threading.main_thread():
        yield -1
        return
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = {s: signal.getsignal(s) for s in _STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    try:
        for s in _STOP_SIGNALS:
            signal.signal(s, lambda signum, frame: None)
        yield r
    finally:
        signal.set_wakeup_fd(previous_fd)
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        os.close(r)
        os.close(w)


def _serve_echo(
    loop: LoopFn,
    host: str,
    port: int,
    *,
    udp: bool = False,
    workers: int = 1,
    backlog: int = DEFAULT_BACKLOG,
    ready: Callable[[tuple[str, int]], Any] | None = None,
    duration: float | None = None,
) -> RelayStats:
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be a positive number of seconds, not {duration!r}")
    # a duration longer than a timer can wait (about 292 years) is no bound at all
    timer = None
    stop_fd = -1
    if duration is not None and duration < threading.TIMEOUT_MAX:
        # the stop descriptor EchoRelay.stop() uses, made readable by a timer: the loop, or the
        # supervisor of the workers, ends as on SIGTERM and returns the statistics
        stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        timer = threading.Timer(duration, os.eventfd_write, (stop_fd, 1))
        timer.daemon = True
    try:
        runner = _Runner(loop, host, port, udp, workers, backlog)
        try:
            with _signal_wakeup() as signal_fd:
                if ready is not None:
                    ready(runner.address)
                if timer is not None:
                    timer.start()  # counted from the moment it serves, when ready() has run
                return runner.run(stop_fd, signal_fd)
        finally:
            runner.close()
    finally:
        if timer is not None:
            timer.cancel()
            if timer.is_alive():
                timer.join()
            os.close(stop_fd)


def serve_echo(
    host: str,
    port: int,
    *,
    udp: bool = False,
    workers: int = 1,
    backlog: int = DEFAULT_BACKLOG,
    ready: Callable[[tuple[str, int]], Any] | None = None,
    duration: float | None = None,
) -> RelayStats:
    """Echo every TCP byte (or UDP datagram) received on (host, port) until stopped.

    Blocks; SIGINT or SIGTERM (when called in the main thread) stop it, and it returns the
    :class:`RelayStats`.  *ready*, if given, is called with the bound ``(host, port)`` once the
    socket listens (so ``port=0`` works).  ``workers=N`` forks N processes sharing the port with
    SO_REUSEPORT; a worker that dies is logged and restarted.  With *duration* it also stops by
    itself that many seconds after it started serving, as on SIGTERM.
    """
    return _serve_echo(_serve_socket, host, port, udp=udp, workers=workers, backlog=backlog, ready=ready,
                       duration=duration)


class EchoRelay:
    """An echo relay run in a background thread::

        with EchoRelay("127.0.0.1", 0) as relay:
            host, port = relay.address
            ...
        print(relay.stats)

    ``start()`` binds (errors raise here) and starts the thread; ``stop()`` wakes the loop through
    an eventfd, waits for it and returns the :class:`RelayStats`.
    """

    _loop: LoopFn = staticmethod(_serve_socket)

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        udp: bool = False,
        workers: int = 1,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        self.host = host
        self.port = port
        self.udp = udp
        self.workers = workers
        self.backlog = backlog
        self.stats: RelayStats | None = None
        self.error: BaseException | None = None
        self._runner: _Runner | None = None
        self._thread: threading.Thread | None = None
        self._stop_fd = -1

    @property
    def address(self) -> tuple[str, int]:
        if self._runner is None:
            raise RuntimeError("EchoRelay is not started")
        return self._runner.address

    def start(self) -> "EchoRelay":
        if self._thread is not None:
            raise RuntimeError("EchoRelay already started")
        self._runner = _Runner(type(self)._loop, self.host, self.port, self.udp, self.workers, self.backlog)
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="fastnet-echo-relay", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._runner is not None
        try:
            self.stats = self._runner.run(self._stop_fd, -1)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self, timeout: float = 10.0) -> RelayStats:
        """Stop the loop (it notices within milliseconds) and return its statistics."""
        if self._thread is None or self._runner is None:
            raise RuntimeError("EchoRelay is not started")
        if self._stop_fd < 0 and self.stats is not None:
            return self.stats  # already stopped
        os.eventfd_write(self._stop_fd, 1)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the echo relay did not stop")
        self._runner.close()
        os.close(self._stop_fd)
        self._stop_fd = -1
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats

    def __enter__(self) -> "EchoRelay":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is not None and self._stop_fd >= 0:
            self.stop()
