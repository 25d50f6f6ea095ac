"""``python -m fastnet.epoll_echo``: the notes' "epoll 版 - TCP 服务器", as a real echo server.

    python -m fastnet.epoll_echo                       # TCP echo on 127.0.0.1:7788, C relay
    python -m fastnet.epoll_echo --udp --port 0        # UDP, any free port (printed)
    python -m fastnet.epoll_echo --engine loop         # a Python echo Protocol on fastnet.Loop
    python -m fastnet.epoll_echo --verbose             # print clients and messages like the notes
    python -m fastnet.epoll_echo --workers 2           # two relay processes sharing the port
    python -m fastnet.epoll_echo --duration 60         # stop by itself after a minute

Engines: ``relay`` (default) is :mod:`fastnet.relay` -- the per-message path never enters Python;
``loop`` is an ``asyncio.Protocol`` on :class:`fastnet.Loop`.  ``--verbose`` prints what the notes'
server prints ('有新的客户端到来<addr>', 'recv:<text>', '<addr>---offline---'), so it needs Python
code per message and runs on the loop engine.  Received bytes are shown as the other examples show
them: UTF-8 with undecodable bytes escaped, and line breaks inside a message escaped (``\\n``).

On start one line gives the address, the engine and the implementation; Ctrl-C, SIGTERM or the end
of ``--duration`` stop the server, which then prints its statistics and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from fastnet import _cli

log = logging.getLogger("fastnet.epoll_echo")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _show(data: bytes) -> str:
    # the examples' one line per message (fastnet._cli.show): a line break inside a message is
    # shown as \n, not printed, so that one recv: line is one message
    return _cli.show(data)


def _start_line(proto: str, address: tuple, engine: str, implementation: str, workers: int) -> str:
    host, port = address[0], address[1]
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    extra = f", {workers} workers" if workers > 1 else ""
    return f"fastnet epoll_echo: {proto} echo on {shown} (engine {engine}, implementation {implementation}{extra})"


def _stats_line(stats: Any) -> str:
    return (
        f"fastnet epoll_echo: stopped: {stats.connections} connections, "
        f"{stats.messages} messages, {stats.bytes} bytes"
    )


# ---------------------------------------------------------------------------- engine: relay


def _run_relay(host: str, port: int, udp: bool, workers: int, duration: float | None = None) -> int:
    from fastnet import relay

    def ready(address):
        print(_start_line("udp" if udp else "tcp", address, "relay", relay.IMPLEMENTATION, workers), flush=True)

    stats = relay.serve_echo(host, port, udp=udp, workers=workers, ready=ready, duration=duration)
    print(_stats_line(stats), flush=True)
    return 0


# ---------------------------------------------------------------------------- engine: loop


class _Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.messages = 0
        self.bytes = 0


class _EchoProtocol(asyncio.Protocol):
    """Echo with flow control: reading pauses while the peer does not take what we write."""

    def __init__(self, stats: _Stats, verbose: bool, live: set) -> None:
        self.stats = stats
        self.verbose = verbose
        self.live = live
        self.transport: Any = None
        self.peer: Any = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.stats.connections += 1
        self.live.add(transport)
        if self.verbose:
            print("有新的客户端到来%s" % str(self.peer), flush=True)

    def data_received(self, data: bytes) -> None:
        self.stats.messages += 1
        self.stats.bytes += len(data)
        if self.verbose:
            print("recv:%s" % _show(data), flush=True)
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close once what was written is sent

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.live.discard(self.transport)
        if self.verbose:
            print("%s---offline---" % str(self.peer), flush=True)


class _EchoDatagram(asyncio.DatagramProtocol):
    def __init__(self, stats: _Stats, verbose: bool) -> None:
        self.stats = stats
        self.verbose = verbose
        self.transport: Any = None
        self.raw: socket.socket | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        # asyncio's transports silently drop an empty datagram on sendto(): echo those through a
        # duplicate of the socket instead.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.raw = socket.socket(sock.family, sock.type, fileno=os.dup(sock.fileno()))

    def connection_lost(self, exc) -> None:
        if self.raw is not None:
            self.raw.close()

    def datagram_received(self, data: bytes, addr) -> None:
        self.stats.messages += 1
        self.stats.bytes += len(data)
        if self.verbose:
            print("recv:%s" % _show(data), flush=True)
        if data or self.raw is None:
            self.transport.sendto(data, addr)
        else:
            try:
                self.raw.sendto(data, addr)
            except OSError as exc:
                log.debug("UDP error: %s", exc)

    def error_received(self, exc) -> None:
        log.debug("UDP error: %s", exc)


async def _serve_loop(
    host: str, port: int, udp: bool, verbose: bool, implementation: str, duration: float | None = None
) -> _Stats:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in _STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            signal.signal(sig, lambda signum, frame: loop.call_soon_threadsafe(stop.set))
    stats = _Stats()
    live: set = set()
    if udp:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _EchoDatagram(stats, verbose), local_addr=(host, port)
        )
        address = transport.get_extra_info("sockname")
        closers = [transport.close]
    else:
        server = await loop.create_server(
            lambda: _EchoProtocol(stats, verbose, live), host or None, port, reuse_address=True, backlog=1024
        )
        address = server.sockets[0].getsockname()
        closers = [server.close]
    print(_start_line("udp" if udp else "tcp", address, "loop", implementation, 1), flush=True)
    if duration is not None and duration < threading.TIMEOUT_MAX:  # a longer one is no bound
        loop.call_later(duration, stop.set)
    try:
        await stop.wait()
    finally:
        for close in closers:
            close()
        for transport in list(live):
            transport.close()
        await asyncio.sleep(0)
    return stats


def _run_loop(host: str, port: int, udp: bool, verbose: bool, duration: float | None = None) -> int:
    from fastnet import loop as _loop

    stats = _loop.run(_serve_loop(host, port, udp, verbose, _loop.IMPLEMENTATION, duration))
    print(_stats_line(stats), flush=True)
    return 0


# ---------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastnet.epoll_echo", description="Echo server: the notes' epoll server, fast."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_cli.port_number, default=7788, help="port (0: any free port, printed on start)")
    parser.add_argument("--udp", action="store_true", help="echo UDP datagrams instead of TCP streams")
    parser.add_argument("--engine", choices=("relay", "loop"), default="relay",
                        help="relay: the C relay (default); loop: a Python Protocol on fastnet.Loop")
    parser.add_argument("--workers", type=int, default=1, help="relay processes sharing the port")
    parser.add_argument("--verbose", action="store_true",
                        help="print each client and message like the notes (uses the loop engine)")
    parser.add_argument("--all-interfaces", action="store_true",
                        help="bind every interface, like the notes' bind((\"\", 7788)), instead of --host")
    _cli.add_bounds(parser)  # --duration SECONDS: stop then, as on Ctrl-C (statistics, exit 0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    engine = "loop" if args.verbose else args.engine
    if engine == "loop" and args.workers > 1:
        parser.error("--workers needs the relay engine (not --engine loop or --verbose)")
    host = "" if args.all_interfaces else args.host
    try:
        if engine == "relay":
            return _run_relay(host, args.port, args.udp, args.workers, args.duration)
        return _run_loop(host, args.port, args.udp, args.verbose, args.duration)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"python -m fastnet.epoll_echo: cannot serve on {host or '*'}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
