// The encryption's masks: N values of 44 bits per polynomial, 6 bytes each (little-endian, top 4
// bits ignored), read four at a time and split into parts whose products with s are exact.

import { BUF0, BUF1, N } from './setup';

/**
 * BUF0 <- the low words of N 44-bit values at src (6-byte little-endian, top 4 bits ignored) read
 * as int32, BUF1 <- the rest: a = lo + 2^32 hi (mod 2^44) with -2^31 <= lo < 2^31 and
 * 0 <= hi <= 2^12, so that both products with s are exact by FFT (fftProductErrorBound).
 */
export function splitMask44(src: usize): void {
  const n = N;
  for (let j = 0; j < n; j += 4) {
    const s = src + <usize>j * 6;
    const lo = maskLowWords(s);
    const o = <usize>j << 2;
    v128.store(BUF0 + o, lo);
    v128.store(BUF1 + o, i32x4.add(maskHighBits(s), i32x4.shr_u(lo, 31)));
  }
}

/** The low 32 bits of the four 6-byte mask values at s. */
// @ts-ignore: decorator
@inline export function maskLowWords(s: usize): v128 {
  return i8x16.shuffle(v128.load(s), v128.load(s + 8), 0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, 26, 27, 28, 29);
}

/** Bits 32..43 of the four 6-byte mask values at s. */
// @ts-ignore: decorator
@inline export function maskHighBits(s: usize): v128 {
  return v128.and(i8x16.shuffle(v128.load(s), v128.load(s + 8), 4, 5, 0, 0, 10, 11, 0, 0, 24, 25, 0, 0, 30, 31, 0, 0), i32x4.splat(0xfff));
}
