/* Closed-loop echo load generator (see loadgen.h).  Single thread, level-triggered epoll. */
#include "loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- message contents */

static unsigned char pattern[LG_PATTERN_SIZE];
static int pattern_ready;

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

const unsigned char *lg_pattern(void)
{
    if (!pattern_ready) {
        uint64_t state = 0x66617374u; /* "fast" */
        for (size_t i = 0; i < LG_PATTERN_SIZE; i += 8) {
            uint64_t v = splitmix64(&state);
            for (int k = 0; k < 8; k++)
                pattern[i + k] = (unsigned char)(v >> (8 * k));
        }
        pattern_ready = 1;
    }
    return pattern;
}

static uint64_t message_stamp(uint32_t conn, uint64_t seq)
{
    return ((uint64_t)conn << 40) | (seq & 0xFFFFFFFFFFull);
}

/* Offset into the pattern where message (conn, seq)'s body starts: differs from message to
 * message, so a reordered or repeated message does not compare equal. */
static size_t body_start(uint32_t conn, uint64_t seq)
{
    return (size_t)((seq * 2654435761ull + (uint64_t)conn * 40503ull) % LG_PATTERN_SIZE);
}

void lg_fill_message(unsigned char *dst, uint32_t conn, uint64_t seq, size_t size, size_t off, size_t len)
{
    const unsigned char *pat = lg_pattern();
    uint64_t stamp = message_stamp(conn, seq);
    size_t end = off + len;
    if (end > size)
        end = size;
    while (off < end && off < LG_STAMP_SIZE) {
        *dst++ = (unsigned char)(stamp >> (8 * off));
        off++;
    }
    if (off >= end)
        return;
    size_t p = (body_start(conn, seq) + (off - LG_STAMP_SIZE)) % LG_PATTERN_SIZE;
    size_t left = end - off;
    while (left) {
        size_t chunk = LG_PATTERN_SIZE - p;
        if (chunk > left)
            chunk = left;
        memcpy(dst, pat + p, chunk);
        dst += chunk;
        left -= chunk;
        p = 0;
    }
}

/* ---------------------------------------------------------------- latency histogram */

typedef struct {
    uint64_t counts[LG_HIST_BUCKETS];
    uint64_t n, min, max;
    double sum;
} hist;

static int hist_index(uint64_t v)
{
    if (v < LG_HIST_SUB)
        return (int)v;
    int e = 63 - __builtin_clzll(v);
    int sub = (int)((v >> (e - 5)) & (LG_HIST_SUB - 1));
    return (e - 4) * LG_HIST_SUB + sub;
}

static double hist_value(int index)
{
    if (index < LG_HIST_SUB)
        return (double)index;
    int e = index / LG_HIST_SUB + 4;
    int sub = index % LG_HIST_SUB;
    double lo = (double)((uint64_t)(LG_HIST_SUB + sub) << (e - 5));
    double width = (double)(1ull << (e - 5));
    return lo + width / 2;
}

static void hist_add(hist *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->n++;
    h->sum += (double)v;
}

static double hist_quantile_us(const hist *h, double q)
{
    if (h->n == 0)
        return 0.0;
    uint64_t rank = (uint64_t)(q * (double)h->n);
    if (rank >= h->n)
        rank = h->n - 1;
    uint64_t seen = 0;
    for (int i = 0; i < LG_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen > rank) {
            double v = hist_value(i);
            if (v < (double)h->min)
                v = (double)h->min;
            if (v > (double)h->max)
                v = (double)h->max;
            return v / 1000.0;
        }
    }
    return (double)h->max / 1000.0;
}

/* ---------------------------------------------------------------- plumbing */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

typedef union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
} any_addr;

