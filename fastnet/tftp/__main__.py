"""Command line: ``python -m fastnet.tftp get|put|serve ...``.

    python -m fastnet.tftp get HOST REMOTE [LOCAL]     download (the notes' TFTP client, fixed)
    python -m fastnet.tftp put HOST LOCAL [REMOTE]     upload
    (LOCAL "-": standard output for get, standard input for put)
    python -m fastnet.tftp serve ROOT [--port 6969]    serve ROOT (read-only unless --write)

HOST may be an IPv6 literal in brackets ("[::1]").  Every failure is one line on stderr: exit status 1,
2 for a bad argument; get and put stop on Ctrl-C (130) or SIGTERM (143) and leave no partial file.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from typing import Sequence

from .._cli import peer_port, port_number, positive_seconds, seconds, unbracket
from . import client, codec
from ._transfer import MAX_TIMEOUT, MAX_WINDOWSIZE, TransferStats
from .errors import TftpError

PROG = "python -m fastnet.tftp"

GET_HELP = """\
Download REMOTE from the TFTP server HOST into LOCAL (default: REMOTE's base name).

This is the TFTP download client of the notes (section "TFTP"), rewritten so that it works:
  - the file name is no longer hard-coded ("test.jpg"): REMOTE and LOCAL are arguments;
  - the file is written in binary mode to a temporary file that is renamed into place when the
    transfer is complete, instead of being opened in text mode for appending ("a"): a failed or
    repeated download never leaves a partial or doubled file, nor clobbers an existing one;
  - the server's transfer ID is checked: the first answer fixes the server's port, and packets
    from anyone else get ERROR 5 instead of being written into the file;
  - lost packets are retransmitted after a timeout with exponential backoff, a bounded number of
    times, instead of the client hanging forever in recvfrom();
  - an ERROR packet ends the download with its code and message and a non-zero exit status.
It also negotiates blksize, windowsize and tsize (RFC 2347-2349, 7440) and survives block
numbers rolling over past 65535.  The default port is 69, as in the notes.

LOCAL "-" writes the file to standard output (the summary then goes to standard error); bytes
already written there stay written if the transfer fails, which the exit status tells.
HOST may be an IPv6 literal in brackets ("[::1]").  Ctrl-C (exit status 130) and SIGTERM (143)
stop the download and remove its temporary file.
"""

PUT_HELP = """\
Upload LOCAL to the TFTP server HOST as REMOTE (default: LOCAL's base name).
LOCAL "-" reads standard input, and then REMOTE is required.
HOST may be an IPv6 literal in brackets ("[::1]").  Ctrl-C (exit status 130) and SIGTERM (143)
stop the upload.
"""

SERVE_HELP = """\
Serve the files under ROOT over TFTP (read-only unless --write).  Stops on SIGTERM or Ctrl-C,
letting running transfers finish for a grace period.  One access-log line per transfer on stderr.
"""


EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143
MAX_RETRIES = 1000


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported on one line (the usage is in --help) and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


class _Terminated(BaseException):
    """SIGTERM during get or put: raised in the main thread, handled like Ctrl-C (exit status 143)."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the cleanup
    raise _Terminated


def _int_range(low: int, high: int | None = None):
    """argparse type: an integer from *low* to *high* (no upper bound when None)."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be {low}..{high}, not {value}" if high is not None else f"must be at least {low}, not {value}"
            )
        return value

    return check


def _timeout(text: str) -> float:
    """argparse type: a retransmission timeout, seconds: above 0 (fractions too), at most the 255
    RFC 2349 lets a peer ask for."""
    value = positive_seconds(text)
    if value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TIMEOUT} seconds, not {text}")
    return value


def _host(text: str) -> str:
    """argparse type: a host name or address; an IPv6 literal may come in brackets, as in a URL."""
    return unbracket(text)


def _add_transfer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", "-P", type=peer_port, default=client.DEFAULT_PORT, help="server port (default 69)")
    parser.add_argument("--blksize", "-b", type=_int_range(codec.MIN_BLKSIZE, codec.MAX_BLKSIZE),
                        help=f"request this block size ({codec.MIN_BLKSIZE}..{codec.MAX_BLKSIZE})")
    parser.add_argument("--windowsize", "-w", type=_int_range(1, MAX_WINDOWSIZE),
                        help=f"request this window size (1..{MAX_WINDOWSIZE}, RFC 7440)")
    parser.add_argument("--timeout", "-t", type=_timeout, default=1.0,
                        help="first retransmission timeout, seconds, fractions too, at most 255 (default 1)")
    parser.add_argument("--retries", "-r", type=_int_range(0, MAX_RETRIES), default=5,
                        help=f"retries in a row before giving up, 0..{MAX_RETRIES} (default 5)")
    parser.add_argument("--netascii", action="store_true", help="netascii mode (text with CR LF line ends)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="TFTP client and server (fastnet).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{get,put,serve}")

    get = sub.add_parser("get", help="download a file (the notes' TFTP client)", description=GET_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    get.add_argument("host", type=_host)
    get.add_argument("remote")
    get.add_argument("local", nargs="?")
    _add_transfer_options(get)

    put = sub.add_parser("put", help="upload a file", description=PUT_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    put.add_argument("host", type=_host)
    put.add_argument("local")
    put.add_argument("remote", nargs="?")
    _add_transfer_options(put)

    serve = sub.add_parser("serve", help="run a TFTP server", description=SERVE_HELP)
    serve.add_argument("root")
    serve.add_argument("--host", type=_host, default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; IPv6 as ::1 or [::1])")
    serve.add_argument("--port", type=port_number, default=6969,
                       help="port to listen on (default 6969; 69 needs root; 0 picks a free one, shown in the log)")
    serve.add_argument("--write", action="store_true", help="accept uploads of new files")
    serve.add_argument("--overwrite", action="store_true", help="let uploads replace existing files (with --write)")
    serve.add_argument("--max-sessions", type=_int_range(1), default=64, help="concurrent transfers at most (default 64)")
    serve.add_argument("--user", "-u", metavar="USER",
                       help="after binding the port, run as USER and its groups (root only; as tftpd-hpa -u): "
                            "files are then read and written with USER's permissions")
    serve.add_argument("--max-per-client", type=_int_range(1), default=16, metavar="N",
                       help="concurrent transfers from one client address at most (default 16)")
    serve.add_argument("--max-windowsize", type=_int_range(1, MAX_WINDOWSIZE), default=64, metavar="N",
                       help="the largest windowsize granted (default 64)")
    serve.add_argument("--max-window-bytes", type=_int_range(codec.MIN_BLKSIZE), default=1 << 20, metavar="BYTES",
                       help="the largest window granted, windowsize x blksize (default 1048576)")
    serve.add_argument("--timeout", type=_timeout, default=1.0,
                       help="retransmission timeout, seconds, fractions too, at most 255 (default 1)")
    serve.add_argument("--retries", type=_int_range(0, MAX_RETRIES), default=5,
                       help=f"retries before a transfer is abandoned, 0..{MAX_RETRIES} (default 5)")
    serve.add_argument("--grace", type=seconds, default=5.0, help="seconds running transfers get at shutdown (default 5)")
    serve.add_argument("--quiet", "-q", action="store_true",
                       help="log only the start line (with the port) and warnings: no access log")
    return parser


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _terminal_columns(stream) -> int:
    """The width of the terminal *stream* writes to; else $COLUMNS or standard output's, else 80."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):  # no descriptor, or not a terminal
        columns = 0
    return columns if columns > 0 else shutil.get_terminal_size().columns  # 0: a terminal of no known size


class _ProgressBar:
    """A one-line progress bar on stderr: percentage, bytes, ETA, rate, retransmissions.

    Every redraw fits the terminal's width as it is then, one column short of it (so that the
    cursor never wraps onto a new line): the bar narrows, then goes, and the text is cut last.
    The ETA shows once there is a rate to tell it from.
    """

    BAR = 24  # the widest bar
    MIN_BAR = 10  # narrower than this, there is no bar

    def __init__(self, stream) -> None:
        self._stream = stream
        self._drawn = 0  # length of the line on the screen

    def __call__(self, stats: TransferStats) -> None:
        limit = max(1, _terminal_columns(self._stream) - 1)
        line = self._line(stats, limit)
        self._stream.write("\r" + line.ljust(min(self._drawn, limit)))  # spaces over a longer earlier line
        self._stream.flush()
        self._drawn = len(line)

    def _line(self, stats: TransferStats, limit: int) -> str:
        rate = stats.rate
        fields = []
        if stats.total:
            pct = min(100.0, 100.0 * stats.bytes / stats.total)
            fields.append(f"{pct:5.1f}% {_size(stats.bytes)} of {_size(stats.total)}")
            if rate > 0:
                fields.append(f"ETA {max(0, stats.total - stats.bytes) / rate:.1f} s")
        else:
            fields.append(_size(stats.bytes))
        fields.append(f"{_size(rate)}/s")
        fields.append(f"{stats.retransmissions} retransmitted")
        line = ", ".join(fields)
        if stats.total:
            width = min(self.BAR, limit - len(line) - 3)  # "[", "] "
            if width >= self.MIN_BAR:
                filled = int(width * pct / 100)
                line = f"[{'#' * filled}{'.' * (width - filled)}] {line}"
        return line[:limit]

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\r" + " " * min(self._drawn, max(1, _terminal_columns(self._stream) - 1)) + "\r")
            self._stream.flush()
            self._drawn = 0


def _transfer(args: argparse.Namespace) -> int:
    local = args.local
    summary_to = sys.stdout
    if local == "-":  # the conventional name of the standard streams ("./-" for a file named -)
        if args.command == "get":
            sys.stdout.flush()
            local, summary_to = sys.stdout.buffer, sys.stderr
        elif args.remote is None:
            raise ValueError("put from standard input needs REMOTE")
        else:
            local = sys.stdin.buffer
    bar = None
    if not args.quiet and sys.stderr.isatty():
        bar = _ProgressBar(sys.stderr)
    kwargs = dict(
        port=args.port,
        blksize=args.blksize,
        windowsize=args.windowsize,
        timeout=args.timeout,
        retries=args.retries,
        mode="netascii" if args.netascii else "octet",
        progress=bar,
    )
    try:
        if args.command == "get":
            stats = client.download(args.host, args.remote, local, **kwargs)
            verb, what = "received", args.remote
        else:
            stats = client.upload(args.host, local, args.remote, **kwargs)
            verb, what = "sent", args.remote or os.path.basename(args.local)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        options = ", ".join(f"{k}={v}" for k, v in stats.options.items()) or "none"
        print(
            f"{verb} {what}: {stats.bytes} bytes in {stats.seconds:.3f} s ({_size(stats.rate)}/s), "
            f"{stats.retransmissions} retransmissions, options: {options}",
            file=summary_to,
            flush=True,
        )
    client.wait_dallying()  # the final dally: here, where Ctrl-C is handled, not at interpreter exit
    return 0


def _quiet_filter(record: logging.LogRecord) -> bool:
    """``serve --quiet``: warnings and errors, and the server's start line (which has the port)."""
    from .server import START_LINE

    return record.levelno >= logging.WARNING or record.msg is START_LINE


def _serve(args: argparse.Namespace) -> int:
    from .server import TftpServer

    root = logging.getLogger()
    theirs = list(root.handlers)  # a program that configured logging before calling main() keeps its own
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.quiet:  # warnings only -- and the start line, which is how `--port 0` tells its port
        for handler in root.handlers:
            if handler not in theirs:
                handler.addFilter(_quiet_filter)
    server = TftpServer(
        args.root,
        host=args.host,
        port=args.port,
        allow_write=args.write,
        allow_overwrite=args.overwrite,
        max_sessions=args.max_sessions,
        max_sessions_per_client=args.max_per_client,
        max_windowsize=args.max_windowsize,
        max_window_bytes=args.max_window_bytes,
        timeout=args.timeout,
        retries=args.retries,
        grace=args.grace,
        user=args.user,
    )
    server.serve()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    installed, previous = False, None
    if args.command != "serve":  # serve stops gracefully on SIGTERM by itself
        try:
            previous = signal.signal(signal.SIGTERM, _on_sigterm)
            installed = True
        except ValueError:  # not the main thread: signals are not ours to handle
            pass
    try:
        if args.command == "serve":
            return _serve(args)
        return _transfer(args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        print(f"{PROG} {args.command}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except TftpError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{PROG} {args.command}: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, or a failure nobody foresaw: still one line, no traceback
        print(f"{PROG} {args.command}: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if installed:  # main() called from a program: give SIGTERM back as it was
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":
    sys.exit(main())
