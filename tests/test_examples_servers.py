"""The notes' concurrent servers (python -m fastnet.servers ..., and the gevent one), as subprocesses.

Each server is checked for what the notes show, for the notes' bugs being fixed, and for a quiet
Ctrl-C (SIGINT to the subprocess: exit status 130, nothing on stderr).
"""

from __future__ import annotations

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

from conftest import require_module
from http_helpers import Example, cpu_seconds, run_example

SERVERS = "fastnet.servers"


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def name(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


# (module, example, echoes what it receives)
CONCURRENT = [
    pytest.param(SERVERS, "process", False, id="process"),
    pytest.param(SERVERS, "thread", False, id="thread"),
    pytest.param(SERVERS, "nonblocking", False, id="nonblocking"),
    pytest.param(SERVERS, "select", True, id="select"),
    pytest.param(SERVERS, "select-writelist", True, id="select-writelist"),
    pytest.param(SERVERS, "epoll", True, id="epoll"),
    pytest.param("fastnet.coroutines", "gevent-server", True, id="gevent-server"),
]


@pytest.mark.parametrize(("module", "example", "echoes"), CONCURRENT)
def test_a_slow_client_does_not_block_a_fast_one_and_ctrl_c_is_quiet(impl_env, module, example, echoes):
    if example == "gevent-server":
        require_module("gevent")
    extra = ["--ignore-stdin"] if example == "select" else []
    with Example(impl_env, module, example, "--port", "0", *extra) as server:
        slow = connect(server.port)
        slow.sendall(b"slow says hi")
        # the slow client is being served, and stays connected
        server.expect(lambda line: name(slow) in line and "slow says hi" in line)
        if echoes:
            assert recv_exactly(slow, 12) == b"slow says hi"
        fast = connect(server.port)
        fast.sendall("快 fast".encode())
        line = server.expect("快 fast")
        assert name(fast) in line  # logged with the fast client's own address
        if echoes:
            assert recv_exactly(fast, len("快 fast".encode())) == "快 fast".encode()
        fast_name = name(fast)
        fast.close()
        server.expect(lambda line: fast_name in line and ("closed" in line or "disconnected" in line or "offline" in line))
        # Ctrl-C with a client still connected: no traceback, and no child left holding it
        assert server.interrupt() == 130
        assert server.stderr() == ""
        slow.settimeout(5)
        try:
            assert slow.recv(10) == b""  # the connection was closed, by the server or its child
        except ConnectionResetError:
            pass  # closed too: a process ended with bytes unread sends a reset
        slow.close()


def test_single_process_server_makes_the_second_client_wait(impl_env):
    with Example(impl_env, SERVERS, "single", "--port", "0", "--count", "2") as server:
        first = connect(server.port)
        first.sendall(b"first")
        server.expect(f"recv[{name(first)}]: first")
        second = connect(server.port)  # the kernel completes the handshake: it waits in the listen queue
        second.sendall(b"second")
        waiting = server.drain(0.5)
        assert not any("second" in line for line in waiting), waiting  # nobody reads it yet
        first_name = name(first)
        first.close()
        server.expect(f"[{first_name}] closed")
        server.expect(f"recv[{name(second)}]: second")  # served only now
        second.close()
        assert server.wait() == 0  # --count 2


def test_nonblocking_server_survives_a_closed_client(impl_env):
    # the notes appended to an undefined g_needDelClientInfoList here: a NameError ended the server
    with Example(impl_env, SERVERS, "nonblocking", "--port", "0") as server:
        leaving, staying = connect(server.port), connect(server.port)
        server.expect(name(leaving))
        server.expect(name(staying))
        leaving_name = name(leaving)
        leaving.close()
        server.expect(f"[{leaving_name}] closed")
        staying.sendall(b"still here")
        server.expect(f"recv[{name(staying)}]: still here")
        assert server.proc.poll() is None
        staying.close()


def test_nonblocking_server_does_not_spin_while_idle(impl_env):
    # the notes' loop polled accept()/recv() without pause: 100 % of a core while nothing happens
    with Example(impl_env, SERVERS, "nonblocking", "--port", "0") as server:
        idle = connect(server.port)  # a client that says nothing: its socket is polled too
        server.expect(name(idle))
        before, start = cpu_seconds(server.proc.pid), time.monotonic()
        time.sleep(1.0)
        used, elapsed = cpu_seconds(server.proc.pid) - before, time.monotonic() - start
        assert used < 0.25 * elapsed, f"{used:.2f} s of CPU in {elapsed:.2f} s idle"
        idle.close()


def test_nonblocking_client_sends_random_numbers_on_every_connection(impl_env):
    with Example(impl_env, SERVERS, "nonblocking", "--port", "0", "--count", "4") as server:
        result = run_example(
            impl_env, SERVERS, "nonblocking-client", "--port", str(server.port), "-n", "4", "--rounds", "3", "--delay", "0"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[:4] == [f"{i} connected" for i in range(4)]
        assert server.wait() == 0  # --count 4: ends once its 4 clients have gone
    numbers: dict[str, list[int]] = {}
    for line in server.lines:
        m = re.match(r"recv\[(.+?)\]: (.*)$", line)
        if m:
            # TCP is a stream: several numbers may arrive in one recv() ("12\n7" shown as 12\n7)
            numbers.setdefault(m.group(1), []).extend(int(n) for n in m.group(2).split("\\n") if n)
    assert len(numbers) == 4
    assert all(len(got) == 3 and all(0 <= n <= 100 for n in got) for got in numbers.values()), numbers
    assert sum(line.endswith("] closed") for line in server.lines) == 4


def test_select_server_quits_on_a_line_from_stdin(impl_env):
    with Example(impl_env, SERVERS, "select", "--port", "0", stdin=subprocess.PIPE) as server:
        assert server.next_line() == "press Enter to stop"
        with connect(server.port) as client:
            client.sendall(b"echo me")
            assert recv_exactly(client, 7) == b"echo me"
            server.proc.stdin.write(b"\n")
            server.proc.stdin.flush()
            assert server.wait() == 0
            assert server.stderr() == ""


def test_writelist_server_returns_each_clients_own_messages_in_order(impl_env):
    with Example(impl_env, SERVERS, "select-writelist", "--port", "0") as server:
        a, b = connect(server.port), connect(server.port)
        server.expect(f"Client {name(a)} connected")
        server.expect(f"Client {name(b)} connected")
        # the notes logged every message with `addr`, the last accepted client (b): a's must say a
        a.sendall(b"a-1")
        server.expect(f"received a-1 from client {name(a)}")
        assert recv_exactly(a, 3) == b"a-1"
        sent = {a: [], b: []}
        for i in range(20):
            for sock, tag in ((a, "a"), (b, "b")):
                msg = f"{tag}{i:02d};".encode()
                sock.sendall(msg)
                sent[sock].append(msg)
        for sock in (a, b):
            expected = b"".join(sent[sock])
            assert recv_exactly(sock, len(expected)) == expected  # its own, in order, nothing else
        logged = [line for line in server.lines if line.startswith("received ")]
        for line in logged:
            m = re.match(r"received (.*) from client (\S+)$", line)
            assert m, line
            assert m.group(2) == name(a if m.group(1).startswith("a") else b), line
        # the notes never removed a client that closed: select() kept reporting it readable
        a_name = name(a)
        a.close()
        server.expect(f"Client {a_name} disconnected")
        b.sendall(b"b-last")
        assert recv_exactly(b, 6) == b"b-last"
        assert server.drain(0.3) == [f"received b-last from client {name(b)}"]  # nothing more about a
        b.close()


def test_epoll_server_reads_a_burst_until_eagain(impl_env):
    # edge-triggered: the notes read 1024 bytes per event, and the rest waited for the next event
    burst = bytes(range(48, 58)) * 1000  # 10000 bytes, "0123456789..."
    with Example(impl_env, SERVERS, "epoll", "--port", "0") as server, connect(server.port) as client:
        client.sendall(burst)
        assert recv_exactly(client, len(burst)) == burst
        server.drain(0.3)
        printed = "".join(line.split(": ", 1)[1] for line in server.lines if line.startswith("recv["))
        assert printed == burst.decode()


def test_epoll_server_accepts_every_client_of_one_edge_and_forgets_closed_ones(impl_env):
    with Example(impl_env, SERVERS, "epoll", "--port", "0") as server:
        clients = [connect(server.port) for _ in range(8)]  # several connections behind one edge
        for i, c in enumerate(clients):
            c.sendall(f"client {i}".encode())
        for i, c in enumerate(clients):
            assert recv_exactly(c, len(f"client {i}")) == f"client {i}".encode()
        names = [name(c) for c in clients]
        for c in clients:
            c.close()
        offline: dict[str, str] = {}
        while len(offline) < len(names):
            line = server.expect(" offline (")
            offline[line.split()[0]] = line
        assert sorted(offline) == sorted(names)
        # the notes kept closed sockets in their connections/addresses tables forever
        left = sorted(int(re.search(r"\((\d+) still connected\)", line).group(1)) for line in offline.values())
        assert left == list(range(len(names)))
        # a forgotten connection's fd is reused by the next client without confusion
        with connect(server.port) as again:
            again.sendall(b"again")
            assert recv_exactly(again, 5) == b"again"
            server.expect(f"recv[{name(again)}]: again")


def test_epoll_server_no_echo_only_prints(impl_env):
    with Example(impl_env, SERVERS, "epoll", "--port", "0", "--no-echo") as server, connect(server.port) as client:
        client.sendall(b"just print")
        server.expect(f"recv[{name(client)}]: just print")
        client.settimeout(0.3)
        with pytest.raises(socket.timeout):
            client.recv(10)


class _QuietListener:
    """A listening socket's stand-in: accept() times out *waits* times, then returns a client."""

    def __init__(self, waits: int) -> None:
        self.waits = waits
        self.timeouts: list[float | None] = []

    def settimeout(self, value) -> None:
        self.timeouts.append(value)

    def accept(self):
        if self.waits:
            self.waits -= 1
            time.sleep(min(self.timeouts[-1], 0.01))  # a real accept() would wait this long
            raise socket.timeout("timed out")
        return _QuietClient(), ("127.0.0.1", 40000)


class _QuietClient:
    def settimeout(self, value) -> None:
        self.timeout = value


def test_accept_waits_in_short_slices_so_that_ctrl_c_is_seen(implementation):
    # a Ctrl-C landing between Python's signal check and a blocking accept() is only noticed
    # when accept() returns: with no --duration it must still return every SIGNAL_CHECK_INTERVAL
    from fastnet import _cli, servers

    listener = _QuietListener(waits=3)
    conn, addr = servers._accept(listener, _cli.Deadline(None))
    assert addr == ("127.0.0.1", 40000) and conn.timeout is None
    assert listener.timeouts == [_cli.SIGNAL_CHECK_INTERVAL] * 4


def test_accept_gives_up_at_the_deadline_not_at_the_first_slice(implementation):
    from fastnet import _cli, servers

    listener = _QuietListener(waits=10**6)
    started = time.monotonic()
    assert servers._accept(listener, _cli.Deadline(0.05)) is None
    assert time.monotonic() - started >= 0.05
    assert all(0 < t <= _cli.SIGNAL_CHECK_INTERVAL for t in listener.timeouts)


# -- robustness: signals, resets, clients that do not read, half-closes, --duration -------------


def _listening_inode(port: int) -> str | None:
    """The inode of the socket listening on 127.0.0.1:*port* (from /proc/net/tcp)."""
    with open("/proc/net/tcp") as table:
        for row in table.readlines()[1:]:
            fields = row.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                return fields[9]
    return None


def _holds(pid: int, inode: str) -> bool:
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}") == f"socket:[{inode}]":
                return True
        except OSError:  # closed meanwhile
            pass
    return False


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_process_server_ends_its_children_on_sigterm_and_frees_the_port(impl_env):
    # SIGTERM is what kill and systemd send: the notes' daemon children outlived it, still holding
    # the listening socket, so the port stayed taken and new clients queued where nobody accepted
    children: list[int] = []
    try:
        with Example(impl_env, SERVERS, "process", "--port", "0") as server, connect(server.port) as client:
            client.sendall(b"hi")
            server.expect(f"recv[{name(client)}]: hi")  # printed by the child serving it
            pid = server.proc.pid
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = [int(c) for c in f.read().split()]
            assert children
            inode = _listening_inode(server.port)
            assert inode and _holds(pid, inode)
            assert not any(_holds(child, inode) for child in children), "a child kept the listening socket"
            server.proc.send_signal(signal.SIGTERM)
            assert server.wait() == 128 + signal.SIGTERM
            assert server.stderr() == ""
            end = time.monotonic() + 5
            while any(_running(child) for child in children) and time.monotonic() < end:
                time.sleep(0.05)
            assert not any(_running(child) for child in children)
            client.settimeout(5)
            try:
                assert client.recv(10) == b""  # its child closed the connection
            except ConnectionResetError:
                pass
            # the port is free again: a restart can listen on it
            with socket.socket() as again:
                again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                again.bind(("127.0.0.1", server.port))
                again.listen()
    finally:
        for child in children:
            if _running(child):
                os.kill(child, signal.SIGKILL)


def _flood(port: int, limit: int = 16 << 20, seconds: float = 2.0) -> tuple[socket.socket, int]:
    """A client that sends up to *limit* bytes in *seconds* and reads nothing; it stays connected."""
    hog = connect(port)
    hog.setblocking(False)
    chunk, sent, end = b"x" * 65536, 0, time.monotonic() + seconds
    while sent < limit and time.monotonic() < end:
        try:
            sent += hog.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)
    return hog, sent


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed or killed client does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _echoed(port: int, data: bytes) -> bytes:
    with connect(port) as client:
        client.settimeout(5)
        client.sendall(data)
        return recv_exactly(client, len(data))


