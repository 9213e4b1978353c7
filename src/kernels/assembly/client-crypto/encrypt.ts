// Encryption: b = a*s + e + (m << deltaShift) mod 2^44, a*s by FFT (or by the exact NTT, the
// reference), fused with noise sampling, the upload rounding and byte packing.

import { productInBuf, productInBufTwo, roundedLow } from './fft';
import { maskHighBits, maskLowWords, splitMask44 } from './mask';
import { finishExact, loadResidues44, mulSecret } from './ntt';
import { BUF0, BUF1, FN2, N, SPLIT, WIDE } from './setup';

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

// Two polynomials A, B at a time (when the FFT bound allows, see fftProductErrorBound in
// src/kernels/fft-product.ts): a = lo + 2^34 hi with a 34-bit signed lo and hi <= 2^10. hi_A*s and hi_B*s are needed modulo
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
