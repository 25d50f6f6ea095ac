"""fastnet.tftp.engine: the DATA/ACK exchange of a transfer, alone and inside the server and client."""

from __future__ import annotations

import concurrent.futures
import logging
import platform
import socket
import subprocess
import sys
import threading

import pytest
from conftest import build_sanitized, require_tool, sanitized_env
from tftp_helpers import RawPeer, fastnet_server, fill

from fastnet import _recverr
from fastnet.tftp import client, codec, engine


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "root"
    d.mkdir()
    return d


@pytest.fixture
def pair():
    """Two bound loopback UDP sockets: (a, b)."""
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _run_in_thread(session):
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(session.run)
    pool.shutdown(wait=False)
    return future


def test_sender_and_receiver_roll_over_past_block_65535_and_count_alike(pair, tmp_path):
    a, b = pair
    size = 65537 * 8 + 5  # 8-byte blocks: the block number wraps to 0 and goes on
    data = fill(str(tmp_path / "src.bin"), size, seed=3)
    with open(tmp_path / "src.bin", "rb") as src, open(tmp_path / "dst.bin", "wb") as dst:
        sender = engine.Session(engine.SENDER, a, src.fileno(), b.getsockname(), blksize=8, windowsize=32,
                                timeout=5.0, retries=3)
        receiver = engine.Session(engine.RECEIVER, b, dst.fileno(), a.getsockname(), blksize=8, windowsize=32,
                                  timeout=5.0, retries=3, ack_last=True)
        future = _run_in_thread(sender)
        assert receiver.run() == engine.DONE
        assert future.result(60) == engine.DONE
        sender.close()
        receiver.close()
    assert (tmp_path / "dst.bin").read_bytes() == data
    assert sender.bytes == receiver.bytes == size
    assert sender.blocks == receiver.blocks == 65538
    assert receiver.next_block == sender.next_block == 65539
    assert sender.retransmissions == receiver.retransmissions == 0


def test_sender_starts_at_the_file_offset_and_block_given(pair, tmp_path):
    a, b = pair
    data = fill(str(tmp_path / "src.bin"), 3000, seed=5)
    with open(tmp_path / "src.bin", "rb") as src, open(tmp_path / "dst.bin", "wb") as dst:
        sender = engine.Session(engine.SENDER, a, src.fileno(), b.getsockname(), blksize=512, windowsize=1,
                                timeout=5.0, retries=3, file_start=1000, start_block=3)
        receiver = engine.Session(engine.RECEIVER, b, dst.fileno(), a.getsockname(), blksize=512, windowsize=1,
                                  timeout=5.0, retries=3, start_block=3, ack_last=True)
        future = _run_in_thread(sender)
        assert receiver.run() == engine.DONE
        assert future.result(30) == engine.DONE
    # file_start is where block 1 would begin: block 3 is 1024 bytes further
    assert (tmp_path / "dst.bin").read_bytes() == data[1000 + 1024 :]
    assert receiver.blocks == sender.blocks - 2 == 2 and receiver.next_block == 5


def test_sender_stops_on_the_peers_error_in_the_middle_of_a_window(pair, tmp_path):
    a, b = pair
    fill(str(tmp_path / "src.bin"), 512 * 20)
    b.settimeout(5)
    with open(tmp_path / "src.bin", "rb") as src:
        sender = engine.Session(engine.SENDER, a, src.fileno(), b.getsockname(), blksize=512, windowsize=8,
                                timeout=5.0, retries=3)
        future = _run_in_thread(sender)
        blocks = [codec.decode(b.recvfrom(2000)[0]).block for _ in range(3)]
        error = codec.encode_error(0, "user cancelled")
        b.sendto(error, a.getsockname())
        assert future.result(30) == engine.STOP
        sender.close()
    assert blocks == [1, 2, 3]
    assert sender.stop_packet == error
    assert codec.decode(sender.stop_packet) == codec.Error(0, "user cancelled")
    assert sender.blocks == 0 and sender.bytes == 0


