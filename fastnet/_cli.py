"""Command-line plumbing shared by the notes' examples (``python -m fastnet.udp`` and friends).

Conventions every example follows, so that people and tests can drive them alike:

- bytes on the wire, text on the terminal: received data is decoded as UTF-8 and undecodable
  bytes are shown escaped (``\\xff``); stdout is UTF-8 and line-buffered;
- a server prints ``listening on HOST:PORT`` as its first line, flushed, so that a caller that
  passed ``--port 0`` learns the port the kernel chose;
- ``--host`` defaults to 127.0.0.1; serving every interface takes an explicit ``--all-interfaces``;
- what the notes read from the keyboard comes from ``--message`` (repeatable) or from stdin lines;
- loops the notes run forever can be bounded (``--count``, ``--rounds``, ``--duration``);
- Ctrl-C ends a program quietly with exit status 130; an expected failure (connection refused,
  timeout, bad address) is a one-line ``error:`` message on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = [
    "LISTENING",
    "Deadline",
    "add_address_options",
    "add_bounds",
    "add_message_option",
    "announce",
    "bind_address",
    "connect_address",
    "count_number",
    "emit",
    "fail",
    "family_of",
    "format_address",
    "messages",
    "port_number",
    "peer_port",
    "positive_seconds",
    "recv",
    "run",
    "seconds",
    "sliced",
    "show",
    "warn",
]

_T = TypeVar("_T")

#: First line of every server: ``listening on 127.0.0.1:7788``.
LISTENING = "listening on"

EXIT_INTERRUPTED = 130
# Longest blocking wait of a select/epoll loop or an accept() with no deadline.  A signal that lands between
# Python's check for pending signals and the system call does not interrupt that call: without a
# cap, a Ctrl-C arriving in that window would wait for the next client to be noticed.
SIGNAL_CHECK_INTERVAL = 0.5


def _setup_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            try:
                stream.reconfigure(encoding="utf-8", errors="backslashreplace", line_buffering=True)
            except (ValueError, io.UnsupportedOperation):  # pragma: no cover - exotic streams
                pass


def show(data: bytes) -> str:
    """*data* as one line of text: UTF-8, undecodable bytes and line breaks escaped.

    A trailing line break (what a line-oriented peer sends) is dropped rather than escaped.
    """
    text = data.decode("utf-8", "backslashreplace")
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _stdout_gone() -> None:
    # the reader went away (``| head``): point fd 1 at /dev/null so that no later flush complains
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
        pass


def emit(*parts: object) -> None:
    """Print one line to stdout, flushed (the examples' output is read by people and by tests).

    When stdout's reader has gone (a broken pipe) the program ends quietly with status 1: in a
    thread, a child process or a greenlet, SystemExit ends that one (gevent hands it to the main
    greenlet).
    """
    try:
        print(*parts, flush=True)
    except BrokenPipeError:
        _stdout_gone()
        raise SystemExit(1) from None


def fail(message: str) -> int:
    """Report an expected failure as one line on stderr; return the exit status 1."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 1


def warn(message: str) -> None:
    """A one-line ``warning:`` on stderr: something the user should know, and the program goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def unbracket(host: str) -> str:
    """*host* without the brackets of an IPv6 literal written as in a URL (``[::1]``); brackets
    around anything else are left, for the resolver to refuse."""
    if host.startswith("[") and host.endswith("]") and ":" in host:
        return host[1:-1]
    return host


def format_address(address) -> str:
    """``127.0.0.1:7788`` / ``[::1]:7788`` for a socket address tuple.  An IPv4 peer of a
    dual-stack IPv6 socket (``::ffff:127.0.0.1``) shows as the IPv4 address it is."""
    host, port = address[0], address[1]
    if ":" in host:
        if host.startswith("::ffff:") and "." in host:
            return f"{host[7:]}:{port}"
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _naming(exc: OSError, doing: str, address: tuple) -> OSError:
    """*exc* again (same class: PermissionError stays one), its message naming what was tried."""
    return type(exc)(exc.errno, f"{doing} {format_address(address)}: {exc.strerror or exc}")


def bind(sock: socket.socket, address: tuple) -> None:
    """``sock.bind(address)``; a refusal names the address: ``cannot bind 127.0.0.1:7788: Address already in use``."""
    try:
        sock.bind(address)
    except OSError as exc:
        raise _naming(exc, "cannot bind", address) from None


def connect(address: tuple, timeout: float | None) -> socket.socket:
    """``socket.create_connection(address, timeout)``; a failure names the address:
    ``cannot connect to 127.0.0.1:7788: Connection refused``."""
    try:
        return socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        raise _naming(exc, "cannot connect to", address) from None


def port_number(text: str, lowest: int = 0) -> int:
    """argparse type for a port: 0 (any free one, where a server binds) to 65535; *lowest* 1 for
    the port a client sends to (see :func:`peer_port`)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not lowest <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be {lowest}-65535, not {port}")
    return port


def peer_port(text: str) -> int:
    """argparse type for the port a client sends to: 1 to 65535 (0 is nobody's)."""
    return port_number(text, 1)


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    # float() also accepts "nan" and "inf": neither is a time a socket or a sleep can wait
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{what} must be a finite number of seconds, not {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type for a timeout or a duration: finite and above 0.

    0 would not mean "no wait": ``settimeout(0)`` makes a socket non-blocking, and a negative
    value is a ValueError there; nan and inf are refused here rather than deep inside a call.
    """
    value = _float(text, "the time")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the time must be above 0 seconds, not {text!r}")
    return value


def seconds(text: str) -> float:
    """argparse type for a pause (``--delay``, ``--hold``): finite, 0 or more."""
    value = _float(text, "the pause")
    if value < 0:
        raise argparse.ArgumentTypeError(f"the pause must be 0 seconds or more, not {text!r}")
    return value


def count_number(text: str) -> int:
    """argparse type for a count (``--count``, ``--rounds``, ``-n``): an integer, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def add_address_options(parser: argparse.ArgumentParser, port: int, *, server: bool) -> None:
    """``--host``/``--port`` (and ``--all-interfaces`` for a server) with the notes' port."""
    if server:
        parser.add_argument(
            "--host",
            default="127.0.0.1",
            help="address to bind (default: %(default)s, loopback only)",
        )
        parser.add_argument(
            "--all-interfaces",
            action="store_true",
            help="bind every interface (0.0.0.0), as the notes' ('', PORT) does; overrides --host",
        )
    else:
        parser.add_argument("--host", default="127.0.0.1", help="server address (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=port_number if server else peer_port,  # a client cannot send to port 0
        default=port,
        help="port (default: %(default)s, as in the notes" + ("; 0 picks a free one)" if server else ")"),
    )


def bind_address(args: argparse.Namespace) -> tuple[str, int]:
    if getattr(args, "all_interfaces", False):
        return ("::" if ":" in args.host else "0.0.0.0", args.port)
    return (args.host, args.port)


def connect_address(args: argparse.Namespace) -> tuple[str, int]:
    return (args.host, args.port)


def announce(sock: socket.socket) -> None:
    """Print the ``listening on HOST:PORT`` line a server starts with."""
    emit(f"{LISTENING} {format_address(sock.getsockname())}")


def add_bounds(
    parser: argparse.ArgumentParser,
    *,
    count: str | None = None,
    duration: bool = True,
) -> None:
    """``--count N`` (what is counted is said by *count*) and ``--duration SECONDS``; both unbounded by default."""
    if count is not None:
        parser.add_argument("--count", type=count_number, default=None, metavar="N", help=f"stop after {count} (default: never)")
    if duration:
        parser.add_argument(
            "--duration",
            type=positive_seconds,
            default=None,
            metavar="SECONDS",
            help="stop after this many seconds (default: never)",
        )


def add_message_option(parser: argparse.ArgumentParser, what: str = "message to send") -> None:
    parser.add_argument(
        "-m",
        "--message",
        action="append",
        default=None,
        help=f"{what}; repeat for several (default: read lines from stdin)",
    )


def messages(args: argparse.Namespace, prompt: str = "") -> Iterator[bytes]:
    """The lines the notes read with ``raw_input``: ``--message`` values, else stdin lines.

    A prompt is written only when stdin is a terminal.  Lines are bytes without their line break.
    """
    if args.message is not None:
        for text in args.message:
            yield text.encode("utf-8", "surrogateescape")
        return
    interactive = sys.stdin.isatty()
    stdin = sys.stdin.buffer
    while True:
        if interactive and prompt:
            sys.stdout.write(prompt)
            sys.stdout.flush()
        line = stdin.readline()
        if not line:
            return
        yield line.rstrip(b"\r\n")


class Deadline:
    """The end of a ``--duration``: ``remaining()`` is None when there is no bound."""

    __slots__ = ("_end",)

    def __init__(self, seconds: float | None) -> None:
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return self._end is not None and time.monotonic() >= self._end

    def socket_timeout(self) -> float | None:
        """For ``sock.settimeout``: never 0, which would make the socket non-blocking."""
        left = self.remaining()
        return None if left is None else max(left, 1e-6)

    def timeout(self, cap: float | None = None) -> float | None:
        """Seconds to wait next: the time left, at most *cap* (None: block)."""
        left = self.remaining()
        if left is None:
            return cap
        return left if cap is None else min(left, cap)


def sliced(sock: socket.socket, deadline: Deadline, call: Callable[[], _T]) -> _T | None:
    """``call()``, a blocking call on *sock* (accept, recv), or None once the deadline has passed.

    The wait is cut into slices of at most SIGNAL_CHECK_INTERVAL: a Ctrl-C that lands between
    Python's signal check and the blocking call is then seen within that time, and the deadline
    is kept while no client comes or a connected one stays silent.  *sock* keeps the timeout of
    the last slice.
    """
    while not deadline.expired():
        sock.settimeout(max(deadline.timeout(SIGNAL_CHECK_INTERVAL), 1e-6))
        try:
            return call()
        except socket.timeout:
            continue
    return None


def recv(sock: socket.socket, size: int, deadline: Deadline) -> bytes | None:
    """``sock.recv(size)``, or None once the ``--duration`` is over (the connection stays open).
    The socket is blocking again afterwards, for the sendall() that usually follows."""
    try:
        return sliced(sock, deadline, lambda: sock.recv(size))
    finally:
        sock.settimeout(None)


def run(handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run one example: its exit status, 130 on Ctrl-C, a one-line error for network failures."""
    _setup_output()
    try:
        return handler(args) or 0
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _stdout_gone()
        return 1
    except socket.timeout as exc:
        return fail(f"timed out ({exc})" if str(exc) else "timed out")
    except OSError as exc:
        if exc.strerror and exc.filename:
            return fail(f"{exc.strerror}: {exc.filename}")
        return fail(exc.strerror or str(exc))


def dispatch(parser: argparse.ArgumentParser, argv=None) -> int:
    """Parse *argv* for a parser whose subcommands set ``handler``; run the chosen one."""
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return run(handler, args)
