/*
 * Self-test of the native kernels without Node (scripts/check-arm64.mjs builds it for x86-64 and
 * for AArch64 and compares the two): every per-level entry point runs on fixed pseudo-random
 * inputs (extreme values and odd tails included) at every level compiled in that this CPU runs,
 * and each (test, level) prints one line:
 *   <test> <level> exact hash=<FNV-1a 64 of the output bytes>        integer (or bit-for-bit) results
 *   <test> <level> f32 hash=<...> maxrel=<max relative difference to the scalar level>
 * Exact results must equal the scalar level's byte for byte (and, via the hashes, the other
 * architecture's); fp32 results may differ in rounding only (FMA, sum order), within F32_TOL.
 * Exits 1 on any mismatch. --dump DIR writes each output to DIR/<test>.<level>.bin (the checker
 * compares the fp32 outputs across architectures from those files). --only NAME runs one test.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define F32_TOL 1e-4

typedef struct {
  const char *name;
  int (*supported)(void);
  hl_level_fns fn;
} level_t;
#define LEVEL(n, sup) {#n, sup, HL_LEVEL_FNS(n)}

static int always(void) { return 1; }

/* Scalar first: the reference the others are compared with. */
static const level_t LEVELS[] = {
    LEVEL(scalar, always),
#if defined(HL_HAVE_avx2)
    LEVEL(avx2, hl_has_avx2),
#endif
#if defined(HL_HAVE_avx512)
    LEVEL(avx512, hl_has_avx512),
#endif
#if defined(HL_HAVE_avx512vnni)
    LEVEL(avx512vnni, hl_has_avx512vnni),
#endif
#if defined(HL_HAVE_neon)
    LEVEL(neon, always),
#endif
#if defined(HL_HAVE_dotprod)
    LEVEL(dotprod, hl_has_dotprod),
#endif
};
#define NLEVELS ((int)(sizeof LEVELS / sizeof LEVELS[0]))

/* ---- inputs: xorshift64 with a fixed seed per test, so every level sees the same bytes ---- */

static uint64_t rng;
static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}
static void *xmalloc(size_t n) {
  void *p = calloc(n ? n : 1, 1);
  if (!p) {
    fprintf(stderr, "selftest: out of memory\n");
    exit(2);
  }
  return p;
}
static void fill_bytes(uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(next() >> 56);
}
/* Uniform in [-s, s): 24 random bits, exact in float on every machine. */
static float uf(float s) { return s * ((float)(int32_t)((next() >> 40) - (1u << 23)) / 8388608.0f); }
static float *fvec(size_t n, float s) {
  float *p = xmalloc(n * 4);
  for (size_t i = 0; i < n; i++) p[i] = uf(s);
  return p;
}
/* int8 weights: random, or all at the extremes +-127 / -128 (mode 1). */
static int8_t *i8vec(size_t n, int mode) {
  int8_t *p = xmalloc(n);
  for (size_t i = 0; i < n; i++) p[i] = mode ? ((next() >> 63) ? 127 : -127) : (int8_t)(next() >> 56);
  return p;
}

/* ---- outputs ---- */

typedef struct {
  uint8_t *bytes;
  size_t n;
  int exact; /* 1: integer (bit-for-bit) result; 0: fp32 values */
} out_t;

static void out_init(out_t *o, int exact) {
  o->bytes = NULL;
  o->n = 0;
  o->exact = exact;
}
static void out_add(out_t *o, const void *p, size_t n) {
  o->bytes = realloc(o->bytes, o->n + n + 1);
  if (!o->bytes) exit(2);
  memcpy(o->bytes + o->n, p, n);
  o->n += n;
}
static void check_rc(const char *what, int rc) {
  if (rc != 0) {
    fprintf(stderr, "selftest: %s returned %d\n", what, rc);
    exit(2);
  }
}

/* ---- tests: each builds its inputs from its seed, runs one level, returns the output bytes ---- */

typedef struct {
  const char *name;
  void (*run)(const level_t *L, const int *p, out_t *o);
  int p[10];
} test_t;