def test_receiver_answers_a_stranger_with_error_5_and_goes_on(pair, tmp_path):
    a, b = pair
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger, open(tmp_path / "dst.bin", "wb") as dst:
        stranger.bind(("127.0.0.1", 0))
        stranger.settimeout(5)
        receiver = engine.Session(engine.RECEIVER, b, dst.fileno(), a.getsockname(), blksize=512, windowsize=1,
                                  timeout=5.0, retries=3, first=codec.encode_ack(0), ack_last=True)
        future = _run_in_thread(receiver)
        a.settimeout(5)
        assert codec.decode(a.recvfrom(100)[0]) == codec.Ack(0)  # the first packet goes out
        stranger.sendto(codec.encode_data(1, b"x" * 512), b.getsockname())
        reply = codec.decode(stranger.recvfrom(100)[0])
        a.sendto(codec.encode_data(1, b"y" * 10), b.getsockname())
        assert future.result(30) == engine.DONE
        assert codec.decode(a.recvfrom(100)[0]) == codec.Ack(1)
    assert type(reply) is codec.Error and reply.code == 5
    assert (tmp_path / "dst.bin").read_bytes() == b"y" * 10


@pytest.mark.parametrize("role", [engine.SENDER, engine.RECEIVER])
def test_a_peer_that_goes_away_ends_the_run_as_refused(pair, tmp_path, role):
    # With IP_RECVERR on the socket, the engine's next packet to a closed port draws a port
    # unreachable: REFUSED after one timeout, where its retries would take about 9 s (TIMEOUT)
    a, b = pair  # a: the engine, b: its peer
    _recverr.enable(a)
    b.settimeout(5)
    with open(tmp_path / "f.bin", "w+b") as f:
        if role == engine.SENDER:
            f.write(b"s" * 512 * 4)
            f.flush()
        first = None if role == engine.SENDER else codec.encode_ack(0)
        session = engine.Session(role, a, f.fileno(), b.getsockname(), blksize=512, windowsize=1, timeout=0.3,
                                 retries=5, first=first, ack_last=True)
        future = _run_in_thread(session)
        if role == engine.SENDER:
            assert codec.decode(b.recvfrom(600)[0]).block == 1
        else:
            assert codec.decode(b.recvfrom(600)[0]) == codec.Ack(0)
            b.sendto(codec.encode_data(1, b"r" * 512), a.getsockname())
            assert codec.decode(b.recvfrom(600)[0]) == codec.Ack(1)
        b.close()
        assert future.result(30) == engine.REFUSED
        session.close()
    assert session.retransmissions == 1  # the one that met the closed port
    assert session.blocks == (0 if role == engine.SENDER else 1)
    if role == engine.RECEIVER:  # what it counted is in the file, as after a timeout
        assert session.bytes == 512 and (tmp_path / "f.bin").read_bytes() == b"r" * 512


@pytest.mark.parametrize("role", [engine.SENDER, engine.RECEIVER])
def test_a_peer_that_says_goodbye_then_goes_away_ends_the_run_on_its_error(pair, tmp_path, role):
    # A cancelled client sends ERROR 0 and closes its port.  The engine's next packet, which
    # crossed that ERROR, draws a port unreachable that the kernel reports before the ERROR queued
    # ahead of it: the run must still end on the peer's ERROR (STOP), not as REFUSED.  Here the
    # ERROR is queued and the port closed before the run starts, so its first packet meets the
    # closed port every time.
    a, b = pair  # a: the engine, b: its peer
    _recverr.enable(a)
    goodbye = codec.encode_error(0, "transfer cancelled by the client")
    b.sendto(goodbye, a.getsockname())
    peer = b.getsockname()
    b.close()
    with open(tmp_path / "f.bin", "w+b") as f:
        if role == engine.SENDER:
            f.write(b"s" * 512 * 4)
            f.flush()
        first = None if role == engine.SENDER else codec.encode_ack(0)
        session = engine.Session(role, a, f.fileno(), peer, blksize=512, windowsize=2, timeout=0.3, retries=5,
                                 first=first, ack_last=True)
        assert _run_in_thread(session).result(30) == engine.STOP
        session.close()
    assert session.stop_packet == goodbye
    assert session.blocks == 0 and session.bytes == 0


