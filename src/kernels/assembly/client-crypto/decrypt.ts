// Decryption of the server's results: y = round((b - a*s mod 2^32) / 2^sh), a*s by FFT
// (decryptRowsFft) or by the exact two-prime NTT (decryptRows, the reference).

import { productInBuf, roundedLow } from './fft';
import { crtDigit, loadResidues32, mulSecret } from './ntt';
import { BUF0, FN2, N, P0, P1 } from './setup';

/**
 * Decrypts nRows rows: v = b - a*s mod 2^32, y = (v + 2^(sh-1)) >> sh (arithmetic, so y is the
 * centered value in [-2^(31-sh), 2^(31-sh))). a, b: nRows*N u32; y: nRows*N i32.
 */
export function decryptRows(nRows: i32, a: usize, b: usize, sh: i32, y: usize): void {
  const n = N;
  const half = i32x4.splat(P1 >> 1);
  const p0 = i32x4.splat(P0);
  const ppLow = i32x4.splat(<i32>(<i64>P0 * <i64>P1));
  const rnd = i32x4.splat(1 << (sh - 1));
  for (let row = 0; row < nRows; row++) {
    const base = <usize>row * <usize>n << 2;
    loadResidues32(a + base);
    mulSecret();
    for (let j = 0; j < n; j += 4) {
      const o = <usize>j << 2;
      const t = crtDigit(o);
      const r0 = v128.load(BUF0 + o);
      const flag = i32x4.gt_u(t, half);
      const c = i32x4.sub(i32x4.add(r0, i32x4.mul(t, p0)), v128.and(flag, ppLow));
      const v = i32x4.sub(v128.load(b + base + o), c);
      v128.store(y + base + o, i32x4.shr_s(i32x4.add(v, rnd), sh));
    }
  }
}

/**
 * decryptRows by FFT: y = (b - a*s mod 2^32 + 2^(sh-1)) >> sh for nRows rows of N values
 * (a, b, y: row-major; y: i32). accumulate: y += instead of y = (the K-chunk terms of one output
 * sum in place).
 */
export function decryptRowsFft(nRows: i32, a: usize, b: usize, sh: i32, y: usize, accumulate: bool): void {
  const n2 = <usize>FN2;
  const n = n2 << 1;
  const rnd = i32x4.splat(1 << (sh - 1));
  for (let row = 0; row < nRows; row++) {
    const base = (<usize>row * n) << 2;
    productInBuf(a + base);
    const yRow = y + base;
    for (let j: usize = 0; j < n2; j += 4) {
      const v0 = i32x4.shuffle(roundedLow(j), roundedLow(j + 1), 0, 2, 4, 6); // c_j, c_{j+n2}, c_{j+1}, c_{j+1+n2}
      const v1 = i32x4.shuffle(roundedLow(j + 2), roundedLow(j + 3), 0, 2, 4, 6);
      const cLo = i32x4.shuffle(v0, v1, 0, 2, 4, 6);
      const cHi = i32x4.shuffle(v0, v1, 1, 3, 5, 7);
      const yLo = i32x4.shr_s(i32x4.add(i32x4.sub(v128.load(b + base + (j << 2)), cLo), rnd), sh);
      const yHi = i32x4.shr_s(i32x4.add(i32x4.sub(v128.load(b + base + ((j + n2) << 2)), cHi), rnd), sh);
      const pLo = yRow + (j << 2), pHi = yRow + ((j + n2) << 2);
      v128.store(pLo, accumulate ? i32x4.add(v128.load(pLo), yLo) : yLo);
      v128.store(pHi, accumulate ? i32x4.add(v128.load(pHi), yHi) : yHi);
    }
  }
}
