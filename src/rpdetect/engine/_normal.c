/* rpdetect.engine._normal: i.i.d. N(0, 1) float32 draws, fast enough that the engine's noise
   costs little next to the classifier (see rpdetect/engine/noise.py, generator "xoshiro").

   Generator: 16 independent xoshiro128+ lanes (Blackman & Vigna; period 2**128 - 1 each; only
   the top 24 bits of an output are used, not its weak low bits), two outputs per pair of
   normal values. Transform: Box-Muller, u1 in (0, 1] and the angle from 24 + 3 bits, with
   Cephes' single-precision logf and sinf/cosf polynomials written branch-free (selects as bit
   operations) so that the compiler vectorises every loop with or without mask registers
   (AVX-512 or AVX2 clones picked at load time on x86-64 Linux with GCC; plain C elsewhere).
   Every build gives the same values: setup.py compiles ISO C (-std=c99), in which GCC contracts
   no multiply-add into an FMA (tests/engine/test_xoshiro.py compares each x86 build).
   |z| <= sqrt(48 ln 2) = 5.77 (u1 >= 2**-24).

   fill(state, out[, base, scale]): state a writable C-contiguous buffer of 64 uint32 (4 words
   per lane, never all zero in a lane), out a writable C-contiguous float32 buffer, base None
   or a float32 buffer of out's length; writes out = base + scale * z. Releases the GIL.
   isa(): the instruction set fill runs with on this CPU ("avx512f", "avx2", "sse2", "neon" or
   "scalar"). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#define LANES 16
#define BLOCK 512 /* pairs per block */

static inline float as_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* RP_NO_CLONES: one build for the compiler flags given (rpdetect.testing.build_normal builds
   each x86 ISA this way, for tests and benchmarks/noise_isa.py) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) \
    && !defined(RP_NO_CLONES)
#define RP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define RP_HAVE_CLONES 1
#else
#define RP_CLONES
#endif

/* out[i] = base[i] + scale * z_i (base NULL: scale * z_i), z_i i.i.d. N(0, 1) */
RP_CLONES
static void rp_normal_fill(uint32_t *restrict state, float *restrict out,
                           const float *restrict base, float scale, size_t n) {
    uint32_t s0[LANES], s1[LANES], s2[LANES], s3[LANES];
    uint32_t ra[BLOCK], rb[BLOCK];
    float z1[BLOCK], z2[BLOCK];
    for (int l = 0; l < LANES; l++) {
        s0[l] = state[l]; s1[l] = state[LANES + l];
        s2[l] = state[2 * LANES + l]; s3[l] = state[3 * LANES + l];
    }
    size_t done = 0;
    while (done < n) {
        for (int j = 0; j < BLOCK; j += LANES) {
            for (int l = 0; l < LANES; l++) {
                uint32_t a0 = s0[l], a1 = s1[l], a2 = s2[l], a3 = s3[l], t;
                ra[j + l] = a0 + a3; t = a1 << 9;
                a2 ^= a0; a3 ^= a1; a1 ^= a2; a0 ^= a3; a2 ^= t; a3 = (a3 << 11) | (a3 >> 21);
                rb[j + l] = a0 + a3; t = a1 << 9;
                a2 ^= a0; a3 ^= a1; a1 ^= a2; a0 ^= a3; a2 ^= t; a3 = (a3 << 11) | (a3 >> 21);
                s0[l] = a0; s1[l] = a1; s2[l] = a2; s3[l] = a3;
            }
        }
        for (int j = 0; j < BLOCK; j++) {
            /* radius: u in (0, 1] from the top 24 bits; log by Cephes' logf */
            float u = ((float)(int32_t)(ra[j] >> 8) + 1.0f) * (1.0f / 16777216.0f);
            uint32_t bits = as_uint(u);
            int32_t e = (int32_t)(bits >> 23) - 126;
            float m = as_float((bits & 0x007fffffu) | 0x3f000000u); /* [0.5, 1) */
            int32_t small = m < 0.70710678118654752f;
            e -= small;
            float x = m * (float)(1 + small) - 1.0f; /* 2m - 1 or m - 1, both exact */
            float zz = x * x;
            float y = 7.0376836292e-2f;
            y = y * x - 1.1514610310e-1f; y = y * x + 1.1676998740e-1f;
            y = y * x - 1.2420140846e-1f; y = y * x + 1.4249322787e-1f;
            y = y * x - 1.6668057665e-1f; y = y * x + 2.0000714765e-1f;
            y = y * x - 2.4999993993e-1f; y = y * x + 3.3333331174e-1f;
            y = y * x * zz;
            float fe = (float)e;
            y += -2.12194440e-4f * fe;
            y += -0.5f * zz;
            float lg = x + y + 0.693359375f * fe; /* log(u) <= 0 */
            float r = __builtin_sqrtf(-2.0f * lg);
            /* angle 2 pi v: octant from the top 3 bits, the rest within it */
            uint32_t v = rb[j];
            int32_t oct = (int32_t)(v >> 29);
            float f = (float)(int32_t)((v >> 5) & 0xFFFFFFu) * (1.0f / 16777216.0f);
            int32_t q = (oct + 1) >> 1; /* nearest quarter turn, 0..4 */
            float tt = ((float)(oct - 2 * q) + f) * 0.78539816339744831f; /* [-pi/4, pi/4) */
            float t2 = tt * tt;
            float sn = ((-1.9515295891e-4f * t2 + 8.3321608736e-3f) * t2 - 1.6666654611e-1f)
                       * t2 * tt + tt;
            float cs = ((2.443315711809948e-5f * t2 - 1.388731625493765e-3f) * t2
                        + 4.166664568298827e-2f) * t2 * t2 - 0.5f * t2 + 1.0f;
            /* the quarter turn's swap and signs as bit operations: GCC if-converts the
               ternary form only with AVX-512's masks; without them (AVX2, SSE2, NEON) it left
               this loop scalar, 8x slower under AVX2 (same values either way) */
            uint32_t qq = (uint32_t)q & 3u;
            uint32_t swap = 0u - (qq & 1u);
            uint32_t usn = as_uint(sn), ucs = as_uint(cs);
            float sv = as_float(((ucs & swap) | (usn & ~swap)) ^ ((qq & 2u) << 30));
            float cv = as_float(((usn & swap) | (ucs & ~swap)) ^ (((qq + 1u) & 2u) << 30));
            z1[j] = r * cv;
            z2[j] = r * sv;
        }
        size_t left = n - done;
        size_t a = left < BLOCK ? left : BLOCK;
        size_t b = left < 2 * BLOCK ? (left > BLOCK ? left - BLOCK : 0) : BLOCK;
        float *o1 = out + done, *o2 = out + done + BLOCK;
        if (base) {
            /* the product is stored (rounded) before the sum, in loops of their own, so the
               compiler cannot fuse them into an FMA: out = base + scale * z rounds exactly as
               the graph's Mul then Add whatever the compiler's contraction setting */
            const float *b1 = base + done, *b2 = base + done + BLOCK;
            for (size_t j = 0; j < a; j++) z1[j] = scale * z1[j];
            for (size_t j = 0; j < b; j++) z2[j] = scale * z2[j];
            for (size_t j = 0; j < a; j++) o1[j] = b1[j] + z1[j];
            for (size_t j = 0; j < b; j++) o2[j] = b2[j] + z2[j];
        } else {
            for (size_t j = 0; j < a; j++) o1[j] = scale * z1[j];
            for (size_t j = 0; j < b; j++) o2[j] = scale * z2[j];
        }
        done += a + b;
    }
    for (int l = 0; l < LANES; l++) {
        state[l] = s0[l]; state[LANES + l] = s1[l];
        state[2 * LANES + l] = s2[l]; state[3 * LANES + l] = s3[l];
    }
}


