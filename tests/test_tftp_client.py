"""fastnet.tftp.client: transfers against the fastnet server, scripted fake servers and a lossy path."""

from __future__ import annotations

import concurrent.futures
import errno
import io
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
from conftest import free_port, require_ipv6_loopback
from tftp_helpers import LossyProxy, RawPeer, fastnet_server, fill, leftovers

from fastnet.tftp import TftpProtocolError, TftpRefused, TftpRemoteError, TftpTimeout, client, codec


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "root"
    d.mkdir()
    return d


@pytest.fixture
def pool():
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        yield executor


SIZES = [0, 1, 511, 512, 1024, 5000]


@pytest.mark.parametrize("options", [{}, {"blksize": 1468}, {"blksize": 8, "windowsize": 3}, {"windowsize": 16}])
def test_download_and_upload_round_trip(root, tmp_path, options):
    with fastnet_server(str(root), allow_write=True) as server:
        for size in SIZES:
            data = fill(str(root / f"f{size}"), size, seed=size)
            out = tmp_path / f"out{size}"
            stats = client.download("127.0.0.1", f"f{size}", str(out), port=server.port, **options)
            assert out.read_bytes() == data
            assert stats.bytes == size
            blksize = options.get("blksize", 512)
            assert stats.blocks == size // blksize + 1  # an exact multiple ends with an empty DATA
            assert stats.options.get("tsize") == size
            up = client.upload("127.0.0.1", str(out), f"up{size}", port=server.port, **options)
            assert (root / f"up{size}").read_bytes() == data
            assert up.bytes == size and up.options.get("tsize") == size
            for name in ("blksize", "windowsize"):
                if name in options:
                    assert stats.options[name] == options[name] and up.options[name] == options[name]
    assert leftovers(str(root)) == [] and leftovers(str(tmp_path)) == []


@pytest.mark.parametrize("blksize,windowsize", [(65464, 16), (32768, 4), (65464, 1)])
def test_big_blocks_round_trip_between_fastnet_client_and_server(root, tmp_path, blksize, windowsize):
    # windowed, the compiled sender (server on download, client on upload) splices the blocks
    # from the page cache; lockstep reads them: the files must come out the same either way
    size = 3 * 1024 * 1024 + 12345
    data = fill(str(root / "big.bin"), size, seed=21)
    with fastnet_server(str(root), allow_write=True) as server:
        stats = client.download("127.0.0.1", "big.bin", str(tmp_path / "got.bin"), port=server.port,
                                blksize=blksize, windowsize=windowsize)
        assert (tmp_path / "got.bin").read_bytes() == data
        up = client.upload("127.0.0.1", str(tmp_path / "got.bin"), "up.bin", port=server.port,
                           blksize=blksize, windowsize=windowsize)
    assert (root / "up.bin").read_bytes() == data
    assert stats.bytes == up.bytes == size and stats.blocks == size // blksize + 1
    assert stats.options.get("blksize") == blksize
    # Each receiver's socket queues a whole window (the window is lowered to what fits under
    # net.core.rmem_max): on loopback nothing is lost, either way.  (The server used to keep the
    # default 208 KiB for uploads, and 16 x 64 KiB lost the tail of every window.)
    assert stats.windowsize == up.windowsize <= windowsize
    assert stats.retransmissions == 0 and up.retransmissions == 0
    assert leftovers(str(root)) == [] and leftovers(str(tmp_path)) == []


def test_netascii_round_trip_converts_line_ends(root, tmp_path):
    text = b"line one\nline two\r\nbare CR\r here\n\n\r"
    (root / "t.txt").write_bytes(text)
    with fastnet_server(str(root), allow_write=True) as server, RawPeer() as peer:
        out = tmp_path / "t.txt"
        client.download("127.0.0.1", "t.txt", str(out), port=server.port, mode="netascii")
        assert out.read_bytes() == text
        client.upload("127.0.0.1", str(out), "back.txt", port=server.port, mode="netascii", blksize=8)
        assert (root / "back.txt").read_bytes() == text
        # on the wire it is netascii
        peer.send(codec.encode_rrq("t.txt", "netascii"), server.port)
        packet, _ = peer.recv()
        assert packet.payload == codec.to_netascii(text)


