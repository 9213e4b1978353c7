// Products a*s by double-precision FFT.
//
// Decryption needs c = a*s mod 2^32 for 32-bit a; encryption splits its 44-bit a into a signed
// low word and a 12-bit rest (splitMask44), two such products, or takes two polynomials at a time
// with three (splitMask34, in encrypt.ts). Over the integers
// |a*s| < 2^31 * N, so a floating-point convolution that is accurate to better than 1/2 gives the
// exact product after rounding (the error bound, fftProductErrorBound, lives in
// src/kernels/fft-product.ts, its measurement in client-crypto.test.ts). A real
// negacyclic product of length N is one complex cyclic product of length N/2: fold
// z_j = (a_j + i a_{j+N/2}) zeta^j (zeta = e^{i pi/N}), transform, multiply by the secret's
// transform, transform back, unfold (Re -> c_j, Im -> c_{j+N/2}) after multiplying by zeta^-j.
// That is two complex FFTs of N/2 points per row instead of four NTTs of N points (two primes).
//
// Complex values are f64x2 (re, im). A constant w is stored as two vectors (wr, wr), (-wi, wi):
// x*w = x*(wr, wr) + swap(x)*(-wi, wi). Tables (set up by src/kernels/client-crypto.ts), N/2 = n2
// entries of 32 bytes unless noted:
//   twist: zeta^j;  untwist: zeta^-j;  secret: FFT(fold(s)) / n2;
//   fw / iw: n2/2 entries e^{+-2 pi i j / n2}: the one radix-2 stage (half-length n2/2) run when the
//     count of wide stages is odd.
//   fw4 / iw4: radix-4 passes (stages h and h/2 at once, q = h/2): at entry 3(q - 1) + 3j + m,
//     w^{+-(m+1) j} with w = e^{2 pi i/(2h)}, j < q, m = 0, 1, 2.
// The wide stages (h >= 4) run as radix-4 passes (3 complex products per 4 points instead of 4,
// half the passes over the buffer), after one radix-2 stage when their count is odd.

import { FBUF, FFW, FFW4, FIW, FIW4, FN2, FSECRET, FTWIST, FUNTWIST } from './setup';

/** 1.5 * 2^52: x + MAGIC rounds x to an integer whose low 32 bits are the low word of the sum. */
const MAGIC: f64 = 6755399441055744.0;

// @ts-ignore: decorator
@inline function cmul(x: v128, w: usize): v128 {
  return f64x2.add(f64x2.mul(x, v128.load(w)), f64x2.mul(v128.shuffle<f64>(x, x, 1, 0), v128.load(w, 16)));
}

/** i*x and -i*x for complex x = (re, im): swap the lanes and flip one sign. */
// @ts-ignore: decorator
@inline function timesI(x: v128): v128 {
  return v128.xor(v128.shuffle<f64>(x, x, 1, 0), f64x2(-0.0, 0.0));
}
// @ts-ignore: decorator
@inline function timesMinusI(x: v128): v128 {
  return v128.xor(v128.shuffle<f64>(x, x, 1, 0), f64x2(0.0, -0.0));
}

/** Whether the wide stages (h = n2/2 .. 4) are odd in number: one radix-2 stage at h = n2/2 then. */
// @ts-ignore: decorator
@inline function oddWideStages(): bool {
  return (ctz(FN2) & 1) != 0; // log2(n2) - 2 stages
}

/** The stages of the cyclic DIF FFT of n2 points (kernel e^{+2 pi i/n2}) with half-length h >= 4, in place, natural order in. */
function fftForwardWide(buf: usize): void {
  const n2 = <usize>FN2;
  let h = n2 >> 1;
  if (oddWideStages()) {
    const tw = FFW;
    const hb = h << 4;
    for (let j: usize = 0; j < h; j++) {
      const pu = buf + (j << 4);
      const u = v128.load(pu), v = v128.load(pu + hb);
      v128.store(pu, f64x2.add(u, v));
      v128.store(pu + hb, cmul(f64x2.sub(u, v), tw + (j << 5)));
    }
    h >>= 1;
  }
  for (; h >= 8; h >>= 2) {
    const q = h >> 1;
    const qb = q << 4;
    const tw = FFW4 + (3 * q - 3) * 32;
    for (let s: usize = 0; s < n2; s += h << 1) {
      const blk = buf + (s << 4);
      for (let j: usize = 0; j < q; j++) {
        const p = blk + (j << 4);
        const x0 = v128.load(p), x1 = v128.load(p + qb), x2 = v128.load(p + 2 * qb), x3 = v128.load(p + 3 * qb);
        const e0 = f64x2.add(x0, x2), e1 = f64x2.add(x1, x3);
        const d0 = f64x2.sub(x0, x2), d1 = timesI(f64x2.sub(x1, x3));
        const w = tw + j * 96;
        v128.store(p, f64x2.add(e0, e1));
        v128.store(p + qb, cmul(f64x2.sub(e0, e1), w + 32));
        v128.store(p + 2 * qb, cmul(f64x2.add(d0, d1), w));
        v128.store(p + 3 * qb, cmul(f64x2.sub(d0, d1), w + 64));
      }
    }
  }
}

