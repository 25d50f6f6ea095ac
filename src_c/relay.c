/* Echo relay loop (see relay.h). */
#include "relay.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct relay_conn {
    struct relay_conn *prev, *next; /* every open connection, so that stopping closes them */
    int fd;
    uint32_t off;          /* first byte of pend not yet sent */
    uint32_t len;          /* bytes in pend */
    unsigned char *pend;   /* rest of a partial send, NULL when drained */
} relay_conn;

/* epoll_event.data.ptr is a relay_conn*, or one of these tags */
static char tag_listen, tag_stop, tag_signal;

typedef struct {
    int ep;
    int fd;
    relay_stats *stats;
    unsigned char *buf;
    int accept_paused;
    uint64_t resume_at_ms;
    relay_conn *conns;
} relay_loop;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int watch(relay_loop *L, int op, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.ptr = ptr;
    return epoll_ctl(L->ep, op, fd, &ev);
}

static void resume_accept(relay_loop *L)
{
    if (L->accept_paused) {
        L->accept_paused = 0;
        watch(L, EPOLL_CTL_MOD, L->fd, EPOLLIN, &tag_listen);
    }
}

static void conn_close(relay_loop *L, relay_conn *c)
{
    /* close() removes the fd from the epoll set: it is never dup'ed */
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        L->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->pend);
    free(c);
    resume_accept(L); /* a descriptor just became free */
}

static void on_accept(relay_loop *L)
{
    for (int i = 0; i < 256; i++) {
        int fd = accept4(L->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            switch (errno) {
            case EAGAIN:
#if EAGAIN != EWOULDBLOCK
            case EWOULDBLOCK:
#endif
                return;
            case EINTR:
            case ECONNABORTED:
            case EPROTO:
            case EPERM:
                continue;
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                /* The listening socket stays readable: stop watching it for a while. */
                L->accept_paused = 1;
                L->resume_at_ms = now_ms() + RELAY_ACCEPT_BACKOFF_MS;
                L->stats->accept_pauses++;
                watch(L, EPOLL_CTL_MOD, L->fd, 0, &tag_listen);
                return;
            default:
                return;
            }
        }
        relay_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (watch(L, EPOLL_CTL_ADD, fd, EPOLLIN, c) < 0) {
            close(fd);
            free(c);
            continue;
        }
        c->next = L->conns;
        if (L->conns)
            L->conns->prev = c;
        L->conns = c;
        L->stats->connections++;
    }
}

