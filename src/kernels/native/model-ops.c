/*
 * The client's fp32 work besides its GEMMs' inner loops, compiled once per CPU level like
 * kernels.c: cross entropy over the LM head's logits, SwiGLU, RMSNorm, the LoRA branch, dropout
 * masks, per-token quantization and dequantization, and the GEMM split over threads.
 * The JavaScript versions (src/model/layers.ts, lora.ts) stay the reference (and the WebAssembly
 * backend's path); these agree with them to float rounding, not bit for bit: exp is a float
 * polynomial here, Math.exp in double there, and sums run in another order. The quantization is
 * the exception: bit for bit src/quant/quantize.ts.
 *
 * Vectors are GCC vector extensions (vmath.h: 8 floats; 16 under AVX-512), so one body serves every
 * level and the compiler picks the instructions. Built with -ffp-contract=off: the polynomial is the
 * same sequence of IEEE operations in every lane at every level, so each level computes the same
 * exp bit for bit and only sums whose lane count differs can round differently.
 * Every result depends on its task index alone, never on which thread ran it: the same answer
 * for any thread count.
 */
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vmath.h"

#ifndef HL_LEVEL
#error "compile with -DHL_LEVEL=<level name>"
#endif
#define FN(name) HL_CAT(name, HL_LEVEL)
HL_DECLARE(HL_LEVEL) /* this level's hl_sgemm (kernels.c) */
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* ------------------------------------------------------------------------------------------ */
/* Cross entropy                                                                               */

typedef struct {
  float *logits;
  const int32_t *targets;
  int T, V, grad;
  float inv;
  double *losses;
} ce_job;

#define CE_ROWS 4

/*
 * Rows [CE_ROWS*task, ...): loss = logsumexp - logit[target]; with grad the row becomes
 * softmax * inv - inv at the target (a counted row) or zeros (an ignored one, target < 0).
 */
static void ce_task(void *ctx, int task) {
  const ce_job *j = ctx;
  const int V = j->V, tail = V % VW, vend = V - tail;
  for (int t = task * CE_ROWS; t < MIN(j->T, (task + 1) * CE_ROWS); t++) {
    float *x = j->logits + (size_t)t * V;
    const int y = j->targets[t];
    if (y < 0) {
      j->losses[t] = 0;
      if (j->grad) memset(x, 0, (size_t)V * 4);
      continue;
    }
    vf m = vsplat(-INFINITY);
    for (int i = 0; i < vend; i += VW) m = vmax(m, vload(x + i));
    if (tail) m = vmax(m, vload_tail(x + vend, tail, -INFINITY));
    const float max = hmax(m), xy = x[y];
    const vf vmx = vsplat(max);
    vf s0 = {0}, s1 = {0};
    int i = 0;
    /* With grad, e^(x - max) stays in the row: the gradient only rescales it. */
    for (; i + 2 * VW <= vend; i += 2 * VW) {
      const vf e0 = vexp(vload(x + i) - vmx), e1 = vexp(vload(x + i + VW) - vmx);
      s0 += e0;
      s1 += e1;
      if (j->grad) {
        vstore(x + i, e0);
        vstore(x + i + VW, e1);
      }
    }
    for (; i < vend; i += VW) {
      const vf e = vexp(vload(x + i) - vmx);
      s0 += e;
      if (j->grad) vstore(x + i, e);
    }
    if (tail) {
      const vf e = vexp(vload_tail(x + vend, tail, -INFINITY) - vmx);
      s1 += e;
      if (j->grad) vstore_tail(x + vend, e, tail);
    }
    const float sum = hsum(s0 + s1);
    j->losses[t] = (double)max + log((double)sum) - (double)xy;
    if (j->grad) {
      const float scale = j->inv / sum;
      const vf vs = vsplat(scale);
      for (i = 0; i < vend; i += VW) vstore(x + i, vload(x + i) * vs);
      for (i = vend; i < V; i++) x[i] *= scale;
      x[y] -= j->inv;
    }
  }
}

