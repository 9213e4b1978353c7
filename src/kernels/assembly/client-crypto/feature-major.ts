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
