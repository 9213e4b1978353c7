/*
 * Grouped-query causal attention with a packing mask for the client's fp32 training step,
 * compiled once per CPU level like model-ops.c. Same math as attentionForwardReference /
 * attentionBackwardReference in src/model/layers.ts (which stay the WebAssembly path's reference):
 * key s is visible to query t iff s <= t and seq[s] == seq[t]; forward saves only the row
 * log-sum-exp, backward recomputes the probabilities from it (flash-attention style).
 *
 * Work is cut into query blocks of up to BQ queries within one run of equal sequence ids; a
 * block's keys are [s0, t1), s0 the first token of its id. The products are small register-blocked
 * loops over these blocks (the packed GEMM's per-call packing and scratch would cost more than
 * they save at 64 rows):
 *   forward task (head, block): S = (q scale) K^T, softmax, O = P V;
 *   backward task (head, part of a segment): its blocks, each over keys in chunks of KCH
 *   (S, P, dP, dS, then dQ += dS K, dK += dS^T Q, dV += P^T dO); dQ rows are the task's own,
 *   dK and dV go to per-head scratch rows that only this task writes, and a last pass adds each
 *   kv head's group of scratch rows into dk, dv in a fixed order. Segments are cut into parts
 *   only when there are few of them (a long sequence), at the cost of scratch rows per part.
 * A segment is a stretch of tokens whose queries see no key outside it (a run of one id, or for
 * ids that come back, everything between their first and last token), so tasks never share rows
 * and every result depends on task indices alone: the same bits for any thread count.
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
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define BQ 64      /* queries per block (as ATTN_QUERY_BLOCK in layers.ts) */
#define MR 6       /* rows per register tile */
#define NC (2 * VW) /* key columns per tile of the score products */
#define TPAD 64    /* zero columns after T in the transposed K and V (>= NC + MR) */
#define KCH 128    /* keys per chunk of the backward */

static inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

/*
 * vexp (vmath.h) with its polynomial and range reduction fused where the level has FMA: the
 * softmax's exp is a sizable share of the work here, and attention promises agreement with the
 * reference to rounding only, not the same bits at every level.
 */
HL_DEFINE_VEXP(vexp_fused, vfma)

/* ------------------------------------------------------------------------------------------ */
/* Block products                                                                               */

/*
 * S[i][j] = sum_d A[i][d] B[d][j] for rows [0, rows) (a multiple of MR) and, per row tile, the
 * columns its causal rows can see: j < diag + i + MR (at most lk), rounded up to NC. B holds
 * zeros (or later keys) past lk, so the tiles stay whole.
 */
static void scores(const float *A, long lda, int rows, int hd, const float *B, long ldb, float *S, long lds, int diag, int lk) {
  /* Column panels outside: a panel of B (hd x NC) stays in L1 while every row tile uses it. */
  for (int j = 0; j < MIN(lk, diag + rows); j += NC) {
    for (int i = MAX(0, (j - diag) / MR * MR); i < rows; i += MR) {
      if (j >= MIN(lk, diag + i + MR)) continue;
      vf acc[MR][2];
#pragma GCC unroll 8
      for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = (vf){0};
      const float *a = A + i * lda, *b = B + j;
      for (int d = 0; d < hd; d++) {
        const vf b0 = vload(b + d * ldb), b1 = vload(b + d * ldb + VW);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
          const vf ar = vbcast(a + r * lda + d);
          acc[r][0] = vfma(ar, b0, acc[r][0]);
          acc[r][1] = vfma(ar, b1, acc[r][1]);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < MR; r++) {
        vstore(S + (i + r) * lds + j, acc[r][0]);
        vstore(S + (i + r) * lds + j + VW, acc[r][1]);
      }
    }
  }
}