/* gemm_i8: M, K, N, weight mode (1: +-127), x mode (1: +-127/-128 extremes), threads (0: the
 * single-thread entry, else gemm_i8_mt). */
static void t_gemm_i8(const level_t *L, const int *p, out_t *o) {
  const int M = p[0], K = p[1], N = p[2];
  int8_t *w = i8vec((size_t)M * K, p[3]);
  int8_t *x = xmalloc((size_t)K * N);
  for (size_t i = 0; i < (size_t)K * N; i++) x[i] = p[4] ? ((next() >> 63) ? 127 : -128) : (int8_t)(next() >> 56);
  uint8_t *wp = xmalloc(hl_packed_i8_bytes(M, K));
  hl_pack_i8(w, M, K, wp);
  int32_t *out = xmalloc((size_t)M * N * 4);
  check_rc("gemm_i8", p[5] ? L->fn.gemm_i8_mt(wp, M, K, x, N, out, p[5]) : L->fn.gemm_i8(wp, M, K, x, N, out));
  out_init(o, 1);
  out_add(o, out, (size_t)M * N * 4);
  free(w), free(x), free(wp), free(out);
}

/* zq: rows, cols, N, parts (1 a, 2 b, 3 both), weight mode, data mode (1: every word all ones). */
static void t_zq(const level_t *L, const int *p, out_t *o) {
  const int rows = p[0], cols = p[1], N = p[2], parts = p[3];
  int8_t *w = i8vec((size_t)rows * cols, p[4]);
  uint8_t *wp = xmalloc(hl_packed_i8_bytes(rows, cols));
  hl_pack_i8(w, rows, cols, wp);
  const size_t words = (size_t)cols * N;
  uint8_t *a = xmalloc(words * 6), *b = xmalloc(words * 5);
  if (p[5]) {
    memset(a, 0xff, words * 6);
    memset(b, 0xff, words * 5);
  } else {
    fill_bytes(a, words * 6);
    fill_bytes(b, words * 5);
  }
  uint32_t *aOut = xmalloc((size_t)rows * N * 4), *bOut = xmalloc((size_t)rows * N * 4);
  check_rc("zq", L->fn.zq(wp, rows, cols, parts & 1 ? a : NULL, parts & 2 ? b : NULL, N, parts & 1 ? aOut : NULL,
                       parts & 2 ? bOut : NULL));
  out_init(o, 1);
  if (parts & 1) out_add(o, aOut, (size_t)rows * N * 4);
  if (parts & 2) out_add(o, bOut, (size_t)rows * N * 4);
  free(w), free(wp), free(a), free(b), free(aOut), free(bOut);
}

/*
 * sgemm: M, N, K, layout bits (1: A transposed, 2: B transposed, 4: C rows padded by 3 and
 * columns 2 apart), acc, bias, threads (0: hl_sgemm, else hl_sgemm_mt).
 */
static void t_sgemm(const level_t *L, const int *p, out_t *o) {
  const int M = p[0], N = p[1], K = p[2], lay = p[3], acc = p[4], hasBias = p[5], threads = p[6];
  float *A = fvec((size_t)M * K + 1, 1.0f), *B = fvec((size_t)K * N + 1, 1.0f), *bias = fvec((size_t)N, 0.5f);
  const long sai = lay & 1 ? 1 : K, sak = lay & 1 ? M : 1;
  const long sbk = lay & 2 ? 1 : N, sbj = lay & 2 ? K : 1;
  const long scj = lay & 4 ? 2 : 1, sci = lay & 4 ? 2L * N + 3 : N;
  const size_t cn = (size_t)M * sci + 4;
  float *C = fvec(cn, 2.0f);
  if (threads) check_rc("sgemm_mt", L->fn.sgemm_mt(M, N, K, A, sai, sak, B, sbk, sbj, C, sci, scj, acc, hasBias ? bias : NULL, threads));
  else check_rc("sgemm", L->fn.sgemm(M, N, K, A, sai, sak, B, sbk, sbj, C, sci, scj, acc, hasBias ? bias : NULL));
  out_init(o, 0);
  out_add(o, C, cn * 4); /* the gaps between strided elements too: they must stay untouched */
  free(A), free(B), free(bias), free(C);
}

