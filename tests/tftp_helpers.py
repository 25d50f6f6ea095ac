"""Helpers for the TFTP tests: a lossy UDP proxy, peer servers started and stopped by the test.

Everything here binds to loopback ephemeral ports and stops what it starts.
"""

from __future__ import annotations

import contextlib
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Iterator

from conftest import free_port, peer_missing, require_module, require_tool

from fastnet.tftp import codec


class LossyProxy:
    """A UDP proxy between TFTP clients and a server that loses, duplicates and reorders datagrams.

    Clients send to :attr:`address`; each client gets its own upstream socket, which follows the
    server's transfer ID (the port its first answer comes from).  Every datagram, either way, is
    dropped with probability *loss*, else sent twice with probability *duplicate*, else held back
    and sent after the next one with probability *reorder*.  The random generator is seeded, so a
    run's decisions repeat.  Counters: ``forwarded``, ``dropped``, ``duplicated``, ``reordered``.
    """

    def __init__(
        self,
        server: tuple,
        *,
        loss: float = 0.1,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        seed: int = 1,
        host: str = "127.0.0.1",
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._family = family
        self._host = host
        self._server = server
        self._rng = random.Random(seed)
        self._loss, self._dup, self._reorder = loss, duplicate, reorder
        self._listen = socket.socket(family, socket.SOCK_DGRAM)
        self._listen.bind((host, 0))
        self._listen.setblocking(False)
        self.address = self._listen.getsockname()[:2]
        self.port = self.address[1]
        self._upstream: dict[tuple, list] = {}  # client addr -> [socket, server target]
        self._by_sock: dict[socket.socket, tuple] = {}
        self._held: tuple | None = None
        self._stop = threading.Event()
        self.forwarded = self.dropped = self.duplicated = self.reordered = 0
        self._thread = threading.Thread(target=self._run, name="lossy-proxy", daemon=True)

    def __enter__(self) -> "LossyProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in [self._listen, *self._by_sock]:
            sock.close()

    def _emit(self, sock: socket.socket, data: bytes, dest: tuple) -> None:
        try:
            sock.sendto(data, dest)
        except OSError:
            pass

    def _forward(self, sock: socket.socket, data: bytes, dest: tuple) -> None:
        r = self._rng.random()
        if r < self._loss:
            self.dropped += 1
            return
        self.forwarded += 1
        r -= self._loss
        if r < self._dup:
            self.duplicated += 1
            self._emit(sock, data, dest)
            self._emit(sock, data, dest)
        elif r < self._dup + self._reorder and self._held is None:
            self.reordered += 1
            self._held = (sock, data, dest, time.monotonic())
            return
        else:
            self._emit(sock, data, dest)
        if self._held is not None:
            held, self._held = self._held, None
            self._emit(*held[:3])

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listen, selectors.EVENT_READ)
        deadline = time.monotonic() + 600  # bounded, whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            for key, _ in sel.select(0.01):
                sock = key.fileobj
                for _ in range(64):
                    try:
                        data, addr = sock.recvfrom(70000)  # type: ignore[union-attr]
                    except BlockingIOError:
                        break
                    except OSError:
                        break
                    if sock is self._listen:
                        entry = self._upstream.get(addr)
                        if entry is None:
                            up = socket.socket(self._family, socket.SOCK_DGRAM)
                            up.bind((self._host, 0))
                            up.setblocking(False)
                            entry = self._upstream[addr] = [up, self._server]
                            self._by_sock[up] = addr
                            sel.register(up, selectors.EVENT_READ)
                        self._forward(entry[0], data, entry[1])
                    else:
                        client = self._by_sock[sock]  # type: ignore[index]
                        entry = self._upstream[client]
                        entry[1] = addr  # follow the server's TID
                        self._forward(self._listen, data, client)
            held = self._held
            if held is not None and time.monotonic() - held[3] > 0.02:
                self._held = None
                self._emit(*held[:3])
        sel.close()


def wait_for_tftp(port: int, host: str = "127.0.0.1", seconds: float = 5.0) -> None:
    """Wait until a TFTP server answers on *port* (any answer to an RRQ for a missing file)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + seconds
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        while time.monotonic() < deadline:
            s.sendto(codec.encode_rrq("fastnet-readiness-probe.missing"), (host, port))
            try:
                s.recvfrom(1024)
                return
            except OSError:
                continue
    raise RuntimeError(f"no TFTP server answered on {host}:{port}")


def _stop_group(proc: subprocess.Popen) -> None:
    """End a daemon started with ``start_new_session=True`` and every child it forked (one per
    transfer): SIGTERM to the group, SIGKILL after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def tftpd_hpa(root: str, *, write: bool = False, host: str = "127.0.0.1", timeout_us: int | None = None) -> Iterator[int]:
    """Run tftpd-hpa's ``in.tftpd -L -s ROOT`` on an ephemeral port; yields the port."""
    exe = require_tool("in.tftpd")
    port = free_port(socket.SOCK_DGRAM, host)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    args = [exe, "-L", "-s", root, "-a", address]
    if os.geteuid() == 0:
        args += ["-u", "root"]
    if write:
        args += ["-c", "-p"]
    if timeout_us is not None:
        args += ["-T", str(timeout_us)]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_tftp(port, host)
        yield port
    finally:
        _stop_group(proc)


