"""A TFTP server on :class:`fastnet.Loop`: one thread, many concurrent transfers.

    from fastnet.tftp.server import TftpServer
    TftpServer("/srv/tftp", host="0.0.0.0", port=69).serve()          # blocking; SIGTERM/Ctrl-C stop it

    with TftpServer(root, port=0, allow_write=True) as server:         # in a background thread
        client.download("127.0.0.1", "boot.img", port=server.port)

    server = TftpServer(root, port=0)                                  # inside a running loop
    await server.start(); ...; await server.close()

Every request is answered from a fresh ephemeral port (its TID).  Options: ``blksize`` (8..65464),
``timeout`` (1..255), ``tsize`` and ``windowsize`` (1..65535, the server may choose less).

Safety rules (each refusal is an ERROR packet and one access-log line):

- Only files under *root* are served.  A leading ``/`` means the root, so ``/boot/x`` and
  ``boot/x`` name the same file; an absolute path that already starts with the root's own path is
  taken as it is.  ``..`` components are refused (ERROR 2), and so is any path whose real path
  (after symlinks) leaves the root.  Only regular files are read: directories, devices, FIFOs and
  sockets are refused (ERROR 2).  A missing file is ERROR 1.
- Read-only unless ``allow_write``; replacing an existing file also needs ``allow_overwrite``
  (else ERROR 6).  An upload goes to a hidden temporary file in the target's directory and is
  renamed into place after its last block: an aborted, timed-out or failed upload leaves nothing,
  and a concurrent reader sees the old file or the new one, never half of one.  ``tsize`` larger
  than the free space, or a full disk during the upload: ERROR 3.
- A malformed datagram gets ERROR 4; a packet from a stranger to a transfer's port gets ERROR 5
  and changes nothing; requests beyond ``max_sessions`` concurrent transfers are refused.

One line per transfer goes to the logger ``fastnet.tftp.access``: peer, file, direction, bytes,
seconds, options, retransmissions and outcome.

Requests, checks and the end of each transfer run on the loop; the DATA/ACK exchange of an octet
transfer runs in the transfer engine (:mod:`fastnet.tftp.engine`) in a worker thread, at most
``max_sessions`` of them (``FASTNET_TFTP_ENGINE=0``: on the loop, as netascii transfers always do).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import signal
import socket
import stat
import threading
from typing import Any

from .. import _recverr
from .._cli import bind, format_address
from . import codec, engine
from ._transfer import (
    DALLY_MAX,
    DISK_FULL,
    DISK_FULL_ERRNOS,
    MAX_WINDOWSIZE,
    OVERSIZED_DATA,
    BlockSink,
    BlockSource,
    TransferStats,
    fit_window,
    free_space,
    link_anonymous,
    parse_uint,
    queued_error,
    resend_first_block,
    temp_beside,
)

__all__ = ["TftpServer", "DEFAULT_PORT"]

log = logging.getLogger("fastnet.tftp")
access_log = logging.getLogger("fastnet.tftp.access")

DEFAULT_PORT = 69
#: The log line a server starts with (logger ``fastnet.tftp``); with port 0 it tells the port.
START_LINE = "tftp: serving %s on %s (%s)"
TEMP_PREFIX = ".fastnet-tftp-"
TEMP_SUFFIX = ".part"
_MAX_BACKOFF = 8.0
_GONE = "client gone: connection refused"


def _dally_seconds(timeout: float) -> float:
    """How long the final ACK of an upload is kept answerable: long enough for the client's
    retransmissions of its last block with backoff (timeout, 3x, 7x ...) to reach us, capped.
    Each repeated last block that arrives doubles it (see ``_SessionCommon._dally_reack``)."""
    return min(max(4 * timeout, 0.5), DALLY_MAX)


class _Refused(Exception):
    """A request the server will not serve: an ERROR code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _printable(text: str) -> str:
    """*text* with every character that is not printable escaped (``\\n``, ``\\x1b``): a peer's
    ERROR message is written into the access log, and must not start a line of its own there
    or send escape sequences to a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Throttle:
    """At most *burst* log lines per *period* seconds for the requests one address sends that the
    server refuses or drops, and *total* for every address together: a flood of them (junk
    datagrams, requests beyond every limit) would otherwise write one line each, megabytes a
    second, even with ``--quiet``, and one flooding address must not hide another's refusals.
    What is left out is counted and reported once a period (:meth:`report`)."""

    def __init__(self, burst: int = 20, total: int = 200, period: float = 1.0) -> None:
        self.burst = burst
        self.total = total
        self.period = period
        self._start = float("-inf")
        self._lines: dict[str, int] = {}  # this period's lines by address (at most *total* keys)
        self._all = 0
        self.suppressed = 0

    def allow(self, now: float, address: str) -> bool:
        if now - self._start >= self.period:
            self._start = now
            self._lines.clear()
            self._all = 0
        n = self._lines.get(address, 0)
        if n < self.burst and self._all < self.total:
            self._lines[address] = n + 1
            self._all += 1
            return True
        self.suppressed += 1
        return False

    def report(self) -> None:
        """Say how many lines were left out since the last report."""
        if self.suppressed:
            log.warning("tftp: %d more refused or malformed requests not logged one by one (at most %d lines "
                        "every %g s from one address)", self.suppressed, self.burst, self.period)
            self.suppressed = 0


def _log_access(stats: TransferStats, outcome: str) -> None:
    options = ",".join(f"{k}={v}" for k, v in stats.options.items()) or "-"
    access_log.info(
        "peer=%s file=%r direction=%s bytes=%d seconds=%.3f options=%s retransmissions=%d outcome=%s",
        format_address(stats.peer),
        stats.filename,
        stats.direction,
        stats.bytes,
        stats.seconds,
        options,
        stats.retransmissions,
        _printable(outcome),
    )


def resolve_path(root: str, name: str) -> str:
    """The real path of the file *name* asks for under *root* (a real path); :class:`_Refused` if unsafe."""
    if not name:
        raise _Refused(2, "empty file name")
    if "\0" in name:
        raise _Refused(2, "NUL byte in file name")
    rel = name
    if name.startswith("/") and (name == root or name.startswith(root.rstrip("/") + "/")):
        rel = name[len(root) :]
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _Refused(2, "'..' in file name")
    if not parts:
        raise _Refused(2, "not a regular file")
    if parts[-1].startswith(TEMP_PREFIX) and parts[-1].endswith(TEMP_SUFFIX):
        raise _Refused(1, "file not found")  # an upload in progress is nobody's business
    real = os.path.realpath(os.path.join(root, *parts))
    if not real.startswith(root.rstrip("/") + "/"):
        raise _Refused(2, "path leaves the server root")
    return real


_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_PATH = getattr(os, "O_PATH", os.O_RDONLY)


def open_beneath(root: str, path: str, flags: int) -> int:
    """Open *path*, a real path under *root* as :func:`resolve_path` gives it, with *flags*,
    one component at a time from *root* and following no symbolic link.

    resolve_path() checks a name; the open comes after.  Someone who can write inside the root
    could swap a directory or the file for a symbolic link to ``/etc`` in between, and a plain
    open() of the checked path would follow it.  Here each component is opened in the one
    before it with ``O_NOFOLLOW``: a link put there since the check fails the open (ELOOP or
    ENOTDIR), whatever it points to."""
    rel = path[len(root):].strip("/") if path != root else ""
    parts = rel.split("/") if rel else []
    walk = _O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC
    fd = os.open(root, (flags | os.O_NOFOLLOW | _O_CLOEXEC) if not parts else walk)
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        try:
            nxt = os.open(part, (flags | os.O_NOFOLLOW | _O_CLOEXEC) if last else walk, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def _changed(exc: OSError) -> bool:
    """Whether open_beneath() met a symbolic link (or a file where a directory was) that the
    checks just before did not see: the path changed under the request."""
    return exc.errno in (errno.ELOOP, errno.ENOTDIR)


def _negotiate(
    server: "TftpServer", options: dict[str, str], is_read: bool, netascii: bool, size: int | None, directory: str
) -> tuple[dict[str, int], int, int, float]:
    """(accepted options in request order, blksize, windowsize, timeout); _Refused on a bad value."""
    accepted: dict[str, int] = {}
    blksize = codec.DEFAULT_BLKSIZE
    window = 1
    timeout = server.timeout
    for name, raw in options.items():
        if name == "blksize":
            value = parse_uint(raw)
            if value is None or value < codec.MIN_BLKSIZE:
                raise _Refused(8, f"invalid blksize {raw!r}")
            blksize = min(value, server.max_blksize)
            accepted[name] = blksize
        elif name == "windowsize":
            value = parse_uint(raw)
            if value is None or value < 1:
                raise _Refused(8, f"invalid windowsize {raw!r}")
            window = min(value, server.max_windowsize)
            accepted[name] = window
        elif name == "timeout":
            value = parse_uint(raw)
            if value is None or not 1 <= value <= 255:
                raise _Refused(8, f"invalid timeout {raw!r}")
            timeout = float(value)
            accepted[name] = value
        elif name == "tsize":
            value = parse_uint(raw)
            if value is None:
                raise _Refused(8, f"invalid tsize {raw!r}")
            if is_read:
                if size is not None and not netascii:
                    accepted[name] = size  # netascii's size on the wire is unknown: ignore the option
            else:
                try:
                    # what running uploads announced and have not written yet is spoken for: four
                    # uploads of 900 KB all fit in 2 MB one at a time, and three failed half-way
                    room = free_space(directory) - server._spoken_for(os.stat(directory).st_dev)
                except OSError:  # a file system that cannot tell (statvfs is optional in FUSE):
                    room = None  # a full disk is then ERROR 3 during the upload
                if room is not None and value > room:
                    raise _Refused(3, f"{value} bytes do not fit: not enough free space")
                accepted[name] = value
        # any other option is ignored (RFC 2347)
    if window > 1 and window * blksize > server.max_window_bytes:
        # a burst larger than this overflows receive buffers and caches: a smaller window
        window = max(1, server.max_window_bytes // blksize)
        accepted["windowsize"] = window
    return accepted, blksize, window, timeout


def _discard(tmp: str, dir_fd: int) -> None:
    """Remove an upload's temporary file (one not to be committed, or the second name of one
    that was).  A failure (its directory made read-only meanwhile, say) is logged, not raised:
    the session must still end, log its line and give its slot back."""
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("tftp: cannot remove %s: %s", tmp, exc.strerror)


# link() failing for these means the file system has no hard links (vfat, some network and FUSE
# file systems) or no more of them for this file: not a reason to lose a complete upload
_NO_HARD_LINK = frozenset({errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
_RENAME_NOREPLACE = 1
_renameat2: Any = False  # libc's renameat2, looked up on first use; None where there is none


def _rename_noreplace(src: str, dst: str, dir_fd: int) -> None:
    """``renameat2(RENAME_NOREPLACE)`` of two names in *dir_fd*: an atomic rename that fails with
    FileExistsError when *dst* exists; OSError(ENOSYS) where libc lacks it, EINVAL where the file
    system does."""
    global _renameat2
    import ctypes  # only here: the one file system call the os module lacks

    if _renameat2 is False:
        _renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), dst)
    if _renameat2(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), _RENAME_NOREPLACE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), dst)


def _commit_upload(tmp: str, target: str, overwrite: bool, dir_fd: int) -> None:
    """Put a complete upload in place: *tmp* becomes *target*, both names in the directory
    *dir_fd* (atomically, so a reader sees the old file or the new one); without *overwrite*,
    :class:`_Refused` if *target* exists.

    "Create only if absent" is a hard link, then the temporary name's removal.  On a file system
    without hard links it is ``renameat2(RENAME_NOREPLACE)``, and where that is unsupported too,
    a check for *target* and then a rename (a file created between the two is replaced)."""
    at = {"src_dir_fd": dir_fd, "dst_dir_fd": dir_fd}
    if overwrite:
        os.replace(tmp, target, **at)
        return
    try:
        os.link(tmp, target, **at, follow_symlinks=False)
    except FileExistsError:
        raise _Refused(6, "file already exists") from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINK:
            raise
    else:
        _discard(tmp, dir_fd)  # the upload is in place: a second name left behind is litter, not a failure
        return
    try:
        _rename_noreplace(tmp, target, dir_fd)
    except FileExistsError:
        raise _Refused(6, "file already exists") from None
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        try:
            os.stat(target, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(tmp, target, **at)
        else:
            raise _Refused(6, "file already exists") from None


class _Upload:
    """Where an upload goes: its directory, held open from the checks to the commit, and in it
    the temporary file and the target's name.  Made and renamed relative to the open directory,
    the upload stays under the root even if a directory on its path is swapped for a symbolic
    link while it runs (see :func:`open_beneath`).  Where the file system allows it the
    temporary file has no name (``O_TMPFILE``): a server killed in mid-upload (SIGKILL, out of
    memory, power) leaves nothing behind; elsewhere it is a hidden ``.fastnet-tftp-*.part``."""

    def __init__(self, dir_fd: int, name: str, overwrite: bool) -> None:
        self.dir_fd = dir_fd  # this object owns it from here on (close())
        self.name = name
        self._overwrite = overwrite
        self.committed = False
        self.tmp = ""  # the temporary file's name; "" while it has none
        self.fd = -1  # the temporary file's, until a session takes it (and sets this to -1)
        self._anonymous = -1  # a descriptor of the nameless file, kept to link it (commit)
        self.announced = 0  # the size the client announced (tsize), 0 if none
        self.dev = 0  # the file system it goes to (st_dev), with announced
        try:
            self.fd, self.tmp = temp_beside(name, TEMP_PREFIX, TEMP_SUFFIX, dir_fd=dir_fd, anonymous=True)
            if not self.tmp:
                self._anonymous = os.dup(self.fd)
        except BaseException:
            self.close()
            raise

    def commit(self) -> None:
        if self._anonymous >= 0:
            self._name_it()
            if self.committed:
                return
        _commit_upload(self.tmp, self.name, self._overwrite, self.dir_fd)
        self.committed = True

    def _name_it(self) -> None:
        """The nameless file gets the target's name at once (without overwrite: the link that
        fails if the name is taken), or else a temporary one for _commit_upload to rename."""
        try:
            if not self._overwrite:
                try:
                    link_anonymous(self._anonymous, self.name, self.dir_fd)
                except FileExistsError:
                    raise _Refused(6, "file already exists") from None
                self.committed = True
                return
            for _ in range(100):
                tmp = TEMP_PREFIX + os.urandom(6).hex() + TEMP_SUFFIX
                try:
                    link_anonymous(self._anonymous, tmp, self.dir_fd)
                except FileExistsError:
                    continue
                self.tmp = tmp
                return
            raise FileExistsError(errno.EEXIST, "no unused temporary file name", self.name)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINK:
                raise
            self._copy_to_named()  # a file system with O_TMPFILE but without link() (some FUSE)

    def _copy_to_named(self) -> None:
        """The nameless file's bytes into a named temporary file, for _commit_upload to rename."""
        fd, self.tmp = temp_beside(self.name, TEMP_PREFIX, TEMP_SUFFIX, dir_fd=self.dir_fd)
        try:
            size, done = os.fstat(self._anonymous).st_size, 0
            while done < size:
                n = os.sendfile(fd, self._anonymous, done, size - done)
                if n == 0:
                    raise OSError(errno.EIO, "the upload shrank while it was copied", self.name)
                done += n
        finally:
            os.close(fd)

    def close(self) -> None:
        """Remove the temporary file unless committed; let go of the directory.  Once, and
        whatever fails on the way (a close() of a network file system's file can report a
        late write error): the session must still end and give its slot back."""
        if self.dir_fd < 0:
            return
        for fd in (self.fd, self._anonymous):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError as exc:
                    log.warning("tftp: closing an upload's temporary file: %s", exc.strerror)
        self.fd = self._anonymous = -1
        if not self.committed and self.tmp:
            _discard(self.tmp, self.dir_fd)
        os.close(self.dir_fd)
        self.dir_fd = -1


