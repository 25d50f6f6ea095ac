/* TFTP packet codec core; see tftp_codec.h.  No Python API: fuzzable and sanitizable alone
 * (tests/c/).  Error texts must stay identical to those of fastnet/tftp/_codec_py.py. */
#include "tftp_codec.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static inline uint16_t get_u16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static inline void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static int fail(tftp_packet *p, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(tftp_packet *p, size_t offset, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->error, sizeof p->error, fmt, ap);
    va_end(ap);
    p->error_offset = offset;
    return -1;
}

/* The NUL-terminated string at *pos: its span, and *pos moved past its NUL. */
static int read_string(const uint8_t *buf, size_t len, size_t *pos, tftp_span *out, const char *what,
                       tftp_packet *p)
{
    size_t start = *pos;
    if (start >= len)
        return fail(p, start, "missing %s", what);
    const uint8_t *nul = memchr(buf + start, 0, len - start);
    if (nul == NULL)
        return fail(p, start, "unterminated %s", what);
    out->off = (uint32_t)start;
    out->len = (uint32_t)(nul - (buf + start));
    *pos = start + out->len + 1;
    return 0;
}

static inline uint8_t ascii_lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c; }

int tftp_ascii_ieq(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    if (alen != blen)
        return 0;
    for (size_t i = 0; i < alen; i++)
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return 0;
    return 1;
}

void tftp_ascii_lower(uint8_t *dst, const uint8_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = ascii_lower(src[i]);
}

static int read_options(const uint8_t *buf, size_t len, size_t pos, tftp_packet *p)
{
    uint32_t n = 0;
    while (pos < len) {
        if (n == TFTP_MAX_OPTIONS)
            return fail(p, pos, "more than %d options", TFTP_MAX_OPTIONS);
        size_t start = pos;
        tftp_span *name = &p->option_name[n];
        if (read_string(buf, len, &pos, name, "option name", p) < 0)
            return -1;
        if (name->len == 0)
            return fail(p, start, "empty option name");
        if (read_string(buf, len, &pos, &p->option_value[n], "option value", p) < 0)
            return -1;
        for (uint32_t i = 0; i < n; i++) {
            const tftp_span *other = &p->option_name[i];
            if (tftp_ascii_ieq(buf + other->off, other->len, buf + name->off, name->len))
                return fail(p, start, "repeated option");
        }
        n++;
    }
    p->n_options = n;
    return 0;
}

int tftp_parse(const uint8_t *buf, size_t len, tftp_packet *p)
{
    if (len < 2)
        return fail(p, len, "datagram too short for an opcode (%zu of 2 bytes)", len);
    uint16_t opcode = get_u16(buf);
    p->opcode = opcode;
    switch (opcode) {
    case TFTP_DATA:
        if (len < 4)
            return fail(p, len, "truncated DATA header (%zu of 4 bytes)", len);
        if (len - 4 > TFTP_MAX_BLKSIZE)
            return fail(p, 4 + (size_t)TFTP_MAX_BLKSIZE, "DATA payload of %zu bytes exceeds %d", len - 4,
                        TFTP_MAX_BLKSIZE);
        p->number = get_u16(buf + 2);
        p->text.off = 4;
        p->text.len = (uint32_t)(len - 4);
        return 0;
    case TFTP_ACK:
        if (len != 4) {
            if (len < 4)
                return fail(p, len, "truncated ACK (%zu of 4 bytes)", len);
            return fail(p, 4, "ACK longer than 4 bytes (%zu bytes)", len);
        }
        p->number = get_u16(buf + 2);
        return 0;
    case TFTP_RRQ:
    case TFTP_WRQ: {
        if (len > TFTP_MAX_REQUEST)
            return fail(p, TFTP_MAX_REQUEST, "request of %zu bytes exceeds %d", len, TFTP_MAX_REQUEST);
        size_t pos = 2;
        if (read_string(buf, len, &pos, &p->filename, "filename", p) < 0)
            return -1;
        if (read_string(buf, len, &pos, &p->mode, "mode", p) < 0)
            return -1;
        return read_options(buf, len, pos, p);
    }
    case TFTP_ERROR: {
        if (len > TFTP_MAX_DATAGRAM)
            return fail(p, TFTP_MAX_DATAGRAM, "ERROR packet of %zu bytes exceeds %d", len, TFTP_MAX_DATAGRAM);
        if (len < 4)
            return fail(p, len, "truncated ERROR header (%zu of 4 bytes)", len);
        p->number = get_u16(buf + 2);
        size_t pos = 4;
        if (read_string(buf, len, &pos, &p->text, "error message", p) < 0)
            return -1;
        if (pos != len)
            return fail(p, pos, "trailing bytes after the ERROR message");
        return 0;
    }
    case TFTP_OACK:
        if (len > TFTP_MAX_DATAGRAM)
            return fail(p, TFTP_MAX_DATAGRAM, "OACK packet of %zu bytes exceeds %d", len, TFTP_MAX_DATAGRAM);
        return read_options(buf, len, 2, p);
    default:
        return fail(p, 0, "unknown opcode %u", (unsigned)opcode);
    }
}

/* ---- building ---- */

size_t tftp_build_ack(uint8_t *out, uint16_t block)
{
    put_u16(out, TFTP_ACK);
    put_u16(out + 2, block);
    return 4;
}

size_t tftp_build_data(uint8_t *out, uint16_t block, const uint8_t *payload, size_t n)
{
    put_u16(out, TFTP_DATA);
    put_u16(out + 2, block);
    if (n)
        memcpy(out + 4, payload, n);
    return 4 + n;
}

