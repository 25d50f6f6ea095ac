"""A blocking TFTP client: :func:`download` (RRQ) and :func:`upload` (WRQ).

    from fastnet.tftp import client
    stats = client.download("127.0.0.1", "pxelinux.0", "/tmp/pxelinux.0", blksize=1468, windowsize=16)
    print(stats.bytes, stats.seconds, stats.retransmissions, stats.options)

RFC 1350 (octet and netascii), RFC 2347 options with OACK, RFC 2348 ``blksize``, RFC 2349
``timeout``/``tsize`` and RFC 7440 ``windowsize``; block numbers roll over past 65535 to 0.

- The transfer ID (TID) is checked: the first answer from the server's address fixes its port;
  a packet from any other address gets ERROR 5 and is otherwise ignored.
- Retransmission happens only on timeout, with exponential backoff, and at most *retries* times
  in a row without progress (then :class:`~fastnet.tftp.TftpTimeout`).  A duplicate ACK never
  causes a duplicate DATA (no Sorcerer's Apprentice; see ``docs/tftp.md`` for windowed transfers).
- A download is written to a temporary file beside the target and renamed into place only when
  complete: a failed download leaves no partial file and never clobbers an existing one.
- After the last ACK of a download the client *dallies* (re-ACKs a repeated last DATA) in a
  background thread, so the call returns at once; the interpreter waits for it at exit.

The socket is blocking, with the receive timeout set in the kernel (``SO_RCVTIMEO``).  After the
first answer, an octet transfer to or from a file with a descriptor continues in the transfer
engine (:mod:`fastnet.tftp.engine`: in C, batched system calls, the GIL released); netascii and
file objects without a descriptor stay on the per-packet Python loop below.
"""

from __future__ import annotations

import errno
import io
import math
import os
import socket
import stat
import struct
import threading
import time
from typing import Any, BinaryIO, Callable, Union

from .. import _recverr
from .._cli import format_address, unbracket
from . import codec, engine
from ._transfer import (
    DALLY_MAX,
    DISK_FULL,
    DISK_FULL_ERRNOS,
    MAX_WINDOWSIZE,
    MODES,
    OVERSIZED_DATA,
    BlockSink,
    BlockSource,
    TransferStats,
    fit_window,
    free_space,
    parse_uint,
    queued_error,
    temp_beside,
)
from .errors import TftpError, TftpProtocolError, TftpRefused, TftpRemoteError, TftpTimeout

__all__ = ["download", "upload", "wait_dallying", "TransferStats", "DEFAULT_PORT"]

DEFAULT_PORT = 69
_MAX_BACKOFF = 8.0  # a single wait never exceeds this many times the base timeout
_MAX_TIMEOUT = 86400.0  # a first retransmission timeout longer than a day is a mistake
_PROGRESS_EVERY = 0.1  # seconds between progress callbacks, and between signal checks in the engine
_RCVBUF = 4 << 20  # ask for a large receive buffer: a window of big blocks arrives at once

LocalFile = Union[str, "os.PathLike[str]", BinaryIO]
Progress = Callable[[TransferStats], Any]

_timeval = struct.Struct("@ll")


Address = tuple  # (family, sockaddr), one of a host name's addresses


def _resolve(host: str, port: int, timeout: float, retries: int) -> list[Address]:
    """The addresses of *host*, in the resolver's order of preference, each once."""
    if not 0 < timeout <= _MAX_TIMEOUT:
        raise ValueError(f"timeout must be a positive number of seconds, at most {_MAX_TIMEOUT}")
    if retries < 0:
        raise ValueError("retries must be >= 0")
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1..65535, not {port}")
    host = unbracket(host)  # an IPv6 address as URLs and the command line write it: [::1]
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise TftpError(f"cannot resolve {host!r}: {exc.strerror}") from None
    addresses: list[Address] = []
    for family, _, _, _, sockaddr in infos:
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    return addresses


class _Channel:
    """One UDP socket talking to one server: TID locking, kernel-side receive timeouts."""

    def __init__(self, address: Address, timeout: float, retries: int) -> None:
        family, sockaddr = address
        self.address = address
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        except OSError:  # pragma: no cover - a kernel that refuses: keep its default
            pass
        # ICMP errors reach an unconnected socket only with IP_RECVERR: then a server that is
        # not there, or goes away, fails the transfer at once (icmp_error), not after every
        # retry has timed out
        _recverr.enable(self.sock)
        self.server = sockaddr
        self.server_ip = sockaddr[0]
        self.peer: tuple | None = None  # the server's transfer ID, once it answered
        self.timeout = timeout
        self.retries = retries
        self._current: float | None = None
        self.set_timeout(timeout)

    def set_timeout(self, seconds: float) -> None:
        if seconds == self._current:
            return
        self._current = seconds
        sec = int(seconds)
        usec = max(1, int((seconds - sec) * 1e6)) if sec == 0 else int((seconds - sec) * 1e6)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval.pack(sec, usec))

    def sendto(self, data: bytes, addr: tuple) -> None:
        """Send one datagram.  A failure that reports an earlier datagram's ICMP error sent
        nothing: the datagram goes again and the error is read (:meth:`icmp_error`)."""
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:
            if not _recverr.send_again(self.sock, data, addr, exc):
                raise
            self.icmp_error()

    def icmp_error(self) -> bool:
        """After a call on the socket failed: read the ICMP errors queued on it; False if there
        were none (the failure was something else).  A port unreachable for the server raises
        :class:`TftpRefused`: for its request port until it answered, then for its transfer ID
        (:attr:`peer`).  Errors for other addresses (strangers we answered with ERROR 5) are
        dropped: the transfer goes on."""
        errors = _recverr.drain(self.sock)
        peer = self.peer
        if peer is None:
            if _recverr.refused_by(errors, self.server):
                raise TftpRefused(f"no TFTP server at {format_address(self.server)}: connection refused")
        elif _recverr.refused_by(errors, peer):
            error = queued_error(self.sock, peer)
            if error is not None:  # it said goodbye, then closed its port: see queued_error
                raise _remote_error(error)
            raise TftpRefused(_gone(peer))
        return bool(errors)

    def close(self) -> None:
        self.sock.close()


