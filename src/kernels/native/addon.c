/*
 * N-API binding of the native kernels (build/native/helora.node, loaded by src/kernels/native.ts).
 *
 * Stateless and context-aware (NAPI_MODULE_INIT): every worker thread may load it. The CPU level
 * is an argument of every call (the TypeScript side keeps the chosen one per thread). Every size
 * is checked here again against the typed arrays actually passed, so no call can make the kernels
 * read or write outside the caller's memory, whatever the TypeScript side does.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"

typedef int (*zq_fn)(const uint8_t *, int, int, const uint8_t *, const uint8_t *, int, uint32_t *, uint32_t *);
typedef int (*gemm_i8_fn)(const uint8_t *, int, int, const int8_t *, int, int32_t *);
typedef int (*sgemm_fn)(int, int, int, const float *, long, long, const float *, long, long, float *, long, long, int,
                        const float *);
typedef void (*small_fn)(int, float *, const float *, const float *, const float *, int, int, int);
typedef double (*peak_fn)(long);

typedef struct {
  const char *name;
  int (*supported)(void);
  zq_fn zq;
  gemm_i8_fn gemm_i8;
  sgemm_fn sgemm;
  small_fn small_f32;
  peak_fn peak;
} level_t;

static int always(void) { return 1; }
#if defined(__x86_64__)
/* (unused when the compiler could not build the level) */
__attribute__((unused)) static int has_avx2(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
__attribute__((unused)) static int has_avx512(void) {
  __builtin_cpu_init();
  return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
__attribute__((unused)) static int has_avx512vnni(void) {
  __builtin_cpu_init();
  return has_avx512() && __builtin_cpu_supports("avx512vnni");
}
#endif

/* Best first. */
static const level_t LEVELS[] = {
#if defined(HL_HAVE_avx512vnni)
    {"avx512vnni", has_avx512vnni, hl_zq_avx512vnni, hl_gemm_i8_avx512vnni, hl_sgemm_avx512vnni, hl_small_f32_avx512vnni,
     hl_peak_avx512vnni},
#endif
#if defined(HL_HAVE_avx512)
    {"avx512", has_avx512, hl_zq_avx512, hl_gemm_i8_avx512, hl_sgemm_avx512, hl_small_f32_avx512, hl_peak_avx512},
#endif
#if defined(HL_HAVE_avx2)
    {"avx2", has_avx2, hl_zq_avx2, hl_gemm_i8_avx2, hl_sgemm_avx2, hl_small_f32_avx2, hl_peak_avx2},
#endif
    {"scalar", always, hl_zq_scalar, hl_gemm_i8_scalar, hl_sgemm_scalar, hl_small_f32_scalar, hl_peak_scalar},
};
#define NLEVELS ((int)(sizeof LEVELS / sizeof LEVELS[0]))

/* ---- argument helpers: each throws a JS Error and returns 0 on a bad argument ---- */

static int fail(napi_env env, const char *msg) {
  napi_throw_error(env, NULL, msg);
  return 0;
}

static int get_int(napi_env env, napi_value v, int64_t lo, int64_t hi, const char *what, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != (double)(int64_t)d || d < (double)lo || d > (double)hi) {
    char msg[160];
    snprintf(msg, sizeof msg, "helora native: %s must be an integer in [%lld, %lld]", what, (long long)lo, (long long)hi);
    return fail(env, msg);
  }
  *out = (int64_t)d;
  return 1;
}

static int is_null(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && (t == napi_null || t == napi_undefined);
}

/* A typed array of the given element type with exactly `need` elements (or at least, when !exact). */
static int get_array(napi_env env, napi_value v, napi_typedarray_type want, uint64_t need, int exact, const char *what,
                     void **data, size_t *len) {
  bool is;
  napi_typedarray_type type;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, len, data, NULL, NULL) != napi_ok || type != want) {
    char msg[120];
    snprintf(msg, sizeof msg, "helora native: %s must be a typed array of the expected type", what);
    return fail(env, msg);
  }
  if (exact ? *len != need : *len < need) {
    char msg[160];
    snprintf(msg, sizeof msg, "helora native: %s has %zu elements, expected %s%llu", what, *len, exact ? "" : "at least ",
             (unsigned long long)need);
    return fail(env, msg);
  }
  return 1;
}

static int get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != n) {
    char msg[80];
    snprintf(msg, sizeof msg, "helora native: expected %zu arguments", n);
    return fail(env, msg);
  }
  return 1;
}

static const level_t *get_level(napi_env env, napi_value v) {
  int64_t i;
  if (!get_int(env, v, 0, NLEVELS - 1, "level", &i)) return NULL;
  if (!LEVELS[i].supported()) {
    fail(env, "helora native: this CPU does not support the requested level");
    return NULL;
  }
  return &LEVELS[i];
}

static napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static napi_value oom(napi_env env) {
  fail(env, "helora native: out of memory for kernel scratch");
  return NULL;
}

/* Sizes are capped so that every product of them below fits comfortably in 64 bits. */
#define MAX_DIM ((int64_t)1 << 28)

/* ---- exports ---- */

