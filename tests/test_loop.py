"""fastnet.Loop: scheduling, threads, signals, runners, raw fds, sock_* and resolution.

Every scenario runs on fastnet.Loop (compiled or twin, per the session's implementation), on stock
asyncio and on uvloop: asyncio is the oracle.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import fastnet
from fastnet import loop as fastnet_loop
from test_loop_common import (  # noqa: F401  (fixtures)
    LOOP_KINDS,
    is_compiled_fastnet,
    loop,
    loop_factory,
    loop_kind,
    run,
)


# -- identity -----------------------------------------------------------------------------------

def test_fastnet_loop_is_the_compiled_one_when_asked(implementation):
    assert fastnet_loop.IMPLEMENTATION == implementation
    new_loop = fastnet.Loop()
    try:
        assert isinstance(new_loop, asyncio.AbstractEventLoop)
        if implementation == "c":
            assert type(new_loop).__module__ == "fastnet._loop_c"
    finally:
        new_loop.close()


def test_fastnet_run_uses_fastnet_loop():
    async def main():
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop())

    assert fastnet.run(main()) is fastnet_loop.Loop


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is new in Python 3.11")
def test_runner_with_loop_factory_and_policy_install():
    async def main():
        return type(asyncio.get_running_loop())

    with asyncio.Runner(loop_factory=fastnet.Loop) as runner:
        assert runner.run(main()) is fastnet_loop.Loop
    previous = asyncio.get_event_loop_policy()
    try:
        fastnet.install()
        assert asyncio.run(main()) is fastnet_loop.Loop
        assert isinstance(asyncio.get_event_loop_policy(), fastnet.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(previous)


# -- scheduling ---------------------------------------------------------------------------------

def test_call_soon_runs_in_order_and_cancelled_handles_do_not_run(loop):
    seen = []
    loop.call_soon(seen.append, 1)
    cancelled = loop.call_soon(seen.append, "cancelled")
    loop.call_soon(seen.append, 2)
    cancelled.cancel()
    assert cancelled.cancelled()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [1, 2]


def test_timers_fire_in_deadline_order_and_cancel(loop):
    seen = []
    now = loop.time()
    loop.call_at(now + 0.03, seen.append, "at-30ms")
    loop.call_later(0.01, seen.append, "later-10ms")
    t = loop.call_later(0.02, seen.append, "cancelled")
    loop.call_later(0.0, seen.append, "later-0")
    loop.call_later(0.05, loop.stop)
    many = [loop.call_later(0.04, seen.append, "bulk") for _ in range(300)]  # heap clean-up path
    for h in many:
        h.cancel()
    t.cancel()
    assert t.cancelled() and t.when() == pytest.approx(now + 0.02, abs=0.01)
    loop.run_forever()
    assert seen == ["later-0", "later-10ms", "at-30ms"]
    assert loop.time() >= now + 0.05 - 0.002  # never early (uvloop keeps a ms clock)


def test_time_is_monotonic_clock(loop):
    assert abs(loop.time() - time.monotonic()) < 1.0
    a = loop.time()
    b = loop.time()
    assert b >= a


def test_run_until_complete_stop_close_and_state(loop):
    async def coro():
        assert loop.is_running()
        return 42

    assert not loop.is_running()
    assert run(loop, coro()) == 42
    assert not loop.is_running()
    # stop() before run_forever(): one iteration runs, then it returns
    seen = []
    loop.call_soon(seen.append, 1)
    loop.stop()
    loop.run_forever()
    assert seen == [1]
    loop.close()
    assert loop.is_closed()
    loop.close()  # idempotent
    with pytest.raises(RuntimeError):
        loop.call_soon(print)
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        loop.run_until_complete(coro)
    coro.close()


def test_call_soon_threadsafe_wakes_a_sleeping_loop(loop):
    seen = []
    threads_n, calls_n = 4, 250
    done = loop.create_future()

    def note(i):
        seen.append(i)
        if len(seen) == threads_n * calls_n and not done.done():
            done.set_result(None)

    def worker(base):
        for i in range(calls_n):
            loop.call_soon_threadsafe(note, base + i)
            if i % 50 == 0:
                time.sleep(0.005)  # let the loop fall asleep in its poll again

    async def main():
        threads = [threading.Thread(target=worker, args=(k * calls_n,)) for k in range(threads_n)]
        for t in threads:
            t.start()
        await done  # nothing else would wake the loop: no timer, no fd
        for t in threads:
            t.join()

    run(loop, main())
    assert sorted(seen) == list(range(threads_n * calls_n))


def test_call_soon_threadsafe_from_thread_while_loop_idle_in_poll(loop):
    async def main():
        fut = loop.create_future()
        threading.Timer(0.05, loop.call_soon_threadsafe, (fut.set_result, "woken")).start()
        return await fut

    assert run(loop, main()) == "woken"


def test_futures_tasks_task_factory_and_context(loop):
    var = contextvars.ContextVar("var", default="unset")
    made = []

    def factory(lp, coro, **kwargs):
        task = asyncio.Task(coro, loop=lp, **kwargs)
        made.append(task)
        return task

    async def child():
        return var.get()

    async def main():
        fut = loop.create_future()
        loop.call_soon(fut.set_result, 7)
        assert await fut == 7
        var.set("set-in-main")
        task = loop.create_task(child())
        return await task

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory
    assert run(loop, main()) == "set-in-main"
    assert len(made) >= 2


def test_task_cancellation(loop):
    async def sleeper(started):
        started.set_result(None)
        await asyncio.sleep(30)

    async def main():
        started = loop.create_future()
        task = loop.create_task(sleeper(started))
        await started
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert run(loop, main()) is True


def test_exception_in_callback_goes_to_handler_and_loop_goes_on(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    seen = []

    def boom():
        raise ValueError("boom")

    loop.call_soon(boom)
    loop.call_soon(seen.append, "after")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert seen == ["after"]
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)
    assert loop.get_exception_handler() is not None


def test_debug_mode_flags_slow_callbacks(loop, caplog):
    loop.set_debug(True)
    assert loop.get_debug()
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.05)
    loop.call_soon(loop.stop)
    with caplog.at_level("WARNING", logger="asyncio"):
        loop.run_forever()
    assert any("took" in r.getMessage() for r in caplog.records)


def test_asyncgens_executor_and_shutdown(loop):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append(True)

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        result = await loop.run_in_executor(None, sum, [1, 2, 3])
        return g, result

    g, result = run(loop, main())
    assert result == 6
    run(loop, loop.shutdown_asyncgens())
    assert finalized == [True]
    run(loop, loop.shutdown_default_executor())
    del g


# -- signals -------------------------------------------------------------------------------------

def test_add_and_remove_signal_handler(loop):
    async def main():
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, "usr1")
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            return await got
        finally:
            assert loop.remove_signal_handler(signal.SIGUSR1) is True
            assert loop.remove_signal_handler(signal.SIGUSR1) is False

    assert run(loop, main()) == "usr1"
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    with pytest.raises((ValueError, RuntimeError)):
        loop.add_signal_handler(signal.SIGKILL, print)


CTRL_C_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    kind = sys.argv[1]
    async def main():
        print("ready", flush=True)
        await asyncio.sleep(30)
    if kind == "fastnet":
        import fastnet
        fastnet.run(main())
    elif kind == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    """
)


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_ctrl_c_stops_a_run_program(kind, impl_env):
    if kind == "uvloop":
        pytest.importorskip("uvloop")
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_CHILD, kind],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=impl_env, text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.1)  # into the poll
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err


