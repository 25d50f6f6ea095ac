#!/usr/bin/env python
"""fastnet.Loop vs uvloop vs asyncio: the same echo servers, closed-loop ping-pong (a benchmark, not a test).

    python bench/loop.py                      # full matrix, ~4 minutes
    python bench/loop.py --quick              # 10 connections x 1 KiB only, plus the strace check
    python bench/loop.py --secs 5 --repeat 3  # longer runs, medians of 3 alternating repeats

Each server (an ``asyncio.Protocol`` echo, and an asyncio-streams echo handler: the same code on
every loop) runs in its own process pinned to CPU 0.  The load comes from fastnet's C load
generator (``python -m fastnet.bench echo``: closed loop, every byte verified) pinned to CPU 1; if
that is missing, from a plain-Python epoll client in this file (labelled "python-client" in the
output: then the client, not the server, may be the bottleneck).

Reported per row: requests/s, p99 latency (µs), and the server's user and system CPU per request
(µs), from utime/stime in /proc/<pid>/stat over the load window.  Then ``strace -c -f -p <server>``
over a separate window counts the server's I/O system calls per echo.  The targets at the end are
ratios between rows of this one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SERVER_CPU = 0
CLIENT_CPU = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPS = ("fastnet", "uvloop", "asyncio")
HANDLERS = ("protocol", "streams")
IO_SYSCALLS = ("read", "write", "recvfrom", "sendto", "recvmsg", "sendmsg", "readv", "writev",
               "recvmmsg", "sendmmsg")

# ------------------------------------------------------------------------------ server (--serve)


def serve(loop_name: str, handler: str) -> None:
    """Echo server on 127.0.0.1:<any>; prints "READY <port>" and runs until killed."""
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def handle(reader, writer):
        try:
            while data := await reader.read(262144):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main():
        if handler == "protocol":
            server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0, backlog=1024)
        else:
            server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        print("READY", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    if loop_name == "fastnet":
        import fastnet

        fastnet.run(main())
    elif loop_name == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


class Server:
    def __init__(self, loop_name: str, handler: str) -> None:
        self.name = f"{loop_name}/{handler}"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", loop_name, handler],
            stdout=subprocess.PIPE, text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {SERVER_CPU}),
        )
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            self.stop()
            raise RuntimeError(f"server {self.name} did not start")
        self.port = int(line[1])

    def cpu_ticks(self) -> tuple[int, int]:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])  # utime, stime

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------------------ load generators


def have_c_loadgen() -> bool:
    probe = subprocess.run([sys.executable, "-m", "fastnet.bench", "echo", "--help"],
                           capture_output=True, text=True, timeout=30)
    return probe.returncode == 0 and "--conns" in probe.stdout


def c_load(port: int, conns: int, size: int, secs: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "fastnet.bench", "echo", "--host", "127.0.0.1", "--port", str(port),
         "--conns", str(conns), "--size", str(size), "--secs", str(secs), "--json"],
        capture_output=True, text=True, timeout=secs + 60,
        preexec_fn=lambda: os.sched_setaffinity(0, {CLIENT_CPU}),
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr.strip()}")
    result = json.loads(out.stdout)
    if result.get("errors") or result.get("mismatches") or result.get("stalled"):
        raise RuntimeError(f"load generator saw errors: {result}")
    return {"requests": result["requests"], "rps": result["requests_per_sec"],
            "p99_us": result["latency_us"]["p99"]}


def python_load(port: int, conns: int, size: int, secs: float) -> dict:
    """Fallback load generator, plain Python over epoll (labelled python-client)."""
    os.sched_setaffinity(0, {CLIENT_CPU})
    payload = os.urandom(size)
    ep = select.epoll()
    socks = {}
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks[s.fileno()] = [s, 0, 0.0]
        ep.register(s.fileno(), select.EPOLLIN)
    latencies = []
    requests = 0
    start = time.perf_counter()
    deadline = start + secs
    for state in socks.values():
        state[2] = time.perf_counter()
        state[0].sendall(payload)
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        for fd, _ in ep.poll(0.1):
            state = socks[fd]
            data = state[0].recv(262144)
            if not data:
                raise RuntimeError("server closed the connection")
            state[1] += len(data)
            if state[1] >= size:
                t = time.perf_counter()
                latencies.append(t - state[2])
                requests += 1
                state[1] = 0
                state[2] = t
                state[0].sendall(payload)
    elapsed = time.perf_counter() - start
    for state in socks.values():
        state[0].close()
    ep.close()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1e6 if latencies else float("nan")
    return {"requests": requests, "rps": requests / elapsed, "p99_us": p99}


# ------------------------------------------------------------------------------ measurements


def measure(server: Server, load, conns: int, size: int, secs: float) -> dict:
    u0, s0 = server.cpu_ticks()
    result = load(server.port, conns, size, secs)
    u1, s1 = server.cpu_ticks()
    n = max(result["requests"], 1)
    result["user_us"] = (u1 - u0) / CLK_TCK / n * 1e6
    result["sys_us"] = (s1 - s0) / CLK_TCK / n * 1e6
    return result


def strace_syscalls(server: Server, load, conns: int, size: int, secs: float) -> dict | None:
    """System calls of the server per echo, from strace -c -f over a load window."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        tracer = subprocess.Popen([strace, "-c", "-f", "-q", "-o", out.name, "-p", str(server.proc.pid)],
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached
        result = load(server.port, conns, size, secs)
        tracer.send_signal(2)
        tracer.wait(timeout=30)
        text = out.read()
    counts = {}
    for line in text.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) != "total":
            counts[m.group(2)] = int(m.group(1))
    n = max(result["requests"], 1)
    io = sum(counts.get(name, 0) for name in IO_SYSCALLS)
    return {
        "requests": result["requests"],
        "io_per_echo": io / n,
        "epoll_wait_per_echo": (counts.get("epoll_wait", 0) + counts.get("epoll_pwait", 0)) / n,
        "all_per_echo": sum(counts.values()) / n,
        "io_calls": {k: v for k, v in counts.items() if k in IO_SYSCALLS},
    }


