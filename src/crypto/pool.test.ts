import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  RLWE_N2048_Q44 as P, CryptoPool, MaskStream, SecretKey, decryptBlock, encryptBlock, expandMask, randomSeed,
  resultErrorBound, serverProductReference, uploadBytes,
} from './index.js';

const N = P.ringDegree;

function randMessage(d: number, max: number): Int32Array {
  const m = new Int32Array(d * N);
  for (let i = 0; i < m.length; i++) m[i] = Math.floor(Math.random() * (2 * max + 1)) - max;
  return m;
}

/** Upload coefficient k as an integer (little endian, uploadBytes each). */
function uploadValue(b: Uint8Array, k: number): number {
  const ub = uploadBytes(P);
  let v = 0;
  for (let j = ub - 1; j >= 0; j--) v = v * 256 + b[k * ub + j];
  return v;
}

test('mask stream is seekable: a stream started at a polynomial offset equals that slice of the full stream', () => {
  const seed = randomSeed();
  const full = expandMask(P, seed, 7, 5);
  for (const poly of [1, 3, 4]) {
    const off = poly * N * 6;
    const part = new MaskStream(seed, 7, off).next(N * 6);
    assert.deepEqual(part, full.subarray(off, off + N * 6));
  }
  assert.throws(() => new MaskStream(seed, 7, 8), /multiple of 16/);
  // another block index at the same offset is a different stream
  assert.notDeepEqual(new MaskStream(seed, 8, N * 6).next(64), full.subarray(N * 6, N * 6 + 64));
});

test('pool encryption uses the same masks as the single-thread path and decrypts bit-identically', async () => {
  const key = SecretKey.generate(P);
  // A second copy of the same secret: its own seed registry, so the same seed can be encrypted twice.
  const copy = SecretKey.fromFileBytes(key.toFileBytes());
  const pool = await CryptoPool.create(P, copy, 2);
  try {
    const d = 150; // not a multiple of the per-worker range: ranges of 64, 64, 22 polynomials
    const m = randMessage(d, 127);
    const seed = randomSeed();
    for (const [blockIndex, bits] of [[0, P.plaintextBits], [3, 20]] as const) {
      const single = encryptBlock(P, key, m, d, seed, blockIndex, bits);
      const pooled = await pool.encryptBlock(m, d, seed, blockIndex, bits);
      assert.equal(pooled.length, single.length);
      // Both are round((a s + e + Delta m) / 16) with independent fresh noise |e| <= 19: the uploads
      // differ by at most 3 units everywhere (a wrongly positioned mask would differ by ~2^39).
      const mod = 2 ** P.uploadBits;
      let worst = 0;
      for (let k = 0; k < d * N; k++) {
        let diff = (uploadValue(pooled, k) - uploadValue(single, k)) % mod;
        if (diff > mod / 2) diff -= mod;
        if (diff < -mod / 2) diff += mod;
        worst = Math.max(worst, Math.abs(diff));
      }
      assert.ok(worst <= 3, `block ${blockIndex}: uploads differ by ${worst} units`);
      assert.notDeepEqual(pooled, single, 'fresh noise in each path');
    }
    // The seed is claimed on the pool's key: a reuse is refused before any work.
    await assert.rejects(pool.encryptBlock(m, d, seed, 0), /already used/);
    await assert.rejects(pool.encryptBlock(m.subarray(1), d, randomSeed(), 0), /Int32Array of d\*N/);

    // Decryption of a server product: pool == single thread, bit for bit, and within the bound.
    const d2 = 6;
    const rows = 70;
    const w = new Int8Array(rows * d2);
    for (let i = 0; i < w.length; i++) w[i] = Math.floor(Math.random() * 255) - 127;
    const m2 = randMessage(d2, 127);
    const seed2 = randomSeed();
    const b = encryptBlock(P, key, m2, d2, seed2, 0);
    const { aOut, bOut } = serverProductReference(P, w, rows, d2, expandMask(P, seed2, 0, d2), b);
    const ySingle = decryptBlock(P, key, aOut, bOut, rows);
    const yPool = await pool.decryptBlock(aOut, bOut, rows);
    assert.deepEqual(yPool, ySingle);
    for (let o = 0; o < rows; o++) {
      let sq = 0;
      for (let i = 0; i < d2; i++) sq += w[o * d2 + i] ** 2;
      const bound = resultErrorBound(P, sq, key.hammingWeight);
      for (let t = 0; t < N; t++) {
        let want = 0;
        for (let i = 0; i < d2; i++) want += w[o * d2 + i] * m2[i * N + t];
        assert.ok(Math.abs(yPool[o * N + t] - want) <= bound, `row ${o} token ${t}`);
      }
    }
  } finally {
    const codes = await pool.close();
    assert.deepEqual(codes, [0, 0], 'workers exit cleanly');
  }
  await assert.rejects(pool.encryptBlock(randMessage(1, 1), 1, randomSeed(), 0), /closed/);
});

