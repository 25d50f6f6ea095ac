"""fastnet.tftp.codec: byte-exact packets, strict decoding, netascii; both implementations agree.

Every test runs under the ``implementation`` fixture (compiled C, then the pure-Python twin)
through the selector module; the hypothesis tests at the end also compare ``_codec_c`` with
``_codec_py`` directly, and one test builds and runs the standalone C test of ``src_c/``.
"""

from __future__ import annotations

import collections
import os
import pickle
import shutil
import struct
import subprocess
from collections.abc import Mapping

import pytest
from conftest import build_sanitized, sanitized_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnet import _compat
from fastnet.tftp import _codec_py, codec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _c_module():
    if not _compat.c_available("fastnet.tftp._codec_c"):
        return None
    from fastnet.tftp import _codec_c

    return _codec_c


# --------------------------------------------------------------------------------------------
# the right implementation is in use


def test_selector_uses_the_active_implementation(implementation):
    assert codec.IMPLEMENTATION == implementation
    expected = "fastnet.tftp._codec_c" if implementation == "c" else "fastnet.tftp._codec_py"
    assert codec.decode.__module__ == expected
    assert codec.Data.__module__ == expected


def test_shared_names_are_one_object_in_both_implementations():
    c = _c_module()
    if c is None:
        pytest.skip("compiled codec unavailable")
    for name in ("DecodeError", "Opcode", "ErrorCode", "MAX_BLKSIZE", "MIN_BLKSIZE", "DEFAULT_BLKSIZE"):
        assert getattr(c, name) is getattr(_codec_py, name)
    assert sorted(c.__all__) == sorted(_codec_py.__all__) == sorted(codec.__all__)


# --------------------------------------------------------------------------------------------
# byte-exact encoding against struct references


def test_rrq_matches_the_notes_struct_format():
    assert codec.encode_rrq("test.jpg") == struct.pack("!H8sb5sb", 1, b"test.jpg", 0, b"octet", 0)


@pytest.mark.parametrize("block", [0, 1, 255, 256, 4660, 65535])
def test_ack_matches_the_notes_struct_format(block):
    assert codec.encode_ack(block) == struct.pack("!HH", 4, block)


def _strings_reference(opcode: int, *strings: bytes) -> bytes:
    fmt = "!H" + "".join(f"{len(s)}sx" for s in strings)
    return struct.pack(fmt, opcode, *strings)


@pytest.mark.parametrize(
    "encoded, reference",
    [
        (lambda: codec.encode_rrq("a/b.bin", "netascii"), _strings_reference(1, b"a/b.bin", b"netascii")),
        (lambda: codec.encode_wrq("up.txt"), _strings_reference(2, b"up.txt", b"octet")),
        (
            lambda: codec.encode_rrq("f", "octet", {"blksize": 1428, "tsize": 0, "timeout": "3"}),
            _strings_reference(1, b"f", b"octet", b"blksize", b"1428", b"tsize", b"0", b"timeout", b"3"),
        ),
        (
            lambda: codec.encode_wrq("f", "octet", {"windowsize": 4}),
            _strings_reference(2, b"f", b"octet", b"windowsize", b"4"),
        ),
        (lambda: codec.encode_rrq("caf\u00e9"), _strings_reference(1, "caf\u00e9".encode(), b"octet")),
        (lambda: codec.encode_rrq("raw\udcff"), _strings_reference(1, b"raw\xff", b"octet")),
        (lambda: codec.encode_data(1, b"x" * 512), struct.pack("!HH512s", 3, 1, b"x" * 512)),
        (lambda: codec.encode_data(65535, b""), struct.pack("!HH", 3, 65535)),
        (lambda: codec.encode_data(7, bytearray(b"abc")), struct.pack("!HH3s", 3, 7, b"abc")),
        (lambda: codec.encode_data(7, memoryview(b"abcdef")[::2]), struct.pack("!HH3s", 3, 7, b"ace")),
        (lambda: codec.encode_error(1, "File not found"), struct.pack("!HH14sx", 5, 1, b"File not found")),
        (lambda: codec.encode_error(codec.ErrorCode.DISK_FULL), struct.pack("!HHx", 5, 3)),
        (lambda: codec.encode_error(65535, "x"), struct.pack("!HH1sx", 5, 65535, b"x")),
        (lambda: codec.encode_oack({"blksize": 8}), _strings_reference(6, b"blksize", b"8")),
        (lambda: codec.encode_oack({}), struct.pack("!H", 6)),
    ],
    ids=lambda v: "" if callable(v) else None,
)
def test_every_packet_type_matches_a_struct_reference(encoded, reference):
    packet = encoded()
    assert type(packet) is bytes
    assert packet == reference


def test_option_order_is_the_mapping_order():
    packet = codec.encode_oack({"tsize": 10, "blksize": 512})
    assert packet == _strings_reference(6, b"tsize", b"10", b"blksize", b"512")
    assert list(codec.decode(packet).options) == ["tsize", "blksize"]


# --------------------------------------------------------------------------------------------
# decoding


