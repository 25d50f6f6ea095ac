"""fastnet.tftp.server: the safety rules and the protocol details, with raw sockets and the client."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
from conftest import peer_missing, require_tool
from tftp_helpers import RawPeer, fastnet_server, fill, leftovers

from fastnet.tftp import TftpRemoteError, client, codec


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "root"
    d.mkdir()
    return d


def fetch_error(port: int, name: str, **kwargs) -> TftpRemoteError:
    with pytest.raises(TftpRemoteError) as info:
        client.download("127.0.0.1", name, _io(), port=port, timeout=0.5, retries=2, **kwargs)
    return info.value


class _io:
    """A throwaway binary sink (file objects are accepted as download targets)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b) -> int:
        self.data += b
        return len(b)

    def flush(self) -> None:
        pass


def get(port: int, name: str, **kwargs) -> bytes:
    sink = _io()
    client.download("127.0.0.1", name, sink, port=port, timeout=0.5, retries=3, **kwargs)
    return bytes(sink.data)


# ---------------------------------------------------------------------------- confinement


def test_parent_components_are_refused(root, tmp_path):
    (tmp_path / "secret").write_bytes(b"secret")
    (root / "sub").mkdir()
    with fastnet_server(str(root)) as server:
        for name in ("../secret", "sub/../../secret", "sub/../sub/../../secret", "/../secret", ".."):
            assert fetch_error(server.port, name).code == 2, name


def test_leading_slash_means_the_root_and_absolute_paths_inside_it_work(root):
    data = fill(str(root / "boot.img"), 3000)
    with fastnet_server(str(root)) as server:
        assert get(server.port, "/boot.img") == data
        assert get(server.port, str(root / "boot.img")) == data
        # an absolute path elsewhere is looked up under the root, where it does not exist
        assert fetch_error(server.port, "/etc/passwd").code == 1


def test_symlink_leaving_the_root_is_refused_but_one_inside_is_served(root, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    os.symlink(outside, root / "escape")
    os.symlink("/etc", root / "etc")
    data = fill(str(root / "real.bin"), 700)
    os.symlink("real.bin", root / "alias")
    with fastnet_server(str(root)) as server:
        assert fetch_error(server.port, "escape").code == 2
        assert fetch_error(server.port, "etc/hostname").code == 2
        assert get(server.port, "alias") == data


def _swap_for_symlink(path, to) -> None:
    """What someone who can write inside the root does between the server's check and its open:
    *path* moves aside (to *path*.old) and a symbolic link to *to* takes its name."""
    os.rename(path, str(path) + ".old")
    os.symlink(to, path)


def _lose_the_race(monkeypatch, path, to) -> None:
    """The server checks the request's path, then loses the race: the swap happens right after."""
    from fastnet.tftp import server as server_module

    checked = server_module.resolve_path

    def resolve_then_swap(root, name):
        real = checked(root, name)
        _swap_for_symlink(path, to)
        return real

    monkeypatch.setattr(server_module, "resolve_path", resolve_then_swap)


@pytest.mark.parametrize("swapped", ["directory", "file"])
def test_a_symlink_swapped_in_after_the_check_is_not_followed_on_read(root, tmp_path, monkeypatch, swapped):
    # resolve_path() sees a plain path under the root; before the server opens it, a directory
    # on it (or the file itself) becomes a symbolic link out of the root.  The open follows no link.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.bin").write_bytes(b"secret")
    (root / "sub").mkdir()
    fill(str(root / "sub" / "f.bin"), 100)
    if swapped == "directory":
        _lose_the_race(monkeypatch, root / "sub", outside)
    else:
        _lose_the_race(monkeypatch, root / "sub" / "f.bin", outside / "f.bin")
    with fastnet_server(str(root)) as server:
        error = fetch_error(server.port, "sub/f.bin")
    assert (error.code, error.message) == (2, "path changed while it was opened")


def test_a_symlink_swapped_in_after_the_check_is_not_followed_on_write(root, tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "sub").mkdir()
    src = tmp_path / "up.bin"
    fill(str(src), 3000)
    _lose_the_race(monkeypatch, root / "sub", outside)
    with fastnet_server(str(root), allow_write=True) as server:
        with pytest.raises(TftpRemoteError) as info:
            client.upload("127.0.0.1", str(src), "sub/up.bin", port=server.port, timeout=0.5)
    assert (info.value.code, info.value.message) == (2, "path changed while it was opened")
    assert os.listdir(outside) == []


@pytest.mark.parametrize("mode", ["octet", "netascii"])  # the engine's session, the per-packet one
def test_an_upload_stays_in_its_directory_when_the_directory_is_swapped_for_a_symlink(root, tmp_path, mode):
    # The swap comes after the upload began: the upload is written and put in place in the
    # directory it was accepted in (now sub.old), never through the link.
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "sub").mkdir()
    with fastnet_server(str(root), allow_write=True) as server, RawPeer() as peer:
        peer.send(codec.encode_wrq("sub/up.bin", mode), server.port)
        ack, tid = peer.recv()
        assert ack == codec.Ack(0)
        peer.send(codec.encode_data(1, b"a" * 512), tid)
        assert peer.recv()[0] == codec.Ack(1)
        _swap_for_symlink(root / "sub", outside)
        peer.send(codec.encode_data(2, b"b" * 10), tid)
        assert peer.recv()[0] == codec.Ack(2)
        assert _sessions_end(server)
    assert (root / "sub.old" / "up.bin").read_bytes() == b"a" * 512 + b"b" * 10
    assert os.listdir(outside) == []
    assert leftovers(str(root / "sub.old")) == []