def test_a_strangers_closed_port_does_not_end_the_run(pair, tmp_path):
    # the stranger's ERROR 5 draws a port unreachable for the stranger's address, not the peer's
    a, b = pair
    _recverr.enable(b)
    with open(tmp_path / "dst.bin", "wb") as dst:
        receiver = engine.Session(engine.RECEIVER, b, dst.fileno(), a.getsockname(), blksize=512, windowsize=1,
                                  timeout=5.0, retries=3, first=codec.encode_ack(0), ack_last=True)
        future = _run_in_thread(receiver)
        a.settimeout(5)
        assert codec.decode(a.recvfrom(100)[0]) == codec.Ack(0)
        for block, payload in ((1, b"y" * 512), (2, b"z" * 10)):
            for _ in range(3):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                    stranger.bind(("127.0.0.1", 0))
                    stranger.sendto(codec.encode_data(1, b"x" * 512), b.getsockname())
            a.sendto(codec.encode_data(block, payload), b.getsockname())
            assert codec.decode(a.recvfrom(100)[0]) == codec.Ack(block)  # (a lost ACK: 5 s, socket.timeout)
        assert future.result(30) == engine.DONE
    assert (tmp_path / "dst.bin").read_bytes() == b"y" * 512 + b"z" * 10
    assert receiver.retransmissions == 0


def test_cancel_ends_a_waiting_run(pair, tmp_path):
    a, b = pair
    with open(tmp_path / "dst.bin", "wb") as dst:
        receiver = engine.Session(engine.RECEIVER, b, dst.fileno(), a.getsockname(), blksize=512, windowsize=4,
                                  timeout=30.0, retries=1)
        future = _run_in_thread(receiver)
        threading.Timer(0.2, receiver.cancel).start()
        assert future.result(60) == engine.CANCELLED  # (a timeout would take a minute)


def test_a_session_freed_without_close_leaves_the_descriptor_number_alone(pair, tmp_path):
    # The compiled session gave the socket its mode back when freed, close() or not: a socket
    # closed before that had its number reused by another descriptor, which got the first one's
    # non-blocking flag (Python then believed a non-blocking socket blocking)
    import fcntl
    import gc
    import os

    _, b = pair
    (tmp_path / "f").write_bytes(b"x" * 100)
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    first.bind(("127.0.0.1", 0))
    first.setblocking(False)  # the engine makes it blocking while it runs
    with open(tmp_path / "f", "rb") as src:
        session = engine.Session(engine.SENDER, first, src.fileno(), b.getsockname(), blksize=512, windowsize=1,
                                 timeout=1.0, retries=1)
        number = first.fileno()
        first.close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second:
            if second.fileno() != number:
                pytest.skip("the descriptor number was not reused")
            del session
            gc.collect()
            flags = fcntl.fcntl(second.fileno(), fcntl.F_GETFL)
    assert not flags & os.O_NONBLOCK


def test_engine_restores_the_sockets_mode(pair, tmp_path):
    a, b = pair
    b.setblocking(False)
    with open(tmp_path / "dst.bin", "wb") as dst:
        receiver = engine.Session(engine.RECEIVER, b, dst.fileno(), a.getsockname(), blksize=512, windowsize=1,
                                  timeout=0.05, retries=0)
        assert receiver.run() == engine.TIMEOUT
        receiver.close()
    with pytest.raises(BlockingIOError):
        b.recvfrom(100)


# ---------------------------------------------------------------------------- in the server


def test_server_session_aborted_by_the_peers_error_mid_window(root, caplog):
    caplog.set_level(logging.INFO, logger="fastnet.tftp.access")
    fill(str(root / "f.bin"), 512 * 40)
    with fastnet_server(str(root), timeout=5.0) as server, RawPeer() as peer:
        peer.send(codec.encode_rrq("f.bin", options={"windowsize": "8"}), server.port)
        oack, tid = peer.recv()
        assert oack == codec.OptionAck({"windowsize": "8"})
        peer.send(codec.encode_ack(0), tid)
        assert [peer.recv()[0].block for _ in range(3)] == [1, 2, 3]
        peer.send(codec.encode_error(0, "enough"), tid)
        for _ in range(200):
            if server.sessions == 0:
                break
            threading.Event().wait(0.01)
        rest = peer.quiet(0.3)
    assert all(type(p) is codec.Data and p.block <= 8 for p, _ in rest)  # the window in flight, no more
    lines = [r.getMessage() for r in caplog.records if r.name == "fastnet.tftp.access"]
    assert len(lines) == 1 and "outcome=peer error 0: enough" in lines[0] and "bytes=0" in lines[0]