# -- raw file descriptors -------------------------------------------------------------------------

def test_add_reader_add_writer_remove(loop, loop_kind):
    # uvloop's remove_* return None; asyncio's (and fastnet's) say whether something was removed
    exact = loop_kind != "uvloop"

    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        async def main():
            readable = loop.create_future()
            writable = loop.create_future()
            loop.add_reader(a, lambda: readable.done() or readable.set_result(a.recv(100)))
            loop.add_writer(b.fileno(), lambda: writable.done() or writable.set_result(True))
            assert await writable is True
            assert loop.remove_writer(b.fileno()) is (True if exact else None)
            assert not loop.remove_writer(b.fileno())
            b.send(b"ping")
            assert await readable == b"ping"
            assert loop.remove_reader(a) is (True if exact else None)
            assert not loop.remove_reader(a)
            # level-triggered: data left unread keeps calling the reader
            calls = []
            loop.add_reader(a.fileno(), calls.append, 1)
            b.send(b"xx")
            for _ in range(5):
                await asyncio.sleep(0.01)
            loop.remove_reader(a.fileno())
            return len(calls)

        assert run(loop, main()) >= 3
    finally:
        a.close()
        b.close()


def test_add_reader_replaces_the_previous_callback(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        async def main():
            got = loop.create_future()
            loop.add_reader(a, got.set_result, "first")
            loop.add_reader(a, lambda: got.done() or got.set_result("second"))
            b.send(b"x")
            result = await got
            loop.remove_reader(a)
            return result

        assert run(loop, main()) == "second"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
def test_negative_file_descriptor_is_a_value_error(loop, method):
    args = (-1, print) if method.startswith("add") else (-1,)
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        getattr(loop, method)(*args)


# -- sock_* ---------------------------------------------------------------------------------------

def test_sock_methods_tcp(loop):
    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        lsock.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        try:
            accept = loop.create_task(loop.sock_accept(lsock))
            await loop.sock_connect(client, lsock.getsockname())
            conn, addr = await accept
            conn.setblocking(False)
            assert addr == client.getsockname()
            payload = os.urandom(300_000)
            send = loop.create_task(loop.sock_sendall(client, payload))
            received = bytearray()
            while len(received) < len(payload):
                chunk = await loop.sock_recv(conn, 65536)
                assert chunk
                received += chunk
            await send
            assert bytes(received) == payload
            buf = bytearray(10)
            await loop.sock_sendall(conn, b"0123456789")
            n = await loop.sock_recv_into(client, buf)
            assert bytes(buf[:n]) == b"0123456789"[:n]
            conn.close()
        finally:
            client.close()
            lsock.close()

    run(loop, main())


def test_pending_sock_recv_cancellation_leaves_socket_usable(loop):
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        try:
            pending = loop.create_task(loop.sock_recv(a, 100))
            await asyncio.sleep(0.01)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            pending_accept_sock = socket.socket()
            pending_accept_sock.bind(("127.0.0.1", 0))
            pending_accept_sock.listen()
            pending_accept_sock.setblocking(False)
            acc = loop.create_task(loop.sock_accept(pending_accept_sock))
            await asyncio.sleep(0.01)
            acc.cancel()
            with pytest.raises(asyncio.CancelledError):
                await acc
            pending_accept_sock.close()
            await loop.sock_sendall(b, b"after")
            return await asyncio.wait_for(loop.sock_recv(a, 100), 5)
        finally:
            a.close()
            b.close()

    assert run(loop, main()) == b"after"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="sock_recvfrom/sock_sendto are new in 3.11")
