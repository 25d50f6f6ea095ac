"""TFTP packet codec: the pure-Python twin of ``fastnet.tftp._codec_c``.

Import it through the selector, ``from fastnet.tftp import codec``.  Both implementations have the
same API and the same behaviour, down to the text of every :class:`DecodeError`; the shared names
(:class:`DecodeError`, :class:`Opcode`, :class:`ErrorCode`, the constants) are defined here once
and re-used by the compiled module, so an exception raised by either is caught by either.

Wire format (RFC 1350, options RFC 2347/2348/2349)::

    RRQ/WRQ  | 01/02 | filename | 0 | mode | 0 | [ name | 0 | value | 0 ]*
    DATA     | 03 | block | payload (0..65464 bytes)
    ACK      | 04 | block
    ERROR    | 05 | code | message | 0
    OACK     | 06 | [ name | 0 | value | 0 ]*

Text (filenames, modes, option names and values, error messages) is UTF-8 with the
``surrogateescape`` error handler in both directions: any byte string a peer sends decodes to a
``str`` that encodes back to exactly the same bytes.  Modes and option names are lower-cased on
decode (ASCII letters only, as the protocol is case-insensitive there); values are kept as sent.
"""

from __future__ import annotations

import enum
import operator
import struct
from collections.abc import Mapping
from typing import Any, Union

__all__ = [
    "DecodeError",
    "Opcode",
    "ErrorCode",
    "MAX_BLKSIZE",
    "MIN_BLKSIZE",
    "DEFAULT_BLKSIZE",
    "MAX_REQUEST_SIZE",
    "MAX_OPTIONS",
    "ReadRequest",
    "WriteRequest",
    "Data",
    "Ack",
    "Error",
    "OptionAck",
    "Packet",
    "decode",
    "encode_rrq",
    "encode_wrq",
    "encode_data",
    "encode_ack",
    "encode_error",
    "encode_oack",
    "to_netascii",
    "from_netascii",
    "NetasciiEncoder",
    "NetasciiDecoder",
]

#: Largest block size a peer may negotiate (RFC 2348), hence the largest DATA payload.
MAX_BLKSIZE = 65464
#: Smallest block size a peer may negotiate (RFC 2348).
MIN_BLKSIZE = 8
#: Block size without a ``blksize`` option (RFC 1350).
DEFAULT_BLKSIZE = 512
#: Largest RRQ/WRQ datagram accepted or produced.
MAX_REQUEST_SIZE = 512
#: Most options one RRQ, WRQ or OACK may carry.
MAX_OPTIONS = 64
# Largest ERROR or OACK datagram accepted (a UDP payload cannot be larger).
_MAX_DATAGRAM = 65535

_TEXT_ENCODING = "utf-8"
_TEXT_ERRORS = "surrogateescape"


class Opcode(enum.IntEnum):
    """TFTP opcodes (RFC 1350, RFC 2347)."""

    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(enum.IntEnum):
    """Codes of TFTP ERROR packets (RFC 1350, RFC 2347)."""

    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8


_ERROR_CODES = tuple(ErrorCode)


class DecodeError(ValueError):
    """A datagram that is not a well-formed TFTP packet.

    ``str(exc)`` says what is wrong and where; ``exc.reason`` is the first part alone and
    ``exc.offset`` the byte offset in the datagram where the problem was found.
    """

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset

    def __reduce__(self):
        return (type(self), (self.reason, self.offset))


# ---------------------------------------------------------------------------------------------
# packets


