/*
 * The client crypto's hot loops (encryption and decryption by double-precision FFT), native twin
 * of src/kernels/assembly/client-crypto/{encrypt,decrypt,fft,mask,transpose}.ts, compiled once per
 * CPU level like kernels.c (scripts/build-native.mjs, with -ffp-contract=off).
 *
 * Bit-identical to the WebAssembly kernel: every floating-point value is computed by the same
 * IEEE double operations in the same order (no FMA contraction, no reassociation); the vectors
 * below only process two complex values (or four int32 lanes) at once where WebAssembly takes one
 * (or four), lane by lane the same arithmetic. The kernel works in the WebAssembly instance's
 * memory (base `mem`): tables, secret and scratch stay where the TypeScript wrapper
 * (src/kernels/client-crypto.ts) put them, so both backends share one state. The caller
 * (addon.c) has checked that every region lies inside that memory. Randomness (noise draws, signs,
 * ties) comes in from the caller's CSPRNG exactly as for WebAssembly.
 */
#include <stdint.h>
#include <string.h>
#if defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#include "kernels.h"

#ifndef HL_LEVEL
#error "compile with -DHL_LEVEL=<level name>"
#endif
#define FN(name) HL_CAT(name, HL_LEVEL)

typedef double v2d __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4l __attribute__((vector_size(32)));
typedef int64_t v2l __attribute__((vector_size(16)));

static inline v2d ld2(const uint8_t *p) { v2d v; memcpy(&v, p, 16); return v; }
static inline void st2(uint8_t *p, v2d v) { memcpy(p, &v, 16); }
static inline v4d ld4(const uint8_t *p) { v4d v; memcpy(&v, p, 32); return v; }
static inline void st4(uint8_t *p, v4d v) { memcpy(p, &v, 32); }
/** (lo half from p, hi half from q): two complex constants' (wr, wr) or (-wi, wi) halves. */
static inline v4d ld22(const uint8_t *p, const uint8_t *q) {
#if defined(__AVX__)
  /* two loads and one insert (assembling it in memory would stall store forwarding) */
  return (v4d)_mm256_insertf128_pd(_mm256_castpd128_pd256(_mm_loadu_pd((const double *)(const void *)p)),
                                   _mm_loadu_pd((const double *)(const void *)q), 1);
#else
  v4d v;
  memcpy(&v, p, 16);
  memcpy((uint8_t *)&v + 16, q, 16);
  return v;
#endif
}

/* (x[j], x[j+n2], x[j+1], x[j+1+n2]) as doubles, x int32 (exact conversions). */
static inline v4d folded4(const uint8_t *x, size_t j, size_t n2) {
#if defined(__AVX__)
  const __m128i lo = _mm_loadl_epi64((const __m128i *)(const void *)(x + (j << 2)));
  const __m128i hi = _mm_loadl_epi64((const __m128i *)(const void *)(x + ((j + n2) << 2)));
  return (v4d)_mm256_cvtepi32_pd(_mm_unpacklo_epi32(lo, hi));
#else
  int32_t a[4];
  memcpy(&a[0], x + (j << 2), 4);
  memcpy(&a[1], x + ((j + n2) << 2), 4);
  memcpy(&a[2], x + ((j + 1) << 2), 4);
  memcpy(&a[3], x + ((j + 1 + n2) << 2), 4);
  return (v4d){(double)a[0], (double)a[1], (double)a[2], (double)a[3]};
#endif
}
#if defined(__clang__)
static inline v2d swap2(v2d x) { return __builtin_shufflevector(x, x, 1, 0); }
static inline v4d swap4(v4d x) { return __builtin_shufflevector(x, x, 1, 0, 3, 2); }
#else
static inline v2d swap2(v2d x) { return __builtin_shuffle(x, (v2l){1, 0}); }
static inline v4d swap4(v4d x) { return __builtin_shuffle(x, (v4l){1, 0, 3, 2}); }
#endif

