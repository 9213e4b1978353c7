import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ZqWeights, zqMatmul, zqMatmulReference } from './zq-matmul.js';
import { randBytes, randW, TEST_MODULUS as M } from './test-data.js';


function both(w: Int8Array, rows: number, cols: number, a: Uint8Array, b: Uint8Array, N: number): void {
  const ao = new Uint32Array(rows * N), bo = new Uint32Array(rows * N);
  const ar = new Uint32Array(rows * N), br = new Uint32Array(rows * N);
  zqMatmul(M, ZqWeights.pack(w, rows, cols), a, b, N, ao, bo);
  zqMatmulReference(M, w, rows, cols, a, b, N, ar, br);
  let bad = 0;
  for (let i = 0; i < ao.length; i++) if (ao[i] !== ar[i] || bo[i] !== br[i]) bad++;
  assert.equal(bad, 0, `${rows}x${cols} N=${N}: ${bad} mismatches`);
}

/** Straight BigInt evaluation of the definition, for tiny cases. */
function bigintOne(w: Int8Array, cols: number, a: Uint8Array, b: Uint8Array, N: number, o: number, t: number): [number, number] {
  const q = 1n << 44n;
  let sa = 0n, sb = 0n;
  for (let i = 0; i < cols; i++) {
    let av = 0n, bv = 0n;
    for (let k = 5; k >= 0; k--) av = (av << 8n) | BigInt(a[(i * N + t) * 6 + k]!);
    for (let k = 4; k >= 0; k--) bv = (bv << 8n) | BigInt(b[(i * N + t) * 5 + k]!);
    av &= q - 1n;
    sa += BigInt(w[o * cols + i]!) * av;
    sb += BigInt(w[o * cols + i]!) * (bv << 4n);
  }
  const round = (s: bigint): number => Number(((((s % q) + q) % q + 2048n) >> 12n) & 0xffffffffn);
  return [round(sa), round(sb)];
}

test('zqMatmulReference agrees with BigInt arithmetic', () => {
  const rows = 3, cols = 11, N = 8;
  const w = randW(rows * cols), a = randBytes(cols * N * 6), b = randBytes(cols * N * 5);
  a.fill(0xff, 0, 60); b.fill(0xff, 0, 50);
  const ar = new Uint32Array(rows * N), br = new Uint32Array(rows * N);
  zqMatmulReference(M, w, rows, cols, a, b, N, ar, br);
  for (let o = 0; o < rows; o++) {
    for (let t = 0; t < N; t++) assert.deepEqual([ar[o * N + t], br[o * N + t]], bigintOne(w, cols, a, b, N, o, t));
  }
});

test('zqMatmul matches the reference on random odd shapes', () => {
  for (const [rows, cols, N] of [[1, 1, 8], [13, 37, 16], [4, 8, 8], [7, 100, 64], [5, 33, 72], [3, 20, 2048]] as const) {
    both(randW(rows * cols), rows, cols, randBytes(cols * N * 6), randBytes(cols * N * 5), N);
  }
});

test('zqMatmul at cols = 8192 (largest unchunked) and beyond (chunked)', () => {
  for (const [rows, cols, N] of [[3, 8192, 8], [2, 8193, 8], [5, 16390, 8]] as const) {
    both(randW(rows * cols), rows, cols, randBytes(cols * N * 6), randBytes(cols * N * 5), N);
  }
});

for (const cols of [8192, 8300]) test(`zqMatmul is exact at the limb extremes (cols = ${cols})`, () => {
  const rows = 4, N = 8;
  // Low 12 bits 0x800 make the balanced lowest A limb -2048 everywhere (and 0x80 the lowest B limb -128).
  const a = new Uint8Array(cols * N * 6), b = new Uint8Array(cols * N * 5);
  for (let j = 0; j < cols * N; j++) {
    a.set([0x00, 0xf8, 0xff, 0xff, 0xff, 0xff], j * 6);
    b.set([0x80, 0x80, 0xff, 0x7f, 0xff], j * 5);
  }
  for (const wv of [127, -127]) both(new Int8Array(rows * cols).fill(wv), rows, cols, a, b, N);
  const mixed = new Int8Array(rows * cols);
  for (let i = 0; i < mixed.length; i++) mixed[i] = i % 3 === 0 ? -127 : 127;
  both(mixed, rows, cols, a, b, N);
  // All-ones and all-zero bytes.
  const ones6 = new Uint8Array(cols * N * 6).fill(0xff), ones5 = new Uint8Array(cols * N * 5).fill(0xff);
  both(new Int8Array(rows * cols).fill(127), rows, cols, ones6, ones5, N);
  both(new Int8Array(rows * cols).fill(-127), rows, cols, ones6, ones5, N);
  both(randW(rows * cols), rows, cols, new Uint8Array(cols * N * 6), new Uint8Array(cols * N * 5), N);
});

test('zqMatmul ignores the top 4 bits of each 48-bit a word', () => {
  const rows = 2, cols = 5, N = 8;
  const w = randW(rows * cols), a = randBytes(cols * N * 6), b = randBytes(cols * N * 5);
  const a2 = a.slice();
  for (let j = 0; j < cols * N; j++) a2[j * 6 + 5] = a2[j * 6 + 5]! ^ 0xf0;
  const W = ZqWeights.pack(w, rows, cols);
  const o1 = new Uint32Array(rows * N), o2 = new Uint32Array(rows * N), p1 = new Uint32Array(rows * N), p2 = new Uint32Array(rows * N);
  zqMatmul(M, W, a, b, N, o1, p1);
  zqMatmul(M, W, a2, b, N, o2, p2);
  assert.deepEqual(o1, o2);
  assert.deepEqual(p1, p2);
});

test('zqMatmul validates its inputs', () => {
  const W = ZqWeights.pack(randW(6), 2, 3);
  const out = () => new Uint32Array(2 * 8);
  assert.throws(() => zqMatmul(M, W, new Uint8Array(3 * 12 * 6), new Uint8Array(3 * 12 * 5), 12, new Uint32Array(24), new Uint32Array(24)), /multiple of 8/);
  assert.throws(() => zqMatmul(M, W, new Uint8Array(3 * 8 * 6 - 1), new Uint8Array(3 * 8 * 5), 8, out(), out()), /aBytes has/);
  assert.throws(() => zqMatmul(M, W, new Uint8Array(3 * 8 * 6), new Uint8Array(3 * 8 * 5 + 1), 8, out(), out()), /bBytes has/);
  assert.throws(() => zqMatmul(M, W, new Uint8Array(3 * 8 * 6), new Uint8Array(3 * 8 * 5), 8, new Uint32Array(15), out()), /aOut has/);
  assert.throws(() => zqMatmul({ ...M, logQ: 48, uploadBits: 40, downloadBits: 32 }, W, new Uint8Array(3 * 8 * 6), new Uint8Array(3 * 8 * 5), 8, out(), out()), /limb plan only for logQ 44/);
  assert.throws(() => zqMatmul({ ...M, downloadBits: 36 }, W, new Uint8Array(3 * 8 * 6), new Uint8Array(3 * 8 * 5), 8, out(), out()), /limb plan only for/);
  assert.throws(() => ZqWeights.pack(Int8Array.from([1, -128]), 1, 2), /\|W\| <= 127/);
  assert.throws(() => ZqWeights.pack(new Int8Array(5), 2, 3), /expected rows\*cols = 6/);
});
