#!/usr/bin/env python
"""Echo servers side by side, loaded by fastnet's C load generator (a benchmark, not a test).

    python bench/echo.py --quick          # ~1 minute: every server at 10 connections x 1 KiB, UDP, targets
    python bench/echo.py                  # full matrix (1/10/100 connections x 1/10/100 KiB), ~6 minutes
    python bench/echo.py --only relay,c-ref --secs 5

Each server runs in its own process pinned to CPU 0; the load generator (``fastnet.bench.loadgen``,
closed-loop ping-pong, every byte verified) runs in this process pinned to CPU 1.  For each row:
requests/s, p99 latency, and the server's user and system CPU per request in microseconds, from
/proc/<pid>/stat (summed over worker processes).  The targets at the end compare rows of this one
run (medians of repeated alternating runs), never numbers from elsewhere.

Servers: the fastnet relay (``python -m fastnet.epoll_echo``, C loop, GIL released), a Protocol and
streams on fastnet.Loop, asyncio and uvloop (Protocol and streams), gevent's StreamServer, the
notes' epoll server in Python 3 (bench/notes_epoll_echo.py) and a minimal C epoll echo server
(bench/c_echo_ref.c, compiled here with cc) as the reference.  UDP at 512 bytes: relay (recvmmsg /
sendmmsg batches) vs the C reference (one datagram per syscall) vs asyncio / uvloop datagram
protocols.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SERVER_CPU = 0
CLIENT_CPU = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------- servers (--serve)


def _serve(kind: str, udp: bool) -> None:
    """Run one Python echo server on 127.0.0.1, any port; print "READY <port>"."""
    import asyncio

    if kind == "gevent":
        from gevent.server import StreamServer

        def handle(sock, addr):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                sock.sendall(data)

        server = StreamServer(("127.0.0.1", 0), handle, backlog=1024)
        server.start()
        print("READY", server.server_port, flush=True)
        server.serve_forever()
        return

    loop_name, style = kind.split("-", 1)  # e.g. "uvloop-streams"

    class EchoProtocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    class EchoDatagram(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    async def handle_stream(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main():
        loop = asyncio.get_running_loop()
        if udp:
            transport, _ = await loop.create_datagram_endpoint(EchoDatagram, local_addr=("127.0.0.1", 0))
            port = transport.get_extra_info("sockname")[1]
        elif style == "streams":
            server = await asyncio.start_server(handle_stream, "127.0.0.1", 0, backlog=1024)
            port = server.sockets[0].getsockname()[1]
        else:
            server = await loop.create_server(EchoProtocol, "127.0.0.1", 0, backlog=1024)
            port = server.sockets[0].getsockname()[1]
        print("READY", port, flush=True)
        await asyncio.Event().wait()

    if loop_name == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    elif loop_name == "fastnet":
        from fastnet import loop as _loop

        _loop.run(main())
    else:
        asyncio.run(main())


# ---------------------------------------------------------------------------- running servers


def _c_ref_binary() -> str:
    out = os.path.join(tempfile.gettempdir(), f"fastnet_c_echo_ref_{os.getuid()}")
    src = os.path.join(HERE, "c_echo_ref.c")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        cc = shutil.which("cc") or shutil.which("gcc")
        if not cc:
            raise SystemExit("bench/echo.py: no C compiler (cc) for the reference server")
        subprocess.run([cc, "-O2", "-o", out, src], check=True)
    return out


def server_argv(name: str, udp: bool) -> list[str]:
    py = sys.executable
    if name == "relay":
        return [py, "-m", "fastnet.epoll_echo", "--port", "0"] + (["--udp"] if udp else [])
    if name == "relay-2w":
        return [py, "-m", "fastnet.epoll_echo", "--port", "0", "--workers", "2"] + (["--udp"] if udp else [])
    if name == "c-ref":
        return [_c_ref_binary(), "0"] + (["udp"] if udp else [])
    if name == "notes-epoll":
        return [py, os.path.join(HERE, "notes_epoll_echo.py"), "0"]
    return [py, os.path.abspath(__file__), "--serve", name] + (["--udp"] if udp else [])


class Server:
    def __init__(self, name: str, udp: bool) -> None:
        self.name = name
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            server_argv(name, udp),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CPU}),
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        m = re.search(r"READY (\d+)|:(\d+) \(engine", line)
        if not m:
            self.stop()
            raise RuntimeError(f"server {name} did not start: {line!r}")
        self.port = int(m.group(1) or m.group(2))

    def pids(self) -> list[int]:
        found = [self.proc.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                            found.append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        return found

    def cpu_ticks(self) -> tuple[int, int]:
        user = system = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            user += int(fields[11])
            system += int(fields[12])
        return user, system

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# ---------------------------------------------------------------------------- measuring


def measure(server: Server, *, conns: int, size: int, secs: float, udp: bool = False, pipeline: int = 1) -> dict:
    from fastnet.bench import loadgen

    # warm up first: the kernel splits a process's CPU time into user and system by sampling, in
    # proportion over its whole life, so a fresh process's start-up would leak into the first row
    loadgen.run_echo("127.0.0.1", server.port, conns=conns, size=size, secs=0.2, udp=udp, pipeline=pipeline)
    u0, s0 = server.cpu_ticks()
    r = loadgen.run_echo("127.0.0.1", server.port, conns=conns, size=size, secs=secs, udp=udp, pipeline=pipeline)
    u1, s1 = server.cpu_ticks()
    n = max(r["requests"], 1)
    return {
        "server": server.name,
        "proto": "udp" if udp else "tcp",
        "conns": conns if pipeline == 1 else f"{conns}x{pipeline}",
        "size": size,
        "rps": r["requests_per_sec"],
        "mbps": r["mb_per_sec"],
        "p99": r["latency_us"]["p99"],
        "user_us": (u1 - u0) / CLK_TCK / n * 1e6,
        "sys_us": (s1 - s0) / CLK_TCK / n * 1e6,
        "faults": r["errors"] + r["mismatches"],
        "losses": r["losses"],
    }


HEADER = (
    f"{'server':<18}{'proto':<6}{'conns':>6}{'size':>8}{'req/s':>11}{'MB/s':>9}{'p99 us':>9}"
    f"{'user us/req':>13}{'sys us/req':>12}{'err':>5}{'lost':>6}"
)


def fmt(row: dict) -> str:
    return (
        f"{row['server']:<18}{row['proto']:<6}{str(row['conns']):>6}{_size(row['size']):>8}{row['rps']:>11.0f}"
        f"{row['mbps']:>9.1f}{row['p99']:>9.0f}{row['user_us']:>13.2f}{row['sys_us']:>12.2f}"
        f"{row['faults']:>5}{row['losses']:>6}"
    )


def _size(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def median_row(rows: list[dict]) -> dict:
    out = dict(rows[0])
    for key in ("rps", "mbps", "p99", "user_us", "sys_us"):
        out[key] = statistics.median(r[key] for r in rows)
    out["faults"] = sum(r["faults"] for r in rows)
    out["losses"] = sum(r["losses"] for r in rows)
    return out


def idle_memory(count: int) -> str:
    """Hold *count* idle connections to the relay; report its resident set."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < count + 100:
        return f"idle check skipped: RLIMIT_NOFILE hard limit {hard} < {count + 100}"
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 100, hard))
    server = Server("relay", False)
    clients = []
    try:
        def rss_kib():
            return sum(_rss_kib(pid) for pid in server.pids())

        before = rss_kib()
        for _ in range(count):
            clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        ok = 0
        for c in clients[:: max(count // 100, 1)]:
            c.sendall(b"ping")
            ok += c.recv(4) == b"ping"
        after = rss_kib()
        fds = sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in server.pids())
        return (
            f"idle: {count} connections held by the relay ({fds} descriptors open in it): "
            f"resident set {after / 1024:.1f} MB "
            f"(was {before / 1024:.1f} MB with none; {(after - before) * 1024 / count:.0f} bytes each); "
            f"{ok} sampled connections echoed; target < 100 MB: {'met' if after < 100 * 1024 else 'NOT met'}"
        )
    finally:
        for c in clients:
            c.close()
        server.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine() -> str:
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        model = m.group(1).strip() if m else model
    except OSError:
        pass
    from fastnet import relay

    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return (
        f"machine: {model}, {os.cpu_count()} cores; Linux {platform.release()}; Python {platform.python_version()}; "
        f"relay implementation {relay.IMPLEMENTATION}; server on CPU {SERVER_CPU}, load generator on CPU {CLIENT_CPU}; "
        f"load average at start {load} (the machine is shared: other processes compete for both CPUs)"
    )


TCP_SERVERS = [
    "relay",
    "c-ref",
    "fastnet-protocol",
    "fastnet-streams",
    "asyncio-protocol",
    "asyncio-streams",
    "uvloop-protocol",
    "uvloop-streams",
    "gevent",
    "notes-epoll",
]
UDP_SERVERS = ["relay", "c-ref", "asyncio-dgram", "uvloop-dgram"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 connections x 1 KiB only, 2 s rows")
    parser.add_argument("--secs", type=float, help="seconds per row (default 2 with --quick, else 2.5)")
    parser.add_argument("--only", help="comma-separated server names")
    parser.add_argument("--idle", type=int, default=10000, help="idle connections for the memory check (0: skip)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--udp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        try:
            _serve(args.serve, args.udp)
        except KeyboardInterrupt:
            pass
        return 0

    secs = args.secs or (2.0 if args.quick else 2.5)
    only = set(args.only.split(",")) if args.only else None
    try:
        os.sched_setaffinity(0, {CLIENT_CPU})
    except OSError:
        pass
    sizes = [1024] if args.quick else [1024, 10240, 102400]
    conn_counts = [10] if args.quick else [1, 10, 100]

    print(machine())
    print(f"rows of {secs:g} s; closed-loop ping-pong, one message in flight per connection, every byte verified")
    print()
    print(HEADER)
    rows: list[dict] = []

    def run_server(name: str, udp: bool, combos) -> None:
        if only and name not in only:
            return
        try:
            server = Server(name, udp)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            print(f"{name:<18}skipped: {exc}")
            return
        try:
            for conns, size in combos:
                row = measure(server, conns=conns, size=size, secs=secs, udp=udp)
                rows.append(row)
                print(fmt(row), flush=True)
        except OSError as exc:
            print(f"{name:<18}failed: {exc}")
        finally:
            server.stop()

    combos = [(c, s) for s in sizes for c in conn_counts]
    for name in TCP_SERVERS:
        run_server(name, False, combos)
    for name in UDP_SERVERS:
        run_server(name, True, [(10, 512)])

    # ---- targets: alternate relay and reference (medians), then workers=1 vs workers=2
    reps = 1 if args.quick else 5
    print()
    print(f"targets (medians of {reps} alternating runs of {secs:g} s, 10 connections):")
    print(HEADER)
    picked: dict[tuple[str, bool], list[dict]] = {}
    if not only or {"relay", "c-ref"} <= only:
        for _ in range(reps):
            for name, udp in (("relay", False), ("c-ref", False), ("relay", True), ("c-ref", True)):
                server = Server(name, udp)
                try:
                    size = 512 if udp else 1024
                    picked.setdefault((name, udp), []).append(measure(server, conns=10, size=size, secs=secs, udp=udp))
                finally:
                    server.stop()
        for _ in range(reps):
            for name in ("relay", "c-ref"):
                server = Server(name, True)
                try:
                    picked.setdefault((name, "udp8"), []).append(
                        measure(server, conns=10, size=512, secs=secs, udp=True, pipeline=8)
                    )
                finally:
                    server.stop()
        for _ in range(reps):
            for name in ("relay", "relay-2w"):
                server = Server(name, False)
                try:
                    picked.setdefault((name, False), []).append(measure(server, conns=10, size=1024, secs=secs))
                finally:
                    server.stop()
        med = {key: median_row(v) for key, v in picked.items()}
        for key in (("relay", False), ("c-ref", False), ("relay-2w", False), ("relay", True), ("c-ref", True),
                    ("relay", "udp8"), ("c-ref", "udp8")):
            print(fmt(med[key]))
        relay_t, ref_t = med[("relay", False)], med[("c-ref", False)]
        relay_u, ref_u = med[("relay", True)], med[("c-ref", True)]
        two = med[("relay-2w", False)]
        print()

        def verdict(ok: bool) -> str:
            return "met" if ok else "NOT met"

        print(
            f"target: relay req/s >= C reference: {relay_t['rps']:.0f} vs {ref_t['rps']:.0f} "
            f"(ratio {relay_t['rps'] / ref_t['rps']:.2f}): {verdict(relay_t['rps'] >= ref_t['rps'])}"
        )

        def cpu(row):
            return row["user_us"] + row["sys_us"]

        print(
            f"  (server CPU per echo, user+sys: relay {cpu(relay_t):.2f} us vs C reference {cpu(ref_t):.2f} us, "
            f"ratio {cpu(relay_t) / cpu(ref_t):.2f}; lower is better, and unlike req/s it does not depend on "
            f"how much CPU the other processes left the server)"
        )
        print(
            f"target: relay user CPU <= 0.2 us per echo: {relay_t['user_us']:.3f} us: "
            f"{verdict(relay_t['user_us'] <= 0.2)}"
        )
        ratio = relay_u["sys_us"] / ref_u["sys_us"] if ref_u["sys_us"] else float("inf")
        print(
            f"target: UDP relay system CPU per datagram <= 0.7x C reference: {relay_u['sys_us']:.2f} vs "
            f"{ref_u['sys_us']:.2f} us (ratio {ratio:.2f}): {verdict(ratio <= 0.7)}"
        )
        r8, c8 = med[("relay", "udp8")], med[("c-ref", "udp8")]
        print(
            f"  (with 8 datagrams in flight per socket, where recvmmsg gets real batches: "
            f"{r8['sys_us']:.2f} vs {c8['sys_us']:.2f} us, ratio {r8['sys_us'] / c8['sys_us']:.2f})"
            if c8["sys_us"] else "  (8 in flight: no CPU ticks measured)"
        )
        note = "" if (os.cpu_count() or 1) > 2 else " (2 CPUs: both workers share the server's CPU, the client has the other; no gain is expected)"
        print(
            f"target: --workers 2 req/s > 1 worker: {two['rps']:.0f} vs {relay_t['rps']:.0f} "
            f"(ratio {two['rps'] / relay_t['rps']:.2f}): {verdict(two['rps'] > relay_t['rps'])}{note}"
        )
    if args.idle:
        print()
        print(idle_memory(args.idle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