class _SessionCommon:
    """What both kinds of session share: an ear for ICMP errors on the socket (``IP_RECVERR``,
    see ``fastnet._recverr``) -- a port unreachable for the client means it is gone (killed, or
    its socket closed), so the session ends at once instead of retransmitting into nothing until
    its retries run out --, the ERROR 5 a stranger gets, the end of an upload whose file could
    not be written, and the dally after an upload's final ACK."""

    _server: "TftpServer"
    _loop: Any
    _sock: socket.socket
    _peer: tuple
    _timeout: float
    _timer: asyncio.TimerHandle | None
    _dally_for: float
    _dally_renewals: int
    done: bool
    dallying: bool
    _started: float
    leaving = False  # ended by the server to make room for a new request (TftpServer._make_room)
    upload: "_Upload | None" = None  # a write's file, directory and announced size

    def written(self) -> int:
        """Bytes of an upload written so far."""
        return 0

    def answered(self) -> bool:
        """Whether the client has acknowledged or sent a DATA block: a real, live client."""
        raise NotImplementedError

    def _late_icmp(self, exc: OSError) -> bool:
        """Whether *exc*, from a call on the socket, reports an ICMP error (one the kernel queued
        for an earlier datagram); the queue is then read soon (:meth:`_read_icmp`)."""
        if exc.errno not in _recverr.LATE_ERRNOS:
            return False
        self._loop.call_soon(self._read_icmp)
        return True

    def _send_failed(self, exc: OSError, packet: bytes) -> None:
        """Sending *packet* to the peer failed with *exc*: when that reported an earlier
        datagram's ICMP error, this one did not go, and goes again."""
        if _recverr.send_again(self._sock, packet, self._peer, exc):
            self._loop.call_soon(self._read_icmp)
        else:
            log.debug("tftp: sendto %s failed: %s", format_address(self._peer), exc)

    def _foreign(self, data: bytes, addr: tuple) -> None:
        # RFC 1350: a packet from an unknown TID gets ERROR 5; the transfer goes on untouched
        if len(data) >= 2 and data[0] == 0 and data[1] == 5:
            return  # never answer an ERROR with an ERROR
        try:
            self._sock.sendto(codec.encode_error(5, "unknown transfer ID"), addr)
        except OSError as exc:
            self._late_icmp(exc)

    def _read_icmp(self) -> None:
        # read even when the session is over: a queued error keeps a level-triggered poller busy
        if _recverr.refused(self._sock, self._peer):
            if not self.done:
                error = queued_error(self._sock, self._peer)
                if error is not None:  # it said goodbye, then closed its port: see queued_error
                    self.finish(f"peer error {int(error.code)}: {error.message}")
                else:
                    self.finish(_GONE)  # no ERROR: nothing listens there any more
            elif self.dallying:
                self.close_transport()

    def _start_dally(self) -> None:
        """RFC 1350: the side that sends the last ACK dallies, to answer a repeated last DATA."""
        if self._timer is not None:
            self._timer.cancel()  # the retransmission timer, if any: the transfer is over
        self._dally_for = _dally_seconds(self._timeout)
        self._dally_renewals = self._server.retries
        self._timer = self._loop.call_later(self._dally_for, self.close_transport)

    def _dally_reack(self, ack: bytes) -> None:
        """The client sent its last block again: our final ACK was lost.  ACK it again and listen
        on for twice as long as the last time, since the client backs off between its
        retransmissions too; at most ``retries`` times, so that no client holds a port for ever."""
        self._send(ack)
        timer = self._timer
        if self._dally_renewals > 0 and timer is not None:
            self._dally_renewals -= 1
            self._dally_for = min(2 * self._dally_for, DALLY_MAX)
            timer.cancel()
            self._timer = self._loop.call_later(self._dally_for, self.close_transport)

    def _write_failed(self, exc: OSError) -> None:
        if exc.errno in DISK_FULL_ERRNOS:
            self.finish(f"disk full: {exc.strerror}", 3, DISK_FULL)
        else:
            self.finish(f"write failed: {exc.strerror}", 0, "write failed")

    def finish(self, outcome: str, error_code: int | None = None, error_message: str = "") -> None:
        raise NotImplementedError

    def close_transport(self) -> None:
        raise NotImplementedError