def test_many_concurrent_transfers_in_both_directions(root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fastnet.tftp.access")
    files = {f"d{i}.bin": fill(str(root / f"d{i}.bin"), 20_000 + 997 * i, seed=i) for i in range(16)}
    uploads = {f"u{i}.bin": fill(str(tmp_path / f"u{i}.bin"), 30_000 + 313 * i, seed=100 + i) for i in range(8)}
    options = [{}, {"blksize": 1468}, {"blksize": 1024, "windowsize": 8}, {"windowsize": 16}]

    def download(i, name):
        target = tmp_path / ("got-" + name)
        return client.download("127.0.0.1", name, str(target), port=server.port, timeout=2.0, **options[i % 4])

    def upload(i, name):
        return client.upload("127.0.0.1", str(tmp_path / name), name, port=server.port, timeout=2.0, **options[i % 4])

    with fastnet_server(str(root), allow_write=True, max_sessions=32, max_sessions_per_client=32) as server:
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            downs = {name: pool.submit(download, i, name) for i, name in enumerate(files)}
            ups = {name: pool.submit(upload, i, name) for i, name in enumerate(uploads)}
            stats = {name: f.result(60) for name, f in {**downs, **ups}.items()}
    for name, data in files.items():
        assert (tmp_path / ("got-" + name)).read_bytes() == data
        assert stats[name].bytes == len(data)
    for name, data in uploads.items():
        assert (root / name).read_bytes() == data
        assert stats[name].bytes == len(data)
    lines = [r.getMessage() for r in caplog.records if r.name == "fastnet.tftp.access"]
    assert len(lines) == 24 and all("outcome=ok" in line for line in lines)
    for name, data in {**files, **uploads}.items():
        line = next(line for line in lines if f"file='{name}'" in line)
        assert f"bytes={len(data)} " in line


def test_client_statistics_from_the_engine(root, tmp_path):
    data = fill(str(root / "f.bin"), 100_000)
    with fastnet_server(str(root), allow_write=True) as server:
        down = client.download("127.0.0.1", "f.bin", str(tmp_path / "got.bin"), port=server.port,
                               blksize=1000, windowsize=4)
        (tmp_path / "up.bin").write_bytes(data)
        with open(tmp_path / "up.bin", "rb") as f:
            f.seek(1000)  # an upload sends the rest of a file object from its position on
            up = client.upload("127.0.0.1", f, "up.bin", port=server.port, blksize=1000)
            assert f.tell() == len(data)
    assert (tmp_path / "got.bin").read_bytes() == data
    assert (down.bytes, down.blocks, down.retransmissions) == (100_000, 101, 0)
    assert (root / "up.bin").read_bytes() == data[1000:]
    assert (up.bytes, up.blocks, up.retransmissions) == (99_000, 100, 0)


def test_the_engine_can_be_switched_off(root, tmp_path, monkeypatch):
    data = fill(str(root / "f.bin"), 50_000)

    class Refused:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the engine was used")

    monkeypatch.setenv("FASTNET_TFTP_ENGINE", "0")
    monkeypatch.setattr(engine, "Session", Refused)
    with fastnet_server(str(root), allow_write=True) as server:
        client.download("127.0.0.1", "f.bin", str(tmp_path / "got.bin"), port=server.port, windowsize=4)
        client.upload("127.0.0.1", str(tmp_path / "got.bin"), "back.bin", port=server.port)
    assert (tmp_path / "got.bin").read_bytes() == data
    assert (root / "back.bin").read_bytes() == data


def test_engine_implementation_follows_the_switch(implementation):
    assert engine.IMPLEMENTATION == implementation
    assert engine.Session.__module__ == {"c": "fastnet.tftp._engine_c", "python": "fastnet.tftp._engine_py"}[implementation]


def test_download_into_an_open_file_object_continues_after_its_content(root, tmp_path):
    data = fill(str(root / "f.bin"), 70_000)
    with fastnet_server(str(root)) as server, open(tmp_path / "out.bin", "wb") as f:
        f.write(b"prefix")  # still in the object's buffer when the transfer starts
        client.download("127.0.0.1", "f.bin", f, port=server.port, blksize=1468, windowsize=8)
        assert f.tell() == 6 + len(data)
        f.write(b"suffix")
    assert (tmp_path / "out.bin").read_bytes() == b"prefix" + data + b"suffix"


@pytest.mark.parametrize("length", [513, 3000])  # longer than the blksize; longer than a receive slot too
def test_receiver_stops_on_data_longer_than_the_blksize(pair, tmp_path, length):
    """A DATA longer than the negotiated blksize, from the peer: the run ends with STOP and the
    packet, for the caller to answer with ERROR 4 (dropping it would only stall the transfer),
    after writing what came before it."""
    a, b = pair
    a.settimeout(5)
    with open(tmp_path / "dst.bin", "wb") as dst:
        receiver = engine.Session(engine.RECEIVER, b, dst.fileno(), a.getsockname(), blksize=512, windowsize=4,
                                  timeout=5.0, retries=3, ack_last=True)
        future = _run_in_thread(receiver)
        a.sendto(codec.encode_data(1, b"f" * 512), b.getsockname())
        a.sendto(codec.encode_data(2, b"L" * length), b.getsockname())
        assert future.result(30) == engine.STOP
        packet = codec.decode(receiver.stop_packet)
        a.settimeout(0.2)
        with pytest.raises(socket.timeout):
            a.recvfrom(100)  # no ACK for either: block 1 did not end a window
    assert type(packet) is codec.Data and packet.block == 2 and len(packet.payload) > 512
    assert (tmp_path / "dst.bin").read_bytes() == b"f" * 512
    assert receiver.blocks == 1


def test_receiver_acks_a_block_before_writing_it_but_the_last_block_after(pair):
    """Write-behind, as tftpd-hpa does: the ACK of a full block goes out before the block is
    written, so that the sender's next block is on its way while it is.  The last block is
    written before its ACK (an ACKed transfer is complete).  The file is a pipe that holds one
    page, so no block can be written until the test reads it."""
    import fcntl
    import os
    import select

    a, b = pair
    a.settimeout(5)
    blksize = 16384
    first, last = b"1" * blksize, b"2" * 10000  # each more than the pipe holds
    rd, wr = os.pipe()
    try:
        fcntl.fcntl(wr, 1031, 4096)  # F_SETPIPE_SZ: one page
        receiver = engine.Session(engine.RECEIVER, b, wr, a.getsockname(), blksize=blksize, windowsize=1,
                                  timeout=5.0, retries=3, ack_last=True)
        future = _run_in_thread(receiver)
        a.sendto(codec.encode_data(1, first), b.getsockname())
        assert codec.decode(a.recvfrom(100)[0]) == codec.Ack(1)  # block 1 cannot be in the pipe yet
        a.sendto(codec.encode_data(2, last), b.getsockname())
        a.settimeout(0.3)
        with pytest.raises(socket.timeout):
            a.recvfrom(100)  # the last block is not ACKed before it is written
        got = b""
        while len(got) < len(first + last) and select.select([rd], [], [], 5)[0]:
            got += os.read(rd, 65536)
        a.settimeout(5)
        assert codec.decode(a.recvfrom(100)[0]) == codec.Ack(2)
        assert future.result(30) == engine.DONE
        receiver.close()
    finally:
        os.close(rd)
        os.close(wr)
    assert got == first + last


def test_progress_is_reported_from_inside_the_engine(root, tmp_path):
    data = fill(str(root / "f.bin"), 300_000)
    seen = []
    with fastnet_server(str(root), allow_write=True) as server:
        # the callback takes its time, as a terminal might; the engine returns to it every 0.1 s
        def progress(stats):
            seen.append((stats.bytes, stats.blocks))
            threading.Event().wait(0.02)

        client.download("127.0.0.1", "f.bin", str(tmp_path / "got.bin"), port=server.port, progress=progress)
        ups = []
        client.upload("127.0.0.1", str(tmp_path / "got.bin"), "up.bin", port=server.port,
                      progress=lambda s: ups.append(s.bytes))
    assert (tmp_path / "got.bin").read_bytes() == data and (root / "up.bin").read_bytes() == data
    assert seen[-1] == (len(data), len(data) // 512 + 1)
    assert [b for b, _ in seen] == sorted(b for b, _ in seen)
    assert ups[-1] == len(data) and ups == sorted(ups)


# ---------------------------------------------------------------- big blocks: the splice path
# In a windowed transfer, blocks of 32768 bytes and more of a regular file go from the page cache
# to the socket by splice() in the compiled engine (zero_copy=True, the default); zero_copy=False,
# and lockstep, read them with pread() as smaller blocks are.  The bytes on the wire must not
# depend on the path.


def _transfer(pair, tmp_path, *, blksize: int, windowsize: int, zero_copy: bool, file_start: int = 0):
    """Send src.bin (already written) from *file_start* on; the bytes received and the counters."""
    a, b = pair
    with open(tmp_path / "src.bin", "rb") as src, open(tmp_path / "dst.bin", "wb") as dst:
        sender = engine.Session(engine.SENDER, a, src.fileno(), b.getsockname(), blksize=blksize, windowsize=windowsize,
                                timeout=5.0, retries=3, file_start=file_start, zero_copy=zero_copy)
        receiver = engine.Session(engine.RECEIVER, b, dst.fileno(), a.getsockname(), blksize=blksize,
                                  windowsize=windowsize, timeout=5.0, retries=3, ack_last=True)
        future = _run_in_thread(sender)
        assert receiver.run() == engine.DONE
        assert future.result(60) == engine.DONE
        stats = (sender.bytes, sender.blocks, sender.retransmissions, receiver.bytes, receiver.blocks)
        sender.close()
        receiver.close()
    return (tmp_path / "dst.bin").read_bytes(), stats


@pytest.mark.parametrize("zero_copy", [True, False], ids=["splice", "pread"])
@pytest.mark.parametrize("blksize,windowsize", [(65464, 1), (65464, 16), (65464, 2), (32768, 4)])
@pytest.mark.parametrize("size_in_blocks,extra", [(0, 0), (0, 100), (0, 4095), (1, 0), (3, 0), (3, 1), (5, 4097)])
def test_big_blocks_arrive_byte_identical_by_either_path(pair, tmp_path, zero_copy, blksize, windowsize,
                                                         size_in_blocks, extra):
    data = fill(str(tmp_path / "src.bin"), size_in_blocks * blksize + extra, seed=size_in_blocks * 7 + extra)
    got, (sent_bytes, sent_blocks, resent, received_bytes, received_blocks) = _transfer(
        pair, tmp_path, blksize=blksize, windowsize=windowsize, zero_copy=zero_copy)
    assert got == data
    assert sent_bytes == received_bytes == len(data)
    # an exact multiple (and an empty file) ends with an empty DATA
    assert sent_blocks == received_blocks == len(data) // blksize + 1
    assert resent == 0


@pytest.mark.parametrize("zero_copy", [True, False], ids=["splice", "pread"])
def test_big_blocks_start_at_an_unaligned_file_offset(pair, tmp_path, zero_copy):
    # block boundaries fall anywhere in a page: the engine copies the head up to a page boundary
    data = fill(str(tmp_path / "src.bin"), 1000 + 3 * 65464 + 12345, seed=11)
    got, _ = _transfer(pair, tmp_path, blksize=65464, windowsize=4, zero_copy=zero_copy, file_start=1000)
    assert got == data[1000:]


def test_a_window_of_big_blocks_is_resent_whole_after_a_timeout(pair, tmp_path):
    """The receiver ignores the second window: it comes again, the same bytes, and the transfer ends.
    (The first window, before any DATA is acknowledged, is another story: see the server's test
    of a timeout that resends only the first block.)"""
    a, b = pair
    blksize = 65464
    data = fill(str(tmp_path / "src.bin"), 3 * blksize + 10, seed=12)
    b.settimeout(10)
    with open(tmp_path / "src.bin", "rb") as src:
        sender = engine.Session(engine.SENDER, a, src.fileno(), b.getsockname(), blksize=blksize, windowsize=2,
                                timeout=0.2, retries=3)
        future = _run_in_thread(sender)
        seen = []
        while True:
            packet = codec.decode(b.recvfrom(blksize + 100)[0])
            assert type(packet) is codec.Data
            seen.append((packet.block, bytes(packet.payload)))
            if len(seen) in (3, 4):
                continue  # as if the second window were lost: no ACK, the sender's timeout resends it
            if packet.block % 2 == 0 or len(packet.payload) < blksize:
                b.sendto(codec.encode_ack(packet.block), a.getsockname())
            if len(packet.payload) < blksize:
                break
        assert future.result(30) == engine.DONE
        assert sender.retransmissions == 2
        sender.close()
    assert [block for block, _ in seen] == [1, 2, 3, 4, 3, 4]
    assert seen[2] == seen[4] and seen[3] == seen[5]
    assert b"".join(payload for _, payload in seen[:2] + seen[4:]) == data


@pytest.mark.parametrize("guard", [False, True])
def test_the_first_window_guard_is_the_servers_choice(pair, tmp_path, guard):
    """A peer that never ACKs a DATA block: with guard_first_window (what the server asks for:
    a forged request must not get a window per retry) the window goes again whole once, then
    its first block alone; without it (the client chose its server) every retry is whole."""
    a, b = pair
    fill(str(tmp_path / "src.bin"), 512 * 20)
    b.settimeout(1.0)  # the sender gives up 0.7 s after it starts
    with open(tmp_path / "src.bin", "rb") as src:
        sender = engine.Session(engine.SENDER, a, src.fileno(), b.getsockname(), blksize=512, windowsize=4,
                                timeout=0.1, retries=2, max_backoff=1.0, guard_first_window=guard)
        future = _run_in_thread(sender)
        blocks = []
        while len(blocks) < 16:
            try:
                blocks.append(codec.decode(b.recvfrom(1000)[0]).block)
            except socket.timeout:
                break
        assert future.result(30) == engine.TIMEOUT
        sender.close()
    expected = [1, 2, 3, 4] * 3 if not guard else [1, 2, 3, 4, 1, 2, 3, 4, 1]
    assert blocks == expected


def test_the_compiled_sender_splices_big_blocks(tmp_path, implementation, impl_env):
    """Observable with strace: splice() carries a window's blocks, and zero_copy=False turns it off."""
    if implementation != "c":
        pytest.skip("the splice path is the compiled engine's; the twin always reads")
    strace = require_tool("strace")
    if subprocess.run([strace, "-f", "-o", "/dev/null", "true"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("strace cannot trace here (ptrace refused)")
    fill(str(tmp_path / "src.bin"), 10 * 65464 + 5, seed=13)
    script = tmp_path / "send.py"
    script.write_text(SPLICE_SCRIPT)
    counts = {}
    for zero_copy in ("1", "0"):
        trace = tmp_path / f"trace-{zero_copy}.txt"
        r = subprocess.run([strace, "-f", "-e", "trace=splice,sendmmsg", "-o", str(trace), sys.executable, str(script),
                            str(tmp_path / "src.bin"), zero_copy], capture_output=True, timeout=60, env=impl_env)
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout.decode().split() == ["ok", str(10 * 65464 + 5)]
        text = trace.read_text()
        counts[zero_copy] = (text.count("splice("), text.count("sendmmsg("))
    # 11 blocks: file -> pipe and pipe -> socket for each block with a payload; pread() and one
    # sendmmsg() per window of 4 without
    assert counts["1"][0] >= 2 * 11 - 2 and counts["1"][1] == 0
    assert counts["0"] == (0, counts["0"][1]) and counts["0"][1] >= 3


def test_a_block_the_kernel_refuses_for_fragments_is_rebuilt_and_splice_stays_on(tmp_path, implementation, impl_env):
    """A block's copied head sometimes straddles two of the kernel's fragment pages: with 16 pages
    spliced after it the datagram needs 18 fragments, and the kernel refuses it (EMSGSIZE).  The
    block goes again with 15 pages spliced, and the transfer stays on the splice path.

    The copied heads of blocksize 65464 grow by 72 bytes a block (4+72k bytes for block k).  The
    kernel starts its fragment page (32 KiB) over once every datagram on it has been read, so the
    receiver here reads a window only after all of it has arrived: windows of 16 blocks from the
    33rd block on take 46 KiB and more of heads, and the 64 blocks cross page ends three times.
    (Before Linux 6.5 the kernel sent a splice page by page: the first refusal then turns the
    16-page attempt off, and the rest of that transfer reads, as asserted there.)"""
    if implementation != "c":
        pytest.skip("the splice path is the compiled engine's; the twin always reads")
    strace = require_tool("strace")
    if subprocess.run([strace, "-f", "-o", "/dev/null", "true"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("strace cannot trace here (ptrace refused)")
    size = 64 * 65464 + 3
    data = fill(str(tmp_path / "src.bin"), size, seed=14)
    script = tmp_path / "send.py"
    script.write_text(WINDOW_AT_ONCE_SCRIPT)
    trace = tmp_path / "trace.txt"
    r = subprocess.run([strace, "-f", "-e", "trace=splice,sendmmsg", "-o", str(trace), sys.executable, str(script),
                        str(tmp_path / "src.bin"), str(tmp_path / "dst.bin")], capture_output=True, timeout=120,
                       env=impl_env)
    if r.returncode == 3:
        pytest.skip(r.stdout.decode().strip())
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["ok", str(size)]
    assert (tmp_path / "dst.bin").read_bytes() == data
    text = trace.read_text()
    refused = text.count("= -1 EMSGSIZE")
    if tuple(int(x) for x in platform.release().split(".")[:2] if x.isdigit()) >= (6, 5):
        assert refused >= 1, "no head straddled a fragment page: the test no longer covers the rebuild"
        assert text.count("sendmmsg(") == 0  # every block went by splice, the refused ones too
    else:
        assert refused + text.count("sendmmsg(") >= 1


WINDOW_AT_ONCE_SCRIPT = r"""
import socket, sys, threading, time
from fastnet.tftp import codec, engine
path, out_path = sys.argv[1], sys.argv[2]
blksize, window = 65464, 16
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
try:
    b.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root): past net.core.rmem_max
except OSError:
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
if b.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < window * 160 * 1024:
    print("a window of 16 big blocks does not fit this receive buffer (net.core.rmem_max)")
    sys.exit(3)
with open(path, "rb") as src:
    s = engine.Session(engine.SENDER, a, src.fileno(), b.getsockname(), blksize=blksize, windowsize=window,
                       timeout=5.0, retries=3)
    out = []
    t = threading.Thread(target=lambda: out.append(s.run()))
    t.start()
    got, expected, done, deadline = [], 1, False, time.monotonic() + 60
    while not done and time.monotonic() < deadline:
        time.sleep(0.03)  # the window arrives whole before any of it is read
        while True:
            try:
                packet = codec.decode(b.recv(blksize + 4, socket.MSG_DONTWAIT))
            except BlockingIOError:
                break
            if type(packet) is codec.Data and packet.block == expected & 0xFFFF:
                got.append(bytes(packet.payload))
                expected += 1
                done = len(packet.payload) < blksize
        b.sendto(codec.encode_ack((expected - 1) & 0xFFFF), a.getsockname())
    t.join(30)
    assert out == [engine.DONE], out
with open(out_path, "wb") as f:
    f.write(b"".join(got))
print("ok", sum(map(len, got)))
"""


SPLICE_SCRIPT = r"""
import socket, sys, threading
from fastnet.tftp import engine
path, zero_copy = sys.argv[1], sys.argv[2] == "1"
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
with open(path, "rb") as src, open("/dev/null", "wb") as dst:
    s = engine.Session(engine.SENDER, a, src.fileno(), b.getsockname(), blksize=65464, windowsize=4, timeout=5.0,
                       retries=3, zero_copy=zero_copy)
    r = engine.Session(engine.RECEIVER, b, dst.fileno(), a.getsockname(), blksize=65464, windowsize=4, timeout=5.0,
                       retries=3, ack_last=True)
    out = []
    t = threading.Thread(target=lambda: out.append(s.run()))
    t.start()
    assert r.run() == engine.DONE
    t.join(30)
    assert out == [engine.DONE]
    print("ok", r.bytes)
"""



def test_standalone_c_engine_under_sanitizers(tmp_path, implementation):
    """src_c/tftp_engine.c alone, under ASan and UBSan, against a lossy peer (every transfer must
    finish byte for byte), a hostile one (garbage, wrong blocks, oversized DATA, GSO bursts: a
    defined outcome, never a memory error) and a stranger (ERROR 5), and across the rollover."""
    if implementation != "c":
        pytest.skip("the standalone C engine involves no Python; once is enough")
    exe = build_sanitized(tmp_path, "test_tftp_engine.c", "tftp_engine.c", "tftp_codec.c")
    env = sanitized_env()
    env["TMPDIR"] = str(tmp_path)
    run = subprocess.run([exe, "300"], capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "ok: tftp engine, 300 rounds" in run.stdout