/* x * w for the constant stored as (wr, wr), (-wi, wi) at w: x*(wr, wr) + swap(x)*(-wi, wi). */
static inline v2d cmul2(v2d x, const uint8_t *w) { return x * ld2(w) + swap2(x) * ld2(w + 16); }
/* Two complex values times the constants at w0 and w1. */
static inline v4d cmul4(v4d x, const uint8_t *w0, const uint8_t *w1) {
  return x * ld22(w0, w1) + swap4(x) * ld22(w0 + 16, w1 + 16);
}
static inline v2d xor2(v2d x, v2l m) { return (v2d)((v2l)x ^ m); }
static inline v4d xor4(v4d x, v4l m) { return (v4d)((v4l)x ^ m); }
#define NEG0 ((int64_t)0x8000000000000000LL)
/* i*x and -i*x: swap the lanes, flip one sign (as timesI / timesMinusI in fft.ts). */
static inline v2d times_i2(v2d x) { return xor2(swap2(x), (v2l){NEG0, 0}); }
static inline v2d times_mi2(v2d x) { return xor2(swap2(x), (v2l){0, NEG0}); }
static inline v4d times_i4(v4d x) { return xor4(swap4(x), (v4l){NEG0, 0, NEG0, 0}); }
static inline v4d times_mi4(v4d x) { return xor4(swap4(x), (v4l){0, NEG0, 0, NEG0}); }

static const double MAGIC = 6755399441055744.0; /* 1.5 * 2^52 */

static void fft_forward_wide(const hl_cc_layout *L, uint8_t *buf) {
  const size_t n2 = L->n2;
  size_t h = n2 >> 1;
  if (__builtin_ctz((unsigned)n2) & 1) {
    const uint8_t *tw = L->fw;
    const size_t hb = h << 4;
    for (size_t j = 0; j < h; j += 2) {
      uint8_t *pu = buf + (j << 4);
      const v4d u = ld4(pu), v = ld4(pu + hb);
      st4(pu, u + v);
      st4(pu + hb, cmul4(u - v, tw + (j << 5), tw + ((j + 1) << 5)));
    }
    h >>= 1;
  }
  for (; h >= 8; h >>= 2) {
    const size_t q = h >> 1, qb = q << 4;
    const uint8_t *tw = L->fw4 + (3 * q - 3) * 32;
    for (size_t s = 0; s < n2; s += h << 1) {
      uint8_t *blk = buf + (s << 4);
      for (size_t j = 0; j < q; j += 2) {
        uint8_t *p = blk + (j << 4);
        const v4d x0 = ld4(p), x1 = ld4(p + qb), x2 = ld4(p + 2 * qb), x3 = ld4(p + 3 * qb);
        const v4d e0 = x0 + x2, e1 = x1 + x3;
        const v4d d0 = x0 - x2, d1 = times_i4(x1 - x3);
        const uint8_t *w = tw + j * 96, *w1 = w + 96;
        st4(p, e0 + e1);
        st4(p + qb, cmul4(e0 - e1, w + 32, w1 + 32));
        st4(p + 2 * qb, cmul4(d0 + d1, w, w1));
        st4(p + 3 * qb, cmul4(d0 - d1, w + 64, w1 + 64));
      }
    }
  }
}

static void convolve_tail(const hl_cc_layout *L, uint8_t *buf) {
  const size_t n2 = L->n2;
  for (size_t s = 0; s < n2; s += 4) {
    uint8_t *p = buf + (s << 4);
    const v2d x0 = ld2(p), x1 = ld2(p + 16), x2 = ld2(p + 32), x3 = ld2(p + 48);
    const v2d a0 = x0 + x2, a2 = x0 - x2;
    const v2d a1 = x1 + x3, a3 = times_i2(x1 - x3);
    const uint8_t *sp = L->secret + (s << 5);
    const v2d z0 = cmul2(a0 + a1, sp), z1 = cmul2(a0 - a1, sp + 32);
    const v2d z2 = cmul2(a2 + a3, sp + 64), z3 = cmul2(a2 - a3, sp + 96);
    const v2d b0 = z0 + z1, b1 = z0 - z1;
    const v2d b2 = z2 + z3, b3 = times_mi2(z2 - z3);
    st2(p, b0 + b2);
    st2(p + 16, b1 + b3);
    st2(p + 32, b0 - b2);
    st2(p + 48, b1 - b3);
  }
}

