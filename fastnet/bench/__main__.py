"""``python -m fastnet.bench echo``: load an echo server and print what it sustained.

    python -m fastnet.bench echo --port 7788 --conns 10 --size 1024 --secs 5
    python -m fastnet.bench echo --port 7788 --udp --size 512 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from fastnet._cli import format_address
from fastnet.bench._loadgen_py import check_port, check_seconds

log = logging.getLogger("fastnet.bench")


def format_text(result: dict) -> str:
    lat = result["latency_us"]
    lines = [
        f"echo load ({result['implementation']}): {result['proto']} {format_address((result['host'], result['port']))} "
        f"conns={result['conns']} size={result['size']} pipeline={result['pipeline']} "
        f"secs={result['elapsed']:.2f}",
        f"requests/s  {result['requests_per_sec']:.1f}  ({result['requests']} requests)",
        f"MB/s        {result['mb_per_sec']:.2f}  ({result['bytes']} bytes echoed)",
        f"latency us  p50 {lat['p50']:.1f}  p99 {lat['p99']:.1f}  p99.9 {lat['p99.9']:.1f}  max {lat['max']:.1f}",
        f"errors {result['errors']}  mismatches {result['mismatches']}  losses {result['losses']}"
        f"  late {result['late']}  stalled {result['stalled']}",
    ]
    return "\n".join(lines)


def _port(text: str) -> int:
    """argparse type for --port: the library's own check, so that both say the same."""
    try:
        return check_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(name: str):
    """argparse type for a duration, checked as the library checks *name*."""

    def parse(text: str) -> float:
        try:
            return check_seconds(text, name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _echo_command(args: argparse.Namespace) -> int:
    from fastnet.bench import loadgen

    try:
        result = loadgen.run_echo(
            args.host,
            args.port,
            conns=args.conns,
            size=args.size,
            secs=args.secs,
            udp=args.udp,
            pipeline=args.pipeline,
            udp_timeout=args.udp_timeout,
        )
    except OSError as exc:
        print(f"python -m fastnet.bench echo: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"python -m fastnet.bench echo: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_text(result))
    if not result["requests"]:  # a load that measured nothing failed, whatever the reason
        sys.stdout.flush()
        print(f"python -m fastnet.bench echo: no echo came back from {format_address((args.host, args.port))} "
              f"({result['errors']} errors, {result['losses']} lost, {result['stalled']} stalled)", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastnet.bench", description="fastnet's load generators")
    sub = parser.add_subparsers(dest="command", required=True)
    echo = sub.add_parser("echo", help="closed-loop ping-pong against an echo server, every byte verified")
    echo.add_argument("--host", default="127.0.0.1")
    echo.add_argument("--port", type=_port, default=7788, help="1..65535")
    echo.add_argument("--conns", type=int, default=1, help="connections (UDP: sockets)")
    echo.add_argument("--size", type=int, default=1024, help="message size in bytes")
    echo.add_argument("--secs", type=_seconds("secs"), default=5.0,
                      help="duration of the load, connecting included (at most a day)")
    echo.add_argument("--udp", action="store_true", help="UDP datagrams instead of TCP")
    echo.add_argument("--pipeline", type=int, default=1, help="messages in flight per connection")
    echo.add_argument("--udp-timeout", type=_seconds("udp_timeout"), default=0.2,
                      help="seconds before a datagram counts as lost")
    echo.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        if args.command == "echo":
            return _echo_command(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