def test_directories_fifos_and_devices_are_never_served(root):
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")
    names = ["dir", "fifo", "/"]
    try:
        os.mknod(root / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        names.append("null")
    except (PermissionError, OSError):
        pass  # not root: the FIFO stands for every special file
    data = fill(str(root / "ok.bin"), 100)
    with fastnet_server(str(root)) as server:
        for name in names:
            assert fetch_error(server.port, name).code == 2, name
        assert get(server.port, "ok.bin") == data  # and the server keeps serving


@pytest.mark.parametrize("direction", ["read", "write"])
def test_names_the_file_system_rejects_are_refused_with_an_answer(root, caplog, direction):
    # a name too long, a symlink loop, a file where a directory should be: os.stat fails with
    # something else than ENOENT, and the request is refused as any other is, with an ERROR and
    # one access-log line (a write as a read: 2 and the OS's words), never left unanswered; a
    # file where a directory should be means the file is not there: 1, either way
    caplog.set_level(logging.INFO, logger="fastnet.tftp")
    (root / "f.bin").write_bytes(b"x")
    os.symlink("loop", root / "loop")
    expected = {
        "a" * 300: (2, os.strerror(errno.ENAMETOOLONG)),
        "loop": (2, os.strerror(errno.ELOOP)),
        "loop/x": (2, os.strerror(errno.ELOOP)),
        "f.bin/x": (1, "file not found") if direction == "read" else (1, "directory not found"),
    }
    encode = codec.encode_rrq if direction == "read" else codec.encode_wrq
    with fastnet_server(str(root), allow_write=True) as server, RawPeer() as peer:

        def answer(name):
            peer.send(encode(name), server.port)
            try:
                packet, _ = peer.recv(timeout=1.0)
            except socket.timeout:
                return None
            assert type(packet) is codec.Error, packet
            return packet.code, packet.message.rsplit(": ", 1)[-1]  # the OS's words, after what failed

        answers = {name: answer(name) for name in expected}
    assert answers == expected
    lines = [r.getMessage() for r in caplog.records if r.name == "fastnet.tftp.access"]
    assert len(lines) == len(expected) and all(f"direction={direction}" in line and "outcome=refused: error" in line
                                               for line in lines), lines
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert sorted(os.listdir(root)) == ["f.bin", "loop"]


def test_an_os_error_the_checks_do_not_foresee_is_still_answered(root, caplog, monkeypatch):
    # a file renamed while the checks look at it, an I/O error: whatever OSError comes out of
    # them, the client gets an ERROR and the access log its line
    from fastnet.tftp import server as server_module

    def failing_resolve(root, name):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    caplog.set_level(logging.INFO, logger="fastnet.tftp")
    monkeypatch.setattr(server_module, "resolve_path", failing_resolve)
    with fastnet_server(str(root), allow_write=True) as server, RawPeer() as peer:
        peer.send(codec.encode_wrq("f.bin"), server.port)
        packet, _ = peer.recv(timeout=2.0)
    assert packet == codec.Error(0, f"cannot serve the request: {os.strerror(errno.EIO)}")
    lines = [r.getMessage() for r in caplog.records if r.name == "fastnet.tftp.access"]
    assert len(lines) == 1 and "file='f.bin' direction=write" in lines[0] and "refused: error 0" in lines[0]
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


@pytest.mark.parametrize("mode", ["octet", "netascii"])  # the engine's session, the per-packet one
def test_a_peers_error_message_cannot_forge_access_log_lines(root, caplog, mode):
    # the peer's ERROR message goes into the outcome of its access-log line: a line break in it
    # started a line of the peer's making (a forged transfer), an escape sequence reached the
    # terminal of whoever reads the log
    caplog.set_level(logging.INFO, logger="fastnet.tftp.access")
    fill(str(root / "f.bin"), 5000)
    forged = "bye\npeer=10.1.2.3:69 file='pxelinux.cfg/default' direction=write outcome=ok\x1b[2J"
    with fastnet_server(str(root), timeout=5.0) as server, RawPeer() as peer:
        peer.send(codec.encode_rrq("f.bin", mode), server.port)
        _, tid = peer.recv()
        peer.send(codec.encode_error(0, forged), tid)
        assert _sessions_end(server)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "fastnet.tftp.access"]
    assert "\n" not in line and "\x1b" not in line
    assert line.endswith("outcome=peer error 0: bye\\npeer=10.1.2.3:69 file='pxelinux.cfg/default' "
                         "direction=write outcome=ok\\x1b[2J")


def test_a_flood_of_junk_is_logged_at_most_20_lines_a_second(root, caplog):
    # one WARNING per junk datagram, even with --quiet: 8.5 MB of log a second from one sender;
    # and the flood of one address must not hide another's refusals
    caplog.set_level(logging.INFO, logger="fastnet.tftp")
    with fastnet_server(str(root)) as server, RawPeer() as peer, _from("127.0.0.2") as other:
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for i in range(300):
            peer.send(b"\x00", server.port)  # too short for an opcode
            if i % 50 == 49:
                time.sleep(0.02)  # the server's receive buffer holds ~250 such datagrams
        other.sendto(codec.encode_rrq("other.bin"), ("127.0.0.1", server.port))
        other_refused = codec.decode(other.recvfrom(1000)[0])
        replies = len(peer.quiet(0.5))
        time.sleep(0.7)  # a second after the flood: its count is reported
        peer.send(codec.encode_rrq("absent.bin"), server.port)
        refused, _ = peer.recv()
    messages = [r.getMessage() for r in caplog.records]
    junk = [m for m in messages if "malformed request from" in m]
    summary = [m for m in messages if "not logged one by one" in m]
    assert replies == 300  # every datagram is still answered with ERROR 4
    assert len(junk) == 20
    assert summary == ["tftp: 280 more refused or malformed requests not logged one by one (at most 20 lines "
                       "every 1 s from one address)"]
    assert messages.index(summary[0]) < [i for i, m in enumerate(messages) if "absent.bin" in m][0]
    assert other_refused.code == 1 and any("peer=127.0.0.2:" in m and "other.bin" in m for m in messages)
    assert refused.code == 1 and any("absent.bin" in m and "refused: error 1" in m for m in messages)


def _udp_from_port_0(payload: bytes, port: int) -> None:
    """Send *payload* to 127.0.0.1:*port* from source port 0, which no socket can bind: the UDP
    header is written by hand on a raw socket (root, or CAP_NET_RAW)."""
    import struct

    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    except PermissionError:
        pytest.skip("a raw socket needs root or CAP_NET_RAW")
    with raw:
        header = struct.pack("!HHHH", 0, port, 8 + len(payload), 0)  # checksum 0: none (IPv4)
        raw.sendto(header + payload, ("127.0.0.1", 0))


def test_a_request_from_source_port_0_is_dropped(root, caplog):
    # no answer can reach port 0 and no ICMP error comes back from it: a forged request, which
    # held a slot for the whole of its retries
    caplog.set_level(logging.INFO, logger="fastnet.tftp.access")
    fill(str(root / "f.bin"), 5000)
    with fastnet_server(str(root), max_sessions=1, timeout=5.0) as server:
        _udp_from_port_0(codec.encode_rrq("f.bin"), server.port)
        time.sleep(0.3)
        sessions = server.sessions
        data = get(server.port, "f.bin")  # the one slot is free
    assert sessions == 0 and len(data) == 5000
    assert [r.getMessage() for r in caplog.records if "peer=127.0.0.1:0 " in r.getMessage()] == []


def test_missing_file_is_error_1_and_each_refusal_is_logged(root, caplog):
    caplog.set_level(logging.INFO, logger="fastnet.tftp.access")
    with fastnet_server(str(root)) as server:
        assert fetch_error(server.port, "absent.bin").code == 1
        assert fetch_error(server.port, "../x").code == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "fastnet.tftp.access"]
    assert len(lines) == 2
    assert "absent.bin" in lines[0] and "refused: error 1" in lines[0]
    assert "'../x'" in lines[1] and "refused: error 2" in lines[1]


# ---------------------------------------------------------------------------- writing


def test_read_only_by_default(root, tmp_path):
    src = tmp_path / "up.bin"
    fill(str(src), 100)
    with fastnet_server(str(root)) as server:
        with pytest.raises(TftpRemoteError) as info:
            client.upload("127.0.0.1", str(src), "up.bin", port=server.port, timeout=0.5)
    assert info.value.code == 2
    assert os.listdir(root) == []


def test_replacing_a_file_needs_allow_overwrite(root, tmp_path):
    (root / "f.bin").write_bytes(b"old")
    src = tmp_path / "new.bin"
    data = fill(str(src), 5000)
    with fastnet_server(str(root), allow_write=True) as server:
        with pytest.raises(TftpRemoteError) as info:
            client.upload("127.0.0.1", str(src), "f.bin", port=server.port, timeout=0.5)
        assert info.value.code == 6
        assert (root / "f.bin").read_bytes() == b"old"
        client.upload("127.0.0.1", str(src), "new.bin", port=server.port, timeout=0.5)
        assert (root / "new.bin").read_bytes() == data
    with fastnet_server(str(root), allow_write=True, allow_overwrite=True) as server:
        client.upload("127.0.0.1", str(src), "f.bin", port=server.port, timeout=0.5)
    assert (root / "f.bin").read_bytes() == data
    assert leftovers(str(root)) == []