class _Session(_SessionCommon, asyncio.DatagramProtocol):
    """One transfer on its own socket (its TID)."""

    def __init__(self, server: "TftpServer", peer: tuple, key: tuple, stats: TransferStats, sock: socket.socket) -> None:
        self._server = server
        self._loop = server._loop
        self._peer = peer
        self._key = key
        self._sock = sock
        self._raw_sendto = sock.sendto
        self.stats = stats
        self._transport: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._clock = self._loop.time
        self._started = self._clock()
        self._timeout = server.timeout
        self._wait = server.timeout
        self._moves = 0  # bumped on every step forward; the timer looks at it
        self._seen_moves = 0
        self._tries = 0
        self._retries = server.retries
        self._decode = codec.decode
        self._DecodeError = codec.DecodeError
        self._oack: bytes | None = None
        self.done = False
        self.dallying = False

    # -- plumbing

    def _send(self, packet: bytes) -> None:
        try:
            self._raw_sendto(packet, self._peer)
        except BlockingIOError:
            self._transport.sendto(packet, self._peer)  # queued by the transport until writable
        except OSError as exc:
            self._send_failed(exc, packet)

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        if self.done:  # aborted before the socket was ready
            transport.close()
            return
        try:
            self.begin()
        except Exception as exc:  # pragma: no cover - a bug, but never a crashed server
            log.exception("tftp: session for %s failed to start", format_address(self._peer))
            self.finish(f"internal error: {exc}", 0, "internal error")
            return
        self._arm()

    def _mark(self) -> int:
        """A number that changes whenever the transfer moves forward."""
        return self._moves

    def _arm(self) -> None:
        self._seen_moves = self._mark()
        self._timer = self._loop.call_at(self._clock() + self._wait, self._on_timer)

    def _on_timer(self) -> None:
        # The per-packet path only bumps self._moves (no clock read, no timer re-arming): when the
        # timer fires after progress, it simply waits another period from now.  A stall is thus
        # noticed between one and two periods after the last progress.  (After a retransmission,
        # progress re-arms at once: see _reset_backoff.)
        if self.done:
            return
        now = self._clock()
        mark = self._mark()
        if mark != self._seen_moves:
            self._seen_moves = mark
            self._timer = self._loop.call_at(now + self._wait, self._on_timer)
            return
        self._tries += 1
        if self._tries > self._retries:
            self.finish("timeout", 0, "timed out")
            return
        self._wait = min(self._wait * 2, self._timeout * _MAX_BACKOFF)
        try:
            self.retransmit()
        except Exception as exc:
            log.exception("tftp: retransmission to %s failed", format_address(self._peer))
            self.finish(f"internal error: {exc}", 0, "internal error")
            return
        self._timer = self._loop.call_at(now + self._wait, self._on_timer)

    def _reset_backoff(self) -> None:
        """The first step forward after a retransmission: back to the first timeout, counted from
        now, as the engine does.  Left to the timer, the backed-off wait would run out first and
        a period follow it: a block lost right after a retransmission went again after three
        timeouts, not one.  Called only while ``_tries`` is set, so that the per-packet path
        re-arms no timer otherwise (see _on_timer)."""
        self._tries = 0
        self._wait = self._timeout
        if self._timer is not None:
            self._timer.cancel()
        self._arm()

    def error_received(self, exc: Exception) -> None:
        if not (isinstance(exc, OSError) and self._late_icmp(exc)):
            log.debug("tftp: %s: %s", format_address(self._peer), exc)

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def finish(self, outcome: str, error_code: int | None = None, error_message: str = "") -> None:
        """End the transfer: optional ERROR to the peer, clean up, one access-log line."""
        if self.done:
            return
        self.done = True
        if error_code is not None and self._transport is not None:
            self._send(codec.encode_error(error_code, error_message))
        self.cleanup(outcome == "ok")
        self.stats.seconds = self._clock() - self._started
        _log_access(self.stats, outcome)
        if not self.dallying:
            self.close_transport()
        self._server._session_done(self)

    def close_transport(self) -> None:
        self._server._dallying.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
        else:
            self._sock.close()

    def abort(self, message: str) -> None:
        if self.done:
            if self.dallying:
                self.close_transport()
            return
        self.finish("aborted: " + message, 0, message)

    # -- overridden by the two kinds of transfer

    def begin(self) -> None:
        raise NotImplementedError

    def retransmit(self) -> None:
        raise NotImplementedError

    def cleanup(self, ok: bool) -> None:
        pass

    def _peer_error(self, data: bytes) -> bool:
        """Handle anything but the expected packet; True when the session ended."""
        try:
            packet = self._decode(data)
        except self._DecodeError as exc:
            self.finish(f"malformed packet: {exc}", 4, "malformed packet")
            return True
        if type(packet) is codec.Error:
            self.finish(f"peer error {int(packet.code)}: {packet.message}")
            return True
        return False


