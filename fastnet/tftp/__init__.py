"""TFTP for fastnet: the packet codec (``fastnet.tftp.codec``), a client and a server.

The codec's names are re-exported here: ``fastnet.tftp.decode``, ``fastnet.tftp.encode_ack`` ...
"""

from __future__ import annotations

from . import codec

_CODEC_NAMES = tuple(codec.__all__)

__all__ = list(_CODEC_NAMES)


def __getattr__(name: str):
    if name in _CODEC_NAMES:
        return getattr(codec, name)  # looked up each time: follows fastnet._compat.activate()
    if name in ("TftpError", "TftpTimeout", "TftpRefused", "TftpRemoteError", "TftpProtocolError"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'fastnet.tftp' has no attribute {name!r}")