def _busybox_has(exe: str, applet: str) -> bool:
    """Whether the busybox *exe* has *applet* (a missing one prints "applet not found", status 127)."""
    try:
        r = subprocess.run([exe, applet, "--help"], stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode != 127 and b"applet not found" not in r.stdout + r.stderr


def require_busybox_tftpd() -> str:
    """Path of a busybox with the ``tftpd`` and ``udpsvd`` applets; skip, or fail under CI, if none.

    FASTNET_BUSYBOX_TFTPD names one (``.ci/busybox-tftpd`` builds it: Debian's busybox has no
    tftpd); else a ``busybox`` on PATH is used when it has the applets.
    """
    tried = []
    env = os.environ.get("FASTNET_BUSYBOX_TFTPD")
    if env:
        tried.append(f"FASTNET_BUSYBOX_TFTPD={env}")
        if _busybox_has(env, "tftpd") and _busybox_has(env, "udpsvd"):
            return env
    path = shutil.which("busybox")
    if path:
        tried.append(path)
        if _busybox_has(path, "tftpd") and _busybox_has(path, "udpsvd"):
            return path
    message = "peer tool not installed: busybox with tftpd and udpsvd applets (build one with .ci/busybox-tftpd)"
    peer_missing(message + ("; tried " + ", ".join(tried) if tried else ""))


@contextlib.contextmanager
def busybox_tftpd(root: str, *, write: bool = False, host: str = "127.0.0.1") -> Iterator[int]:
    """Run ``busybox udpsvd HOST PORT busybox tftpd`` serving *root* on an ephemeral port; yields the port.

    udpsvd forks one tftpd per request.  *write* lets uploads create files (``-c``), else uploads
    are refused (``-r``).  tftpd's DIR argument would chroot (root only): the servers run in
    *root* instead, so the tests run as any user.
    """
    exe = require_busybox_tftpd()
    port = free_port(socket.SOCK_DGRAM, host)
    args = [exe, "udpsvd", "-E", host, str(port), exe, "tftpd", "-c" if write else "-r"]
    proc = subprocess.Popen(args, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_tftp(port, host)
        yield port
    finally:
        _stop_group(proc)


@contextlib.contextmanager
def tftpy_server(root: str) -> Iterator[int]:
    """Run tftpy's server (pure Python) in a thread on an ephemeral port; yields the port."""
    tftpy = require_module("tftpy")
    import logging

    logging.getLogger("tftpy").setLevel(logging.WARNING)
    port = free_port(socket.SOCK_DGRAM)
    server = tftpy.TftpServer(root)
    thread = threading.Thread(target=server.listen, args=("127.0.0.1", port, 1), daemon=True)
    thread.start()
    try:
        wait_for_tftp(port)
        yield port
    finally:
        server.stop(now=True)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # wake its select() up
            s.sendto(codec.encode_rrq("fastnet-wake-up.missing"), ("127.0.0.1", port))
        thread.join(10)


def run_tool(args: list[str], *, timeout: float = 60, cwd: str | None = None, input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run a peer tool with a time limit; its output is captured."""
    return subprocess.run(args, cwd=cwd, input=input, capture_output=True, timeout=timeout, stdin=None if input else subprocess.DEVNULL)


def fill(path: str, size: int, seed: int = 0) -> bytes:
    """Write *size* pseudo-random bytes to *path* and return them."""
    data = random.Random(seed).randbytes(size)
    with open(path, "wb") as f:
        f.write(data)
    return data


def leftovers(directory: str) -> list[str]:
    """Temporary files a transfer left behind in *directory*."""
    return sorted(n for n in os.listdir(directory) if n.endswith(".part"))


__all__ = ["LossyProxy", "tftpd_hpa", "busybox_tftpd", "require_busybox_tftpd", "tftpy_server", "wait_for_tftp", "run_tool", "fill", "leftovers"]


@contextlib.contextmanager
def fastnet_server(root: str, **kwargs) -> Iterator:
    """A fastnet TftpServer on an ephemeral loopback port, in a background thread."""
    from fastnet.tftp.server import TftpServer

    kwargs.setdefault("port", 0)
    kwargs.setdefault("grace", 0.5)
    server = TftpServer(root, **kwargs)
    with server:
        yield server


class RawPeer:
    """A bare UDP socket speaking TFTP packet by packet, for protocol-level tests."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.host = host

    def __enter__(self) -> "RawPeer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, packet: bytes, port: int) -> None:
        self.sock.sendto(packet, (self.host, port))

    def recv(self, timeout: float = 5.0):
        """(decoded packet, sender's port); raises socket.timeout after *timeout* seconds."""
        self.sock.settimeout(timeout)
        data, addr = self.sock.recvfrom(70000)
        return codec.decode(data), addr[1]

    def quiet(self, timeout: float = 0.3) -> list:
        """Every packet that arrives within *timeout* seconds of silence (normally none)."""
        got = []
        while True:
            try:
                got.append(self.recv(timeout))
            except socket.timeout:
                return got
