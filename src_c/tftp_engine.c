/* TFTP transfer engine: see tftp_engine.h. */
#include "tftp_engine.h"
#include "tftp_codec.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_SLOTS 64u
#define RECV_BYTES (256u * 1024u) /* receiver: slots within this (a fresh process faults in every page) */
#define SENDER_RBUF 65540u
#define MIN_SLOT 2048u
#define READ_AHEAD_MIN (64u * 1024u) /* sender: the least a read brings in (small windows) */
#define STAGE_SIZE (256u * 1024u)
#define GSO_MAX_BYTES 65000u   /* payload bytes of one GSO super-datagram (UDP's limit is 65507) */
#define GSO_MAX_SEGS 64u       /* the kernel's UDP_MAX_SEGMENTS */
#define GRO_SLOT 65536u        /* a coalesced GRO datagram is at most this long */
#define GRO_SLOTS 16u
#define DIRECT_WRITE 8192u      /* payloads this large skip the receiver's staging buffer */
#define PENDING_MAX 64u         /* receiver: direct payloads gathered into one writev() */
#define READ_WHOLE 32768u       /* blocks this large are read a window at a time */
#define SPLICE_MIN 32768u       /* blocks this large (too large for GSO batches) go by splice() */
#define SPLICE_PIPE (128u * 1024u) /* 32 pipe slots: a 65464-byte block spans at most 17 pages */
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

typedef struct {
    struct mmsghdr *msgs;
    struct iovec *iov;
    uint8_t *hdrs;                  /* 4 bytes per message */
    struct sockaddr_storage *addrs; /* receiver: one per slot */
    uint8_t *rbuf;                  /* sender: one datagram */
    uint8_t *cmsgs;                 /* one control buffer per message (GSO out, GRO in) */
    unsigned *segs;                 /* sender: packets per message */
    int orig_flags;
    int gro;                        /* receiver: UDP_GRO is on (turned off again by free) */
    int gso;                        /* sender: UDP_SEGMENT works (cleared on the first refusal) */
    int splice;                     /* sender: blocks go file -> pipe -> socket, never copied */
    int pipe_rd, pipe_wr;           /* the pipe of the splice path (-1: none) */
    uint8_t head[4 + 8192];         /* sender, splice path: header and a block's copied head */
    struct iovec pending[PENDING_MAX]; /* receiver: direct payloads, in the slots, not yet written */
    unsigned npending;
    struct timeval orig_rcvtimeo;
    int data_acked;                 /* sender: the peer has acknowledged a DATA block */
    int early_resent;               /* sender: a whole window went again before that */
} scratch_t;

#define CMSG_SLOT CMSG_SPACE(sizeof(int))

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int same_addr(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b)
{
    (void)alen;
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return 0;
}

/* Whether a call failed with an errno an ICMP error arrives as (the kernel's icmp_err_convert).
 * With IP_RECVERR, the kernel reports an ICMP error as the failure of the next call on the socket,
 * whichever it is; a send that fails so sent nothing and may go again.  The run reads the error
 * queue before it goes on (peer_refused). */
static int late_icmp(tftp_session *s, int err)
{
    switch (err) {
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EHOSTDOWN:
    case ENONET:
    case EPROTO:
        s->icmp = 1;
        return 1;
    default:
        return 0;
    }
}

/* Read the socket's queued ICMP errors: 1 when one is a port unreachable for the peer's address
 * (the peer is gone), else 0 (errors for strangers we answered, or nothing queued). */
static int peer_refused(tftp_session *s)
{
    int refused = 0;
    s->icmp = 0;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage to;
        union {
            uint8_t buf[CMSG_SPACE(sizeof(struct sock_extended_err) + sizeof(struct sockaddr_in6)) + 64];
            struct cmsghdr align;
        } cm;
        uint8_t byte;
        struct iovec iov = {&byte, 1};
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_name = &to;
        m.msg_namelen = sizeof to;
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = cm.buf;
        m.msg_controllen = sizeof cm.buf;
        if (recvmsg(s->sock, &m, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
            if (errno == EINTR)
                continue;
            break; /* EAGAIN: the queue is empty */
        }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
            if (!((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR) ||
                  (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR)) ||
                c->cmsg_len < CMSG_LEN(sizeof(struct sock_extended_err)))
                continue;
            struct sock_extended_err e;
            memcpy(&e, CMSG_DATA(c), sizeof e);
            if (e.ee_errno == ECONNREFUSED && m.msg_namelen > 0 && same_addr(&to, m.msg_namelen, &s->peer))
                refused = 1;
        }
    }
    return refused;
}

static void send_to(tftp_session *s, const void *p, size_t n, const struct sockaddr_storage *to, socklen_t tolen)
{
    int again = 1;
    while (sendto(s->sock, p, n, 0, (const struct sockaddr *)to, tolen) < 0) {
        if (errno == EINTR)
            continue;
        if (again && late_icmp(s, errno)) { /* an earlier datagram's error: this one did not go */
            again = 0;
            continue;
        }
        break; /* other failures: the packet is lost, a timeout resends it */
    }
}

/* Attach a UDP_SEGMENT control message (GSO segment size `seg`) to `m`, in `cbuf` (CMSG_SLOT bytes). */
static void set_udp_segment(struct msghdr *m, uint8_t *cbuf, uint16_t seg)
{
    memset(cbuf, 0, CMSG_SLOT);
    m->msg_control = cbuf;
    m->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
    struct cmsghdr *c = CMSG_FIRSTHDR(m);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    memcpy(CMSG_DATA(c), &seg, sizeof seg);
}

static void send_ack(tftp_session *s, uint64_t block)
{
    uint8_t ack[4];
    tftp_build_ack(ack, (uint16_t)(block & 0xFFFF));
    send_to(s, ack, 4, &s->peer, s->peer_len);
}