void FN(hl_cross_entropy)(float *logits, const int32_t *targets, int T, int V, int grad, float inv, double *losses, int threads) {
  ce_job j = {logits, targets, T, V, grad, inv, losses};
  hl_parallel_for(threads, (T + CE_ROWS - 1) / CE_ROWS, ce_task, &j);
}

/* ------------------------------------------------------------------------------------------ */
/* SwiGLU: out = silu(gate) * up                                                              */

typedef struct {
  float *out, *dgate, *dup;
  const float *dout, *gate, *up;
  long n;
} swiglu_job;

#define SWIGLU_CHUNK 16384

static inline vf sigmoid(vf g) { return vsplat(1.0f) / (vsplat(1.0f) + vexp(-g)); }

static void swiglu_fwd_task(void *ctx, int task) {
  const swiglu_job *j = ctx;
  const long i0 = (long)task * SWIGLU_CHUNK, i1 = i0 + SWIGLU_CHUNK < j->n ? i0 + SWIGLU_CHUNK : j->n;
  long i = i0;
  for (; i + VW <= i1; i += VW) {
    const vf g = vload(j->gate + i);
    vstore(j->out + i, g * sigmoid(g) * vload(j->up + i));
  }
  if (i < i1) {
    const int n = (int)(i1 - i);
    const vf g = vload_tail(j->gate + i, n, 0);
    vstore_tail(j->out + i, g * sigmoid(g) * vload_tail(j->up + i, n, 0), n);
  }
}

static inline void swiglu_bwd_lanes(vf g, vf u, vf dy, vf *dg, vf *du) {
  const vf s = sigmoid(g);
  *dg += dy * u * s * (vsplat(1.0f) + g * (vsplat(1.0f) - s));
  *du += dy * g * s;
}

static void swiglu_bwd_task(void *ctx, int task) {
  const swiglu_job *j = ctx;
  const long i0 = (long)task * SWIGLU_CHUNK, i1 = i0 + SWIGLU_CHUNK < j->n ? i0 + SWIGLU_CHUNK : j->n;
  long i = i0;
  for (; i + VW <= i1; i += VW) {
    vf dg = vload(j->dgate + i), du = vload(j->dup + i);
    swiglu_bwd_lanes(vload(j->gate + i), vload(j->up + i), vload(j->dout + i), &dg, &du);
    vstore(j->dgate + i, dg);
    vstore(j->dup + i, du);
  }
  if (i < i1) {
    const int n = (int)(i1 - i);
    vf dg = vload_tail(j->dgate + i, n, 0), du = vload_tail(j->dup + i, n, 0);
    swiglu_bwd_lanes(vload_tail(j->gate + i, n, 0), vload_tail(j->up + i, n, 0), vload_tail(j->dout + i, n, 0), &dg, &du);
    vstore_tail(j->dgate + i, dg, n);
    vstore_tail(j->dup + i, du, n);
  }
}

void FN(hl_swiglu_fwd)(float *out, const float *gate, const float *up, long n, int threads) {
  swiglu_job j = {out, NULL, NULL, NULL, gate, up, n};
  hl_parallel_for(threads, (int)((n + SWIGLU_CHUNK - 1) / SWIGLU_CHUNK), swiglu_fwd_task, &j);
}

void FN(hl_swiglu_bwd)(float *dgate, float *dup, const float *dout, const float *gate, const float *up, long n, int threads) {
  swiglu_job j = {NULL, dgate, dup, dout, gate, up, n};
  hl_parallel_for(threads, (int)((n + SWIGLU_CHUNK - 1) / SWIGLU_CHUNK), swiglu_bwd_task, &j);
}

/* ------------------------------------------------------------------------------------------ */
/* The GEMM over threads                                                                        */

