"""Command line: ``python -m fastnet.tftp get|put|serve ...``.

    python -m fastnet.tftp get HOST REMOTE [LOCAL]     download (the notes' TFTP client, fixed)
    python -m fastnet.tftp put HOST LOCAL [REMOTE]     upload
    (LOCAL "-": standard output for get, standard input for put)
    python -m fastnet.tftp serve ROOT [--port 6969]    serve ROOT (read-only unless --write)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Sequence

from . import client
from ._transfer import TransferStats
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
"""

PUT_HELP = """Upload LOCAL to the TFTP server HOST as REMOTE (default: LOCAL's base name).
LOCAL "-" reads standard input, and then REMOTE is required.
"""

SERVE_HELP = """\
Serve the files under ROOT over TFTP (read-only unless --write).  Stops on SIGTERM or Ctrl-C,
letting running transfers finish for a grace period.  One access-log line per transfer on stderr.
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _add_transfer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", "-P", type=int, default=client.DEFAULT_PORT, help="server port (default 69)")
    parser.add_argument("--blksize", "-b", type=int, help="request this block size (8..65464)")
    parser.add_argument("--windowsize", "-w", type=int, help="request this window size (1..65535, RFC 7440)")
    parser.add_argument("--timeout", "-t", type=_positive_float, default=1.0, help="first retransmission timeout, seconds (default 1)")
    parser.add_argument("--retries", "-r", type=int, default=5, help="retries in a row before giving up (default 5)")
    parser.add_argument("--netascii", action="store_true", help="netascii mode (text with CR LF line ends)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="TFTP client and server (fastnet).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{get,put,serve}")

    get = sub.add_parser("get", help="download a file (the notes' TFTP client)", description=GET_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    get.add_argument("host")
    get.add_argument("remote")
    get.add_argument("local", nargs="?")
    _add_transfer_options(get)

    put = sub.add_parser("put", help="upload a file", description=PUT_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    put.add_argument("host")
    put.add_argument("local")
    put.add_argument("remote", nargs="?")
    _add_transfer_options(put)

    serve = sub.add_parser("serve", help="run a TFTP server", description=SERVE_HELP)
    serve.add_argument("root")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=6969, help="port to listen on (default 6969; 69 needs root)")
    serve.add_argument("--write", action="store_true", help="accept uploads of new files")
    serve.add_argument("--overwrite", action="store_true", help="let uploads replace existing files (with --write)")
    serve.add_argument("--max-sessions", type=int, default=64, help="concurrent transfers at most (default 64)")
    serve.add_argument("--timeout", type=_positive_float, default=1.0, help="retransmission timeout, seconds (default 1)")
    serve.add_argument("--retries", type=int, default=5, help="retries before a transfer is abandoned (default 5)")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds running transfers get at shutdown (default 5)")
    serve.add_argument("--quiet", "-q", action="store_true", help="log warnings only (no access log)")
    return parser


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class _ProgressBar:
    """A one-line progress bar on stderr: bytes, percentage, rate, ETA, retransmissions."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._shown = False

    def __call__(self, stats: TransferStats) -> None:
        rate = stats.rate
        line = f"{_size(stats.bytes)}"
        if stats.total:
            pct = min(100.0, 100.0 * stats.bytes / stats.total)
            eta = (stats.total - stats.bytes) / rate if rate > 0 else 0.0
            width = 24
            filled = int(width * pct / 100)
            line = f"[{'#' * filled}{'.' * (width - filled)}] {pct:5.1f}% {line} of {_size(stats.total)}, ETA {eta:4.1f} s"
        line += f", {_size(rate)}/s, {stats.retransmissions} retransmitted"
        self._stream.write("\r" + line[:100].ljust(100))
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self._stream.write("\r" + " " * 100 + "\r")
            self._stream.flush()


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


def _serve(args: argparse.Namespace) -> int:
    from .server import TftpServer

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    server = TftpServer(
        args.root,
        host=args.host,
        port=args.port,
        allow_write=args.write,
        allow_overwrite=args.overwrite,
        max_sessions=args.max_sessions,
        timeout=args.timeout,
        retries=args.retries,
        grace=args.grace,
    )
    server.serve()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        return _transfer(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
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


if __name__ == "__main__":
    sys.exit(main())
