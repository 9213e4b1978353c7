/*
 * Register-only rates of the candidate multiply-accumulate instructions for the server's exact
 * Z_2^44 products, on one core of this machine (what src/kernels/native/kernels.c's header cites):
 *   gcc -O2 -march=native scripts/instruction-peaks.c -o /tmp/peaks && /tmp/peaks
 * Instructions the compiler target lacks are skipped. Each loop runs 10 independent accumulator
 * chains (enough to hide the latencies) on registers only: a ceiling, not a kernel.
 * lane_gmacs: multiply-accumulates of the instruction's own element width, in G per second;
 * b_part_gmacs / a_part_gmacs: exact products of one 40-bit b / 44-bit a word by an int8 weight,
 * i.e. lane_gmacs over the limbs each needs with that instruction (byte limbs: 5 and 6; int16
 * limbs: 3 and 3; IFMA's 52-bit lanes: 1).
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* STEP(acc) is one instruction on accumulator acc (y: a constant operand); per = lane MACs per
 * instruction. Ten named accumulators (an array can end up in memory). */
#define MEASURE(vec, set1, store, name, per, limbsB, limbsA, STEP)                                             \
  do {                                                                                                       \
    const vec y = set1(0x00050004);                                                                          \
    vec c0 = set1(1), c1 = set1(2), c2 = set1(3), c3 = set1(4), c4 = set1(5);                                 \
    vec c5 = set1(6), c6 = set1(7), c7 = set1(8), c8 = set1(9), c9 = set1(10);                                \
    const long reps = 300000000L / (per);                                                                    \
    const double t0 = now();                                                                                 \
    for (long i = 0; i < reps; i++) {                                                                        \
      STEP(c0); STEP(c1); STEP(c2); STEP(c3); STEP(c4); STEP(c5); STEP(c6); STEP(c7); STEP(c8); STEP(c9);     \
    }                                                                                                        \
    const double rate = (double)reps * 10 * (per) / (now() - t0) / 1e9;                                       \
    int sink[16], s = 0;                                                                                     \
    const vec all[10] = {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9};                                             \
    for (int j = 0; j < 10; j++) store((void *)sink, all[j]), s += sink[0];                                  \
    printf("  {\"instruction\": \"%s\", \"lane_gmacs\": %.1f, \"b_part_gmacs\": %.1f, \"a_part_gmacs\": %.1f, \"checksum\": %d},\n", \
           name, rate, rate / (limbsB), rate / (limbsA), s);                                                  \
  } while (0)

#define MADDWD_Y(c) c = _mm256_add_epi32(c, _mm256_madd_epi16(c, y))
#define MADDWD_Z(c) c = _mm512_add_epi32(c, _mm512_madd_epi16(c, y))
#define DPWSSD(c) c = _mm512_dpwssd_epi32(c, c, y)
#define DPBUSD(c) c = _mm512_dpbusd_epi32(c, c, y)
#define IFMA(c) c = _mm512_madd52lo_epu64(c, c, y)

int main(void) {
  printf("[\n");
#if defined(__AVX2__)
  MEASURE(__m256i, _mm256_set1_epi32, _mm256_storeu_si256, "vpmaddwd+vpaddd ymm", 16, 3, 3, MADDWD_Y);
#endif
#if defined(__AVX512BW__)
  MEASURE(__m512i, _mm512_set1_epi32, _mm512_storeu_si512, "vpmaddwd+vpaddd zmm", 32, 3, 3, MADDWD_Z);
#endif
#if defined(__AVX512VNNI__)
  MEASURE(__m512i, _mm512_set1_epi32, _mm512_storeu_si512, "vpdpwssd zmm", 32, 3, 3, DPWSSD);
  MEASURE(__m512i, _mm512_set1_epi32, _mm512_storeu_si512, "vpdpbusd zmm", 64, 5, 6, DPBUSD);
#endif
#if defined(__AVX512IFMA__)
  MEASURE(__m512i, _mm512_set1_epi32, _mm512_storeu_si512, "vpmadd52luq zmm", 8, 1, 1, IFMA);
#endif
  printf("  {}\n]\n");
  return 0;
}
