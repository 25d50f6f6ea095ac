"""Helpers for the example tests (tests/test_examples_*.py).

- :class:`Example`: one of the notes' examples running as a real subprocess, read line by line;
- :func:`run_example`: run a client example to completion, with a time bound;
- :func:`http_server`: a local HTTP server (127.0.0.1, a thread) with a per-request delay that
  records when each request started and ended, for the gevent downloader;
- :func:`cpu_seconds`: user+sys CPU time of a process, from /proc/<pid>/stat.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import queue
import signal
import subprocess
import sys
import threading
import time

START_TIMEOUT = 15.0  # generous: two cores shared by five busy engineers
LINE_TIMEOUT = 10.0


class Example:
    """``python -m MODULE ARGS...`` as a subprocess; stdout is read by a thread into a queue."""

    def __init__(self, env, module: str, *args: str, stdin=subprocess.DEVNULL, announce: bool = True):
        self.argv = [sys.executable, "-m", module, *args]
        self.proc = subprocess.Popen(
            self.argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: list[str] = []  # every stdout line read so far
        self._queue: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stderr_chunks: list[bytes] = []
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()
        self.host = self.port = None
        if announce:
            first = self.next_line(START_TIMEOUT)
            assert first.startswith("listening on "), f"first line of {self.argv}: {first!r}"
            address = first.split()[2]
            host, _, port = address.rpartition(":")
            self.host, self.port = host.strip("[]"), int(port)

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self._queue.put(raw.decode("utf-8").rstrip("\n"))
        self._queue.put(None)

    def _read_stderr(self) -> None:
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):
            self._stderr_chunks.append(chunk)

    def next_line(self, timeout: float = LINE_TIMEOUT) -> str:
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.argv}: no output within {timeout} s; so far: {self.lines}") from None
        if line is None:
            self._queue.put(None)
            raise AssertionError(f"{self.argv}: ended (rc={self.proc.poll()}); output: {self.lines}; stderr: {self.stderr()!r}")
        self.lines.append(line)
        return line

    def expect(self, predicate, timeout: float = LINE_TIMEOUT) -> str:
        """Read lines until one satisfies *predicate* (a callable, or a substring); return it."""
        check = predicate if callable(predicate) else (lambda line: predicate in line)
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.argv}: no line matching {predicate!r} within {timeout} s; output: {self.lines}")
            line = self.next_line(left)
            if check(line):
                return line

    def drain(self, quiet: float = 0.3) -> list[str]:
        """Lines that arrive until none has come for *quiet* seconds."""
        got = []
        while True:
            try:
                line = self._queue.get(timeout=quiet)
            except queue.Empty:
                return got
            if line is None:
                self._queue.put(None)
                return got
            self.lines.append(line)
            got.append(line)

    def stderr(self) -> str:
        return b"".join(self._stderr_chunks).decode("utf-8", "replace")

    def wait(self, timeout: float = LINE_TIMEOUT) -> int:
        """Wait for the program to end by itself; its exit status."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.argv} did not end within {timeout} s; output: {self.lines}") from None
        self._reader.join(5)
        self._stderr_reader.join(5)
        self.drain(0.01)
        return self.proc.returncode

    def interrupt(self, timeout: float = LINE_TIMEOUT) -> int:
        """Send SIGINT (Ctrl-C) and wait; the exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def __enter__(self) -> Example:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def run_example(env, module: str, *args: str, input: bytes | None = None, timeout: float = 20.0):
    """Run a client example to its end; a CompletedProcess with text stdout/stderr."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env=env,
        timeout=timeout,
    )
    result.stdout = result.stdout.decode("utf-8")
    result.stderr = result.stderr.decode("utf-8", "replace")
    return result


def cpu_seconds(pid: int) -> float:
    """user+sys CPU seconds of *pid* (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "fastnet-test"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        files = self.server.files
        start = time.monotonic()
        body = files.get(self.path)
        time.sleep(self.server.delay)
        if body is None:
            self.send_error(404)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        with self.server.lock:
            self.server.requests.append((self.path, start, time.monotonic()))

    def log_message(self, format, *args) -> None:
        pass


@contextlib.contextmanager
def http_server(files: dict[str, bytes], delay: float):
    """Serve *files* (path -> body) on 127.0.0.1 from a thread, sleeping *delay* s per request.

    Yields the server; ``server.requests`` lists ``(path, start, end)`` in monotonic time and
    ``server.base`` is ``http://127.0.0.1:PORT``.
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.files = files
    server.delay = delay
    server.requests = []
    server.lock = threading.Lock()
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