static void fft_inverse_wide(const hl_cc_layout *L, uint8_t *buf) {
  const size_t n2 = L->n2;
  const int odd = __builtin_ctz((unsigned)n2) & 1;
  const size_t top = odd ? n2 >> 2 : n2 >> 1;
  for (size_t h = 8; h <= top; h <<= 2) {
    const size_t q = h >> 1, qb = q << 4;
    const uint8_t *tw = L->iw4 + (3 * q - 3) * 32;
    for (size_t s = 0; s < n2; s += h << 1) {
      uint8_t *blk = buf + (s << 4);
      for (size_t j = 0; j < q; j += 2) {
        uint8_t *p = blk + (j << 4);
        const uint8_t *w = tw + j * 96, *w1 = w + 96;
        const v4d y0 = ld4(p);
        const v4d t1 = cmul4(ld4(p + qb), w + 32, w1 + 32), t2 = cmul4(ld4(p + 2 * qb), w, w1),
                  t3 = cmul4(ld4(p + 3 * qb), w + 64, w1 + 64);
        const v4d a0 = y0 + t1, a1 = y0 - t1;
        const v4d b = t2 + t3, c = times_mi4(t2 - t3);
        st4(p, a0 + b);
        st4(p + qb, a1 + c);
        st4(p + 2 * qb, a0 - b);
        st4(p + 3 * qb, a1 - c);
      }
    }
  }
  if (odd) {
    const size_t h = n2 >> 1, hb = h << 4;
    const uint8_t *tw = L->iw;
    for (size_t j = 0; j < h; j += 2) {
      uint8_t *pu = buf + (j << 4);
      const v4d u = ld4(pu), v = cmul4(ld4(pu + hb), tw + (j << 5), tw + ((j + 1) << 5));
      st4(pu, u + v);
      st4(pu + hb, u - v);
    }
  }
}


/* FBUF = fold(x + scale*y) * twist (y NULL: fold(x)), x and y n2*2 int32 read as signed. */
static void fold_forward(const hl_cc_layout *L, const uint8_t *x, const uint8_t *y, double scale) {
  const size_t n2 = L->n2;
  uint8_t *fb = L->fbuf;
  for (size_t j = 0; j < n2; j += 2) {
    v4d v = folded4(x, j, n2);
    if (y) v = v + folded4(y, j, n2) * (v4d){scale, scale, scale, scale};
    const uint8_t *t = L->twist + (j << 5);
    st4(fb + (j << 4), cmul4(v, t, t + 32));
  }
}

static void transform_product(const hl_cc_layout *L) {
  fft_forward_wide(L, L->fbuf);
  convolve_tail(L, L->fbuf);
  fft_inverse_wide(L, L->fbuf);
}

/* Bit patterns of round(c) + 1.5*2^52 for entries j, j+1: lanes (c_j, c_{j+n2}, c_{j+1}, c_{j+1+n2}). */
static inline v4l rounded4(const hl_cc_layout *L, size_t j) {
  const uint8_t *u = L->untwist + (j << 5);
  const v4d c = cmul4(ld4(L->fbuf + (j << 4)), u, u + 32) + (v4d){MAGIC, MAGIC, MAGIC, MAGIC};
  return (v4l)c;
}

/* dst (N i64) (+)= round(product) << shift (see gatherProduct in encrypt.ts). */
static void gather_product(const hl_cc_layout *L, uint8_t *dst, int shift, int accumulate) {
  const size_t n2 = L->n2;
  uint64_t *d = (uint64_t *)(void *)dst;
#if defined(__AVX2__)
  for (size_t j = 0; j < n2; j += 2) {
    /* lanes (c_j, c_{j+n2}, c_{j+1}, c_{j+1+n2}) -> (c_j, c_{j+1} | c_{j+n2}, c_{j+1+n2}) */
    __m256i r = _mm256_permute4x64_epi64(_mm256_sll_epi64((__m256i)rounded4(L, j), _mm_cvtsi32_si128(shift)), 0xd8);
    __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
    if (accumulate) {
      lo = _mm_add_epi64(lo, _mm_loadu_si128((const __m128i *)(const void *)(d + j)));
      hi = _mm_add_epi64(hi, _mm_loadu_si128((const __m128i *)(const void *)(d + j + n2)));
    }
    _mm_storeu_si128((__m128i *)(void *)(d + j), lo);
    _mm_storeu_si128((__m128i *)(void *)(d + j + n2), hi);
  }
  return;
#endif
  for (size_t j = 0; j < n2; j += 2) {
    const v4l r = rounded4(L, j);
    uint64_t v[4] = {(uint64_t)r[0] << shift, (uint64_t)r[1] << shift, (uint64_t)r[2] << shift, (uint64_t)r[3] << shift};
    uint64_t o[4];
    if (accumulate) {
      memcpy(&o[0], d + j, 16);
      memcpy(&o[2], d + j + n2, 16);
      v[0] += o[0]; v[2] += o[1]; v[1] += o[2]; v[3] += o[3];
    }
    const uint64_t lo[2] = {v[0], v[2]}, hi[2] = {v[1], v[3]};
    memcpy(d + j, lo, 16);
    memcpy(d + j + n2, hi, 16);
  }
}