@pytest.mark.parametrize(
    ("module", "example"),
    [
        pytest.param(SERVERS, "select", id="select"),
        pytest.param(SERVERS, "select-writelist", id="select-writelist"),
        pytest.param(SERVERS, "epoll", id="epoll"),
        pytest.param("fastnet.coroutines", "gevent-server", id="gevent-server"),
    ],
)
def test_a_client_that_floods_without_reading_then_resets_ends_only_itself(impl_env, module, example):
    # the select server echoed with a blocking sendall(): once the flooder's buffers were full it
    # waited there, serving nobody, and the reset then ended the whole server ("error: Connection
    # reset by peer"); the gevent server's greenlet died with a traceback
    if example == "gevent-server":
        require_module("gevent")
    extra = ["--ignore-stdin"] if example == "select" else []
    with Example(impl_env, module, example, "--port", "0", *extra) as server:
        hog, sent = _flood(server.port)
        hog_name = name(hog)
        assert sent > 0
        assert _echoed(server.port, b"still served") == b"still served"  # while the flooder waits
        _reset(hog)
        server.expect(
            lambda line: hog_name in line and any(w in line for w in ("closed", "disconnected", "offline")), timeout=20
        )
        assert _echoed(server.port, b"after the reset") == b"after the reset"
        assert server.proc.poll() is None
        assert server.interrupt() == 130
        assert server.stderr() == ""