def test_local_may_be_a_file_object_and_progress_is_reported(root):
    data = fill(str(root / "f.bin"), 100_000)
    seen = []
    with fastnet_server(str(root), allow_write=True) as server:
        sink = io.BytesIO()
        stats = client.download("127.0.0.1", "f.bin", sink, port=server.port, progress=lambda s: seen.append(s.bytes))
        assert sink.getvalue() == data
        assert seen and seen[-1] == len(data) and seen == sorted(seen)
        assert stats.total == len(data)
        client.upload("127.0.0.1", io.BytesIO(data), "copy.bin", port=server.port)
    assert (root / "copy.bin").read_bytes() == data


def test_failed_download_leaves_no_partial_file_and_keeps_the_old_one(root, tmp_path):
    target = tmp_path / "keep.bin"
    target.write_bytes(b"precious")
    with fastnet_server(str(root)) as server:
        with pytest.raises(TftpRemoteError) as info:
            client.download("127.0.0.1", "absent", str(target), port=server.port)
    assert info.value.code == 1 and "file not found" in str(info.value)
    assert target.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["keep.bin", "root"]


def test_a_download_to_a_symlink_replaces_its_target_and_keeps_the_link(root, tmp_path):
    data = fill(str(root / "f.bin"), 5000)
    (tmp_path / "real.bin").write_bytes(b"old")
    os.symlink("real.bin", tmp_path / "link.bin")
    os.symlink("new.bin", tmp_path / "dangling.bin")
    with fastnet_server(str(root)) as server:
        client.download("127.0.0.1", "f.bin", str(tmp_path / "link.bin"), port=server.port)
        client.download("127.0.0.1", "f.bin", str(tmp_path / "dangling.bin"), port=server.port)
    assert os.readlink(tmp_path / "link.bin") == "real.bin" and (tmp_path / "real.bin").read_bytes() == data
    assert os.readlink(tmp_path / "dangling.bin") == "new.bin" and (tmp_path / "new.bin").read_bytes() == data
    assert leftovers(str(tmp_path)) == []


@pytest.mark.parametrize("mode", ["octet", "netascii"])
def test_a_download_to_a_fifo_writes_into_it_and_leaves_it_a_fifo(root, tmp_path, pool, mode):
    # a path that is no regular file (a FIFO here, /dev/null or a terminal device elsewhere) is
    # written as it is: renaming a temporary file onto it would replace the device with a file
    data = fill(str(root / "f.bin"), 70000).replace(b"\r", b"").replace(b"\n", b"")
    (root / "f.bin").write_bytes(data)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def drain(seconds=20.0):
        # opened non-blocking, so that it never hangs on a FIFO nobody opens for writing
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        got, deadline = [], time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    chunk = None
                if chunk:
                    got.append(chunk)
                elif chunk == b"" and got:  # the writer closed it
                    break
                else:
                    time.sleep(0.005)
        finally:
            os.close(fd)
        return b"".join(got)

    reader = pool.submit(drain)
    with fastnet_server(str(root)) as server:
        client.download("127.0.0.1", "f.bin", str(fifo), port=server.port, mode=mode, timeout=2)
    assert reader.result(10) == data
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and sorted(os.listdir(tmp_path)) == ["fifo", "root"]


def test_file_objects_and_arguments_are_checked_before_anything_is_sent(tmp_path):
    # a mistake in the call is an exception at once, with nothing sent (a silent peer would see
    # a request) and nothing left behind; a text file would get bytes under its encoder
    with RawPeer() as silent:
        port = silent.sock.getsockname()[1]
        text = open(tmp_path / "t.txt", "w+")
        closed = io.BytesIO()
        closed.close()
        read_only = open(tmp_path / "t.txt", "rb")
        write_only = open(tmp_path / "w.bin", "wb")
        try:
            calls = {
                "download to a text file": (lambda: client.download("127.0.0.1", "f", text, port=port), TypeError),
                "upload from a text file": (lambda: client.upload("127.0.0.1", text, "f", port=port), TypeError),
                "download to a closed file": (lambda: client.download("127.0.0.1", "f", closed, port=port), ValueError),
                "upload from a closed file": (lambda: client.upload("127.0.0.1", closed, "f", port=port), ValueError),
                "download to a read-only file":
                    (lambda: client.download("127.0.0.1", "f", read_only, port=port), io.UnsupportedOperation),
                "upload from a write-only file":
                    (lambda: client.upload("127.0.0.1", write_only, "f", port=port), io.UnsupportedOperation),
                "port 0": (lambda: client.download("127.0.0.1", "f", io.BytesIO(), port=0), ValueError),
                "port 65536 + port": (lambda: client.download("127.0.0.1", "f", io.BytesIO(), port=65536 + port),
                                      ValueError),
                "an endless timeout": (lambda: client.download("127.0.0.1", "f", io.BytesIO(), port=port,
                                                               timeout=float("inf")), ValueError),
            }
            raised = {}
            for what, (call, expected) in calls.items():
                with pytest.raises(expected) as info:
                    call()
                raised[what] = str(info.value)
        finally:
            for f in (text, read_only, write_only):
                f.close()
        assert silent.quiet(0.3) == [], raised
    assert raised["port 65536 + port"] == f"port must be 1..65535, not {65536 + port}"
    assert sorted(os.listdir(tmp_path)) == ["t.txt", "w.bin"]


