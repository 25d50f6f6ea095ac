"""``python -m fastnet.tftp``: get, put and serve as a user runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import free_port
from tftp_helpers import fastnet_server, fill, wait_for_tftp

from fastnet.tftp import client


def cli(args, env, cwd=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "fastnet.tftp", *args], env=env, cwd=cwd,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def one_line_error(result) -> str:
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "root"
    d.mkdir()
    return d


def test_get_and_put(root, tmp_path, impl_env):
    data = fill(str(root / "f.bin"), 70_000)
    with fastnet_server(str(root), allow_write=True) as server:
        port = str(server.port)
        r = cli(["get", "127.0.0.1", "f.bin", str(tmp_path / "got.bin"), "--port", port, "--blksize", "1468",
                 "--windowsize", "4", "--timeout", "0.2"], impl_env)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "got.bin").read_bytes() == data
        summary = r.stdout.decode()
        assert summary.startswith("received f.bin: 70000 bytes") and "blksize=1468" in summary
        assert r.stderr == b""  # no progress bar when stderr is not a terminal
        # LOCAL defaults to the remote base name, in the current directory
        r = cli(["get", "127.0.0.1", "f.bin", "--port", port, "--timeout", "0.2", "--quiet"], impl_env, cwd=tmp_path)
        assert r.returncode == 0 and r.stdout == b"" and (tmp_path / "f.bin").read_bytes() == data
        r = cli(["put", "127.0.0.1", str(tmp_path / "got.bin"), "copy.bin", "--port", port, "--timeout", "0.2"], impl_env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().startswith("sent copy.bin: 70000 bytes")
    assert (root / "copy.bin").read_bytes() == data


def test_dash_is_standard_output_for_get_and_standard_input_for_put(root, tmp_path, impl_env):
    data = fill(str(root / "f.bin"), 300_000, seed=3)
    with fastnet_server(str(root), allow_write=True) as server:
        port = str(server.port)
        for extra in ([], ["--blksize", "1468", "--windowsize", "8"], ["--netascii"]):
            r = cli(["get", "127.0.0.1", "f.bin", "-", "--port", port, "--timeout", "0.2", *extra], impl_env)
            assert r.returncode == 0, r.stderr
            if "--netascii" not in extra:
                assert r.stdout == data
            # the summary moves to stderr, out of the data's way
            assert r.stderr.decode().startswith("received f.bin: ")
        assert not (tmp_path / "-").exists() and not os.path.exists("-")
        up = subprocess.run([sys.executable, "-m", "fastnet.tftp", "put", "127.0.0.1", "-", "in.bin", "--port", port,
                             "--timeout", "0.2"], env=impl_env, input=data, capture_output=True, timeout=60)
        assert up.returncode == 0, up.stderr
        assert up.stdout.decode().startswith("sent in.bin: 300000 bytes")
        assert (root / "in.bin").read_bytes() == data
        # without REMOTE there is no name to upload standard input as
        r = cli(["put", "127.0.0.1", "-", "--port", port], impl_env)
        assert r.returncode == 2 and "put from standard input needs REMOTE" in one_line_error(r)


def test_netascii_get(root, tmp_path, impl_env):
    (root / "t.txt").write_bytes(b"a\nb\r\nc")
    with fastnet_server(str(root)) as server:
        r = cli(["get", "127.0.0.1", "t.txt", str(tmp_path / "t.txt"), "--port", str(server.port), "--netascii",
                 "--timeout", "0.2"], impl_env)
    assert r.returncode == 0 and (tmp_path / "t.txt").read_bytes() == b"a\nb\r\nc"


def test_failures_are_one_line_messages(root, tmp_path, impl_env):
    (tmp_path / "keep").write_bytes(b"keep")
    with fastnet_server(str(root)) as server:
        port = str(server.port)
        err = one_line_error(cli(["get", "127.0.0.1", "absent", str(tmp_path / "keep"), "--port", port], impl_env))
        assert "file not found" in err
        err = one_line_error(cli(["put", "127.0.0.1", str(tmp_path / "keep"), "--port", port], impl_env))
        assert "access violation" in err
        err = one_line_error(cli(["put", "127.0.0.1", str(tmp_path / "missing"), "--port", port], impl_env))
        assert "No such file" in err
        err = one_line_error(cli(["get", "127.0.0.1", "x", "--port", port, "--blksize", "70000"], impl_env))
        assert "blksize" in err
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:  # takes requests, never answers
        mute.bind(("127.0.0.1", 0))
        err = one_line_error(cli(["get", "127.0.0.1", "x", str(tmp_path / "x"), "--port", str(mute.getsockname()[1]),
                                  "--timeout", "0.05", "--retries", "2"], impl_env))
    assert "no answer from the server after 2 retries" in err
    closed = str(free_port(socket.SOCK_DGRAM))  # nothing bound: the kernel refuses at once
    err = one_line_error(cli(["get", "127.0.0.1", "x", str(tmp_path / "x"), "--port", closed], impl_env))
    assert err.strip().endswith(f"get: no TFTP server at 127.0.0.1:{closed}: connection refused")
    err = one_line_error(cli(["get", "host.invalid", "x", str(tmp_path / "x")], impl_env))
    assert "resolve" in err
    # a local path that cannot be written: the message names it, not the temporary file beside it
    err = one_line_error(cli(["get", "127.0.0.1", "x", str(tmp_path / "no-dir" / "x"), "--port", closed], impl_env))
    assert err.strip().endswith(f"get: No such file or directory: {tmp_path / 'no-dir' / 'x'}")
    assert (tmp_path / "keep").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep", "root"]


def test_get_help_presents_it_as_the_notes_client():
    text = subprocess.run([sys.executable, "-m", "fastnet.tftp", "get", "--help"], capture_output=True,
                          timeout=30).stdout.decode()
    for phrase in ("notes", "hard-coded", "binary mode", "text mode", "transfer ID", "retransmitted", "port is 69"):
        assert phrase in text, phrase


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_a_signal(root, tmp_path, impl_env, sig):
    data = fill(str(root / "f.bin"), 10_000)
    port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([sys.executable, "-m", "fastnet.tftp", "serve", str(root), "--port", str(port),
                             "--grace", "2"], env=impl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_tftp(port)
        client.download("127.0.0.1", "f.bin", str(tmp_path / "f.bin"), port=port)
        assert (tmp_path / "f.bin").read_bytes() == data
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    log = err.decode()
    assert "file='f.bin' direction=read bytes=10000" in log and "outcome=ok" in log
    assert "stopped" in log


def test_serve_failures_are_one_line_messages(tmp_path, impl_env):
    err = one_line_error(cli(["serve", str(tmp_path / "missing"), "--port", "0"], impl_env))
    assert "not a directory" in err
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        err = one_line_error(cli(["serve", str(tmp_path), "--port", str(port)], impl_env))
    assert err.strip().endswith(f"serve: cannot bind 127.0.0.1:{port}: Address already in use")


def test_progress_bar_only_on_a_terminal(root, tmp_path, impl_env):
    import pty

    fill(str(root / "f.bin"), 300_000)
    master, slave = pty.openpty()
    try:
        with fastnet_server(str(root)) as server:
            r = subprocess.run([sys.executable, "-m", "fastnet.tftp", "get", "127.0.0.1", "f.bin",
                                str(tmp_path / "f.bin"), "--port", str(server.port), "--timeout", "0.2"],
                               env=impl_env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                               timeout=60)
        os.close(slave)
        slave = -1
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    assert r.returncode == 0
    text = shown.decode()
    assert "100.0%" in text and "of 293.0 KiB" in text and "retransmitted" in text and "ETA" in text
    assert r.stdout.decode().startswith("received f.bin: 300000 bytes")


@pytest.mark.parametrize("mode", ["octet", "netascii"])
def test_repeated_get_replaces_the_file_instead_of_appending(root, tmp_path, impl_env, mode):
    # The notes' client opened its output with open("test.jpg", "a"): a second download doubled the
    # file, and a longer old file kept its tail.  `get` must leave exactly the server's bytes.
    data = b"line one\nline two\n" * 200
    (root / "notes.txt").write_bytes(data)
    target = tmp_path / "notes.txt"
    target.write_bytes(b"an older, longer file that must not survive in any part\n" * 100)
    args = ["get", "127.0.0.1", "notes.txt", str(target), "--timeout", "0.2", "--quiet"]
    if mode == "netascii":
        args.append("--netascii")
    with fastnet_server(str(root)) as server:
        for _ in range(2):
            r = cli([*args, "--port", str(server.port)], impl_env)
            assert r.returncode == 0, r.stderr
            assert target.read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "root"]  # no temporary file left behind