def test_decode_every_packet_type():
    assert codec.decode(b"\0\1test.jpg\0octet\0") == codec.ReadRequest("test.jpg", "octet", {})
    rrq = codec.decode(b"\0\1F.TXT\0NetASCII\0BLKSIZE\0001024\0TSize\0000\0")
    assert type(rrq) is codec.ReadRequest
    assert (rrq.filename, rrq.mode, rrq.options) == ("F.TXT", "netascii", {"blksize": "1024", "tsize": "0"})
    wrq = codec.decode(b"\0\2up\0OCTET\0")
    assert type(wrq) is codec.WriteRequest and wrq.mode == "octet" and wrq.options == {}
    data = codec.decode(b"\0\3\1\0" + b"z" * 100)
    assert type(data) is codec.Data and data.block == 256 and data.payload == b"z" * 100
    assert type(data.payload) is bytes
    ack = codec.decode(b"\0\4\xff\xff")
    assert type(ack) is codec.Ack and ack.block == 65535
    err = codec.decode(b"\0\5\0\2Access violation\0")
    assert type(err) is codec.Error and err.code == 2 and err.message == "Access violation"
    oack = codec.decode(b"\0\6blksize\08\0")
    assert type(oack) is codec.OptionAck and oack.options == {"blksize": "8"}


def test_decode_accepts_bytes_bytearray_and_memoryview():
    raw = b"\0\3\0\5hello"
    expected = codec.Data(5, b"hello")
    assert codec.decode(raw) == expected
    assert codec.decode(bytearray(raw)) == expected
    assert codec.decode(memoryview(raw)) == expected
    assert codec.decode(memoryview(b"xx" + raw)[2:]) == expected
    assert codec.decode(memoryview(bytes(x for b in raw for x in (b, 0)))[::2]) == expected  # strided


def test_decode_rejects_non_buffers_with_type_error():
    with pytest.raises(TypeError):
        codec.decode("\0\4\0\1")
    with pytest.raises(TypeError):
        codec.decode(4)


def test_error_code_is_an_error_code_when_known_else_an_int():
    known = codec.decode(b"\0\5\0\1nope\0")
    assert known.code is codec.ErrorCode.FILE_NOT_FOUND
    unknown = codec.decode(b"\0\5\0\x63\0")
    assert unknown.code == 99 and type(unknown.code) is int
    assert codec.decode(b"\0\5\0\x08\0").code is codec.ErrorCode.OPTION_REFUSED


def test_filenames_round_trip_exactly_including_undecodable_bytes():
    for raw in (b"plain.txt", "d\u00e9j\u00e0 vu/\u6587\u4ef6".encode(), b"latin1-\xe9\xff", b"\x80\x81"):
        packet = b"\0\1" + raw + b"\0octet\0"
        request = codec.decode(packet)
        assert request.filename == raw.decode("utf-8", "surrogateescape")
        assert codec.encode_rrq(request.filename, request.mode) == packet


def test_mode_and_option_names_lowercased_values_kept():
    request = codec.decode(b"\0\2F\0OcTeT\0BlkSize\0ABC\0")
    assert request.filename == "F"
    assert request.mode == "octet"
    assert request.options == {"blksize": "ABC"}


def test_empty_filename_and_empty_option_value_are_accepted():
    request = codec.decode(b"\0\1\0octet\0tsize\0\0")
    assert request.filename == "" and request.options == {"tsize": ""}


def test_max_blksize_payload_is_accepted_one_more_byte_is_not():
    assert codec.decode(b"\0\3\0\1" + bytes(codec.MAX_BLKSIZE)).payload == bytes(65464)
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(b"\0\3\0\1" + bytes(codec.MAX_BLKSIZE + 1))
    assert info.value.offset == 4 + 65464


def test_largest_error_and_oack_are_accepted():
    assert codec.decode(b"\0\5\0\1" + b"m" * 65530 + b"\0").message == "m" * 65530
    assert codec.decode(b"\0\6" + b"a\0" + b"v" * 65530 + b"\0").options == {"a": "v" * 65530}


def test_request_of_exactly_512_bytes_is_accepted():
    filename = "f" * (512 - 2 - 1 - 6)
    packet = codec.encode_rrq(filename)
    assert len(packet) == 512
    assert codec.decode(packet).filename == filename


MALFORMED = [
    (b"", "datagram too short for an opcode (0 of 2 bytes)", 0),
    (b"\0", "datagram too short for an opcode (1 of 2 bytes)", 1),
    (b"\0\0", "unknown opcode 0", 0),
    (b"\0\7", "unknown opcode 7", 0),
    (b"\xff\xff\0\0", "unknown opcode 65535", 0),
    (b"\0\1", "missing filename", 2),
    (b"\0\1test.jpg", "unterminated filename", 2),
    (b"\0\1test.jpg\0", "missing mode", 11),
    (b"\0\1test.jpg\0octet", "unterminated mode", 11),
    (b"\0\1f\0octet\0blksize", "unterminated option name", 10),
    (b"\0\1f\0octet\0blksize\0", "missing option value", 18),
    (b"\0\1f\0octet\0blksize\0001024", "unterminated option value", 18),
    (b"\0\1f\0octet\0a\0b\0c\0", "missing option value", 16),
    (b"\0\1f\0octet\0\0", "empty option name", 10),
    (b"\0\2f\0octet\0tsize\0001\0TSIZE\0002\0", "repeated option", 18),
    (b"\0\1" + b"a" * 508 + b"\0o", "unterminated mode", 511),  # 511 bytes: too long is not the problem
    (b"\0\1" + b"a" * 600 + b"\0octet\0", "request of 609 bytes exceeds 512", 512),
    (b"\0\3", "truncated DATA header (2 of 4 bytes)", 2),
    (b"\0\3\0", "truncated DATA header (3 of 4 bytes)", 3),
    (b"\0\4", "truncated ACK (2 of 4 bytes)", 2),
    (b"\0\4\0\1\0", "ACK longer than 4 bytes (5 bytes)", 4),
    (b"\0\4\0\1garbage", "ACK longer than 4 bytes (11 bytes)", 4),
    (b"\0\5\0", "truncated ERROR header (3 of 4 bytes)", 3),
    (b"\0\5\0\1", "missing error message", 4),
    (b"\0\5\0\1no terminator", "unterminated error message", 4),
    (b"\0\5\0\1msg\0x", "trailing bytes after the ERROR message", 8),
    (b"\0\5\0\1msg\0\0", "trailing bytes after the ERROR message", 8),
    (b"\0\5\0\1" + b"m" * 65531 + b"\0", "ERROR packet of 65536 bytes exceeds 65535", 65535),
    (b"\0\6" + b"a\0" + b"v" * 65531 + b"\0", "OACK packet of 65536 bytes exceeds 65535", 65535),
    (b"\0\6blksize", "unterminated option name", 2),
    (b"\0\6blksize\0", "missing option value", 10),
    (b"\0\6a\0" b"1\0A\0" b"2\0", "repeated option", 6),
    (b"\0\6" + b"".join(b"o%d\0v\0" % i for i in range(65)), "more than 64 options", 2 + sum(len(b"o%d\0v\0" % i) for i in range(64))),
]


