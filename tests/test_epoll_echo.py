"""``python -m fastnet.epoll_echo``: driven as a subprocess on an ephemeral port."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

START = re.compile(
    r"^fastnet epoll_echo: (tcp|udp) echo on (\S+):(\d+) \(engine (relay|loop), implementation (c|python)(, (\d+) workers)?\)$"
)


class _EchoServer:
    def __init__(self, impl_env, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastnet.epoll_echo", "--port", "0", *args],
            env=impl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        )
        # A thread reads stdout line by line: select() on a buffered pipe misses lines that an
        # earlier readline() already pulled into the buffer.
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        line = self.readline()
        m = START.match(line.rstrip("\n"))
        assert m, repr(line) + self.proc.stderr.read()
        self.proto, self.host, self.port, self.engine, self.implementation = m.group(1, 2, 3, 4, 5)
        self.port = int(self.port)
        self.workers = int(m.group(7) or 1)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def readline(self, timeout=20.0):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("server printed nothing") from None

    def stop(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=20)
        self.reader.join(20)
        err = self.proc.stderr.read()
        out = []
        while not self.lines.empty():
            out.append(self.lines.get())
        return self.proc.returncode, "".join(out), err


@pytest.fixture
def echo_server(impl_env):
    servers = []

    def start(*args):
        s = _EchoServer(impl_env, *args)
        servers.append(s)
        return s

    yield start
    for s in servers:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(timeout=20)
        s.reader.join(20)
        s.proc.stdout.close()
        s.proc.stderr.close()


def _tcp_echo(port, payload, host="127.0.0.1"):
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            assert chunk
            got += chunk
        return got


@pytest.mark.parametrize("engine", ["relay", "loop"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_tcp_echo_then_signal_prints_statistics(echo_server, implementation, engine, sig):
    srv = echo_server("--engine", engine)
    assert (srv.proto, srv.host, srv.engine) == ("tcp", "127.0.0.1", engine)
    if engine == "relay":
        assert srv.implementation == implementation
    payload = bytes(range(256)) * 400
    assert _tcp_echo(srv.port, payload) == payload
    assert _tcp_echo(srv.port, b"second") == b"second"
    code, out, err = srv.stop(sig)
    assert code == 0, err
    assert "Traceback" not in err
    m = re.search(r"stopped: (\d+) connections, (\d+) messages, (\d+) bytes", out)
    assert m, out
    assert int(m.group(1)) == 2
    assert int(m.group(3)) == len(payload) + 6


@pytest.mark.parametrize("engine", ["relay", "loop"])
def test_udp_echo(echo_server, engine):
    srv = echo_server("--udp", "--engine", engine)
    assert srv.proto == "udp"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        for payload in (b"", b"x", b"y" * 65507):
            u.sendto(payload, ("127.0.0.1", srv.port))
            assert u.recv(70000) == payload
    code, out, err = srv.stop(signal.SIGTERM)
    assert code == 0, err
    assert "0 connections, 3 messages, 65508 bytes" in out


def test_verbose_prints_like_the_notes(echo_server):
    srv = echo_server("--verbose")
    assert srv.engine == "loop"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        client = s.getsockname()
        s.sendall("你好, epoll".encode())
        assert s.recv(100) == "你好, epoll".encode()
        s.sendall(b"bad \xff\xfe bytes")
        assert s.recv(100) == b"bad \xff\xfe bytes"
    lines = [srv.readline() for _ in range(4)]
    assert lines[0] == "有新的客户端到来%s\n" % str(client)
    assert lines[1] == "recv:你好, epoll\n"
    assert lines[2] == "recv:bad \\xff\\xfe bytes\n"
    assert lines[3] == "%s---offline---\n" % str(client)
    code, out, err = srv.stop()
    assert code == 0 and "Traceback" not in err


def test_two_workers(echo_server):
    srv = echo_server("--workers", "2")
    assert srv.workers == 2 and srv.engine == "relay"
    for i in range(10):
        assert _tcp_echo(srv.port, b"n%d" % i) == b"n%d" % i
    code, out, err = srv.stop(signal.SIGINT)
    assert code == 0, err
    assert "stopped: 10 connections" in out


def _worker_pids(supervisor: int) -> set[int]:
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == supervisor:
                        kids.add(int(entry))
            except OSError:
                continue
    return kids


def _in_loop(pid: int) -> bool:
    """Whether the worker has its epoll: its stop signal is armed by then."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[eventpoll]" for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def _until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_workers_of_a_killed_supervisor_exit_without_a_traceback(echo_server):
    srv = echo_server("--workers", "2")
    assert _until(lambda: len(_worker_pids(srv.proc.pid)) == 2)
    workers = _worker_pids(srv.proc.pid)
    assert _until(lambda: all(_in_loop(w) for w in workers))
    for i in range(6):
        assert _tcp_echo(srv.port, b"k%d" % i) == b"k%d" % i
    srv.proc.kill()
    srv.proc.wait(timeout=20)
    # the death signal stops them; their statistics have no reader left, which is no error
    assert _until(lambda: not any(os.path.exists(f"/proc/{w}") for w in workers))
    err = srv.proc.stderr.read()  # complete: the workers, which shared it, are gone
    assert err == ""


