// GEMM kernels for helora (AssemblyScript -> WebAssembly SIMD).
//
// Memory is managed by the TypeScript side (src/kernels/wasm.ts): every function takes raw byte
// offsets into linear memory and allocates nothing. Layouts (all little endian):
//
//   int16 path (i32x4.dot_i16x8_s, exact int32 accumulation):
//     A (weights) "4-row blocks": for row block b and k-pair q, 16 bytes = rows 4b..4b+3, each an
//       i16 pair (a[r][2q], a[r][2q+1]); a block holds K2 = ceil(K/2) pairs, rows/K padded with 0.
//     B (inputs) "8-column panels": for panel p and k-pair q, 32 bytes = columns 8p..8p+7, each an
//       i16 pair (b[2q][j], b[2q+1][j]).
//   f32 path (f32x4 mul+add):
//     A: for row block b and k, 16 bytes = a[4b..4b+3][k];  B: for panel p and k, 32 bytes = b[k][8p..8p+7].
//   C: padded row-major i32 / f32 with row stride ldc elements (a multiple of 8).
//
// Micro-kernel: a 4x8 output tile in 8 i32x4/f32x4 accumulators. V8 issues all loads of an
// iteration first (2 B vectors + 4 A splats), so 8 + 6 + 1 temporary = 15 of x86-64's 16 xmm
// registers are live; bigger tiles or unrolled bodies spill (measured slower). K is processed in chunks so that the
// B panels of one column group stay in L2 while each A block (4 rows x chunk) stays in L1.

/** k-pairs per chunk of the int16 kernel (1024 pairs: B panel 32 KiB, A block 16 KiB). */
const KC16: i32 = 1024;
/** 8-column panels per column group of the int16 kernel (16 panels x 32 KiB = 512 KiB in L2). */
const NCP16: i32 = 16;
/** k per chunk of the f32 kernel (B panel 16 KiB, A block 8 KiB). */
const KC32: i32 = 512;
/** Panels per column group of the f32 kernel (32 x 16 KiB = 512 KiB). */
const NCP32: i32 = 32;

export function heapBase(): usize {
  return __heap_base;
}

// ---------------------------------------------------------------------------------------------
// int16 path

/** Sign-extends 16 int8 of 4 rows (lanes = k-pairs) and writes the 8 pair rows of one block (4x4 i32 transposes). */
// @ts-ignore: decorator
@inline
function packA8Step(r0: v128, r1: v128, r2: v128, r3: v128, d: usize): void {
  const t0 = v128.shuffle<i32>(r0, r1, 0, 4, 1, 5);
  const t1 = v128.shuffle<i32>(r2, r3, 0, 4, 1, 5);
  const t2 = v128.shuffle<i32>(r0, r1, 2, 6, 3, 7);
  const t3 = v128.shuffle<i32>(r2, r3, 2, 6, 3, 7);
  v128.store(d, v128.shuffle<i64>(t0, t1, 0, 2));
  v128.store(d, v128.shuffle<i64>(t0, t1, 1, 3), 16);
  v128.store(d, v128.shuffle<i64>(t2, t3, 0, 2), 32);
  v128.store(d, v128.shuffle<i64>(t2, t3, 1, 3), 48);
}

