/* Standalone test of the TFTP codec core (src_c/tftp_codec.c), no Python involved.
 *
 *   cc -std=gnu11 -g -fsanitize=address,undefined -Isrc_c tests/c/test_tftp_codec.c src_c/tftp_codec.c
 *   ./a.out [random-iterations]
 *
 * Checks valid packets of every type byte for byte, a table of malformed datagrams (message and
 * offset), the builders, netascii at every split point, and finally parses random and mutated
 * datagrams (each in a heap buffer of its exact size, so ASan sees any over-read) checking the
 * parser's invariants: every span it reports lies inside the datagram.
 */
#include "tftp_codec.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond)                                                                                  \
    do {                                                                                             \
        if (!(cond)) {                                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                 \
            failures++;                                                                              \
        }                                                                                            \
    } while (0)

/* Parse a datagram copied into a heap buffer of exactly its size. */
static int parse_exact(const void *data, size_t len, tftp_packet *p)
{
    uint8_t *buf = malloc(len ? len : 1);
    memcpy(buf, data, len);
    int rc = tftp_parse(len ? buf : buf + 1, len, p);
    free(buf);
    return rc;
}

#define LIT(s) (const uint8_t *)(s), sizeof(s) - 1

static void span_is(const uint8_t *buf, tftp_span s, const char *expect)
{
    size_t n = strlen(expect);
    CHECK(s.len == n);
    if (s.len == n)
        CHECK(memcmp(buf + s.off, expect, n) == 0);
}

static void test_valid(void)
{
    tftp_packet p;
    static const uint8_t rrq[] = "\0\1test.jpg\0OcTeT\0blksize\0001428\0tsize\0000\0";
    CHECK(tftp_parse(rrq, sizeof rrq - 1, &p) == 0);
    CHECK(p.opcode == TFTP_RRQ);
    span_is(rrq, p.filename, "test.jpg");
    span_is(rrq, p.mode, "OcTeT");
    CHECK(p.n_options == 2);
    span_is(rrq, p.option_name[0], "blksize");
    span_is(rrq, p.option_value[0], "1428");
    span_is(rrq, p.option_name[1], "tsize");
    span_is(rrq, p.option_value[1], "0");

    static const uint8_t wrq[] = "\0\2\0octet\0";
    CHECK(tftp_parse(wrq, sizeof wrq - 1, &p) == 0);
    CHECK(p.opcode == TFTP_WRQ && p.filename.len == 0 && p.n_options == 0);

    static const uint8_t data[] = "\0\3\1\2hello";
    CHECK(tftp_parse(data, sizeof data - 1, &p) == 0);
    CHECK(p.opcode == TFTP_DATA && p.number == 0x102 && p.text.off == 4 && p.text.len == 5);
    CHECK(parse_exact("\0\3\xff\xff", 4, &p) == 0 && p.number == 65535 && p.text.len == 0);

    CHECK(parse_exact("\0\4\0\7", 4, &p) == 0 && p.opcode == TFTP_ACK && p.number == 7);

    static const uint8_t err[] = "\0\5\0\1File not found\0";
    CHECK(tftp_parse(err, sizeof err - 1, &p) == 0);
    CHECK(p.opcode == TFTP_ERROR && p.number == 1);
    span_is(err, p.text, "File not found");

    static const uint8_t oack[] = "\0\6blksize\08\0";
    CHECK(tftp_parse(oack, sizeof oack - 1, &p) == 0);
    CHECK(p.opcode == TFTP_OACK && p.n_options == 1);
    span_is(oack, p.option_value[0], "8");
    CHECK(parse_exact("\0\6", 2, &p) == 0 && p.n_options == 0);
}

struct bad_case {
    const char *data;
    size_t len;
    const char *message;
    size_t offset;
};

#define BAD(lit, msg, off) {lit, sizeof(lit) - 1, msg, off}