def test_sock_recvfrom_sendto_udp(loop, loop_kind):
    if loop_kind == "uvloop":
        pytest.skip("uvloop 0.23 raises NotImplementedError for sock_recvfrom/sock_sendto")
    async def main():
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        try:
            receive = loop.create_task(loop.sock_recvfrom(a, 2048))
            await asyncio.sleep(0)
            sent = await loop.sock_sendto(b, b"datagram", a.getsockname())
            data, addr = await receive
            return sent, data, addr, b.getsockname()
        finally:
            a.close()
            b.close()

    sent, data, addr, expected = run(loop, main())
    assert (sent, data, addr) == (8, b"datagram", expected)


# -- resolution -----------------------------------------------------------------------------------

def test_getaddrinfo_and_getnameinfo_numeric_and_names(loop):
    async def main():
        v4 = await loop.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
        v6 = await loop.getaddrinfo("::1", "80", type=socket.SOCK_STREAM)
        named = await loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        name = await loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
        return v4, v6, named, name

    v4, v6, named, name = run(loop, main())
    assert v4 == socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)
    assert v6 == socket.getaddrinfo("::1", "80", type=socket.SOCK_STREAM)
    assert sorted(named) == sorted(socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM))
    assert name == ("127.0.0.1", "80")


def test_numeric_getaddrinfo_answers_without_the_executor(loop, loop_kind):
    if loop_kind != "fastnet" or not is_compiled_fastnet(loop_kind):
        pytest.skip("a fastnet.Loop (compiled) promise; asyncio always hops to a thread")

    from concurrent.futures import ThreadPoolExecutor

    class NoExecutor(ThreadPoolExecutor):
        def submit(self, *args, **kwargs):
            raise AssertionError("getaddrinfo went to the executor")

    loop.set_default_executor(NoExecutor())
    result = run(loop, loop.getaddrinfo("127.0.0.1", 8080, type=socket.SOCK_STREAM))
    assert result[0][4] == ("127.0.0.1", 8080)