static void stray(tftp_session *s, const uint8_t *p, size_t n, const struct sockaddr_storage *from, socklen_t fromlen)
{
    /* RFC 1350: a packet from an unknown TID gets ERROR 5; the transfer goes on untouched */
    if (n >= 2 && p[0] == 0 && p[1] == TFTP_ERROR)
        return; /* never answer an ERROR with an ERROR */
    static const char msg[] = "unknown transfer ID";
    uint8_t out[5 + sizeof msg];
    tftp_str m = {(const uint8_t *)msg, sizeof msg - 1};
    size_t len = tftp_build_error(out, 5, m);
    send_to(s, out, len, from, fromlen);
}

static int stop(tftp_session *s, const uint8_t *p, size_t n)
{
    free(s->stop_packet);
    s->stop_packet = malloc(n ? n : 1);
    if (s->stop_packet == NULL) {
        s->error_errno = ENOMEM;
        return s->outcome = TFTP_ENGINE_IO_ERROR;
    }
    memcpy(s->stop_packet, p, n);
    s->stop_len = n;
    return s->outcome = TFTP_ENGINE_STOP;
}

/* A packet that is neither the expected DATA/ACK nor a stray: STOP or ignore (returns -1). */
static int other_packet(tftp_session *s, const uint8_t *p, size_t n)
{
    tftp_packet pk;
    if (tftp_parse(p, n, &pk) < 0)
        return stop(s, p, n);
    switch (pk.opcode) {
    case TFTP_ERROR:
        return stop(s, p, n);
    case TFTP_RRQ:
    case TFTP_WRQ:
        if (s->flags & TFTP_ENGINE_FLAG_STRICT)
            return stop(s, p, n);
        return -1;
    case TFTP_OACK:
        if (s->role == TFTP_ENGINE_RECEIVER && (s->flags & TFTP_ENGINE_FLAG_OACK_REACK) && s->base == 1 && s->first_len)
            send_to(s, s->first, s->first_len, &s->peer, s->peer_len); /* a repeated OACK */
        return -1;
    default:
        return -1;
    }
}

/* The run is about to end as TFTP_ENGINE_REFUSED (peer_refused said the peer's port is closed):
 * first read, without blocking, what is already queued on the socket.  A peer that leaves on
 * purpose sends an ERROR and then closes its socket; a packet of ours that crossed its ERROR meets
 * the closed port, and the ICMP error comes back (on loopback at once) and is reported by our next
 * call on the socket -- before the ERROR, which still waits in the receive queue.  The peer's
 * ERROR is then the outcome (TFTP_ENGINE_STOP), as it would have been had it been read first;
 * anything else queued (the peer's or a stranger's) is dropped: the transfer is over.  `buf`
 * holds `cap` bytes (nothing in it is needed any more). */
static int refused_outcome(tftp_session *s, uint8_t *buf, size_t cap)
{
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        ssize_t n = recvfrom(s->sock, buf, cap, MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
        if (n < 0) {
            if (errno == EINTR || late_icmp(s, errno))
                continue; /* another ICMP error, reported (and cleared) by this call: read on */
            break;        /* EAGAIN: nothing more is queued */
        }
        if (n >= 4 && buf[0] == 0 && buf[1] == TFTP_ERROR && same_addr(&from, fromlen, &s->peer)) {
            tftp_packet pk;
            if (tftp_parse(buf, (size_t)n, &pk) == 0)
                return stop(s, buf, (size_t)n);
        }
    }
    return s->outcome = TFTP_ENGINE_REFUSED;
}

static void progress(tftp_session *s, double t)
{
    s->tries = 0;
    s->wait = s->timeout;
    s->deadline = t + s->wait;
}

/* ------------------------------------------------------------------ the splice path's pipe */

static void pipe_close(scratch_t *sc)
{
    if (sc->pipe_rd >= 0)
        close(sc->pipe_rd);
    if (sc->pipe_wr >= 0)
        close(sc->pipe_wr);
    sc->pipe_rd = sc->pipe_wr = -1;
}

