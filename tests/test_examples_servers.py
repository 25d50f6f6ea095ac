"""The notes' concurrent servers (python -m fastnet.servers ..., and the gevent one), as subprocesses.

Each server is checked for what the notes show, for the notes' bugs being fixed, and for a quiet
Ctrl-C (SIGINT to the subprocess: exit status 130, nothing on stderr).
"""

from __future__ import annotations

import re
import socket
import subprocess
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