/* yA << 34, yB << 34 from the packed product (see gatherPacked in encrypt.ts). */
static void gather_packed(const hl_cc_layout *L, uint8_t *dstA, uint8_t *dstB) {
  const size_t n2 = L->n2, n = n2 << 1;
  uint64_t *da = (uint64_t *)(void *)dstA, *db = (uint64_t *)(void *)dstB;
#if defined(__AVX2__)
  const __m256i low23 = _mm256_set1_epi64x((1 << 23) - 1), bit22 = _mm256_set1_epi64x(1 << 22);
  for (size_t j = 0; j < n2; j += 2) {
    const __m256i r = _mm256_permute4x64_epi64((__m256i)rounded4(L, j), 0xd8);
    /* yA: the low 23 bits sign-extended; yB << 34 needs only bits 23..52 of r - yA (logical shift) */
    const __m256i yA = _mm256_sub_epi64(_mm256_xor_si256(_mm256_and_si256(r, low23), bit22), bit22);
    const __m256i a = _mm256_slli_epi64(yA, 34), b = _mm256_slli_epi64(_mm256_srli_epi64(_mm256_sub_epi64(r, yA), 23), 34);
    _mm_storeu_si128((__m128i *)(void *)(da + j), _mm256_castsi256_si128(a));
    _mm_storeu_si128((__m128i *)(void *)(da + j + n2), _mm256_extracti128_si256(a, 1));
    _mm_storeu_si128((__m128i *)(void *)(db + j), _mm256_castsi256_si128(b));
    _mm_storeu_si128((__m128i *)(void *)(db + j + n2), _mm256_extracti128_si256(b, 1));
  }
  return;
#endif
  for (size_t j = 0; j < n2; j += 2) {
    const v4l r = rounded4(L, j);
    const size_t idx[4] = {j, j + n2, j + 1, j + 1 + n2};
    for (int l = 0; l < 4; l++) {
      const int64_t yA = (int64_t)((uint64_t)r[l] << 41) >> 41;
      const int64_t yB = (int64_t)((uint64_t)r[l] - (uint64_t)yA) >> 23;
      const uint64_t a = (uint64_t)yA << 34, b = (uint64_t)yB << 34;
      memcpy(da + idx[l], &a, 8);
      memcpy(db + idx[l], &b, 8);
    }
  }
  (void)n;
}

static inline uint32_t mask_low(const uint8_t *s) { uint32_t v; memcpy(&v, s, 4); return v; }
static inline int32_t mask_high(const uint8_t *s) { return (int32_t)(((uint32_t)s[4] | ((uint32_t)s[5] << 8)) & 0xfff); }

#if defined(__AVX2__)
/* The low words and bits 32..43 of the four 6-byte mask values at s (maskLowWords, maskHighBits in mask.ts). */
static inline void mask4(const uint8_t *s, __m128i *lw, __m128i *h12) {
  const __m128i a = _mm_loadu_si128((const __m128i *)(const void *)s), b = _mm_loadu_si128((const __m128i *)(const void *)(s + 8));
  *lw = _mm_or_si128(_mm_shuffle_epi8(a, _mm_setr_epi8(0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, -1, -1, -1, -1)),
                     _mm_shuffle_epi8(b, _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 10, 11, 12, 13)));
  *h12 = _mm_and_si128(_mm_or_si128(_mm_shuffle_epi8(a, _mm_setr_epi8(4, 5, -1, -1, 10, 11, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1)),
                                    _mm_shuffle_epi8(b, _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, 8, 9, -1, -1, 14, 15, -1, -1))),
                       _mm_set1_epi32(0xfff));
}
#endif

/* BUF0 <- low words, BUF1 <- high 12 bits + carry (splitMask44 in mask.ts). */
static void split_mask44(const hl_cc_layout *L, const uint8_t *src, uint8_t *buf0, uint8_t *buf1) {
  const size_t n = (size_t)L->n2 << 1;
#if defined(__AVX2__)
  for (size_t j = 0; j < n; j += 4) {
    __m128i lw, h12;
    mask4(src + j * 6, &lw, &h12);
    _mm_storeu_si128((__m128i *)(void *)(buf0 + (j << 2)), lw);
    _mm_storeu_si128((__m128i *)(void *)(buf1 + (j << 2)), _mm_add_epi32(h12, _mm_srli_epi32(lw, 31)));
  }
  return;
#endif
  for (size_t j = 0; j < n; j++) {
    const uint8_t *s = src + j * 6;
    const uint32_t lw = mask_low(s);
    const int32_t hi = (int32_t)((uint32_t)mask_high(s) + (lw >> 31));
    memcpy(buf0 + (j << 2), &lw, 4);
    memcpy(buf1 + (j << 2), &hi, 4);
  }
}

