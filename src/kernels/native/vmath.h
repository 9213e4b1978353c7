/*
 * Float vectors shared by the per-level fp32 units (model-ops.c, attention.c): GCC vector
 * extensions of VW floats (8; 16 under AVX-512), so one body serves every level and the compiler
 * picks the instructions, and a vectorized exp.
 */
#ifndef HELORA_VMATH_H
#define HELORA_VMATH_H
#include <stdint.h>
#include <string.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VW 16
#else
#define VW 8
#endif
typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));

static inline vf vload(const float *p) {
  vf v;
  memcpy(&v, p, sizeof v);
  return v;
}
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf vsplat(float x) { return (vf){0} + x; }
/* *p in every lane: one broadcast load (vsplat's 0 + x is an add the compiler must keep). */
static inline vf vbcast(const float *p) {
#if defined(__AVX512F__)
  return (vf)_mm512_set1_ps(*p);
#elif defined(__AVX__)
  return (vf)_mm256_set1_ps(*p);
#else
  vf v;
  for (int i = 0; i < VW; i++) v[i] = *p;
  return v;
#endif
}
static inline vf vmax(vf a, vf b) {
  const vi gt = a > b;
  return (vf)((gt & (vi)a) | (~gt & (vi)b));
}

/* a*b + c rounded twice (no contraction: this unit is built with -ffp-contract=off). */
static inline vf vmuladd(vf a, vf b, vf c) { return a * b + c; }

/*
 * e^x per lane: x = n ln2 + r with |r| <= ln2/2 (ln2 in two parts so n ln2 is exact enough), e^r
 * by its degree-7 Taylor polynomial (truncation ~5e-9 relative on that range), times 2^n built in
 * the exponent bits. Below -87.3 the result is 0 (e^x < FLT_MIN: the softmax weight of a masked or
 * far-off logit), from 88.72 on +inf (as expf); NaN stays NaN. HL_DEFINE_VEXP(name, madd) defines
 * it over a multiply-add: vmuladd gives the same bits at every level (vexp below), a fused one
 * is faster where the level has FMA and agrees to rounding.
 */
#define HL_DEFINE_VEXP(name, madd)                                                                \
  static inline vf name(vf x0) {                                                                  \
    const vf lo = vsplat(-87.33654f), hi = vsplat(88.72283f);                                     \
    const vi keep = x0 >= lo;                                                                     \
    const vi nan = x0 != x0;                                                                      \
    vf x = vmax(x0, lo);                                                                          \
    x = -vmax(-x, -hi);                                                                           \
    const vf shifter = vsplat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */      \
    const vf t = madd(x, vsplat(1.44269504088896341f), shifter);                                  \
    const vf n = t - shifter;                                                                     \
    const vf r = madd(n, vsplat(2.12194440e-4f), madd(n, vsplat(-0.693359375f), x));              \
    vf p = vsplat(1.0f / 5040);                                                                   \
    p = madd(p, r, vsplat(1.0f / 720));                                                           \
    p = madd(p, r, vsplat(1.0f / 120));                                                           \
    p = madd(p, r, vsplat(1.0f / 24));                                                            \
    p = madd(p, r, vsplat(1.0f / 6));                                                             \
    p = madd(p, r, vsplat(0.5f));                                                                 \
    p = madd(p, r, vsplat(1.0f));                                                                 \
    p = madd(p, r, vsplat(1.0f));                                                                 \
    /* n in [-126, 128]: 2^n as two factors so n = 128 does not overflow the exponent field. */  \
    const vi ni = (vi)t - (vi)shifter;                                                            \
    const vi half = ni >> 1;                                                                      \
    const vf s1 = (vf)((half + 127) << 23), s2 = (vf)((ni - half + 127) << 23);                   \
    const vf e = p * s1 * s2;                                                                     \
    return (vf)(((vi)e & keep & ~nan) | ((vi)(x0 + x0) & nan));                                   \
  }

HL_DEFINE_VEXP(vexp, vmuladd)

static inline float hsum(vf v) {
  float s = 0;
  for (int i = 0; i < VW; i++) s += v[i];
  return s;
}
static inline float hmax(vf v) {
  float m = v[0];
  for (int i = 1; i < VW; i++) m = v[i] > m ? v[i] : m;
  return m;
}

/* The scalar tail of a row through the same lane arithmetic: pad to one vector. */
static inline vf vload_tail(const float *p, int n, float pad) {
  float buf[VW];
  for (int i = 0; i < VW; i++) buf[i] = i < n ? p[i] : pad;
  return vload(buf);
}
static inline void vstore_tail(float *p, vf v, int n) {
  float buf[VW];
  vstore(buf, v);
  memcpy(p, buf, (size_t)n * 4);
}

/*
 * a * b + c, fused where the level has FMA (an explicit intrinsic: the units build with
 * -ffp-contract=off, so a plain a * b + c is never contracted). Used by the products only; exp
 * and the sums stay unfused so they are the same IEEE operations at every level.
 */
static inline vf vfma(vf a, vf b, vf c) {
#if defined(__AVX512F__)
  return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__FMA__)
  return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

#endif
