"""Shared fixtures: every test runs once per implementation (compiled C, pure-Python twin).

The session fixture ``implementation`` is parametrized over ``"c"`` and ``"python"`` and switches
every dual module of fastnet with ``fastnet._compat.activate``; tests that start subprocesses take
``impl_env``, the environment that makes the child use the same implementation.

Real peer tools (tftpd-hpa, curl, atftp, busybox ...) are found with ``require_tool``: a missing tool
skips the test on a developer's machine, and fails it when FASTNET_REQUIRE_PEERS=1 (set by CI).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from fastnet import _compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPLEMENTATIONS = ("c", "python")
REQUIRE_PEERS = os.environ.get("FASTNET_REQUIRE_PEERS", "") not in ("", "0")


@pytest.fixture(scope="session", autouse=True, params=IMPLEMENTATIONS)
def implementation(request):
    """The implementation this test runs against: ``"c"`` or ``"python"``."""
    mode = request.param
    if mode == "c" and _compat.NO_EXTENSIONS:
        pytest.skip("FASTNET_NO_EXTENSIONS=1: only the pure-Python twins run")
    previous = _compat.activate(mode)
    try:
        yield mode
    finally:
        _compat.activate(previous)


@pytest.fixture
def impl_env(implementation):
    """Environment for a child process that must use the same implementation as this test."""
    env = dict(os.environ)
    if implementation == "python":
        env["FASTNET_NO_EXTENSIONS"] = "1"
    else:
        env.pop("FASTNET_NO_EXTENSIONS", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    # children import the same fastnet as this process
    here = os.path.dirname(os.path.dirname(os.path.abspath(__import__("fastnet").__file__)))
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def peer_missing(message: str):
    """A peer the test needs is not there: skip, or fail when FASTNET_REQUIRE_PEERS=1 (CI)."""
    if REQUIRE_PEERS:
        pytest.fail(message + " (FASTNET_REQUIRE_PEERS=1)")
    pytest.skip(message)


def require_tool(*names: str) -> str:
    """Path of the first of *names* found on PATH (or in /usr/sbin); skip, or fail under CI, if none."""
    for name in names:
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
        if path:
            return path
    peer_missing(f"peer tool not installed: {' or '.join(names)}")


def require_module(name: str):
    """Import *name*, or skip (fail when FASTNET_REQUIRE_PEERS=1) when it is not installed."""
    try:
        return __import__(name)
    except ImportError as exc:
        peer_missing(f"{name} is not installed ({exc})")


def require_ipv6_loopback() -> None:
    """Skip the test when ::1 cannot be bound (a host without IPv6)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port that was free on *host* a moment ago (tests bind to it next)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def python_exe() -> str:
    return sys.executable


def build_sanitized(tmp_path, test_source: str, *c_sources: str) -> str:
    """Compile tests/c/*test_source* with src_c/*c_sources* under AddressSanitizer and UBSan.

    Returns the executable; skips when there is no C compiler or no sanitizer runtime.
    """
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    exe = str(tmp_path / os.path.splitext(test_source)[0])
    flags = ["-std=gnu11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-pthread"]
    flags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
    sources = [os.path.join(ROOT, "tests", "c", test_source)]
    sources += [os.path.join(ROOT, "src_c", name) for name in c_sources]
    cmd = [cc, *flags, "-I", os.path.join(ROOT, "src_c"), *sources, "-o", exe]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if build.returncode != 0 and "sanitize" in build.stderr and "cannot find" in build.stderr:
        pytest.skip("the compiler has no sanitizer runtime")
    assert build.returncode == 0, build.stderr
    return exe


def sanitized_env() -> dict:
    """The environment for a sanitized test program: without an LD_PRELOAD meant for Python."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
