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