static int pipe_open(scratch_t *sc)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    sc->pipe_rd = p[0];
    sc->pipe_wr = p[1];
    /* a block must fit whole: if the pipe cannot grow (pipe-user-pages limits), no splice path */
    if (fcntl(p[1], F_SETPIPE_SZ, (int)SPLICE_PIPE) < (int)SPLICE_PIPE) {
        pipe_close(sc);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ init / free */

int tftp_session_init(tftp_session *s)
{
    if ((s->role != TFTP_ENGINE_SENDER && s->role != TFTP_ENGINE_RECEIVER) || s->blksize < TFTP_MIN_BLKSIZE ||
        s->blksize > TFTP_MAX_BLKSIZE || s->window < 1 || !(s->timeout > 0) || s->first_len > TFTP_ENGINE_FIRST_MAX) {
        errno = EINVAL;
        return -1;
    }
    if (s->max_backoff < 1)
        s->max_backoff = 1;
    if (s->base == 0)
        s->base = 1;
    s->sent_hi = s->base - 1;
    s->outcome = TFTP_ENGINE_RUNNING;
    scratch_t *sc = calloc(1, sizeof *sc);
    if (sc == NULL)
        return -1;
    s->scratch = sc;
    sc->pipe_rd = sc->pipe_wr = -1;
    unsigned n;
    if (s->role == TFTP_ENGINE_SENDER) {
        n = s->window;
        size_t want = (size_t)s->window * s->blksize;
        /* Read a window at a time, or four small windows (at least 64 KiB), ahead while the peer
         * works on the window just sent.  A read must end before the peer's answer comes back:
         * on two cores a 256 KiB read held up every 32nd ACK of a lockstep transfer of 8 KiB
         * blocks and every 11th of windows of 16 x 1468 bytes (64 KiB: 1.06x and 1.15x the
         * throughput, no more CPU on one core, where the read's cost is all that counts) */
        if (want >= READ_AHEAD_MIN || s->blksize >= READ_WHOLE)
            s->buf_cap = want;
        else
            s->buf_cap = 4 * want < READ_AHEAD_MIN ? READ_AHEAD_MIN : 4 * want;
        s->buf_cap -= s->buf_cap % s->blksize;
        sc->rbuf = malloc(SENDER_RBUF);
        sc->segs = calloc(n, sizeof *sc->segs);
        /* a window of small blocks goes out as GSO super-datagrams: the kernel cuts them into
         * DATA packets (or hands them whole to a receiver with UDP_GRO, such as this engine) */
        sc->gso = s->window > 1 && 2u * (s->blksize + 4u) <= GSO_MAX_BYTES;
        /* big blocks of a file, windowed: the kernel moves page references from the page cache
         * to the datagram (splice) instead of pread() and sendmsg() copying every byte twice.
         * Not in lockstep: there the peer's copy out of the datagram would read the pages cold
         * from memory while it waits, where pread() read them ahead while it worked (two cores:
         * 0.95x tftpd-hpa with splice, 1.09x with pread).  A file is a seekable descriptor (pipes
         * and sockets are not): lseek rather than fstat, whose symbol is glibc 2.33's and would
         * raise the wheel's manylinux floor from 2.17 */
        if (s->blksize >= SPLICE_MIN && s->window > 1 && !(s->flags & TFTP_ENGINE_FLAG_NO_SPLICE) &&
            lseek(s->fd, 0, SEEK_CUR) >= 0) {
            sc->splice = pipe_open(sc) == 0;
        }
    } else {
        n = s->window < MAX_SLOTS ? s->window : MAX_SLOTS;
        s->slot = s->blksize + 4u < MIN_SLOT ? MIN_SLOT : s->blksize + 4u;
        if (s->window > 1 && 2u * (s->blksize + 4u) <= GSO_MAX_BYTES) {
            int on = 1;
            if (setsockopt(s->sock, SOL_UDP, UDP_GRO, &on, sizeof on) == 0) {
                sc->gro = 1;
                s->slot = GRO_SLOT;
                if (n > GRO_SLOTS)
                    n = GRO_SLOTS;
            }
        }
        if (n > 1 && (size_t)n * s->slot > RECV_BYTES)
            n = (unsigned)(RECV_BYTES / s->slot) ? (unsigned)(RECV_BYTES / s->slot) : 1u;
        s->nslots = n;
        s->buf_cap = s->slot * n;
        s->stage_cap = STAGE_SIZE > 2u * s->blksize ? STAGE_SIZE : 2u * s->blksize;
        s->stage = malloc(s->stage_cap);
        sc->addrs = calloc(n, sizeof *sc->addrs);
    }
    s->buf = malloc(s->buf_cap);
    if (s->role == TFTP_ENGINE_SENDER)
        s->buf2 = malloc(s->buf_cap); /* optional: no read-ahead without it */
    sc->msgs = calloc(n, sizeof *sc->msgs);
    sc->iov = calloc(2u * n, sizeof *sc->iov);
    sc->hdrs = calloc(s->role == TFTP_ENGINE_SENDER ? s->window : n, 4);
    sc->cmsgs = calloc(n, CMSG_SLOT);
    if (s->role == TFTP_ENGINE_SENDER) { /* iov: two per packet of a window */
        free(sc->iov);
        sc->iov = calloc(2u * s->window, sizeof *sc->iov);
    }
    if (s->buf == NULL || sc->msgs == NULL || sc->iov == NULL || sc->hdrs == NULL || sc->cmsgs == NULL ||
        (s->role == TFTP_ENGINE_SENDER ? (sc->rbuf == NULL || sc->segs == NULL) : (s->stage == NULL || sc->addrs == NULL))) {
        tftp_session_free(s);
        errno = ENOMEM;
        return -1;
    }
    /* blocking socket, kernel receive timeout of one slice (restored by tftp_session_free) */
    sc->orig_flags = fcntl(s->sock, F_GETFL);
    if (sc->orig_flags >= 0 && (sc->orig_flags & O_NONBLOCK))
        fcntl(s->sock, F_SETFL, sc->orig_flags & ~O_NONBLOCK);
    socklen_t tl = sizeof sc->orig_rcvtimeo;
    getsockopt(s->sock, SOL_SOCKET, SO_RCVTIMEO, &sc->orig_rcvtimeo, &tl);
    s->slice = s->timeout / 4;
    if (s->slice > 0.05)
        s->slice = 0.05;
    if (s->slice < 0.001)
        s->slice = 0.001;
    struct timeval tv = {0, (suseconds_t)(s->slice * 1e6)};
    setsockopt(s->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return 0;
}

void tftp_session_free(tftp_session *s)
{
    scratch_t *sc = s->scratch;
    if (sc != NULL) {
        if (sc->orig_flags >= 0 && (sc->orig_flags & O_NONBLOCK))
            fcntl(s->sock, F_SETFL, sc->orig_flags);
        setsockopt(s->sock, SOL_SOCKET, SO_RCVTIMEO, &sc->orig_rcvtimeo, sizeof sc->orig_rcvtimeo);
        if (sc->gro) {
            int off = 0;
            setsockopt(s->sock, SOL_UDP, UDP_GRO, &off, sizeof off);
        }
        pipe_close(sc);
        free(sc->cmsgs);
        free(sc->segs);
        free(sc->msgs);
        free(sc->iov);
        free(sc->hdrs);
        free(sc->addrs);
        free(sc->rbuf);
        free(sc);
        s->scratch = NULL;
    }
    free(s->buf);
    s->buf = NULL;
    free(s->buf2);
    s->buf2 = NULL;
    free(s->stage);
    s->stage = NULL;
    free(s->stop_packet);
    s->stop_packet = NULL;
    s->stop_len = 0;
}

/* ------------------------------------------------------------------ sender */

static int covers(off_t boff, size_t have, int eof, off_t off, size_t len)
{
    return boff >= 0 && off >= boff &&
           (off + (off_t)len <= boff + (off_t)have || (eof && off <= boff + (off_t)have));
}

/* Read up to buf_cap file bytes from `off` into `into`; -1 on a read error. */
static int read_at(tftp_session *s, uint8_t *into, off_t off, size_t *have, int *eof)
{
    *have = 0;
    *eof = 0;
    while (*have < s->buf_cap) {
        ssize_t n = pread(s->fd, into + *have, s->buf_cap - *have, off + (off_t)*have);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            s->error_errno = errno;
            return -1;
        }
        if (n == 0) {
            *eof = 1;
            break;
        }
        *have += (size_t)n;
    }
    return 0;
}

/* Make buf hold the file bytes from `off` on, up to buf_cap (or the end of the file). */
static int fill(tftp_session *s, off_t off, size_t len)
{
    if (covers(s->buf_off, s->buf_have, s->eof, off, len))
        return 0;
    if (s->buf2_valid && covers(s->buf2_off, s->buf2_have, s->eof2, off, len)) {
        /* the stretch read ahead: swap the two buffers */
        uint8_t *b = s->buf;
        s->buf = s->buf2;
        s->buf2 = b;
        s->buf_off = s->buf2_off;
        s->buf_have = s->buf2_have;
        s->eof = s->eof2;
        s->buf2_valid = 0;
        return 0;
    }
    s->buf_off = off;
    if (read_at(s, s->buf, off, &s->buf_have, &s->eof) < 0) {
        s->buf_have = 0;
        s->buf_off = -1;
        return -1;
    }
    return 0;
}

/* After a window went out: read the next window's bytes now, while the peer is busy with this
 * one (as tftpd-hpa reads ahead), unless they are in buf already or the file ended. */
static void read_ahead(tftp_session *s)
{
    if (s->last || s->buf2 == NULL || ((scratch_t *)s->scratch)->splice)
        return;
    const off_t next = s->file_start + (off_t)(s->sent_hi * s->blksize);
    const size_t len = (size_t)s->window * s->blksize;
    if (covers(s->buf_off, s->buf_have, s->eof, next, len) ||
        (s->buf2_valid && covers(s->buf2_off, s->buf2_have, s->eof2, next, len)))
        return;
    s->buf2_off = next;
    s->buf2_valid = read_at(s, s->buf2, next, &s->buf2_have, &s->eof2) == 0;
    /* a read error is not reported here: fill() meets it again when the block is due */
}

enum { SPLICE_SENT = 0, SPLICE_READ_ERROR = -1, SPLICE_FAILED = 1, SPLICE_LOST = 2 };

#define PAGE 4096u

/* Whether a datagram may take 16 spliced pages after its copied head (see splice_block).  Cleared
 * for the whole process by a kernel that sends a splice partly before refusing it (before 6.5,
 * splice sent page by page), where a refusal cannot be undone page by page. */
static int splice_16_pages = 1; /* read and written with relaxed atomics: transfers run in threads */

enum { SENT_WHOLE = 0, HEADER_REFUSED = 1, PIPE_REFUSED = 2 };

/* Open a datagram with the header and the head (MSG_MORE), then append the pipe.  On failure,
 * *err: the errno; *taken: bytes of the pipe the kernel consumed before it failed */
static int send_spliced(tftp_session *s, size_t copied, size_t in_pipe, int *err, size_t *taken)
{
    scratch_t *sc = s->scratch;
    struct iovec iov = {sc->head, 4 + copied};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_name = &s->peer;
    m.msg_namelen = s->peer_len;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    /* A UDP_SEGMENT size of at least the datagram's length cuts nothing, but it lets the kernel
     * leave the checksum to the device (loopback: none): without it, with MSG_MORE, the kernel
     * reads every spliced byte to sum it */
    union {
        uint8_t buf[CMSG_SLOT];
        struct cmsghdr align;
    } cm;
    set_udp_segment(&m, cm.buf, (uint16_t)(s->blksize + 4u));
    *taken = 0;
    ssize_t r;
    int again = 1;
    while ((r = sendmsg(s->sock, &m, MSG_MORE)) < 0) {
        if (errno == EINTR)
            continue;
        if (again && late_icmp(s, errno)) { /* an earlier datagram's error: nothing went */
            again = 0;
            continue;
        }
        break;
    }
    if (r < 0) {
        *err = errno;
        return HEADER_REFUSED;
    }
    /* The pipe holds at most 16 pages, which the kernel moves in one step: without SPLICE_F_MORE
     * that step ends the datagram once the last page is in (the kernel sets MSG_MORE itself only
     * while pages it has not taken remain) */
    ssize_t n;
    while ((n = splice(sc->pipe_rd, NULL, s->sock, NULL, in_pipe, 0)) < 0 && errno == EINTR)
        ;
    if (n == (ssize_t)in_pipe)
        return SENT_WHOLE;
    *err = n < 0 ? errno : EIO;
    if (n > 0)
        *taken = (size_t)n;
    return PIPE_REFUSED;
}

/* Drop a half-built datagram: nothing may go out later as a short (final-looking) DATA.  An
 * append of 65535 bytes never fits a datagram, and the kernel answers it by dropping what is
 * pending (and when nothing is, by the same refusal) */
static void discard_pending(tftp_session *s)
{
    scratch_t *sc = s->scratch;
    while (send(s->sock, sc->rbuf, 65535, MSG_MORE) < 0 && errno == EINTR)
        ;
}

/* One DATA packet by splice, its payload never copied whole:
 *   1. the file's bytes from the first page boundary in the block on go into the pipe (page
 *      references, not copies);
 *   2. the 4-byte header and the block's head up to that boundary (< 4 KiB, read with pread())
 *      open the datagram with MSG_MORE and name the peer;
 *   3. the pipe goes into the socket, which ends the datagram.
 * An skb holds at most 17 fragments.  The copied part takes 1, or 2 when it straddles the end of
 * the socket's fragment page, which cannot be known beforehand: a block of 65464 bytes then needs
 * 18 and the kernel refuses the pipe with EMSGSIZE, dropping the datagram.  The block is built
 * again with the pipe's first page read into the head: a head of up to 8 KiB, 15 pages spliced.
 * SPLICE_FAILED: the kernel refused the splice path (nothing of this block was sent). */
static int splice_block(tftp_session *s, uint64_t k, off_t off, size_t *plen)
{
    scratch_t *sc = s->scratch;
    const size_t bs = s->blksize;
    size_t head = (PAGE - (size_t)(off % PAGE)) % PAGE;
    if (!__atomic_load_n(&splice_16_pages, __ATOMIC_RELAXED) && bs - (head < bs ? head : bs) > 15u * PAGE)
        head += PAGE; /* at most 15 pages spliced: with the copied part (2 fragments at most), 17 */
    if (head > bs)
        head = bs;
    size_t got = 0; /* bytes in the pipe */
    loff_t from = off + (off_t)head;
    while (head + got < bs) {
        ssize_t n = splice(s->fd, &from, sc->pipe_wr, NULL, bs - head - got, SPLICE_F_MOVE);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            pipe_close(sc); /* whatever it holds is not sent */
            if (err == EINVAL || err == ENOSYS || err == EOPNOTSUPP)
                return SPLICE_FAILED; /* this file system cannot splice */
            s->error_errno = err;
            return SPLICE_READ_ERROR;
        }
        if (n == 0)
            break; /* the end of the file */
        got += (size_t)n;
    }
    uint8_t *h = sc->head;
    tftp_build_ack(h, (uint16_t)(k & 0xFFFF));
    h[1] = TFTP_DATA;
    size_t have = 0; /* head bytes read */
    while (have < head) {
        ssize_t n = pread(s->fd, h + 4 + have, head - have, off + (off_t)have);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            s->error_errno = errno;
            pipe_close(sc);
            return SPLICE_READ_ERROR;
        }
        if (n == 0)
            break;
        have += (size_t)n;
    }
    if (have < head && got) { /* the file changed under us: short head, data after it */
        pipe_close(sc);
        got = 0;
    }
    *plen = have + got;
    if (!got) { /* all of it is in the head: an ordinary packet */
        send_to(s, h, 4 + have, &s->peer, s->peer_len);
        return SPLICE_SENT; /* (or lost, as in send_window: the peer's silence resends it) */
    }
    size_t taken;
    int err;
    int fate = send_spliced(s, have, got, &err, &taken);
    if (fate == SENT_WHOLE)
        return SPLICE_SENT;
    discard_pending(s);
    if (fate == PIPE_REFUSED && err == EMSGSIZE && !taken && got > 15u * PAGE) {
        /* 18 fragments: the pipe's first page joins the head (a read from a pipe takes whole
         * buffers in order, and the pipe starts on a page boundary) */
        ssize_t n;
        while ((n = read(sc->pipe_rd, h + 4 + have, PAGE)) < 0 && errno == EINTR)
            ;
        if (n == (ssize_t)PAGE) {
            have += PAGE;
            got -= PAGE;
            fate = send_spliced(s, have, got, &err, &taken);
            if (fate == SENT_WHOLE)
                return SPLICE_SENT;
            discard_pending(s);
        }
    }
    if (taken)
        __atomic_store_n(&splice_16_pages, 0, __ATOMIC_RELAXED); /* a kernel that sends part of a splice */
    pipe_close(sc);
    if (late_icmp(s, err))
        return SPLICE_LOST; /* an earlier datagram's error, not a refusal of splice */
    if (fate == HEADER_REFUSED && err != EINVAL && err != EIO && err != ENOPROTOOPT)
        return SPLICE_LOST; /* a full socket buffer, say: the peer's silence resends it */
    return SPLICE_FAILED;
}