static void test_malformed(void)
{
    static const struct bad_case cases[] = {
        BAD("", "datagram too short for an opcode (0 of 2 bytes)", 0),
        BAD("\0", "datagram too short for an opcode (1 of 2 bytes)", 1),
        BAD("\0\0", "unknown opcode 0", 0),
        BAD("\1\1", "unknown opcode 257", 0),
        BAD("\0\7xx", "unknown opcode 7", 0),
        BAD("\0\1", "missing filename", 2),
        BAD("\0\1abc", "unterminated filename", 2),
        BAD("\0\1abc\0", "missing mode", 6),
        BAD("\0\2abc\0oct", "unterminated mode", 6),
        BAD("\0\1a\0octet\0blksize", "unterminated option name", 10),
        BAD("\0\1a\0octet\0blksize\0", "missing option value", 18),
        BAD("\0\1a\0octet\0blksize\000512", "unterminated option value", 18),
        BAD("\0\1a\0octet\0\0", "empty option name", 10),
        BAD("\0\1a\0octet\0tsize\0000\0TSize\0001\0", "repeated option", 18),
        BAD("\0\3", "truncated DATA header (2 of 4 bytes)", 2),
        BAD("\0\3\0", "truncated DATA header (3 of 4 bytes)", 3),
        BAD("\0\4\0", "truncated ACK (3 of 4 bytes)", 3),
        BAD("\0\4\0\1\0", "ACK longer than 4 bytes (5 bytes)", 4),
        BAD("\0\5\0", "truncated ERROR header (3 of 4 bytes)", 3),
        BAD("\0\5\0\1", "missing error message", 4),
        BAD("\0\5\0\1oops", "unterminated error message", 4),
        BAD("\0\5\0\1oops\0\0", "trailing bytes after the ERROR message", 9),
        BAD("\0\6x\0", "missing option value", 4),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tftp_packet p;
        int rc = parse_exact(cases[i].data, cases[i].len, &p);
        CHECK(rc == -1);
        if (rc == -1 && (strcmp(p.error, cases[i].message) != 0 || p.error_offset != cases[i].offset)) {
            fprintf(stderr, "case %zu: got '%s' at %zu, want '%s' at %zu\n", i, p.error, p.error_offset,
                    cases[i].message, cases[i].offset);
            failures++;
        }
    }

    tftp_packet p;
    uint8_t big[600];
    memset(big, 'a', sizeof big);
    big[0] = 0;
    big[1] = 1;
    CHECK(parse_exact(big, 513, &p) == -1 && p.error_offset == 512);
    CHECK(strcmp(p.error, "request of 513 bytes exceeds 512") == 0);
    big[510] = 0;
    big[511] = 0; /* "\0\1aaa...\0\0" 512 bytes: empty mode is allowed */
    CHECK(parse_exact(big, 512, &p) == 0);

    size_t n = 4 + TFTP_MAX_BLKSIZE + 1;
    uint8_t *data = calloc(1, n);
    data[1] = 3;
    CHECK(parse_exact(data, n - 1, &p) == 0 && p.text.len == TFTP_MAX_BLKSIZE);
    CHECK(parse_exact(data, n, &p) == -1 && p.error_offset == 4 + TFTP_MAX_BLKSIZE);
    CHECK(strcmp(p.error, "DATA payload of 65465 bytes exceeds 65464") == 0);
    free(data);

    uint8_t *huge = calloc(1, TFTP_MAX_DATAGRAM + 1);
    huge[1] = TFTP_ERROR;
    CHECK(parse_exact(huge, TFTP_MAX_DATAGRAM, &p) == -1 && strcmp(p.error, "trailing bytes after the ERROR message") == 0);
    CHECK(parse_exact(huge, TFTP_MAX_DATAGRAM + 1, &p) == -1 && p.error_offset == TFTP_MAX_DATAGRAM);
    CHECK(strcmp(p.error, "ERROR packet of 65536 bytes exceeds 65535") == 0);
    huge[1] = TFTP_OACK;
    CHECK(parse_exact(huge, TFTP_MAX_DATAGRAM + 1, &p) == -1 && strcmp(p.error, "OACK packet of 65536 bytes exceeds 65535") == 0);
    free(huge);

    /* 64 options fit an OACK, 65 do not */
    uint8_t oack[2 + 65 * 8];
    size_t len = 2;
    oack[0] = 0;
    oack[1] = 6;
    for (int i = 0; i < 65; i++)
        len += (size_t)sprintf((char *)oack + len, "o%02d", i) + 1 + (size_t)sprintf((char *)oack + len + 4, "v%02d", i) + 1;
    CHECK(parse_exact(oack, len - 8, &p) == 0 && p.n_options == 64);
    CHECK(parse_exact(oack, len, &p) == -1 && strcmp(p.error, "more than 64 options") == 0);
    CHECK(p.error_offset == len - 8);
}