size_t tftp_build_error(uint8_t *out, uint16_t code, tftp_str message)
{
    put_u16(out, TFTP_ERROR);
    put_u16(out + 2, code);
    if (message.len)
        memcpy(out + 4, message.ptr, message.len);
    out[4 + message.len] = 0;
    return 5 + message.len;
}

static int check_fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int check_fail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, TFTP_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
    return -1;
}

int tftp_check_strings(int opcode, const tftp_str *s, size_t n, char *err)
{
    size_t first_option = 0;
    if (opcode == TFTP_RRQ || opcode == TFTP_WRQ) {
        if (n < 2)
            return check_fail(err, "a request needs a filename and a mode");
        if (s[0].len && memchr(s[0].ptr, 0, s[0].len))
            return check_fail(err, "filename contains a NUL byte");
        if (s[1].len && memchr(s[1].ptr, 0, s[1].len))
            return check_fail(err, "mode contains a NUL byte");
        first_option = 2;
    }
    if ((n - first_option) % 2)
        return check_fail(err, "options must come as name/value pairs");
    for (size_t i = first_option; i < n; i += 2) {
        const tftp_str *name = &s[i];
        if (name->len && memchr(name->ptr, 0, name->len))
            return check_fail(err, "option name contains a NUL byte");
        if (name->len == 0)
            return check_fail(err, "empty option name");
        for (size_t j = first_option; j < i; j += 2)
            if (tftp_ascii_ieq(s[j].ptr, s[j].len, name->ptr, name->len))
                return check_fail(err, "repeated option name");
        if ((i - first_option) / 2 >= TFTP_MAX_OPTIONS)
            return check_fail(err, "more than %d options", TFTP_MAX_OPTIONS);
        const tftp_str *value = &s[i + 1];
        if (value->len && memchr(value->ptr, 0, value->len))
            return check_fail(err, "option value contains a NUL byte");
    }
    return 0;
}

size_t tftp_strings_size(const tftp_str *s, size_t n)
{
    size_t size = 2;
    for (size_t i = 0; i < n; i++)
        size += s[i].len + 1;
    return size;
}

size_t tftp_build_strings(uint8_t *out, int opcode, const tftp_str *s, size_t n)
{
    uint8_t *w = out;
    put_u16(w, (uint16_t)opcode);
    w += 2;
    for (size_t i = 0; i < n; i++) {
        if (s[i].len)
            memcpy(w, s[i].ptr, s[i].len);
        w += s[i].len;
        *w++ = 0;
    }
    return (size_t)(w - out);
}

/* ---- netascii ---- */

/* Word-at-a-time scanning: text has a CR or LF every few dozen bytes, too often for memchr's
 * per-call cost to pay off, so 8 bytes are tested at once and copied when none needs care. */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

/* some byte of x is below 14 (so may be CR = 13 or LF = 10); exact, no false negatives */
static inline int maybe_crlf(uint64_t x) { return ((x - ONES * 14) & ~x & HIGHS) != 0; }

/* some byte of x is a CR */
static inline int has_cr(uint64_t x)
{
    uint64_t y = x ^ (ONES * '\r');
    return ((y - ONES) & ~y & HIGHS) != 0;
}

size_t tftp_netascii_encoded_size(const uint8_t *in, size_t n)
{
    size_t i = 0, extra = 0;
    for (; i + 8 <= n; i += 8) {
        if (!maybe_crlf(load64(in + i)))
            continue;
        for (size_t k = i; k < i + 8; k++)
            extra += (in[k] == '\r') | (in[k] == '\n');
    }
    for (; i < n; i++)
        extra += (in[i] == '\r') | (in[i] == '\n');
    return n + extra;
}

static inline uint8_t *encode_byte(uint8_t *w, uint8_t c)
{
    if (c == '\n') {
        *w++ = '\r';
        *w++ = '\n';
    } else if (c == '\r') {
        *w++ = '\r';
        *w++ = 0;
    } else {
        *w++ = c;
    }
    return w;
}

size_t tftp_netascii_encode(const uint8_t *in, size_t n, uint8_t *out)
{
    uint8_t *w = out;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x = load64(in + i);
        if (!maybe_crlf(x)) {
            memcpy(w, &x, 8);
            w += 8;
            continue;
        }
        for (size_t k = i; k < i + 8; k++)
            w = encode_byte(w, in[k]);
    }
    for (; i < n; i++)
        w = encode_byte(w, in[i]);
    return (size_t)(w - out);
}

size_t tftp_netascii_decode(const uint8_t *in, size_t n, uint8_t *out, int *pending_cr, int final)
{
    uint8_t *w = out;
    size_t i = 0;
    if (*pending_cr && n > 0) {
        *pending_cr = 0;
        if (in[0] == '\n') {
            *w++ = '\n';
            i = 1;
        } else {
            *w++ = '\r';
            if (in[0] == 0)
                i = 1;
        }
    }
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t x = load64(in + i);
            if (!has_cr(x)) {
                memcpy(w, &x, 8);
                w += 8;
                i += 8;
                continue;
            }
        }
        uint8_t c = in[i];
        if (c != '\r') {
            *w++ = c;
            i++;
            continue;
        }
        if (i + 1 == n) { /* a CR ends the chunk: its meaning depends on the next byte */
            i++;
            if (final)
                *w++ = '\r';
            else
                *pending_cr = 1;
            break;
        }
        uint8_t next = in[i + 1];
        if (next == '\n') {
            *w++ = '\n'; /* CR LF -> LF */
            i += 2;
        } else {
            *w++ = '\r'; /* CR NUL -> CR; a bare CR is kept and the next byte decoded normally */
            i += (next == 0) ? 2 : 1;
        }
    }
    if (final && *pending_cr) {
        /* only when n == 0: a CR held from an earlier chunk */
        *pending_cr = 0;
        *w++ = '\r';
    }
    return (size_t)(w - out);
}