class _ReadSession(_Session):
    """RRQ: the server sends DATA, window by window."""

    def __init__(self, server, peer, key, stats, sock, fileobj, blksize, window, timeout, netascii, oack) -> None:
        super().__init__(server, peer, key, stats, sock)
        self._file = fileobj
        self._source = BlockSource(fileobj, blksize, netascii=netascii, size_hint=stats.total)
        self._block = self._source.block
        self._encode_data = codec.encode_data
        self._Ack = codec.Ack
        self._blksize = blksize
        self._window = window
        self._lockstep = window == 1
        # big blocks go out with sendmsg(header, payload): the kernel gathers them, which saves
        # copying the payload into a new DATA packet (cheaper than sendto from about 8 KiB on)
        self._gather = blksize >= 8192
        self._raw_sendmsg = sock.sendmsg
        self._timeout = self._wait = timeout
        self._oack = oack
        self._base = 1
        self._sent_hi = 0
        self._last = 0
        self._dup_resent = False
        self._early_resent = False  # a whole window went again before any DATA was ACKed (_resend_window)

    def _mark(self) -> int:
        return self._moves + self._base  # both only grow; the lockstep path bumps _base alone

    def begin(self) -> None:
        if self._oack is not None:
            self._send(self._oack)
        else:
            self._send_window()

    def retransmit(self) -> None:
        if self._oack is not None:
            self.stats.retransmissions += 1
            self._send(self._oack)
        else:
            self.stats.retransmissions += self._resend_window()

    def _resend_window(self) -> int:
        """The window again (a timeout, or the ACK of the block before it); until the client has
        acknowledged a DATA block, whole once and then its first block alone (see the engine's
        resend_window): a request from a forged address must not make each retry send a whole
        window to it."""
        if self._base > 1 or self._window == 1 or not self._early_resent:
            self._early_resent = True
            return self._send_window()
        return resend_first_block(self)

    def _send_window(self) -> int:
        block = self._block
        encode = self._encode_data
        send = self._raw_sendto
        sendmsg = self._raw_sendmsg
        gather = self._gather
        peer = self._peer
        bs = self._blksize
        k = base = self._base
        end = base + self._window
        try:
            while k < end:
                payload = block(k)
                if gather:
                    sendmsg((encode(k & 0xFFFF, b""), payload), (), 0, peer)
                else:
                    send(encode(k & 0xFFFF, payload), peer)
                if len(payload) < bs:
                    self._last = k
                    break
                k += 1
            else:
                k -= 1
        except OSError as exc:
            # a full socket buffer, or an earlier datagram's ICMP error reported here: the rest
            # of the window goes after a timeout or a gap
            if not (isinstance(exc, BlockingIOError) or self._late_icmp(exc)):
                raise
            k -= 1
        self._sent_hi = k
        return k - base + 1

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if addr != self._peer:
            self._foreign(data, addr)
            return
        try:
            try:
                packet = self._decode(data)
            except self._DecodeError:
                self._peer_error(data)
                return
            if type(packet) is not self._Ack:
                self._peer_error(data)
                return
            base = self._base
            if self._lockstep and packet.block == (base & 0xFFFF) and self._oack is None:
                # the per-packet path of a lockstep transfer: the ACK of the block just sent
                if base == self._last:
                    self.stats.blocks = base
                    self.finish("ok")
                    return
                base += 1
                self._base = self._sent_hi = base  # (the timer watches _base: see _mark)
                source = self._source
                source._keep = base
                bs = self._blksize
                start = (base - source._first) * bs
                if start + bs <= source._have:  # BlockSource.block, inlined for the common case
                    payload = source._view[start : start + bs]
                else:
                    payload = source.block(base)
                if self._gather:
                    self._raw_sendmsg((self._encode_data(base & 0xFFFF, b""), payload), (), 0, self._peer)
                else:
                    self._raw_sendto(self._encode_data(base & 0xFFFF, payload), self._peer)
                if len(payload) < bs:
                    self._last = base
                if self._tries:
                    self._reset_backoff()
                return
            delta = (packet.block - base + 1) & 0xFFFF
            if self._oack is not None:
                if packet.block == 0:
                    self._oack = None
                    self._moves += 1
                    if self._tries:
                        self._reset_backoff()
                    self._send_window()
                return
            if 0 < delta <= self._sent_hi - base + 1:
                base += delta
                self._base = base
                last = self._last
                if last and base > last:
                    self.stats.blocks = last
                    self.finish("ok")
                    return
                self._source.release(base)
                self._dup_resent = False
                self._moves += 1
                if self._tries:
                    self._reset_backoff()
                self._send_window()
            elif delta == 0 and self._window > 1 and not self._dup_resent:
                # RFC 7440: the client saw a gap at the window's first block; resend it once
                self._dup_resent = True
                self.stats.retransmissions += self._resend_window()
            # else: a duplicate ACK -- ignored (RFC 1123: no Sorcerer's Apprentice)
        except Exception as exc:
            if isinstance(exc, OSError) and self._late_icmp(exc):
                return  # a send reported an earlier datagram's ICMP error: a timeout resends
            log.exception("tftp: read session for %s failed", format_address(self._peer))
            self.finish(f"internal error: {exc}", 0, "internal error")

    def answered(self) -> bool:
        return self._base > 1

    def cleanup(self, ok: bool) -> None:
        self.stats.bytes = self._source.bytes_read if ok else min(
            self._source.bytes_read, (self._base - 1) * self._blksize
        )
        self.stats.blocks = self._base - 1
        self._file.close()


