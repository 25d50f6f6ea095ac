# cython: language_level=3, embedsignature=True
"""TFTP packet codec, compiled: a thin Python boundary over the C core in ``src_c/tftp_codec.c``.

Import it through the selector, ``from fastnet.tftp import codec``.  The pure-Python twin
``fastnet.tftp._codec_py`` has the same API and behaviour (down to every DecodeError text); the
shared names (DecodeError, Opcode, ErrorCode and the constants) are taken from it, so an exception
raised by either implementation is caught by either.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.bool cimport PyBool_Check
from cpython.dict cimport PyDict_CheckExact, PyDict_Items, PyDict_SetItem
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_AsLongLongAndOverflow, PyLong_Check, PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.number cimport PyNumber_Index
from cpython.unicode cimport PyUnicode_Check, PyUnicode_CheckExact, PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.stdio cimport snprintf
from libc.string cimport memchr

from collections.abc import Mapping
from typing import Union

from fastnet.tftp._codec_py import (
    DEFAULT_BLKSIZE,
    MAX_BLKSIZE,
    MAX_OPTIONS,
    MAX_REQUEST_SIZE,
    MIN_BLKSIZE,
    DecodeError,
    ErrorCode,
    Opcode,
)

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


cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL


cdef extern from "tftp_codec.h" nogil:
    enum:
        TFTP_RRQ
        TFTP_WRQ
        TFTP_DATA
        TFTP_ACK
        TFTP_ERROR
        TFTP_OACK
        TFTP_MAX_BLKSIZE
        TFTP_MAX_REQUEST
        TFTP_MAX_OPTIONS
        TFTP_MAX_DATAGRAM
        TFTP_ERRMSG_SIZE

    ctypedef struct tftp_span:
        uint32_t off
        uint32_t len

    ctypedef struct tftp_packet:
        uint16_t opcode
        uint16_t number
        tftp_span filename
        tftp_span mode
        tftp_span text
        uint32_t n_options
        tftp_span option_name[]
        tftp_span option_value[]
        size_t error_offset
        char error[]

    ctypedef struct tftp_str:
        const uint8_t *ptr
        size_t len

    int tftp_parse(const uint8_t *buf, size_t len, tftp_packet *p)
    void tftp_ascii_lower(uint8_t *dst, const uint8_t *src, size_t n)
    size_t tftp_build_ack(uint8_t *out, uint16_t block)
    size_t tftp_build_data(uint8_t *out, uint16_t block, const uint8_t *payload, size_t n)
    size_t tftp_build_error(uint8_t *out, uint16_t code, tftp_str message)
    int tftp_check_strings(int opcode, const tftp_str *strings, size_t n_strings, char *err)
    size_t tftp_strings_size(const tftp_str *strings, size_t n_strings)
    size_t tftp_build_strings(uint8_t *out, int opcode, const tftp_str *strings, size_t n_strings)
    size_t tftp_netascii_encode(const uint8_t *src, size_t n, uint8_t *out)
    size_t tftp_netascii_decode(const uint8_t *src, size_t n, uint8_t *out, int *pending_cr, int final)


cdef tuple _ERROR_CODES = tuple(ErrorCode)
cdef object _OP_RRQ = Opcode.RRQ
cdef object _OP_WRQ = Opcode.WRQ
cdef object _OP_DATA = Opcode.DATA
cdef object _OP_ACK = Opcode.ACK
cdef object _OP_ERROR = Opcode.ERROR
cdef object _OP_OACK = Opcode.OACK


# ---------------------------------------------------------------------------------------------
# packets: final cdef classes with freelists, so that decoding DATA/ACK allocates next to nothing


cdef object _fields_eq(object self, object other):
    # Equal across implementations: same type name and same fields.
    cdef tuple fields = type(self)._fields
    if type(other).__name__ != type(self).__name__ or getattr(other, "_fields", None) != fields:
        return NotImplemented
    for name in fields:
        if getattr(self, name) != getattr(other, name):
            return False
    return True


cdef str _str_field(object value, str what):
    # A plain str as it is, a subclass copied into one; TypeError for anything else.
    if PyUnicode_CheckExact(value):
        return <str>value
    if PyUnicode_Check(value):
        return str.__str__(value)
    raise TypeError(f"{what} must be str, not {type(value).__name__}")


cdef dict _dict_field(object value):
    # A plain dict as it is, any other mapping copied into one; TypeError for a non-mapping.
    if PyDict_CheckExact(value):
        return <dict>value
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"options must be a mapping, not {type(value).__name__}")


cdef str _repr_payload(bytes payload):
    if len(payload) <= 32:
        return repr(payload)
    return f"b'...'[{len(payload)} bytes]"


@cython.final
@cython.freelist(8)
cdef class ReadRequest:
    """RRQ: ``filename``, ``mode`` (lower-cased) and ``options`` (lower-cased names -> values)."""

    cdef readonly str filename
    cdef readonly str mode
    cdef readonly dict options

    _fields = ("filename", "mode", "options")
    opcode = Opcode.RRQ
    __hash__ = None

    def __init__(self, filename, mode="octet", options=None):
        self.filename = _str_field(filename, "filename")
        self.mode = _str_field(mode, "mode")
        self.options = {} if options is None else _dict_field(options)

    def __eq__(self, other):
        return _fields_eq(self, other)

    def __reduce__(self):
        return (ReadRequest, (self.filename, self.mode, self.options))

    def __repr__(self):
        return f"ReadRequest(filename={self.filename!r}, mode={self.mode!r}, options={self.options!r})"


@cython.final
@cython.freelist(8)
cdef class WriteRequest:
    """WRQ: ``filename``, ``mode`` (lower-cased) and ``options`` (lower-cased names -> values)."""

    cdef readonly str filename
    cdef readonly str mode
    cdef readonly dict options

    _fields = ("filename", "mode", "options")
    opcode = Opcode.WRQ
    __hash__ = None

    def __init__(self, filename, mode="octet", options=None):
        self.filename = _str_field(filename, "filename")
        self.mode = _str_field(mode, "mode")
        self.options = {} if options is None else _dict_field(options)

    def __eq__(self, other):
        return _fields_eq(self, other)

    def __reduce__(self):
        return (WriteRequest, (self.filename, self.mode, self.options))

    def __repr__(self):
        return f"WriteRequest(filename={self.filename!r}, mode={self.mode!r}, options={self.options!r})"


@cython.final
@cython.freelist(64)
cdef class Data:
    """DATA: ``block`` number and ``payload`` bytes."""

    cdef readonly int block
    cdef readonly bytes payload

    _fields = ("block", "payload")
    opcode = Opcode.DATA

    def __init__(self, block, payload):
        if not PyLong_CheckExact(block):
            block = PyNumber_Index(block)  # types first (TypeError), then values (ValueError)
        if not PyBytes_CheckExact(payload):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        self.block = _uint16(block, "block number")
        self.payload = payload

    def __eq__(self, other):
        if type(other) is Data:
            return self.block == (<Data>other).block and self.payload == (<Data>other).payload
        return _fields_eq(self, other)

    def __hash__(self):
        return hash(("Data", self.block, self.payload))

    def __reduce__(self):
        return (Data, (self.block, self.payload))

    def __repr__(self):
        return f"Data(block={self.block!r}, payload={_repr_payload(self.payload)})"


@cython.final
@cython.freelist(64)
cdef class Ack:
    """ACK: ``block`` number (0 acknowledges a WRQ or an OACK)."""

    cdef readonly int block

    _fields = ("block",)
    opcode = Opcode.ACK

    def __init__(self, block):
        self.block = _uint16(block, "block number")

    def __eq__(self, other):
        if type(other) is Ack:
            return self.block == (<Ack>other).block
        return _fields_eq(self, other)

    def __hash__(self):
        return hash(("Ack", self.block))

    def __reduce__(self):
        return (Ack, (self.block,))

    def __repr__(self):
        return f"Ack(block={self.block!r})"


@cython.final
@cython.freelist(8)
cdef class Error:
    """ERROR: ``code`` (an :class:`ErrorCode` when known, else an ``int``) and ``message``."""

    cdef readonly object code
    cdef readonly str message

    _fields = ("code", "message")
    opcode = Opcode.ERROR

    def __init__(self, code, message=""):
        cdef int c
        if not PyLong_CheckExact(code):
            code = PyNumber_Index(code)  # types first (TypeError), then values (ValueError)
        message = _str_field(message, "error message")
        c = _uint16(code, "error code")
        self.code = _ERROR_CODES[c] if c < len(_ERROR_CODES) else code
        self.message = message

    def __eq__(self, other):
        return _fields_eq(self, other)

    def __hash__(self):
        return hash(("Error", self.code, self.message))

    def __reduce__(self):
        return (Error, (self.code, self.message))

    def __repr__(self):
        code = f"ErrorCode.{self.code.name}" if isinstance(self.code, ErrorCode) else repr(self.code)
        return f"Error(code={code}, message={self.message!r})"


@cython.final
@cython.freelist(8)
cdef class OptionAck:
    """OACK: ``options`` the server accepted (lower-cased names -> values)."""

    cdef readonly dict options

    _fields = ("options",)
    opcode = Opcode.OACK
    __hash__ = None

    def __init__(self, options):
        self.options = _dict_field(options)

    def __eq__(self, other):
        return _fields_eq(self, other)

    def __reduce__(self):
        return (OptionAck, (self.options,))

    def __repr__(self):
        return f"OptionAck(options={self.options!r})"


Packet = Union[ReadRequest, WriteRequest, Data, Ack, Error, OptionAck]


# ---------------------------------------------------------------------------------------------
# decoding


cdef inline str _text(const uint8_t *buf, tftp_span span):
    return PyUnicode_DecodeUTF8(<const char *>buf + span.off, span.len, "surrogateescape")


cdef str _lower_text(const uint8_t *buf, tftp_span span):
    # ASCII letters only, like bytes.lower(): the result does not depend on a locale or on Unicode.
    cdef const uint8_t *src = buf + span.off
    cdef uint32_t i
    cdef bytes tmp
    for i in range(span.len):
        if src[i] >= b'A' and src[i] <= b'Z':
            break
    else:
        return _text(buf, span)
    tmp = PyBytes_FromStringAndSize(NULL, span.len)
    tftp_ascii_lower(<uint8_t *>PyBytes_AS_STRING(tmp), src, span.len)
    return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(tmp), span.len, "surrogateescape")


cdef dict _options(const uint8_t *buf, tftp_packet *p):
    cdef dict options = {}
    cdef uint32_t i
    for i in range(p.n_options):
        PyDict_SetItem(options, _lower_text(buf, p.option_name[i]), _text(buf, p.option_value[i]))
    return options


cdef object _decode(const uint8_t *buf, Py_ssize_t n):
    cdef tftp_packet p
    cdef Data data
    cdef Ack ack
    cdef ReadRequest rrq
    cdef WriteRequest wrq
    cdef Error error
    cdef OptionAck oack
    if tftp_parse(buf, <size_t>n, &p) < 0:
        raise DecodeError((<bytes>p.error).decode("ascii"), p.error_offset)
    if p.opcode == TFTP_DATA:
        data = Data.__new__(Data)
        data.block = p.number
        data.payload = PyBytes_FromStringAndSize(<const char *>buf + 4, p.text.len)
        return data
    if p.opcode == TFTP_ACK:
        ack = Ack.__new__(Ack)
        ack.block = p.number
        return ack
    if p.opcode == TFTP_RRQ:
        rrq = ReadRequest.__new__(ReadRequest)
        rrq.filename = _text(buf, p.filename)
        rrq.mode = _lower_text(buf, p.mode)
        rrq.options = _options(buf, &p)
        return rrq
    if p.opcode == TFTP_WRQ:
        wrq = WriteRequest.__new__(WriteRequest)
        wrq.filename = _text(buf, p.filename)
        wrq.mode = _lower_text(buf, p.mode)
        wrq.options = _options(buf, &p)
        return wrq
    if p.opcode == TFTP_ERROR:
        error = Error.__new__(Error)
        error.code = _ERROR_CODES[p.number] if p.number < len(_ERROR_CODES) else p.number
        error.message = _text(buf, p.text)
        return error
    oack = OptionAck.__new__(OptionAck)
    oack.options = _options(buf, &p)
    return oack


@cython.binding(False)
def decode(packet):
    """decode(packet) -> ReadRequest | WriteRequest | Data | Ack | Error | OptionAck

    Decode one TFTP datagram (bytes, bytearray, memoryview or any buffer); :class:`DecodeError`
    (a ValueError naming the problem and its byte ``offset``) if it is malformed.
    """
    cdef Py_buffer view
    if PyBytes_CheckExact(packet):
        return _decode(<const uint8_t *>PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet))
    try:
        PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE)
    except BufferError:
        packet = bytes(memoryview(packet))  # e.g. a non-contiguous memoryview
        return _decode(<const uint8_t *>PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet))
    try:
        return _decode(<const uint8_t *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


# ---------------------------------------------------------------------------------------------
# encoding


cdef inline int _uint16(object value, str what) except -1:
    cdef int overflow = 0
    cdef long v
    if not PyLong_CheckExact(value):
        value = PyNumber_Index(value)
    v = PyLong_AsLongAndOverflow(value, &overflow)
    if overflow or v < 0 or v > 0xFFFF:
        raise ValueError(f"{what} {value} is outside 0..65535")
    return <int>v


cdef object _utf8(object value, str what, tftp_str *out):
    """Point *out* at the UTF-8 (surrogateescape) bytes of str *value*; return what keeps them alive."""
    cdef Py_ssize_t size
    cdef const char *ptr
    if not PyUnicode_Check(value):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    try:
        ptr = PyUnicode_AsUTF8AndSize(value, &size)
    except UnicodeEncodeError:
        # lone surrogates: those from surrogateescape stand for raw bytes
        try:
            keep = (<str>value).encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise ValueError(f"{what} is not encodable as UTF-8") from None
        out.ptr = <const uint8_t *>PyBytes_AS_STRING(keep)
        out.len = <size_t>PyBytes_GET_SIZE(keep)
        return keep
    out.ptr = <const uint8_t *>ptr
    out.len = <size_t>size
    return value


cdef object _option_value(object value, tftp_str *out, char *digits):
    """Like _utf8, for an option value; an exact int is formatted into *digits* (24 bytes)."""
    cdef int overflow = 0
    cdef long long v
    if PyUnicode_Check(value):
        return _utf8(value, "option value", out)
    if PyLong_CheckExact(value):
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if not overflow:
            out.ptr = <const uint8_t *>digits
            out.len = <size_t>snprintf(digits, 24, "%lld", v)
            return None
    if isinstance(value, int) and not isinstance(value, bool):
        return _utf8(str(int(value)), "option value", out)
    raise TypeError(f"option value must be str or int, not {type(value).__name__}")


cdef enum:
    _MAX_STRINGS = 2 + 2 * (TFTP_MAX_OPTIONS + 1)


cdef list _option_items(object options):
    """The (name, value) pairs of *options* (None: none), every one of the right type."""
    cdef list items
    if options is None:
        return []
    if PyDict_CheckExact(options):
        items = PyDict_Items(options)
    elif isinstance(options, Mapping):
        items = list(options.items())
    else:
        raise TypeError(f"options must be a mapping, not {type(options).__name__}")
    for name, value in items:
        if not PyUnicode_Check(name):
            raise TypeError(f"option name must be str, not {type(name).__name__}")
        if not PyUnicode_Check(value) and (not PyLong_Check(value) or PyBool_Check(value)):
            raise TypeError(f"option value must be str or int, not {type(value).__name__}")
    return items


# Argument checks run in a fixed order, the same as the twin's (see docs/codec.md): first the type
# of every argument, in argument order (an options mapping, then each name and value in iteration
# order): TypeError; then the values: numbers' ranges, the strings' encoding in wire order, the
# wire-format rules (tftp_check_strings), the packet's size: ValueError.
cdef bytes _encode_strings(int opcode, object filename, object mode, object options):
    cdef tftp_str strings[_MAX_STRINGS]
    cdef char digits[_MAX_STRINGS][24]
    cdef size_t n = 0
    cdef size_t n_options = 0
    cdef char err[TFTP_ERRMSG_SIZE]
    cdef list keep = []
    cdef list items
    cdef size_t size
    cdef bytes out
    if opcode != TFTP_OACK:
        if not PyUnicode_Check(filename):
            raise TypeError(f"filename must be str, not {type(filename).__name__}")
        if not PyUnicode_Check(mode):
            raise TypeError(f"mode must be str, not {type(mode).__name__}")
    items = _option_items(options)
    if opcode != TFTP_OACK:
        keep.append(_utf8(filename, "filename", &strings[0]))
        keep.append(_utf8(mode, "mode", &strings[1]))
        n = 2
    for name, value in items:
        if n_options > TFTP_MAX_OPTIONS:
            break  # one option too many is enough for tftp_check_strings to refuse
        keep.append(_utf8(name, "option name", &strings[n]))
        keep.append(_option_value(value, &strings[n + 1], digits[n + 1]))
        n += 2
        n_options += 1
    if tftp_check_strings(opcode, strings, n, err) < 0:
        raise ValueError((<bytes>err).decode("ascii"))
    size = tftp_strings_size(strings, n)
    if opcode != TFTP_OACK:
        if size > TFTP_MAX_REQUEST:
            raise ValueError(f"request of {size} bytes exceeds {TFTP_MAX_REQUEST}")
    elif size > TFTP_MAX_DATAGRAM:
        raise ValueError(f"OACK packet of {size} bytes exceeds {TFTP_MAX_DATAGRAM}")
    out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
    tftp_build_strings(<uint8_t *>PyBytes_AS_STRING(out), opcode, strings, n)
    return out


def encode_rrq(filename, mode="octet", options=None):
    """encode_rrq(filename: str, mode: str = "octet", options: Mapping[str, str | int] | None = None) -> bytes

    A read request: ``encode_rrq("test.jpg")`` is ``b"\\x00\\x01test.jpg\\x00octet\\x00"``.
    *options* go on the wire in iteration order; ValueError for a NUL inside a string, an empty
    or repeated (case-insensitively) option name, or a request over 512 bytes; TypeError for an
    argument of the wrong type (checked first).
    """
    return _encode_strings(TFTP_RRQ, filename, mode, options)


def encode_wrq(filename, mode="octet", options=None):
    """encode_wrq(filename: str, mode: str = "octet", options: Mapping[str, str | int] | None = None) -> bytes

    A write request; the same arguments and rules as :func:`encode_rrq`.
    """
    return _encode_strings(TFTP_WRQ, filename, mode, options)


def encode_oack(options):
    """encode_oack(options: Mapping[str, str | int]) -> bytes

    An OACK packet carrying *options* in iteration order (the same rules as for requests, and
    ValueError for a packet over 65535 bytes).
    """
    return _encode_strings(TFTP_OACK, None, None, options)


@cython.binding(False)
def encode_ack(block):
    """encode_ack(block: int) -> bytes

    An ACK packet: ``encode_ack(n) == struct.pack("!HH", 4, n)``.
    """
    cdef uint16_t b = <uint16_t>_uint16(block, "block number")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 4)
    tftp_build_ack(<uint8_t *>PyBytes_AS_STRING(out), b)
    return out


@cython.binding(False)
def encode_data(block, payload):
    """encode_data(block: int, payload: bytes | bytearray | memoryview) -> bytes

    A DATA packet; ValueError for a block outside 0..65535 or a payload over 65464 bytes.
    """
    cdef uint16_t b
    cdef Py_buffer view
    cdef bytes out
    if PyBytes_CheckExact(payload):
        b = <uint16_t>_uint16(block, "block number")
        if PyBytes_GET_SIZE(payload) > TFTP_MAX_BLKSIZE:
            raise ValueError(f"DATA payload of {PyBytes_GET_SIZE(payload)} bytes exceeds {TFTP_MAX_BLKSIZE}")
        out = PyBytes_FromStringAndSize(NULL, 4 + PyBytes_GET_SIZE(payload))
        tftp_build_data(<uint8_t *>PyBytes_AS_STRING(out), b, <const uint8_t *>PyBytes_AS_STRING(payload),
                        <size_t>PyBytes_GET_SIZE(payload))
        return out
    if not PyLong_CheckExact(block):
        block = PyNumber_Index(block)  # types first (TypeError), then values (ValueError)
    try:
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    except BufferError:
        return encode_data(block, bytes(memoryview(payload)))
    try:
        b = <uint16_t>_uint16(block, "block number")
        if view.len > TFTP_MAX_BLKSIZE:
            raise ValueError(f"DATA payload of {view.len} bytes exceeds {TFTP_MAX_BLKSIZE}")
        out = PyBytes_FromStringAndSize(NULL, 4 + view.len)
        tftp_build_data(<uint8_t *>PyBytes_AS_STRING(out), b, <const uint8_t *>view.buf, <size_t>view.len)
        return out
    finally:
        PyBuffer_Release(&view)


def encode_error(code, message=""):
    """encode_error(code: int, message: str = "") -> bytes

    An ERROR packet; *code* is an :class:`ErrorCode` or any int in 0..65535.  ValueError for a
    NUL in *message* or a packet over 65535 bytes (UDP's limit, and decode's).
    """
    cdef uint16_t c
    cdef tftp_str text
    if not PyLong_CheckExact(code):
        code = PyNumber_Index(code)  # types first (TypeError), then values (ValueError)
    if not PyUnicode_Check(message):
        raise TypeError(f"error message must be str, not {type(message).__name__}")
    c = <uint16_t>_uint16(code, "error code")
    keep = _utf8(message, "error message", &text)
    if text.len and memchr(text.ptr, 0, text.len) != NULL:
        raise ValueError("error message contains a NUL byte")
    if 5 + text.len > TFTP_MAX_DATAGRAM:
        raise ValueError(f"ERROR packet of {5 + text.len} bytes exceeds {TFTP_MAX_DATAGRAM}")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>(5 + text.len))
    tftp_build_error(<uint8_t *>PyBytes_AS_STRING(out), c, text)
    return out


# ---------------------------------------------------------------------------------------------
# netascii


cdef bytes _to_netascii(const uint8_t *src, Py_ssize_t n):
    # One pass into a worst-case scratch buffer, then one copy: cheaper than sizing first.
    cdef uint8_t small[2048]
    cdef uint8_t *out = small
    cdef size_t size
    if 2 * n > <Py_ssize_t>sizeof(small):
        out = <uint8_t *>PyMem_Malloc(2 * <size_t>n)
        if out == NULL:
            raise MemoryError()
    try:
        size = tftp_netascii_encode(src, <size_t>n, out)
        return PyBytes_FromStringAndSize(<const char *>out, <Py_ssize_t>size)
    finally:
        if out != small:
            PyMem_Free(out)


cdef bytes _from_netascii(const uint8_t *src, Py_ssize_t n, int *pending_cr, int final):
    cdef uint8_t small[2048]
    cdef uint8_t *out = small
    cdef size_t size
    if n + 1 > <Py_ssize_t>sizeof(small):
        out = <uint8_t *>PyMem_Malloc(<size_t>n + 1)
        if out == NULL:
            raise MemoryError()
    try:
        size = tftp_netascii_decode(src, <size_t>n, out, pending_cr, final)
        return PyBytes_FromStringAndSize(<const char *>out, <Py_ssize_t>size)
    finally:
        if out != small:
            PyMem_Free(out)


cdef bytes _netascii(object data, bint encode, int *pending_cr, int final):
    cdef Py_buffer view
    if PyBytes_CheckExact(data):
        if encode:
            return _to_netascii(<const uint8_t *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        return _from_netascii(<const uint8_t *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), pending_cr, final)
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except BufferError:
        return _netascii(bytes(memoryview(data)), encode, pending_cr, final)
    try:
        if encode:
            return _to_netascii(<const uint8_t *>view.buf, view.len)
        return _from_netascii(<const uint8_t *>view.buf, view.len, pending_cr, final)
    finally:
        PyBuffer_Release(&view)


def to_netascii(data):
    """to_netascii(data: bytes | bytearray | memoryview) -> bytes

    Encode to netascii: LF becomes CR LF, CR becomes CR NUL.
    """
    return _netascii(data, True, NULL, 1)


def from_netascii(data):
    """from_netascii(data: bytes | bytearray | memoryview) -> bytes

    Decode netascii: CR LF becomes LF, CR NUL becomes CR.  A CR followed by any other byte (or
    ending the data) is kept as it is and the byte after it is decoded normally.
    """
    cdef int pending = 0
    return _netascii(data, False, &pending, 1)


@cython.final
cdef class NetasciiEncoder:
    """Incremental :func:`to_netascii`: ``feed(chunk)`` returns the encoded chunk."""

    def feed(self, chunk):
        """feed(chunk: bytes | bytearray | memoryview) -> bytes"""
        return _netascii(chunk, True, NULL, 1)

    def flush(self):
        """flush() -> bytes"""
        return b""


@cython.final
cdef class NetasciiDecoder:
    """Incremental :func:`from_netascii`: a CR ending a chunk waits for the next byte.

    ``b"".join(d.feed(c) for c in chunks) + d.flush()`` equals ``from_netascii(b"".join(chunks))``
    however the data is split.
    """

    cdef int _pending_cr

    def feed(self, chunk):
        """feed(chunk: bytes | bytearray | memoryview) -> bytes"""
        return _netascii(chunk, False, &self._pending_cr, 0)

    def flush(self):
        """flush() -> bytes: the held-back CR, if the data ended with one; the decoder is then reset."""
        if self._pending_cr:
            self._pending_cr = 0
            return b"\r"
        return b""
