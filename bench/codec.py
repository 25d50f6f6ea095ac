"""Benchmark of the TFTP packet codec: compiled vs twin vs the notes' struct idioms vs tftpy.

    python bench/codec.py            # about half a minute
    python bench/codec.py --quick    # fewer repeats

Prints nanoseconds per call (median of several timeit repeats, each long enough to time), all
measured in one run side by side, ratio columns (how many times slower than the compiled codec),
and one line per speed target saying met / not met.  Every contender is called the way a user
would write it: a module attribute and the arguments (``codec.encode_ack(n)``,
``struct.pack("!HH", 4, n)`` as in the notes, tftpy's packet classes and TftpPacketFactory).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import statistics
import struct
import sys
import timeit

log = logging.getLogger("bench.codec")

PAYLOAD = bytes(range(256)) * 2  # 512 bytes
BLOCK = 4660
OPTIONS = {"blksize": 1428, "tsize": 0, "timeout": 3}
FILENAME = "images/test.jpg"
TEXT = (b"The quick brown fox\njumps over the lazy dog\r\n" * 12)[:512]


def _load(name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        log.warning("%s unavailable: %s", name, exc)
        return None


def _cases(c, py, tftpy_types, tftpy_factory):
    """operation -> {contender: (statement, namespace)}"""
    ref = py  # reference packets come from the twin, which is always present
    data_pkt = ref.encode_data(BLOCK, PAYLOAD)
    ack_pkt = ref.encode_ack(BLOCK)
    rrq_pkt = ref.encode_rrq(FILENAME, "octet", OPTIONS)
    rrq_fmt = "!H%dsx5sx" % len(FILENAME.encode()) + "".join(
        "%dsx%dsx" % (len(k), len(str(v))) for k, v in OPTIONS.items()
    )
    rrq_args = [FILENAME.encode(), b"octet"] + [x for k, v in OPTIONS.items() for x in (k.encode(), str(v).encode())]
    wire = ref.to_netascii(TEXT)
    ns = {
        "C": c,
        "P": py,
        "struct": struct,
        "n": BLOCK,
        "payload": PAYLOAD,
        "d": data_pkt,
        "a": ack_pkt,
        "r": rrq_pkt,
        "options": OPTIONS,
        "filename": FILENAME,
        "rrq_fmt": rrq_fmt,
        "rrq_args": rrq_args,
        "text": TEXT,
        "wire": wire,
        "T": tftpy_types,
        "factory": tftpy_factory() if tftpy_factory else None,
    }
    tftpy_ok = tftpy_types is not None

    def tftpy_stmt(s):
        return s if tftpy_ok else None

    return {
        "encode_ack": {
            "compiled": "C.encode_ack(n)",
            "twin": "P.encode_ack(n)",
            "struct": 'struct.pack("!HH", 4, n)',
            "tftpy": tftpy_stmt("p = T.TftpPacketACK(); p.blocknumber = n; p.encode().buffer"),
        },
        "encode_data (512 B)": {
            "compiled": "C.encode_data(n, payload)",
            "twin": "P.encode_data(n, payload)",
            "struct": 'struct.pack("!HH", 3, n) + payload',
            "tftpy": tftpy_stmt("p = T.TftpPacketDAT(); p.blocknumber = n; p.data = payload; p.encode().buffer"),
        },
        "decode DATA (512 B)": {
            "compiled": "C.decode(d)",
            "twin": "P.decode(d)",
            "struct": 'struct.unpack("!HH", d[:4]); d[4:]',
            "tftpy": tftpy_stmt("factory.parse(d)"),
        },
        "decode ACK": {
            "compiled": "C.decode(a)",
            "twin": "P.decode(a)",
            "struct": 'struct.unpack("!HH", a[:4]); a[4:]',
            "tftpy": tftpy_stmt("factory.parse(a)"),
        },
        "encode RRQ + 3 options": {
            "compiled": 'C.encode_rrq(filename, "octet", options)',
            "twin": 'P.encode_rrq(filename, "octet", options)',
            "struct": "struct.pack(rrq_fmt, 1, *rrq_args)",
            "tftpy": tftpy_stmt(
                'p = T.TftpPacketRRQ(); p.filename = filename; p.mode = "octet"; p.options = options; p.encode().buffer'
            ),
        },
        "decode RRQ + 3 options": {
            "compiled": "C.decode(r)",
            "twin": "P.decode(r)",
            "struct": None,
            "tftpy": tftpy_stmt("factory.parse(r)"),
        },
        "to_netascii (512 B text)": {
            "compiled": "C.to_netascii(text)",
            "twin": "P.to_netascii(text)",
            "struct": None,
            "tftpy": None,
        },
        "from_netascii (512 B text)": {
            "compiled": "C.from_netascii(wire)",
            "twin": "P.from_netascii(wire)",
            "struct": None,
            "tftpy": None,
        },
    }, ns


def _calibrate(timer: timeit.Timer, target_seconds: float) -> int:
    number = 1
    while True:
        elapsed = timer.timeit(number)
        if elapsed >= target_seconds / 4:
            return max(1, int(number * target_seconds / elapsed))
        number *= 4


def _time_row(stmts: dict[str, str], ns: dict, repeats: int, target_seconds: float) -> dict[str, float]:
    """ns per call of each statement; the repeats of all contenders are interleaved, so that a
    burst of load on a shared machine hits all of them alike and the ratios stay meaningful."""
    timers = {who: timeit.Timer(stmt, globals=ns) for who, stmt in stmts.items()}
    numbers = {who: _calibrate(t, target_seconds) for who, t in timers.items()}
    samples: dict[str, list[float]] = {who: [] for who in timers}
    for _ in range(repeats):
        for who, t in timers.items():
            samples[who].append(t.timeit(numbers[who]) / numbers[who] * 1e9)
    return {who: statistics.median(v) for who, v in samples.items()}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"{platform.python_implementation()} {platform.python_version()}"
    )


CONTENDERS = ("compiled", "twin", "struct", "tftpy")

# (operation, contender it is compared with, the compiled codec must be at least this much faster)
TARGETS = [
    ("encode_ack", "struct", 1.5),
    ("encode_data (512 B)", "struct", 1.5),
    ("decode DATA (512 B)", "struct", 2.0),
    ("decode ACK", "struct", 2.0),
    ("decode RRQ + 3 options", "twin", 5.0),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timeit repeats per measurement (median taken)")
    parser.add_argument("--seconds", type=float, default=0.05, help="duration of one repeat")
    parser.add_argument("--quick", action="store_true", help="3 repeats of 0.02 s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.quick:
        args.repeat, args.seconds = 3, 0.02

    c = _load("fastnet.tftp._codec_c")
    py = importlib.import_module("fastnet.tftp._codec_py")
    tftpy = _load("tftpy")
    types = factory = None
    if tftpy is not None:
        from tftpy import TftpPacketFactory, TftpPacketTypes

        types, factory = TftpPacketTypes, TftpPacketFactory.TftpPacketFactory
    cases, ns = _cases(c, py, types, factory)
    available = {"compiled": c is not None, "twin": True, "struct": True, "tftpy": tftpy is not None}

    results: dict[str, dict[str, float | None]] = {}
    for op, stmts in cases.items():
        runnable = {who: stmts[who] for who in CONTENDERS if stmts.get(who) and available[who]}
        timed = _time_row(runnable, ns, args.repeat, args.seconds)
        results[op] = {who: timed.get(who) for who in CONTENDERS}

    print(f"TFTP codec, ns per call (median of {args.repeat} interleaved timeit repeats); x = times slower than compiled")
    print(f"machine: {_machine()}")
    print()
    header = f"| {'operation':<26} | {'compiled':>8} | {'twin':>8} | {'struct':>8} | {'tftpy':>8} | {'twin x':>6} | {'struct x':>8} | {'tftpy x':>7} |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")

    def ns_cell(v, width=8):
        return f"{v:>{width}.0f}" if v is not None else f"{'n/a':>{width}}"

    def ratio_cell(v, base, width):
        return f"{v / base:>{width}.1f}" if v is not None and base else f"{'n/a':>{width}}"

    for op, row in results.items():
        base = row["compiled"]
        print(
            f"| {op:<26} | {ns_cell(row['compiled'])} | {ns_cell(row['twin'])} | {ns_cell(row['struct'])} | "
            f"{ns_cell(row['tftpy'])} | {ratio_cell(row['twin'], base, 6)} | {ratio_cell(row['struct'], base, 8)} | "
            f"{ratio_cell(row['tftpy'], base, 7)} |"
        )
    print()
    met = 0
    for op, versus, wanted in TARGETS:
        base, other = results[op]["compiled"], results[op][versus]
        if base is None or other is None:
            print(f"target: compiled {op} >= {wanted}x faster than {versus}: not measurable (module unavailable)")
            continue
        got = other / base
        verdict = "met" if got >= wanted else "NOT MET"
        met += got >= wanted
        print(f"target: compiled {op} >= {wanted}x faster than {versus}: {got:.2f}x -> {verdict}")
    print(f"{met} of {len(TARGETS)} targets met")
    return 0  # targets are reported, not enforced


if __name__ == "__main__":
    sys.exit(main())