typedef struct {
  int M, N, K, splitN, chunk, tasks;
  const float *A, *B, *bias;
  float *C;
  long sai, sak, sbk, sbj, sci, scj;
  int acc;
  int failed; /* set (never cleared) by a task whose scratch allocation failed */
} sgemm_job;

static void sgemm_task(void *ctx, int task) {
  sgemm_job *j = ctx;
  const int lo = task * j->chunk, hi = MIN((task + 1) * j->chunk, j->splitN ? j->N : j->M);
  if (lo >= hi) return;
  int rc;
  if (j->splitN) {
    rc = FN(hl_sgemm)(j->M, hi - lo, j->K, j->A, j->sai, j->sak, j->B + lo * j->sbj, j->sbk, j->sbj, j->C + lo * j->scj, j->sci,
                      j->scj, j->acc, j->bias ? j->bias + lo : NULL);
  } else {
    rc = FN(hl_sgemm)(hi - lo, j->N, j->K, j->A + lo * j->sai, j->sai, j->sak, j->B, j->sbk, j->sbj, j->C + lo * j->sci, j->sci,
                      j->scj, j->acc, j->bias);
  }
  if (rc != 0) __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
}

/* Below this many multiply-adds a thread start costs more than it saves. */
#define SGEMM_MT_MIN_MACS (1L << 22)

/*
 * hl_sgemm with the rows or columns split over threads (each C element is the same sum in the
 * same order as in one call: the same bits). Splits the larger of M and N, so the operand every
 * thread packs whole is the smaller one.
 */
int FN(hl_sgemm_mt)(int M, int N, int K, const float *A, long sai, long sak, const float *B, long sbk, long sbj, float *C, long sci,
                    long scj, int acc, const float *bias, int threads) {
  if (threads <= 1 || (long)M * N * (K > 0 ? K : 1) < SGEMM_MT_MIN_MACS)
    return FN(hl_sgemm)(M, N, K, A, sai, sak, B, sbk, sbj, C, sci, scj, acc, bias);
  const int splitN = N >= M, len = splitN ? N : M, align = 32;
  int chunk = (len + threads - 1) / threads;
  chunk = (chunk + align - 1) / align * align;
  sgemm_job j = {M, N, K, splitN, chunk, (len + chunk - 1) / chunk, A, B, bias, C, sai, sak, sbk, sbj, sci, scj, acc, 0};
  hl_parallel_for(threads, j.tasks, sgemm_task, &j);
  return j.failed ? -1 : 0;
}

typedef struct {
  const uint8_t *wp;
  const int8_t *x;
  int32_t *out;
  int M, K, N, chunk;
  int failed;
} gemm_i8_job;

static void gemm_i8_task(void *ctx, int task) {
  gemm_i8_job *j = ctx;
  const int lo = task * j->chunk, hi = MIN((task + 1) * j->chunk, j->M);
  if (lo >= hi) return;
  /* lo is a multiple of 4: its rows start a block of the packed weights */
  const uint8_t *w = j->wp + (size_t)(lo / 4) * (size_t)((j->K + 1) / 2) * 16;
  if (FN(hl_gemm_i8)(w, hi - lo, j->K, j->x, j->N, j->out + (size_t)lo * j->N) != 0)
    __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
}

/* hl_gemm_i8 with the rows split over threads in whole 4-row blocks (exact integer sums: the
 * result does not depend on the split); every thread packs x itself. */