static int make_addr(const lg_config *cfg, any_addr *addr, socklen_t *len)
{
    memset(addr, 0, sizeof(*addr));
    if (cfg->family == AF_INET6) {
        addr->in6.sin6_family = AF_INET6;
        addr->in6.sin6_port = htons((uint16_t)cfg->port);
        if (inet_pton(AF_INET6, cfg->ip, &addr->in6.sin6_addr) != 1)
            return -1;
        *len = sizeof(addr->in6);
    } else {
        addr->in4.sin_family = AF_INET;
        addr->in4.sin_port = htons((uint16_t)cfg->port);
        if (inet_pton(AF_INET, cfg->ip, &addr->in4.sin_addr) != 1)
            return -1;
        *len = sizeof(addr->in4);
    }
    return 0;
}

/* A non-blocking socket whose connect() is started, never waited for: a listener whose accept
 * queue is full drops our SYNs, and a blocking connect() would then retry them for minutes, far
 * past the run's deadline.  *pending is 1 while the handshake is under way (the socket turns
 * writable when it is over, see connect_error()).  -1 with errno on failure. */
static int start_connect(const lg_config *cfg, const any_addr *addr, socklen_t len, int *pending)
{
    int fd = socket(cfg->family, (cfg->udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (!cfg->udp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    *pending = 0;
    if (connect(fd, &addr->sa, len) < 0) {
        /* EINTR leaves the handshake going on in the kernel, just like EINPROGRESS */
        if (errno == EINPROGRESS || errno == EINTR) {
            *pending = 1;
            return fd;
        }
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Once a pending connect's socket is writable (or in error): 0 if it connected, else its errno. */
static int connect_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    return err;
}

static void set_error(lg_result *r, int err, const char *what)
{
    r->err = err;
    snprintf(r->errmsg, sizeof(r->errmsg), "%s: %s", what, strerror(err));
}

#define RBUF_SIZE (256u * 1024u)

typedef struct {
    int fd;
    uint32_t id;
    int dead;
    int connecting;   /* a reconnect under way: its outcome arrives as EPOLLOUT */
    int want_out;
    /* TCP */
    int sending;
    uint64_t send_seq;
    size_t send_off;
    uint64_t recv_seq;
    size_t recv_off;
    int recv_bad;
    uint64_t last_progress; /* when a byte last came back (or the connection (re)started) */
    uint64_t *starts; /* pipeline slots: start time of message seq is starts[seq % pipeline] */
    unsigned char *sbuf;
    /* UDP */
    uint64_t *slot_seq;
    int *slot_active;
} lg_conn;

typedef struct {
    const lg_config *cfg;
    lg_result *res;
    hist *h;
    int ep;
    any_addr addr;
    socklen_t addrlen;
    lg_conn *conns;
    unsigned char *rbuf;
    unsigned char *ebuf;
    int alive;
} lg_state;

static void conn_close(lg_state *st, lg_conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(st->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
}

static int conn_register(lg_state *st, lg_conn *c, uint32_t index)
{
    struct epoll_event ev = {.events = EPOLLIN | (c->connecting ? EPOLLOUT : 0), .data.u32 = index};
    c->want_out = c->connecting;
    return epoll_ctl(st->ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void conn_want_out(lg_state *st, lg_conn *c, uint32_t index, int want)
{
    if (c->want_out == want)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u32 = index};
    epoll_ctl(st->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want;
}

/* ---------------------------------------------------------------- TCP */

static void tcp_fail(lg_state *st, lg_conn *c, uint32_t index);

static void tcp_pump_send(lg_state *st, lg_conn *c, uint32_t index)
{
    const lg_config *cfg = st->cfg;
    for (;;) {
        if (!c->sending) {
            if (c->send_seq - c->recv_seq >= (uint64_t)cfg->pipeline)
                break;
            lg_fill_message(c->sbuf, c->id, c->send_seq, cfg->size, 0, cfg->size);
            c->starts[c->send_seq % (uint64_t)cfg->pipeline] = now_ns();
            c->sending = 1;
            c->send_off = 0;
        }
        ssize_t n = send(c->fd, c->sbuf + c->send_off, cfg->size - c->send_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                conn_want_out(st, c, index, 1);
                return;
            }
            if (errno == EINTR)
                continue;
            tcp_fail(st, c, index);
            return;
        }
        c->send_off += (size_t)n;
        if (c->send_off == cfg->size) {
            c->sending = 0;
            c->send_seq++;
        }
    }
    conn_want_out(st, c, index, 0);
}

static void tcp_give_up(lg_state *st, lg_conn *c)
{
    st->res->errors++;
    conn_close(st, c);
    c->connecting = 0;
    c->dead = 1;
    st->alive--;
}

/* A reconnect's handshake is over: resume the load, or give the connection up. */
static void tcp_connect_done(lg_state *st, lg_conn *c, uint32_t index)
{
    if (connect_error(c->fd) != 0) {
        tcp_give_up(st, c);
        return;
    }
    c->connecting = 0;
    c->last_progress = now_ns();
    tcp_pump_send(st, c, index);
}

/* An error or EOF from the server: count it, abandon what was in flight, reconnect once.  The
 * reconnect is not waited for here, so a server that stops completing handshakes holds up
 * neither the other connections nor the end of the run. */
static void tcp_fail(lg_state *st, lg_conn *c, uint32_t index)
{
    st->res->errors++;
    conn_close(st, c);
    c->sending = 0;
    c->send_off = 0;
    c->recv_seq = c->send_seq;
    c->recv_off = 0;
    c->recv_bad = 0;
    c->last_progress = now_ns();
    c->fd = start_connect(st->cfg, &st->addr, st->addrlen, &c->connecting);
    if (c->fd < 0)
        c->connecting = 0;
    if (c->fd < 0 || conn_register(st, c, index) < 0) {
        if (c->fd >= 0)
            close(c->fd);
        c->fd = -1;
        tcp_give_up(st, c);
        return;
    }
    if (!c->connecting)
        tcp_pump_send(st, c, index);
}

static void tcp_readable(lg_state *st, lg_conn *c, uint32_t index)
{
    const lg_config *cfg = st->cfg;
    for (int rounds = 0; rounds < 4; rounds++) {
        ssize_t n = recv(c->fd, st->rbuf, RBUF_SIZE, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            tcp_fail(st, c, index);
            return;
        }
        if (n == 0) {
            tcp_fail(st, c, index);
            return;
        }
        st->res->bytes += (uint64_t)n;
        c->last_progress = now_ns();
        const unsigned char *p = st->rbuf;
        size_t left = (size_t)n;
        while (left) {
            /* bytes the server may legitimately send back now: what we sent and did not get yet */
            uint64_t in_flight_msgs = c->send_seq - c->recv_seq;
            size_t owed = (size_t)(in_flight_msgs * cfg->size) - c->recv_off + (c->sending ? c->send_off : 0);
            if (owed == 0) {
                st->res->mismatches++; /* bytes nobody sent: the server made them up */
                break;
            }
            size_t chunk = cfg->size - c->recv_off;
            if (chunk > left)
                chunk = left;
            if (chunk > owed)
                chunk = owed;
            lg_fill_message(st->ebuf, c->id, c->recv_seq, cfg->size, c->recv_off, chunk);
            if (memcmp(st->ebuf, p, chunk) != 0)
                c->recv_bad = 1;
            p += chunk;
            left -= chunk;
            c->recv_off += chunk;
            if (c->recv_off == cfg->size) {
                uint64_t t = now_ns();
                hist_add(st->h, t - c->starts[c->recv_seq % (uint64_t)cfg->pipeline]);
                st->res->requests++;
                if (c->recv_bad)
                    st->res->mismatches++;
                c->recv_bad = 0;
                c->recv_off = 0;
                c->recv_seq++;
            }
        }
        if ((size_t)n < RBUF_SIZE)
            break;
    }
    tcp_pump_send(st, c, index);
}

/* ---------------------------------------------------------------- UDP */

static void udp_send_new(lg_state *st, lg_conn *c, int slot, uint64_t now)
{
    const lg_config *cfg = st->cfg;
    uint64_t seq = c->send_seq++;
    c->slot_seq[slot] = seq;
    c->slot_active[slot] = 1;
    c->starts[slot] = now;
    lg_fill_message(c->sbuf, c->id, seq, cfg->size, 0, cfg->size);
    if (send(c->fd, c->sbuf, cfg->size, 0) < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        st->res->errors++; /* e.g. ECONNREFUSED from an earlier ICMP: the timeout resends */
}

static void udp_readable(lg_state *st, lg_conn *c)
{
    const lg_config *cfg = st->cfg;
    for (int rounds = 0; rounds < 64; rounds++) {
        ssize_t n = recv(c->fd, st->rbuf, RBUF_SIZE, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno != EINTR)
                st->res->errors++;
            continue;
        }
        uint64_t t = now_ns();
        if ((size_t)n < LG_STAMP_SIZE) {
            st->res->mismatches++;
            continue;
        }
        uint64_t stamp = 0;
        for (int k = 0; k < 8; k++)
            stamp |= (uint64_t)st->rbuf[k] << (8 * k);
        int slot = -1;
        for (int s = 0; s < cfg->pipeline; s++) {
            if (c->slot_active[s] && message_stamp(c->id, c->slot_seq[s]) == stamp) {
                slot = s;
                break;
            }
        }
        if (slot < 0) {
            if ((stamp >> 40) == c->id && (stamp & 0xFFFFFFFFFFull) < (c->send_seq & 0xFFFFFFFFFFull))
                st->res->late++;
            else
                st->res->mismatches++;
            continue;
        }
        st->res->bytes += (uint64_t)n;
        st->res->requests++;
        hist_add(st->h, t - c->starts[slot]);
        if ((size_t)n != cfg->size) {
            st->res->mismatches++;
        } else {
            lg_fill_message(st->ebuf, c->id, c->slot_seq[slot], cfg->size, 0, cfg->size);
            if (memcmp(st->ebuf, st->rbuf, cfg->size) != 0)
                st->res->mismatches++;
        }
        udp_send_new(st, c, slot, t);
    }
}

static void udp_check_timeouts(lg_state *st, uint64_t now)
{
    const lg_config *cfg = st->cfg;
    uint64_t timeout = (uint64_t)(cfg->udp_timeout * 1e9);
    for (int i = 0; i < cfg->conns; i++) {
        lg_conn *c = &st->conns[i];
        for (int s = 0; s < cfg->pipeline; s++) {
            if (c->slot_active[s] && now - c->starts[s] >= timeout) {
                st->res->losses++;
                udp_send_new(st, c, s, now);
            }
        }
    }
}

/* ---------------------------------------------------------------- run */

/* Wait until the first connections are all made, at most until the deadline: 0; 1 when told to
 * stop meanwhile; -1 with the error set (the first failure, or ETIMEDOUT at the deadline). */
static int await_connects(lg_state *st, int pending, uint64_t deadline)
{
    const lg_config *cfg = st->cfg;
    int rc = -1;
    struct pollfd *pfd = calloc((size_t)pending + 1, sizeof(*pfd));
    int *owner = calloc((size_t)pending + 1, sizeof(int));
    if (!pfd || !owner) {
        set_error(st->res, ENOMEM, "allocating connections");
        goto done;
    }
    /* slot 0: the wake fd (poll ignores a negative one), out of the way of the removals below */
    pfd[0].fd = cfg->wake_fd;
    pfd[0].events = POLLIN;
    int m = 1;
    for (int i = 0; i < cfg->conns; i++) {
        if (st->conns[i].connecting) {
            pfd[m].fd = st->conns[i].fd;
            pfd[m].events = POLLOUT;
            owner[m++] = i;
        }
    }
    while (m > 1) {
        if (cfg->stop && *cfg->stop) {
            rc = 1;
            goto done;
        }
        uint64_t now = now_ns();
        if (now >= deadline) {
            set_error(st->res, ETIMEDOUT, "connect");
            goto done;
        }
        uint64_t wait_ns = deadline - now;
        if (wait_ns > 50000000ull)
            wait_ns = 50000000ull;
        int got = poll(pfd, (nfds_t)m, (int)((wait_ns + 999999ull) / 1000000ull));
        if (got < 0) {
            if (errno == EINTR)
                continue;
            set_error(st->res, errno, "poll");
            goto done;
        }
        if (pfd[0].revents) {
            rc = 1;
            goto done;
        }
        for (int j = 1; j < m;) {
            if (!pfd[j].revents) {
                j++;
                continue;
            }
            lg_conn *c = &st->conns[owner[j]];
            int err = connect_error(c->fd);
            if (err) {
                set_error(st->res, err, "connect");
                goto done;
            }
            c->connecting = 0;
            m--;
            pfd[j] = pfd[m];
            owner[j] = owner[m];
        }
    }
    rc = 0;
done:
    free(pfd);
    free(owner);
    return rc;
}

int lg_run_echo(const lg_config *cfg, lg_result *res)
{
    memset(res, 0, sizeof(*res));
    lg_pattern();
    lg_state st;
    memset(&st, 0, sizeof(st));
    st.cfg = cfg;
    st.res = res;
    st.ep = -1;
    int rc = -1;
    int n = cfg->conns;
    int k = cfg->pipeline;
    size_t sbuf_size = cfg->size ? cfg->size : 1;

    /* written so that NaN fails too; past LG_MAX_SECS, secs * 1e9 would be near overflowing */
    if (n < 1 || k < 1 || cfg->size < 1 || cfg->port < 1 || cfg->port > 65535 ||
        !(cfg->secs > 0 && cfg->secs <= LG_MAX_SECS) ||
        (cfg->udp && (cfg->size < LG_STAMP_SIZE || cfg->size > LG_UDP_MAX ||
                      !(cfg->udp_timeout > 0 && cfg->udp_timeout <= LG_MAX_SECS))) ||
        (!cfg->udp && cfg->size > LG_TCP_MAX)) {
        set_error(res, EINVAL, "invalid load parameters");
        return -1;
    }
    if (make_addr(cfg, &st.addr, &st.addrlen) < 0) {
        set_error(res, EINVAL, "invalid address");
        return -1;
    }
    st.h = calloc(1, sizeof(hist));
    st.conns = calloc((size_t)n, sizeof(lg_conn));
    st.rbuf = malloc(RBUF_SIZE);
    st.ebuf = malloc(RBUF_SIZE > sbuf_size ? RBUF_SIZE : sbuf_size);
    if (!st.h || !st.conns || !st.rbuf || !st.ebuf) {
        set_error(res, ENOMEM, "allocating buffers");
        goto out;
    }
    for (int i = 0; i < n; i++)
        st.conns[i].fd = -1;
    st.ep = epoll_create1(EPOLL_CLOEXEC);
    if (st.ep < 0) {
        set_error(res, errno, "epoll_create1");
        goto out;
    }
    /* connecting counts against the run's time, so that no handshake can hold it past --secs */
    uint64_t deadline = now_ns() + (uint64_t)(cfg->secs * 1e9);
    int pending = 0;
    for (int i = 0; i < n; i++) {
        lg_conn *c = &st.conns[i];
        c->id = (uint32_t)i;
        c->starts = calloc((size_t)k, sizeof(uint64_t));
        c->sbuf = malloc(sbuf_size);
        c->slot_seq = calloc((size_t)k, sizeof(uint64_t));
        c->slot_active = calloc((size_t)k, sizeof(int));
        if (!c->starts || !c->sbuf || !c->slot_seq || !c->slot_active) {
            set_error(res, ENOMEM, "allocating connections");
            goto out;
        }
        c->fd = start_connect(cfg, &st.addr, st.addrlen, &c->connecting);
        if (c->fd < 0) {
            set_error(res, errno, "connect");
            goto out;
        }
        pending += c->connecting;
    }
    int stopped = 0;
    if (pending > 0) {
        stopped = await_connects(&st, pending, deadline);
        if (stopped < 0)
            goto out;
    }
    for (int i = 0; i < n; i++) {
        if (conn_register(&st, &st.conns[i], (uint32_t)i) < 0) {
            set_error(res, errno, "epoll_ctl");
            goto out;
        }
    }
    st.alive = n;
    if (cfg->wake_fd >= 0) {
        struct epoll_event wev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
        if (epoll_ctl(st.ep, EPOLL_CTL_ADD, cfg->wake_fd, &wev) < 0) {
            set_error(res, errno, "epoll_ctl");
            goto out;
        }
    }

    uint64_t start = now_ns();
    for (int i = 0; i < n; i++)
        st.conns[i].last_progress = start;
    for (int i = 0; i < n && !stopped; i++) {
        if (cfg->udp) {
            for (int s = 0; s < k; s++)
                udp_send_new(&st, &st.conns[i], s, start);
        } else {
            tcp_pump_send(&st, &st.conns[i], (uint32_t)i);
        }
    }

    struct epoll_event events[256];
    uint64_t next_scan = start;
    while (!stopped) {
        uint64_t now = now_ns();
        if (now >= deadline || st.alive <= 0 || (cfg->stop && *cfg->stop))
            break;
        if (cfg->udp && now >= next_scan) {
            udp_check_timeouts(&st, now);
            next_scan = now + 2000000ull;
        }
        uint64_t wait_ns = deadline - now;
        if (wait_ns > 50000000ull)
            wait_ns = 50000000ull;
        if (cfg->udp && wait_ns > 2000000ull)
            wait_ns = 2000000ull;
        int timeout_ms = (int)((wait_ns + 999999ull) / 1000000ull);
        int got = epoll_wait(st.ep, events, 256, timeout_ms);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            set_error(res, errno, "epoll_wait");
            goto out;
        }
        int woken = 0;
        for (int e = 0; e < got; e++) {
            uint32_t index = events[e].data.u32;
            if (index == UINT32_MAX) {
                woken = 1;
                continue;
            }
            lg_conn *c = &st.conns[index];
            if (c->fd < 0)
                continue;
            if (c->connecting) {
                tcp_connect_done(&st, c, index);
                continue;
            }
            if (cfg->udp) {
                udp_readable(&st, c);
                continue;
            }
            if (events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                tcp_readable(&st, c, index);
            else if ((events[e].events & EPOLLOUT) && c->fd >= 0)
                tcp_pump_send(&st, c, index);
        }
        if (woken)
            break;
    }
    uint64_t end = now_ns();
    res->elapsed = (double)(end - start) / 1e9;
    if (!cfg->udp) {
        for (int i = 0; i < n; i++) {
            lg_conn *c = &st.conns[i];
            if (c->connecting) {
                /* a reconnect the run ended before: one that could not be made, unless it has
                 * just completed */
                struct pollfd p = {.fd = c->fd, .events = POLLOUT};
                if (poll(&p, 1, 0) != 1 || connect_error(c->fd) != 0)
                    res->errors++;
                continue;
            }
            int waiting = c->send_seq != c->recv_seq || (c->sending && c->send_off > 0);
            if (!c->dead && waiting && end - c->last_progress >= (uint64_t)(LG_STALL_SECS * 1e9))
                res->stalled++;
        }
    }
    rc = 0;

out:
    if (st.h) {
        res->lat_min_us = (double)st.h->min / 1000.0;
        res->lat_max_us = (double)st.h->max / 1000.0;
        res->lat_mean_us = st.h->n ? st.h->sum / (double)st.h->n / 1000.0 : 0.0;
        res->p50_us = hist_quantile_us(st.h, 0.50);
        res->p90_us = hist_quantile_us(st.h, 0.90);
        res->p99_us = hist_quantile_us(st.h, 0.99);
        res->p999_us = hist_quantile_us(st.h, 0.999);
    }
    if (st.conns) {
        for (int i = 0; i < n; i++) {
            lg_conn *c = &st.conns[i];
            if (c->fd >= 0)
                close(c->fd);
            free(c->starts);
            free(c->sbuf);
            free(c->slot_seq);
            free(c->slot_active);
        }
    }
    if (st.ep >= 0)
        close(st.ep);
    free(st.conns);
    free(st.rbuf);
    free(st.ebuf);
    free(st.h);
    return rc;
}
