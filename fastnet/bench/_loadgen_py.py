"""Pure-Python twin of ``fastnet.bench._loadgen_c``: the same closed-loop echo load, in Python.

Slow (it is the load generator's own reference), but it sends the same bytes and reports the
same statistics as the compiled one, so the two can check each other.
"""

from __future__ import annotations

import collections
import errno
import operator
import os
import select
import selectors
import socket
import time
from typing import Any

from fastnet._cli import format_address

__all__ = ["run_echo", "IMPLEMENTATION_NAME"]

IMPLEMENTATION_NAME = "python"

PATTERN_SIZE = 65536
STAMP_SIZE = 8
STALL_SECS = 1.0  # an in-flight message with no byte back for this long, at the end: stalled
UDP_MAX = 65507
TCP_MAX = 64 << 20
MAX_SECS = 86400.0  # LG_MAX_SECS: a longer run is a typo (and nanosecond deadlines stay far from overflow)
_MASK40 = (1 << 40) - 1
_M64 = (1 << 64) - 1

_pattern2: bytes | None = None


def _splitmix64_block(n_words: int, seed: int) -> bytes:
    state = seed
    out = bytearray()
    for _ in range(n_words):
        state = (state + 0x9E3779B97F4A7C15) & _M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        z ^= z >> 31
        out += z.to_bytes(8, "little")
    return bytes(out)


