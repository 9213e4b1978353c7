/*
 * helora native kernels, compiled once per CPU level (scripts/build-native.mjs):
 *   scalar      portable C (whatever the compiler makes of it)
 *   avx2        -mavx2 -mfma:                     vpmaddwd + vpaddd ymm, vfmadd231ps ymm
 *   avx512      -mavx512f -mavx512bw -mfma:       vpmaddwd + vpaddd zmm, vfmadd231ps zmm
 *   avx512vnni  the above and -mavx512vnni:       vpdpbusd zmm on byte limbs (see "Byte limbs" below)
 *   neon        AArch64 baseline (arm64 builds):  smlal/smlal2 by lane (s16 -> s32), fmla q
 *   dotprod     neon and -march=armv8.2-a+dotprod: sdot by lane on the limbs' bytes (see kern16)
 * The levels share the blocking drivers (gemm_steps, hl_sgemm) and differ only in their
 * micro-kernels: the fp32 tiles are one body over the vector macros below; the full int16 and byte
 * tiles of AVX2 and AVX-512 are short asm blocks (GCC 12 adds register moves to the intrinsics
 * version), and AVX-512's partial tiles use the intrinsics body.
 *
 * Which instruction for the 44-bit products was measured, not assumed (scripts/instruction-peaks.c
 * and bench:he's native_int8_peak_gmacs): on an AVX-512 VNNI EPYC (Zen 5, one core) the
 * register-only rates were vpdpbusd ~370-450 G MAC/s, vpdpwssd ~165-200, vpmaddwd + vpaddd
 * ~160-180 and IFMA vpmadd52luq ~55 (8 lanes, one full-width product each). Per exact 44-bit
 * product that is ~74-90 (b, 5 byte limbs) and ~61-75 (a, 6 byte limbs) on vpdpbusd, ~55-67 on
 * vpdpwssd (3 int16 limbs) and ~55 on IFMA; in the whole product the byte limbs measured 1.2x
 * (both parts) to 1.4x (b alone) faster than the vpdpwssd kernel, so the VNNI level uses them.
 * Every level stays bit-identical to the WebAssembly kernel (all are exact mod 2^32 / 2^44).
 */
#include "kernels.h"

#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
/* The neon level defines HL_NEON (NEON is baseline on AArch64, so the scalar level would see
 * __ARM_NEON too and must stay the portable reference). */
#if defined(HL_NEON)
#if !defined(__aarch64__)
#error "HL_NEON needs an AArch64 target"
#endif
#include <arm_neon.h>
#endif

#ifndef HL_LEVEL
#error "compile with -DHL_LEVEL=<level name>"
#endif
#define FN(name) HL_CAT(name, HL_LEVEL)

#define MIN(a, b) ((a) < (b) ? (a) : (b))

static void *scratch(size_t bytes) {
  /* 64-byte aligned, size rounded up as aligned_alloc requires; never zero bytes. */
  return aligned_alloc(64, ((bytes + 63) / 64) * 64 + 64);
}

/* ------------------------------------------------------------------------------------------ */
/* Vector abstraction of the levels                                                            */

#if defined(__AVX512F__)
#define HL_VEC 1
typedef __m512i vi;
typedef __m512 vf;
#define VB 64 /* bytes per vector */
#define VI_ZERO() _mm512_setzero_si512()
#define VI_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define VI_STORE(p, v) _mm512_storeu_si512((void *)(p), (v))
#define VI_BCAST32(p) _mm512_set1_epi32(load_i32(p))
#if defined(__AVX512VNNI__)
#define VI_MADD(acc, w, x) _mm512_dpwssd_epi32((acc), (w), (x))
/* four unsigned X bytes times four signed weight bytes per lane (the byte-limb path below) */
#define VI_MADD_U8(acc, w, x) _mm512_dpbusd_epi32((acc), (x), (w))
#else
#define VI_MADD(acc, w, x) _mm512_add_epi32((acc), _mm512_madd_epi16((w), (x)))
#endif
#define VF_ZERO() _mm512_setzero_ps()
#define VF_LOAD(p) _mm512_loadu_ps(p)
#define VF_STORE(p, v) _mm512_storeu_ps((p), (v))
#define VF_BCAST(p) _mm512_set1_ps(*(p))
#define VF_FMA(acc, a, b) _mm512_fmadd_ps((a), (b), (acc))
/* int16 tile: 4 rows x 4 panels of 16 tokens (16 accumulators); f32 tile: 12 rows x 32 columns (24). */
#define ZQ_TILE_P 4
#define SG_MR 12
#elif defined(__AVX2__)
#define HL_VEC 1
typedef __m256i vi;
typedef __m256 vf;
#define VB 32
#define VI_ZERO() _mm256_setzero_si256()
#define VI_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define VI_STORE(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#define VI_BCAST32(p) _mm256_set1_epi32(load_i32(p))
#define VI_MADD(acc, w, x) _mm256_add_epi32(_mm256_madd_epi16((w), (x)), (acc))
#define VF_ZERO() _mm256_setzero_ps()
#define VF_LOAD(p) _mm256_loadu_ps(p)
#define VF_STORE(p, v) _mm256_storeu_ps((p), (v))
#define VF_BCAST(p) _mm256_broadcast_ss(p)
#define VF_FMA(acc, a, b) _mm256_fmadd_ps((a), (b), (acc))
/* int16 tile: 4 rows x 1 panel of 16 tokens (8 accumulators); f32 tile: 6 rows x 16 columns (12). */
#define ZQ_TILE_P 1
#define SG_MR 6
#elif defined(HL_NEON)
/* AArch64: 32 q registers. The int16 tile has its own kernel (kern16 below); these serve the fp32
 * tile (6 rows x 16 columns: 24 accumulators, 4 B vectors, 1 broadcast) and hl_peak. */
#define HL_VEC 1
typedef int32x4_t vi;
typedef float32x4_t vf;
#define VB 16
#define VI_ZERO() vdupq_n_s32(0)
#define VI_LOAD(p) vld1q_s32((const int32_t *)(const void *)(p))
#define VI_STORE(p, v) vst1q_s32((int32_t *)(void *)(p), (v))
#define VI_BCAST32(p) vdupq_n_s32(load_i32(p))
/* pmaddwd's semantics: products of s16 pairs summed per s32 lane, wrapping. */
#define VI_MADD(acc, w, x)                                                                           \
  vaddq_s32((acc), vpaddq_s32(vmull_s16(vget_low_s16(vreinterpretq_s16_s32(w)), vget_low_s16(vreinterpretq_s16_s32(x))), \
                              vmull_high_s16(vreinterpretq_s16_s32(w), vreinterpretq_s16_s32(x))))
#define VF_ZERO() vdupq_n_f32(0.0f)
#define VF_LOAD(p) vld1q_f32(p)
#define VF_STORE(p, v) vst1q_f32((p), (v))
#define VF_BCAST(p) vld1q_dup_f32(p)
#define VF_FMA(acc, a, b) vfmaq_f32((acc), (a), (b))
#define ZQ_TILE_P 1
#define SG_MR 6
#else
#define ZQ_TILE_P 1
#define SG_MR 4
#endif

#ifndef VI_MADD_U8
#define VI_MADD_U8(acc, w, x) (acc) /* (the byte path exists only with VNNI) */
#endif

