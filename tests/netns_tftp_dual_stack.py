"""Child of test_a_server_on_the_ipv6_wildcard_serves_ipv4_clients_too, run under ``unshare --net``.

It has a network namespace of its own, holding nothing but a loopback device, so a server bound
to the wildcard ``::`` is reachable from this process alone.  It brings the loopback up, starts
a fastnet TftpServer on ``[::]:0`` and talks to it over IPv4 and IPv6; it prints one JSON
object for the test to check: the access-log lines and what the transfers moved.

    unshare --net python tests/netns_tftp_dual_stack.py ROOT
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import struct
import sys
import time

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH", b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def main(root: str) -> None:
    loopback_up()
    from fastnet.tftp import client, codec
    from fastnet.tftp.server import TftpServer

    access = Lines()
    logger = logging.getLogger("fastnet.tftp.access")
    logger.addHandler(access)
    logger.setLevel(logging.INFO)
    result: dict = {"downloads": {}}
    with TftpServer(root, host="::", port=0, allow_write=True, timeout=1.0, retries=5, grace=0.5) as server:
        result["port"] = server.port
        for host in ("127.0.0.1", "::1"):
            local = os.path.join(root, "..", "got-" + host.replace(":", "_"))
            client.download(host, "f.bin", local, port=server.port, timeout=2.0, retries=2)
            with open(local, "rb") as f:
                result["downloads"][host] = f.read().hex()
        client.upload("127.0.0.1", os.path.join(root, "f.bin"), "up.bin", port=server.port, mode="netascii",
                      timeout=2.0, retries=2)
        # an IPv4 client that goes away: its port unreachable reaches the IPv6 socket as well
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            peer.settimeout(5)
            peer.sendto(codec.encode_rrq("f.bin"), ("127.0.0.1", server.port))
            peer.recvfrom(600)
        gone = time.monotonic()
        while server.sessions and time.monotonic() - gone < 10:
            time.sleep(0.02)
        result["sessions_left"] = server.sessions
    result["access"] = access.lines
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
