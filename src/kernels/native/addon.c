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
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "kernels.h"

typedef struct {
  const char *name;
  int (*supported)(void);
  hl_level_fns fn;
} level_t;

static int always(void) { return 1; }

/* Best first. */
static const level_t LEVELS[] = {
#if defined(HL_HAVE_avx512vnni)
    {"avx512vnni", hl_has_avx512vnni, HL_LEVEL_FNS(avx512vnni)},
#endif
#if defined(HL_HAVE_avx512)
    {"avx512", hl_has_avx512, HL_LEVEL_FNS(avx512)},
#endif
#if defined(HL_HAVE_avx2)
    {"avx2", hl_has_avx2, HL_LEVEL_FNS(avx2)},
#endif
#if defined(HL_HAVE_dotprod)
    {"dotprod", hl_has_dotprod, HL_LEVEL_FNS(dotprod)},
#endif
#if defined(HL_HAVE_neon)
    /* NEON is baseline on AArch64: always there. */
    {"neon", always, HL_LEVEL_FNS(neon)},
#endif
    {"scalar", always, HL_LEVEL_FNS(scalar)},
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

/* A typed array of type a or b (which one into *type); msg is the error when it is neither. */
static int get_array_either(napi_env env, napi_value v, napi_typedarray_type a, napi_typedarray_type b, const char *msg, void **data,
                            size_t *len, napi_typedarray_type *type) {
  bool is;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is || napi_get_typedarray_info(env, v, type, len, data, NULL, NULL) != napi_ok ||
      (*type != a && *type != b))
    return fail(env, msg);
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
#define MAX_THREADS 256
#define ACC_TYPES "helora native: acc must be an Int32Array or a Float64Array"

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
  if (lv->fn.zq(w, (int)rows, (int)cols, a, b, (int)N, ao, bo) != 0) return oom(env);
  return undefined(env);
}

/** gemmI8(level, packedW, M, K, x Int8Array, N, out Int32Array, threads): rows split over threads. */
static napi_value js_gemm_i8(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  int64_t M, K, N, threads;
  void *w, *x, *out;
  size_t len;
  const level_t *lv;
  if (!get_args(env, info, 8, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[2], 1, MAX_DIM, "M", &M) ||
      !get_int(env, argv[3], 1, 131072, "K", &K) || !get_int(env, argv[5], 1, MAX_DIM, "N", &N) ||
      !get_array(env, argv[1], napi_uint8_array, hl_packed_i8_bytes((int)M, (int)K), 1, "packed weights", &w, &len) ||
      !get_array(env, argv[4], napi_int8_array, (uint64_t)K * N, 1, "x", &x, &len) ||
      !get_array(env, argv[6], napi_int32_array, (uint64_t)M * N, 1, "out", &out, &len) ||
      !get_int(env, argv[7], 1, MAX_THREADS, "threads", &threads))
    return NULL;
  if (lv->fn.gemm_i8_mt(w, (int)M, (int)K, x, (int)N, out, (int)threads) != 0) return oom(env);
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
  napi_value argv[19];
  int64_t M, N, K, ao, sai, sak, bo, sbk, sbj, co, sci, scj, acc, threads;
  void *A, *B, *C, *bias = NULL;
  size_t len;
  const level_t *lv;
  const int64_t S = (int64_t)1 << 32;
  if (!get_args(env, info, 19, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[1], 1, MAX_DIM, "M", &M) ||
      !get_int(env, argv[2], 1, MAX_DIM, "N", &N) || !get_int(env, argv[3], 0, MAX_DIM, "K", &K) ||
      !get_int(env, argv[5], 0, S, "aOff", &ao) || !get_int(env, argv[6], 0, S, "sai", &sai) || !get_int(env, argv[7], 0, S, "sak", &sak) ||
      !get_int(env, argv[9], 0, S, "bOff", &bo) || !get_int(env, argv[10], 0, S, "sbk", &sbk) || !get_int(env, argv[11], 0, S, "sbj", &sbj) ||
      !get_int(env, argv[13], 0, S, "cOff", &co) || !get_int(env, argv[14], 0, S, "sci", &sci) || !get_int(env, argv[15], 0, S, "scj", &scj) ||
      !get_int(env, argv[16], 0, 1, "accumulate", &acc) || !get_int(env, argv[18], 1, MAX_THREADS, "threads", &threads))
    return NULL;
  if (!get_array(env, argv[12], napi_float32_array, span_end(co, M, N, sci, scj), 0, "C", &C, &len)) return NULL;
  if (K > 0 && (!get_array(env, argv[4], napi_float32_array, span_end(ao, M, K, sai, sak), 0, "A", &A, &len) ||
                !get_array(env, argv[8], napi_float32_array, span_end(bo, K, N, sbk, sbj), 0, "B", &B, &len)))
    return NULL;
  if (K == 0) A = B = C;
  if (!is_null(env, argv[17]) && !get_array(env, argv[17], napi_float32_array, (uint64_t)N, 0, "bias", &bias, &len)) return NULL;
  if (lv->fn.sgemm_mt((int)M, (int)N, (int)K, (const float *)A + ao, sai, sak, (const float *)B + bo, sbk, sbj, (float *)C + co, sci,
                   scj, (int)acc, bias, (int)threads) != 0)
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
  lv->fn.small_f32((int)op, target, x, y, bias, (int)T, (int)C, (int)OC);
  return undefined(env);
}