int FN(hl_gemm_i8_mt)(const uint8_t *wp, int M, int K, const int8_t *x, int N, int32_t *out, int threads) {
  if (threads <= 1 || M < 8 || (long)M * N * K < SGEMM_MT_MIN_MACS) return FN(hl_gemm_i8)(wp, M, K, x, N, out);
  int chunk = (M + threads - 1) / threads;
  chunk = (chunk + 3) / 4 * 4;
  gemm_i8_job j = {wp, x, out, M, K, N, chunk, 0};
  hl_parallel_for(threads, (M + chunk - 1) / chunk, gemm_i8_task, &j);
  return j.failed ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* LoRA branch: y += scale * (dropout(x) A^T) B^T and its gradients                            */

typedef struct {
  float *y, *dx, *h, *gradA, *gradB, *partial;
  const float *x, *dy, *A, *Bt, *hIn;
  const uint8_t *mask;
  int T, in, out, rank;
  float scale, keep;
  int failed; /* set by a task whose scratch allocation failed */
} lora_job;

/* Tokens per task: fixed, so the gradient partial sums (one per task, added in task order) are
 * the same for any thread count. */
#define LORA_TB 64
#define LORA_MAX_RANK 256

/* xd = dropout(x row) into buf (x itself when there is no mask). */
static const float *dropped_row(const lora_job *j, int t, float *buf) {
  const float *x = j->x + (size_t)t * j->in;
  if (!j->mask) return x;
  const uint8_t *m = j->mask + (size_t)t * j->in;
  for (int c = 0; c < j->in; c++) buf[c] = m[c] ? x[c] * j->keep : 0.0f;
  return buf;
}

/* sum_c a[c] b[c] in VW lanes, then across them. */
static inline float dot(const float *a, const float *b, int n) {
  vf s = {0};
  int c = 0;
  for (; c + VW <= n; c += VW) s += vload(a + c) * vload(b + c);
  float r = hsum(s);
  for (; c < n; c++) r += a[c] * b[c];
  return r;
}

/* y[c] += s * x[c]. */
static inline void axpy(float *y, float s, const float *x, int n) {
  const vf vs = vsplat(s);
  int c = 0;
  for (; c + VW <= n; c += VW) vstore(y + c, vload(y + c) + vs * vload(x + c));
  for (; c < n; c++) y[c] += s * x[c];
}

static void lora_fwd_task(void *ctx, int task) {
  lora_job *j = ctx;
  float *buf = malloc(((size_t)(j->mask ? j->in : 0) + j->out) * 4 + 4), *acc = buf + (j->mask ? j->in : 0);
  if (!buf) { __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED); return; }
  for (int t = task * LORA_TB; t < MIN(j->T, (task + 1) * LORA_TB); t++) {
    const float *xd = dropped_row(j, t, buf);
    float *h = j->h + (size_t)t * j->rank;
    for (int r = 0; r < j->rank; r++) h[r] = dot(xd, j->A + (size_t)r * j->in, j->in);
    memset(acc, 0, (size_t)j->out * 4);
    for (int r = 0; r < j->rank; r++) axpy(acc, h[r], j->Bt + (size_t)r * j->out, j->out);
    axpy(j->y + (size_t)t * j->out, j->scale, acc, j->out);
  }
  free(buf);
}

static void lora_bwd_task(void *ctx, int task) {
  lora_job *j = ctx;
  const int in = j->in, out = j->out, rank = j->rank;
  float *gA = j->partial + (size_t)task * rank * (in + out), *gBt = gA + (size_t)rank * in;
  memset(gA, 0, (size_t)rank * (in + out) * 4);
  float *buf = malloc((size_t)2 * in * 4 + 4), *dxd = buf + in, dh[LORA_MAX_RANK];
  if (!buf) { __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED); return; }
  for (int t = task * LORA_TB; t < MIN(j->T, (task + 1) * LORA_TB); t++) {
    const float *dy = j->dy + (size_t)t * out, *h = j->hIn + (size_t)t * rank;
    for (int r = 0; r < rank; r++) {
      dh[r] = j->scale * dot(dy, j->Bt + (size_t)r * out, out);
      axpy(gBt + (size_t)r * out, j->scale * h[r], dy, out);
    }
    const float *xd = dropped_row(j, t, buf);
    for (int r = 0; r < rank; r++) axpy(gA + (size_t)r * in, dh[r], xd, in);
    if (j->dx) {
      memset(dxd, 0, (size_t)in * 4);
      for (int r = 0; r < rank; r++) axpy(dxd, dh[r], j->A + (size_t)r * in, in);
      float *dx = j->dx + (size_t)t * in;
      if (j->mask) {
        const uint8_t *m = j->mask + (size_t)t * in;
        for (int c = 0; c < in; c++) if (m[c]) dx[c] += dxd[c] * j->keep;
      } else {
        for (int c = 0; c < in; c++) dx[c] += dxd[c];
      }
    }
  }
  free(buf);
}