test('pool decryptSum: the sum of the decrypted terms lands token-major in place, equal to decryptBlock sums (shared and copied inputs, Int32 and Float64 results)', async () => {
  const key = SecretKey.generate(P);
  const pool = await CryptoPool.create(P, key, 2);
  try {
    const rows = 70; // ranges of 35 rows: not a multiple of the kernel's row chunk
    const terms = 2;
    const rnd = (shared: boolean): Uint32Array => {
      const a = shared ? new Uint32Array(new SharedArrayBuffer(rows * N * 4)) : new Uint32Array(rows * N);
      for (let i = 0; i < a.length; i++) a[i] = (Math.random() * 2 ** 32) >>> 0;
      return a;
    };
    for (const [shared, Result] of [[false, Float64Array], [true, Float64Array], [true, Int32Array]] as const) {
      const a = Array.from({ length: terms }, () => rnd(shared));
      const b = Array.from({ length: terms }, () => rnd(shared));
      const T = N + 100; // second block: 100 tokens from t0 = N
      const t0 = N;
      const tn = 100;
      const buffer = new SharedArrayBuffer(T * rows * Result.BYTES_PER_ELEMENT);
      const acc = (Result === Int32Array ? new Int32Array(buffer) : new Float64Array(buffer)).fill(7); // outside the block: untouched
      await pool.decryptSum(a, b, rows, 20, acc, t0, tn);
      const want = new Result(T * rows).fill(7);
      want.fill(0, t0 * rows, (t0 + tn) * rows);
      for (let k = 0; k < terms; k++) {
        const y = decryptBlock(P, key, a[k], b[k], rows, 20);
        for (let o = 0; o < rows; o++) for (let t = 0; t < tn; t++) want[(t0 + t) * rows + o] += y[o * N + t];
      }
      assert.deepEqual(Array.from(acc), Array.from(want), `shared inputs: ${shared}, ${Result.name}`);
      assert.equal(a[0].length, rows * N, 'the caller keeps its arrays');
    }
    await assert.rejects(pool.decryptSum([rnd(false)], [rnd(false)], rows, 20, new Float64Array(N * rows), 0, N), /SharedArrayBuffer/);
    await assert.rejects(pool.decryptSum([rnd(false)], [], rows, 20, new Float64Array(new SharedArrayBuffer(N * rows * 8)), 0, N), /parts/);
  } finally {
    await pool.close();
  }
});

