/* libFuzzer harness for the TFTP codec core.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc_c tests/c/fuzz_tftp_codec.c src_c/tftp_codec.c
 *   ./a.out -max_total_time=60
 *
 * Without libFuzzer (gcc): build with -DFUZZ_STANDALONE and pass files; each is parsed once
 *   cc -DFUZZ_STANDALONE -fsanitize=address,undefined -Isrc_c tests/c/fuzz_tftp_codec.c src_c/tftp_codec.c
 */
#include "tftp_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tftp_packet p;
    if (tftp_parse(data, size, &p) == 0) {
        /* rebuild what was parsed and parse it again: same packet */
        if (p.opcode == TFTP_RRQ || p.opcode == TFTP_WRQ || p.opcode == TFTP_OACK) {
            tftp_str s[2 + 2 * TFTP_MAX_OPTIONS];
            size_t n = 0;
            char err[TFTP_ERRMSG_SIZE];
            if (p.opcode != TFTP_OACK) {
                s[n++] = (tftp_str){data + p.filename.off, p.filename.len};
                s[n++] = (tftp_str){data + p.mode.off, p.mode.len};
            }
            for (uint32_t i = 0; i < p.n_options; i++) {
                s[n++] = (tftp_str){data + p.option_name[i].off, p.option_name[i].len};
                s[n++] = (tftp_str){data + p.option_value[i].off, p.option_value[i].len};
            }
            if (tftp_check_strings(p.opcode, s, n, err) != 0 || tftp_strings_size(s, n) != size)
                abort();
            uint8_t *out = malloc(size);
            if (tftp_build_strings(out, p.opcode, s, n) != size || memcmp(out, data, size) != 0)
                abort();
            free(out);
        }
    } else if (p.error_offset > size || p.error[0] == 0) {
        abort();
    }
    /* netascii both ways over the same bytes */
    uint8_t *enc = malloc(tftp_netascii_encoded_size(data, size) + 1);
    uint8_t *dec = malloc(size + 1);
    size_t m = tftp_netascii_encode(data, size, enc);
    int pending = 0;
    if (tftp_netascii_decode(enc, m, dec, &pending, 1) != size || memcmp(dec, data, size) != 0)
        abort();
    free(enc);
    free(dec);
    return 0;
}

#ifdef FUZZ_STANDALONE
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 2;
        }
        static uint8_t buf[1 << 17];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, buf, n);
        LLVMFuzzerTestOneInput(copy, n);
        free(copy);
    }
    return 0;
}
#endif
