import { test } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import { RLWE_N2048_Q44, SecretKey, encodeFeatures, encryptBlock, randomSeed, resultErrorBound, resultNoiseStd } from '../crypto/index.js';
import { quantizePerToken, quantizeWeightsPerChannel } from '../quant/quantize.js';
import { accumulateBlock, HeLinearClient } from './client.js';
import { rowSqNorms, stackedColSqNorms } from './layout.js';
import { HeLinearServer, poolBackend } from './server.js';
import { KernelPool } from '../kernels/pool.js';
import { QuantizedGroup } from './plain.js';
import type { EncryptedInput, Int8Matrix } from './types.js';

v8.setFlagsFromString('--expose-gc'); // for the test of dropped uploads

const params = RLWE_N2048_Q44;
const N = params.ringDegree;

function randInts(n: number, max: number, Arr: Int8ArrayConstructor | Int16ArrayConstructor = Int8Array): Int8Array | Int16Array {
  const a = new Arr(n);
  for (let i = 0; i < n; i++) a[i] = Math.floor(Math.random() * (2 * max + 1)) - max;
  return a;
}

function randMatrix(rows: number, cols: number, fill?: number): Int8Matrix {
  const values = fill === undefined ? (randInts(rows * cols, 127) as Int8Array) : new Int8Array(rows * cols).fill(fill);
  return { values, rows, cols };
}

/** Independent exact reference: y[t,o] = sum_i x[t,i] W[o,i] in doubles (exact below 2^53). */
function exactForward(x: ArrayLike<number>, T: number, w: Int8Matrix): Float64Array {
  const y = new Float64Array(T * w.rows);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < w.rows; o++) {
      let s = 0;
      for (let i = 0; i < w.cols; i++) s += x[t * w.cols + i] * w.values[o * w.cols + i];
      y[t * w.rows + o] = s;
    }
  }
  return y;
}

/** dx[t,i] = sum_j sum_o dy_j[t,o] W_j[o,i], with the dy_j stacked token-major in one array. */
function exactBackward(dy: ArrayLike<number>, T: number, parts: Int8Matrix[]): Float64Array {
  const C = parts[0].cols;
  const K = parts.reduce((s, p) => s + p.rows, 0);
  const dx = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    let k = 0;
    for (const p of parts) {
      for (let o = 0; o < p.rows; o++, k++) {
        const d = dy[t * K + k];
        for (let i = 0; i < C; i++) dx[t * C + i] += d * p.values[o * C + i];
      }
    }
  }
  return dx;
}

function assertWithinBound(got: Int32Array | Float64Array, want: Float64Array, T: number, rows: number, sqNorms: number[], key: SecretKey, what: string): number {
  let worst = 0;
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < rows; o++) {
      const err = Math.abs(got[t * rows + o] - want[t * rows + o]);
      const bound = resultErrorBound(params, sqNorms[o], key.hammingWeight);
      if (err > bound) assert.fail(`${what}: |error| ${err} > bound ${bound.toFixed(2)} at token ${t}, output ${o}`);
      worst = Math.max(worst, err / bound);
    }
  }
  return worst;
}

async function setup(parts: Int8Matrix[], actBits = 8, adaptivePlaintext = true) {
  const key = SecretKey.generate(params);
  const client = new HeLinearClient({ key, actBits, adaptivePlaintext });
  const server = new HeLinearServer({ actBits });
  await server.registerGroup('g', parts);
  return { key, client, server };
}

test('fused q/k/v forward equals the integer products for T < N, T = N and T > N', async () => {
  const C = 96;
  const parts = [randMatrix(64, C), randMatrix(16, C), randMatrix(16, C)];
  const { key, client, server } = await setup(parts);
  for (const T of [37, N, N + 45]) {
    const x = randInts(T * C, 127);
    const req = client.encryptIntegersReference(x, T, [C]);
    assert.equal(req.blocks.length, Math.ceil(T / N));
    const res = await server.forward('g', req);
    const got = client.decryptIntegersReference(req, res, parts.map((p) => p.rows));
    parts.forEach((p, j) => assertWithinBound(got[j], exactForward(x, T, p), T, p.rows, rowSqNorms(p), key, `T=${T} part ${j}`));
  }
});

