"""The notes' TCP examples (python -m fastnet.tcp ...), driven as real subprocesses on loopback."""

from __future__ import annotations

import socket

import pytest

from http_helpers import Example, run_example

TCP = "fastnet.tcp"


def test_client_sends_a_line_and_thank_you_arrives(impl_env):
    with Example(impl_env, TCP, "server", "--port", "0") as server:
        result = run_example(impl_env, TCP, "client", "--port", str(server.port), "-m", "你好, server")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["received: thank you !"]
        assert server.wait() == 0  # one client, then the notes' server closes
        assert server.lines[1].startswith("connection from 127.0.0.1:")
        assert server.lines[2:] == ["received: 你好, server"]


def test_client_reads_its_line_from_stdin(impl_env):
    with Example(impl_env, TCP, "server", "--port", "0", "--reply", "got it") as server:
        result = run_example(impl_env, TCP, "client", "--port", str(server.port), input=b"from stdin\n")
        assert result.stdout.splitlines() == ["received: got it"]
        assert server.wait() == 0
        assert server.lines[-1] == "received: from stdin"


def test_client_is_one_exchange_and_refuses_a_second_message(impl_env):
    # --help said "-m ...; repeat for several" but only the first was sent, the rest silently
    # dropped: the notes' client is one exchange, so a second -m is now a usage error
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        port = str(listener.getsockname()[1])
        result = run_example(impl_env, TCP, "client", "--port", port, "--timeout", "1", "-m", "first", "-m", "second")
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            "python -m fastnet.tcp client: error: argument -m/--message: given more than once; the client "
            "sends one message, as the notes' client does (python -m fastnet.tcp chat-client sends several)"
        ]
        listener.settimeout(0.3)
        with pytest.raises(socket.timeout):
            listener.accept()  # refused before connecting: nothing half-sent
    helped = run_example(impl_env, TCP, "client", "--help")
    text = " ".join(helped.stdout.split())
    assert "repeat for several" not in text
    assert "once only" in text and "first line of stdin" in text and "chat-client" in text


def test_client_sends_only_the_first_line_of_stdin(impl_env):
    with Example(impl_env, TCP, "server", "--port", "0") as server:
        result = run_example(impl_env, TCP, "client", "--port", str(server.port), input=b"one\ntwo\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["received: thank you !"]
        assert server.wait() == 0
        assert server.lines[-1] == "received: one"


def test_chat_client_and_server_take_turns_until_an_empty_line(impl_env):
    with Example(impl_env, TCP, "chat-server", "--port", "0", "-m", "answer one", "-m", "answer two", "--count", "1") as server:
        result = run_example(impl_env, TCP, "chat-client", "--port", str(server.port), input=b"line one\nline two\n\nnever sent\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["recv: answer one", "recv: answer two"]
        assert server.wait() == 0
        assert server.lines[2:] == [
            "recv: line one",
            "recv: line two",
            f"{server.lines[1].split()[-1]} closed the connection",
        ]


def test_chat_server_closes_when_its_input_runs_out(impl_env):
    with Example(impl_env, TCP, "chat-server", "--port", "0", "-m", "only answer") as server:
        result = run_example(impl_env, TCP, "chat-client", "--port", str(server.port), "-m", "a", "-m", "b")
        assert result.stdout.splitlines() == ["recv: only answer", "the server closed the connection"]
        assert server.wait() == 0
        assert server.lines[-1] == "no more input: closing the connection"


def test_backlog_client_stalls_once_the_listen_queue_is_full(impl_env):
    # Linux queues backlog+1 completed connections; then it drops SYNs and connect() hangs
    backlog = 2
    with Example(impl_env, TCP, "backlog-server", "--port", "0", "--backlog", str(backlog), "--hold", "60") as server:
        assert server.lines[0].endswith(f"with listen({backlog})")
        result = run_example(impl_env, TCP, "backlog-client", "--port", str(server.port), "-n", "6", "--timeout", "1")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[: backlog + 1] == [f"{i} connected" for i in range(backlog + 1)]
        assert lines[backlog + 1].startswith(f"connection {backlog + 1} stalled: no answer within 1 s")
        assert lines[backlog + 2] == f"{backlog + 1} connections completed before the stall"
        # Ctrl-C while the server holds off accepting: quiet, status 130
        assert server.interrupt() == 130
        assert server.stderr() == ""
        assert not any(line.startswith("accepted") for line in server.lines)


def test_backlog_client_completes_every_connection_when_the_server_accepts(impl_env):
    with Example(
        impl_env, TCP, "backlog-server", "--port", "0", "--backlog", "2", "--accept-delay", "0", "--count", "6"
    ) as server:
        result = run_example(impl_env, TCP, "backlog-client", "--port", str(server.port), "-n", "6", "--timeout", "5")
        assert result.stdout.splitlines() == [f"{i} connected" for i in range(6)] + ["all 6 connections completed"]
        assert server.wait() == 0
        assert [line.split(":")[0] for line in server.lines[1:]] == [f"accepted #{i}" for i in range(1, 7)]



@pytest.mark.parametrize(
    ("argv", "last"),
    [
        pytest.param(["server"], "nothing received: the --duration is over", id="server"),
        pytest.param(
            ["chat-server", "-m", "unused"], "{client}: the --duration is over, closing the connection", id="chat-server"
        ),
    ],
)
def test_servers_end_at_their_duration_with_a_silent_client(impl_env, argv, last):
    # recv() waited for the client without a bound: chat-server ran on past --duration, and the
    # server's recv() timeout ended it as a failure ("error: timed out", status 1)
    with Example(impl_env, TCP, *argv, "--port", "0", "--duration", "1.5") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle:
            client = "%s:%d" % idle.getsockname()[:2]
            server.expect(f"connection from {client}")
            assert server.wait() == 0, server.stderr()
            assert server.stderr() == ""
            assert server.lines[-1] == last.format(client=client)
            idle.settimeout(5)
            assert idle.recv(10) == b""  # and the server closed the connection