/* small_f32: op, T, C, OC, bias. */
static void t_small(const level_t *L, const int *p, out_t *o) {
  const int op = p[0], T = p[1], C = p[2], OC = p[3];
  float *x = fvec((size_t)T * (op == 0 ? C : OC), 1.0f);
  float *y = fvec((size_t)(op == 2 ? T : OC) * C, 1.0f);
  float *bias = fvec((size_t)OC, 0.5f);
  if (op != 0) x[3] = 0.0f; /* a zero gradient is skipped */
  const size_t tn = op == 0 ? (size_t)T * OC : op == 1 ? (size_t)T * C : (size_t)OC * C;
  float *target = fvec(tn, 1.0f);
  L->fn.small_f32(op, target, x, y, p[4] ? bias : NULL, T, C, OC);
  out_init(o, 0);
  out_add(o, target, tn * 4);
  free(x), free(y), free(bias), free(target);
}

/* cross entropy: T, V, grad, threads. */
static void t_cross_entropy(const level_t *L, const int *p, out_t *o) {
  const int T = p[0], V = p[1], grad = p[2];
  float *logits = fvec((size_t)T * V, 8.0f);
  int32_t *targets = xmalloc((size_t)T * 4);
  for (int t = 0; t < T; t++) targets[t] = t == 1 ? -1 : (int32_t)(next() % (uint64_t)V);
  logits[(size_t)2 * V + 5] = -1e30f; /* a masked logit: e^x underflows to 0 */
  double *losses = xmalloc((size_t)T * 8);
  L->fn.cross_entropy(logits, targets, T, V, grad, 1.0f / (float)(T - 1), losses, p[3]);
  out_init(o, 0);
  if (grad) out_add(o, logits, (size_t)T * V * 4);
  for (int t = 0; t < T; t++) {
    const float l = (float)losses[t];
    out_add(o, &l, 4);
  }
  free(logits), free(targets), free(losses);
}

/* SwiGLU: n, backward, threads. */
static void t_swiglu(const level_t *L, const int *p, out_t *o) {
  const long n = p[0];
  float *gate = fvec((size_t)n, 12.0f), *up = fvec((size_t)n, 2.0f), *dout = fvec((size_t)n, 1.0f);
  float *a = fvec((size_t)n, 1.0f), *b = fvec((size_t)n, 1.0f);
  gate[0] = 100.0f, gate[1] = -100.0f; /* saturated sigmoid */
  out_init(o, 0);
  if (p[1]) {
    L->fn.swiglu_bwd(a, b, dout, gate, up, n, p[2]);
    out_add(o, a, (size_t)n * 4);
    out_add(o, b, (size_t)n * 4);
  } else {
    L->fn.swiglu_fwd(a, gate, up, n, p[2]);
    out_add(o, a, (size_t)n * 4);
  }
  free(gate), free(up), free(dout), free(a), free(b);
}

/* RMSNorm: T, C, backward, threads (rstd of the backward computed here, the same for every level). */
static void t_rmsnorm(const level_t *L, const int *p, out_t *o) {
  const int T = p[0], C = p[1];
  float *inp = fvec((size_t)T * C, 3.0f), *w = fvec((size_t)C, 1.0f), *dout = fvec((size_t)T * C, 1.0f);
  float *out = fvec((size_t)T * C, 1.0f), *rstd = xmalloc((size_t)T * 4);
  out_init(o, 0);
  if (p[2]) {
    for (int t = 0; t < T; t++) {
      double s = 0;
      for (int c = 0; c < C; c++) s += (double)inp[(size_t)t * C + c] * inp[(size_t)t * C + c];
      rstd[t] = (float)(1.0 / sqrt(s / C + 1e-5));
    }
    L->fn.rmsnorm_bwd(out, dout, inp, w, rstd, T, C, p[3]);
    out_add(o, out, (size_t)T * C * 4);
  } else {
    L->fn.rmsnorm_fwd(out, rstd, inp, w, T, C, 1e-5f, p[3]);
    out_add(o, out, (size_t)T * C * 4);
    out_add(o, rstd, (size_t)T * 4);
  }
  free(inp), free(w), free(dout), free(out), free(rstd);
}

