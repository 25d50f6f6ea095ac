"""The notes' coroutine examples (协程), in Python 3: ``python -m fastnet.coroutines EXAMPLE``.

- ``generators``      (简单实现) two generators taking turns;
- ``greenlet``        (greenlet 版) two greenlets switching to each other;
- ``gevent-spawn``    (gevent 的使用) three greenlets spawned and joined, each printing getcurrent();
- ``gevent-switch``   (gevent 切换执行) the same with gevent.sleep(), so they take turns;
- ``gevent-download`` (gevent 并发下载器) download URLs concurrently;
- ``gevent-server``   (gevent 版 - TCP 服务器) an echo server, a greenlet per client.

greenlet and gevent: ``pip install gevent greenlet`` (``fastnet`` on PyPI is another project).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

from . import _cli

__all__ = ["main"]

DEFAULT_PORT = 7788
RECV_SIZE = 1024
FAST_ECHO = "python -m fastnet.epoll_echo"
EXIT_MISSING = 2


class _Missing(Exception):
    pass


def _need(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise _Missing(name) from None


def _gevent():
    gevent = _need("gevent")
    hub = gevent.get_hub()
    # Ctrl-C still reaches the main greenlet as KeyboardInterrupt, but the hub no longer prints it
    if KeyboardInterrupt not in hub.NOT_ERROR:
        hub.NOT_ERROR = (*hub.NOT_ERROR, KeyboardInterrupt)
    return gevent


def _rounds(rounds: int | None):
    return itertools.count() if rounds is None else range(rounds)


# -- 简单实现 --------------------------------------------------------------------------------


def cmd_generators(args: argparse.Namespace) -> int:
    def task_a():
        while True:
            _cli.emit("----A---")
            yield
            time.sleep(args.delay)

    def task_b(c):
        for _ in _rounds(args.rounds):
            _cli.emit("----B---")
            next(c)  # Python 2's c.next()
            time.sleep(args.delay)

    task_b(task_a())
    return 0


# -- greenlet 版 -----------------------------------------------------------------------------


def cmd_greenlet(args: argparse.Namespace) -> int:
    greenlet = _need("greenlet").greenlet

    def test1():
        for _ in _rounds(args.rounds):
            _cli.emit("---A--")
            gr2.switch()
            time.sleep(args.delay)

    def test2():
        for _ in _rounds(args.rounds):
            _cli.emit("---B--")
            gr1.switch()
            time.sleep(args.delay)

    gr1 = greenlet(test1)
    gr2 = greenlet(test2)
    # 切换到gr1中运行; when test1 returns, control comes back here
    gr1.switch()
    return 0


# -- gevent 的使用 / gevent 切换执行 ---------------------------------------------------------


def _spawn_and_join(args: argparse.Namespace, pause: bool) -> int:
    gevent = _gevent()

    def f(n: int) -> None:
        for i in range(n):
            _cli.emit(f"{gevent.getcurrent()} {i}")
            if pause:
                # a gevent sleep, not time.sleep: it lets the other greenlets run meanwhile
                gevent.sleep(args.delay)

    greenlets = [gevent.spawn(f, args.count) for _ in range(args.greenlets)]
    for g in greenlets:
        g.join()
    return 0


def cmd_gevent_spawn(args: argparse.Namespace) -> int:
    return _spawn_and_join(args, pause=False)


def cmd_gevent_switch(args: argparse.Namespace) -> int:
    return _spawn_and_join(args, pause=True)


# -- gevent 并发下载器 -----------------------------------------------------------------------


def cmd_gevent_download(args: argparse.Namespace) -> int:
    gevent = _gevent()
    from gevent import monkey

    # 有IO操作时需要这一句: make the standard library's blocking calls cooperative
    monkey.patch_all()
    import urllib.error
    import urllib.request

    failures = []

    def my_download(url: str) -> None:
        _cli.emit(f"GET: {url}")
        try:
            with urllib.request.urlopen(url, timeout=args.timeout) as resp:
                data = resp.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            failures.append(url)
            print(f"error: {url}: {reason}", file=sys.stderr, flush=True)
            return
        _cli.emit(f"{len(data)} bytes received from {url}.")

    gevent.joinall([gevent.spawn(my_download, url) for url in args.urls])
    return 1 if failures else 0


# -- gevent 版 - TCP 服务器 ------------------------------------------------------------------


def cmd_gevent_server(args: argparse.Namespace) -> int:
    gevent = _gevent()
    from gevent import socket

    def handle_request(conn, addr) -> None:
        name = _cli.format_address(addr)
        with conn:
            while True:
                # a client that resets (or stops reading, then resets) ends its own greenlet
                # with a line here, not with a traceback from gevent's hub
                try:
                    data = conn.recv(RECV_SIZE)
                except ConnectionResetError as exc:
                    _cli.emit(f"[{name}] closed: {exc.strerror}")
                    break
                if not data:
                    _cli.emit(f"[{name}] closed")
                    break
                _cli.emit(f"recv[{name}]: {_cli.show(data)}")
                try:
                    conn.sendall(data)
                except (ConnectionResetError, BrokenPipeError) as exc:
                    _cli.emit(f"[{name}] closed: {exc.strerror}")
                    break

    host, port = _cli.bind_address(args)
    deadline = _cli.Deadline(args.duration)
    s = socket.socket(_cli.family_of(host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with s:
        _cli.bind(s, (host, port))
        s.listen(5)
        _cli.announce(s)
        workers = []
        while True:
            s.settimeout(deadline.socket_timeout())
            try:
                cli, addr = s.accept()
            except socket.timeout:
                break
            cli.settimeout(None)
            _cli.emit(f"new client: {_cli.format_address(addr)}")
            workers = [w for w in workers if not w.dead]
            workers.append(gevent.spawn(handle_request, cli, addr))
        gevent.killall(workers)
    return 0


def _guarded(handler):
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except _Missing as exc:
            print(
                f"error: this example needs {exc.args[0]}: pip install gevent greenlet",
                file=sys.stderr,
                flush=True,
            )
            return EXIT_MISSING

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastnet.coroutines",
        description="The notes' coroutine examples (协程), in Python 3. greenlet and gevent examples "
        "need `pip install gevent greenlet`.",
    )
    sub = parser.add_subparsers(title="examples", metavar="EXAMPLE")

    def turns(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rounds", type=_cli.count_number, default=None, metavar="N", help="stop after N turns each (default: never)")
        p.add_argument("--delay", type=_cli.seconds, default=0.5, metavar="SECONDS", help="pause after each turn (default: %(default)s)")

    p = sub.add_parser(
        "generators",
        help="简单实现: two generators taking turns",
        description="简单实现 (generators): B prints, hands over to generator A with next(), A prints and yields back.",
    )
    turns(p)
    p.set_defaults(handler=cmd_generators)

    p = sub.add_parser(
        "greenlet",
        help="greenlet 版: two greenlets switching to each other",
        description="greenlet 版 (greenlet): two greenlets print in turn, switching explicitly. Needs greenlet.",
    )
    turns(p)
    p.set_defaults(handler=_guarded(cmd_greenlet))

    def spawned(p: argparse.ArgumentParser, delay: float | None) -> None:
        p.add_argument("--count", type=_cli.count_number, default=5, metavar="N", help="what each greenlet counts to (default: %(default)s)")
        p.add_argument("--greenlets", type=_cli.count_number, default=3, metavar="N", help="greenlets to spawn (default: %(default)s)")
        if delay is not None:
            p.add_argument("--delay", type=_cli.seconds, default=delay, metavar="SECONDS", help="gevent.sleep after each line (default: %(default)s)")

    p = sub.add_parser(
        "gevent-spawn",
        help="gevent 的使用: spawn greenlets, print getcurrent()",
        description="gevent 的使用 (gevent spawn): three greenlets each print gevent.getcurrent() and a "
        "count; none of them waits, so each runs to its end before the next starts. Needs gevent.",
    )
    spawned(p, None)
    p.set_defaults(handler=_guarded(cmd_gevent_spawn))

    p = sub.add_parser(
        "gevent-switch",
        help="gevent 切换执行: gevent.sleep() makes greenlets take turns",
        description="gevent 切换执行 (gevent switching): the same greenlets call gevent.sleep() after each "
        "line, so they take turns. Needs gevent.",
    )
    spawned(p, 1.0)
    p.set_defaults(handler=_guarded(cmd_gevent_switch))

    p = sub.add_parser(
        "gevent-download",
        help="gevent 并发下载器: download URLs concurrently",
        description="gevent 并发下载器 (gevent concurrent downloader): monkey-patch the standard library, "
        "then fetch every URL in its own greenlet and print the sizes. Needs gevent.",
    )
    p.add_argument("urls", nargs="+", metavar="URL", help="URLs to download")
    p.add_argument("--timeout", type=_cli.positive_seconds, default=30.0, help="seconds per download (default: %(default)s)")
    p.set_defaults(handler=_guarded(cmd_gevent_download))

    p = sub.add_parser(
        "gevent-server",
        help="gevent 版 - TCP 服务器: an echo server, a greenlet per client",
        description="gevent 版 - TCP 服务器 (gevent TCP server): echo every client, a greenlet each. "
        f"Needs gevent. The fast echo server is `{FAST_ECHO}`.",
    )
    _cli.add_address_options(p, DEFAULT_PORT, server=True)
    _cli.add_bounds(p)
    p.set_defaults(handler=_guarded(cmd_gevent_server))
    return parser


def main(argv=None) -> int:
    return _cli.dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