static inline int32_t load_i32(const void *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* ------------------------------------------------------------------------------------------ */
/* int16 limb GEMM: C[4*Mb][16*NP] (=/+=) W · X                                                */
/*
 * X "16-token panels": for panel p and k-pair q, 64 bytes = 16 columns, each an i16 pair
 * (x[2q][j], x[2q+1][j]); a panel holds K2 pairs (panel stride K2*64 bytes).
 * Blocking (BLIS order): K in chunks of KC_STEPS pairs (256 for one-panel tiles, 128 for four); rows
 * in slabs of MCB blocks (a W slab of 128 rows x 256 pairs = 128 KiB stays in L2); for each tile
 * of panels (16-32 KiB of X, stays in L1) the kernel sweeps the slab's row blocks. The C tile is
 * prefetched before each kernel call: C is revisited once per K chunk and has left the caches.
 */
#define ZQ_PW 16
#if ZQ_TILE_P == 4
#define KC_STEPS 128
#else
#define KC_STEPS 256
#endif
#define MCB 32

#if defined(__AVX2__) && !defined(__AVX512F__)
/*
 * AVX2: a 4 x 16 tile in 8 ymm accumulators. Written as asm because GCC 12 keeps the four row
 * broadcasts live at once and then adds a register move per accumulator and iteration (about
 * a fifth more instructions than vpmaddwd + vpaddd); here one temporary serves every product.
 */
#define ZQ_ROW(off, c0, c1)                   \
  "vpbroadcastd " #off "(%[a]), %%ymm14\n\t"   \
  "vpmaddwd %%ymm12, %%ymm14, %%ymm15\n\t"     \
  "vpaddd %%ymm15, %[" #c0 "], %[" #c0 "]\n\t" \
  "vpmaddwd %%ymm13, %%ymm14, %%ymm15\n\t"     \
  "vpaddd %%ymm15, %[" #c1 "], %[" #c1 "]\n\t"
static void kern16(const uint8_t *a, const uint8_t *x, size_t xs, int32_t *c, size_t ldc, int n, int first, int np) {
  (void)xs;
  (void)np;
  vi c00, c01, c10, c11, c20, c21, c30, c31;
  if (first) {
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = VI_ZERO();
  } else {
    c00 = VI_LOAD(c), c01 = VI_LOAD(c + 8), c10 = VI_LOAD(c + ldc), c11 = VI_LOAD(c + ldc + 8);
    c20 = VI_LOAD(c + 2 * ldc), c21 = VI_LOAD(c + 2 * ldc + 8), c30 = VI_LOAD(c + 3 * ldc), c31 = VI_LOAD(c + 3 * ldc + 8);
  }
  for (int q = 0; q < n; q++) {
    __asm__("vmovdqu (%[x]), %%ymm12\n\t"
            "vmovdqu 32(%[x]), %%ymm13\n\t"
            ZQ_ROW(0, c00, c01) ZQ_ROW(4, c10, c11) ZQ_ROW(8, c20, c21) ZQ_ROW(12, c30, c31)
            : [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10), [c11] "+x"(c11),
              [c20] "+x"(c20), [c21] "+x"(c21), [c30] "+x"(c30), [c31] "+x"(c31)
            : [a] "r"(a), [x] "r"(x), "m"(*(const uint8_t(*)[16])a), "m"(*(const uint8_t(*)[64])x)
            : "xmm12", "xmm13", "xmm14", "xmm15");
    a += 16;
    x += 64;
  }
  VI_STORE(c, c00), VI_STORE(c + 8, c01), VI_STORE(c + ldc, c10), VI_STORE(c + ldc + 8, c11);
  VI_STORE(c + 2 * ldc, c20), VI_STORE(c + 2 * ldc + 8, c21), VI_STORE(c + 3 * ldc, c30), VI_STORE(c + 3 * ldc + 8, c31);
}
#undef ZQ_ROW
#elif defined(HL_NEON)
/*
 * NEON: a 4 x 16 tile in 16 accumulators. ld2 splits a panel row's i16 pairs into the k-even and
 * k-odd limbs of 8 tokens; smlal/smlal2 by lane multiply 4 of them by one weight (the 4 rows' 8
 * weights sit in one register) and add in s32. Both products of a pair go into the same lane one
 * after the other: the sum mod 2^32 is pmaddwd + paddd's (addition wraps, so its order does not
 * matter), bit for bit the other levels' result.
 */
#define N_ROW(r, lw, lx)                                        \
  c##r##0 = vmlal_laneq_s16(c##r##0, vget_low_s16(lx.val[0]), lw, 2 * r); \
  c##r##0 = vmlal_laneq_s16(c##r##0, vget_low_s16(lx.val[1]), lw, 2 * r + 1); \
  c##r##1 = vmlal_high_laneq_s16(c##r##1, lx.val[0], lw, 2 * r);         \
  c##r##1 = vmlal_high_laneq_s16(c##r##1, lx.val[1], lw, 2 * r + 1);
#define N_ROW2(r, lw)                                                   \
  c##r##2 = vmlal_laneq_s16(c##r##2, vget_low_s16(x1.val[0]), lw, 2 * r); \
  c##r##2 = vmlal_laneq_s16(c##r##2, vget_low_s16(x1.val[1]), lw, 2 * r + 1); \
  c##r##3 = vmlal_high_laneq_s16(c##r##3, x1.val[0], lw, 2 * r);          \
  c##r##3 = vmlal_high_laneq_s16(c##r##3, x1.val[1], lw, 2 * r + 1);
static void kern16_smlal(const uint8_t *a, const uint8_t *x, int32_t *c, size_t ldc, int n, int first) {
#define N_LD(r, v) (first ? vdupq_n_s32(0) : vld1q_s32(c + (r) * ldc + (v) * 4))
  int32x4_t c00 = N_LD(0, 0), c01 = N_LD(0, 1), c02 = N_LD(0, 2), c03 = N_LD(0, 3);
  int32x4_t c10 = N_LD(1, 0), c11 = N_LD(1, 1), c12 = N_LD(1, 2), c13 = N_LD(1, 3);
  int32x4_t c20 = N_LD(2, 0), c21 = N_LD(2, 1), c22 = N_LD(2, 2), c23 = N_LD(2, 3);
  int32x4_t c30 = N_LD(3, 0), c31 = N_LD(3, 1), c32 = N_LD(3, 2), c33 = N_LD(3, 3);
#undef N_LD
  for (int q = 0; q < n; q++) {
    const int16x8_t w = vld1q_s16((const int16_t *)(const void *)a);
    const int16x8x2_t x0 = vld2q_s16((const int16_t *)(const void *)x);        /* tokens 0-7 */
    const int16x8x2_t x1 = vld2q_s16((const int16_t *)(const void *)(x + 32)); /* tokens 8-15 */
    N_ROW(0, w, x0) N_ROW(1, w, x0) N_ROW(2, w, x0) N_ROW(3, w, x0)
    N_ROW2(0, w) N_ROW2(1, w) N_ROW2(2, w) N_ROW2(3, w)
    a += 16;
    x += 64;
  }
#define N_ST(r, v, val) vst1q_s32(c + (r) * ldc + (v) * 4, val)
  N_ST(0, 0, c00), N_ST(0, 1, c01), N_ST(0, 2, c02), N_ST(0, 3, c03);
  N_ST(1, 0, c10), N_ST(1, 1, c11), N_ST(1, 2, c12), N_ST(1, 3, c13);
  N_ST(2, 0, c20), N_ST(2, 1, c21), N_ST(2, 2, c22), N_ST(2, 3, c23);
  N_ST(3, 0, c30), N_ST(3, 1, c31), N_ST(3, 2, c32), N_ST(3, 3, c33);
#undef N_ST
}
#undef N_ROW
#undef N_ROW2

#if defined(HL_DOTPROD)
/*
 * dotprod: sdot multiplies 4 s8 pairs per s32 lane, so the s16 limbs go in as bytes: x = 256 hi
 * + lo with hi = x >> 8 (signed) and lo the low byte, unsigned; lo ^ 0x80 = lo - 128 is a signed
 * byte, so  sum w x = 256 sum w hi + sum w (lo ^ 0x80) + 128 sum w,  every term exact mod 2^32
 * (the weights are int8: every packed W comes from int8 weights, see hl_pack_i8 and
 * ZqWeights.pack). Per two k-pairs (a quad) each row's 4 weights narrow into one 32-bit lane of a
 * register and each token's 4 lo (hi) bytes into one lane of another: sdot by lane then adds the
 * quad's products for 4 tokens. Half a panel (8 tokens) at a time keeps the lo and hi sums of
 * 4 rows (16 accumulators) in registers; an odd last pair goes through smlal.
 */
static void kern16(const uint8_t *a, const uint8_t *x, size_t xs, int32_t *c, size_t ldc, int n, int first, int np) {
  (void)xs;
  (void)np;
  const int nq = n / 2;
  /* The quads' weights as bytes (row r in lane r), shared by both halves; n <= KC_STEPS pairs. */
  int8x16_t wq[KC_STEPS / 2];
  int32x4_t wsum = vdupq_n_s32(0);
  for (int i = 0; i < nq; i++) {
    const int8x8_t n0 = vmovn_s16(vld1q_s16((const int16_t *)(const void *)(a + 32 * i)));
    const int8x8_t n1 = vmovn_s16(vld1q_s16((const int16_t *)(const void *)(a + 32 * i + 16)));
    const int16x4x2_t z = vzip_s16(vreinterpret_s16_s8(n0), vreinterpret_s16_s8(n1));
    wq[i] = vreinterpretq_s8_s16(vcombine_s16(z.val[0], z.val[1]));
    wsum = vdotq_s32(wsum, wq[i], vdupq_n_s8(1));
  }
  const uint8x16_t flip = vdupq_n_u8(0x80);
  for (int h = 0; nq > 0 && h < 2; h++) {
    int32x4_t l[4][2], hi[4][2];
    for (int r = 0; r < 4; r++) l[r][0] = l[r][1] = hi[r][0] = hi[r][1] = vdupq_n_s32(0);
    const uint8_t *xp = x + 32 * h;
    for (int i = 0; i < nq; i++, xp += 128) {
      /* bytes of 8 tokens' pairs: [0] the low bytes (x0, x1 per token), [1] the high bytes */
      const uint8x16x2_t p0 = vld2q_u8(xp), p1 = vld2q_u8(xp + 64);
      const uint16x8_t l0 = vreinterpretq_u16_u8(p0.val[0]), l1 = vreinterpretq_u16_u8(p1.val[0]);
      const uint16x8_t h0 = vreinterpretq_u16_u8(p0.val[1]), h1 = vreinterpretq_u16_u8(p1.val[1]);
      const int8x16_t lo0 = vreinterpretq_s8_u8(veorq_u8(vreinterpretq_u8_u16(vzip1q_u16(l0, l1)), flip));
      const int8x16_t lo1 = vreinterpretq_s8_u8(veorq_u8(vreinterpretq_u8_u16(vzip2q_u16(l0, l1)), flip));
      const int8x16_t hi0 = vreinterpretq_s8_u16(vzip1q_u16(h0, h1)), hi1 = vreinterpretq_s8_u16(vzip2q_u16(h0, h1));
      const int8x16_t w = wq[i];
#define D_ROW(r)                                        \
  l[r][0] = vdotq_laneq_s32(l[r][0], lo0, w, r);        \
  l[r][1] = vdotq_laneq_s32(l[r][1], lo1, w, r);        \
  hi[r][0] = vdotq_laneq_s32(hi[r][0], hi0, w, r);      \
  hi[r][1] = vdotq_laneq_s32(hi[r][1], hi1, w, r);
      D_ROW(0) D_ROW(1) D_ROW(2) D_ROW(3)
#undef D_ROW
    }
#define D_OUT(r)                                                                                            \
  for (int v = 0; v < 2; v++) {                                                                              \
    int32_t *cp = c + (r) * ldc + 8 * h + 4 * v;                                                             \
    int32x4_t s = vaddq_s32(vaddq_s32(vshlq_n_s32(hi[r][v], 8), l[r][v]), vdupq_n_s32(128 * vgetq_lane_s32(wsum, r))); \
    vst1q_s32(cp, first ? s : vaddq_s32(s, vld1q_s32(cp)));                                                  \
  }
    D_OUT(0) D_OUT(1) D_OUT(2) D_OUT(3)
#undef D_OUT
  }
  if (n & 1) kern16_smlal(a + 32 * nq, x + 128 * nq, c, ldc, 1, first && nq == 0);
}
#else
static void kern16(const uint8_t *a, const uint8_t *x, size_t xs, int32_t *c, size_t ldc, int n, int first, int np) {
  (void)xs;
  (void)np;
  kern16_smlal(a, x, c, ldc, n, first);
}
#endif
#elif defined(HL_VEC)
#define VPP (64 / VB) /* vectors per 16-token panel */

/* u8: the steps are four X bytes (unsigned) times four weight bytes (signed), vpdpbusd; else i16 pairs. */
static inline __attribute__((always_inline)) void kern16_np(const uint8_t *a, const uint8_t *x, size_t xs, int32_t *c,
                                                            size_t ldc, int n, int first, const int np, const int u8) {
  vi acc[4][ZQ_TILE_P * VPP];
  const int nv = np * VPP;
#pragma GCC unroll 4
  for (int r = 0; r < 4; r++) {
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) acc[r][v] = first ? VI_ZERO() : VI_LOAD(c + r * ldc + v * (VB / 4));
  }
  for (int q = 0; q < n; q++) {
    vi xv[ZQ_TILE_P * VPP];
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) xv[v] = VI_LOAD(x + (size_t)(v / VPP) * xs + (size_t)(v % VPP) * VB);
#pragma GCC unroll 4
    for (int r = 0; r < 4; r++) {
      const vi w = VI_BCAST32(a + 4 * r);
#pragma GCC unroll 4
      for (int v = 0; v < nv; v++) acc[r][v] = u8 ? VI_MADD_U8(acc[r][v], w, xv[v]) : VI_MADD(acc[r][v], w, xv[v]);
    }
    a += 16;
    x += 64;
  }
