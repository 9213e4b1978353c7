/*
 * helora native kernels: declarations shared by the per-level builds of kernels.c and client-crypto.c and the N-API
 * binding (addon.c). kernels.c is compiled once per CPU level with -DHL_LEVEL=<name> and that
 * level's -m flags; every symbol carries the level's name so the objects link side by side and
 * addon.c picks one at run time.
 *
 * Layouts (little endian, as in src/kernels/assembly/gemm.entry.ts so packed weights are shared):
 *   W "4-row blocks": for row block r and k-pair q, 16 bytes = rows 4r..4r+3, each an i16 pair
 *     (w[.][2q], w[.][2q+1]); a block holds K2 = ceil(K/2) pairs; rows and K padded with zeros.
 * The callers (addon.c) have validated every size and buffer length.
 */
#ifndef HELORA_KERNELS_H
#define HELORA_KERNELS_H
#include <stddef.h>
#include <stdint.h>

/** Bytes of W packed into 4-row blocks of i16 pairs. */
static inline size_t hl_packed_i8_bytes(int M, int K) {
  return (size_t)((M + 3) / 4) * (size_t)((K + 1) / 2) * 16;
}

/*
 * The client crypto kernel's state inside the WebAssembly instance's memory (see client-crypto.c):
 * n2 = N/2 and the FFT's tables (twist, untwist, fw, iw, fw4, iw4: fft-product.ts fftTables), the
 * secret's transform and the scratch (fbuf n2 complex, wide 2N i64, split 6N i32).
 */
typedef struct {
  uint32_t n2;
  const uint8_t *twist, *untwist, *fw, *iw, *fw4, *iw4, *secret;
  uint8_t *fbuf, *wide, *split;
} hl_cc_layout;

#define HL_CAT3(a, b) a##_##b
#define HL_CAT(a, b) HL_CAT3(a, b)

/*
 * Entry points of one level (all return 0, or -1 when scratch memory could not be allocated):
 * zq:    the Z_2^44 product (see src/kernels/zq-matmul.ts); a/aOut NULL = b-part only, b/bOut
 *        NULL = a-part only.
 * gemm_i8: out[M][N] = W · x[K][N] in wrapping int32.
 * sgemm: C(i,j) = (acc ? C(i,j) : 0) + bias[j] + sum_k A(i,k) B(k,j) over strided operands
 *        (element (i,k) of A at A[i*sai + k*sak], and so on); bias may be NULL.
 * small_f32: the few-token llm.c matmuls, reading the weights in place (see kernels.c).
 * peak:  reps rounds of a register-only loop of this level's dot-product instruction; returns
 *        the multiply-accumulates done (benchmarks time it).
 */
#define HL_DECLARE(lv)                                                                                  \
  int HL_CAT(hl_zq, lv)(const uint8_t *wp, int rows, int cols, const uint8_t *a, const uint8_t *b, int N, \
                        uint32_t *aOut, uint32_t *bOut);                                               \
  int HL_CAT(hl_gemm_i8, lv)(const uint8_t *wp, int M, int K, const int8_t *x, int N, int32_t *out);     \
  int HL_CAT(hl_sgemm, lv)(int M, int N, int K, const float *A, long sai, long sak, const float *B,      \
                           long sbk, long sbj, float *C, long sci, long scj, int acc, const float *bias); \
  void HL_CAT(hl_small_f32, lv)(int op, float *target, const float *x, const float *y, const float *bias, int T, int C, \
                                int OC);                                                                \
  double HL_CAT(hl_peak, lv)(long reps);                                                              \
  int HL_CAT(hl_cc_encrypt, lv)(const hl_cc_layout *L, int nPolys, const uint8_t *aSrc, const uint8_t *m, uint8_t *rnd, \
                                const uint32_t *cdt, int nCdt, int deltaShift, int upShift, int outBytes, uint8_t *out, \
                                int32_t mLimit, int mBytes, int pairHigh);                               \
  void HL_CAT(hl_cc_decrypt, lv)(const hl_cc_layout *L, int nRows, const uint8_t *a, const uint8_t *b, int sh, uint8_t *y, \
                                 int accumulate);                                                        \
  void HL_CAT(hl_cc_transpose, lv)(const uint8_t *src, int rows, int cols, uint8_t *dst);                 \
  HL_DECLARE_MODEL_OPS(lv)

