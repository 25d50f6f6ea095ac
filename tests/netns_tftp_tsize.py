"""Child of test_tsize_counts_only_what_running_uploads_have_still_to_write, run under
``unshare --mount``.

In a mount namespace of its own, it mounts a 4 MiB tmpfs on DIRECTORY and serves it with a
fastnet TftpServer.  Upload A announces 60 % of the free space (tsize) and writes about half
of the free space; then upload B announces 35 % of the original free space, which fits beside
what A has still to write (about 10 %) but not beside all that A announced.  It prints B's
answer as one JSON object.

    unshare --mount python tests/netns_tftp_tsize.py DIRECTORY
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys


def main(directory: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", directory], check=True)
    from fastnet.tftp import codec
    from fastnet.tftp._transfer import free_space
    from fastnet.tftp.server import TftpServer

    blksize = 65464
    free = free_space(directory)
    result: dict = {"free": free}
    with TftpServer(directory, port=0, allow_write=True, timeout=5.0, retries=2) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
        a.sendto(codec.encode_wrq("a.bin", options={"tsize": int(free * 0.6), "blksize": blksize}),
                 ("127.0.0.1", server.port))
        data, (_, tid) = a.recvfrom(1000)
        assert type(codec.decode(data)) is codec.OptionAck, data
        for n in range(1, int(free * 0.5) // blksize + 1):  # about half of the space, in full blocks
            a.sendto(codec.encode_data(n, b"a" * blksize), ("127.0.0.1", tid))
            assert codec.decode(a.recvfrom(1000)[0]) == codec.Ack(n)
        result["free_after_a"] = free_space(directory)
        b.sendto(codec.encode_wrq("b.bin", options={"tsize": int(free * 0.35)}), ("127.0.0.1", server.port))
        data, (_, tid_b) = b.recvfrom(1000)
        answer = codec.decode(data)
        result["b"] = [type(answer).__name__, getattr(answer, "code", None)]
        for s, t in ((a, tid), (b, tid_b)):
            s.sendto(codec.encode_error(0, "done"), ("127.0.0.1", t))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