/** Packs int8 a[M][K] (row-major at src, row stride lda bytes) into 4-row blocks of i16 pairs. */
export function packA8(src: usize, M: i32, K: i32, lda: i32, dst: usize): void {
  const K2 = (K + 1) >> 1;
  const Mb = (M + 3) >> 2;
  const ld = <usize>lda;
  for (let b = 0; b < Mb; b++) {
    const blk = dst + <usize>b * <usize>K2 * 16;
    const s0 = src + <usize>(b * 4) * ld;
    let k = 0;
    if (b * 4 + 4 <= M) {
      // 16 k (8 pairs) of 4 rows per step.
      for (; k + 16 <= K; k += 16) {
        const s = s0 + <usize>k;
        const v0 = v128.load(s), v1 = v128.load(s + ld), v2 = v128.load(s + ld * 2), v3 = v128.load(s + ld * 3);
        const d = blk + <usize>(k >> 1) * 16;
        packA8Step(i16x8.extend_low_i8x16_s(v0), i16x8.extend_low_i8x16_s(v1), i16x8.extend_low_i8x16_s(v2), i16x8.extend_low_i8x16_s(v3), d);
        packA8Step(i16x8.extend_high_i8x16_s(v0), i16x8.extend_high_i8x16_s(v1), i16x8.extend_high_i8x16_s(v2), i16x8.extend_high_i8x16_s(v3), d + 64);
      }
    }
    for (let r = 0; r < 4; r++) {
      const row = b * 4 + r;
      let p = blk + <usize>(k >> 1) * 16 + <usize>(r * 4);
      if (row >= M) {
        for (let q = k >> 1; q < K2; q++) { store<i32>(p, 0); p += 16; }
        continue;
      }
      const s = src + <usize>row * ld;
      for (let kk = k; kk < K; kk += 2) {
        const lo = <i32>load<i8>(s + <usize>kk);
        const hi = kk + 1 < K ? <i32>load<i8>(s + <usize>kk + 1) : 0;
        store<i32>(p, (lo & 0xffff) | (hi << 16));
        p += 16;
      }
    }
  }
}

/** Packs int8 b[K][N] (row stride ldb bytes) into 8-column panels of i16 pairs. */
export function packB8(src: usize, K: i32, N: i32, ldb: i32, dst: usize): void {
  const K2 = (K + 1) >> 1;
  const P = (N + 7) >> 3;
  const panStride = <usize>K2 * 32;
  const ld = <usize>ldb;
  const N16 = N & ~15;
  for (let q = 0; q < K2; q++) {
    const k = q * 2;
    const r0 = src + <usize>k * ld;
    const has1 = k + 1 < K;
    let j = 0;
    if (has1) {
      // 16 columns (two panels) per step: sign-extend both rows and interleave them into i16 pairs.
      for (; j < N16; j += 16) {
        const u = v128.load(r0 + <usize>j), v = v128.load(r0 + ld + <usize>j);
        const d = dst + <usize>(j >> 3) * panStride + <usize>q * 32;
        const u0 = i16x8.extend_low_i8x16_s(u), v0 = i16x8.extend_low_i8x16_s(v);
        const u1 = i16x8.extend_high_i8x16_s(u), v1 = i16x8.extend_high_i8x16_s(v);
        v128.store(d, i8x16.shuffle(u0, v0, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23));
        v128.store(d, i8x16.shuffle(u0, v0, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31), 16);
        v128.store(d + panStride, i8x16.shuffle(u1, v1, 0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23));
        v128.store(d + panStride, i8x16.shuffle(u1, v1, 8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31), 16);
      }
    }
    // Remaining columns (and the odd last row of K) one value pair at a time, padded with zeros.
    for (; j < P * 8; j++) {
      let v: i32 = 0;
      if (j < N) {
        const lo = <i32>load<i8>(r0 + <usize>j);
        const hi = has1 ? <i32>load<i8>(r0 + ld + <usize>j) : 0;
        v = (lo & 0xffff) | (hi << 16);
      }
      store<i32>(dst + <usize>(j >> 3) * panStride + <usize>(q * 32 + (j & 7) * 4), v);
    }
  }
}

