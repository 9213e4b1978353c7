import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  quantizePerToken, quantizePerTensor, dequantizePerToken, quantizeWeightsPerChannel, dequantizeForward,
  prepareBackwardInput, dequantizeBackward, quantizedLinearForward, quantizedLinearBackward, maxAbsProduct,
  roundHalfEven, forwardAccumulate, backwardAccumulate, type QuantizedWeights, type QuantizedActivations,
} from './quantize.js';

// Deterministic test data (mulberry32 + Box-Muller).
import { seededRandom } from '../util/random.js';
const rng = seededRandom;
function gaussian(n: number, seed: number, std = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12), v = r();
    out[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

// Independent reference: Math.round (half up) corrected to half-even, naive double loops.
function refRound(v: number): number {
  let r = Math.round(v);
  if (Math.abs(v - Math.trunc(v)) === 0.5 && r % 2 !== 0) r -= 1;
  return r;
}
function refQuantRows(x: ArrayLike<number>, rows: number, cols: number, bits: number): { q: number[]; s: number[] } {
  const qmax = 2 ** (bits - 1) - 1;
  const q: number[] = [], s: number[] = [];
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let c = 0; c < cols; c++) m = Math.max(m, Math.abs(x[r * cols + c]));
    const sc = Math.fround(m / qmax);
    s.push(sc);
    for (let c = 0; c < cols; c++) q.push(sc === 0 ? 0 : Math.min(qmax, Math.max(-qmax, refRound(x[r * cols + c] / sc))));
  }
  return { q, s };
}
function fp32Forward(x: Float32Array, w: Float32Array, T: number, C: number, OC: number): Float64Array {
  const y = new Float64Array(T * OC);
  for (let t = 0; t < T; t++) for (let o = 0; o < OC; o++) {
    let s = 0;
    for (let i = 0; i < C; i++) s += x[t * C + i] * w[o * C + i];
    y[t * OC + o] = s;
  }
  return y;
}
function fp32Backward(dy: Float32Array, w: Float32Array, T: number, OC: number, C: number): Float64Array {
  const dx = new Float64Array(T * C);
  for (let t = 0; t < T; t++) for (let i = 0; i < C; i++) {
    let s = 0;
    for (let o = 0; o < OC; o++) s += dy[t * OC + o] * w[o * C + i];
    dx[t * C + i] = s;
  }
  return dx;
}
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i] - b[i]) ** 2; den += b[i] ** 2; }
  return Math.sqrt(num / den);
}
function refForward(x: Float32Array, w: Float32Array, T: number, C: number, OC: number, bits: number): Float32Array {
  const qx = refQuantRows(x, T, C, bits), qw = refQuantRows(w, OC, C, 8);
  const y = new Float32Array(T * OC);
  for (let t = 0; t < T; t++) for (let o = 0; o < OC; o++) {
    let acc = 0;
    for (let i = 0; i < C; i++) acc += qx.q[t * C + i] * qw.q[o * C + i];
    y[t * OC + o] = (acc * qx.s[t]) * qw.s[o];
  }
  return y;
}
function refBackward(dy: Float32Array, w: Float32Array, T: number, OC: number, C: number, bits: number): Float32Array {
  const qw = refQuantRows(w, OC, C, 8);
  const scaled = new Float32Array(T * OC);
  for (let t = 0; t < T; t++) for (let o = 0; o < OC; o++) scaled[t * OC + o] = dy[t * OC + o] * qw.s[o];
  const qd = refQuantRows(scaled, T, OC, bits);
  const dx = new Float32Array(T * C);
  for (let t = 0; t < T; t++) for (let i = 0; i < C; i++) {
    let acc = 0;
    for (let o = 0; o < OC; o++) acc += qd.q[t * OC + o] * qw.q[o * C + i];
    dx[t * C + i] = acc * qd.s[t];
  }
  return dx;
}

test('roundHalfEven rounds ties to even and everything else to nearest', () => {
  const cases: [number, number][] = [[0.5, 0], [1.5, 2], [2.5, 2], [-0.5, 0], [-1.5, -2], [-2.5, -2], [2.4999, 2], [2.5001, 3], [-7.2, -7], [-7.7, -8], [126.5, 126], [125.5, 126]];
  for (const [v, e] of cases) assert.equal(roundHalfEven(v) + 0, e, `round(${v})`);
});

