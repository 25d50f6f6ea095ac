"""TFTP benchmark: fastnet's server and client against tftpd-hpa, tftpy and curl on loopback.

    python bench/tftp.py                 # 64 MiB file, 3 runs per pair (median), both CPU placements
    python bench/tftp.py --size 8 --runs 1   # a quick look

Every pair runs in one invocation under the same CPU placement, twice: server and client pinned
to one core (``taskset -c 0`` for both), then to two separate cores (server on 0, client on 1).

Pairs that are compared with each other take turns run by run (the machine may be shared), and
each row is the median of its runs.  Throughput is the file size over the client's own transfer
time (curl's ``%{time_total}``, the fastnet client's ``stats.seconds``: request to last ACK,
process start-up excluded for both).  Server CPU is user+sys time per MiB of the server's whole
process tree, read before and after each run from a cgroup made for it (exact, and it counts
tftpd-hpa's per-transfer children after they exit); without the rights to make one, from
``/proc/<pid>/stat`` (10 ms ticks).  Client CPU is what moving the bytes cost the client, user+sys
per MiB: the fastnet client measures its ``download()`` call (``time.process_time()``), curl's is
its whole process's (``getrusage(RUSAGE_CHILDREN)`` around the run); from both, what the same
client spends fetching a 1-byte file (start-up, request and exit) is taken away.  With curl as the
client it bounds what any lockstep server can reach.

Uploads (no target) are measured too: curl and the fastnet client put the file back into the
server, which writes it to a new file on disk each run.

tftpy is slow: its runs use a smaller file (``--tftpy-size``, 8 MiB by default) and the table says
so; MiB/s and CPU per MiB are rates, so they are comparable, but not measured on the same size.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TICKS = os.sysconf("SC_CLK_TCK")
# the server and client processes import the fastnet this script reports on (this checkout's),
# wherever it is run from
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
MiB = 1 << 20

FASTNET_CLIENT = r"""
import os, sys, time
from fastnet.tftp import client
host, port, name, blksize, window = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
sink = open("/dev/null", "wb")  # a file object is written directly (like curl -o /dev/null)
cpu = time.process_time()
s = client.download(host, name, sink, port=port, blksize=blksize, windowsize=window if window > 1 else None,
                    timeout=1.0, retries=8)
cpu = time.process_time() - cpu  # the transfer's own CPU: no start-up, no exit
print(f"{s.seconds:.6f} {s.bytes} {cpu:.6f} {s.retransmissions} {s.options.get('windowsize', 1)}")
sys.stdout.flush()
os._exit(0)  # skip the final dally (it does not count, but it would slow the benchmark down)
"""

FASTNET_PUT = r"""
import os, sys, time
from fastnet.tftp import client
host, port, name, blksize, window = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
cpu = time.process_time()
s = client.upload(host, name, "up-fastnet.bin", port=port, blksize=blksize,
                  windowsize=window if window > 1 else None, timeout=1.0, retries=8)
cpu = time.process_time() - cpu
print(f"{s.seconds:.6f} {s.bytes} {cpu:.6f} {s.retransmissions} {s.options.get('windowsize', 1)}")
"""

TFTPY_SERVER = r"""
import logging, sys, tftpy
logging.getLogger("tftpy").setLevel(logging.ERROR)
tftpy.TftpServer(sys.argv[1]).listen("127.0.0.1", int(sys.argv[2]), 2)
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICKS


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, seconds: float = 10) -> None:
    from fastnet.tftp import codec, engine

    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(codec.encode_rrq("bench-readiness-probe.missing"), ("127.0.0.1", port))
            try:
                s.recvfrom(1024)
                return
            except OSError:
                continue
    raise RuntimeError(f"server on port {port} did not come up")