@pytest.mark.parametrize("size", [5, 3000, 300_000])
def test_epoll_server_echoes_a_half_closed_connection_to_the_end(impl_env, size):
    # a client that sends and then shuts down its sending side still reads: the notes' fix
    # dropped the echo still to be written when it saw the EOF, and the client got nothing
    data = bytes(i % 251 for i in range(size))
    with Example(impl_env, SERVERS, "epoll", "--port", "0") as server, connect(server.port) as client:
        client.settimeout(10)
        got = bytearray()

        def read() -> None:
            try:
                while chunk := client.recv(65536):
                    got.extend(chunk)
            except OSError:
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # corked, a small message and the FIN leave in one segment: the server sees the data and
        # the end of the stream in the same event, the case the notes' fix got wrong every time
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        reader.join(15)
        assert not reader.is_alive(), "the server did not close the connection"
        assert len(got) == size and bytes(got) == data
        server.expect(f"{name(client)} offline")


def _rss_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) >> 10
    raise AssertionError("no VmRSS")


def test_epoll_server_stops_reading_a_client_that_does_not_read(impl_env):
    # the echo waiting for a client that never reads grew without bound (400 MB in a few
    # seconds); now the server stops reading that client until it takes some of its echo.
    # The server prints a line per 1024 bytes: its stdout is drained in big reads and dropped,
    # so that a slow reader of its output cannot be what stops it reading.
    proc = subprocess.Popen(
        [sys.executable, "-m", SERVERS, "epoll", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=impl_env
    )
    try:
        port = int(proc.stdout.readline().split()[-1].rsplit(b":", 1)[1])
        threading.Thread(target=lambda: all(iter(lambda: proc.stdout.read1(1 << 20), b"")), daemon=True).start()
        period = 256  # byte i of the stream is i % 256, so that the echo's order can be checked
        pattern = memoryview(bytes(range(period)) * ((1 << 20) // period + 1))
        with connect(port) as hog:
            hog.setblocking(False)
            sent, stalled_since, end = 0, None, time.monotonic() + 20
            while sent < (512 << 20) and time.monotonic() < end:
                try:
                    sent += hog.send(pattern[sent % period : sent % period + 65536])
                    stalled_since = None
                except BlockingIOError:
                    now = time.monotonic()
                    stalled_since = stalled_since or now
                    if now - stalled_since > 1.0:
                        break
                    time.sleep(0.01)
            # what it took is what the kernel's socket buffers hold, plus the server's bound
            assert stalled_since is not None and sent < (128 << 20), f"the server kept reading: {sent >> 20} MB"
            assert _rss_mb(proc.pid) < 100
            assert _echoed(port, b"others") == b"others"  # the other clients are served meanwhile
            # once the client reads, everything comes back, in order, and reading resumes
            hog.setblocking(True)
            hog.settimeout(10)
            received = 0
            while received < sent:
                chunk = hog.recv(1 << 20)
                assert chunk, f"connection closed after {received} of {sent} bytes"
                start = received % period
                assert chunk == pattern[start : start + len(chunk)], f"wrong bytes after {received}"
                received += len(chunk)
            hog.sendall(b"more")
            assert recv_exactly(hog, 4) == b"more"
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_single_process_server_ends_at_its_duration_with_a_silent_client(impl_env):
    # the per-client recv() had no timeout: a client that said nothing kept the server past --duration
    with Example(impl_env, SERVERS, "single", "--port", "0", "--duration", "1.5") as server, connect(server.port) as idle:
        server.expect(f"serving {name(idle)}")
        assert server.wait() == 0
        assert server.stderr() == ""
        assert server.lines[-1] == f"[{name(idle)}] closed: the --duration is over"