// @ts-ignore: decorator
@inline
function kern16(a: usize, b: usize, c: usize, ldcBytes: usize, n: i32, zeroInit: bool): void {
  const c1 = c + ldcBytes;
  const c2 = c1 + ldcBytes;
  const c3 = c2 + ldcBytes;
  const z = i32x4.splat(0);
  let s00 = z, s01 = z, s10 = z, s11 = z, s20 = z, s21 = z, s30 = z, s31 = z;
  if (!zeroInit) {
    s00 = v128.load(c); s01 = v128.load(c, 16);
    s10 = v128.load(c1); s11 = v128.load(c1, 16);
    s20 = v128.load(c2); s21 = v128.load(c2, 16);
    s30 = v128.load(c3); s31 = v128.load(c3, 16);
  }
  // One k-pair per iteration: V8 hoists the loads of an unrolled body above its arithmetic and
  // then spills accumulators (16 xmm registers); this body needs 15.
  for (let q = 0; q < n; q++) {
    {
      const x0 = v128.load(b);
      const x1 = v128.load(b, 16);
      let w = v128.load32_splat(a);
      s00 = i32x4.add(s00, i32x4.dot_i16x8_s(w, x0));
      s01 = i32x4.add(s01, i32x4.dot_i16x8_s(w, x1));
      w = v128.load32_splat(a, 4);
      s10 = i32x4.add(s10, i32x4.dot_i16x8_s(w, x0));
      s11 = i32x4.add(s11, i32x4.dot_i16x8_s(w, x1));
      w = v128.load32_splat(a, 8);
      s20 = i32x4.add(s20, i32x4.dot_i16x8_s(w, x0));
      s21 = i32x4.add(s21, i32x4.dot_i16x8_s(w, x1));
      w = v128.load32_splat(a, 12);
      s30 = i32x4.add(s30, i32x4.dot_i16x8_s(w, x0));
      s31 = i32x4.add(s31, i32x4.dot_i16x8_s(w, x1));
    }
    a += 16;
    b += 32;
  }
  v128.store(c, s00); v128.store(c, s01, 16);
  v128.store(c1, s10); v128.store(c1, s11, 16);
  v128.store(c2, s20); v128.store(c2, s21, 16);
  v128.store(c3, s30); v128.store(c3, s31, 16);
}

/**
 * C[Mb*4][P*8] += A·B over k-pairs [q0, q1) (int16 layouts above; aK2/bK2 are the pair counts
 * of the packed A blocks / B panels, i.e. their strides). C rows have stride ldc i32 elements.
 * overwrite != 0: C = A·B instead (C's old contents are neither read nor needed: no clearing pass).
 */
export function gemm16(A: usize, aK2: i32, B: usize, bK2: i32, q0: i32, q1: i32, C: usize, Mb: i32, P: i32, ldc: i32, overwrite: i32): void {
  const ldcBytes = <usize>ldc * 4;
  const aStride = <usize>aK2 * 16;
  const bStride = <usize>bK2 * 32;
  for (let k0 = q0; k0 < q1; k0 += KC16) {
    const n = min(KC16, q1 - k0);
    for (let p0 = 0; p0 < P; p0 += NCP16) {
      const p1 = min(P, p0 + NCP16);
      for (let rb = 0; rb < Mb; rb++) {
        const a = A + <usize>rb * aStride + <usize>k0 * 16;
        const crow = C + <usize>(rb * 4) * ldcBytes;
        for (let p = p0; p < p1; p++) {
          kern16(a, B + <usize>p * bStride + <usize>k0 * 32, crow + <usize>p * 32, ldcBytes, n, overwrite != 0 && k0 == q0);
        }
      }
    }
  }
}

/**
 * The int16 micro-kernel on one L1-resident 4 x n A block and 8 x n B panel, reps times: what
 * this core's SIMD units deliver with this instruction mix, free of cache misses and packing
 * (benchmarks report the GEMMs as a fraction of it). Needs n*16 + n*32 + 128 bytes at A, B, C.
 */
export function int16KernelPeak(A: usize, B: usize, C: usize, n: i32, reps: i32): void {
  for (let r = 0; r < reps; r++) kern16(A, B, C, 32, n, false);
}

/** out[M][N] (i32, compact) = C[M][N] (row stride ldc). */
export function copyOutI32(C: usize, ldc: i32, M: i32, N: i32, out: usize): void {
  for (let i = 0; i < M; i++) {
    memory.copy(out + <usize>i * <usize>N * 4, C + <usize>i * <usize>ldc * 4, <usize>N * 4);
  }
}

// ---------------------------------------------------------------------------------------------
// Z_2^44 encrypted product (see src/kernels/zq-matmul.ts for the arithmetic)

/** Limbs per operand and operands (a, b): the limb matrix has 6 column blocks per token block. */
const ZQ_LIMBS: i32 = 6;
const MASK44: u64 = (<u64>1 << 44) - 1;