/*
 * The client's fp32 model work (model-ops.c), each over `threads` threads (1: the caller's alone):
 * gemm_i8_mt: hl_gemm_i8 with the rows split over the threads (exact: the same result).
 * sgemm_mt:  hl_sgemm with rows or columns split over the threads (the same bits as one call).
 * cross_entropy: per row t of logits[T][V], losses[t] = logsumexp - logit[target] (0 where the
 *        target is negative: ignored); with grad the row becomes its gradient softmax*inv - inv at
 *        the target (zeros for ignored rows).
 * swiglu_fwd / swiglu_bwd: out = silu(gate)*up over n values; dgate, dup += its gradients.
 * lora_fwd: y[T][out] += scale * (dropout(x) A^T) B^T with A [rank][in], B [out][rank]; h[T][rank]
 *        = dropout(x) A^T (saved for the backward). dropout: x * keep where mask[i] != 0, else 0;
 *        mask NULL = none. lora_bwd: gradA, gradB += the gradients for dy; dx (NULL = not
 *        needed) += the branch's input gradient. Both return -1 when scratch memory ran out.
 * dropout_mask: mask[i] = (16-bit little-endian word i of stream) >= threshold.
 * rmsnorm_fwd: out[T][C] = w * x * rstd per row, rstd[t] = 1/sqrt(mean(x^2) + eps) (rstd NULL: not
 *        kept); rmsnorm_bwd: dinp += the input gradient for dout (the weight is frozen here).
 * quantize_rows: symmetric per-row quantization of x (times colScale[c] per column first, in
 *        float, when given) to |q| <= qmax into q8 or q16, scales[r] = fround(max|row| / qmax);
 *        bit for bit src/quant/quantize.ts. Returns -1, or the first index whose value (or, with
 *        *badInProduct set, whose product) is not finite, or -2 when memory ran out.
 * dequantize: y[t][o] = fround((acc * sx[t]) * sw[o]) in double (sw NULL: without it) over a token
 *        and output range; acc is acc32 or acc64.
 * attn_fwd / attn_bwd (attention.c): grouped-query causal attention with a packing mask, as
 *        attentionForwardReference / attentionBackwardReference in src/model/layers.ts: q, out,
 *        dout, dq [T][nH*hd]; k, v, dk, dv [T][nKv*hd]; lse [nH][T] (may be NULL in forward);
 *        seq [T] sequence ids; backward adds into dq, dk, dv.
 */
#define HL_DECLARE_MODEL_OPS(lv)                                                                        \
  int HL_CAT(hl_gemm_i8_mt, lv)(const uint8_t *wp, int M, int K, const int8_t *x, int N, int32_t *out, int threads); \
  int HL_CAT(hl_sgemm_mt, lv)(int M, int N, int K, const float *A, long sai, long sak, const float *B,   \
                              long sbk, long sbj, float *C, long sci, long scj, int acc, const float *bias, \
                              int threads);                                                             \
  void HL_CAT(hl_cross_entropy, lv)(float *logits, const int32_t *targets, int T, int V, int grad, float inv, \
                                    double *losses, int threads);                                       \
  void HL_CAT(hl_swiglu_fwd, lv)(float *out, const float *gate, const float *up, long n, int threads);   \
  void HL_CAT(hl_swiglu_bwd, lv)(float *dgate, float *dup, const float *dout, const float *gate,         \
                                 const float *up, long n, int threads);                                \
  int HL_CAT(hl_lora_fwd, lv)(float *y, float *h, const float *x, const float *A, const float *B,         \
                              const uint8_t *mask, int T, int in, int out, int rank, float scale, float keep, \
                              int threads);                                                             \
  int HL_CAT(hl_lora_bwd, lv)(float *dx, float *gradA, float *gradB, const float *dy, const float *x,    \
                              const float *h, const float *A, const float *B, const uint8_t *mask, int T, \
                              int in, int out, int rank, float scale, float keep, int threads);         \
  void HL_CAT(hl_dropout_mask, lv)(const uint8_t *stream, long n, uint32_t threshold, uint8_t *mask);     \
  void HL_CAT(hl_rmsnorm_fwd, lv)(float *out, float *rstd, const float *inp, const float *w, int T, int C,  \
                                  float eps, int threads);                                              \
  void HL_CAT(hl_rmsnorm_bwd, lv)(float *dinp, const float *dout, const float *inp, const float *w,       \
                                  const float *rstd, int T, int C, int threads);                         \
  long HL_CAT(hl_quantize_rows, lv)(const float *x, const float *colScale, int rows, int cols, int qmax,   \
                                    int8_t *q8, int16_t *q16, float *scales, int *badInProduct, int threads); \
  void HL_CAT(hl_dequantize, lv)(const int32_t *acc32, const double *acc64, const float *sx, const float *sw, \
                                 int OC, float *y, int t0, int tn, int o0, int on);                      \
  int HL_CAT(hl_attn_fwd, lv)(const float *q, const float *k, const float *v, const int32_t *seq, int T, int nH, \
                              int nKv, int hd, float *out, float *lse, int threads);                    \
  int HL_CAT(hl_attn_bwd, lv)(const float *q, const float *k, const float *v, const float *out, const float *lse, \
                              const float *dout, const int32_t *seq, int T, int nH, int nKv, int hd, float *dq, \
                              float *dk, float *dv, int threads);