static void test_build(void)
{
    uint8_t out[600];
    CHECK(tftp_build_ack(out, 0x1234) == 4 && memcmp(out, "\0\4\x12\x34", 4) == 0);
    CHECK(tftp_build_data(out, 2, (const uint8_t *)"xyz", 3) == 7 && memcmp(out, "\0\3\0\2xyz", 7) == 0);
    CHECK(tftp_build_data(out, 2, NULL, 0) == 4);
    tftp_str msg = {(const uint8_t *)"nope", 4};
    CHECK(tftp_build_error(out, 1, msg) == 9 && memcmp(out, "\0\5\0\1nope\0", 9) == 0);

    tftp_str s[4] = {{LIT("test.jpg")}, {LIT("octet")}, {LIT("blksize")}, {LIT("1428")}};
    char err[TFTP_ERRMSG_SIZE];
    CHECK(tftp_check_strings(TFTP_RRQ, s, 2, err) == 0);
    CHECK(tftp_strings_size(s, 2) == 17);
    CHECK(tftp_build_strings(out, TFTP_RRQ, s, 2) == 17);
    CHECK(memcmp(out, "\0\1test.jpg\0octet\0", 17) == 0);
    CHECK(tftp_check_strings(TFTP_RRQ, s, 4, err) == 0);
    size_t n = tftp_build_strings(out, TFTP_WRQ, s, 4);
    CHECK(n == tftp_strings_size(s, 4) && n == 30);
    tftp_packet p;
    CHECK(parse_exact(out, n, &p) == 0 && p.opcode == TFTP_WRQ && p.n_options == 1);

    tftp_str dup[4] = {{LIT("BlkSize")}, {LIT("1")}, {LIT("blksize")}, {LIT("2")}};
    CHECK(tftp_check_strings(TFTP_OACK, dup, 4, err) == -1 && strcmp(err, "repeated option name") == 0);
    tftp_str nul[2] = {{(const uint8_t *)"a\0b", 3}, {LIT("octet")}};
    CHECK(tftp_check_strings(TFTP_RRQ, nul, 2, err) == -1 && strcmp(err, "filename contains a NUL byte") == 0);
    tftp_str empty[2] = {{LIT("")}, {LIT("v")}};
    CHECK(tftp_check_strings(TFTP_OACK, empty, 2, err) == -1 && strcmp(err, "empty option name") == 0);
    CHECK(tftp_check_strings(TFTP_OACK, empty, 1, err) == -1);
}

static size_t netascii_oneshot(const uint8_t *in, size_t n, uint8_t *out)
{
    int pending = 0;
    return tftp_netascii_decode(in, n, out, &pending, 1);
}

static void test_netascii(void)
{
    static const char *inputs[] = {"", "\r", "\n", "\r\n", "\r\0", "\r\r\n", "a\rb", "\r\r\0\rx\r", "line1\nline2\r\n\r"};
    uint8_t enc[64], dec[64], whole[64], part[64];
    for (size_t k = 0; k < sizeof inputs / sizeof inputs[0]; k++) {
        size_t n = strlen(inputs[k]) + (k == 4); /* "\r\0" is two bytes */
        const uint8_t *in = (const uint8_t *)inputs[k];
        size_t m = tftp_netascii_encode(in, n, enc);
        CHECK(m == tftp_netascii_encoded_size(in, n));
        CHECK(netascii_oneshot(enc, m, dec) == n && memcmp(dec, in, n) == 0);

        /* decoding the raw input in two chunks at every split point equals decoding it whole */
        size_t w = netascii_oneshot(in, n, whole);
        for (size_t cut = 0; cut <= n; cut++) {
            int pending = 0;
            size_t got = tftp_netascii_decode(in, cut, part, &pending, 0);
            got += tftp_netascii_decode(in + cut, n - cut, part + got, &pending, 1);
            CHECK(got == w && memcmp(part, whole, w) == 0);
            CHECK(pending == 0);
        }
    }
    CHECK(netascii_oneshot((const uint8_t *)"a\r\nb\r\0c\rd", 9, dec) == 7 && memcmp(dec, "a\nb\rc\rd", 7) == 0);
}