/** peak(level, reps): multiply-accumulates done by reps rounds of the register-only loop. */
static napi_value js_peak(napi_env env, napi_callback_info info) {
  napi_value argv[2], r;
  int64_t reps;
  const level_t *lv;
  if (!get_args(env, info, 2, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[1], 1, (int64_t)1 << 40, "reps", &reps))
    return NULL;
  napi_create_double(env, lv->fn.peak((long)reps), &r);
  return r;
}

/* ---- client crypto: the kernel's regions inside the WebAssembly instance's memory ---- */

/* A region [off, off + bytes) of mem (len bytes), or NULL after throwing. */
static uint8_t *region(napi_env env, uint8_t *mem, size_t len, int64_t off, uint64_t bytes, const char *what) {
  if (off < 0 || (uint64_t)off > len || bytes > len - (uint64_t)off) {
    char msg[160];
    snprintf(msg, sizeof msg, "helora native: client crypto region %s [%lld, +%llu) outside the kernel memory (%zu bytes)", what,
             (long long)off, (unsigned long long)bytes, len);
    fail(env, msg);
    return NULL;
  }
  return mem + off;
}

/* mem (Uint8Array over the WebAssembly memory) and layout (Uint32Array: n2, then the offsets of
 * twist, untwist, fw, iw, fw4, iw4, secret, fbuf, wide, split) into L; 0 after throwing. */
static int get_layout(napi_env env, napi_value vmem, napi_value vlayout, uint8_t **mem, size_t *len, hl_cc_layout *L) {
  void *m, *l;
  size_t ll;
  if (!get_array(env, vmem, napi_uint8_array, 0, 0, "mem", &m, len) ||
      !get_array(env, vlayout, napi_uint32_array, 11, 1, "layout", &l, &ll))
    return 0;
  *mem = m;
  const uint32_t *o = l;
  const uint64_t n2 = o[0];
  if (n2 < 8 || n2 > (1u << 15) || (n2 & (n2 - 1))) return fail(env, "helora native: client crypto n2 must be a power of two in [8, 2^15]");
  L->n2 = (uint32_t)n2;
  const uint64_t sizes[10] = {n2 * 32, n2 * 32, n2 * 16, n2 * 16, n2 * 96, n2 * 96, n2 * 32, n2 * 16, n2 * 32, n2 * 48};
  const char *names[10] = {"twist", "untwist", "fw", "iw", "fw4", "iw4", "secret", "fbuf", "wide", "split"};
  uint8_t *p[10];
  for (int i = 0; i < 10; i++)
    if (!(p[i] = region(env, *mem, *len, o[i + 1], sizes[i], names[i]))) return 0;
  L->twist = p[0]; L->untwist = p[1]; L->fw = p[2]; L->iw = p[3]; L->fw4 = p[4]; L->iw4 = p[5]; L->secret = p[6];
  L->fbuf = p[7]; L->wide = p[8]; L->split = p[9];
  return 1;
}

/* ccEncrypt(level, mem, layout, nPolys, a, m, rnd, cdt, nCdt, deltaShift, upShift, outBytes, out, mLimit, mBytes, pairHigh):
 * encryptPolys of assembly/client-crypto/encrypt.ts (FFT path) on offsets into mem; returns 0, or 1 if some |m| >= mLimit. */
