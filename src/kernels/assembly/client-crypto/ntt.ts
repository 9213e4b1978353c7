// The two-prime NTT: the exact reference the tests compare the FFT products a*s with, bit for bit
// (encryptPolys with exactNtt, decryptRows against decryptRowsFft, productExact44/32).
//
// The product is computed exactly modulo two ~30-bit primes p0, p1 (p = 1 mod 2N, 4p < 2^32 < 6p) and
// recombined by CRT: |a*s| < 2^44 * N = 2^55 << p0*p1/2 ~ 2^59, so the centered CRT value is
// the exact integer product; the callers only need it modulo 2^44 (encrypt) or 2^32 (decrypt).
//
// Cooley-Tukey forward (natural order in, bit-reversed out) and Gentleman-Sande inverse
// with the powers of a primitive 2N-th root psi in bit-reversed order (Longa-Naehrig layout),
// Harvey's lazy butterflies (values kept in [0, 4p) forward, [0, 2p) inverse) and Shoup
// multiplication by precomputed constants: q = hi32(x * w'), w' = floor(w 2^32 / p),
// x*w - q*p in [0, 2p) for any 32-bit x. The high 32 bits of the four 32x32 products come
// from two i64x2.extmul and one shuffle (WebAssembly SIMD has no i32x4 mulhi).
// Wide stages run two at a time (radix 4), the two narrow stages (t = 2, 1) in registers, and the
// pointwise product with the secret is fused into the last forward stage. The Shoup products
// dominate (about 12 x86 uops per 4 lanes), so these passes save memory traffic, not much time:
// measured within noise of the radix-2 version (~7-10 us per 2048-point NTT per prime).
//
// Table layout per prime k (u32, each table followed by its Shoup companions; base T0 or T1):
//   fw:  N psi^brv(i)               (forward twiddles; index m + i)
//   fw2: N/2, stage t = 2 expanded as [w_i, w_i, w_{i+1}, w_{i+1}] per vector
//   iw:  N psi^-brv(i)              (inverse twiddles; index h + i)
//   iw2: N/2, stage t = 2 of the inverse, expanded like fw2
//   sh:  N   NTT(s) * N^-1 mod p    (the secret in NTT form with the 1/N of the inverse folded in)

import { splitMask44 } from './mask';
import { BUF0, BUF1, C0, C0S, C1, C1S, N, P0, P1, PINV, PINVS, T0, T1 } from './setup';

/** Byte offset of table j (0..9) inside one prime's table block. */
@inline function tab(base: usize, j: i32): usize {
  const n = <usize>N;
  // sizes in u32: N, N, N/2, N/2, N, N, N/2, N/2, N, N
  let off: usize = 0;
  if (j > 0) off += n;
  if (j > 1) off += n;
  if (j > 2) off += n >> 1;
  if (j > 3) off += n >> 1;
  if (j > 4) off += n;
  if (j > 5) off += n;
  if (j > 6) off += n >> 1;
  if (j > 7) off += n >> 1;
  if (j > 8) off += n;
  return base + (off << 2);
}

/** Shoup product x*w mod p in [0, 2p) for any u32 x (w < p, ws = floor(w 2^32 / p)). */
@inline function shoup(x: v128, w: v128, ws: v128, p: v128): v128 {
  const lo = i64x2.extmul_low_i32x4_u(x, ws);
  const hi = i64x2.extmul_high_i32x4_u(x, ws);
  const q = i32x4.shuffle(lo, hi, 1, 3, 5, 7);
  return i32x4.sub(i32x4.mul(x, w), i32x4.mul(q, p));
}

/** x - m if x >= m else x (for x < m + 2^32 - m wrap-free ranges). */
@inline function csub(x: v128, m: v128): v128 {
  return i32x4.min_u(x, i32x4.sub(x, m));
}

/** One radix-2 CT butterfly vector pair: (X, Y) -> (X + wY, X - wY + 2p), inputs and outputs in [0, 4p). */
@inline function ctStore(x: usize, y: usize, w: v128, ws: v128, pv: v128, p2: v128): void {
  const X = csub(v128.load(x), p2);
  const T = shoup(v128.load(y), w, ws, pv);
  v128.store(x, i32x4.add(X, T));
  v128.store(y, i32x4.add(i32x4.sub(X, T), p2));
}