test('d = 8192 (Llama down_proj) with extreme values: all +-127 inputs and weights', async () => {
  const C = 8192;
  const T = 300;
  const w = randMatrix(3, C, 127);
  for (let i = 0; i < C; i += 3) w.values[C + i] = -127; // second row mixed signs
  const { key, client, server } = await setup([w]);
  const x = new Int8Array(T * C).fill(127);
  for (let t = 1; t < T; t += 2) x.fill(-127, t * C, (t + 1) * C);
  const req = client.encryptIntegersReference(x, T, [C]);
  const res = await server.forward('g', req);
  const [got] = client.decryptIntegersReference(req, res, [w.rows]);
  const want = exactForward(x, T, w);
  assert.equal(Math.abs(want[0]), 127 * 127 * C, 'the extreme case reaches the capacity limit');
  assert.deepEqual(client.plaintextBitsOf(req), [params.plaintextBits], 'all +-127 inputs at K = 8192 need the full width');
  assertWithinBound(got, want, T, w.rows, rowSqNorms(w), key, 'd=8192 extremes');
});

test('summed backward (W_q^T dq + W_k^T dk + W_v^T dv) equals the integer product', async () => {
  const C = 80;
  const parts = [randMatrix(48, C), randMatrix(24, C), randMatrix(24, C)];
  const { key, client, server } = await setup(parts);
  const T = 130;
  const K = 96;
  const dy = randInts(T * K, 127);
  const req = client.encryptIntegersReference(dy, T, parts.map((p) => p.rows));
  const res = await server.backward('g', req);
  assert.equal(res.outputRows.length, 1);
  const [got] = client.decryptIntegersReference(req, res, [C]);
  assertWithinBound(got, exactBackward(dy, T, parts), T, C, stackedColSqNorms(parts), key, 'backward');
});

test('products longer than the plaintext headroom are split into K-chunk terms and summed by the client', async () => {
  // 10-bit inputs leave room for K <= 2067 per exact term: K = 3000 needs two terms.
  const C = 3000;
  const w = randMatrix(5, C);
  const { key, client, server } = await setup([w], 10);
  assert.ok(server.maxTermK < C);
  const T = 50;
  const x = randInts(T * C, 511, Int16Array);
  const req = client.encryptIntegersReference(x, T, [C]);
  const res = await server.forward('g', req);
  assert.equal(res.terms, 2);
  const [got] = client.decryptIntegersReference(req, res, [w.rows]);
  // Each term carries its own noise: the bound of the sum is at most the sum of the bounds.
  const want = exactForward(x, T, w);
  const norms = rowSqNorms(w);
  for (let i = 0; i < got.length; i++) {
    const bound = 2 * resultErrorBound(params, norms[i % w.rows], key.hammingWeight);
    assert.ok(Math.abs(got[i] - want[i]) <= bound, `error ${got[i] - want[i]} > ${bound}`);
  }
  // Without the split the sum would wrap around the plaintext modulus for some outputs.
  assert.ok(want.some((v) => Math.abs(v) >= 2 ** 27) || server.maxTermK < C);
});

test('encrypted path matches the plaintext quantized path within the HE error (forward and backward)', async (ctx) => {
  const T = 64;
  const C = 128;
  const rowsOf = [96, 32, 32];
  const fp = rowsOf.map((r) => {
    const w = new Float32Array(r * C);
    for (let i = 0; i < w.length; i++) w[i] = (Math.random() * 2 - 1) * 0.05;
    return quantizeWeightsPerChannel(w, r, C);
  });
  const plain = new QuantizedGroup(fp);
  const parts = fp.map((q) => ({ values: q.values, rows: q.rows, cols: q.cols }));
  const { key, client, server } = await setup(parts);
  ctx.after(() => client.close());
  const x = new Float32Array(T * C);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 0.37) * (1 + (i % 7));

  const pending = await client.encryptForward(x, T, C);
  const ys = await client.decryptForward(pending, await server.forward('g', pending.request), fp.map((q) => q.scales));
  const ysPlain = plain.forward(x, T);
  ys.forEach((y, j) => {
    const norms = rowSqNorms(parts[j]);
    for (let t = 0; t < T; t++) {
      for (let o = 0; o < rowsOf[j]; o++) {
        const unit = pending.scales[t] * fp[j].scales[o];
        const bound = resultErrorBound(params, norms[o], key.hammingWeight) * unit + 1e-6 * Math.abs(ysPlain[j][t * rowsOf[j] + o]);
        const err = Math.abs(y[t * rowsOf[j] + o] - ysPlain[j][t * rowsOf[j] + o]);
        assert.ok(err <= bound, `forward part ${j} [${t},${o}]: ${err} > ${bound}`);
      }
    }
  });

  const dys = rowsOf.map((r) => {
    const d = new Float32Array(T * r);
    for (let i = 0; i < d.length; i++) d[i] = Math.cos(i * 0.11) * 1e-3;
    return d;
  });
  const pb = await client.encryptBackward(dys, T, fp.map((q) => q.scales));
  const dx = await client.decryptBackward(pb, await server.backward('g', pb.request), C);
  const dxPlain = plain.backward(dys, T);
  const norms = stackedColSqNorms(parts);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < C; i++) {
      const bound = resultErrorBound(params, norms[i], key.hammingWeight) * pb.scales[t] + 1e-6 * Math.abs(dxPlain[t * C + i]);
      assert.ok(Math.abs(dx[t * C + i] - dxPlain[t * C + i]) <= bound, `backward [${t},${i}]`);
    }
  }
});