static napi_value js_cc_encrypt(napi_env env, napi_callback_info info) {
  napi_value argv[16], r;
  const level_t *lv;
  uint8_t *mem;
  size_t len;
  hl_cc_layout L;
  int64_t np, ao, mo, ro, co, nc, ds, us, ob, oo, lim, mb, ph;
  if (!get_args(env, info, 16, argv) || !(lv = get_level(env, argv[0])) || !get_layout(env, argv[1], argv[2], &mem, &len, &L) ||
      !get_int(env, argv[3], 1, 1 << 20, "nPolys", &np) || !get_int(env, argv[4], 0, UINT32_MAX, "a", &ao) ||
      !get_int(env, argv[5], 0, UINT32_MAX, "m", &mo) || !get_int(env, argv[6], 0, UINT32_MAX, "rnd", &ro) ||
      !get_int(env, argv[7], 0, UINT32_MAX, "cdt", &co) || !get_int(env, argv[8], 1, 64, "nCdt", &nc) ||
      !get_int(env, argv[9], 0, 43, "deltaShift", &ds) || !get_int(env, argv[10], 1, 43, "upShift", &us) ||
      !get_int(env, argv[11], 1, 8, "outBytes", &ob) || !get_int(env, argv[12], 0, UINT32_MAX, "out", &oo) ||
      !get_int(env, argv[13], 1, (int64_t)1 << 30, "mLimit", &lim) || !get_int(env, argv[14], 1, 4, "mBytes", &mb) ||
      !get_int(env, argv[15], 0, 1, "pairHigh", &ph))
    return NULL;
  if (mb == 3) return fail(env, "helora native: mBytes must be 1, 2 or 4"), NULL;
  const uint64_t count = (uint64_t)np * (L.n2 * 2);
  uint8_t *a, *m, *rnd, *cdt, *out;
  if (!(a = region(env, mem, len, ao, count * 6, "a")) || !(m = region(env, mem, len, mo, count * (uint64_t)mb, "m")) ||
      !(rnd = region(env, mem, len, ro, count * 4 + count / 4, "rnd")) || !(cdt = region(env, mem, len, co, (uint64_t)nc * 4, "cdt")) ||
      !(out = region(env, mem, len, oo, count * (uint64_t)ob, "out")))
    return NULL;
  if (((uintptr_t)cdt & 3) != 0) return fail(env, "helora native: cdt must be 4-byte aligned"), NULL;
  const int bad = lv->fn.cc_encrypt(&L, (int)np, a, m, rnd, (const uint32_t *)(const void *)cdt, (int)nc, (int)ds, (int)us, (int)ob, out,
                                 (int32_t)lim, (int)mb, (int)ph);
  napi_create_int32(env, bad, &r);
  return r;
}

/* ccDecrypt(level, mem, layout, nRows, a, b, sh, y, accumulate): decryptRowsFft of assembly/client-crypto/decrypt.ts. */
static napi_value js_cc_decrypt(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  const level_t *lv;
  uint8_t *mem;
  size_t len;
  hl_cc_layout L;
  int64_t nr, ao, bo, sh, yo, acc;
  if (!get_args(env, info, 9, argv) || !(lv = get_level(env, argv[0])) || !get_layout(env, argv[1], argv[2], &mem, &len, &L) ||
      !get_int(env, argv[3], 1, 1 << 20, "nRows", &nr) || !get_int(env, argv[4], 0, UINT32_MAX, "a", &ao) ||
      !get_int(env, argv[5], 0, UINT32_MAX, "b", &bo) || !get_int(env, argv[6], 1, 31, "sh", &sh) ||
      !get_int(env, argv[7], 0, UINT32_MAX, "y", &yo) || !get_int(env, argv[8], 0, 1, "accumulate", &acc))
    return NULL;
  const uint64_t bytes = (uint64_t)nr * (L.n2 * 2) * 4;
  uint8_t *a, *b, *y;
  if (!(a = region(env, mem, len, ao, bytes, "a")) || !(b = region(env, mem, len, bo, bytes, "b")) || !(y = region(env, mem, len, yo, bytes, "y")))
    return NULL;
  lv->fn.cc_decrypt(&L, (int)nr, a, b, (int)sh, y, (int)acc);
  return undefined(env);
}

/* ccDecryptFrom(level, mem, layout, nRows, a: Uint32Array, b: Uint32Array, sh, y, accumulate): ccDecrypt reading a and b
 * (nRows*N values each) straight from the caller's arrays (e.g. shared memory) instead of the kernel memory. */
static napi_value js_cc_decrypt_from(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  const level_t *lv;
  uint8_t *mem;
  size_t len, la, lb;
  hl_cc_layout L;
  int64_t nr, sh, yo, acc;
  void *a, *b;
  if (!get_args(env, info, 9, argv) || !(lv = get_level(env, argv[0])) || !get_layout(env, argv[1], argv[2], &mem, &len, &L) ||
      !get_int(env, argv[3], 1, 1 << 20, "nRows", &nr))
    return NULL;
  const uint64_t count = (uint64_t)nr * (L.n2 * 2);
  uint8_t *y;
  if (!get_array(env, argv[4], napi_uint32_array, count, 1, "a", &a, &la) || !get_array(env, argv[5], napi_uint32_array, count, 1, "b", &b, &lb) ||
      !get_int(env, argv[6], 1, 31, "sh", &sh) || !get_int(env, argv[7], 0, UINT32_MAX, "y", &yo) ||
      !get_int(env, argv[8], 0, 1, "accumulate", &acc) || !(y = region(env, mem, len, yo, count * 4, "y")))
    return NULL;
  lv->fn.cc_decrypt(&L, (int)nr, a, b, (int)sh, y, (int)acc);
  return undefined(env);
}