/* Send what is pending; 1 when drained, 0 when the socket is full, -1 on error. */
static int drain(relay_conn *c, relay_stats *stats)
{
    while (c->off < c->len) {
        ssize_t w = send(c->fd, c->pend + c->off, c->len - c->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        c->off += (uint32_t)w;
        stats->bytes += (uint64_t)w;
    }
    free(c->pend);
    c->pend = NULL;
    c->off = c->len = 0;
    return 1;
}

static void on_conn(relay_loop *L, relay_conn *c, uint32_t events)
{
    if (c->pend) {
        /* paused: only EPOLLOUT (and ERR/HUP) is watched */
        int r = drain(c, L->stats);
        if (r < 0)
            conn_close(L, c);
        else if (r > 0 && watch(L, EPOLL_CTL_MOD, c->fd, EPOLLIN, c) < 0)
            conn_close(L, c);
        return;
    }
    (void)events;
    ssize_t n;
    do {
        n = recv(c->fd, L->buf, RELAY_BUF_SIZE, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_close(L, c); /* EOF: everything read before it was already echoed */
        return;
    }
    L->stats->messages++;
    ssize_t w;
    do {
        w = send(c->fd, L->buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (w < 0 && errno == EINTR);
    if (w == n) {
        L->stats->bytes += (uint64_t)n;
        return;
    }
    if (w < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            conn_close(L, c);
            return;
        }
        w = 0;
    }
    L->stats->bytes += (uint64_t)w;
    c->len = (uint32_t)(n - w);
    c->off = 0;
    c->pend = malloc(c->len);
    if (!c->pend) {
        conn_close(L, c);
        return;
    }
    memcpy(c->pend, L->buf + w, c->len);
    /* stop reading until the rest is out: bounded memory, order kept */
    if (watch(L, EPOLL_CTL_MOD, c->fd, EPOLLOUT, c) < 0)
        conn_close(L, c);
}

typedef struct {
    struct mmsghdr rmsg[RELAY_UDP_BATCH];
    struct mmsghdr smsg[RELAY_UDP_BATCH];
    struct iovec riov[RELAY_UDP_BATCH];
    struct iovec siov[RELAY_UDP_BATCH];
    struct sockaddr_storage addr[RELAY_UDP_BATCH];
} udp_batch;

static void on_udp(relay_loop *L, udp_batch *B)
{
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < RELAY_UDP_BATCH; i++) {
            B->riov[i].iov_base = L->buf + (size_t)i * RELAY_UDP_MAX;
            B->riov[i].iov_len = RELAY_UDP_MAX;
            memset(&B->rmsg[i].msg_hdr, 0, sizeof(B->rmsg[i].msg_hdr));
            B->rmsg[i].msg_hdr.msg_name = &B->addr[i];
            B->rmsg[i].msg_hdr.msg_namelen = sizeof(B->addr[i]);
            B->rmsg[i].msg_hdr.msg_iov = &B->riov[i];
            B->rmsg[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(L->fd, B->rmsg, RELAY_UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                continue; /* e.g. a pending ICMP error: try again, bounded by round */
            return;
        }
        for (int i = 0; i < n; i++) {
            B->siov[i].iov_base = B->riov[i].iov_base;
            B->siov[i].iov_len = B->rmsg[i].msg_len;
            memset(&B->smsg[i].msg_hdr, 0, sizeof(B->smsg[i].msg_hdr));
            B->smsg[i].msg_hdr.msg_name = &B->addr[i];
            B->smsg[i].msg_hdr.msg_namelen = B->rmsg[i].msg_hdr.msg_namelen;
            B->smsg[i].msg_hdr.msg_iov = &B->siov[i];
            B->smsg[i].msg_hdr.msg_iovlen = 1;
        }
        int sent = 0;
        while (sent < n) {
            int r = sendmmsg(L->fd, B->smsg + sent, (unsigned)(n - sent), MSG_DONTWAIT);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    L->stats->dropped += (uint64_t)(n - sent);
                    break;
                }
                L->stats->dropped++; /* this datagram cannot go back: skip it */
                sent++;
                continue;
            }
            for (int i = sent; i < sent + r; i++) {
                L->stats->messages++;
                L->stats->bytes += B->smsg[i].msg_len;
            }
            sent += r;
        }
        if (n < RELAY_UDP_BATCH)
            return;
    }
}

/* 1 when the signal wakeup pipe carried SIGINT or SIGTERM (other signals' bytes are dropped). */
static int stop_signal_arrived(int signal_fd)
{
    unsigned char sigs[64];
    ssize_t n;
    int stop = 0;
    while ((n = read(signal_fd, sigs, sizeof(sigs))) > 0)
        for (ssize_t i = 0; i < n; i++)
            if (sigs[i] == SIGINT || sigs[i] == SIGTERM)
                stop = 1;
    return stop;
}

int relay_serve(int fd, int udp, int stop_fd, int signal_fd, relay_stats *stats)
{
    relay_loop L;
    memset(&L, 0, sizeof(L));
    L.fd = fd;
    L.stats = stats;
    udp_batch *B = NULL;
    int rc = -1, saved = 0;

    L.ep = epoll_create1(EPOLL_CLOEXEC);
    if (L.ep < 0)
        return -1;
    L.buf = malloc(udp ? (size_t)RELAY_UDP_BATCH * RELAY_UDP_MAX : RELAY_BUF_SIZE);
    if (udp)
        B = calloc(1, sizeof(*B));
    if (!L.buf || (udp && !B)) {
        errno = ENOMEM;
        goto out;
    }
    if (watch(&L, EPOLL_CTL_ADD, fd, EPOLLIN, &tag_listen) < 0)
        goto out;
    if (stop_fd >= 0 && watch(&L, EPOLL_CTL_ADD, stop_fd, EPOLLIN, &tag_stop) < 0)
        goto out;
    if (signal_fd >= 0 && watch(&L, EPOLL_CTL_ADD, signal_fd, EPOLLIN, &tag_signal) < 0)
        goto out;

    struct epoll_event events[256];
    for (;;) {
        int timeout = -1;
        if (L.accept_paused) {
            uint64_t now = now_ms();
            if (now >= L.resume_at_ms) {
                resume_accept(&L);
            } else {
                timeout = (int)(L.resume_at_ms - now);
            }
        }
        int n = epoll_wait(L.ep, events, 256, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            goto out;
        }
        for (int i = 0; i < n; i++) {
            void *p = events[i].data.ptr;
            if (p == &tag_stop || (p == &tag_signal && stop_signal_arrived(signal_fd))) {
                rc = 0;
                goto out;
            }
            if (p == &tag_signal)
                continue;
            if (p == &tag_listen) {
                if (udp)
                    on_udp(&L, B);
                else
                    on_accept(&L);
                continue;
            }
            on_conn(&L, (relay_conn *)p, events[i].events);
        }
    }

out:
    saved = errno;
    while (L.conns) {
        relay_conn *c = L.conns;
        L.conns = c->next;
        close(c->fd);
        free(c->pend);
        free(c);
    }
    if (L.ep >= 0)
        close(L.ep);
    free(L.buf);
    free(B);
    errno = saved;
    return rc;
}