/**
 * For each group of 4 points: forward stages h = 2, 1, the pointwise product with the secret's
 * transform (bit-reversed order, like the forward output), and the inverse stages h = 1, 2
 * (twiddles 1 and -i), all in registers.
 */
function convolveTail(buf: usize): void {
  const n2 = <usize>FN2;
  for (let s: usize = 0; s < n2; s += 4) {
    const p = buf + (s << 4);
    const x0 = v128.load(p), x1 = v128.load(p, 16), x2 = v128.load(p, 32), x3 = v128.load(p, 48);
    const a0 = f64x2.add(x0, x2), a2 = f64x2.sub(x0, x2);
    const a1 = f64x2.add(x1, x3), a3 = timesI(f64x2.sub(x1, x3));
    const sp = FSECRET + (s << 5);
    const z0 = cmul(f64x2.add(a0, a1), sp), z1 = cmul(f64x2.sub(a0, a1), sp + 32);
    const z2 = cmul(f64x2.add(a2, a3), sp + 64), z3 = cmul(f64x2.sub(a2, a3), sp + 96);
    const b0 = f64x2.add(z0, z1), b1 = f64x2.sub(z0, z1);
    const b2 = f64x2.add(z2, z3), b3 = timesMinusI(f64x2.sub(z2, z3));
    v128.store(p, f64x2.add(b0, b2));
    v128.store(p, f64x2.add(b1, b3), 16);
    v128.store(p, f64x2.sub(b0, b2), 32);
    v128.store(p, f64x2.sub(b1, b3), 48);
  }
}

/** The inverse DIT stages with half-length h >= 4 (kernel e^{-2 pi i/n2}), after convolveTail: fftForwardWide mirrored. */
function fftInverseWide(buf: usize): void {
  const n2 = <usize>FN2;
  const odd = oddWideStages();
  const top = odd ? n2 >> 2 : n2 >> 1;
  for (let h: usize = 8; h <= top; h <<= 2) {
    const q = h >> 1;
    const qb = q << 4;
    const tw = FIW4 + (3 * q - 3) * 32;
    for (let s: usize = 0; s < n2; s += h << 1) {
      const blk = buf + (s << 4);
      for (let j: usize = 0; j < q; j++) {
        const p = blk + (j << 4);
        const w = tw + j * 96;
        const y0 = v128.load(p);
        const t1 = cmul(v128.load(p + qb), w + 32), t2 = cmul(v128.load(p + 2 * qb), w), t3 = cmul(v128.load(p + 3 * qb), w + 64);
        const a0 = f64x2.add(y0, t1), a1 = f64x2.sub(y0, t1);
        const b = f64x2.add(t2, t3), c = timesMinusI(f64x2.sub(t2, t3));
        v128.store(p, f64x2.add(a0, b));
        v128.store(p + qb, f64x2.add(a1, c));
        v128.store(p + 2 * qb, f64x2.sub(a0, b));
        v128.store(p + 3 * qb, f64x2.sub(a1, c));
      }
    }
  }
  if (odd) {
    const h = n2 >> 1;
    const tw = FIW;
    const hb = h << 4;
    for (let j: usize = 0; j < h; j++) {
      const pu = buf + (j << 4);
      const u = v128.load(pu), v = cmul(v128.load(pu + hb), tw + (j << 5));
      v128.store(pu, f64x2.add(u, v));
      v128.store(pu + hb, f64x2.sub(u, v));
    }
  }
}

/** The complete forward FFT (for the secret's table, which is then taken in bit-reversed order). */
function fftForward(buf: usize): void {
  fftForwardWide(buf);
  const n2 = <usize>FN2;
  for (let s: usize = 0; s < n2; s += 4) {
    const p = buf + (s << 4);
    const x0 = v128.load(p), x1 = v128.load(p, 16), x2 = v128.load(p, 32), x3 = v128.load(p, 48);
    const a0 = f64x2.add(x0, x2), a2 = f64x2.sub(x0, x2);
    const a1 = f64x2.add(x1, x3), a3 = timesI(f64x2.sub(x1, x3));
    v128.store(p, f64x2.add(a0, a1));
    v128.store(p, f64x2.sub(a0, a1), 16);
    v128.store(p, f64x2.add(a2, a3), 32);
    v128.store(p, f64x2.sub(a2, a3), 48);
  }
}

