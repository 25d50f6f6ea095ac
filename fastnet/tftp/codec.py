"""The TFTP packet codec: encode and decode RRQ, WRQ, DATA, ACK, ERROR and OACK packets.

The names below come from the compiled module ``fastnet.tftp._codec_c`` (C core in
``src_c/tftp_codec.c``) or from its pure-Python twin ``fastnet.tftp._codec_py``;
``codec.IMPLEMENTATION`` says which (``"c"`` or ``"python"``).  Both behave identically.

    from fastnet.tftp import codec
    sock.sendto(codec.encode_rrq("test.jpg", options={"blksize": 1428}), addr)
    packet = codec.decode(datagram)          # Data(block=1, payload=b'...'[512 bytes])
    if type(packet) is codec.Data: ...

Malformed datagrams raise :class:`DecodeError` (a ``ValueError``) naming the problem and its
byte offset.  Text is UTF-8 with ``surrogateescape`` both ways, so any filename round-trips.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _compat

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

if TYPE_CHECKING:
    from ._codec_py import (
        DEFAULT_BLKSIZE,
        MAX_BLKSIZE,
        MAX_OPTIONS,
        MAX_REQUEST_SIZE,
        MIN_BLKSIZE,
        Ack,
        Data,
        DecodeError,
        Error,
        ErrorCode,
        NetasciiDecoder,
        NetasciiEncoder,
        Opcode,
        OptionAck,
        Packet,
        ReadRequest,
        WriteRequest,
        decode,
        encode_ack,
        encode_data,
        encode_error,
        encode_oack,
        encode_rrq,
        encode_wrq,
        from_netascii,
        to_netascii,
    )
else:
    _compat.bind(__name__, "fastnet.tftp._codec_c", "fastnet.tftp._codec_py", __all__)