/* The splice path of send_window(): blocks base .. base+window-1.  Returns how many went out,
 * -1 on a read error; *failed_at: the block the kernel refused (0: none), splice is then off. */
static int64_t splice_window(tftp_session *s, off_t start, uint64_t *failed_at)
{
    scratch_t *sc = s->scratch;
    const uint32_t bs = s->blksize;
    const uint64_t base = s->base;
    uint64_t k = base;
    *failed_at = 0;
    for (; k < base + s->window; k++) {
        if (sc->pipe_rd < 0 && pipe_open(sc) < 0) {
            *failed_at = k;
            break;
        }
        size_t plen = 0;
        int r = splice_block(s, k, start + (off_t)((k - base) * bs), &plen);
        if (r == SPLICE_READ_ERROR)
            return -1;
        if (r == SPLICE_FAILED) {
            *failed_at = k;
            break;
        }
        if (plen < bs) {
            s->last = k;
            s->last_len = (uint32_t)plen;
            k++;
            break;
        }
    }
    if (*failed_at) {
        sc->splice = 0; /* from now on, pread() and sendmmsg() */
        pipe_close(sc);
    }
    s->sent_hi = k - 1;
    return (int64_t)(k - base);
}

/* Send blocks base .. base+window-1 (fewer at the end of the file) with one sendmmsg().
 * Returns how many went out, or -1 on a read error. */