test('quantizePerToken: ties to even, clamp, scale = max/qmax', () => {
  const x = new Float32Array([127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, -127]);
  const q = quantizePerToken(x, 1, 8, 8);
  assert.ok(q.values instanceof Int8Array);
  assert.equal(q.scales[0], 1);
  assert.deepEqual(Array.from(q.values, (v) => v + 0), [127, 0, 2, 2, 0, -2, -2, -127]);
  const q16 = quantizePerToken(x, 2, 4, 12);
  assert.ok(q16.values instanceof Int16Array);
  assert.equal(q16.bits, 12);
});

test('quantizePerToken round trip error <= scale/2 for every bit width, matches independent reference', () => {
  const T = 16, C = 97;
  const x = gaussian(T * C, 1, 3);
  for (let t = 0; t < T; t++) x[t * C + (t % C)] *= 1 + t; // different magnitudes per row
  for (let bits = 2; bits <= 16; bits++) {
    const q = quantizePerToken(x, T, C, bits);
    const ref = refQuantRows(x, T, C, bits);
    assert.deepEqual(Array.from(q.values, (v) => v + 0), ref.q.map((v) => v + 0), `values bits=${bits}`);
    assert.deepEqual(Array.from(q.scales), ref.s, `scales bits=${bits}`);
    const qmax = 2 ** (bits - 1) - 1;
    for (let i = 0; i < T * C; i++) {
      const s = q.scales[Math.floor(i / C)];
      assert.ok(Math.abs(q.values[i]) <= qmax);
      assert.ok(Math.abs(x[i] - q.values[i] * s) <= (s / 2) * (1 + 1e-6), `bits=${bits} i=${i}`);
    }
    const back = dequantizePerToken(q);
    for (let i = 0; i < T * C; i++) assert.equal(back[i], Math.fround(q.values[i] * q.scales[Math.floor(i / C)]));
  }
});

test('zero rows give scale 0 and zeros (no NaN), tiny rows too', () => {
  const x = new Float32Array([0, 0, 0, 1, -2, 3, 0, -0, 0, 1e-45, -1e-45, 0]);
  const q = quantizePerToken(x, 4, 3);
  assert.equal(q.scales[0], 0);
  assert.equal(q.scales[2], 0);
  assert.equal(q.scales[3], 0); // underflows the f32 scale: treated as zero
  assert.deepEqual(Array.from(q.values, (v) => v + 0), [0, 0, 0, 42, -85, 127, 0, 0, 0, 0, 0, 0]);
  const back = dequantizePerToken(q);
  assert.ok(back.every((v) => Number.isFinite(v)));
  const y = quantizedLinearForward(new Float32Array(6), 2, 3, quantizeWeightsPerChannel(gaussian(12, 2), 4, 3));
  assert.ok(y.every((v) => v === 0));
  assert.deepEqual(Array.from(quantizePerToken(new Float32Array(0), 0, 5).values), []);
});

test('NaN / Infinity / bad shapes are rejected with a clear error', () => {
  assert.throws(() => quantizePerToken(new Float32Array([1, NaN]), 1, 2), /non-finite value NaN at \[0, 1\]/);
  assert.throws(() => quantizePerToken(new Float32Array([1, 2, 3, Infinity]), 2, 2), /non-finite value Infinity at \[1, 1\]/);
  assert.throws(() => quantizeWeightsPerChannel(new Float32Array([-Infinity]), 1, 1), /weights: non-finite/);
  assert.throws(() => prepareBackwardInput(new Float32Array([3e38]), 1, 1, new Float32Array([10])), /gradient \* weight scale: non-finite/);
  assert.throws(() => quantizePerToken(new Float32Array(5), 2, 3), /length 5, expected 6/);
  assert.throws(() => quantizePerToken(new Float32Array(4), 2, 2, 1), /bits must be an integer in 2..16/);
  assert.throws(() => quantizePerToken(new Float32Array(4), 2, 2, 17), /bits/);
  const wq = quantizeWeightsPerChannel(gaussian(6, 3), 2, 3);
  assert.throws(() => quantizedLinearForward(new Float32Array(8), 2, 4, wq), /input features/);
  assert.throws(() => quantizedLinearBackward(new Float32Array(6), 2, 3, wq), /output features/);
});

