/* Per-call timing harness of a model compiled by `lowbit compile --emit so`
 * whose library stem is `big` (one f32 input, one f32 output), shared by
 * scripts/bench_aot_threads.sh and scripts/bench_aot_blockdot.sh:
 *
 *   time THREADS CALLS [FLUSH_MB [WARMUP]]
 *
 * Sets THREADS, makes WARMUP calls (default 20), then times CALLS calls
 * (clock_gettime around the call only). With FLUSH_MB > 0 each timed call
 * first reads a FLUSH_MB MiB buffer, so that the weights come from DRAM
 * rather than the cache. Prints the median in microseconds and a hash of
 * the last output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "libbig.h"
static float x[LOWBIT_BIG_IN0_ELEMS], y[LOWBIT_BIG_OUT0_ELEMS];
static int cmp(const void *a, const void *b) {
  double d = *(const double *)a - *(const double *)b;
  return (d > 0) - (d < 0);
}
int main(int argc, char **argv) {
  if (argc < 3) return 2;
  int t = atoi(argv[1]), n = atoi(argv[2]);
  size_t flush = argc > 3 ? (size_t)atoi(argv[3]) << 20 : 0;
  int warm = argc > 4 ? atoi(argv[4]) : 20;
  double *s = malloc(sizeof(double) * n);
  volatile unsigned char *f = malloc(flush + 64);
  volatile unsigned sink = 0;
  unsigned h = 0;
  if (n < 1 || !s || !f) return 1;
  memset((void *)f, 1, flush);
  for (int i = 0; i < LOWBIT_BIG_IN0_ELEMS; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
  if (lowbit_big_set_threads(t)) return 1;
  for (int i = 0; i < warm; i++) if (lowbit_big_run(x, y)) return 1;
  for (int i = 0; i < n; i++) {
    struct timespec a, b;
    for (size_t j = 0; j < flush; j += 64) sink += f[j];
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (lowbit_big_run(x, y)) return 1;
    clock_gettime(CLOCK_MONOTONIC, &b);
    s[i] = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
  }
  qsort(s, n, sizeof(double), cmp);
  for (int i = 0; i < LOWBIT_BIG_OUT0_ELEMS; i++) { unsigned u; memcpy(&u, &y[i], 4); h = h * 31 + u; }
  printf("%.1f %08x\n", s[n / 2], h);
  return 0;
}
