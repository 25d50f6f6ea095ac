"""``python -m fastnet.tftp``: get, put and serve as a user runs them."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from conftest import free_port, require_ipv6_loopback
from tftp_helpers import RawPeer, fastnet_server, fill, wait_for_tftp

from fastnet.tftp import __main__ as cli_main
from fastnet.tftp import TftpRemoteError, client, codec
from fastnet.tftp._transfer import TransferStats

PROG = "python -m fastnet.tftp"


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


def test_serve_quiet_still_prints_the_start_line_with_the_chosen_port(root, tmp_path, impl_env):
    # --help: "0 picks a free one, shown in the log" -- but --quiet hid that line, so the port
    # chosen was nowhere to be seen
    data = fill(str(root / "f.bin"), 3_000)
    proc = subprocess.Popen([sys.executable, "-m", "fastnet.tftp", "serve", str(root), "--port", "0", "--quiet",
                             "--grace", "0"], env=impl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(30, proc.kill)  # a server that never prints its line must not hang the test
    watchdog.start()
    try:
        first = proc.stderr.readline().decode()
        m = re.search(r"tftp: serving (.+) on 127\.0\.0\.1:(\d+) \(read-only\)$", first.rstrip("\n"))
        assert m, (first, proc.poll())
        port = int(m.group(2))
        assert port != 0
        client.download("127.0.0.1", "f.bin", str(tmp_path / "f.bin"), port=port, timeout=0.2)
        assert (tmp_path / "f.bin").read_bytes() == data
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out == b""
    assert err == b""  # quiet otherwise: no access log line, no "stopped"


@contextlib.contextmanager
def _serving(root, *options, env, lines=1):
    """`python -m fastnet.tftp serve ROOT --port 0 --grace 0 OPTIONS` in a child process: yields
    (its pid, its port, the first *lines* lines it logs, the last one the start line); SIGTERM at
    the end, a kill if it does not stop or never starts."""
    proc = subprocess.Popen([sys.executable, "-m", "fastnet.tftp", "serve", str(root), "--port", "0", "--grace", "0",
                             *options], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        logged = [proc.stderr.readline() for _ in range(lines)]
        port = int(re.search(r"on 127\.0\.0\.1:(\d+) ", logged[-1]).group(1))
        yield proc.pid, port, logged
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_serve_limits_per_client_and_window_from_the_command_line(root, impl_env):
    fill(str(root / "f.bin"), 100_000)
    options = ("--quiet", "--max-per-client", "1", "--max-windowsize", "4", "--max-window-bytes", "2048")
    with _serving(root, *options, env=impl_env) as (_, port, _):
        with RawPeer() as one, RawPeer() as two, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            one.send(codec.encode_rrq("f.bin", options={"blksize": 256, "windowsize": 16}), port)
            by_count, _ = one.recv()  # 4 at most (4 x 256 bytes is within 2048)
            two.send(codec.encode_rrq("f.bin", options={"blksize": 256}), port)
            refused, _ = two.recv()  # the same address, a second transfer
            other.bind(("127.0.0.2", 0))
            other.settimeout(5)
            other.sendto(codec.encode_rrq("f.bin", options={"blksize": 1024, "windowsize": 16}), ("127.0.0.1", port))
            by_bytes = codec.decode(other.recvfrom(1000)[0])  # 2048 bytes at most: 2 x 1024
    assert by_count == codec.OptionAck({"blksize": "256", "windowsize": "4"})
    assert by_bytes == codec.OptionAck({"blksize": "1024", "windowsize": "2"})
    assert refused == codec.Error(0, "server busy: too many transfers from your address, try again later")


def test_serve_user_drops_root_after_binding_and_files_follow_that_users_permissions(impl_env):
    # As root on port 69 the server read any file under its root, mode 000 or not, and wrote as
    # root.  --user (as tftpd-hpa's -u): bound as root, then nobody, for good.
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    base = tempfile.mkdtemp(prefix="fastnet-user-")  # not under pytest's 0700 directory
    try:
        os.chmod(base, 0o755)
        (open_file := os.path.join(base, "open.bin"))
        with open(open_file, "wb") as f:
            f.write(b"for everyone")
        os.chmod(open_file, 0o644)
        with open(os.path.join(base, "secret.bin"), "wb") as f:
            f.write(b"root only")
        os.chmod(os.path.join(base, "secret.bin"), 0o600)
        with _serving(base, "--write", "--user", "nobody", env=impl_env, lines=2) as (pid, port, lines):
            with open(f"/proc/{pid}/status") as f:
                ids = [line.split()[1:] for line in f if line.startswith(("Uid:", "Gid:"))]
            got = client.download("127.0.0.1", "open.bin", io.BytesIO(), port=port, timeout=0.5)
            with pytest.raises(TftpRemoteError) as read_refused:
                client.download("127.0.0.1", "secret.bin", io.BytesIO(), port=port, timeout=0.5)
            with pytest.raises(TftpRemoteError) as write_refused:  # the directory is root's, 0755
                client.upload("127.0.0.1", io.BytesIO(b"x"), "new.bin", port=port, timeout=0.5)
    finally:
        shutil.rmtree(base)
    assert "tftp: running as user nobody" in lines[0]  # the switch, then the start line
    assert ids == [[str(nobody.pw_uid)] * 4, [str(nobody.pw_gid)] * 4]  # real, effective, saved, fs
    assert got.bytes == len(b"for everyone")
    assert (read_refused.value.code, read_refused.value.message) == (2, "cannot read the file: Permission denied")
    assert (write_refused.value.code, write_refused.value.message) == (2, "cannot create the file: Permission denied")


def test_serve_user_names_the_problem_in_one_line(tmp_path, impl_env):
    err = one_line_error(cli(["serve", str(tmp_path), "--port", "0", "--user", "no-such-user-here"], impl_env))
    assert err.strip() == "python -m fastnet.tftp serve: no such user: 'no-such-user-here'"


def test_serve_help_says_quiet_keeps_the_start_line():
    text = " ".join(cli_main.build_parser()._subparsers._group_actions[0].choices["serve"].format_help().split())
    assert "0 picks a free one, shown in the log" in text
    assert "--quiet, -q log only the start line (with the port) and warnings" in text


def test_serve_failures_are_one_line_messages(tmp_path, impl_env):
    err = one_line_error(cli(["serve", str(tmp_path / "missing"), "--port", "0"], impl_env))
    assert "not a directory" in err
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        err = one_line_error(cli(["serve", str(tmp_path), "--port", str(port)], impl_env))
    assert err.strip().endswith(f"serve: cannot bind 127.0.0.1:{port}: Address already in use")


def test_progress_bar_only_on_a_terminal(root, tmp_path, impl_env):
    import fcntl
    import pty
    import termios

    fill(str(root / "f.bin"), 300_000)
    master, slave = pty.openpty()
    # a 90-column terminal: the bar must fit it, not the fallback of 80 columns, nor a fixed 100
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 90, 0, 0))
    env = {k: v for k, v in impl_env.items() if k not in ("COLUMNS", "LINES")}
    try:
        with fastnet_server(str(root)) as server:
            r = subprocess.run([sys.executable, "-m", "fastnet.tftp", "get", "127.0.0.1", "f.bin",
                                str(tmp_path / "f.bin"), "--port", str(server.port), "--timeout", "0.2"],
                               env=env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
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
    frames = text.split("\r")
    assert "\n" not in text and max(len(f) for f in frames) <= 89, frames  # never wraps onto a new line
    assert any("[#" in f and len(f) > 79 for f in frames), frames  # the terminal's own width is used
    assert not [f for f in frames if " 0 B of " in f and "ETA" in f], frames  # no ETA before there is a rate


def _frames(written: str) -> list[str]:
    return [f for f in written.split("\r") if f.strip()]


@pytest.mark.parametrize("columns", [120, 80, 60, 30, 12])
def test_progress_bar_fits_the_terminal_and_shows_no_eta_before_a_rate(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))  # a stream without a terminal: $COLUMNS tells the width
    out = io.StringIO()
    bar = cli_main._ProgressBar(out)
    stats = TransferStats(filename="f", direction="download", total=3_000_000)
    bar(stats)  # before any byte has arrived: no rate, so no ETA
    first = _frames(out.getvalue())
    assert len(first) == 1 and "ETA" not in first[0] and len(first[0]) <= columns - 1, first
    stats.bytes, stats.seconds, stats.retransmissions = 1_500_000, 0.5, 3
    bar(stats)
    stats.bytes, stats.seconds = 3_000_000, 1.0
    bar(stats)
    bar.close()
    written = out.getvalue()
    assert "\n" not in written and all(len(f) <= columns - 1 for f in written.split("\r")), written
    middle = _frames(written)[1]
    if columns >= 80:  # room for every field: the bar narrows or goes first
        assert middle.endswith(" 50.0% 1.4 MiB of 2.9 MiB, ETA 0.5 s, 2.9 MiB/s, 3 retransmitted"), middle
    if columns == 120:
        assert middle.startswith("[" + "#" * 12 + "." * 12 + "]"), middle
    assert written.endswith("\r"), written  # close() leaves the line blank, the cursor at its start
    # a line without a known size has no percentage, no bar, no ETA
    out = io.StringIO()
    bar = cli_main._ProgressBar(out)
    bar(TransferStats(filename="f", direction="upload", bytes=2048, seconds=1.0))
    (line,) = _frames(out.getvalue())
    assert line.startswith("2.0 KiB, 2.0 KiB/s"[: columns - 1]) and "ETA" not in line and "%" not in line


BAD_ARGUMENTS = [
    (["get", "127.0.0.1", "f", "-t", "inf"], "--timeout"),
    (["get", "127.0.0.1", "f", "-t", "nan"], "--timeout"),
    (["put", "127.0.0.1", "f", "-t", "1e20"], "--timeout"),
    (["get", "127.0.0.1", "f", "-t", "256"], "--timeout"),
    (["get", "127.0.0.1", "f", "-t", "0"], "--timeout"),
    (["serve", "root", "--timeout", "inf"], "--timeout"),
    (["get", "127.0.0.1", "f", "-P", "70000"], "--port"),
    (["get", "127.0.0.1", "f", "-P", "65536"], "--port"),
    (["put", "127.0.0.1", "f", "-P", "-1"], "--port"),
    (["get", "127.0.0.1", "f", "-P", "0"], "--port"),
    (["serve", "root", "--port", "65536"], "--port"),
    (["serve", "root", "--port", "70000"], "--port"),
    (["serve", "root", "--port", "-5"], "--port"),
    (["get", "127.0.0.1", "f", "-r", "-1"], "--retries"),
    (["put", "127.0.0.1", "f", "-r", "100000000000"], "--retries"),
    (["serve", "root", "--retries", "-1"], "--retries"),
    (["serve", "root", "--max-sessions", "0"], "--max-sessions"),
    (["serve", "root", "--grace", "-1"], "--grace"),
    (["serve", "root", "--grace", "nan"], "--grace"),
    (["get", "127.0.0.1", "f", "-b", "7"], "--blksize"),
    (["put", "127.0.0.1", "f", "-b", "65465"], "--blksize"),
    (["get", "127.0.0.1", "f", "-w", "0"], "--windowsize"),
    (["get", "127.0.0.1", "f", "-w", "65536"], "--windowsize"),
]


@pytest.mark.parametrize("argv, option", BAD_ARGUMENTS, ids=[" ".join(a[0][:1] + a[0][-2:]) for a in BAD_ARGUMENTS])
def test_bad_numbers_are_refused_by_the_parser(capsys, argv, option):
    with pytest.raises(SystemExit) as info:
        cli_main.build_parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one line, as every other failure
    assert err.startswith(f"{PROG} {argv[0]}: argument {option}"), err


@pytest.mark.parametrize("command", ["get", "put"])
@pytest.mark.parametrize("port", ["0", "65536", "70000", "-1"])
def test_a_client_port_out_of_range_always_says_1_to_65535(capsys, command, port):
    # -P 0 said "1-65535" but -P 65536 said "0-65535": the client's range is 1-65535 either way
    with pytest.raises(SystemExit) as info:
        cli_main.build_parser().parse_args([command, "127.0.0.1", "f", "-P", port])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"{PROG} {command}: argument --port/-P: port must be 1-65535, not {port} (see --help)\n"


def test_numbers_at_the_edges_are_accepted():
    parse = cli_main.build_parser().parse_args
    args = parse(["get", "127.0.0.1", "f", "-P", "65535", "-t", "0.01", "-r", "0", "-b", "8", "-w", "65535"])
    assert (args.port, args.timeout, args.retries, args.blksize, args.windowsize) == (65535, 0.01, 0, 8, 65535)
    args = parse(["put", "127.0.0.1", "f", "-P", "1", "-t", "255", "-b", "65464", "-w", "1"])
    assert (args.port, args.timeout, args.blksize, args.windowsize) == (1, 255.0, 65464, 1)
    args = parse(["serve", "root", "--port", "0", "--max-sessions", "1", "--grace", "0", "--timeout", "0.5",
                  "--retries", "0"])
    assert (args.port, args.max_sessions, args.grace, args.timeout, args.retries) == (0, 1, 0.0, 0.5, 0)


def test_the_auditors_bad_numbers_end_in_one_line_and_status_2(root, tmp_path, impl_env):
    # end to end, as reported: tracebacks, a port silently wrapped (70000 -> 4464), a misleading message
    local = tmp_path / "up.bin"
    local.write_bytes(b"x")
    closed = str(free_port(socket.SOCK_DGRAM))
    for argv in (["get", "127.0.0.1", "f", str(tmp_path / "f"), "-t", "inf", "-P", closed],
                 ["put", "127.0.0.1", str(local), "-t", "1e20", "-P", closed],
                 ["serve", str(root), "--port", "65536"],
                 ["serve", str(root), "--port", "-5"],
                 ["get", "127.0.0.1", "f", str(tmp_path / "f"), "-P", "70000", "-t", "0.05", "-r", "0"],
                 ["get", "127.0.0.1", "f", str(tmp_path / "f"), "-P", "-1"]):
        r = cli(argv, impl_env, timeout=30)
        err = one_line_error(r)
        assert r.returncode == 2 and "argument --" in err, (argv, err)
    assert sorted(os.listdir(tmp_path)) == ["root", "up.bin"]


@pytest.mark.parametrize("error", [OverflowError("cannot convert float infinity to integer"),
                                   struct.error("argument out of range")], ids=["OverflowError", "struct.error"])
def test_an_unforeseen_exception_is_still_one_line(monkeypatch, capsys, tmp_path, error):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(client, "download", broken)
    status = cli_main.main(["get", "127.0.0.1", "f", str(tmp_path / "f"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 1
    assert err == f"{PROG} get: unexpected error: {type(error).__name__}: {error}\n"


def test_bracketed_ipv6_literals(root, tmp_path, impl_env):
    require_ipv6_loopback()
    data = fill(str(root / "f.bin"), 5_000)
    with fastnet_server(str(root), host="::1", allow_write=True) as server:
        port = str(server.port)
        r = cli(["get", "[::1]", "f.bin", str(tmp_path / "got.bin"), "--port", port, "--timeout", "0.2"], impl_env)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "got.bin").read_bytes() == data
        r = cli(["put", "[::1]", str(tmp_path / "got.bin"), "up.bin", "--port", port, "--timeout", "0.2"], impl_env)
        assert r.returncode == 0, r.stderr
    assert (root / "up.bin").read_bytes() == data
    port = free_port(socket.SOCK_DGRAM, "::1")
    proc = subprocess.Popen([sys.executable, "-m", "fastnet.tftp", "serve", str(root), "--host", "[::1]",
                             "--port", str(port), "--grace", "0"], env=impl_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        try:
            wait_for_tftp(port, host="::1")
        except RuntimeError:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"serve --host [::1] did not come up: {err.decode()}")
        client.download("::1", "f.bin", str(tmp_path / "served.bin"), port=port, timeout=0.2)
        assert (tmp_path / "served.bin").read_bytes() == data
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"on [::1]:{port}" in err.decode()
    # brackets around something that is not an IPv6 literal are left alone: a name that cannot resolve
    err = one_line_error(cli(["get", "[localhost]", "f", str(tmp_path / "x"), "--port", "9"], impl_env))
    assert "cannot resolve '[localhost]'" in err


SIGNALS = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}


def _stop_with(proc, sig, seconds=10):
    """Send *sig* to the client *proc*; its exit status and stderr once it has ended (bounded in time)."""
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        pytest.fail(f"the client was still running {seconds} s after {sig.name}")
    return proc.returncode, err.decode()


@pytest.mark.parametrize("command", ["get", "put"])
@pytest.mark.parametrize("sig", list(SIGNALS), ids=lambda s: s.name)
def test_a_signal_while_waiting_for_the_server_ends_get_and_put_cleanly(tmp_path, impl_env, command, sig):
    # the server takes the request and never answers: the client waits (in Python) for its first answer
    status, word = SIGNALS[sig]
    work = tmp_path / "work"
    work.mkdir()
    (work / "up.bin").write_bytes(b"u" * 5000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))
        mute.settimeout(10)
        files = ["f.bin", str(work / "f.bin")] if command == "get" else [str(work / "up.bin"), "up.bin"]
        proc = subprocess.Popen([sys.executable, "-m", "fastnet.tftp", command, "127.0.0.1", *files, "--port",
                                 str(mute.getsockname()[1]), "--timeout", "30", "--retries", "1"],
                                env=impl_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            mute.recvfrom(1024)  # the request: the temporary file of a download exists by now
            code, err = _stop_with(proc, sig)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert code == status, err
    assert err == f"{PROG} {command}: {word}\n"
    assert sorted(os.listdir(work)) == ["up.bin"]  # no partial download, hidden or not


@pytest.mark.parametrize("sig", list(SIGNALS), ids=lambda s: s.name)
def test_a_signal_in_the_middle_of_a_download_removes_the_partial_file(tmp_path, impl_env, sig):
    # the server sends block 1, takes its ACK and goes silent: the client waits for block 2 in
    # the transfer engine (an octet download to a file goes there after the first block)
    status, word = SIGNALS[sig]
    work = tmp_path / "work"
    work.mkdir()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(10)
        proc = subprocess.Popen([sys.executable, "-m", "fastnet.tftp", "get", "127.0.0.1", "f.bin",
                                 str(work / "f.bin"), "--port", str(server.getsockname()[1]), "--timeout", "30",
                                 "--retries", "1"],
                                env=impl_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _, addr = server.recvfrom(1024)  # the RRQ
            server.sendto(codec.encode_data(1, b"d" * 512), addr)  # ignores the options: 512-byte blocks
            ack, _ = server.recvfrom(1024)
            assert ack == codec.encode_ack(1)
            assert [n for n in os.listdir(work) if n.endswith(".part")], os.listdir(work)
            time.sleep(0.3)  # the client is now waiting for block 2
            code, err = _stop_with(proc, sig)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert code == status, err
    assert err == f"{PROG} get: {word}\n"
    assert os.listdir(work) == []  # the partial file is gone and nothing was renamed into place


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