def _request_options(
    blksize: int | None, windowsize: int | None, tsize: int | None, server_timeout: int | None
) -> dict[str, int]:
    options: dict[str, int] = {}
    if blksize is not None:
        if not codec.MIN_BLKSIZE <= blksize <= codec.MAX_BLKSIZE:
            raise ValueError(f"blksize must be in {codec.MIN_BLKSIZE}..{codec.MAX_BLKSIZE}, not {blksize}")
        options["blksize"] = blksize
    if windowsize is not None:
        if not 1 <= windowsize <= MAX_WINDOWSIZE:
            raise ValueError(f"windowsize must be in 1..{MAX_WINDOWSIZE}, not {windowsize}")
        options["windowsize"] = windowsize
    if tsize is not None:
        options["tsize"] = tsize
    if server_timeout is not None:
        if not 1 <= server_timeout <= 255:
            raise ValueError(f"server_timeout must be in 1..255 seconds, not {server_timeout}")
        options["timeout"] = server_timeout
    return options


def _accept_oack(sent: dict[str, int], oack: dict[str, str], stats: TransferStats, is_read: bool) -> None:
    """Check the server's OACK against what we asked; fill *stats*; TftpProtocolError if refused."""
    accepted: dict[str, Any] = {}
    for name, raw in oack.items():
        if name not in sent:
            if (name, raw) in (("blksize", "512"), ("windowsize", "1")):
                continue  # an unrequested default (tftpy's server sends one): harmless
            raise TftpProtocolError(f"server acknowledged option {name!r} that was not requested", 8)
        value = parse_uint(raw)
        if value is None:
            raise TftpProtocolError(f"server sent a non-numeric value {raw!r} for option {name!r}", 8)
        if name == "blksize":
            if not codec.MIN_BLKSIZE <= value <= sent[name]:
                raise TftpProtocolError(f"server chose blksize {value}, outside 8..{sent[name]}", 8)
            stats.blksize = value
        elif name == "windowsize":
            if not 1 <= value <= sent[name]:
                raise TftpProtocolError(f"server chose windowsize {value}, outside 1..{sent[name]}", 8)
            stats.windowsize = value
        elif name == "timeout":
            if value != sent[name]:
                raise TftpProtocolError(f"server changed the timeout to {value}", 8)
        elif name == "tsize":
            if is_read:
                stats.total = value
            elif value != sent[name]:
                raise TftpProtocolError(f"server changed tsize to {value}", 8)
        accepted[name] = value
    stats.options = accepted


def _gone(peer: tuple) -> str:
    return f"the TFTP server at {format_address(peer)} went away mid-transfer: connection refused"


def _same_peer(addr: tuple, peer: tuple) -> bool:
    return addr[1] == peer[1] and addr[0] == peer[0]


_dallying: "set[_Dally]" = set()