class _Packet:
    """Base of the decoded packets: immutable, compared by type name and fields."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other).__name__ != type(self).__name__ or getattr(other, "_fields", None) != self._fields:
            return NotImplemented
        return self._values() == tuple(getattr(other, name) for name in self._fields)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        return (type(self), self._values())


_set = object.__setattr__
_new = object.__new__


def _str_field(value: object, what: str) -> str:
    """*value* as a plain ``str`` (a subclass is copied); TypeError for anything else."""
    if type(value) is str:
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        return str.__str__(value)
    raise TypeError(f"{what} must be str, not {type(value).__name__}")


def _dict_field(value: object) -> dict:
    """*value* as a plain ``dict`` (any other mapping is copied into one); TypeError for a non-mapping."""
    if type(value) is dict:
        return value  # type: ignore[return-value]
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"options must be a mapping, not {type(value).__name__}")


def _repr_payload(payload: bytes) -> str:
    if len(payload) <= 32:
        return repr(payload)
    return f"b'...'[{len(payload)} bytes]"


def _repr_code(code: int) -> str:
    return f"ErrorCode.{code.name}" if isinstance(code, ErrorCode) else repr(code)


class _Request(_Packet):
    __slots__ = ("filename", "mode", "options")
    _fields = ("filename", "mode", "options")

    filename: str
    mode: str
    options: dict[str, str]

    def __init__(self, filename: str, mode: str = "octet", options: Mapping[str, str] | None = None) -> None:
        _set(self, "filename", _str_field(filename, "filename"))
        _set(self, "mode", _str_field(mode, "mode"))
        _set(self, "options", {} if options is None else _dict_field(options))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(filename={self.filename!r}, mode={self.mode!r}, options={self.options!r})"


class ReadRequest(_Request):
    """RRQ: ``filename``, ``mode`` (lower-cased) and ``options`` (lower-cased names -> values)."""

    __slots__ = ()
    opcode = Opcode.RRQ


class WriteRequest(_Request):
    """WRQ: ``filename``, ``mode`` (lower-cased) and ``options`` (lower-cased names -> values)."""

    __slots__ = ()
    opcode = Opcode.WRQ


class Data(_Packet):
    """DATA: ``block`` number and ``payload`` bytes."""

    __slots__ = ("block", "payload")
    _fields = ("block", "payload")
    opcode = Opcode.DATA

    block: int
    payload: bytes

    def __init__(self, block: int, payload: bytes) -> None:
        block = operator.index(block)  # types first (TypeError), then values (ValueError)
        if type(payload) is not bytes:
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        _set(self, "block", _uint16(block, "block number"))
        _set(self, "payload", payload)

    def __hash__(self) -> int:
        return hash(("Data", self.block, self.payload))

    def __repr__(self) -> str:
        return f"Data(block={self.block!r}, payload={_repr_payload(self.payload)})"


class Ack(_Packet):
    """ACK: ``block`` number (0 acknowledges a WRQ or an OACK)."""

    __slots__ = ("block",)
    _fields = ("block",)
    opcode = Opcode.ACK

    block: int

    def __init__(self, block: int) -> None:
        _set(self, "block", _uint16(block, "block number"))

    def __hash__(self) -> int:
        return hash(("Ack", self.block))

    def __repr__(self) -> str:
        return f"Ack(block={self.block!r})"


class Error(_Packet):
    """ERROR: ``code`` (an :class:`ErrorCode` when known, else an ``int``) and ``message``."""

    __slots__ = ("code", "message")
    _fields = ("code", "message")
    opcode = Opcode.ERROR

    code: int
    message: str

    def __init__(self, code: int, message: str = "") -> None:
        code = operator.index(code)  # types first (TypeError), then values (ValueError)
        message = _str_field(message, "error message")
        code = _uint16(code, "error code")
        _set(self, "code", _ERROR_CODES[code] if code < len(_ERROR_CODES) else code)
        _set(self, "message", message)

    def __hash__(self) -> int:
        return hash(("Error", self.code, self.message))

    def __repr__(self) -> str:
        return f"Error(code={_repr_code(self.code)}, message={self.message!r})"


class OptionAck(_Packet):
    """OACK: ``options`` the server accepted (lower-cased names -> values)."""

    __slots__ = ("options",)
    _fields = ("options",)
    opcode = Opcode.OACK

    options: dict[str, str]

    def __init__(self, options: Mapping[str, str]) -> None:
        _set(self, "options", _dict_field(options))

    def __repr__(self) -> str:
        return f"OptionAck(options={self.options!r})"


Packet = Union[ReadRequest, WriteRequest, Data, Ack, Error, OptionAck]

# ---------------------------------------------------------------------------------------------
# decoding

_unpack_HH = struct.Struct("!HH").unpack_from
_unpack_H = struct.Struct("!H").unpack_from
_NAMES = {3: "DATA", 4: "ACK", 5: "ERROR"}


def _text(raw: bytes) -> str:
    return raw.decode(_TEXT_ENCODING, _TEXT_ERRORS)


def _string(data: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """The NUL-terminated string at *pos* and the offset after its NUL."""
    if pos >= len(data):
        raise DecodeError(f"missing {what}", pos)
    end = data.find(b"\0", pos)
    if end < 0:
        raise DecodeError(f"unterminated {what}", pos)
    return data[pos:end], end + 1


def _options(data: bytes, pos: int) -> dict[str, str]:
    options: dict[str, str] = {}
    n = len(data)
    while pos < n:
        if len(options) == MAX_OPTIONS:
            raise DecodeError(f"more than {MAX_OPTIONS} options", pos)
        start = pos
        name, pos = _string(data, pos, "option name")
        if not name:
            raise DecodeError("empty option name", start)
        value, pos = _string(data, pos, "option value")
        key = _text(name.lower())
        if key in options:
            raise DecodeError("repeated option", start)
        options[key] = _text(value)
    return options


def decode(packet: bytes | bytearray | memoryview) -> Packet:
    """Decode one TFTP datagram into a packet object; :class:`DecodeError` if it is malformed."""
    if type(packet) is not bytes:
        packet = bytes(memoryview(packet))
    n = len(packet)
    if n < 2:
        raise DecodeError(f"datagram too short for an opcode ({n} of 2 bytes)", n)
    opcode = (packet[0] << 8) | packet[1]
    if opcode == 3:
        if n < 4:
            raise DecodeError(f"truncated DATA header ({n} of 4 bytes)", n)
        if n - 4 > MAX_BLKSIZE:
            raise DecodeError(f"DATA payload of {n - 4} bytes exceeds {MAX_BLKSIZE}", 4 + MAX_BLKSIZE)
        data = _new(Data)  # fields already checked by the parse: skip the constructor's checks
        _set(data, "block", _unpack_H(packet, 2)[0])
        _set(data, "payload", packet[4:])
        return data
    if opcode == 4:
        if n != 4:
            if n < 4:
                raise DecodeError(f"truncated ACK ({n} of 4 bytes)", n)
            raise DecodeError(f"ACK longer than 4 bytes ({n} bytes)", 4)
        ack = _new(Ack)
        _set(ack, "block", _unpack_H(packet, 2)[0])
        return ack
    if opcode == 1 or opcode == 2:
        if n > MAX_REQUEST_SIZE:
            raise DecodeError(f"request of {n} bytes exceeds {MAX_REQUEST_SIZE}", MAX_REQUEST_SIZE)
        filename, pos = _string(packet, 2, "filename")
        mode, pos = _string(packet, pos, "mode")
        options = _options(packet, pos)
        request = _new(ReadRequest if opcode == 1 else WriteRequest)
        _set(request, "filename", _text(filename))
        _set(request, "mode", _text(mode.lower()))
        _set(request, "options", options)
        return request
    if opcode == 5:
        if n > _MAX_DATAGRAM:
            raise DecodeError(f"ERROR packet of {n} bytes exceeds {_MAX_DATAGRAM}", _MAX_DATAGRAM)
        if n < 4:
            raise DecodeError(f"truncated ERROR header ({n} of 4 bytes)", n)
        code = _unpack_H(packet, 2)[0]
        message, pos = _string(packet, 4, "error message")
        if pos != n:
            raise DecodeError("trailing bytes after the ERROR message", pos)
        error = _new(Error)
        _set(error, "code", _ERROR_CODES[code] if code < len(_ERROR_CODES) else code)
        _set(error, "message", _text(message))
        return error
    if opcode == 6:
        if n > _MAX_DATAGRAM:
            raise DecodeError(f"OACK packet of {n} bytes exceeds {_MAX_DATAGRAM}", _MAX_DATAGRAM)
        oack = _new(OptionAck)
        _set(oack, "options", _options(packet, 2))
        return oack
    raise DecodeError(f"unknown opcode {opcode}", 0)


# ---------------------------------------------------------------------------------------------
# encoding


# Argument checks run in a fixed order, the same as the compiled module's (see docs/codec.md):
# first the type of every argument, in argument order (an options mapping, then each name and
# value in iteration order): TypeError; then the values: numbers' ranges, the strings' encoding
# in wire order, the wire-format rules (tftp_check_strings in src_c/tftp_codec.c), the packet's
# size: ValueError.  A call with several faults thus raises the same error in both.


def _utf8(value: str, what: str) -> bytes:
    try:
        return str.encode(value, _TEXT_ENCODING, _TEXT_ERRORS)
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not encodable as UTF-8") from None


def _option_items(options: object) -> list:
    """The (name, value) pairs of *options* (None: none), every one of the right type."""
    if options is None:
        return []
    if type(options) is not dict and not isinstance(options, Mapping):
        raise TypeError(f"options must be a mapping, not {type(options).__name__}")
    items = list(options.items())  # type: ignore[attr-defined]
    for name, value in items:
        if not isinstance(name, str):
            raise TypeError(f"option name must be str, not {type(name).__name__}")
        if not isinstance(value, str) and (not isinstance(value, int) or isinstance(value, bool)):
            raise TypeError(f"option value must be str or int, not {type(value).__name__}")
    return items


def _check_strings(strings: list[bytes], first_option: int) -> None:
    """tftp_check_strings: the wire-format rules, in its order."""
    if first_option:
        if b"\0" in strings[0]:
            raise ValueError("filename contains a NUL byte")
        if b"\0" in strings[1]:
            raise ValueError("mode contains a NUL byte")
    seen: set[bytes] = set()
    for i in range(first_option, len(strings), 2):
        name = strings[i]
        if b"\0" in name:
            raise ValueError("option name contains a NUL byte")
        if not name:
            raise ValueError("empty option name")
        key = name.lower()  # ASCII letters only, as tftp_ascii_ieq
        if key in seen:
            raise ValueError("repeated option name")
        if len(seen) >= MAX_OPTIONS:
            raise ValueError(f"more than {MAX_OPTIONS} options")
        seen.add(key)
        if b"\0" in strings[i + 1]:
            raise ValueError("option value contains a NUL byte")


def _encode_strings(opcode: int, filename: object, mode: object, options: object) -> bytes:
    if opcode != 6:
        if not isinstance(filename, str):
            raise TypeError(f"filename must be str, not {type(filename).__name__}")
        if not isinstance(mode, str):
            raise TypeError(f"mode must be str, not {type(mode).__name__}")
    items = _option_items(options)
    strings: list[bytes] = []
    if opcode != 6:
        strings.append(_utf8(filename, "filename"))  # type: ignore[arg-type]
        strings.append(_utf8(mode, "mode"))  # type: ignore[arg-type]
    # one option too many is enough for the rules to refuse: the rest are not encoded
    for name, value in items[: MAX_OPTIONS + 1]:
        strings.append(_utf8(name, "option name"))
        if isinstance(value, str):
            strings.append(_utf8(value, "option value"))
        else:
            strings.append(str(int(value)).encode("ascii"))
    _check_strings(strings, 0 if opcode == 6 else 2)
    size = 2 + sum(len(raw) + 1 for raw in strings)
    if opcode != 6:
        if size > MAX_REQUEST_SIZE:
            raise ValueError(f"request of {size} bytes exceeds {MAX_REQUEST_SIZE}")
    elif size > _MAX_DATAGRAM:
        raise ValueError(f"OACK packet of {size} bytes exceeds {_MAX_DATAGRAM}")
    return struct.pack("!H", opcode) + b"".join(raw + b"\0" for raw in strings)


def encode_rrq(filename: str, mode: str = "octet", options: Mapping[str, str | int] | None = None) -> bytes:
    """A read request: ``encode_rrq("test.jpg")`` is ``b"\\x00\\x01test.jpg\\x00octet\\x00"``.

    *options* maps option names to ``str`` or ``int`` values; they go on the wire in iteration
    order.  ValueError for a NUL inside a string, an empty or repeated (case-insensitively) option
    name, or a request over 512 bytes; TypeError for an argument of the wrong type (checked first).
    """
    return _encode_strings(1, filename, mode, options)


def encode_wrq(filename: str, mode: str = "octet", options: Mapping[str, str | int] | None = None) -> bytes:
    """A write request; the same arguments and rules as :func:`encode_rrq`."""
    return _encode_strings(2, filename, mode, options)


def _uint16(value: object, what: str) -> int:
    value = operator.index(value)
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} {value} is outside 0..65535")
    return value


_pack_HH = struct.Struct("!HH").pack


def encode_data(block: int, payload: bytes | bytearray | memoryview) -> bytes:
    """A DATA packet; ValueError for a block outside 0..65535 or a payload over 65464 bytes."""
    if type(payload) is not bytes:
        block = operator.index(block)  # types first (TypeError), then values (ValueError)
        try:
            payload = bytes(memoryview(payload))
        except TypeError:
            raise TypeError(f"a bytes-like object is required, not '{type(payload).__name__}'") from None
    block = _uint16(block, "block number")
    if len(payload) > MAX_BLKSIZE:
        raise ValueError(f"DATA payload of {len(payload)} bytes exceeds {MAX_BLKSIZE}")
    return _pack_HH(3, block) + payload


def encode_ack(block: int) -> bytes:
    """An ACK packet: ``encode_ack(n) == struct.pack("!HH", 4, n)``."""
    return _pack_HH(4, _uint16(block, "block number"))


def encode_error(code: int, message: str = "") -> bytes:
    """An ERROR packet; *code* is an :class:`ErrorCode` or any int in 0..65535.

    ValueError for a NUL in *message* or a packet over 65535 bytes (UDP's limit, and decode's).
    """
    code = operator.index(code)  # types first (TypeError), then values (ValueError)
    if not isinstance(message, str):
        raise TypeError(f"error message must be str, not {type(message).__name__}")
    code = _uint16(code, "error code")
    raw = _utf8(message, "error message")
    if b"\0" in raw:
        raise ValueError("error message contains a NUL byte")
    if len(raw) + 5 > _MAX_DATAGRAM:
        raise ValueError(f"ERROR packet of {len(raw) + 5} bytes exceeds {_MAX_DATAGRAM}")
    return _pack_HH(5, code) + raw + b"\0"


def encode_oack(options: Mapping[str, str | int]) -> bytes:
    """An OACK packet carrying *options* in iteration order (the same rules as for requests, and
    ValueError for a packet over 65535 bytes)."""
    return _encode_strings(6, None, None, options)


# ---------------------------------------------------------------------------------------------
# netascii


def _as_bytes(data: object) -> bytes:
    return data if type(data) is bytes else bytes(memoryview(data))  # type: ignore[return-value]


def to_netascii(data: bytes | bytearray | memoryview) -> bytes:
    """Encode to netascii: LF becomes CR LF, CR becomes CR NUL."""
    return _as_bytes(data).replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def from_netascii(data: bytes | bytearray | memoryview) -> bytes:
    """Decode netascii: CR LF becomes LF, CR NUL becomes CR.

    A CR followed by any other byte (or ending the data) is kept as it is and the byte after it
    is decoded normally; peers that send bare CRs lose nothing.
    """
    # CR LF and CR NUL cannot overlap (their second byte is not a CR), so two passes are exact.
    return _as_bytes(data).replace(b"\r\n", b"\n").replace(b"\r\0", b"\r")


class NetasciiEncoder:
    """Incremental :func:`to_netascii`: ``feed(chunk)`` returns the encoded chunk."""

    __slots__ = ()

    def feed(self, chunk: bytes | bytearray | memoryview) -> bytes:
        return to_netascii(chunk)

    def flush(self) -> bytes:
        return b""


class NetasciiDecoder:
    """Incremental :func:`from_netascii`: a CR ending a chunk waits for the next byte.

    ``b"".join(d.feed(c) for c in chunks) + d.flush()`` equals ``from_netascii(b"".join(chunks))``
    however the data is split.
    """

    __slots__ = ("_pending_cr",)

    def __init__(self) -> None:
        self._pending_cr = False

    def feed(self, chunk: bytes | bytearray | memoryview) -> bytes:
        data = _as_bytes(chunk)
        if self._pending_cr:
            if not data:
                return b""
            data = b"\r" + data
            self._pending_cr = False
        if data.endswith(b"\r"):
            self._pending_cr = True
            data = data[:-1]
        return from_netascii(data)

    def flush(self) -> bytes:
        """The held-back CR, if the data ended with one; the decoder is then reset."""
        if self._pending_cr:
            self._pending_cr = False
            return b"\r"
        return b""
