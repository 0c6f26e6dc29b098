/* Calls an integer model compiled ahead of time by
 *   lowbit compile model.lbir -o libqnet.so --emit so   (or --emit obj)
 * e.g. a W8A8 model after the e-graph's integer-only rewrite, whose input
 * and output are integer tensors. The header's typedefs give each
 * buffer's C element type (uint8_t, int8_t or int32_t); this program
 * follows them. Reads the input as raw bytes of that type (row-major, the
 * host's byte order) from the file argv[1] and prints each output value
 * as a decimal integer on its own line; argv[2], if given, is the number
 * of threads the kernels split their rows over (lowbit_qnet_set_threads).
 *
 * Build: cc -I DIR main_int.c -L DIR -lqnet -Wl,-rpath,DIR -o main_int
 *    or: cc -I DIR main_int.c DIR/libqnet.o -o main_int
 */
#include <stdio.h>
#include <stdlib.h>

#include "libqnet.h"

int main(int argc, char **argv) {
  static lowbit_qnet_in0_t x[LOWBIT_QNET_IN0_ELEMS];
  static lowbit_qnet_out0_t y[LOWBIT_QNET_OUT0_ELEMS];
  if (argc != 2 && argc != 3) {
    fprintf(stderr, "usage: %s INPUT.bin [THREADS]\n", argv[0]);
    return 2;
  }
  /* The kernels split their rows over THREADS threads (default 1). */
  if (argc == 3 && lowbit_qnet_set_threads(atoi(argv[2])) != 0) {
    fprintf(stderr, "bad thread count '%s'\n", argv[2]);
    return 2;
  }
  FILE *f = fopen(argv[1], "rb");
  if (!f) {
    perror(argv[1]);
    return 1;
  }
  size_t got = fread(x, sizeof x[0], LOWBIT_QNET_IN0_ELEMS, f);
  fclose(f);
  if (got != LOWBIT_QNET_IN0_ELEMS) {
    fprintf(stderr, "%s: expected %d values of %zu bytes, read %zu\n",
            argv[1], LOWBIT_QNET_IN0_ELEMS, sizeof x[0], got);
    return 1;
  }
  int rc = lowbit_qnet_run(x, y);
  if (rc != 0) {
    fprintf(stderr, "lowbit_qnet_run failed: %d\n", rc);
    return 1;
  }
  for (int i = 0; i < LOWBIT_QNET_OUT0_ELEMS; i++)
    printf("%lld\n", (long long)y[i]);
  return 0;
}