@pytest.mark.parametrize("packet, reason, offset", MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_datagram_raises_decode_error_with_reason_and_offset(packet, reason, offset):
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(packet)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.reason == reason
    assert error.offset == offset
    assert str(error) == f"{reason} (at byte {offset})"


def test_decode_error_survives_pickling():
    error = codec.DecodeError("unknown opcode 9", 0)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is codec.DecodeError and copy.offset == 0 and str(copy) == str(error)


# --------------------------------------------------------------------------------------------
# encoding errors


@pytest.mark.parametrize("block", [-1, 65536, 2**64, -(2**70)])
def test_out_of_range_block_numbers_raise_value_error(block):
    with pytest.raises(ValueError, match="outside 0..65535"):
        codec.encode_ack(block)
    with pytest.raises(ValueError, match="outside 0..65535"):
        codec.encode_data(block, b"")
    with pytest.raises(ValueError, match="outside 0..65535"):
        codec.encode_error(block, "x")


def test_non_integer_block_raises_type_error():
    with pytest.raises(TypeError):
        codec.encode_ack(1.0)
    with pytest.raises(TypeError):
        codec.encode_ack("1")


def test_oversized_payload_raises_value_error():
    assert len(codec.encode_data(1, bytes(65464))) == 65468
    with pytest.raises(ValueError, match="65465 bytes exceeds 65464"):
        codec.encode_data(1, bytes(65465))
    with pytest.raises(ValueError, match="exceeds 65464"):
        codec.encode_data(1, bytearray(70000))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: codec.encode_rrq("a\0b"), "filename contains a NUL byte"),
        (lambda: codec.encode_wrq("a", "oct\0et"), "mode contains a NUL byte"),
        (lambda: codec.encode_rrq("a", options={"bl\0k": 1}), "option name contains a NUL byte"),
        (lambda: codec.encode_rrq("a", options={"blk": "1\0"}), "option value contains a NUL byte"),
        (lambda: codec.encode_oack({"": "1"}), "empty option name"),
        (lambda: codec.encode_oack({"blksize": 8, "BLKSIZE": 9}), "repeated option name"),
        (lambda: codec.encode_error(0, "bad\0"), "error message contains a NUL byte"),
        (lambda: codec.encode_rrq("f" * 600), "request of 609 bytes exceeds 512"),
        (lambda: codec.encode_rrq("\ud800"), "filename is not encodable as UTF-8"),
        (lambda: codec.encode_oack({f"o{i}": i for i in range(65)}), "more than 64 options"),
    ],
)
def test_bad_strings_raise_value_error(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_wrong_types_raise_type_error():
    with pytest.raises(TypeError):
        codec.encode_rrq(b"bytes-filename")
    with pytest.raises(TypeError):
        codec.encode_rrq("f", options={"blksize": 1.5})
    with pytest.raises(TypeError):
        codec.encode_rrq("f", options={"blksize": True})
    with pytest.raises(TypeError):
        codec.encode_error(1, b"bytes")
    with pytest.raises(TypeError):
        codec.encode_data(1, "text")


# --------------------------------------------------------------------------------------------
# packet objects


def test_packets_are_immutable():
    for packet in (codec.Data(1, b"x"), codec.Ack(1), codec.Error(1, "m"), codec.ReadRequest("f"), codec.OptionAck({})):
        name = packet._fields[0]
        with pytest.raises(AttributeError):
            setattr(packet, name, getattr(packet, name))


def test_packet_equality_and_hashing():
    assert codec.Data(1, b"x") == codec.Data(1, b"x")
    assert codec.Data(1, b"x") != codec.Data(2, b"x")
    assert codec.Ack(1) != codec.Data(1, b"")
    assert codec.ReadRequest("f", "octet", {}) != codec.WriteRequest("f", "octet", {})
    assert not isinstance(codec.WriteRequest("f"), codec.ReadRequest)
    assert len({codec.Ack(3), codec.Ack(3), codec.Data(3, b""), codec.Error(3, "")}) == 3
    assert hash(codec.Error(codec.ErrorCode.DISK_FULL, "x")) == hash(codec.Error(3, "x"))
    with pytest.raises(TypeError):
        hash(codec.ReadRequest("f"))  # it holds a dict


def test_packets_compare_equal_across_implementations():
    c = _c_module()
    if c is None:
        pytest.skip("compiled codec unavailable")
    pairs = [
        (c.Data(1, b"x"), _codec_py.Data(1, b"x")),
        (c.Ack(9), _codec_py.Ack(9)),
        (c.Error(1, "m"), _codec_py.Error(1, "m")),
        (c.ReadRequest("f", "octet", {"a": "1"}), _codec_py.ReadRequest("f", "octet", {"a": "1"})),
        (c.WriteRequest("f"), _codec_py.WriteRequest("f")),
        (c.OptionAck({"a": "1"}), _codec_py.OptionAck({"a": "1"})),
    ]
    for a, b in pairs:
        assert a == b and b == a
        assert repr(a) == repr(b)
    assert hash(c.Data(1, b"x")) == hash(_codec_py.Data(1, b"x"))
    assert c.Ack(1) != _codec_py.Ack(2)
    assert c.ReadRequest("f") != _codec_py.WriteRequest("f")


def test_packet_reprs_are_readable():
    assert repr(codec.decode(codec.encode_data(1, bytes(512)))) == "Data(block=1, payload=b'...'[512 bytes])"
    assert repr(codec.Data(2, b"short")) == "Data(block=2, payload=b'short')"
    assert repr(codec.Ack(0)) == "Ack(block=0)"
    assert repr(codec.decode(b"\0\5\0\1x\0")) == "Error(code=ErrorCode.FILE_NOT_FOUND, message='x')"
    assert repr(codec.Error(99, "")) == "Error(code=99, message='')"
    assert (
        repr(codec.decode(codec.encode_rrq("f", options={"tsize": 0})))
        == "ReadRequest(filename='f', mode='octet', options={'tsize': '0'})"
    )
    assert repr(codec.OptionAck({"blksize": "8"})) == "OptionAck(options={'blksize': '8'})"


def test_packets_pickle():
    for packet in (codec.Data(1, b"x"), codec.Ack(2), codec.Error(codec.ErrorCode.FILE_EXISTS, "m"), codec.ReadRequest("f")):
        assert pickle.loads(pickle.dumps(packet)) == packet


def test_packets_carry_their_opcode():
    assert codec.decode(codec.encode_ack(1)).opcode == codec.Opcode.ACK
    assert codec.ReadRequest.opcode == 1 and codec.WriteRequest.opcode == 2 and codec.OptionAck.opcode == 6


def test_enums_and_constants():
    assert [int(o) for o in codec.Opcode] == [1, 2, 3, 4, 5, 6]
    assert [o.name for o in codec.Opcode] == ["RRQ", "WRQ", "DATA", "ACK", "ERROR", "OACK"]
    assert [int(e) for e in codec.ErrorCode] == list(range(9))
    assert codec.ErrorCode(8).name == "OPTION_REFUSED" and codec.ErrorCode(5).name == "UNKNOWN_TID"
    assert (codec.MAX_BLKSIZE, codec.MIN_BLKSIZE, codec.DEFAULT_BLKSIZE) == (65464, 8, 512)


# --------------------------------------------------------------------------------------------
# netascii

NETASCII_CASES = [
    (b"", b""),
    (b"line\n", b"line\r\n"),
    (b"a\rb", b"a\r\0b"),
    (b"\r\n", b"\r\0\r\n"),
    (b"\n\n\r\r", b"\r\n\r\n\r\0\r\0"),
    (bytes(range(256)), bytes(range(10)) + b"\r\n" + bytes(range(11, 13)) + b"\r\0" + bytes(range(14, 256))),
]


@pytest.mark.parametrize("plain, wire", NETASCII_CASES)
def test_netascii_round_trip(plain, wire):
    assert codec.to_netascii(plain) == wire
    assert codec.from_netascii(wire) == plain
    assert codec.to_netascii(bytearray(plain)) == wire
    assert codec.from_netascii(memoryview(wire)) == plain


def test_bare_cr_is_kept_on_decode():
    assert codec.from_netascii(b"a\rb") == b"a\rb"
    assert codec.from_netascii(b"end\r") == b"end\r"
    assert codec.from_netascii(b"\r\r\n") == b"\r\n"
    assert codec.from_netascii(b"\r\r\0") == b"\r\r"
    assert codec.from_netascii(b"\r\n\0") == b"\n\0"


TRICKY = [
    b"\r",
    b"\r\r\r",
    b"a\r\nb\r\0c\rd\r",
    b"\r\n\r\0\r\r\n\r\0\r",
    b"\r\0\r\0\n\n\r\r\0\0",
    bytes(range(256)) * 2,
]


@pytest.mark.parametrize("wire", TRICKY)
def test_netascii_decoder_gives_the_one_shot_result_at_every_split(wire):
    expected = codec.from_netascii(wire)
    for i in range(len(wire) + 1):
        for j in range(i, min(len(wire), i + 3) + 1):  # two and three chunks, empty ones too
            decoder = codec.NetasciiDecoder()
            out = decoder.feed(wire[:i]) + decoder.feed(wire[i:j]) + decoder.feed(wire[j:]) + decoder.flush()
            assert out == expected, (i, j)


@pytest.mark.parametrize("plain", TRICKY)
def test_netascii_encoder_gives_the_one_shot_result_at_every_split(plain):
    expected = codec.to_netascii(plain)
    for i in range(len(plain) + 1):
        encoder = codec.NetasciiEncoder()
        assert encoder.feed(plain[:i]) + encoder.feed(plain[i:]) + encoder.flush() == expected


def test_netascii_decoder_byte_by_byte_and_reuse_after_flush():
    wire = b"x\r\ny\r\0z\r"
    decoder = codec.NetasciiDecoder()
    out = b"".join(decoder.feed(wire[k : k + 1]) for k in range(len(wire)))
    assert out == b"x\ny\rz"
    assert decoder.flush() == b"\r"
    assert decoder.flush() == b""
    assert decoder.feed(b"\r\n") == b"\n"


# --------------------------------------------------------------------------------------------
# property-based: round trips, and the compiled codec agrees with its twin

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=20)
raw_text = st.binary(max_size=20).filter(lambda b: b"\0" not in b).map(lambda b: b.decode("utf-8", "surrogateescape"))
names = st.one_of(text, raw_text).filter(bool)
values = st.one_of(text, raw_text, st.integers(min_value=0, max_value=10**9))
options = st.dictionaries(names, values, max_size=5).filter(
    lambda d: len({n.encode("utf-8", "surrogateescape").lower() for n in d}) == len(d)
)
blocks = st.integers(min_value=0, max_value=65535)


