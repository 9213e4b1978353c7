// Negacyclic product kernels for the RLWE client (AssemblyScript -> WebAssembly SIMD).
//
// Ring Z[X]/(X^N + 1). Encryption and decryption need products a*s of a (< 2^44, or < 2^32) with
// a ternary secret s. They run by double-precision FFT (the FFT section below: two transforms per
// 32-bit operand, exact after rounding); the two-prime NTT here is the exact reference the tests
// compare them with, bit for bit (encryptPolys and decryptRows with exactNtt).
//
// NTT: the product is computed exactly modulo two ~30-bit primes p0, p1 (p = 1 mod 2N, 4p < 2^32 < 6p) and
// recombined by CRT: |a*s| < 2^44 * N = 2^55 << p0*p1/2 ~ 2^59, so the centered CRT value is
// the exact integer product; the callers only need it modulo 2^44 (encrypt) or 2^32 (decrypt).
//
// NTT: Cooley-Tukey forward (natural order in, bit-reversed out) and Gentleman-Sande inverse
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
// Memory is owned by the TypeScript wrapper (src/kernels/ntt.ts): it writes the tables, calls
// setup() once with their offsets, and passes buffer offsets to every call. Nothing here
// allocates. Table layout per prime k (u32, each table followed by its Shoup companions):
//   fw:  N psi^brv(i)               (forward twiddles; index m + i)
//   fw2: N/2, stage t = 2 expanded as [w_i, w_i, w_{i+1}, w_{i+1}] per vector
//   iw:  N psi^-brv(i)              (inverse twiddles; index h + i)
//   iw2: N/2, stage t = 2 of the inverse, expanded like fw2
//   sh:  N   NTT(s) * N^-1 mod p    (the secret in NTT form with the 1/N of the inverse folded in)

let N: i32 = 0;
let P0: u32 = 0;
let P1: u32 = 0;
/** Per-prime table bases: [fw, fws, fw2, fw2s, iw, iws, iw2, iw2s, sh, shs] offsets. */
let T0: usize = 0;
let T1: usize = 0;
/** 2^32 mod p_k and its Shoup companion (residue of the high word of a 44-bit value). */
let C0: u32 = 0;
let C0S: u32 = 0;
let C1: u32 = 0;
let C1S: u32 = 0;
/** p0^-1 mod p1 and its Shoup companion (CRT). */
let PINV: u32 = 0;
let PINVS: u32 = 0;
/** Work buffers: N u32 residues for each prime. */
let BUF0: usize = 0;
let BUF1: usize = 0;

export function heapBase(): usize {
  return __heap_base;
}

/**
 * Records the ring degree, the primes, table bases and scratch buffers. Each table base points at
 * 10 consecutive u32 arrays (see the layout above; sizes N, N, N/2, N/2, N, N, N/2, N/2, N, N).
 */
export function setup(n: i32, p0: u32, p1: u32, t0: usize, t1: usize, c0: u32, c0s: u32, c1: u32, c1s: u32,
  pinv: u32, pinvs: u32, buf0: usize, buf1: usize): void {
  N = n; P0 = p0; P1 = p1; T0 = t0; T1 = t1;
  C0 = c0; C0S = c0s; C1 = c1; C1S = c1s; PINV = pinv; PINVS = pinvs;
  BUF0 = buf0; BUF1 = buf1;
}

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
function mulSecret(): void {
  forward(BUF0, T0, P0, true);
  inverse(BUF0, T0, P0);
  forward(BUF1, T1, P1, true);
  inverse(BUF1, T1, P1);
}

/**
 * BUF0 <- the low words of N 44-bit values at src (6-byte little-endian, top 4 bits ignored) read
 * as int32, BUF1 <- the rest: a = lo + 2^32 hi (mod 2^44) with -2^31 <= lo < 2^31 and
 * 0 <= hi <= 2^12, so that both products with s are exact by FFT (fftProductErrorBound).
 */