/**
 * Forward negacyclic NTT in place; input in [0, 4p), output in [0, 4p) (bit-reversed order).
 * Stages with t >= 8 run two at a time (radix 4: each element is loaded and stored once per pair
 * of stages). With mul, the last stage also multiplies by the secret's NTT (pointwise, 1/N folded
 * in; output [0, 2p)), saving a pass over the buffer.
 */
function forward(a: usize, base: usize, p: u32, mul: bool): void {
  const n = N;
  const pv = i32x4.splat(p);
  const p2 = i32x4.splat(p << 1);
  const fw = tab(base, 0);
  const fws = tab(base, 1);
  let t = n >> 1;
  let m = 1;
  // radix 4: stages (m, t) and (2m, t/2) together while t/2 >= 4
  for (; t >= 8; m <<= 2, t >>= 2) {
    const h = <usize>(t >> 1) << 2; // byte distance of the second stage (t/2 elements)
    for (let i = 0; i < m; i++) {
      const w1 = v128.load32_splat(fw + (<usize>(m + i) << 2));
      const w1s = v128.load32_splat(fws + (<usize>(m + i) << 2));
      const w2 = v128.load32_splat(fw + (<usize>(2 * m + 2 * i) << 2));
      const w2s = v128.load32_splat(fws + (<usize>(2 * m + 2 * i) << 2));
      const w3 = v128.load32_splat(fw + (<usize>(2 * m + 2 * i + 1) << 2));
      const w3s = v128.load32_splat(fws + (<usize>(2 * m + 2 * i + 1) << 2));
      let x = a + (<usize>(2 * i * t) << 2);
      const end = x + h;
      for (; x < end; x += 16) {
        // x0 = a[j], x1 = a[j + t/2], x2 = a[j + t], x3 = a[j + 3t/2]; all in [0, 4p)
        const X0 = csub(v128.load(x), p2);
        const X1 = csub(v128.load(x + h), p2);
        const T2 = shoup(v128.load(x + 2 * h), w1, w1s, pv);
        const T3 = shoup(v128.load(x + 3 * h), w1, w1s, pv);
        // first stage outputs in [0, 4p); the second stage reduces its X inputs to [0, 2p)
        const A0 = csub(i32x4.add(X0, T2), p2);
        const A1 = i32x4.add(X1, T3);
        const A2 = csub(i32x4.add(i32x4.sub(X0, T2), p2), p2);
        const A3 = i32x4.add(i32x4.sub(X1, T3), p2);
        const U1 = shoup(A1, w2, w2s, pv);
        const U3 = shoup(A3, w3, w3s, pv);
        v128.store(x, i32x4.add(A0, U1));
        v128.store(x + h, i32x4.add(i32x4.sub(A0, U1), p2));
        v128.store(x + 2 * h, i32x4.add(A2, U3));
        v128.store(x + 3 * h, i32x4.add(i32x4.sub(A2, U3), p2));
      }
    }
  }
  // a remaining radix-2 stage with t = 4 (odd number of wide stages)
  for (; t >= 4; m <<= 1, t >>= 1) {
    for (let i = 0; i < m; i++) {
      const w = v128.load32_splat(fw + (<usize>(m + i) << 2));
      const ws = v128.load32_splat(fws + (<usize>(m + i) << 2));
      let x = a + (<usize>(2 * i * t) << 2);
      const end = x + (<usize>t << 2);
      const off = <usize>t << 2;
      for (; x < end; x += 16) ctStore(x, x + off, w, ws, pv, p2);
    }
  }
  // t = 2 and t = 1 together, 8 coefficients (two vectors) per step, in registers:
  // t = 2 (m = N/4): pairs (j, j+2) inside each 4-element group, one twiddle per group;
  // t = 1 (m = N/2): pairs (2i, 2i+1) with twiddle fw[N/2 + i].
  const fw2 = tab(base, 2);
  const fw2s = tab(base, 3);
  const half = <usize>(n >> 1) << 2;
  const sh = tab(base, 8);
  const shs = tab(base, 9);
  for (let j = 0; j < n; j += 8) {
    const o = <usize>j << 2;
    const x = a + o;
    const A = v128.load(x);
    const B = v128.load(x + 16);
    // t = 2: X = a0 a1 a4 a5, Y = a2 a3 a6 a7
    const X = csub(i32x4.shuffle(A, B, 0, 1, 4, 5), p2);
    const T = shoup(i32x4.shuffle(A, B, 2, 3, 6, 7), v128.load(fw2 + (<usize>j << 1)), v128.load(fw2s + (<usize>j << 1)), pv);
    const U = i32x4.add(X, T); // new a0 a1 a4 a5
    const V = i32x4.add(i32x4.sub(X, T), p2); // new a2 a3 a6 a7
    // t = 1: X1 = a0 a2 a4 a6, Y1 = a1 a3 a5 a7
    const X1 = csub(i32x4.shuffle(U, V, 0, 4, 2, 6), p2);
    const T1 = shoup(i32x4.shuffle(U, V, 1, 5, 3, 7), v128.load(fw + half + (<usize>j << 1)), v128.load(fws + half + (<usize>j << 1)), pv);
    const U1 = i32x4.add(X1, T1);
    const V1 = i32x4.add(i32x4.sub(X1, T1), p2);
    let R0 = i32x4.shuffle(U1, V1, 0, 4, 1, 5);
    let R1 = i32x4.shuffle(U1, V1, 2, 6, 3, 7);
    if (mul) {
      R0 = shoup(R0, v128.load(sh + o), v128.load(shs + o), pv);
      R1 = shoup(R1, v128.load(sh + o + 16), v128.load(shs + o + 16), pv);
    }
    v128.store(x, R0);
    v128.store(x + 16, R1);
  }
}