def test_library_takes_bracketed_ipv6_literals_bytes_paths_and_the_largest_window(root, tmp_path):
    require_ipv6_loopback()
    data = fill(str(root / "f.bin"), 70000)
    with fastnet_server(str(root), host="::1", allow_write=True) as server:
        stats = client.download("[::1]", "f.bin", os.fsencode(tmp_path / "got.bin"), port=server.port)
        assert stats.peer[0] == "::1" and (tmp_path / "got.bin").read_bytes() == data
        # the largest block and window both sides allow: the window is cut to the receive buffer
        # (asking the kernel for 65535 x 128 KiB overflowed setsockopt's int: a TypeError)
        stats = client.download("::1", "f.bin", str(tmp_path / "big.bin"), port=server.port,
                                blksize=codec.MAX_BLKSIZE, windowsize=65535)
        assert (tmp_path / "big.bin").read_bytes() == data and stats.options["blksize"] == codec.MAX_BLKSIZE
        client.upload("[::1]", os.fsencode(tmp_path / "got.bin"), "up.bin", port=server.port)
    assert (root / "up.bin").read_bytes() == data


@pytest.mark.parametrize("mode", ["octet", "netascii"])
def test_new_files_get_the_umask_mode_and_replaced_files_keep_theirs(root, tmp_path, mode):
    # downloads and uploads go through a temporary file, which mkstemp() makes 0600; the file
    # renamed into place must not be: 0666 less the umask when new, the old mode when replacing
    def perms(path):
        return stat.S_IMODE(os.stat(path).st_mode)

    (root / "f.txt").write_bytes(b"line one\nline two\n" * 200)
    before = os.umask(0o027)
    try:
        with fastnet_server(str(root), allow_write=True, allow_overwrite=True) as server:
            new = tmp_path / "new.txt"
            client.download("127.0.0.1", "f.txt", str(new), port=server.port, mode=mode)
            assert perms(new) == 0o640
            kept = tmp_path / "kept.txt"
            kept.write_bytes(b"old")
            kept.chmod(0o604)
            client.download("127.0.0.1", "f.txt", str(kept), port=server.port, mode=mode)
            assert kept.read_bytes() == new.read_bytes() != b"old" and perms(kept) == 0o604

            client.upload("127.0.0.1", str(new), "up.txt", port=server.port, mode=mode)
            assert perms(root / "up.txt") == 0o640
            (root / "f.txt").chmod(0o600)
            client.upload("127.0.0.1", str(new), "f.txt", port=server.port, mode=mode)
            assert perms(root / "f.txt") == 0o600
    finally:
        os.umask(before)
    assert leftovers(str(root)) == [] and leftovers(str(tmp_path)) == []


def test_download_that_stalls_times_out_without_leftovers(tmp_path, pool):
    target = tmp_path / "keep.bin"
    target.write_bytes(b"precious")
    with FakeServer() as server:
        future = pool.submit(client.download, "127.0.0.1", "f", str(target), port=server.port,
                             timeout=0.05, retries=2)
        server.request()
        server.send(codec.encode_data(1, b"a" * 512))  # one full block, then silence
        acks = [p for p, _ in server.tid.quiet(0.5)]
        with pytest.raises(TftpTimeout):
            future.result(10)
    assert acks[0] == codec.Ack(1) and type(acks[-1]) is codec.Error  # the client says goodbye
    assert target.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["keep.bin"]


