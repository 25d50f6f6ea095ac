"""The notes' TCP examples, in Python 3: ``python -m fastnet.tcp EXAMPLE``.

- ``server``         (服务器) accept one client, print what it sent, answer ``thank you !``;
- ``client``         (客户端) connect, send one line, print the answer (one exchange, as in the notes);
- ``chat-client``    (模拟聊天 客户端) send a line, print the answer, until an empty line;
- ``chat-server``    (模拟聊天 服务端) print each line received, answer with the next line of input;
- ``backlog-server`` (Listen 的队列长度 服务端) ``listen(n)``, then accept slowly;
- ``backlog-client`` (Listen 的队列长度 客户端) open N connections and show where they stall.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from . import _cli

__all__ = ["main"]

DEFAULT_PORT = 7788
RECV_SIZE = 1024


def _listen(args: argparse.Namespace, backlog: int, *, announce: bool = True) -> socket.socket:
    host, port = _cli.bind_address(args)
    sock = socket.socket(_cli.family_of(host), socket.SOCK_STREAM)
    try:
        # not in the notes' first server, but without it a restart fails for a minute (TIME_WAIT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _cli.bind(sock, (host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    if announce:
        _cli.announce(sock)
    return sock


def _accept(server: socket.socket, deadline: _cli.Deadline):
    """The next (connection, address), or None once the --duration is over."""
    server.settimeout(deadline.socket_timeout())
    try:
        conn, addr = server.accept()
    except socket.timeout:
        return None
    conn.settimeout(None)
    return conn, addr


def _connect(args: argparse.Namespace) -> socket.socket:
    return _cli.connect(_cli.connect_address(args), args.timeout)


def cmd_server(args: argparse.Namespace) -> int:
    deadline = _cli.Deadline(args.duration)
    reply = args.reply.encode("utf-8", "surrogateescape")
    with _listen(args, 5) as server:
        got = _accept(server, deadline)
        if got is None:
            return 0
        conn, addr = got
        with conn:
            _cli.emit(f"connection from {_cli.format_address(addr)}")
            # a client that says nothing ends at the --duration like any other wait, not as an error
            data = _cli.recv(conn, RECV_SIZE, deadline)
            if data is None:
                _cli.emit("nothing received: the --duration is over")
                return 0
            _cli.emit(f"received: {_cli.show(data)}")
            conn.sendall(reply)
    return 0


class _OneMessage(argparse.Action):
    """``-m/--message`` of ``tcp client``: one message, as the notes' client sends one.

    A second ``-m`` is refused (one line, exit status 2) rather than silently dropped."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            parser.exit(
                2,
                f"{parser.prog}: error: argument -m/--message: given more than once; the client sends "
                "one message, as the notes' client does (python -m fastnet.tcp chat-client sends several)\n",
            )
        setattr(namespace, self.dest, [values])


def cmd_client(args: argparse.Namespace) -> int:
    # one exchange, as in the notes: --message, else the first line of stdin (later lines are not read)
    data = next(_cli.messages(args, prompt="data to send: "), None)
    if data is None:
        return _cli.fail("nothing to send (give --message or a line on stdin)")
    with _connect(args) as sock:
        sock.sendall(data)
        reply = sock.recv(RECV_SIZE)
        _cli.emit(f"received: {_cli.show(reply)}")
    return 0


def cmd_chat_client(args: argparse.Namespace) -> int:
    with _connect(args) as sock:
        for data in _cli.messages(args, prompt="send: "):
            if not data:  # an empty line ends the chat, as in the notes
                break
            sock.sendall(data)
            reply = sock.recv(RECV_SIZE)
            if not reply:
                _cli.emit("the server closed the connection")
                break
            _cli.emit(f"recv: {_cli.show(reply)}")
    return 0


def cmd_chat_server(args: argparse.Namespace) -> int:
    deadline = _cli.Deadline(args.duration)
    replies = _cli.messages(args, prompt="send: ")
    served = 0
    with _listen(args, 5) as server:
        while args.count is None or served < args.count:
            got = _accept(server, deadline)
            if got is None:
                break
            conn, addr = got
            served += 1
            with conn:
                _cli.emit(f"connection from {_cli.format_address(addr)}")
                while True:
                    # the --duration also ends a wait for a client that stays connected and silent
                    data = _cli.recv(conn, RECV_SIZE, deadline)
                    if data is None:
                        _cli.emit(f"{_cli.format_address(addr)}: the --duration is over, closing the connection")
                        return 0
                    if not data:  # an empty read: the client closed the connection
                        _cli.emit(f"{_cli.format_address(addr)} closed the connection")
                        break
                    _cli.emit(f"recv: {_cli.show(data)}")
                    answer = next(replies, None)
                    if answer is None:
                        _cli.emit("no more input: closing the connection")
                        return 0
                    conn.sendall(answer)
    return 0


def cmd_backlog_server(args: argparse.Namespace) -> int:
    deadline = _cli.Deadline(args.duration)
    accepted = []  # kept open, as the notes' clients never close theirs either
    with _listen(args, args.backlog, announce=False) as server:
        _cli.emit(f"{_cli.LISTENING} {_cli.format_address(server.getsockname())} with listen({args.backlog})")
        try:
            if args.hold:
                _cli.emit(f"not accepting for {args.hold:g} s: connections wait in the listen queue")
                time.sleep(min(args.hold, deadline.timeout(args.hold)))
            while args.count is None or len(accepted) < args.count:
                got = _accept(server, deadline)
                if got is None:
                    break
                conn, addr = got
                accepted.append(conn)
                _cli.emit(f"accepted #{len(accepted)}: {_cli.format_address(addr)}")
                if args.accept_delay:
                    time.sleep(args.accept_delay)
        finally:
            for conn in accepted:
                conn.close()
    return 0