class _WriteSession(_Session):
    """WRQ: the server receives DATA into a temporary file and renames it into place at the end."""

    def __init__(self, server, peer, key, stats, sock, upload, blksize, window, timeout, netascii, oack) -> None:
        super().__init__(server, peer, key, stats, sock)
        self.upload = upload
        self._file = os.fdopen(upload.fd, "wb", buffering=1 << 20)
        upload.fd = -1  # the file object closes it
        self._sink = BlockSink(self._file, netascii=netascii)
        self._blksize = blksize
        self._window = window
        self._timeout = self._wait = timeout
        self._oack = oack
        self._expected = 1
        self._in_window = 0
        self._gap_acked = False
        self._last_sent = codec.encode_ack(0)
        self._Data = codec.Data
        self._encode_ack = codec.encode_ack

    def begin(self) -> None:
        self._send(self._oack if self._oack is not None else self._last_sent)

    def retransmit(self) -> None:
        self.stats.retransmissions += 1
        if self._oack is not None and self._expected == 1:
            self._send(self._oack)
        else:
            self._last_sent = codec.encode_ack((self._expected - 1) & 0xFFFF)
            self._send(self._last_sent)
        self._in_window = 0

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if addr != self._peer:
            self._foreign(data, addr)
            return
        try:
            if self.dallying:
                # our last ACK was lost: the client sent its last block again
                if len(data) >= 4 and data[1] == 3 and ((data[2] << 8) | data[3]) == (self._expected - 1) & 0xFFFF:
                    self._dally_reack(self._last_sent)
                return
            try:
                packet = self._decode(data)
            except self._DecodeError:
                self._peer_error(data)
                return
            if type(packet) is not self._Data:
                self._peer_error(data)
                return
            block = packet.block
            expected = self._expected
            if block == (expected & 0xFFFF):
                payload = packet.payload
                if len(payload) > self._blksize:  # a broken client: dropping it would only stall
                    self.finish(OVERSIZED_DATA, 4, OVERSIZED_DATA)
                    return
                try:
                    self._sink.write(payload)
                except OSError as exc:
                    self._write_failed(exc)
                    return
                self._expected = expected + 1
                self._oack = None
                self._gap_acked = False
                if len(payload) < self._blksize:
                    self._complete(block)
                    return
                self._in_window += 1
                if self._in_window >= self._window:
                    self._in_window = 0
                    self._last_sent = ack = self._encode_ack(block)
                    self._send(ack)
                    self._moves += 1
                if self._tries:
                    self._reset_backoff()
            elif self._window == 1:
                if expected > 1 and block == ((expected - 1) & 0xFFFF):
                    self._send(self._last_sent)  # our ACK was lost: ACK again
            elif not self._gap_acked and ((block - expected) & 0xFFFF) < self._window:
                self._gap_acked = True
                self._in_window = 0
                self._last_sent = codec.encode_ack((expected - 1) & 0xFFFF)
                self._send(self._last_sent)
                self.stats.retransmissions += 1
        except Exception as exc:
            log.exception("tftp: write session for %s failed", format_address(self._peer))
            self.finish(f"internal error: {exc}", 0, "internal error")

    def _complete(self, block: int) -> None:
        try:
            self._sink.finish()
            self._file.close()
            self.upload.commit()
        except _Refused as exc:
            self.finish(f"refused: {exc.message}", exc.code, exc.message)
            return
        except OSError as exc:
            self._write_failed(exc)
            return
        self.stats.blocks = block if self._expected <= 0x10000 else self._expected - 1
        self._last_sent = codec.encode_ack(block)
        self._send(self._last_sent)
        self.dallying = True
        self.finish("ok")
        self._start_dally()

    def answered(self) -> bool:
        return self._expected > 1

    def written(self) -> int:
        return self._sink.bytes_written

    def cleanup(self, ok: bool) -> None:
        self.stats.bytes = self._sink.bytes_written
        self.stats.blocks = self._expected - 1
        if not self.upload.committed:
            try:
                self._file.close()
            except OSError:
                pass
        self.upload.close()


class _EngineSession(_SessionCommon):
    """An octet transfer whose DATA/ACK exchange runs in the transfer engine, in a worker thread.

    The request, the options, the file checks and opening stay here, on the loop; so do the end
    of the transfer (ERROR to the peer, renaming an upload, the access-log line) and the dally
    of an upload's final ACK.  In between, :meth:`engine.Session.run` moves every DATA and ACK
    (C: with the GIL released) and :meth:`abort` cancels it from the loop.
    """

    def __init__(self, server, peer, key, stats, sock, is_read, handle, blksize, window, timeout, oack) -> None:
        self._server = server
        self._loop = server._loop
        self._peer = peer
        self._key = key
        self._sock = sock
        self.stats = stats
        self._is_read = is_read
        self._file = handle if is_read else None  # the file of a read, the _Upload of a write
        self.upload = None if is_read else handle
        self._blksize = blksize
        self._window = window
        self._timeout = timeout
        self._oack = oack
        self._engine: Any = None
        self._abort_message: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reading = False
        self._fd = -1
        self._final_ack = b""
        self._last_block = 0
        self.done = False
        self.dallying = False
        self._started = self._loop.time()
        if is_read:
            self._fd = handle.fileno()
        else:
            self._fd, handle.fd = handle.fd, -1  # closed by cleanup() or _complete()

    def start(self) -> None:
        try:
            if self._is_read:
                first = self._oack
            else:
                first = self._oack if self._oack is not None else codec.encode_ack(0)
            self._engine = engine.Session(
                engine.SENDER if self._is_read else engine.RECEIVER, self._sock, self._fd, self._peer,
                blksize=self._blksize, windowsize=self._window, timeout=self._timeout,
                retries=self._server.retries, max_backoff=_MAX_BACKOFF, first=first,
                guard_first_window=True,
            )
            future = self._loop.run_in_executor(self._server._executor(), self._engine.run)
        except Exception as exc:
            log.exception("tftp: session for %s failed to start", format_address(self._peer))
            if self._engine is not None:
                self._engine.close()  # while the socket is still open: it gets its mode back
            self.finish(f"internal error: {exc}", 0, "internal error")
            return
        future.add_done_callback(self._ran)

    def _ran(self, future: Any) -> None:
        eng = self._engine
        try:
            outcome = future.result()
        except BaseException as exc:  # pragma: no cover - a bug, but never a crashed server
            log.error("tftp: transfer engine for %s failed: %r", format_address(self._peer), exc)
            eng.close()
            self.finish(f"internal error: {exc}", 0, "internal error")
            return
        eng.close()  # the socket is non-blocking again, as the loop wants it
        self.stats.retransmissions += eng.retransmissions
        if self.done:
            return
        try:
            if outcome == engine.DONE:
                if self._is_read:
                    self.finish("ok")
                else:
                    self._complete()
            elif outcome == engine.TIMEOUT:
                self.finish("timeout", 0, "timed out")
            elif outcome == engine.REFUSED:
                self.finish(_GONE)
            elif outcome == engine.STOP:
                self._stopped(eng.stop_packet)
            elif outcome == engine.CANCELLED:
                message = self._abort_message or "cancelled"
                self.finish("aborted: " + message, 0, message)
            elif outcome == engine.IO_ERROR and not self._is_read:
                self._write_failed(OSError(eng.error_errno, os.strerror(eng.error_errno)))
            else:
                reason = os.strerror(eng.error_errno) if eng.error_errno else f"engine outcome {outcome}"
                self.finish(f"internal error: {reason}", 0, "internal error")
        except Exception as exc:  # pragma: no cover
            log.exception("tftp: session for %s failed", format_address(self._peer))
            self.finish(f"internal error: {exc}", 0, "internal error")

    def _stopped(self, data: bytes) -> None:
        try:
            packet = codec.decode(data)
        except codec.DecodeError as exc:
            self.finish(f"malformed packet: {exc}", 4, "malformed packet")
            return
        if type(packet) is codec.Error:
            self.finish(f"peer error {int(packet.code)}: {packet.message}")
        elif type(packet) is codec.Data:  # the engine stops on a DATA only when it is too long
            self.finish(OVERSIZED_DATA, 4, OVERSIZED_DATA)
        else:  # pragma: no cover - the engine stops only on the three above
            self.finish(f"unexpected {type(packet).__name__}", 4, "unexpected packet")

    def _complete(self) -> None:
        block = (self._engine.next_block - 1) & 0xFFFF
        try:
            fd, self._fd = self._fd, -1
            os.close(fd)
            assert self.upload is not None
            self.upload.commit()
        except _Refused as exc:
            self.finish(f"refused: {exc.message}", exc.code, exc.message)
            return
        except OSError as exc:
            self._write_failed(exc)
            return
        self._last_block = block
        self._final_ack = codec.encode_ack(block)
        self._send(self._final_ack)
        self.dallying = True
        self.finish("ok")
        if self._sock.fileno() < 0:
            return
        self._loop.add_reader(self._sock.fileno(), self._dally_read)
        self._reading = True
        self._start_dally()

    def _dally_read(self) -> None:
        for _ in range(16):
            try:
                data, addr = self._sock.recvfrom(codec.MAX_BLKSIZE + 8)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._late_icmp(exc)
                return
            if addr != self._peer:
                self._foreign(data, addr)
                continue
            # our last ACK was lost: the client sent its last block again
            if len(data) >= 4 and data[1] == 3 and ((data[2] << 8) | data[3]) == self._last_block:
                self._dally_reack(self._final_ack)

    def _send(self, packet: bytes) -> None:
        try:
            self._sock.sendto(packet, self._peer)
        except OSError as exc:
            self._send_failed(exc, packet)

    def finish(self, outcome: str, error_code: int | None = None, error_message: str = "") -> None:
        """End the transfer: optional ERROR to the peer, clean up, one access-log line."""
        if self.done:
            return
        self.done = True
        if error_code is not None:
            self._send(codec.encode_error(error_code, error_message))
        self.cleanup()
        self.stats.seconds = self._loop.time() - self._started
        _log_access(self.stats, outcome)
        if not self.dallying:
            self.close_transport()
        self._server._session_done(self)

    def cleanup(self) -> None:
        eng = self._engine
        if eng is not None:
            self.stats.bytes = eng.bytes
            self.stats.blocks = eng.blocks
        if self._is_read:
            self._file.close()
            return
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1
        if self.upload is not None:
            self.upload.close()

    def answered(self) -> bool:
        return self._engine is not None and self._engine.blocks > 0

    def written(self) -> int:
        return self._engine.bytes if self._engine is not None else 0

    def close_transport(self) -> None:
        self._server._dallying.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reading:
            self._reading = False
            try:
                self._loop.remove_reader(self._sock.fileno())
            except Exception:  # pragma: no cover - the loop is closing
                pass
        self._sock.close()

    def abort(self, message: str) -> None:
        if self.done:
            if self.dallying:
                self.close_transport()
            return
        if self._engine is not None:
            self._abort_message = message
            self._engine.cancel()  # the engine returns CANCELLED soon; _ran finishes the session
        else:
            self.finish("aborted: " + message, 0, message)


