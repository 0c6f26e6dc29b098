/* Calls a model compiled ahead of time by
 *   lowbit compile model.onnx -o libmlp.so --emit so
 * (model from scripts/make_aot_example.py, or any model with one f32
 * input and one f32 output compiled as libmlp). Reads the input as raw
 * little-endian f32 values from the file argv[1] and prints each output
 * value on its own line; argv[2], if given, is the number of threads the
 * kernels split their rows over (lowbit_mlp_set_threads; 0: all CPUs).
 *
 * Build: cc -I DIR main.c -L DIR -lmlp -Wl,-rpath,DIR -o main
 */
#include <stdio.h>
#include <stdlib.h>

#include "libmlp.h"

int main(int argc, char **argv) {
  static float x[LOWBIT_MLP_IN0_ELEMS];
  static float y[LOWBIT_MLP_OUT0_ELEMS];
  if (argc != 2 && argc != 3) {
    fprintf(stderr, "usage: %s INPUT.f32 [THREADS]\n", argv[0]);
    return 2;
  }
  /* The kernels split their rows over THREADS threads (default 1). */
  if (argc == 3 && lowbit_mlp_set_threads(atoi(argv[2])) != 0) {
    fprintf(stderr, "bad thread count '%s'\n", argv[2]);
    return 2;
  }
  FILE *f = fopen(argv[1], "rb");
  if (!f) {
    perror(argv[1]);
    return 1;
  }
  size_t got = fread(x, sizeof(float), LOWBIT_MLP_IN0_ELEMS, f);
  fclose(f);
  if (got != LOWBIT_MLP_IN0_ELEMS) {
    fprintf(stderr, "%s: expected %d f32 values, read %zu\n", argv[1],
            LOWBIT_MLP_IN0_ELEMS, got);
    return 1;
  }
  int rc = lowbit_mlp_run(x, y);
  if (rc != 0) {
    fprintf(stderr, "lowbit_mlp_run failed: %d\n", rc);
    return 1;
  }
  for (int i = 0; i < LOWBIT_MLP_OUT0_ELEMS; i++)
    printf("%.9g\n", y[i]);
  return 0;
}
