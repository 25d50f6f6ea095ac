"""The conventions shared by the examples (fastnet._cli): addresses, defaults, text output."""

from __future__ import annotations

import argparse
import socket

import pytest

from fastnet import _cli, coroutines, servers, tcp, udp
from http_helpers import Example, run_example


def parse(module, *argv: str):
    return module.build_parser().parse_args(list(argv))


@pytest.mark.parametrize(
    ("module", "argv", "port"),
    [
        (udp, ["echo"], 7788),
        (udp, ["chat"], 7788),
        (tcp, ["server"], 7788),
        (tcp, ["backlog-server"], 7788),
        (servers, ["epoll"], 7788),
        (servers, ["select-writelist"], 9999),  # the notes' write-list server port
        (coroutines, ["gevent-server"], 7788),
    ],
)
def test_servers_default_to_the_notes_port_on_loopback_and_all_interfaces_is_explicit(module, argv, port):
    assert _cli.bind_address(parse(module, *argv)) == ("127.0.0.1", port)
    assert _cli.bind_address(parse(module, *argv, "--all-interfaces")) == ("0.0.0.0", port)
    assert _cli.bind_address(parse(module, *argv, "--host", "::1", "--all-interfaces")) == ("::", port)


def test_clients_default_to_the_notes_port_on_loopback():
    assert _cli.connect_address(parse(udp, "client")) == ("127.0.0.1", 7788)
    assert _cli.connect_address(parse(tcp, "client")) == ("127.0.0.1", 7788)
    assert _cli.connect_address(parse(servers, "nonblocking-client")) == ("127.0.0.1", 7788)
    assert parse(udp, "broadcast").destination == "127.255.255.255"  # never a LAN broadcast


def test_show_escapes_undecodable_bytes_and_inner_line_breaks():
    assert _cli.show("你好\n".encode()) == "你好"
    assert _cli.show(b"a\xffb\r\n") == "a\\xffb"
    assert _cli.show(b"one\ntwo\rthree\n") == "one\\ntwo\\rthree"
    assert _cli.show(b"") == ""


def test_addresses_are_shown_as_people_write_them():
    assert _cli.format_address(("127.0.0.1", 7788)) == "127.0.0.1:7788"
    assert _cli.format_address(("::1", 7788, 0, 0)) == "[::1]:7788"
    assert _cli.format_address(("fe80::1%lo", 69, 0, 1)) == "[fe80::1%lo]:69"
    # an IPv4 client of a server on "::" arrives as an IPv4-mapped IPv6 address
    assert _cli.format_address(("::ffff:127.0.0.1", 5000, 0, 0)) == "127.0.0.1:5000"


def test_ipv6_loopback_works_too(impl_env):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    with Example(impl_env, "fastnet.udp", "echo", "--host", "::1", "--port", "0", "--count", "1") as echo:
        assert echo.lines[0] == f"listening on [::1]:{echo.port}"
        result = run_example(impl_env, "fastnet.udp", "client", "--host", "::1", "--port", str(echo.port), "-m", "v6")
        assert result.stdout.splitlines() == [f"received from [::1]:{echo.port}: v6"]
        assert echo.wait() == 0


@pytest.mark.parametrize("argv", [("fastnet.udp", "client"), ("fastnet.udp", "broadcast"), ("fastnet.tcp", "client"),
                                  ("fastnet.tcp", "chat-client")])
def test_a_client_cannot_be_sent_to_port_0(impl_env, argv):
    # 0 means "any free port" where a server binds; where a client sends, it is nobody's
    result = run_example(impl_env, *argv, "--port", "0", "-m", "x")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].endswith("error: argument --port: port must be 1-65535, not 0")


def test_a_bad_address_is_a_one_line_error(impl_env):
    result = run_example(impl_env, "fastnet.servers", "epoll", "--port", "99999")
    assert result.returncode == 2  # argparse: usage, then the reason
    assert result.stderr.splitlines()[-1].endswith("error: argument --port: port must be 0-65535, not 99999")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_example(impl_env, "fastnet.tcp", "server", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: cannot bind 127.0.0.1:{port}: Address already in use"]


@pytest.mark.parametrize("module,command", [("fastnet.tcp", "client"), ("fastnet.tcp", "chat-client"),
                                            ("fastnet.servers", "nonblocking-client")])
def test_a_client_that_cannot_connect_names_the_address(impl_env, module, command):
    with socket.socket() as closed:  # bound, never listening: the kernel refuses a connection
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result = run_example(impl_env, module, command, "--port", str(port), input=b"hello\n")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"error: cannot connect to 127.0.0.1:{port}: Connection refused"]


