"""The notes' coroutine examples (python -m fastnet.coroutines ...), as subprocesses."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import require_module
from http_helpers import http_server, run_example

CO = "fastnet.coroutines"


def test_generators_take_turns_b_then_a(impl_env):
    result = run_example(impl_env, CO, "generators", "--rounds", "3", "--delay", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["----B---", "----A---"] * 3


def test_greenlets_switch_to_each_other(impl_env):
    require_module("greenlet")
    result = run_example(impl_env, CO, "greenlet", "--rounds", "4", "--delay", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["---A--", "---B--"] * 4


def _greenlet_lines(stdout: str) -> list[tuple[str, int]]:
    pairs = []
    for line in stdout.splitlines():
        m = re.match(r"^(<Greenlet .*>) (\d+)$", line)
        assert m, line
        pairs.append((m.group(1), int(m.group(2))))
    return pairs


def test_gevent_spawned_greenlets_run_one_after_another_without_sleeping(impl_env):
    require_module("gevent")
    result = run_example(impl_env, CO, "gevent-spawn", "--count", "4", "--greenlets", "3")
    assert result.returncode == 0, result.stderr
    pairs = _greenlet_lines(result.stdout)
    names = list(dict.fromkeys(name for name, _ in pairs))
    assert len(names) == 3  # getcurrent() is a different greenlet each time
    assert pairs == [(name, i) for name in names for i in range(4)]


def test_gevent_sleep_makes_the_greenlets_take_turns(impl_env):
    require_module("gevent")
    result = run_example(impl_env, CO, "gevent-switch", "--count", "4", "--greenlets", "3", "--delay", "0.01")
    assert result.returncode == 0, result.stderr
    pairs = _greenlet_lines(result.stdout)
    names = list(dict.fromkeys(name for name, _ in pairs))
    assert len(names) == 3
    assert pairs == [(name, i) for i in range(4) for name in names]


def test_gevent_downloader_fetches_every_url_concurrently(impl_env):
    require_module("gevent")
    files = {"/small": b"s" * 1000, "/medium": b"m" * 50_000, "/large": bytes(range(256)) * 2000}
    with http_server(files, delay=0.6) as server:
        urls = [server.base + path for path in files] + [server.base + "/missing"]
        result = run_example(impl_env, CO, "gevent-download", *urls, "--timeout", "20")
        requests = sorted(server.requests)
    assert result.returncode == 1  # one URL failed; the others were still fetched
    assert result.stderr.splitlines() == [f"error: {server.base}/missing: Not Found"]
    lines = result.stdout.splitlines()
    assert sorted(line for line in lines if line.startswith("GET: ")) == sorted(f"GET: {url}" for url in urls)
    got = sorted(line for line in lines if "bytes received" in line)
    assert got == sorted(f"{len(body)} bytes received from {server.base}{path}." for path, body in files.items())
    # concurrency: every request had started before any of them finished (each takes 0.6 s)
    assert len(requests) == 4
    assert max(start for _, start, _ in requests) < min(end for _, _, end in requests), requests


@pytest.mark.parametrize("example", ["greenlet", "gevent-spawn", "gevent-switch", "gevent-server"])
def test_without_gevent_the_examples_say_how_to_install_it(impl_env, example):
    code = (
        "import sys; sys.modules['gevent'] = None; sys.modules['greenlet'] = None\n"
        "from fastnet.coroutines import main\n"
        f"sys.exit(main([{example!r}, '--port', '0'] if {example!r} == 'gevent-server' else [{example!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=impl_env, timeout=30)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    # not `pip install 'fastnet[gevent]'`: `fastnet` on PyPI is an unrelated project, so that
    # command installs someone else's package; installing gevent and greenlet themselves works
    assert result.stderr.startswith("error: this example needs ")
    assert result.stderr.rstrip("\n").endswith(": pip install gevent greenlet")
    assert "fastnet[" not in result.stderr


def test_the_help_names_an_install_command_that_works(impl_env):
    result = subprocess.run([sys.executable, "-m", CO, "--help"], capture_output=True, text=True, env=impl_env, timeout=30)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "pip install gevent greenlet" in text and "fastnet[gevent]" not in text


def test_ctrl_c_ends_the_turn_taking_demos_quietly(impl_env):
    for argv in (["generators", "--delay", "0.05"], ["gevent-switch", "--count", "1000", "--delay", "0.05"]):
        if argv[0].startswith("gevent"):
            require_module("gevent")
        proc = subprocess.Popen(
            [sys.executable, "-m", CO, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=impl_env
        )
        try:
            proc.stdout.readline()  # running
            proc.send_signal(2)  # SIGINT
            _, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 130, err
        assert err == b""


@pytest.mark.parametrize("argv", [["generators", "--delay", "0"], ["gevent-spawn", "--count", "1000000"]])
def test_a_closed_stdout_ends_the_demo_quietly(impl_env, argv):
    # `python -m fastnet.coroutines ... | head -1`: no traceback from the main code or from a greenlet
    if argv[0].startswith("gevent"):
        require_module("gevent")
    proc = subprocess.Popen([sys.executable, "-m", CO, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=impl_env)
    try:
        assert proc.stdout.readline()
        proc.stdout.close()
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1
    assert err == b""