/* Attention: T, heads, kv heads, head dim, packed sequence length (0: one sequence), backward, threads. */
static void t_attention(const level_t *L, const int *p, out_t *o) {
  const int T = p[0], nH = p[1], nKv = p[2], hd = p[3], seqLen = p[4], threads = p[6];
  const size_t nq = (size_t)T * nH * hd, nk = (size_t)T * nKv * hd;
  float *q = fvec(nq, 1.0f), *k = fvec(nk, 1.0f), *v = fvec(nk, 1.0f), *out = fvec(nq, 1.0f), *lse = fvec((size_t)nH * T, 1.0f);
  int32_t *seq = xmalloc((size_t)T * 4);
  for (int t = 0; t < T; t++) seq[t] = seqLen > 0 ? t / seqLen : 0;
  out_init(o, 0);
  check_rc("attn_fwd", L->fn.attn_fwd(q, k, v, seq, T, nH, nKv, hd, out, lse, threads));
  if (p[5]) {
    float *dout = fvec(nq, 1.0f), *dq = fvec(nq, 1.0f), *dk = fvec(nk, 1.0f), *dv = fvec(nk, 1.0f);
    check_rc("attn_bwd", L->fn.attn_bwd(q, k, v, out, lse, dout, seq, T, nH, nKv, hd, dq, dk, dv, threads));
    out_add(o, dq, nq * 4);
    out_add(o, dk, nk * 4);
    out_add(o, dv, nk * 4);
    free(dout), free(dq), free(dk), free(dv);
  } else {
    out_add(o, out, nq * 4);
    out_add(o, lse, (size_t)nH * T * 4);
  }
  free(q), free(k), free(v), free(out), free(lse), free(seq);
}

/* LoRA branch: T, in, out, rank, dropout (mask + keep 0.9), backward, threads. */
static void t_lora(const level_t *L, const int *p, out_t *o) {
  const int T = p[0], in = p[1], outD = p[2], rank = p[3], drop = p[4], threads = p[6];
  float *x = fvec((size_t)T * in, 1.0f), *A = fvec((size_t)rank * in, 0.3f), *B = fvec((size_t)outD * rank, 0.3f);
  float *y = fvec((size_t)T * outD, 1.0f), *h = fvec((size_t)T * rank, 1.0f), *dy = fvec((size_t)T * outD, 1.0f);
  float *dx = fvec((size_t)T * in, 1.0f), *gA = fvec((size_t)rank * in, 1.0f), *gB = fvec((size_t)outD * rank, 1.0f);
  uint8_t *mask = xmalloc((size_t)T * in);
  for (size_t i = 0; i < (size_t)T * in; i++) mask[i] = (next() % 10) != 0;
  const float scale = 2.0f, keep = drop ? 1.0f / 0.9f : 1.0f;
  out_init(o, 0);
  if (p[5]) {
    check_rc("lora_bwd", L->fn.lora_bwd(dx, gA, gB, dy, x, h, A, B, drop ? mask : NULL, T, in, outD, rank, scale, keep, threads));
    out_add(o, dx, (size_t)T * in * 4);
    out_add(o, gA, (size_t)rank * in * 4);
    out_add(o, gB, (size_t)outD * rank * 4);
  } else {
    check_rc("lora_fwd", L->fn.lora_fwd(y, h, x, A, B, drop ? mask : NULL, T, in, outD, rank, scale, keep, threads));
    out_add(o, y, (size_t)T * outD * 4);
    out_add(o, h, (size_t)T * rank * 4);
  }
  free(x), free(A), free(B), free(y), free(h), free(dy), free(dx), free(gA), free(gB), free(mask);
}

/* Dropout mask: n, threshold. */
static void t_dropout(const level_t *L, const int *p, out_t *o) {
  uint8_t *stream = xmalloc((size_t)p[0] * 2), *mask = xmalloc((size_t)p[0]);
  fill_bytes(stream, (size_t)p[0] * 2);
  L->fn.dropout_mask(stream, p[0], (uint32_t)p[1], mask);
  out_init(o, 1);
  out_add(o, mask, (size_t)p[0]);
  free(stream), free(mask);
}