/* ccTransposeInto(mem, y, nRows, n, acc, rows, r0, t0, tn): acc[(t0 + t)*rows + r0 + r] = y[r*n + t] for r < nRows,
 * t < tn (y: int32 rows in mem; acc: Int32Array or Float64Array, token-major): the decrypted rows straight into the
 * caller's result. Memory-bound, one version for every level: blocks of 64 rows x 16 tokens. */
static napi_value js_cc_transpose_into(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  void *m, *acc;
  size_t len, alen;
  int64_t yo, nr, n, rows, r0, t0, tn;
  napi_typedarray_type type;
  if (!get_args(env, info, 9, argv) || !get_array(env, argv[0], napi_uint8_array, 0, 0, "mem", &m, &len) ||
      !get_int(env, argv[1], 0, UINT32_MAX, "y", &yo) || !get_int(env, argv[2], 1, 1 << 20, "nRows", &nr) ||
      !get_int(env, argv[3], 1, 1 << 20, "n", &n) || !get_int(env, argv[5], 1, 1 << 24, "rows", &rows) ||
      !get_int(env, argv[6], 0, 1 << 24, "r0", &r0) || !get_int(env, argv[7], 0, 1 << 24, "t0", &t0) ||
      !get_int(env, argv[8], 1, n, "tn", &tn))
    return NULL;
  if (!get_array_either(env, argv[4], napi_int32_array, napi_float64_array, ACC_TYPES, &acc, &alen, &type)) return NULL;
  if (r0 + nr > rows || (uint64_t)(t0 + tn) * (uint64_t)rows > alen) return fail(env, "helora native: transpose target range outside acc"), NULL;
  const uint8_t *yb = region(env, m, len, yo, (uint64_t)nr * (uint64_t)n * 4, "y");
  if (!yb) return NULL;
  const int32_t *y = (const int32_t *)(const void *)yb;
  for (int64_t rb = 0; rb < nr; rb += 64) {
    const int64_t re = rb + 64 < nr ? rb + 64 : nr;
    for (int64_t tb = 0; tb < tn; tb += 16) {
      const int64_t te = tb + 16 < tn ? tb + 16 : tn;
      if (type == napi_int32_array) {
#if defined(__SSE2__)
        if (te - tb == 16 && ((re - rb) & 3) == 0) { /* 4 x 4 blocks through registers */
          for (int64_t r = rb; r < re; r += 4) {
            for (int64_t t = tb; t < te; t += 4) {
              const int32_t *p = y + (size_t)r * (size_t)n + (size_t)t;
              const __m128i x0 = _mm_loadu_si128((const __m128i *)(const void *)p);
              const __m128i x1 = _mm_loadu_si128((const __m128i *)(const void *)(p + n));
              const __m128i x2 = _mm_loadu_si128((const __m128i *)(const void *)(p + 2 * n));
              const __m128i x3 = _mm_loadu_si128((const __m128i *)(const void *)(p + 3 * n));
              const __m128i u0 = _mm_unpacklo_epi32(x0, x1), u1 = _mm_unpacklo_epi32(x2, x3);
              const __m128i u2 = _mm_unpackhi_epi32(x0, x1), u3 = _mm_unpackhi_epi32(x2, x3);
              int32_t *o = (int32_t *)acc + (size_t)(t0 + t) * (size_t)rows + (size_t)(r0 + r);
              _mm_storeu_si128((__m128i *)(void *)o, _mm_unpacklo_epi64(u0, u1));
              _mm_storeu_si128((__m128i *)(void *)(o + rows), _mm_unpackhi_epi64(u0, u1));
              _mm_storeu_si128((__m128i *)(void *)(o + 2 * rows), _mm_unpacklo_epi64(u2, u3));
              _mm_storeu_si128((__m128i *)(void *)(o + 3 * rows), _mm_unpackhi_epi64(u2, u3));
            }
          }
          continue;
        }
#endif
        for (int64_t t = tb; t < te; t++) {
          int32_t *o = (int32_t *)acc + (size_t)(t0 + t) * (size_t)rows + (size_t)r0;
          for (int64_t r = rb; r < re; r++) o[r] = y[(size_t)r * (size_t)n + (size_t)t];
        }
      } else {
        for (int64_t t = tb; t < te; t++) {
          double *o = (double *)acc + (size_t)(t0 + t) * (size_t)rows + (size_t)r0;
          for (int64_t r = rb; r < re; r++) o[r] = (double)y[(size_t)r * (size_t)n + (size_t)t];
        }
      }
    }
  }
  return undefined(env);
}

