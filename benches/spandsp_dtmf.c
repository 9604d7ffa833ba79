/* Reference figures for callout's in-band detector: spandsp's dtmf_rx on
 * the same audio, fed in 20 ms blocks like a call.
 * Build: gcc -O2 -o spandsp_dtmf benches/spandsp_dtmf.c -lspandsp
 * Run:   ./spandsp_dtmf AUDIO.raw REPEAT   throughput (raw = 8 kHz signed 16-bit mono)
 *        ./spandsp_dtmf --list AUDIO.raw   one "DIGIT MS" line per digit, as
 *                                          `callout dtmf detect` prints them
 * Default settings: the talk-off test compares against spandsp as an
 * operator would run it, untuned. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include <spandsp.h>

static int digits;
static long block_start;
static int listing;

static void on_digits(void *user, const char *d, int len) {
    (void) user;
    digits += len;
    if (listing)
        for (int i = 0; i < len; i++)
            printf("%c %ld\n", d[i], block_start / 8);
}

static int16_t *load(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    *n = bytes / 2;
    int16_t *pcm = malloc(bytes > 0 ? bytes : 1);
    if (fread(pcm, 2, *n, f) != (size_t) *n) { perror("read"); exit(2); }
    fclose(f);
    return pcm;
}

static void run(const int16_t *pcm, long n) {
    dtmf_rx_state_t *s = dtmf_rx_init(NULL, on_digits, NULL);
    for (long i = 0; i < n; i += 160) {
        int len = (n - i) < 160 ? (int) (n - i) : 160;
        block_start = i;
        dtmf_rx(s, pcm + i, len);
    }
    dtmf_rx_free(s);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--list") == 0) {
        long n;
        int16_t *pcm = load(argv[2], &n);
        listing = 1;
        run(pcm, n);
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: %s AUDIO.raw REPEAT | --list AUDIO.raw\n", argv[0]);
        return 2;
    }
    long n;
    int16_t *pcm = load(argv[1], &n);
    int repeat = atoi(argv[2]);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int per_pass = 0;
    for (int r = 0; r < repeat; r++) {
        digits = 0;
        run(pcm, n);
        per_pass = digits;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    double audio = (double) n / 8000.0 * repeat;
    printf("spandsp dtmf_rx: %.0f s of audio in %.3f s = %.0fx real time (%d digits per pass)\n",
           audio, secs, audio / secs, per_pass);
    return 0;
}