/* Per-row quantization: rows, cols, qmax (<= 127: q8), column scales, a non-finite value, threads. */
static void t_quantize(const level_t *L, const int *p, out_t *o) {
  const int rows = p[0], cols = p[1], qmax = p[2];
  float *x = fvec((size_t)rows * cols, 50.0f), *cs = fvec((size_t)cols, 2.0f), *scales = xmalloc((size_t)rows * 4);
  for (int c = 0; c < cols; c++) x[c] = 0.0f; /* an all-zero row */
  x[(size_t)cols + 3] = 1e-30f;
  if (p[4]) x[(size_t)(rows / 2) * cols + 7] = INFINITY;
  int8_t *q8 = xmalloc((size_t)rows * cols);
  int16_t *q16 = xmalloc((size_t)rows * cols * 2);
  int bad = -7;
  const long first = L->fn.quantize_rows(x, p[3] ? cs : NULL, rows, cols, qmax, qmax <= 127 ? q8 : NULL, qmax <= 127 ? NULL : q16,
                                      scales, &bad, p[5]);
  out_init(o, 1);
  const int64_t r[2] = {first, bad};
  out_add(o, r, sizeof r);
  if (!p[4]) {
    if (qmax <= 127) out_add(o, q8, (size_t)rows * cols);
    else out_add(o, q16, (size_t)rows * cols * 2);
    out_add(o, scales, (size_t)rows * 4);
  }
  free(x), free(cs), free(scales), free(q8), free(q16);
}

/* Dequantization (IEEE double, bit for bit): T, OC, acc64, weight scales. */
static void t_dequantize(const level_t *L, const int *p, out_t *o) {
  const int T = p[0], OC = p[1];
  int32_t *a32 = xmalloc((size_t)T * OC * 4);
  double *a64 = xmalloc((size_t)T * OC * 8);
  for (size_t i = 0; i < (size_t)T * OC; i++) {
    a32[i] = (int32_t)next();
    a64[i] = (double)(int64_t)(next() >> 20) - (double)(1LL << 43);
  }
  float *sx = fvec((size_t)T, 1e-3f), *sw = fvec((size_t)OC, 1e-2f), *y = fvec((size_t)T * OC, 1.0f);
  L->fn.dequantize(p[2] ? NULL : a32, p[2] ? a64 : NULL, sx, p[3] ? sw : NULL, OC, y, 1, T - 2, 2, OC - 3);
  out_init(o, 1);
  out_add(o, y, (size_t)T * OC * 4);
  free(a32), free(a64), free(sx), free(sw), free(y);
}

/* Client crypto int32 transpose: rows, cols. */
static void t_transpose(const level_t *L, const int *p, out_t *o) {
  const size_t n = (size_t)p[0] * p[1] * 4;
  uint8_t *src = xmalloc(n), *dst = xmalloc(n);
  fill_bytes(src, n);
  L->fn.cc_transpose(src, p[0], p[1], dst);
  out_init(o, 1);
  out_add(o, dst, n);
  free(src), free(dst);
}

/*
 * The client crypto's state for ring degree 2 n2 (client-crypto.c): the FFT tables are
 * pseudo-random doubles instead of twiddles (the kernels' arithmetic does not depend on their
 * values; all stay finite), so results are not decryptions or ciphertexts, but the kernels are
 * IEEE double operations in a fixed order and must give the same bits everywhere.
 */
typedef struct {
  double *tab[7];
  uint8_t *fbuf, *wide, *split;
  hl_cc_layout lay;
} cc_state;

