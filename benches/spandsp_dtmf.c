/* Reference figure for callout's in-band detector: spandsp's dtmf_rx on
 * the same audio, fed in 20 ms blocks like a call.
 * Build: gcc -O2 -o spandsp_dtmf benches/spandsp_dtmf.c -lspandsp
 * Run:   ./spandsp_dtmf AUDIO.raw REPEAT   (raw = 8 kHz signed 16-bit mono) */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include <spandsp.h>

static int digits;
static void on_digits(void *user, const char *d, int len) { (void) user; (void) d; digits += len; }

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s AUDIO.raw REPEAT\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    long n = bytes / 2;
    int16_t *pcm = malloc(bytes);
    if (fread(pcm, 2, n, f) != (size_t) n) { perror("read"); return 2; }
    int repeat = atoi(argv[2]);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int per_pass = 0;
    for (int r = 0; r < repeat; r++) {
        digits = 0;
        dtmf_rx_state_t *s = dtmf_rx_init(NULL, on_digits, NULL);
        for (long i = 0; i < n; i += 160) {
            int len = (n - i) < 160 ? (int) (n - i) : 160;
            dtmf_rx(s, pcm + i, len);
        }
        dtmf_rx_free(s);
        per_pass = digits;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    double audio = (double) n / 8000.0 * repeat;
    printf("spandsp dtmf_rx: %.0f s of audio in %.3f s = %.0fx real time (%d digits per pass)\n",
           audio, secs, audio / secs, per_pass);
    return 0;
}