@pytest.mark.parametrize("fallback", ["renameat2", "check-then-rename"])
@pytest.mark.parametrize("mode", ["octet", "netascii"])  # the engine's session, the per-packet one
def test_uploads_commit_on_a_file_system_without_hard_links(root, tmp_path, monkeypatch, fallback, mode, temp_kind):
    # vfat and some network file systems refuse link() with EPERM, and the server's "create only
    # if absent" was a hard link: every complete upload failed there.  link() fails here as it
    # does on those; the upload goes into place by renameat2(RENAME_NOREPLACE) or, where libc or
    # the file system lacks that too, by a check and a rename.  An existing file is still refused.
    from fastnet.tftp import server as server_module

    def no_hard_links(src, dst, *args, **kwargs):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), src)

    monkeypatch.setattr(os, "link", no_hard_links)
    if fallback == "check-then-rename":
        monkeypatch.setattr(server_module, "_renameat2", None)
    (root / "old.bin").write_bytes(b"old")
    src = tmp_path / "new.bin"
    data = fill(str(src), 5000)
    if mode == "netascii":
        data = data.replace(b"\r", b"").replace(b"\n", b"")
        src.write_bytes(data)
    with fastnet_server(str(root), allow_write=True) as server:
        client.upload("127.0.0.1", str(src), "new.bin", port=server.port, timeout=0.5, mode=mode)
        with pytest.raises(TftpRemoteError) as info:
            client.upload("127.0.0.1", str(src), "old.bin", port=server.port, timeout=0.5, mode=mode)
        assert info.value.code == 6 and info.value.message == "file already exists"
        assert _sessions_end(server)
    assert (root / "new.bin").read_bytes() == data
    assert (root / "old.bin").read_bytes() == b"old"
    assert leftovers(str(root)) == []


def _start_upload(peer: RawPeer, port: int, name: str, blocks: int) -> int:
    """WRQ and *blocks* full 512-byte DATA blocks; returns the session's port."""
    peer.send(codec.encode_wrq(name), port)
    ack, tid = peer.recv()
    assert ack == codec.Ack(0)
    for n in range(1, blocks + 1):
        peer.send(codec.encode_data(n, bytes([n]) * 512), tid)
        assert peer.recv()[0] == codec.Ack(n)
    return tid


def _nameless_files_work(directory) -> bool:
    """Whether the file system of *directory* makes files without a name (O_TMPFILE)."""
    try:
        fd = os.open(directory, os.O_RDWR | os.O_TMPFILE, 0o600)
    except OSError:
        return False
    os.close(fd)
    return os.path.isdir("/proc/self/fd")


@pytest.fixture(params=["nameless", "named"])
def temp_kind(request, root, monkeypatch):
    """How an upload's temporary file is made: without a name (O_TMPFILE, where the file system
    has it) or as a hidden named file (the way on other file systems, or without /proc)."""
    if request.param == "named":
        from fastnet.tftp import _transfer

        monkeypatch.setattr(_transfer, "_PROC_FD", False)
    elif not _nameless_files_work(root):
        pytest.skip("this file system makes no files without a name (O_TMPFILE)")
    return request.param


def test_a_server_killed_in_mid_upload_leaves_nothing_behind(root, impl_env):
    # SIGKILL, the out-of-memory killer, a power cut: no cleanup runs, and a named temporary
    # file stayed for ever, taking disk space (the next upload could fail for want of it)
    if not _nameless_files_work(root):
        pytest.skip("this file system makes no files without a name (O_TMPFILE)")
    proc = subprocess.Popen([sys.executable, "-m", "fastnet.tftp", "serve", str(root), "--port", "0", "--write",
                             "--quiet"], env=impl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stderr.readline().rsplit(":", 1)[1].split()[0])
        for mode in ("octet", "netascii"):
            with RawPeer() as peer:
                peer.send(codec.encode_wrq(f"up-{mode}.bin", mode), port)
                ack, tid = peer.recv()
                assert ack == codec.Ack(0)
                for n in (1, 2):
                    peer.send(codec.encode_data(n, b"x" * 512), tid)
                    assert peer.recv()[0] == codec.Ack(n)
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    assert os.listdir(root) == []


def test_aborted_upload_leaves_nothing_and_readers_never_see_it(root, temp_kind):
    (root / "f.bin").write_bytes(b"old content")
    with fastnet_server(str(root), allow_write=True, allow_overwrite=True) as server:
        with RawPeer() as peer, RawPeer() as other:
            tid = _start_upload(peer, server.port, "f.bin", 3)
            _start_upload(other, server.port, "new.bin", 2)
            # mid-upload: readers get the old file, the new name does not exist yet
            assert get(server.port, "f.bin") == b"old content"
            assert fetch_error(server.port, "new.bin").code == 1
            assert len(leftovers(str(root))) == (2 if temp_kind == "named" else 0)
            peer.send(codec.encode_error(0, "user cancelled"), tid)
            for _ in range(100):  # the abandoned second upload times out (timeout=0.1, 1 retry)
                if server.sessions == 0:
                    break
                time.sleep(0.05)
    assert (root / "f.bin").read_bytes() == b"old content"
    assert sorted(os.listdir(root)) == ["f.bin"]


@pytest.fixture(autouse=True)
def _fast_timeouts(monkeypatch):
    # every server in this file retransmits after 0.1 s and gives up after one retry, unless a
    # test says otherwise: abandoned sessions end quickly
    from fastnet.tftp import server as server_module

    original = server_module.TftpServer.__init__

    def init(self, root, *args, **kwargs):
        kwargs.setdefault("timeout", 0.1)
        kwargs.setdefault("retries", 1)
        original(self, root, *args, **kwargs)

    monkeypatch.setattr(server_module.TftpServer, "__init__", init)


def test_upload_completes_atomically_after_the_last_block(root):
    with fastnet_server(str(root), allow_write=True) as server, RawPeer() as peer:
        tid = _start_upload(peer, server.port, "x.bin", 2)
        assert not (root / "x.bin").exists()
        peer.send(codec.encode_data(3, b"tail"), tid)
        assert peer.recv()[0] == codec.Ack(3)
        # the server dallies: a repeated last block is acknowledged again
        peer.send(codec.encode_data(3, b"tail"), tid)
        assert peer.recv()[0] == codec.Ack(3)
    assert (root / "x.bin").read_bytes() == bytes([1]) * 512 + bytes([2]) * 512 + b"tail"
    assert leftovers(str(root)) == []


