"""The notes' UDP examples, in Python 3: ``python -m fastnet.udp {client,server,echo,chat,broadcast}``.

- ``client``    (客户端收发数据) send each line, print the reply;
- ``server``    (服务端) receive one datagram and print it;
- ``echo``      (echo 服务器) send every datagram back, counting them;
- ``chat``      (聊天室) print every datagram with the time (ctime) and its sender;
- ``broadcast`` (广播) send one datagram with SO_BROADCAST and print the replies.

The fast way to run a UDP echo server is ``python -m fastnet.epoll_echo --udp``.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from . import _cli, _recverr

__all__ = ["main"]

DEFAULT_PORT = 7788
RECV_SIZE = 1024  # the notes' recvfrom(1024): a longer datagram is cut, with a warning (_recvfrom)
#: The loopback broadcast address: a broadcast that never leaves this machine.
LOOPBACK_BROADCAST = "127.255.255.255"


def _server_socket(args: argparse.Namespace) -> socket.socket:
    host, port = _cli.bind_address(args)
    sock = socket.socket(_cli.family_of(host), socket.SOCK_DGRAM)
    try:
        if args.reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _cli.bind(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    _cli.announce(sock)
    return sock


def _recvfrom(sock: socket.socket):
    """The notes' ``recvfrom(1024)``: (data, sender), with a warning when the datagram was longer.

    The kernel drops what does not fit, silently for recvfrom(); recvmsg() says so in its flags
    (MSG_TRUNC). The notes' 1024 stays -- it is what the lesson shows -- but not silently.
    """
    data, _, flags, sender = sock.recvmsg(RECV_SIZE)
    if flags & socket.MSG_TRUNC:
        _cli.warn(
            f"the datagram from {_cli.format_address(sender)} was longer than {RECV_SIZE} bytes: "
            f"recvfrom({RECV_SIZE}) kept the first {RECV_SIZE}, the rest is lost"
        )
    return data, sender


def _receive(sock: socket.socket, deadline: _cli.Deadline):
    """One datagram, or None once the --duration is over."""
    sock.settimeout(deadline.socket_timeout())
    try:
        return _recvfrom(sock)
    except socket.timeout:
        return None


def cmd_client(args: argparse.Namespace) -> int:
    host, port = _cli.connect_address(args)
    family = _cli.family_of(host)
    # the numeric address: the kernel names it in an ICMP error (see below)
    address = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)[0][4]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        # with IP_RECVERR the kernel reports a port where nothing listens (ICMP port
        # unreachable), and the client says so at once instead of waiting out --timeout
        _recverr.enable(sock)
        sock.settimeout(args.timeout)
        for data in _cli.messages(args, prompt="data to send: "):
            sock.sendto(data, address)
            try:
                reply, sender = _recvfrom(sock)
            except socket.timeout:
                return _cli.fail(f"no reply from {_cli.format_address(address)} within {args.timeout:g} s")
            except OSError as exc:
                if exc.errno in _recverr.LATE_ERRNOS and _recverr.refused(sock, address):
                    return _cli.fail(f"no UDP server at {_cli.format_address(address)}: connection refused")
                raise
            _cli.emit(f"received from {_cli.format_address(sender)}: {_cli.show(reply)}")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    deadline = _cli.Deadline(args.duration)
    with _server_socket(args) as sock:
        for _ in range(args.count):
            got = _receive(sock, deadline)
            if got is None:
                break
            data, sender = got
            _cli.emit(f"received from {_cli.format_address(sender)}: {_cli.show(data)}")
    return 0


def _echo_on_relay(args: argparse.Namespace) -> int:
    """The same echo on fastnet.relay: datagrams never enter Python, so nothing per message."""
    if args.count is not None or args.reuse_address:
        return _cli.fail("--count and --reuse-address need --engine notes (the relay echoes in C, unseen)")
    from . import relay

    deadline = _cli.Deadline(args.duration)
    host, port = _cli.bind_address(args)
    echo = relay.EchoRelay(host, port, udp=True).start()
    try:
        _cli.emit(
            f"{_cli.LISTENING} {_cli.format_address(echo.address)} "
            f"(engine relay, implementation {relay.IMPLEMENTATION})"
        )
        while not deadline.expired():
            time.sleep(deadline.timeout(3600.0))
    finally:
        stats = echo.stop()
        _cli.emit(f"echoed {stats.messages} datagrams ({stats.bytes} bytes)")
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    if args.engine == "relay":
        return _echo_on_relay(args)
    deadline = _cli.Deadline(args.duration)
    with _server_socket(args) as sock:
        num = 0
        while args.count is None or num < args.count:
            got = _receive(sock, deadline)
            if got is None:
                break
            data, sender = got
            sock.sendto(data, sender)
            num += 1
            _cli.emit(f"echoed message #{num} to {_cli.format_address(sender)}: {_cli.show(data)}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    deadline = _cli.Deadline(args.duration)
    reply = None if args.reply is None else args.reply.encode("utf-8", "surrogateescape")
    with _server_socket(args) as sock:
        num = 0
        while args.count is None or num < args.count:
            got = _receive(sock, deadline)
            if got is None:
                break
            data, sender = got
            num += 1
            _cli.emit(f"[{time.ctime()}] {_cli.format_address(sender)}: {_cli.show(data)}")
            if reply is not None:
                sock.sendto(reply, sender)
    return 0


def cmd_broadcast(args: argparse.Namespace) -> int:
    destination = (args.destination, args.port)
    deadline = _cli.Deadline(args.duration)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # without SO_BROADCAST the kernel refuses to send to a broadcast address (EACCES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        message = (args.message or "Hi").encode("utf-8", "surrogateescape")
        sock.sendto(message, destination)
        _cli.emit(f"sent {len(message)} bytes to {_cli.format_address(destination)}; waiting for replies (Ctrl-C to stop)")
        replies = 0
        while args.count is None or replies < args.count:
            got = _receive(sock, deadline)
            if got is None:
                break
            data, sender = got
            replies += 1
            _cli.emit(f"Received from {_cli.format_address(sender)}: {_cli.show(data)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastnet.udp",
        description="The notes' UDP examples (section UDP), in Python 3.",
        epilog="The fast UDP echo server is `python -m fastnet.epoll_echo --udp`.",
    )
    sub = parser.add_subparsers(title="examples", metavar="EXAMPLE")

    p = sub.add_parser(
        "client",
        help="客户端收发数据: send each line, print the reply",
        description="客户端收发数据 (client): send each message as one datagram and print the reply.",
    )
    _cli.add_address_options(p, DEFAULT_PORT, server=False)
    _cli.add_message_option(p)
    p.add_argument("--timeout", type=_cli.positive_seconds, default=5.0, help="seconds to wait for each reply (default: %(default)s)")
    p.set_defaults(handler=cmd_client)

    def server_options(p: argparse.ArgumentParser) -> None:
        _cli.add_address_options(p, DEFAULT_PORT, server=True)
        p.add_argument(
            "--reuse-address",
            action="store_true",
            help="set SO_REUSEADDR, so that several servers on this machine can share the port "
            "(each then receives the same broadcasts)",
        )

    p = sub.add_parser(
        "server",
        help="服务端: receive one datagram and print it",
        description="服务端 (server): receive a datagram and print it with its sender.",
    )
    server_options(p)
    p.add_argument("--count", type=_cli.count_number, default=1, metavar="N", help="datagrams to receive (default: %(default)s)")
    _cli.add_bounds(p)
    p.set_defaults(handler=cmd_server)

    p = sub.add_parser(
        "echo",
        help="echo 服务器: send every datagram back, counting them",
        description="echo 服务器 (echo server): send every datagram back to its sender and print a count. "
        f"As in the notes it reads with recvfrom({RECV_SIZE}): a longer datagram is cut to {RECV_SIZE} "
        "bytes (a warning on stderr says so) and echoed cut. "
        "This is the slow, one-datagram-at-a-time way; the fast one is "
        "`python -m fastnet.epoll_echo --udp` (datagrams of any size).",
    )
    server_options(p)
    _cli.add_bounds(p, count="N datagrams")
    p.add_argument(
        "--engine",
        choices=("notes", "relay"),
        default="notes",
        help="notes: the notes' loop in Python, printing each datagram (default); relay: "
        "fastnet.relay's C loop, which prints only the totals when stopped",
    )
    p.set_defaults(handler=cmd_echo)

    p = sub.add_parser(
        "chat",
        help="聊天室: print every datagram with the time and its sender",
        description="聊天室 (chat room): print every datagram with ctime() and its sender.",
    )
    server_options(p)
    p.add_argument("--reply", default=None, metavar="TEXT", help="also answer each sender with TEXT (e.g. for `broadcast`)")
    _cli.add_bounds(p, count="N datagrams")
    p.set_defaults(handler=cmd_chat)

    p = sub.add_parser(
        "broadcast",
        help="广播: send a datagram with SO_BROADCAST, print the replies",
        description="广播 (broadcast): send one datagram to a broadcast address with SO_BROADCAST set, "
        "then print every reply. The default destination is the loopback broadcast "
        f"{LOOPBACK_BROADCAST}, which never leaves this machine; Linux delivers it to UDP sockets bound "
        f"to {LOOPBACK_BROADCAST} or to all interfaces (not to ones bound to 127.0.0.1), e.g. "
        f"`python -m fastnet.udp echo --host {LOOPBACK_BROADCAST}`.",
    )
    p.add_argument(
        "destination",
        nargs="?",
        default=LOOPBACK_BROADCAST,
        help="broadcast address (default: %(default)s, the loopback broadcast)",
    )
    p.add_argument("--port", type=_cli.peer_port, default=DEFAULT_PORT, help="destination port (default: %(default)s)")
    p.add_argument("-m", "--message", default=None, help="what to send (default: Hi)")
    _cli.add_bounds(p, count="N replies")
    p.set_defaults(handler=cmd_broadcast)
    return parser


def main(argv=None) -> int:
    return _cli.dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