test('pool featureMajor: feature-major rows and token L1 norms equal the naive ones (int8 incl. -128, int16, odd shapes, offsets)', async () => {
  const key = SecretKey.generate(P);
  const pool = await CryptoPool.create(P, key, 2);
  try {
    // T = 600: several token-range tasks (256 tokens each) on two workers
    for (const [T, K, wide, off] of [[600, 37, false, 0], [301, 37, false, 0], [64, 48, false, 3], [7, 16, false, 0], [130, 33, true, 1], [5, 1, false, 0]] as const) {
      const raw = wide ? new Int16Array(off + T * K) : new Int8Array(off + T * K);
      const lim = wide ? 32768 : 128;
      for (let i = 0; i < raw.length; i++) raw[i] = Math.floor(Math.random() * 2 * lim) - lim;
      const v = raw.subarray(off);
      v[0] = -lim; // |-128| and |-32768| must count in full
      const fm = await pool.featureMajor(v, T, K);
      assert.ok(fm.values.buffer instanceof SharedArrayBuffer);
      for (let t = 0; t < T; t++) {
        let l1 = 0;
        for (let i = 0; i < K; i++) {
          l1 += Math.abs(v[t * K + i]);
          if (fm.values[i * T + t] !== v[t * K + i]) assert.fail(`T=${T} K=${K}: value (${t}, ${i})`);
        }
        assert.equal(fm.tokenL1[t], l1, `T=${T} K=${K}: L1 of token ${t}`);
      }
    }
    await assert.rejects(pool.featureMajor(new Int8Array(10), 3, 4), /3 x 4/);
  } finally {
    await pool.close();
  }
});

test('pool encryptValues: the upload equals encryptBlock\'s, and the shared copies of the activations are zero afterwards', async () => {
  const key = SecretKey.generate(P);
  const pool = await CryptoPool.create(P, key, 2);
  try {
    const T = N + 300, K = 70; // two column blocks, the second one partial
    const v = Int8Array.from({ length: T * K }, () => Math.floor(Math.random() * 256) - 128);
    const fm = await pool.featureMajor(v, T, K);
    const seed = randomSeed();
    const uploads = await Promise.all([0, 1].map((blk) => pool.encryptValues(fm, seed, blk, 20)));
    assert.ok(fm.values.every((x) => x === 0), 'every value read by encryptValues is wiped');
    // the same upload from the single-thread path on a copy of the key (the seed is claimed on the original)
    const copy = SecretKey.fromFileBytes(key.toFileBytes());
    for (const blk of [0, 1]) {
      const m = new Int32Array(K * N);
      for (let i = 0; i < K; i++) for (let t = blk * N; t < Math.min(T, (blk + 1) * N); t++) m[i * N + t - blk * N] = v[t * K + i];
      const b = encryptBlock(P, copy, m, K, seed, blk, 20);
      // same masks and messages; the noise differs: compare the rounded values within the noise
      const dv = new DataView(b.buffer), du = new DataView(uploads[blk].buffer);
      for (let i = 0; i < K * N; i += 97) {
        const x = dv.getUint32(i * 5 + 1, true), y = du.getUint32(i * 5 + 1, true); // top 32 of the 40 bits
        const d = Math.abs(x - y);
        assert.ok(Math.min(d, 2 ** 32 - d) <= 1, `block ${blk} value ${i}`);
      }
    }
    pool.releaseFeatureMajor(fm, true);
  } finally {
    await pool.close();
  }
});

test('encodeFeatures: the word-wise path (int8, 4 | C, 4 | i0, 4 | d) equals the naive packing, also for ranges and offsets', async () => {
  const { encodeFeatures } = await import('./encode.js');
  const n = 64;
  for (const [T, C, i0, d, off] of [[200, 48, 0, 48, 0], [130, 64, 8, 16, 4], [64, 36, 32, 4, 0], [70, 40, 4, 36, 8]]) {
    const raw = new Int8Array(off + T * C);
    for (let i = 0; i < raw.length; i++) raw[i] = Math.floor(Math.random() * 256) - 128;
    const x = raw.subarray(off);
    for (let blk = 0; blk < Math.ceil(T / n); blk++) {
      const want = new Int32Array(d * n);
      for (let t = 0; t < n && blk * n + t < T; t++) for (let i = 0; i < d; i++) want[i * n + t] = x[(blk * n + t) * C + i0 + i];
      assert.deepEqual(encodeFeatures(x, T, C, n, blk, i0, d), want, `T=${T} C=${C} [${i0}, ${i0 + d}) offset ${off} block ${blk}`);
      // the same through the generic (Int16) path
      assert.deepEqual(encodeFeatures(Int16Array.from(x), T, C, n, blk, i0, d), want);
    }
  }
});
