/* libsodium crypto_secretbox_easy / crypto_secretbox_open_easy throughput at one message
 * size, for bench/crypto/compare.sh. Runs for <seconds> per operation in 20 ms windows and
 * prints the best window (the machine is shared): "<op> <bytes> <GB/s>".
 * Usage: secretbox_bench <bytes> <seconds> */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 3 || sodium_init() < 0) {
        fprintf(stderr, "usage: %s <bytes> <seconds>\n", argv[0]);
        return 2;
    }
    size_t len = (size_t)strtoul(argv[1], NULL, 10);
    double seconds = atof(argv[2]);
    unsigned char key[crypto_secretbox_KEYBYTES], nonce[crypto_secretbox_NONCEBYTES];
    randombytes_buf(key, sizeof key);
    randombytes_buf(nonce, sizeof nonce);
    unsigned char *m = calloc(len, 1), *c = malloc(len + crypto_secretbox_MACBYTES),
                  *out = malloc(len);
    if (!m || !c || !out) return 1;

    double best = 0, end = now() + seconds;
    while (now() < end) {
        unsigned long n = 0;
        double start = now(), t;
        do {
            for (int i = 0; i < 16; i++, n++) crypto_secretbox_easy(c, m, len, nonce, key);
        } while ((t = now()) - start < 0.02);
        double gbs = (double)n * (double)len / (t - start) / 1e9;
        if (gbs > best) best = gbs;
    }
    printf("encrypt %zu %.3f\n", len, best);

    best = 0;
    end = now() + seconds;
    while (now() < end) {
        unsigned long n = 0;
        double start = now(), t;
        do {
            for (int i = 0; i < 16; i++, n++)
                if (crypto_secretbox_open_easy(out, c, len + crypto_secretbox_MACBYTES, nonce, key))
                    return 1;
        } while ((t = now()) - start < 0.02);
        double gbs = (double)n * (double)len / (t - start) / 1e9;
        if (gbs > best) best = gbs;
    }
    printf("decrypt %zu %.3f\n", len, best);
    return 0;
}