def test_ipv6(echo_server):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    srv = echo_server("--host", "::1")
    assert srv.host == "[::1]"
    assert _tcp_echo(srv.port, b"v6", host="::1") == b"v6"
    assert srv.stop()[0] == 0


def test_port_in_use_is_a_one_line_error(echo_server, impl_env):
    srv = echo_server()
    out = subprocess.run(
        [sys.executable, "-m", "fastnet.epoll_echo", "--port", str(srv.port)],
        env=impl_env, capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_workers_need_the_relay_engine(impl_env):
    out = subprocess.run(
        [sys.executable, "-m", "fastnet.epoll_echo", "--port", "0", "--engine", "loop", "--workers", "2"],
        env=impl_env, capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 2
    assert "--workers needs the relay engine" in out.stderr


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
def test_verbose_escapes_line_breaks_inside_a_message(echo_server, udp):
    # one recv: line per message, as every other example prints it (fastnet._cli.show): the
    # line break inside "a\nb" used to be printed as is, so "b" looked like a line of its own
    srv = echo_server("--verbose", *(["--udp"] if udp else []))
    if udp:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(b"a\nb\r\nc\xff", ("127.0.0.1", srv.port))
            assert u.recv(100) == b"a\nb\r\nc\xff"
    else:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(b"a\nb\r\nc\xff")
            got = b""
            while len(got) < 7:
                got += s.recv(100)
            assert got == b"a\nb\r\nc\xff"
        assert srv.readline().startswith("有新的客户端到来")
    assert srv.readline() == "recv:a\\nb\\r\\nc\\xff\n"
    code, out, err = srv.stop()
    assert code == 0 and "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [["--engine", "relay"], ["--engine", "loop"], ["--workers", "2"], ["--udp"], ["--udp", "--engine", "loop"]],
    ids=["relay", "loop", "relay-2-workers", "relay-udp", "loop-udp"],
)
def test_duration_stops_the_server_with_its_statistics_as_ctrl_c_does(echo_server, args):
    # Every other example can be bounded with --duration; epoll_echo could only be killed.
    # The bound holds while a client stays connected and silent.
    started = time.monotonic()
    srv = echo_server("--duration", "1.5", *args)
    if srv.proto == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(b"ping", ("127.0.0.1", srv.port))
            assert u.recv(100) == b"ping"
        expected = "stopped: 0 connections, 1 messages, 4 bytes"
        idle = None
    else:
        assert _tcp_echo(srv.port, b"ping") == b"ping"
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        expected = "stopped: 2 connections, 1 messages, 4 bytes"
    try:
        srv.proc.wait(timeout=20)  # no signal: it ends by itself
        elapsed = time.monotonic() - started
        srv.reader.join(20)
        out = []
        while not srv.lines.empty():
            out.append(srv.lines.get())
        err = srv.proc.stderr.read()
        assert srv.proc.returncode == 0, err
        assert err == ""
        assert "".join(out) == f"fastnet epoll_echo: {expected}\n"
        assert elapsed >= 1.5
        if idle is not None:
            idle.settimeout(5)
            assert idle.recv(10) == b""  # and the silent client's connection is closed
    finally:
        if idle is not None:
            idle.close()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_duration_is_checked_as_the_other_examples_check_it(impl_env, value):
    out = subprocess.run(
        [sys.executable, "-m", "fastnet.epoll_echo", "--port", "0", "--duration", value],
        env=impl_env, capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 2
    assert out.stdout == ""
    assert "error: argument --duration: " in out.stderr and "Traceback" not in out.stderr


def test_help_names_the_duration(impl_env):
    out = subprocess.run(
        [sys.executable, "-m", "fastnet.epoll_echo", "--help"], env=impl_env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    assert "--duration SECONDS" in out.stdout