def cmd_backlog_client(args: argparse.Namespace) -> int:
    address = _cli.connect_address(args)
    connections = []
    try:
        for i in range(args.connections):
            sock = socket.socket(_cli.family_of(args.host), socket.SOCK_STREAM)
            sock.settimeout(args.timeout)
            try:
                sock.connect(address)
            except socket.timeout:
                sock.close()
                _cli.emit(
                    f"connection {i} stalled: no answer within {args.timeout:g} s "
                    "(the server's listen queue is full, so the kernel drops our SYN)"
                )
                _cli.emit(f"{len(connections)} connections completed before the stall")
                return 0
            except BaseException:
                sock.close()
                raise
            connections.append(sock)
            _cli.emit(f"{i} connected")
        _cli.emit(f"all {len(connections)} connections completed")
        if args.hold:
            time.sleep(args.hold)
    finally:
        for sock in connections:
            sock.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fastnet.tcp", description="The notes' TCP examples, in Python 3.")
    sub = parser.add_subparsers(title="examples", metavar="EXAMPLE")

    def client_options(p: argparse.ArgumentParser) -> None:
        _cli.add_address_options(p, DEFAULT_PORT, server=False)
        p.add_argument("--timeout", type=_cli.positive_seconds, default=10.0, help="seconds to wait on the network (default: %(default)s)")

    p = sub.add_parser(
        "server",
        help='服务器: accept one client, print what it sends, answer "thank you !"',
        description='服务器 (server): accept one client, print what it sends, answer "thank you !", close.',
    )
    _cli.add_address_options(p, DEFAULT_PORT, server=True)
    p.add_argument("--reply", default="thank you !", help="the answer (default: %(default)r)")
    _cli.add_bounds(p)
    p.set_defaults(handler=cmd_server)

    p = sub.add_parser(
        "client",
        help="客户端: connect, send a line, print the answer",
        description="客户端 (client): connect, send one message, print the answer, close: one exchange, "
        "as in the notes. The message is --message, else the first line of stdin. To send several "
        "in turn, each followed by its answer: python -m fastnet.tcp chat-client.",
    )
    client_options(p)
    p.add_argument(
        "-m",
        "--message",
        action=_OneMessage,
        default=None,
        help="the message to send; once only (default: the first line of stdin)",
    )
    p.set_defaults(handler=cmd_client)

    p = sub.add_parser(
        "chat-client",
        help="模拟聊天 客户端: send lines and print answers, in turn",
        description="模拟聊天 客户端 (chat client): send a line, print the answer, in turn; an empty line "
        "or the end of input ends the chat.",
    )
    client_options(p)
    _cli.add_message_option(p, "a line to send")
    p.set_defaults(handler=cmd_chat_client)

    p = sub.add_parser(
        "chat-server",
        help="模拟聊天 服务端: print each line, answer with the next line of input",
        description="模拟聊天 服务端 (chat server): serve clients one after another; print each line "
        "received and answer with the next line of input. When input runs out it closes and exits.",
    )
    _cli.add_address_options(p, DEFAULT_PORT, server=True)
    _cli.add_message_option(p, "an answer, used in turn")
    _cli.add_bounds(p, count="N clients")
    p.set_defaults(handler=cmd_chat_server)

    p = sub.add_parser(
        "backlog-server",
        help="Listen 的队列长度 服务端: listen(n), then accept slowly",
        description="Listen 的队列长度 服务端 (listen backlog server): listen(BACKLOG), then accept one "
        "connection every --accept-delay seconds. On Linux BACKLOG+1 completed connections wait in "
        "the queue; after that the kernel drops new SYNs and clients' connect() blocks.",
    )
    _cli.add_address_options(p, DEFAULT_PORT, server=True)
    p.add_argument("--backlog", type=_cli.count_number, default=5, help="the n of listen(n) (default: %(default)s)")
    p.add_argument("--accept-delay", type=_cli.seconds, default=1.0, metavar="SECONDS", help="pause after each accept (default: %(default)s)")
    p.add_argument("--hold", type=_cli.seconds, default=0.0, metavar="SECONDS", help="do not accept at all for this long first (default: 0)")
    _cli.add_bounds(p, count="N accepted connections")
    p.set_defaults(handler=cmd_backlog_server)

    p = sub.add_parser(
        "backlog-client",
        help="Listen 的队列长度 客户端: open N connections, show where they stall",
        description="Listen 的队列长度 客户端 (listen backlog client): open N connections one after "
        "another and keep them open; report the first one whose connect() does not complete.",
    )
    _cli.add_address_options(p, DEFAULT_PORT, server=False)
    p.add_argument("-n", "--connections", type=_cli.count_number, default=10, help="connections to open (default: %(default)s)")
    p.add_argument("--timeout", type=_cli.positive_seconds, default=2.0, help="seconds before a connect() counts as stalled (default: %(default)s)")
    p.add_argument("--hold", type=_cli.seconds, default=0.0, metavar="SECONDS", help="keep the connections open this long at the end")
    p.set_defaults(handler=cmd_backlog_client)
    return parser


def main(argv=None) -> int:
    return _cli.dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