/* One MR x (nv vectors) tile of O (+)= P V over keys [j0, j1). */
static inline __attribute__((always_inline)) void pv_tile(int nv, int add, const float *P, long ldp, int j0, int j1, const float *V,
                                                          long ldv, float *O, long ldo) {
  vf acc[MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = (vf){0};
  for (int j = j0; j < j1; j++) {
    const vf b0 = vload(V + j * ldv), b1 = nv > 1 ? vload(V + j * ldv + VW) : (vf){0};
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      const vf a = vbcast(P + r * ldp + j);
      acc[r][0] = vfma(a, b0, acc[r][0]);
      if (nv > 1) acc[r][1] = vfma(a, b1, acc[r][1]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++) {
    vstore(O + r * ldo, add ? vload(O + r * ldo) + acc[r][0] : acc[r][0]);
    if (nv > 1) vstore(O + r * ldo + VW, add ? vload(O + r * ldo + VW) + acc[r][1] : acc[r][1]);
  }
}

#define PV_KEYS 64 /* keys per pass: their V rows stay in L1 while every row tile uses them */

/*
 * O[i][c] (+)= sum_j P[i][j] V[j][c] for rows [0, rows) (a multiple of MR), c < hdp (a multiple of
 * VW); row tile i needs keys j < diag + i + MR only (P is zero past each row's last key). Without
 * accumulate, diag >= 0 (every row tile has a key).
 */
static void prob_values(const float *P, long ldp, int rows, int lk, int diag, const float *V, long ldv, int hdp, float *O, long ldo,
                        int accumulate) {
  for (int j0 = 0; j0 < lk; j0 += PV_KEYS) {
    for (int i = 0; i < rows; i += MR) {
      const int jn = MIN(lk, diag + i + MR), j1 = MIN(jn, j0 + PV_KEYS);
      if (j0 >= jn) continue;
      int c = 0;
      const int add = accumulate || j0 > 0;
      for (; c + 2 * VW <= hdp; c += 2 * VW) pv_tile(2, add, P + i * ldp, ldp, j0, j1, V + c, ldv, O + i * ldo + c, ldo);
      if (c < hdp) pv_tile(1, add, P + i * ldp, ldp, j0, j1, V + c, ldv, O + i * ldo + c, ldo);
    }
  }
}

/* One (mr <= MR rows) x (nv vectors) tile of Out += A^T X over rows i in [i0, rows). */
static inline __attribute__((always_inline)) void tn_tile(int nv, int mr, const float *A, long lda, int i0, int rows, const float *X,
                                                          long ldx, float *Out, long ldo) {
  vf acc[MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = (vf){0};
  for (int i = i0; i < rows; i++) {
    const vf x0 = vload(X + i * ldx), x1 = nv > 1 ? vload(X + i * ldx + VW) : (vf){0};
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
      const vf a = vbcast(A + i * lda + r);
      acc[r][0] = vfma(a, x0, acc[r][0]);
      if (nv > 1) acc[r][1] = vfma(a, x1, acc[r][1]);
    }
  }
  for (int r = 0; r < mr; r++) {
    vstore(Out + r * ldo, vload(Out + r * ldo) + acc[r][0]);
    if (nv > 1) vstore(Out + r * ldo + VW, vload(Out + r * ldo + VW) + acc[r][1]);
  }
}

/*
 * Out[j][c] += sum_i A[i][j] X[i][c] for keys j < lk and c < hdp: dK += dS^T Q and dV += P^T dO.
 * Key j is seen by rows i >= j - diag only. A's columns up to round_up(lk, MR) must be readable
 * (zeros past lk); Out rows past lk are not touched.
 */
static void keys_update(const float *A, long lda, int rows, int lk, int diag, const float *X, long ldx, int hdp, float *Out, long ldo) {
  for (int j = 0; j < lk; j += MR) {
    const int mr = MIN(MR, lk - j), i0 = MAX(0, j - diag);
    int c = 0;
    for (; c + 2 * VW <= hdp; c += 2 * VW) tn_tile(2, mr, A + j, lda, i0, rows, X + c, ldx, Out + j * ldo + c, ldo);
    if (c < hdp) tn_tile(1, mr, A + j, lda, i0, rows, X + c, ldx, Out + j * ldo + c, ldo);
  }
}

/* ------------------------------------------------------------------------------------------ */
/* The plan: blocks and segments                                                                */

typedef struct {
  int t0, t1, s0; /* queries [t0, t1), keys [s0, t1) */
  int contig;     /* every key in [s0, t1) has the block's id (else the mask checks ids) */
} blk_t;

typedef struct {
  int b0, b1; /* its blocks */
  int t0, t1; /* its tokens */
  int p0, p1; /* its parts (backward) */
  long work;  /* sum of block areas */
} seg_t;

/*
 * Backward: a segment's blocks in one or more parts (several when there are few segments, so
 * that there are tasks enough for the threads). A part's dK, dV rows are its own: keys
 * [segment start, t1) at row offset off of each head's scratch.
 */
typedef struct {
  int b0, b1, seg, t1;
  long off, work;
} part_t;

typedef struct {
  /* inputs */
  const float *q, *k, *v, *out_in, *lse_in, *dout;
  const int32_t *seq;
  int T, nH, nKv, hd, hdp, Tp, group;
  float scale;
  /* outputs */
  float *out, *lse, *dq, *dk, *dv;
  /* plan */
  blk_t *blk;
  seg_t *seg;
  part_t *part;
  int *seg_of; /* token -> segment */
  int nblk, nseg, npart;
  long R; /* backward scratch rows per head */
  int *order; /* forward: blocks by size, largest first; backward: parts */
  long *work;
  /* per kv head copies: K^T and V^T [nKv][hd][Tp]; K and V rows padded [nKv][T][hdp] */
  float *Kt, *Vt, *Kp, *Vp;
  /* backward: per-head dK, dV rows [nH][R][hdp] */
  float *dKs, *dVs;
  int failed;
} attn_job;

typedef struct {
  int32_t id, t;
} id_pos;

static int cmp_id_pos(const void *a, const void *b) {
  const id_pos *x = a, *y = b;
  if (x->id != y->id) return x->id < y->id ? -1 : 1;
  return (x->t > y->t) - (x->t < y->t);
}

static int plan(attn_job *J) {
  const int T = J->T;
  const int32_t *seq = J->seq;
  int *starts = malloc((size_t)T * sizeof *starts);
  id_pos *ids = malloc((size_t)T * sizeof *ids);
  J->blk = malloc((size_t)T * sizeof *J->blk);
  J->seg = malloc((size_t)T * sizeof *J->seg);
  J->order = malloc((size_t)T * sizeof *J->order);
  J->work = malloc((size_t)T * sizeof *J->work);
  if (!starts || !ids || !J->blk || !J->seg || !J->order || !J->work) {
    free(starts);
    free(ids);
    return -1;
  }
  /* starts[t] = first token of t's id (ids need not be sorted or contiguous). */
  for (int t = 0; t < T; t++) ids[t] = (id_pos){seq[t], t};
  qsort(ids, (size_t)T, sizeof *ids, cmp_id_pos);
  for (int i = 0, first = 0; i < T; i++) {
    if (i == 0 || ids[i].id != ids[i - 1].id) first = ids[i].t;
    starts[ids[i].t] = first;
  }
  free(ids);
  /* A segment may start at b when no token from b on sees a key before b. */
  int *boundary = malloc((size_t)T * sizeof *boundary);
  if (!boundary) {
    free(starts);
    return -1;
  }
  for (int t = T - 1, lo = T; t >= 0; t--) {
    lo = MIN(lo, starts[t]);
    boundary[t] = lo == t;
  }
  J->nblk = J->nseg = 0;
  for (int t0 = 0; t0 < T;) {
    int t1 = t0 + 1;
    while (t1 < T && t1 - t0 < BQ && seq[t1] == seq[t0]) t1++;
    const int s0 = starts[t0];
    int contig = 1;
    for (int s = s0; s < t0 && contig; s++) contig = seq[s] == seq[t0];
    if (boundary[t0]) J->seg[J->nseg++] = (seg_t){J->nblk, J->nblk, t0, t0, 0, 0, 0};
    seg_t *g = &J->seg[J->nseg - 1];
    g->b1 = J->nblk + 1;
    g->t1 = t1;
    g->work += (long)(t1 - t0) * (t1 - s0);
    J->blk[J->nblk++] = (blk_t){t0, t1, s0, contig};
    t0 = t1;
  }
  free(boundary);
  free(starts);
  return 0;
}

typedef struct {
  long work;
  int i;
} by_work;

static int cmp_work_desc(const void *a, const void *b) {
  const by_work *x = a, *y = b;
  if (x->work != y->work) return x->work > y->work ? -1 : 1;
  return x->i - y->i;
}

/* order[0..n) = 0..n-1 by work, largest first: the big tasks start early and the small ones fill in. */
static int order_by_work(int *order, const long *work, int n) {
  by_work *w = malloc((size_t)(n > 0 ? n : 1) * sizeof *w);
  if (!w) return -1;
  for (int i = 0; i < n; i++) w[i] = (by_work){work[i], i};
  qsort(w, (size_t)n, sizeof *w, cmp_work_desc);
  for (int i = 0; i < n; i++) order[i] = w[i].i;
  free(w);
  return 0;
}

#define PART_TASKS 32 /* split segments while there are fewer (head, segment) tasks than this */
#define MAX_PARTS 4   /* parts per segment at most (each adds up to a segment of scratch rows) */

static long area(const blk_t *b) { return (long)(b->t1 - b->t0) * (b->t1 - b->s0); }

/* Cuts each segment's blocks into parts of about equal work (from the shapes alone, never the thread count). */
static int split_parts(attn_job *J) {
  const int tasks = J->nH * J->nseg;
  const int want = MIN(MAX_PARTS, (PART_TASKS + tasks - 1) / tasks);
  J->part = malloc((size_t)J->nblk * sizeof *J->part);
  J->seg_of = malloc((size_t)J->T * sizeof *J->seg_of);
  if (!J->part || !J->seg_of) return -1;
  long off = 0;
  J->npart = 0;
  for (int si = 0; si < J->nseg; si++) {
    seg_t *g = &J->seg[si];
    const int P = MIN(want, g->b1 - g->b0);
    long done = 0;
    g->p0 = J->npart;
    for (int p = 0, b = g->b0; p < P; p++) {
      const long target = g->work * (p + 1) / P;
      long w = 0;
      int b1 = b;
      /* at least one block, and one left for each later part; the last part takes the rest */
      do {
        w += area(&J->blk[b1]);
        b1++;
      } while (b1 < g->b1 - (P - 1 - p) && (p == P - 1 || done + w < target));
      const int t1 = J->blk[b1 - 1].t1;
      J->part[J->npart++] = (part_t){b, b1, si, t1, off, w};
      off += t1 - g->t0;
      done += w;
      b = b1;
    }
    g->p1 = J->npart;
    for (int t = g->t0; t < g->t1; t++) J->seg_of[t] = si;
  }
  J->R = off;
  return 0;
}

static void free_job(attn_job *J) {
  free(J->blk);
  free(J->seg);
  free(J->part);
  free(J->seg_of);
  free(J->order);
  free(J->work);
  free(J->Kt);
  free(J->Vt);
  free(J->Kp);
  free(J->Vp);
  free(J->dKs);
  free(J->dVs);
}

/* Per kv head: the transposed and padded copies the products read (task = kv head). */
static void prep_task(void *ctx, int kvh) {
  attn_job *J = ctx;
  const int T = J->T, hd = J->hd, hdp = J->hdp, Tp = J->Tp;
  const long kStride = (long)J->nKv * hd;
  const float *srcs[2] = {J->k, J->v};
  float *tr[2] = {J->Kt, J->Vt}, *pad[2] = {J->Kp, J->Vp};
  for (int m = 0; m < 2; m++) {
    const float *x = srcs[m] + (long)kvh * hd;
    if (tr[m]) {
      float *dst = tr[m] + (long)kvh * hd * Tp;
      for (int s0 = 0; s0 < T; s0 += 16) {
        const int s1 = MIN(T, s0 + 16);
        for (int d = 0; d < hd; d++)
          for (int s = s0; s < s1; s++) dst[(long)d * Tp + s] = x[s * kStride + d];
      }
      for (int d = 0; d < hd; d++) memset(dst + (long)d * Tp + T, 0, (size_t)(Tp - T) * 4);
    }
    if (pad[m]) {
      float *dst = pad[m] + (long)kvh * T * hdp;
      for (int s = 0; s < T; s++) {
        memcpy(dst + (long)s * hdp, x + s * kStride, (size_t)hd * 4);
        memset(dst + (long)s * hdp + hd, 0, (size_t)(hdp - hd) * 4);
      }
    }
  }
}

/* rows [0, Bqp) of dst[.][hdp] = head h of x[t0 + i] times scale (zeros past hd and past Bq). */
static void gather(float *dst, int hdp, const float *x, int nHx, int hd, int h, int t0, int Bq, int Bqp, float scale) {
  for (int i = 0; i < Bqp; i++) {
    float *d = dst + (long)i * hdp;
    if (i < Bq) {
      const float *s = x + ((long)(t0 + i) * nHx + h) * hd;
      for (int c = 0; c < hd; c++) d[c] = s[c] * scale;
      memset(d + hd, 0, (size_t)(hdp - hd) * 4);
    } else {
      memset(d, 0, (size_t)hdp * 4);
    }
  }
}

/* Head h of rows [t0, t1) of x: fetched ahead of use (the rows sit nHx*hd apart in memory). */
static void prefetch_rows(const float *x, int nHx, int hd, int h, int t0, int t1, int write) {
  for (int t = t0; t < t1; t++) {
    const char *p = (const char *)(x + ((long)t * nHx + h) * hd);
    for (int c = 0; c < hd * 4; c += 64) {
      if (write) __builtin_prefetch(p + c, 1);
      else __builtin_prefetch(p + c, 0);
    }
  }
}

/* Keys of a non-contiguous block whose id differs: -inf in row[0, n). */
static void mask_ids(const attn_job *J, const blk_t *b, int k0, float *row, int n) {
  const int32_t sid = J->seq[b->t0];
  for (int j = 0; j < n; j++)
    if (J->seq[b->s0 + k0 + j] != sid) row[j] = -INFINITY;
}

/* ------------------------------------------------------------------------------------------ */
/* Forward                                                                                      */

static void fwd_block(const attn_job *J, int h, const blk_t *b, float *Q, float *O, float *S) {
  const int T = J->T, hd = J->hd, hdp = J->hdp, kvh = h / J->group;
  const int Bq = b->t1 - b->t0, Lk = b->t1 - b->s0, diag = b->t0 - b->s0;
  const int Bqp = round_up(Bq, MR), lds = round_up(Lk + MR, NC);
  float inv[BQ + MR];
  gather(Q, hdp, J->q, J->nH, hd, h, b->t0, Bq, Bqp, J->scale);
  scores(Q, hdp, Bqp, hd, J->Kt + (long)kvh * hd * J->Tp + b->s0, J->Tp, S, lds, diag, Lk);
  for (int i = 0; i < Bqp; i++) {
    float *row = S + (long)i * lds;
    if (i >= Bq) {
      memset(row, 0, (size_t)Lk * 4);
      continue;
    }
    const int n = diag + i + 1, vend = n - n % VW; /* keys [0, n) visible (ids permitting) */
    if (!b->contig) mask_ids(J, b, 0, row, n);
    vf m = vsplat(-INFINITY);
    for (int j = 0; j < vend; j += VW) m = vmax(m, vload(row + j));
    if (vend < n) m = vmax(m, vload_tail(row + vend, n - vend, -INFINITY));
    const float max = hmax(m);
    const vf vmx = vsplat(max);
    vf sum = {0};
    for (int j = 0; j < vend; j += VW) {
      const vf e = vexp_fused(vload(row + j) - vmx);
      sum += e;
      vstore(row + j, e);
    }
    if (vend < n) {
      const vf e = vexp_fused(vload_tail(row + vend, n - vend, -INFINITY) - vmx);
      sum += e;
      vstore_tail(row + vend, e, n - vend);
    }
    if (n < Lk) memset(row + n, 0, (size_t)(Lk - n) * 4);
    const float total = hsum(sum);
    inv[i] = 1.0f / total;
    if (J->lse) J->lse[(long)h * T + b->t0 + i] = max + logf(total);
  }
  prob_values(S, lds, Bqp, Lk, diag, J->Vp + ((long)kvh * T + b->s0) * hdp, hdp, hdp, O, hdp, 0);
  for (int i = 0; i < Bq; i++) {
    float *dst = J->out + ((long)(b->t0 + i) * J->nH + h) * hd;
    const float *o = O + (long)i * hdp;
    for (int c = 0; c < hd; c++) dst[c] = o[c] * inv[i];
  }
}

static void fwd_task(void *ctx, int task) {
  attn_job *J = ctx;
  const int h = task % J->nH;
  const blk_t *b = &J->blk[J->order[task / J->nH]];
  const size_t Bqp = (size_t)round_up(b->t1 - b->t0, MR), lds = (size_t)round_up(b->t1 - b->s0 + MR, NC);
  float *Q = malloc(Bqp * J->hdp * 4), *O = malloc(Bqp * J->hdp * 4), *S = malloc(Bqp * lds * 4);
  if (Q && O && S) fwd_block(J, h, b, Q, O, S);
  else __atomic_store_n(&J->failed, 1, __ATOMIC_RELAXED);
  free(Q);
  free(O);
  free(S);
}

/* ------------------------------------------------------------------------------------------ */
/* Backward                                                                                     */

static void bwd_task(void *ctx, int task) {
  attn_job *J = ctx;
  const int h = task % J->nH;
  const part_t *pt = &J->part[J->order[task / J->nH]];
  const seg_t *g = &J->seg[pt->seg];
  const int T = J->T, hd = J->hd, hdp = J->hdp, kvh = h / J->group, nH = J->nH;
  /* row r of dK, dV: key g->t0 + r */
  const int rows = pt->t1 - g->t0;
  float *dK = J->dKs + ((long)h * J->R + pt->off) * hdp, *dV = J->dVs + ((long)h * J->R + pt->off) * hdp;
  memset(dK, 0, (size_t)rows * hdp * 4);
  memset(dV, 0, (size_t)rows * hdp * 4);
  const int Bqp = round_up(BQ, MR), ldmax = round_up(MIN(rows, KCH) + MR, NC);
  float *Q = malloc((size_t)Bqp * hdp * 4), *dO = malloc((size_t)Bqp * hdp * 4), *dQ = malloc((size_t)Bqp * hdp * 4);
  float *P = malloc((size_t)Bqp * ldmax * 4), *dS = malloc((size_t)Bqp * ldmax * 4);
  if (!Q || !dO || !dQ || !P || !dS) {
    __atomic_store_n(&J->failed, 1, __ATOMIC_RELAXED);
    goto done;
  }
  for (int bi = pt->b0; bi < pt->b1; bi++) {
    const blk_t *b = &J->blk[bi];
    const int Bq = b->t1 - b->t0, Lk = b->t1 - b->s0, bqp = round_up(Bq, MR);
    gather(Q, hdp, J->q, nH, hd, h, b->t0, Bq, bqp, J->scale);
    gather(dO, hdp, J->dout, nH, hd, h, b->t0, Bq, bqp, 1.0f);
    float D[BQ], L[BQ]; /* rowsum(dO * O) and lse per query */
    for (int i = 0; i < Bq; i++) {
      const float *o = J->out_in + ((long)(b->t0 + i) * nH + h) * hd, *dy = dO + (long)i * hdp;
      vf dsum = {0};
      for (int c = 0; c < hd; c += VW) dsum += vload(dy + c) * (c + VW <= hd ? vload(o + c) : vload_tail(o + c, hd - c, 0));
      D[i] = hsum(dsum);
      L[i] = J->lse_in[(long)h * T + b->t0 + i];
    }
    prefetch_rows(J->dq, nH, hd, h, b->t0, b->t1, 1);
    /* Keys in chunks of KCH, so each chunk's operands stay in L2 through its five products. */
    for (int k0 = 0; k0 < Lk; k0 += KCH) {
      const int lk = MIN(KCH, Lk - k0), diag = b->t0 - b->s0 - k0, lds = round_up(lk + MR, NC);
      const long kt = (long)kvh * hd * J->Tp + b->s0 + k0, kp = ((long)kvh * T + b->s0 + k0) * hdp;
      scores(Q, hdp, bqp, hd, J->Kt + kt, J->Tp, P, lds, diag, lk);
      scores(dO, hdp, bqp, hd, J->Vt + kt, J->Tp, dS, lds, diag, lk);
      for (int i = 0; i < bqp; i++) {
        float *p = P + (long)i * lds, *ds = dS + (long)i * lds;
        const int n = i < Bq ? MAX(0, MIN(lk, diag + i + 1)) : 0, vend = n - n % VW; /* keys [0, n) visible */
        if (n > 0) {
          const vf vl = vsplat(L[i]), vD = vsplat(D[i]);
          if (!b->contig) mask_ids(J, b, k0, p, n);
          for (int j = 0; j < vend; j += VW) {
            const vf e = vexp_fused(vload(p + j) - vl);
            vstore(p + j, e);
            vstore(ds + j, e * (vload(ds + j) - vD));
          }
          if (vend < n) {
            const vf e = vexp_fused(vload_tail(p + vend, n - vend, -INFINITY) - vl);
            vstore_tail(p + vend, e, n - vend);
            vstore_tail(ds + vend, e * (vload_tail(ds + vend, n - vend, 0) - vD), n - vend);
          }
        }
        memset(p + n, 0, (size_t)(lds - n) * 4);
        memset(ds + n, 0, (size_t)(lds - n) * 4);
      }
      /* dQ (+)= dS K (scaled below), dK += dS^T (q scale), dV += P^T dO */
      prob_values(dS, lds, bqp, lk, diag, J->Kp + kp, hdp, hdp, dQ, hdp, k0 > 0);
      keys_update(dS, lds, Bq, lk, diag, Q, hdp, hdp, dK + (long)(b->s0 + k0 - g->t0) * hdp, hdp);
      keys_update(P, lds, Bq, lk, diag, dO, hdp, hdp, dV + (long)(b->s0 + k0 - g->t0) * hdp, hdp);
    }
    for (int i = 0; i < Bq; i++) {
      float *dst = J->dq + ((long)(b->t0 + i) * nH + h) * hd;
      const float *s = dQ + (long)i * hdp;
      for (int c = 0; c < hd; c++) dst[c] += s[c] * J->scale;
    }
    if (bi + 1 < pt->b1) { /* the next block's inputs arrive while this one finishes */
      const blk_t *nb = b + 1;
      prefetch_rows(J->q, nH, hd, h, nb->t0, nb->t1, 0);
      prefetch_rows(J->dout, nH, hd, h, nb->t0, nb->t1, 0);
      prefetch_rows(J->out_in, nH, hd, h, nb->t0, nb->t1, 0);
    }
  }
done:
  free(Q);
  free(dO);
  free(dQ);
  free(P);
  free(dS);
}

#define RED_ROWS 64

/*
 * dk, dv rows of one kv head += its group's per-head rows of every part that holds the key, in
 * head then part order (task = kv head, rows).
 */
static void reduce_task(void *ctx, int task) {
  attn_job *J = ctx;
  const int chunks = (J->T + RED_ROWS - 1) / RED_ROWS, kvh = task / chunks, t0 = task % chunks * RED_ROWS;
  const int t1 = MIN(J->T, t0 + RED_ROWS), hd = J->hd, hdp = J->hdp;
  for (int m = 0; m < 2; m++) {
    const float *src = m ? J->dVs : J->dKs;
    float *dst = m ? J->dv : J->dk;
    for (int t = t0; t < t1; t++) {
      const seg_t *g = &J->seg[J->seg_of[t]];
      float acc[hdp];
      memset(acc, 0, sizeof acc);
      for (int h = kvh * J->group; h < (kvh + 1) * J->group; h++) {
        for (int p = g->p0; p < g->p1; p++) {
          const part_t *pt = &J->part[p];
          if (t >= pt->t1) continue;
          const float *s = src + ((long)h * J->R + pt->off + (t - g->t0)) * hdp;
          for (int c = 0; c < hdp; c++) acc[c] += s[c];
        }
      }
      float *d = dst + ((long)t * J->nKv + kvh) * hd;
      for (int c = 0; c < hd; c++) d[c] += acc[c];
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Entry points                                                                                 */

static int setup(attn_job *J, const int32_t *seq, int T, int nH, int nKv, int hd) {
  J->seq = seq;
  J->T = T;
  J->nH = nH;
  J->nKv = nKv;
  J->hd = hd;
  J->hdp = round_up(hd, VW);
  J->Tp = T + TPAD;
  J->group = nH / nKv;
  J->scale = 1.0f / sqrtf((float)hd);
  return plan(J);
}

int FN(hl_attn_fwd)(const float *q, const float *k, const float *v, const int32_t *seq, int T, int nH, int nKv, int hd, float *out,
                    float *lse, int threads) {
  attn_job J;
  memset(&J, 0, sizeof J);
  J.q = q;
  J.k = k;
  J.v = v;
  J.out = out;
  J.lse = lse;
  int rc = -1;
  if (setup(&J, seq, T, nH, nKv, hd) != 0) goto done;
  J.Kt = malloc((size_t)nKv * hd * J.Tp * 4);
  J.Vp = malloc((size_t)nKv * T * J.hdp * 4);
  if (!J.Kt || !J.Vp) goto done;
  hl_parallel_for(threads, nKv, prep_task, &J);
  for (int i = 0; i < J.nblk; i++) J.work[i] = (long)(J.blk[i].t1 - J.blk[i].t0) * (J.blk[i].t1 - J.blk[i].s0);
  if (order_by_work(J.order, J.work, J.nblk) != 0) goto done;
  hl_parallel_for(threads, nH * J.nblk, fwd_task, &J);
  rc = J.failed ? -1 : 0;
done:
  free_job(&J);
  return rc;
}

int FN(hl_attn_bwd)(const float *q, const float *k, const float *v, const float *out, const float *lse, const float *dout,
                    const int32_t *seq, int T, int nH, int nKv, int hd, float *dq, float *dk, float *dv, int threads) {
  attn_job J;
  memset(&J, 0, sizeof J);
  J.q = q;
  J.k = k;
  J.v = v;
  J.out_in = out;
  J.lse_in = lse;
  J.dout = dout;
  J.dq = dq;
  J.dk = dk;
  J.dv = dv;
  int rc = -1;
  if (setup(&J, seq, T, nH, nKv, hd) != 0) goto done;
  J.Kt = malloc((size_t)nKv * hd * J.Tp * 4);
  J.Vt = malloc((size_t)nKv * hd * J.Tp * 4);
  J.Kp = malloc((size_t)nKv * T * J.hdp * 4);
  if (split_parts(&J) != 0) goto done;
  J.dKs = malloc((size_t)nH * J.R * J.hdp * 4);
  J.dVs = malloc((size_t)nH * J.R * J.hdp * 4);
  if (!J.Kt || !J.Vt || !J.Kp || !J.dKs || !J.dVs) goto done;
  hl_parallel_for(threads, nKv, prep_task, &J);
  for (int i = 0; i < J.npart; i++) J.work[i] = J.part[i].work;
  if (order_by_work(J.order, J.work, J.npart) != 0) goto done;
  hl_parallel_for(threads, nH * J.npart, bwd_task, &J);
  if (J.failed) goto done;
  hl_parallel_for(threads, nKv * ((T + RED_ROWS - 1) / RED_ROWS), reduce_task, &J);
  rc = 0;
done:
  free_job(&J);
  return rc;
}