static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize,
                      const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) return -1;
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd-byte items, got %zd", what, itemsize,
                     view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *py_fill(PyObject *self, PyObject *args) {
    PyObject *state_obj, *out_obj, *base_obj = Py_None;
    float scale = 1.0f;
    if (!PyArg_ParseTuple(args, "OO|Of", &state_obj, &out_obj, &base_obj, &scale)) return NULL;
    Py_buffer state, out, base;
    if (get_buffer(state_obj, &state, 1, 4, "state") != 0) return NULL;
    if (state.len != 4 * LANES * 4) {
        PyErr_Format(PyExc_ValueError, "state: expected %d uint32 words", 4 * LANES);
        PyBuffer_Release(&state);
        return NULL;
    }
    if (get_buffer(out_obj, &out, 1, 4, "out") != 0) { PyBuffer_Release(&state); return NULL; }
    if (out.format == NULL || strcmp(out.format, "f") != 0) {
        PyErr_SetString(PyExc_ValueError, "out: expected float32");
        PyBuffer_Release(&state); PyBuffer_Release(&out);
        return NULL;
    }
    const float *base_ptr = NULL;
    int have_base = base_obj != Py_None;
    if (have_base) {
        if (get_buffer(base_obj, &base, 0, 4, "base") != 0) {
            PyBuffer_Release(&state); PyBuffer_Release(&out);
            return NULL;
        }
        if (base.len != out.len || base.format == NULL || strcmp(base.format, "f") != 0) {
            PyErr_SetString(PyExc_ValueError, "base: expected float32 of out's length");
            PyBuffer_Release(&state); PyBuffer_Release(&out); PyBuffer_Release(&base);
            return NULL;
        }
        base_ptr = (const float *)base.buf;
    }
    Py_BEGIN_ALLOW_THREADS
    rp_normal_fill((uint32_t *)state.buf, (float *)out.buf, base_ptr, scale,
                   (size_t)(out.len / 4));
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&state);
    PyBuffer_Release(&out);
    if (have_base) PyBuffer_Release(&base);
    Py_RETURN_NONE;
}

/* isa(): the instruction set fill runs with: the clone GCC's resolver picks (the same order:
   avx512f, then avx2, then the x86-64 baseline), else what this build was compiled for */
static PyObject *py_isa(PyObject *self, PyObject *noargs) {
#ifdef RP_HAVE_CLONES
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return PyUnicode_FromString("avx512f");
    if (__builtin_cpu_supports("avx2")) return PyUnicode_FromString("avx2");
    return PyUnicode_FromString("sse2");
#elif defined(__AVX512F__)
    return PyUnicode_FromString("avx512f");
#elif defined(__AVX2__)
    return PyUnicode_FromString("avx2");
#elif defined(__SSE2__)
    return PyUnicode_FromString("sse2");
#elif defined(__ARM_NEON)
    return PyUnicode_FromString("neon");
#else
    return PyUnicode_FromString("scalar");
#endif
}

static PyMethodDef methods[] = {
    {"fill", py_fill, METH_VARARGS,
     "fill(state, out[, base, scale]): out = base + scale * N(0, 1) draws (see the module)."},
    {"isa", py_isa, METH_NOARGS,
     "isa(): the instruction set fill runs with here (avx512f, avx2, sse2, neon or scalar)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_normal", "Fast i.i.d. N(0, 1) float32 draws (xoshiro128+ x 16, "
    "Box-Muller).", -1, methods,
};

PyMODINIT_FUNC PyInit__normal(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL) PyModule_AddIntConstant(m, "LANES", LANES);
    return m;
}