def test_time_and_count_options_take_only_values_that_make_sense():
    assert _cli.positive_seconds("0.5") == 0.5 and _cli.positive_seconds("10") == 10.0
    assert _cli.seconds("0") == 0.0 and _cli.count_number("0") == 0 and _cli.count_number("7") == 7
    for text in ("0", "-1", "nan", "inf", "-inf", "1e999", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            _cli.positive_seconds(text)
    for text in ("-0.1", "nan", "inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            _cli.seconds(text)
    for text in ("-1", "1.5", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            _cli.count_number(text)


# every --timeout, --duration, pause, count and port option of the examples, with a value that
# used to pass argparse and fail later (a ValueError traceback, a non-blocking socket, a loop
# that never ends or never starts)
BAD_OPTIONS = [
    (udp, ["client", "-m", "x", "--timeout", "-1"], "--timeout"),
    (udp, ["client", "-m", "x", "--timeout", "0"], "--timeout"),
    (udp, ["client", "-m", "x", "--timeout", "nan"], "--timeout"),
    (udp, ["echo", "--duration", "inf"], "--duration"),
    (udp, ["server", "--count", "-1"], "--count"),
    (udp, ["chat", "--duration", "-5"], "--duration"),
    (udp, ["broadcast", "--port", "65536"], "--port"),
    (tcp, ["client", "-m", "x", "--timeout", "-1"], "--timeout"),
    (tcp, ["chat-client", "-m", "x", "--timeout", "0"], "--timeout"),
    (tcp, ["server", "--duration", "nan"], "--duration"),
    (tcp, ["chat-server", "--count", "-2"], "--count"),
    (tcp, ["backlog-server", "--accept-delay", "-1"], "--accept-delay"),
    (tcp, ["backlog-server", "--hold", "inf"], "--hold"),
    (tcp, ["backlog-server", "--backlog", "-1"], "--backlog"),
    (tcp, ["backlog-client", "--timeout", "inf"], "--timeout"),
    (tcp, ["backlog-client", "-n", "-3"], "-n/--connections"),
    (servers, ["single", "--duration", "0"], "--duration"),
    (servers, ["epoll", "--port", "-1"], "--port"),
    (servers, ["nonblocking", "--poll-interval", "nan"], "--poll-interval"),
    (servers, ["nonblocking-client", "--timeout", "-1"], "--timeout"),
    (servers, ["nonblocking-client", "--delay", "-1"], "--delay"),
    (servers, ["nonblocking-client", "--rounds", "-1"], "--rounds"),
    (coroutines, ["generators", "--delay", "nan"], "--delay"),
    (coroutines, ["generators", "--rounds", "-1"], "--rounds"),
    (coroutines, ["gevent-switch", "--delay", "-1"], "--delay"),
    (coroutines, ["gevent-spawn", "--greenlets", "-1"], "--greenlets"),
    (coroutines, ["gevent-download", "http://127.0.0.1:9/", "--timeout", "0"], "--timeout"),
    (coroutines, ["gevent-server", "--duration", "-1"], "--duration"),
]


@pytest.mark.parametrize(
    ("module", "argv", "option"),
    [pytest.param(m, argv, option, id=f"{m.__name__.split('.')[-1]} {' '.join(argv)}") for m, argv, option in BAD_OPTIONS],
)
def test_a_meaningless_number_is_refused_by_argparse(module, argv, option, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(module, *argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"{module.build_parser().prog} {argv[0]}: error: argument {option}: ")


@pytest.mark.parametrize("argv", [["--port", "65536"], ["--port", "-1"]])
def test_epoll_echo_uses_the_same_port_check(argv, capsys):
    from fastnet import epoll_echo

    with pytest.raises(SystemExit) as exit_:
        epoll_echo.main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("python -m fastnet.epoll_echo: error: argument --port: port must be 0-65535")


@pytest.mark.parametrize(
    ("module", "command"), [("fastnet.udp", "client"), ("fastnet.tcp", "client"), ("fastnet.tcp", "chat-client")]
)
@pytest.mark.parametrize("value", ["-1", "0"])
def test_a_bad_timeout_is_a_usage_error_not_a_traceback(impl_env, module, command, value):
    # -1 was a ValueError traceback from settimeout(); 0 made the socket silently non-blocking
    result = run_example(impl_env, module, command, "--port", "9", "-m", "x", "--timeout", value)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].endswith(
        f"{command}: error: argument --timeout: the time must be above 0 seconds, not '{value}'"
    )