#pragma GCC unroll 4
  for (int r = 0; r < 4; r++) {
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) VI_STORE(c + r * ldc + v * (VB / 4), acc[r][v]);
  }
}

/*
 * The full 4-row x 4-panel tile in asm: GCC 12 copies every accumulator of the intrinsics version
 * twice per iteration (and spills one). Two statements of two rows each (an asm takes at most
 * 30 operands); each loads the four X vectors (L1 hits) into zmm28-31, zmm27 holds the broadcast
 * weights and zmm26 the product; the 16 accumulators live in the registers GCC picks.
 */
#if defined(__AVX512VNNI__)
#define Z_MADD(xr, c) "vpdpwssd %%zmm" #xr ", %%zmm27, %[" #c "]\n\t"
/* vpdpbusd: the X bytes (zmm28-31) are the unsigned operand, the broadcast weights the signed one. */
#define Z_MADD_U8(xr, c) "vpdpbusd %%zmm27, %%zmm" #xr ", %[" #c "]\n\t"
#else
#define Z_MADD(xr, c) "vpmaddwd %%zmm" #xr ", %%zmm27, %%zmm26\n\tvpaddd %%zmm26, %[" #c "], %[" #c "]\n\t"
#endif
#define Z_ROW(M, off, c0, c1, c2, c3) \
  "vpbroadcastd " #off "(%[a]), %%zmm27\n\t" M(28, c0) M(29, c1) M(30, c2) M(31, c3)
