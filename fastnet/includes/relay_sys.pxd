# Declarations for fastnet._relay_c: the C relay loop (src_c/relay.h).

from libc.stdint cimport uint64_t


cdef extern from "relay.h" nogil:
    ctypedef struct relay_stats:
        uint64_t connections
        uint64_t messages
        uint64_t bytes
        uint64_t accept_pauses
        uint64_t dropped

    int RELAY_BUF_SIZE
    int RELAY_UDP_BATCH

    int relay_serve(int fd, int udp, int stop_fd, int signal_fd, relay_stats *stats)