class TreeCpu:
    """Exact CPU time of a process and all its descendants, dead ones too: a cgroup of its own.

    /proc counts in clock ticks (10 ms), as long as a 64 MiB transfer at 65464-byte blocks
    takes, and tftpd-hpa's per-transfer children are reaped by the kernel, out of reach of the
    parent's counters.  A cgroup sums every member's time in nanoseconds (v2 ``cpu.stat``, v1
    ``cpuacct``), members that have exited included.  Making one needs root (or a delegated
    subtree); without it, ``make`` returns None and the benchmark samples /proc instead."""

    def __init__(self, path: str, procs: str, read) -> None:
        self.path, self.procs, self._read = path, procs, read

    @classmethod
    def make(cls, name: str) -> "TreeCpu | None":
        mounts = {}
        with open("/proc/mounts") as f:
            for line in f:
                _, where, fstype, opts = line.split()[:4]
                if fstype == "cgroup2":
                    mounts.setdefault("v2", where)
                elif fstype == "cgroup" and "cpuacct" in opts.split(","):
                    mounts.setdefault("v1", where)
        for kind in ("v2", "v1"):
            if kind not in mounts:
                continue
            path = os.path.join(mounts[kind], name)
            try:
                os.mkdir(path)
            except OSError:
                continue
            read = cls._read_v2 if kind == "v2" else cls._read_v1
            try:
                read(path)
                return cls(path, os.path.join(path, "cgroup.procs"), read)
            except (OSError, ValueError):
                os.rmdir(path)
        return None

    @staticmethod
    def _read_v2(path: str) -> float:
        with open(os.path.join(path, "cpu.stat")) as f:
            stat = dict(line.split() for line in f)
        return (int(stat["user_usec"]) + int(stat["system_usec"])) / 1e6

    @staticmethod
    def _read_v1(path: str) -> float:
        with open(os.path.join(path, "cpuacct.usage")) as f:
            return int(f.read()) / 1e9

    def seconds(self) -> float:
        return self._read(self.path)

    def prefix(self) -> list[str]:
        """A command prefix that joins the cgroup, then execs the rest (same pid, same signals)."""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', self.procs]

    def remove(self) -> None:
        try:
            os.rmdir(self.path)
        except OSError:
            pass  # a straggler still inside: left for the system to clean


class Server:
    def __init__(self, kind: str, root: str, cpu: str) -> None:
        self.kind, self.root = kind, root
        self.port = free_udp_port()
        if kind == "fastnet":
            args = [sys.executable, "-m", "fastnet.tftp", "serve", root, "--port", str(self.port), "--quiet",
                    "--write", "--overwrite"]
        elif kind == "tftpd-hpa":
            args = [shutil.which("in.tftpd") or "/usr/sbin/in.tftpd", "-L", "-c", "-s", root, "-a",
                    f"127.0.0.1:{self.port}"]
            if os.geteuid() == 0:
                args += ["-u", "root"]
        elif kind == "tftpy":
            args = [sys.executable, "-c", TFTPY_SERVER, root, str(self.port)]
        else:
            raise ValueError(kind)
        self.meter = TreeCpu.make(f"fastnet-bench-{os.getpid()}-{kind}")
        prefix = self.meter.prefix() if self.meter is not None else []
        self.proc = subprocess.Popen([*prefix, "taskset", "-c", cpu, *args], stdin=subprocess.DEVNULL, env=CHILD_ENV,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(self.port)

    def cpu(self) -> float:
        """CPU seconds so far: the whole process tree's, exact, with a cgroup; else from /proc."""
        if self.meter is not None:
            return self.meter.seconds()
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.meter is not None:
            time.sleep(0.1)  # tftpd-hpa's children end on their own
            self.meter.remove()


def run_client(kind: str, server, name: str, blksize: int, window: int, cpu: str,
               size: int) -> tuple[float, float | None]:
    """Seconds the transfer took, as the client measured it, and the CPU seconds of the transfer
    itself if the client can say (the fastnet client can; curl's: see client_cpu)."""
    if kind == "curl":
        args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
                "--tftp-blksize", str(blksize), f"tftp://127.0.0.1:{server.port}/{name}"]
    elif kind == "curl-put":  # uploads: the file in the served directory goes back in as up-curl.bin
        args = ["curl", "-sS", "-T", name, "-w", "%{time_total} %{size_upload}",
                "--tftp-blksize", str(blksize), f"tftp://127.0.0.1:{server.port}/up-curl.bin"]
    elif kind == "fastnet-put":
        args = [sys.executable, "-c", FASTNET_PUT, "127.0.0.1", str(server.port), name, str(blksize), str(window)]
    elif kind == "dd":  # no network: the file read into a block-sized buffer, as a client receives it
        args = ["dd", f"if={name}", "of=/dev/null", f"bs={blksize}"]
    else:
        args = [sys.executable, "-c", FASTNET_CLIENT, "127.0.0.1", str(server.port), name, str(blksize), str(window)]
    # taskset execs the client in place, and run() reaps it: its CPU time joins client_cpu();
    # it runs in the served directory, where dd finds the file by the same name
    r = subprocess.run(["taskset", "-c", cpu, *args], capture_output=True, timeout=900, env=CHILD_ENV,
                       cwd=server.root)
    if r.returncode != 0:
        raise RuntimeError(f"{kind} failed: {r.stderr.decode().strip()}")
    if kind == "dd":  # "67108864 bytes (67 MB, 64 MiB) copied, 0.0123 s, 5.4 GB/s": its own timing
        last = r.stderr.decode().strip().splitlines()[-1]
        got, seconds = int(last.split()[0]), float(last.split(" copied, ")[1].split()[0])
    else:
        parts = r.stdout.split()
        seconds, got = float(parts[0]), int(float(parts[1]))
    if got != size:
        raise RuntimeError(f"{kind} got {got} bytes of {size}")
    if kind.endswith("-put"):  # the server wrote it: check, and remove it (a new file each run)
        uploaded = os.path.join(server.root, "up-curl.bin" if kind == "curl-put" else "up-fastnet.bin")
        if os.path.getsize(uploaded) != size:
            raise RuntimeError(f"{kind}: the server wrote {os.path.getsize(uploaded)} bytes of {size}")
        os.unlink(uploaded)
    return seconds, float(parts[2]) if kind in ("fastnet", "fastnet-put") else None