/** FBUF entries j .. j+3 = the folded pairs x_k = (a_{j+k}, a_{j+k+n2}) times the twist. */
// @ts-ignore: decorator
@inline function storeFolded(j: usize, x0: v128, x1: v128, x2: v128, x3: v128): void {
  const d = FBUF + (j << 4);
  const t = FTWIST + (j << 5);
  v128.store(d, cmul(x0, t));
  v128.store(d, cmul(x1, t + 32), 16);
  v128.store(d, cmul(x2, t + 64), 32);
  v128.store(d, cmul(x3, t + 96), 48);
}

/** The four pairs (x_j, x_{j+n2}) .. (x_{j+3}, x_{j+3+n2}) of the int32 values at src, as f64x2 in order. */
// @ts-ignore: decorator
@inline function foldedPair(src: usize, j: usize, k: i32): v128 {
  const n2 = <usize>FN2;
  const A = v128.load(src + (j << 2)), B = v128.load(src + ((j + n2) << 2));
  const lo = i32x4.shuffle(A, B, 0, 4, 1, 5); // x_j, x_{j+n2}, x_{j+1}, x_{j+1+n2}
  const hi = i32x4.shuffle(A, B, 2, 6, 3, 7);
  const v = k == 0 ? lo : k == 1 ? i32x4.shuffle(lo, lo, 2, 3, 0, 1) : k == 2 ? hi : i32x4.shuffle(hi, hi, 2, 3, 0, 1);
  return f64x2.convert_low_i32x4_s(v);
}

/** FBUF = fold(a) * twist for the n2*2 int32 coefficients at src (read as signed). */
function foldForward(src: usize): void {
  const n2 = <usize>FN2;
  for (let j: usize = 0; j < n2; j += 4) {
    storeFolded(j, foldedPair(src, j, 0), foldedPair(src, j, 1), foldedPair(src, j, 2), foldedPair(src, j, 3));
  }
}

/** FBUF = fold(a) * twist for a = x + scale * y, x and y n2*2 int32 each (read as signed; a exact in f64). */
function foldForwardTwo(x: usize, y: usize, scale: f64): void {
  const n2 = <usize>FN2;
  const c = f64x2.splat(scale);
  for (let j: usize = 0; j < n2; j += 4) {
    storeFolded(j, f64x2.add(foldedPair(x, j, 0), f64x2.mul(foldedPair(y, j, 0), c)),
      f64x2.add(foldedPair(x, j, 1), f64x2.mul(foldedPair(y, j, 1), c)),
      f64x2.add(foldedPair(x, j, 2), f64x2.mul(foldedPair(y, j, 2), c)),
      f64x2.add(foldedPair(x, j, 3), f64x2.mul(foldedPair(y, j, 3), c)));
  }
}

/** The transform of one polynomial (n2*2 int32 at src) into dst (n2 complex f64): for the secret's table. */
export function fftForwardPoly(src: usize, dst: usize): void {
  foldForward(src);
  fftForward(FBUF);
  memory.copy(dst, FBUF, <usize>FN2 << 4);
}

/** FBUF = the unrounded a*s before the untwist (bit-reversal cancels between the two transforms). */
export function productInBuf(src: usize): void {
  foldForward(src);
  transformProduct();
}

/** productInBuf for a = x + scale * y (see foldForwardTwo). */
export function productInBufTwo(x: usize, y: usize, scale: f64): void {
  foldForwardTwo(x, y, scale);
  transformProduct();
}

/** FBUF = the unrounded product before the untwist, from the folded, twisted operand in FBUF. */
// @ts-ignore: decorator
@inline function transformProduct(): void {
  fftForwardWide(FBUF);
  convolveTail(FBUF);
  fftInverseWide(FBUF);
}

/** Low 32 bits of round(x) for the two lanes of the untwisted value at FBUF entry j: (c_j, c_{j+n2}) in lanes 0 and 2. */
// @ts-ignore: decorator
@inline export function roundedLow(j: usize): v128 {
  return f64x2.add(cmul(v128.load(FBUF + (j << 4)), FUNTWIST + (j << 5)), f64x2.splat(MAGIC));
}

/** a*s as f64 before rounding (dst: N f64, coefficient order) for a = x + 2^32 y (int32 x, y): the FFT error test. */
export function fftProductRaw(x: usize, y: usize, dst: usize): void {
  const n2 = <usize>FN2;
  productInBufTwo(x, y, 4294967296.0);
  for (let j: usize = 0; j < n2; j++) {
    const c = cmul(v128.load(FBUF + (j << 4)), FUNTWIST + (j << 5));
    store<f64>(dst + (j << 3), f64x2.extract_lane(c, 0));
    store<f64>(dst + ((j + n2) << 3), f64x2.extract_lane(c, 1));
  }
}
