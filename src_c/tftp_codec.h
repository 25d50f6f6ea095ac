/* TFTP packet codec core (RFC 1350, options RFC 2347/2348/2349): pure C, no Python API.
 *
 * Parsing fills a tftp_packet with offsets and lengths into the caller's datagram (nothing is
 * copied); every read is bounds-checked, and a malformed datagram yields a one-line message and
 * the byte offset where the problem was found.  Building writes into a caller-provided buffer
 * whose size the matching *_size() function gives.  The texts of the error messages are part of
 * the contract: the pure-Python twin fastnet/tftp/_codec_py.py produces the very same ones.
 */
#ifndef FASTNET_TFTP_CODEC_H
#define FASTNET_TFTP_CODEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum tftp_opcode {
    TFTP_RRQ = 1,
    TFTP_WRQ = 2,
    TFTP_DATA = 3,
    TFTP_ACK = 4,
    TFTP_ERROR = 5,
    TFTP_OACK = 6,
};

enum {
    TFTP_MAX_BLKSIZE = 65464,     /* RFC 2348: the largest DATA payload */
    TFTP_MIN_BLKSIZE = 8,
    TFTP_DEFAULT_BLKSIZE = 512,
    TFTP_MAX_REQUEST = 512,       /* the largest RRQ/WRQ datagram */
    TFTP_MAX_OPTIONS = 64,        /* options per RRQ/WRQ/OACK */
    TFTP_MAX_DATAGRAM = 65535,    /* the largest ERROR/OACK (UDP's limit; keeps offsets 32-bit) */
    TFTP_ERRMSG_SIZE = 96,
};

typedef struct {
    uint32_t off; /* offset of the first byte in the datagram */
    uint32_t len; /* length, without the terminating NUL */
} tftp_span;

typedef struct {
    uint16_t opcode;
    uint16_t number;            /* DATA/ACK: block number; ERROR: error code */
    tftp_span filename;         /* RRQ/WRQ */
    tftp_span mode;             /* RRQ/WRQ (lower-case it with tftp_ascii_lower) */
    tftp_span text;             /* DATA: payload; ERROR: message */
    uint32_t n_options;         /* RRQ/WRQ/OACK */
    tftp_span option_name[TFTP_MAX_OPTIONS];
    tftp_span option_value[TFTP_MAX_OPTIONS];
    /* when tftp_parse() fails: */
    size_t error_offset;
    char error[TFTP_ERRMSG_SIZE];
} tftp_packet;

/* Parse one datagram. Returns 0 and fills *p, or -1 with p->error / p->error_offset set.
 * Only the fields meaningful for p->opcode are written. */
int tftp_parse(const uint8_t *buf, size_t len, tftp_packet *p);

/* ASCII-only case-insensitive equality of two byte strings. */
int tftp_ascii_ieq(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);
/* ASCII-only lower-casing of n bytes from src into dst (may be the same buffer). */
void tftp_ascii_lower(uint8_t *dst, const uint8_t *src, size_t n);

/* ---- building ---- */

typedef struct {
    const uint8_t *ptr;
    size_t len;
} tftp_str;

/* 4 bytes: ACK. */
size_t tftp_build_ack(uint8_t *out, uint16_t block);
/* 4 + n bytes: DATA (the caller checks n <= TFTP_MAX_BLKSIZE). */
size_t tftp_build_data(uint8_t *out, uint16_t block, const uint8_t *payload, size_t n);
/* 5 + message.len bytes: ERROR. */
size_t tftp_build_error(uint8_t *out, uint16_t code, tftp_str message);

/* Check the strings of a request or OACK before building it: no NUL inside a string, option
 * names non-empty and not repeated (case-insensitively), at most TFTP_MAX_OPTIONS options.
 * strings[0..n_strings) are: for RRQ/WRQ filename, mode, then name/value pairs; for OACK only the
 * pairs.  Returns 0, or -1 with a message in err (TFTP_ERRMSG_SIZE bytes). */
int tftp_check_strings(int opcode, const tftp_str *strings, size_t n_strings, char *err);
/* Size of the RRQ/WRQ/OACK carrying these strings: 2 + sum(len + 1). */
size_t tftp_strings_size(const tftp_str *strings, size_t n_strings);
/* Write opcode and the NUL-terminated strings; returns the size written. */
size_t tftp_build_strings(uint8_t *out, int opcode, const tftp_str *strings, size_t n_strings);

/* ---- netascii ---- */

/* Size of to_netascii(in): n plus one per CR and per LF. */
size_t tftp_netascii_encoded_size(const uint8_t *in, size_t n);
/* LF -> CR LF, CR -> CR NUL; out holds tftp_netascii_encoded_size() bytes. Returns its size. */
size_t tftp_netascii_encode(const uint8_t *in, size_t n, uint8_t *out);
/* CR LF -> LF, CR NUL -> CR, any other CR kept as is.  *pending_cr carries a CR that ended the
 * previous chunk; with final != 0 a CR ending this chunk is written out, else it is held back in
 * *pending_cr.  out holds n + 1 bytes.  Returns the size written. */
size_t tftp_netascii_decode(const uint8_t *in, size_t n, uint8_t *out, int *pending_cr, int final);

#ifdef __cplusplus
}
#endif
#endif