def _expected_options(opts):
    return {
        n.encode("utf-8", "surrogateescape").lower().decode("utf-8", "surrogateescape"): str(v) for n, v in opts.items()
    }


@SETTINGS
@given(filename=st.one_of(text, raw_text), mode=st.sampled_from(["octet", "netascii", "OCTET", "mail"]), opts=options)
def test_requests_round_trip(filename, mode, opts):
    for encode, cls in ((codec.encode_rrq, codec.ReadRequest), (codec.encode_wrq, codec.WriteRequest)):
        try:
            packet = encode(filename, mode, opts)
        except ValueError as exc:
            assert "exceeds 512" in str(exc)
            continue
        assert codec.decode(packet) == cls(filename, mode.lower(), _expected_options(opts))


@SETTINGS
@given(block=blocks, payload=st.binary(max_size=1500), code=blocks, message=st.one_of(text, raw_text), opts=options)
def test_other_packets_round_trip(block, payload, code, message, opts):
    assert codec.decode(codec.encode_data(block, payload)) == codec.Data(block, payload)
    assert codec.decode(codec.encode_ack(block)) == codec.Ack(block)
    assert codec.decode(codec.encode_error(code, message)) == codec.Error(code, message)
    assert codec.decode(codec.encode_oack(opts)) == codec.OptionAck(_expected_options(opts))