# -- out of scope -----------------------------------------------------------------------------------

def test_out_of_scope_features_raise_not_implemented(loop, loop_kind, tmp_path):
    if not is_compiled_fastnet(loop_kind):
        pytest.skip("only the compiled fastnet.Loop leaves these out (asyncio and the twin have them)")
    import ssl

    ctx = ssl.create_default_context()

    async def main():
        calls = [
            loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, ssl=ctx),
            loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=ctx),
            loop.create_unix_server(asyncio.Protocol, str(tmp_path / "s")),
            loop.create_unix_connection(asyncio.Protocol, str(tmp_path / "s")),
            loop.subprocess_exec(asyncio.SubprocessProtocol, "true"),
            loop.subprocess_shell(asyncio.SubprocessProtocol, "true"),
            loop.connect_read_pipe(asyncio.Protocol, sys.stdin),
            loop.connect_write_pipe(asyncio.Protocol, sys.stdout),
            loop.sock_sendfile(sock, file),
        ]
        messages = []
        for call in calls:
            with pytest.raises(NotImplementedError) as info:
                await call
            messages.append(str(info.value))
        return messages

    with socket.socket() as sock, open(__file__, "rb") as file:
        messages = run(loop, main())
    assert all("fastnet.Loop does not support" in m for m in messages)


def test_call_soon_runs_callbacks_in_their_context(loop):
    var = contextvars.ContextVar("var", default="default")
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "explicit")
    var.set("current")
    loop.call_soon(lambda: seen.append(var.get()))                      # copy of the current context
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)         # the given one
    handle = loop.call_soon(lambda: var.set("changed-in-callback"))     # does not leak out
    assert "lambda" in repr(handle)
    loop.call_soon(lambda: seen.append(var.get()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["current", "explicit", "current"]


def test_a_callback_whose_context_is_already_entered_is_an_error_for_the_handler(loop, loop_kind):
    # the loop runs inside ctx.run(), and a callback is scheduled in that very context: entering
    # it again fails, and asyncio reports that to the exception handler and goes on (the
    # compiled loop's run_forever() raised it)
    if loop_kind == "uvloop":
        pytest.skip("uvloop 0.23 raises from run_forever: 'cannot exit context'")
    errors, ran = [], []
    loop.set_exception_handler(lambda lp, context: errors.append(context["exception"]))
    ctx = contextvars.copy_context()

    def inside():
        loop.call_soon(ran.append, "entered twice", context=ctx)
        loop.call_soon(ran.append, "next")
        loop.call_soon(loop.stop)
        loop.run_forever()

    ctx.run(inside)
    assert ran == ["next"]
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError) and "cannot enter context" in str(errors[0])


def test_many_timers_fire_sorted_and_mix_with_debug_handles(loop, loop_kind):
    import random

    rng = random.Random(7)
    fired = []
    now = loop.time()
    deadlines = [now + rng.uniform(0, 0.1) for _ in range(500)]
    handles = [loop.call_at(d, fired.append, d) for d in deadlines[:250]]
    loop.set_debug(True)  # asyncio's own TimerHandles in the same heap
    handles += [loop.call_at(d, fired.append, d) for d in deadlines[250:]]
    loop.set_debug(False)
    cancelled = set(deadlines[::5])
    for d, h in zip(deadlines, handles):
        if d in cancelled:
            h.cancel()
    loop.call_at(now + 0.15, loop.stop)
    loop.run_forever()
    expected = sorted(d for d in deadlines if d not in cancelled)
    if loop_kind == "uvloop":  # a cached millisecond clock: only roughly in deadline order
        assert sorted(fired) == expected
    else:
        assert fired == expected


def test_sleep_wait_for_and_timeout(loop):
    async def main():
        order = []

        async def sleeper(delay, tag):
            await asyncio.sleep(delay)
            order.append(tag)

        await asyncio.gather(sleeper(0.03, "c"), sleeper(0.01, "a"), sleeper(0.02, "b"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.02)
        if sys.version_info >= (3, 11):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.02):
                    await asyncio.sleep(10)
        return order

    assert run(loop, main()) == ["a", "b", "c"]