def test_no_answer_is_a_timeout_after_the_retries(tmp_path, pool):
    with RawPeer() as silent:
        future = pool.submit(client.download, "127.0.0.1", "f", str(tmp_path / "f"),
                             port=silent.sock.getsockname()[1], timeout=0.02, retries=3)
        requests = [p for p, _ in silent.quiet(1.0)]
        with pytest.raises(TftpTimeout) as info:
            future.result(10)
    assert len(requests) == 4 and all(type(p) is codec.ReadRequest for p in requests)
    assert isinstance(info.value, TimeoutError) and info.value.errno == errno.ETIMEDOUT
    assert os.listdir(tmp_path) == []


class FakeServer:
    """A scripted server: a RawPeer on the request port and another one as the transfer's TID."""

    def __init__(self) -> None:
        self.listen = RawPeer()
        self.tid = RawPeer()
        self.port = self.listen.sock.getsockname()[1]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.listen.sock.close()
        self.tid.sock.close()

    def request(self):
        self.listen.sock.settimeout(5)
        data, addr = self.listen.sock.recvfrom(1000)
        self.client = addr
        return codec.decode(data)

    def send(self, packet: bytes, via=None) -> None:
        (via or self.tid).sock.sendto(packet, self.client)

    def recv(self, timeout: float = 5.0):
        return self.tid.recv(timeout)[0]


def test_client_checks_the_tid(tmp_path, pool):
    out = tmp_path / "f"
    with FakeServer() as server, RawPeer() as impostor:
        future = pool.submit(client.download, "127.0.0.1", "f", str(out), port=server.port, timeout=2, tsize=False)
        assert server.request() == codec.ReadRequest("f", "octet", {})
        server.send(codec.encode_data(1, b"a" * 512))
        assert server.recv() == codec.Ack(1)
        impostor.sock.sendto(codec.encode_data(2, b"EVIL"), server.client)
        error, _ = impostor.recv()
        assert type(error) is codec.Error and error.code == 5
        server.send(codec.encode_data(2, b"good"))
        assert server.recv() == codec.Ack(2)
        stats = future.result(10)
    assert out.read_bytes() == b"a" * 512 + b"good" and stats.blocks == 2