@SETTINGS
@given(data=st.binary(max_size=600))
def test_random_bytes_decode_or_raise_decode_error_only(data):
    for packet in (data, b"\0" + bytes([data[0] % 8 if data else 0]) + data[1:]):
        try:
            codec.decode(packet)
        except codec.DecodeError as exc:
            assert 0 <= exc.offset <= max(len(packet), 512)


@SETTINGS
@given(plain=st.binary(max_size=300), cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=4))
def test_netascii_properties(plain, cuts):
    wire = codec.to_netascii(plain)
    assert codec.from_netascii(wire) == plain
    decoder = codec.NetasciiDecoder()
    points = sorted({min(c, len(wire)) for c in cuts})
    chunks = [wire[a:b] for a, b in zip([0] + points, points + [len(wire)])]
    assert b"".join(decoder.feed(c) for c in chunks) + decoder.flush() == plain


def _outcome(module, packet):
    try:
        return ("ok", module.decode(packet))
    except module.DecodeError as exc:
        return ("error", str(exc), exc.offset)


# datagrams shaped like TFTP packets, then damaged: these reach the deep paths of the parser
fragment = st.sampled_from([b"\0", b"\0\0", b"octet", b"NetAscii", b"blksize", b"BLKSIZE", b"1428", b"\r\n", b"\xff\xfe", b"x"])
shaped = st.builds(
    lambda op, parts, tail: struct.pack("!H", op) + b"".join(parts) + tail,
    st.integers(min_value=0, max_value=8),
    st.lists(fragment, max_size=16),
    st.binary(max_size=6),
)


valid = st.one_of(
    st.builds(_codec_py.encode_data, blocks, st.binary(max_size=600)),
    st.builds(_codec_py.encode_ack, blocks),
    st.builds(_codec_py.encode_error, blocks, st.one_of(text, raw_text)),
    st.builds(_codec_py.encode_oack, options),
    st.builds(lambda f, o: _codec_py.encode_wrq(f, "NetAscii", o), st.one_of(text, raw_text), options.filter(lambda d: len(d) < 3)),
)


@SETTINGS
@given(packet=st.one_of(st.binary(max_size=700), shaped, valid))
def test_compiled_and_twin_decode_agree(packet):
    c = _c_module()
    if c is None:
        pytest.skip("compiled codec unavailable")
    expected = _outcome(_codec_py, packet)
    assert _outcome(c, packet) == expected
    assert _outcome(c, bytearray(packet)) == expected


@SETTINGS
@given(block=blocks, payload=st.binary(max_size=600), filename=st.one_of(text, raw_text), opts=options, data=st.binary(max_size=200))
def test_compiled_and_twin_encode_agree(block, payload, filename, opts, data):
    c = _c_module()
    if c is None:
        pytest.skip("compiled codec unavailable")
    assert c.encode_ack(block) == _codec_py.encode_ack(block)
    assert c.encode_data(block, payload) == _codec_py.encode_data(block, payload)
    assert c.encode_error(block, filename) == _codec_py.encode_error(block, filename)
    for name in ("encode_rrq", "encode_wrq"):
        try:
            expected = getattr(_codec_py, name)(filename, "octet", opts)
        except ValueError as exc:
            with pytest.raises(ValueError) as info:
                getattr(c, name)(filename, "octet", opts)
            assert str(info.value) == str(exc)
        else:
            assert getattr(c, name)(filename, "octet", opts) == expected
    assert c.encode_oack(opts) == _codec_py.encode_oack(opts)
    assert c.to_netascii(data) == _codec_py.to_netascii(data)
    assert c.from_netascii(data) == _codec_py.from_netascii(data)