def client_cpu() -> float:
    """CPU seconds (user + sys) of all the clients this process has run and reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class ChildSampler(threading.Thread):
    """CPU seconds of a server's child processes, sampled every 20 ms while they live.

    tftpd-hpa forks a child per transfer and lets the kernel reap it (SIGCHLD ignored), so the
    child's time never reaches the parent's cutime/cstime: it is read from /proc while it runs
    (the last < 20 ms of a child's life are missed: a small undercount, in tftpd-hpa's favour).
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            for child in children:
                try:
                    self.seen[child] = cpu_seconds(child)
                except (OSError, ValueError, IndexError):
                    pass

    def total(self) -> float:
        self.stop.set()
        self.join()
        return sum(self.seen.values())


class NoServer:
    """The "server" of the dd row: the file is read straight from the page cache."""

    kind = "page cache"

    def __init__(self, root: str) -> None:
        self.root = root

    def cpu(self) -> float:
        return 0.0


STARTUP: dict[tuple[str, str, str], tuple[float, float]] = {}


def startup_cpu(server: Server, client: str, cpu: str) -> tuple[float, float]:
    """CPU seconds of fetching a 1-byte file, the median of 3: the client's (curl: start-up,
    request, exit; the fastnet client: its download() call) and the server's (the request).

    The client's is subtracted from each of its runs, so that the client column is the
    transfer's own cost per MiB; the server's, only where the benchmark adds the two sides up."""
    key = (server.kind, client, cpu)
    if key not in STARTUP:
        clients, servers = [], []
        for _ in range(3):
            before, server_before = client_cpu(), server.cpu()
            _, own = run_client(client, server, "tiny.bin", 512, 1, cpu, 1)
            servers.append(server.cpu() - server_before)
            clients.append(own if own is not None else client_cpu() - before)
        STARTUP[key] = statistics.median(clients), statistics.median(servers)
    return STARTUP[key]


