/* TFTP transfer engine: the DATA/ACK part of one transfer, in C, with no Python API.
 *
 * A session is one UDP socket (the local TID, not connected: strangers get ERROR 5), one file
 * descriptor and the peer's address.  Everything before the first DATA/ACK exchange (request,
 * option negotiation, opening files) and everything after (renaming an upload, the access log,
 * the dally of a client download) stays with the caller; tftp_session_run() does the rest:
 *
 *   sender   (server RRQ, client WRQ): reads the file with pread() into a buffer and sends a
 *            window of DATA with one sendmmsg(); in a windowed transfer, blocks of 32768 bytes and more of a regular file
 *            go instead by splice() from the page cache (no copy on this side); resends from the first unacknowledged block on
 *            timeout (exponential backoff, at most `retries` in a row) and, in a windowed
 *            transfer, once on a duplicate ACK of the window's predecessor (RFC 7440 gap);
 *            never on a duplicate ACK in lockstep (RFC 1123, no Sorcerer's Apprentice).
 *   receiver (server WRQ, client RRQ): takes DATA with recvmmsg(), writes the payloads through a
 *            staging buffer with write(), ACKs every `window` blocks, ACKs the last good block
 *            once on a gap, re-ACKs on a duplicate in lockstep, re-sends its last ACK on timeout.
 *
 * Block numbers are absolute (uint64); the wire carries them modulo 65536 (rollover to 0).
 * The run returns early (TFTP_ENGINE_PROGRESS) every `report_interval` seconds when that is
 * positive, and TFTP_ENGINE_CANCELLED soon (within `slice`) after `cancel` becomes non-zero;
 * calling tftp_session_run() again resumes the transfer.
 *
 * With IP_RECVERR (IPV6_RECVERR) on the socket, the kernel reports ICMP errors to it: a port
 * unreachable for the peer's address ends the run with TFTP_ENGINE_REFUSED (the peer is gone:
 * no need to wait out the retries); errors for other addresses (strangers that got ERROR 5) are
 * read and ignored.  Without it, a peer that is gone is a timeout.  Before it ends so, the run
 * reads what is already queued on the socket: a peer that sent an ERROR and then closed its port
 * (a cancelled client) ends the run with TFTP_ENGINE_STOP and that ERROR, as if the ICMP error for
 * our packet that crossed it had not overtaken it.
 */
#ifndef FASTNET_TFTP_ENGINE_H
#define FASTNET_TFTP_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define TFTP_ENGINE_FIRST_MAX 2048 /* the largest OACK the engine re-sends */

enum tftp_engine_role {
    TFTP_ENGINE_SENDER = 1,
    TFTP_ENGINE_RECEIVER = 2,
};

enum tftp_engine_outcome {
    TFTP_ENGINE_RUNNING = -1,
    TFTP_ENGINE_DONE = 0,        /* the last block was ACKed (sender) / received and written (receiver) */
    TFTP_ENGINE_TIMEOUT = 1,     /* `retries` retransmissions in a row without progress */
    TFTP_ENGINE_STOP = 2,        /* a packet the caller must judge: ERROR, malformed, unexpected (stop_packet) */
    TFTP_ENGINE_IO_ERROR = 3,    /* reading or writing the file failed: error_errno */
    TFTP_ENGINE_CANCELLED = 4,   /* `cancel` was set */
    TFTP_ENGINE_SOCK_ERROR = 5,  /* receiving failed for another reason than a timeout: error_errno */
    TFTP_ENGINE_PROGRESS = 6,    /* report_interval elapsed: call again to go on */
    TFTP_ENGINE_REFUSED = 7,     /* the peer's port is closed: an ICMP port unreachable named it (and no ERROR of its waited) */
};

enum {
    TFTP_ENGINE_FLAG_STRICT = 1,      /* RRQ/WRQ from the peer stop the transfer (client), else ignored */
    TFTP_ENGINE_FLAG_ACK_LAST = 2,    /* receiver: send the final ACK itself (client) */
    TFTP_ENGINE_FLAG_OACK_REACK = 4,  /* receiver: an OACK before block 1 is answered with `first` again */
    TFTP_ENGINE_FLAG_NO_SPLICE = 8,   /* sender: always pread() + sendmmsg(), even for big blocks of a file */
    TFTP_ENGINE_FLAG_GUARD_FIRST = 16, /* sender (server): before a DATA is ACKed, one whole window resent */
};

typedef struct tftp_session {
    /* ---- set by the caller ---- */
    int role;
    int flags;
    int sock;
    int fd;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    uint32_t blksize;
    uint32_t window;
    double timeout;          /* first retransmission timeout, seconds */
    double max_backoff;      /* a wait never exceeds timeout * max_backoff */
    int retries;
    double report_interval;  /* 0: never return TFTP_ENGINE_PROGRESS */
    off_t file_start;        /* sender: file offset of block 1's first byte */
    /* sender: an OACK to (re)send until ACK 0 (first_len 0: none, DATA goes out at once);
     * receiver: the packet to re-send on timeout before block 1 arrives (OACK or ACK 0) */
    uint8_t first[TFTP_ENGINE_FIRST_MAX];
    size_t first_len;
    int first_sent;          /* the caller already sent `first` (or, sender without OACK, nothing to send) */
    volatile int cancel;

    /* ---- results, readable at any time ---- */
    int outcome;
    int error_errno;
    uint64_t bytes;          /* file bytes ACKed (sender) / written (receiver) */
    uint64_t blocks;         /* DATA blocks ACKed / received in order */
    uint64_t retransmissions;
    uint8_t *stop_packet;    /* TFTP_ENGINE_STOP: the datagram (owned by the session) */
    size_t stop_len;

    /* ---- private state ---- */
    int started;
    uint64_t base;           /* sender: first unACKed block; receiver: next block expected */
    uint64_t sent_hi;        /* sender: highest block sent */
    uint64_t last;           /* sender: the final (short) block, 0 while unknown */
    uint32_t last_len;
    int dup_resent;
    int gap_acked;
    uint32_t in_window;
    int tries;
    int icmp;                /* a call failed on an ICMP error: read the error queue */
    double wait;
    double deadline;
    double next_report;
    double slice;
    uint8_t *buf;            /* sender: file bytes [buf_off, buf_off + buf_have); receiver: recv slots */
    size_t buf_cap;
    off_t buf_off;
    size_t buf_have;
    int eof;                 /* sender: buf ends at the end of the file */
    uint8_t *buf2;           /* sender: the next stretch of the file, read ahead while the peer works */
    off_t buf2_off;
    size_t buf2_have;
    int eof2;
    int buf2_valid;
    uint8_t *stage;          /* receiver: payloads waiting to be written */
    size_t stage_cap;
    size_t stage_have;
    size_t slot;             /* receiver: bytes per receive slot */
    unsigned nslots;
    void *scratch;           /* iovecs / mmsghdrs / addresses */
} tftp_session;

/* Prepare a session whose caller fields are set (the rest zeroed by the caller, e.g. calloc).
 * Returns 0, or -1 with errno (ENOMEM, EINVAL). */
int tftp_session_init(tftp_session *s);
/* Run until an outcome (see enum); resumable after TFTP_ENGINE_PROGRESS. Releases nothing. */
int tftp_session_run(tftp_session *s);
/* Free what tftp_session_init and run allocated (not the descriptors). */
void tftp_session_free(tftp_session *s);

#endif