test('the measured error std matches the noise model (full plaintext width)', async () => {
  const C = 512;
  const w = randMatrix(64, C);
  const { key, client, server } = await setup([w], 8, false);
  const T = N;
  const x = randInts(T * C, 127);
  const req = client.encryptIntegersReference(x, T, [C]);
  const [got] = client.decryptIntegersReference(req, await server.forward('g', req), [w.rows]);
  const want = exactForward(x, T, w);
  const norms = rowSqNorms(w);
  let sq = 0;
  let model = 0;
  for (let i = 0; i < got.length; i++) {
    sq += (got[i] - want[i]) ** 2;
    model += resultNoiseStd(params, norms[i % w.rows], key.hammingWeight) ** 2;
  }
  const ratio = Math.sqrt(sq / model);
  assert.ok(ratio > 0.8 && ratio < 1.2, `measured/model noise std ratio ${ratio.toFixed(3)}`);
});

test('a wrong key recovers nothing, and the server and client reject mismatched shapes', async () => {
  const C = 40;
  const w = randMatrix(8, C);
  // full width: garbage spreads over 2^28 values, so 'close' is a 1e-5 event per value
  const { client, server } = await setup([w], 8, false);
  const T = 20;
  const x = randInts(T * C, 127);
  const req = client.encryptIntegersReference(x, T, [C]);
  const res = await server.forward('g', req);
  const other = new HeLinearClient();
  const [garbage] = other.decryptIntegersReference(req, res, [w.rows], client.plaintextBitsOf(req));
  const want = exactForward(x, T, w);
  let close = 0;
  for (let i = 0; i < want.length; i++) if (Math.abs(garbage[i] - want[i]) < 1000) close++;
  assert.ok(close <= 1, `${close} of ${want.length} values decrypted close to the truth with a wrong key`);

  await assert.rejects(server.forward('g', { ...req, partCols: [C + 1] }), /must have parts \[40\]/);
  await assert.rejects(server.forward('nope', req), /unknown projection group/);
  await assert.rejects(server.forward('g', { ...req, blocks: [req.blocks[0].subarray(1)] }), /column block has/);
  await assert.rejects(server.forward('g', { ...req, T: N + 1 }), /need 2 column blocks/);
  assert.throws(() => client.decryptIntegersReference(req, { ...res, terms: 2 }, [w.rows]), /terms per output/);
  assert.throws(() => client.decryptIntegersReference(req, res, [w.rows + 1]), /expected \[9\]/);
  assert.throws(() => client.decryptIntegersReference(req, { ...res, T: 21 }, [w.rows]), /for 21 tokens/);
});

test('every request uses a fresh seed', () => {
  const client = new HeLinearClient();
  const seen = new Set<string>();
  const x = new Int8Array(4 * 8);
  for (let i = 0; i < 20; i++) {
    const req = client.encryptIntegersReference(x, 4, [8]);
    const hex = Buffer.from(req.seed).toString('hex');
    assert.ok(!seen.has(hex));
    seen.add(hex);
  }
});

/** Gaussian from two uniforms (test data only). */
function gauss(): number {
  return Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
}