/** Inverse negacyclic NTT in place without the 1/N factor; input [0, 2p), output [0, 2p). */
function inverse(a: usize, base: usize, p: u32): void {
  const n = N;
  const pv = i32x4.splat(p);
  const p2 = i32x4.splat(p << 1);
  const iw = tab(base, 4);
  const iws = tab(base, 5);
  // t = 1 and t = 2 together, 8 coefficients per step, in registers:
  // t = 1 (h = N/2): pairs (2i, 2i+1) with twiddle iw[N/2 + i];
  // t = 2 (h = N/4): pairs (j, j+2) inside each 4-element group.
  const half = <usize>(n >> 1) << 2;
  const iw2 = tab(base, 6);
  const iw2s = tab(base, 7);
  for (let j = 0; j < n; j += 8) {
    const x = a + (<usize>j << 2);
    const A = v128.load(x);
    const B = v128.load(x + 16);
    const X = i32x4.shuffle(A, B, 0, 2, 4, 6);
    const Y = i32x4.shuffle(A, B, 1, 3, 5, 7);
    const U = csub(i32x4.add(X, Y), p2); // new a0 a2 a4 a6
    const V = shoup(i32x4.add(i32x4.sub(X, Y), p2), v128.load(iw + half + (<usize>j << 1)), v128.load(iws + half + (<usize>j << 1)), pv); // a1 a3 a5 a7
    const X2 = i32x4.shuffle(U, V, 0, 4, 2, 6); // a0 a1 a4 a5
    const Y2 = i32x4.shuffle(U, V, 1, 5, 3, 7); // a2 a3 a6 a7
    const U2 = csub(i32x4.add(X2, Y2), p2);
    const V2 = shoup(i32x4.add(i32x4.sub(X2, Y2), p2), v128.load(iw2 + (<usize>j << 1)), v128.load(iw2s + (<usize>j << 1)), pv);
    v128.store(x, i32x4.shuffle(U2, V2, 0, 1, 4, 5));
    v128.store(x + 16, i32x4.shuffle(U2, V2, 2, 3, 6, 7));
  }
  // stages t = 4 .. N/2: two at a time (radix 4), (t, 2t) with h = N/(2t) >= 2
  let t = 4;
  let h = n >> 3;
  for (; h >= 2; h >>= 2, t <<= 2) {
    const d = <usize>t << 2; // byte distance of the first stage
    for (let g = 0; g < (h >> 1); g++) {
      const w1 = v128.load32_splat(iw + (<usize>(h + 2 * g) << 2));
      const w1s = v128.load32_splat(iws + (<usize>(h + 2 * g) << 2));
      const w2 = v128.load32_splat(iw + (<usize>(h + 2 * g + 1) << 2));
      const w2s = v128.load32_splat(iws + (<usize>(h + 2 * g + 1) << 2));
      const w3 = v128.load32_splat(iw + (<usize>((h >> 1) + g) << 2));
      const w3s = v128.load32_splat(iws + (<usize>((h >> 1) + g) << 2));
      let x = a + (<usize>(4 * g * t) << 2);
      const end = x + d;
      for (; x < end; x += 16) {
        // inputs and every intermediate in [0, 2p)
        const X0 = v128.load(x);
        const X1 = v128.load(x + d);
        const X2 = v128.load(x + 2 * d);
        const X3 = v128.load(x + 3 * d);
        const A0 = csub(i32x4.add(X0, X1), p2);
        const A1 = shoup(i32x4.add(i32x4.sub(X0, X1), p2), w1, w1s, pv);
        const A2 = csub(i32x4.add(X2, X3), p2);
        const A3 = shoup(i32x4.add(i32x4.sub(X2, X3), p2), w2, w2s, pv);
        v128.store(x, csub(i32x4.add(A0, A2), p2));
        v128.store(x + 2 * d, shoup(i32x4.add(i32x4.sub(A0, A2), p2), w3, w3s, pv));
        v128.store(x + d, csub(i32x4.add(A1, A3), p2));
        v128.store(x + 3 * d, shoup(i32x4.add(i32x4.sub(A1, A3), p2), w3, w3s, pv));
      }
    }
  }
  // a remaining radix-2 stage (h = 1, t = N/2) when the stage count is odd
  for (; h >= 1; h >>= 1, t <<= 1) {
    for (let i = 0; i < h; i++) {
      const w = v128.load32_splat(iw + (<usize>(h + i) << 2));
      const ws = v128.load32_splat(iws + (<usize>(h + i) << 2));
      let x = a + (<usize>(2 * i * t) << 2);
      const end = x + (<usize>t << 2);
      const off = <usize>t << 2;
      for (; x < end; x += 16) {
        const X = v128.load(x);
        const Y = v128.load(x + off);
        v128.store(x, csub(i32x4.add(X, Y), p2));
        v128.store(x + off, shoup(i32x4.add(i32x4.sub(X, Y), p2), w, ws, pv));
      }
    }
  }
}