/** levels(): [{ name, index }] of the levels this CPU runs, best first. */
static napi_value js_levels(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value arr;
  napi_create_array(env, &arr);
  uint32_t n = 0;
  for (int i = 0; i < NLEVELS; i++) {
    if (!LEVELS[i].supported()) continue;
    napi_value o, name, idx;
    napi_create_object(env, &o);
    napi_create_string_utf8(env, LEVELS[i].name, NAPI_AUTO_LENGTH, &name);
    napi_create_int32(env, i, &idx);
    napi_set_named_property(env, o, "name", name);
    napi_set_named_property(env, o, "index", idx);
    napi_set_element(env, arr, n++, o);
  }
  return arr;
}

/** packI8(w Int8Array, M, K, dst Uint8Array): 4-row blocks of i16 pairs. */
static napi_value js_pack_i8(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int64_t M, K;
  void *w, *dst;
  size_t len;
  if (!get_args(env, info, 4, argv) || !get_int(env, argv[1], 1, MAX_DIM, "M", &M) || !get_int(env, argv[2], 1, MAX_DIM, "K", &K) ||
      !get_array(env, argv[0], napi_int8_array, (uint64_t)M * K, 1, "w", &w, &len) ||
      !get_array(env, argv[3], napi_uint8_array, hl_packed_i8_bytes((int)M, (int)K), 1, "packed", &dst, &len))
    return NULL;
  hl_pack_i8(w, (int)M, (int)K, dst);
  return undefined(env);
}

/**
 * zq(level, packedW, rows, cols, a|null, b|null, N, aOut|null, bOut|null): the Z_2^44 product;
 * the a part runs when a and aOut are given, the b part when b and bOut are.
 */
static napi_value js_zq(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  int64_t rows, cols, N;
  void *w, *a = NULL, *b = NULL, *ao = NULL, *bo = NULL;
  size_t len;
  const level_t *lv;
  if (!get_args(env, info, 9, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[2], 1, MAX_DIM, "rows", &rows) ||
      !get_int(env, argv[3], 1, MAX_DIM, "cols", &cols) || !get_int(env, argv[6], 8, MAX_DIM, "N", &N))
    return NULL;
  if (N % 8 != 0) return fail(env, "helora native: zq N must be a multiple of 8"), NULL;
  if (!get_array(env, argv[1], napi_uint8_array, hl_packed_i8_bytes((int)rows, (int)cols), 1, "packed weights", &w, &len))
    return NULL;
  const int doA = !is_null(env, argv[4]), doB = !is_null(env, argv[5]);
  if (doA != !is_null(env, argv[7]) || doB != !is_null(env, argv[8]) || (!doA && !doB))
    return fail(env, "helora native: zq needs a with aOut and/or b with bOut"), NULL;
  if (doA && (!get_array(env, argv[4], napi_uint8_array, (uint64_t)cols * N * 6, 1, "a", &a, &len) ||
              !get_array(env, argv[7], napi_uint32_array, (uint64_t)rows * N, 1, "aOut", &ao, &len)))
    return NULL;
  if (doB && (!get_array(env, argv[5], napi_uint8_array, (uint64_t)cols * N * 5, 1, "b", &b, &len) ||
              !get_array(env, argv[8], napi_uint32_array, (uint64_t)rows * N, 1, "bOut", &bo, &len)))
    return NULL;
  if (lv->zq(w, (int)rows, (int)cols, a, b, (int)N, ao, bo) != 0) return oom(env);
  return undefined(env);
}

/** gemmI8(level, packedW, M, K, x Int8Array, N, out Int32Array). */
static napi_value js_gemm_i8(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  int64_t M, K, N;
  void *w, *x, *out;
  size_t len;
  const level_t *lv;
  if (!get_args(env, info, 7, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[2], 1, MAX_DIM, "M", &M) ||
      !get_int(env, argv[3], 1, 131072, "K", &K) || !get_int(env, argv[5], 1, MAX_DIM, "N", &N) ||
      !get_array(env, argv[1], napi_uint8_array, hl_packed_i8_bytes((int)M, (int)K), 1, "packed weights", &w, &len) ||
      !get_array(env, argv[4], napi_int8_array, (uint64_t)K * N, 1, "x", &x, &len) ||
      !get_array(env, argv[6], napi_int32_array, (uint64_t)M * N, 1, "out", &out, &len))
    return NULL;
  if (lv->gemm_i8(w, (int)M, (int)K, x, (int)N, out) != 0) return oom(env);
  return undefined(env);
}

/* Highest element index of a strided rows x cols view at offset off (rows, cols >= 1). */
static uint64_t span_end(int64_t off, int64_t rows, int64_t cols, int64_t si, int64_t sj) {
  return (uint64_t)off + (uint64_t)(rows - 1) * (uint64_t)si + (uint64_t)(cols - 1) * (uint64_t)sj + 1;
}

/**
 * sgemm(level, M, N, K, A, aOff, sai, sak, B, bOff, sbk, sbj, C, cOff, sci, scj, accumulate, bias|null):
 * C(i,j) = (accumulate ? C(i,j) : 0) + bias[j] + sum_k A(i,k) B(k,j); element (i,k) of A at
 * A[aOff + i*sai + k*sak], and likewise for B and C. Strides are non-negative.
 */