test('adaptive plaintext width: minimal and safe for +-127 inputs, exact for tiny inputs, smallest for zeros', async () => {
  const C = 96;
  const w = randMatrix(16, C);
  const { key, client, server } = await setup([w]);
  const T = 100;
  for (const [what, maxX] of [['+-127', 127], ['+-1', 1], ['zeros', 0]] as const) {
    const x = new Int8Array(T * C);
    for (let i = 0; i < x.length; i++) x[i] = maxX === 0 ? 0 : (i % 2 ? maxX : -maxX);
    const req = client.encryptIntegersReference(x, T, [C]);
    const [bits] = client.plaintextBitsOf(req);
    assert.equal(Object.values(req).some((v) => v === bits), false, 'the width is not a field of the upload');
    const bound = 127 * C * maxX; // max_t 127 * ||x_t||_1
    const errBound = resultErrorBound(params, 127 * 127 * C, key.hammingWeight, 8, bits);
    // Safe: every |y| plus the error fits the centered range of 2^bits values ...
    assert.ok(bound + errBound + 1 <= 2 ** (bits - 1), `${what}: P' = ${bits} too small for |y| <= ${bound}`);
    // ... and minimal: one bit less would not hold the largest possible result.
    if (bits > 2) {
      const errBelow = resultErrorBound(params, 127 * 127 * C, key.hammingWeight, 8, bits - 1);
      assert.ok(bound + errBelow + 2 > 2 ** (bits - 2), `${what}: P' = ${bits} is not minimal for |y| <= ${bound}`);
    }
    assert.ok(bits < params.plaintextBits);
    const [got] = client.decryptIntegersReference(req, await server.forward('g', req), [w.rows]);
    const want = exactForward(x, T, w);
    for (let i = 0; i < got.length; i++) {
      const b = resultErrorBound(params, 127 * 127 * C, key.hammingWeight, 8, bits);
      assert.ok(Math.abs(got[i] - want[i]) <= b, `${what}: error ${got[i] - want[i]} > ${b} at ${i}`);
    }
    if (maxX <= 1) {
      assert.equal(errBound, 0, `${what}: bound at P' = ${bits}`);
      assert.deepEqual(Float64Array.from(got), want, `${what}: tiny inputs decrypt exactly`);
    }
  }
  // The extreme of the bound: all weights -127, all inputs 127, |y| = 127 * 127 * C exactly.
  const wMin = randMatrix(4, C, -127);
  await server.registerGroup('min', [wMin]);
  const xMax = new Int8Array(T * C).fill(127);
  const reqMin = client.encryptIntegersReference(xMax, T, [C]);
  assert.ok(client.plaintextBitsOf(reqMin)[0] < params.plaintextBits);
  const [gotMin] = client.decryptIntegersReference(reqMin, await server.forward('min', reqMin), [wMin.rows]);
  const wantMin = exactForward(xMax, T, wMin);
  assert.equal(wantMin[0], -127 * 127 * C);
  for (let i = 0; i < gotMin.length; i++) assert.ok(Math.abs(gotMin[i] - wantMin[i]) <= 1, `w = -127: ${gotMin[i]} vs ${wantMin[i]}`);

  // Column blocks get their own width: a block of zeros next to a block of +-127.
  const T2 = N + 10;
  const x2 = new Int8Array(T2 * C).fill(0);
  x2.fill(127, N * C);
  const req2 = client.encryptIntegersReference(x2, T2, [C]);
  const bits2 = client.plaintextBitsOf(req2);
  assert.equal(bits2.length, 2);
  assert.ok(bits2[0] < bits2[1], `widths ${bits2}`);
  const [got2] = client.decryptIntegersReference(req2, await server.forward('g', req2), [w.rows]);
  assertWithinBound(got2, exactForward(x2, T2, w), T2, w.rows, rowSqNorms(w), key, 'two widths');
  // A wrong width for a block decrypts to a scaled result, not the product.
  const [wrong] = client.decryptIntegersReference(req2, await server.forward('g', req2), [w.rows], [bits2[0], bits2[1] - 1]);
  const want2 = exactForward(x2, T2, w);
  // (one value alone can be small when its weight row happens to sum near zero: count them all)
  let off = 0;
  for (let i = N * w.rows; i < T2 * w.rows; i++) if (Math.abs(wrong[i] - want2[i]) > 1000) off++;
  assert.ok(off > 0.8 * 10 * w.rows, `only ${off} of ${10 * w.rows} values of the wrongly decoded block are off`);
});

test('measured noise matches the model at several plaintext widths (error scales with 2^(P\'-P))', async () => {
  const C = 256;
  const w = randMatrix(32, C);
  const { key, client, server } = await setup([w]);
  const T = N;
  const x = randInts(T * C, 3);
  const norms = rowSqNorms(w);
  const want = exactForward(x, T, w);
  const m = blockMessage(x, T, C, N, 0);
  const P = params.plaintextBits;
  for (const bits of [P, 24, 20]) {
    // Encrypt at P', decrypt once at P' (the normal path) and once at the full width P: there the
    // result is y 2^(P-P') + E_P, which shows the error of the P' path at a resolution of 2^(P'-P).
    const seed = randomSeed();
    const req = { masks: 'fresh' as const, paramsId: params.id, T, partCols: [C], seed, blocks: [encryptBlock(params, key, m, C, seed, 0, bits)] };
    const res = await server.forward('g', req);
    const [got] = client.decryptIntegersReference(req, res, [w.rows], [bits]);
    const [fine] = client.decryptIntegersReference(req, res, [w.rows], [P]);
    const scale = 2 ** (P - bits);
    let sq = 0;
    let model = 0;
    for (let i = 0; i < got.length; i++) {
      const o = i % w.rows;
      const b = resultErrorBound(params, norms[o], key.hammingWeight, 8, bits);
      assert.ok(Math.abs(got[i] - want[i]) <= b, `P'=${bits}: error ${got[i] - want[i]} > ${b}`);
      sq += ((fine[i] - want[i] * scale) / scale) ** 2;
      // the fine read-out is rounded to 1/scale: add its variance
      model += resultNoiseStd(params, norms[o], key.hammingWeight, bits) ** 2 + 1 / (12 * scale * scale);
    }
    const ratio = Math.sqrt(sq / model);
    assert.ok(ratio > 0.9 && ratio < 1.1, `P'=${bits}: measured/model noise std ratio ${ratio.toFixed(3)}`);
  }
});

