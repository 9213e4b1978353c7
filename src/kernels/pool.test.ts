import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { KernelPool } from './pool.js';
import { zqMatmulReference } from './zq-matmul.js';
import { gemmInt8Reference } from './gemm-int8.js';
import { gemmF32Reference } from './gemm-f32.js';
import { matmulForwardReference, matmulBackwardInputReference } from './matmul-f32.js';
import { randBytes, randW, TEST_MODULUS as M } from './test-data.js';

function randF32(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
}
function close(got: Float32Array, want: Float32Array, tol: number, what: string): void {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= tol, `${what} at ${i}: ${got[i]} vs ${want[i]}`);
}

test('KernelPool computes every op like the references (3 workers, uneven shards)', async () => {
  const pool = await KernelPool.create(3);
  try {
    assert.equal(pool.threads, 3);
    // zq: rows not a multiple of 4*threads; one shard smaller than the others.
    for (const [rows, cols, N] of [[13, 37, 16], [2, 9, 8], [22, 50, 24]] as const) {
      const w = randW(rows * cols), a = randBytes(cols * N * 6), b = randBytes(cols * N * 5);
      const h = await pool.registerZq(w, rows, cols);
      const got = await pool.zqMatmul(M, h, a, b, N);
      const ar = new Uint32Array(rows * N), br = new Uint32Array(rows * N);
      zqMatmulReference(M, w, rows, cols, a, b, N, ar, br);
      assert.deepEqual(got.aOut, ar);
      assert.deepEqual(got.bOut, br);
      // Registered weights stay resident: a second call with new inputs (as Node Buffers, as from a socket).
      const a2 = Buffer.from(randBytes(cols * N * 6)), b2 = Buffer.from(randBytes(cols * N * 5));
      const got2 = await pool.zqMatmul(M, h, a2, b2, N);
      zqMatmulReference(M, w, rows, cols, a2, b2, N, ar, br);
      assert.deepEqual(got2.aOut, ar);
      assert.deepEqual(got2.bOut, br);
    }
    {
      const M = 21, K = 45, N = 11;
      const w = randW(M * K), x = randW(K * N);
      const h = await pool.registerInt8(w, M, K);
      assert.deepEqual(await pool.gemmInt8(h, x, N), gemmInt8Reference(w, x, M, K, N));
    }
    {
      const M = 19, K = 33, N = 10, T = 7;
      const w = randF32(M * K);
      const h = await pool.registerF32(w, M, K);
      const x = randF32(K * N);
      close(await pool.gemmF32(h, x, N), gemmF32Reference(w, x, M, K, N), 1e-5, 'gemmF32');
      const inp = randF32(T * K);
      const want = new Float32Array(T * M);
      matmulForwardReference(want, inp, w, null, T, K, M);
      close(await pool.matmulForward(h, inp, T), want, 1e-5, 'forward');
      const dout = randF32(T * M);
      const wantIn = new Float32Array(T * K);
      matmulBackwardInputReference(wantIn, dout, w, T, K, M);
      close(await pool.matmulBackwardInput(h, dout, T), wantIn, 1e-5, 'backward input');
    }
    // Concurrent calls on the same pool resolve independently.
    const rows = 8, cols = 16, N = 8, w = randW(rows * cols);
    const h = await pool.registerZq(w, rows, cols);
    const ins = [0, 1, 2, 3].map(() => [randBytes(cols * N * 6), randBytes(cols * N * 5)] as const);
    const outs = await Promise.all(ins.map(([a, b]) => pool.zqMatmul(M, h, a, b, N)));
    outs.forEach((o, i) => {
      const ar = new Uint32Array(rows * N), br = new Uint32Array(rows * N);
      zqMatmulReference(M, w, rows, cols, ins[i]![0], ins[i]![1], N, ar, br);
      assert.deepEqual(o.aOut, ar);
      assert.deepEqual(o.bOut, br);
    });
  } finally {
    await pool.close();
  }
});

test('KernelPool.aesCtrInto fills shared memory with the AES-128-CTR key stream, pieces on every worker', async () => {
  const pool = await KernelPool.create(2);
  try {
    const key = randomBytes(16), iv = randomBytes(16);
    iv[15] = 0xf0; // the counter carries across bytes within the first pieces
    const bytes = (3 << 20) + 48; // more than one 1 MiB step per piece
    const dst = pool.sharedScratch(bytes);
    const per = 1 << 20;
    const pieces: { iv: Uint8Array; dst: Uint8Array }[] = [];
    for (let off = 0; off < bytes; off += per) {
      // the IV that starts the stream at block off / 16: the 128-bit big-endian counter plus off / 16
      const ctr = (BigInt('0x' + Buffer.from(iv).toString('hex')) + BigInt(off / 16)) % (1n << 128n);
      pieces.push({ iv: Uint8Array.from(Buffer.from(ctr.toString(16).padStart(32, '0'), 'hex')), dst: dst.view.subarray(off, Math.min(bytes, off + per)) });
    }
    await pool.aesCtrInto(key, pieces);
    const want = createCipheriv('aes-128-ctr', key, iv).update(new Uint8Array(bytes));
    assert.ok(Buffer.from(dst.view).equals(want));
    dst.release();
    await assert.rejects(pool.aesCtrInto(key, [{ iv, dst: new Uint8Array(16) }]), /shared memory/);
    await assert.rejects(pool.aesCtrInto(key.subarray(0, 8), []), /16-byte key/);
  } finally {
    await pool.close();
  }
});

test('KernelPool validates handles and shapes, and refuses work after close', async () => {
  const pool = await KernelPool.create(2);
  const h = await pool.registerZq(randW(12), 3, 4);
  await assert.rejects(pool.zqMatmul(M, h, new Uint8Array(4 * 8 * 6 - 1), new Uint8Array(4 * 8 * 5), 8), /aBytes has/);
  await assert.rejects(pool.zqMatmul(M, h + 100, new Uint8Array(4 * 8 * 6), new Uint8Array(4 * 8 * 5), 8), /no int8 weights with handle/);
  await assert.rejects(pool.gemmF32(h, new Float32Array(4), 1), /no f32 weights/);
  await assert.rejects(pool.registerZq(Int8Array.from([-128]), 1, 1), /\|W\| <= 127/);
  await pool.close();
  await assert.rejects(pool.zqMatmul(M, h, new Uint8Array(4 * 8 * 6), new Uint8Array(4 * 8 * 5), 8), /closed/);
});
