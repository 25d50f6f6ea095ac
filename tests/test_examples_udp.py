"""The notes' UDP examples (python -m fastnet.udp ...), driven as real subprocesses on loopback."""

from __future__ import annotations

import re
import socket
import threading
import time

from http_helpers import Example, run_example

UDP = "fastnet.udp"


def udp_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(10)
    return sock


def test_client_gets_each_line_echoed_and_the_echo_server_counts_them(impl_env):
    with Example(impl_env, UDP, "echo", "--port", "0", "--count", "3") as echo:
        assert echo.host == "127.0.0.1"  # loopback unless --all-interfaces
        result = run_example(
            impl_env, UDP, "client", "--port", str(echo.port), input="hello\n你好\n".encode() + b"\xff\xfeok\n"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            f"received from 127.0.0.1:{echo.port}: hello",
            f"received from 127.0.0.1:{echo.port}: 你好",
            f"received from 127.0.0.1:{echo.port}: \\xff\\xfeok",  # undecodable bytes shown escaped
        ]
        assert echo.wait() == 0  # --count 3 bounds the notes' endless loop
        counted = [re.match(r"echoed message #(\d+) to 127\.0\.0\.1:\d+: (.*)$", line) for line in echo.lines[1:]]
        assert all(counted), echo.lines
        assert [(m.group(1), m.group(2)) for m in counted] == [("1", "hello"), ("2", "你好"), ("3", "\\xff\\xfeok")]


def test_client_message_option_sends_bytes_and_reports_a_missing_reply(impl_env):
    with udp_socket() as silent:  # a peer that never answers
        port = silent.getsockname()[1]
        result = run_example(impl_env, UDP, "client", "--port", str(port), "-m", "ping", "--timeout", "0.3")
        data, _ = silent.recvfrom(100)
    assert data == b"ping"
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: no reply from 127.0.0.1:{port} within 0.3 s"]


def test_client_to_a_port_where_nothing_listens_fails_at_once(impl_env):
    # the kernel answers ICMP port unreachable: the client says so instead of waiting out
    # --timeout (60 s here, longer than run_example waits) and blaming a missing reply
    with udp_socket() as closed:
        port = closed.getsockname()[1]
    result = run_example(impl_env, UDP, "client", "--port", str(port), "-m", "ping", "--timeout", "60")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: no UDP server at 127.0.0.1:{port}: connection refused"]


def test_server_prints_one_datagram_with_its_sender_and_exits(impl_env):
    with Example(impl_env, UDP, "server", "--port", "0") as server, udp_socket() as client:
        client.sendto("数据 data".encode(), ("127.0.0.1", server.port))
        assert server.wait() == 0
        assert server.lines[1:] == [f"received from 127.0.0.1:{client.getsockname()[1]}: 数据 data"]


def test_chat_prints_ctime_and_sender_for_each_datagram(impl_env):
    with Example(impl_env, UDP, "chat", "--port", "0", "--count", "2") as chat:
        with udp_socket() as alice, udp_socket() as bob:
            alice.sendto(b"hi from alice", ("127.0.0.1", chat.port))
            line_a = chat.next_line()
            bob.sendto(b"hi from bob", ("127.0.0.1", chat.port))
            line_b = chat.next_line()
            senders = [alice.getsockname()[1], bob.getsockname()[1]]
        assert chat.wait() == 0
    for line, port, text in zip((line_a, line_b), senders, ("hi from alice", "hi from bob")):
        m = re.match(r"^\[(.+)\] 127\.0\.0\.1:(\d+): (.*)$", line)
        assert m, line
        stamp = time.mktime(time.strptime(m.group(1)))  # ctime() format, e.g. "Thu Nov 26 15:00:00 2026"
        assert abs(stamp - time.time()) < 3600
        assert (int(m.group(2)), m.group(3)) == (port, text)


