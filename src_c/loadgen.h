/* Closed-loop echo load generator: no Python API, driven from fastnet/bench/_loadgen_c.pyx.
 *
 * Each connection (TCP) or connected UDP socket keeps `pipeline` messages in flight: it sends a
 * message, waits until every byte of it came back, checks every byte, records the round-trip
 * latency and sends the next one.  Message contents are a pure function of (connection, sequence),
 * see lg_fill_message(), so that a lost, duplicated, reordered or altered byte is caught.
 */
#ifndef FASTNET_LOADGEN_H
#define FASTNET_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LG_PATTERN_SIZE 65536u   /* period of the pseudo-random body of every message */
#define LG_STAMP_SIZE 8u         /* little-endian stamp that opens every message */
#define LG_UDP_MAX 65507u
#define LG_TCP_MAX (64u << 20)
#define LG_STALL_SECS 1.0        /* an in-flight message with no byte back for this long: stalled */
#define LG_MAX_SECS 86400.0      /* a longer run is a typo; also keeps secs * 1e9 far inside uint64_t */
#define LG_HIST_SUB 32           /* sub-buckets per power of two: ~3% latency resolution */
#define LG_HIST_BUCKETS (64 * LG_HIST_SUB)

typedef struct lg_config {
    int family;            /* AF_INET or AF_INET6 */
    const char *ip;        /* numeric address */
    int port;              /* 1..65535 */
    int udp;
    int conns;
    size_t size;
    double secs;           /* finite, > 0, <= LG_MAX_SECS; connecting counts against it */
    int pipeline;
    double udp_timeout;    /* seconds before an unanswered datagram counts as lost */
    volatile int *stop;    /* optional: set non-zero from elsewhere to end the run early */
    int wake_fd;           /* optional (-1): readable ends the run early, e.g. Python's signal wakeup fd */
} lg_config;

typedef struct lg_result {
    uint64_t requests;     /* messages echoed back whole and verified (or mismatched) */
    uint64_t bytes;        /* echoed payload bytes received */
    uint64_t errors;       /* connection errors: reset, unexpected EOF, failed reconnect, or a
                              reconnect still not made when the run ends */
    uint64_t mismatches;   /* echoed messages whose bytes differ from what was sent */
    uint64_t losses;       /* UDP datagrams not answered within udp_timeout */
    uint64_t late;         /* UDP replies that arrived after being counted lost */
    uint64_t stalled;      /* TCP connections waiting, at the end, for an echo for LG_STALL_SECS or more */
    double elapsed;        /* seconds */
    double lat_min_us, lat_mean_us, lat_max_us;
    double p50_us, p90_us, p99_us, p999_us;
    int err;               /* errno of a setup failure, 0 on success */
    char errmsg[160];      /* what failed during setup */
} lg_result;

/* The 64 KiB body pattern (splitmix64 of a fixed seed), shared with the pure-Python twin. */
const unsigned char *lg_pattern(void);

/* Bytes [off, off+len) of message `seq` of connection `conn` of size `size`. */
void lg_fill_message(unsigned char *dst, uint32_t conn, uint64_t seq, size_t size, size_t off, size_t len);

/* Run the load; returns 0, or -1 with result->err / errmsg set when the setup failed -- including
 * ETIMEDOUT when the first connections are not all made before the run's deadline. */
int lg_run_echo(const lg_config *cfg, lg_result *result);

#ifdef __cplusplus
}
#endif
#endif
