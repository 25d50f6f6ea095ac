"""Child of test_a_host_name_s_next_address_is_tried_when_the_first_refuses, run under
``unshare --net --mount``.

In a network namespace and a mount namespace of its own, it binds a hosts file over /etc/hosts
in which the name ``both`` is ::1 first and then 127.0.0.1, and ``six`` is ::1 alone.  A
fastnet TftpServer listens on 127.0.0.1 only.  The child downloads and uploads through ``both``
(::1 refuses: the client must go on to 127.0.0.1) and tries ``six`` (nothing there); it prints
one JSON object for the test to check.

    unshare --net --mount python tests/netns_tftp_next_address.py ROOT HOSTS_FILE
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from netns_tftp_dual_stack import loopback_up


def main(root: str, hosts: str) -> None:
    loopback_up()
    with open(hosts, "w") as f:
        f.write("::1 both six\n127.0.0.1 both\n")
    subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)
    from fastnet.tftp import TftpError, client
    from fastnet.tftp.server import TftpServer

    result: dict = {"order": [ai[4][0] for ai in socket.getaddrinfo("both", 69, 0, socket.SOCK_DGRAM)]}
    local = os.path.join(root, "..", "got.bin")
    with TftpServer(root, host="127.0.0.1", port=0, allow_write=True, timeout=1.0, retries=3) as server:
        result["port"] = server.port
        for options in ({}, {"blksize": 1468, "windowsize": 8}):
            stats = client.download("both", "f.bin", local, port=server.port, timeout=2.0, retries=2, **options)
            with open(local, "rb") as f:
                result.setdefault("downloads", []).append([stats.peer[0], f.read().hex()])
        stats = client.upload("both", os.path.join(root, "f.bin"), "up.bin", port=server.port, timeout=2.0,
                              retries=2)
        result["upload_peer"] = stats.peer[0]
        started = time.monotonic()
        try:
            client.download("six", "f.bin", local + ".six", port=server.port, timeout=2.0, retries=2)
        except TftpError as exc:
            result["six"] = [type(exc).__name__, str(exc), round(time.monotonic() - started, 2)]
        result["six_left"] = os.path.exists(local + ".six")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