#define Z_TWO_ROWS(M, off0, off1, c0, c1)                                                                       \
  __asm__("vmovdqu64 (%[x]), %%zmm28\n\t"                                                                      \
          "vmovdqu64 (%[x],%[xs]), %%zmm29\n\t"                                                                \
          "vmovdqu64 (%[x],%[xs],2), %%zmm30\n\t"                                                              \
          "vmovdqu64 (%[x],%[xs3]), %%zmm31\n\t"                                                               \
          Z_ROW(M, off0, a0, a1, a2, a3) Z_ROW(M, off1, b0, b1, b2, b3)                                        \
          : [a0] "+v"(c0##0), [a1] "+v"(c0##1), [a2] "+v"(c0##2), [a3] "+v"(c0##3), [b0] "+v"(c1##0),          \
            [b1] "+v"(c1##1), [b2] "+v"(c1##2), [b3] "+v"(c1##3)                                                \
          : [a] "r"(a), [x] "r"(x), [xs] "r"(xs), [xs3] "r"(xs3)                                              \
          : "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "memory")
/* One body for both step kinds (an i16 pair or four bytes per 32-bit lane: 16 bytes of W and 64 of
 * each X panel per step either way); M is the multiply-accumulate. */
#define Z_KERN4(name, M)                                                                                       \
  static void name(const uint8_t *a, const uint8_t *x, size_t xs, int32_t *c, size_t ldc, int n, int first) {    \
    vi r00 = Z_LD(0, 0), r01 = Z_LD(0, 1), r02 = Z_LD(0, 2), r03 = Z_LD(0, 3), r10 = Z_LD(1, 0), r11 = Z_LD(1, 1); \
    vi r12 = Z_LD(1, 2), r13 = Z_LD(1, 3), r20 = Z_LD(2, 0), r21 = Z_LD(2, 1), r22 = Z_LD(2, 2), r23 = Z_LD(2, 3); \
    vi r30 = Z_LD(3, 0), r31 = Z_LD(3, 1), r32 = Z_LD(3, 2), r33 = Z_LD(3, 3);                                 \
    const size_t xs3 = 3 * xs;                                                                                 \
    for (int q = 0; q < n; q++) {                                                                              \
      Z_TWO_ROWS(M, 0, 4, r0, r1);                                                                             \
      Z_TWO_ROWS(M, 8, 12, r2, r3);                                                                            \
      a += 16;                                                                                                 \
      x += 64;                                                                                                 \
    }                                                                                                          \
    Z_ST(0, 0, r00), Z_ST(0, 1, r01), Z_ST(0, 2, r02), Z_ST(0, 3, r03), Z_ST(1, 0, r10), Z_ST(1, 1, r11);        \
    Z_ST(1, 2, r12), Z_ST(1, 3, r13), Z_ST(2, 0, r20), Z_ST(2, 1, r21), Z_ST(2, 2, r22), Z_ST(2, 3, r23);        \
    Z_ST(3, 0, r30), Z_ST(3, 1, r31), Z_ST(3, 2, r32), Z_ST(3, 3, r33);                                        \
  }
#define Z_LD(r, v) (first ? VI_ZERO() : VI_LOAD(c + (r) * ldc + (v) * 16))
#define Z_ST(r, v, val) VI_STORE(c + (r) * ldc + (v) * 16, val)
Z_KERN4(kern16_4, Z_MADD)
#if defined(__AVX512VNNI__)
Z_KERN4(kern8_4, Z_MADD_U8)
#undef Z_MADD_U8
#endif
#undef Z_LD
#undef Z_ST
#undef Z_KERN4
#undef Z_TWO_ROWS
#undef Z_ROW
#undef Z_MADD

static void kern16(const uint8_t *a, const uint8_t *x, size_t xs, int32_t *c, size_t ldc, int n, int first, int np) {
#if ZQ_TILE_P == 4
  switch (np) {
    case 4: kern16_4(a, x, xs, c, ldc, n, first); return;
    case 3: kern16_np(a, x, xs, c, ldc, n, first, 3, 0); return;
    case 2: kern16_np(a, x, xs, c, ldc, n, first, 2, 0); return;
    default: kern16_np(a, x, xs, c, ldc, n, first, 1, 0); return;
  }
#else
  (void)np;
  kern16_np(a, x, xs, c, ldc, n, first, 1, 0);
#endif
}
#else
/* Portable: the same 4 x 16 tile; unsigned sums wrap mod 2^32 like the vector instructions. */
static void kern16(const uint8_t *a, const uint8_t *x, size_t xs, int32_t *c, size_t ldc, int n, int first, int np) {
  (void)xs;
  (void)np;
  uint32_t acc[4][ZQ_PW];
  for (int r = 0; r < 4; r++)
    for (int j = 0; j < ZQ_PW; j++) acc[r][j] = first ? 0u : (uint32_t)c[r * ldc + j];
  for (int q = 0; q < n; q++) {
    int16_t w[8], xv[2 * ZQ_PW];
    memcpy(w, a, sizeof w);
    memcpy(xv, x, sizeof xv);
    for (int r = 0; r < 4; r++)
      for (int j = 0; j < ZQ_PW; j++) acc[r][j] += (uint32_t)(w[2 * r] * xv[2 * j] + w[2 * r + 1] * xv[2 * j + 1]);
    a += 16;
    x += 64;
  }
  for (int r = 0; r < 4; r++)
    for (int j = 0; j < ZQ_PW; j++) c[r * ldc + j] = (int32_t)acc[r][j];
}
#endif

/* A micro-kernel: a 4-row x np-panel tile of C (=/+=) W · X over n steps (see kern16). */
typedef void (*tile_kern)(const uint8_t *a, const uint8_t *x, size_t xs, int32_t *c, size_t ldc, int n, int first, int np);

/*
 * C[4*Mb][16*NP] = W · X over `steps` steps for either step kind (an i16 pair, or four bytes on the
 * VNNI level's byte path: 16 bytes of W and 64 of each X panel per step either way) with that kind's
 * micro-kernel. W: row blocks of wBlock bytes (the slice of the weights starting at this K range).
 * Inlined at each call so that the kernel is a direct call there (through the pointer: ~5% slower).
 */
static inline __attribute__((always_inline)) void gemm_steps(tile_kern kern, const uint8_t *W, size_t wBlock, const uint8_t *X, int steps, int32_t *C, int Mb,
                       int NP, size_t ldc) {
  const size_t xs = (size_t)steps * 64;
  for (int q0 = 0; q0 < steps; q0 += KC_STEPS) {
    const int n = MIN(KC_STEPS, steps - q0);
    for (int rb0 = 0; rb0 < Mb; rb0 += MCB) {
      const int rb1 = MIN(Mb, rb0 + MCB);
      for (int p = 0; p < NP; p += ZQ_TILE_P) {
        const int np = MIN(ZQ_TILE_P, NP - p);
        const uint8_t *x = X + (size_t)p * xs + (size_t)q0 * 64;
        for (int rb = rb0; rb < rb1; rb++) {
          const int32_t *ct = C + (size_t)rb * 4 * ldc + (size_t)p * ZQ_PW;
          for (int r = 0; r < 4; r++)
            for (int v = 0; v < np; v++) __builtin_prefetch(ct + r * ldc + v * ZQ_PW, 1);
          kern(W + (size_t)rb * wBlock + (size_t)q0 * 16, x, xs, C + (size_t)rb * 4 * ldc + (size_t)p * ZQ_PW, ldc, n,
               q0 == 0, np);
        }
      }
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Z_2^44 product (the arithmetic is documented in src/kernels/zq-matmul.ts)                  */

/* Tokens per block: 6 limbs x 64 tokens = 24 panels of X (each 64 bytes per k-pair). */
#define ZQ_TB 64
/* Largest K range whose lowest a limb sums exactly in int32: 127 * 2048 * 8192 < 2^31. */
#define ZQ_KCHUNK 8192
#define MASK44 ((int64_t)1 << 44) - 1

/* The three limbs of a (44 bits of a 48-bit LE word): balanced 12-bit, then two int16. */
static inline void limbs_a(const uint8_t *p, int32_t *l) {
  uint32_t lo;
  memcpy(&lo, p, 4);
  const uint32_t hi = (uint32_t)(p[4] | ((p[5] & 0x0f) << 8));
  l[0] = (int32_t)(lo << 20) >> 20;
  /* floor((a + 2^11) / 2^12) mod 2^32 */
  const uint32_t r = (((lo >> 11) + 1) >> 1) + (hi << 20);
  l[1] = (int16_t)r;
  l[2] = (int32_t)(r + 0x8000u) >> 16;
}

/* The three limbs of b << 4 (b a 40-bit LE word): balanced 8-bit (weight 2^4), then two int16. */
static inline void limbs_b(const uint8_t *p, int32_t *l) {
  uint32_t lo;
  memcpy(&lo, p, 4);
  const uint32_t hi = p[4];
  l[0] = (int8_t)lo;
  const uint32_t s = (((lo >> 7) + 1) >> 1) + (hi << 24);
  l[1] = (int16_t)s;
  l[2] = (int32_t)(s + 0x8000u) >> 16;
}

static inline uint32_t pair16(int32_t lo, int32_t hi) {
  return (uint32_t)(uint16_t)lo | ((uint32_t)(uint16_t)hi << 16);
}

/*
 * Limb panels of rows [k0, k1) and tokens [t0, t0+tb) into X (pairs K2c = ceil((k1-k0)/2)):
 * column L*tbp + t holds limb L of token t; the a limbs come first when a is given.
 * Columns tb..tbp-1 of each limb are zero (X was cleared).
 */
#if defined(__AVX2__)
/*
 * Eight tokens at once (AVX2; the AVX-512 levels include it). Each 128-bit half takes four
 * tokens from two overlapping 16-byte loads (a: 24 bytes, b: 20 bytes per four tokens, all
 * inside the eight tokens' words); byte shuffles gather each word's low 32 bits and the bits
 * above, then the scalar formulas of limbs_a / limbs_b run on eight lanes.
 */
static inline __m256i load_halves(const uint8_t *lo, const uint8_t *hi) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)lo)),
                                 _mm_loadu_si128((const __m128i *)hi), 1);
}
#define SHUF16(...) _mm256_setr_epi8(__VA_ARGS__, __VA_ARGS__)

/* The a words of eight tokens: bits 0-31 in lo, bits 32-43 in hi (one token per 32-bit lane). */
static inline void words_a8(const uint8_t *p, __m256i *lo, __m256i *hi) {
  const __m256i v0 = load_halves(p, p + 24), v1 = load_halves(p + 8, p + 32);
  *lo = _mm256_or_si256(
      _mm256_shuffle_epi8(v0, SHUF16(0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, -1, -1, -1, -1)),
      _mm256_shuffle_epi8(v1, SHUF16(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 10, 11, 12, 13)));
  *hi = _mm256_and_si256(
      _mm256_or_si256(_mm256_shuffle_epi8(v0, SHUF16(4, 5, -1, -1, 10, 11, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1)),
                      _mm256_shuffle_epi8(v1, SHUF16(-1, -1, -1, -1, -1, -1, -1, -1, 8, 9, -1, -1, 14, 15, -1, -1))),
      _mm256_set1_epi32(0x0fff));
}

/* The b words of eight tokens: bits 0-31 in lo, bits 32-39 in hi. */
static inline void words_b8(const uint8_t *p, __m256i *lo, __m256i *hi) {
  const __m256i v0 = load_halves(p, p + 20), v1 = load_halves(p + 4, p + 24);
  *lo = _mm256_or_si256(
      _mm256_shuffle_epi8(v0, SHUF16(0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, -1, -1, -1, -1)),
      _mm256_shuffle_epi8(v1, SHUF16(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 11, 12, 13, 14)));
  *hi = _mm256_or_si256(
      _mm256_shuffle_epi8(v0, SHUF16(4, -1, -1, -1, 9, -1, -1, -1, 14, -1, -1, -1, -1, -1, -1, -1)),
      _mm256_shuffle_epi8(v1, SHUF16(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 15, -1, -1, -1)));
}
#undef SHUF16

static inline void limbs_a8(const uint8_t *p, __m256i *l) {
  __m256i lo, hi;
  words_a8(p, &lo, &hi);
  const __m256i one = _mm256_set1_epi32(1);
  l[0] = _mm256_srai_epi32(_mm256_slli_epi32(lo, 20), 20);
  const __m256i r = _mm256_add_epi32(_mm256_srli_epi32(_mm256_add_epi32(_mm256_srli_epi32(lo, 11), one), 1), _mm256_slli_epi32(hi, 20));
  l[1] = _mm256_srai_epi32(_mm256_slli_epi32(r, 16), 16);
  l[2] = _mm256_srai_epi32(_mm256_add_epi32(r, _mm256_set1_epi32(0x8000)), 16);
}

static inline void limbs_b8(const uint8_t *p, __m256i *l) {
  __m256i lo, hi;
  words_b8(p, &lo, &hi);
  const __m256i one = _mm256_set1_epi32(1);
  l[0] = _mm256_srai_epi32(_mm256_slli_epi32(lo, 24), 24);
  const __m256i s = _mm256_add_epi32(_mm256_srli_epi32(_mm256_add_epi32(_mm256_srli_epi32(lo, 7), one), 1), _mm256_slli_epi32(hi, 24));
  l[1] = _mm256_srai_epi32(_mm256_slli_epi32(s, 16), 16);
  l[2] = _mm256_srai_epi32(_mm256_add_epi32(s, _mm256_set1_epi32(0x8000)), 16);
}

/* One limb of eight tokens as i16 pairs (row k low, row k+1 high): 32 bytes of one panel row. */
static inline void store_pair8(uint8_t *X, size_t xs, int q, int col, __m256i u, __m256i v) {
  const __m256i pr = _mm256_blend_epi16(u, _mm256_slli_epi32(v, 16), 0xAA);
  _mm256_storeu_si256((__m256i *)(X + (size_t)(col / ZQ_PW) * xs + (size_t)q * 64 + (size_t)(col % ZQ_PW) * 4), pr);
}
#endif

#if !defined(__AVX512VNNI__) /* the int16 limb plan (the VNNI level uses byte limbs, below) */
static void zq_decompose(const uint8_t *a, const uint8_t *b, int N, int t0, int tb, int tbp, int k0, int k1, uint8_t *X) {
  const int K2c = (k1 - k0 + 1) / 2;
  const size_t xs = (size_t)K2c * 64;
  const int bBase = a ? 3 * tbp : 0;
  for (int q = 0; q < K2c; q++) {
    const int k = k0 + 2 * q;
    const int has1 = k + 1 < k1;
    /* The rows of a later pair: each is a short run (tb words) a row of N words away from the
     * last, which the hardware prefetchers do not follow. */
    if (k + 5 < k1) {
      for (int r = 4; r < 6; r++) {
        const size_t e = (size_t)(k + r) * N + t0;
        if (a) for (int off = 0; off < tb * 6; off += 64) __builtin_prefetch(a + e * 6 + off);
        if (b) for (int off = 0; off < tb * 5; off += 64) __builtin_prefetch(b + e * 5 + off);
      }
    }
    int t = 0;
#if defined(__AVX2__)
    /* tb is a multiple of 8 (N is), and 8 columns from a multiple of 8 stay in one panel. */
    for (; t + 8 <= tb; t += 8) {
      const size_t e = (size_t)k * N + t0 + t;
      __m256i u[3], v[3] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
      if (a) {
        limbs_a8(a + e * 6, u);
        if (has1) limbs_a8(a + (e + N) * 6, v);
        for (int L = 0; L < 3; L++) store_pair8(X, xs, q, L * tbp + t, u[L], v[L]);
      }
      if (b) {
        limbs_b8(b + e * 5, u);
        if (has1) limbs_b8(b + (e + N) * 5, v);
        else v[0] = v[1] = v[2] = _mm256_setzero_si256();
        for (int L = 0; L < 3; L++) store_pair8(X, xs, q, bBase + L * tbp + t, u[L], v[L]);
      }
    }
#endif
    for (; t < tb; t++) {
      int32_t u[3] = {0, 0, 0}, v[3] = {0, 0, 0};
      if (a) {
        const size_t e = (size_t)k * N + t0 + t;
        limbs_a(a + e * 6, u);
        if (has1) limbs_a(a + (e + N) * 6, v);
        for (int L = 0; L < 3; L++) {
          const int col = L * tbp + t;
          const uint32_t pr = pair16(u[L], v[L]);
          memcpy(X + (size_t)(col / ZQ_PW) * xs + (size_t)q * 64 + (size_t)(col % ZQ_PW) * 4, &pr, 4);
        }
      }
      if (b) {
        const size_t e = (size_t)k * N + t0 + t;
        limbs_b(b + e * 5, u);
        if (has1) limbs_b(b + (e + N) * 5, v);
        else v[0] = v[1] = v[2] = 0;
        for (int L = 0; L < 3; L++) {
          const int col = bBase + L * tbp + t;
          const uint32_t pr = pair16(u[L], v[L]);
          memcpy(X + (size_t)(col / ZQ_PW) * xs + (size_t)q * 64 + (size_t)(col % ZQ_PW) * 4, &pr, 4);
        }
      }
    }
  }
}

/*
 * Limb sums of one token block -> sums mod 2^44 (acc, across K chunks) or rounded outputs:
 * s = L0*2^s0 + L1*2^12 + L2*2^28 is the product mod 2^44 (limb 1 is exact mod 2^32, limb 2
 * mod 2^16, which is all they contribute), out = floor((s + 2^11) / 2^12) mod 2^32.
 */
static void zq_recombine(const int32_t *C, size_t ldc, int rows, int tb, int tbp, int64_t *acc, int tbAcc, int addAcc,
                         int final, uint32_t *aOut, uint32_t *bOut, int N, int t0) {
  const int parts = (aOut ? 1 : 0) + (bOut ? 1 : 0);
  for (int o = 0; o < rows; o++) {
    const int32_t *c = C + (size_t)o * ldc;
    for (int part = 0; part < parts; part++) {
      const int isB = bOut && (part == 1 || !aOut);
      const int64_t w0 = isB ? 16 : 1;
      const int32_t *l = c + (size_t)part * 3 * tbp;
      int64_t *ac = acc ? acc + ((size_t)o * parts + part) * tbAcc : NULL;
      uint32_t *out = (isB ? bOut : aOut) + (size_t)o * N + t0;
      /* Each row's strip is a different page: ask for the lines of a later row now. */
      if (final && o + 8 < rows)
        for (int t = 0; t < tb; t += 16) __builtin_prefetch(out + 8 * (size_t)N + t, 1);
      if (final && !addAcc) {
        /* One K chunk: the multiples of 2^12 pass through the rounding, so in wrapping 32 bits
         * out = L1 + (L2 << 16) + ((L0 * 2^s0 + 2^11) >> 12), the last term exact in int32
         * (|L0| <= 127 * 2048 * 8192); a loop the compiler vectorizes. */
        const int sh = isB ? 8 : 12;
        const int32_t half = isB ? 128 : 2048;
        for (int t = 0; t < tb; t++)
          out[t] = (uint32_t)l[tbp + t] + ((uint32_t)l[2 * tbp + t] << 16) + (uint32_t)((l[t] + half) >> sh);
        continue;
      }
      for (int t = 0; t < tb; t++) {
        int64_t s = (int64_t)l[t] * w0 + (int64_t)l[tbp + t] * 4096 + (int64_t)l[2 * tbp + t] * ((int64_t)1 << 28);
        if (addAcc) s += ac[t];
        if (final) out[t] = (uint32_t)((s + 2048) >> 12);
        else ac[t] = s & (MASK44);
      }
    }
  }
}
#endif

#if defined(__AVX512VNNI__)
/* ------------------------------------------------------------------------------------------ */
/* Byte limbs on vpdpbusd (avx512vnni)                                                         */
/*
 * vpdpbusd multiplies four unsigned bytes by four signed bytes per 32-bit lane: twice the
 * multiply-accumulates of vpdpwssd per instruction. The Z_2^44 operands split into bytes without
 * any arithmetic (a: 6 bytes, the sixth masked to 4 bits; b: 5 bytes, weight 2^(8j+4)), and each
 * byte limb's sum is exact in int32 (255 * 127 * 8192 < 2^31), so the product costs 11 byte-limb
 * GEMMs (5.5 vpdpwssd-equivalents) instead of 6 int16 ones; b alone (table mode) 5 instead of 3
 * (2.5). The int8 GEMM feeds x + 128 (x ^ 0x80, unsigned) and subtracts 128 * sum(w) per row.
 * The results are the other levels' bit for bit (everything is exact mod 2^32 / 2^44).
 *
 * W arrives in the shared pair layout; each call first narrows all of it into quads (16 bytes per
 * step: rows 4r..4r+3, each w[4Q..4Q+3] as s8; half the bytes, so every later sweep of W streams
 * half as much). X "16-token byte panels": for panel p and quad Q, 64 bytes = 16 tokens, each
 * 4 bytes (k = 4Q..4Q+3).
 */
/* W in pair blocks (K2 pairs per block, Mb blocks) -> quad blocks of K4 = ceil(K2/2) quads (a missing
 * last pair is zero); rowsum (if given) = each row's sum of weights. NULL when memory ran out. */
static uint8_t *narrow_w(const uint8_t *W, int Mb, int K2, int32_t *rowsum) {
  const int K4 = (K2 + 1) / 2;
  uint8_t *dst = scratch((size_t)Mb * K4 * 16);
  if (!dst) return NULL;
  const __m128i ones = _mm_set1_epi8(1);
  for (int rb = 0; rb < Mb; rb++) {
    const uint8_t *w = W + (size_t)rb * K2 * 16;
    uint8_t *d = dst + (size_t)rb * K4 * 16;
    __m128i rs = _mm_setzero_si128();
    for (int Q = 0; Q < K4; Q++) {
      const int q = 2 * Q;
      const __m128i v0 = _mm_loadu_si128((const __m128i *)(w + (size_t)q * 16));
      const __m128i v1 = q + 1 < K2 ? _mm_loadu_si128((const __m128i *)(w + (size_t)(q + 1) * 16)) : _mm_setzero_si128();
      /* [r0k0 r0k1 r1k0 r1k1 ... | r0k2 r0k3 r1k2 r1k3 ...] (|w| <= 127: no saturation) -> rows' quads */
      const __m128i b = _mm_packs_epi16(v0, v1);
      const __m128i quad = _mm_unpacklo_epi16(b, _mm_srli_si128(b, 8));
      _mm_storeu_si128((__m128i *)(d + (size_t)Q * 16), quad);
      if (rowsum) rs = _mm_dpbusd_epi32(rs, ones, quad);
    }
    if (rowsum) _mm_storeu_si128((__m128i *)(rowsum + rb * 4), rs);
  }
  return dst;
}

static void kern8(const uint8_t *a, const uint8_t *x, size_t xs, int32_t *c, size_t ldc, int n, int first, int np) {
  switch (np) {
    case 4: kern8_4(a, x, xs, c, ldc, n, first); return;
    case 3: kern16_np(a, x, xs, c, ldc, n, first, 3, 1); return;
    case 2: kern16_np(a, x, xs, c, ldc, n, first, 2, 1); return;
    default: kern16_np(a, x, xs, c, ldc, n, first, 1, 1); return;
  }
}

/* Rows r0..r3 (8 tokens, 4 bytes each per 32-bit lane) -> L[j]: byte j of the 4 rows per token. */
static inline void transpose_bytes8(__m256i r0, __m256i r1, __m256i r2, __m256i r3, __m256i *L) {
  const __m256i u01l = _mm256_unpacklo_epi8(r0, r1), u01h = _mm256_unpackhi_epi8(r0, r1);
  const __m256i u23l = _mm256_unpacklo_epi8(r2, r3), u23h = _mm256_unpackhi_epi8(r2, r3);
  /* per 128-bit half: v_t = token t's bytes 0..3, each the 4 rows' */
  const __m256i v0 = _mm256_unpacklo_epi16(u01l, u23l), v1 = _mm256_unpackhi_epi16(u01l, u23l);
  const __m256i v2 = _mm256_unpacklo_epi16(u01h, u23h), v3 = _mm256_unpackhi_epi16(u01h, u23h);
  const __m256i w0 = _mm256_unpacklo_epi32(v0, v1), w1 = _mm256_unpackhi_epi32(v0, v1);
  const __m256i w2 = _mm256_unpacklo_epi32(v2, v3), w3 = _mm256_unpackhi_epi32(v2, v3);
  L[0] = _mm256_unpacklo_epi64(w0, w2);
  L[1] = _mm256_unpackhi_epi64(w0, w2);
  L[2] = _mm256_unpacklo_epi64(w1, w3);
  L[3] = _mm256_unpackhi_epi64(w1, w3);
}

/* 32 bytes (8 tokens of one quad) into byte panel column col (a multiple of 8). */
static inline void store_quad8(uint8_t *X, size_t xs, int Q, int col, __m256i v) {
  _mm256_storeu_si256((__m256i *)(X + (size_t)(col / ZQ_PW) * xs + (size_t)Q * 64 + (size_t)(col % ZQ_PW) * 4), v);
}

/* Byte j of the 44-bit a word at p (its 48-bit word masked to 44 bits). */
static inline uint8_t byte_a(const uint8_t *p, int j) { return j == 5 ? p[5] & 0x0f : p[j]; }

/*
 * Byte-limb panels of rows [k0, k1) and tokens [t0, t0+tb): column j*tbp + t holds byte j of a
 * (j < 6) and bBase + j*tbp + t byte j of b (j < 5); rows past k1 in the last quad are zero.
 */
static void zq_decompose_u8(const uint8_t *a, const uint8_t *b, int N, int t0, int tb, int tbp, int k0, int k1,
                            uint8_t *X) {
  const int K4c = (k1 - k0 + 3) / 4;
  const size_t xs = (size_t)K4c * 64;
  const int bBase = a ? 6 * tbp : 0;
  for (int Q = 0; Q < K4c; Q++) {
    const int k = k0 + 4 * Q;
    const int rows = MIN(4, k1 - k);
    int t = 0;
    for (; t + 8 <= tb; t += 8) {
      __m256i lo[4], hi[4], L[4];
      for (int part = 0; part < 2; part++) {
        const uint8_t *src = part ? b : a;
        if (!src) continue;
        const int wb = part ? 5 : 6, base = part ? bBase : 0;
        for (int r = 0; r < 4; r++) {
          if (r < rows) {
            const uint8_t *p = src + ((size_t)(k + r) * N + t0 + t) * wb;
            if (part) words_b8(p, &lo[r], &hi[r]);
            else words_a8(p, &lo[r], &hi[r]);
          } else {
            lo[r] = hi[r] = _mm256_setzero_si256();
          }
        }
        transpose_bytes8(lo[0], lo[1], lo[2], lo[3], L);
        for (int j = 0; j < 4; j++) store_quad8(X, xs, Q, base + j * tbp + t, L[j]);
        transpose_bytes8(hi[0], hi[1], hi[2], hi[3], L);
        for (int j = 4; j < wb; j++) store_quad8(X, xs, Q, base + j * tbp + t, L[j - 4]);
      }
    }
    for (; t < tb; t++) {
      for (int part = 0; part < 2; part++) {
        const uint8_t *src = part ? b : a;
        if (!src) continue;
        const int wb = part ? 5 : 6, base = part ? bBase : 0;
        for (int j = 0; j < wb; j++) {
          const int col = base + j * tbp + t;
          uint8_t *d = X + (size_t)(col / ZQ_PW) * xs + (size_t)Q * 64 + (size_t)(col % ZQ_PW) * 4;
          for (int r = 0; r < 4; r++) {
            if (r >= rows) {
              d[r] = 0;
              continue;
            }
            const uint8_t *p = src + ((size_t)(k + r) * N + t0 + t) * wb;
            d[r] = part ? p[j] : byte_a(p, j);
          }
        }
      }
    }
  }
}

/* Byte-limb sums of one token block -> sums mod 2^44 (acc) or rounded outputs (as zq_recombine). */
static void zq_recombine_u8(const int32_t *C, size_t ldc, int rows, int tb, int tbp, int64_t *acc, int tbAcc, int addAcc,
                            int final, uint32_t *aOut, uint32_t *bOut, int N, int t0) {
  const int parts = (aOut ? 1 : 0) + (bOut ? 1 : 0);
  for (int o = 0; o < rows; o++) {
    for (int part = 0; part < parts; part++) {
      const int isB = bOut && (part == 1 || !aOut);
      const int nb = isB ? 5 : 6, sh0 = isB ? 4 : 0;
      const int32_t *l = C + (size_t)o * ldc + (size_t)(part ? 6 * tbp : 0);
      int64_t *ac = acc ? acc + ((size_t)o * parts + part) * tbAcc : NULL;
      uint32_t *out = (isB ? bOut : aOut) + (size_t)o * N + t0;
      /* Each row's strip is a different page: ask for the lines of a later row now. */
      if (final && o + 8 < rows)
        for (int t = 0; t < tb; t += 16) __builtin_prefetch(out + 8 * (size_t)N + t, 1);
      /* Wrapping mod 2^64 keeps the low 44 bits exact; limb by limb over the tokens (vectorizes). */
      uint64_t sum[ZQ_TB];
      for (int t = 0; t < tb; t++) sum[t] = ((uint64_t)(int64_t)l[t] << sh0) + (addAcc ? (uint64_t)ac[t] : 0);
      for (int j = 1; j < nb; j++) {
        const int32_t *lj = l + (size_t)j * tbp;
        const int sh = 8 * j + sh0;
        for (int t = 0; t < tb; t++) sum[t] += (uint64_t)(int64_t)lj[t] << sh;
      }
      if (final)
        for (int t = 0; t < tb; t++) out[t] = (uint32_t)((sum[t] + 2048) >> 12);
      else
        for (int t = 0; t < tb; t++) ac[t] = (int64_t)(sum[t] & (MASK44));
    }
  }
}

/* x[K][N] (s8) -> byte panels of x ^ 0x80 (k past K: 0). */
static void pack_x_u8(const int8_t *x, int K, int N, uint8_t *X, size_t xs) {
  const __m128i flip = _mm_set1_epi8((char)0x80);
  for (int Q = 0; Q < (K + 3) / 4; Q++) {
    const int rows = MIN(4, K - 4 * Q);
    const int8_t *r[4];
    for (int i = 0; i < 4; i++) r[i] = i < rows ? x + (size_t)(4 * Q + i) * N : NULL;
    int j = 0;
    for (; j + 16 <= N; j += 16) {
      __m128i v[4];
      for (int i = 0; i < 4; i++) v[i] = r[i] ? _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r[i] + j)), flip) : _mm_setzero_si128();
      const __m128i u01l = _mm_unpacklo_epi8(v[0], v[1]), u01h = _mm_unpackhi_epi8(v[0], v[1]);
      const __m128i u23l = _mm_unpacklo_epi8(v[2], v[3]), u23h = _mm_unpackhi_epi8(v[2], v[3]);
      uint8_t *d = X + (size_t)(j / ZQ_PW) * xs + (size_t)Q * 64;
      _mm_storeu_si128((__m128i *)d, _mm_unpacklo_epi16(u01l, u23l));
      _mm_storeu_si128((__m128i *)(d + 16), _mm_unpackhi_epi16(u01l, u23l));
      _mm_storeu_si128((__m128i *)(d + 32), _mm_unpacklo_epi16(u01h, u23h));
      _mm_storeu_si128((__m128i *)(d + 48), _mm_unpackhi_epi16(u01h, u23h));
    }
    for (; j < N; j++) {
      uint8_t *d = X + (size_t)(j / ZQ_PW) * xs + (size_t)Q * 64 + (size_t)(j % ZQ_PW) * 4;
      for (int i = 0; i < 4; i++) d[i] = r[i] ? (uint8_t)r[i][j] ^ 0x80 : 0;
    }
  }
}

