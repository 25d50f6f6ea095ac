/* Echo relay loop: no Python API, driven from fastnet/_relay_c.pyx with the GIL released.
 *
 * relay_serve() runs one single-threaded level-triggered epoll loop over a listening TCP socket or
 * a bound UDP socket until `stop_fd` becomes readable (an eventfd written by stop()) or a SIGINT or
 * SIGTERM byte arrives on `signal_fd` (the read end of the pipe given to Python's
 * signal.set_wakeup_fd(), which receives one byte, the signal number, per signal caught).
 *
 * TCP: accept4() in a loop; each readable connection gets one recv() into a buffer shared by the
 * whole loop and one send() of what was read.  Only when the send is partial does the connection
 * get a buffer of its own, holding the rest; it then stops reading (EPOLLOUT only) until that
 * buffer is drained and freed.  So an idle connection costs a 32-byte record, a busy one at most
 * RELAY_BUF_SIZE bytes, and no byte is lost or reordered.  EOF (the client's half-close) is only
 * seen once everything read before it has been echoed; then the connection is closed.  Errors close
 * one connection.  EMFILE/ENFILE/ENOBUFS/ENOMEM on accept pause accepting for RELAY_ACCEPT_BACKOFF_MS
 * (or until a connection closes) instead of spinning on a listening socket that stays readable.
 *
 * UDP: recvmmsg() up to RELAY_UDP_BATCH datagrams, sendmmsg() them back to their senders.
 */
#ifndef FASTNET_RELAY_H
#define FASTNET_RELAY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RELAY_BUF_SIZE 65536u
#define RELAY_UDP_BATCH 64
#define RELAY_UDP_MAX 65536u
#define RELAY_ACCEPT_BACKOFF_MS 100

typedef struct relay_stats {
    uint64_t connections;     /* TCP connections accepted */
    uint64_t messages;        /* TCP: successful reads echoed; UDP: datagrams echoed */
    uint64_t bytes;           /* bytes echoed */
    uint64_t accept_pauses;   /* times accepting paused on EMFILE and the like */
    uint64_t dropped;         /* UDP datagrams the kernel refused to send back (EAGAIN ...) */
} relay_stats;

/* Serve `fd` (listening TCP if !udp, bound UDP if udp) until stopped; either wake fd may be -1.
 * Returns 0, or -1 with errno set when the loop could not run (epoll_create1 ...). */
int relay_serve(int fd, int udp, int stop_fd, int signal_fd, relay_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
