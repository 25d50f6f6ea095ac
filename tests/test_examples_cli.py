"""The conventions shared by the examples (fastnet._cli): addresses, defaults, text output."""

from __future__ import annotations

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
