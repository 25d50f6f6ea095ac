"""The echo load generator (``fastnet.bench.loadgen`` / ``python -m fastnet.bench echo``).

Real servers on loopback: an honest echo server, and deliberately broken ones (corrupting,
dropping, hanging up) whose faults the generator must count.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import pytest

from fastnet.bench import loadgen


class _Server:
    """A threaded TCP or UDP server on 127.0.0.1 whose reply is ``transform(data, state)``."""

    def __init__(self, udp=False, transform=None, family=socket.AF_INET, host="127.0.0.1"):
        self.udp = udp
        self.transform = transform or (lambda data, state: data)
        self.sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.first_chunks: list[bytes] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        if not udp:
            self.sock.listen(64)
        self.sock.settimeout(0.1)
        t = threading.Thread(target=self._udp_loop if udp else self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(0.1)
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn):
        state = {"count": 0, "conn": conn, "first": True}
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                if state["first"]:
                    self.first_chunks.append(data)
                    state["first"] = False
                reply = self.transform(data, state)
                state["count"] += len(data)
                if reply is None:
                    return
                try:
                    conn.sendall(reply)
                except OSError:
                    return

    def _udp_loop(self):
        state = {"count": 0}
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not state["count"]:
                self.first_chunks.append(data)
            reply = self.transform(data, state)
            state["count"] += 1
            if reply is not None:
                self.sock.sendto(reply, addr)

    def close(self):
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self.sock.close()


def _closed_after(cls):
    """A fixture's body: yields make(**kwargs), which builds a *cls*; each one made is closed after
    the test."""
    made = []

    def make(**kwargs):
        s = cls(**kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def server_factory():
    yield from _closed_after(_Server)


def test_honest_tcp_server_gives_no_errors(server_factory, implementation):
    srv = server_factory()
    r = loadgen.run_echo("127.0.0.1", srv.port, conns=3, size=3000, secs=0.5, pipeline=2)
    assert loadgen.IMPLEMENTATION == implementation == r["implementation"]
    assert r["requests"] > 0
    assert (r["errors"], r["mismatches"], r["losses"]) == (0, 0, 0)
    # every request is one whole message; at most pipeline messages per connection are in flight
    assert r["requests"] * 3000 <= r["bytes"] < (r["requests"] + 3 * 2) * 3000
    lat = r["latency_us"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]


def test_large_messages_are_verified_across_partial_reads(server_factory):
    srv = server_factory()
    r = loadgen.run_echo("127.0.0.1", srv.port, conns=2, size=300_000, secs=0.5)
    assert r["requests"] > 0
    assert (r["errors"], r["mismatches"]) == (0, 0)


def test_corrupted_bytes_are_counted_as_mismatches(server_factory):
    def corrupt(data, state):
        # flip one bit at stream offset 5000, 15000, 25000, ...: once per few messages
        out = bytearray(data)
        for i in range(len(out)):
            if (state["count"] + i) % 10000 == 5000:
                out[i] ^= 0x01
        return bytes(out)

    srv = server_factory(transform=corrupt)
    r = loadgen.run_echo("127.0.0.1", srv.port, conns=1, size=1000, secs=0.5)
    assert r["requests"] >= 20
    # one corrupted byte per 10 messages of 1000 bytes
    assert r["mismatches"] == pytest.approx(r["requests"] / 10, abs=2)
    assert r["errors"] == 0


def test_dropped_byte_is_a_mismatch(server_factory):
    def drop_one(data, state):
        if state["count"] <= 2500 < state["count"] + len(data):
            i = 2500 - state["count"]
            return data[:i] + data[i + 1 :]
        return data

    srv = server_factory(transform=drop_one)
    # with two messages in flight the next message's first byte fills the gap: caught
    r = loadgen.run_echo("127.0.0.1", srv.port, conns=1, size=1000, secs=0.3, pipeline=2)
    assert r["mismatches"] >= 1


def test_message_short_by_a_byte_stalls_its_connection(server_factory):
    def drop_one(data, state):
        if state["count"] <= 2500 < state["count"] + len(data):
            i = 2500 - state["count"]
            return data[:i] + data[i + 1 :]
        return data

    honest = server_factory()
    r = loadgen.run_echo("127.0.0.1", honest.port, conns=2, size=1000, secs=1.2)
    assert r["stalled"] == 0
    srv = server_factory(transform=drop_one)
    # one message in flight: the third never completes, and nothing else comes back
    r = loadgen.run_echo("127.0.0.1", srv.port, conns=1, size=1000, secs=1.2)
    assert r["requests"] == 2
    assert r["stalled"] == 1


def test_server_hanging_up_counts_errors_and_reconnects(server_factory):
    def hang_up_after_some(data, state):
        return None if state["count"] >= 5000 else data

    srv = server_factory(transform=hang_up_after_some)
    r = loadgen.run_echo("127.0.0.1", srv.port, conns=1, size=1000, secs=0.5)
    assert r["errors"] >= 2  # it reconnected after the first hang-up and saw another one
    assert r["requests"] >= 10
    assert r["mismatches"] == 0


def test_udp_honest_corrupting_and_dropping(server_factory):
    honest = server_factory(udp=True)
    r = loadgen.run_echo("127.0.0.1", honest.port, conns=2, size=512, secs=0.4, udp=True)
    assert r["requests"] > 0 and r["proto"] == "udp"
    assert (r["errors"], r["mismatches"], r["losses"]) == (0, 0, 0)
    assert r["bytes"] == r["requests"] * 512

    def corrupt_every_third(data, state):
        if state["count"] % 3 == 0:
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data

    bad = server_factory(udp=True, transform=corrupt_every_third)
    r = loadgen.run_echo("127.0.0.1", bad.port, conns=1, size=100, secs=0.4, udp=True)
    assert r["mismatches"] == pytest.approx(r["requests"] / 3, abs=2)

    def drop_every_fourth(data, state):
        return None if state["count"] % 4 == 3 else data

    lossy = server_factory(udp=True, transform=drop_every_fourth)
    r = loadgen.run_echo("127.0.0.1", lossy.port, conns=1, size=64, secs=0.6, udp=True, udp_timeout=0.02)
    assert r["losses"] >= 3
    assert r["mismatches"] == 0
    # the server answers 3 datagrams for each it drops; a reply slower than the timeout (a busy
    # machine) counts as a loss and then as late, so take those out on both sides
    answered = r["requests"] + r["late"]
    dropped = r["losses"] - r["late"]
    assert answered == pytest.approx(3 * dropped, abs=3)


def test_ipv6_loopback(server_factory):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    srv = server_factory(family=socket.AF_INET6, host="::1")
    r = loadgen.run_echo("::1", srv.port, conns=1, size=100, secs=0.2)
    assert r["requests"] > 0 and r["mismatches"] == 0


def test_both_implementations_send_the_same_bytes(server_factory, implementation):
    from fastnet import _compat

    firsts = {}
    for mode in ("c", "python") if _compat.c_available("fastnet.bench._loadgen_c") else ("python",):
        previous = _compat.activate(mode)
        try:
            srv = server_factory(udp=True)
            loadgen.run_echo("127.0.0.1", srv.port, conns=1, size=2000, secs=0.1, udp=True)
            firsts[mode] = srv.first_chunks[0]
        finally:
            _compat.activate(previous)
    from fastnet.bench import _loadgen_py

    assert firsts["python"] == _loadgen_py.message(0, 0, 2000)
    if "c" in firsts:
        assert firsts["c"] == firsts["python"]


def test_bad_parameters_raise_value_error():
    with pytest.raises(ValueError):
        loadgen.run_echo("127.0.0.1", 9, conns=0)
    with pytest.raises(ValueError):
        loadgen.run_echo("127.0.0.1", 9, udp=True, size=4)
    with pytest.raises(ValueError):
        loadgen.run_echo("127.0.0.1", 9, udp=True, size=65508)


def test_cli_json_and_text(server_factory, impl_env, implementation):
    srv = server_factory()
    out = subprocess.run(
        [sys.executable, "-m", "fastnet.bench", "echo", "--port", str(srv.port), "--conns", "2",
         "--size", "100", "--secs", "0.3", "--json"],
        env=impl_env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["implementation"] == implementation
    assert result["requests"] > 0 and result["mismatches"] == 0
    out = subprocess.run(
        [sys.executable, "-m", "fastnet.bench", "echo", "--port", str(srv.port), "--secs", "0.2"],
        env=impl_env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "requests/s" in out.stdout and "p99.9" in out.stdout and "mismatches 0" in out.stdout


def test_cli_refused_is_one_line_error(impl_env):
    from conftest import free_port

    out = subprocess.run(
        [sys.executable, "-m", "fastnet.bench", "echo", "--port", str(free_port()), "--secs", "0.2"],
        env=impl_env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "refused" in out.stderr.lower()
    assert "Traceback" not in out.stderr


def test_cli_refused_names_an_ipv6_server_in_brackets(impl_env):
    from conftest import free_port

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        port = free_port(host="::1")
    except OSError:
        pytest.skip("no ::1 on this machine")
    out = subprocess.run(
        [sys.executable, "-m", "fastnet.bench", "echo", "--host", "::1", "--port", str(port), "--secs", "0.2"],
        env=impl_env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr == f"python -m fastnet.bench echo: cannot load [::1]:{port}: connect: Connection refused\n"


def test_cli_a_udp_load_that_gets_no_echo_fails(impl_env):
    """Nothing listens: every datagram is lost.  The table still prints, and the run fails."""
    from conftest import free_port

    port = free_port(socket.SOCK_DGRAM)
    out = subprocess.run(
        [sys.executable, "-m", "fastnet.bench", "echo", "--udp", "--port", str(port), "--secs", "0.3",
         "--udp-timeout", "0.05", "--json"],
        env=impl_env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert result["requests"] == 0 and result["errors"] + result["losses"] > 0
    assert out.stderr.startswith(f"python -m fastnet.bench echo: no echo came back from 127.0.0.1:{port} (")
    assert out.stderr.count("\n") == 1


def test_cli_ctrl_c_ends_a_long_run(server_factory, impl_env):
    import select
    import signal

    srv = server_factory()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastnet.bench", "echo", "--port", str(srv.port), "--secs", "120"],
        env=impl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # wait until the load runs (the server saw its first bytes)
        deadline = 100
        while not srv.first_chunks and deadline:
            select.select([], [], [], 0.05)
            deadline -= 1
        assert srv.first_chunks
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)  # far less than the 120 s asked for
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "Traceback" not in err


def test_compiled_load_generator_is_built():
    # Fails when the build silently left only the pure-Python twin.
    import importlib

    from fastnet import _compat

    if _compat.NO_EXTENSIONS:
        pytest.skip("FASTNET_NO_EXTENSIONS=1 asks for no compiled module")
    module = importlib.import_module("fastnet.bench._loadgen_c")
    assert module.__file__.endswith(".so"), module.__file__


# ---------------------------------------------------------------------------- parameter checks


@pytest.mark.parametrize("port", [0, -5, 65536, 70000])
def test_port_out_of_range_raises_value_error(port):
    # the compiled generator used to cut 70000 to 16 bits and load port 4464 instead
    with pytest.raises(ValueError) as info:
        loadgen.run_echo("127.0.0.1", port, secs=0.2)
    assert str(info.value) == f"port must be 1..65535, not {port}"


@pytest.mark.parametrize("secs", [float("nan"), float("inf"), 0, -1, 86400.5, 1e11])
def test_secs_must_be_finite_above_zero_and_at_most_a_day(secs):
    from conftest import free_port

    # nothing listens there: a secs that slipped through fails at once rather than running
    port = free_port()
    with pytest.raises(ValueError) as info:
        loadgen.run_echo("127.0.0.1", port, secs=secs)
    assert str(info.value) == f"secs must be above 0 and at most 86400 seconds (one day), not {secs}"
    with pytest.raises(ValueError) as info:
        loadgen.run_echo("127.0.0.1", port, secs=0.2, udp=True, udp_timeout=secs)
    assert str(info.value).startswith("udp_timeout must be above 0 and at most 86400 seconds")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "70000"], "argument --port: port must be 1..65535, not 70000"),
        (["--port", "-5"], "argument --port: port must be 1..65535, not -5"),
        (["--port", "0"], "argument --port: port must be 1..65535, not 0"),
        (["--secs", "nan"], "argument --secs: secs must be above 0 and at most 86400 seconds (one day), not nan"),
        (["--secs", "1e11"], "argument --secs: secs must be above 0 and at most 86400 seconds (one day), not 1e11"),
    ],
)
def test_cli_refuses_a_port_or_secs_out_of_range(impl_env, args, message):
    from conftest import free_port

    # the later --port / --secs wins; the first ones make an unchecked run fail fast
    out = subprocess.run(
        [sys.executable, "-m", "fastnet.bench", "echo", "--port", str(free_port()), "--secs", "0.2", *args],
        env=impl_env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines()[-1] == f"python -m fastnet.bench echo: error: {message}"
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------- connects that hang


class _QueueFullServer:
    """A listener with backlog 0 whose accept queue is full: the kernel drops every further SYN,
    and a blocking connect() retries it for minutes.

    With *echo_first* bytes, it first accepts one connection, echoes that many bytes, fills its
    queue and hangs up, so that the generator's reconnect is the connect that hangs.  The listener
    closes after *close_after* seconds: a generator that waits on its connect() anyway is then
    refused at its next SYN, and the test fails in seconds instead of hanging."""

    def __init__(self, echo_first=0, close_after=6.0):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.full = threading.Event()
        self._lock = threading.Lock()
        self._timer = threading.Timer(close_after, self.close)
        self._timer.start()
        self._thread = None
        if echo_first:
            self._thread = threading.Thread(target=self._echo_then_hang_up, args=(echo_first,), daemon=True)
            self._thread.start()
        else:
            self._fill()

    def _fill(self):
        # backlog 0 leaves room for one connection (the kernel allows backlog + 1): take it
        for _ in range(4):
            c = socket.socket()
            c.settimeout(0.3)
            try:
                c.connect(("127.0.0.1", self.port))
            except OSError:
                c.close()
                break
            with self._lock:
                self.held.append(c)
        assert self.held
        self.full.set()

    def _echo_then_hang_up(self, nbytes):
        self.sock.settimeout(5)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            got = 0
            while got < nbytes:
                try:
                    data = conn.recv(min(65536, nbytes - got))
                    if not data:
                        return
                    conn.sendall(data)
                except OSError:
                    return
                got += len(data)
            self._fill()  # before the hang-up, so that the reconnect finds the queue full

    def close(self):
        self._timer.cancel()
        with self._lock:
            for c in self.held:
                c.close()
            self.held = []
        self.sock.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)


@pytest.fixture
def queue_full_server():
    yield from _closed_after(_QueueFullServer)


def test_cli_connect_that_never_completes_ends_at_secs(queue_full_server, impl_env):
    import time

    srv = queue_full_server()
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "fastnet.bench", "echo", "--port", str(srv.port), "--conns", "2", "--secs", "1"],
        env=impl_env, capture_output=True, text=True, timeout=60,
    )
    took = time.monotonic() - t0
    assert out.stderr == f"python -m fastnet.bench echo: cannot load 127.0.0.1:{srv.port}: connect: Connection timed out\n"
    assert out.returncode == 1
    assert took < 4.0  # --secs 1, and an interpreter to start; the listener closes at 6 s


def test_reconnect_that_never_completes_counts_as_an_error_and_ends_at_secs(queue_full_server):
    import time

    srv = queue_full_server(echo_first=5000)
    t0 = time.monotonic()
    r = loadgen.run_echo("127.0.0.1", srv.port, conns=1, size=1000, secs=2.0)
    took = time.monotonic() - t0
    assert srv.full.is_set()
    assert took < 3.0  # the listener closes at 6 s
    assert r["requests"] == 5 and r["mismatches"] == 0 and r["stalled"] == 0
    assert r["errors"] == 2  # the hang-up, and the reconnect not made by the end of the run