/* ccTranspose(level, mem, src, rows, cols, dst): dst[c*rows + r] = src[r*cols + c] (int32) inside mem. */
static napi_value js_cc_transpose(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  const level_t *lv;
  void *m;
  size_t len;
  int64_t so, rows, cols, d;
  if (!get_args(env, info, 6, argv) || !(lv = get_level(env, argv[0])) || !get_array(env, argv[1], napi_uint8_array, 0, 0, "mem", &m, &len) ||
      !get_int(env, argv[2], 0, UINT32_MAX, "src", &so) || !get_int(env, argv[3], 1, 1 << 24, "rows", &rows) ||
      !get_int(env, argv[4], 1, 1 << 24, "cols", &cols) || !get_int(env, argv[5], 0, UINT32_MAX, "dst", &d))
    return NULL;
  const uint64_t bytes = (uint64_t)rows * (uint64_t)cols * 4;
  uint8_t *src, *dst;
  if (!(src = region(env, m, len, so, bytes, "src")) || !(dst = region(env, m, len, d, bytes, "dst"))) return NULL;
  if ((src < dst ? dst - src : src - dst) < (ptrdiff_t)bytes) return fail(env, "helora native: transpose regions overlap"), NULL;
  lv->fn.cc_transpose(src, (int)rows, (int)cols, dst);
  return undefined(env);
}

/**
 * crossEntropy(level, logits, targets, T, V, grad, inv, losses, threads): per-row losses into
 * losses (Float64Array[T]); with grad 1 the logits become their gradient (see kernels.h). Every
 * target must be -100 (ignored) or in [0, V).
 */
static napi_value js_cross_entropy(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  const level_t *lv;
  int64_t T, V, grad, threads;
  double inv;
  void *logits, *targets, *losses;
  size_t len;
  if (!get_args(env, info, 9, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[3], 0, MAX_DIM, "T", &T) ||
      !get_int(env, argv[4], 1, MAX_DIM, "V", &V) || !get_int(env, argv[5], 0, 1, "grad", &grad) ||
      !get_int(env, argv[8], 1, MAX_THREADS, "threads", &threads) ||
      !get_array(env, argv[1], napi_float32_array, (uint64_t)T * (uint64_t)V, 0, "logits", &logits, &len) ||
      !get_array(env, argv[2], napi_int32_array, (uint64_t)T, 0, "targets", &targets, &len) ||
      !get_array(env, argv[7], napi_float64_array, (uint64_t)T, 0, "losses", &losses, &len))
    return NULL;
  if (napi_get_value_double(env, argv[6], &inv) != napi_ok || !(inv == inv)) return fail(env, "helora native: inv must be a number"), NULL;
  const int32_t *tg = targets;
  for (int64_t t = 0; t < T; t++) {
    if (tg[t] != -100 && (tg[t] < 0 || tg[t] >= V)) {
      char msg[120];
      snprintf(msg, sizeof msg, "helora: target %d at position %lld is neither -100 nor in [0, %lld)", tg[t], (long long)t, (long long)V);
      return fail(env, msg), NULL;
    }
  }
  lv->fn.cross_entropy(logits, tg, (int)T, (int)V, (int)grad, (float)inv, losses, (int)threads);
  return undefined(env);
}

/**
 * swiglu(level, op, n, gate, up, out, dgate|null, dup|null, threads): op 0 out = silu(gate)*up;
 * op 1 dgate, dup += the gradients for dout = out.
 */
static napi_value js_swiglu(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  const level_t *lv;
  int64_t op, n, threads;
  void *gate, *up, *out, *dgate, *dup;
  size_t len;
  if (!get_args(env, info, 9, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[1], 0, 1, "op", &op) ||
      !get_int(env, argv[2], 0, (int64_t)1 << 40, "n", &n) || !get_int(env, argv[8], 1, MAX_THREADS, "threads", &threads) ||
      !get_array(env, argv[3], napi_float32_array, (uint64_t)n, 0, "gate", &gate, &len) ||
      !get_array(env, argv[4], napi_float32_array, (uint64_t)n, 0, "up", &up, &len) ||
      !get_array(env, argv[5], napi_float32_array, (uint64_t)n, 0, op == 0 ? "out" : "dout", &out, &len))
    return NULL;
  if (op == 0) {
    lv->fn.swiglu_fwd(out, gate, up, (long)n, (int)threads);
  } else {
    if (!get_array(env, argv[6], napi_float32_array, (uint64_t)n, 0, "dgate", &dgate, &len) ||
        !get_array(env, argv[7], napi_float32_array, (uint64_t)n, 0, "dup", &dup, &len))
      return NULL;
    lv->fn.swiglu_bwd(dgate, dup, out, gate, up, (long)n, (int)threads);
  }
  return undefined(env);
}

static int get_float(napi_env env, napi_value v, const char *what, float *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d == d) || d > 3.0e38 || d < -3.0e38) {
    char msg[100];
    snprintf(msg, sizeof msg, "helora native: %s must be a finite number", what);
    return fail(env, msg);
  }
  *out = (float)d;
  return 1;
}