test('weights per channel: |q| <= 127, error <= scale/2 per row', () => {
  const rows = 24, cols = 50;
  const w = gaussian(rows * cols, 4, 0.02);
  for (let c = 0; c < cols; c++) w[5 * cols + c] *= 40; // one loud channel must not hurt the others
  const wq = quantizeWeightsPerChannel(w, rows, cols);
  const ref = refQuantRows(w, rows, cols, 8);
  assert.deepEqual(Array.from(wq.values, (v) => v + 0), ref.q.map((v) => v + 0));
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      assert.ok(Math.abs(wq.values[i]) <= 127);
      assert.ok(Math.abs(w[i] - wq.values[i] * wq.scales[r]) <= wq.scales[r] / 2 * (1 + 1e-6));
    }
  }
  assert.ok(wq.scales[5] > 20 * wq.scales[0]);
});

test('maxAbsProduct matches the design headroom formula', () => {
  assert.equal(maxAbsProduct(8, 8, 8192), 127 * 127 * 8192);
  assert.ok(maxAbsProduct(8, 8, 8192) < 2 ** 27);
  assert.equal(maxAbsProduct(16, 8, 2), 32767 * 127 * 2);
  assert.equal(maxAbsProduct(2, 2, 5), 5);
  assert.throws(() => maxAbsProduct(8, 8, -1), /K/);
});

test('quantized forward/backward: exactly the naive integer formula, and close to fp32', () => {
  const T = 48, C = 192, OC = 80;
  const x = gaussian(T * C, 11);
  const w = gaussian(OC * C, 12, 0.05);
  const dy = gaussian(T * OC, 13, 0.01);
  const wq = quantizeWeightsPerChannel(w, OC, C);
  for (const bits of [8, 4, 12, 16]) {
    const y = quantizedLinearForward(x, T, C, wq, bits);
    assert.deepEqual(y, refForward(x, w, T, C, OC, bits), `forward bits=${bits}`);
    const dx = quantizedLinearBackward(dy, T, OC, wq, bits);
    assert.deepEqual(dx, refBackward(dy, w, T, OC, C, bits), `backward bits=${bits}`);
    if (bits >= 8) {
      const ef = relErr(y, fp32Forward(x, w, T, C, OC));
      const eb = relErr(dx, fp32Backward(dy, w, T, OC, C));
      assert.ok(ef < 0.02, `forward rel err ${ef} bits=${bits}`);
      assert.ok(eb < 0.02, `backward rel err ${eb} bits=${bits}`);
      if (bits === 16) { assert.ok(ef < 0.01); assert.ok(eb < 0.01); } // only weight error left
    }
  }
});

test('forwardAccumulate / backwardAccumulate: exact integer sums on odd shapes and +-127 extremes, weights reused', () => {
  const r = rng(41);
  const ints = (n: number, extreme: boolean): Int8Array => Int8Array.from({ length: n }, () => (extreme ? (r() < 0.5 ? -127 : 127) : Math.round(r() * 254) - 127));
  for (const [T, C, OC] of [[7, 33, 5], [1, 1, 1], [19, 130, 17], [64, 257, 36]] as const) {
    for (const extreme of [false, true]) {
      const wq: QuantizedWeights = { values: ints(OC * C, extreme), scales: new Float32Array(OC).fill(1), rows: OC, cols: C };
      // Twice with the same weights object: the second call uses the kept W^T.
      for (let rep = 0; rep < 2; rep++) {
        const qx: QuantizedActivations = { values: ints(T * C, extreme), scales: new Float32Array(T).fill(1), rows: T, cols: C, bits: 8 };
        const acc = forwardAccumulate(qx, wq);
        for (let t = 0; t < T; t++) {
          for (let o = 0; o < OC; o++) {
            let want = 0;
            for (let i = 0; i < C; i++) want += qx.values[t * C + i]! * wq.values[o * C + i]!;
            assert.equal(acc[t * OC + o], want, `forward ${T}x${C}x${OC} t=${t} o=${o}`);
          }
        }
        const qdy: QuantizedActivations = { values: ints(T * OC, extreme), scales: new Float32Array(T).fill(1), rows: T, cols: OC, bits: 8 };
        const dacc = backwardAccumulate(qdy, wq);
        for (let t = 0; t < T; t++) {
          for (let i = 0; i < C; i++) {
            let want = 0;
            for (let o = 0; o < OC; o++) want += qdy.values[t * OC + o]! * wq.values[o * C + i]!;
            assert.equal(dacc[t * C + i], want, `backward ${T}x${OC}x${C} t=${t} i=${i}`);
          }
        }
      }
    }
  }
});