/* w, top, hi of splitMask34 (encrypt.ts). */
static void split_mask34(const hl_cc_layout *L, const uint8_t *src, uint8_t *w, uint8_t *top, uint8_t *hi) {
  const size_t n = (size_t)L->n2 << 1;
#if defined(__AVX2__)
  for (size_t j = 0; j < n; j += 4) {
    __m128i lw, h12;
    mask4(src + j * 6, &lw, &h12);
    const __m128i t = _mm_and_si128(h12, _mm_set1_epi32(3));
    const __m128i carry = _mm_cmpgt_epi32(t, _mm_set1_epi32(1));
    const size_t o = j << 2;
    _mm_storeu_si128((__m128i *)(void *)(w + o), lw);
    _mm_storeu_si128((__m128i *)(void *)(top + o),
                     _mm_add_epi32(_mm_add_epi32(t, _mm_and_si128(carry, _mm_set1_epi32(-4))), _mm_srli_epi32(lw, 31)));
    _mm_storeu_si128((__m128i *)(void *)(hi + o), _mm_sub_epi32(_mm_srli_epi32(h12, 2), carry));
  }
  return;
#endif
  for (size_t j = 0; j < n; j++) {
    const uint8_t *s = src + j * 6;
    const uint32_t lw = mask_low(s);
    const uint32_t h12 = (uint32_t)mask_high(s);
    const uint32_t t = h12 & 3;
    const uint32_t carry = t >= 2 ? 0xffffffffu : 0;
    const uint32_t tp = t + (carry & 0xfffffffcu) + (lw >> 31);
    const uint32_t hv = (h12 >> 2) - carry;
    memcpy(w + (j << 2), &lw, 4);
    memcpy(top + (j << 2), &tp, 4);
    memcpy(hi + (j << 2), &hv, 4);
  }
}

/* Noise of one polynomial in place (sampleNoise in encrypt.ts): e = +-#{k : u >= cdt[k]}. */
static void sample_noise(size_t n, uint8_t *u, const uint8_t *bits, const uint32_t *cdt, int nCdt) {
#if defined(__AVX2__)
  const __m256i top = _mm256_set1_epi32((int32_t)0x80000000u), signBits = _mm256_setr_epi32(1, 2, 4, 8, 1, 2, 4, 8);
  for (size_t j = 0; j < n; j += 16) {
    __m256i *p = (__m256i *)(void *)(u + (j << 2));
    const __m256i u0 = _mm256_xor_si256(_mm256_loadu_si256(p), top), u1 = _mm256_xor_si256(_mm256_loadu_si256(p + 1), top);
    __m256i m0 = _mm256_set1_epi32(nCdt), m1 = m0;
    for (int k = 0; k < nCdt; k++) {
      const __m256i thr = _mm256_set1_epi32((int32_t)(cdt[k] ^ 0x80000000u));
      m0 = _mm256_add_epi32(m0, _mm256_cmpgt_epi32(thr, u0));
      m1 = _mm256_add_epi32(m1, _mm256_cmpgt_epi32(thr, u1));
    }
    const uint8_t *b = bits + (j >> 2);
    const __m256i s0 = _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_setr_epi32(b[0], b[0], b[0], b[0], b[1], b[1], b[1], b[1]), signBits), _mm256_setzero_si256());
    const __m256i s1 = _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_setr_epi32(b[2], b[2], b[2], b[2], b[3], b[3], b[3], b[3]), signBits), _mm256_setzero_si256());
    _mm256_storeu_si256(p, _mm256_sub_epi32(_mm256_xor_si256(m0, s0), s0));
    _mm256_storeu_si256(p + 1, _mm256_sub_epi32(_mm256_xor_si256(m1, s1), s1));
  }
  return;
