"""Exceptions raised by the TFTP client (and used by the server to end a transfer).

    TftpError                 base class: ``code`` (a TFTP error code or None) and ``message``
    ├── TftpTimeout           no answer after the last retry (also a ``TimeoutError``)
    ├── TftpRefused           nothing listens at the server's port, or its transfer port closed
    │                         mid-transfer (also a ``ConnectionRefusedError``)
    ├── TftpRemoteError       the peer sent an ERROR packet: its code and message
    └── TftpProtocolError     the peer broke the protocol (bad OACK, malformed packet ...)
"""

from __future__ import annotations

import errno

__all__ = ["TftpError", "TftpTimeout", "TftpRefused", "TftpRemoteError", "TftpProtocolError"]

_CODE_NAMES = {
    0: "not defined",
    1: "file not found",
    2: "access violation",
    3: "disk full or allocation exceeded",
    4: "illegal TFTP operation",
    5: "unknown transfer ID",
    6: "file already exists",
    7: "no such user",
    8: "option refused",
}


class TftpError(Exception):
    """A TFTP transfer failed.  ``code`` is the TFTP error code involved (or None)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = None if code is None else int(code)

    def __str__(self) -> str:
        if self.code is None:
            return self.message
        name = _CODE_NAMES.get(self.code, "unknown code")
        return f"{self.message} (TFTP error {self.code}: {name})"

    def __reduce__(self):
        return (type(self), (self.message, self.code))


class TftpTimeout(TftpError, TimeoutError):
    """The peer stopped answering: every retry timed out.  ``errno`` is ``ETIMEDOUT``."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message, code)
        self.errno, self.strerror = errno.ETIMEDOUT, message


class TftpRefused(TftpError, ConnectionRefusedError):
    """The server's host answered with ICMP port unreachable: no TFTP server at the request port,
    or the server went away mid-transfer (its transfer port closed).  ``errno`` is ``ECONNREFUSED``."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message, code)
        self.errno, self.strerror = errno.ECONNREFUSED, message


class TftpRemoteError(TftpError):
    """The peer sent an ERROR packet; ``code`` and ``message`` are the peer's."""

    def __str__(self) -> str:
        name = _CODE_NAMES.get(self.code or 0, "unknown code")
        text = self.message or name
        return f"peer error {self.code} ({name}): {text}" if self.message else f"peer error {self.code} ({name})"


class TftpProtocolError(TftpError):
    """The peer broke the protocol: a malformed or unexpected packet, or an OACK we never asked for."""
