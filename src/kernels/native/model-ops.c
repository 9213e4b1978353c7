/*
 * The client's fp32 work besides its GEMMs' inner loops, compiled once per CPU level like
 * kernels.c: cross entropy over the LM head's logits, SwiGLU, and the GEMM split over threads.
 * The JavaScript versions in src/model/layers.ts stay the reference (and the WebAssembly
 * backend's path); these agree with them to float rounding, not bit for bit: exp is a float
 * polynomial here, Math.exp in double there.
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
