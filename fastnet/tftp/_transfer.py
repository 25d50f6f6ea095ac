"""Pieces shared by the TFTP client and server: statistics, block sources and sinks, options.

A *block source* turns a file into DATA payloads for the sender (block ``k`` is bytes
``(k-1)*blksize .. k*blksize`` of the wire stream); it reads the file in large chunks, so the
per-block cost is a slice, and it keeps only the blocks the sender may still have to resend.
A *block sink* writes received payloads.  Both convert netascii on the fly.

Block numbers here are absolute (1, 2, ... past 65535); the wire carries ``k & 0xFFFF``, so a
transfer rolls over from 65535 to 0 as tftpd-hpa, curl, atftp and busybox do.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import stat
import tempfile
from typing import Any, BinaryIO

from .. import _recverr
from . import codec

__all__ = [
    "queued_error",
    "queued_error_datagram",
    "TransferStats",
    "BlockSource",
    "BlockSink",
    "MAX_WINDOWSIZE",
    "MIN_TIMEOUT",
    "MAX_TIMEOUT",
    "DALLY_MAX",
    "DISK_FULL_ERRNOS",
    "DISK_FULL",
    "OVERSIZED_DATA",
    "parse_uint",
    "free_space",
    "temp_beside",
    "link_anonymous",
    "resend_first_block",
    "fit_window",
    "MODES",
]

MAX_WINDOWSIZE = 65535  # RFC 7440
MIN_TIMEOUT = 1  # RFC 2349, seconds
MAX_TIMEOUT = 255
DALLY_MAX = 10.0  # seconds: the longest a final dally listens after an ACK (or re-ACK) of the last block
MODES = ("octet", "netascii")
#: a write failing with one of these is the disk's fault: ERROR 3, DISK_FULL, to the peer
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
DISK_FULL = "disk full or allocation exceeded"
#: the ERROR 4 message (and the log's outcome) for a DATA longer than the negotiated block size
OVERSIZED_DATA = "DATA longer than the block size"
_READ_CHUNK = 1 << 20


@dataclasses.dataclass
class TransferStats:
    """What one transfer did.

    ``bytes`` counts file bytes (the local file's, after netascii conversion); ``blocks`` the DATA
    blocks sent or received in sequence; ``retransmissions`` the packets sent again after a
    timeout (or a gap, in a windowed transfer); ``options`` the options in force, as negotiated
    (empty when the peer ignored them).
    """

    filename: str
    direction: str  # "download" / "upload" (client), "read" / "write" (server)
    peer: tuple = ()
    bytes: int = 0
    blocks: int = 0
    retransmissions: int = 0
    seconds: float = 0.0
    blksize: int = 512
    windowsize: int = 1
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    total: int | None = None  # the size announced by tsize, when known

    @property
    def rate(self) -> float:
        """Bytes per second (0.0 for an instantaneous transfer)."""
        return self.bytes / self.seconds if self.seconds > 0 else 0.0


def parse_uint(value: str) -> int | None:
    """A TFTP option's decimal value, or None when it is not a plain unsigned decimal number."""
    if not value or len(value) > 20 or not value.isascii() or not value.isdigit():
        return None
    return int(value)


def free_space(directory: str) -> int:
    """Bytes an unprivileged writer may still allocate under *directory*."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _umask() -> int:
    try:
        with open("/proc/self/status", "rb") as f:  # Linux 4.7+: read without changing it
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_beside(final: str, prefix: str, suffix: str = ".part", *, dir_fd: int | None = None,
                anonymous: bool = False) -> tuple[int, str]:
    """(descriptor, path) of a new temporary file in *final*'s directory, to be renamed onto
    *final* once complete.  With *dir_fd*, *final* is a name in that open directory and the
    temporary file is made there (the path returned is its name in it), wherever the directory
    has been moved or whatever its path now leads to.

    With *dir_fd* and *anonymous*, the file has no name at all where the file system allows it
    (``O_TMPFILE``; the path returned is then ""): a process killed before the file is complete
    leaves nothing behind.  It gets its name with :func:`link_anonymous`.

    mkstemp() creates it 0600, which the rename would carry over: it gets instead the permission
    bits of the regular file it is to replace, or else those a new file would get (0666 less the
    umask), as when a download or upload writes *final* directly.
    """
    try:
        st = os.stat(final, dir_fd=dir_fd)
        mode = stat.S_IMODE(st.st_mode) & 0o777 if stat.S_ISREG(st.st_mode) else None
    except OSError:
        mode = None
    if mode is None:
        mode = 0o666 & ~_umask()
    if anonymous and dir_fd is not None and _PROC_FD and hasattr(os, "O_TMPFILE"):
        try:
            fd = os.open(".", os.O_RDWR | os.O_TMPFILE | getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise  # a file system without O_TMPFILE (vfat, NFS, old kernels) takes a name
        else:
            try:
                os.fchmod(fd, mode)
            except BaseException:
                os.close(fd)
                raise
            return fd, ""
    if dir_fd is None:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(final) or ".", prefix=prefix, suffix=suffix)
    else:
        fd, tmp = _mkstemp_at(dir_fd, prefix, suffix)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp, dir_fd=dir_fd)
        raise
    return fd, tmp


_PROC_FD = os.path.isdir("/proc/self/fd")  # where an anonymous file is found to be linked


def link_anonymous(fd: int, name: str, dir_fd: int) -> None:
    """Give the anonymous file *fd* (``temp_beside(anonymous=True)``) the name *name* in *dir_fd*:
    FileExistsError if that name is taken (link() never replaces)."""
    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)


def _mkstemp_at(dir_fd: int, prefix: str, suffix: str) -> tuple[int, str]:
    """mkstemp() in an open directory: O_CREAT | O_EXCL, which never follows a symbolic link."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        name = prefix + os.urandom(6).hex() + suffix
        try:
            return os.open(name, flags, 0o600, dir_fd=dir_fd), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", prefix + suffix)


def resend_first_block(sender: Any) -> int:
    """Send the first block of *sender*'s window again, alone: what a retry sends before the peer
    has acknowledged any DATA (the C engine's resend_window tells why).  *sender* has the
    ``_window``, ``_sent_hi`` and ``_send_window()`` of the twin engine and the server's
    per-packet read session; an ACK of any block sent before stays good (``_sent_hi``)."""
    window, sent_hi = sender._window, sender._sent_hi
    sender._window = 1
    try:
        return sender._send_window()
    finally:
        sender._window = window
        sender._sent_hi = max(sender._sent_hi, sent_hi)


def fit_window(sock: socket.socket, blksize: int, window: int) -> int:
    """The largest window, up to *window*, whose burst of DATA the receive buffer of *sock* can
    queue at once, after asking the kernel for a buffer that holds all of *window* (it grants at
    most ``net.core.rmem_max``).  A burst larger than the buffer loses its tail on every window.

    The kernel charges a datagram about twice its size against the buffer (and reports twice
    the size it was asked for, of which half is usable).
    """
    per = 2 * blksize + 1024
    want = min(window * per, 0x7FFFFFFF)  # setsockopt takes a C int; the kernel caps it far lower
    try:
        have = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        if have < want:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)
            have = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    except OSError:  # pragma: no cover - a kernel that refuses: what it has is what there is
        return 1
    return max(1, min(window, have // per))


class BlockSource:
    """DATA payloads of a file, block by block (``block(k)``), read ahead in large chunks.

    Octet files are read with ``readinto`` into one reused buffer (no fresh megabyte of memory,
    hence no page faults, per chunk); netascii goes through the encoder chunk by chunk.
    """

    __slots__ = (
        "_read", "_readinto", "_blksize", "_buf", "_view", "_have", "_first", "_keep", "_eof", "_encoder",
        "_chunk", "bytes_read",
    )

    def __init__(
        self,
        fileobj: BinaryIO,
        blksize: int,
        *,
        netascii: bool = False,
        chunk: int = _READ_CHUNK,
        size_hint: int | None = None,
    ) -> None:
        self._read = fileobj.read
        self._blksize = blksize
        self._first = 1  # block number of the first byte of _buf
        self._keep = 1  # blocks before this one are never asked for again
        self._eof = False
        self._encoder = codec.NetasciiEncoder() if netascii else None
        self._chunk = max(chunk, blksize)
        self.bytes_read = 0
        self._have = 0  # bytes of _buf in use
        self._readinto = None if netascii else getattr(fileobj, "readinto", None)
        if self._readinto is not None:
            cap = self._chunk if size_hint is None else min(self._chunk, size_hint + blksize)
            self._buf: Any = bytearray(max(cap, 2 * blksize))
        else:
            self._buf = b""
        self._view = memoryview(self._buf)

    def release(self, block: int) -> None:
        """Blocks before *block* are acknowledged: their bytes may be dropped."""
        self._keep = block

    def block(self, k: int) -> memoryview:
        """The payload of block *k* (shorter than blksize for the last block, maybe empty)."""
        start = (k - self._first) * self._blksize
        end = start + self._blksize
        if end <= self._have:
            return self._view[start:end]
        if not self._eof:
            self._fill(end)
            start = (k - self._first) * self._blksize
        return self._view[start : min(start + self._blksize, self._have)]

    def _fill(self, end: int) -> None:
        if self._readinto is None:
            self._fill_bytes(end)
            return
        buf = self._buf
        have = self._have
        drop = min((self._keep - self._first) * self._blksize, have)
        if drop > 0:
            buf[0 : have - drop] = buf[drop:have]  # the blocks still wanted move to the front
            have -= drop
            self._first = self._keep
            end -= drop
        if end > len(buf):  # a window larger than the buffer: a larger buffer
            grown = bytearray(max(end, 2 * len(buf)))
            grown[:have] = buf[:have]
            self._buf = buf = grown
            self._view = memoryview(buf)
        view = self._view
        readinto = self._readinto
        while have < end:
            n = readinto(view[have:])
            if not n:
                self._eof = True
                break
            have += n
            self.bytes_read += n
        self._have = have

    def _fill_bytes(self, end: int) -> None:
        bs = self._blksize
        drop = (self._keep - self._first) * bs
        buf = self._buf
        if drop > 0:
            buf = buf[drop:]
            self._first = self._keep
            end -= drop
        parts = [buf] if buf else []
        have = len(buf)
        while have < end and not self._eof:
            data = self._read(self._chunk)
            if not data:
                self._eof = True
                if self._encoder is not None:
                    data = self._encoder.flush()
            else:
                self.bytes_read += len(data)
                if self._encoder is not None:
                    data = self._encoder.feed(data)
            if data:
                parts.append(data)
                have += len(data)
        self._view.release()
        # a single part is used as it is: no copy of a large read
        self._buf = buf = parts[0] if len(parts) == 1 else b"".join(parts)
        self._view = memoryview(buf)
        self._have = len(buf)


class BlockSink:
    """Writes received DATA payloads to a binary file, decoding netascii if asked."""

    __slots__ = ("_write", "raw_write", "converts", "_decoder", "bytes_written")

    def __init__(self, fileobj: BinaryIO, *, netascii: bool = False) -> None:
        self._write = self.raw_write = fileobj.write
        self._decoder = codec.NetasciiDecoder() if netascii else None
        self.converts = netascii  # False: callers may use raw_write and count the bytes themselves
        self.bytes_written = 0

    def write(self, payload: bytes) -> None:
        if self._decoder is not None:
            payload = self._decoder.feed(payload)
        self._write(payload)
        self.bytes_written += len(payload)

    def finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._write(tail)
                self.bytes_written += len(tail)


def queued_error(sock: socket.socket, peer: tuple) -> Any:
    """The ERROR *peer* left queued on *sock*, if any, read without blocking (else None).

    A transfer is about to end as "peer gone" (a port unreachable named its peer).  A peer that
    leaves on purpose (Ctrl-C, a server shutting down) sends an ERROR and then closes its socket;
    a packet of ours that crossed that ERROR meets the closed port, and the ICMP error comes back
    (on loopback at once) and is reported by our next call on the socket -- before the ERROR,
    which still waits in the receive queue.  The transfer ends on that ERROR then, as had it been
    read first.  Whatever else is queued is dropped: the transfer is over.  (The C transfer
    engine does the same.)  Used by the server's sessions, the client and the twin engine.
    """
    data = queued_error_datagram(sock, peer)
    return None if data is None else codec.decode(data)


def queued_error_datagram(sock: socket.socket, peer: tuple) -> bytes | None:
    """:func:`queued_error`, as the datagram (a well-formed ERROR from *peer*)."""
    try:
        timeout = sock.gettimeout()
    except OSError:  # closed
        return None
    if timeout != 0.0:
        sock.settimeout(0.0)  # with a Python-level timeout, recvfrom would wait for data first
    try:
        for _ in range(256):
            try:
                data, addr = sock.recvfrom(65536)
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in _recverr.LATE_ERRNOS:
                    continue  # another ICMP error, reported (and cleared) by this call: read on
                return None  # BlockingIOError: nothing more is queued
            if len(data) >= 4 and data[0] == 0 and data[1] == 5 and addr[1] == peer[1] and addr[0] == peer[0]:
                try:
                    codec.decode(data)
                except codec.DecodeError:
                    continue
                return data
    finally:
        if timeout != 0.0:
            sock.settimeout(timeout)
    return None