static napi_value js_sgemm(napi_env env, napi_callback_info info) {
  napi_value argv[18];
  int64_t M, N, K, ao, sai, sak, bo, sbk, sbj, co, sci, scj, acc;
  void *A, *B, *C, *bias = NULL;
  size_t len;
  const level_t *lv;
  const int64_t S = (int64_t)1 << 32;
  if (!get_args(env, info, 18, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[1], 1, MAX_DIM, "M", &M) ||
      !get_int(env, argv[2], 1, MAX_DIM, "N", &N) || !get_int(env, argv[3], 0, MAX_DIM, "K", &K) ||
      !get_int(env, argv[5], 0, S, "aOff", &ao) || !get_int(env, argv[6], 0, S, "sai", &sai) || !get_int(env, argv[7], 0, S, "sak", &sak) ||
      !get_int(env, argv[9], 0, S, "bOff", &bo) || !get_int(env, argv[10], 0, S, "sbk", &sbk) || !get_int(env, argv[11], 0, S, "sbj", &sbj) ||
      !get_int(env, argv[13], 0, S, "cOff", &co) || !get_int(env, argv[14], 0, S, "sci", &sci) || !get_int(env, argv[15], 0, S, "scj", &scj) ||
      !get_int(env, argv[16], 0, 1, "accumulate", &acc))
    return NULL;
  if (!get_array(env, argv[12], napi_float32_array, span_end(co, M, N, sci, scj), 0, "C", &C, &len)) return NULL;
  if (K > 0 && (!get_array(env, argv[4], napi_float32_array, span_end(ao, M, K, sai, sak), 0, "A", &A, &len) ||
                !get_array(env, argv[8], napi_float32_array, span_end(bo, K, N, sbk, sbj), 0, "B", &B, &len)))
    return NULL;
  if (K == 0) A = B = C;
  if (!is_null(env, argv[17]) && !get_array(env, argv[17], napi_float32_array, (uint64_t)N, 0, "bias", &bias, &len)) return NULL;
  if (lv->sgemm((int)M, (int)N, (int)K, (const float *)A + ao, sai, sak, (const float *)B + bo, sbk, sbj, (float *)C + co, sci,
                scj, (int)acc, bias) != 0)
    return oom(env);
  return undefined(env);
}

/**
 * smallF32(level, op, target, x, y, bias|null, T, C, OC): the few-token matmuls of kernels.c
 * (op 0 forward, 1 backward input, 2 backward weight); arrays used from index 0.
 */
static napi_value js_small_f32(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  int64_t op, T, C, OC;
  void *target, *x, *y, *bias = NULL;
  size_t len;
  const level_t *lv;
  if (!get_args(env, info, 9, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[1], 0, 2, "op", &op) ||
      !get_int(env, argv[6], 0, MAX_DIM, "T", &T) || !get_int(env, argv[7], 0, MAX_DIM, "C", &C) ||
      !get_int(env, argv[8], 0, MAX_DIM, "OC", &OC))
    return NULL;
  /* Element counts of target, x, y per op (see kernels.c). */
  const uint64_t tc = (uint64_t)T * C, to = (uint64_t)T * OC, oc = (uint64_t)OC * C;
  const uint64_t need[3][3] = {{to, tc, oc}, {tc, to, oc}, {oc, to, tc}};
  if (!get_array(env, argv[2], napi_float32_array, need[op][0], 0, "target", &target, &len) ||
      !get_array(env, argv[3], napi_float32_array, need[op][1], 0, "x", &x, &len) ||
      !get_array(env, argv[4], napi_float32_array, need[op][2], 0, "y", &y, &len))
    return NULL;
  if (!is_null(env, argv[5]) && (op != 0 || !get_array(env, argv[5], napi_float32_array, (uint64_t)OC, 0, "bias", &bias, &len)))
    return op != 0 ? (fail(env, "helora native: only the forward takes a bias"), NULL) : NULL;
  lv->small_f32((int)op, target, x, y, bias, (int)T, (int)C, (int)OC);
  return undefined(env);
}

/** peak(level, reps): multiply-accumulates done by reps rounds of the register-only loop. */
static napi_value js_peak(napi_env env, napi_callback_info info) {
  napi_value argv[2], r;
  int64_t reps;
  const level_t *lv;
  if (!get_args(env, info, 2, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[1], 1, (int64_t)1 << 40, "reps", &reps))
    return NULL;
  napi_create_double(env, lv->peak((long)reps), &r);
  return r;
}

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
      {"levels", NULL, js_levels, NULL, NULL, NULL, napi_enumerable, NULL},
      {"packI8", NULL, js_pack_i8, NULL, NULL, NULL, napi_enumerable, NULL},
      {"zq", NULL, js_zq, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gemmI8", NULL, js_gemm_i8, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sgemm", NULL, js_sgemm, NULL, NULL, NULL, napi_enumerable, NULL},
      {"smallF32", NULL, js_small_f32, NULL, NULL, NULL, napi_enumerable, NULL},
      {"peak", NULL, js_peak, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
