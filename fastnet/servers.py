"""The notes' concurrent TCP servers, in Python 3: ``python -m fastnet.servers EXAMPLE``.

- ``single``             (单进程服务器) one client at a time;
- ``process``            (多进程服务器) a process per client;
- ``thread``             (多进程服务器 2) a thread per client;
- ``nonblocking``        (单进程服务器-非堵塞模式 服务端) non-blocking sockets polled in one loop;
- ``nonblocking-client`` (单进程服务器-非堵塞模式 客户端) N connections sending random numbers;
- ``select``             (select 回显服务器) an echo server on select(), quits on a line from stdin;
- ``select-writelist``   (另外一个服务器（包含 writeList）) per-client queues and a write list;
- ``epoll``              (epoll 版 - TCP 服务器) edge-triggered select.epoll.

Bugs of the notes fixed here: the non-blocking server's ``g_needDelClientInfoList`` NameError and
its 100 % CPU busy loop; the write-list server logging the last client's address for everyone and
never dropping closed clients; the epoll server reading once per edge-triggered event (it must read
until EAGAIN) and never forgetting closed connections; the select server's blocking send, which let
one client that does not read stall everyone (and its reset end the server). Also: the epoll server
echoes a half-closed connection to the end and bounds what waits for a client that does not read;
the multi-process server's children close the listening socket and end with the parent on SIGTERM;
``--duration`` also ends a wait for a silent connected client.

The fast echo server is ``python -m fastnet.epoll_echo``.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import random
import select
import signal
import socket
import sys
import threading
import time

from . import _cli

__all__ = ["main"]

DEFAULT_PORT = 7788
WRITELIST_PORT = 9999  # the notes' write-list server
RECV_SIZE = 1024
# epoll server: most echo bytes kept for one client that does not read (fastnet.relay keeps one
# 64 KiB read); past it, that connection is not read until it takes its echo
PENDING_LIMIT = 64 * 1024
FAST_ECHO = "python -m fastnet.epoll_echo"


def _listen(args: argparse.Namespace, backlog: int) -> socket.socket:
    host, port = _cli.bind_address(args)
    sock = socket.socket(_cli.family_of(host), socket.SOCK_STREAM)
    try:
        # 重复使用绑定的信息: restart at once, without waiting for TIME_WAIT to pass
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _cli.bind(sock, (host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    _cli.announce(sock)
    return sock


def _accept(server: socket.socket, deadline: _cli.Deadline):
    """The next (client, address), or None once the deadline has passed (see _cli.sliced)."""
    got = _cli.sliced(server, deadline, server.accept)
    if got is not None:
        got[0].settimeout(None)
    return got


def _deal_with_client(conn: socket.socket, addr, deadline: _cli.Deadline | None = None) -> bool:
    """Print what one client sends until it closes (the notes' dealWithClient).

    False when the *deadline* (the --duration) ended it first: a silent client that stays
    connected must not keep the server running past its --duration.
    """
    name = _cli.format_address(addr)
    deadline = deadline or _cli.Deadline(None)
    with conn:
        while True:
            try:
                data = _cli.recv(conn, RECV_SIZE, deadline)
            except ConnectionResetError:
                data = b""
            if data is None:
                _cli.emit(f"[{name}] closed: the --duration is over")
                return False
            if data:
                _cli.emit(f"recv[{name}]: {_cli.show(data)}")
            else:
                _cli.emit(f"[{name}] closed")
                return True


# -- 单进程服务器 ----------------------------------------------------------------------------


def cmd_single(args: argparse.Namespace) -> int:
    deadline = _cli.Deadline(args.duration)
    served = 0
    with _listen(args, 5) as server:
        while args.count is None or served < args.count:
            _cli.emit("waiting for a new client")
            got = _accept(server, deadline)
            if got is None:
                break
            conn, addr = got
            served += 1
            _cli.emit(f"serving {_cli.format_address(addr)}; other clients wait until it closes")
            if not _deal_with_client(conn, addr, deadline):
                break
    return 0


# -- 多进程服务器 ----------------------------------------------------------------------------


EXIT_TERMINATED = 128 + signal.SIGTERM  # what a shell reports for a program ended by SIGTERM


def _child(conn: socket.socket, addr, server: socket.socket) -> None:
    # The parent's SIGTERM handler and blocked SIGTERM came along with the fork (see cmd_process);
    # the parent ends a child with SIGTERM, which must simply end it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    # The fork also copied the listening socket. A child that kept it would keep the port
    # taken after the parent has gone, and new clients would queue where nobody accepts.
    server.close()
    try:
        _deal_with_client(conn, addr)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: end quietly
        pass


def _terminated(signum, frame):
    # SIGTERM (kill, systemd) ends the parent like Ctrl-C does: through the finally clauses
    # that end the children and close the listening socket.
    raise SystemExit(EXIT_TERMINATED)


def cmd_process(args: argparse.Namespace) -> int:
    deadline = _cli.Deadline(args.duration)
    # fork, as the notes do: the child inherits the connected socket directly
    context = multiprocessing.get_context("fork")
    children = []
    accepted = 0
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        with _listen(args, 5) as server:
            while args.count is None or accepted < args.count:
                got = _accept(server, deadline)
                if got is None:
                    break
                conn, addr = got
                accepted += 1
                _cli.emit(f"new process for {_cli.format_address(addr)}")
                # daemon: multiprocessing ends the children when the parent returns normally;
                # Ctrl-C and SIGTERM end them in the finally clause below
                child = context.Process(target=_child, args=(conn, addr, server), daemon=True)
                children = [c for c in children if c.is_alive()]
                # a SIGTERM that came between the fork and the append would leave a child
                # nobody ends: hold it back until the child is in the list
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
                try:
                    child.start()
                    children.append(child)
                finally:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
                # the child has its own copy of the socket; the parent's is of no more use
                conn.close()
        for child in children:
            child.join(deadline.remaining())
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut this short
        for child in children:
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(1.0)
            if child.is_alive():  # a child that does not end on SIGTERM
                child.kill()
                child.join(1.0)
        signal.signal(signal.SIGTERM, previous)
    return 0


# -- 多进程服务器 2 (threads) -----------------------------------------------------------------


def cmd_thread(args: argparse.Namespace) -> int:
    deadline = _cli.Deadline(args.duration)
    threads = []
    accepted = 0
    with _listen(args, 5) as server:
        while args.count is None or accepted < args.count:
            got = _accept(server, deadline)
            if got is None:
                break
            conn, addr = got
            accepted += 1
            _cli.emit(f"new thread for {_cli.format_address(addr)}")
            # threads share the socket: the main thread must not close it (the thread does)
            thread = threading.Thread(target=_deal_with_client, args=(conn, addr), daemon=True)
            thread.start()
            threads = [t for t in threads if t.is_alive()]
            threads.append(thread)
    for thread in threads:
        thread.join(deadline.remaining())
    return 0


# -- 单进程服务器-非堵塞模式 ------------------------------------------------------------------


def cmd_nonblocking(args: argparse.Namespace) -> int:
    deadline = _cli.Deadline(args.duration)
    clients: list[tuple[socket.socket, tuple]] = []
    accepted = 0
    with _listen(args, 1000) as server:
        # a non-blocking accept() raises BlockingIOError when no client is waiting
        server.setblocking(False)
        try:
            while not deadline.expired():
                busy = False
                if args.count is None or accepted < args.count:
                    try:
                        conn, addr = server.accept()
                    except BlockingIOError:
                        pass
                    else:
                        busy = True
                        accepted += 1
                        conn.setblocking(False)
                        clients.append((conn, addr))
                        _cli.emit(f"new client: {_cli.format_address(addr)}")
                elif not clients:
                    break  # --count clients served and gone
                closed = []  # the notes appended to an undefined g_needDelClientInfoList here
                for conn, addr in clients:
                    try:
                        data = conn.recv(RECV_SIZE)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        data = b""
                    busy = True
                    if data:
                        _cli.emit(f"recv[{_cli.format_address(addr)}]: {_cli.show(data)}")
                    else:
                        _cli.emit(f"[{_cli.format_address(addr)}] closed")
                        conn.close()
                        closed.append((conn, addr))
                for item in closed:
                    clients.remove(item)
                if not busy:
                    # The notes spin here at 100 % CPU. Polling stays the lesson, but an idle
                    # pass now sleeps a little before looking again.
                    time.sleep(args.poll_interval)
        finally:
            for conn, _ in clients:
                conn.close()
    return 0


def cmd_nonblocking_client(args: argparse.Namespace) -> int:
    address = _cli.connect_address(args)
    conns = []
    try:
        for i in range(args.connections):
            conns.append(_cli.connect(address, args.timeout))
            _cli.emit(f"{i} connected")
        for round_no in range(args.rounds):
            for sock in conns:
                sock.sendall(f"{random.randint(0, 100)}\n".encode())
            _cli.emit(f"round {round_no + 1}: sent a random number on each of {len(conns)} connections")
            if args.delay:
                time.sleep(args.delay)
    finally:
        for sock in conns:
            sock.close()
    return 0


# -- select 回显服务器 ------------------------------------------------------------------------


def cmd_select(args: argparse.Namespace) -> int:
    deadline = _cli.Deadline(args.duration)
    with _listen(args, 5) as server:
        inputs: list = [server]
        addresses: dict[socket.socket, tuple] = {}
        # The notes echo with a blocking send(): one client that sends without reading fills its
        # socket buffers, the send blocks, and every other client waits. Here client sockets are
        # non-blocking; what the kernel does not take yet waits in `unsent`, and until it is out
        # that client is not read (so at most one recv() of it is kept) and select() watches it
        # for writability instead.
        unsent: dict[socket.socket, bytes] = {}
        if not args.ignore_stdin:
            inputs.append(sys.stdin)
            _cli.emit("press Enter to stop")

        def close(sock: socket.socket, why: str = "closed") -> None:
            _cli.emit(f"[{_cli.format_address(addresses.pop(sock))}] {why}")
            if sock in inputs:
                inputs.remove(sock)
            unsent.pop(sock, None)
            sock.close()

        def send(sock: socket.socket, data: bytes) -> None:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except (ConnectionResetError, BrokenPipeError) as exc:
                # the client went away: that ends its connection, not the server
                close(sock, f"closed: {exc.strerror}")
                return
            if sent < len(data):
                if sock not in unsent:
                    inputs.remove(sock)  # read no more of it until its echo is out
                unsent[sock] = data[sent:]
            elif sock in unsent:
                del unsent[sock]
                inputs.append(sock)

        try:
            running = True
            while running:
                timeout = deadline.timeout(_cli.SIGNAL_CHECK_INTERVAL)
                if timeout == 0:
                    break
                readable, writable, _ = select.select(inputs, list(unsent), [], timeout)
                for sock in writable:
                    send(sock, unsent[sock])
                for sock in readable:
                    if sock is server:
                        conn, addr = server.accept()
                        conn.setblocking(False)
                        inputs.append(conn)
                        addresses[conn] = addr
                        _cli.emit(f"new client: {_cli.format_address(addr)}")
                    elif sock is sys.stdin:
                        sys.stdin.readline()  # a line, or the end of stdin: either way, stop
                        running = False
                        break
                    elif sock in addresses:  # not closed earlier in this round
                        try:
                            data = sock.recv(RECV_SIZE)
                        except BlockingIOError:
                            continue
                        except ConnectionResetError as exc:
                            close(sock, f"closed: {exc.strerror}")
                            continue
                        if data:
                            _cli.emit(f"echoed[{_cli.format_address(addresses[sock])}]: {_cli.show(data)}")
                            send(sock, data)
                        else:
                            close(sock)
        finally:
            for sock in addresses:
                sock.close()
    return 0


# -- 另外一个服务器（包含 writeList） --------------------------------------------------------


def cmd_select_writelist(args: argparse.Namespace) -> int:
    deadline = _cli.Deadline(args.duration)
    message_queues: dict[socket.socket, collections.deque] = {}
    addresses: dict[socket.socket, tuple] = {}  # the notes printed the last accepted addr for all
    input_list: list[socket.socket] = []
    output_list: list[socket.socket] = []

    def drop(sock: socket.socket, where: str) -> None:
        for lst in (input_list, output_list):
            if sock in lst:
                lst.remove(sock)
        message_queues.pop(sock, None)
        addr = addresses.pop(sock, None)
        sock.close()
        _cli.emit(f"[{where}] Client {_cli.format_address(addr)} disconnected")

    with _listen(args, 10) as server:
        server.setblocking(False)
        input_list.append(server)
        try:
            while True:
                timeout = deadline.timeout(_cli.SIGNAL_CHECK_INTERVAL)
                if timeout == 0:
                    break
                readable, writable, errored = select.select(input_list, output_list, input_list, timeout)
                for obj in readable:
                    if obj is server:
                        try:
                            conn, addr = server.accept()
                        except BlockingIOError:  # the client gave up before we got to it
                            continue
                        _cli.emit(f"Client {_cli.format_address(addr)} connected")
                        input_list.append(conn)
                        addresses[conn] = addr
                        message_queues[conn] = collections.deque()
                    elif obj in message_queues:
                        try:
                            recv_data = obj.recv(RECV_SIZE)
                        except ConnectionResetError:
                            recv_data = b""
                        if recv_data:
                            _cli.emit(f"received {_cli.show(recv_data)} from client {_cli.format_address(addresses[obj])}")
                            message_queues[obj].append(recv_data)
                            if obj not in output_list:
                                output_list.append(obj)
                        else:
                            # an empty read is an orderly close; the notes only handled resets
                            drop(obj, "input")
                for sendobj in writable:
                    queue = message_queues.get(sendobj)
                    if queue is None:  # dropped above in this round
                        continue
                    if queue:
                        send_data = queue.popleft()
                        try:
                            sent = sendobj.send(send_data)
                        except (ConnectionResetError, BrokenPipeError):
                            drop(sendobj, "output")
                            continue
                        if sent < len(send_data):
                            queue.appendleft(send_data[sent:])
                    if not queue:
                        # nothing left to say: stop watching for writability until the next message
                        output_list.remove(sendobj)
                for obj in errored:
                    if obj in message_queues:
                        drop(obj, "error")
        finally:
            for sock in list(message_queues):
                sock.close()
    return 0


# -- epoll 版 - TCP 服务器 -------------------------------------------------------------------


def cmd_epoll(args: argparse.Namespace) -> int:
    deadline = _cli.Deadline(args.duration)
    connections: dict[int, socket.socket] = {}
    addresses: dict[int, tuple] = {}
    pending: dict[int, bytearray] = {}  # echo bytes the kernel would not take yet
    finished: set[int] = set()  # the client has sent all it will (EOF): echo the rest, then close
    ET = select.EPOLLET
    with _listen(args, 10) as server, select.epoll() as epoll:
        server.setblocking(False)
        epoll.register(server.fileno(), select.EPOLLIN | ET)

        def forget(fd: int) -> None:
            epoll.unregister(fd)
            connections.pop(fd).close()
            pending.pop(fd, None)
            finished.discard(fd)
            _cli.emit(f"{_cli.format_address(addresses.pop(fd))} offline ({len(connections)} still connected)")

        def serve(fd: int) -> bool:
            """Read what *fd* sent, echo it; False once the connection is over."""
            conn, buf = connections[fd], pending[fd]
            # edge-triggered: the event comes once, so read until EAGAIN -- or until the echo
            # waiting for a client that does not read reaches PENDING_LIMIT: then reading stops
            # (no EPOLLIN below) until the client takes some, so memory stays bounded, as in
            # fastnet.relay
            while fd not in finished and len(buf) < PENDING_LIMIT:
                try:
                    data = conn.recv(RECV_SIZE)
                except BlockingIOError:
                    break
                except ConnectionResetError:
                    return False
                if not data:
                    # a half-close: the client still reads, so what it sent is echoed first
                    finished.add(fd)
                    break
                _cli.emit(f"recv[{_cli.format_address(addresses[fd])}]: {_cli.show(data)}")
                if args.echo:
                    buf += data
            while buf:
                try:
                    sent = conn.send(buf)
                except BlockingIOError:
                    break
                except (ConnectionResetError, BrokenPipeError):
                    return False
                del buf[:sent]
            if fd in finished and not buf:
                return False
            # EPOLL_CTL_MOD also re-arms the edge: if data waits that we did not read (the
            # limit), the next poll() reports it again
            reading = select.EPOLLIN if fd not in finished and len(buf) < PENDING_LIMIT else 0
            epoll.modify(fd, ET | reading | (select.EPOLLOUT if buf else 0))
            return True

        try:
            while True:
                timeout = deadline.timeout(_cli.SIGNAL_CHECK_INTERVAL)
                if timeout == 0:
                    break
                for fd, events in epoll.poll(-1 if timeout is None else timeout):
                    if fd == server.fileno():
                        # edge-triggered: one event may stand for several waiting clients
                        while True:
                            try:
                                conn, addr = server.accept()
                            except BlockingIOError:
                                break
                            conn.setblocking(False)
                            connections[conn.fileno()] = conn
                            addresses[conn.fileno()] = addr
                            pending[conn.fileno()] = bytearray()
                            epoll.register(conn.fileno(), select.EPOLLIN | ET)
                            _cli.emit(f"new client: {_cli.format_address(addr)}")
                        continue
                    if fd in connections and not serve(fd):
                        forget(fd)
        finally:
            for conn in connections.values():
                conn.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastnet.servers",
        description="The notes' concurrent TCP servers (并发服务器, select, epoll), in Python 3.",
        epilog=f"The fast echo server is `{FAST_ECHO}`.",
    )
    sub = parser.add_subparsers(title="examples", metavar="EXAMPLE")

    def server(name: str, help: str, description: str, port: int = DEFAULT_PORT, count: str | None = "N clients"):
        p = sub.add_parser(name, help=help, description=description)
        _cli.add_address_options(p, port, server=True)
        _cli.add_bounds(p, count=count)
        return p

    p = server(
        "single",
        "单进程服务器: one client at a time",
        "单进程服务器 (single-process server): serve one client at a time and print what it sends; "
        "the next client waits until the current one closes.",
    )
    p.set_defaults(handler=cmd_single)

    p = server(
        "process",
        "多进程服务器: a process per client",
        "多进程服务器 (multi-process server): fork a process per client. Ctrl-C or SIGTERM end the "
        "children too (exit status 130, 143).",
    )
    p.set_defaults(handler=cmd_process)

    p = server(
        "thread",
        "多进程服务器 2: a thread per client",
        "多进程服务器 2 (thread-per-client server): start a thread per client.",
    )
    p.set_defaults(handler=cmd_thread)

    p = server(
        "nonblocking",
        "单进程服务器-非堵塞模式 服务端: poll non-blocking sockets in one loop",
        "单进程服务器-非堵塞模式 服务端 (non-blocking server): one process polls a non-blocking "
        "listening socket and every client socket in turn. Fixed: the NameError on a closed client, "
        "and the 100% CPU busy loop (an idle pass now sleeps --poll-interval).",
    )
    p.add_argument(
        "--poll-interval",
        type=_cli.seconds,
        default=0.01,
        metavar="SECONDS",
        help="sleep after a pass that found nothing to do (default: %(default)s)",
    )
    p.set_defaults(handler=cmd_nonblocking)

    p = sub.add_parser(
        "nonblocking-client",
        help="单进程服务器-非堵塞模式 客户端: N connections sending random numbers",
        description="单进程服务器-非堵塞模式 客户端 (non-blocking server's client): open N connections, "
        "then send a random number on each, round after round.",
    )
    _cli.add_address_options(p, DEFAULT_PORT, server=False)
    p.add_argument("-n", "--connections", type=_cli.count_number, default=10, help="connections to open (default: %(default)s)")
    p.add_argument("--rounds", type=_cli.count_number, default=10, help="rounds of sending (default: %(default)s)")
    p.add_argument("--delay", type=_cli.seconds, default=0.1, metavar="SECONDS", help="pause between rounds (default: %(default)s)")
    p.add_argument("--timeout", type=_cli.positive_seconds, default=5.0, help="connect timeout in seconds (default: %(default)s)")
    p.set_defaults(handler=cmd_nonblocking_client)

    p = server(
        "select",
        "select 回显服务器: echo server on select(), quits on a line from stdin",
        "select 回显服务器 (select echo server): echo every client with select(); a line on stdin "
        "(or its end) stops it. Fixed: sends no longer block (a client that does not read waits "
        "alone, unread, until it takes its echo) and a reset closes only that client. "
        f"The fast echo server is `{FAST_ECHO}`.",
        count=None,
    )
    p.add_argument("--ignore-stdin", action="store_true", help="do not watch stdin (run until Ctrl-C or --duration)")
    p.set_defaults(handler=cmd_select)

    p = server(
        "select-writelist",
        "另外一个服务器（包含 writeList）: per-client queues and a write list",
        "另外一个服务器（包含 writeList） (select server with a write list): queue each client's "
        "messages and send them back when select() says the socket is writable. Fixed: each "
        "message is logged with its own client's address, and closed clients are removed.",
        port=WRITELIST_PORT,
        count=None,
    )
    p.set_defaults(handler=cmd_select_writelist)

    p = server(
        "epoll",
        "epoll 版 - TCP 服务器: edge-triggered select.epoll",
        "epoll 版 - TCP 服务器 (epoll server): edge-triggered select.epoll in pure Python; prints "
        "what each client sends and echoes it. Fixed: it reads until EAGAIN after each event, "
        "forgets closed connections, echoes a half-closed connection to the end, and stops reading "
        f"a client whose echo waits past {PENDING_LIMIT // 1024} KiB. The fast, C epoll echo server is `{FAST_ECHO}`.",
        count=None,
    )
    p.add_argument("--no-echo", dest="echo", action="store_false", help="only print, as the notes do")
    p.set_defaults(handler=cmd_epoll)
    return parser


def main(argv=None) -> int:
    return _cli.dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
