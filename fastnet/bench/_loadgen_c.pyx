# cython: language_level=3, embedsignature=True
"""Compiled echo load generator: the loop of ``src_c/loadgen.c`` runs with the GIL released."""

from libc.stdint cimport uint64_t
from libc.stddef cimport size_t


import os
import signal
import threading

from fastnet._cli import format_address
from fastnet.bench._loadgen_py import _resolve, _summarize, check_params, check_port

__all__ = ["run_echo", "IMPLEMENTATION_NAME"]

IMPLEMENTATION_NAME = "c"


cdef extern from "loadgen.h" nogil:
    ctypedef struct lg_config:
        int family
        const char *ip
        int port
        int udp
        int conns
        size_t size
        double secs
        int pipeline
        double udp_timeout
        volatile int *stop
        int wake_fd

    ctypedef struct lg_result:
        uint64_t requests
        uint64_t bytes
        uint64_t errors
        uint64_t mismatches
        uint64_t losses
        uint64_t late
        uint64_t stalled
        double elapsed
        double lat_min_us
        double lat_mean_us
        double lat_max_us
        double p50_us
        double p90_us
        double p99_us
        double p999_us
        int err
        char errmsg[160]

    int lg_run_echo(const lg_config *cfg, lg_result *result)


def run_echo(host, port, *, conns=1, size=1024, secs=5.0, udp=False, pipeline=1, udp_timeout=0.2):
    """Load an echo server at (host, port) for *secs* seconds; return the statistics as a dict.

    See :func:`fastnet.bench.loadgen.run_echo` for the keys.
    """
    check_params(port, conns, size, secs, udp, pipeline, udp_timeout)
    family, ip = _resolve(host, port, udp)
    cdef bytes ip_b = ip.encode("ascii")
    cdef lg_config cfg
    cdef lg_result res
    cdef int rc
    cfg.family = family
    cfg.ip = ip_b
    cfg.port = check_port(port)
    cfg.udp = 1 if udp else 0
    cfg.conns = int(conns)
    cfg.size = int(size)
    cfg.secs = float(secs)
    cfg.pipeline = int(pipeline)
    cfg.udp_timeout = float(udp_timeout)
    cfg.stop = NULL
    cfg.wake_fd = -1
    # In the main thread, Ctrl-C must end a long run: Python's C-level signal handler writes to
    # the wakeup fd, which the C loop watches; the KeyboardInterrupt is raised once we return.
    wake_r = wake_w = -1
    previous_fd = None
    if threading.current_thread() is threading.main_thread():
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        cfg.wake_fd = wake_r
    try:
        with nogil:
            rc = lg_run_echo(&cfg, &res)
    finally:
        if previous_fd is not None:
            signal.set_wakeup_fd(previous_fd)
            if previous_fd >= 0:
                # pass the signal bytes on to whoever was watching before
                try:
                    data = os.read(wake_r, 1024)
                    if data:
                        os.write(previous_fd, data)
                except OSError:
                    pass
            os.close(wake_r)
            os.close(wake_w)
    if rc != 0:
        message = res.errmsg.decode("utf-8", "replace")
        if res.err == 111:  # ECONNREFUSED
            raise ConnectionRefusedError(res.err, f"cannot load {format_address((host, port))}: {message}")
        raise OSError(res.err, f"cannot load {format_address((host, port))}: {message}")
    return _summarize(
        host=host, port=port, udp=udp, conns=conns, size=size, pipeline=pipeline,
        requests=res.requests, nbytes=res.bytes, elapsed=res.elapsed, errors=res.errors,
        mismatches=res.mismatches, losses=res.losses, late=res.late, stalled=res.stalled,
        lat_min_us=res.lat_min_us, lat_mean_us=res.lat_mean_us, lat_max_us=res.lat_max_us,
        p50_us=res.p50_us, p90_us=res.p90_us, p99_us=res.p99_us, p999_us=res.p999_us,
        implementation="c",
    )