function splitMask44(src: usize): void {
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
@inline function maskLowWords(s: usize): v128 {
  return i8x16.shuffle(v128.load(s), v128.load(s + 8), 0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, 26, 27, 28, 29);
}

/** Bits 32..43 of the four 6-byte mask values at s. */
// @ts-ignore: decorator
@inline function maskHighBits(s: usize): v128 {
  return v128.and(i8x16.shuffle(v128.load(s), v128.load(s + 8), 4, 5, 0, 0, 10, 11, 0, 0, 24, 25, 0, 0, 30, 31, 0, 0), i32x4.splat(0xfff));
}

/** Residues in [0, 4p) of N 44-bit values stored as 6-byte little-endian integers (high 4 bits ignored). */
function loadResidues44(src: usize): void {
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
function loadResidues32(src: usize): void {
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
@inline function crtDigit(o: usize): v128 {
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

function finishExact(dst: usize): void {
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

/**
 * Discrete Gaussian errors of one polynomial, in place: the N u32 draws at u become the signed
 * errors e = +-#{k : u >= cdt[k]} (sign: bit lane of the byte at bits + j/4). Constant time: every
 * draw is compared with every threshold. Counted as nCdt - #{k : cdt[k] > u} with both sides'
 * top bits flipped, so that one signed compare (a single x86 instruction, unlike the unsigned
 * one) decides each pair. Four vectors share each threshold load and loop step.
 */
function sampleNoise(u: usize, bits: usize, cdt: usize, nCdt: i32): void {
  const n = <usize>N;
  const zero = i32x4.splat(0);
  const top = i32x4.splat(0x80000000);
  const count = i32x4.splat(nCdt);
  const signBits = i32x4(1, 2, 4, 8);
  for (let j: usize = 0; j < n; j += 16) {
    const x = u + (j << 2);
    const u0 = v128.xor(v128.load(x), top);
    const u1 = v128.xor(v128.load(x + 16), top);
    const u2 = v128.xor(v128.load(x + 32), top);
    const u3 = v128.xor(v128.load(x + 48), top);
    let m0 = count, m1 = count, m2 = count, m3 = count;
    for (let k = 0; k < nCdt; k++) {
      const thr = v128.xor(v128.load32_splat(cdt + (<usize>k << 2)), top);
      m0 = i32x4.add(m0, i32x4.gt_s(thr, u0));
      m1 = i32x4.add(m1, i32x4.gt_s(thr, u1));
      m2 = i32x4.add(m2, i32x4.gt_s(thr, u2));
      m3 = i32x4.add(m3, i32x4.gt_s(thr, u3));
    }
    const b = bits + (j >> 2);
    const s0 = i32x4.ne(v128.and(i32x4.splat(<i32>load<u8>(b)), signBits), zero);
    const s1 = i32x4.ne(v128.and(i32x4.splat(<i32>load<u8>(b + 1)), signBits), zero);
    const s2 = i32x4.ne(v128.and(i32x4.splat(<i32>load<u8>(b + 2)), signBits), zero);
    const s3 = i32x4.ne(v128.and(i32x4.splat(<i32>load<u8>(b + 3)), signBits), zero);
    v128.store(x, i32x4.sub(v128.xor(m0, s0), s0));
    v128.store(x + 16, i32x4.sub(v128.xor(m1, s1), s1));
    v128.store(x + 32, i32x4.sub(v128.xor(m2, s2), s2));
    v128.store(x + 48, i32x4.sub(v128.xor(m3, s3), s3));
  }
}

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

// ---------------------------------------------------------------------------------------------
// Products by double-precision FFT.
//
// Decryption needs c = a*s mod 2^32 for 32-bit a; encryption splits its 44-bit a into a signed
// low word and a 12-bit rest (splitMask44), two such products, or takes two polynomials at a time
// with three (splitMask34, in the encryption section). Over the integers
// |a*s| < 2^31 * N, so a floating-point convolution that is accurate to better than 1/2 gives the
// exact product after rounding (the error bound, fftProductErrorBound, and its measurement live in
// src/kernels/ntt.ts and ntt.test.ts). A real
// negacyclic product of length N is one complex cyclic product of length N/2: fold
// z_j = (a_j + i a_{j+N/2}) zeta^j (zeta = e^{i pi/N}), transform, multiply by the secret's
// transform, transform back, unfold (Re -> c_j, Im -> c_{j+N/2}) after multiplying by zeta^-j.
// That is two complex FFTs of N/2 points per row instead of four NTTs of N points (two primes).
//
// Complex values are f64x2 (re, im). A constant w is stored as two vectors (wr, wr), (-wi, wi):
// x*w = x*(wr, wr) + swap(x)*(-wi, wi). Tables (set up by src/kernels/ntt.ts), N/2 = n2 entries
// of 32 bytes unless noted:
//   twist: zeta^j;  untwist: zeta^-j;  secret: FFT(fold(s)) / n2;
//   fw / iw: n2/2 entries e^{+-2 pi i j / n2}: the one radix-2 stage (half-length n2/2) run when the
//     count of wide stages is odd.
//   fw4 / iw4: radix-4 passes (stages h and h/2 at once, q = h/2): at entry 3(q - 1) + 3j + m,
//     w^{+-(m+1) j} with w = e^{2 pi i/(2h)}, j < q, m = 0, 1, 2.
// The wide stages (h >= 4) run as radix-4 passes (3 complex products per 4 points instead of 4,
// half the passes over the buffer), after one radix-2 stage when their count is odd.

let FN2: i32 = 0;
let FTWIST: usize = 0;
let FUNTWIST: usize = 0;
let FFW: usize = 0;
let FIW: usize = 0;
let FFW4: usize = 0;
let FIW4: usize = 0;
let FSECRET: usize = 0;
let FBUF: usize = 0;
/** 2N i64: the encryption's a*s for up to two polynomials (see gatherProduct). */
let WIDE: usize = 0;
/** 6N i32: the encryption's split masks when polynomials go in pairs (splitMask34). */
let SPLIT: usize = 0;
/** 1.5 * 2^52: x + MAGIC rounds x to an integer whose low 32 bits are the low word of the sum. */
const MAGIC: f64 = 6755399441055744.0;

export function setupFft(n2: i32, twist: usize, untwist: usize, fw: usize, iw: usize, fw4: usize, iw4: usize, secret: usize, buf: usize, wide: usize, split: usize): void {
  FN2 = n2; FTWIST = twist; FUNTWIST = untwist; FFW = fw; FIW = iw; FFW4 = fw4; FIW4 = iw4; FSECRET = secret; FBUF = buf; WIDE = wide; SPLIT = split;
}

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
function productInBuf(src: usize): void {
  foldForward(src);
  transformProduct();
}

/** productInBuf for a = x + scale * y (see foldForwardTwo). */
function productInBufTwo(x: usize, y: usize, scale: f64): void {
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
@inline function roundedLow(j: usize): v128 {
  return f64x2.add(cmul(v128.load(FBUF + (j << 4)), FUNTWIST + (j << 5)), f64x2.splat(MAGIC));
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

// ---------------------------------------------------------------------------------------------
// Encryption.

/**
 * dst (N i64, natural order) = (accumulate: +=) round(the untwisted product in FBUF) << shift,
 * modulo 2^64. The rounded value's bit pattern (x + 1.5 * 2^52) equals x + 2^51 in its low 52
 * bits for |x| < 2^51, so it is x modulo 2^48: all an encryption modulo 2^44 needs.
 */
function gatherProduct(dst: usize, shift: i32, accumulate: bool): void {
  const n2 = <usize>FN2;
  const hiOff = n2 << 3;
  for (let j: usize = 0; j < n2; j += 2) {
    const r0 = roundedLow(j), r1 = roundedLow(j + 1); // (c_j, c_{j+n2}), (c_{j+1}, c_{j+1+n2})
    let lo = i64x2.shl(v128.shuffle<i64>(r0, r1, 0, 2), shift);
    let hi = i64x2.shl(v128.shuffle<i64>(r0, r1, 1, 3), shift);
    const p = dst + (j << 3);
    if (accumulate) {
      lo = i64x2.add(lo, v128.load(p));
      hi = i64x2.add(hi, v128.load(p + hiOff));
    }
    v128.store(p, lo);
    v128.store(p + hiOff, hi);
  }
}

// Two polynomials A, B at a time (when the FFT bound allows, see fftProductErrorBound in ntt.ts):
// a = lo + 2^34 hi with a 34-bit signed lo and hi <= 2^10. hi_A*s and hi_B*s are needed modulo
// 2^10 only, and |hi*s| <= 2^21, so one product of z = hi_A + 2^23 hi_B carries both:
// z*s = y_A + 2^23 y_B with y_A the centered residue modulo 2^23. Three products per two
// polynomials instead of four; every operand stays below 2^33 + 2^10 in magnitude.

/**
 * The masks at src as a = w + 2^32 top + 2^34 hi (mod 2^44), N i32 each: w the low word (read
 * signed), top in [-2, 2], so that lo = w + 2^32 top is the centered residue modulo 2^34
 * (-2^33 <= lo < 2^33), and 0 <= hi <= 2^10.
 */
function splitMask34(src: usize, w: usize, top: usize, hi: usize): void {
  const n = N;
  const two = i32x4.splat(2);
  const minus4 = i32x4.splat(-4);
  for (let j = 0; j < n; j += 4) {
    const s = src + <usize>j * 6;
    const lw = maskLowWords(s);
    const h12 = maskHighBits(s);
    const t = v128.and(h12, i32x4.splat(3));
    const carry = i32x4.ge_u(t, two); // bit 33 set: lo is negative, hi takes the carry
    const o = <usize>j << 2;
    v128.store(w + o, lw);
    // bits 32..33 as a signed value in [-2, 1], plus bit 31 (w is read signed)
    v128.store(top + o, i32x4.add(i32x4.add(t, v128.and(carry, minus4)), i32x4.shr_u(lw, 31)));
    v128.store(hi + o, i32x4.sub(i32x4.shr_u(h12, 2), carry));
  }
}

/** dstA, dstB (N i64 each) = y_A << 34, y_B << 34 from the product z*s in FBUF (see above). */
function gatherPacked(dstA: usize, dstB: usize): void {
  const n2 = <usize>FN2;
  const hiOff = n2 << 3;
  for (let j: usize = 0; j < n2; j += 2) {
    const r0 = roundedLow(j), r1 = roundedLow(j + 1);
    for (let half: usize = 0; half < 2; half++) {
      const r = half == 0 ? v128.shuffle<i64>(r0, r1, 0, 2) : v128.shuffle<i64>(r0, r1, 1, 3);
      const yA = i64x2.shr_s(i64x2.shl(r, 41), 41);
      const yB = i64x2.shr_s(i64x2.sub(r, yA), 23);
      const o = (j << 3) + half * hiOff;
      v128.store(dstA + o, i64x2.shl(yA, 34));
      v128.store(dstB + o, i64x2.shl(yB, 34));
    }
  }
}

/**
 * Encrypts nPolys polynomials: b = a*s + e + (m << deltaShift), uploaded as
 * (((b + 2^(upShift-1) - 1 + tie) mod 2^44) >> upShift) mod 2^(8 outBytes), outBytes
 * little-endian bytes each (a random tie bit makes the upload rounding unbiased).
 *   aSrc: nPolys*N*6 bytes (mask values), m: nPolys*N messages of mBytes bytes each (1, 2 or 4;
 *   signed, widened here so that callers can hand over int8 activations as they are),
 *   rnd: nPolys*N u32 (noise magnitude draws) then nPolys*N/4 bytes (per coefficient: bit lane =
 *   sign, bit 4+lane = rounding tie, for the 4 coefficients of each byte),
 *   cdt: nCdt u32 thresholds (|e| = #{k : u >= cdt[k]}), out: nPolys*N*outBytes (+8 slack).
 * a*s: by FFT, two products per polynomial (the low 32 bits of a and the high 12, splitMask44) or,
 * with pairHigh, three per pair of polynomials (splitMask34); with exactNtt by the two-prime NTT
 * (the reference). All three give the same result bit for bit.
 * The noise draws in rnd are overwritten by the sampled errors (the caller wipes rnd afterwards).
 * Returns 0, or 1 if some |m| >= mLimit (the caller then discards the output).
 */
export function encryptPolys(nPolys: i32, aSrc: usize, m: usize, rnd: usize, cdt: usize, nCdt: i32,
  deltaShift: i32, upShift: i32, outBytes: i32, out: usize, mLimit: i32, exactNtt: bool, mBytes: i32, pairHigh: bool): i32 {
  const lim = i32x4.splat(mLimit);
  const lim2 = i32x4.splat(mLimit << 1);
  let bad = i32x4.splat(0);
  const n = N;
  const nb = <usize>n << 3;
  const tieBits = i32x4(16, 32, 64, 128);
  const one = i32x4.splat(1);
  const roundAdd = i64x2.splat((<i64>1 << (upShift - 1)) - 1);
  const q1 = i64x2.splat((<i64>1 << 44) - 1);
  const outMask: u64 = outBytes >= 8 ? <u64>-1 : (<u64>1 << (<u64>outBytes << 3)) - 1;
  const bits = rnd + (<usize>nPolys * <usize>n << 2);
  let dst = out;
  for (let poly = 0; poly < nPolys;) {
    const pair = pairHigh && !exactNtt && poly + 1 < nPolys;
    const group = pair ? 2 : 1;
    const first = <usize>poly * <usize>n;
    const a = aSrc + first * 6;
    // WIDE (one N i64 row per polynomial of the group) = a*s modulo 2^44 (all paths agree on those bits only)
    if (exactNtt) {
      loadResidues44(a);
      mulSecret();
      finishExact(WIDE);
    } else if (pair) {
      const ib = <usize>n << 2; // SPLIT: w, top, hi of A, then of B
      splitMask34(a, SPLIT, SPLIT + ib, SPLIT + 2 * ib);
      splitMask34(a + <usize>n * 6, SPLIT + 3 * ib, SPLIT + 4 * ib, SPLIT + 5 * ib);
      productInBufTwo(SPLIT + 2 * ib, SPLIT + 5 * ib, 8388608.0); // hi_A + 2^23 hi_B
      gatherPacked(WIDE, WIDE + nb);
      productInBufTwo(SPLIT, SPLIT + ib, 4294967296.0);
      gatherProduct(WIDE, 0, true);
      productInBufTwo(SPLIT + 3 * ib, SPLIT + 4 * ib, 4294967296.0);
      gatherProduct(WIDE + nb, 0, true);
    } else {
      splitMask44(a);
      productInBuf(BUF1);
      gatherProduct(WIDE, 32, false);
      productInBuf(BUF0);
      gatherProduct(WIDE, 0, true);
    }
    for (let g = 0; g < group; g++) {
      const base = first + <usize>g * <usize>n;
      sampleNoise(rnd + (base << 2), bits + (base >> 2), cdt, nCdt);
      const wide = WIDE + <usize>g * nb;
      for (let j = 0; j < n; j += 4) {
        const e = v128.load(rnd + ((base + <usize>j) << 2)); // sampled by sampleNoise
        const bb = i32x4.splat(<i32>load<u8>(bits + ((base + <usize>j) >> 2)));
        const tie = v128.and(i32x4.ne(v128.and(bb, tieBits), i32x4.splat(0)), one);
        const at = base + <usize>j;
        const mm = mBytes == 1 ? i32x4.extend_low_i16x8_s(i16x8.extend_low_i8x16_s(v128.load32_zero(m + at)))
          : mBytes == 2 ? i32x4.extend_low_i16x8_s(v128.load64_zero(m + (at << 1)))
          : v128.load(m + (at << 2));
        bad = v128.or(bad, i32x4.ge_u(i32x4.add(mm, lim), lim2));
        const add32 = i32x4.add(e, tie);
        const w = wide + (<usize>j << 3);
        let lo = i64x2.add(v128.load(w), i64x2.add(i64x2.extend_low_i32x4_s(add32), i64x2.shl(i64x2.extend_low_i32x4_s(mm), deltaShift)));
        let hi = i64x2.add(v128.load(w + 16), i64x2.add(i64x2.extend_high_i32x4_s(add32), i64x2.shl(i64x2.extend_high_i32x4_s(mm), deltaShift)));
        lo = i64x2.shr_u(v128.and(i64x2.add(lo, roundAdd), q1), upShift);
        hi = i64x2.shr_u(v128.and(i64x2.add(hi, roundAdd), q1), upShift);
        // overlapping 8-byte stores in ascending order leave exactly outBytes bytes per value
        store<u64>(dst, i64x2.extract_lane(lo, 0) & outMask); dst += <usize>outBytes;
        store<u64>(dst, i64x2.extract_lane(lo, 1) & outMask); dst += <usize>outBytes;
        store<u64>(dst, i64x2.extract_lane(hi, 0) & outMask); dst += <usize>outBytes;
        store<u64>(dst, i64x2.extract_lane(hi, 1) & outMask); dst += <usize>outBytes;
      }
    }
    poly += group;
  }
  return v128.any_true(bad) ? 1 : 0;
}

/**
 * dst[c*rows + r] = src[r*cols + c] for an i32 matrix (rows x cols): 4 x 4 blocks in registers,
 * then the edges one value at a time.
 */
export function transposeI32(src: usize, rows: i32, cols: i32, dst: usize): void {
  const r4 = rows & ~3, c4 = cols & ~3;
  const rs = <usize>cols << 2, ds = <usize>rows << 2;
  for (let r = 0; r < r4; r += 4) {
    for (let c = 0; c < c4; c += 4) {
      const p = src + ((<usize>r * <usize>cols + <usize>c) << 2);
      const x0 = v128.load(p), x1 = v128.load(p + rs), x2 = v128.load(p + 2 * rs), x3 = v128.load(p + 3 * rs);
      const t0 = i32x4.shuffle(x0, x1, 0, 4, 1, 5), t1 = i32x4.shuffle(x2, x3, 0, 4, 1, 5);
      const t2 = i32x4.shuffle(x0, x1, 2, 6, 3, 7), t3 = i32x4.shuffle(x2, x3, 2, 6, 3, 7);
      const d = dst + ((<usize>c * <usize>rows + <usize>r) << 2);
      v128.store(d, v128.shuffle<i64>(t0, t1, 0, 2));
      v128.store(d + ds, v128.shuffle<i64>(t0, t1, 1, 3));
      v128.store(d + 2 * ds, v128.shuffle<i64>(t2, t3, 0, 2));
      v128.store(d + 3 * ds, v128.shuffle<i64>(t2, t3, 1, 3));
    }
  }
  for (let r = 0; r < rows; r++) {
    for (let c = r < r4 ? c4 : 0; c < cols; c++) {
      store<i32>(dst + ((<usize>c * <usize>rows + <usize>r) << 2), load<i32>(src + ((<usize>r * <usize>cols + <usize>c) << 2)));
    }
  }
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

// ---------------------------------------------------------------------------------------------
// Encoding: token-major client values into feature-major rows (each feature's tokens contiguous,
// the order the encryption's polynomials take them), with every token's L1 norm on the way.

/** The sum of the four lanes of s. */
// @ts-ignore: decorator
@inline function laneSum(s: v128): i64 {
  return <i64>i32x4.extract_lane(s, 0) + <i64>i32x4.extract_lane(s, 1) + <i64>i32x4.extract_lane(s, 2) + <i64>i32x4.extract_lane(s, 3);
}

/** Features i0 .. i1-1 of one token row (column dst, stride tt) one at a time; returns their L1 norm. */
function tokenRunI8(row: usize, i0: i32, i1: i32, dst: usize, tt: usize): i64 {
  let l: i64 = 0;
  for (let i = i0; i < i1; i++) {
    const x = <i32>load<i8>(row + <usize>i);
    store<i8>(dst + <usize>i * tt, <i8>x);
    l += <i64>(x < 0 ? -x : x);
  }
  return l;
}

// @ts-ignore: decorator
@inline function absSum(s: v128, x: v128): v128 {
  return i32x4.add(s, i32x4.extadd_pairwise_i16x8_u(i16x8.extadd_pairwise_i8x16_u(i8x16.abs(x))));
}

/** Feature-block width of featureMajorI8: 64 destination rows (one cache line each) stay in L1. */
const FM_FEATURES: i32 = 64;

/**
 * int8 values src[t*K + i] (T x K) -> dst[i*T + t], and l1[t] = sum_i |src[t*K + i]| (f64).
 * Features in blocks of FM_FEATURES; inside, 4 tokens x 16 features go through registers
 * (byte transposes); the edges one value at a time.
 */
export function featureMajorI8(src: usize, T: i32, K: i32, dst: usize, l1: usize): void {
  const k = <usize>K, tt = <usize>T;
  const T4 = T & ~3, K16 = K & ~15;
  memory.fill(l1, 0, <usize>T << 3);
  for (let f0 = 0; f0 < K16; f0 += FM_FEATURES) {
    const f1 = min(K16, f0 + FM_FEATURES);
    for (let t = 0; t < T4; t += 4) {
      const r0 = src + <usize>t * k;
      let s0 = i32x4.splat(0), s1 = s0, s2 = s0, s3 = s0;
      for (let i = f0; i < f1; i += 16) {
        const x0 = v128.load(r0 + <usize>i), x1 = v128.load(r0 + k + <usize>i);
        const x2 = v128.load(r0 + 2 * k + <usize>i), x3 = v128.load(r0 + 3 * k + <usize>i);
        s0 = absSum(s0, x0); s1 = absSum(s1, x1); s2 = absSum(s2, x2); s3 = absSum(s3, x3);
        // bytes (x0[j], x1[j], x2[j], x3[j]) of feature i + j become one 32-bit word
        const a = i8x16.shuffle(x0, x1, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        const b = i8x16.shuffle(x0, x1, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        const c = i8x16.shuffle(x2, x3, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        const d = i8x16.shuffle(x2, x3, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        const w0 = i16x8.shuffle(a, c, 0, 8, 1, 9, 2, 10, 3, 11), w1 = i16x8.shuffle(a, c, 4, 12, 5, 13, 6, 14, 7, 15);
        const w2 = i16x8.shuffle(b, d, 0, 8, 1, 9, 2, 10, 3, 11), w3 = i16x8.shuffle(b, d, 4, 12, 5, 13, 6, 14, 7, 15);
        const o = dst + <usize>i * tt + <usize>t;
        store<i32>(o, i32x4.extract_lane(w0, 0)); store<i32>(o + tt, i32x4.extract_lane(w0, 1));
        store<i32>(o + 2 * tt, i32x4.extract_lane(w0, 2)); store<i32>(o + 3 * tt, i32x4.extract_lane(w0, 3));
        store<i32>(o + 4 * tt, i32x4.extract_lane(w1, 0)); store<i32>(o + 5 * tt, i32x4.extract_lane(w1, 1));
        store<i32>(o + 6 * tt, i32x4.extract_lane(w1, 2)); store<i32>(o + 7 * tt, i32x4.extract_lane(w1, 3));
        store<i32>(o + 8 * tt, i32x4.extract_lane(w2, 0)); store<i32>(o + 9 * tt, i32x4.extract_lane(w2, 1));
        store<i32>(o + 10 * tt, i32x4.extract_lane(w2, 2)); store<i32>(o + 11 * tt, i32x4.extract_lane(w2, 3));
        store<i32>(o + 12 * tt, i32x4.extract_lane(w3, 0)); store<i32>(o + 13 * tt, i32x4.extract_lane(w3, 1));
        store<i32>(o + 14 * tt, i32x4.extract_lane(w3, 2)); store<i32>(o + 15 * tt, i32x4.extract_lane(w3, 3));
      }
      const l = l1 + (<usize>t << 3);
      store<f64>(l, load<f64>(l) + <f64>laneSum(s0));
      store<f64>(l + 8, load<f64>(l + 8) + <f64>laneSum(s1));
      store<f64>(l + 16, load<f64>(l + 16) + <f64>laneSum(s2));
      store<f64>(l + 24, load<f64>(l + 24) + <f64>laneSum(s3));
    }
  }
  // The features past K16 of the first T4 tokens, then every feature of the last tokens.
  for (let t = 0; t < T; t++) {
    const l = l1 + (<usize>t << 3);
    store<f64>(l, load<f64>(l) + <f64>tokenRunI8(src + <usize>t * k, t < T4 ? K16 : 0, K, dst + <usize>t, tt));
  }
}

/** featureMajorI8 for int16 values (wider activations; a plain loop). */
export function featureMajorI16(src: usize, T: i32, K: i32, dst: usize, l1: usize): void {
  const k = <usize>K, tt = <usize>T;
  for (let t = 0; t < T; t++) {
    const row = src + ((<usize>t * k) << 1);
    let l: i64 = 0;
    for (let i = 0; i < K; i++) {
      const x = <i32>load<i16>(row + (<usize>i << 1));
      store<i16>(dst + ((<usize>i * tt + <usize>t) << 1), <i16>x);
      l += <i64>(x < 0 ? -x : x);
    }
    store<f64>(l1 + (<usize>t << 3), <f64>l);
  }
}