# --------------------------------------------------------------------------------------------
# real peers: tftpd-hpa serves our requests; tftp-hpa, atftp and busybox clients send requests we
# decode and understand the ERROR packets we encode


@pytest.fixture
def tftpd():
    """in.tftpd (tftpd-hpa) serving a fresh directory on a loopback port: (address, directory)."""
    import socket
    import tempfile
    import time

    from conftest import free_port, require_tool

    exe = require_tool("in.tftpd")
    root = tempfile.mkdtemp(prefix="fastnet-codec-")
    os.chmod(root, 0o755)  # tftpd drops to the tftp user
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([exe, "-L", "-a", f"127.0.0.1:{port}", "-s", root], stderr=subprocess.PIPE)
    try:
        time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        yield ("127.0.0.1", port), root
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()
        shutil.rmtree(root, ignore_errors=True)


def _udp():
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def _fetch(sock, server, request, blksize):
    """Run one download with our packets; return (first reply, payload bytes)."""
    sock.sendto(request, server)
    reply, peer = sock.recvfrom(70000)
    first = codec.decode(reply)
    if type(first) is codec.Error:
        return first, b""
    chunks = []
    packet = first
    if type(packet) is codec.OptionAck:
        sock.sendto(codec.encode_ack(0), peer)
        packet = codec.decode(sock.recvfrom(70000)[0])
    for _ in range(1000):  # bounded: the test files are small
        assert type(packet) is codec.Data, packet
        assert packet.block == len(chunks) + 1
        chunks.append(packet.payload)
        sock.sendto(codec.encode_ack(packet.block), peer)
        if len(packet.payload) < blksize:
            break
        packet = codec.decode(sock.recvfrom(70000)[0])
    return first, b"".join(chunks)


@pytest.mark.peers
def test_tftpd_hpa_serves_our_requests_and_we_decode_its_replies(tftpd):
    server, root = tftpd
    content = os.urandom(3000)
    with open(os.path.join(root, "f.bin"), "wb") as f:
        f.write(content)
    os.chmod(os.path.join(root, "f.bin"), 0o644)
    with _udp() as sock:
        first, got = _fetch(sock, server, codec.encode_rrq("f.bin", options={"blksize": 1024, "tsize": 0}), 1024)
        assert first == codec.OptionAck({"blksize": "1024", "tsize": "3000"})
        assert got == content
        first, got = _fetch(sock, server, codec.encode_rrq("f.bin"), 512)
        assert first == codec.Data(1, content[:512]) and got == content
        first, _ = _fetch(sock, server, codec.encode_rrq("missing.bin"), 512)
        assert type(first) is codec.Error and first.code is codec.ErrorCode.FILE_NOT_FOUND


@pytest.mark.peers
def test_tftpd_hpa_netascii_download_decodes_to_the_original_text(tftpd):
    server, root = tftpd
    text = b"first line\nsecond\rline\n" * 40 + b"no newline at the end"
    with open(os.path.join(root, "t.txt"), "wb") as f:
        f.write(text)
    os.chmod(os.path.join(root, "t.txt"), 0o644)
    with _udp() as sock:
        _, wire = _fetch(sock, server, codec.encode_rrq("t.txt", "netascii"), 512)
    assert wire == codec.to_netascii(text)
    decoder = codec.NetasciiDecoder()
    blocks = [wire[i : i + 512] for i in range(0, len(wire), 512)]
    assert b"".join(decoder.feed(b) for b in blocks) + decoder.flush() == text


CLIENTS = {
    "tftp-hpa": (
        ("tftp",),
        lambda exe, port, out: [exe, "-m", "netascii", "127.0.0.1", str(port), "-c", "get", "dir/caf\u00e9.txt", out],
        codec.ReadRequest("dir/caf\u00e9.txt", "netascii", {}),
        "Error code 2: go away",
    ),
    "atftp": (
        ("atftp",),
        lambda exe, port, out: [exe, "--option", "blksize 1024", "--option", "tsize 0", "--get", "-r", "x.bin", "-l", out, "127.0.0.1", str(port)],
        codec.ReadRequest("x.bin", "octet", {"tsize": "0", "blksize": "1024"}),
        "<go away>",
    ),
    "busybox": (
        ("busybox",),
        lambda exe, port, out: [exe, "tftp", "-g", "-b", "1428", "-r", "bb.bin", "-l", out, "127.0.0.1", str(port)],
        codec.ReadRequest("bb.bin", "octet", {"blksize": "1428", "tsize": "0"}),
        "(2) go away",
    ),
}


@pytest.mark.peers
@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_real_clients_requests_decode_and_they_understand_our_error(client, tmp_path):
    from conftest import require_tool

    tools, argv, expected, shown = CLIENTS[client]
    exe = require_tool(*tools)
    with _udp() as sock:
        port = sock.getsockname()[1]
        proc = subprocess.Popen(
            argv(exe, port, str(tmp_path / "out")), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path
        )
        try:
            data, peer = sock.recvfrom(2048)
            request = codec.decode(data)
            assert request == expected
            sock.sendto(codec.encode_error(codec.ErrorCode.ACCESS_VIOLATION, "go away"), peer)
            output, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            proc.stdout.close()
    assert shown in output.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# the C core alone, under AddressSanitizer and UBSan