def _account(user: str) -> Any:
    """The password-database entry of *user* (a name, or a numeric uid); ValueError if none."""
    import pwd

    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"no such user: {user!r}") from None


def _switch_user(entry: Any) -> None:
    """Become *entry*'s user, with its primary and supplementary groups, for good (real, effective
    and saved ids: there is no way back to root).  PermissionError unless root (or already it)."""
    if (os.getuid(), os.geteuid()) == (entry.pw_uid, entry.pw_uid):
        return
    # What the server imports on first use is imported now: the user may not be allowed to read
    # the Python installation (one under /root, say), and a transfer would fail on its import.
    import concurrent.futures.thread  # noqa: F401 - the engine's thread pool
    import ctypes  # noqa: F401 - renameat2 (_rename_noreplace)

    try:
        os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except PermissionError:
        raise PermissionError(errno.EPERM, f"running as user {entry.pw_name!r} needs root") from None
    log.info("tftp: running as user %s (uid %d, gid %d)", entry.pw_name, entry.pw_uid, entry.pw_gid)


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, server: "TftpServer") -> None:
        self._server = server

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self._server._on_request(data, addr)
        except Exception:  # pragma: no cover - a bug, but never a dead listener
            log.exception("tftp: request from %s failed", format_address(addr))

    def error_received(self, exc: Exception) -> None:
        log.debug("tftp: listener: %s", exc)