test('sums longer than the int8 kernel accepts fall back to exact doubles', () => {
  const T = 2, C = 131073, OC = 2;
  const x = gaussian(T * C, 31), w = gaussian(OC * C, 32, 0.01);
  const wq = quantizeWeightsPerChannel(w, OC, C);
  assert.deepEqual(quantizedLinearForward(x, T, C, wq), refForward(x, w, T, C, OC, 8));
  const wqT = quantizeWeightsPerChannel(w, C, OC); // same data read as C x OC: backward sums over C
  assert.deepEqual(quantizedLinearBackward(x, T, C, wqT), refBackward(x, w, T, C, OC, 8));
});

test('dequantizeForward/Backward: y = (acc*sx)*sw in f32, accepts weight scales or weights', () => {
  const acc = new Int32Array([1000, -3, 7, 123456]);
  const sx = new Float32Array([0.1, 0.25]);
  const sw = new Float32Array([0.5, 0.003]);
  const w: QuantizedWeights = { values: new Int8Array(2), scales: sw, rows: 2, cols: 1 };
  const expect = new Float32Array(4);
  for (let t = 0; t < 2; t++) for (let o = 0; o < 2; o++) expect[t * 2 + o] = (acc[t * 2 + o] * sx[t]) * sw[o];
  assert.deepEqual(dequantizeForward(acc, sx, sw, 2, 2), expect);
  assert.deepEqual(dequantizeForward(Float64Array.from(acc), sx, w, 2, 2), expect);
  assert.ok(Math.abs(dequantizeForward(acc, sx, sw, 2, 2)[0] - 50) < 1e-5);
  assert.deepEqual(Array.from(dequantizeBackward(acc, sx, 2, 2)), [Math.fround(100), Math.fround(-0.3), 1.75, 30864]);
  assert.throws(() => dequantizeForward(acc, sx, sw, 2, 3), /length 4, expected 6/);
});

test('prepareBackwardInput folds weight scales into dy before quantizing', () => {
  const dy = new Float32Array([1, 1, 2, -4]);
  const sw = new Float32Array([2, 0.5]);
  const q = prepareBackwardInput(dy, 2, 2, sw);
  // row 0: [2, 0.5] -> scale 2/127, row 1: [4, -2] -> scale 4/127
  assert.equal(q.scales[0], Math.fround(2 / 127));
  assert.equal(q.scales[1], Math.fround(4 / 127));
  assert.deepEqual(Array.from(q.values), [127, 32, 127, -64]);
});

test('per-token beats per-tensor on activations with outlier tokens', () => {
  const T = 32, C = 128, OC = 64;
  const x = gaussian(T * C, 21);
  for (const t of [3, 17]) for (let c = 0; c < C; c++) x[t * C + c] *= 100; // two loud tokens
  const w = gaussian(OC * C, 22, 0.05);
  const wq = quantizeWeightsPerChannel(w, OC, C);
  const exact = fp32Forward(x, w, T, C, OC);
  const perTok = quantizedLinearForward(x, T, C, wq);
  const qt = quantizePerTensor(x, T, C);
  const perTen = dequantizeForward(
    Float64Array.from({ length: T * OC }, (_, k) => {
      const t = Math.floor(k / OC), o = k % OC;
      let s = 0;
      for (let i = 0; i < C; i++) s += qt.values[t * C + i] * wq.values[o * C + i];
      return s;
    }), qt.scales, wq, T, OC);
  // Mean per-token relative error: the quiet tokens are what per-tensor scaling destroys.
  const tokErr = (y: ArrayLike<number>) => {
    let sum = 0;
    for (let t = 0; t < T; t++) {
      let n = 0, d = 0;
      for (let o = 0; o < OC; o++) { n += (y[t * OC + o] - exact[t * OC + o]) ** 2; d += exact[t * OC + o] ** 2; }
      sum += Math.sqrt(n / d);
    }
    return sum / T;
  };
  const eTok = tokErr(perTok), eTen = tokErr(perTen);
  assert.ok(eTok < 0.03, `per-token error ${eTok}`);
  assert.ok(eTen > 5 * eTok, `per-tensor ${eTen} vs per-token ${eTok}`);
});