INTERRUPTED_DOWNLOAD = r"""
import sys
from fastnet.tftp import client
port, out = int(sys.argv[1]), sys.argv[2]
try:
    client.download("127.0.0.1", "f", out, port=port, timeout=5, retries=3, tsize=False)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def test_ctrl_c_interrupts_a_download_at_once_and_leaves_no_file(tmp_path, impl_env):
    """SIGINT in the middle of a transfer, the server silent: the download stops within a moment
    (the compiled engine, which runs without the GIL, comes back to Python every tenth of a
    second for it), not after the 5 s timeout and its retries, and leaves nothing behind."""
    out = tmp_path / "dl" / "f"
    out.parent.mkdir()
    with FakeServer() as server:
        child = subprocess.Popen([sys.executable, "-c", INTERRUPTED_DOWNLOAD, str(server.port), str(out)],
                                 env=impl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert server.request() == codec.ReadRequest("f", "octet", {})
            for n in (1, 2, 3):
                server.send(codec.encode_data(n, bytes([n]) * 512))
                assert server.recv() == codec.Ack(n)
            time.sleep(0.3)  # the client waits for block 4: in the engine, where there is one
            sent = time.monotonic()
            child.send_signal(signal.SIGINT)
            stdout, stderr = child.communicate(timeout=15)
            took = time.monotonic() - sent
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        error = server.recv(2.0)  # RFC 1350: the client says it stops, the server need not retry
    assert child.returncode == 130 and stdout.strip() == "interrupted", stderr
    assert took < 2.0
    assert os.listdir(out.parent) == []
    assert type(error) is codec.Error and error.code == 0


FULL_DISK_DOWNLOAD = r"""
import resource, signal, sys
from fastnet.tftp import client
port, out = int(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
try:
    client.download("127.0.0.1", "f", out, port=port, timeout=5, retries=3, tsize=False)
except OSError as exc:
    print(exc.errno, flush=True)
    sys.exit(1)
"""


class _FullFile(io.BytesIO):
    """A file object whose disk fills up after 1000 bytes."""

    def write(self, data):
        if self.tell() + len(data) > 1000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


@pytest.mark.parametrize("where", ["file object", "file in the engine"])
def test_a_download_the_disk_cannot_hold_ends_with_error_3_to_the_server(tmp_path, pool, impl_env, where):
    """A local failure is the client's to report (RFC 1350): ERROR 3 on a full disk, so that the
    server stops at once rather than retrying into a closed port."""
    out = tmp_path / "dl" / "f"
    out.parent.mkdir()
    with FakeServer() as server:
        if where == "file object":  # Python's own loop writes it
            future = pool.submit(client.download, "127.0.0.1", "f", _FullFile(), port=server.port, timeout=5,
                                 tsize=False)
        else:  # a path: the engine takes over after the first block (the compiled one writes in C)
            child = subprocess.Popen([sys.executable, "-c", FULL_DISK_DOWNLOAD, str(server.port), str(out)],
                                     env=impl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert server.request() == codec.ReadRequest("f", "octet", {})
            answers = []
            for n, size in ((1, 512), (2, 512), (3, 10)):  # 1034 bytes, the last block short
                server.send(codec.encode_data(n, bytes([n]) * size))
                answers.append(server.recv())
                if type(answers[-1]) is codec.Error:
                    break
        finally:
            if where == "file object":
                with pytest.raises(OSError) as failure:
                    future.result(10)
                failed_with = failure.value.errno
            else:
                stdout, stderr = child.communicate(timeout=15)
                failed_with = int(stdout) if stdout.strip() else stderr
    # the error comes with the first write that fails (the engine keeps small blocks until the end)
    # and never after the final ACK, which would tell the server that all was well
    assert answers[0] == codec.Ack(1) and codec.Ack(3) not in answers
    assert answers[-1] == codec.Error(3, "disk full or allocation exceeded")
    assert failed_with in (errno.ENOSPC, errno.EFBIG)
    assert os.listdir(out.parent) == []


def test_a_download_larger_than_the_free_space_is_refused_before_its_first_block(tmp_path, pool):
    # the server's OACK says how large the file is (tsize): more than the disk holds is the same
    # OSError as a disk that fills up during the transfer, and the server hears ERROR 3 at once
    out = tmp_path / "dl" / "f"
    out.parent.mkdir()
    with FakeServer() as server:
        future = pool.submit(client.download, "127.0.0.1", "f", str(out), port=server.port, timeout=5)
        assert server.request() == codec.ReadRequest("f", "octet", {"tsize": "0"})
        server.send(codec.encode_oack({"tsize": 10**18}))
        answer = server.recv()
        with pytest.raises(OSError) as failure:
            future.result(10)
    assert answer == codec.Error(3, "disk full or allocation exceeded")
    assert failure.value.errno == errno.ENOSPC and failure.value.filename == str(out.parent)
    assert "not enough free space for 1000000000000000000 bytes" in str(failure.value)
    assert os.listdir(out.parent) == []


class _FailingReader(io.BytesIO):
    """A file object whose device fails after its first 512 bytes."""

    def readinto(self, buffer):
        if self.tell() >= 512:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return super().readinto(memoryview(buffer)[:512])


def test_an_upload_that_cannot_read_its_file_ends_with_an_error_to_the_server(pool):
    with FakeServer() as server:
        future = pool.submit(client.upload, "127.0.0.1", _FailingReader(b"x" * 2000), "f", port=server.port,
                             timeout=5, tsize=False)
        assert server.request() == codec.WriteRequest("f", "octet", {})
        server.send(codec.encode_ack(0))
        assert server.recv() == codec.Data(1, b"x" * 512)
        server.send(codec.encode_ack(1))
        error = server.recv()
        with pytest.raises(OSError) as failure:
            future.result(10)
    assert failure.value.errno == errno.EIO
    assert type(error) is codec.Error and error.code == 0 and "Input/output error" in error.message


@pytest.mark.parametrize("block", [1, 3])  # in Python's loop; in the engine (which has the file after block 1)
def test_a_data_longer_than_the_block_size_ends_the_download_with_error_4(tmp_path, pool, block):
    out = tmp_path / "dl" / "f"
    out.parent.mkdir()
    with FakeServer() as server:
        future = pool.submit(client.download, "127.0.0.1", "f", str(out), port=server.port, timeout=5, tsize=False)
        assert server.request() == codec.ReadRequest("f", "octet", {})
        for n in range(1, block):
            server.send(codec.encode_data(n, b"f" * 512))
            assert server.recv() == codec.Ack(n)
        server.send(codec.encode_data(block, b"L" * 600))
        answer = server.recv()
        with pytest.raises(TftpProtocolError, match=f"DATA block {block} longer than the block size"):
            future.result(10)
    assert type(answer) is codec.Error and answer.code == 4
    assert os.listdir(out.parent) == []


def _download_to_the_last_ack(server: "FakeServer", pool, out, full_blocks: int, via=None, **kwargs):
    """A download from *server* (answering from *via*, its TID by default) up to the client's
    final ACK: (last block, the client's dally)."""
    via = via or server.tid
    before = set(client._dallying)
    future = pool.submit(client.download, "127.0.0.1", "f", str(out), port=server.port, tsize=False, **kwargs)
    server.request()
    for n in range(1, full_blocks + 1):
        server.send(codec.encode_data(n, bytes([n]) * 512), via)
        assert via.recv()[0] == codec.Ack(n)
    last = full_blocks + 1
    server.send(codec.encode_data(last, b"end"), via)
    assert via.recv()[0] == codec.Ack(last)
    assert future.result(10).blocks == last
    (dally,) = set(client._dallying) - before
    return last, dally


@pytest.mark.parametrize("full_blocks", [0, 2])  # the last block in Python's loop, in the engine's
def test_dally_outlasts_a_server_whose_final_acks_keep_getting_lost(tmp_path, pool, full_blocks):
    # The download is done and returned; its final ACK is lost again and again, and the server
    # resends its last block after longer and longer waits.  Each repeat is ACKed and doubles
    # the dally (2 x timeout = 0.5 s at first), up to the client's retries (one here).
    out = tmp_path / "f"
    with FakeServer() as server:
        last, dally = _download_to_the_last_ack(server, pool, out, full_blocks, timeout=0.25, retries=1)
        answered = []
        # Repeats at 0.3 s (the dally would end at 0.5: renewed to 0.3 + 1.0), 1.1 s (no renewal
        # left: the end stays at 1.3; unbounded it would be 1.1 + 2.0) and 2.0 s (over).  While
        # it lasts, the client also sends the final ACK unasked (at 0.03, 0.09, 0.22, 0.47, 0.97
        # and 1.97 s): those are read away before each repeat, whose answer comes within 0.1 s.
        for wait in (0.3, 0.8, 0.9):
            time.sleep(wait)
            server.tid.quiet(0.01)
            server.send(codec.encode_data(last, b"end"))
            try:
                answered.append(server.recv(timeout=0.1))
            except socket.timeout:
                answered.append(None)
        dally.join(5)
    assert answered == [codec.Ack(last), codec.Ack(last), None]
    assert out.read_bytes() == b"".join(bytes([n]) * 512 for n in range(1, last)) + b"end"


@pytest.mark.parametrize("full_blocks", [0, 2])
def test_dally_resends_the_final_ack_unasked_and_ends_once_the_server_is_gone(tmp_path, pool, full_blocks):
    # Here the server missed the final ACK: the copy the dallying client sends within 50 ms reaches
    # it, long before the server's own retransmission would (timeout 5 s).  The server then closes
    # its port; the next copy meets the closed port, and the dally ends there instead of after
    # 2 x timeout (10 s).
    with FakeServer() as server:
        last, dally = _download_to_the_last_ack(server, pool, tmp_path / "f", full_blocks, timeout=5.0)
        assert server.recv(timeout=1.0) == codec.Ack(last)
        server.tid.sock.close()
        dally.join(3.0)
        assert not dally.is_alive()


def test_no_unasked_final_ack_to_a_server_that_answers_from_its_request_port(tmp_path, pool):
    # busybox tftpd under udpsvd answers from the port the request went to, where udpsvd listens
    # again at once: a copy of the final ACK there would be taken for a new request
    with FakeServer() as server:
        last, dally = _download_to_the_last_ack(server, pool, tmp_path / "f", 0, via=server.listen, timeout=0.25)
        assert server.listen.quiet(0.3) == []
        server.send(codec.encode_data(last, b"end"), server.listen)  # a repeat is answered all the same
        assert server.listen.recv(1.0)[0] == codec.Ack(last)
        dally.join(5)
        assert not dally.is_alive()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_port_where_nothing_listens_is_refused_at_once(tmp_path, host):
    # the kernel answers ICMP port unreachable: that is the answer, not a reason to wait through
    # every retry (a timeout of 5 s and one retry would take 15 s and raise TftpTimeout)
    if ":" in host:
        require_ipv6_loopback()
    port = free_port(socket.SOCK_DGRAM, host)
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 700)
    for call in (lambda: client.download(host, "f", str(tmp_path / "f"), port=port, timeout=5, retries=1),
                 lambda: client.upload(host, str(src), "f", port=port, timeout=5, retries=1)):
        with pytest.raises(TftpRefused) as info:
            call()
        assert isinstance(info.value, ConnectionRefusedError) and info.value.errno == errno.ECONNREFUSED
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        assert str(info.value) == f"no TFTP server at {shown}: connection refused"
    assert sorted(os.listdir(tmp_path)) == ["src.bin"]


@pytest.mark.parametrize("target", ["path", "object"])
def test_a_stranger_whose_port_is_closed_does_not_end_the_transfer(tmp_path, pool, target):
    # the client answers a stranger with ERROR 5; the stranger's port is closed by then, so an
    # ICMP error comes back to the client's socket, which must not end the download
    out = tmp_path / "f" if target == "path" else io.BytesIO()
    with FakeServer() as server:
        future = pool.submit(client.download, "127.0.0.1", "f", out if target == "object" else str(out),
                             port=server.port, timeout=2, tsize=False)
        server.request()
        server.send(codec.encode_data(1, b"a" * 512))
        assert server.recv() == codec.Ack(1)
        for _ in range(3):
            with RawPeer() as stranger:
                stranger.sock.sendto(codec.encode_data(2, b"EVIL"), server.client)
            # closed: the client's ERROR 5 meets a closed port
        server.send(codec.encode_data(2, b"good"))
        assert server.recv() == codec.Ack(2)
        stats = future.result(10)
    got = out.read_bytes() if target == "path" else out.getvalue()
    assert got == b"a" * 512 + b"good" and stats.blocks == 2 and stats.retransmissions == 0


@pytest.mark.parametrize("target", ["path", "object"])
@pytest.mark.parametrize("direction", ["download", "upload"])
def test_a_server_that_goes_away_mid_transfer_fails_it_at_once(tmp_path, pool, direction, target):
    # the server's transfer port closes after the first block (the server was killed, say): the
    # client's next packet draws a port unreachable, and the transfer fails then -- not after
    # every retry (timeout 1 s, 5 retries: about 30 s, then TftpTimeout)
    out = tmp_path / "f"
    src = tmp_path / "src.bin"
    src.write_bytes(b"u" * 5000)
    with FakeServer() as server:
        if direction == "download":
            local = str(out) if target == "path" else io.BytesIO()
            future = pool.submit(client.download, "127.0.0.1", "f", local, port=server.port, tsize=False)
            server.request()
            server.send(codec.encode_data(1, b"d" * 512))
            assert server.recv() == codec.Ack(1)
        else:
            local = str(src) if target == "path" else io.BytesIO(src.read_bytes())
            future = pool.submit(client.upload, "127.0.0.1", local, "f", port=server.port, tsize=False)
            server.request()
            server.send(codec.encode_ack(0))
            assert server.recv().block == 1
        tid = server.tid.sock.getsockname()[1]
        server.tid.sock.close()
        with pytest.raises(TftpRefused) as info:
            future.result(10)
    assert str(info.value) == f"the TFTP server at 127.0.0.1:{tid} went away mid-transfer: connection refused"
    assert sorted(os.listdir(tmp_path)) == ["src.bin"]  # no partial download


@pytest.mark.parametrize("target", ["path", "object", "netascii"])  # the engine; the per-packet path twice
@pytest.mark.parametrize("direction", ["download", "upload"])
def test_a_server_that_says_goodbye_then_closes_ends_the_transfer_on_its_error(tmp_path, pool, direction, target):
    # a server shutting down sends ERROR and closes its transfer port; the client's packet that
    # crossed the ERROR draws a port unreachable, reported before the ERROR queued behind it was
    # read: the transfer must end on the server's ERROR, not as "the server went away"
    src = tmp_path / "src.bin"
    src.write_bytes(b"u" * 5000)
    mode = "netascii" if target == "netascii" else "octet"
    with FakeServer() as server:
        if direction == "download":
            local = io.BytesIO() if target == "object" else str(tmp_path / "f")
            future = pool.submit(client.download, "127.0.0.1", "f", local, port=server.port, tsize=False, mode=mode)
            server.request()
            server.send(codec.encode_data(1, b"d" * 512))
            assert server.recv() == codec.Ack(1)
            crossing = codec.encode_data(2, b"d" * 512)  # answered with an ACK into the closed port
        else:
            local = io.BytesIO(src.read_bytes()) if target == "object" else str(src)
            future = pool.submit(client.upload, "127.0.0.1", local, "f", port=server.port, tsize=False, mode=mode)
            server.request()
            server.send(codec.encode_ack(0))
            assert server.recv().block == 1
            crossing = codec.encode_ack(1)  # answered with DATA 2 into the closed port
        server.send(crossing)
        server.send(codec.encode_error(0, "server shutting down"))
        server.tid.sock.close()
        with pytest.raises(TftpRemoteError) as info:
            future.result(10)
    assert info.value.code == 0 and info.value.message == "server shutting down"
    assert sorted(os.listdir(tmp_path)) == ["src.bin"]  # no partial download


def test_server_ignoring_options_means_512_byte_lockstep(tmp_path, pool):
    out = tmp_path / "f"
    with FakeServer() as server:
        future = pool.submit(client.download, "127.0.0.1", "f", str(out), port=server.port, blksize=1468, windowsize=8)
        request = server.request()
        assert request.options["blksize"] == "1468" and "windowsize" in request.options
        server.send(codec.encode_data(1, b"x" * 512))
        assert server.recv() == codec.Ack(1)
        server.send(codec.encode_data(2, b""))
        assert server.recv() == codec.Ack(2)
        stats = future.result(10)
    assert stats.options == {} and stats.blksize == 512 and out.read_bytes() == b"x" * 512


@pytest.mark.parametrize("oack", [{"blksize": "2000"}, {"blksize": "7"}, {"color": "blue"}, {"windowsize": "abc"}])
def test_bad_oack_is_refused_with_error_8(tmp_path, pool, oack):
    with FakeServer() as server:
        future = pool.submit(client.download, "127.0.0.1", "f", str(tmp_path / "f"), port=server.port,
                             blksize=1468, windowsize=4)
        server.request()
        server.send(codec.encode_oack(oack))
        error = server.recv()
        with pytest.raises(TftpProtocolError):
            future.result(10)
    assert type(error) is codec.Error and error.code == 8
    assert os.listdir(tmp_path) == []


def test_upload_duplicate_acks_never_cause_duplicate_data(tmp_path, pool):
    data = fill(str(tmp_path / "f"), 512 * 6 + 7)
    with FakeServer() as server:
        future = pool.submit(client.upload, "127.0.0.1", str(tmp_path / "f"), "f", port=server.port, timeout=5.0)
        assert type(server.request()) is codec.WriteRequest
        server.send(codec.encode_ack(0))
        got = []
        while True:
            packet = server.recv()
            got.append(packet)
            server.send(codec.encode_ack(packet.block))
            server.send(codec.encode_ack(packet.block))
            if len(packet.payload) < 512:
                break
        stats = future.result(10)
        assert server.tid.quiet(0.3) == []
    assert [p.block for p in got] == list(range(1, 8))
    assert b"".join(p.payload for p in got) == data
    assert stats.retransmissions == 0


@pytest.mark.parametrize("options", [{}, {"blksize": 1024, "windowsize": 8}, {"blksize": 65464, "windowsize": 4}],
                         ids=["lockstep", "windowed", "windowed-big-blocks"])
def test_lossy_path_transfers_finish_byte_identical(root, tmp_path, options):
    size = 120_000 if not options else 400_000 if options["blksize"] < 32768 else 1_500_000
    data = fill(str(root / "f.bin"), size, seed=7)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    kwargs = dict(timeout=0.03, retries=12, **options)
    with fastnet_server(str(root), allow_write=True, timeout=0.03, retries=12) as server:
        with LossyProxy(("127.0.0.1", server.port), loss=0.10, duplicate=0.03, reorder=0.03, seed=11) as proxy:
            stats = client.download("127.0.0.1", "f.bin", str(tmp_path / "got.bin"), port=proxy.port, **kwargs)
            assert (tmp_path / "got.bin").read_bytes() == data
        with LossyProxy(("127.0.0.1", server.port), loss=0.10, duplicate=0.03, reorder=0.03, seed=12) as proxy2:
            up = client.upload("127.0.0.1", str(src), "up.bin", port=proxy2.port, **kwargs)
    assert (root / "up.bin").read_bytes() == data
    assert proxy.dropped > 0 and proxy2.dropped > 0
    assert stats.retransmissions > 0 and up.retransmissions > 0
