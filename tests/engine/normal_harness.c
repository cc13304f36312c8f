/* rpdetect.engine._normal's generator without Python, for builds the test machine cannot import
   (tests/engine/test_xoshiro.py builds it for aarch64 and runs it under qemu): fill(state, out)
   then fill(state, out, base, 0.05) of argv[1] values each, state[i] = (i + 1) * 2654435761
   mod 2**32, base[i] = (i mod 977) / 977; both written to stdout as float32. The Python entry
   points are compiled in but never called (linked with unresolved symbols ignored). */
#include "_normal.c"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    size_t n = (size_t)strtoul(argv[1], NULL, 10);
    uint32_t state[4 * LANES];
    for (int i = 0; i < 4 * LANES; i++) state[i] = (uint32_t)(i + 1) * 2654435761u;
    float *out = malloc(n * sizeof(float)), *base = malloc(n * sizeof(float));
    if (out == NULL || base == NULL) return 3;
    for (size_t i = 0; i < n; i++) base[i] = (float)(i % 977) / 977.0f;
    rp_normal_fill(state, out, NULL, 1.0f, n);
    fwrite(out, sizeof(float), n, stdout);
    rp_normal_fill(state, out, base, 0.05f, n);
    fwrite(out, sizeof(float), n, stdout);
    free(out);
    free(base);
    return 0;
}