#endif
  for (size_t j0 = 0; j0 < n; j0 += 16) { /* n is a power of two >= 16 */
    uint32_t x[16];
    int32_t m[16];
    memcpy(x, u + (j0 << 2), sizeof x);
    for (int l = 0; l < 16; l++) m[l] = nCdt;
    /* constant time: every draw against every threshold, the same signed compare as WebAssembly */
    for (int k = 0; k < nCdt; k++) {
      const int32_t thr = (int32_t)(cdt[k] ^ 0x80000000u);
      for (int l = 0; l < 16; l++) m[l] -= (thr > (int32_t)(x[l] ^ 0x80000000u));
    }
    for (int l = 0; l < 16; l++) {
      const size_t j = j0 + (size_t)l;
      const int32_t s = -(int32_t)((bits[j >> 2] >> (j & 3)) & 1);
      m[l] = (m[l] ^ s) - s;
    }
    memcpy(u + (j0 << 2), m, sizeof m);
  }
}

int FN(hl_cc_encrypt)(const hl_cc_layout *L, int nPolys, const uint8_t *aSrc, const uint8_t *m, uint8_t *rnd, const uint32_t *cdt,
                      int nCdt, int deltaShift, int upShift, int outBytes, uint8_t *out, int32_t mLimit, int mBytes, int pairHigh) {
  const size_t n = (size_t)L->n2 << 1, nb = n << 3;
  const uint32_t lim = (uint32_t)mLimit, lim2 = (uint32_t)mLimit << 1;
  uint32_t bad = 0;
  const uint64_t roundAdd = ((uint64_t)1 << (upShift - 1)) - 1;
  const uint64_t q1 = ((uint64_t)1 << 44) - 1;
  const uint64_t outMask = outBytes >= 8 ? ~(uint64_t)0 : ((uint64_t)1 << (outBytes * 8)) - 1;
  const uint8_t *bits = rnd + (((size_t)nPolys * n) << 2);
  uint8_t *dst = out;
  uint8_t *const outEnd = out + (size_t)nPolys * n * (size_t)outBytes;
  uint8_t *const wide = L->wide, *const split = L->split;
  for (int poly = 0; poly < nPolys;) {
    const int pair = pairHigh && poly + 1 < nPolys;
    const int group = pair ? 2 : 1;
    const size_t first = (size_t)poly * n;
    const uint8_t *a = aSrc + first * 6;
    if (pair) {
      const size_t ib = n << 2;
      split_mask34(L, a, split, split + ib, split + 2 * ib);
      split_mask34(L, a + n * 6, split + 3 * ib, split + 4 * ib, split + 5 * ib);
      fold_forward(L, split + 2 * ib, split + 5 * ib, 8388608.0);
      transform_product(L);
      gather_packed(L, wide, wide + nb);
      fold_forward(L, split, split + ib, 4294967296.0);
      transform_product(L);
      gather_product(L, wide, 0, 1);
      fold_forward(L, split + 3 * ib, split + 4 * ib, 4294967296.0);
      transform_product(L);
      gather_product(L, wide + nb, 0, 1);
    } else {
      const size_t ib = n << 2;
      split_mask44(L, a, split, split + ib);
      fold_forward(L, split + ib, NULL, 0);
      transform_product(L);
      gather_product(L, wide, 32, 0);
      fold_forward(L, split, NULL, 0);
      transform_product(L);
      gather_product(L, wide, 0, 1);
    }
    for (int g = 0; g < group; g++) {
      const size_t base = first + (size_t)g * n;
      sample_noise(n, rnd + (base << 2), bits + (base >> 2), cdt, nCdt);
      const uint8_t *w = wide + (size_t)g * nb;
      size_t j = 0;
#if defined(__AVX2__)
      {
        const __m128i tieBits = _mm_setr_epi32(16, 32, 64, 128), vlim = _mm_set1_epi32((int32_t)lim), vlim2 = _mm_set1_epi32((int32_t)lim2);
        const __m256i vround = _mm256_set1_epi64x((int64_t)roundAdd), vq1 = _mm256_set1_epi64x((int64_t)q1);
        const __m128i dsh = _mm_cvtsi32_si128(deltaShift), ush = _mm_cvtsi32_si128(upShift);
        __m128i vbad = _mm_setzero_si128();
        /* the last values of the upload go through the scalar loop (its stores stop at the end) */
        for (; j < n && dst + 3 * (size_t)outBytes + 8 <= outEnd; j += 4) {
          const size_t at = base + j;
          const __m128i e = _mm_loadu_si128((const __m128i *)(const void *)(rnd + (at << 2)));
          const __m128i bb = _mm_set1_epi32(bits[at >> 2]);
          const __m128i tie = _mm_and_si128(_mm_xor_si128(_mm_cmpeq_epi32(_mm_and_si128(bb, tieBits), _mm_setzero_si128()), _mm_set1_epi32(-1)),
                                            _mm_set1_epi32(1));
          __m128i mm;
          if (mBytes == 1) { int32_t v; memcpy(&v, m + at, 4); mm = _mm_cvtepi8_epi32(_mm_cvtsi32_si128(v)); }
          else if (mBytes == 2) mm = _mm_cvtepi16_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(m + (at << 1))));
          else mm = _mm_loadu_si128((const __m128i *)(const void *)(m + (at << 2)));
          const __m128i x = _mm_add_epi32(mm, vlim);
          vbad = _mm_or_si128(vbad, _mm_cmpeq_epi32(_mm_max_epu32(x, vlim2), x)); /* x >=u lim2 */
          const __m128i add32 = _mm_add_epi32(e, tie);
          __m256i v = _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(const void *)(w + (j << 3))),
                                       _mm256_add_epi64(_mm256_cvtepi32_epi64(add32), _mm256_sll_epi64(_mm256_cvtepi32_epi64(mm), dsh)));
          v = _mm256_srl_epi64(_mm256_and_si256(_mm256_add_epi64(v, vround), vq1), ush);
          uint64_t o[4];
          _mm256_storeu_si256((__m256i *)(void *)o, v);
          /* overlapping 8-byte stores in ascending order leave exactly outBytes bytes per value */
          for (int l = 0; l < 4; l++) { const uint64_t x8 = o[l] & outMask; memcpy(dst, &x8, 8); dst += outBytes; }
        }
        bad |= (uint32_t)!_mm_testz_si128(vbad, vbad);
      }
