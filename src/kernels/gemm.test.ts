import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gemmInt8, gemmInt8Reference } from './gemm-int8.js';
import { gemmF32, gemmF32Reference } from './gemm-f32.js';

function randInt8(n: number, lo = -128, hi = 127): Int8Array {
  const a = new Int8Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + Math.floor(Math.random() * (hi - lo + 1));
  return a;
}
function randF32(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
}

test('gemmInt8Reference matches a naive triple loop on a tiny case', () => {
  const w = Int8Array.from([1, -2, 3, 4, 5, -6]); // 2x3
  const x = Int8Array.from([7, 8, -9, 10, 11, 12]); // 3x2
  const want = [1 * 7 - 2 * -9 + 3 * 11, 1 * 8 - 2 * 10 + 3 * 12, 4 * 7 + 5 * -9 - 6 * 11, 4 * 8 + 5 * 10 - 6 * 12];
  assert.deepEqual(Array.from(gemmInt8Reference(w, x, 2, 3, 2)), want);
});

test('gemmInt8 is exact on odd shapes', () => {
  for (const [M, K, N] of [[1, 1, 1], [13, 37, 19], [4, 8, 8], [33, 130, 41], [5, 2051, 9], [70, 3, 130]] as const) {
    const w = randInt8(M * K), x = randInt8(K * N);
    assert.deepEqual(gemmInt8(w, x, M, K, N), gemmInt8Reference(w, x, M, K, N), `${M}x${K}x${N}`);
  }
});

test('gemmInt8 is exact at the int8 extremes', () => {
  const M = 9, K = 4099, N = 17;
  for (const [wv, xv] of [[-128, -128], [127, -128], [-128, 127]] as const) {
    const w = new Int8Array(M * K).fill(wv), x = new Int8Array(K * N).fill(xv);
    const out = gemmInt8(w, x, M, K, N);
    assert.ok(out.every((v) => v === wv * xv * K));
  }
});

test('gemmInt8 validates shapes', () => {
  assert.throws(() => gemmInt8(new Int8Array(5), new Int8Array(6), 2, 3, 2), /w has 5 values/);
  assert.throws(() => gemmInt8(new Int8Array(6), new Int8Array(5), 2, 3, 2), /x has 5 values/);
  assert.throws(() => gemmInt8(new Int8Array(0), new Int8Array(0), 0, 3, 2), /M must be a positive integer/);
});

test('gemmF32 matches the float64 reference', () => {
  for (const [M, K, N] of [[1, 1, 1], [13, 37, 19], [8, 600, 24], [31, 5, 65]] as const) {
    const w = randF32(M * K), x = randF32(K * N);
    const got = gemmF32(w, x, M, K, N), want = gemmF32Reference(w, x, M, K, N);
    for (let i = 0; i < got.length; i++) {
      assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-5 * Math.sqrt(K) + 1e-6, `${M}x${K}x${N} at ${i}: ${got[i]} vs ${want[i]}`);
    }
  }
});

test('gemmF32Reference on a tiny case', () => {
  const out = gemmF32Reference(Float32Array.from([1, 2, 3, 4]), Float32Array.from([5, 6, 7, 8]), 2, 2, 2);
  assert.deepEqual(Array.from(out), [19, 22, 43, 50]);
});

test('the wasm loader names the build step when a module is missing', async () => {
  const { loadWasmModule } = await import('./wasm.js');
  assert.throws(() => loadWasmModule('no-such-kernel'), /no-such-kernel\.wasm is missing; run `npm run build:wasm`/);
});
