"""Interoperability with the real tools: curl, tftp-hpa, atftp and busybox against the fastnet
server; the fastnet client against tftpd-hpa, busybox tftpd and tftpy's server; block-number
rollover; IPv6.

Each test skips when its peer tool is missing (fails under FASTNET_REQUIRE_PEERS=1).
Debian's busybox has no ``tftpd`` applet: ``.ci/busybox-tftpd`` builds one from Debian's source
package and CI passes it in FASTNET_BUSYBOX_TFTPD (see ``tftp_helpers.busybox_tftpd``).
"""

from __future__ import annotations

import filecmp
import os

import pytest
from conftest import require_ipv6_loopback, require_tool
from tftp_helpers import busybox_tftpd, fastnet_server, fill, leftovers, run_tool, tftpd_hpa, tftpy_server

from fastnet.tftp import TftpRemoteError, client

pytestmark = pytest.mark.peers

TEXT = b"first line\nsecond line\r\nlone CR \r in the middle\n\nlast line without newline"
ROLLOVER_SIZE = 512 * 65536 + 12345  # more than 65535 blocks of 512 bytes: numbers wrap to 0


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "root"
    d.mkdir()
    return d


@pytest.fixture
def out(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def same(a, b) -> bool:
    return filecmp.cmp(str(a), str(b), shallow=False)


# ------------------------------------------------------------------ peers as clients of fastnet


@pytest.mark.parametrize("args", [[], ["--tftp-blksize", "1468"], ["--tftp-blksize", "65464"], ["--tftp-no-options"]],
                         ids=["default", "blksize1468", "blksize65464", "no-options"])
def test_curl_downloads_from_fastnet(root, out, args):
    curl = require_tool("curl")
    fill(str(root / "f.bin"), 300_000)
    (root / "empty").write_bytes(b"")
    fill(str(root / "exact.bin"), 512 * 8)
    with fastnet_server(str(root)) as server:
        # curl 7.88 fails on an empty file when options are on ("getpeername() failed", the same
        # against tftpd-hpa): the empty file is checked with --tftp-no-options only
        names = ("f.bin", "exact.bin", "empty") if "--tftp-no-options" in args else ("f.bin", "exact.bin")
        for name in names:
            r = run_tool([curl, "-sS", *args, "-o", str(out / name), f"tftp://127.0.0.1:{server.port}/{name}"])
            assert r.returncode == 0, r.stderr
            assert same(root / name, out / name), name


def test_curl_uploads_to_fastnet(root, out):
    curl = require_tool("curl")
    fill(str(out / "up.bin"), 200_000)
    with fastnet_server(str(root), allow_write=True) as server:
        r = run_tool([curl, "-sS", "-T", str(out / "up.bin"), f"tftp://127.0.0.1:{server.port}/up.bin"])
        assert r.returncode == 0, r.stderr
        r = run_tool([curl, "-sS", "--tftp-blksize", "1468", "-T", str(out / "up.bin"),
                      f"tftp://127.0.0.1:{server.port}/up2.bin"])
        assert r.returncode == 0, r.stderr
    assert same(out / "up.bin", root / "up.bin") and same(out / "up.bin", root / "up2.bin")
    assert leftovers(str(root)) == []


def test_curl_sees_errors_from_fastnet(root, out):
    curl = require_tool("curl")
    with fastnet_server(str(root)) as server:
        r = run_tool([curl, "-sS", "-o", str(out / "x"), f"tftp://127.0.0.1:{server.port}/absent"])
    assert r.returncode == 68  # curl's exit status for TFTP "file not found"


def test_tftp_hpa_client_binary_and_ascii(root, out):
    tftp = require_tool("tftp")
    fill(str(root / "f.bin"), 100_000)
    (root / "t.txt").write_bytes(TEXT)
    (out / "t-up.txt").write_bytes(TEXT)
    with fastnet_server(str(root), allow_write=True) as server:
        port = str(server.port)
        r = run_tool([tftp, "-m", "binary", "127.0.0.1", port, "-c", "get", "f.bin", str(out / "f.bin")])
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_tool([tftp, "-m", "ascii", "127.0.0.1", port, "-c", "get", "t.txt", str(out / "t.txt")])
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_tool([tftp, "-m", "binary", "127.0.0.1", port, "-c", "put", str(out / "f.bin"), "f-up.bin"])
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_tool([tftp, "-m", "ascii", "127.0.0.1", port, "-c", "put", str(out / "t-up.txt"), "t-up.txt"])
        assert r.returncode == 0, r.stdout + r.stderr
    assert same(root / "f.bin", out / "f.bin") and same(root / "f.bin", root / "f-up.bin")
    assert (out / "t.txt").read_bytes() == TEXT
    assert (root / "t-up.txt").read_bytes() == TEXT


@pytest.mark.parametrize("options", [["blksize 1468", "tsize 0"], ["blksize 1468", "tsize 0", "windowsize 8"],
                                     ["blksize 1468", "windowsize 16"]])
def test_atftp_client_with_options(root, out, options):
    atftp = require_tool("atftp")
    fill(str(root / "f.bin"), 400_000)
    fill(str(out / "up.bin"), 150_000, seed=3)
    args = []
    for option in options:
        args += ["--option", option]
    with fastnet_server(str(root), allow_write=True) as server:
        port = str(server.port)
        r = run_tool([atftp, *args, "-g", "-r", "f.bin", "-l", str(out / "f.bin"), "127.0.0.1", port])
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_tool([atftp, *args, "-p", "-l", str(out / "up.bin"), "-r", "up.bin", "127.0.0.1", port])
        assert r.returncode == 0, r.stdout + r.stderr
    assert same(root / "f.bin", out / "f.bin")
    assert same(out / "up.bin", root / "up.bin")


def test_busybox_tftp_client_with_blksize(root, out):
    busybox = require_tool("busybox")
    fill(str(root / "f.bin"), 300_000)
    fill(str(out / "up.bin"), 100_000, seed=5)
    with fastnet_server(str(root), allow_write=True) as server:
        port = str(server.port)
        r = run_tool([busybox, "tftp", "-g", "-b", "1468", "-r", "f.bin", "-l", str(out / "f.bin"), "127.0.0.1", port])
        assert r.returncode == 0, r.stderr
        r = run_tool([busybox, "tftp", "-p", "-b", "4096", "-l", str(out / "up.bin"), "-r", "up.bin", "127.0.0.1", port])
        assert r.returncode == 0, r.stderr
    assert same(root / "f.bin", out / "f.bin") and same(out / "up.bin", root / "up.bin")


# ------------------------------------------------------------------ the fastnet client with peer servers


@pytest.mark.parametrize("options", [{}, {"blksize": 1468}, {"blksize": 65464}, {"blksize": 1468, "windowsize": 8}],
                         ids=["plain", "blksize1468", "blksize65464", "window-ignored"])
def test_client_with_tftpd_hpa_octet(root, out, options):
    fill(str(root / "f.bin"), 250_000)
    fill(str(out / "up.bin"), 120_000, seed=9)
    (root / "exact.bin").write_bytes(b"z" * 1024)
    with tftpd_hpa(str(root), write=True) as port:
        stats = client.download("127.0.0.1", "f.bin", str(out / "f.bin"), port=port, **options)
        client.download("127.0.0.1", "exact.bin", str(out / "exact.bin"), port=port, **options)
        up = client.upload("127.0.0.1", str(out / "up.bin"), "up.bin", port=port, **options)
    assert same(root / "f.bin", out / "f.bin") and same(root / "exact.bin", out / "exact.bin")
    assert same(out / "up.bin", root / "up.bin")
    assert stats.options.get("tsize") == 250_000 and up.options.get("tsize") == 120_000
    if "blksize" in options:
        assert stats.options["blksize"] == options["blksize"]
    assert "windowsize" not in stats.options  # tftpd-hpa knows no windowsize: lockstep


def test_client_with_tftpd_hpa_netascii(root, out):
    (root / "t.txt").write_bytes(TEXT)
    (out / "up.txt").write_bytes(TEXT)
    with tftpd_hpa(str(root), write=True) as port:
        client.download("127.0.0.1", "t.txt", str(out / "t.txt"), port=port, mode="netascii")
        client.download("127.0.0.1", "t.txt", str(out / "t8.txt"), port=port, mode="netascii", blksize=8)
        client.upload("127.0.0.1", str(out / "up.txt"), "up.txt", port=port, mode="netascii")
    assert (out / "t.txt").read_bytes() == TEXT and (out / "t8.txt").read_bytes() == TEXT
    assert (root / "up.txt").read_bytes() == TEXT


def test_client_errors_from_tftpd_hpa(root, out):
    (out / "keep").write_bytes(b"keep")
    with tftpd_hpa(str(root)) as port:
        with pytest.raises(TftpRemoteError) as info:
            client.download("127.0.0.1", "absent", str(out / "keep"), port=port)
    assert info.value.code == 1
    assert (out / "keep").read_bytes() == b"keep" and os.listdir(out) == ["keep"]


def test_client_with_tftpy_server(root, out):
    fill(str(root / "f.bin"), 100_000)
    with tftpy_server(str(root)) as port:
        stats = client.download("127.0.0.1", "f.bin", str(out / "f.bin"), port=port, blksize=1468)
        plain = client.download("127.0.0.1", "f.bin", str(out / "g.bin"), port=port)
    assert same(root / "f.bin", out / "f.bin") and same(root / "f.bin", out / "g.bin")
    assert stats.options.get("blksize") == 1468 and plain.blksize == 512


def test_client_with_tftpd_hpa_over_ipv6(root, out):
    require_ipv6_loopback()
    fill(str(root / "f.bin"), 50_000)
    with tftpd_hpa(str(root), host="::1") as port:
        client.download("::1", "f.bin", str(out / "f.bin"), port=port, blksize=1400)
    assert same(root / "f.bin", out / "f.bin")


def test_client_dally_ends_when_tftpd_hpa_closes_its_port(root, out):
    # The download returns at once; its dally (re-ACKing a repeated last block) would last
    # 2 x timeout, 10 s here, but the server exits once it has the final ACK, and the copy of
    # that ACK the client sends within 50 ms meets the closed port: the dally ends then.
    # (busybox tftpd answers from its request port, where no copy is sent: see test_tftp_client.)
    fill(str(root / "f.bin"), 3000)
    with tftpd_hpa(str(root)) as port:
        before = set(client._dallying)
        client.download("127.0.0.1", "f.bin", str(out / "f.bin"), port=port, timeout=5.0)
        (dally,) = set(client._dallying) - before
        dally.join(3.0)
        assert not dally.is_alive()
    assert same(root / "f.bin", out / "f.bin")


# ------------------------------------------------------------------ the fastnet client with busybox tftpd
# busybox tftpd knows blksize and tsize (tsize only for downloads), no windowsize, octet mode only.
# The client's timeout/retries bound every wait: at most about a minute per transfer.

BUSYBOX_TIMEOUT = {"timeout": 1.0, "retries": 5}


def test_client_with_busybox_tftpd_default(root, out):
    data = fill(str(root / "f.bin"), 300_000)
    (root / "exact.bin").write_bytes(b"b" * 1024)  # a multiple of 512: ends with an empty block
    with busybox_tftpd(str(root)) as port:
        stats = client.download("127.0.0.1", "f.bin", str(out / "f.bin"), port=port, **BUSYBOX_TIMEOUT)
        client.download("127.0.0.1", "exact.bin", str(out / "exact.bin"), port=port, **BUSYBOX_TIMEOUT)
    assert same(root / "f.bin", out / "f.bin") and same(root / "exact.bin", out / "exact.bin")
    assert stats.bytes == len(data) and stats.blksize == 512 and stats.windowsize == 1
    assert stats.options == {"tsize": 300_000}  # tsize is asked by default; busybox answers it
    assert leftovers(str(out)) == []


def test_client_with_busybox_tftpd_blksize_tsize(root, out):
    fill(str(root / "f.bin"), 400_000, seed=2)
    with busybox_tftpd(str(root)) as port:
        stats = client.download("127.0.0.1", "f.bin", str(out / "f.bin"), port=port, blksize=8192, tsize=True,
                                **BUSYBOX_TIMEOUT)
    assert same(root / "f.bin", out / "f.bin")
    assert stats.options == {"blksize": 8192, "tsize": 400_000}
    assert stats.blksize == 8192 and stats.total == 400_000
    assert stats.blocks == 400_000 // 8192 + 1
    assert leftovers(str(out)) == []


def test_client_with_busybox_tftpd_windowsize_ignored(root, out):
    fill(str(root / "f.bin"), 300_000, seed=3)
    with busybox_tftpd(str(root)) as port:
        stats = client.download("127.0.0.1", "f.bin", str(out / "f.bin"), port=port, blksize=1468, windowsize=16,
                                **BUSYBOX_TIMEOUT)
    assert same(root / "f.bin", out / "f.bin")
    # busybox acknowledges blksize and tsize but not windowsize: the transfer falls back to lockstep
    assert "windowsize" not in stats.options and stats.windowsize == 1
    assert stats.options == {"blksize": 1468, "tsize": 300_000}


@pytest.mark.parametrize("options", [{}, {"blksize": 1468}], ids=["plain", "blksize1468"])
def test_client_uploads_to_busybox_tftpd(root, out, options):
    fill(str(out / "up.bin"), 250_000, seed=4)
    with busybox_tftpd(str(root), write=True) as port:
        stats = client.upload("127.0.0.1", str(out / "up.bin"), "up.bin", port=port, **options, **BUSYBOX_TIMEOUT)
    assert same(out / "up.bin", root / "up.bin")
    assert stats.bytes == 250_000
    # busybox answers blksize on a WRQ, never tsize; with nothing to acknowledge it sends a plain ACK
    assert stats.options == ({"blksize": 1468} if options else {})
    assert leftovers(str(root)) == [] and leftovers(str(out)) == []


def test_client_errors_from_busybox_tftpd(root, out):
    (out / "keep").write_bytes(b"keep")
    with busybox_tftpd(str(root)) as port:
        with pytest.raises(TftpRemoteError) as info:
            client.download("127.0.0.1", "absent", str(out / "keep"), port=port, **BUSYBOX_TIMEOUT)
    assert info.value.code == 1
    assert (out / "keep").read_bytes() == b"keep" and os.listdir(out) == ["keep"]


def test_client_with_busybox_tftpd_over_ipv6(root, out):
    require_ipv6_loopback()
    fill(str(root / "f.bin"), 200_000, seed=6)
    with busybox_tftpd(str(root), host="::1") as port:
        stats = client.download("::1", "f.bin", str(out / "f.bin"), port=port, blksize=1400, **BUSYBOX_TIMEOUT)
    assert same(root / "f.bin", out / "f.bin")
    assert stats.options.get("blksize") == 1400 and stats.peer[0] == "::1"


# ------------------------------------------------------------------ block numbers past 65535


@pytest.fixture(scope="module")
def rollover_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("rollover")
    fill(str(d / "big.bin"), ROLLOVER_SIZE, seed=65536)
    return d / "big.bin"


def test_rollover_download_fastnet_client_from_tftpd_hpa(root, out, rollover_file):
    os.link(rollover_file, root / "big.bin")
    with tftpd_hpa(str(root)) as port:
        stats = client.download("127.0.0.1", "big.bin", str(out / "big.bin"), port=port, blksize=512)
    assert stats.blocks == ROLLOVER_SIZE // 512 + 1 > 65535
    assert same(rollover_file, out / "big.bin")


def test_rollover_upload_fastnet_client_to_tftpd_hpa(root, rollover_file):
    with tftpd_hpa(str(root), write=True) as port:
        stats = client.upload("127.0.0.1", str(rollover_file), "big.bin", port=port, blksize=512)
    assert stats.blocks > 65535
    assert same(rollover_file, root / "big.bin")


def test_rollover_curl_downloads_from_fastnet_server(root, out, rollover_file):
    curl = require_tool("curl")
    os.link(rollover_file, root / "big.bin")
    with fastnet_server(str(root)) as server:
        r = run_tool([curl, "-sS", "-o", str(out / "big.bin"), f"tftp://127.0.0.1:{server.port}/big.bin"])
    assert r.returncode == 0, r.stderr
    assert same(rollover_file, out / "big.bin")


def test_rollover_upload_into_fastnet_server(root, rollover_file):
    with fastnet_server(str(root), allow_write=True) as server:
        stats = client.upload("127.0.0.1", str(rollover_file), "big.bin", port=server.port, windowsize=64)
    assert stats.blocks > 65535
    assert same(rollover_file, root / "big.bin")