def test_standalone_c_core_under_sanitizers(tmp_path, implementation):
    if implementation != "c":
        pytest.skip("the standalone C core involves no Python; once is enough")
    exe = build_sanitized(tmp_path, "test_tftp_codec.c", "tftp_codec.c")
    run = subprocess.run([exe, "100000"], capture_output=True, text=True, timeout=60, env=sanitized_env())
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok: tftp codec core, 100000 random datagrams")


def test_benchmark_script_runs(implementation):
    if implementation != "c":
        pytest.skip("the benchmark measures both implementations itself; once is enough")
    import sys

    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "codec.py"), "--repeat", "1", "--seconds", "0.001"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "| decode DATA (512 B)" in out.stdout
    assert out.stdout.count("target: compiled") == 5


@pytest.mark.parametrize(
    ("make", "exc", "message"),
    [
        (lambda c: c.Data(70000, b""), ValueError, "block number 70000 is outside 0..65535"),
        (lambda c: c.Data(-1, b""), ValueError, "block number -1 is outside 0..65535"),
        (lambda c: c.Data(1, bytearray(b"x")), TypeError, "payload must be bytes, not bytearray"),
        (lambda c: c.Data(1, None), TypeError, "payload must be bytes, not NoneType"),
        (lambda c: c.Ack(65536), ValueError, "block number 65536 is outside 0..65535"),
    ],
)
def test_packet_constructors_check_fields_like_the_encoders(make, exc, message):
    # The compiled classes and the twin's (one per run of the `implementation` fixture) refuse
    # the same values with the same words.
    with pytest.raises(exc) as info:
        make(codec)
    assert str(info.value) == message
    assert codec.Data(65535, b"ok") == codec.decode(b"\0\3\xff\xffok")
    assert codec.Ack(0) == codec.decode(b"\0\4\0\0")


# --------------------------------------------------------------------------------------------
# argument checks: types first, then values; packet constructors; the size of ERROR and OACK


class _Str(str):
    pass


class _Mapping(Mapping):
    def __init__(self, items: dict) -> None:
        self._items = items

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


# calls with several faults: the type fault wins, wherever it is (docs/codec.md)
SEVERAL_FAULTS = [
    (lambda c: c.encode_rrq("a\0b", None), TypeError, "mode must be str, not NoneType"),
    (lambda c: c.encode_wrq("\ud800", "octet", {"a": 1.5}), TypeError, "option value must be str or int, not float"),
    (lambda c: c.encode_rrq("f" * 600, "octet", {"a": 1, "A": 2, 5: 3}), TypeError, "option name must be str, not int"),
    (lambda c: c.encode_rrq("f", "octet", [("blksize", "512")]), TypeError, "options must be a mapping, not list"),
    (lambda c: c.encode_oack({"a\0": 1, "b": 1.5}), TypeError, "option value must be str or int, not float"),
    (lambda c: c.encode_oack({"x": 1, "X": 2, 5: 3}), TypeError, "option name must be str, not int"),
    (lambda c: c.encode_oack({**{f"o{i}": i for i in range(70)}, "z": True}), TypeError,
     "option value must be str or int, not bool"),
    (lambda c: c.encode_error(70000, b"x"), TypeError, "error message must be str, not bytes"),
    (lambda c: c.encode_data(70000, "text"), TypeError, "a bytes-like object is required, not 'str'"),
    (lambda c: c.Data(70000, 5), TypeError, "payload must be bytes, not int"),
    (lambda c: c.Error(70000, 5), TypeError, "error message must be str, not int"),
    # then the values: numbers, the strings' encoding in wire order, the wire rules, the size
    (lambda c: c.encode_error(70000, "a\0"), ValueError, "error code 70000 is outside 0..65535"),
    (lambda c: c.encode_error(1, "a\0" + "x" * 70000), ValueError, "error message contains a NUL byte"),
    (lambda c: c.encode_rrq("a\0", "\ud800"), ValueError, "mode is not encodable as UTF-8"),
    (lambda c: c.encode_rrq("a\0" * 300, "octet", {"x": 1, "X": 2}), ValueError, "filename contains a NUL byte"),
    (lambda c: c.encode_oack({"": "x" * 70000}), ValueError, "empty option name"),
    (lambda c: c.encode_data(70000, bytes(70000)), ValueError, "block number 70000 is outside 0..65535"),
    (lambda c: c.encode_data(70000, bytearray(70000)), ValueError, "block number 70000 is outside 0..65535"),
]


@pytest.mark.parametrize("call, exc, message", SEVERAL_FAULTS)
def test_types_are_checked_before_values(call, exc, message):
    with pytest.raises(exc) as info:
        call(codec)
    assert type(info.value) is exc and str(info.value) == message


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: codec.encode_error(1, "m" * 65531), "ERROR packet of 65536 bytes exceeds 65535"),
        (lambda: codec.encode_error(1, "x" * 70000), "ERROR packet of 70005 bytes exceeds 65535"),
        (lambda: codec.encode_oack({"a": "v" * 65531}), "OACK packet of 65536 bytes exceeds 65535"),
        (lambda: codec.encode_oack({"a": "x" * 70000}), "OACK packet of 70005 bytes exceeds 65535"),
    ],
)
def test_error_and_oack_over_65535_bytes_raise_value_error(call, message):
    # UDP cannot carry them and decode refuses them: never built, as requests over 512 bytes
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_largest_error_and_oack_are_built_and_decode():
    error = codec.encode_error(1, "m" * 65530)
    oack = codec.encode_oack({"a": "v" * 65530})
    assert len(error) == len(oack) == 65535
    assert codec.decode(error) == codec.Error(1, "m" * 65530)
    assert codec.decode(oack) == codec.OptionAck({"a": "v" * 65530})