/**
 * Decomposes values (k, t) for k in [k0, k1), t in [t0, t0+Tb) into limb panels at dst:
 * panel (limb L, token panel tp) has index L*(Tb/8)+tp and K2c = ceil((k1-k0)/2) pairs.
 * a (48-bit LE words masked to 44 bits) -> balanced 12-bit limb, then two int16 limbs (weights 2^0, 2^12, 2^28).
 * b (40-bit LE words, used as b<<4) -> balanced 8-bit limb, then two int16 limbs (weights 2^4, 2^12, 2^28).
 * Four tokens per i32x4: with lo = the low 32 bits and hi the bits above them,
 *   a0 = sext12(lo), r = floor((a + 2^11) / 2^12) = ((lo >>> 11) + 1 >>> 1) + (hi << 20) mod 2^32,
 *   a1 = sext16(r), a2 = (r + 2^15) >> 16 (only needed mod 2^16); b likewise with 8 and 24.
 */
export function zqDecompose(aBytes: usize, bBytes: usize, N: i32, t0: i32, Tb: i32, k0: i32, k1: i32, dst: usize): void {
  const K2c = (k1 - k0 + 1) >> 1;
  const TP = Tb >> 3;
  const panStride = <usize>K2c * 32;
  const limbStride = panStride * <usize>TP;
  const zero = i32x4.splat(0);
  for (let q = 0; q < K2c; q++) {
    const k = k0 + q * 2;
    const has1 = k + 1 < k1;
    const baseA = aBytes + (<usize>k * <usize>N + <usize>t0) * 6;
    const baseB = bBytes + (<usize>k * <usize>N + <usize>t0) * 5;
    const rowA = <usize>N * 6;
    const rowB = <usize>N * 5;
    for (let t = 0; t < Tb; t += 4) {
      const pa = baseA + <usize>t * 6;
      const pb = baseB + <usize>t * 5;
      // Row k.
      let a0 = zero, a1 = zero, a2 = zero, b0 = zero, b1 = zero, b2 = zero;
      let c0 = zero, c1 = zero, c2 = zero, d0 = zero, d1 = zero, d2 = zero;
      {
        const v0 = v128.load(pa), v1 = v128.load(pa, 8);
        const lo = i8x16.shuffle(v0, v1, 0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, 26, 27, 28, 29);
        const hi = i8x16.shuffle(v0, v1, 4, 5, 4, 5, 10, 11, 10, 11, 24, 25, 24, 25, 30, 31, 30, 31);
        a0 = i32x4.shr_s(i32x4.shl(lo, 20), 20);
        const r = i32x4.add(i32x4.shr_u(i32x4.add(i32x4.shr_u(lo, 11), i32x4.splat(1)), 1), i32x4.shl(hi, 20));
        a1 = i32x4.shr_s(i32x4.shl(r, 16), 16);
        a2 = i32x4.shr_s(i32x4.add(r, i32x4.splat(0x8000)), 16);
        const w0 = v128.load(pb), w1 = v128.load(pb, 4);
        const blo = i8x16.shuffle(w0, w1, 0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 28, 29, 30);
        const bhi = i8x16.shuffle(w0, w1, 4, 4, 4, 4, 9, 9, 9, 9, 14, 14, 14, 14, 31, 31, 31, 31);
        b0 = i32x4.shr_s(i32x4.shl(blo, 24), 24);
        const s = i32x4.add(i32x4.shr_u(i32x4.add(i32x4.shr_u(blo, 7), i32x4.splat(1)), 1), i32x4.shl(bhi, 24));
        b1 = i32x4.shr_s(i32x4.shl(s, 16), 16);
        b2 = i32x4.shr_s(i32x4.add(s, i32x4.splat(0x8000)), 16);
      }
      if (has1) {
        const v0 = v128.load(pa + rowA), v1 = v128.load(pa + rowA, 8);
        const lo = i8x16.shuffle(v0, v1, 0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15, 26, 27, 28, 29);
        const hi = i8x16.shuffle(v0, v1, 4, 5, 4, 5, 10, 11, 10, 11, 24, 25, 24, 25, 30, 31, 30, 31);
        c0 = i32x4.shr_s(i32x4.shl(lo, 20), 20);
        const r = i32x4.add(i32x4.shr_u(i32x4.add(i32x4.shr_u(lo, 11), i32x4.splat(1)), 1), i32x4.shl(hi, 20));
        c1 = i32x4.shr_s(i32x4.shl(r, 16), 16);
        c2 = i32x4.shr_s(i32x4.add(r, i32x4.splat(0x8000)), 16);
        const w0 = v128.load(pb + rowB), w1 = v128.load(pb + rowB, 4);
        const blo = i8x16.shuffle(w0, w1, 0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 28, 29, 30);
        const bhi = i8x16.shuffle(w0, w1, 4, 4, 4, 4, 9, 9, 9, 9, 14, 14, 14, 14, 31, 31, 31, 31);
        d0 = i32x4.shr_s(i32x4.shl(blo, 24), 24);
        const s = i32x4.add(i32x4.shr_u(i32x4.add(i32x4.shr_u(blo, 7), i32x4.splat(1)), 1), i32x4.shl(bhi, 24));
        d1 = i32x4.shr_s(i32x4.shl(s, 16), 16);
        d2 = i32x4.shr_s(i32x4.add(s, i32x4.splat(0x8000)), 16);
      }
      // Interleave rows k and k+1 into i16 pairs: 4 tokens = 16 bytes of one panel row.
      let p = dst + <usize>(t >> 3) * panStride + <usize>q * 32 + <usize>((t & 7) * 4);
      v128.store(p, i8x16.shuffle(a0, c0, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29)); p += limbStride;
      v128.store(p, i8x16.shuffle(a1, c1, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29)); p += limbStride;
      v128.store(p, i8x16.shuffle(a2, c2, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29)); p += limbStride;
      v128.store(p, i8x16.shuffle(b0, d0, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29)); p += limbStride;
      v128.store(p, i8x16.shuffle(b1, d1, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29)); p += limbStride;
      v128.store(p, i8x16.shuffle(b2, d2, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29));
    }
  }
}