/**
 * lora(level, op, T, in, out, rank, scale, keep, x, A, B, mask|null, y|dy, h, dx|null, gradA|null, gradB|null, threads):
 * op 0: y += the LoRA branch, h = dropout(x) A^T; op 1: gradA, gradB (and dx when given) += the gradients
 * for dy, with h from op 0 (see kernels.h).
 */
static napi_value js_lora(napi_env env, napi_callback_info info) {
  napi_value argv[18];
  const level_t *lv;
  int64_t op, T, in, out, rank, threads;
  float scale, keep;
  void *x, *A, *B, *mask = NULL, *y, *h, *dx = NULL, *gA, *gB;
  size_t len;
  if (!get_args(env, info, 18, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[1], 0, 1, "op", &op) ||
      !get_int(env, argv[2], 0, MAX_DIM, "T", &T) || !get_int(env, argv[3], 1, 1 << 20, "in", &in) ||
      !get_int(env, argv[4], 1, 1 << 20, "out", &out) || !get_int(env, argv[5], 1, 256, "rank", &rank) ||
      !get_float(env, argv[6], "scale", &scale) || !get_float(env, argv[7], "keep", &keep) ||
      !get_int(env, argv[17], 1, MAX_THREADS, "threads", &threads) ||
      !get_array(env, argv[8], napi_float32_array, (uint64_t)T * in, 0, "x", &x, &len) ||
      !get_array(env, argv[9], napi_float32_array, (uint64_t)rank * in, 0, "A", &A, &len) ||
      !get_array(env, argv[10], napi_float32_array, (uint64_t)out * rank, 0, "B", &B, &len) ||
      (!is_null(env, argv[11]) && !get_array(env, argv[11], napi_uint8_array, (uint64_t)T * in, 0, "mask", &mask, &len)) ||
      !get_array(env, argv[12], napi_float32_array, (uint64_t)T * out, 0, op == 0 ? "y" : "dy", &y, &len) ||
      !get_array(env, argv[13], napi_float32_array, (uint64_t)T * rank, 0, "h", &h, &len))
    return NULL;
  int rc;
  if (op == 0) {
    rc = lv->fn.lora_fwd(y, h, x, A, B, mask, (int)T, (int)in, (int)out, (int)rank, scale, keep, (int)threads);
  } else {
    if ((!is_null(env, argv[14]) && !get_array(env, argv[14], napi_float32_array, (uint64_t)T * in, 0, "dx", &dx, &len)) ||
        !get_array(env, argv[15], napi_float32_array, (uint64_t)rank * in, 0, "gradA", &gA, &len) ||
        !get_array(env, argv[16], napi_float32_array, (uint64_t)out * rank, 0, "gradB", &gB, &len))
      return NULL;
    rc = lv->fn.lora_bwd(dx, gA, gB, y, x, h, A, B, mask, (int)T, (int)in, (int)out, (int)rank, scale, keep, (int)threads);
  }
  return rc != 0 ? oom(env) : undefined(env);
}

/** dropoutMask(level, stream Uint8Array[2n], threshold, mask Uint8Array[n]). */
static napi_value js_dropout_mask(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  const level_t *lv;
  int64_t threshold;
  void *stream, *mask;
  size_t slen, mlen;
  if (!get_args(env, info, 4, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[2], 0, 65536, "threshold", &threshold) ||
      !get_array(env, argv[3], napi_uint8_array, 0, 0, "mask", &mask, &mlen) ||
      !get_array(env, argv[1], napi_uint8_array, (uint64_t)mlen * 2, 0, "stream", &stream, &slen))
    return NULL;
  lv->fn.dropout_mask(stream, (long)mlen, (uint32_t)threshold, mask);
  return undefined(env);
}

/**
 * rmsnorm(level, op, T, C, inp, w, a, rstd|null, dout|null, eps, threads): op 0 a = out and rstd
 * (when given) written; op 1 a = dinp += the input gradient for dout with the saved rstd.
 */