static void cc_init(cc_state *c, size_t n2) {
  const size_t n = 2 * n2;
  const size_t tabLen[7] = {n2 * 4, n2 * 4, n2 * 4, n2 * 4, n2 * 16, n2 * 16, n2 * 4 + 16};
  for (int i = 0; i < 7; i++) {
    c->tab[i] = xmalloc(tabLen[i] * 8);
    const double s = i == 6 ? 1.0 / (double)n2 : 0.7; /* the secret's table has 1/(n/2) folded in */
    for (size_t j = 0; j < tabLen[i]; j++) c->tab[i][j] = s * (double)uf(1.0f);
  }
  c->fbuf = xmalloc(n2 * 16), c->wide = xmalloc(n * 16), c->split = xmalloc(n * 24);
  const hl_cc_layout lay = {(uint32_t)n2, (uint8_t *)c->tab[0], (uint8_t *)c->tab[1], (uint8_t *)c->tab[2], (uint8_t *)c->tab[3],
                            (uint8_t *)c->tab[4], (uint8_t *)c->tab[5], (uint8_t *)c->tab[6], c->fbuf, c->wide, c->split};
  c->lay = lay;
}
static void cc_free(cc_state *c) {
  for (int i = 0; i < 7; i++) free(c->tab[i]);
  free(c->fbuf), free(c->wide), free(c->split);
}

/* Client encryption: n2, polynomials, message bytes (1, 2, 4), pairs, deltaShift, upShift, outBytes, an out-of-range message. */
static void t_encrypt(const level_t *L, const int *p, out_t *o) {
  const size_t n2 = (size_t)p[0], n = 2 * n2;
  const int nPolys = p[1], mBytes = p[2], outBytes = p[6];
  const int32_t mLimit = mBytes == 1 ? 100 : 20000;
  cc_state c;
  cc_init(&c, n2);
  const size_t vals = (size_t)nPolys * n;
  uint8_t *a = xmalloc(vals * 6), *m = xmalloc(vals * (size_t)mBytes), *rnd = xmalloc(vals * 4 + vals / 4 + 16);
  uint8_t *out = xmalloc(vals * (size_t)outBytes + 8);
  fill_bytes(a, vals * 6);
  fill_bytes(rnd, vals * 4 + vals / 4 + 16);
  for (size_t i = 0; i < vals; i++) {
    const int32_t v = (int32_t)(next() % (uint64_t)(2 * mLimit)) - mLimit;
    if (mBytes == 1) m[i] = (uint8_t)(int8_t)v;
    else if (mBytes == 2) { const int16_t h = (int16_t)v; memcpy(m + 2 * i, &h, 2); }
    else memcpy(m + 4 * i, &v, 4);
  }
  if (p[7] && mBytes == 2) { const int16_t h = 30000; memcpy(m + 2 * 5, &h, 2); }
  uint32_t cdt[12];
  for (int k = 0; k < 12; k++) cdt[k] = 0x10000000u * (uint32_t)(k + 3) + (uint32_t)(next() >> 40); /* ascending thresholds */
  const int32_t bad = L->fn.cc_encrypt(&c.lay, nPolys, a, m, rnd, cdt, 12, p[4], p[5], outBytes, out, mLimit, mBytes, p[3]);
  out_init(o, 1);
  out_add(o, &bad, 4);
  out_add(o, out, vals * (size_t)outBytes);
  out_add(o, rnd, vals * 4); /* the noise drawn in place */
  cc_free(&c);
  free(a), free(m), free(rnd), free(out);
}

/* Client decryption: n2, rows, shift, accumulate. */
static void t_decrypt(const level_t *L, const int *p, out_t *o) {
  const size_t n2 = (size_t)p[0], n = 2 * n2;
  const int rows = p[1];
  cc_state c;
  cc_init(&c, n2);
  uint8_t *a = xmalloc((size_t)rows * n * 4), *b = xmalloc((size_t)rows * n * 4), *y = xmalloc((size_t)rows * n * 4);
  for (size_t i = 0; i < (size_t)rows * n; i++) {
    const int32_t v = (int32_t)(next() >> 40) - (1 << 23); /* 24-bit coefficients */
    memcpy(a + 4 * i, &v, 4);
  }
  fill_bytes(b, (size_t)rows * n * 4);
  fill_bytes(y, (size_t)rows * n * 4);
  L->fn.cc_decrypt(&c.lay, rows, a, b, p[2], y, p[3]);
  out_init(o, 1);
  out_add(o, y, (size_t)rows * n * 4);
  cc_free(&c);
  free(a), free(b), free(y);
}