/** Forward NTT of buffer k (0 or 1) in place, output reduced to [0, p). Used once per secret. */
export function nttForward(k: i32): void {
  const buf = k == 0 ? BUF0 : BUF1;
  const p = k == 0 ? P0 : P1;
  forward(buf, k == 0 ? T0 : T1, p, false);
  const pv = i32x4.splat(p);
  const p2 = i32x4.splat(p << 1);
  const n = <usize>N << 2;
  for (let o: usize = 0; o < n; o += 16) v128.store(buf + o, csub(csub(v128.load(buf + o), p2), pv));
}

/** Inverse NTT (without 1/N) of buffer k in place, output reduced to [0, p). For tests. */
export function nttInverse(k: i32): void {
  const buf = k == 0 ? BUF0 : BUF1;
  const p = k == 0 ? P0 : P1;
  inverse(buf, k == 0 ? T0 : T1, p);
  const pv = i32x4.splat(p);
  const n = <usize>N << 2;
  for (let o: usize = 0; o < n; o += 16) v128.store(buf + o, csub(v128.load(buf + o), pv));
}

/** BUF0/BUF1 <- a*s mod p0 / p1 in [0, 2p) (natural order); inputs hold residues in [0, 4p). */
export function mulSecret(): void {
  forward(BUF0, T0, P0, true);
  inverse(BUF0, T0, P0);
  forward(BUF1, T1, P1, true);
  inverse(BUF1, T1, P1);
}