test('adaptive width cuts the relative error on realistic outlier activations by >= 2^(P-P\')', async () => {
  const T = 512;
  const C = 512;
  const rows = 64;
  const wf = new Float32Array(rows * C);
  for (let i = 0; i < wf.length; i++) wf[i] = gauss() / Math.sqrt(C);
  const w: Int8Matrix = { values: new Int8Array(rows * C), rows, cols: C };
  for (let o = 0; o < rows; o++) {
    let mx = 0;
    for (let i = 0; i < C; i++) mx = Math.max(mx, Math.abs(wf[o * C + i]));
    for (let i = 0; i < C; i++) w.values[o * C + i] = Math.round((wf[o * C + i] / mx) * 127);
  }
  const xf = new Float32Array(T * C);
  for (let i = 0; i < xf.length; i++) xf[i] = gauss();
  for (let c = 0; c < C; c += Math.floor(C / 6)) for (let t = 0; t < T; t++) xf[t * C + c] *= 20;
  const xq = quantizePerToken(xf, T, C, 8).values;
  const want = exactForward(xq, T, w);
  const relErr = async (adaptive: boolean): Promise<{ rel: number; bits: number }> => {
    const { client, server } = await setup([w], 8, adaptive);
    const req = client.encryptIntegersReference(xq, T, [C]);
    const [got] = client.decryptIntegersReference(req, await server.forward('g', req), [rows]);
    let e = 0;
    let s = 0;
    for (let i = 0; i < got.length; i++) { e += (got[i] - want[i]) ** 2; s += want[i] ** 2; }
    return { rel: Math.sqrt(e / s), bits: client.plaintextBitsOf(req)[0] };
  };
  const cap = await relErr(false);
  const ada = await relErr(true);
  assert.equal(cap.bits, params.plaintextBits);
  assert.ok(cap.rel > 0, 'the full-width path has a visible error');
  assert.ok(ada.bits <= params.plaintextBits - 6, `outlier data should need far fewer bits, got ${ada.bits}`);
  const factor = 2 ** (params.plaintextBits - ada.bits);
  assert.ok(ada.rel <= cap.rel / factor, `relative error ${ada.rel} at P'=${ada.bits} vs ${cap.rel} at P`);
});