/* Shapes: odd sizes and tails everywhere; K up to 8195 (two Z_2^44 K chunks); small enough that
 * the AArch64 build finishes within seconds under QEMU. */
static const test_t TESTS[] = {
    {"gemm_i8.37x1027x45", t_gemm_i8, {37, 1027, 45, 0, 0}},
    {"gemm_i8.extreme.8x4096x17", t_gemm_i8, {8, 4096, 17, 1, 1}},
    {"gemm_i8.3x1x5", t_gemm_i8, {3, 1, 5, 0, 0}},
    {"gemm_i8_mt.3threads.37x1027x300", t_gemm_i8, {37, 1027, 300, 0, 0, 3}},
    {"zq_a.13x515x70", t_zq, {13, 515, 70, 1, 0, 0}},
    {"zq_b.13x515x70", t_zq, {13, 515, 70, 2, 0, 0}},
    {"zq_ab.29x1001x24", t_zq, {29, 1001, 24, 3, 0, 0}},
    {"zq_ab.allones.9x4096x20", t_zq, {9, 4096, 20, 3, 1, 1}},
    {"zq_ab.2chunks.5x8195x9", t_zq, {5, 8195, 9, 3, 1, 0}},
    {"sgemm.13x37x300.bias", t_sgemm, {13, 37, 300, 0, 0, 1, 0}},
    {"sgemm.100x40x600.At.acc", t_sgemm, {100, 40, 600, 1, 1, 0, 0}},
    {"sgemm.50x19x517.Bt.strided.acc.bias", t_sgemm, {50, 19, 517, 6, 1, 1, 0}},
    {"sgemm.7x2100x33.Bt", t_sgemm, {7, 2100, 33, 2, 0, 1, 0}},
    {"sgemm.3x5x0.acc.bias", t_sgemm, {3, 5, 0, 0, 1, 1, 0}},
    {"sgemm_mt.61x45x129.t3", t_sgemm, {61, 45, 129, 2, 1, 1, 3}},
    {"small_f32.op0.5x301x23", t_small, {0, 5, 301, 23, 1}},
    {"small_f32.op1.5x301x23", t_small, {1, 5, 301, 23, 0}},
    {"small_f32.op2.5x301x23", t_small, {2, 5, 301, 23, 0}},
    {"cross_entropy.7x1003", t_cross_entropy, {7, 1003, 0, 1}},
    {"cross_entropy.grad.7x1003", t_cross_entropy, {7, 1003, 1, 2}},
    {"swiglu_fwd.1005", t_swiglu, {1005, 0, 1}},
    {"swiglu_bwd.1005", t_swiglu, {1005, 1, 2}},
    {"rmsnorm_fwd.19x333", t_rmsnorm, {19, 333, 0, 2}},
    {"rmsnorm_bwd.19x333", t_rmsnorm, {19, 333, 1, 1}},
    {"lora_fwd.9x67x45r8", t_lora, {9, 67, 45, 8, 0, 0, 1}},
    {"lora_fwd.dropout.33x67x45r8", t_lora, {33, 67, 45, 8, 1, 0, 2}},
    {"lora_bwd.dropout.33x67x45r8", t_lora, {33, 67, 45, 8, 1, 1, 2}},
    {"attention_fwd.150x6x2x24.seq67", t_attention, {150, 6, 2, 24, 67, 0, 2}},
    {"attention_bwd.150x6x2x24.seq67", t_attention, {150, 6, 2, 24, 67, 1, 2}},
    {"attention_bwd.70x3x3x17", t_attention, {70, 3, 3, 17, 0, 1, 1}},
    {"dropout_mask.1001", t_dropout, {1001, 40000}},
    {"quantize_rows.q8.21x77", t_quantize, {21, 77, 127, 0, 0, 1}},
    {"quantize_rows.q16.colscale.21x77", t_quantize, {21, 77, 32767, 1, 0, 2}},
    {"quantize_rows.nonfinite.21x77", t_quantize, {21, 77, 127, 1, 1, 1}},
    {"dequantize.acc32.9x37", t_dequantize, {9, 37, 0, 1}},
    {"dequantize.acc64.9x37", t_dequantize, {9, 37, 1, 0}},
    {"cc_transpose.37x29", t_transpose, {37, 29}},
    {"cc_encrypt.n2_64.m8", t_encrypt, {64, 3, 1, 0, 20, 12, 4, 0}},
    {"cc_encrypt.n2_128.pairs.m16.bad", t_encrypt, {128, 3, 2, 1, 16, 8, 5, 1}},
    {"cc_encrypt.n2_32.pairs.m32", t_encrypt, {32, 4, 4, 1, 12, 20, 3, 0}},
    {"cc_decrypt.n2_64", t_decrypt, {64, 3, 12, 0}},
    {"cc_decrypt.n2_128.acc", t_decrypt, {128, 2, 9, 1}},
};
#define NTESTS ((int)(sizeof TESTS / sizeof TESTS[0]))

static uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

/* Max over elements of |x - r| / max(|r|, 1e-2 max|r|): sums that cancel are judged against the
 * output's scale, not their own (tiny) value. Non-finite values must agree exactly. */
static double max_rel(const float *x, const float *r, size_t n) {
  double scale = 0, m = 0;
  for (size_t i = 0; i < n; i++)
    if (isfinite(r[i]) && fabs(r[i]) > scale) scale = fabs(r[i]);
  const double floor = 1e-2 * scale > 1e-30 ? 1e-2 * scale : 1e-30;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(r[i]) || !isfinite(x[i])) {
      if (memcmp(&x[i], &r[i], 4) != 0 && !(isnan(x[i]) && isnan(r[i]))) return INFINITY;
      continue;
    }
    const double d = fabs((double)x[i] - r[i]) / (fabs(r[i]) > floor ? fabs(r[i]) : floor);
    if (d > m) m = d;
  }
  return m;
}

int main(int argc, char **argv) {
  const char *dump = NULL, *only = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump = argv[++i];
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    else {
      fprintf(stderr, "usage: selftest [--dump DIR] [--only TEST]\n");
      return 2;
    }
  }
  int failed = 0;
  printf("levels");
  for (int l = 0; l < NLEVELS; l++) printf(" %s%s", LEVELS[l].name, LEVELS[l].supported() ? "" : "(unsupported)");
  printf("\n");
  for (int t = 0; t < NTESTS; t++) {
    const test_t *T = &TESTS[t];
    if (only && strcmp(only, T->name)) continue;
    out_t ref = {0};
    for (int l = 0; l < NLEVELS; l++) {
      const level_t *L = &LEVELS[l];
      if (!L->supported()) continue;
      rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(t + 1) * 0xd1b54a32d192ed03ULL;
      out_t o;
      T->run(L, T->p, &o);
      const uint64_t h = fnv1a(o.bytes, o.n);
      int ok = 1;
      if (l == 0) ref = o;
      if (o.exact) {
        ok = o.n == ref.n && memcmp(o.bytes, ref.bytes, o.n) == 0;
        printf("%s %s exact hash=%016llx%s\n", T->name, L->name, (unsigned long long)h, ok ? "" : " MISMATCH");
      } else {
        const double d = o.n == ref.n ? max_rel((const float *)(void *)o.bytes, (const float *)(void *)ref.bytes, o.n / 4) : INFINITY;
        ok = d <= F32_TOL;
        printf("%s %s f32 hash=%016llx maxrel=%.3g%s\n", T->name, L->name, (unsigned long long)h, d, ok ? "" : " MISMATCH");
      }
      failed |= !ok;
      if (dump) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.%s.bin", dump, T->name, L->name);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(o.bytes, 1, o.n, f) != o.n || fclose(f) != 0) {
          fprintf(stderr, "selftest: cannot write %s\n", path);
          return 2;
        }
      }
      if (l != 0) free(o.bytes);
    }
    free(ref.bytes);
  }
  fflush(stdout);
  return failed ? 1 : 0;
}