/* B [out][rank] -> Bt [rank][out], so both products run along out in vector lanes. */
static float *transpose_b(const float *B, int out, int rank) {
  float *Bt = malloc((size_t)out * rank * 4 + 4);
  if (!Bt) return NULL;
  for (int o = 0; o < out; o++)
    for (int r = 0; r < rank; r++) Bt[(size_t)r * out + o] = B[(size_t)o * rank + r];
  return Bt;
}

int FN(hl_lora_fwd)(float *y, float *h, const float *x, const float *A, const float *B, const uint8_t *mask, int T, int in, int out,
                    int rank, float scale, float keep, int threads) {
  float *Bt = transpose_b(B, out, rank);
  if (!Bt) return -1;
  lora_job j = {.y = y, .h = h, .x = x, .A = A, .Bt = Bt, .mask = mask, .T = T, .in = in, .out = out, .rank = rank, .scale = scale, .keep = keep};
  hl_parallel_for(threads, (T + LORA_TB - 1) / LORA_TB, lora_fwd_task, &j);
  free(Bt);
  return j.failed ? -1 : 0;
}

int FN(hl_lora_bwd)(float *dx, float *gradA, float *gradB, const float *dy, const float *x, const float *h, const float *A, const float *B,
                    const uint8_t *mask, int T, int in, int out, int rank, float scale, float keep, int threads) {
  const int tasks = (T + LORA_TB - 1) / LORA_TB;
  float *Bt = transpose_b(B, out, rank);
  float *partial = malloc((size_t)tasks * rank * (in + out) * 4 + 4);
  if (!Bt || !partial) {
    free(Bt);
    free(partial);
    return -1;
  }
  lora_job j = {.dx = dx, .partial = partial, .x = x, .dy = dy, .A = A, .Bt = Bt, .hIn = h, .mask = mask, .T = T, .in = in,
                .out = out, .rank = rank, .scale = scale, .keep = keep};
  hl_parallel_for(threads, tasks, lora_bwd_task, &j);
  if (j.failed) {
    free(Bt);
    free(partial);
    return -1;
  }
  for (int k = 0; k < tasks; k++) {
    const float *gA = partial + (size_t)k * rank * (in + out), *gBt = gA + (size_t)rank * in;
    for (size_t i = 0; i < (size_t)rank * in; i++) gradA[i] += gA[i];
    for (int o = 0; o < out; o++)
      for (int r = 0; r < rank; r++) gradB[(size_t)o * rank + r] += gBt[(size_t)r * out + o];
  }
  free(Bt);
  free(partial);
  return 0;
}

/* mask[i] = 1 where the i-th little-endian 16-bit word of stream is >= threshold (keep), else 0. */
void FN(hl_dropout_mask)(const uint8_t *stream, long n, uint32_t threshold, uint8_t *mask) {
  for (long i = 0; i < n; i++) mask[i] = (uint32_t)(stream[2 * i] | (stream[2 * i + 1] << 8)) >= threshold;
}

/* ------------------------------------------------------------------------------------------ */
/* RMSNorm: out = w * x * rstd, rstd = 1 / sqrt(mean(x^2) + eps)                                */

typedef struct {
  float *out, *rstd, *dinp;
  const float *inp, *w, *dout, *rstdIn;
  int T, C;
  float eps;
} rms_job;