static int64_t send_window(tftp_session *s)
{
    scratch_t *sc = s->scratch;
    const uint32_t bs = s->blksize;
    uint64_t base = s->base;
    int64_t before = 0;
    if (sc->splice) {
        uint64_t failed_at;
        int64_t r = splice_window(s, s->file_start + (off_t)((base - 1) * bs), &failed_at);
        if (r < 0 || !failed_at)
            return r;
        before = (int64_t)(failed_at - base); /* sent by splice; the rest by pread() */
        base = failed_at;
    }
    const off_t start = s->file_start + (off_t)((base - 1) * bs);
    const uint64_t end_block = s->base + s->window; /* one past the window */
    if (s->buf_off < 0)
        s->buf_off = 0, s->buf_have = 0;
    if (fill(s, start, (size_t)(end_block - base) * bs) < 0)
        return -1;
    unsigned npk = 0; /* packets of this window */
    for (uint64_t k = base; k < end_block; k++) {
        off_t boff = start + (off_t)((k - base) * bs);
        off_t end = s->buf_off + (off_t)s->buf_have;
        size_t plen = boff >= end ? 0 : (size_t)(end - boff) < bs ? (size_t)(end - boff) : bs;
        uint8_t *h = sc->hdrs + 4u * npk;
        tftp_build_ack(h, (uint16_t)(k & 0xFFFF));
        h[1] = TFTP_DATA;
        struct iovec *iov = sc->iov + 2u * npk;
        iov[0].iov_base = h;
        iov[0].iov_len = 4;
        iov[1].iov_base = s->buf + (boff - s->buf_off);
        iov[1].iov_len = plen;
        npk++;
        if (plen < bs) {
            s->last = k;
            s->last_len = (uint32_t)plen;
            break;
        }
    }
    unsigned done = 0; /* packets handed to the kernel, or lost to a send error (the peer's
                          silence resends those) */
    int again = 1;     /* one more try for a message after a late ICMP error */
    while (done < npk) {
        /* group the packets from `done` on into messages: GSO super-datagrams or single packets */
        unsigned nm = 0, p = done;
        const size_t seg = bs + 4u;
        while (p < npk) {
            unsigned k = 1;
            if (sc->gso)
                while (p + k < npk && k < GSO_MAX_SEGS && (k + 1) * seg <= GSO_MAX_BYTES)
                    k++;
            struct msghdr *m = &sc->msgs[nm].msg_hdr;
            memset(m, 0, sizeof *m);
            m->msg_name = &s->peer;
            m->msg_namelen = s->peer_len;
            m->msg_iov = sc->iov + 2u * p;
            m->msg_iovlen = 2u * k;
            if (k > 1)
                set_udp_segment(m, sc->cmsgs + (size_t)nm * CMSG_SLOT, (uint16_t)seg);
            sc->segs[nm] = k;
            nm++;
            p += k;
        }
        int r = sendmmsg(s->sock, sc->msgs, nm, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
                break; /* the rest goes after a timeout or a gap */
            if (late_icmp(s, errno)) { /* an earlier datagram's error: none of these went */
                if (again) {
                    again = 0;
                    continue;
                }
            } else if (sc->gso && sc->segs[0] > 1) {
                sc->gso = 0; /* no UDP GSO here (old kernel, odd route): single packets from now on */
                continue;
            }
            done += sc->segs[0]; /* lost: a timeout resends it */
            again = 1;
            continue;
        }
        for (int i = 0; i < r; i++)
            done += sc->segs[i];
        again = 1;
    }
    s->sent_hi = base + done - 1;
    return before + (int64_t)done;
}

