"""Child of test_udp_send_queue_goes_on_after_a_failed_datagram, run under ``unshare --net``.

A UDP socket on loopback never has to wait (the loopback device hands each datagram over at once),
so its send queue is never used.  In a network namespace of its own this process gives its
loopback a token-bucket qdisc: datagrams now wait in the qdisc, charged to the sender's small
send buffer, and ``sendto`` fails with EAGAIN.  From there the endpoint queues; one queued datagram
after another is too big to send (EMSGSIZE), and the ones behind them must still go out, in order.
(Two in a row: after the first, the datagram sent just before it is still in the qdisc, and its
departure alone would wake an edge-triggered sender up again; the second fails with nothing of
the socket's in flight, so only a sender that goes on past a failed datagram gets past it.)

    unshare --net python tests/netns_udp_send_queue.py {fastnet|asyncio|uvloop} PATH-OF-tc

It prints one JSON object for the test to check.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import subprocess
import sys

from netns_tftp_dual_stack import loopback_up

PIECE = 3000      # bytes of each numbered datagram: two fill the send buffer
BAD = 2           # oversized datagrams queued in a row
AFTER = 5         # numbered datagrams queued behind them


class Sender(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.errors: list[str] = []

    def error_received(self, exc: Exception) -> None:
        self.errors.append(errno.errorcode.get(getattr(exc, "errno", None) or 0, repr(exc)))


def loop_factory(kind: str):
    if kind == "fastnet":
        from fastnet import loop as fastnet_loop

        return fastnet_loop.Loop
    if kind == "uvloop":
        import uvloop

        return uvloop.Loop
    return asyncio.SelectorEventLoop


async def scenario() -> dict:
    loop = asyncio.get_running_loop()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    dest = rx.getsockname()
    tr, proto = await loop.create_datagram_endpoint(Sender, local_addr=("127.0.0.1", 0))
    try:
        tr.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        tr.set_write_buffer_limits(high=1 << 20)
        sent = 0
        while tr.get_write_buffer_size() == 0 and sent < 2000:  # until the socket is full
            tr.sendto(b"%06d" % sent + b"." * (PIECE - 6), dest)
            sent += 1
        queued = tr.get_write_buffer_size() > 0
        for _ in range(BAD):
            tr.sendto(b"x" * 70000, dest)  # more than a UDP datagram can hold: EMSGSIZE when its turn comes
        for _ in range(AFTER):
            tr.sendto(b"%06d" % sent + b"." * (PIECE - 6), dest)
            sent += 1
        received: list[int] = []
        for _ in range(500):  # 10 Mbit/s: the whole lot takes well under a second
            while True:
                try:
                    data = rx.recv(1 << 17)
                except BlockingIOError:
                    break
                received.append(int(data[:6]))
            if len(received) >= sent and tr.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        return {"queued": queued, "sent": sent, "received": received, "errors": proto.errors,
                "buffer_left": tr.get_write_buffer_size()}
    finally:
        tr.close()
        rx.close()


def main(kind: str, tc: str) -> None:
    loopback_up()
    subprocess.run([tc, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "10mbit", "burst", "4kb",
                    "limit", "1mb"], check=True)
    runner = asyncio.Runner(loop_factory=loop_factory(kind)) if sys.version_info >= (3, 11) else None
    if runner is None:  # Python 3.10
        loop = loop_factory(kind)()
        try:
            result = loop.run_until_complete(asyncio.wait_for(scenario(), 20))
        finally:
            loop.close()
    else:
        with runner:
            result = runner.run(asyncio.wait_for(scenario(), 20))
    print(json.dumps(result))  # the last line (uvloop prints the errors it reports, too)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