#define RMS_ROWS 16

static void rms_fwd_task(void *ctx, int task) {
  const rms_job *j = ctx;
  const int C = j->C;
  for (int t = task * RMS_ROWS; t < MIN(j->T, (task + 1) * RMS_ROWS); t++) {
    const float *x = j->inp + (size_t)t * C;
    float *o = j->out + (size_t)t * C;
    const float r = (float)(1.0 / sqrt((double)dot(x, x, C) / C + j->eps));
    if (j->rstd) j->rstd[t] = r;
    const vf vr = vsplat(r);
    int c = 0;
    for (; c + VW <= C; c += VW) vstore(o + c, vload(j->w + c) * (vload(x + c) * vr));
    for (; c < C; c++) o[c] = j->w[c] * (x[c] * r);
  }
}

static void rms_bwd_task(void *ctx, int task) {
  const rms_job *j = ctx;
  const int C = j->C;
  for (int t = task * RMS_ROWS; t < MIN(j->T, (task + 1) * RMS_ROWS); t++) {
    const float *x = j->inp + (size_t)t * C, *dy = j->dout + (size_t)t * C;
    float *dx = j->dinp + (size_t)t * C;
    const float r = j->rstdIn[t];
    vf s = {0};
    int c = 0;
    for (; c + VW <= C; c += VW) s += vload(j->w + c) * vload(dy + c) * vload(x + c);
    float d = hsum(s);
    for (; c < C; c++) d += j->w[c] * dy[c] * x[c];
    const float k = d * r * r * r / C;
    const vf vr = vsplat(r), vk = vsplat(k);
    for (c = 0; c + VW <= C; c += VW) vstore(dx + c, vload(dx + c) + (vr * vload(j->w + c) * vload(dy + c) - vload(x + c) * vk));
    for (; c < C; c++) dx[c] += r * j->w[c] * dy[c] - x[c] * k;
  }
}

void FN(hl_rmsnorm_fwd)(float *out, float *rstd, const float *inp, const float *w, int T, int C, float eps, int threads) {
  rms_job j = {.out = out, .rstd = rstd, .inp = inp, .w = w, .T = T, .C = C, .eps = eps};
  hl_parallel_for(threads, (T + RMS_ROWS - 1) / RMS_ROWS, rms_fwd_task, &j);
}

void FN(hl_rmsnorm_bwd)(float *dinp, const float *dout, const float *inp, const float *w, const float *rstd, int T, int C, int threads) {
  rms_job j = {.dinp = dinp, .inp = inp, .w = w, .dout = dout, .rstdIn = rstd, .T = T, .C = C};
  hl_parallel_for(threads, (T + RMS_ROWS - 1) / RMS_ROWS, rms_bwd_task, &j);
}

/* ------------------------------------------------------------------------------------------ */
/* Per-row symmetric quantization and dequantization (src/quant/quantize.ts, bit for bit: the   */
/* same IEEE operations element by element, in double where the TypeScript computes in double) */

typedef struct {
  const float *x, *colScale;
  int rows, cols, qmax;
  int8_t *q8;
  int16_t *q16;
  float *scales;
  long *firstBad; /* per task: first non-finite index of x (or of x * colScale), LONG_MAX if none */
  int *badInProduct;
} quant_job;

#define QUANT_ROWS 16