/* Send the window again (a timeout, or the ACK of the block before it: a gap at its first
 * block).  With TFTP_ENGINE_FLAG_GUARD_FIRST (the server), until the peer has acknowledged a
 * DATA block the whole window goes again once, and after that only its first block: a request
 * from a forged address, whose ACK of the OACK a blind sender can guess, would otherwise make
 * every retry send a whole window (up to a MiB) to the address it names.  One loss in the first
 * window costs a real peer nothing; after a second, it asks for the rest by ACKing block 1. */
static int64_t resend_window(tftp_session *s)
{
    scratch_t *sc = s->scratch;
    if (!(s->flags & TFTP_ENGINE_FLAG_GUARD_FIRST) || sc->data_acked || s->window == 1 || !sc->early_resent) {
        sc->early_resent = 1;
        return send_window(s);
    }
    const uint32_t window = s->window;
    const uint64_t sent_hi = s->sent_hi;
    s->window = 1;
    int64_t r = send_window(s);
    s->window = window;
    if (s->sent_hi < sent_hi)
        s->sent_hi = sent_hi; /* an ACK for any block sent before is still good */
    return r;
}

static int run_sender(tftp_session *s)
{
    scratch_t *sc = s->scratch;
    const int oack = s->first_len > 0;
    int64_t r;
    if (!s->started) {
        s->started = 1;
        s->wait = s->timeout;
        s->buf_off = -1;
        if (oack) {
            if (!s->first_sent)
                send_to(s, s->first, s->first_len, &s->peer, s->peer_len);
            s->first_sent = 1;
        } else if (send_window(s) < 0) {
            return s->outcome = TFTP_ENGINE_IO_ERROR;
        } else {
            read_ahead(s);
        }
        s->deadline = now_s() + s->wait;
    }
    for (;;) {
        if (s->cancel)
            return s->outcome = TFTP_ENGINE_CANCELLED;
        if (s->icmp && peer_refused(s))
            return refused_outcome(s, sc->rbuf, SENDER_RBUF);
        double t = now_s();
        if (s->report_interval > 0 && t >= s->next_report) {
            s->next_report = t + s->report_interval;
            return TFTP_ENGINE_PROGRESS;
        }
        if (t >= s->deadline) {
            if (++s->tries > s->retries)
                return s->outcome = TFTP_ENGINE_TIMEOUT;
            s->wait *= 2;
            if (s->wait > s->timeout * s->max_backoff)
                s->wait = s->timeout * s->max_backoff;
            if (s->first_len) {
                s->retransmissions++;
                send_to(s, s->first, s->first_len, &s->peer, s->peer_len);
            } else {
                if ((r = resend_window(s)) < 0)
                    return s->outcome = TFTP_ENGINE_IO_ERROR;
                s->retransmissions += (uint64_t)r;
            }
            s->deadline = t + s->wait;
            continue;
        }
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        ssize_t n = recvfrom(s->sock, sc->rbuf, SENDER_RBUF, 0, (struct sockaddr *)&from, &fromlen);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || late_icmp(s, errno))
                continue; /* an ICMP error: peer_refused() reads it next */
            s->error_errno = errno;
            return s->outcome = TFTP_ENGINE_SOCK_ERROR;
        }
        const uint8_t *p = sc->rbuf;
        if (!same_addr(&from, fromlen, &s->peer)) {
            stray(s, p, (size_t)n, &from, fromlen);
            continue;
        }
        if (n == 4 && p[0] == 0 && p[1] == TFTP_ACK) {
            uint16_t block = (uint16_t)((p[2] << 8) | p[3]);
            if (s->first_len) { /* waiting for the ACK of our OACK */
                if (block == 0) {
                    s->first_len = 0;
                    progress(s, t);
                    if (send_window(s) < 0)
                        return s->outcome = TFTP_ENGINE_IO_ERROR;
                    read_ahead(s);
                }
                continue;
            }
            uint64_t delta = (uint16_t)(block - s->base + 1);
            if (delta > 0 && delta <= s->sent_hi - s->base + 1) {
                sc->data_acked = 1;
                s->base += delta;
                s->blocks = s->base - 1;
                s->bytes = (s->base - 1) * (uint64_t)s->blksize;
                progress(s, t);
                if (s->last && s->base > s->last) {
                    s->blocks = s->last;
                    s->bytes = (s->last - 1) * (uint64_t)s->blksize + s->last_len;
                    return s->outcome = TFTP_ENGINE_DONE;
                }
                s->dup_resent = 0;
                if (send_window(s) < 0)
                    return s->outcome = TFTP_ENGINE_IO_ERROR;
                read_ahead(s);
            } else if (delta == 0 && s->window > 1 && !s->dup_resent) {
                /* RFC 7440: the receiver saw a gap at the window's first block: resend, once */
                s->dup_resent = 1;
                if ((r = resend_window(s)) < 0)
                    return s->outcome = TFTP_ENGINE_IO_ERROR;
                s->retransmissions += (uint64_t)r;
            }
            /* else a duplicate ACK: ignored (RFC 1123, no Sorcerer's Apprentice) */
            continue;
        }
        int o = other_packet(s, p, (size_t)n);
        if (o >= 0)
            return o;
    }
}