/** Residues in [0, 4p) of N 44-bit values stored as 6-byte little-endian integers (high 4 bits ignored). */
export function loadResidues44(src: usize): void {
  splitMask44(src);
  const p0 = i32x4.splat(P0);
  const p1 = i32x4.splat(P1);
  const p02 = i32x4.splat(P0 << 1);
  const p12 = i32x4.splat(P1 << 1);
  const c0 = i32x4.splat(C0);
  const c0s = i32x4.splat(C0S);
  const c1 = i32x4.splat(C1);
  const c1s = i32x4.splat(C1S);
  const n = <usize>N << 2;
  for (let o: usize = 0; o < n; o += 16) {
    // back to a = hi 2^32 + lo with lo unsigned: (hi * (2^32 mod p)) in [0, 2p) + lo reduced to [0, 2p)
    const lo = v128.load(BUF0 + o);
    const hi = i32x4.sub(v128.load(BUF1 + o), i32x4.shr_u(lo, 31));
    v128.store(BUF0 + o, i32x4.add(shoup(hi, c0, c0s, p0), csub(csub(lo, p02), p02)));
    v128.store(BUF1 + o, i32x4.add(shoup(hi, c1, c1s, p1), csub(csub(lo, p12), p12)));
  }
}

/** Residues in [0, 4p) of N u32 values (needs 2^32 < 6p). */
export function loadResidues32(src: usize): void {
  const p02 = i32x4.splat(P0 << 1);
  const p12 = i32x4.splat(P1 << 1);
  const n = <usize>N << 2;
  for (let o: usize = 0; o < n; o += 16) {
    const x = v128.load(src + o);
    v128.store(BUF0 + o, csub(x, p02));
    v128.store(BUF1 + o, csub(x, p12));
  }
}

/**
 * CRT digit for 4 coefficients at byte offset o: returns t in [0, p1) with
 * a*s = r0 + p0 t - [t > p1/2] p0 p1 (exact because |a*s| < 2^55, so t is near 0 or near p1).
 * r0 (in [0, p0)) is written back to BUF0.
 */
@inline export function crtDigit(o: usize): v128 {
  const p0 = i32x4.splat(P0);
  const p1 = i32x4.splat(P1);
  const r0 = csub(v128.load(BUF0 + o), p0);
  const r1 = csub(v128.load(BUF1 + o), p1);
  v128.store(BUF0 + o, r0);
  // r1 - r0 + 2 p1 is positive and < 3 p1 (r0 < p0 < 2 p1)
  const d = i32x4.add(i32x4.sub(r1, r0), i32x4.splat(P1 << 1));
  return csub(shoup(d, i32x4.splat(PINV), i32x4.splat(PINVS), p1), p1);
}

/** Exact product a*s as i64 (dst: N i64) for a given as 6-byte 44-bit values at src. For tests. */
export function productExact44(src: usize, dst: usize): void {
  loadResidues44(src);
  mulSecret();
  finishExact(dst);
}

/** Exact product a*s as i64 (dst: N i64) for u32 a at src. For tests. */
export function productExact32(src: usize, dst: usize): void {
  loadResidues32(src);
  mulSecret();
  finishExact(dst);
}

export function finishExact(dst: usize): void {
  const half = i32x4.splat(P1 >> 1);
  const pp = i64x2.splat(<i64>P0 * <i64>P1);
  const p0 = i32x4.splat(P0);
  const n = N;
  for (let j = 0; j < n; j += 4) {
    const o = <usize>j << 2;
    const t = crtDigit(o);
    const r0 = v128.load(BUF0 + o);
    const flag = i32x4.gt_u(t, half);
    const lo = i64x2.sub(i64x2.add(i64x2.extend_low_i32x4_u(r0), i64x2.extmul_low_i32x4_u(t, p0)),
      v128.and(i64x2.extend_low_i32x4_s(flag), pp));
    const hi = i64x2.sub(i64x2.add(i64x2.extend_high_i32x4_u(r0), i64x2.extmul_high_i32x4_u(t, p0)),
      v128.and(i64x2.extend_high_i32x4_s(flag), pp));
    v128.store(dst + (<usize>j << 3), lo);
    v128.store(dst + (<usize>j << 3) + 16, hi);
  }
}