static napi_value js_rmsnorm(napi_env env, napi_callback_info info) {
  napi_value argv[11];
  const level_t *lv;
  int64_t op, T, C, threads;
  float eps;
  void *inp, *w, *a, *rstd = NULL, *dout = NULL;
  size_t len;
  if (!get_args(env, info, 11, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[1], 0, 1, "op", &op) ||
      !get_int(env, argv[2], 0, MAX_DIM, "T", &T) || !get_int(env, argv[3], 1, MAX_DIM, "C", &C) ||
      !get_float(env, argv[9], "eps", &eps) || !get_int(env, argv[10], 1, MAX_THREADS, "threads", &threads) ||
      !get_array(env, argv[4], napi_float32_array, (uint64_t)T * C, 0, "inp", &inp, &len) ||
      !get_array(env, argv[5], napi_float32_array, (uint64_t)C, 0, "weight", &w, &len) ||
      !get_array(env, argv[6], napi_float32_array, (uint64_t)T * C, 0, op == 0 ? "out" : "dinp", &a, &len) ||
      ((op == 1 || !is_null(env, argv[7])) && !get_array(env, argv[7], napi_float32_array, (uint64_t)T, 0, "rstd", &rstd, &len)) ||
      (op == 1 && !get_array(env, argv[8], napi_float32_array, (uint64_t)T * C, 0, "dout", &dout, &len)))
    return NULL;
  if (op == 0) lv->fn.rmsnorm_fwd(a, rstd, inp, w, (int)T, (int)C, eps, (int)threads);
  else lv->fn.rmsnorm_bwd(a, dout, inp, w, rstd, (int)T, (int)C, (int)threads);
  return undefined(env);
}

/**
 * quantizeRows(level, x, colScale|null, rows, cols, qmax, out Int8Array|Int16Array, scales, threads):
 * returns -1, or the first index of a non-finite value (x), or -(index + 2) for a non-finite
 * x * colScale (see kernels.h).
 */
static napi_value js_quantize_rows(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  const level_t *lv;
  int64_t rows, cols, qmax, threads;
  void *x, *cs = NULL, *out, *scales;
  size_t len, outLen;
  napi_typedarray_type type;
  if (!get_args(env, info, 9, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[3], 0, MAX_DIM, "rows", &rows) ||
      !get_int(env, argv[4], 0, MAX_DIM, "cols", &cols) || !get_int(env, argv[5], 1, 32767, "qmax", &qmax) ||
      !get_int(env, argv[8], 1, MAX_THREADS, "threads", &threads) ||
      !get_array(env, argv[1], napi_float32_array, (uint64_t)rows * cols, 0, "x", &x, &len) ||
      (!is_null(env, argv[2]) && !get_array(env, argv[2], napi_float32_array, (uint64_t)cols, 0, "colScale", &cs, &len)) ||
      !get_array(env, argv[7], napi_float32_array, (uint64_t)rows, 0, "scales", &scales, &len))
    return NULL;
  const char *outTypes = "helora native: out must be an Int8Array (qmax <= 127) or an Int16Array";
  if (!get_array_either(env, argv[6], napi_int8_array, napi_int16_array, outTypes, &out, &outLen, &type)) return NULL;
  if (type == napi_int8_array && qmax > 127) return fail(env, outTypes), NULL;
  if (outLen < (uint64_t)rows * cols) return fail(env, "helora native: out is shorter than rows * cols"), NULL;
  int inProduct = 0;
  const long bad = lv->fn.quantize_rows(x, cs, (int)rows, (int)cols, (int)qmax, type == napi_int8_array ? out : NULL,
                                     type == napi_int16_array ? out : NULL, scales, &inProduct, (int)threads);
  if (bad == -2) return oom(env);
  napi_value r;
  napi_create_double(env, bad < 0 ? -1.0 : inProduct ? -(double)bad - 2.0 : (double)bad, &r);
  return r;
}

/** dequantize(level, acc Int32Array|Float64Array, sx, sw|null, OC, y, t0, tn, o0, on): see kernels.h. */
static napi_value js_dequantize(napi_env env, napi_callback_info info) {
  napi_value argv[10];
  const level_t *lv;
  int64_t OC, t0, tn, o0, on;
  void *acc, *sx, *sw = NULL, *y;
  size_t len, accLen;
  napi_typedarray_type type;
  if (!get_args(env, info, 10, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[4], 1, MAX_DIM, "OC", &OC) ||
      !get_int(env, argv[6], 0, MAX_DIM, "t0", &t0) || !get_int(env, argv[7], 0, MAX_DIM, "tn", &tn) ||
      !get_int(env, argv[8], 0, OC, "o0", &o0) || !get_int(env, argv[9], 0, OC - o0, "on", &on))
    return NULL;
  const uint64_t need = (uint64_t)(t0 + tn) * (uint64_t)OC;
  if (!get_array_either(env, argv[1], napi_int32_array, napi_float64_array, ACC_TYPES, &acc, &accLen, &type)) return NULL;
  if (accLen < need) return fail(env, "helora native: acc is shorter than the token range"), NULL;
  if (!get_array(env, argv[2], napi_float32_array, (uint64_t)(t0 + tn), 0, "sx", &sx, &len) ||
      (!is_null(env, argv[3]) && !get_array(env, argv[3], napi_float32_array, (uint64_t)OC, 0, "sw", &sw, &len)) ||
      !get_array(env, argv[5], napi_float32_array, need, 0, "y", &y, &len))
    return NULL;
  lv->fn.dequantize(type == napi_int32_array ? acc : NULL, type == napi_float64_array ? acc : NULL, sx, sw, (int)OC, y, (int)t0, (int)tn,
                 (int)o0, (int)on);
  return undefined(env);
}