static int gemm_i8_u8(const uint8_t *wp, int M, int K, const int8_t *x, int N, int32_t *out) {
  const int K2 = (K + 1) / 2, K4 = (K + 3) / 4;
  const int Mb = (M + 3) / 4;
  const int NP = (N + ZQ_PW - 1) / ZQ_PW;
  const size_t ldc = (size_t)NP * ZQ_PW;
  const size_t xs = (size_t)K4 * 64;
  /* Whole panels and whole row blocks: the tiles go straight into out. */
  const int direct = (size_t)N == ldc && M % 4 == 0;
  uint8_t *X = scratch(xs * NP);
  int32_t *C = direct ? out : scratch((size_t)Mb * 4 * ldc * 4);
  int32_t *rowsum = malloc((size_t)Mb * 4 * sizeof(int32_t));
  uint8_t *wq = rowsum ? narrow_w(wp, Mb, K2, rowsum) : NULL;
  if (!X || !C || !wq || !rowsum) {
    free(X), free(wq), free(rowsum);
    if (!direct) free(C);
    return -1;
  }
  if ((size_t)N != ldc) memset(X, 0, xs * NP);
  pack_x_u8(x, K, N, X, xs);
  gemm_steps(kern8, wq, (size_t)K4 * 16, X, K4, C, Mb, NP, ldc);
  for (int i = 0; i < M; i++) {
    const uint32_t corr = (uint32_t)rowsum[i] << 7;
    const int32_t *c = C + (size_t)i * ldc;
    int32_t *o = out + (size_t)i * N;
    for (int j = 0; j < N; j++) o[j] = (int32_t)((uint32_t)c[j] - corr);
  }
  free(X), free(wq), free(rowsum);
  if (!direct) free(C);
  return 0;
}
#endif