def test_packets_refuse_attribute_deletion_like_assignment():
    for packet in (codec.Data(1, b"x"), codec.Ack(1), codec.Error(1, "m"), codec.ReadRequest("f"), codec.OptionAck({})):
        with pytest.raises(AttributeError):
            delattr(packet, packet._fields[0])
        assert getattr(packet, packet._fields[0]) is not None


def test_packet_constructors_take_str_subclasses_and_any_mapping_as_plain_str_and_dict():
    request = codec.WriteRequest(_Str("f"), _Str("octet"), collections.OrderedDict(blksize="512"))
    assert request == codec.decode(codec.encode_wrq("f", options={"blksize": 512}))
    assert type(request.filename) is str and type(request.mode) is str and type(request.options) is dict
    oack = codec.OptionAck(_Mapping({"tsize": "9"}))
    assert oack == codec.OptionAck({"tsize": "9"}) and type(oack.options) is dict
    error = codec.Error(1, _Str("m"))
    assert type(error.message) is str
    assert codec.ReadRequest("f", "octet", None).options == {}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda c: c.ReadRequest(b"x"), "filename must be str, not bytes"),
        (lambda c: c.WriteRequest("x", None), "mode must be str, not NoneType"),
        (lambda c: c.ReadRequest("x", "octet", [("a", "1")]), "options must be a mapping, not list"),
        (lambda c: c.OptionAck([]), "options must be a mapping, not list"),
        (lambda c: c.OptionAck(None), "options must be a mapping, not NoneType"),
        (lambda c: c.Error(1, 5), "error message must be str, not int"),
        (lambda c: c.Error("1", "m"), "'str' object cannot be interpreted as an integer"),
    ],
)
def test_packet_constructors_refuse_fields_of_the_wrong_type(make, message):
    with pytest.raises(TypeError) as info:
        make(codec)
    assert str(info.value) == message


def test_error_constructor_checks_the_code_like_the_encoder():
    with pytest.raises(ValueError, match="error code 70000 is outside 0..65535"):
        codec.Error(70000, "m")
    assert codec.Error(3, "m").code is codec.ErrorCode.DISK_FULL  # as decode gives it
    assert codec.Error(3, "m") == codec.decode(codec.encode_error(3, "m"))
    assert repr(codec.Error(99, "m")) == "Error(code=99, message='m')"


def _checked(module, call):
    """What *call* does with *module*: its result (packets by repr and field types), or its error."""
    try:
        result = call(module)
    except Exception as exc:  # noqa: BLE001 - the point is to compare whatever it is
        return ("raises", type(exc), str(exc))
    if hasattr(result, "_fields"):
        return ("packet", repr(result), tuple(type(getattr(result, name)) for name in result._fields))
    return ("returns", result)


DIFFERENTIAL = [call for call, _, _ in SEVERAL_FAULTS] + [
    lambda c: c.encode_rrq("\ud800", None),
    lambda c: c.encode_rrq("f", "octet", []),
    lambda c: c.encode_rrq("f", "octet", collections.OrderedDict(a=1)),
    lambda c: c.encode_rrq(_Str("f"), _Str("octet"), _Mapping({_Str("x"): _Str("y"), "n": 10**30})),
    lambda c: c.encode_rrq("f", "octet", {f"o{i}": i for i in range(70)}),
    lambda c: c.encode_oack({**{f"o{i}": i for i in range(65)}, "\ud800": 1}),
    lambda c: c.encode_oack(None),
    lambda c: c.encode_oack({"a": "v" * 65530}),
    lambda c: c.encode_oack({"a": "v" * 65531}),
    lambda c: c.encode_error(1, "m" * 65530),
    lambda c: c.encode_error(1, "m" * 65531),
    lambda c: c.encode_error(1.0, b"x"),
    lambda c: c.encode_data(1.5, "text"),
    lambda c: c.encode_data(3, memoryview(b"abcdef")[::2]),
    lambda c: c.Data("x", 5),
    lambda c: c.Ack("1"),
    lambda c: c.ReadRequest(b"x"),
    lambda c: c.ReadRequest(_Str("x"), "octet", collections.OrderedDict(a="1")),
    lambda c: c.WriteRequest("x", "octet", _Mapping({"a": "b"})),
    lambda c: c.OptionAck([]),
    lambda c: c.OptionAck(collections.OrderedDict(a="1")),
    lambda c: c.Error(1, 5),
    lambda c: c.Error(1, _Str("m")),
    lambda c: c.Error(70000, "m"),
    lambda c: c.Error(3, "m"),
    lambda c: c.Error(99, "m"),
]


@pytest.mark.parametrize("call", DIFFERENTIAL)
def test_compiled_and_twin_check_arguments_alike(call):
    # both implementations in this one process: the same result, or the same exception and text
    c = _c_module()
    if c is None:
        pytest.skip("compiled codec unavailable")
    assert _checked(c, call) == _checked(_codec_py, call)


def test_compiled_and_twin_refuse_changes_to_packets_alike():
    c = _c_module()
    if c is None:
        pytest.skip("compiled codec unavailable")
    for module in (c, _codec_py):
        for change in (lambda p: delattr(p, "block"), lambda p: setattr(p, "block", 2)):
            with pytest.raises(AttributeError):
                change(module.Ack(1))
