"""fastnet.Loop UDP: create_datagram_endpoint, sendto, datagram_received, error_received.

Each scenario runs on fastnet.Loop, stock asyncio (the oracle) and uvloop.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import peer_missing, require_tool

from test_loop_common import is_compiled_fastnet, loop, loop_kind, run  # noqa: F401  (fixtures)


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self):
        self.transport = None
        self.received = asyncio.Queue()
        self.errors = asyncio.Queue()
        self.lost = asyncio.get_event_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))

    def error_received(self, exc):
        self.errors.put_nowait(exc)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


class UdpEcho(Datagrams):
    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        self.transport.sendto(data, addr)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_udp_echo_local_and_remote_addr(loop, host):
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        if host == "::1":
            pytest.skip("no IPv6")

    async def main():
        server_tr, server = await loop.create_datagram_endpoint(UdpEcho, local_addr=(host, 0))
        addr = server_tr.get_extra_info("sockname")
        client_tr, client = await loop.create_datagram_endpoint(Datagrams, remote_addr=addr[:2])
        try:
            assert client_tr.get_extra_info("peername")[:2] == addr[:2]
            sizes = [1, 100, 1400, 60000]
            for size in sizes:
                client_tr.sendto(bytes([size % 251]) * size)
            echoed = [await client.received.get() for _ in sizes]
            seen_by_server = [await server.received.get() for _ in sizes]
            with pytest.raises(ValueError):
                client_tr.sendto(b"x", ("127.0.0.2", 9))  # connected: only its peer
            client_tr.sendto(memoryview(b"view"))
            assert (await client.received.get())[0] == b"view"
            return echoed, seen_by_server, client_tr.get_extra_info("sockname")
        finally:
            client_tr.close()
            server_tr.close()
            await client.lost
            await server.lost

    echoed, seen_by_server, client_name = run(loop, main())
    assert [len(d) for d, _ in echoed] == [1, 100, 1400, 60000]
    assert all(a[:2] == client_name[:2] for _, a in seen_by_server)


def test_udp_unconnected_sendto_with_address(loop):
    async def main():
        a_tr, a = await loop.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", 0))
        b_tr, b = await loop.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", 0))
        try:
            for i in range(20):
                a_tr.sendto(b"n%d" % i, b_tr.get_extra_info("sockname"))
            got = [await b.received.get() for _ in range(20)]
            assert a_tr.get_write_buffer_size() == 0
            return got, a_tr.get_extra_info("sockname")
        finally:
            a_tr.close()
            b_tr.close()

    got, a_name = run(loop, main())
    assert [d for d, _ in got] == [b"n%d" % i for i in range(20)]
    assert all(addr == a_name for _, addr in got)


def test_udp_error_received_on_refused_port(loop):
    async def main():
        # a bound, then closed, port: nobody listens there
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()
        probe.close()
        tr, proto = await loop.create_datagram_endpoint(Datagrams, remote_addr=dead)
        try:
            exc = None
            for _ in range(20):  # ICMP port unreachable arrives asynchronously
                tr.sendto(b"anyone?")
                try:
                    exc = await asyncio.wait_for(proto.errors.get(), 0.2)
                    break
                except asyncio.TimeoutError:
                    continue
            return exc, tr.is_closing()
        finally:
            tr.close()

    exc, closing = run(loop, main())
    assert isinstance(exc, ConnectionRefusedError)
    assert closing is False  # an error on one datagram does not end the endpoint


class Raising(Datagrams):
    """datagram_received and error_received raise on cue (after recording what they got)."""

    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        if data == b"boom":
            raise ValueError("boom")

    def error_received(self, exc):
        super().error_received(exc)
        raise RuntimeError("handler bug")


def _collect_errors(loop):
    contexts = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    return contexts


def test_udp_exception_in_datagram_received_goes_to_handler_endpoint_serves_on(loop):
    """As in asyncio: a callback's exception is one datagram's problem, reported to the loop's
    exception handler; the endpoint stays open and receives what follows."""
    contexts = _collect_errors(loop)

    async def main():
        tr, proto = await loop.create_datagram_endpoint(Raising, local_addr=("127.0.0.1", 0))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for data in (b"a", b"boom", b"c"):
                sender.sendto(data, tr.get_extra_info("sockname"))
            got = [(await asyncio.wait_for(proto.received.get(), 5))[0] for _ in range(3)]
            return got, tr.is_closing(), proto.lost.done()
        finally:
            sender.close()
            tr.close()

    got, closing, lost = run(loop, main())
    assert got == [b"a", b"boom", b"c"]
    assert closing is False and lost is False
    assert [type(c.get("exception")) for c in contexts] == [ValueError]


def test_udp_exception_in_error_received_goes_to_handler_endpoint_serves_on(loop, loop_kind):
    if loop_kind == "uvloop":
        pytest.skip("uvloop 0.23 keeps the endpoint but reports the exception as unraisable")
    contexts = _collect_errors(loop)

    async def main():
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()
        probe.close()
        tr, proto = await loop.create_datagram_endpoint(Raising, remote_addr=dead)
        try:
            for _ in range(20):  # ICMP port unreachable arrives asynchronously
                tr.sendto(b"anyone?")
                try:
                    await asyncio.wait_for(proto.errors.get(), 0.2)
                    break
                except asyncio.TimeoutError:
                    continue
            await asyncio.sleep(0.05)  # a close would call connection_lost by now
            return tr.is_closing(), proto.lost.done()
        finally:
            tr.close()

    closing, lost = run(loop, main())
    assert closing is False and lost is False
    assert contexts and all(type(c.get("exception")) is RuntimeError for c in contexts)


def test_udp_sendto_after_close_sends_nothing_through_a_reused_descriptor(loop, loop_kind):
    """A closed endpoint's descriptor number is soon another socket's: a late sendto() must not
    send through it.  (Stock asyncio raises AttributeError there; fastnet's compiled loop drops
    the datagram, as uvloop does.)"""

    async def main():
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.3)
        tr, proto = await loop.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", 0))
        old_fd = tr.get_extra_info("socket").fileno()
        tr.close()
        await proto.lost
        others = []
        try:
            for _ in range(16):  # the next socket() takes the lowest free number: the old one
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                others.append(s)
                if s.fileno() == old_fd:
                    break
            reused = others[-1].fileno() == old_fd
            raised = None
            try:
                tr.sendto(b"late", rx.getsockname())
            except AttributeError as exc:  # asyncio's (and so the twin's) way
                raised = exc
            try:
                late = rx.recv(100)
            except socket.timeout:
                late = None
            return reused, raised, late
        finally:
            rx.close()
            for s in others:
                s.close()

    reused, raised, late = run(loop, main())
    assert reused
    assert late is None
    if is_compiled_fastnet(loop_kind):
        assert raised is None


def test_udp_send_queue_goes_on_after_a_failed_datagram(loop_kind, impl_env):
    """Datagrams queued behind a full socket keep going out, in order, past queued datagrams that
    fail (EMSGSIZE, each reported to error_received).  A loopback socket is never full, so the
    scenario runs in a network namespace whose loopback is rate-limited by a token-bucket qdisc
    (tests/netns_udp_send_queue.py)."""
    unshare, tc = require_tool("unshare"), require_tool("tc")
    probe = subprocess.run([unshare, "--net", tc, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "10mbit",
                            "burst", "4kb", "limit", "1mb"], capture_output=True, text=True)
    if probe.returncode != 0:
        peer_missing(f"cannot rate-limit a namespace's loopback: {probe.stderr.strip()}")
    child = os.path.join(os.path.dirname(__file__), "netns_udp_send_queue.py")
    run = subprocess.run([unshare, "--net", sys.executable, child, loop_kind, tc], env=impl_env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["queued"], result  # the scenario did reach the send queue
    assert result["received"] == list(range(result["sent"]))
    assert result["errors"] == ["EMSGSIZE", "EMSGSIZE"]
    assert result["buffer_left"] == 0


def test_udp_reuse_port_and_allow_broadcast(loop):
    async def main():
        tr1, p1 = await loop.create_datagram_endpoint(
            Datagrams, local_addr=("127.0.0.1", 0), reuse_port=True, allow_broadcast=True
        )
        port = tr1.get_extra_info("sockname")[1]
        tr2, p2 = await loop.create_datagram_endpoint(
            Datagrams, local_addr=("127.0.0.1", port), reuse_port=True
        )
        try:
            sock = tr1.get_extra_info("socket")
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            # loopback broadcast address: allowed now (EACCES without SO_BROADCAST)
            tr1.sendto(b"bcast", ("127.255.255.255", port))
            await asyncio.sleep(0.05)
            return p1.errors.empty()
        finally:
            tr1.close()
            tr2.close()

    assert run(loop, main()) is True


def test_udp_close_and_abort_call_connection_lost(loop):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", 0))
        sock = tr.get_extra_info("socket")
        tr.close()
        assert tr.is_closing()
        first = await proto.lost
        tr2, proto2 = await loop.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", 0))
        tr2.abort()
        second = await proto2.lost
        return first, second, sock.fileno()

    first, second, fileno = run(loop, main())
    assert first is None and second is None
    assert fileno == -1


def test_udp_sendto_addresses_and_errors(loop, loop_kind):
    # sendto from C: the cached address must follow every change of address, names still resolve,
    # a bad address or an oversized datagram behaves as asyncio's socket methods make it behave
    async def main():
        a_tr, a = await loop.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", 0))
        b_tr, b = await loop.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", 0))
        c_tr, c = await loop.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", 0))
        try:
            b_addr = b_tr.get_extra_info("sockname")
            c_addr = c_tr.get_extra_info("sockname")
            buf = bytearray(b"reused")
            for i in range(6):
                dest = b_addr if i % 2 == 0 else ("127.0.0.1", c_addr[1])  # equal, not identical
                a_tr.sendto(b"m%d" % i, dest)
            # a name is resolved by asyncio's socket.sendto (uvloop 0.23 refuses it: ValueError)
            a_tr.sendto(buf, ("localhost" if loop_kind != "uvloop" else "127.0.0.1", b_addr[1]))
            buf[:] = b"changed"                         # sent already: the change is not seen
            a_tr.sendto(memoryview(b"xxview")[2:], b_addr)
            got_b = [(await b.received.get())[0] for _ in range(5)]
            got_c = [(await c.received.get())[0] for _ in range(3)]
            a_tr.sendto(b"z" * 70000, b_addr)  # larger than any UDP datagram: EMSGSIZE
            err = await asyncio.wait_for(a.errors.get(), 5)
            a_tr.sendto(b"after", c_addr)
            after = (await c.received.get())[0]
            return got_b, got_c, type(err), err.errno, after, a_tr.is_closing()
        finally:
            for tr in (a_tr, b_tr, c_tr):
                tr.close()

    got_b, got_c, err_type, err_no, after, closing = run(loop, main())
    assert got_b == [b"m0", b"m2", b"m4", b"reused", b"view"]
    assert got_c == [b"m1", b"m3", b"m5"]
    assert issubclass(err_type, OSError) and err_no == errno.EMSGSIZE
    assert after == b"after" and not closing


def test_udp_sendto_ipv6_tuple_forms(loop):
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        pytest.skip("no IPv6")

    async def main():
        a_tr, a = await loop.create_datagram_endpoint(Datagrams, local_addr=("::1", 0))
        b_tr, b = await loop.create_datagram_endpoint(Datagrams, local_addr=("::1", 0))
        try:
            port = b_tr.get_extra_info("sockname")[1]
            a_tr.sendto(b"two", ("::1", port))
            a_tr.sendto(b"four", ("::1", port, 0, 0))
            got = [await b.received.get() for _ in range(2)]
            return [d for d, _ in got], [addr[:2] for _, addr in got], a_tr.get_extra_info("sockname")
        finally:
            a_tr.close()
            b_tr.close()

    data, addrs, a_name = run(loop, main())
    assert data == [b"two", b"four"]
    assert addrs == [a_name[:2], a_name[:2]]


def test_udp_empty_datagram_as_asyncio(loop, loop_kind):
    # asyncio drops sendto(b"") up to 3.12 and sends an empty datagram from 3.13 on (gh-113812)
    sends_empty = sys.version_info >= (3, 13)
    if sends_empty and loop_kind == "uvloop":
        pytest.skip("uvloop 0.23 still drops empty datagrams (uvloop#594)")

    async def main():
        a_tr, a = await loop.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", 0))
        b_tr, b = await loop.create_datagram_endpoint(Datagrams, local_addr=("127.0.0.1", 0))
        c_tr, c = await loop.create_datagram_endpoint(Datagrams, remote_addr=b_tr.get_extra_info("sockname"))
        try:
            a_tr.sendto(b"", b_tr.get_extra_info("sockname"))
            c_tr.sendto(bytearray())
            a_tr.sendto(b"end", b_tr.get_extra_info("sockname"))
            got = []
            while not got or got[-1] != b"end":
                got.append((await asyncio.wait_for(b.received.get(), 5))[0])
            return got
        finally:
            for tr in (a_tr, b_tr, c_tr):
                tr.close()

    assert run(loop, main()) == ([b"", b"", b"end"] if sends_empty else [b"end"])


_who = contextvars.ContextVar("who", default=None)


def test_datagram_callbacks_run_in_their_endpoint_s_own_context(loop):
    # datagram_received sees the context the endpoint was created in, and a ContextVar it sets
    # is the endpoint's own: the next datagram sees it, another endpoint does not (the compiled
    # loop ran them in whatever context was current)
    class Recorder(Datagrams):
        def __init__(self):
            super().__init__()
            self.seen = []

        def datagram_received(self, data, addr):
            self.seen.append(_who.get())
            _who.set(data.decode())
            super().datagram_received(data, addr)

    async def endpoint(name):
        _who.set(name)
        return await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))

    async def main():
        (a_tr, a), (b_tr, b) = [await asyncio.create_task(endpoint(name)) for name in ("a", "b")]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for text, tr, proto in (("one", a_tr, a), ("two", b_tr, b), ("three", a_tr, a)):
                s.sendto(text.encode(), tr.get_extra_info("sockname"))
                await asyncio.wait_for(proto.received.get(), 5)
        a_tr.close()
        b_tr.close()
        return a.seen, b.seen, _who.get()

    assert run(loop, main()) == (["a", "one"], ["b"], None)


@pytest.mark.parametrize("sender", ["path", "abstract", "unbound"])
def test_a_unix_datagram_socket_passed_as_sock_reports_senders(loop, loop_kind, tmp_path, sender):
    if loop_kind == "uvloop" and sender == "abstract":
        pytest.skip("uvloop 0.23 cannot send to an abstract-namespace address")
    # create_datagram_endpoint(sock=<AF_UNIX datagram socket>) is accepted; the sender's address
    # is what the socket module gives: its path, or bytes for Linux's abstract namespace (the
    # compiled loop passed None), and None when it is not bound: nothing to answer
    async def main():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(tmp_path / "server"))
        tr, proto = await loop.create_datagram_endpoint(UdpEcho if sender != "unbound" else Datagrams, sock=sock)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            if sender == "path":
                s.bind(str(tmp_path / "client"))
            elif sender == "abstract":
                s.bind(b"\0fastnet-test-%d" % os.getpid())
            s.settimeout(5)
            s.sendto(b"hello", str(tmp_path / "server"))
            _, addr = await asyncio.wait_for(proto.received.get(), 5)
            echoed = await loop.run_in_executor(None, s.recv, 100) if sender != "unbound" else None
        tr.close()
        return addr, echoed

    addr, echoed = run(loop, main())
    expected = {"path": str(tmp_path / "client"), "abstract": b"\0fastnet-test-%d" % os.getpid(), "unbound": None}
    assert addr == expected[sender]
    assert echoed == (None if sender == "unbound" else b"hello")