/**
 * Recombines the six limb products of rows [0, rows) for one token block.
 * C: i32 rows x (6*Tb) (stride 6*Tb), columns [L*Tb, (L+1)*Tb) = limb L.
 * acc: i64 rows x (2*Tb) running sums mod 2^44 across K chunks (a then b), or 0 when unused.
 * addAcc: include acc; final: write rounded outputs, else store the sums to acc.
 */
export function zqRecombine(C: usize, rows: i32, Tb: i32, acc: usize, addAcc: i32, final: i32, aOut: usize, bOut: usize, N: i32, t0: i32): void {
  const ldc = <usize>(ZQ_LIMBS * Tb);
  const tb = <usize>Tb;
  if (final && !addAcc) {
    // One chunk: the limb multiples of 2^12 pass through the rounding, so in wrapping int32
    //   aOut = a1 + (a2 << 16) + ((a0 + 2^11) >> 12),  bOut = b1 + (b2 << 16) + ((b0 + 2^7) >> 8)
    // (a0, b0 are exact: |a0| + 2^11 < 2^31).
    for (let o = 0; o < rows; o++) {
      const c = C + <usize>o * ldc * 4;
      const ao = aOut + (<usize>o * <usize>N + <usize>t0) * 4;
      const bo = bOut + (<usize>o * <usize>N + <usize>t0) * 4;
      for (let t: usize = 0; t < tb; t += 4) {
        const ct = c + t * 4;
        const a0 = v128.load(ct), a1 = v128.load(ct + tb * 4), a2 = v128.load(ct + tb * 8);
        const b0 = v128.load(ct + tb * 12), b1 = v128.load(ct + tb * 16), b2 = v128.load(ct + tb * 20);
        v128.store(ao + t * 4, i32x4.add(i32x4.add(a1, i32x4.shl(a2, 16)), i32x4.shr_s(i32x4.add(a0, i32x4.splat(2048)), 12)));
        v128.store(bo + t * 4, i32x4.add(i32x4.add(b1, i32x4.shl(b2, 16)), i32x4.shr_s(i32x4.add(b0, i32x4.splat(128)), 8)));
      }
    }
    return;
  }
  for (let o = 0; o < rows; o++) {
    const c = C + <usize>o * ldc * 4;
    const ac = acc + <usize>o * tb * 16;
    const ao = aOut + (<usize>o * <usize>N + <usize>t0) * 4;
    const bo = bOut + (<usize>o * <usize>N + <usize>t0) * 4;
    for (let t: usize = 0; t < tb; t++) {
      const ct = c + t * 4;
      let sa = <i64>load<i32>(ct) + (<i64>load<i32>(ct + tb * 4) << 12) + (<i64>load<i32>(ct + tb * 8) << 28);
      let sb = (<i64>load<i32>(ct + tb * 12) << 4) + (<i64>load<i32>(ct + tb * 16) << 12) + (<i64>load<i32>(ct + tb * 20) << 28);
      if (addAcc) {
        sa += load<i64>(ac + t * 8);
        sb += load<i64>(ac + tb * 8 + t * 8);
      }
      if (final) {
        // floor((s mod 2^44 + 2^11) / 2^12) mod 2^32: the shift commutes with "mod 2^44" because 2^12 | 2^44.
        store<u32>(ao + t * 4, <u32>((sa + 2048) >> 12));
        store<u32>(bo + t * 4, <u32>((sb + 2048) >> 12));
      } else {
        store<i64>(ac + t * 8, sa & <i64>MASK44);
        store<i64>(ac + tb * 8 + t * 8, sb & <i64>MASK44);
      }
    }
  }
}