#endif
      for (; j < n; j++) {
        const size_t at = base + j;
        int32_t e;
        memcpy(&e, rnd + (at << 2), 4);
        const int32_t tie = (bits[at >> 2] >> (4 + (at & 3))) & 1;
        int32_t mm;
        if (mBytes == 1) mm = (int8_t)m[at];
        else if (mBytes == 2) { int16_t v; memcpy(&v, m + (at << 1), 2); mm = v; }
        else memcpy(&mm, m + (at << 2), 4);
        bad |= ((uint32_t)mm + lim) >= lim2;
        const int32_t add32 = (int32_t)((uint32_t)e + (uint32_t)tie);
        uint64_t acc;
        memcpy(&acc, w + (j << 3), 8);
        uint64_t v = acc + ((uint64_t)(int64_t)add32 + ((uint64_t)(int64_t)mm << deltaShift));
        v = ((v + roundAdd) & q1) >> upShift;
        v &= outMask;
        if (dst + 8 <= outEnd) memcpy(dst, &v, 8);
        else memcpy(dst, &v, (size_t)outBytes);
        dst += outBytes;
      }
    }
    poly += group;
  }
  return bad ? 1 : 0;
}

void FN(hl_cc_decrypt)(const hl_cc_layout *L, int nRows, const uint8_t *a, const uint8_t *b, int sh, uint8_t *y, int accumulate) {
  const size_t n2 = L->n2, n = n2 << 1;
  const uint32_t rnd = (uint32_t)1 << (sh - 1);
  for (int row = 0; row < nRows; row++) {
    const size_t base = ((size_t)row * n) << 2;
    fold_forward(L, a + base, NULL, 0);
    transform_product(L);
    const uint8_t *bRow = b + base;
    uint8_t *yRow = y + base;
#if defined(__AVX2__)
    const __m128i vr = _mm_set1_epi32((int32_t)rnd), vsh = _mm_cvtsi32_si128(sh);
    const __m256i pick = _mm256_setr_epi32(0, 4, 2, 6, 1, 3, 5, 7);
    for (size_t j = 0; j < n2; j += 4) {
      /* low words (c_j, c_{j+1}, c_{j+n2}, c_{j+1+n2}) of entries j, j+1, then of j+2, j+3 */
      const __m128i p0 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32((__m256i)rounded4(L, j), pick));
      const __m128i p1 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32((__m256i)rounded4(L, j + 2), pick));
      const __m128i cLo = _mm_unpacklo_epi64(p0, p1), cHi = _mm_unpackhi_epi64(p0, p1);
      __m128i *bl = (__m128i *)(void *)(bRow + (j << 2)), *bh = (__m128i *)(void *)(bRow + ((j + n2) << 2));
      __m128i *yl = (__m128i *)(void *)(yRow + (j << 2)), *yh = (__m128i *)(void *)(yRow + ((j + n2) << 2));
      __m128i lo = _mm_sra_epi32(_mm_add_epi32(_mm_sub_epi32(_mm_loadu_si128(bl), cLo), vr), vsh);
      __m128i hi = _mm_sra_epi32(_mm_add_epi32(_mm_sub_epi32(_mm_loadu_si128(bh), cHi), vr), vsh);
      if (accumulate) {
        lo = _mm_add_epi32(lo, _mm_loadu_si128(yl));
        hi = _mm_add_epi32(hi, _mm_loadu_si128(yh));
      }
      _mm_storeu_si128(yl, lo);
      _mm_storeu_si128(yh, hi);
    }
    continue;