/**
 * attention(level, op, T, nH, nKv, hd, seqIds, q, k, v, out, lse|null, dout|null, dq|null, dk|null, dv|null, threads):
 * op 0 out (and lse when given) = causal attention of q, k, v under the packing mask seqIds; op 1
 * dq, dk, dv += its gradients for dout, from the forward's out and lse (see kernels.h).
 */
static napi_value js_attention(napi_env env, napi_callback_info info) {
  napi_value argv[17];
  const level_t *lv;
  int64_t op, T, nH, nKv, hd, threads;
  void *seq, *q, *k, *v, *out, *lse = NULL, *dout, *dq, *dk, *dv;
  size_t len;
  if (!get_args(env, info, 17, argv) || !(lv = get_level(env, argv[0])) || !get_int(env, argv[1], 0, 1, "op", &op) ||
      !get_int(env, argv[2], 1, 1 << 24, "T", &T) || !get_int(env, argv[3], 1, 1 << 16, "nHeads", &nH) ||
      !get_int(env, argv[4], 1, 1 << 16, "nKvHeads", &nKv) || !get_int(env, argv[5], 1, 1 << 16, "headDim", &hd) ||
      !get_int(env, argv[16], 1, MAX_THREADS, "threads", &threads))
    return NULL;
  if (nH % nKv != 0) return fail(env, "helora native: attention heads must be a multiple of kv heads"), NULL;
  const uint64_t nq = (uint64_t)T * (uint64_t)nH * (uint64_t)hd, nk = (uint64_t)T * (uint64_t)nKv * (uint64_t)hd;
  if (nq > ((uint64_t)1 << 34)) return fail(env, "helora native: attention T * nHeads * headDim is too large"), NULL;
  if (!get_array(env, argv[6], napi_int32_array, (uint64_t)T, 0, "seqIds", &seq, &len) ||
      !get_array(env, argv[7], napi_float32_array, nq, 0, "q", &q, &len) ||
      !get_array(env, argv[8], napi_float32_array, nk, 0, "k", &k, &len) ||
      !get_array(env, argv[9], napi_float32_array, nk, 0, "v", &v, &len) ||
      !get_array(env, argv[10], napi_float32_array, nq, 0, "out", &out, &len))
    return NULL;
  const uint64_t nl = (uint64_t)nH * (uint64_t)T;
  int rc;
  if (op == 0) {
    if (!is_null(env, argv[11]) && !get_array(env, argv[11], napi_float32_array, nl, 0, "lse", &lse, &len)) return NULL;
    rc = lv->fn.attn_fwd(q, k, v, seq, (int)T, (int)nH, (int)nKv, (int)hd, out, lse, (int)threads);
  } else {
    if (!get_array(env, argv[11], napi_float32_array, nl, 0, "lse", &lse, &len) ||
        !get_array(env, argv[12], napi_float32_array, nq, 0, "dout", &dout, &len) ||
        !get_array(env, argv[13], napi_float32_array, nq, 0, "dq", &dq, &len) ||
        !get_array(env, argv[14], napi_float32_array, nk, 0, "dk", &dk, &len) ||
        !get_array(env, argv[15], napi_float32_array, nk, 0, "dv", &dv, &len))
      return NULL;
    rc = lv->fn.attn_bwd(q, k, v, out, lse, dout, seq, (int)T, (int)nH, (int)nKv, (int)hd, dq, dk, dv, (int)threads);
  }
  return rc == 0 ? undefined(env) : oom(env);
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
      {"ccEncrypt", NULL, js_cc_encrypt, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ccDecrypt", NULL, js_cc_decrypt, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ccTranspose", NULL, js_cc_transpose, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ccDecryptFrom", NULL, js_cc_decrypt_from, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ccTransposeInto", NULL, js_cc_transpose_into, NULL, NULL, NULL, napi_enumerable, NULL},
      {"crossEntropy", NULL, js_cross_entropy, NULL, NULL, NULL, napi_enumerable, NULL},
      {"swiglu", NULL, js_swiglu, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lora", NULL, js_lora, NULL, NULL, NULL, napi_enumerable, NULL},
      {"dropoutMask", NULL, js_dropout_mask, NULL, NULL, NULL, napi_enumerable, NULL},
      {"rmsnorm", NULL, js_rmsnorm, NULL, NULL, NULL, napi_enumerable, NULL},
      {"quantizeRows", NULL, js_quantize_rows, NULL, NULL, NULL, napi_enumerable, NULL},
      {"dequantize", NULL, js_dequantize, NULL, NULL, NULL, napi_enumerable, NULL},
      {"attention", NULL, js_attention, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