test('client on the worker pool: same results as the reference path, workers exit cleanly', async () => {
  const C = 72;
  const parts = [randMatrix(40, C), randMatrix(24, C)];
  const key = SecretKey.generate(params);
  const client = new HeLinearClient({ key, threads: 2 });
  const server = new HeLinearServer();
  await server.registerGroup('g', parts);
  try {
    const T = N + 33; // two column blocks
    const x = randInts(T * C, 127);
    const req = await client.encryptIntegers(x, T, [C]);
    assert.equal(await client.poolThreads(), 2);
    assert.deepEqual(client.plaintextBitsOf(req), client.plaintextBitsOf(client.encryptIntegersReference(x, T, [C])), 'same plaintext widths');
    assert.equal(req.blocks.length, 2);
    const res = await server.forward('g', req);
    const rows = parts.map((p) => p.rows);
    const got = await client.decryptIntegers(req, res, rows);
    assert.deepEqual(got, client.decryptIntegersReference(req, res, rows), 'pool decryption is bit-identical');
    parts.forEach((p, j) => assertWithinBound(got[j], exactForward(x, T, p), T, p.rows, rowSqNorms(p), key, `pool part ${j}`));

    // Float API: the pool's forward equals the reference decryption of the same answer.
    const xf = new Float32Array(64 * C);
    for (let i = 0; i < xf.length; i++) xf[i] = Math.sin(i * 0.3);
    const scales = parts.map((p) => new Float32Array(p.rows).fill(0.01));
    const pending = await client.encryptForward(xf, 64, C);
    const ans = await server.forward('g', pending.request);
    assert.deepEqual(await client.decryptForward(pending, ans, scales), client.decryptForwardReference(pending, ans, scales));
    // and the backward, consumed range by range as well
    const dys = parts.map((p) => Float32Array.from({ length: 64 * p.rows }, (_, i) => Math.cos(i * 0.7)));
    const back = await client.encryptBackward(dys, 64, scales);
    const backAns = await server.backward('g', back.request);
    assert.deepEqual(await client.decryptBackward(back, backAns, C), client.decryptBackwardReference(back, backAns, C));

    // releaseRequest: the answer still decrypts, the blocks are gone, the next request reuses the memory
    const uploadBuffer = req.blocks[0].buffer;
    client.releaseRequest(req);
    assert.equal(req.blocks.length, 0);
    assert.deepEqual(await client.decryptIntegers(req, res, rows), got);
    await assert.rejects(server.forward('g', req), /column blocks/);
    const next = await client.encryptIntegers(x, T, [C]);
    assert.ok(next.blocks.some((b) => b.buffer === uploadBuffer), 'the released upload memory is reused');
    const again = await client.decryptIntegers(next, await server.forward('g', next), rows);
    parts.forEach((p, j) => assertWithinBound(again[j], exactForward(x, T, p), T, p.rows, rowSqNorms(p), key, `reused memory, part ${j}`));
    client.releaseRequest(client.encryptIntegersReference(x, T, [C])); // not from the pool: nothing to release

    // an upload dropped without releaseRequest returns to the pool once collected
    let dropped: EncryptedInput | null = await client.encryptIntegers(x.subarray(0, 64 * C), 64, [C]);
    const droppedBuffer = dropped.blocks[0].buffer;
    dropped = null;
    const gc = vm.runInNewContext('gc') as () => void;
    for (let i = 0; i < 5; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 5));
    }
    const after = await client.encryptIntegers(x.subarray(0, 64 * C), 64, [C]);
    assert.ok(after.blocks[0].buffer === droppedBuffer, 'the collected upload memory is reused');
  } finally {
    assert.deepEqual(await client.close(), [0, 0]);
  }
});

test('the reference and the pool decryption share their checks: bad token scales and empty outputs are rejected alike', async () => {
  const C = 16;
  const w = randMatrix(8, C);
  const client = new HeLinearClient({ threads: 1 });
  const server = new HeLinearServer();
  await server.registerGroup('g', [w]);
  try {
    const T = 5;
    const wScales = [new Float32Array(w.rows).fill(0.01)];
    const fwd = await client.encryptForward(Float32Array.from({ length: T * C }, (_, i) => Math.sin(i)), T, C);
    const fwdAns = await server.forward('g', fwd.request);
    const fewScales = { ...fwd, scales: fwd.scales.subarray(1) };
    assert.throws(() => client.decryptForwardReference(fewScales, fwdAns, wScales), /4 token scales for 5 tokens/);
    await assert.rejects(client.decryptForward(fewScales, fwdAns, wScales), /4 token scales for 5 tokens/);
    assert.throws(() => client.decryptForwardReference(fwd, fwdAns, [new Float32Array(0)]), /at least one row/);
    await assert.rejects(client.decryptForward(fwd, fwdAns, [new Float32Array(0)]), /at least one row/);

    const back = await client.encryptBackward([Float32Array.from({ length: T * w.rows }, (_, i) => Math.cos(i))], T, wScales);
    const backAns = await server.backward('g', back.request);
    const moreScales = { ...back, scales: new Float32Array(T + 1) };
    assert.throws(() => client.decryptBackwardReference(moreScales, backAns, C), /6 token scales for 5 tokens/);
    await assert.rejects(client.decryptBackward(moreScales, backAns, C), /6 token scales for 5 tokens/);
  } finally {
    assert.deepEqual(await client.close(), [0]);
  }
});

/** Naive reference of the packing: feature i of block blk's tokens is polynomial i. */
function blockMessage(values: ArrayLike<number>, T: number, C: number, n: number, blk: number): Int32Array {
  const m = new Int32Array(C * n);
  for (let t = 0; t < n && blk * n + t < T; t++) for (let i = 0; i < C; i++) m[i * n + t] = values[(blk * n + t) * C + i];
  return m;
}

function accumulateNaive(acc: Float64Array, y: Int32Array, T: number, rows: number, n: number, blk: number): void {
  for (let o = 0; o < rows; o++) for (let t = 0; t < n && blk * n + t < T; t++) acc[(blk * n + t) * rows + o] += y[o * n + t];
}