@pytest.mark.parametrize("mode", ["octet", "netascii"])  # the engine's session, the per-packet one
def test_dally_outlasts_a_client_whose_final_acks_keep_getting_lost(root, mode):
    # The server's final ACK is lost again and again: the client resends its last block after
    # longer and longer waits.  Each repeat is ACKed and doubles the dally (0.5 s at first, here),
    # up to the server's retries (one here); then the port closes.
    with fastnet_server(str(root), allow_write=True, timeout=0.1, retries=1) as server, RawPeer() as peer:
        peer.send(codec.encode_wrq("d.txt", mode), server.port)
        ack, tid = peer.recv()
        assert ack == codec.Ack(0)
        peer.send(codec.encode_data(1, b"last"), tid)
        assert peer.recv()[0] == codec.Ack(1)
        answered = []
        # repeats at 0.4 s (the dally ends at 0.5: renewed to 0.4 + 1.0), 1.1 s (no renewal left:
        # the end stays at 1.4; unbounded it would be 1.1 + 2.0), 2.4 s (closed)
        for wait in (0.4, 0.7, 1.3):
            time.sleep(wait)
            peer.send(codec.encode_data(1, b"last"), tid)
            try:
                answered.append(peer.recv(timeout=0.5)[0])
            except socket.timeout:
                answered.append(None)
    assert answered == [codec.Ack(1), codec.Ack(1), None]
    assert (root / "d.txt").read_bytes() == b"last"
    assert leftovers(str(root)) == []


@pytest.mark.parametrize("mode", ["octet", "netascii"])  # the engine's session, the per-packet one
def test_an_upload_window_the_server_accepted_arrives_whole(root, mode):
    # 64 x 65464 bytes is lowered to the server's 1 MiB cap (16 blocks) and then, if need be, to
    # what its socket can queue under net.core.rmem_max; a window it agreed to, sent as one
    # burst, must then arrive whole: the answer is the ACK of its last block, not of a gap.
    blksize = 65464
    with fastnet_server(str(root), allow_write=True, timeout=1.0) as server, RawPeer() as peer:
        peer.send(codec.encode_wrq("w.bin", mode, {"blksize": blksize, "windowsize": 64}), server.port)
        oack, tid = peer.recv()
        window = int(oack.options["windowsize"])
        assert 1 <= window <= 16 and int(oack.options["blksize"]) == blksize
        payloads = [bytes([65 + n % 26]) * blksize for n in range(window)]
        for n, payload in enumerate(payloads, 1):
            peer.send(codec.encode_data(n, payload), tid)
        assert peer.recv()[0] == codec.Ack(window)
        peer.send(codec.encode_data(window + 1, b"end"), tid)
        assert peer.recv()[0] == codec.Ack(window + 1)
    assert (root / "w.bin").read_bytes() == b"".join(payloads) + b"end"


def test_tsize_beyond_free_space_is_error_3(root):
    with fastnet_server(str(root), allow_write=True) as server, RawPeer() as peer:
        peer.send(codec.encode_wrq("huge.bin", options={"tsize": 10**18}), server.port)
        packet, _ = peer.recv()
    assert type(packet) is codec.Error and packet.code == 3
    assert os.listdir(root) == []


def test_tsize_counts_the_space_running_uploads_announced(root):
    # each WRQ's tsize was checked against the free space alone: four uploads of 900 KB all fit
    # in 2 MB one at a time, and three then failed half-way with a full disk
    from fastnet.tftp._transfer import free_space

    big = int(free_space(str(root)) * 0.6)
    with fastnet_server(str(root), allow_write=True, timeout=5.0) as server, RawPeer() as one, RawPeer() as two:
        one.send(codec.encode_wrq("a.bin", options={"tsize": big}), server.port)
        first, tid = one.recv()
        two.send(codec.encode_wrq("b.bin", options={"tsize": big}), server.port)
        second, _ = two.recv()
        one.send(codec.encode_error(0, "changed my mind"), tid)  # the first gives its space back
        assert _sessions_end(server)
        two.send(codec.encode_wrq("b.bin", options={"tsize": big}), server.port)
        third, tid = two.recv()
        two.send(codec.encode_error(0, "enough"), tid)
    assert first == codec.OptionAck({"tsize": str(big)})
    assert type(second) is codec.Error and second.code == 3
    assert third == codec.OptionAck({"tsize": str(big)})
    assert leftovers(str(root)) == [] and os.listdir(root) == []


