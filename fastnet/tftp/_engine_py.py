"""TFTP transfer engine, pure Python: the twin of ``fastnet.tftp._engine_c`` (same API, same packets).

Import it through the selector, ``from fastnet.tftp import engine``.  See ``src_c/tftp_engine.h``
for the protocol rules both implementations follow.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from .. import _recverr

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
RUNNING = -1
DONE = 0
TIMEOUT = 1
STOP = 2
IO_ERROR = 3
CANCELLED = 4
SOCK_ERROR = 5
PROGRESS = 6
REFUSED = 7
FIRST_MAX = 2048

_READ_AHEAD_MIN = 64 * 1024  # as in the compiled engine: see tftp_session_init
_READ_WHOLE = 32768  # blocks this large are read a window at a time
_STAGE_SIZE = 256 * 1024
_MAX_SLOTS = 64
_ERROR_5 = b"\x00\x05\x00\x05unknown transfer ID\x00"


def _same(a: tuple, b: tuple) -> bool:
    return a[1] == b[1] and a[0] == b[0]


class Session:
    """One transfer's DATA/ACK exchange; see ``fastnet.tftp._engine_c.Session``."""

    def __init__(
        self,
        role: str,
        sock: socket.socket,
        fd: int,
        peer: tuple,
        *,
        blksize: int,
        windowsize: int,
        timeout: float,
        retries: int,
        max_backoff: float = 8.0,
        first: bytes | None = None,
        first_sent: bool = False,
        file_start: int = 0,
        start_block: int = 1,
        strict: bool = False,
        ack_last: bool = False,
        oack_reack: bool = False,
        report_interval: float = 0.0,
        zero_copy: bool = True,  # the compiled engine's splice path; here blocks are always read
        guard_first_window: bool = False,
    ) -> None:
        if role not in (SENDER, RECEIVER):
            raise ValueError(f"role must be {SENDER!r} or {RECEIVER!r}")
        if first is not None and len(first) > FIRST_MAX:
            raise ValueError("first packet too long")
        if not 8 <= blksize <= 65464 or windowsize < 1 or not timeout > 0:
            raise OSError(errno.EINVAL, "cannot start the transfer engine")
        self.role = role
        self._sock = sock
        self._fd = fd
        self._peer = (peer[0], peer[1])
        self._blksize = blksize
        self._window = windowsize
        self._timeout = float(timeout)
        self._max_backoff = max(1.0, max_backoff)
        self._retries = retries
        self._report = report_interval
        self._file_start = file_start
        self._first = bytes(first) if first else b""
        self._first_sent = first_sent
        self._strict = strict
        self._ack_last = ack_last
        self._oack_reack = oack_reack
        self._cancel = False
        self._data_acked = False
        self._guard = guard_first_window
        self._early_resent = False  # a whole window went again before any DATA was ACKed
        self.outcome = RUNNING
        self.error_errno = 0
        self.bytes = 0
        self.blocks = 0
        self.retransmissions = 0
        self.stop_packet: bytes | None = None
        self._started = False
        self._base = max(1, start_block)
        self._sent_hi = self._base - 1
        self._last = 0
        self._last_len = 0
        self._dup_resent = False
        self._gap_acked = False
        self._in_window = 0
        self._tries = 0
        self._icmp = False  # a call failed on an ICMP error: read the error queue
        self._wait = self._timeout
        self._deadline = 0.0
        self._next_report = 0.0
        self._slice = min(0.05, max(0.001, self._timeout / 4))
        self._buf = b""
        self._buf_off = -1
        self._eof = False
        self._stage: list[bytes] = []
        self._stage_have = 0
        self._orig_timeout = sock.gettimeout()
        sock.settimeout(self._slice)
        if role == SENDER:
            want = windowsize * blksize
            self._buf_cap = want if want >= _READ_AHEAD_MIN or blksize >= _READ_WHOLE else max(4 * want, _READ_AHEAD_MIN)
            self._buf_cap -= self._buf_cap % blksize
            self._rsize = 65540
        else:
            self._rsize = max(blksize + 4, 2048)
        self._closed = False

    @property
    def next_block(self) -> int:
        return self._base

    def cancel(self) -> None:
        self._cancel = True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._sock.settimeout(self._orig_timeout)
            except OSError:
                pass

    # -- plumbing

    def _late_icmp(self, exc: OSError) -> bool:
        """Whether *exc* reports an ICMP error (for an earlier datagram: see ``fastnet._recverr``);
        the run then reads the error queue before it goes on."""
        if exc.errno in _recverr.LATE_ERRNOS:
            self._icmp = True
            return True
        return False

    def _peer_refused(self) -> bool:
        self._icmp = False
        return _recverr.refused(self._sock, self._peer)

    def _refused(self) -> int:
        """The run is about to end as REFUSED (the peer's port is closed): a peer that said
        goodbye with an ERROR first ends it on that ERROR (STOP) instead; see
        :func:`fastnet.tftp._transfer.queued_error`."""
        from ._transfer import queued_error_datagram

        data = queued_error_datagram(self._sock, self._peer)
        if data is not None:
            return self._stop(data)
        self.outcome = REFUSED
        return REFUSED

    def _send(self, packet: bytes, addr: tuple | None = None) -> None:
        to = self._peer if addr is None else addr
        try:
            self._sock.sendto(packet, to)
        except OSError as exc:
            if _recverr.send_again(self._sock, packet, to, exc):
                self._icmp = True
            # other failures: lost, a timeout resends it

    def _ack(self, block: int) -> None:
        self._send(b"\x00\x04" + (block & 0xFFFF).to_bytes(2, "big"))

    def _stray(self, data: bytes, addr: tuple) -> None:
        if len(data) >= 2 and data[0] == 0 and data[1] == 5:
            return
        self._send(_ERROR_5, addr)

    def _progress(self, t: float) -> None:
        self._tries = 0
        self._wait = self._timeout
        self._deadline = t + self._wait

    def _stop(self, data: bytes) -> int:
        self.stop_packet = bytes(data)
        self.outcome = STOP
        return STOP

    def _other(self, data: bytes) -> int | None:
        from . import codec

        try:
            packet = codec.decode(data)
        except codec.DecodeError:
            return self._stop(data)
        kind = type(packet)
        if kind is codec.Error:
            return self._stop(data)
        if kind is codec.ReadRequest or kind is codec.WriteRequest:
            return self._stop(data) if self._strict else None
        if kind is codec.OptionAck:
            if self.role == RECEIVER and self._oack_reack and self._base == 1 and self._first:
                self._send(self._first)
        return None

    def _recv(self, size: int) -> tuple[bytes, tuple] | None:
        try:
            return self._sock.recvfrom(size)
        except (socket.timeout, BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            if self._late_icmp(exc):
                return None  # read by _peer_refused() next
            raise

    def run(self) -> int:
        if self._closed:
            self.error_errno = errno.EINVAL
            self.outcome = IO_ERROR
        if self.outcome != RUNNING:
            return self.outcome
        try:
            return self._run_sender() if self.role == SENDER else self._run_receiver()
        except OSError as exc:
            self.error_errno = exc.errno or errno.EIO
            self.outcome = SOCK_ERROR
            return SOCK_ERROR

    def _due(self, t: float) -> int | None:
        if self._cancel:
            self.outcome = CANCELLED
            return CANCELLED
        if self._report > 0 and t >= self._next_report:
            self._next_report = t + self._report
            return PROGRESS
        return None

    def _backoff(self) -> bool:
        self._tries += 1
        if self._tries > self._retries:
            return False
        self._wait = min(self._wait * 2, self._timeout * self._max_backoff)
        return True

    # -- sender

    def _fill(self, off: int, length: int) -> None:
        have = len(self._buf)
        if off >= self._buf_off >= 0 and (off + length <= self._buf_off + have or (self._eof and off <= self._buf_off + have)):
            return
        parts = []
        got = 0
        eof = False
        while got < self._buf_cap:
            chunk = os.pread(self._fd, self._buf_cap - got, off + got)
            if not chunk:
                eof = True
                break
            parts.append(chunk)
            got += len(chunk)
        self._buf = b"".join(parts)
        self._buf_off = off
        self._eof = eof

    def _send_window(self) -> int:
        bs = self._blksize
        base = self._base
        start = self._file_start + (base - 1) * bs
        self._fill(start, self._window * bs)
        buf = self._buf
        sock = self._sock
        peer = self._peer
        sent = 0
        k = base
        rel = start - self._buf_off
        for k in range(base, base + self._window):
            lo = rel + (k - base) * bs
            payload = buf[lo : lo + bs]
            packet = b"\x00\x03" + (k & 0xFFFF).to_bytes(2, "big") + payload
            try:
                sock.sendto(packet, peer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if _recverr.send_again(sock, packet, peer, exc):
                    self._icmp = True
            sent += 1
            if len(payload) < bs:
                self._last = k
                self._last_len = len(payload)
                break
        self._sent_hi = base + sent - 1
        return sent

    def _resend_window(self) -> int:
        """The window again (a timeout, or the ACK of the block before it); until the peer has
        acknowledged a DATA block, its first block alone (see the C engine's resend_window)."""
        if not self._guard or self._data_acked or self._window == 1 or not self._early_resent:
            self._early_resent = True
            return self._send_window()
        from ._transfer import resend_first_block

        return resend_first_block(self)

    def _run_sender(self) -> int:
        monotonic = time.monotonic
        try:
            if not self._started:
                self._started = True
                if self._first:
                    if not self._first_sent:
                        self._send(self._first)
                    self._first_sent = True
                else:
                    self._send_window()
                self._deadline = monotonic() + self._wait
            while True:
                t = monotonic()
                due = self._due(t)
                if due is not None:
                    return due
                if self._icmp and self._peer_refused():
                    return self._refused()
                if t >= self._deadline:
                    if not self._backoff():
                        self.outcome = TIMEOUT
                        return TIMEOUT
                    if self._first:
                        self.retransmissions += 1
                        self._send(self._first)
                    else:
                        self.retransmissions += self._resend_window()
                    self._deadline = t + self._wait
                    continue
                got = self._recv(self._rsize)
                if got is None:
                    continue
                data, addr = got
                if not _same(addr, self._peer):
                    self._stray(data, addr)
                    continue
                if len(data) == 4 and data[0] == 0 and data[1] == 4:
                    block = (data[2] << 8) | data[3]
                    if self._first:
                        if block == 0:
                            self._first = b""
                            self._progress(t)
                            self._send_window()
                        continue
                    base = self._base
                    delta = (block - base + 1) & 0xFFFF
                    if 0 < delta <= self._sent_hi - base + 1:
                        self._data_acked = True
                        base += delta
                        self._base = base
                        self.blocks = base - 1
                        self.bytes = (base - 1) * self._blksize
                        self._progress(t)
                        if self._last and base > self._last:
                            self.blocks = self._last
                            self.bytes = (self._last - 1) * self._blksize + self._last_len
                            self.outcome = DONE
                            return DONE
                        self._dup_resent = False
                        self._send_window()
                    elif delta == 0 and self._window > 1 and not self._dup_resent:
                        self._dup_resent = True
                        self.retransmissions += self._resend_window()
                    continue
                r = self._other(data)
                if r is not None:
                    return r
        except OSError as exc:
            if exc.errno is None or isinstance(exc, (socket.timeout, ConnectionError)):
                raise
            self.error_errno = exc.errno
            self.outcome = IO_ERROR
            return IO_ERROR

    # -- receiver

    def _flush(self) -> bool:
        if self._stage:
            data = b"".join(self._stage)
            self._stage = []
            self._stage_have = 0
            view = memoryview(data)
            done = 0
            try:
                while done < len(data):
                    done += os.write(self._fd, view[done:])
            except OSError as exc:
                self.error_errno = exc.errno or errno.EIO
                self.outcome = IO_ERROR
                return False
        return True

    def _stage_write(self, payload: bytes) -> bool:
        if self._stage_have + len(payload) > max(_STAGE_SIZE, 2 * self._blksize) and not self._flush():
            return False
        self._stage.append(payload)
        self._stage_have += len(payload)
        self.bytes += len(payload)
        return True

    def _run_receiver(self) -> int:
        monotonic = time.monotonic
        if not self._started:
            self._started = True
            if not self._first_sent and self._first:
                self._send(self._first)
            self._first_sent = True
            self._deadline = monotonic() + self._wait
        bs = self._blksize
        window = self._window
        while True:
            t = monotonic()
            due = self._due(t)
            if due is not None:
                return due
            if self._icmp and self._peer_refused():
                if not self._flush():
                    return IO_ERROR
                return self._refused()
            if t >= self._deadline:
                if not self._backoff():
                    if not self._flush():
                        return IO_ERROR
                    self.outcome = TIMEOUT
                    return TIMEOUT
                self.retransmissions += 1
                if self._base == 1 and self._first:
                    self._send(self._first)
                else:
                    self._ack(self._base - 1)
                self._in_window = 0
                self._deadline = t + self._wait
                continue
            got = self._recv(self._rsize + 1)
            if got is None:
                continue
            data, addr = got
            if not _same(addr, self._peer):
                self._stray(data, addr)
                continue
            if len(data) > self._rsize and not (data[0] == 0 and data[1] == 3):
                continue  # not a DATA: too long for anything of this transfer, dropped
            if len(data) >= 4 and data[0] == 0 and data[1] == 3:
                if len(data) - 4 > bs:
                    # longer than the negotiated blksize, from the peer's TID: a broken peer, whose
                    # transfer would only stall (dropping it, then timing out); the caller answers it
                    if not self._flush():
                        return IO_ERROR
                    return self._stop(data)
                block = (data[2] << 8) | data[3]
                base = self._base
                if block == base & 0xFFFF:
                    payload = data[4:]
                    if not self._stage_write(payload):
                        return IO_ERROR
                    self._base = base + 1
                    self.blocks += 1
                    self._in_window += 1
                    self._gap_acked = False
                    self._progress(t)
                    if len(payload) < bs:
                        if not self._flush():
                            return IO_ERROR
                        if self._ack_last:
                            self._ack(block)
                        self.outcome = DONE
                        return DONE
                    if self._in_window >= window:
                        self._in_window = 0
                        self._ack(block)
                elif window == 1:
                    if base > 1 and block == (base - 1) & 0xFFFF:
                        self._ack(base - 1)
                elif not self._gap_acked and ((block - base) & 0xFFFF) < window:
                    self._gap_acked = True
                    self._in_window = 0
                    self._ack(base - 1)
                    self.retransmissions += 1
                continue
            r = self._other(data)
            if r is not None:
                if not self._flush():
                    return IO_ERROR
                return r