/* The build defines HL_HAVE_<level> for each vector level its compiler could build. */
HL_DECLARE(scalar)
#if defined(HL_HAVE_avx2)
HL_DECLARE(avx2)
#endif
#if defined(HL_HAVE_avx512)
HL_DECLARE(avx512)
#endif
#if defined(HL_HAVE_avx512vnni)
HL_DECLARE(avx512vnni)
#endif
#if defined(HL_HAVE_neon)
HL_DECLARE(neon)
#endif
#if defined(HL_HAVE_dotprod)
HL_DECLARE(dotprod)
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
/** The dotprod level's run-time check: the kernel reports the ARMv8.2 dot product instructions. */
static inline int hl_has_dotprod(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }
#else
/* (no portable check elsewhere: the level stays off) */
static inline int hl_has_dotprod(void) { return 0; }
#endif
#endif

/*
 * One level's entry points, in one table that addon.c and selftest.c both index: adding a kernel
 * means a field here and its name in HL_LEVEL_FNS, so no level row can miss it.
 */
typedef struct {
  /* Each field has the type of the scalar level's entry point (every level declares the same signatures). */
  __typeof__(hl_zq_scalar) *zq;
  __typeof__(hl_gemm_i8_scalar) *gemm_i8;
  __typeof__(hl_sgemm_scalar) *sgemm;
  __typeof__(hl_small_f32_scalar) *small_f32;
  __typeof__(hl_peak_scalar) *peak;
  __typeof__(hl_cc_encrypt_scalar) *cc_encrypt;
  __typeof__(hl_cc_decrypt_scalar) *cc_decrypt;
  __typeof__(hl_cc_transpose_scalar) *cc_transpose;
  __typeof__(hl_sgemm_mt_scalar) *sgemm_mt;
  __typeof__(hl_cross_entropy_scalar) *cross_entropy;
  __typeof__(hl_swiglu_fwd_scalar) *swiglu_fwd;
  __typeof__(hl_swiglu_bwd_scalar) *swiglu_bwd;
  __typeof__(hl_lora_fwd_scalar) *lora_fwd;
  __typeof__(hl_lora_bwd_scalar) *lora_bwd;
  __typeof__(hl_dropout_mask_scalar) *dropout_mask;
  __typeof__(hl_rmsnorm_fwd_scalar) *rmsnorm_fwd;
  __typeof__(hl_rmsnorm_bwd_scalar) *rmsnorm_bwd;
  __typeof__(hl_quantize_rows_scalar) *quantize_rows;
  __typeof__(hl_dequantize_scalar) *dequantize;
  __typeof__(hl_attn_fwd_scalar) *attn_fwd;
  __typeof__(hl_attn_bwd_scalar) *attn_bwd;
  __typeof__(hl_gemm_i8_mt_scalar) *gemm_i8_mt;
} hl_level_fns;

/* The initializer of level lv's table (field order above). */
#define HL_LEVEL_FNS(lv)                                                                                          \
  {HL_CAT(hl_zq, lv), HL_CAT(hl_gemm_i8, lv), HL_CAT(hl_sgemm, lv), HL_CAT(hl_small_f32, lv), HL_CAT(hl_peak, lv),       \
   HL_CAT(hl_cc_encrypt, lv), HL_CAT(hl_cc_decrypt, lv), HL_CAT(hl_cc_transpose, lv), HL_CAT(hl_sgemm_mt, lv),           \
   HL_CAT(hl_cross_entropy, lv), HL_CAT(hl_swiglu_fwd, lv), HL_CAT(hl_swiglu_bwd, lv), HL_CAT(hl_lora_fwd, lv),          \
   HL_CAT(hl_lora_bwd, lv), HL_CAT(hl_dropout_mask, lv), HL_CAT(hl_rmsnorm_fwd, lv), HL_CAT(hl_rmsnorm_bwd, lv),         \
   HL_CAT(hl_quantize_rows, lv), HL_CAT(hl_dequantize, lv), HL_CAT(hl_attn_fwd, lv), HL_CAT(hl_attn_bwd, lv),      \
   HL_CAT(hl_gemm_i8_mt, lv)}

#if defined(__x86_64__)
/* The x86-64 levels' run-time checks (unused where the compiler could not build the level). */
__attribute__((unused)) static int hl_has_avx2(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
__attribute__((unused)) static int hl_has_avx512(void) {
  return hl_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
__attribute__((unused)) static int hl_has_avx512vnni(void) { return hl_has_avx512() && __builtin_cpu_supports("avx512vnni"); }
#endif

/** One unit of parallel work: task index in [0, ntasks). */
typedef void (*hl_task_fn)(void *ctx, int task);
/** Runs fn(ctx, 0..ntasks-1) on up to `threads` threads (the caller's included); returns when all are done. */
void hl_parallel_for(int threads, int ntasks, hl_task_fn fn, void *ctx);

/** Packs int8 w[M][K] into 4-row blocks of i16 pairs (level independent). */
void hl_pack_i8(const int8_t *w, int M, int K, uint8_t *dst);

#endif