def wait_dallying(timeout: float | None = None) -> None:
    """Wait until every download's final dally (see the module docs) is over.

    The interpreter waits for them at exit anyway; a program calls this to do it at a moment of
    its choosing (the command line does, so that Ctrl-C there is handled like anywhere else).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in list(_dallying):
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


class _Dally(threading.Thread):
    """Keeps the socket after the final ACK and re-ACKs a repeated last DATA (RFC 1350 dallying):
    for 2 x timeout, doubled by each repeat (the server backs off between its retransmissions
    too), at most *retries* times.

    It also ends as soon as the server is known to be done.  A duplicate of the final ACK, sent
    now and then (after timeout / 8 but no later than 50 ms, then at doubling intervals), is
    harmless to a server that has the ACK (RFC 1123: a duplicate ACK is ignored), completes the
    transfer for one that lost it, and, once the server has closed its port, comes back as an
    ICMP port unreachable (``IP_RECVERR``).  Where no ICMP comes back, the dally runs its course;
    so it does without those copies when the server answered from the port the request went to
    (busybox tftpd under udpsvd does): there a copy would be taken for a new request.
    """

    def __init__(self, channel: _Channel, peer: tuple, last_block: int, final_ack: bytes) -> None:
        super().__init__(name="fastnet-tftp-dally", daemon=False)
        self._channel = channel
        self._peer = peer
        self._last = last_block & 0xFFFF
        self._ack = final_ack
        self._span = min(2 * channel.timeout, DALLY_MAX)
        self._renewals = channel.retries
        now = time.monotonic()
        self._until = now + self._span
        self._probe_every = min(channel.timeout / 8, 0.05)
        own_port = not _same_peer(peer, channel.server)  # the server's TID is not its request port
        self._next_probe = now + self._probe_every if own_port else math.inf

    def start(self) -> None:
        _dallying.add(self)
        super().start()

    def run(self) -> None:
        channel = self._channel
        sock = channel.sock
        try:
            while True:
                now = time.monotonic()
                left = self._until - now
                if left <= 0:
                    return
                if now >= self._next_probe:
                    self._probe_every *= 2
                    self._next_probe = now + self._probe_every
                    if not self._send_ack():
                        return
                channel.set_timeout(min(left, self._next_probe - now, 0.25))
                try:
                    data, addr = sock.recvfrom(codec.MAX_BLKSIZE + 4)
                except OSError as exc:
                    if exc.errno in _recverr.LATE_ERRNOS and _recverr.refused(sock, self._peer):
                        return  # the server's port is closed: it is done with this transfer
                    continue
                if _same_peer(addr, self._peer) and len(data) >= 4 and data[1] == 3:
                    if ((data[2] << 8) | data[3]) == self._last and self._send_ack() and self._renewals > 0:
                        self._renewals -= 1
                        self._span = min(2 * self._span, DALLY_MAX)
                        self._until = time.monotonic() + self._span
        finally:
            channel.close()
            _dallying.discard(self)

    def _send_ack(self) -> bool:
        """Send the final ACK again; False when the server is known to be gone."""
        sock = self._channel.sock
        try:
            sock.sendto(self._ack, self._peer)
        except OSError as exc:
            # an ICMP error for an earlier datagram, and this one was not sent: most likely our
            # last copy met the closed port; if not, send this one once more
            if exc.errno in _recverr.LATE_ERRNOS and _recverr.refused(sock, self._peer):
                return False
            _recverr.send_again(sock, self._ack, self._peer, exc)
        return True


class _Target:
    """Where a download goes.  A file object of the caller's is written and flushed, never closed.
    A path goes through a temporary file beside the file it names (beside a symbolic link's
    target, so that the link stays and its target is replaced), renamed onto it when complete.
    A path that is a device, a FIFO or a socket (``/dev/null``, ``mkfifo``) is written as it is:
    there is nothing to rename, and a rename would replace the device with a plain file."""

    def __init__(self, fileobj: BinaryIO, tmp: str | None = None, final: str | None = None) -> None:
        self.fileobj = fileobj
        self.tmp = tmp
        self.final = final  # None: the caller's file object

    def commit(self) -> None:
        if self.tmp is not None:
            self.fileobj.close()
            os.replace(self.tmp, self.final)  # type: ignore[arg-type]
            self.tmp = None
        elif self.final is not None:
            self.fileobj.close()
        else:
            self.fileobj.flush()

    def discard(self) -> None:
        if self.final is None:
            return
        try:
            self.fileobj.close()
        except OSError:
            pass
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


def _file_object(fileobj: Any, needs: str) -> BinaryIO:
    """*fileobj*, checked before anything is sent: binary, open, and readable or writable (*needs*)."""
    if isinstance(fileobj, io.TextIOBase):
        raise TypeError(f"a binary file object is needed, not a text one (open it with '{needs[0]}b')")
    if getattr(fileobj, "closed", False):
        raise ValueError("I/O operation on closed file")
    able = getattr(fileobj, "writable" if needs == "write" else "readable", None)
    if able is not None and not able():
        raise io.UnsupportedOperation(f"the file object is not open for {'writing' if needs == 'write' else 'reading'}")
    return fileobj  # type: ignore[no-any-return]


def _open_target(local: LocalFile | None, remote: str) -> _Target:
    if local is None:
        name = os.path.basename(remote.replace("\\", "/").rstrip("/"))
        if not name or name in (".", ".."):
            raise ValueError(f"cannot derive a local file name from {remote!r}; pass local=")
        local = name
    if hasattr(local, "write"):
        return _Target(_file_object(local, "write"))
    final = os.fsdecode(os.fspath(local))  # type: ignore[arg-type]
    if os.path.isdir(final):
        final = os.path.join(final, os.path.basename(remote.replace("\\", "/").rstrip("/")))
        if os.path.isdir(final):
            raise IsADirectoryError(f"{final} is a directory")
    try:
        mode = os.stat(final).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        return _Target(open(final, "wb", buffering=0), None, final)
    if os.path.islink(final):
        final = os.path.realpath(final)
    try:
        fd, tmp = temp_beside(os.path.abspath(final), prefix="." + os.path.basename(final) + ".")
    except OSError as exc:  # name the file asked for, not the temporary one beside it
        raise OSError(exc.errno, exc.strerror, final) from None
    return _Target(os.fdopen(fd, "wb", buffering=1 << 20), tmp, final)


def download(
    host: str,
    remote: str,
    local: LocalFile | None = None,
    *,
    port: int = DEFAULT_PORT,
    blksize: int | None = None,
    windowsize: int | None = None,
    timeout: float = 1.0,
    retries: int = 5,
    tsize: bool = True,
    mode: str = "octet",
    progress: Progress | None = None,
    server_timeout: int | None = None,
) -> TransferStats:
    """Fetch *remote* from the TFTP server *host* into *local* (a path or a binary file object).

    *local* defaults to the remote file's base name in the current directory.  *blksize* and
    *windowsize* are requested when given (the server may choose smaller values, or ignore them
    and fall back to 512-byte lockstep); *tsize* asks the server for the file size (used for
    progress and checked against the local free space).  *timeout* is the first retransmission
    timeout in seconds (doubling on each retry, *retries* at most in a row); *server_timeout*
    (1..255) requests the server's retransmission timeout with the RFC 2349 option.  *progress*
    is called with the live :class:`TransferStats` about ten times a second.

    Returns the transfer's :class:`TransferStats`.  Raises :class:`~fastnet.tftp.TftpRemoteError`
    when the server answers with an ERROR, :class:`~fastnet.tftp.TftpTimeout` when it stops
    answering, :class:`~fastnet.tftp.TftpProtocolError` for a broken reply, ``OSError`` for a
    local file problem.
    """
    mode = mode.lower()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    # tsize means nothing useful for netascii (the sizes differ), and tftpd-hpa refuses it there
    options = _request_options(blksize, windowsize, 0 if tsize and mode == "octet" else None, server_timeout)
    addresses = _resolve(host, port, timeout, retries)
    target = _open_target(local, remote)
    channel: _Channel | None = None
    dally: _Dally | None = None
    try:
        channel = _Channel(addresses[0], timeout, retries)
        if windowsize is not None:
            # never ask for a window the kernel cannot queue at once: a burst larger than the
            # receive buffer is a certain loss on every window
            options["windowsize"] = fit_window(channel.sock, blksize or codec.DEFAULT_BLKSIZE, windowsize)
        stats = TransferStats(filename=remote, direction="download", peer=channel.server)
        fileobj = target.fileobj
        sink = BlockSink(fileobj, netascii=(mode == "netascii"))
        direct = fileobj if mode == "octet" and _has_fd(fileobj) else None
        asked, others = options, iter(addresses[1:])
        while True:
            request = codec.encode_rrq(remote, mode, asked)
            try:
                dally = _receive(channel, request, asked, sink, stats, progress, target.tmp, direct)
                break
            except (TftpRemoteError, TftpRefused) as exc:
                address, asked = _next_attempt(exc, channel, stats, asked, others)
            channel.close()
            channel = _Channel(address, timeout, retries)
            stats.peer = channel.server
        sink.finish()
        target.commit()
        stats.bytes = sink.bytes_written
    except BaseException as exc:
        if channel is not None:
            _abandon(channel, exc)
        try:
            target.discard()
        finally:
            if channel is not None:
                channel.close()
        raise
    if dally is not None:
        dally.start()
    else:
        channel.close()
    return stats


def _next_attempt(
    exc: TftpRemoteError | TftpRefused, channel: _Channel, stats: TransferStats, asked: dict, others: Any
) -> tuple[Address, dict]:
    """Whether a request that failed before the transfer began goes again, and how: re-raises
    *exc* when it does not.  Returns the address to ask and the options to ask for.

    - The server refused the options outright (ERROR 8; tftpd-hpa does for tsize in netascii
      mode): the plain RFC 1350 request goes to the same address, from a fresh port (a new TID).
    - Nothing listens at this address of the host's (an ICMP port unreachable): the next
      address the host name resolved to is asked, as a TCP client tries each in turn
      ('localhost' is often ::1 first, and a server may listen on 127.0.0.1 alone).
    """
    if isinstance(exc, TftpRefused):
        address = next(others, None) if channel.peer is None else None
        if address is not None:
            return address, asked
    elif exc.code == 8 and asked and not stats.blocks and not stats.options:
        return channel.address, {}
    raise exc


def _remote_error(packet: Any) -> TftpRemoteError:
    return TftpRemoteError(packet.message, int(packet.code))


def _send_error(sock: socket.socket, addr: tuple, code: int, message: str) -> None:
    try:
        sock.sendto(codec.encode_error(code, message), addr)
    except OSError:
        pass


def _abandon(channel: _Channel, exc: BaseException) -> None:
    """A transfer the server answered ends here for a reason of ours (the disk, the local file,
    Ctrl-C): tell the server with an ERROR (RFC 1350), which ends its side at once, where
    silence would keep it retransmitting into a closed port and holding a session.  A TftpError
    needs none from here: the server's own ERROR, a timeout or a protocol error (those sent
    theirs), a server that is gone."""
    if channel.peer is None or isinstance(exc, TftpError):
        return
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        code, message = 3, DISK_FULL
    elif isinstance(exc, OSError):
        code, message = 0, f"client: {exc.strerror or exc}"
    else:
        code, message = 0, "transfer cancelled by the client"
    _send_error(channel.sock, channel.peer, code, message)


def _has_fd(fileobj: Any) -> bool:
    """Whether *fileobj* is a file with a real descriptor the engine can use directly."""
    try:
        fd = fileobj.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False
    return isinstance(fd, int) and fd >= 0


def _engine_run(eng: Any, stats: TransferStats, progress: Progress | None, report: Callable[[], None]) -> int:
    """Run *eng* to its outcome, coming back every _PROGRESS_EVERY seconds with or without a progress
    callback: the compiled engine runs without the GIL and goes on through EINTR, so these returns
    are where Python runs its signal handlers (Ctrl-C, SIGTERM) during a transfer."""
    try:
        while True:
            outcome = eng.run()
            if outcome != engine.PROGRESS:
                return outcome
            if progress is not None:
                report()
                progress(stats)
    finally:
        eng.close()


def _oversized(sock: socket.socket, peer: tuple, block: int) -> TftpProtocolError:
    """A DATA longer than the block size: a broken server (dropping it would only stall)."""
    _send_error(sock, peer, 4, OVERSIZED_DATA)
    return TftpProtocolError(f"server sent DATA block {block} longer than the block size", 4)


def _engine_failed(eng: Any, outcome: int, sock: socket.socket, peer: tuple, retries: int) -> BaseException:
    """The exception for an engine run that did not end in DONE (an ERROR is sent when due)."""
    if outcome == engine.REFUSED:
        return TftpRefused(_gone(peer))  # no ERROR: nothing listens there any more
    if outcome == engine.TIMEOUT:
        _send_error(sock, peer, 0, "timed out")
        return TftpTimeout(f"transfer stalled at block {eng.next_block} after {retries} retries")
    if outcome == engine.STOP:
        data = eng.stop_packet
        try:
            packet = codec.decode(data)
        except codec.DecodeError as exc:
            _send_error(sock, peer, 4, "malformed packet")
            return TftpProtocolError(f"malformed packet from the server: {exc}", 4)
        if type(packet) is codec.Error:
            return _remote_error(packet)
        if type(packet) is codec.Data:  # the engine stops on a DATA only when it is too long
            return _oversized(sock, peer, packet.block)
        _send_error(sock, peer, 4, "unexpected packet")
        return TftpProtocolError(f"unexpected {type(packet).__name__} from the server", 4)
    code = eng.error_errno or 5
    return OSError(code, os.strerror(code))


def _engine_receive(
    channel: _Channel,
    peer: tuple,
    fileobj: BinaryIO,
    blksize: int,
    window: int,
    expected: int,
    last_sent: bytes,
    blocks: int,
    sink: BlockSink,
    stats: TransferStats,
    progress: Progress | None,
    started: float,
) -> _Dally:
    """The rest of an octet download in the transfer engine: blocks *expected* on, written to *fileobj*."""
    fileobj.flush()  # what Python wrote so far goes first
    sock = channel.sock
    eng = engine.Session(
        engine.RECEIVER, sock, fileobj.fileno(), peer, blksize=blksize, windowsize=window, timeout=channel.timeout,
        retries=channel.retries, max_backoff=_MAX_BACKOFF, first=last_sent, first_sent=True, start_block=expected,
        strict=True, ack_last=True, oack_reack=expected == 1, report_interval=_PROGRESS_EVERY,
    )
    before = blocks * blksize  # every block before the hand-off was full

    def report() -> None:
        stats.blocks = blocks + eng.blocks
        stats.bytes = before + eng.bytes
        stats.seconds = time.monotonic() - started

    channel._current = None  # the engine sets the socket's receive timeout: Python sets its own again
    outcome = _engine_run(eng, stats, progress, report)
    stats.retransmissions += eng.retransmissions
    try:
        fileobj.seek(0, os.SEEK_CUR)  # a buffered file object learns where the engine left the descriptor
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
    if outcome != engine.DONE:
        raise _engine_failed(eng, outcome, sock, peer, channel.retries)
    stats.seconds = time.monotonic() - started
    stats.blocks = blocks + eng.blocks
    sink.bytes_written = before + eng.bytes
    if progress is not None:
        stats.bytes = sink.bytes_written
        progress(stats)
    last = (eng.next_block - 1) & 0xFFFF
    return _Dally(channel, peer, last, codec.encode_ack(last))


def _receive(
    channel: _Channel,
    request: bytes,
    options: dict[str, int],
    sink: BlockSink,
    stats: TransferStats,
    progress: Progress | None,
    tmp_path: str | None,
    direct: BinaryIO | None = None,
) -> _Dally | None:
    """The receiving side of an RRQ: returns the dallying thread (not started) after the last ACK.

    With *direct* (the octet target, a file with a descriptor), the rest of the transfer goes to
    the transfer engine once the first answer is handled (see :func:`_engine_receive`).
    """
    sock = channel.sock
    recvfrom = sock.recvfrom
    sendto = channel.sendto
    decode = codec.decode
    Data, Ack, Error, OptionAck = codec.Data, codec.Ack, codec.Error, codec.OptionAck
    DecodeError = codec.DecodeError
    encode_ack = codec.encode_ack
    monotonic = time.monotonic
    # octet: payloads go straight to the file's write (the byte count is derived at the end)
    write = sink.write if sink.converts else sink.raw_write

    base_timeout = channel.timeout
    retries = channel.retries
    server_ip = channel.server_ip
    peer: tuple | None = None
    dest = channel.server
    last_sent = request
    blksize = codec.DEFAULT_BLKSIZE
    window = 1
    expected = 1  # absolute number of the next block wanted
    in_window = 0  # blocks received since the last ACK we sent
    gap_acked = False
    tries = 0
    wait = base_timeout
    bufsize = codec.MAX_BLKSIZE + 8
    started = monotonic()
    sent_at = started
    next_report = started + _PROGRESS_EVERY
    blocks = 0

    sendto(request, dest)
    while True:
        data = None
        try:
            data, addr = recvfrom(bufsize)
        except (BlockingIOError, socket.timeout):
            pass
        except OSError:
            if not channel.icmp_error():
                raise
            continue
        if data is None or addr != peer:
            if data is not None:
                # a stray packet: the kernel's timeout restarts with every packet, so keep a
                # deadline here too, counted from the last send or the first stray packet
                now = monotonic()
                if not sent_at:
                    sent_at = now
            if data is None or now - sent_at > wait:
                # a timeout (the kernel's, or a deadline that foreign packets kept from firing)
                tries += 1
                if tries > retries:
                    what = "no answer from the server" if peer is None else f"transfer stalled at block {expected}"
                    if peer is not None:
                        _send_error(sock, peer, 0, "timed out")
                    raise TftpTimeout(f"{what} after {retries} retries")
                wait = min(wait * 2, base_timeout * _MAX_BACKOFF)
                channel.set_timeout(wait)
                stats.retransmissions += 1
                if expected > 1:
                    last_sent = encode_ack((expected - 1) & 0xFFFF)
                sendto(last_sent, dest)
                sent_at = monotonic()
                in_window = 0
                if data is None:
                    continue
            if peer is None and addr[0] == server_ip:
                peer = dest = channel.peer = addr
            else:
                if len(data) < 2 or data[1] != 5:
                    _send_error(sock, addr, 5, "unknown transfer ID")
                continue
        try:
            packet = decode(data)
        except DecodeError as exc:
            _send_error(sock, peer, 4, "malformed packet")
            raise TftpProtocolError(f"malformed packet from the server: {exc}", 4) from None
        kind = type(packet)
        if kind is Data:
            block = packet.block
            if block == (expected & 0xFFFF):
                payload = packet.payload
                if len(payload) > blksize:
                    raise _oversized(sock, peer, block)
                write(payload)
                blocks += 1
                expected += 1
                in_window += 1
                gap_acked = False
                if len(payload) < blksize:
                    ack = encode_ack(block)
                    sendto(ack, peer)
                    stats.seconds = monotonic() - started
                    stats.blocks = blocks
                    if not sink.converts:
                        # every block before the last one was full
                        sink.bytes_written = (blocks - 1) * blksize + len(payload)
                    if progress is not None:
                        stats.bytes = sink.bytes_written
                        progress(stats)
                    return _Dally(channel, peer, block, ack)
                if in_window >= window:
                    last_sent = encode_ack(block)
                    sendto(last_sent, peer)
                    in_window = 0
                    if direct is not None and engine.enabled():
                        return _engine_receive(
                            channel, peer, direct, blksize, window, expected, last_sent, blocks, sink, stats, progress, started
                        )
                    if tries:
                        tries = 0
                        wait = base_timeout
                        channel.set_timeout(wait)
                    sent_at = 0.0  # progress: the deadline clock restarts at the next stray packet
                    if progress is not None:
                        now = monotonic()
                        if now >= next_report:
                            next_report = now + _PROGRESS_EVERY
                            stats.blocks = blocks
                            stats.bytes = sink.bytes_written if sink.converts else blocks * blksize
                            stats.seconds = now - started
                            progress(stats)
            elif window == 1:
                if block == ((expected - 1) & 0xFFFF) and expected > 1:
                    # our ACK was lost and the server sent the block again: ACK it again
                    sendto(last_sent, peer)
            elif not gap_acked and ((block - expected) & 0xFFFF) < window:
                # a gap inside the window (RFC 7440): ACK the last good block, once
                gap_acked = True
                in_window = 0
                last_sent = encode_ack((expected - 1) & 0xFFFF)
                sendto(last_sent, peer)
                stats.retransmissions += 1
            continue
        if kind is OptionAck:
            if expected != 1 or not options:
                if expected == 1 and not options:
                    _send_error(sock, peer, 8, "no options were requested")
                    raise TftpProtocolError("server sent an OACK although no option was requested", 8)
                continue  # a late repeat of the OACK
            try:
                _accept_oack(options, packet.options, stats, True)
            except TftpProtocolError as exc:
                _send_error(sock, peer, 8, exc.message)
                raise
            blksize = stats.blksize
            window = stats.windowsize
            if stats.total is not None and tmp_path is not None:
                directory = os.path.dirname(tmp_path)
                if stats.total > free_space(directory):  # a full disk before the first block:
                    # an OSError, as one during the transfer is; the server hears ERROR 3 (_abandon)
                    raise OSError(errno.ENOSPC, f"not enough free space for {stats.total} bytes", directory)
            last_sent = encode_ack(0)
            sendto(last_sent, peer)
            sent_at = monotonic()
            if direct is not None and engine.enabled():
                return _engine_receive(channel, peer, direct, blksize, window, 1, last_sent, 0, sink, stats, progress, started)
            continue
        if kind is Error:
            raise _remote_error(packet)
        if kind is Ack:
            continue  # not ours to receive; ignore
        _send_error(sock, peer, 4, "unexpected packet")
        raise TftpProtocolError(f"unexpected {type(packet).__name__} from the server", 4)


def upload(
    host: str,
    local: LocalFile,
    remote: str | None = None,
    *,
    port: int = DEFAULT_PORT,
    blksize: int | None = None,
    windowsize: int | None = None,
    timeout: float = 1.0,
    retries: int = 5,
    tsize: bool = True,
    mode: str = "octet",
    progress: Progress | None = None,
    server_timeout: int | None = None,
) -> TransferStats:
    """Send *local* (a path or a binary file object) to the TFTP server *host* as *remote*.

    *remote* defaults to the local file's base name.  With *tsize* the file size is announced
    (octet mode, a sized file) so that the server can refuse a file larger than its free space.
    The other arguments, the result and the exceptions are those of :func:`download`.
    """
    mode = mode.lower()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if hasattr(local, "read"):
        fileobj: BinaryIO = _file_object(local, "read")
        owned = False
        if remote is None:
            name = getattr(local, "name", None)
            if not isinstance(name, str):
                raise ValueError("pass remote= for a file object without a name")
            remote = os.path.basename(name)
    else:
        path = os.fsdecode(os.fspath(local))  # type: ignore[arg-type]
        fileobj = open(path, "rb", buffering=0)
        owned = True
        if remote is None:
            remote = os.path.basename(path)
    try:
        size = None
        if tsize and mode == "octet":
            try:
                st = os.fstat(fileobj.fileno())
                if stat.S_ISREG(st.st_mode):
                    size = st.st_size - fileobj.tell()
            except (OSError, AttributeError, ValueError):
                size = None
        options = _request_options(blksize, windowsize, size, server_timeout)
        addresses = _resolve(host, port, timeout, retries)
        channel = _Channel(addresses[0], timeout, retries)
        try:
            stats = TransferStats(filename=remote, direction="upload", peer=channel.server, total=size)
            asked, others = options, iter(addresses[1:])
            while True:
                request = codec.encode_wrq(remote, mode, asked)
                try:
                    _send(channel, request, asked, fileobj, mode == "netascii", stats, progress)
                    break
                except (TftpRemoteError, TftpRefused) as exc:
                    address, asked = _next_attempt(exc, channel, stats, asked, others)
                channel.close()
                channel = _Channel(address, timeout, retries)
                stats.peer = channel.server
        except BaseException as exc:
            _abandon(channel, exc)
            raise
        finally:
            channel.close()
    finally:
        if owned:
            fileobj.close()
    return stats


def _regular_file_offset(fileobj: Any) -> int | None:
    """The current offset of *fileobj* when it is a regular file the engine can pread, else None."""
    if not _has_fd(fileobj):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fileobj.fileno()).st_mode):
            return None
        return fileobj.tell()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None


def _engine_send(
    channel: _Channel,
    peer: tuple,
    fileobj: BinaryIO,
    start: int,
    blksize: int,
    window: int,
    stats: TransferStats,
    progress: Progress | None,
    started: float,
) -> None:
    """An octet upload's DATA in the transfer engine, read from *fileobj* at offset *start* on."""
    sock = channel.sock
    eng = engine.Session(
        engine.SENDER, sock, fileobj.fileno(), peer, blksize=blksize, windowsize=window, timeout=channel.timeout,
        retries=channel.retries, max_backoff=_MAX_BACKOFF, file_start=start, strict=True,
        report_interval=_PROGRESS_EVERY,
    )

    def report() -> None:
        stats.blocks = eng.blocks
        stats.bytes = eng.bytes
        stats.seconds = time.monotonic() - started

    channel._current = None
    outcome = _engine_run(eng, stats, progress, report)
    stats.retransmissions += eng.retransmissions
    try:
        fileobj.seek(start + eng.bytes)  # where reading it would have left it
    except (OSError, ValueError):
        pass
    if outcome != engine.DONE:
        raise _engine_failed(eng, outcome, sock, peer, channel.retries)
    stats.blocks = eng.blocks
    stats.bytes = eng.bytes
    stats.seconds = time.monotonic() - started
    if progress is not None:
        progress(stats)