def median_row(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in ("rps", "p99_us", "user_us", "sys_us")}


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import uvloop

    return (f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}, uvloop {uvloop.__version__}")


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 else f"{n} B"


def main(argv=None) -> int:
    try:
        return _main(argv)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"bench/loop.py: {exc}".splitlines()[0] if "\n" not in str(exc) else
              f"bench/loop.py: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", nargs=2, metavar=("LOOP", "HANDLER"), help=argparse.SUPPRESS)
    parser.add_argument("--secs", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--repeat", type=int, default=1, help="alternating repeats (medians)")
    parser.add_argument("--quick", action="store_true", help="10 connections x 1 KiB only")
    parser.add_argument("--loops", default=",".join(LOOPS), help="comma-separated: fastnet,uvloop,asyncio")
    parser.add_argument("--python-client", action="store_true", help="use the Python fallback client")
    args = parser.parse_args(argv)
    if args.serve:
        serve(*args.serve)
        return 0
    if len(os.sched_getaffinity(0)) < 2 and os.cpu_count() < 2:
        parser.error("needs two CPUs (server and load generator on separate cores)")

    if not args.python_client and have_c_loadgen():
        load, client = c_load, "fastnet C load generator (python -m fastnet.bench echo)"
    else:
        load, client = python_load, "python-client (plain-Python epoll fallback: may be the bottleneck)"
    loops = [name for name in args.loops.split(",") if name]
    combos = [(10, 1024)] if args.quick else [(10, 1024), (10, 10240), (10, 102400), (1, 1024), (100, 1024)]

    print(f"machine: {machine()}")
    print(f"client: {client}; server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}; "
          f"{args.secs:g} s per run, median of {args.repeat}")
    print()
    header = f"{'server':<18} {'conns':>5} {'size':>7} {'req/s':>10} {'p99 µs':>8} {'user µs/req':>12} {'sys µs/req':>11}"
    print(header)
    print("-" * len(header))
    table: dict[tuple, dict] = {}
    for conns, size in combos:
        for handler in HANDLERS:
            rows: dict[str, list[dict]] = {name: [] for name in loops}
            for _ in range(args.repeat):
                for name in loops:
                    server = Server(name, handler)
                    try:
                        rows[name].append(measure(server, load, conns, size, args.secs))
                    finally:
                        server.stop()
            for name in loops:
                row = median_row(rows[name])
                table[(name, handler, conns, size)] = row
                print(f"{name + '/' + handler:<18} {conns:>5} {_size(size):>7} {row['rps']:>10.0f} "
                      f"{row['p99_us']:>8.0f} {row['user_us']:>12.2f} {row['sys_us']:>11.2f}", flush=True)
        print()

    print("system calls per echo, strace -c -f -p <server> (10 connections x 1 KiB, Protocol echo):")
    syscalls = {}
    for name in loops:
        server = Server(name, "protocol")
        try:
            syscalls[name] = strace_syscalls(server, load, 10, 1024, min(args.secs, 2.0))
        finally:
            server.stop()
        s = syscalls[name]
        if s is None:
            print(f"  {name:<8} strace not installed")
        else:
            calls = ", ".join(f"{k} {v}" for k, v in sorted(s["io_calls"].items()))
            print(f"  {name:<8} I/O {s['io_per_echo']:.2f}/echo, epoll_wait {s['epoll_wait_per_echo']:.2f}/echo, "
                  f"all {s['all_per_echo']:.2f}/echo  ({calls}; {s['requests']} echoes)")
    print()

    if "fastnet" in loops and "uvloop" in loops:
        base = (10, 1024)
        f_p, u_p = table[("fastnet", "protocol", *base)], table[("uvloop", "protocol", *base)]
        f_s, u_s = table[("fastnet", "streams", *base)], table[("uvloop", "streams", *base)]

        def verdict(ok: bool) -> str:
            return "MET" if ok else "NOT MET"

        print("targets (10 connections x 1 KiB, this run):")
        ratio = f_p["rps"] / u_p["rps"]
        print(f"  requests/s fastnet >= uvloop (Protocol): {ratio:.2f}x  {verdict(ratio >= 1.0)}")
        ratio = f_p["user_us"] / u_p["user_us"] if u_p["user_us"] else float("inf")
        print(f"  user CPU/request fastnet <= 0.5 x uvloop: {ratio:.2f}x  {verdict(ratio <= 0.5)}")
        if syscalls.get("fastnet"):
            io = syscalls["fastnet"]["io_per_echo"]
            print(f"  exactly 2 I/O syscalls per echo: {io:.2f}  {verdict(abs(io - 2.0) < 0.05)}")
        ratio = f_s["rps"] / u_s["rps"]
        print(f"  streams on fastnet >= streams on uvloop: {ratio:.2f}x  {verdict(ratio >= 1.0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
