import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  matmulForward, matmulBackwardInput, matmulBackwardWeight,
  matmulForwardReference, matmulBackwardInputReference, matmulBackwardWeightReference,
} from './matmul-f32.js';

function randF32(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
}
function close(got: Float32Array, want: Float32Array, tol: number, what: string): void {
  assert.equal(got.length, want.length);
  for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= tol, `${what} at ${i}: ${got[i]} vs ${want[i]}`);
}

// Both paths: T <= SMALL_T (weights read in place) and the packed GEMM.
const shapes = [[1, 1, 1], [7, 13, 5], [8, 9, 3], [9, 16, 8], [16, 64, 48], [33, 70, 9], [5, 300, 130], [40, 300, 130]] as const;

test('matmulForward matches the reference, with and without bias', () => {
  for (const [T, C, OC] of shapes) {
    const inp = randF32(T * C), w = randF32(OC * C), bias = randF32(OC);
    for (const b of [null, bias]) {
      const got = randF32(T * OC), want = randF32(T * OC); // garbage: forward overwrites
      matmulForward(got, inp, w, b, T, C, OC);
      matmulForwardReference(want, inp, w, b, T, C, OC);
      close(got, want, 2e-5 * Math.sqrt(C) + 1e-6, `forward ${T},${C},${OC}`);
    }
  }
});

test('matmulBackwardInput and matmulBackwardWeight accumulate like the reference', () => {
  for (const [T, C, OC] of shapes) {
    const inp = randF32(T * C), w = randF32(OC * C), dout = randF32(T * OC);
    const dinp0 = randF32(T * C), dw0 = randF32(OC * C);
    const gi = dinp0.slice(), wi = dinp0.slice();
    matmulBackwardInput(gi, dout, w, T, C, OC);
    matmulBackwardInputReference(wi, dout, w, T, C, OC);
    close(gi, wi, 2e-5 * Math.sqrt(OC) + 1e-6, `backward input ${T},${C},${OC}`);
    const gw = dw0.slice(), ww = dw0.slice();
    matmulBackwardWeight(gw, dout, inp, T, C, OC);
    matmulBackwardWeightReference(ww, dout, inp, T, C, OC);
    close(gw, ww, 2e-5 * Math.sqrt(T) + 1e-6, `backward weight ${T},${C},${OC}`);
  }
});

test('matmul references agree with a hand-computed case', () => {
  // inp 1x2, weight 2x2 (OC=2), dout 1x2
  const inp = Float32Array.from([1, 2]), w = Float32Array.from([3, 4, 5, 6]), dout = Float32Array.from([1, -1]);
  const out = new Float32Array(2);
  matmulForwardReference(out, inp, w, Float32Array.from([10, 20]), 1, 2, 2);
  assert.deepEqual(Array.from(out), [1 * 3 + 2 * 4 + 10, 1 * 5 + 2 * 6 + 20]);
  const dinp = new Float32Array(2);
  matmulBackwardInputReference(dinp, dout, w, 1, 2, 2);
  assert.deepEqual(Array.from(dinp), [3 - 5, 4 - 6]);
  const dw = new Float32Array(4);
  matmulBackwardWeightReference(dw, dout, inp, 1, 2, 2);
  assert.deepEqual(Array.from(dw), [1, 2, -1, -2]);
});

test('matmuls leave values past the matrices untouched and validate sizes', () => {
  const T = 3, C = 5, OC = 6;
  const out = new Float32Array(T * OC + 4).fill(7);
  matmulForward(out, randF32(T * C), randF32(OC * C), null, T, C, OC);
  assert.deepEqual(Array.from(out.subarray(T * OC)), [7, 7, 7, 7]);
  assert.throws(() => matmulForward(new Float32Array(2), randF32(T * C), randF32(OC * C), null, T, C, OC), /out has 2 values/);
  assert.throws(() => matmulBackwardInput(new Float32Array(T * C), randF32(T * OC - 1), randF32(OC * C), T, C, OC), /dout has/);
});
