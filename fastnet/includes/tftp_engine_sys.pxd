# Declarations for fastnet.tftp._engine_c: the C transfer engine (src_c/tftp_engine.h).

from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    cdef struct sockaddr_storage:
        unsigned short ss_family


cdef extern from "<netinet/in.h>" nogil:
    cdef struct in_addr:
        uint32_t s_addr
    cdef struct in6_addr:
        pass
    cdef struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    cdef struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    unsigned short htons(unsigned short)
    int AF_INET
    int AF_INET6


cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)


cdef extern from "tftp_engine.h" nogil:
    int TFTP_ENGINE_FIRST_MAX
    int TFTP_ENGINE_SENDER
    int TFTP_ENGINE_RECEIVER
    int TFTP_ENGINE_RUNNING
    int TFTP_ENGINE_DONE
    int TFTP_ENGINE_TIMEOUT
    int TFTP_ENGINE_STOP
    int TFTP_ENGINE_IO_ERROR
    int TFTP_ENGINE_CANCELLED
    int TFTP_ENGINE_SOCK_ERROR
    int TFTP_ENGINE_PROGRESS
    int TFTP_ENGINE_REFUSED
    int TFTP_ENGINE_FLAG_STRICT
    int TFTP_ENGINE_FLAG_ACK_LAST
    int TFTP_ENGINE_FLAG_OACK_REACK
    int TFTP_ENGINE_FLAG_NO_SPLICE
    int TFTP_ENGINE_FLAG_GUARD_FIRST

    ctypedef struct tftp_session:
        int role
        int flags
        int sock
        int fd
        sockaddr_storage peer
        socklen_t peer_len
        uint32_t blksize
        uint32_t window
        double timeout
        double max_backoff
        int retries
        double report_interval
        long file_start
        uint8_t first[1]
        size_t first_len
        int first_sent
        int cancel
        int outcome
        int error_errno
        uint64_t bytes
        uint64_t blocks
        uint64_t retransmissions
        uint8_t *stop_packet
        size_t stop_len
        uint64_t base

    int tftp_session_init(tftp_session *s)
    int tftp_session_run(tftp_session *s)
    void tftp_session_free(tftp_session *s)