def pattern() -> bytes:
    """The 64 KiB pseudo-random body pattern (same bytes as ``lg_pattern()`` in src_c/loadgen.c)."""
    global _pattern2
    if _pattern2 is None:
        p = _splitmix64_block(PATTERN_SIZE // 8, 0x66617374)
        _pattern2 = p + p
    return _pattern2[:PATTERN_SIZE]


def message(conn: int, seq: int, size: int) -> bytes:
    """Message *seq* of connection *conn*: an 8-byte stamp, then the pattern from a per-message offset."""
    pattern()
    assert _pattern2 is not None
    stamp = ((conn << 40) | (seq & _MASK40)).to_bytes(8, "little")
    body_len = max(size - STAMP_SIZE, 0)
    start = (seq * 2654435761 + conn * 40503) % PATTERN_SIZE
    if body_len <= PATTERN_SIZE:
        body = _pattern2[start : start + body_len]
    else:
        rotated = _pattern2[start : start + PATTERN_SIZE]
        body = (rotated * (body_len // PATTERN_SIZE + 1))[:body_len]
    return (stamp + body)[:size]


def check_port(port) -> int:
    """*port* as an int, or ValueError: the generator connects to it, so 0 ("any") is no target."""
    try:
        value = int(port, 10) if isinstance(port, str) else operator.index(port)
    except (TypeError, ValueError):
        value = None
    if value is None or not 1 <= value <= 65535:
        raise ValueError(f"port must be 1..65535, not {port}")
    return value


def check_seconds(value, name: str = "secs") -> float:
    """*value* as a float, or ValueError unless it is a finite time above 0 and at most a day."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    # written so that NaN fails too: every comparison with it is false
    if not 0 < seconds <= MAX_SECS:
        raise ValueError(f"{name} must be above 0 and at most {MAX_SECS:g} seconds (one day), not {value}")
    return seconds


def check_params(port, conns, size, secs, udp, pipeline, udp_timeout) -> None:
    """Raise ValueError with a one-line message for parameters the generator cannot run."""
    check_port(port)
    if int(conns) < 1:
        raise ValueError("conns must be at least 1")
    if int(pipeline) < 1:
        raise ValueError("pipeline must be at least 1")
    check_seconds(secs, "secs")
    if udp:
        if not STAMP_SIZE <= int(size) <= UDP_MAX:
            raise ValueError(f"UDP size must be between {STAMP_SIZE} and {UDP_MAX} bytes")
        check_seconds(udp_timeout, "udp_timeout")
    elif not 1 <= int(size) <= TCP_MAX:
        raise ValueError(f"TCP size must be between 1 and {TCP_MAX} bytes")


def _resolve(host: str, port: int, udp: bool) -> tuple[int, str]:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, kind)
    except socket.gaierror as exc:
        raise OSError(errno.EINVAL, f"cannot resolve {host!r}: {exc.strerror}") from None
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return family, sockaddr[0]
    raise OSError(errno.EAFNOSUPPORT, f"no IPv4/IPv6 address for {host!r}")


def _summarize(*, host, port, udp, conns, size, pipeline, requests, nbytes, elapsed, errors, mismatches,
               losses, late, stalled, lat_min_us, lat_mean_us, lat_max_us, p50_us, p90_us, p99_us, p999_us,
               implementation) -> dict[str, Any]:
    elapsed = float(elapsed) or 1e-9
    return {
        "implementation": implementation,
        "host": host,
        "port": int(port),
        "proto": "udp" if udp else "tcp",
        "conns": int(conns),
        "size": int(size),
        "pipeline": int(pipeline),
        "elapsed": float(elapsed),
        "requests": int(requests),
        "bytes": int(nbytes),
        "requests_per_sec": int(requests) / elapsed,
        "mb_per_sec": int(nbytes) / elapsed / 1e6,
        "latency_us": {
            "min": float(lat_min_us),
            "mean": float(lat_mean_us),
            "p50": float(p50_us),
            "p90": float(p90_us),
            "p99": float(p99_us),
            "p99.9": float(p999_us),
            "max": float(lat_max_us),
        },
        "errors": int(errors),
        "mismatches": int(mismatches),
        "losses": int(losses),
        "late": int(late),
        "stalled": int(stalled),
    }


class _Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.errors = 0
        self.mismatches = 0
        self.losses = 0
        self.late = 0
        self.stalled = 0
        self.latencies: list[int] = []


def _start_connect(family: int, ip: str, port: int, udp: bool) -> tuple[socket.socket, bool]:
    """A non-blocking socket whose connect is started, and whether its handshake is still pending.

    Never waited for here: a listener whose accept queue is full drops our SYNs, and a blocking
    connect would retry them for minutes, far past the run's deadline (start_connect() in C)."""
    sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if not udp:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex((ip, port))
    except OSError:
        sock.close()
        raise
    if err in (errno.EINPROGRESS, errno.EINTR):  # EINTR: the handshake goes on in the kernel
        return sock, True
    if err:
        sock.close()
        raise OSError(err, os.strerror(err))
    return sock, False


def _connect_error(sock: socket.socket) -> int:
    """Once a pending connect's socket is writable: 0 if it connected, else its errno."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def _connect_all(family, ip, port, udp, conns, deadline) -> list[socket.socket]:
    """*conns* connected sockets, made before *deadline* (perf_counter), else OSError: the first
    failure, or ETIMEDOUT."""
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        pending = 0
        for _ in range(conns):
            sock, waiting = _start_connect(family, ip, port, udp)
            socks.append(sock)
            if waiting:
                sel.register(sock, selectors.EVENT_WRITE)
                pending += 1
        while pending:
            now = time.perf_counter()
            if now >= deadline:
                raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
            for key, _ in sel.select(min(deadline - now, 0.05)):
                err = _connect_error(key.fileobj)
                if err:
                    raise OSError(err, os.strerror(err))
                sel.unregister(key.fileobj)
                pending -= 1
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    finally:
        sel.close()
    return socks


class _TcpConn:
    __slots__ = ("id", "sock", "send_seq", "outbuf", "inflight", "sent", "received", "dead", "connecting",
                 "last_progress")

    def __init__(self, conn_id: int, sock: socket.socket) -> None:
        self.id = conn_id
        self.sock = sock
        self.send_seq = 0
        self.outbuf = bytearray()  # bytes of started messages not yet written
        # messages written (or being written) and not yet fully echoed: [seq, start_ns, data, recv_off, bad]
        self.inflight: collections.deque[list] = collections.deque()
        self.sent = 0
        self.received = 0
        self.dead = False
        self.connecting = False  # a reconnect under way: its outcome arrives as EVENT_WRITE
        self.last_progress = time.perf_counter()


def _run_tcp(family, ip, port, conns, size, secs, pipeline, stats: _Stats) -> float:
    # connecting counts against the run's time, so that no handshake can hold it past secs
    deadline = time.perf_counter() + secs
    table = [_TcpConn(i, sock) for i, sock in enumerate(_connect_all(family, ip, port, False, conns, deadline))]
    sel = selectors.DefaultSelector()
    for c in table:
        sel.register(c.sock, selectors.EVENT_READ, c)
    alive = conns

    def pump(c: _TcpConn) -> None:
        while True:
            if not c.outbuf:
                if len(c.inflight) >= pipeline:
                    break
                data = message(c.id, c.send_seq, size)
                c.inflight.append([c.send_seq, time.perf_counter_ns(), data, 0, False])
                c.send_seq += 1
                c.outbuf += data
            try:
                n = c.sock.send(c.outbuf)
            except BlockingIOError:
                sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
                return
            except OSError:
                fail(c)
                return
            c.sent += n
            del c.outbuf[:n]
        sel.modify(c.sock, selectors.EVENT_READ, c)

    def give_up(c: _TcpConn) -> None:
        nonlocal alive
        stats.errors += 1
        c.connecting = False
        c.dead = True
        alive -= 1

    def fail(c: _TcpConn) -> None:
        # not waited for: a server that stops completing handshakes must hold up neither the
        # other connections nor the end of the run
        stats.errors += 1
        sel.unregister(c.sock)
        c.sock.close()
        c.outbuf.clear()
        c.inflight.clear()
        c.sent = c.received = 0
        c.last_progress = time.perf_counter()
        try:
            c.sock, c.connecting = _start_connect(family, ip, port, False)
        except OSError:
            give_up(c)
            return
        if c.connecting:
            sel.register(c.sock, selectors.EVENT_WRITE, c)
            return
        sel.register(c.sock, selectors.EVENT_READ, c)
        pump(c)

    def connect_done(c: _TcpConn) -> None:
        if _connect_error(c.sock):
            sel.unregister(c.sock)
            c.sock.close()
            give_up(c)
            return
        c.connecting = False
        c.last_progress = time.perf_counter()
        pump(c)

    def readable(c: _TcpConn) -> None:
        try:
            chunk = c.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            fail(c)
            return
        if not chunk:
            fail(c)
            return
        stats.bytes += len(chunk)
        c.last_progress = time.perf_counter()
        view = memoryview(chunk)
        while view:
            owed = c.sent - c.received
            if owed <= 0:
                stats.mismatches += 1  # bytes nobody sent
                break
            m = c.inflight[0]
            take = min(len(view), len(m[2]) - m[3], owed)
            if view[:take] != m[2][m[3] : m[3] + take]:
                m[4] = True
            view = view[take:]
            m[3] += take
            c.received += take
            if m[3] == len(m[2]):
                stats.latencies.append(time.perf_counter_ns() - m[1])
                stats.requests += 1
                if m[4]:
                    stats.mismatches += 1
                c.inflight.popleft()
        pump(c)

    start = time.perf_counter()
    for c in table:
        c.last_progress = start
    try:
        for c in table:
            pump(c)
        while alive > 0:
            now = time.perf_counter()
            if now >= deadline:
                break
            for key, events in sel.select(min(deadline - now, 0.05)):
                c = key.data
                if c.dead:
                    continue
                if c.connecting:
                    connect_done(c)
                elif events & selectors.EVENT_READ:
                    readable(c)
                elif events & selectors.EVENT_WRITE:
                    pump(c)
        end = time.perf_counter()
        for c in table:
            if not c.dead and c.connecting:
                # a reconnect the run ended before: one that could not be made, unless it has
                # just completed
                _, writable, _ = select.select([], [c.sock], [], 0)
                if not writable or _connect_error(c.sock):
                    stats.errors += 1
                continue
            if not c.dead and c.inflight and c.sent > c.received and end - c.last_progress >= STALL_SECS:
                stats.stalled += 1
        return end - start
    finally:
        for c in table:
            if not c.dead:
                c.sock.close()
        sel.close()


def _run_udp(family, ip, port, conns, size, secs, pipeline, udp_timeout, stats: _Stats) -> float:
    deadline = time.perf_counter() + secs
    socks = _connect_all(family, ip, port, True, conns, deadline)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    next_seq = [0] * conns
    # per connection: slot -> [seq, start_ns, data] or None
    slots: list[list[list | None]] = [[None] * pipeline for _ in range(conns)]
    timeout_ns = int(udp_timeout * 1e9)

    def send_new(i: int, slot: int, now_ns: int) -> None:
        seq = next_seq[i]
        next_seq[i] += 1
        data = message(i, seq, size)
        slots[i][slot] = [seq, now_ns, data]
        try:
            socks[i].send(data)
        except BlockingIOError:
            pass
        except OSError:
            stats.errors += 1

    def readable(i: int) -> None:
        for _ in range(64):
            try:
                data = socks[i].recv(65536)
            except BlockingIOError:
                return
            except OSError:
                stats.errors += 1
                continue
            now_ns = time.perf_counter_ns()
            if len(data) < STAMP_SIZE:
                stats.mismatches += 1
                continue
            stamp = int.from_bytes(data[:8], "little")
            for slot, entry in enumerate(slots[i]):
                if entry is not None and ((i << 40) | (entry[0] & _MASK40)) == stamp:
                    break
            else:
                if stamp >> 40 == i and (stamp & _MASK40) < (next_seq[i] & _MASK40):
                    stats.late += 1
                else:
                    stats.mismatches += 1
                continue
            stats.bytes += len(data)
            stats.requests += 1
            stats.latencies.append(now_ns - entry[1])
            if data != entry[2]:
                stats.mismatches += 1
            send_new(i, slot, now_ns)

    start = time.perf_counter()
    try:
        t0 = time.perf_counter_ns()
        for i in range(conns):
            for s in range(pipeline):
                send_new(i, s, t0)
        next_scan = 0
        while True:
            now = time.perf_counter()
            if now >= deadline:
                break
            now_ns = time.perf_counter_ns()
            if now_ns >= next_scan:
                for i in range(conns):
                    for s, entry in enumerate(slots[i]):
                        if entry is not None and now_ns - entry[1] >= timeout_ns:
                            stats.losses += 1
                            send_new(i, s, now_ns)
                next_scan = now_ns + 2_000_000
            for key, _ in sel.select(min(deadline - now, 0.002)):
                readable(key.data)
        return time.perf_counter() - start
    finally:
        for s in socks:
            s.close()
        sel.close()


def _percentile_us(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    return sorted_ns[min(int(q * len(sorted_ns)), len(sorted_ns) - 1)] / 1000.0


def run_echo(host, port, *, conns=1, size=1024, secs=5.0, udp=False, pipeline=1, udp_timeout=0.2):
    """Load an echo server at (host, port) for *secs* seconds; return the statistics as a dict.

    See :func:`fastnet.bench.loadgen.run_echo` for the keys.
    """
    check_params(port, conns, size, secs, udp, pipeline, udp_timeout)
    family, ip = _resolve(host, port, udp)
    stats = _Stats()
    try:
        if udp:
            elapsed = _run_udp(family, ip, int(port), int(conns), int(size), float(secs), int(pipeline),
                               float(udp_timeout), stats)
        else:
            elapsed = _run_tcp(family, ip, int(port), int(conns), int(size), float(secs), int(pipeline), stats)
    except ConnectionRefusedError as exc:
        raise ConnectionRefusedError(exc.errno, f"cannot load {format_address((host, port))}: connect: {exc.strerror}") from None
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, f"cannot load {format_address((host, port))}: connect: {exc.strerror}") from None
    lat = sorted(stats.latencies)
    return _summarize(
        host=host, port=port, udp=udp, conns=conns, size=size, pipeline=pipeline,
        requests=stats.requests, nbytes=stats.bytes, elapsed=elapsed, errors=stats.errors,
        mismatches=stats.mismatches, losses=stats.losses, late=stats.late, stalled=stats.stalled,
        lat_min_us=lat[0] / 1000.0 if lat else 0.0,
        lat_mean_us=sum(lat) / len(lat) / 1000.0 if lat else 0.0,
        lat_max_us=lat[-1] / 1000.0 if lat else 0.0,
        p50_us=_percentile_us(lat, 0.50), p90_us=_percentile_us(lat, 0.90),
        p99_us=_percentile_us(lat, 0.99), p999_us=_percentile_us(lat, 0.999),
        implementation="python",
    )