/* ------------------------------------------------------------------ receiver */

static int write_all(tftp_session *s, const uint8_t *p, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(s->fd, p + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            s->error_errno = errno;
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

/* The direct payloads gathered so far, in one writev(): they point into the receive slots, so
 * this runs before the slots are read into again.  A short write goes on from where it ended. */
static int write_pending(tftp_session *s)
{
    scratch_t *sc = s->scratch;
    struct iovec *v = sc->pending;
    unsigned n = sc->npending;
    sc->npending = 0;
    while (n > 0) {
        ssize_t w = writev(s->fd, v, (int)n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            s->error_errno = errno;
            return -1;
        }
        size_t done = (size_t)w;
        while (n > 0 && done >= v->iov_len) {
            done -= v->iov_len;
            v++;
            n--;
        }
        if (n > 0) {
            v->iov_base = (uint8_t *)v->iov_base + done;
            v->iov_len -= done;
        }
    }
    return 0;
}

static int write_stage(tftp_session *s)
{
    if (s->stage_have && write_all(s, s->stage, s->stage_have) < 0)
        return -1;
    s->stage_have = 0;
    return 0;
}

/* Everything received and counted goes to the file (the two kinds of buffering are never both
 * non-empty: each flushes the other before it takes a payload). */
static int flush_stage(tftp_session *s)
{
    return write_pending(s) < 0 ? -1 : write_stage(s);
}

static int stage_write(tftp_session *s, const uint8_t *p, size_t n)
{
    scratch_t *sc = s->scratch;
    if (n >= DIRECT_WRITE) {
        /* a big block is written from its slot, not copied through the stage; the blocks of one
         * recvmmsg() go in one writev(), which also fills the pages two blocks share in one go */
        if (write_stage(s) < 0)
            return -1;
        sc->pending[sc->npending].iov_base = (void *)p;
        sc->pending[sc->npending].iov_len = n;
        s->bytes += n;
        if (++sc->npending == PENDING_MAX && write_pending(s) < 0)
            return -1;
        return 0;
    }
    if (sc->npending && write_pending(s) < 0) /* the big blocks before this one go first */
        return -1;
    if (s->stage_have + n > s->stage_cap && write_stage(s) < 0)
        return -1;
    memcpy(s->stage + s->stage_have, p, n);
    s->stage_have += n;
    s->bytes += n;
    return 0;
}

/* One datagram from the peer: returns an outcome, or -1 to go on. */
static int datagram(tftp_session *s, const uint8_t *p, size_t n, double t)
{
    if (n >= 4 && p[0] == 0 && p[1] == TFTP_DATA) {
        uint16_t block = (uint16_t)((p[2] << 8) | p[3]);
        size_t plen = n - 4;
        if (plen > s->blksize) {
            /* longer than the negotiated blksize, from the peer's TID: a broken peer, whose
             * transfer would only stall (dropping it, then timing out), so the caller answers it */
            if (flush_stage(s) < 0)
                return s->outcome = TFTP_ENGINE_IO_ERROR;
            return stop(s, p, n);
        }
        if (block == (uint16_t)s->base) {
            if (stage_write(s, p + 4, plen) < 0)
                return s->outcome = TFTP_ENGINE_IO_ERROR;
            s->base++;
            s->blocks++;
            s->in_window++;
            s->gap_acked = 0;
            progress(s, t);
            if (plen < s->blksize) {
                if (flush_stage(s) < 0)
                    return s->outcome = TFTP_ENGINE_IO_ERROR;
                if (s->flags & TFTP_ENGINE_FLAG_ACK_LAST)
                    send_ack(s, block);
                return s->outcome = TFTP_ENGINE_DONE;
            }
            if (s->in_window >= s->window) {
                /* The ACK goes first, then the window's big blocks go to the file (in
                 * run_receiver, before the slots are read into again): the sender's next window
                 * is on its way while they are written, as tftpd-hpa's write-behind does.  A
                 * failed write still ends the transfer with an ERROR at once, and the last
                 * block (above) is always written before its ACK: an ACKed upload is complete. */
                s->in_window = 0;
                send_ack(s, block);
            }
        } else if (s->window == 1) {
            if (s->base > 1 && block == (uint16_t)(s->base - 1))
                send_ack(s, s->base - 1); /* our ACK was lost: ACK again */
        } else if (!s->gap_acked && (uint16_t)(block - s->base) < s->window) {
            /* a gap inside the window (RFC 7440): ACK the last good block, once */
            s->gap_acked = 1;
            s->in_window = 0;
            if (write_pending(s) < 0)
                return s->outcome = TFTP_ENGINE_IO_ERROR;
            send_ack(s, s->base - 1);
            s->retransmissions++;
        }
        return -1;
    }
    int o = other_packet(s, p, n);
    if (o >= 0 && flush_stage(s) < 0)
        return s->outcome = TFTP_ENGINE_IO_ERROR;
    return o;
}

static int run_receiver(tftp_session *s)
{
    scratch_t *sc = s->scratch;
    if (!s->started) {
        s->started = 1;
        s->wait = s->timeout;
        if (!s->first_sent && s->first_len)
            send_to(s, s->first, s->first_len, &s->peer, s->peer_len);
        s->first_sent = 1;
        s->deadline = now_s() + s->wait;
    }
    const unsigned nslots = s->nslots;
    for (;;) {
        if (s->cancel)
            return s->outcome = TFTP_ENGINE_CANCELLED;
        if (s->icmp && peer_refused(s)) { /* what was counted goes to the file, as on a timeout */
            if (flush_stage(s) < 0)
                return s->outcome = TFTP_ENGINE_IO_ERROR;
            return refused_outcome(s, s->buf, s->slot); /* the slots are written out: free */
        }
        double t = now_s();
        if (s->report_interval > 0 && t >= s->next_report) {
            s->next_report = t + s->report_interval;
            return TFTP_ENGINE_PROGRESS;
        }
        if (t >= s->deadline) {
            if (++s->tries > s->retries) {
                if (flush_stage(s) < 0)
                    return s->outcome = TFTP_ENGINE_IO_ERROR;
                return s->outcome = TFTP_ENGINE_TIMEOUT;
            }
            s->wait *= 2;
            if (s->wait > s->timeout * s->max_backoff)
                s->wait = s->timeout * s->max_backoff;
            s->retransmissions++;
            if (s->base == 1 && s->first_len)
                send_to(s, s->first, s->first_len, &s->peer, s->peer_len);
            else
                send_ack(s, s->base - 1);
            s->in_window = 0;
            s->deadline = t + s->wait;
            continue;
        }
        for (unsigned i = 0; i < nslots; i++) {
            struct msghdr *m = &sc->msgs[i].msg_hdr;
            sc->iov[i].iov_base = s->buf + (size_t)i * s->slot;
            sc->iov[i].iov_len = s->slot;
            m->msg_name = &sc->addrs[i];
            m->msg_namelen = sizeof sc->addrs[i];
            m->msg_iov = &sc->iov[i];
            m->msg_iovlen = 1;
            m->msg_control = sc->gro ? sc->cmsgs + (size_t)i * CMSG_SLOT : NULL;
            m->msg_controllen = sc->gro ? CMSG_SLOT : 0;
            m->msg_flags = 0;
        }
        int got = recvmmsg(s->sock, sc->msgs, nslots, MSG_WAITFORONE, NULL);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || late_icmp(s, errno))
                continue; /* an ICMP error: peer_refused() reads it next */
            s->error_errno = errno;
            return s->outcome = TFTP_ENGINE_SOCK_ERROR;
        }
        for (int i = 0; i < got; i++) {
            const uint8_t *p = s->buf + (size_t)i * s->slot;
            size_t n = sc->msgs[i].msg_len;
            struct msghdr *m = &sc->msgs[i].msg_hdr;
            if (!same_addr(&sc->addrs[i], m->msg_namelen, &s->peer)) {
                stray(s, p, n, &sc->addrs[i], m->msg_namelen);
                continue;
            }
            if (m->msg_flags & MSG_TRUNC) {
                if (n < 2 || p[0] != 0 || p[1] != TFTP_DATA)
                    continue; /* not a DATA: too long for anything of this transfer, dropped */
                /* a DATA longer than any of this blksize: see datagram() */
                if (flush_stage(s) < 0)
                    return s->outcome = TFTP_ENGINE_IO_ERROR;
                return stop(s, p, n);
            }
            size_t seg = n;
            if (sc->gro) { /* several datagrams coalesced by the kernel: cut them apart */
                for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
                    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                        int g;
                        memcpy(&g, CMSG_DATA(c), sizeof g);
                        if (g > 0)
                            seg = (size_t)g;
                    }
                }
            }
            for (size_t off = 0; off < n || (off == 0 && n == 0); off += seg) {
                size_t len = n - off < seg ? n - off : seg;
                int o = datagram(s, p + off, len, t);
                if (o >= 0)
                    return o;
                if (seg == 0)
                    break;
            }
        }
        if (write_pending(s) < 0) /* before the slots are read into again */
            return s->outcome = TFTP_ENGINE_IO_ERROR;
    }
}

int tftp_session_run(tftp_session *s)
{
    if (s->scratch == NULL) {
        s->error_errno = EINVAL;
        return s->outcome = TFTP_ENGINE_IO_ERROR;
    }
    if (s->outcome != TFTP_ENGINE_RUNNING)
        return s->outcome;
    return s->role == TFTP_ENGINE_SENDER ? run_sender(s) : run_receiver(s);
}