#endif
    for (size_t j = 0; j < n2; j += 2) {
      const v4l r = rounded4(L, j);
      /* lanes (c_j, c_{j+n2}, c_{j+1}, c_{j+1+n2}): low 32 bits of each */
      const size_t idx[4] = {j, j + n2, j + 1, j + 1 + n2};
      for (int l = 0; l < 4; l++) {
        uint32_t bv;
        memcpy(&bv, bRow + (idx[l] << 2), 4);
        const uint32_t v = bv - (uint32_t)r[l] + rnd;
        int32_t yv = (int32_t)v >> sh;
        if (accumulate) {
          int32_t old;
          memcpy(&old, yRow + (idx[l] << 2), 4);
          yv = (int32_t)((uint32_t)old + (uint32_t)yv);
        }
        memcpy(yRow + (idx[l] << 2), &yv, 4);
      }
    }
  }
}

void FN(hl_cc_transpose)(const uint8_t *src, int rows, int cols, uint8_t *dst) {
  const int32_t *s = (const int32_t *)(const void *)src;
  int32_t *d = (int32_t *)(void *)dst;
#if defined(__SSE2__)
  /* 4 x 4 blocks in registers, then the edges one value at a time (transposeI32 in transpose.ts) */
  const int r4 = rows & ~3, c4 = cols & ~3;
  for (int r = 0; r < r4; r += 4) {
    for (int c = 0; c < c4; c += 4) {
      const int32_t *p = s + (size_t)r * (size_t)cols + (size_t)c;
      const __m128i x0 = _mm_loadu_si128((const __m128i *)(const void *)p), x1 = _mm_loadu_si128((const __m128i *)(const void *)(p + cols));
      const __m128i x2 = _mm_loadu_si128((const __m128i *)(const void *)(p + 2 * (size_t)cols)),
                    x3 = _mm_loadu_si128((const __m128i *)(const void *)(p + 3 * (size_t)cols));
      const __m128i t0 = _mm_unpacklo_epi32(x0, x1), t1 = _mm_unpacklo_epi32(x2, x3);
      const __m128i t2 = _mm_unpackhi_epi32(x0, x1), t3 = _mm_unpackhi_epi32(x2, x3);
      int32_t *q = d + (size_t)c * (size_t)rows + (size_t)r;
      _mm_storeu_si128((__m128i *)(void *)q, _mm_unpacklo_epi64(t0, t1));
      _mm_storeu_si128((__m128i *)(void *)(q + rows), _mm_unpackhi_epi64(t0, t1));
      _mm_storeu_si128((__m128i *)(void *)(q + 2 * (size_t)rows), _mm_unpacklo_epi64(t2, t3));
      _mm_storeu_si128((__m128i *)(void *)(q + 3 * (size_t)rows), _mm_unpackhi_epi64(t2, t3));
    }
  }
  for (int r = 0; r < rows; r++)
    for (int c = r < r4 ? c4 : 0; c < cols; c++) d[(size_t)c * (size_t)rows + (size_t)r] = s[(size_t)r * (size_t)cols + (size_t)c];
  return;
#endif
  const int B = 16;
  for (int r0 = 0; r0 < rows; r0 += B) {
    for (int c0 = 0; c0 < cols; c0 += B) {
      const int r1 = r0 + B < rows ? r0 + B : rows, c1 = c0 + B < cols ? c0 + B : cols;
      for (int r = r0; r < r1; r++)
        for (int c = c0; c < c1; c++) d[(size_t)c * (size_t)rows + (size_t)r] = s[(size_t)r * (size_t)cols + (size_t)c];
    }
  }
}