def _send(
    channel: _Channel,
    request: bytes,
    options: dict[str, int],
    fileobj: BinaryIO,
    netascii: bool,
    stats: TransferStats,
    progress: Progress | None,
) -> None:
    """The sending side of a WRQ."""
    sock = channel.sock
    recvfrom = sock.recvfrom
    sendto = channel.sendto
    decode = codec.decode
    Ack, Error, OptionAck = codec.Ack, codec.Error, codec.OptionAck
    DecodeError = codec.DecodeError
    encode_data = codec.encode_data
    monotonic = time.monotonic

    base_timeout = channel.timeout
    retries = channel.retries
    server_ip = channel.server_ip
    peer: tuple | None = None
    dest = channel.server
    tries = 0
    wait = base_timeout
    started = monotonic()
    sent_at = started
    next_report = started + _PROGRESS_EVERY

    source: BlockSource | None = None
    blksize = codec.DEFAULT_BLKSIZE
    window = 1
    base = 1  # first unacknowledged block
    sent_hi = 0  # highest block sent in the current window
    last_block = 0  # the final (short) block's number once it has been read; 0 = not yet
    dup_resent = False
    # an octet upload of a regular file goes to the transfer engine after the negotiation
    start = None if netascii or not engine.enabled() else _regular_file_offset(fileobj)

    def send_window() -> int:
        nonlocal sent_hi, last_block
        block = source.block  # type: ignore[union-attr]
        k = base
        end = base + window
        bs = blksize
        while k < end:
            payload = block(k)
            sendto(encode_data(k & 0xFFFF, payload), peer)
            if len(payload) < bs:
                last_block = k
                break
            k += 1
        else:
            k -= 1
        sent_hi = k
        return k - base + 1

    sendto(request, dest)
    while True:
        data = None
        try:
            data, addr = recvfrom(1024)
        except (BlockingIOError, socket.timeout):
            pass
        except OSError:
            if not channel.icmp_error():
                raise
            continue
        if data is None or addr != peer:
            if data is not None:
                now = monotonic()  # a stray packet: see _receive
                if not sent_at:
                    sent_at = now
            if data is None or now - sent_at > wait:
                tries += 1
                if tries > retries:
                    what = "no answer from the server" if peer is None else f"transfer stalled at block {base}"
                    if peer is not None:
                        _send_error(sock, peer, 0, "timed out")
                    raise TftpTimeout(f"{what} after {retries} retries")
                wait = min(wait * 2, base_timeout * _MAX_BACKOFF)
                channel.set_timeout(wait)
                if source is None:
                    stats.retransmissions += 1
                    sendto(request, dest)
                else:
                    stats.retransmissions += send_window()
                sent_at = monotonic()
                if data is None:
                    continue
            if peer is None and addr[0] == server_ip:
                peer = dest = channel.peer = addr
            else:
                if len(data) < 2 or data[1] != 5:
                    _send_error(sock, addr, 5, "unknown transfer ID")
                continue
        try:
            packet = decode(data)
        except DecodeError as exc:
            _send_error(sock, peer, 4, "malformed packet")
            raise TftpProtocolError(f"malformed packet from the server: {exc}", 4) from None
        kind = type(packet)
        if kind is Ack:
            if source is None:
                if packet.block != 0:
                    continue
                # the server ignored our options (or we sent none): RFC 1350 defaults
                stats.options = {}
                if start is not None:
                    _engine_send(channel, peer, fileobj, start, blksize, window, stats, progress, started)
                    return
                source = BlockSource(fileobj, blksize, netascii=netascii, size_hint=stats.total)
                base = 1
                send_window()
                sent_at = monotonic()
                continue
            delta = (packet.block - base + 1) & 0xFFFF
            if 0 < delta <= sent_hi - base + 1:
                base += delta
                stats.blocks = base - 1
                if last_block and base > last_block:
                    stats.seconds = monotonic() - started
                    stats.bytes = source.bytes_read
                    if progress is not None:
                        progress(stats)
                    return
                source.release(base)
                dup_resent = False
                if tries:
                    tries = 0
                    wait = base_timeout
                    channel.set_timeout(wait)
                send_window()
                sent_at = 0.0
                if progress is not None:
                    now = monotonic()
                    if now >= next_report:
                        next_report = now + _PROGRESS_EVERY
                        stats.bytes = min(source.bytes_read, (base - 1) * blksize)
                        stats.seconds = now - started
                        progress(stats)
            elif delta == 0 and window > 1 and not dup_resent:
                # RFC 7440: the receiver saw a gap at the start of the window; resend it once
                dup_resent = True
                stats.retransmissions += send_window()
                sent_at = monotonic()
            continue  # a duplicate ACK: never answered in lockstep (Sorcerer's Apprentice)
        if kind is OptionAck:
            if source is not None:
                continue
            if not options:
                _send_error(sock, peer, 8, "no options were requested")
                raise TftpProtocolError("server sent an OACK although no option was requested", 8)
            try:
                _accept_oack(options, packet.options, stats, False)
            except TftpProtocolError as exc:
                _send_error(sock, peer, 8, exc.message)
                raise
            blksize = stats.blksize
            window = stats.windowsize
            if start is not None:
                _engine_send(channel, peer, fileobj, start, blksize, window, stats, progress, started)
                return
            source = BlockSource(fileobj, blksize, netascii=netascii, size_hint=stats.total)
            send_window()
            sent_at = monotonic()
            continue
        if kind is Error:
            raise _remote_error(packet)
        if kind is codec.Data:
            continue
        _send_error(sock, peer, 4, "unexpected packet")
        raise TftpProtocolError(f"unexpected {type(packet).__name__} from the server", 4)