/*
 * One driver for both limb plans: tokens in blocks of ZQ_TB, K in chunks of ZQ_KCHUNK; per block and
 * chunk the limb panels, their GEMM against W, and the recombination (kept mod 2^44 across chunks).
 * The VNNI level runs byte limbs (4 k per step, W narrowed to quads once), the others int16 limbs
 * (2 k per step, W as packed).
 */
int FN(hl_zq)(const uint8_t *wp, int rows, int cols, const uint8_t *a, const uint8_t *b, int N, uint32_t *aOut,
              uint32_t *bOut) {
  const int parts = (a ? 1 : 0) + (b ? 1 : 0);
  const int K2 = (cols + 1) / 2;
  const int Mb = (rows + 3) / 4;
#if defined(__AVX512VNNI__)
  const int kStep = 4, nl = (a ? 6 : 0) + (b ? 5 : 0);
  uint8_t *wq = narrow_w(wp, Mb, K2, NULL);
  const uint8_t *W = wq;
  const size_t wBlock = (size_t)(K2 + 1) / 2 * 16;
  if (!wq) return -1;
#else
  const int kStep = 2, nl = 3 * parts;
  uint8_t *wq = NULL;
  const uint8_t *W = wp;
  const size_t wBlock = (size_t)K2 * 16;
#endif
  const int chunks = (cols + ZQ_KCHUNK - 1) / ZQ_KCHUNK;
  const int stepsMax = MIN((cols + kStep - 1) / kStep, ZQ_KCHUNK / kStep);
  const int tbMax = MIN(ZQ_TB, (N + ZQ_PW - 1) / ZQ_PW * ZQ_PW);
  uint8_t *X = scratch((size_t)stepsMax * 64 * (size_t)(nl * tbMax / ZQ_PW));
  int32_t *C = scratch((size_t)Mb * 4 * nl * tbMax * 4);
  int64_t *acc = chunks > 1 ? scratch((size_t)rows * parts * tbMax * 8) : NULL;
  if (!X || !C || (chunks > 1 && !acc)) {
    free(X), free(C), free(acc), free(wq);
    return -1;
  }
  uint32_t *ao = a ? aOut : NULL, *bo = b ? bOut : NULL;
  for (int t0 = 0; t0 < N; t0 += ZQ_TB) {
    const int tb = MIN(ZQ_TB, N - t0);
    const int tbp = (tb + ZQ_PW - 1) / ZQ_PW * ZQ_PW;
    const int NP = nl * tbp / ZQ_PW;
    const size_t ldc = (size_t)nl * tbp;
    for (int ch = 0; ch < chunks; ch++) {
      const int k0 = ch * ZQ_KCHUNK;
      const int k1 = MIN(cols, k0 + ZQ_KCHUNK);
      const int steps = (k1 - k0 + kStep - 1) / kStep;
      const uint8_t *Wc = W + (size_t)(k0 / kStep) * 16;
      if (tb != tbp) memset(X, 0, (size_t)steps * 64 * NP);
#if defined(__AVX512VNNI__)
      zq_decompose_u8(a, b, N, t0, tb, tbp, k0, k1, X);
      gemm_steps(kern8, Wc, wBlock, X, steps, C, Mb, NP, ldc);
      zq_recombine_u8(C, ldc, rows, tb, tbp, acc, tbMax, ch > 0, ch == chunks - 1, ao, bo, N, t0);
#else
      zq_decompose(a, b, N, t0, tb, tbp, k0, k1, X);
      gemm_steps(kern16, Wc, wBlock, X, steps, C, Mb, NP, ldc);
      zq_recombine(C, ldc, rows, tb, tbp, acc, tbMax, ch > 0, ch == chunks - 1, ao, bo, N, t0);
#endif
    }
  }
  free(X), free(C), free(acc), free(wq);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* int8 GEMM on the same int16 kernel                                                          */

int FN(hl_gemm_i8)(const uint8_t *wp, int M, int K, const int8_t *x, int N, int32_t *out) {
#if defined(__AVX512VNNI__)
  return gemm_i8_u8(wp, M, K, x, N, out);
#endif
  const int K2 = (K + 1) / 2;
  const int Mb = (M + 3) / 4;
  const int NP = (N + ZQ_PW - 1) / ZQ_PW;
  const size_t ldc = (size_t)NP * ZQ_PW;
  const size_t xs = (size_t)K2 * 64;
  uint8_t *X = scratch(xs * NP);
  int32_t *C = scratch((size_t)Mb * 4 * ldc * 4);
  if (!X || !C) {
    free(X);
    free(C);
    return -1;
  }
  if ((size_t)N != ldc) memset(X, 0, xs * NP);
  for (int q = 0; q < K2; q++) {
    const int8_t *r0 = x + (size_t)(2 * q) * N;
    const int8_t *r1 = 2 * q + 1 < K ? r0 + N : NULL;
    for (int j = 0; j < N; j++) {
      const uint32_t pr = pair16(r0[j], r1 ? r1[j] : 0);
      memcpy(X + (size_t)(j / ZQ_PW) * xs + (size_t)q * 64 + (size_t)(j % ZQ_PW) * 4, &pr, 4);
    }
  }
  gemm_steps(kern16, wp, (size_t)K2 * 16, X, K2, C, Mb, NP, ldc);
  for (int i = 0; i < M; i++) memcpy(out + (size_t)i * N, C + (size_t)i * ldc, (size_t)N * 4);
  free(X);
  free(C);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* fp32 GEMM: packed, register-blocked (BLIS order)                                             */
/*
 * A packed into SG_MR-row micro-panels (k-major), B into SG_NR-column micro-panels; the kernel
 * keeps an SG_MR x SG_NR tile of C in registers over a KC-long slice. An A block (MC x KC) stays
 * in L2, a B micro-panel (KC x SG_NR) in L1, the B block (KC x NC) in L3.
 */
#define SG_NR 16
#if defined(__AVX512F__)
#undef SG_NR
#define SG_NR 32
#endif
#define SG_KC 256
#define SG_MC (SG_MR * 16)
#define SG_NC 2048

#if defined(HL_VEC)
#define SG_NV (SG_NR * 4 / VB)
static void kern32(int kc, const float *a, const float *b, float *t) {
  vf acc[SG_MR][SG_NV];
#pragma GCC unroll 12
  for (int r = 0; r < SG_MR; r++) {
#pragma GCC unroll 2
    for (int v = 0; v < SG_NV; v++) acc[r][v] = VF_ZERO();
  }
  for (int k = 0; k < kc; k++) {
    vf bv[SG_NV];
#pragma GCC unroll 2
    for (int v = 0; v < SG_NV; v++) bv[v] = VF_LOAD(b + v * (VB / 4));
#pragma GCC unroll 12
    for (int r = 0; r < SG_MR; r++) {
      const vf av = VF_BCAST(a + r);
#pragma GCC unroll 2
      for (int v = 0; v < SG_NV; v++) acc[r][v] = VF_FMA(acc[r][v], av, bv[v]);
    }
    a += SG_MR;
    b += SG_NR;
  }
#pragma GCC unroll 12
  for (int r = 0; r < SG_MR; r++) {
#pragma GCC unroll 2
    for (int v = 0; v < SG_NV; v++) VF_STORE(t + r * SG_NR + v * (VB / 4), acc[r][v]);
  }
}
#else
static void kern32(int kc, const float *a, const float *b, float *t) {
  float acc[SG_MR][SG_NR];
  memset(acc, 0, sizeof acc);
  for (int k = 0; k < kc; k++) {
    for (int r = 0; r < SG_MR; r++)
      for (int j = 0; j < SG_NR; j++) acc[r][j] += a[r] * b[j];
    a += SG_MR;
    b += SG_NR;
  }
  memcpy(t, acc, sizeof acc);
}
#endif

/* A(i0.., k0..) mc x kc -> micro-panels of SG_MR rows, rows past mc zero. */
static void pack_a32(const float *A, long sai, long sak, int mc, int kc, float *dst) {
  for (int i0 = 0; i0 < mc; i0 += SG_MR) {
    const int mr = MIN(SG_MR, mc - i0);
    if (sak == 1) {
      /* Row-major A: 8 k of every row at a time (see pack_b32). */
      int k = 0;
      for (; k + 8 <= kc; k += 8) {
        float blk[SG_MR][8];
        for (int r = 0; r < SG_MR; r++) {
          if (r < mr) memcpy(blk[r], A + (i0 + r) * sai + k, sizeof blk[r]);
          else memset(blk[r], 0, sizeof blk[r]);
        }
        for (int kk = 0; kk < 8; kk++)
          for (int r = 0; r < SG_MR; r++) dst[(k + kk) * SG_MR + r] = blk[r][kk];
      }
      for (; k < kc; k++)
        for (int r = 0; r < SG_MR; r++) dst[k * SG_MR + r] = r < mr ? A[(i0 + r) * sai + k] : 0.0f;
    } else {
      for (int k = 0; k < kc; k++)
        for (int r = 0; r < SG_MR; r++) dst[k * SG_MR + r] = r < mr ? A[(i0 + r) * sai + k * sak] : 0.0f;
    }
    dst += (size_t)kc * SG_MR;
  }
}

/* B(k0.., j0..) kc x nc -> micro-panels of SG_NR columns, columns past nc zero. */
static void pack_b32(const float *B, long sbk, long sbj, int kc, int nc, float *dst) {
  for (int j0 = 0; j0 < nc; j0 += SG_NR) {
    const int nr = MIN(SG_NR, nc - j0);
    if (sbj == 1 && nr == SG_NR) {
      for (int k = 0; k < kc; k++) memcpy(dst + k * SG_NR, B + k * sbk + j0, SG_NR * 4);
    } else if (sbk == 1) {
      /* B is a transposed row-major matrix (the weights of the forward matmul): 8 k of every
       * column at a time, so each source row is read 32 bytes at a time and each destination
       * row written whole (column by column, the source rows sit a stride apart that aliases
       * in the caches). */
      int k = 0;
      for (; k + 8 <= kc; k += 8) {
        float blk[SG_NR][8];
        for (int j = 0; j < SG_NR; j++) {
          if (j < nr) memcpy(blk[j], B + (j0 + j) * sbj + k, sizeof blk[j]);
          else memset(blk[j], 0, sizeof blk[j]);
        }
        for (int kk = 0; kk < 8; kk++)
          for (int j = 0; j < SG_NR; j++) dst[(k + kk) * SG_NR + j] = blk[j][kk];
      }
      for (; k < kc; k++)
        for (int j = 0; j < SG_NR; j++) dst[k * SG_NR + j] = j < nr ? B[k + (j0 + j) * sbj] : 0.0f;
    } else {
      for (int k = 0; k < kc; k++)
        for (int j = 0; j < SG_NR; j++) dst[k * SG_NR + j] = j < nr ? B[k * sbk + (j0 + j) * sbj] : 0.0f;
    }
    dst += (size_t)kc * SG_NR;
  }
}

/* C tile (mr x nr valid of t) into C: the first K slice also applies acc / bias. */
static void update_c(const float *t, int mr, int nr, float *C, long sci, long scj, int first, int acc, const float *bias) {
  for (int r = 0; r < mr; r++) {
    float *c = C + r * sci;
    const float *s = t + r * SG_NR;
    if (scj == 1) {
      if (!first) {
        for (int j = 0; j < nr; j++) c[j] += s[j];
      } else {
        for (int j = 0; j < nr; j++) c[j] = ((acc ? c[j] : 0.0f) + (bias ? bias[j] : 0.0f)) + s[j];
      }
    } else {
      for (int j = 0; j < nr; j++) {
        float *cj = c + j * scj;
        *cj = first ? ((acc ? *cj : 0.0f) + (bias ? bias[j] : 0.0f)) + s[j] : *cj + s[j];
      }
    }
  }
}

int FN(hl_sgemm)(int M, int N, int K, const float *A, long sai, long sak, const float *B, long sbk, long sbj, float *C,
                 long sci, long scj, int acc, const float *bias) {
  if (K == 0) {
    const float zero[SG_NR] = {0};
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j += SG_NR) update_c(zero, 1, MIN(SG_NR, N - j), C + i * sci + j * scj, sci, scj, 1, acc, bias ? bias + j : NULL);
    return 0;
  }
  float *Ap = scratch((size_t)SG_MC * SG_KC * 4);
  float *Bp = scratch((size_t)SG_KC * SG_NC * 4);
  if (!Ap || !Bp) {
    free(Ap);
    free(Bp);
    return -1;
  }
  float t[SG_MR * SG_NR] __attribute__((aligned(64)));
  for (int jc = 0; jc < N; jc += SG_NC) {
    const int nc = MIN(SG_NC, N - jc);
    for (int pc = 0; pc < K; pc += SG_KC) {
      const int kc = MIN(SG_KC, K - pc);
      pack_b32(B + pc * sbk + jc * sbj, sbk, sbj, kc, nc, Bp);
      for (int ic = 0; ic < M; ic += SG_MC) {
        const int mc = MIN(SG_MC, M - ic);
        pack_a32(A + ic * sai + pc * sak, sai, sak, mc, kc, Ap);
        for (int jr = 0; jr < nc; jr += SG_NR) {
          const int nr = MIN(SG_NR, nc - jr);
          for (int ir = 0; ir < mc; ir += SG_MR) {
            /* C was last touched one K slice ago: fetch the tile while the kernel runs. */
            if (scj == 1) {
              for (int r = 0; r < MIN(SG_MR, mc - ir); r++) {
                const float *cr = C + (ic + ir + r) * sci + jc + jr;
                __builtin_prefetch(cr, 1);
                __builtin_prefetch(cr + nr - 1, 1);
              }
            }
            kern32(kc, Ap + (size_t)ir * kc, Bp + (size_t)jr * kc, t);
            update_c(t, MIN(SG_MR, mc - ir), nr, C + (ic + ir) * sci + (jc + jr) * scj, sci, scj, pc == 0, acc,
                     bias ? bias + jc + jr : NULL);
          }
        }
      }
    }
  }
  free(Ap);
  free(Bp);
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Few-token fp32 products (llm.c matmuls with T <= 8): memory bound on the weights, so the     */
/* weights are streamed once in place instead of packed. Eight independent lanes per sum let  */
/* the compiler vectorize without reassociating (no -ffast-math).                              */

static float dot_f32(const float *x, const float *y, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int c = 0;
  for (; c + 8 <= n; c += 8)
    for (int l = 0; l < 8; l++) acc[l] += x[c + l] * y[c + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; c < n; c++) s += x[c] * y[c];
  return s;
}

static void axpy_f32(float *y, float a, const float *x, int n) {
  for (int c = 0; c < n; c++) y[c] += a * x[c];
}

/*
 * op 0: out[T][OC] = inp[T][C] · w[OC][C]^T (+ bias)   (target = out, x = inp, y = w)
 * op 1: dinp[T][C] += dout[T][OC] · w[OC][C]           (target = dinp, x = dout, y = w)
 * op 2: dw[OC][C] += dout[T][OC]^T · inp[T][C]         (target = dw, x = dout, y = inp)
 */
void FN(hl_small_f32)(int op, float *target, const float *x, const float *y, const float *bias, int T, int C, int OC) {
  for (int o = 0; o < OC; o++) {
    for (int t = 0; t < T; t++) {
      if (op == 0) {
        target[(size_t)t * OC + o] = dot_f32(x + (size_t)t * C, y + (size_t)o * C, C) + (bias ? bias[o] : 0.0f);
      } else {
        const float d = x[(size_t)t * OC + o];
        if (d == 0.0f) continue;
        if (op == 1) axpy_f32(target + (size_t)t * C, d, y + (size_t)o * C, C);
        else axpy_f32(target + (size_t)o * C, d, y + (size_t)t * C, C);
      }
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Register-only peak of this level's best dot-product instruction                            */

double FN(hl_peak)(long reps) {
#if defined(HL_VEC)
  /* Ten independent chains hide the instruction's latency; each product reads its own
   * accumulator, so no product can be shared or hoisted out of the loop. */
#if defined(__AVX512VNNI__)
  /* vpdpbusd: 64 u8 x s8 multiply-accumulates per zmm instruction (the widest on this level). */
#define PEAK_OP(acc) acc = _mm512_dpbusd_epi32(acc, acc, y)
  const double per = 64;
#elif defined(HL_DOTPROD)
  /* sdot: 16 s8 multiply-accumulates into s32 per instruction. */
#define PEAK_OP(acc) acc = vdotq_s32(acc, vreinterpretq_s8_s32(acc), vreinterpretq_s8_s32(y))
  const double per = 16;
#elif defined(HL_NEON)
  /* smlal2: 4 s16 multiply-accumulates into s32 per instruction (kern16's instruction). */
#define PEAK_OP(acc) acc = vmlal_high_s16(acc, vreinterpretq_s16_s32(acc), vreinterpretq_s16_s32(y))
  const double per = 4;
#else
#define PEAK_OP(acc) acc = VI_MADD(acc, acc, y)
  const double per = VB / 2;
#endif
  const vi y = VI_BCAST32(&(int32_t){0x00050004});
  /* Distinct starting values: identical chains would be merged into one. */
#define PEAK_INIT(j) VI_BCAST32(&(int32_t){j})
  vi c0 = PEAK_INIT(1), c1 = PEAK_INIT(2), c2 = PEAK_INIT(3), c3 = PEAK_INIT(4), c4 = PEAK_INIT(5);
  vi c5 = PEAK_INIT(6), c6 = PEAK_INIT(7), c7 = PEAK_INIT(8), c8 = PEAK_INIT(9), c9 = PEAK_INIT(10);
#undef PEAK_INIT
  for (long i = 0; i < reps; i++) {
    PEAK_OP(c0); PEAK_OP(c1); PEAK_OP(c2); PEAK_OP(c3); PEAK_OP(c4);
    PEAK_OP(c5); PEAK_OP(c6); PEAK_OP(c7); PEAK_OP(c8); PEAK_OP(c9);
  }
#undef PEAK_OP
  int32_t sink[10][VB / 4];
  VI_STORE(sink[0], c0); VI_STORE(sink[1], c1); VI_STORE(sink[2], c2); VI_STORE(sink[3], c3); VI_STORE(sink[4], c4);
  VI_STORE(sink[5], c5); VI_STORE(sink[6], c6); VI_STORE(sink[7], c7); VI_STORE(sink[8], c8); VI_STORE(sink[9], c9);
  __asm__ volatile("" : : "r"(sink) : "memory");
  return (double)reps * 10 * per;
#else
  uint32_t acc[4] = {1, 2, 3, 4};
  for (long i = 0; i < reps; i++) {
    __asm__ volatile("" : "+r"(acc[0]));
    for (int j = 0; j < 4; j++) acc[j] = acc[j] * 3u + (uint32_t)j;
  }
  __asm__ volatile("" : : "r"(acc[0] + acc[1] + acc[2] + acc[3]));
  return (double)reps * 4;
#endif
}