class TftpServer:
    """A TFTP server for the files under *root*.

    *port* 0 binds an ephemeral port; :attr:`port` is the bound one.  *timeout* is the first
    retransmission timeout in seconds (a client may change it with the ``timeout`` option),
    *retries* the retransmissions in a row before a transfer is abandoned.  *max_blksize* and
    *max_windowsize* cap what clients may negotiate, and so does *max_window_bytes* (windowsize
    times blksize).  *grace* is how long :meth:`close` lets
    running transfers finish.

    *user* (a user name): once the listening socket is bound (port 69 needs root), the process
    switches to that user and its groups for good, as tftpd-hpa's ``--user`` does, so that files
    are read and written with that user's permissions, not root's.  The switch is for the whole
    process (every thread), so a program that embeds the server makes that choice for itself.

    *max_sessions* transfers run at once, at most *max_sessions_per_client* of them for one
    client address.  When every slot is taken, a new request takes the slot of the oldest
    transfer whose client has not answered for *timeout* seconds since its request (a request
    from a forged address, or a client gone before its first ACK), which ends with ERROR 0.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        allow_write: bool = False,
        allow_overwrite: bool = False,
        max_sessions: int = 64,
        max_sessions_per_client: int = 16,
        timeout: float = 1.0,
        retries: int = 5,
        max_blksize: int = codec.MAX_BLKSIZE,
        max_windowsize: int = 64,
        max_window_bytes: int = 1 << 20,
        grace: float = 5.0,
        user: str | None = None,
    ) -> None:
        root = os.path.realpath(os.fspath(root))
        if not os.path.isdir(root):
            raise NotADirectoryError(f"TFTP root {root!r} is not a directory")
        if not codec.MIN_BLKSIZE <= max_blksize <= codec.MAX_BLKSIZE:
            raise ValueError("max_blksize must be in 8..65464")
        if not 1 <= max_windowsize <= MAX_WINDOWSIZE:
            raise ValueError("max_windowsize must be in 1..65535")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if max_sessions < 1 or max_sessions_per_client < 1:
            raise ValueError("max_sessions and max_sessions_per_client must be at least 1")
        self.user = user
        self._account = _account(user) if user is not None else None  # an unknown user fails here
        self.root = root
        self.host = host
        self._requested_port = port
        self.allow_write = allow_write
        self.allow_overwrite = allow_overwrite
        self.max_sessions = max_sessions
        self.max_sessions_per_client = max_sessions_per_client
        self.timeout = float(timeout)
        self.retries = retries
        self.max_blksize = max_blksize
        self.max_windowsize = max_windowsize
        self.max_window_bytes = max_window_bytes
        self.grace = grace
        self._loop: Any = None
        self._listener: Any = None
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sessions: dict[tuple, _Session] = {}
        self._per_client: dict[str, int] = {}  # running transfers by client address
        self._leaving = 0  # sessions ended to make room, still finishing
        self._dallying: dict[Any, None] = {}  # uploads after their final ACK, oldest first
        self._throttle = _Throttle()  # log lines of refused and malformed requests
        self._idle: asyncio.Event | None = None
        self._closing = False
        self._closed: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.port: int | None = None

    # -- lifecycle

    @property
    def address(self) -> tuple:
        """The bound (host, port)."""
        return (self.host, self.port)

    @property
    def sessions(self) -> int:
        """Transfers running now."""
        return len(self._sessions)

    async def start(self) -> None:
        """Bind the listening socket; requests are served from then on."""
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = asyncio.Event()
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            # "::" takes IPv4 clients too (as ::ffff:a.b.c.d), as every other fastnet server does,
            # unless the system says otherwise (net.ipv6.bindv6only)
            bind(sock, (self.host, self._requested_port))
            sock.setblocking(False)
            if self._account is not None:
                _switch_user(self._account)  # before the first request is read
        except BaseException:
            sock.close()
            raise
        self._listener, _ = await self._loop.create_datagram_endpoint(lambda: _Listener(self), sock=sock)
        self.port = sock.getsockname()[1]
        log.info(START_LINE, self.root, format_address((self.host, self.port)),
                 "read-write" if self.allow_write else "read-only")

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` has finished (start first if not started)."""
        if self._loop is None:
            await self.start()
        assert self._closed is not None
        await self._closed.wait()

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting requests, let running transfers finish for *grace* seconds, then stop."""
        if self._loop is None or self._closed is None:
            return
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        if self._listener is not None:
            self._listener.close()
        grace = self.grace if grace is None else grace
        if self._sessions and grace > 0:
            log.info("tftp: waiting up to %.1f s for %d transfer(s)", grace, len(self._sessions))
            try:
                await asyncio.wait_for(self._idle.wait(), grace)  # type: ignore[union-attr]
            except asyncio.TimeoutError:
                pass
        for session in list(self._sessions.values()):
            session.abort("server shutting down")
        if self._sessions:  # transfers in the engine end as soon as they notice the cancellation
            try:
                await asyncio.wait_for(self._idle.wait(), 10)  # type: ignore[union-attr]
            except asyncio.TimeoutError:  # pragma: no cover
                log.error("tftp: %d transfer(s) did not stop", len(self._sessions))
        for session in list(self._dallying):
            session.close_transport()
        self._dallying.clear()
        await asyncio.sleep(0)  # let the transports close
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        self._throttle.report()
        self._closed.set()
        log.info("tftp: stopped")

    def serve(self) -> None:
        """Serve until SIGTERM or Ctrl-C (SIGINT), then close gracefully.  Blocking."""
        from fastnet import loop as _loop

        async def main() -> None:
            await self.start()
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, stop.set)
                except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                    pass
            await stop.wait()
            log.info("tftp: shutting down")
            await self.close()

        _loop.run(main())

    def __enter__(self) -> "TftpServer":
        """Run the server on its own :class:`fastnet.Loop` in a background thread."""
        from fastnet import loop as _loop

        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = _loop.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                try:
                    loop.run_until_complete(self.start())
                except BaseException as exc:
                    failure.append(exc)
                    return
                finally:
                    ready.set()
                loop.run_until_complete(self._closed.wait())  # type: ignore[union-attr]
            finally:
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    asyncio.set_event_loop(None)
                    loop.close()

        self._thread = threading.Thread(target=run, name="fastnet-tftp-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def stop(self, grace: float | None = None) -> None:
        """Close a server started with ``with`` (from another thread) and wait for its thread."""
        thread = self._thread
        if thread is None or self._loop is None:
            return
        if thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self.close(grace), self._loop)
            try:
                future.result(timeout=(self.grace if grace is None else grace) + 10)
            except Exception:  # pragma: no cover
                log.exception("tftp: close failed")
            thread.join(timeout=10)
        self._thread = None

    # -- requests

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        # one worker per transfer the engine runs: at most max_sessions threads, made on demand
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, self.max_sessions), thread_name_prefix="fastnet-tftp-engine"
            )
        return self._pool

    def _session_done(self, session: _Session) -> None:
        if self._sessions.pop(session._key, None) is not None:
            client = session._peer[0]
            left = self._per_client[client] - 1
            if left:
                self._per_client[client] = left
            else:
                del self._per_client[client]
            if session.leaving:
                self._leaving -= 1
        if session.dallying:
            self._dallying[session] = None
            if self._closing:
                session.close_transport()
            elif len(self._dallying) > self.max_sessions:
                # a dally is a courtesy to a client whose final ACK may be lost: never more of
                # them than transfers, each with its socket (uploads come back-to-back)
                next(iter(self._dallying)).close_transport()
        if not self._sessions and self._idle is not None:
            self._idle.set()

    def _spoken_for(self, dev: int) -> int:
        """Bytes of file system *dev* that running uploads announced (tsize) and have not written
        yet.  Only uploads whose client has sent DATA count, or that are younger than *timeout*:
        a request alone (from a forged address, say) must not hold space for all its retries."""
        now = self._loop.time()
        total = 0
        for session in self._sessions.values():
            upload = session.upload
            if upload is None or not upload.announced or upload.dev != dev:
                continue
            if session.answered() or now - session._started < self.timeout:
                total += max(0, upload.announced - session.written())
        return total

    def _silent(self) -> Any:
        """Every slot is taken: the oldest transfer whose client has not answered in the
        *timeout* seconds since its request, whose slot a new request may take (None if none)."""
        now = self._loop.time()
        silent = [s for s in self._sessions.values()
                  if not s.leaving and not s.answered() and now - s._started >= self.timeout]
        return min(silent, key=lambda s: s._started) if silent else None

    def _make_room(self, session: Any) -> None:
        """End *session* (see _silent) for a request that has passed every check."""
        session.leaving = True
        self._leaving += 1
        session.abort("server busy: no answer from the client")

    def _refuse(self, addr: tuple, name: str, direction: str, code: int, message: str, options: dict | None = None) -> None:
        try:
            self._listener.sendto(codec.encode_error(code, message), addr)
        except Exception:  # pragma: no cover
            pass
        if self._noted(addr):
            _log_access(TransferStats(filename=name, direction=direction, peer=addr), f"refused: error {code}: {message}")

    def _noted(self, addr: tuple) -> bool:
        """Whether the log line of a refused or malformed request from *addr* may be written
        (_Throttle); the count of those left out is reported a period after the first of them."""
        throttle = self._throttle
        if throttle.allow(self._loop.time(), addr[0]):
            return True
        if throttle.suppressed == 1:
            self._loop.call_later(throttle.period, throttle.report)
        return False

    def _on_request(self, data: bytes, addr: tuple) -> None:
        if self._closing or addr[1] == 0:
            # source port 0: no answer can reach it, and no ICMP error would end the transfer;
            # a forged request, which would hold a slot for the whole of its retries
            return
        try:
            request = codec.decode(data)
        except codec.DecodeError as exc:
            if len(data) >= 2 and data[0] == 0 and data[1] in (1, 2):
                # an RRQ or WRQ all the same (a repeated option, say, which RFC 2347 does not
                # allow): refused like any other request, with its access-log line
                name = _request_name(data)
                self._refuse(addr, name, direction_of(data[1] == 1), 4, f"malformed request: {exc.reason}")
                return
            if self._noted(addr):
                log.warning("tftp: malformed request from %s: %s", format_address(addr), exc)
            if not (len(data) >= 2 and data[0] == 0 and data[1] == 5):
                self._listener.sendto(codec.encode_error(4, "malformed request"), addr)
            return
        kind = type(request)
        if kind is codec.Error:
            return
        if kind is not codec.ReadRequest and kind is not codec.WriteRequest:
            if self._noted(addr):
                log.warning("tftp: %s sent %s to the request port", format_address(addr), kind.__name__)
            self._listener.sendto(codec.encode_error(4, "expected a read or write request"), addr)
            return
        key = (addr, data)
        if key in self._sessions:
            return  # the client repeated its request before our first answer reached it
        is_read = kind is codec.ReadRequest
        direction = "read" if is_read else "write"
        name = request.filename
        if self._per_client.get(addr[0], 0) >= self.max_sessions_per_client:
            self._refuse(addr, name, direction, 0, "server busy: too many transfers from your address, try again later")
            return
        silent = None
        if len(self._sessions) - self._leaving >= self.max_sessions:
            silent = self._silent()
            if silent is None:
                self._refuse(addr, name, direction, 0, "server busy: too many transfers, try again later")
                return
        mode = request.mode
        if mode not in ("octet", "netascii"):
            self._refuse(addr, name, direction, 4, f"unsupported transfer mode {mode!r}")
            return
        netascii = mode == "netascii"
        try:
            sock = socket.socket(self._family, socket.SOCK_DGRAM)
        except OSError as exc:
            refusal = _refusal(exc, "cannot open a transfer socket", 0)
            self._refuse(addr, name, direction, refusal.code, refusal.message)
            log.error("tftp: cannot open a socket: %s", exc)
            return
        _recverr.enable(sock)  # a client that goes away is noticed at once (_SessionCommon)
        try:
            session = self._prepare(request, is_read, netascii, addr, key, sock)
        except _Refused as exc:
            sock.close()
            self._refuse(addr, name, direction, exc.code, exc.message)
            return
        except OSError as exc:
            # a failure the checks do not foresee (a file renamed under them, say): refused all
            # the same, or the client would hear nothing
            sock.close()
            refusal = _refusal(exc, "cannot serve the request", 0)
            self._refuse(addr, name, direction, refusal.code, refusal.message)
            log.warning("tftp: %s request from %s for %r failed: %s", direction, format_address(addr), name, exc)
            return
        except BaseException:
            sock.close()
            raise
        if silent is not None:  # only for a request that passed every check: junk ends nobody
            self._make_room(silent)
        self._sessions[key] = session
        self._per_client[addr[0]] = self._per_client.get(addr[0], 0) + 1
        self._idle.clear()  # type: ignore[union-attr]
        if type(session) is _EngineSession:
            session.start()
        else:
            self._loop.create_task(self._connect(session, sock))

    async def _connect(self, session: _Session, sock: socket.socket) -> None:
        try:
            await self._loop.create_datagram_endpoint(lambda: session, sock=sock)
        except Exception as exc:
            log.error("tftp: cannot start a transfer for %s: %s", format_address(session._peer), exc)
            session.finish(f"internal error: {exc}")

    def _prepare(self, request: Any, is_read: bool, netascii: bool, addr: tuple, key: tuple, sock: socket.socket) -> Any:
        name = request.filename
        path = resolve_path(self.root, name)
        directory = os.path.dirname(path)
        try:
            sock.bind((self.host, 0))
        except OSError as exc:  # no ephemeral port left, say
            raise _refusal(exc, "cannot open a transfer port", 0) from None
        sock.setblocking(False)
        if is_read:
            fileobj, size = self._open_for_read(path)
            try:
                accepted, blksize, window, timeout = _negotiate(self, request.options, True, netascii, size, directory)
            except BaseException:
                fileobj.close()
                raise
        else:
            dir_fd = self._check_write(path)
            try:
                accepted, blksize, window, timeout = _negotiate(self, request.options, False, netascii, None, directory)
            except BaseException:
                os.close(dir_fd)
                raise
            try:
                upload = _Upload(dir_fd, os.path.basename(path), self.allow_overwrite)  # owns dir_fd
            except OSError as exc:
                raise _refusal(exc, "cannot create the file", 0) from None
            if accepted.get("tsize"):
                upload.announced = accepted["tsize"]
                upload.dev = os.fstat(upload.dir_fd).st_dev
        handle = fileobj if is_read else upload
        try:
            return self._session(request, is_read, netascii, addr, key, sock, handle, size if is_read else None,
                                 accepted, blksize, window, timeout)
        except BaseException as exc:
            handle.close()
            if isinstance(exc, OSError):
                raise _refusal(exc, "cannot read the file" if is_read else "cannot create the file", 0) from None
            raise

    def _session(self, request, is_read, netascii, addr, key, sock, handle, size, accepted, blksize, window,
                 timeout) -> Any:
        """The session of a checked request; *handle* is the open file of a read, the _Upload of a write."""
        if not is_read and window > 1:
            # the client sends a window at a time: the transfer socket must queue all of it,
            # or a smaller window is answered (RFC 7440 lets the server lower it)
            window = fit_window(sock, blksize, window)
            accepted["windowsize"] = window
        stats = TransferStats(
            filename=request.filename, direction=direction_of(is_read), peer=addr, blksize=blksize,
            windowsize=window, options=dict(accepted), total=size,
        )
        oack = codec.encode_oack(accepted) if accepted else None
        if not netascii and engine.enabled() and (oack is None or len(oack) <= engine.FIRST_MAX):
            return _EngineSession(self, addr, key, stats, sock, is_read, handle, blksize, window, timeout, oack)
        if is_read:
            return _ReadSession(self, addr, key, stats, sock, handle, blksize, window, timeout, netascii, oack)
        return _WriteSession(self, addr, key, stats, sock, handle, blksize, window, timeout, netascii, oack)

    def _open_for_read(self, path: str) -> tuple[Any, int]:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):  # "f.bin/x": no such file, as a WRQ says
            raise _Refused(1, "file not found") from None
        except OSError as exc:
            raise _refusal(exc, "cannot read the file", 2) from None
        if not stat.S_ISREG(st.st_mode):
            raise _Refused(2, "not a regular file")
        try:
            fd = open_beneath(self.root, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except FileNotFoundError:
            raise _Refused(1, "file not found") from None
        except OSError as exc:
            if _changed(exc):
                raise _Refused(2, "path changed while it was opened") from None
            raise _refusal(exc, "cannot read the file", 2) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between stat and open
            os.close(fd)
            raise _Refused(2, "not a regular file")
        return open(fd, "rb", buffering=0), st.st_size

    def _check_write(self, path: str) -> int:
        """The directory an upload to *path* goes to, open (see :class:`_Upload`); :class:`_Refused`
        if it may not go there."""
        if not self.allow_write:
            raise _Refused(2, "writing is disabled on this server")
        directory, name = os.path.split(path)
        # any other failure (a name too long, a symlink loop, a directory nobody may search) is
        # refused as a read of the same name is (_open_for_read)
        try:
            st = os.stat(directory)
        except (FileNotFoundError, NotADirectoryError):
            raise _Refused(1, "directory not found") from None
        except OSError as exc:
            raise _refusal(exc, "cannot write the file", 2) from None
        if not stat.S_ISDIR(st.st_mode):
            raise _Refused(1, "directory not found")
        try:
            dir_fd = open_beneath(self.root, directory, _O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            raise _Refused(1, "directory not found") from None
        except OSError as exc:
            if _changed(exc):
                raise _Refused(2, "path changed while it was opened") from None
            raise _refusal(exc, "cannot write the file", 2) from None
        try:
            st = os.stat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return dir_fd
        except OSError as exc:
            os.close(dir_fd)
            raise _refusal(exc, "cannot write the file", 2) from None
        if not stat.S_ISREG(st.st_mode):
            os.close(dir_fd)
            raise _Refused(2, "not a regular file")
        if not self.allow_overwrite:
            os.close(dir_fd)
            raise _Refused(6, "file already exists")
        return dir_fd


_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)


def _refusal(exc: OSError, doing: str, code: int) -> _Refused:
    """The ERROR for a request that failed with *exc* while *doing* something: 2 (access violation)
    when permission was denied, else *code*.  Out of descriptors or memory is the server's trouble,
    not the request's: ERROR 0 "server busy ... try again later", never 2, which would send a user
    hunting for a permission problem."""
    if exc.errno in _EXHAUSTED:
        return _Refused(0, f"server busy: {(exc.strerror or 'out of resources').lower()}, try again later")
    return _Refused(2 if exc.errno in _DENIED else code, f"{doing}: {exc.strerror}")


def _request_name(data: bytes) -> str:
    """The file name of a malformed RRQ or WRQ, as far as there is one (for the access log)."""
    end = data.find(b"\0", 2)
    return data[2 : end if end >= 0 else len(data)].decode("utf-8", "surrogateescape")


def direction_of(is_read: bool) -> str:
    return "read" if is_read else "write"