test('the cache-blocked packing transposes equal the naive ones', () => {
  const n = 64;
  for (const [T, C] of [[200, 45], [64, 33], [1, 1], [130, 64]]) {
    const x = randInts(T * C, 127);
    for (let blk = 0; blk < Math.ceil(T / n); blk++) {
      assert.deepEqual(encodeFeatures(x, T, C, n, blk), blockMessage(x, T, C, n, blk), `message T=${T} C=${C} block ${blk}`);
      const rows = C;
      const y = new Int32Array(rows * n);
      for (let i = 0; i < y.length; i++) y[i] = Math.floor(Math.random() * 2001) - 1000;
      const a = new Float64Array(T * rows).fill(0.5);
      const b = new Float64Array(T * rows).fill(0.5);
      accumulateNaive(a, y, T, rows, n, blk);
      accumulateBlock(b, y, T, rows, n, blk);
      assert.deepEqual(b, a, `accumulate T=${T} rows=${rows} block ${blk}`);
    }
  }
});

/** The a parts of a public-mask answer from the server's table (what the transport client does with its cached table). */
async function fillFromTable(server: HeLinearServer, key: string, dir: 'forward' | 'backward', seed: Uint8Array, res: import('./types.js').EncryptedOutput): Promise<void> {
  const table = await server.maskTable(key, dir, seed);
  for (const row of res.blocks) {
    let r0 = 0;
    res.outputRows.forEach((rows, j) => {
      for (let t = 0; t < res.terms; t++) row[j * res.terms + t].a = table[t].subarray(r0 * N, (r0 + rows) * N);
      r0 += rows;
    });
  }
}