static void quant_task(void *ctx, int task) {
  const quant_job *j = ctx;
  const int cols = j->cols;
  j->firstBad[task] = -1;
  float *row = j->colScale ? malloc((size_t)cols * 4 + 4) : NULL;
  for (int r = task * QUANT_ROWS; r < MIN(j->rows, (task + 1) * QUANT_ROWS); r++) {
    const float *x = j->x + (size_t)r * cols;
    if (j->colScale) {
      if (!row) { j->firstBad[task] = -2; return; }
      for (int c = 0; c < cols; c++) {
        if (!isfinite(x[c])) { j->firstBad[task] = (long)r * cols + c; return; }
      }
      for (int c = 0; c < cols; c++) row[c] = x[c] * j->colScale[c];
      for (int c = 0; c < cols; c++) {
        if (!isfinite(row[c])) { j->firstBad[task] = (long)r * cols + c; j->badInProduct[task] = 1; free(row); return; }
      }
      x = row;
    }
    float m = 0;
    int finite = 1;
    for (int c = 0; c < cols; c++) {
      const float a = fabsf(x[c]);
      finite &= isfinite(x[c]) != 0;
      m = a > m ? a : m;
    }
    if (!finite) {
      for (int c = 0; c < cols; c++) if (!isfinite(x[c])) { j->firstBad[task] = (long)r * cols + c; break; }
      free(row);
      return;
    }
    const float s = (float)((double)m / j->qmax);
    j->scales[r] = s;
    const size_t base = (size_t)r * cols;
    if (s == 0) {
      /* A zero row, or one whose scale underflows: zeros (the arrays arrive zeroed, rows may not be). */
      if (j->q8) memset(j->q8 + base, 0, (size_t)cols);
      else memset(j->q16 + base, 0, (size_t)cols * 2);
      continue;
    }
    const double ds = s, lim = j->qmax, magic = 6755399441055744.0;
    for (int c = 0; c < cols; c++) {
      double q = ((double)x[c] / ds + magic) - magic;
      q = q > lim ? lim : q < -lim ? -lim : q;
      if (j->q8) j->q8[base + c] = (int8_t)q;
      else j->q16[base + c] = (int16_t)q;
    }
  }
  free(row);
}

long FN(hl_quantize_rows)(const float *x, const float *colScale, int rows, int cols, int qmax, int8_t *q8, int16_t *q16, float *scales,
                          int *badInProduct, int threads) {
  const int tasks = (rows + QUANT_ROWS - 1) / QUANT_ROWS;
  long *firstBad = malloc((size_t)tasks * sizeof(long) + sizeof(long));
  int *inProduct = calloc((size_t)tasks + 1, sizeof(int));
  if (!firstBad || !inProduct) {
    free(firstBad);
    free(inProduct);
    return -2;
  }
  quant_job j = {x, colScale, rows, cols, qmax, q8, q16, scales, firstBad, inProduct};
  hl_parallel_for(threads, tasks, quant_task, &j);
  long bad = -1;
  *badInProduct = 0;
  for (int k = 0; k < tasks; k++) {
    if (firstBad[k] == -2) { bad = -2; break; }
    if (firstBad[k] >= 0) { bad = firstBad[k]; *badInProduct = inProduct[k]; break; }
  }
  free(firstBad);
  free(inProduct);
  return bad;
}

/* y[t][o] = fround((acc * sx[t]) * sw[o]) (sw NULL: fround(acc * sx[t])) for t in [t0, t0+tn), o in [o0, o0+on). */
void FN(hl_dequantize)(const int32_t *acc32, const double *acc64, const float *sx, const float *sw, int OC, float *y, int t0, int tn, int o0,
                       int on) {
  for (int t = t0; t < t0 + tn; t++) {
    const double s = sx[t];
    const size_t base = (size_t)t * OC;
    if (sw) {
      if (acc32) for (int o = o0; o < o0 + on; o++) y[base + o] = (float)(((double)acc32[base + o] * s) * (double)sw[o]);
      else for (int o = o0; o < o0 + on; o++) y[base + o] = (float)((acc64[base + o] * s) * (double)sw[o]);
    } else {
      if (acc32) for (int o = o0; o < o0 + on; o++) y[base + o] = (float)((double)acc32[base + o] * s);
      else for (int o = o0; o < o0 + on; o++) y[base + o] = (float)(acc64[base + o] * s);
    }
  }
}