def measure(server: Server, client: str, name: str, size: int, blksize: int, window: int, cpu: str, runs: int):
    """Lists of MiB/s, server CPU ms/MiB and client CPU ms/MiB, one entry per run."""
    rates, cpus, client_cpus = [], [], []
    base = startup_cpu(server, client, cpu)[0]
    for _ in range(runs):
        # without a cgroup, tftpd-hpa's children are sampled from /proc while they live
        sampler = ChildSampler(server.proc.pid) if server.kind == "tftpd-hpa" and server.meter is None else None
        if sampler is not None:
            sampler.start()
        before, client_before = server.cpu(), client_cpu()
        seconds, own = run_client(client, server, name, blksize, window, cpu, size)
        after = server.cpu() + (sampler.total() if sampler is not None else 0.0)
        rates.append(size / MiB / seconds)
        cpus.append((after - before) * 1000 / (size / MiB))
        if own is None:  # curl: all of its CPU
            own = client_cpu() - client_before
        client_cpus.append(max(0.0, own - base) * 1000 / (size / MiB))
    return rates, cpus, client_cpus


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=64, help="file size in MiB (default 64)")
    parser.add_argument("--tftpy-size", type=float, default=8, help="file size for tftpy's slow runs, MiB (default 8)")
    parser.add_argument("--runs", type=int, default=3, help="runs per pair; the median is reported (default 3)")
    parser.add_argument("--placements", default="one,two", help="'one', 'two' or 'one,two' (default)")
    args = parser.parse_args(argv)

    sys.path.insert(0, REPO)
    from fastnet import loop as _loop
    from fastnet.tftp import codec, engine

    for tool in ("taskset", "curl", "in.tftpd"):
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            print(f"bench/tftp.py: {tool} is required", file=sys.stderr)
            return 1
    try:
        import tftpy  # noqa: F401

        have_tftpy = True
    except ImportError:
        have_tftpy = False

    size = int(args.size * MiB)
    small = min(size, int(args.tftpy_size * MiB))
    ncpu = os.cpu_count() or 1
    placements = []
    for p in args.placements.split(","):
        if p == "one":
            placements.append(("one core (server and client on CPU 0)", "0", "0"))
        elif p == "two" and ncpu >= 2:
            placements.append(("two cores (server on CPU 0, client on CPU 1)", "0", "1"))

    print(f"# TFTP benchmark: {args.size:g} MiB file on loopback, median of {args.runs} run(s)")
    print(f"# {platform.node()}: {platform.processor() or platform.machine()}, {ncpu} CPUs, "
          f"Linux {platform.release()}, Python {platform.python_version()}")
    print(f"# fastnet implementation: loop={_loop.IMPLEMENTATION}, codec={codec.IMPLEMENTATION}, "
          f"engine={engine.IMPLEMENTATION if engine.enabled() else 'off'}")
    print(f"# tftpy runs use a {small / MiB:g} MiB file" if have_tftpy else "# tftpy not installed: skipped")
    print("# py3tftp, fbtftp: not installed, skipped")

    all_met = True
    with tempfile.TemporaryDirectory(prefix="fastnet-bench-") as root:
        with open(os.path.join(root, "big.bin"), "wb") as f:
            chunk = os.urandom(MiB)
            for _ in range(size // MiB):
                f.write(chunk)
            f.write(chunk[: size % MiB])
        with open(os.path.join(root, "small.bin"), "wb") as f:
            with open(os.path.join(root, "big.bin"), "rb") as src:
                f.write(src.read(small))
        with open(os.path.join(root, "tiny.bin"), "wb") as f:
            f.write(b"x")  # the clients' start-up cost, subtracted from their CPU per MiB

        for title, scpu, ccpu in placements:
            print()
            print(f"## {title}")
            results: dict[tuple, tuple[float, float, float]] = {}
            servers = {"fastnet": Server("fastnet", root, scpu), "tftpd-hpa": Server("tftpd-hpa", root, scpu)}
            if have_tftpy:
                servers["tftpy"] = Server("tftpy", root, scpu)
            try:
                print()
                print("| server | client | blksize | windowsize | MiB/s | server CPU ms/MiB | client CPU ms/MiB |")
                print("|---|---|---:|---:|---:|---:|---:|")

                def group(pairs):
                    # the pairs compared with each other take turns, run by run, so that a change
                    # in the machine's load (it is shared) hits them alike; medians per pair
                    samples = {pair: ([], [], []) for pair in pairs}
                    for _ in range(args.runs):
                        for pair in pairs:
                            server_kind, client_kind, blksize, window = pair
                            name, n = ("small.bin", small) if server_kind == "tftpy" else ("big.bin", size)
                            server = servers.get(server_kind) or NoServer(root)
                            for i, values in enumerate(measure(server, client_kind, name, n, blksize,
                                                               window, ccpu, 1)):
                                samples[pair][i].extend(values)
                    out = {}
                    for pair in pairs:
                        server_kind, client_kind, blksize, window = pair
                        rate, cpu, ccpu_ms = (statistics.median(values) for values in samples[pair])
                        out[pair] = (rate, cpu, ccpu_ms)
                        note = f" ({small / MiB:g} MiB)" if server_kind == "tftpy" and small != size else ""
                        shown = "-" if client_kind == "dd" else window
                        print(f"| {server_kind}{note} | {client_kind} | {blksize} | {shown} | {rate:.1f} | {cpu:.2f} "
                              f"| {ccpu_ms:.2f} |", flush=True)
                    return out

                # results[(group, pair)]: every check compares pairs measured in the same group
                for blksize in (512, 1468, 8192, 65464):
                    for pair, value in group([(kind, "curl", blksize, 1) for kind in servers]).items():
                        results[("servers", *pair)] = value
                for blksize in (1468, 65464):
                    pairs = [("fastnet", "fastnet", blksize, w) for w in (1, 16, 64)] + [("tftpd-hpa", "curl", blksize, 1)]
                    if blksize == 65464:
                        # the floor under any client: one copy of the file out of the page cache into
                        # a block-sized buffer, taking its turn with the transfers (as cold or warm)
                        pairs.append(("page cache", "dd", blksize, 1))
                    for pair, value in group(pairs).items():
                        results[("windows", *pair)] = value
                pairs = [("tftpd-hpa", c, blksize, 1) for blksize in (512, 1468) for c in ("fastnet", "curl")]
                for pair, value in group(pairs).items():
                    results[("clients", *pair)] = value
                # uploads (no target; into a new file on disk each run, not /dev/null)
                pairs = [(kind, "curl-put", blksize, 1) for blksize in (1468, 65464) for kind in ("fastnet", "tftpd-hpa")]
                pairs += [("fastnet", "fastnet-put", blksize, 16) for blksize in (1468, 65464)]
                for pair, value in group(pairs).items():
                    results[("uploads", *pair)] = value
            finally:
                for server in servers.values():
                    server.stop()

            print()

            def moved_ms(blksize: int, window: int) -> tuple[float, float]:
                """Server and client CPU ms per MiB moved by the fastnet pair, without the request's
                fixed cost (a 1-byte fetch's), which the client column already leaves out: on one
                core the two add up, in turn."""
                _, server_ms, client_ms = results[("windows", "fastnet", "fastnet", blksize, window)]
                return server_ms - STARTUP[("fastnet", "fastnet", ccpu)][1] * 1000 / (size / MiB), client_ms

            def check(label: str, ok: bool) -> None:
                nonlocal all_met
                all_met &= ok
                print(f"- {'met' if ok else 'NOT met'}: {label}")

            for blksize in (512, 1468, 8192, 65464):
                f, h = results[("servers", "fastnet", "curl", blksize, 1)][0], results[("servers", "tftpd-hpa", "curl", blksize, 1)][0]
                check(f"fastnet server >= tftpd-hpa, curl, blksize {blksize}: {f:.1f} vs {h:.1f} MiB/s ({f / h:.2f}x)",
                      f >= h)
            for blksize, factor in ((1468, 5), (65464, 2)):
                h = results[("windows", "tftpd-hpa", "curl", blksize, 1)][0]
                for window in (16, 64):
                    f = results[("windows", "fastnet", "fastnet", blksize, window)][0]
                    check(f"fastnet windowsize {window} >= {factor}x tftpd-hpa lockstep at blksize {blksize}: "
                          f"{f:.1f} vs {h:.1f} MiB/s ({f / h:.2f}x)", f >= factor * h)
                    server_ms, client_ms = moved_ms(blksize, window)
                    if scpu == ccpu and f < factor * h and client_ms > 0:
                        left = 1000 / (factor * h) - client_ms
                        per_block = left * blksize / MiB * 1000 if left > 0 else 0.0  # ms/MiB -> us a block
                        print(f"  - one core: client {client_ms:.3f} + server {server_ms:.3f} ms/MiB of CPU per "
                              f"MiB moved, in turn: at most {1000 / (client_ms + server_ms):.0f} MiB/s; {factor}x needs "
                              f"{factor * h:.0f} MiB/s, which leaves the server {max(left, 0):.3f} ms/MiB "
                              f"({per_block:.1f} us a block) next to this client")
            copy_rate, _, copy_ms = results[("windows", "page cache", "dd", 65464, 1)]
            h = results[("windows", "tftpd-hpa", "curl", 65464, 1)][0]
            print(f"  - floor: one copy of the file out of the page cache and nothing else (dd, 65464-byte reads, "
                  f"started right after the run before it, so it finds the file at least as warm as the transfers "
                  f"do): {copy_ms:.3f} ms/MiB of CPU, {copy_rate:.0f} MiB/s = {copy_rate / h:.2f}x tftpd-hpa lockstep")
            if scpu == ccpu:
                # every UDP client copies each byte out of the kernel once; on one core the rest of
                # both processes' work has to fit in what 2x leaves beside that copy
                server_ms, client_ms = moved_ms(65464, 16)
                left = 1000 / (2 * h) - copy_ms
                print(f"    2x tftpd-hpa on one core leaves {left:.3f} ms/MiB beside that copy for everything else on "
                      f"both sides; fastnet at windowsize 16 spends {server_ms + client_ms - copy_ms:.3f} (server "
                      f"{server_ms:.3f}, client beyond the copy {client_ms - copy_ms:.3f})")
            if have_tftpy:
                for blksize in (512, 1468, 8192, 65464):
                    f, t = results[("servers", "fastnet", "curl", blksize, 1)][0], results[("servers", "tftpy", "curl", blksize, 1)][0]
                    check(f"fastnet server >= 5x tftpy, curl, blksize {blksize}: {f:.1f} vs {t:.1f} MiB/s "
                          f"({f / t:.1f}x)", f >= 5 * t)
                    # lockstep: curl works on one packet at a time, so no server, however fast, gets
                    # curl past 1 / (curl's own CPU per MiB); that bound, next to 5x tftpy
                    curl_ms = results[("servers", "fastnet", "curl", blksize, 1)][2]
                    if curl_ms > 0:
                        bound = 1000 / curl_ms
                        print(f"  - bound: curl's own CPU, {curl_ms:.2f} ms/MiB, caps any server at {bound:.0f} MiB/s "
                              f"= {bound / t:.1f}x tftpy, with the server and the wake-ups costing nothing")
            for blksize in (512, 1468):
                f, c = results[("clients", "tftpd-hpa", "fastnet", blksize, 1)][0], results[("clients", "tftpd-hpa", "curl", blksize, 1)][0]
                check(f"fastnet client >= curl against tftpd-hpa, blksize {blksize}: {f:.1f} vs {c:.1f} MiB/s "
                      f"({f / c:.2f}x)", f >= c)
            for blksize in (1468, 65464):
                f, h = (results[("uploads", kind, "curl-put", blksize, 1)][0] for kind in ("fastnet", "tftpd-hpa"))
                w = results[("uploads", "fastnet", "fastnet-put", blksize, 16)][0]
                print(f"- uploads (no target), blksize {blksize}: curl into the fastnet server {f:.1f} vs tftpd-hpa "
                      f"{h:.1f} MiB/s ({f / h:.2f}x); the fastnet client at windowsize 16 {w:.1f} MiB/s ({w / h:.2f}x)")
    print()
    print("all targets met" if all_met else "some targets NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