test('public mask tables: a single-use secret per block, only W·B from the server, the table supplies W·A; exact like fresh masks', async () => {
  const C = 96;
  const parts = [randMatrix(64, C), randMatrix(16, C), randMatrix(16, C)];
  const { client, server } = await setup(parts);
  const tableSeed = randomSeed();
  const T = N + 45;
  const x = randInts(T * C, 127);
  const req = await client.encryptIntegers(x, T, [C], { tableSeed });
  assert.equal(req.masks, 'table');
  assert.deepEqual([...req.seed], new Array(16).fill(0), 'a table request names no seed');
  const secrets = client.blockSecretsOf(req)!;
  assert.equal(secrets.length, 2);
  assert.ok(secrets.every((s) => s.singleUse));
  await assert.rejects(server.forward('g', req), /needs the product's table seed/);
  const res = await server.forward('g', req, tableSeed);
  assert.equal(res.masks, 'table');
  assert.ok(res.blocks.every((row) => row.every((c) => c.a.length === 0)), 'the answer carries no a');
  await assert.rejects(client.decryptIntegers(req, res, parts.map((p) => p.rows)), /wrong size/);
  await fillFromTable(server, 'g', 'forward', tableSeed, res);
  const got = await client.decryptIntegers(req, res, parts.map((p) => p.rows));
  const ref = client.decryptIntegersReference(req, res, parts.map((p) => p.rows));
  parts.forEach((p, j) => {
    assert.deepEqual(got[j], ref[j], 'pool and reference decrypt alike');
    assertWithinBound(got[j], exactForward(x, T, p), T, p.rows, rowSqNorms(p), secrets[0]!, `table part ${j}`);
  });

  // Backward with K-chunk terms (10-bit gradients: two terms at K = 3000), on the reference path.
  const wide = [randMatrix(2000, 40), randMatrix(1000, 40)];
  const s10 = await setup(wide, 10);
  assert.ok(s10.server.maxTermK < 3000);
  const dy = randInts(70 * 3000, 511, Int16Array);
  const bseed = randomSeed();
  const breq = s10.client.encryptIntegersReference(dy, 70, [2000, 1000], { tableSeed: bseed });
  const bres = await s10.server.backward('g', breq, bseed);
  assert.equal(bres.terms, 2);
  await fillFromTable(s10.server, 'g', 'backward', bseed, bres);
  const [dx] = s10.client.decryptIntegersReference(breq, bres, [40]);
  const want = exactBackward(dy, 70, wide), norms = stackedColSqNorms(wide), h = s10.client.blockSecretsOf(breq)![0]!.hammingWeight;
  for (let i = 0; i < dx.length; i++) {
    const bound = 2 * resultErrorBound(params, norms[i % 40], h); // two terms, two noises
    assert.ok(Math.abs(dx[i] - want[i]) <= bound, `table backward: error ${dx[i] - want[i]} > ${bound}`);
  }
  await client.close();
});

test('server on the kernel pool: masks expanded on the workers, answers and mask tables identical to the calling-thread server', async () => {
  const C = 72;
  const parts = [randMatrix(40, C), randMatrix(24, C)];
  const pool = await KernelPool.create(3);
  try {
    const pooled = new HeLinearServer({ backend: poolBackend(pool) });
    const local = new HeLinearServer();
    await pooled.registerGroup('g', parts);
    await local.registerGroup('g', parts);
    const { client } = await setup(parts);
    const T = N + 33; // two column blocks, each with its own mask stream
    const req = await client.encryptIntegers(randInts(T * C, 127), T, [C]);
    const [a, b] = [await pooled.forward('g', req), await local.forward('g', req)];
    assert.equal(a.blocks.length, 2);
    a.blocks.forEach((row, i) => row.forEach((m, j) => {
      assert.deepEqual(m.a, b.blocks[i]![j]!.a, `a, block ${i} matrix ${j}`);
      assert.deepEqual(m.b, b.blocks[i]![j]!.b, `b, block ${i} matrix ${j}`);
    }));
    const seed = randomSeed();
    assert.deepEqual(await pooled.maskTable('g', 'forward', seed), await local.maskTable('g', 'forward', seed));
    await client.close();
  } finally {
    await pool.close();
  }
});

test('public mask tables: a single-use secret encrypts one block only, and every request draws new ones', async () => {
  const one = SecretKey.generateSingleUse(params);
  const m = new Int32Array(2 * N);
  const seed = randomSeed();
  encryptBlock(params, one, m, 2, seed, 0);
  assert.throws(() => encryptBlock(params, one, m, 2, seed, 0), /single-use secret has already encrypted its block/);
  assert.throws(() => encryptBlock(params, one, m, 2, randomSeed(), 0), /single-use secret/);
  const client = new HeLinearClient();
  const tableSeed = randomSeed();
  const a = client.encryptIntegersReference(new Int8Array(10 * 8), 10, [8], { tableSeed });
  const b = client.encryptIntegersReference(new Int8Array(10 * 8), 10, [8], { tableSeed });
  const sa = SecretKey.coefficients(client.blockSecretsOf(a)![0]!), sb = SecretKey.coefficients(client.blockSecretsOf(b)![0]!);
  assert.notDeepEqual(sa, sb, 'fresh secrets per request');
  assert.equal(client.blockSecretsOf(client.encryptIntegersReference(new Int8Array(8), 1, [8])), undefined, 'fresh masks use the client key');
});

test('quantBits below the server width: the integers of QuantizedGroup at that width, the same wire shape; above it refused', async (ctx) => {
  const T = 40, C = 96;
  const fp = [64, 32].map((r) => {
    const w = new Float32Array(r * C);
    for (let i = 0; i < w.length; i++) w[i] = Math.sin(i * 0.7 + r) * 0.05;
    return quantizeWeightsPerChannel(w, r, C);
  });
  const parts = fp.map((q) => ({ values: q.values, rows: q.rows, cols: q.cols }));
  const server = new HeLinearServer({ actBits: 8 });
  await server.registerGroup('g', parts);
  const c8 = new HeLinearClient({ actBits: 8 });
  const key = SecretKey.generate(params);
  const c5 = new HeLinearClient({ actBits: 8, quantBits: 5, key });
  ctx.after(async () => { await c8.close(); await c5.close(); });
  const x = Float32Array.from({ length: T * C }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 5)));
  const p8 = await c8.encryptForward(x, T, C);
  const p5 = await c5.encryptForward(x, T, C);
  // What goes to the server has the same shape either way: nothing tells the width.
  const shape = (r: EncryptedInput): unknown => ({ ...r, seed: r.seed.length, blocks: r.blocks.map((b) => b.length) });
  assert.deepEqual(shape(p5.request), shape(p8.request));
  assert.ok(p5.values!.every((v) => Math.abs(v) <= 15) && p8.values!.some((v) => Math.abs(v) > 15));
  // The integers are the 5-bit plaintext twin's; decrypted within the HE error of its products.
  assert.deepEqual(p5.values, quantizePerToken(x, T, C, 5).values);
  const ys = await c5.decryptForward(p5, await server.forward('g', p5.request), fp.map((q) => q.scales));
  const want = new QuantizedGroup(fp, 5).forward(x, T);
  ys.forEach((y, j) => y.forEach((v, i) => {
    const unit = p5.scales[Math.floor(i / fp[j].rows)] * fp[j].scales[i % fp[j].rows];
    assert.ok(Math.abs(v - want[j][i]) <= resultErrorBound(params, 127 * 127 * C, key.hammingWeight) * unit + 1e-6 * Math.abs(want[j][i]), `part ${j} value ${i}`);
  }));
  assert.throws(() => new HeLinearClient({ actBits: 6, quantBits: 7 }), /activation bits must be an integer in \[2, 6\]/);
});