/**
 * Full encrypted product for rows x cols weights packed by packA8 (K2 = ceil(cols/2)).
 * Scratch: X (limb panels, kChunk x 6*Tb i16), C (rows4 x 6*Tb i32), acc (rows x 2*Tb i64, if cols > kChunk).
 * kChunk (even, <= 8192) bounds the exact range of the lowest A limb.
 */
export function zqMatmul(Wp: usize, rows: i32, cols: i32, aBytes: usize, bBytes: usize, N: i32, aOut: usize, bOut: usize,
  Tb: i32, kChunk: i32, X: usize, C: usize, acc: usize): void {
  const K2 = (cols + 1) >> 1;
  const Mb = (rows + 3) >> 2;
  for (let t0 = 0; t0 < N; t0 += Tb) {
    const tb = min(Tb, N - t0);
    const nChunks = (cols + kChunk - 1) / kChunk;
    for (let ch = 0; ch < nChunks; ch++) {
      const k0 = ch * kChunk;
      const k1 = min(cols, k0 + kChunk);
      zqDecompose(aBytes, bBytes, N, t0, tb, k0, k1, X);
      const K2c = (k1 - k0 + 1) >> 1;
      // The packed A rows run over all K2 pairs; this chunk starts at pair k0/2. B panels hold K2c pairs.
      gemm16(Wp + <usize>(k0 >> 1) * 16, K2, X, K2c, 0, K2c, C, Mb, (ZQ_LIMBS * tb) >> 3, ZQ_LIMBS * tb, 1);
      zqRecombine(C, rows, tb, acc, ch > 0 ? 1 : 0, ch == nChunks - 1 ? 1 : 0, aOut, bOut, N, t0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// f32 path

/**
 * Packs a[M][K] with element (i,k) at src + 4*(i*sai + k*sak) into 4-row blocks. The destination
 * is written sequentially and the source is read as 4 streams (or one, when sai = 1), so both
 * row-major and transposed sources stay cache friendly.
 */
export function packA32(src: usize, M: i32, K: i32, sai: i32, sak: i32, dst: usize): void {
  const Mb = (M + 3) >> 2;
  const si = <usize>sai * 4;
  const sk = <usize>sak * 4;
  let d = dst;
  for (let b = 0; b < Mb; b++) {
    const r0 = b * 4;
    const s0 = src + <usize>r0 * si;
    if (r0 + 4 <= M) {
      for (let k = 0; k < K; k++) {
        const s = s0 + <usize>k * sk;
        store<f32>(d, load<f32>(s));
        store<f32>(d, load<f32>(s + si), 4);
        store<f32>(d, load<f32>(s + si * 2), 8);
        store<f32>(d, load<f32>(s + si * 3), 12);
        d += 16;
      }
    } else {
      for (let k = 0; k < K; k++) {
        const s = s0 + <usize>k * sk;
        for (let r = 0; r < 4; r++) store<f32>(d + <usize>(r * 4), r0 + r < M ? load<f32>(s + si * <usize>r) : 0);
        d += 16;
      }
    }
  }
}

/** Packs b[K][N] with element (k,j) at src + 4*(k*sbk + j*sbj) into 8-column panels (sequential writes). */
export function packB32(src: usize, K: i32, N: i32, sbk: i32, sbj: i32, dst: usize): void {
  const P = (N + 7) >> 3;
  const sk = <usize>sbk * 4;
  const sj = <usize>sbj * 4;
  let d = dst;
  for (let p = 0; p < P; p++) {
    const j0 = p * 8;
    const s0 = src + <usize>j0 * sj;
    if (j0 + 8 <= N && sbj == 1) {
      for (let k = 0; k < K; k++) {
        const s = s0 + <usize>k * sk;
        v128.store(d, v128.load(s));
        v128.store(d, v128.load(s, 16), 16);
        d += 32;
      }
    } else if (j0 + 8 <= N) {
      for (let k = 0; k < K; k++) {
        const s = s0 + <usize>k * sk;
        for (let jj = 0; jj < 8; jj++) store<f32>(d + <usize>(jj * 4), load<f32>(s + sj * <usize>jj));
        d += 32;
      }
    } else {
      for (let k = 0; k < K; k++) {
        const s = s0 + <usize>k * sk;
        for (let jj = 0; jj < 8; jj++) store<f32>(d + <usize>(jj * 4), j0 + jj < N ? load<f32>(s + sj * <usize>jj) : 0);
        d += 32;
      }
    }
  }
}

// @ts-ignore: decorator
@inline
function kern32(a: usize, b: usize, c: usize, ldcBytes: usize, n: i32): void {
  const c1 = c + ldcBytes;
  const c2 = c1 + ldcBytes;
  const c3 = c2 + ldcBytes;
  let s00 = v128.load(c), s01 = v128.load(c, 16);
  let s10 = v128.load(c1), s11 = v128.load(c1, 16);
  let s20 = v128.load(c2), s21 = v128.load(c2, 16);
  let s30 = v128.load(c3), s31 = v128.load(c3, 16);
  // One k-pair per iteration: V8 hoists the loads of an unrolled body above its arithmetic and
  // then spills accumulators (16 xmm registers); this body needs 15.
  for (let q = 0; q < n; q++) {
    {
      const x0 = v128.load(b);
      const x1 = v128.load(b, 16);
      let w = v128.load32_splat(a);
      s00 = f32x4.add(s00, f32x4.mul(w, x0));
      s01 = f32x4.add(s01, f32x4.mul(w, x1));
      w = v128.load32_splat(a, 4);
      s10 = f32x4.add(s10, f32x4.mul(w, x0));
      s11 = f32x4.add(s11, f32x4.mul(w, x1));
      w = v128.load32_splat(a, 8);
      s20 = f32x4.add(s20, f32x4.mul(w, x0));
      s21 = f32x4.add(s21, f32x4.mul(w, x1));
      w = v128.load32_splat(a, 12);
      s30 = f32x4.add(s30, f32x4.mul(w, x0));
      s31 = f32x4.add(s31, f32x4.mul(w, x1));
    }
    a += 16;
    b += 32;
  }
  v128.store(c, s00); v128.store(c, s01, 16);
  v128.store(c1, s10); v128.store(c1, s11, 16);
  v128.store(c2, s20); v128.store(c2, s21, 16);
  v128.store(c3, s30); v128.store(c3, s31, 16);
}

/** C[Mb*4][P*8] += A·B (f32 layouts; both packed with K rows). */
export function gemm32(A: usize, B: usize, K: i32, C: usize, Mb: i32, P: i32, ldc: i32): void {
  const ldcBytes = <usize>ldc * 4;
  const aStride = <usize>K * 16;
  const bStride = <usize>K * 32;
  for (let k0 = 0; k0 < K; k0 += KC32) {
    const n = min(KC32, K - k0);
    for (let p0 = 0; p0 < P; p0 += NCP32) {
      const p1 = min(P, p0 + NCP32);
      for (let rb = 0; rb < Mb; rb++) {
        const a = A + <usize>rb * aStride + <usize>k0 * 16;
        const crow = C + <usize>(rb * 4) * ldcBytes;
        for (let p = p0; p < p1; p++) {
          kern32(a, B + <usize>p * bStride + <usize>k0 * 32, crow + <usize>p * 32, ldcBytes, n);
        }
      }
    }
  }
}

/** out(i,j) at out + 4*(i*soi + j*soj) = (accumulate ? out(i,j) : 0) + C[i][j] + (bias ? bias[j] : 0). */
export function finishF32(C: usize, ldc: i32, M: i32, N: i32, out: usize, soi: i32, soj: i32, accumulate: i32, bias: usize): void {
  const sj = <usize>soj * 4;
  for (let i = 0; i < M; i++) {
    const c = C + <usize>i * <usize>ldc * 4;
    let o = out + <usize>i * <usize>soi * 4;
    for (let j = 0; j < N; j++) {
      const jj = <usize>j * 4;
      let v = load<f32>(c + jj);
      if (bias) v += load<f32>(bias + jj);
      if (accumulate) v += load<f32>(o);
      store<f32>(o, v);
      o += sj;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Few-token (T small) fp32 products: memory bound on the weights, so they read the weights in
// place (no packing) and stream them once.

// @ts-ignore: decorator
@inline
function dotF32(x: usize, y: usize, n: i32): f32 {
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0);
  let c = 0;
  for (; c + 8 <= n; c += 8) {
    const o = <usize>c * 4;
    s0 = f32x4.add(s0, f32x4.mul(v128.load(x + o), v128.load(y + o)));
    s1 = f32x4.add(s1, f32x4.mul(v128.load(x + o, 16), v128.load(y + o, 16)));
  }
  s0 = f32x4.add(s0, s1);
  let s = f32x4.extract_lane(s0, 0) + f32x4.extract_lane(s0, 1) + f32x4.extract_lane(s0, 2) + f32x4.extract_lane(s0, 3);
  for (; c < n; c++) s += load<f32>(x + <usize>c * 4) * load<f32>(y + <usize>c * 4);
  return s;
}

// @ts-ignore: decorator
@inline
function axpyF32(y: usize, a: f32, x: usize, n: i32): void {
  const av = f32x4.splat(a);
  let c = 0;
  for (; c + 4 <= n; c += 4) {
    const o = <usize>c * 4;
    v128.store(y + o, f32x4.add(v128.load(y + o), f32x4.mul(av, v128.load(x + o))));
  }
  for (; c < n; c++) {
    const o = <usize>c * 4;
    store<f32>(y + o, load<f32>(y + o) + a * load<f32>(x + o));
  }
}

/** out[T][OC] = inp[T][C] · w[OC][C]^T (+ bias). */
export function smallForwardF32(out: usize, inp: usize, w: usize, bias: usize, T: i32, C: i32, OC: i32): void {
  for (let o = 0; o < OC; o++) {
    const wr = w + <usize>o * <usize>C * 4;
    const b: f32 = bias ? load<f32>(bias + <usize>o * 4) : 0;
    for (let t = 0; t < T; t++) {
      store<f32>(out + (<usize>t * <usize>OC + <usize>o) * 4, dotF32(inp + <usize>t * <usize>C * 4, wr, C) + b);
    }
  }
}

/** dinp[T][C] += dout[T][OC] · w[OC][C]. */
export function smallBackwardInputF32(dinp: usize, dout: usize, w: usize, T: i32, C: i32, OC: i32): void {
  for (let o = 0; o < OC; o++) {
    const wr = w + <usize>o * <usize>C * 4;
    for (let t = 0; t < T; t++) {
      const d = load<f32>(dout + (<usize>t * <usize>OC + <usize>o) * 4);
      if (d != 0) axpyF32(dinp + <usize>t * <usize>C * 4, d, wr, C);
    }
  }
}

/** dw[OC][C] += dout[T][OC]^T · inp[T][C]. */
export function smallBackwardWeightF32(dw: usize, dout: usize, inp: usize, T: i32, C: i32, OC: i32): void {
  for (let o = 0; o < OC; o++) {
    const wr = dw + <usize>o * <usize>C * 4;
    for (let t = 0; t < T; t++) {
      const d = load<f32>(dout + (<usize>t * <usize>OC + <usize>o) * 4);
      if (d != 0) axpyF32(wr, d, inp + <usize>t * <usize>C * 4, C);
    }
  }
}