def test_broadcast_on_loopback_reaches_every_server_and_prints_replies(impl_env):
    # Linux delivers 127.255.255.255 to sockets bound to it (or to 0.0.0.0), not to 127.0.0.1;
    # SO_REUSEADDR lets the echo server and the chat room share the port and both receive it.
    bcast = "127.255.255.255"
    with Example(impl_env, UDP, "echo", "--host", bcast, "--reuse-address", "--port", "0", "--count", "1") as echo:
        with Example(
            impl_env, UDP, "chat", "--host", bcast, "--reuse-address", "--port", str(echo.port),
            "--reply", "hello from chat", "--count", "1",
        ) as chat:
            result = run_example(
                impl_env, UDP, "broadcast", "--port", str(echo.port), "-m", "Hi all", "--count", "2", "--duration", "10"
            )
            assert result.returncode == 0, result.stderr
            lines = result.stdout.splitlines()
            assert lines[0] == f"sent 6 bytes to {bcast}:{echo.port}; waiting for replies (Ctrl-C to stop)"
            assert sorted(lines[1:]) == sorted(
                [f"Received from 127.0.0.1:{echo.port}: Hi all", f"Received from 127.0.0.1:{echo.port}: hello from chat"]
            )
            assert chat.wait() == 0 and chat.lines[1].endswith(": Hi all")
        assert echo.wait() == 0 and echo.lines[1].endswith(": Hi all")


def test_broadcast_waits_for_replies_until_its_duration(impl_env):
    result = run_example(impl_env, UDP, "broadcast", "--port", "9", "--duration", "0.2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["sent 2 bytes to 127.255.255.255:9; waiting for replies (Ctrl-C to stop)"]


def test_ctrl_c_ends_the_echo_and_chat_servers_quietly(impl_env):
    for name in ("echo", "chat"):
        with Example(impl_env, UDP, name, "--port", "0") as server:
            assert server.interrupt() == 130
            assert server.stderr() == ""


def test_echo_on_the_relay_engine_echoes_and_reports_totals(impl_env):
    with Example(impl_env, UDP, "echo", "--engine", "relay", "--port", "0") as echo:
        from fastnet import relay  # bound to this test's implementation, as the child is

        expected = relay.IMPLEMENTATION
        assert echo.lines[0].endswith(f"(engine relay, implementation {expected})")
        result = run_example(impl_env, UDP, "client", "--port", str(echo.port), "-m", "one", "-m", "two")
        assert result.stdout.splitlines() == [
            f"received from 127.0.0.1:{echo.port}: one",
            f"received from 127.0.0.1:{echo.port}: two",
        ]
        assert echo.interrupt() == 130
        assert echo.stderr() == ""
        assert echo.lines[-1] == "echoed 2 datagrams (6 bytes)"


def test_echo_says_when_a_datagram_is_longer_than_the_notes_1024_bytes(impl_env):
    # the notes' recvfrom(1024) cuts a longer datagram; the echo keeps that (it is the lesson)
    # but no longer silently
    with Example(impl_env, UDP, "echo", "--port", "0", "--count", "2") as echo, udp_socket() as client:
        client.sendto(b"a" * 1024, ("127.0.0.1", echo.port))
        assert client.recv(4096) == b"a" * 1024  # exactly 1024: nothing lost, nothing said
        client.sendto(b"b" * 3000, ("127.0.0.1", echo.port))
        assert client.recv(4096) == b"b" * 1024
        assert echo.wait() == 0
        sender = f"127.0.0.1:{client.getsockname()[1]}"
    assert echo.stderr().splitlines() == [
        f"warning: the datagram from {sender} was longer than 1024 bytes: recvfrom(1024) kept the first 1024, the rest is lost"
    ]
    assert echo.lines[1:] == [f"echoed message #1 to {sender}: {'a' * 1024}", f"echoed message #2 to {sender}: {'b' * 1024}"]


def test_client_says_when_a_reply_is_longer_than_1024_bytes(impl_env):
    with udp_socket() as server:
        port = server.getsockname()[1]

        def answer() -> None:
            data, sender = server.recvfrom(100)
            server.sendto(b"r" * 2000, sender)

        replier = threading.Thread(target=answer, daemon=True)
        replier.start()
        result = run_example(impl_env, UDP, "client", "--port", str(port), "-m", "long reply please")
        replier.join(5)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"received from 127.0.0.1:{port}: {'r' * 1024}"]
    assert result.stderr.splitlines() == [
        f"warning: the datagram from 127.0.0.1:{port} was longer than 1024 bytes: recvfrom(1024) kept the first 1024, the rest is lost"
    ]