def test_tsize_counts_only_what_running_uploads_have_still_to_write(tmp_path, impl_env):
    # the free space already shows what an upload wrote: holding all it announced as well
    # refused a second upload that fit (a 4 MiB tmpfs in a mount namespace of the test's own,
    # tests/netns_tftp_tsize.py)
    unshare = require_tool("unshare")
    probe = subprocess.run([unshare, "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        peer_missing(f"cannot make a mount namespace: {probe.stderr.strip()}")
    directory = tmp_path / "small"
    directory.mkdir()
    child = os.path.join(os.path.dirname(__file__), "netns_tftp_tsize.py")
    run = subprocess.run([unshare, "--mount", sys.executable, child, str(directory)], env=impl_env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["free_after_a"] < result["free"] * 0.6  # A did write about half of it
    assert result["b"] == ["OptionAck", None]


def test_a_request_alone_holds_no_space_after_its_timeout(root):
    # a WRQ announcing most of the free space, from an address that never sends DATA (forged,
    # say), held that space for all its retries (31 s): every other sized upload was ERROR 3
    from fastnet.tftp._transfer import free_space

    big = int(free_space(str(root)) * 0.6)
    with fastnet_server(str(root), allow_write=True, timeout=0.3, retries=10) as server, \
            _from("127.0.0.2") as silent, RawPeer() as peer:
        silent.sendto(codec.encode_wrq("a.bin", options={"tsize": big}), ("127.0.0.1", server.port))
        assert type(codec.decode(silent.recvfrom(1000)[0])) is codec.OptionAck
        peer.send(codec.encode_wrq("b.bin", options={"tsize": big}), server.port)
        at_once, _ = peer.recv()  # within the timeout: A's request might still be a real client
        time.sleep(0.4)
        peer.send(codec.encode_wrq("b.bin", options={"tsize": big}), server.port)
        later, tid = peer.recv()
        peer.send(codec.encode_error(0, "enough"), tid)
    assert type(at_once) is codec.Error and at_once.code == 3
    assert later == codec.OptionAck({"tsize": str(big)})


def test_tsize_is_granted_where_the_free_space_cannot_be_told(root, monkeypatch):
    # statvfs fails on some file systems (ENOSYS on a FUSE one without it): the upload is not
    # refused for that, nor left unanswered; a full disk would be ERROR 3 during the transfer
    from fastnet.tftp import server as server_module

    def no_statvfs(directory):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(server_module, "free_space", no_statvfs)
    with fastnet_server(str(root), allow_write=True) as server, RawPeer() as peer:
        peer.send(codec.encode_wrq("t.bin", options={"tsize": 5}), server.port)
        oack, tid = peer.recv(timeout=2.0)
        assert oack == codec.OptionAck({"tsize": "5"})
        peer.send(codec.encode_data(1, b"hello"), tid)
        assert peer.recv()[0] == codec.Ack(1)
    assert (root / "t.bin").read_bytes() == b"hello"


def _upload_one_block(server, peer: RawPeer, name: str, mode: str) -> tuple:
    """A raw WRQ and its first, full block, both acknowledged: the session's TID."""
    peer.send(codec.encode_wrq(name, mode), server.port)
    ack, tid = peer.recv()
    assert ack == codec.Ack(0)
    peer.send(codec.encode_data(1, b"u" * 512), tid)
    assert peer.recv()[0] == codec.Ack(1)
    return tid


def _sessions_end(server, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while server.sessions and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.sessions == 0


@pytest.mark.parametrize("mode", ["octet", "netascii"])  # the engine's session, the per-packet one
def test_an_upload_whose_temporary_file_cannot_be_removed_still_ends(root, monkeypatch, caplog, mode):
    # the upload's directory was made read-only meanwhile, say: the aborted session still ends,
    # logs its line and gives its slot back, and the leftover is reported (a named temporary
    # file: one without a name needs no removing)
    from fastnet.tftp import _transfer
    from fastnet.tftp.server import TEMP_PREFIX

    monkeypatch.setattr(_transfer, "_PROC_FD", False)
    caplog.set_level(logging.INFO, logger="fastnet.tftp")
    unlink = os.unlink

    def refusing_unlink(path, *args, **kwargs):
        if os.path.basename(path).startswith(TEMP_PREFIX):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refusing_unlink)
    with fastnet_server(str(root), allow_write=True) as server, RawPeer() as peer:
        tid = _upload_one_block(server, peer, "u.bin", mode)
        peer.send(codec.encode_error(0, "user cancelled"), tid)
        assert _sessions_end(server)
    lines = [r.getMessage() for r in caplog.records if r.name == "fastnet.tftp.access"]
    assert len(lines) == 1 and lines[0].endswith("outcome=peer error 0: user cancelled"), lines
    assert any("cannot remove" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert len(leftovers(str(root))) == 1 and not (root / "u.bin").exists()


@pytest.mark.parametrize("mode", ["octet", "netascii"])  # the engine's run; the per-packet path
def test_an_upload_data_longer_than_the_block_size_is_error_4_and_leaves_nothing(root, caplog, mode):
    caplog.set_level(logging.INFO, logger="fastnet.tftp.access")
    with fastnet_server(str(root), allow_write=True) as server, RawPeer() as peer:
        tid = _upload_one_block(server, peer, "u.bin", mode)
        peer.send(codec.encode_data(2, b"L" * 600), tid)
        error = peer.recv()[0]
        assert _sessions_end(server)
    assert error == codec.Error(4, "DATA longer than the block size")
    lines = [r.getMessage() for r in caplog.records if r.name == "fastnet.tftp.access"]
    assert len(lines) == 1 and lines[0].endswith("outcome=DATA longer than the block size"), lines
    assert leftovers(str(root)) == [] and not (root / "u.bin").exists()


FULL_DISK_SERVER = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
from fastnet.tftp.__main__ import main
sys.exit(main(["serve", sys.argv[1], "--port", sys.argv[2], "--write", "--timeout", "0.2"]))
"""


@pytest.mark.parametrize("options", [{}, {"blksize": 8192, "windowsize": 4}], ids=["staged", "gathered"])
def test_full_disk_during_upload_is_error_3_and_removes_the_temporary_file(root, tmp_path, impl_env, options):
    # RLIMIT_FSIZE makes writes past 20000 bytes fail (EFBIG) as a full disk would (ENOSPC).
    # Small blocks are staged; big ones go to the file in one writev() per batch, which here
    # stops short at 20000 bytes and fails on the next call.
    from conftest import free_port
    from tftp_helpers import wait_for_tftp

    src = tmp_path / "big.bin"
    fill(str(src), 200_000)
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([sys.executable, "-c", FULL_DISK_SERVER, str(root), str(port)], env=impl_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_tftp(port)
        with pytest.raises(TftpRemoteError) as info:
            client.upload("127.0.0.1", str(src), "big.bin", port=port, timeout=0.5, tsize=False, **options)
        assert info.value.code == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert os.listdir(root) == []
    assert b"Traceback" not in err


FEW_DESCRIPTORS_SERVER = r"""
import logging, os, resource, sys
from fastnet.tftp.server import TftpServer
logging.basicConfig(level=logging.INFO)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
with TftpServer(sys.argv[1], port=0, timeout=5.0) as server:
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    for fd in held[-5:]:  # five descriptors left: two transfers (a socket and a file each), not more
        os.close(fd)
    print(server.port, flush=True)
    sys.stdin.read()  # until the test is done
"""


def test_running_out_of_descriptors_refuses_with_error_0_and_keeps_serving(root, impl_env):
    """EMFILE is the server's trouble: ERROR 0 "server busy ... try again later" (not 2, access
    violation), the transfers already running finish, and a request after them is served."""
    data = fill(str(root / "f.bin"), 512 * 4 + 7)
    proc = subprocess.Popen([sys.executable, "-c", FEW_DESCRIPTORS_SERVER, str(root)], env=impl_env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peers = []
    try:
        port = int(proc.stdout.readline())
        held, refused = [], []
        for _ in range(6):  # each held transfer keeps its descriptors: no ACK yet
            peer = RawPeer()
            peers.append(peer)
            peer.send(codec.encode_rrq("f.bin", options={}), port)
            packet, tid = peer.recv()
            (held if type(packet) is codec.Data else refused).append((peer, packet, tid))
        assert held and refused
        for _, packet, _ in refused:
            assert type(packet) is codec.Error and packet.code == 0, packet
            assert packet.message.startswith("server busy: too many open files")
        for peer, packet, tid in held:  # the running transfers finish, byte for byte
            got = b""
            while True:
                got += packet.payload
                peer.send(codec.encode_ack(packet.block), tid)
                if len(packet.payload) < 512:
                    break
                packet, _ = peer.recv()
            assert got == data
        deadline = time.monotonic() + 10  # their descriptors come back as the sessions end
        while True:
            try:
                stats = client.download("127.0.0.1", "f.bin", io.BytesIO(), port=port, timeout=0.5, retries=2)
                break
            except TftpRemoteError as exc:
                assert exc.code == 0 and time.monotonic() < deadline
                time.sleep(0.1)
        assert stats.bytes == len(data)
    finally:
        for peer in peers:
            peer.sock.close()
        _, err = proc.communicate(b"", timeout=20)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    assert b"server busy: too many open files" in err  # the access log says why


# ---------------------------------------------------------------------------- protocol


def test_duplicate_acks_never_cause_duplicate_data(root):
    # Sorcerer's Apprentice (RFC 1123 4.2.3.1): every ACK sent twice must still yield each DATA once
    data = fill(str(root / "f.bin"), 512 * 20 + 100)
    with fastnet_server(str(root), timeout=5.0) as server, RawPeer() as peer:
        peer.send(codec.encode_rrq("f.bin"), server.port)
        received = []
        while True:
            packet, tid = peer.recv()
            assert type(packet) is codec.Data
            received.append(packet.block)
            peer.send(codec.encode_ack(packet.block), tid)
            peer.send(codec.encode_ack(packet.block), tid)
            if len(packet.payload) < 512:
                break
        assert peer.quiet(0.3) == []
    assert received == list(range(1, 22))


def test_stranger_gets_error_5_and_the_transfer_goes_on(root):
    data = fill(str(root / "f.bin"), 512 * 3 + 10)
    with fastnet_server(str(root), timeout=5.0) as server, RawPeer() as peer, RawPeer() as stranger:
        peer.send(codec.encode_rrq("f.bin"), server.port)
        got = b""
        block = 0
        while True:
            packet, tid = peer.recv()
            assert packet.block == block + 1
            block = packet.block
            got += packet.payload
            if block == 2:
                stranger.send(codec.encode_ack(2), tid)
                error, from_port = stranger.recv()
                assert type(error) is codec.Error and error.code == 5 and from_port == tid
            peer.send(codec.encode_ack(block), tid)
            if len(packet.payload) < 512:
                break
    assert got == data


@pytest.mark.parametrize("mode", ["octet", "netascii"])
@pytest.mark.parametrize("direction", ["read", "write"])
def test_a_client_that_goes_away_ends_its_session_at_once(root, caplog, direction, mode):
    # the client's port closes mid-transfer (it was killed, say): the server's next packet to it
    # draws a port unreachable, and the session ends there -- not after its retries (timeout 1 s,
    # 5 retries: about 30 s), holding a session slot and, for an upload, a temporary file
    caplog.set_level(logging.INFO, logger="fastnet.tftp.access")
    fill(str(root / "f.bin"), 512 * 4)
    with fastnet_server(str(root), allow_write=True, timeout=1.0, retries=5) as server:
        with RawPeer() as peer:
            if direction == "read":
                peer.send(codec.encode_rrq("f.bin", mode), server.port)
                assert peer.recv()[0].block == 1
            else:
                peer.send(codec.encode_wrq("up.bin", mode), server.port)
                ack, tid = peer.recv()
                assert ack == codec.Ack(0)
                peer.send(codec.encode_data(1, b"w" * 512), tid)
                assert peer.recv()[0] == codec.Ack(1)
        gone = time.monotonic()
        while server.sessions and time.monotonic() - gone < 10:
            time.sleep(0.02)
        assert server.sessions == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "fastnet.tftp.access"]
    assert len(lines) == 1 and lines[0].endswith("outcome=client gone: connection refused"), lines
    assert leftovers(str(root)) == [] and not (root / "up.bin").exists()


@pytest.mark.parametrize("mode", ["octet", "netascii"])  # the engine's session, the per-packet one
def test_a_client_that_cancels_ends_its_session_on_its_error_not_as_gone(root, caplog, mode):
    # A cancelled client (Ctrl-C on `python -m fastnet.tftp get`) ACKs what it has, sends ERROR 0
    # and closes its socket at once.  The DATA the server sends on that ACK often meets the closed
    # port, and the port unreachable is reported before the client's ERROR waiting in the queue:
    # the session must still end on the ERROR.  Each round is a race the server used to lose about
    # half of the time, so a few dozen rounds make a reliable test.
    caplog.set_level(logging.INFO, logger="fastnet.tftp.access")
    fill(str(root / "big.bin"), 512 * 200)
    rounds = 30
    with fastnet_server(str(root), timeout=2.0, retries=3) as server:
        for _ in range(rounds):
            with RawPeer() as peer:
                peer.send(codec.encode_rrq("big.bin", mode), server.port)
                for _ in range(3):
                    data, tid = peer.recv()
                    peer.send(codec.encode_ack(data.block), tid)
                peer.send(codec.encode_error(0, "transfer cancelled by the client"), tid)
        gone = time.monotonic()
        while server.sessions and time.monotonic() - gone < 10:
            time.sleep(0.02)
        assert server.sessions == 0
    outcomes = [r.getMessage().split(" outcome=", 1)[1] for r in caplog.records if r.name == "fastnet.tftp.access"]
    assert outcomes == ["peer error 0: transfer cancelled by the client"] * rounds


def test_a_server_on_the_ipv6_wildcard_serves_ipv4_clients_too(root, impl_env):
    # "::" takes IPv4 clients (as ::ffff:a.b.c.d, logged as a.b.c.d), as the relay and the examples do. A wildcard
    # server would listen on every interface, so the test runs it in a network namespace of its
    # own (tests/netns_tftp_dual_stack.py), whose only device is its loopback.
    unshare = require_tool("unshare")
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        peer_missing(f"cannot make a network namespace: {probe.stderr.strip()}")
    data = fill(str(root / "f.bin"), 70000, seed=9)
    child = os.path.join(os.path.dirname(__file__), "netns_tftp_dual_stack.py")
    run = subprocess.run([unshare, "--net", sys.executable, child, str(root)], env=impl_env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["downloads"] == {"127.0.0.1": data.hex(), "::1": data.hex()}
    assert (root / "up.bin").read_bytes() == data
    assert result["sessions_left"] == 0
    peers_and_outcomes = [(line.split()[0], line.split("outcome=")[1]) for line in result["access"]]
    assert [outcome for _, outcome in peers_and_outcomes] == ["ok", "ok", "ok", "client gone: connection refused"]
    assert [peer.rsplit(":", 1)[0] for peer, _ in peers_and_outcomes] == [
        "peer=127.0.0.1", "peer=[::1]", "peer=127.0.0.1", "peer=127.0.0.1"
    ]


def test_a_host_name_s_next_address_is_tried_when_the_first_refuses(root, tmp_path, impl_env):
    # A name with an IPv6 and an IPv4 address ('localhost' on many systems), and a server on
    # 127.0.0.1 alone: ::1 answers with a port unreachable, and the client goes on to the next
    # address, as a TCP client does.  The name comes from a hosts file bound over /etc/hosts in
    # mount and network namespaces of the test's own (tests/netns_tftp_next_address.py).
    unshare = require_tool("unshare")
    probe = subprocess.run([unshare, "--net", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        peer_missing(f"cannot make network and mount namespaces: {probe.stderr.strip()}")
    data = fill(str(root / "f.bin"), 70000, seed=11)
    child = os.path.join(os.path.dirname(__file__), "netns_tftp_next_address.py")
    run = subprocess.run([unshare, "--net", "--mount", sys.executable, child, str(root), str(tmp_path / "hosts")],
                         env=impl_env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["order"] == ["::1", "127.0.0.1"]  # the refusing address does come first
    assert result["downloads"] == [["127.0.0.1", data.hex()], ["127.0.0.1", data.hex()]]
    assert result["upload_peer"] == "127.0.0.1" and (root / "up.bin").read_bytes() == data
    kind, message, seconds = result["six"]  # one address, refusing: a prompt, clear failure
    assert kind == "TftpRefused" and message == "no TFTP server at [::1]:%d: connection refused" % result["port"]
    assert seconds < 1.0 and not result["six_left"]


@pytest.mark.parametrize("direction", ["read", "write"])
def test_progress_after_a_retransmission_resets_the_backoff(root, direction):
    # netascii: the per-packet session.  Block 1 (or ACK 0) is resent after a timeout and then
    # answered; the next one is lost.  Progress resets the backoff at once, as the engine does:
    # it goes again one timeout later, not once the doubled wait and a further period are over
    timeout = 0.3
    (root / "f.txt").write_bytes(b"t" * 512 * 3)
    with fastnet_server(str(root), allow_write=True, timeout=timeout, retries=3) as server, RawPeer() as peer:
        if direction == "read":
            peer.send(codec.encode_rrq("f.txt", "netascii"), server.port)
            first, tid = peer.recv()
            assert first.block == 1 and peer.recv(timeout=3 * timeout)[0] == first
            peer.send(codec.encode_ack(1), tid)
            assert peer.recv()[0].block == 2
            answered = time.monotonic()
            resent = peer.recv(timeout=6 * timeout)[0]
            assert type(resent) is codec.Data and resent.block == 2
        else:
            peer.send(codec.encode_wrq("up.txt", "netascii"), server.port)
            first, tid = peer.recv()
            assert first == codec.Ack(0) and peer.recv(timeout=3 * timeout)[0] == first
            peer.send(codec.encode_data(1, b"u" * 512), tid)
            assert peer.recv()[0] == codec.Ack(1)
            answered = time.monotonic()
            assert peer.recv(timeout=6 * timeout)[0] == codec.Ack(1)
        delay = time.monotonic() - answered
        peer.send(codec.encode_error(0, "enough"), tid)
    assert 0.8 * timeout < delay < 1.5 * timeout, delay


def test_malformed_datagrams_get_error_4_and_do_not_disturb_the_server(root):
    data = fill(str(root / "f.bin"), 2000)
    junk = [b"", b"\x00", b"\x00\x01no-terminator", b"\x00\x09abc\x00", b"\xff" * 600, b"\x00\x01f.bin\x00\x00"]
    with fastnet_server(str(root)) as server, RawPeer() as peer:
        for datagram in junk:
            peer.send(datagram, server.port)
        replies = [p for p, _ in peer.quiet(0.3)]
        assert replies and all(type(p) is codec.Error and p.code == 4 for p in replies)
        peer.send(codec.encode_ack(1), server.port)  # not a request
        assert peer.recv()[0].code == 4
        assert get(server.port, "f.bin") == data


def test_a_repeated_option_is_refused_and_logged_like_any_refusal(root, caplog):
    # RFC 2347 has each option once: a request naming one twice (case aside) gets ERROR 4 and,
    # as any refused request does, one access-log line with its file and direction
    caplog.set_level(logging.INFO, logger="fastnet.tftp.access")
    fill(str(root / "f.bin"), 100)
    with fastnet_server(str(root), allow_write=True) as server, RawPeer() as peer:
        peer.send(b"\0\1f.bin\0octet\0blksize\0001024\0blksize\000512\0", server.port)
        read_error, _ = peer.recv()
        peer.send(b"\0\2up.bin\0octet\0tsize\0005\0TSIZE\0005\0", server.port)
        write_error, _ = peer.recv()
    assert read_error == write_error == codec.Error(4, "malformed request: repeated option")
    lines = [r.getMessage() for r in caplog.records if r.name == "fastnet.tftp.access"]
    assert len(lines) == 2, lines
    assert "file='f.bin' direction=read" in lines[0] and "file='up.bin' direction=write" in lines[1]
    assert all(line.endswith("outcome=refused: error 4: malformed request: repeated option") for line in lines)
    assert sorted(os.listdir(root)) == ["f.bin"]


def test_sessions_beyond_max_sessions_are_refused(root):
    fill(str(root / "f.bin"), 5000)
    with fastnet_server(str(root), max_sessions=1, timeout=5.0) as server, RawPeer() as first:
        first.send(codec.encode_rrq("f.bin"), server.port)
        data1, tid = first.recv()
        assert data1.block == 1
        error = fetch_error(server.port, "f.bin")
        assert "busy" in error.message
        first.send(codec.encode_error(0, "done"), tid)
        for _ in range(100):
            if server.sessions == 0:
                break
            time.sleep(0.02)
        assert len(get(server.port, "f.bin")) == 5000


def _from(host: str) -> socket.socket:
    """A UDP socket of another client, on another loopback address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(5)
    return sock


def test_one_client_address_gets_at_most_max_sessions_per_client(root):
    fill(str(root / "f.bin"), 5000)
    with fastnet_server(str(root), max_sessions=8, max_sessions_per_client=2, timeout=5.0) as server, \
            RawPeer() as a1, RawPeer() as a2, RawPeer() as a3, _from("127.0.0.2") as other:
        for peer in (a1, a2):  # two transfers from 127.0.0.1, their clients silent
            peer.send(codec.encode_rrq("f.bin"), server.port)
            assert peer.recv()[0].block == 1
        a3.send(codec.encode_rrq("f.bin"), server.port)  # a third from the same address
        refusal, _ = a3.recv()
        other.sendto(codec.encode_rrq("f.bin"), ("127.0.0.1", server.port))  # another address
        served = codec.decode(other.recvfrom(1000)[0])
    assert refusal == codec.Error(0, "server busy: too many transfers from your address, try again later")
    assert type(served) is codec.Data and served.block == 1


def test_a_full_server_gives_the_slot_of_a_client_that_never_answered_to_a_new_one(root):
    # Requests from forged addresses (or clients gone before their first ACK) held every slot
    # until their retries ran out (31 s, or over 2 hours with the timeout option at 255), and
    # every other client was refused meanwhile.  Now the oldest silent one makes room.
    fill(str(root / "f.bin"), 5000)
    with fastnet_server(str(root), max_sessions=2, timeout=0.3, retries=10) as server, \
            RawPeer() as silent, RawPeer() as live, _from("127.0.0.2") as newcomer:
        silent.send(codec.encode_rrq("f.bin"), server.port)
        assert silent.recv()[0].block == 1
        live.send(codec.encode_rrq("f.bin"), server.port)
        data, tid = live.recv()
        live.send(codec.encode_ack(1), tid)  # this client answers: its slot is its own
        assert live.recv()[0].block == 2
        time.sleep(0.4)  # longer than the server's timeout since the silent one's request
        newcomer.sendto(codec.encode_rrq("f.bin"), ("127.0.0.1", server.port))
        data, (_, tid) = newcomer.recvfrom(1000)
        served = codec.decode(data)
        newcomer.sendto(codec.encode_ack(1), ("127.0.0.1", tid))  # the newcomer answers too
        evicted = [p for p, _ in silent.quiet(1.0) if type(p) is codec.Error]
        # the server is full again, and every client in it has answered or is new: no room
        error = fetch_error(server.port, "f.bin")
    assert type(served) is codec.Data and served.block == 1
    assert evicted == [codec.Error(0, "server busy: no answer from the client")]
    assert error.message == "server busy: too many transfers, try again later"


def test_a_request_refused_anyway_does_not_end_a_silent_transfer(root):
    # the slot of a silent transfer went to whatever request came next, even one refused a
    # moment later (a missing file, a bad mode): junk ended transfers for nothing
    fill(str(root / "f.bin"), 5000)
    with fastnet_server(str(root), max_sessions=1, timeout=0.3, retries=10) as server, \
            RawPeer() as slow, _from("127.0.0.2") as other:
        slow.send(codec.encode_rrq("f.bin"), server.port)
        assert slow.recv()[0].block == 1
        time.sleep(0.4)
        answers = []
        for request in (codec.encode_rrq("absent.bin"), codec.encode_rrq("f.bin", "mail")):
            other.sendto(request, ("127.0.0.1", server.port))
            answers.append(codec.decode(other.recvfrom(1000)[0]))
        ended = [p for p, _ in slow.quiet(0.5) if type(p) is codec.Error]
        other.sendto(codec.encode_rrq("f.bin"), ("127.0.0.1", server.port))  # a request that is served
        served = codec.decode(other.recvfrom(1000)[0])
        ended_now = [p for p, _ in slow.quiet(0.5) if type(p) is codec.Error]
    assert [(a.code, a.message) for a in answers] == [(1, "file not found"), (4, "unsupported transfer mode 'mail'")]
    assert ended == []
    assert type(served) is codec.Data and ended_now == [codec.Error(0, "server busy: no answer from the client")]


def test_uploads_dallying_after_their_final_ack_are_at_most_max_sessions(root):
    # Each upload keeps its socket for a while after its final ACK, to answer a repeated last
    # DATA.  Those sockets were not counted: uploads back-to-back could use up descriptors and
    # ports.  Beyond max_sessions, the oldest dally ends.
    with fastnet_server(str(root), allow_write=True, max_sessions=2, timeout=2.0) as server, RawPeer() as peer:
        tids = []  # (a dally of 8 s: the first one ends for want of room, not of time)
        for n in range(3):
            peer.send(codec.encode_wrq(f"u{n}.bin"), server.port)
            ack, tid = peer.recv()
            assert ack == codec.Ack(0)
            peer.send(codec.encode_data(1, b"x" * 10), tid)
            assert peer.recv()[0] == codec.Ack(1)
            tids.append(tid)
        assert _sessions_end(server)
        answers = []
        for tid in tids:  # the last DATA again, as if the final ACK had been lost
            peer.send(codec.encode_data(1, b"x" * 10), tid)
            try:
                answers.append(peer.recv(timeout=0.5)[0])
            except (socket.timeout, ConnectionRefusedError):
                answers.append(None)
    assert answers == [None, codec.Ack(1), codec.Ack(1)]


@pytest.mark.parametrize("mode", ["octet", "netascii"])  # the engine's session, the per-packet one
def test_before_any_data_ack_only_one_retry_resends_the_whole_window(root, mode):
    # A request from a forged address, and an ACK of the OACK a blind sender guessed: each retry
    # sent the whole window (up to 1 MiB) to the address the request named.  Until the client
    # acknowledges a DATA block, one retry sends the whole window (a single loss costs a real
    # client nothing) and the next ones its first block alone; an ACK of any block sent before
    # is still taken, and from then on a window goes whole again.
    (root / "f.bin").write_bytes(b"x" * (512 * 40))  # the same on the wire in netascii
    with fastnet_server(str(root), timeout=0.5, retries=5) as server, RawPeer() as peer:
        peer.send(codec.encode_rrq("f.bin", mode, {"windowsize": 8}), server.port)
        oack, tid = peer.recv()
        assert oack == codec.OptionAck({"windowsize": "8"})
        peer.send(codec.encode_ack(0), tid)
        first = [peer.recv()[0].block for _ in range(8)]
        retry = [p.block for p, _ in peer.quiet(1.2)]  # two retries: 0.5 s, then 1 s later
        peer.send(codec.encode_ack(8), tid)  # the client had the window all along
        second = [peer.recv()[0].block for _ in range(8)]
        retry2 = [p.block for p, _ in peer.quiet(1.2)]
        peer.send(codec.encode_error(0, "enough"), tid)
    assert first == list(range(1, 9))
    assert retry[:8] == list(range(1, 9)) and retry[8:] and set(retry[8:]) == {1}
    assert second == list(range(9, 17))
    assert retry2[:8] == list(range(9, 17))  # a client that acknowledged data gets the window whole


def test_options_negotiation(root):
    fill(str(root / "f.bin"), 3000)
    with fastnet_server(str(root), max_blksize=1024) as server, RawPeer() as peer:
        # unknown options are ignored; blksize above the maximum is lowered; tsize is the size
        peer.send(codec.encode_rrq("f.bin", options={"color": "blue", "blksize": 4000, "tsize": 0}), server.port)
        oack, tid = peer.recv()
        assert oack == codec.OptionAck({"blksize": "1024", "tsize": "3000"})
        peer.send(codec.encode_ack(0), tid)
        assert len(peer.recv()[0].payload) == 1024
        peer.send(codec.encode_error(0, "enough"), tid)
        # an invalid value is refused with ERROR 8
        peer.send(codec.encode_rrq("f.bin", options={"blksize": "7"}), server.port)
        assert peer.recv()[0].code == 8
        peer.send(codec.encode_rrq("f.bin", options={"timeout": "0"}), server.port)
        assert peer.recv()[0].code == 8
        # no option understood: plain RFC 1350, 512-byte DATA 1 straight away
        peer.send(codec.encode_rrq("f.bin", options={"color": "red"}), server.port)
        first, tid = peer.recv()
        assert type(first) is codec.Data and first.block == 1 and len(first.payload) == 512
        peer.send(codec.encode_error(0, "enough"), tid)


def test_window_gap_resumes_after_the_last_good_block(root):
    data = fill(str(root / "f.bin"), 512 * 10)
    with fastnet_server(str(root), timeout=5.0) as server, RawPeer() as peer:
        peer.send(codec.encode_rrq("f.bin", options={"windowsize": 4}), server.port)
        oack, tid = peer.recv()
        assert oack == codec.OptionAck({"windowsize": "4"})
        peer.send(codec.encode_ack(0), tid)
        assert [peer.recv()[0].block for _ in range(4)] == [1, 2, 3, 4]
        peer.send(codec.encode_ack(2), tid)  # "3 went missing"
        window = [peer.recv()[0] for _ in range(4)]
        assert [p.block for p in window] == [3, 4, 5, 6]
        assert window[0].payload == data[1024:1536]


def test_access_log_has_one_line_per_transfer(root, caplog):
    caplog.set_level(logging.INFO, logger="fastnet.tftp.access")
    fill(str(root / "f.bin"), 1234)
    with fastnet_server(str(root)) as server:
        get(server.port, "f.bin", blksize=600)
    lines = [r.getMessage() for r in caplog.records if r.name == "fastnet.tftp.access"]
    assert len(lines) == 1
    line = lines[0]
    for part in ("peer=127.0.0.1:", "file='f.bin'", "direction=read", "bytes=1234", "seconds=",
                 "blksize=600", "tsize=1234", "outcome=ok"):
        assert part in line


def test_ipv6(root):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    data = fill(str(root / "f.bin"), 9000)
    with fastnet_server(str(root), host="::1") as server:
        sink = _io()
        stats = client.download("::1", "f.bin", sink, port=server.port, blksize=1000)
    assert bytes(sink.data) == data and stats.options["blksize"] == 1000


def test_close_lets_running_transfers_finish(root):
    import asyncio

    from fastnet import loop as _loop
    from fastnet.tftp.server import TftpServer

    data = fill(str(root / "f.bin"), 512 * 40)
    results = {}

    async def main():
        server = TftpServer(str(root), port=0, timeout=5.0, grace=10.0)
        await server.start()
        loop = asyncio.get_running_loop()
        # a slow client: the transfer is running when close() is called
        peer = RawPeer()
        peer.send(codec.encode_rrq("f.bin"), server.port)
        first, tid = await loop.run_in_executor(None, peer.recv)
        closing = asyncio.ensure_future(server.close())
        await asyncio.sleep(0.05)
        got = first.payload
        block = 1
        while True:
            peer.send(codec.encode_ack(block), tid)
            if block == 41:
                break
            packet, _ = await loop.run_in_executor(None, peer.recv)
            block = packet.block
            got += packet.payload
        await closing
        peer.sock.close()
        results["raw"] = got

    _loop.run(main())
    assert results["raw"] == data


def test_window_is_capped_by_bytes(root):
    fill(str(root / "f.bin"), 1000)
    with fastnet_server(str(root), max_window_bytes=1 << 20) as server, RawPeer() as peer:
        peer.send(codec.encode_rrq("f.bin", options={"blksize": 65464, "windowsize": 64}), server.port)
        oack, tid = peer.recv()
        peer.send(codec.encode_error(0, "enough"), tid)
    assert oack == codec.OptionAck({"blksize": "65464", "windowsize": "16"})