/* Random and mutated datagrams: the parser never reads outside the buffer (ASan) and reports
 * spans inside it. */
static void check_invariants(const uint8_t *buf, size_t len, const tftp_packet *p, int rc)
{
    if (rc < 0) {
        CHECK(p->error_offset <= len);
        CHECK(p->error[0] != 0 && strlen(p->error) < TFTP_ERRMSG_SIZE);
        return;
    }
    (void)buf;
    switch (p->opcode) {
    case TFTP_RRQ:
    case TFTP_WRQ:
        CHECK(len <= TFTP_MAX_REQUEST);
        CHECK(p->filename.off + p->filename.len < len);
        CHECK(p->mode.off + p->mode.len < len);
        /* fall through */
    case TFTP_OACK:
        CHECK(p->n_options <= TFTP_MAX_OPTIONS);
        for (uint32_t i = 0; i < p->n_options; i++) {
            CHECK(p->option_name[i].len > 0 && p->option_name[i].off + p->option_name[i].len < len);
            CHECK(p->option_value[i].off + p->option_value[i].len < len);
        }
        break;
    case TFTP_DATA:
        CHECK(p->text.off + p->text.len == len && p->text.len <= TFTP_MAX_BLKSIZE);
        break;
    case TFTP_ACK:
        CHECK(len == 4);
        break;
    case TFTP_ERROR:
        CHECK(p->text.off + p->text.len + 1 == len);
        break;
    default:
        CHECK(0);
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

static long fuzz(long iterations)
{
    long valid = 0;
    static const struct {
        const char *data;
        size_t len;
    } seeds[] = {
#define SEED(lit) {lit, sizeof(lit) - 1}
        SEED("\0\1test.jpg\0octet\0blksize\0001428\0tsize\0000\0timeout\0003\0"),
        SEED("\0\2f\0netascii\0"),
        SEED("\0\3\0\1payload"),
        SEED("\0\4\0\1"),
        SEED("\0\5\0\2denied\0"),
        SEED("\0\6blksize\0008\0"),
#undef SEED
    };
    static const uint8_t alphabet[] = {0, 0, 0, 1, 2, 3, 4, 5, 6, 'a', 'B', '\r', '\n', 0xff};
    uint8_t tmp[700];
    for (long it = 0; it < iterations; it++) {
        size_t len;
        if (rnd() % 2) {
            /* a valid seed, truncated or extended with random bytes, with a few bytes mutated */
            size_t k = rnd() % (sizeof seeds / sizeof seeds[0]);
            memcpy(tmp, seeds[k].data, seeds[k].len);
            len = seeds[k].len;
            int change = (int)(rnd() % 3);
            if (change == 0)
                len = rnd() % (len + 1);
            else if (change == 1)
                for (int extra = (int)(rnd() % 8); extra > 0; extra--)
                    tmp[len++] = alphabet[rnd() % sizeof alphabet];
            for (int m = (int)(rnd() % 4); m > 0 && len; m--)
                tmp[rnd() % len] = alphabet[rnd() % sizeof alphabet];
        } else {
            len = rnd() % 600;
            for (size_t i = 0; i < len; i++)
                tmp[i] = alphabet[rnd() % sizeof alphabet];
            if (len >= 2) {
                tmp[0] = 0;
                tmp[1] = (uint8_t)(rnd() % 8);
            }
        }
        uint8_t *buf = malloc(len ? len : 1);
        memcpy(buf, tmp, len);
        tftp_packet p;
        int rc = tftp_parse(buf, len, &p);
        check_invariants(buf, len, &p, rc);
        valid += rc == 0;
        free(buf);
    }
    return valid;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 200000;
    test_valid();
    test_malformed();
    test_build();
    test_netascii();
    long valid = fuzz(iterations);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    /* a fuzzer that never produces a valid packet (or never an invalid one) tests little */
    CHECK(iterations < 1000 || (valid > iterations / 20 && valid < iterations - iterations / 20));
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok: tftp codec core, %ld random datagrams (%ld valid)\n", iterations, valid);
    return 0;
}
